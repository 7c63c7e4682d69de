"""sim_node in-process with rclpy: sim-time stamps, images, JTC through a real topic, reset."""

from __future__ import annotations

import time

import numpy as np
import pytest
import rclpy
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool, Float64MultiArray, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory
from visualization_msgs.msg import MarkerArray

from vla_ros.core.embodiment import load_embodiment
from vla_ros.core.jtc import TrajectoryCommand
from vla_ros.nodes import conversions as cv
from vla_ros.nodes.sim_node import INSTRUCTION_QOS, SimNode, trajectory_command
from vla_ros.sim.tasks import make_task
from vla_ros.nodes.runtime import BackgroundSpinner

SPEC = load_embodiment("fr3")
ARM = SPEC.arms[0]


def Spinner(executor) -> BackgroundSpinner:  # noqa: N802 - reads like the class it returns
    return BackgroundSpinner(executor, "test_spin").start()


def test_trajectory_message_conversion_keeps_jtc_fields():
    msg = cv.make_joint_trajectory(["a", "b"], np.array([[1.0, 2.0], [3.0, 4.0]]), [0.5, 1.0],
                                   velocities=np.array([[0.1, 0.2], [0.0, 0.0]]), stamp_s=12.0)  # fmt: skip
    cmd = trajectory_command(msg, stamp_offset_s=2.0)
    assert isinstance(cmd, TrajectoryCommand)
    assert cmd.joint_names == ("a", "b") and cmd.stamp_s == pytest.approx(10.0)
    assert cmd.points[1].time_from_start_s == pytest.approx(1.0)
    assert cmd.points[0].velocities == (0.1, 0.2) and cmd.points[0].accelerations == ()
    assert trajectory_command(cv.make_joint_trajectory(["a"], np.zeros((1, 1)), [1.0]), 5.0).stamp_s == 0.0


class Probe(Node):
    def __init__(self, context):
        super().__init__("sim_probe", context=context)
        self.joint_states: list[JointState] = []
        self.clock: list[float] = []
        self.images: list[Image] = []
        self.instructions: list[str] = []
        self.success: list[bool] = []
        self.objects: list[MarkerArray] = []
        self.create_subscription(JointState, "joint_states", self.joint_states.append, 50)
        self.create_subscription(Clock, "/clock", lambda m: self.clock.append(cv.time_to_s(m.clock)), 50)
        self.create_subscription(Image, "cameras/front/image_raw", self.images.append, 10)
        self.create_subscription(String, "instruction", lambda m: self.instructions.append(m.data), INSTRUCTION_QOS)
        self.create_subscription(Bool, "sim/success", lambda m: self.success.append(m.data), 10)
        self.create_subscription(MarkerArray, "sim/objects", self.objects.append, 10)
        self.traj_pub = self.create_publisher(JointTrajectory, ARM.command.topic, 10)
        self.gripper_pub = self.create_publisher(Float64MultiArray, ARM.gripper.command.topic, 10)
        self.reset_client = self.create_client(Trigger, "sim/reset")


@pytest.fixture(scope="module")
def graph():
    context = rclpy.Context()
    rclpy.init(context=context)
    sim = SimNode(
        context=context,
        parameter_overrides=[
            Parameter("embodiment", value="fr3"),
            Parameter("seed", value=5),
            Parameter("joint_state_rate_hz", value=100.0),
            Parameter("real_time_factor", value=2.0),
        ],
    )
    probe = Probe(context)
    executor = MultiThreadedExecutor(num_threads=2, context=context)
    executor.add_node(sim)
    executor.add_node(probe)
    spinner = Spinner(executor)
    yield sim, probe
    assert spinner.stop(timeout_s=60.0)  # generous: a loaded machine may be inside a long callback
    sim.destroy_node()
    probe.destroy_node()
    rclpy.shutdown(context=context)


def _wait(predicate, timeout_s=60.0):  # generous: a loaded 2-core CI machine runs the sim slowly
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def _sim_now(sim):
    return sim.hw.time_s


