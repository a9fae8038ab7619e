"""The node as users start it: its own process, a parameter file, remapped bridge topics."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from rcl_interfaces.srv import GetParameters
from rclpy.parameter import parameter_value_to_python

from emerdiff_ros.runtime.messages import stamp_ns
from ros_harness import (FAST_PARAMS, answered, bgra_image, camera_info, lidar_cloud, node_arguments, node_process,
                         node_subprocess, stamp)
from test_node_drive import LIDAR

CONFIG = Path(__file__).resolve().parents[1] / "config"


def remote_parameters(bridge, names: list[str]) -> dict:
    client = bridge.create_client(GetParameters, "/emerdiff/get_parameters")
    reply = answered(client, GetParameters.Request(names=names))
    bridge.destroy_client(client)
    return {name: parameter_value_to_python(value) for name, value in zip(names, reply.values)}


@pytest.mark.parametrize("params_file", sorted(CONFIG.glob("*.yaml")), ids=lambda p: p.name)
def test_every_key_of_the_params_file_is_declared_and_the_node_runs_with_it(params_file, carla_frame):
    file_params = yaml.safe_load(params_file.read_text())["/**"]["ros__parameters"]
    with node_process("--params-file", str(params_file)) as (process, bridge):
        values = remote_parameters(bridge, list(file_params))
        deadline = time.monotonic() + 60
        while not bridge.out["labels"].messages and time.monotonic() < deadline:
            # A frame sent before the node's reader has matched this writer is lost; send it again.
            bridge.info.publish(camera_info(4.0))
            bridge.image.publish(bgra_image(carla_frame, 4.0))
            bridge.out["labels"].wait(1, timeout=2)
        labels = bridge.out["labels"].messages
    expected = {**file_params, **{k: v for k, v in FAST_PARAMS.items() if k in file_params}}
    for name, value in expected.items():
        assert values[name] is not None, f"{name} from {params_file.name} is not a declared parameter"
        assert values[name] == value, name
    assert labels and {stamp_ns(m.header.stamp) for m in labels} == {stamp_ns(stamp(4.0))}
    assert process.returncode == 0, process.stdout.read()


def test_ctrl_c_twice_publishes_the_accepted_frame_and_exits_cleanly(carla_frame):
    with node_process() as (process, bridge):
        deadline = time.monotonic() + 60
        while not bridge.out["labels"].messages and time.monotonic() < deadline:
            bridge.image.publish(bgra_image(carla_frame, 8.0))
            bridge.out["labels"].wait(1, timeout=2)
        received = int(bridge.latest_diagnostics()["frames_received"])
        while int(bridge.latest_diagnostics(timeout=3)["frames_received"]) == received:
            bridge.image.publish(bgra_image(carla_frame, 9.0))  # until the node has it
        process.send_signal(signal.SIGINT)
        time.sleep(0.1)
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=30)
        published = bridge.out["labels"].wait(2, timeout=5)
    assert process.returncode == 0, output
    assert "Traceback" not in output and "terminate called" not in output, output
    # the frame the node had accepted (in progress or waiting) came out before it exited
    assert stamp_ns(published[-1].header.stamp) == stamp_ns(stamp(9.0)), (
        [m.header.stamp.sec for m in published], output)


def test_ctrl_c_finishes_the_accepted_frame_with_the_clouds_its_tick_still_sends(carla_frame):
    # A frame of seconds on a CPU: Ctrl-C comes while it is segmented (diagnostics tell within 0.1 s that the
    # node has it), its LiDAR after the Ctrl-C. The budget is generous: a busy machine must not fail this.
    with node_process(resolution=256, diagnostics_period=0.1, shutdown_timeout=300.0) as (process, bridge):
        received = int(bridge.latest_diagnostics()["frames_received"])
        while int(bridge.latest_diagnostics(timeout=3)["frames_received"]) == received:
            bridge.info.publish(camera_info(9.0))
            bridge.image.publish(bgra_image(carla_frame, 9.0))
        process.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 300
        while process.poll() is None and time.monotonic() < deadline:
            bridge.info.publish(camera_info(9.0))
            bridge.lidar.publish(lidar_cloud(LIDAR, 9.0))
            bridge.out["lidar/labeled"].wait(1, timeout=0.1)
        output = process.stdout.read()
        labeled = bridge.out["lidar/labeled"].wait(1, timeout=5)
    assert process.returncode == 0, output
    assert [stamp_ns(m.header.stamp) for m in labeled] == [stamp_ns(stamp(9.0))], output


@pytest.mark.parametrize("argument, reason", [
    ("num_masks:=1", "num_masks"),
    ("preset:=fastest", "unknown preset 'fastest'"),
    ("model:=/no/such/checkpoint", "no such folder"),
    ("qos_reliability:=sometimes", "qos_reliability must be one of best_available, best_effort, reliable"),
    ("lidar_pose:=[0.0,0.0,.nan,0.0,0.0,0.0]", "lidar_pose must be finite, got [0, 0, nan, 0, 0, 0]"),
    ("max_rate_hz:=fast", "max_rate_hz"),
])
def test_a_bad_start_is_one_clear_message_and_a_non_zero_exit(argument, reason):
    command = [sys.executable, "-m", "emerdiff_ros.node", *node_arguments(), "-p", "device:=cpu", "-p", argument]
    if not argument.startswith("model"):
        command += ["-p", "model:=tiny-random"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert reason in output
    assert "Traceback" not in output and "AttributeError" not in output, output
    assert len([line for line in output.splitlines() if "[FATAL]" in line]) == 1, output
    if argument.startswith("model"):  # what to do, in the words of ROS: a parameter, not a command-line flag
        assert "model:=tiny-random (ros2 run: -p model:=tiny-random)" in output and "--model" not in output, output


@pytest.mark.parametrize("arguments", [["--ros-args", "--bogus-flag"], ["--ros-args", "-p", "device:=cpu", "stray"]])
def test_unknown_ros_arguments_are_one_clear_line(arguments):
    done = subprocess.run([sys.executable, "-m", "emerdiff_ros.node", *arguments], capture_output=True, text=True,
                          timeout=120)
    output = done.stdout + done.stderr
    assert done.returncode == 1 and "Traceback" not in output, output
    assert [line for line in output.splitlines() if line.strip()] == [
        next(line for line in output.splitlines() if "[FATAL]" in line)], output
    assert f"unknown ROS arguments ['{arguments[-1]}']: after --ros-args come -p name:=value" in output, output


def test_a_smoke_run_says_so_once_and_names_the_device_it_resolved(carla_frame):
    with node_process(device="auto") as (process, bridge):
        bridge.image.publish(bgra_image(carla_frame, 3.0))
    output = process.stdout.read()
    assert output.count("SMOKE RUN") == 1, output
    # auto, resolved on this GPU-less machine
    assert "loading model 'tiny-random' on cpu (emerdiff) ..." in output, output


def start(*params: str):
    settings = [arg for k, v in FAST_PARAMS.items() for arg in ("-p", f"{k}:={v}")]
    return node_subprocess(*node_arguments(), *settings, *params)


def loading(pid: int, library: str) -> bool:
    """Whether the process has mapped a shared library whose path contains `library` (it is importing it)."""
    try:
        return library in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


@pytest.mark.parametrize("when", ["while rclpy and torch are imported", "while the model loads",
                                  "twice while the model loads"])
def test_ctrl_c_before_the_node_runs_exits_cleanly(when):
    with start() as process:
        interrupt_while_starting(process, when)


def interrupt_while_starting(process, when: str) -> None:
    if when.startswith("while rclpy"):
        # The PyPI ROS wheels start Python twice (to set LD_LIBRARY_PATH): wait until the node's own imports.
        while not loading(process.pid, "_rclpy_pybind11"):
            assert process.poll() is None
            time.sleep(0.005)
        lines = []
    else:
        lines = [process.stdout.readline()]
        while "loading model" not in lines[-1]:
            assert lines[-1], "".join(lines)
            lines.append(process.stdout.readline())
    process.send_signal(signal.SIGINT)
    if when.startswith("twice"):  # a terminal's Ctrl-C and the one ros2 launch forwards
        time.sleep(0.01)
        process.send_signal(signal.SIGINT)
    output = "".join(lines) + process.communicate(timeout=60)[0]
    assert process.returncode == 0, output
    assert "Traceback" not in output and "KeyboardInterrupt" not in output, output


def test_a_frame_longer_than_the_shutdown_budget_ends_in_one_clear_line(carla_frame):
    # 4x the pixels and 8x the feature passes of the fast settings: several seconds a frame on a CPU.
    with node_process(resolution=512, feature_draws=32, shutdown_timeout=1.0) as (process, bridge):
        received = 0
        while received == 0:
            bridge.image.publish(bgra_image(carla_frame, 12.0))
            received = int(bridge.latest_diagnostics()["frames_received"])
        begin = time.monotonic()
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=60)
        took = time.monotonic() - begin
    assert process.returncode == 1, output
    assert "exiting without the frame in progress (raise shutdown_timeout to let it finish)" in output, output
    assert "Traceback" not in output, output
    assert took < 10, took  # the budget, not the frame, decides when the node exits
