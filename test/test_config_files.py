"""The shipped configuration agrees with itself: bridge rig, node defaults, parameter file, launch file."""

import importlib.util
import sys
from pathlib import Path

import pytest
import yaml

from emerdiff_ros.rig import load_rig, rig_file_candidates
from emerdiff_ros.ros import launch_plan
from emerdiff_ros.runtime.outputs import INPUTS
from emerdiff_ros.runtime.settings import StreamSettings
from emerdiff_ros.tools.bag_options import BagTopics
from emerdiff_ros.tools.evaluate import GT_TOPIC

ROOT = Path(__file__).resolve().parents[1]


def test_the_node_and_tools_take_their_defaults_from_the_rig_file():
    rig = load_rig(ROOT / "config" / "carla_sensors.json")
    defaults = StreamSettings()
    for setting, sensor in (("camera_pose", "rgb_front"), ("lidar_pose", "lidar"), ("radar_pose", "radar_front")):
        assert getattr(defaults, setting) == rig.sensor(sensor).pose.as_tuple(), setting
    topics = BagTopics()
    assert (topics.image, topics.camera_info, topics.lidar, topics.radar) == (
        "/carla/ego_vehicle/rgb_front/image", "/carla/ego_vehicle/rgb_front/camera_info", "/carla/ego_vehicle/lidar",
        "/carla/ego_vehicle/radar_front")
    assert GT_TOPIC == "/carla/ego_vehicle/semantic_segmentation_front/image"
    # the semantic camera (ground truth) sees exactly what the RGB camera sees
    assert rig.sensor("semantic_segmentation_front").pose == rig.sensor("rgb_front").pose
    params = yaml.safe_load((ROOT / "config" / "carla.yaml").read_text())["/**"]["ros__parameters"]
    assert not {"camera_pose", "lidar_pose", "radar_pose"} & set(params)  # the rig file says it, once


def test_a_workspaces_rig_file_wins_over_a_stale_pip_copy(tmp_path, monkeypatch):
    prefix = tmp_path / "install" / "emerdiff_ros"
    (prefix / "share" / "ament_index" / "resource_index" / "packages").mkdir(parents=True)
    (prefix / "share" / "ament_index" / "resource_index" / "packages" / "emerdiff_ros").touch()
    (prefix / "share" / "emerdiff_ros" / "config").mkdir(parents=True)
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(prefix))
    candidates = rig_file_candidates()
    workspace = prefix / "share" / "emerdiff_ros" / "config" / "carla_sensors.json"
    pip_copy = Path(sys.prefix) / "share" / "emerdiff_ros" / "config" / "carla_sensors.json"
    if importlib.util.find_spec("ament_index_python"):
        assert candidates.index(workspace) < candidates.index(pip_copy)
    assert candidates[0] == ROOT / "config" / "carla_sensors.json" and candidates[-1] == pip_copy


def test_the_launch_plan_remaps_every_input_to_the_rigs_topics():
    arguments = {name: default for name, (default, _) in launch_plan.launch_arguments().items()}
    assert dict(launch_plan.remappings(arguments)) == {
        "image": "/carla/ego_vehicle/rgb_front/image", "camera_info": "/carla/ego_vehicle/rgb_front/camera_info",
        "lidar": "/carla/ego_vehicle/lidar", "radar": "/carla/ego_vehicle/radar_front",
        "ground_truth": "/carla/ego_vehicle/semantic_segmentation_front/image"}
    assert [name for name, _ in launch_plan.remappings(arguments)] == list(INPUTS)
    hero = dict(launch_plan.remappings({**arguments, "role_name": "hero"}))
    assert hero["lidar"] == "/carla/hero/lidar"
    with pytest.raises(launch_plan.LaunchError, match="no sensor 'rgb_rear'.*rgb_front"):
        launch_plan.remappings({**arguments, "camera": "rgb_rear"})
    with pytest.raises(launch_plan.LaunchError, match="camera:='lidar' is a lidar sensor, not a camera one "
                                                      r"\(the rig's camera sensors: rgb_front\)"):
        launch_plan.remappings({**arguments, "camera": "lidar"})
    with pytest.raises(launch_plan.LaunchError, match="ground_truth_camera:='rgb_front' is a camera sensor"):
        launch_plan.remappings({**arguments, "ground_truth_camera": "rgb_front"})
    assert arguments["use_sim_time"] == "true"


def test_each_carla_source_sets_parameters_the_node_accepts():
    arguments = {name: default for name, (default, _) in launch_plan.launch_arguments().items()}
    for source in launch_plan.SOURCES:
        values = launch_plan.source_parameters({**arguments, "source": source})
        assert StreamSettings(**values).scoring_format() is not None
    native = launch_plan.source_parameters({**arguments, "source": "native"})
    assert native["camera_fov"] == 90.0  # the rig's rgb_front fov: CARLA's own camera_info is wrong
    assert launch_plan.source_parameters({**arguments, "live_scoring": "false"}) == {"ground_truth_format": ""}
    with pytest.raises(launch_plan.LaunchError, match="source:='sim' must be one of bridge, native"):
        launch_plan.source_parameters({**arguments, "source": "sim"})
    with pytest.raises(launch_plan.LaunchError, match="live_scoring:='maybe' must be true or false"):
        launch_plan.source_parameters({**arguments, "live_scoring": "maybe"})


def test_the_launch_files_parameter_arguments_are_typed_as_the_node_declares_them(tmp_path):
    overrides = launch_plan.typed_overrides({"num_masks": "12", "max_rate_hz": "5", "autostart": "off",
                                             "model": "tiny-random", "device": ""})
    assert overrides == {"num_masks": 12, "max_rate_hz": 5.0, "autostart": False, "model": "tiny-random"}
    assert type(overrides["max_rate_hz"]) is float
    with pytest.raises(launch_plan.LaunchError, match="num_masks:='many' is not a valid int"):
        launch_plan.typed_overrides({"num_masks": "many"})
    with pytest.raises(launch_plan.LaunchError, match="autostart:='maybe' is not a valid bool"):
        launch_plan.typed_overrides({"autostart": "maybe"})
    params_file = ROOT / "config" / "carla.yaml"
    assert launch_plan.sigterm_timeout({}, str(params_file)) == StreamSettings().shutdown_timeout + 5
    assert launch_plan.sigterm_timeout({"shutdown_timeout": 60.0}, str(params_file)) == 65
    with pytest.raises(launch_plan.LaunchError, match="params_file:='/no/such.yaml': No such file"):
        launch_plan.sigterm_timeout({}, "/no/such.yaml")


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
        assert namespaced_rviz_config(path, "/car1/") == str(namespaced)  # every launch: the same file, not a new one
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