def test_joint_states_and_clock_carry_sim_time(graph):
    sim, probe = graph
    assert _wait(lambda: len(probe.joint_states) > 20 and len(probe.clock) > 20)
    msg = probe.joint_states[-1]
    assert list(msg.name) == list(ARM.joint_names) + [ARM.gripper.joint_name]
    stamps = [cv.time_to_s(m.header.stamp) for m in probe.joint_states[-20:]]
    # 100 Hz in simulated time: stamps 10 ms apart, whatever the wall clock does
    np.testing.assert_allclose(np.diff(stamps), 0.01, atol=1e-6)
    assert stamps[-1] <= _sim_now(sim) + 1e-9
    # The same instants appear on /clock (its message may be handled a moment after the state's).
    assert _wait(lambda: min(abs(stamps[-1] - c) for c in list(probe.clock)) < 1e-9, 10.0)


def test_images_are_rgb8_stamped_at_30_hz(graph):
    sim, probe = graph
    assert _wait(lambda: len(probe.images) >= 4)
    img = probe.images[-1]
    assert (img.height, img.width, img.encoding) == (224, 224, "rgb8")
    array = cv.image_to_array(img)
    assert array.shape == (224, 224, 3) and array.std() > 10
    stamps = [cv.time_to_s(m.header.stamp) for m in probe.images[-4:]]
    np.testing.assert_allclose(np.diff(stamps), 1.0 / 30.0, atol=2.5e-3)  # on the 2 ms physics grid


def test_follows_a_joint_trajectory_through_the_topic(graph):
    sim, probe = graph
    target = ARM.home_rad + np.array([0.2, -0.2, 0.1, 0.2, -0.2, 0.2, -0.3])
    start = _sim_now(sim)
    assert _wait(lambda: probe.traj_pub.get_subscription_count() > 0)
    probe.traj_pub.publish(cv.make_joint_trajectory(ARM.joint_names, target[None, :], [1.0]))
    assert _wait(lambda: cv.time_to_s(probe.joint_states[-1].header.stamp) > start + 1.6)
    q = cv.joint_state_positions(probe.joint_states[-1], ARM.joint_names)
    np.testing.assert_allclose(q, target, atol=3e-3)
    # a partial trajectory is rejected like a real JTC would and the arm stays put
    before = sim.rejections
    probe.traj_pub.publish(cv.make_joint_trajectory(ARM.joint_names[:2], np.zeros((1, 2)), [0.5]))
    assert _wait(lambda: sim.rejections == before + 1)
    assert "allow_partial_joints_goal" in sim.last_rejection
    t = _sim_now(sim)
    assert _wait(lambda: cv.time_to_s(probe.joint_states[-1].header.stamp) > t + 0.6)
    np.testing.assert_allclose(cv.joint_state_positions(probe.joint_states[-1], ARM.joint_names), target, atol=3e-3)


def test_gripper_command_topic(graph):
    sim, probe = graph
    assert _wait(lambda: probe.gripper_pub.get_subscription_count() > 0)
    probe.gripper_pub.publish(cv.make_float64_multi_array([0.01]))
    t = _sim_now(sim)
    assert _wait(lambda: cv.time_to_s(probe.joint_states[-1].header.stamp) > t + 0.8)
    assert probe.joint_states[-1].position[-1] == pytest.approx(0.01, abs=1e-3)


def test_a_command_that_raises_on_the_physics_thread_is_logged_and_the_physics_goes_on(graph):
    # Last resort behind the topic checks: the physics thread used to die on it (the world stood
    # still under a live graph). Here a queued command that raises, as a NaN forward command did.
    sim, probe = graph

    def broken() -> None:
        raise ValueError("forward command for arm 'arm' contains non-finite values: [nan]")

    errors = sim.command_errors
    sim._commands.put(broken)
    assert _wait(lambda: sim.command_errors == errors + 1, 10.0)
    t = _sim_now(sim)
    assert _wait(lambda: _sim_now(sim) > t + 0.2, 30.0), "the physics stopped"
    # and commands after it are applied
    probe.gripper_pub.publish(cv.make_float64_multi_array([0.02]))
    t = _sim_now(sim)
    assert _wait(lambda: cv.time_to_s(probe.joint_states[-1].header.stamp) > t + 0.8)
    assert probe.joint_states[-1].position[-1] == pytest.approx(0.02, abs=1e-3)


