"""The node's lifecycle, driven as `ros2 lifecycle set` drives it: through its services, over real DDS."""

import time

from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState

from emerdiff_ros.runtime.messages import stamp_ns
from ros_harness import answer, answered, bgra_image, camera_info, node_process, stamp



class Lifecycle:
    """`ros2 lifecycle` for /emerdiff: one client per service, each answered once (see ros_harness.answer)
    before it is relied on."""

    def __init__(self, bridge):
        self.get = bridge.create_client(GetState, "/emerdiff/get_state")
        self.change = bridge.create_client(ChangeState, "/emerdiff/change_state")
        answered(self.get, GetState.Request())
        answered(self.change, ChangeState.Request(transition=Transition(id=255)))  # no such transition: no effect

    def transition(self, transition_id: int) -> bool:
        reply = answer(self.change, ChangeState.Request(transition=Transition(id=transition_id)), 120.0)
        assert reply is not None, f"transition {transition_id} was not answered"
        return reply.success

    def state(self) -> str:
        return answered(self.get, GetState.Request()).current_state.label


def frames_come_out(bridge, t: float, seconds: float) -> bool:
    """Send frames stamped t for a while; whether any labels stamped t come back."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        bridge.info.publish(camera_info(t))
        seen = len(bridge.out["labels"].messages)
        bridge.image.publish(bgra_image(bridge.frame, t))
        # Up to 0.5 s for a new output: waiting for one there already was would send frames as fast as the loop
        # runs, until the bridge's reliable history is full of unacknowledged 1.9 MB frames and publish fails.
        new = bridge.out["labels"].wait(seen + 1, timeout=0.5)[seen:]
        if any(stamp_ns(m.header.stamp) == stamp_ns(stamp(t)) for m in new):
            return True
    return False


def test_lifecycle_transitions_over_the_lifecycle_services(carla_frame):
    with node_process(autostart=False, connect=False) as (process, bridge):
        bridge.frame = carla_frame
        lifecycle = Lifecycle(bridge)
        assert lifecycle.state() == "unconfigured"
        assert bridge.latest_diagnostics(timeout=10)["state"] == "unconfigured"
        assert not frames_come_out(bridge, 1.0, 2.0)  # nothing loaded, nothing subscribed

        assert lifecycle.transition(Transition.TRANSITION_CONFIGURE) and lifecycle.state() == "inactive"
        assert not frames_come_out(bridge, 2.0, 2.0)  # the model is loaded, but inactive

        assert lifecycle.transition(Transition.TRANSITION_ACTIVATE) and lifecycle.state() == "active"
        assert frames_come_out(bridge, 3.0, 30.0)

        assert lifecycle.transition(Transition.TRANSITION_DEACTIVATE) and lifecycle.state() == "inactive"
        assert not frames_come_out(bridge, 4.0, 2.0)
        assert bridge.latest_diagnostics()["state"] == "inactive"

        assert lifecycle.transition(Transition.TRANSITION_ACTIVATE)  # the model was kept: no second load
        assert frames_come_out(bridge, 5.0, 30.0)

        assert lifecycle.transition(Transition.TRANSITION_DEACTIVATE)
        assert lifecycle.transition(Transition.TRANSITION_CLEANUP) and lifecycle.state() == "unconfigured"
        assert lifecycle.transition(Transition.TRANSITION_CONFIGURE)  # loads again after cleanup freed it
        assert lifecycle.transition(Transition.TRANSITION_ACTIVATE)
        assert frames_come_out(bridge, 6.0, 30.0)

        assert lifecycle.transition(Transition.TRANSITION_ACTIVE_SHUTDOWN)
        output, _ = process.communicate(timeout=30)  # a finalized node's process ends by itself
    assert process.returncode == 0, output
    assert output.count("loading model") == 2, output
    assert output.count("inactive: ") == 2 and output.count("unconfigured: the model is released") == 1, output
    assert "Traceback" not in output, output


def test_deactivate_publishes_the_frame_it_accepted_before_it_returns(carla_frame):
    with node_process(resolution=256) as (process, bridge):
        bridge.frame = carla_frame
        assert frames_come_out(bridge, 1.0, 60.0)
        received = int(bridge.latest_diagnostics()["frames_received"])
        lifecycle = Lifecycle(bridge)
        while int(bridge.latest_diagnostics()["frames_received"]) == received:
            bridge.image.publish(bgra_image(carla_frame, 2.0))  # until the node has it
        assert lifecycle.transition(Transition.TRANSITION_DEACTIVATE)
        labels = bridge.out["labels"].wait(2, timeout=5)
    assert stamp_ns(labels[-1].header.stamp) == stamp_ns(stamp(2.0))
