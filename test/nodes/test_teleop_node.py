"""teleop_node in-process with rclpy (wall clock, no simulation): real topics in (Joy, Twist,
joint_states, leader joint_states), action chunks and recorder service calls out."""

from __future__ import annotations

import itertools
import math
import time

import numpy as np
import pytest
import rclpy
from rclpy.executors import MultiThreadedExecutor
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import JointState, Joy
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from vla_ros.core.action_spaces import action_names
from vla_ros.core.embodiment import load_embodiment
from vla_ros.nodes import conversions as cv
from vla_ros.nodes.teleop_node import TeleopNode, start
from vla_ros.nodes.runtime import BackgroundSpinner

pytestmark = pytest.mark.ros

FR3 = load_embodiment("fr3")
ALOHA = load_embodiment("aloha")
_ns = itertools.count()


@pytest.fixture(scope="module")
def ros():
    rclpy.init()
    yield
    rclpy.shutdown()


class Harness:
    """The node under test and a peer that plays the drivers and the recorder."""

    def __init__(self, **params):
        self.ns = f"/tn{next(_ns)}"
        values = {"embodiment": "fr3", "device": "joy", "diagnostics_period_s": 0.2, **params}
        self.node = TeleopNode(namespace=self.ns, parameter_overrides=[Parameter(k, value=v) for k, v in values.items()])
        self.peer = Node("peer", namespace=self.ns)
        self.chunks: list[JointTrajectory] = []
        self.peer.create_subscription(JointTrajectory, "action_chunk", self.chunks.append, 50)
        self.joy_pub = self.peer.create_publisher(Joy, "joy", 10)
        self.js_pubs = {a: self.peer.create_publisher(JointState, f"{a}/joint_states", 10)
                        for a in ("leader_left", "leader_right", "follower_left", "follower_right")}
        self.js_pubs["arm"] = self.peer.create_publisher(JointState, "joint_states", 10)
        self.recorder_calls: list[str] = []
        self.executor = MultiThreadedExecutor(num_threads=2)
        self.executor.add_node(self.node)
        self.executor.add_node(self.peer)
        self.spinner = BackgroundSpinner(self.executor, "teleop_test").start()

    def serve_recorder(self, action: str, success: bool = True):
        def handle(request, response, a=action):
            self.recorder_calls.append(a)
            response.success, response.message = success, f"{a} done"
            return response
        self.peer.create_service(Trigger, f"recorder/{action}", handle)

    def joy(self, x=0.0, deadman=True, start_button=False, nan=False, n_buttons=15):
        msg = Joy()
        msg.header.stamp = cv.s_to_time(time.time())
        msg.axes = [0.0, math.nan if nan else x, 0.0, 0.0, 0.0, 0.0]
        b = [0] * 15
        b[10], b[6] = int(deadman), int(start_button)
        msg.buttons = b[:n_buttons]
        self.joy_pub.publish(msg)
        return cv.time_to_s(msg.header.stamp)

    def joint_state(self, topic, names, q):
        self.js_pubs[topic].publish(cv.make_joint_state(names, q, stamp_s=time.time()))

    @staticmethod
    def wait(predicate, timeout_s=10.0):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.01)
        return bool(predicate())

    def close(self):
        assert self.spinner.stop()
        self.node.destroy_node()
        self.peer.destroy_node()


@pytest.fixture
def harness(ros):
    made = []

    def make(**params):
        h = Harness(**params)
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


