"""recorder_node in-process: streams on a simulated clock driven by the test (/clock), the episode
services, the dataset it writes (values hand-computed from what was published), and the refusals
(no dataset folder, an incompatible dataset, save without an episode)."""

from __future__ import annotations

import time

import numpy as np
import pytest
import rclpy
from rclpy.executors import MultiThreadedExecutor
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from vla_ros.data import LeRobotDataset
from vla_ros.nodes import conversions as cv
from vla_ros.nodes.recorder_node import RecorderNode
from vla_ros.nodes.runtime import BackgroundSpinner

pytestmark = pytest.mark.ros
FR3 = [f"fr3_joint{i}" for i in range(1, 8)]
T0 = 50.0


def q_at(t: float) -> np.ndarray:
    return np.linspace(0.1, 0.7, 7) + 0.1 * (t - T0)


class Cell(Node):
    """Plays the sim: /clock, cameras, joint_states, one JTC ramp, one gripper command, instruction."""

    def __init__(self, context) -> None:
        super().__init__("cell", context=context)
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.clock = self.create_publisher(Clock, "/clock", 10)
        self.cams = {s: self.create_publisher(Image, f"cameras/{s}/image_raw", qos) for s in ("front", "wrist")}
        self.js = self.create_publisher(JointState, "joint_states", qos)
        self.jtc = self.create_publisher(JointTrajectory, "fr3_arm_controller/joint_trajectory", 10)
        self.grip = self.create_publisher(Float64MultiArray, "gripper_controller/commands", 10)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.instruction = self.create_publisher(String, "instruction", latched)
        self.recorder_clients = {n: self.create_client(Trigger, f"recorder/{n}")
                        for n in ("start_episode", "save_episode", "discard_episode")}
        self.t = T0

    def step(self, n: int, dt: float = 0.01) -> None:
        for _ in range(n):
            self.t = round(self.t + dt, 6)
            self.clock.publish(Clock(clock=cv.s_to_time(self.t)))
            self.js.publish(cv.make_joint_state(FR3 + ["fr3_finger_joint1"], np.append(q_at(self.t), 0.01),
                                                np.zeros(8), stamp_s=self.t))
            time.sleep(0.003)

    def frames_up_to(self, t_end: float, start_k: int) -> int:
        """Publish camera frames k/30 after T0 from start_k while stepping the clock to t_end."""
        k = start_k
        while self.t < t_end - 1e-9:
            self.step(1)
            while T0 + k / 30 <= self.t + 1e-9:
                for slot, pub in self.cams.items():
                    img = np.full((224, 224, 3), (k * 4 + (0 if slot == "front" else 100)) % 250, np.uint8)
                    pub.publish(cv.array_to_image(img, "rgb8", stamp_s=T0 + k / 30))
                k += 1
        return k

    def call(self, name: str) -> Trigger.Response:
        client = self.recorder_clients[name]
        assert client.wait_for_service(timeout_sec=30.0)
        for _ in range(5):  # a lost first answer is asked again (the services are safe to repeat)
            future = client.call_async(Trigger.Request())
            deadline = time.monotonic() + 15.0
            while not future.done() and time.monotonic() < deadline:
                time.sleep(0.005)
            if future.done():
                return future.result()
            client.remove_pending_request(future)
        raise AssertionError(f"recorder/{name} never answered")


@pytest.fixture()
def graph(tmp_path):
    context = rclpy.Context()
    rclpy.init(context=context, args=[])
    nodes, executor, thread = [], None, None

    def make(dataset, **params):
        node = RecorderNode(context=context, parameter_overrides=[
            Parameter("embodiment", value="fr3"), Parameter("dataset", value=str(dataset)),
            Parameter("source_space", value="joint_position"), Parameter("use_sim_time", value=True),
            Parameter("wait_s", value=0.05), *[Parameter(k, value=v) for k, v in params.items()]])
        nodes.append(node)
        executor.add_node(node)
        return node

    executor = MultiThreadedExecutor(num_threads=4, context=context)
    cell = Cell(context)
    nodes.append(cell)
    executor.add_node(cell)
    spinner = BackgroundSpinner(executor, "recorder_test").start()
    try:
        yield cell, make
    finally:
        assert spinner.stop()
        for n in nodes:
            n.destroy_node()
        rclpy.try_shutdown(context=context)


def command_the_ramp(cell) -> int:
    """The controller's command: a ramp stamped T0 (positions only: linear) and an open gripper;
    camera frames up to T0 + 0.2 s. Returns the next frame number."""
    cell.jtc.publish(cv.make_joint_trajectory(FR3, np.array([q_at(T0), q_at(T0 + 10)]), np.array([0.0, 10.0]),
                                              stamp_s=T0))
    cell.grip.publish(cv.make_float64_multi_array([0.04]))
    return cell.frames_up_to(T0 + 0.2, 0)


