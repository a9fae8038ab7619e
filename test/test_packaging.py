"""What a colcon user installs: every ROS package the code imports is declared, and the engine stays ROS-free."""

import ast
import xml.etree.ElementTree as ElementTree
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROS_PYTHON_PACKAGES = {"rclpy", "launch", "launch_ros", "ament_index_python", "message_filters", "cv_bridge",
                       "tf2_ros", "rosbag2_py", "rosidl_runtime_py"}


def imported_modules(paths) -> set[str]:
    """Dotted names of every module imported by the Python files under paths."""
    names = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names.add(node.module)
    return names


def ros_packages(modules: set[str]) -> set[str]:
    tops = {name.split(".")[0] for name in modules}
    found = {top for top in tops if top in ROS_PYTHON_PACKAGES or top.endswith(("_msgs", "_interfaces", "_srvs"))}
    if any(name.startswith("rclpy.lifecycle") for name in modules):
        found.add("lifecycle_msgs")  # rclpy.lifecycle's services and states
    return found


def test_package_xml_declares_every_ros_package_the_node_and_launch_file_import():
    declared = {e.text for e in ElementTree.parse(ROOT / "package.xml").getroot()
                if e.tag in ("depend", "exec_depend", "build_depend")}
    code = [*(ROOT / "emerdiff_ros").rglob("*.py"), *(ROOT / "launch").glob("*.py")]
    needed = ros_packages(imported_modules(code))
    assert {"rclpy", "rcl_interfaces", "lifecycle_msgs", "sensor_msgs", "launch_ros"} <= needed  # the scan works
    assert needed <= declared, f"not in package.xml: {sorted(needed - declared)}"
    assert "rviz2" not in declared  # optional: the launch file runs without it


def test_the_engine_and_the_runtime_never_import_ros():
    for layer in ("engine", "runtime"):
        found = ros_packages(imported_modules((ROOT / "emerdiff_ros" / layer).rglob("*.py")))
        assert not found, f"emerdiff_ros/{layer} imports {sorted(found)}"


def test_colcon_installs_the_executables_where_ros2_run_finds_them():
    text = (ROOT / "setup.cfg").read_text()
    assert "script_dir=$base/lib/emerdiff_ros" in text and "install_scripts=$base/lib/emerdiff_ros" in text
    assert (ROOT / "resource" / "emerdiff_ros").exists()
