"""The node's lifecycle, driven as `ros2 lifecycle set` drives it: through its services, over real DDS."""

import signal
import time

import pytest
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState

from emerdiff_ros.runtime.messages import stamp_ns
from ros_harness import bgra_image, camera_info, node_process, stamp

pytestmark = pytest.mark.usefixtures("ros")


def call(bridge, kind, service: str, request, timeout: float = 60.0):
    client = bridge.create_client(kind, service)
    try:
        assert client.wait_for_service(timeout_sec=20), service
        future = client.call_async(request)
        deadline = time.monotonic() + timeout
        while not future.done():
            assert time.monotonic() < deadline, f"{service} did not answer"
            time.sleep(0.02)
        return future.result()
    finally:
        bridge.destroy_client(client)


def transition(bridge, transition_id: int) -> bool:
    return call(bridge, ChangeState, "/emerdiff/change_state",
                ChangeState.Request(transition=Transition(id=transition_id))).success


def state(bridge) -> str:
    return call(bridge, GetState, "/emerdiff/get_state", GetState.Request()).current_state.label


def frames_come_out(bridge, t: float, seconds: float) -> bool:
    """Send frames stamped t for a while; whether any labels stamped t come back."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        bridge.info.publish(camera_info(t))
        bridge.image.publish(bgra_image(bridge.frame, t))
        if any(stamp_ns(m.header.stamp) == stamp_ns(stamp(t)) for m in bridge.out["labels"].wait(1, timeout=0.5)):
            return True
    return False


def test_lifecycle_transitions_over_the_lifecycle_services(carla_frame):
    with node_process(autostart=False, connect=False) as (process, bridge):
        bridge.frame = carla_frame
        assert state(bridge) == "unconfigured"
        assert bridge.latest_diagnostics(timeout=10)["state"] == "unconfigured"
        assert not frames_come_out(bridge, 1.0, 2.0)  # nothing loaded, nothing subscribed

        assert transition(bridge, Transition.TRANSITION_CONFIGURE) and state(bridge) == "inactive"
        assert not frames_come_out(bridge, 2.0, 2.0)  # the model is loaded, but inactive

        assert transition(bridge, Transition.TRANSITION_ACTIVATE) and state(bridge) == "active"
        assert frames_come_out(bridge, 3.0, 30.0)

        assert transition(bridge, Transition.TRANSITION_DEACTIVATE) and state(bridge) == "inactive"
        assert not frames_come_out(bridge, 4.0, 2.0)
        assert bridge.latest_diagnostics()["state"] == "inactive"

        assert transition(bridge, Transition.TRANSITION_ACTIVATE)  # the model was kept: no second load
        assert frames_come_out(bridge, 5.0, 30.0)

        assert transition(bridge, Transition.TRANSITION_DEACTIVATE)
        assert transition(bridge, Transition.TRANSITION_CLEANUP) and state(bridge) == "unconfigured"
        assert transition(bridge, Transition.TRANSITION_CONFIGURE)  # loads again after cleanup freed it
        assert transition(bridge, Transition.TRANSITION_ACTIVATE)
        assert frames_come_out(bridge, 6.0, 30.0)

        assert transition(bridge, Transition.TRANSITION_ACTIVE_SHUTDOWN) and state(bridge) == "finalized"
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    assert output.count("loading model") == 2, output
    assert "Traceback" not in output, output


def test_deactivate_publishes_the_frame_it_accepted_before_it_returns(carla_frame):
    with node_process(resolution=256) as (process, bridge):
        bridge.frame = carla_frame
        assert frames_come_out(bridge, 1.0, 60.0)
        received = int(bridge.latest_diagnostics()["frames_received"])
        while int(bridge.latest_diagnostics()["frames_received"]) == received:
            bridge.image.publish(bgra_image(carla_frame, 2.0))  # until the node has it
        assert transition(bridge, Transition.TRANSITION_DEACTIVATE)
        labels = bridge.out["labels"].wait(2, timeout=5)
    assert stamp_ns(labels[-1].header.stamp) == stamp_ns(stamp(2.0))
