"""The shipped configuration agrees with itself: bridge rig, node defaults, parameter file, launch file."""

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import yaml

from emerdiff_ros.rig import default_rig_file, load_rig, rig_file_candidates
from emerdiff_ros.ros import launch_plan
from emerdiff_ros.runtime.outputs import CAMERA_INPUTS, INPUTS, OVERLAY, camera_topic, output_topic
from emerdiff_ros.runtime.settings import StreamSettings
from emerdiff_ros.tools.bag_options import BagTopics
from emerdiff_ros.tools.evaluate import GT_TOPIC

ROOT = Path(__file__).resolve().parents[1]
SURROUND_RIG = ROOT / "config" / "carla_surround.json"
SURROUND_CAMERAS = ("rgb_front", "rgb_left", "rgb_right", "rgb_rear")


def default_arguments(**changes: str) -> dict[str, str]:
    """The launch arguments as `ros2 launch` hands them over without any given, and the changes."""
    return {**{name: default for name, (default, _) in launch_plan.launch_arguments().items()}, **changes}


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
    assert rig_file_candidates("carla_surround.json")[0] == default_rig_file("carla_surround.json") == SURROUND_RIG


def test_the_surround_rig_has_four_cameras_around_the_car_each_with_its_ground_truth():
    rig, front = load_rig(SURROUND_RIG), load_rig(ROOT / "config" / "carla_sensors.json")
    cameras = rig.of_kind("camera")
    # ROS axes as the bridge's objects file: y left, so the left camera looks along +y (yaw +90)
    assert [(camera.id, camera.pose.yaw) for camera in cameras] == [("rgb_front", 0.0), ("rgb_left", 90.0),
                                                                    ("rgb_right", -90.0), ("rgb_rear", 180.0)]
    for camera in cameras:
        yaw = math.radians(camera.pose.yaw)  # each sits on the side it looks at, not inside the car
        assert camera.pose.x * math.cos(yaw) + camera.pose.y * math.sin(yaw) >= 1.0, camera.id
        assert camera.attributes == {"image_size_x": "800", "image_size_y": "600", "fov": "90.0"}, camera.id
        twin = rig.ground_truth_of(camera)
        assert twin is not None and twin.attributes == camera.attributes, camera.id
    assert len({rig.ground_truth_of(camera).id for camera in cameras}) == 4
    assert rig.ground_truth_of(cameras[0]).id == "semantic_segmentation_front"
    assert (rig.vehicle_type, rig.role_name, rig.vehicle_pose) == (front.vehicle_type, front.role_name, None)
    assert (rig.sensor("lidar"), rig.sensor("radar_front")) == (front.sensor("lidar"), front.sensor("radar_front"))
    assert rig.skipped == front.skipped
    assert [s.kind for s in rig.sensors].count("semantic") == 4 and len(rig.sensors) == 10


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
    assert launch_plan.rig_parameters(arguments) == {}  # the front rig's one camera is `image`, as before surround


def test_the_surround_plan_remaps_every_cameras_inputs_and_names_the_cameras():
    arguments = default_arguments(rig="surround")
    parameters = launch_plan.rig_parameters(arguments)
    assert parameters == {"cameras": list(SURROUND_CAMERAS), "rig_file": str(SURROUND_RIG), "lidar_id": "lidar",
                          "radar_id": "radar_front"}
    StreamSettings(**parameters)  # parameters the node declares, with values it accepts
    remapped = launch_plan.remappings(arguments)
    assert len(remapped) == len(dict(remapped))
    expected = {"lidar": "/carla/ego_vehicle/lidar", "radar": "/carla/ego_vehicle/radar_front"}
    for camera in SURROUND_CAMERAS:
        side = camera.removeprefix("rgb_")
        expected.update({f"{camera}/image": f"/carla/ego_vehicle/{camera}/image",
                         f"{camera}/camera_info": f"/carla/ego_vehicle/{camera}/camera_info",
                         f"{camera}/ground_truth": f"/carla/ego_vehicle/semantic_segmentation_{side}/image"})
    assert dict(remapped) == expected
    assert {name for name, _ in remapped} == {camera_topic(c, name) for c in SURROUND_CAMERAS for name in CAMERA_INPUTS
                                              } | {"lidar", "radar"}
    hero = launch_plan.remappings({**arguments, "role_name": "hero"})
    assert all(topic.startswith("/carla/hero/") for _, topic in hero)
    assert launch_plan.rig_choice(arguments).rviz_config == "emerdiff_surround.rviz"
    with pytest.raises(launch_plan.LaunchError, match="lidar:='radar_front' is a radar sensor"):
        launch_plan.rig_parameters({**arguments, "lidar": "radar_front"})
    with pytest.raises(launch_plan.LaunchError, match="no sensor 'radar_rear'.* in config/carla_surround.json"):
        launch_plan.remappings({**arguments, "radar": "radar_rear"})