def test_joy_chunks_are_ee_delta_stamped_with_the_input(harness):
    h = harness()
    assert start(h.node)
    time.sleep(0.3)  # discovery
    h.joint_state("arm", list(FR3.arms[0].joint_names) + ["fr3_finger_joint1"], list(FR3.arms[0].home_rad) + [0.0])
    assert h.wait(lambda: "arm" in h.node.session._measured)
    stamps = []
    for _ in range(8):
        stamps.append(h.joy(x=1.0))
        time.sleep(0.05)
    assert h.wait(lambda: len(h.chunks) >= 3)
    msg = h.chunks[0]
    assert tuple(msg.joint_names) == action_names(FR3, "ee_delta")
    assert min(abs(cv.time_to_s(msg.header.stamp) - s) for s in stamps) < 1e-6
    chunk = cv.msg_to_chunk(msg)
    assert chunk.num_steps == 4 and chunk.period_s == pytest.approx(0.1)
    np.testing.assert_allclose(chunk.column("ee_delta/x"), [0.0, 0.01, 0.01, 0.01])  # full stick: 0.1 m/s
    np.testing.assert_allclose(chunk.column("gripper"), 0.0)  # measured closed fingers (0 m)
    h.joy(x=1.0)
    t_release = h.joy(x=1.0, deadman=False)
    assert h.wait(lambda: cv.time_to_s(h.chunks[-1].header.stamp) == pytest.approx(t_release, abs=1e-6))
    stop = cv.msg_to_chunk(h.chunks[-1])
    np.testing.assert_allclose(stop.column("ee_delta/x"), [0.0, 0.005, 0.0, 0.0], atol=1e-12)
    n = len(h.chunks)
    time.sleep(0.3)
    assert len(h.chunks) == n  # nothing more after the stop


def test_bad_joy_is_refused_with_a_message_and_nothing_is_sent(harness):
    h = harness()
    assert start(h.node)
    time.sleep(0.3)
    h.joy(x=0.5, nan=True)
    h.joy(x=0.5, n_buttons=8)
    assert h.wait(lambda: len(h.node.messages) >= 2)
    texts = [t for _, t in h.node.messages]
    assert any("axes [1] are not finite" in t for t in texts)
    assert any("reads button 14 but the message has 8 buttons" in t for t in texts)
    time.sleep(0.2)
    assert h.chunks == []


def test_episode_buttons_call_the_recorder_or_warn(harness):
    h = harness()
    assert start(h.node)
    time.sleep(0.3)
    h.joy(deadman=False, start_button=True)
    assert h.wait(lambda: any("recorder is not running" in t for _, t in h.node.messages))
    assert h.node.events == ["start_episode"]
    h.serve_recorder("start_episode")
    assert h.wait(lambda: h.node._recorder_clients["start_episode"].service_is_ready())
    h.joy(deadman=False)
    h.joy(deadman=False, start_button=True)
    assert h.wait(lambda: h.recorder_calls == ["start_episode"])
    assert h.wait(lambda: any("recorder says ok: start_episode done" in t for _, t in h.node.messages))


@pytest.mark.parametrize("params, match", [
    ({"device": "gamepad"}, "device"),
    ({"embodiment": ""}, "embodiment"),
    ({"device": "joy", "mapping": "spacemouse"}, "is for device 'spacemouse'"),
    ({"mapping": "no_such_pad"}, "unknown teleop mapping"),
])
def test_bad_parameters_fail_configure(harness, params, match):
    h = harness(**params)
    assert h.node.trigger_configure() == TransitionCallbackReturn.FAILURE


def test_leader_device_mirrors_after_the_gesture(harness):
    h = harness(embodiment="aloha", device="leader")
    assert start(h.node)
    time.sleep(0.3)
    home = list(ALOHA.arm("follower_left").home_rad)
    names = ["waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate", "gripper"]

    def publish(leader_gripper):
        for side in ("left", "right"):
            h.joint_state(f"follower_{side}", names, home + [1.6214])
            h.joint_state(f"leader_{side}", names, [q + 0.02 for q in home] + [leader_gripper])

    for _ in range(5):
        publish(0.8298)  # leaders open: no gesture yet
        time.sleep(0.02)
    assert h.chunks == [] and h.node.session.state == "waiting"
    for _ in range(10):
        publish(-0.0552)  # both squeezed: mirror
        time.sleep(0.02)
    assert h.wait(lambda: len(h.chunks) >= 2)
    chunk = cv.msg_to_chunk(h.chunks[-1])
    assert set(chunk.names) == set(action_names(ALOHA, "joint_position"))
    np.testing.assert_allclose(chunk.column("follower_right/elbow"), home[2] + 0.02)
    np.testing.assert_allclose(chunk.column("follower_left/gripper"), 0.0)