def test_records_an_episode_with_the_sent_commands(graph, tmp_path):
    cell, make = graph
    rec = make(tmp_path / "ds")
    cell.step(5)
    assert rec.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert rec.trigger_activate() == TransitionCallbackReturn.SUCCESS
    cell.instruction.publish(String(data="wave hello"))
    assert not cell.call("save_episode").success  # nothing recorded yet
    k = command_the_ramp(cell)
    r = cell.call("start_episode")
    assert r.success and "episode 0" in r.message
    assert not cell.call("start_episode").success  # already recording
    k = cell.frames_up_to(T0 + 2.4, k)  # the cameras stream up to the save (slots they left empty would be drops)
    r = cell.call("save_episode")
    assert r.success, r.message
    ds = LeRobotDataset(tmp_path / "ds")
    assert ds.num_episodes == 1 and ds.tasks == ["wave hello"]
    ep = ds.episode(0)
    meta = ds.episode_meta(0)
    assert meta["dropped_frames"] == 0, meta["dropped_reasons"]
    t = meta["start_stamp_s"] + np.round(ep.timestamps * 30) / 30
    assert 0.2 <= t[0] - T0 <= 0.25 and ep.length >= 55
    # nothing dropped: the grid's first slot is the first row; the save came after the last row
    assert meta["grid_start_stamp_s"] == meta["start_stamp_s"] and meta["end_stamp_s"] >= t[-1]
    np.testing.assert_allclose(ep.action[:, :7], np.array([q_at(x) for x in t]), atol=1e-6)  # the JTC ramp
    np.testing.assert_allclose(ep.action[:, 7], 1.0)  # 0.04 m = open
    nearest = T0 + np.round((t - T0) * 100) / 100  # joint_states at 100 Hz
    np.testing.assert_allclose(ep.state[:, :7], np.array([q_at(x) for x in nearest]), atol=1e-6)
    np.testing.assert_allclose(ep.state[:, 7], 0.25, atol=1e-6)
    fronts = ep.frames("observation.images.front")
    ks = np.round((t - T0) * 30).astype(int)
    assert np.all(np.abs(fronts.reshape(ep.length, -1).mean(axis=1) - (ks * 4 % 250)) < 2.0)
    status = rec.status_values()
    assert status["episodes_saved"] == 1 and not status["recording"] and status["disk_free_mb"] > 0

    # a discarded episode leaves no trace
    assert cell.call("start_episode").success
    cell.frames_up_to(cell.t + 0.5, k)
    assert cell.call("discard_episode").success
    assert LeRobotDataset(tmp_path / "ds").num_episodes == 1
    assert not (tmp_path / "ds" / ".recording" / "episode-000001").exists()


def test_hostile_input_on_every_topic_is_refused_and_the_episode_is_saved_clean(graph, tmp_path):
    # Each message below used to raise out of its callback (IndexError on a short position array
    # or forward command: the executor, and with it the episode in progress, died) or put NaN into
    # observation.state. Now each is logged and ignored; the episode around them is saved clean.
    cell, make = graph
    rec = make(tmp_path / "ds")
    cell.step(5)
    assert rec.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert rec.trigger_activate() == TransitionCallbackReturn.SUCCESS
    k = command_the_ramp(cell)
    deadline = time.monotonic() + 10.0
    while not (r := cell.call("start_episode")).success and time.monotonic() < deadline:
        k = cell.frames_up_to(cell.t + 0.05, k)
    assert r.success, r.message
    k = cell.frames_up_to(cell.t + 0.5, k)
    names = FR3 + ["fr3_finger_joint1"]
    short = JointState(name=names, position=[0.1, 0.2])  # 8 names, 2 positions
    short.header.stamp = cv.s_to_time(cell.t)
    cell.js.publish(short)
    cell.js.publish(cv.make_joint_state(names, np.full(8, np.nan), stamp_s=cell.t + 0.001))
    cell.js.publish(cv.make_joint_state(["elbow"], [0.0], stamp_s=cell.t + 0.002))
    ragged = JointTrajectory(joint_names=FR3)
    ragged.header.stamp = cv.s_to_time(cell.t + 5.0)
    ragged.points = [JointTrajectoryPoint(positions=[0.0] * 3, time_from_start=cv.s_to_duration(0.1))]
    cell.jtc.publish(ragged)
    cell.grip.publish(cv.make_float64_multi_array([float("nan")]))
    cell.grip.publish(Float64MultiArray())
    for slot, pub in cell.cams.items():
        pub.publish(cv.array_to_image(np.zeros((10, 10, 3), np.uint8), "rgb8", stamp_s=cell.t))  # wrong size
        broken = cv.array_to_image(np.zeros((224, 224, 3), np.uint8), "rgb8", stamp_s=cell.t)
        broken.data = broken.data[:100]
        pub.publish(broken)
    k = cell.frames_up_to(cell.t + 1.0, k)
    r = cell.call("save_episode")
    assert r.success, r.message
    ep = LeRobotDataset(tmp_path / "ds").episode(0)
    assert ep.length >= 40 and np.all(np.isfinite(ep.state)) and np.all(np.isfinite(ep.action))
    meta = LeRobotDataset(tmp_path / "ds").episode_meta(0)
    t = meta["start_stamp_s"] + np.round(ep.timestamps * 30) / 30
    np.testing.assert_allclose(ep.action[:, :7], np.array([q_at(x) for x in t]), atol=1e-6)  # the ramp, untouched
    np.testing.assert_allclose(ep.action[:, 7], 1.0)
    assert rec.image_errors == 4


