"""The safety envelope attacked from outside (issue 11), through the real sim_node + controller_node:

- property-based: hypothesis generates whole `action_chunk` JointTrajectory messages (names,
  values, sizes, stamps, durations; valid small motions among them) and sends each through the
  graph. Every message gets a decision (accept or a refusal with a reason), nothing escapes a
  callback (the node's last-resort guard is never reached), and everything the controller sends
  is accepted by a default joint_trajectory_controller and, run to its end including its
  braking tail, stays within the FR3 position, velocity and acceleration limits; the measured
  joints stay inside the position limits. VLA_ROS_ADVERSARIAL_EXAMPLES sets the number of
  examples (default 2000).
- the controller killed mid-motion (a separate controller_node process, SIGKILL) beside a sim on
  the wall clock: the JTC runs the last trajectory to its end, and the commanded motion (what a
  default JTC makes of the recorded messages) and the measured motion stop within the limits.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from vla_ros.core.action_spaces import action_names  # noqa: E402
from vla_ros.core.jtc import JointTrajectoryController, validate_trajectory  # noqa: E402
from vla_ros.core.scheduler import Plan  # noqa: E402
from vla_ros.nodes import conversions as cv  # noqa: E402
from vla_ros.nodes.runtime import BackgroundSpinner  # noqa: E402

from .helpers import Graph, trajectory_command  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.ros]

EXAMPLES = int(os.environ.get("VLA_ROS_ADVERSARIAL_EXAMPLES", "2000"))
REPO = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- message strategies

JOINT_NAMES = tuple(f"fr3_joint{i}" for i in range(1, 8))
POSITION_NAMES = JOINT_NAMES + ("gripper",)
EE_DELTA_NAMES = tuple(f"ee_delta/{a}" for a in ("x", "y", "z", "roll", "pitch", "yaw")) + ("gripper",)
EE_POSE_NAMES = tuple(f"ee_pose/{a}" for a in ("x", "y", "z", "qx", "qy", "qz", "qw")) + ("gripper",)
BAD_FLOATS = [float("nan"), float("inf"), -float("inf"), 1e308, -1e308, 1e6, 0.0, -3.5, 10.0]
PERIODS_NS = [100_000_000, 100_000_000, 50_000_000, 200_000_000, 10_000_000, 9_999_999, 1_000_000_001,
              1, 100, 1_000_000, 2**31 * 10**9 - 1, 30 * 10**9]


@st.composite
def names_strategy(draw):
    kind = draw(st.sampled_from(["position", "position", "position", "ee_delta", "ee_pose", "shuffled",
                                 "duplicate", "foreign", "subset", "empty", "mixed"]))
    if kind == "position":
        return POSITION_NAMES
    if kind == "ee_delta":
        return EE_DELTA_NAMES
    if kind == "ee_pose":
        return EE_POSE_NAMES
    if kind == "shuffled":
        return tuple(draw(st.permutations(POSITION_NAMES)))
    if kind == "duplicate":
        return POSITION_NAMES[:-1] + (POSITION_NAMES[0],)
    if kind == "foreign":
        return tuple(draw(st.lists(st.sampled_from(["panda_joint1", "waist", "", "fr3_joint8", "gripper", "x"]),
                                   min_size=1, max_size=9)))
    if kind == "subset":
        return POSITION_NAMES[: draw(st.integers(1, 7))]
    if kind == "empty":
        return ()
    return JOINT_NAMES[:4] + EE_DELTA_NAMES[:3] + ("gripper",)


@st.composite
def chunk_message(draw, now_s: float, q_now: np.ndarray):
    """(JointTrajectory, description) for the controller's clock at now_s and the arm at q_now:
    a valid small motion (joint_position or ee_delta, policy period, stamped now) with, in most
    examples, one to three of its aspects (names, size, values, times, stamp) made adversarial."""
    bad = set(draw(st.lists(st.sampled_from(["names", "size", "values", "times", "stamp"]), max_size=3)))
    names = draw(names_strategy()) if "names" in bad else draw(st.sampled_from([POSITION_NAMES, EE_DELTA_NAMES]))
    n = len(names)
    size = (draw(st.one_of(st.integers(0, 40), st.sampled_from([0, 1, 2, 999, 1000, 1001, 5000])))
            if "size" in bad else draw(st.integers(1, 15)))
    values_kind = draw(st.sampled_from(["random", "bad_float", "ragged", "far"])) if "values" in bad else "valid"
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if values_kind == "valid" and names == POSITION_NAMES:
        joint = rng.integers(0, 7)
        rate = rng.uniform(-0.4, 0.4)
        rows = np.tile(np.append(q_now, rng.uniform(0.0, 1.0)), (size, 1))
        rows[:, joint] += rate * 0.1 * np.arange(size)
    elif values_kind == "valid" and names == EE_DELTA_NAMES:
        rows = np.tile(np.append(rng.uniform(-0.002, 0.002, 6) * [1, 1, 1, 0.5, 0.5, 0.5], 1.0), (size, 1))
    elif values_kind == "valid":
        rows = rng.uniform(-1.0, 1.0, (size, n))
    elif values_kind == "random":
        rows = rng.uniform(-4.0, 4.0, (size, n))
    elif values_kind == "far":
        rows = np.tile(np.append(q_now, 1.0)[:n] if n <= 8 else np.zeros(n), (size, 1)) + rng.uniform(-3, 3)
    else:
        rows = rng.uniform(-1.0, 1.0, (size, n))
    rows = [list(map(float, r)) for r in rows]
    if values_kind == "bad_float" and size:
        i, j = rng.integers(0, size), rng.integers(0, max(n, 1))
        if n:
            rows[i][j] = BAD_FLOATS[rng.integers(0, len(BAD_FLOATS))]
    if values_kind == "ragged" and size:
        i = rng.integers(0, size)
        rows[i] = rows[i][: rng.integers(0, max(n, 1))] if rng.random() < 0.5 else rows[i] + [0.0]
    times_kind = draw(st.sampled_from(["uniform", "random", "decreasing", "offset"])) if "times" in bad else "uniform"
    period_ns = draw(st.sampled_from(PERIODS_NS)) if "times" in bad else 100_000_000
    if times_kind == "uniform":
        times = [i * period_ns for i in range(size)]
    elif times_kind == "random":
        times = sorted(int(x) for x in rng.integers(0, 2**40, size))
        if times:
            times[0] = 0
    elif times_kind == "decreasing":
        times = [(size - 1 - i) * period_ns for i in range(size)]
    else:
        times = [(i + 1) * period_ns for i in range(size)]
    stamp_kind = (draw(st.sampled_from(["late", "stale", "future", "far_future", "zero"])) if "stamp" in bad
                  else "now")
    stamp = {"now": now_s, "late": now_s - 0.05, "stale": now_s - 2.0, "future": now_s + 0.05,
             "far_future": now_s + 3600.0, "zero": 0.0}[stamp_kind]
    msg = _message(names, rows, times, max(stamp, 0.0))
    if "times" in bad and draw(st.integers(0, 10)) == 0 and msg.points:
        msg.points[-1].time_from_start.nanosec = 1_000_000_000 + int(rng.integers(0, 10**9))
    return msg, (f"{sorted(bad)} adversarial: {len(names)} names, {size} points, {values_kind} values, "
                 f"{times_kind} times (period {period_ns} ns), stamp {stamp_kind}")


def _message(names, rows, times_ns, stamp_s):
    from builtin_interfaces.msg import Duration
    from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

    msg = JointTrajectory()
    msg.header.stamp = cv.s_to_time(stamp_s)
    msg.joint_names = list(names)
    points = []
    for row, t_ns in zip(rows, times_ns):
        p = JointTrajectoryPoint()
        p.positions = row
        p.time_from_start = Duration(sec=int(t_ns // 10**9) % 2**31, nanosec=int(t_ns % 10**9))
        points.append(p)
    msg.points = points
    return msg


# --------------------------------------------------------------------------- judging what was sent


def assert_command_within_limits(msg, received_s: float, limits) -> None:
    """A default JTC accepts the message at its arrival, and its motion from the first point to
    the end (the braking tail included) is within position, velocity and acceleration limits."""
    joints = JOINT_NAMES
    command = trajectory_command(msg)
    reason = validate_trajectory(command, joints, now_s=received_s)
    assert reason is None, f"a default JTC rejects a command: {reason}"
    order = [list(msg.joint_names).index(j) for j in joints]
    q = np.array([[p.positions[k] for k in order] for p in msg.points])
    assert np.all(q >= limits.lower_rad) and np.all(q <= limits.upper_rad), "a command point is outside the limits"
    if len(msg.points) < 2:
        return
    t = np.array([cv.duration_to_s(p.time_from_start) for p in msg.points])
    v = np.array([[p.velocities[k] for k in order] for p in msg.points])
    plan = Plan(t, q, v)
    peak_v, peak_a = plan.peak_rates()
    lo, hi = plan.position_range()
    # time_from_start travels in whole nanoseconds: a planned segment of duration h arrives as h +/- 1 ns,
    # which moves a cubic's acceleration by up to ~2 ns / h relative (1 ms points: 2e-6; seen: 1.03e-6)
    rel = 1e-6 + 4e-9 / float(np.min(np.diff(t)))
    assert np.all(peak_v <= limits.velocity_rad_s * (1 + rel)), f"velocity {peak_v} over {limits.velocity_rad_s}"
    assert np.all(peak_a <= limits.acceleration_rad_s2 * (1 + rel)), f"acceleration {peak_a} over the limits"
    assert np.all(lo >= limits.lower_rad) and np.all(hi <= limits.upper_rad), "interpolated motion leaves the limits"


@pytest.fixture(scope="module")
def graph():
    g = Graph("fr3")
    try:
        g.start_controller()
        yield g
    finally:
        g.close()


# Multi-process timing under load (a 2-core CI machine): rerun up to twice; failures seen in full runs are
# listed in the closing note of 2026-12-05 (issue 11/13), not hidden here.
@pytest.mark.flaky(reruns=2)
def test_hypothesis_adversarial_chunks_through_the_graph(graph):
    core = graph.controller.core
    limits = core.limits
    seen = {"n": 0, "accepted": 0}
    t_start = graph.now()

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=False, database=None,
              suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def one(data):
        q_now = core.scheduler.plan.final_position_rad.copy() if core.scheduler.plan is not None else graph.latest()
        msg, what = data.draw(chunk_message(graph.now(), q_now))
        before = core.chunks_accepted + core.chunks_refused
        accepted = core.chunks_accepted
        graph.probe.chunk_pub.publish(msg)
        assert graph.wait(lambda: core.chunks_accepted + core.chunks_refused >= before + 1, 60.0), \
            f"no decision for: {what}"
        assert core.internal_errors == 0, core.last_internal_error
        seen["n"] += 1
        seen["accepted"] += core.chunks_accepted - accepted
        seen.setdefault("t", []).append(time.monotonic())

    one()
    graph.wait_sim(1.0)
    assert core.internal_errors == 0 and seen["n"] >= min(EXAMPLES, 50)
    assert seen["accepted"] > 0  # valid motions were among them and were executed
    recs = graph.commands("arm", since_s=t_start)
    assert recs
    for rec in recs:
        assert_command_within_limits(rec.msg, rec.received_s, limits)
    _, q_meas = graph.measured("arm", since_s=t_start)
    assert np.all(q_meas >= limits.lower_rad) and np.all(q_meas <= limits.upper_rad)
    assert graph.sim_trajectories_rejected() == 0, graph.sim.last_rejection
    per = np.diff(seen["t"]) if len(seen["t"]) > 1 else np.zeros(1)
    print(f"\nadversarial: {seen['n']} messages, {seen['accepted']} accepted, {len(recs)} trajectories judged, "
          f"{1e3 * np.median(per):.1f} ms per message (median)")


# --------------------------------------------------------------------------- kill mid-motion


# Its own ROS domain: the module's `graph` (a sim on simulated time and a controller, left where the
# hypothesis test moved the arm) is alive until the module ends. On the module's domain this test's
# probe and controller heard both sims' joint_states interleaved (stamps in simulated and wall time,
# two arm poses): the "joint 7 at 7-19 rad/s" measured in the 2026-12-05 session.
def test_controller_killed_mid_motion_stops_within_the_limits(tmp_path, own_ros_domain):
    """A separate controller_node process drives joint 7 at 1.5 rad/s (sim on the wall clock);
    SIGKILL. The JTC runs the last window's braking tail: commanded velocity and acceleration
    stay within the FR3 limits, the arm comes to rest inside the position limits."""
    import rclpy
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from rclpy.qos import qos_profile_sensor_data
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import JointState
    from trajectory_msgs.msg import JointTrajectory

    from vla_ros.core.embodiment import load_embodiment
    from vla_ros.core.safety import JointLimitSet
    from vla_ros.core.types import ActionChunk
    from vla_ros.nodes.sim_node import SimNode

    spec = load_embodiment("fr3")
    limits = JointLimitSet.from_embodiment(spec)
    context = rclpy.Context()
    rclpy.init(context=context)
    sim = SimNode(context=context, parameter_overrides=[
        Parameter("embodiment", value="fr3"), Parameter("clock_mode", value="wall"),
        Parameter("joint_state_rate_hz", value=250.0), Parameter("camera_rate_hz", value=1.0)])
    probe = Node("kill_probe", context=context)
    lock = threading.Lock()
    states, commands = [], []

    def on_state(m):
        with lock:
            states.append((time.time(), m))

    def on_command(m):
        with lock:
            commands.append((time.time(), m))

    diagnostics = []
    probe.create_subscription(DiagnosticArray, "diagnostics", lambda m: diagnostics.append((time.time(), m)), 10)
    probe.create_subscription(JointState, "joint_states", on_state, qos_profile_sensor_data)
    probe.create_subscription(JointTrajectory, "fr3_arm_controller/joint_trajectory", on_command, 100)
    chunk_pub = probe.create_publisher(JointTrajectory, "action_chunk", 10)
    executor = MultiThreadedExecutor(num_threads=4, context=context)
    executor.add_node(sim)
    executor.add_node(probe)
    spinner = BackgroundSpinner(executor, "adversarial_test").start()
    log = open(tmp_path / "controller.log", "w")
    env = dict(os.environ)
    proc = subprocess.Popen([str(Path(sys.executable).parent / "controller_node"), "--ros-args",
                             "-p", "embodiment:=fr3", "-p", "joint_state_timeout_s:=2.0"],
                            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)

    def wait(pred, timeout_s):
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if pred():
                return True
            time.sleep(0.002)
        return pred()

    def latest_q():
        with lock:
            return cv.joint_state_positions(states[-1][1], JOINT_NAMES)

    try:
        # The controller holds where the arm is (its diagnostics say so; discovery between the
        # processes may take a moment, the hold it sent once may come before it).
        assert wait(lambda: any(kv.key == "state" and kv.value == "holding"
                                for _, d in list(diagnostics) for s_ in d.status for kv in s_.values), 60.0), \
            (tmp_path / "controller.log").read_text()[-3000:]
        assert wait(lambda: chunk_pub.get_subscription_count() >= 1, 30.0)
        time.sleep(0.3)
        period = spec.policy_period_s
        steps = 26
        names = action_names(spec, "joint_position")
        # Joint 7 waits 0.5 s (a late delivery still starts from rest), accelerates at 2 rad/s^2 to
        # 1.5 rad/s (0.75 s), then cruises: 0.785 -> -1.6 rad.
        t = np.maximum(period * np.arange(steps) - 0.5, 0.0)
        ramp = np.where(t < 0.75, t**2, 0.5625 + 1.5 * (t - 0.75))

        def moving_fast():
            with lock:
                recent = [(t, cv.joint_state_positions(m, JOINT_NAMES)[6]) for t, m in states[-20:]]
            if len(recent) < 20:
                return False
            (t0, a), (t1, b) = recent[0], recent[-1]
            return t1 > t0 and abs(b - a) / (t1 - t0) > 1.3

        for _ in range(3):  # a loaded machine may deliver a chunk too late (refused as stale): resend
            q0 = latest_q()
            rows = np.tile(q0, (steps, 1))
            rows[:, 6] -= ramp
            chunk = ActionChunk(names, np.hstack([rows, np.ones((steps, 1))]), period, time.time())
            chunk_pub.publish(cv.chunk_to_msg(chunk))
            if wait(moving_fast, 5.0):
                break
        assert moving_fast(), (tmp_path / "controller.log").read_text()[-3000:]
        proc.send_signal(signal.SIGKILL)
        t_kill = time.time()
        proc.wait(timeout=10)

        def at_rest():
            with lock:
                recent = [(t, cv.joint_state_positions(m, JOINT_NAMES)) for t, m in states if t >= time.time() - 0.3]
            return (len(recent) > 10 and recent[0][0] > t_kill + 0.5
                    and np.max(np.ptp(np.array([q for _, q in recent]), axis=0)) < 2e-3)

        # Physics on a loaded machine may run behind the wall clock: wait for rest, not a fixed time.
        assert wait(at_rest, 20.0), "the arm did not come to rest after the controller died"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        log.close()
        sim.stop()
        assert spinner.stop()
        sim.destroy_node()
        probe.destroy_node()
        rclpy.try_shutdown(context=context)

    with lock:
        states_ = list(states)
        commands_ = list(commands)
    t_meas = np.array([cv.time_to_s(m.header.stamp) for _, m in states_])
    q_meas = np.array([cv.joint_state_positions(m, JOINT_NAMES) for _, m in states_])
    assert np.all(q_meas >= limits.lower_rad) and np.all(q_meas <= limits.upper_rad)
    # What a default JTC commands from the recorded messages, at their arrival times, at 1 kHz.
    jtc = JointTrajectoryController(JOINT_NAMES)
    jtc.hold(q0)
    assert commands_, "no trajectory recorded"
    ts = np.arange(commands_[0][0], max(t_kill + 1.5, states_[-1][0]), 0.001)
    k = 0
    last_first_point = -np.inf
    q_cmd, v_cmd, a_cmd = [], [], []
    for t in ts:
        while k < len(commands_) and commands_[k][0] <= t:
            msg = commands_[k][1]
            assert jtc.receive(trajectory_command(msg), commands_[k][0]) is None
            stamp = cv.time_to_s(msg.header.stamp) or commands_[k][0]
            last_first_point = stamp + cv.duration_to_s(msg.points[0].time_from_start)
            k += 1
        q = np.array([np.interp(t, t_meas, q_meas[:, j]) for j in range(7)])
        state = jtc.update(t, q, np.zeros(7))
        q_cmd.append(state.positions)
        v_cmd.append(state.velocities)
        a_cmd.append(state.accelerations)
    q_cmd, v_cmd, a_cmd = np.array(q_cmd), np.array(v_cmd), np.array(a_cmd)
    tail = ts >= max(t_kill, last_first_point)
    assert np.count_nonzero(tail) > 500
    assert abs(v_cmd[tail][0, 6]) > 0.5, "the kill came before the arm was moving"
    peak_a = np.max(np.abs(a_cmd[tail]), axis=0)
    peak_v = np.max(np.abs(v_cmd[tail]), axis=0)
    assert np.all(peak_a <= limits.acceleration_rad_s2 * (1 + 1e-6)), f"commanded stop at {peak_a} rad/s^2"
    assert np.all(peak_v <= limits.velocity_rad_s * (1 + 1e-6))
    assert np.all(q_cmd >= limits.lower_rad) and np.all(q_cmd <= limits.upper_rad)
    assert np.all(v_cmd[-1] == 0.0)  # the JTC ran the trajectory to its end and holds it
    # The measured arm comes to rest: over the last 0.3 s (of arrival, as at_rest waited) it moves
    # less than 2 mrad.
    arrival = np.array([t for t, _ in states_])
    last = arrival >= arrival[-1] - 0.3
    assert np.max(np.ptp(q_meas[last], axis=0)) < 2e-3
    # The simulated joints' own velocities (MuJoCo's qvel, in each joint_states message): position
    # differences over the messages' stamps showed 9 rad/s "spikes" when the physics thread, behind
    # the wall clock on a loaded machine, caught up several steps between two stamps.
    v_meas = np.array([[m.velocity[list(m.name).index(j)] for j in JOINT_NAMES] for _, m in states_])
    after = arrival >= t_kill
    assert np.all(np.abs(v_meas) <= limits.velocity_rad_s * 1.05), np.max(np.abs(v_meas), axis=0)
    print(f"\nkill mid-motion: commanded j7 {v_cmd[tail][0, 6]:.3f} rad/s -> 0, peak commanded decel "
          f"{peak_a[6]:.2f} rad/s^2 (limit {limits.acceleration_rad_s2[6]}), measured |v| max after kill "
          f"{np.max(np.abs(v_meas[after]), axis=0).round(3).tolist()}")
