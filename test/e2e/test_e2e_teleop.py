"""Teleoperation end to end: teleop_node + the real sim_node and controller_node on simulated
time; the devices are played by nodes that publish what the real drivers publish (joy's
game_controller_node layout, spacenav's Twist + one-Joy-per-button-event, leader joint_states),
and the keyboard session runs `vla-ros teleop --keyboard` in a pseudo-terminal.

The sim runs at a fifth of real time: the test machines are shared, and executor latency
measured in simulated time is what the controller sees (at full speed on a loaded 2-core machine
a stalled executor reads as a silent device)."""

from __future__ import annotations

import math
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from geometry_msgs.msg import Twist
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import JointState, Joy

from vla_ros.core.kinematics import RobotKinematics
from vla_ros.core.teleop import load_teleop_config
from vla_ros.nodes import conversions as cv
from vla_ros.nodes.teleop_node import TeleopNode, start

from .helpers import Graph

pytestmark = [pytest.mark.slow, pytest.mark.ros]

RTF = 0.2
GAMEPAD = load_teleop_config("gamepad")
PERIOD_S = 1.0 / GAMEPAD.rate_hz  # the teleop command period (20 Hz)


class FakeDevice(Node):
    """Publishes a Joy (game_controller_node layout: 6 axes, 15 buttons) -- or, for the
    SpaceMouse, spacenav's Twist + Joy -- at `rate_hz` of simulated time, like the drivers'
    autorepeat, with header stamps from the simulated clock."""

    def __init__(self, context, name="fake_device", rate_hz=50.0, spacemouse=False):
        super().__init__(name, context=context, parameter_overrides=[Parameter("use_sim_time", value=True)])
        self.spacemouse = spacemouse
        self.joy_pub = self.create_publisher(Joy, "spacenav/joy" if spacemouse else "joy", 10)
        self.twist_pub = self.create_publisher(Twist, "spacenav/twist", 10)
        self.axes = [0.0] * 6
        self.buttons = [0] * 15
        self.twist = np.zeros(6)
        self.on = True
        self.stamps: list[float] = []
        self.create_timer(1.0 / rate_hz, self.publish)

    def publish(self) -> float | None:
        if not self.on:
            return None
        msg = Joy()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.axes = [float(a) for a in self.axes]
        msg.buttons = [] if self.spacemouse else list(self.buttons)
        if self.spacemouse:
            t = Twist()
            t.linear.x, t.linear.y, t.linear.z = (float(v) for v in self.twist[:3])
            t.angular.x, t.angular.y, t.angular.z = (float(v) for v in self.twist[3:])
            self.twist_pub.publish(t)
        self.joy_pub.publish(msg)
        self.stamps.append(cv.time_to_s(msg.header.stamp))
        return self.stamps[-1]

    def button_event(self, index: int, pressed: bool) -> None:
        """spacenav: one Joy for the event, buttons sized to index + 1."""
        msg = Joy()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.axes = [0.0] * 6
        msg.buttons = [0] * index + [int(pressed)]
        self.joy_pub.publish(msg)


def teleop_node(graph, device, name="teleop", **params):
    values = {"embodiment": graph.spec.name, "device": device, "use_sim_time": True, **params}
    node = TeleopNode(name, context=graph.context, parameter_overrides=[Parameter(k, value=v) for k, v in values.items()])
    graph.add_node(node)
    assert start(node)
    return node


def tool_path(graph, kin, since_s):
    t, q = graph.measured("arm", since_s)
    base, tool = kin.arm_frames("arm")
    return t, np.array([kin.frame_pose(row, tool, base)[:3, 3] for row in q])


def velocity(t, p, t_from, t_to):
    sel = (t >= t_from) & (t <= t_to)
    assert np.count_nonzero(sel) > 20, "too few joint_states in the window"
    return np.polyfit(t[sel], p[sel], 1)[0]