def start_once_streaming(cell, k: int) -> None:
    """Stream frames until start_episode is accepted (within 10 s), then discard the episode."""
    deadline = time.monotonic() + 10.0
    while not (r := cell.call("start_episode")).success and time.monotonic() < deadline:
        k = cell.frames_up_to(cell.t + 0.05, k)
    assert r.success and "episode 0" in r.message
    assert cell.call("discard_episode").success


def test_start_is_refused_until_every_stream_has_delivered(graph, tmp_path):
    """An episode started before the cameras' and joint states' publishers are matched (a recorder
    just (re)started, a driver down) could not assemble a row: refused, naming the silent topics."""
    cell, make = graph
    rec = make(tmp_path / "ds")
    assert rec.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert rec.trigger_activate() == TransitionCallbackReturn.SUCCESS
    cell.step(3)  # clock and joint states, no camera frame yet
    deadline = time.monotonic() + 10.0
    r = cell.call("start_episode")
    while "joint_states 'arm'" in r.message and time.monotonic() < deadline:  # until the first state arrived
        cell.step(1)
        r = cell.call("start_episode")
    assert not r.success
    assert r.message == ("no reading yet from: camera 'front' (cameras/front/image_raw), camera 'wrist' "
                         "(cameras/wrist/image_raw); not starting (is the driver running, are the topics remapped right?)")
    assert not (tmp_path / "ds" / ".recording" / "episode-000000").exists()
    start_once_streaming(cell, 0)


def test_start_with_a_source_space_waits_for_the_chunks_publisher(graph, tmp_path):
    """action.source is the source's chunk at each row: with no publisher on action_chunk matched
    every row would be dropped, so the start is refused until one is."""
    cell, make = graph
    rec = make(tmp_path / "ds", source_space="ee_delta")
    assert rec.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert rec.trigger_activate() == TransitionCallbackReturn.SUCCESS
    k = cell.frames_up_to(cell.t + 0.2, 0)
    deadline = time.monotonic() + 10.0
    while "camera" in (r := cell.call("start_episode")).message and time.monotonic() < deadline:
        k = cell.frames_up_to(cell.t + 0.05, k)
    assert not r.success
    assert r.message.startswith("no reading yet from: action chunks (/action_chunk: no publisher matched)")
    cell.create_publisher(JointTrajectory, "action_chunk", 10)
    start_once_streaming(cell, k)


def test_configure_refuses_a_missing_or_incompatible_dataset(graph, tmp_path):
    cell, make = graph
    assert make("").trigger_configure() == TransitionCallbackReturn.FAILURE
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("not a dataset")
    assert make(tmp_path / "junk").trigger_configure() == TransitionCallbackReturn.FAILURE
    ok = make(tmp_path / "ds30")
    assert ok.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert make(tmp_path / "ds30", fps=15).trigger_configure() == TransitionCallbackReturn.FAILURE


def test_the_task_may_change_between_episodes_other_parameters_only_unconfigured(graph, tmp_path):
    cell, make = graph
    rec = make(tmp_path / "ds")
    assert rec.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert rec.trigger_activate() == TransitionCallbackReturn.SUCCESS
    assert rec.set_parameters([Parameter("instruction", value="stack the cubes")])[0].successful
    assert rec.task() == "stack the cubes"
    r = rec.set_parameters([Parameter("fps", value=15)])[0]
    assert not r.successful and r.reason.startswith("fps: read at configure and this node is active")
    assert rec.get_parameter("fps").value == 30