def test_a_surround_camera_without_a_semantic_camera_at_its_pose_gets_no_ground_truth(tmp_path, monkeypatch):
    objects = json.loads(SURROUND_RIG.read_text())
    sensors = objects["objects"][2]["sensors"]
    sensors[:] = [s for s in sensors if s["id"] != "semantic_segmentation_left"]
    rig_file = tmp_path / "rig.json"
    rig_file.write_text(json.dumps(objects))
    monkeypatch.setattr(launch_plan, "rig_file", lambda arguments: rig_file)
    remapped = dict(launch_plan.remappings(default_arguments(rig="surround")))
    assert "rgb_left/ground_truth" not in remapped and "rgb_left/image" in remapped
    assert remapped["rgb_right/ground_truth"] == "/carla/ego_vehicle/semantic_segmentation_right/image"


def test_surround_rejects_the_front_rigs_camera_arguments_and_an_unknown_rig_is_named():
    with pytest.raises(launch_plan.LaunchError, match="camera:='rgb_left' chooses the camera of rig:=front; rig:="
                                                      "surround segments every RGB camera of config/carla_surround"):
        launch_plan.remappings(default_arguments(rig="surround", camera="rgb_left"))
    with pytest.raises(launch_plan.LaunchError, match="ground_truth_camera:='semantic_segmentation_left' chooses"):
        launch_plan.rig_parameters(default_arguments(rig="surround", ground_truth_camera="semantic_segmentation_left"))
    for plan in (launch_plan.remappings, launch_plan.rig_parameters, launch_plan.source_parameters):
        with pytest.raises(launch_plan.LaunchError, match="rig:='roof' must be one of front, surround"):
            plan(default_arguments(rig="roof", source="native"))


def test_each_carla_source_sets_parameters_the_node_accepts():
    arguments = {name: default for name, (default, _) in launch_plan.launch_arguments().items()}
    for source in launch_plan.SOURCES:
        values = launch_plan.source_parameters({**arguments, "source": source})
        assert StreamSettings(**values).scoring_format() is not None
    native = launch_plan.source_parameters({**arguments, "source": "native"})
    assert native["camera_fov"] == 90.0  # the rig's rgb_front fov: CARLA's own camera_info is wrong
    surround = launch_plan.source_parameters({**arguments, "source": "native", "rig": "surround"})
    assert surround == {"ground_truth_format": "carla-tags", "carla_version": "0.9.14", "fov_from_rig": True}
    StreamSettings(**surround)
    assert "fov_from_rig" not in launch_plan.source_parameters({**arguments, "rig": "surround"})
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


def test_the_surround_rviz_view_shows_every_cameras_overlay_and_the_fused_lidar():
    from emerdiff_ros.runtime.rviz import namespaced_rviz_config, rviz_topics

    for choice in launch_plan.RIGS.values():  # setup.py installs config/ whole
        assert (ROOT / "config" / choice.rig_file).is_file() and (ROOT / "config" / choice.rviz_config).is_file()
    path = ROOT / "config" / launch_plan.rig_choice(default_arguments(rig="surround")).rviz_config
    cameras = launch_plan.rig_parameters(default_arguments(rig="surround"))["cameras"]
    shown = rviz_topics(path.read_text())
    overlays = [output_topic(camera_topic(camera, OVERLAY)) for camera in cameras]
    assert shown == [*overlays, output_topic("lidar/labeled")]
    view = yaml.safe_load(path.read_text())["Visualization Manager"]
    lidar = next(d for d in view["Displays"] if d.get("Topic", {}).get("Value") == output_topic("lidar/labeled"))
    assert (lidar["Channel Name"], lidar["Color Transformer"]) == ("label", "Intensity")
    assert view["Global Options"]["Fixed Frame"] == "ego_vehicle"
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