def is_stop_chunk(msg) -> bool:
    """Teleop's stop: brake within the first row, then still (motion chunks move on every row)."""
    return all(abs(v) < 1e-12 for pt in msg.points[2:] for v in pt.positions[:6])


def rest_time(t, p, t_from, speed_m_s):
    """First time after t_from from which the tool speed (over 20 ms) stays below speed_m_s."""
    step = max(1, int(round(0.02 / np.median(np.diff(t)))))
    v = np.linalg.norm(p[step:] - p[:-step], axis=1) / (t[step:] - t[:-step])
    tt = t[:-step]
    moving = np.flatnonzero((tt >= t_from) & (v >= speed_m_s))
    return t_from if moving.size == 0 else float(tt[moving[-1] + 1])


@pytest.fixture
def fr3_graph():
    graph = Graph("fr3", real_time_factor=RTF)
    try:
        graph.start_controller()
        yield graph
    finally:
        graph.close()


def test_gamepad_moves_the_tool_at_the_commanded_speed_and_release_holds(fr3_graph):
    graph = fr3_graph
    kin = RobotKinematics.from_embodiment(graph.spec)
    tele = teleop_node(graph, "joy")
    pad = FakeDevice(graph.context)
    graph.add_node(pad)
    graph.wait_sim(0.5)
    t0 = graph.now()
    # left stick 0.55 forward -> deadband 0.1 -> 0.5 -> 0.5 x 0.1 m/s = 0.05 m/s along base +x
    pad.axes[1], pad.buttons[10] = 0.55, 1
    pad.publish()
    graph.wait_sim(2.5)
    pad.buttons[10] = 0  # release the dead-man
    t_release = pad.publish()
    graph.wait_sim(1.5)
    t, p = tool_path(graph, kin, t0 - 0.1)
    v = velocity(t, p, t0 + 0.5, t_release - 0.05)
    print(f"gamepad: tool velocity {v} m/s (commanded [0.05, 0, 0])")
    assert v[0] == pytest.approx(0.05, rel=0.10)
    assert abs(v[1]) < 0.005 and abs(v[2]) < 0.005
    core = graph.controller.core
    assert core.chunks_refused == 0, core.last_refusal
    assert tele.session.chunks_published >= 30

    # Releasing: a stop chunk stamped with the release, published on the release itself ...
    # (a motion Joy may carry the same simulated stamp: the stop is then stamped 1 us after it)
    stop = graph.probe.chunks[-1]  # ... the last one
    assert is_stop_chunk(stop.msg)
    assert t_release <= cv.time_to_s(stop.msg.header.stamp) <= t_release + 1e-5
    # sent on the release message itself (not at the next tick); what the probe sees adds the
    # executor's delivery latency on a loaded machine
    print(f"gamepad release: stop chunk seen {stop.received_s - t_release:.3f} s after the release")
    assert stop.received_s - t_release <= PERIOD_S + 0.1
    # ... and the arm holds: it comes to rest within the braking distance of one row (half a
    # row's travel, 2.5 mm) plus one command period of travel (2.5 mm) of where it was at the
    # release, and stays there.
    p_release = np.array([np.interp(t_release, t, p[:, k]) for k in range(3)])
    p_final = p[-1]
    travel = np.linalg.norm(p_final - p_release)
    excursion = np.linalg.norm(p[t > t_release] - p_final, axis=1).max()
    print(f"gamepad release: rests {travel * 1e3:.2f} mm from the pose at the release (braking: 2.5 mm), "
          f"at rest {rest_time(t, p, t_release, 0.1 * 0.05) - t_release:.3f} s after it; largest excursion "
          f"on the way {excursion * 1e3:.2f} mm")
    assert travel <= 0.5 * 0.05 * graph.spec.policy_period_s + 0.05 * PERIOD_S
    assert np.ptp(p[t > t_release + 0.5], axis=0).max() < 1e-3  # still (servo settling only)


