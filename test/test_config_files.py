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


def test_the_launch_file_remaps_the_nodes_inputs_and_defaults_to_the_rig():
    tree = ast.parse((ROOT / "launch" / "carla.launch.py").read_text())
    remapped = {node.elts[0].value for node in ast.walk(tree)
                if isinstance(node, ast.Tuple) and len(node.elts) == 2 and isinstance(node.elts[0], ast.Constant)
                and isinstance(node.elts[1], (ast.List, ast.BinOp))}
    assert remapped == {"image", "camera_info", "lidar", "radar"}
    arguments = next(node for node in ast.walk(tree) if isinstance(node, ast.Assign)
                     and getattr(node.targets[0], "id", "") == "ARGUMENTS")
    defaults = {k.value: v.elts[0] for k, v in zip(arguments.value.keys, arguments.value.values)}
    sensors = set(rig_poses())
    for argument in ("camera", "lidar", "radar"):
        assert defaults[argument].value in sensors, argument
    assert defaults["use_sim_time"].value == "true"


def test_the_readme_documents_every_parameter():
    from emerdiff_ros.engine import config_fields
    from emerdiff_ros.engine.config import param_specs

    readme = (ROOT / "README.md").read_text()
    for spec in [*config_fields(), *param_specs(StreamSettings)]:
        assert f"| `{spec.name}` |" in readme, spec.name