def test_reset_is_seeded_and_republishes_the_instruction(graph):
    sim, probe = graph
    assert probe.reset_client.wait_for_service(timeout_sec=5.0)
    future = probe.reset_client.call_async(Trigger.Request())
    assert _wait(future.done)
    result = future.result()
    assert result.success
    expected = make_task(sim.hw.scene, seed=5 + 0)  # first reset: seed + 0
    assert result.message.startswith("episode 0 seed 5") and expected.instruction in result.message
    assert _wait(lambda: probe.instructions and probe.instructions[-1] == expected.instruction)
    n = len(probe.objects)
    assert _wait(lambda: len(probe.objects) > n)
    poses = cv.markers_to_poses(probe.objects[-1])
    assert set(poses) == {"red_cube", "green_cube", "blue_cube"}
    for name, pose in expected.initial_cube_poses.items():
        np.testing.assert_allclose(poses[name][:2, 3], pose[:2], atol=2e-3)
    assert _wait(lambda: len(probe.success) > 2) and probe.success[-1] is False
    future = probe.reset_client.call_async(Trigger.Request())
    assert _wait(future.done) and future.result().message.startswith("episode 1 seed 6")


def test_real_time_factor_is_capped(graph):
    sim, _ = graph
    rtf = sim.real_time_factor()
    assert 0.0 < rtf <= 2.0 * 1.1


def test_aloha_topics_live_under_the_arm_namespaces(own_ros_domain):
    # own domain: the module's fr3 sim already publishes /clock on the module's
    context = rclpy.Context()
    rclpy.init(context=context)
    sim = SimNode(context=context, parameter_overrides=[Parameter("embodiment", value="aloha"), Parameter("real_time_factor", value=0.0)])
    probe = Node("aloha_probe", context=context)
    states = {"follower_left": [], "follower_right": []}
    for ns, received in states.items():
        probe.create_subscription(JointState, f"{ns}/joint_states", received.append, 10)
    traj_pub = probe.create_publisher(JointTrajectory, "follower_right/arm_controller/joint_trajectory", 10)
    executor = MultiThreadedExecutor(num_threads=2, context=context)
    executor.add_node(sim)
    executor.add_node(probe)
    spinner = Spinner(executor)
    try:
        assert _wait(lambda: all(len(v) > 3 for v in states.values()))
        right = sim.spec.arm("follower_right")
        # bare driver names on the namespaced topic, gripper motor joint last
        assert list(states["follower_right"][-1].name) == list(right.joint_names) + ["gripper"]
        target = right.home_rad + np.array([0.3, 0.1, -0.1, 0.2, 0.2, -0.3])
        assert _wait(lambda: traj_pub.get_subscription_count() > 0)
        traj_pub.publish(cv.make_joint_trajectory(right.joint_names, target[None, :], [0.5]))
        t = sim.hw.time_s
        assert _wait(lambda: cv.time_to_s(states["follower_right"][-1].header.stamp) > t + 1.2)
        np.testing.assert_allclose(cv.joint_state_positions(states["follower_right"][-1], right.joint_names), target, atol=3e-3)
        # the left arm did not move
        left = sim.spec.arm("follower_left")
        np.testing.assert_allclose(cv.joint_state_positions(states["follower_left"][-1], left.joint_names), left.home_rad, atol=3e-3)
    finally:
        assert spinner.stop(timeout_s=60.0)  # generous: a loaded machine may be inside a long callback
        sim.destroy_node()
        probe.destroy_node()
        rclpy.shutdown(context=context)