def test_spacemouse_tool_frame_and_input_timeout(fr3_graph, tmp_path):
    graph = fr3_graph
    kin = RobotKinematics.from_embodiment(graph.spec)
    mapping = yaml.safe_load(Path(load_teleop_config("spacemouse").source).read_text())
    mapping["frame"] = "tool"
    (tmp_path / "sm.yaml").write_text(yaml.safe_dump(mapping))
    tele = teleop_node(graph, "spacemouse", mapping=str(tmp_path / "sm.yaml"))
    mouse = FakeDevice(graph.context, spacemouse=True, rate_hz=30.0)  # spacenav re-publishes every ~31 ms
    graph.add_node(mouse)
    graph.wait_sim(0.5)
    base, tool = kin.arm_frames("arm")
    tool_x = kin.frame_pose(graph.latest(), tool, base)[:3, 0]
    t0 = graph.now()
    mouse.button_event(1, True)  # right button: dead-man
    mouse.twist[0] = 0.55  # push the cap forward: 0.05 m/s along the *tool's* x-axis
    graph.wait_sim(2.0)
    mouse.on = False  # the driver dies: input silent
    t_silent = mouse.stamps[-1]
    graph.wait_sim(1.5)
    t, p = tool_path(graph, kin, t0 - 0.1)
    v = velocity(t, p, t0 + 0.5, t_silent - 0.05)
    print("spacemouse:", tele.messages)
    print(f"spacemouse tool frame: velocity {v} m/s, commanded {0.05 * tool_x}")
    assert np.linalg.norm(v - 0.05 * tool_x) <= 0.1 * 0.05
    assert any("input silent" in text for _, text in tele.messages)
    last = graph.probe.chunks[-1]
    assert is_stop_chunk(last.msg), tele.messages
    t_stop = cv.time_to_s(last.msg.header.stamp)
    # silent for input_timeout_s (0.1 s), noticed by the next tick (one period); node clocks
    # follow /clock (100 Hz) each on its own, so they may differ by a tick
    assert t_silent + 0.1 - 0.011 <= t_stop <= t_silent + 0.1 + PERIOD_S + 0.05
    after = t > t_stop + 0.5
    assert np.ptp(p[after], axis=0).max() < 1e-3
    assert graph.controller.core.chunks_refused == 0


def test_bad_input_is_refused_and_the_arm_holds(fr3_graph):
    graph = fr3_graph
    kin = RobotKinematics.from_embodiment(graph.spec)
    tele = teleop_node(graph, "joy")
    pad = FakeDevice(graph.context)
    graph.add_node(pad)
    graph.wait_sim(0.5)
    t0 = graph.now()
    pad.axes[0], pad.buttons[10] = -0.55, 1  # stick right: -y
    graph.wait_sim(1.0)
    pad.axes[0] = math.nan  # a broken driver: NaN axes
    graph.wait_sim(1.0)
    t_nan = graph.now() - 1.0
    assert any(level == "error" and "axes [0] are not finite" in text for level, text in tele.messages)
    pad.axes[0] = -0.55
    pad.buttons = [0] * 10 + [1]  # an unknown device: 11 buttons, the mapping reads up to 14
    graph.wait_sim(1.0)
    assert any("reads button 14 but the message has 11 buttons" in text for _, text in tele.messages)
    t, p = tool_path(graph, kin, t0 - 0.1)
    v = velocity(t, p, t0 + 0.4, t_nan)
    assert v[1] == pytest.approx(-0.05, rel=0.1)  # it was moving before
    held = t > t_nan + 0.4
    print(f"bad input: tool spread while refused {np.ptp(p[held], axis=0)} m")
    assert np.ptp(p[held], axis=0).max() < 1e-3  # and held still through both kinds of bad input
    assert graph.controller.core.chunks_refused == 0  # nothing malformed ever reached the controller
    assert tele.session.refusals >= 10


