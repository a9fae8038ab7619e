"""The shipped configuration agrees with itself: bridge rig, node defaults, parameter file, launch file."""

import ast
import json
from pathlib import Path

import yaml

from emerdiff_ros.runtime.settings import StreamSettings

ROOT = Path(__file__).resolve().parents[1]


def rig_poses() -> dict[str, tuple]:
    objects = json.loads((ROOT / "config" / "carla_sensors.json").read_text())["objects"]
    ego = next(o for o in objects if o["id"] == "ego_vehicle")
    poses = {}
    for sensor in ego["sensors"]:
        point = sensor.get("spawn_point")
        if point:
            poses[sensor["id"]] = tuple(float(point[k]) for k in ("x", "y", "z", "roll", "pitch", "yaw"))
    return poses


def test_the_node_defaults_and_the_params_file_match_the_bridge_rig():
    rig = rig_poses()
    defaults = StreamSettings()
    params = yaml.safe_load((ROOT / "config" / "carla.yaml").read_text())["/**"]["ros__parameters"]
    for setting, sensor in (("camera_pose", "rgb_front"), ("lidar_pose", "lidar"), ("radar_pose", "radar_front")):
        assert getattr(defaults, setting) == rig[sensor], setting
        assert tuple(params[setting]) == rig[sensor], setting
    # the semantic camera (ground truth) sees exactly what the RGB camera sees
    assert rig["semantic_segmentation_front"] == rig["rgb_front"]


def launch_constant(tree: ast.Module, name: str):
    assignment = next(node for node in ast.walk(tree) if isinstance(node, ast.Assign)
                      and getattr(node.targets[0], "id", "") == name)
    return assignment.value


def test_the_launch_file_remaps_the_nodes_inputs_and_defaults_to_the_rig():
    tree = ast.parse((ROOT / "launch" / "carla.launch.py").read_text())
    remapped = {node.elts[0].value for node in ast.walk(tree)
                if isinstance(node, ast.Tuple) and len(node.elts) == 2 and isinstance(node.elts[0], ast.Constant)
                and isinstance(node.elts[1], ast.JoinedStr)}
    assert remapped == {"image", "camera_info", "lidar", "radar", "ground_truth"}
    arguments = launch_constant(tree, "ARGUMENTS")
    defaults = {k.value: v.elts[0] for k, v in zip(arguments.keys, arguments.values)}
    sensors = set(rig_poses())
    for argument in ("camera", "lidar", "radar", "ground_truth_camera"):
        assert defaults[argument].value in sensors, argument
    assert defaults["use_sim_time"].value == "true"
    assert launch_constant(tree, "DEFAULT_SHUTDOWN_TIMEOUT").value == StreamSettings().shutdown_timeout


def test_each_carla_source_sets_a_ground_truth_format_the_node_accepts():
    tree = ast.parse((ROOT / "launch" / "carla.launch.py").read_text())
    sources = ast.literal_eval(launch_constant(tree, "SOURCES"))
    assert set(sources) == {"bridge", "native"}
    for values in sources.values():
        assert StreamSettings(**values).scoring_format() is not None
    camera = json.loads((ROOT / "config" / "carla_sensors.json").read_text())["objects"][2]["sensors"][0]
    assert camera["id"] == "rgb_front" and camera["fov"] == 90.0  # native intrinsics come from here


def test_the_launch_files_parameter_arguments_are_node_parameters_of_the_same_type():
    from emerdiff_ros.engine import config_fields
    from emerdiff_ros.engine.config import param_specs

    tree = ast.parse((ROOT / "launch" / "carla.launch.py").read_text())
    overrides = launch_constant(tree, "OVERRIDES")
    specs = {spec.name: spec for spec in [*config_fields(), *param_specs(StreamSettings)]}
    specs["preset"] = type("Preset", (), {"type": str})  # declared by the node itself
    for key, kind in zip(overrides.keys, overrides.values):
        assert key.value in specs, key.value
        assert specs[key.value].type.__name__ == kind.id, key.value
    assert {"model", "device", "num_masks"} <= {key.value for key in overrides.keys}


def test_rviz_shows_the_nodes_outputs_in_its_namespace():
    from emerdiff_ros.runtime.outputs import OUTPUTS, output_topic
    from emerdiff_ros.runtime.rviz import namespaced_rviz_config, rviz_topics

    path = ROOT / "config" / "emerdiff.rviz"
    shown = rviz_topics(path.read_text())
    assert {"labels", "overlay", "projection", "lidar/labeled", "radar/labeled"} <= {
        topic.removeprefix(output_topic("")) for topic in shown}
    assert set(shown) <= {output_topic(name) for name in OUTPUTS}
    assert namespaced_rviz_config(path, "") == str(path)
    namespaced = Path(namespaced_rviz_config(path, "car1"))
    try:
        assert rviz_topics(namespaced.read_text()) == [t.replace("/emerdiff/", "/car1/emerdiff/") for t in shown]
    finally:
        namespaced.unlink()


def test_the_readme_names_every_output_topic():
    from emerdiff_ros.runtime.outputs import OUTPUTS, SCORES

    readme = (ROOT / "README.md").read_text()
    for name in [*OUTPUTS, *SCORES]:
        assert f"`~/{name}`" in readme, name


def test_the_readme_documents_every_parameter():
    from emerdiff_ros.engine import config_fields
    from emerdiff_ros.engine.config import param_specs

    readme = (ROOT / "README.md").read_text()
    for spec in [*config_fields(), *param_specs(StreamSettings)]:
        assert f"| `{spec.name}` |" in readme, spec.name