def test_wall_clock_mode_stamps_with_wall_time_and_no_clock():
    context = rclpy.Context()
    rclpy.init(context=context)
    # Own namespace: the module's sim-time graph is still publishing on this domain.
    sim = SimNode(context=context, namespace="wall_mode",
                  parameter_overrides=[Parameter("clock_mode", value="wall"), Parameter("joint_state_rate_hz", value=100.0)])  # fmt: skip
    probe = Node("wall_probe", context=context, namespace="wall_mode")
    states, clocks = [], []
    probe.create_subscription(JointState, "joint_states", states.append, 10)
    probe.create_subscription(Clock, "/clock", clocks.append, 10)
    executor = MultiThreadedExecutor(num_threads=2, context=context)
    executor.add_node(sim)
    executor.add_node(probe)
    spinner = Spinner(executor)
    try:
        assert _wait(lambda: len(states) > 20)
        wall_now = time.time()
        stamp = cv.time_to_s(states[-1].header.stamp)
        assert abs(wall_now - stamp) < 2.0  # wall-clock stamps (epoch seconds), not sim seconds
        # no /clock from this node (other graphs on the domain may publish one)
        publishers = probe.get_publishers_info_by_topic("/clock")
        assert not [i for i in publishers if i.node_namespace == "/wall_mode"]
        assert all(cv.time_to_s(c.clock) < 1e6 for c in clocks)  # whatever arrives is someone's sim time
        assert 0.0 < sim.real_time_factor() <= 1.25  # paced to the wall clock: never ahead of it
    finally:
        assert spinner.stop(timeout_s=60.0)  # generous: a loaded machine may be inside a long callback
        sim.destroy_node()
        probe.destroy_node()
        rclpy.shutdown(context=context)


@pytest.mark.parametrize(
    "name, value, fragment",
    [("clock_mode", "fast", "clock_mode"), ("camera_rate_hz", 0.0, "camera_rate_hz"), ("real_time_factor", -1.0, "real_time_factor")],
)
def test_bad_parameters_are_named(name, value, fragment):
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        with pytest.raises(ValueError, match=fragment):
            SimNode(context=context, parameter_overrides=[Parameter(name, value=value), Parameter("autostart", value=False)])
    finally:
        rclpy.shutdown(context=context)


def test_success_since_is_the_start_of_the_streak_on_the_sims_clock_and_a_reset_clears_it(graph):
    sim, probe = graph
    hw = sim.hw
    real_check = hw.is_success
    try:
        assert _wait(lambda: len(probe.success) > 1) and sim.success_since_s is None
        t_on = hw.time_s
        hw.is_success = lambda: True  # the task is solved from now on
        assert _wait(lambda: sim.success_since_s is not None)
        since = sim.success_since_s
        assert t_on <= since <= t_on + 0.1 + 1e-9  # the first check after it (10 Hz, simulated)
        t = hw.time_s
        assert _wait(lambda: hw.time_s > t + 0.3)
        assert sim.success_since_s == since  # one streak, dated from its start
        t_before_reset = hw.time_s
        future = probe.reset_client.call_async(Trigger.Request())
        assert _wait(future.done) and future.result().success
        # a new streak, dated after the reset (the old one began before it)
        assert _wait(lambda: sim.success_since_s is not None and sim.success_since_s >= t_before_reset)
        hw.is_success = lambda: False
        assert _wait(lambda: sim.success_since_s is None)
    finally:
        hw.is_success = real_check


def _sim_graph(name: str, *extra_nodes: Node):
    context = rclpy.Context()
    rclpy.init(context=context)
    sim = SimNode(name, context=context, parameter_overrides=[Parameter("joint_state_rate_hz", value=100.0)])
    executor = MultiThreadedExecutor(num_threads=2, context=context)
    executor.add_node(sim)
    return context, sim, Spinner(executor)


def _close(context, sim, spinner, *nodes) -> None:
    assert spinner.stop(timeout_s=60.0)
    sim.destroy_node()
    for n in nodes:
        n.destroy_node()
    rclpy.shutdown(context=context)