# ---------------------------------------------------------------------------------- ALOHA
class FakeLeaders(Node):
    """Both leaders' joint_states at 50 Hz of simulated time (bare names, as their driver)."""

    NAMES = ["waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate", "gripper",
             "left_finger", "right_finger"]

    def __init__(self, context, q_left, q_right, gripper):
        super().__init__("fake_leaders", context=context, parameter_overrides=[Parameter("use_sim_time", value=True)])
        self.q = {"leader_left": np.array(q_left, float), "leader_right": np.array(q_right, float)}
        self.gripper = gripper
        self.history: list[tuple[float, np.ndarray]] = []  # (stamp, left leader joints)
        self.pubs = {ns: self.create_publisher(JointState, f"{ns}/joint_states", qos_profile_sensor_data)
                     for ns in self.q}
        self.create_timer(0.02, self.publish)

    def publish(self) -> None:
        stamp = self.get_clock().now().nanoseconds * 1e-9
        self.history.append((stamp, self.q["leader_left"].copy()))
        for ns, pub in self.pubs.items():
            pub.publish(cv.make_joint_state(self.NAMES, list(self.q[ns]) + [self.gripper, 0.03, -0.03],
                                            stamp_s=stamp))


def follower_q(graph):
    return {a: graph.measured(a, graph.probe.now_s() - 1.0)[1][-1] for a in ("follower_left", "follower_right")}


def test_aloha_followers_track_the_leaders_and_refuse_a_far_leader():
    graph = Graph("aloha", real_time_factor=RTF)
    try:
        graph.start_controller()
        tele = teleop_node(graph, "leader")
        home = np.array(graph.spec.arm("follower_left").home_rad)
        offset = np.array([0.06, -0.04, 0.05, 0.03, -0.05, 0.08])  # within engage_tolerance_rad (0.1)
        leaders = FakeLeaders(graph.context, home + offset, home - offset, gripper=0.8298)  # open
        graph.add_node(leaders)
        graph.wait_sim(0.5)
        assert tele.session.state == "waiting" and graph.controller.core.chunks_accepted == 0
        leaders.gripper = -0.0552  # ALOHA's gesture: both leader grippers squeezed closed
        assert graph.wait(lambda: tele.session.state == "mirroring", 30.0), tele.messages
        graph.wait_sim(1.5)
        q = follower_q(graph)
        err = max(np.abs(q["follower_left"] - (home + offset)).max(), np.abs(q["follower_right"] - (home - offset)).max())
        print(f"aloha steady-state tracking error {err:.4f} rad")
        assert err < 0.01
        spec_gripper = graph.spec.arm("follower_left").gripper
        assert graph.measured_gripper("follower_left") == pytest.approx(spec_gripper.closed_position, abs=0.03)

        # The leaders move (0.3 rad in ~1.5 s on two joints) and open their grippers halfway.
        t_move = graph.now()
        for k in range(1, 31):
            leaders.q["leader_left"] = home + offset + np.array([0.01 * k, 0, 0, 0, 0, 0])
            leaders.q["leader_right"] = home - offset + np.array([0, 0, -0.01 * k, 0, 0, 0])
            graph.wait_sim(0.05)
        leaders.gripper = -0.0552 + 0.5 * (0.8298 + 0.0552)
        t_moving_end = graph.now()
        graph.wait_sim(1.5)
        q = follower_q(graph)
        err = max(np.abs(q["follower_left"] - leaders.q["leader_left"]).max(),
                  np.abs(q["follower_right"] - leaders.q["leader_right"]).max())
        print(f"aloha tracking error after the move {err:.4f} rad")
        assert err < 0.01
        half = 0.5 * (spec_gripper.open_position + spec_gripper.closed_position)
        assert graph.measured_gripper("follower_right") == pytest.approx(half, abs=0.03)
        t, ql = graph.measured("follower_left", t_move)
        th = np.array([h[0] for h in leaders.history])
        waist = np.array([h[1][0] for h in leaders.history])
        sel = (th > t_move + 0.3) & (th < t_moving_end)
        lag = np.abs(np.interp(th[sel], t, ql[:, 0]) - waist[sel])
        speed = (waist[sel][-1] - waist[sel][0]) / (th[sel][-1] - th[sel][0])
        print(f"aloha tracking error while the leader moves at {speed:.3f} rad/s: max {lag.max():.4f} rad")

        # A leader far from its follower, with the start gesture made: refused, the joint and the
        # distance named, and the followers hold. (If mirroring, it stops first: "too far apart".)
        before = follower_q(graph)
        leaders.q["leader_left"] = leaders.q["leader_left"] + np.array([0, 1.0, 0, 0, 0, 0])
        leaders.gripper = -0.0552
        assert graph.wait(lambda: tele.session.state == "refused", 60.0), tele.messages[-3:]
        graph.wait_sim(0.5)
        text = " | ".join(t for _, t in tele.messages[-5:])
        assert "too far from its follower to start: leader_left/shoulder is +1.000 rad from follower_left/shoulder" \
            in text, text
        assert tele.session.state == "refused"
        after = follower_q(graph)
        for arm in before:
            assert np.abs(after[arm] - before[arm]).max() < 0.01, (arm, after[arm] - before[arm])
        assert graph.controller.core.chunks_refused == 0
    finally:
        graph.close()


# ---------------------------------------------------------------------------------- keyboard
def _read_until(fd, marker: str, timeout_s: float) -> str:
    text = ""
    deadline = time.monotonic() + timeout_s
    while marker not in text and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                text += os.read(fd, 4096).decode(errors="replace")
            except OSError:
                break
    return text


def test_keyboard_session_in_a_pty_moves_and_holds(fr3_graph):
    graph = fr3_graph
    kin = RobotKinematics.from_embodiment(graph.spec)
    cmd = [sys.executable, "-m", "vla_ros.cli.main", "teleop", "--keyboard", "--embodiment", "fr3", "--use-sim-time"]
    pid, fd = pty.fork()
    if pid == 0:  # the child: the CLI on the pty's terminal
        os.execvpe(cmd[0], cmd, dict(os.environ))
    try:
        out = _read_until(fd, "quit", 120.0)
        assert "w +" in out and "space stop now" in out, out  # the bindings table
        # discovery of the teleop process, and its /clock, before the first key
        assert graph.wait(lambda: graph.probe.count_publishers("action_chunk") >= 2, 60.0)
        time.sleep(2.0)
        t0 = graph.now()
        end = t0 + 2.0  # hold 'w' for 2 s of simulated time (a terminal repeats at ~30 Hz)
        while graph.now() < end:
            os.write(fd, b"w")
            time.sleep(1 / 30)
        t_last = graph.now()
        graph.wait_sim(2.0)
        os.write(fd, b"q")
        out += _read_until(fd, "  quit", 30.0)
        _, status = os.waitpid(pid, 0)
        pid = 0
        assert os.waitstatus_to_exitcode(status) == 0, out
    finally:
        if pid:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        os.close(fd)
    chunks = [r for r in graph.probe.chunks if not is_stop_chunk(r.msg)]
    assert len(chunks) > 10, out
    first = min(cv.time_to_s(r.msg.header.stamp) for r in chunks)
    t, p = tool_path(graph, kin, t0 - 0.1)
    v = velocity(t, p, first + 0.5, t_last - 0.1)
    print(f"keyboard: tool velocity {v} m/s (commanded [0.05, 0, 0])")
    assert v[0] == pytest.approx(0.05, rel=0.10) and abs(v[1]) < 0.005 and abs(v[2]) < 0.005
    assert "key released: stream stopped" in out
    held = t > t_last + 0.5 + 0.5  # key_hold_s after the last repeat, then the controller's stop
    assert np.ptp(p[held], axis=0).max() < 1e-3
    assert graph.controller.core.chunks_refused == 0