def test_a_simulation_started_on_a_clock_someone_publishes_refuses_to_run(own_ros_domain):
    # Two graphs started on one ROS domain (a `vla-ros record` running, a `vla-ros demo` started in
    # another terminal) would interleave two /clock streams: every node's time jumps back and forth.
    # The newcomer finds the other publisher within its claim window, stops its physics and ends its
    # executor with the reason.
    other = rclpy.Context()
    rclpy.init(context=other)
    elsewhere = Node("other_sim", context=other)
    elsewhere.create_publisher(Clock, "/clock", 10)
    context, sim, spinner = _sim_graph("sim_newcomer")
    try:
        assert _wait(lambda: not spinner.is_alive(), timeout_s=30.0)
        assert isinstance(spinner.error, RuntimeError) and str(spinner.error) == sim.fault
        assert f"already publishes /clock on ROS_DOMAIN_ID {own_ros_domain} (2 publishers" in sim.fault
        assert "/other_sim" in sim.fault and "namespace:=" in sim.fault
        frozen = sim.hw.time_s
        time.sleep(0.3)
        assert sim.hw.time_s == frozen  # its physics stopped: nothing moves
    finally:
        _close(context, sim, spinner)
        elsewhere.destroy_node()
        rclpy.shutdown(context=other)


def test_an_established_simulation_logs_a_newcomer_on_its_clock_and_goes_on(own_ros_domain, monkeypatch):
    from vla_ros.nodes import sim_node as sn

    monkeypatch.setattr(sn, "CLOCK_CLAIM_WINDOW_S", 0.0)  # past its window from the start
    context, sim, spinner = _sim_graph("sim_established")
    intruder = Node("intruder", context=context)
    intruder.create_publisher(Clock, "/clock", 10)
    try:
        assert _wait(lambda: sim.count_publishers("/clock") == 2)
        t0 = sim.hw.time_s
        time.sleep(1.2)  # two checks at least
        assert spinner.is_alive() and sim.fault == "" and sim.hw.time_s > t0
    finally:
        _close(context, sim, spinner, intruder)


def test_a_non_finite_forward_command_is_refused_at_the_topic(tmp_path):
    import yaml

    from vla_ros.core.embodiment import config_dir, urdf_dir

    raw = yaml.safe_load((config_dir() / "fr3.yaml").read_text())
    raw["arms"]["arm"]["command"] = {"kind": "forward_position", "topic": "forward_position_controller/commands"}
    raw["urdf"]["file"] = str(urdf_dir() / raw["urdf"]["file"])
    path = tmp_path / "fr3_forward.yaml"
    path.write_text(yaml.safe_dump(raw))
    context = rclpy.Context()
    rclpy.init(context=context)
    sim = SimNode(context=context, namespace="fwd_mode", parameter_overrides=[
        Parameter("embodiment", value=str(path)), Parameter("clock_mode", value="wall")])
    probe = Node("fwd_probe", context=context, namespace="fwd_mode")
    states = []
    probe.create_subscription(JointState, "joint_states", states.append, 10)
    pub = probe.create_publisher(Float64MultiArray, "forward_position_controller/commands", 10)
    executor = MultiThreadedExecutor(num_threads=2, context=context)
    executor.add_node(sim)
    executor.add_node(probe)
    spinner = Spinner(executor)
    try:
        assert _wait(lambda: pub.get_subscription_count() > 0 and len(states) > 5)
        target = ARM.home_rad + 0.05
        pub.publish(cv.make_float64_multi_array(np.append(target[:6], np.nan)))
        pub.publish(cv.make_float64_multi_array(target))
        n = len(states)
        assert _wait(lambda: len(states) > n + 60)  # ~0.6 s
        assert sim.command_errors == 0  # refused at the topic, never queued
        np.testing.assert_allclose(cv.joint_state_positions(states[-1], ARM.joint_names), target, atol=3e-3)
    finally:
        assert spinner.stop(timeout_s=60.0)
        sim.destroy_node()
        probe.destroy_node()
        rclpy.shutdown(context=context)
