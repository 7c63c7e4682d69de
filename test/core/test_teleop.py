"""vla_ros.core.teleop: mappings, deadbands, chunk rows, dead-man / timeout / gripper / episode
logic and the ALOHA leader session, on hand-computed values (no ROS)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vla_ros.core.action_spaces import ActionAdapter, action_names
from vla_ros.core.embodiment import load_embodiment
from vla_ros.core.kinematics import RobotKinematics
from vla_ros.core.teleop import (
    CartesianSession,
    InputRefused,
    JoyMapper,
    LeaderSession,
    TeleopConfigError,
    apply_deadband,
    available_mappings,
    chunk_steps,
    keyboard_bindings_table,
    load_teleop_config,
    rotation_from_vector,
    twist_rows,
)

FR3 = load_embodiment("fr3")
ALOHA = load_embodiment("aloha")
GAMEPAD = load_teleop_config("gamepad")
FR3_JOINTS = list(FR3.arms[0].joint_names) + ["fr3_finger_joint1"]
HOME = list(FR3.arms[0].home_rad)


def joy(x=0.0, y=0.0, deadman=True, **buttons):
    """A game_controller_node message: 6 axes, 15 buttons (indices from joy/README.md)."""
    axes = [0.0] * 6
    axes[1], axes[0] = x, y
    b = [0] * 15
    b[10] = int(deadman)
    names = {"a": 0, "b": 1, "xb": 2, "yb": 3, "start": 6, "lb": 9}
    for name, value in buttons.items():
        if name == "rt":
            axes[5] = value
        else:
            b[names[name]] = int(value)
    return axes, b


def fr3_session(kin=None, gripper_m=0.04, mapping=GAMEPAD):
    s = CartesianSession(FR3, mapping, kin)
    s.update_joint_state("arm", FR3_JOINTS, HOME + [gripper_m])
    return s


def col(chunk, name):
    return chunk.values[:, chunk.names.index(name)]


# ---------------------------------------------------------------------------------- mappings
def test_shipped_mappings_load_with_the_driver_layouts():
    assert set(available_mappings()) >= {"gamepad", "xbox_joy_node", "spacemouse", "keyboard", "aloha_leaders"}
    g = GAMEPAD
    # joy game_controller_node: 1 LEFTY, 0 LEFTX, 3 RIGHTY; 10 RIGHTSHOULDER, 9 LEFTSHOULDER, 6 START
    assert (g.motion["x"].axis, g.motion["y"].axis, g.motion["z"].axis) == (1, 0, 3)
    assert g.buttons["deadman"].button == 10 and g.buttons["turbo"].button == 9
    assert g.buttons["start_episode"].button == 6
    assert g.buttons["gripper_close"].axis == 5 and g.buttons["gripper_close"].below
    assert g.input_timeout_s == 0.1 and g.device == "joy"
    sm = load_teleop_config("spacemouse")
    assert sm.twist_topic == "spacenav/twist" and sm.joy_topic == "spacenav/joy" and sm.button_mode == "events"
    leaders = load_teleop_config("aloha_leaders")
    assert (leaders.gripper_open, leaders.gripper_closed) == (0.8298, -0.0552)
    assert leaders.leader_topic("follower_left") == "leader_left/joint_states"
    table = keyboard_bindings_table(load_teleop_config("keyboard"))
    assert "w +" in table and "space stop now" in table and "q     quit" in table


@pytest.mark.parametrize("text, match", [
    ("device: joy\nbuttons: {deadman: {button: 1}}\nlinear_sped_m_s: 1\n", "did you mean 'linear_speed_m_s'"),
    ("device: joystick\n", "expected one of"),
    ("device: joy\nmotion: {x: {axis: 1}}\n", "buttons.deadman: a joy mapping needs a dead-man button"),
    ("device: joy\nbuttons: {deadman: {button: -1}}\n", r"buttons.deadman.button: expected an index >= 0"),
    ("device: joy\nbuttons: {deadman: {button: 1}}\nmotion: {x: {axis: 1, buttons: [1, 2]}}\n", "exactly one of"),
    ("device: joy\nbuttons: {deadman: {button: 1}}\ndeadband: 1.5\n", r"deadband: expected a number in \[0.0, 0.9\]"),
    ("device: leader\nleaders: {follower_left: leader_left}\ngripper_open: 1\ngripper_closed: 1\n", "must differ"),
])
def test_bad_mappings_name_the_file_and_key(tmp_path, text, match):
    path = tmp_path / "pad.yaml"
    path.write_text(text)
    with pytest.raises(TeleopConfigError, match=match) as err:
        load_teleop_config(str(path))
    assert str(path) in str(err.value)


def test_unknown_mapping_name_lists_the_shipped_ones():
    with pytest.raises(TeleopConfigError, match="did you mean 'gamepad'"):
        load_teleop_config("gamepd")


# ---------------------------------------------------------------------------------- pure helpers
def test_scaled_deadband():
    np.testing.assert_allclose(apply_deadband([0.05, -0.1, 0.55, -1.0, 1.0], 0.1), [0.0, 0.0, 0.5, -1.0, 1.0])


def test_rotation_from_vector_and_twist_rows():
    r = rotation_from_vector([0.0, 0.0, math.pi / 2])
    np.testing.assert_allclose(r @ [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], atol=1e-12)
    rows = twist_rows(np.array([0.1, 0.0, -0.05]), np.array([0.0, 0.0, 0.5]), 0.1, 4)
    assert rows.shape == (4, 6)
    np.testing.assert_array_equal(rows[0], 0.0)
    for row in rows[1:]:
        np.testing.assert_allclose(row, [0.01, 0.0, -0.005, 0.0, 0.0, 0.05], atol=1e-12)
    assert chunk_steps(0.3, 0.1) == 4 and chunk_steps(0.1, 0.02) == 6 and chunk_steps(0.01, 0.1) == 2


def test_joy_mapper_refuses_nan_short_and_odd_messages():
    m = JoyMapper(GAMEPAD)
    axes, buttons = joy(x=0.55)
    r = m.read(axes, buttons)
    np.testing.assert_allclose(r.motion, [0.5, 0, 0, 0, 0, 0])
    assert "deadman" in r.held
    with pytest.raises(InputRefused, match=r"axes \[1\] are not finite"):
        m.read(joy(x=math.nan)[0], buttons)
    with pytest.raises(InputRefused, match="reads button 14 but the message has 8 buttons"):
        m.read(axes, buttons[:8])
    with pytest.raises(InputRefused, match="reads axis 5 but the message has 4 axes"):
        m.read(axes[:4], buttons)
    bad = list(buttons)
    bad[3] = 7
    with pytest.raises(InputRefused, match=r"buttons \[3\] have values \[7\]"):
        m.read(axes, bad)
    with pytest.raises(InputRefused, match=r"outside \[-1, 1\]"):
        m.read(joy(x=3.0)[0], buttons)
    # D-pad pitch from a button pair, right trigger past -0.5 = gripper_close
    axes, buttons = joy(rt=-0.8)
    buttons[11] = 1
    r = m.read(axes, buttons)
    assert r.motion[4] == 1.0 and "gripper_close" in r.held


# ---------------------------------------------------------------------------------- Cartesian session
def press(s, t, **kw):
    """One Joy message at time t (stamp = receive time), then a tick: the chunks they sent."""
    out = s.on_joy(*joy(**kw), stamp_s=t, now_s=t)
    return list(out.chunks) + list(s.tick(t).chunks)


def test_deadman_stream_speed_release_and_duplicates():
    s = fr3_session()
    assert s.steps == 4
    out = s.on_joy(*joy(x=0.55), stamp_s=10.0, now_s=10.001)
    (chunk,) = out.chunks  # sent on arrival
    assert chunk.names == action_names(FR3, "ee_delta") and chunk.stamp_s == 10.0 and chunk.period_s == 0.1
    # 0.55 -> deadband 0.5 -> 0.05 m/s -> 5 mm per 0.1 s row; row 0 = the reference pose
    np.testing.assert_allclose(col(chunk, "ee_delta/x"), [0.0, 0.005, 0.005, 0.005])
    for name in ("ee_delta/y", "ee_delta/z", "ee_delta/roll", "ee_delta/pitch", "ee_delta/yaw"):
        np.testing.assert_array_equal(col(chunk, name), 0.0)
    np.testing.assert_array_equal(col(chunk, "gripper"), 1.0)  # measured open (0.04 m)
    assert s.tick(10.02).chunks == ()  # no new input: no duplicate chunk
    # an input less than half a period (0.025 s) after the last chunk waits for the tick
    assert s.on_joy(*joy(x=0.55, lb=1), stamp_s=10.02, now_s=10.021).chunks == ()
    (chunk,) = s.tick(10.05).chunks
    assert chunk.stamp_s == 10.02
    np.testing.assert_allclose(col(chunk, "ee_delta/x")[1:], 0.01)  # turbo x2
    out = s.on_joy(*joy(x=0.55, deadman=False), stamp_s=10.1, now_s=10.101)
    (stop,) = out.chunks  # the release itself sends the stop, stamped with the release
    assert stop.stamp_s == 10.1 and not s.streaming
    # brake within one row: half a row at the last twist (0.1 m/s x 0.1 s / 2), then still
    np.testing.assert_allclose(col(stop, "ee_delta/x"), [0.0, 0.005, 0.0, 0.0], atol=1e-15)
    np.testing.assert_array_equal(stop.values[:, 1:6], 0.0)
    assert "dead-man released" in out.messages[0][1]
    assert s.tick(10.15).chunks == ()  # and then nothing


def test_input_timeout_stops_the_stream():
    s = fr3_session()
    assert len(press(s, 5.0, x=1.0)) == 1
    assert s.tick(5.05).chunks == () and s.tick(5.1).chunks == ()  # 0.1 s silent: still fresh
    out = s.tick(5.101)
    (stop,) = out.chunks
    assert stop.stamp_s == pytest.approx(5.101) and "input silent for 0.101 s" in out.messages[0][1]
    np.testing.assert_allclose(col(stop, "ee_delta/x"), [0.0, 0.005, 0.0, 0.0], atol=1e-15)


def test_no_deadman_no_chunks_and_bad_input_stops():
    s = fr3_session()
    assert press(s, 1.0, x=1.0, deadman=False) == []
    assert len(press(s, 1.05, x=1.0)) == 1
    out = s.on_joy(*joy(x=math.nan), stamp_s=1.1, now_s=1.1)
    assert out.messages[0][0] == "error" and "not finite" in out.messages[0][1]
    assert len(out.chunks) == 1 and not np.any(out.chunks[0].values[2:, :6])  # stop, the arm holds
    assert s.tick(1.12).chunks == () and s.refusals == 1
    out = s.on_joy(*joy(x=1.0), stamp_s=3.0, now_s=1.15)  # stamp 1.85 s ahead of the clock
    assert "clocks out of sync" in out.messages[0][1] and s.tick(1.16).chunks == ()


def test_gripper_toggle_hold_and_episode_edges():
    s = fr3_session(gripper_m=0.04)
    assert col(press(s, 1.0, a=1)[0], "gripper")[0] == 0.0  # open -> closed
    assert col(press(s, 1.05, a=1)[0], "gripper")[0] == 0.0  # still held: no second toggle
    press(s, 1.1)
    assert col(press(s, 1.15, a=1)[0], "gripper")[0] == 1.0
    assert col(press(s, 1.2, rt=-1.0)[0], "gripper")[0] == 0.0  # hold-to-close
    assert col(press(s, 1.25, rt=0.0)[0], "gripper")[0] == 1.0
    events = []
    for k, pressed in enumerate([1, 1, 0, 1]):
        events += s.on_joy(*joy(deadman=False, start=pressed), stamp_s=2.0 + k * 0.05, now_s=2.0 + k * 0.05).events
    assert events == ["start_episode", "start_episode"]
    assert s.on_joy(*joy(deadman=False, xb=1, b=1), stamp_s=2.3, now_s=2.3).events == ("save_episode", "discard_episode")


def test_tool_frame_rotates_with_the_measured_tool_pose():
    kin = RobotKinematics.from_embodiment(FR3)
    s = fr3_session(kin)
    press(s, 1.0, yb=1)  # Y: frame switch
    assert s.frame == "tool"
    (chunk,) = press(s, 1.05, x=1.0)
    base, tool = kin.arm_frames("arm")
    rotation = kin.frame_pose(np.array(HOME), tool, base)[:3, :3]
    step = np.array([col(chunk, f"ee_delta/{c}")[1] for c in "xyz"])
    np.testing.assert_allclose(step, rotation[:, 0] * 0.1 * 0.1, atol=1e-12)  # tool x-axis, 0.1 m/s
    # the controller's adapter turns it into a tool motion along the tool's own x-axis
    targets = ActionAdapter(FR3, kin, "ee_delta").ee_targets(chunk, np.array(HOME))["arm"]
    start = kin.frame_pose(np.array(HOME), tool, base)
    np.testing.assert_allclose(targets[3, :3, 3] - start[:3, 3], rotation[:, 0] * 0.03, atol=1e-12)
    np.testing.assert_allclose(targets[3, :3, :3], start[:3, :3], atol=1e-12)


def test_spacemouse_twist_and_button_events():
    s = fr3_session(mapping=load_teleop_config("spacemouse"))
    s.on_joy([0.0] * 6, [0, 1], stamp_s=1.0, now_s=1.0)  # spacenav: right button (1) pressed
    s.on_joy([0.3] * 6, [], stamp_s=1.01, now_s=1.01)  # a motion-only Joy: button state unchanged
    (chunk,) = s.on_twist([0.55, 0.0, 0.0], [0.0, 0.0, -0.55], stamp_s=1.02, now_s=1.02).chunks
    assert chunk.stamp_s == 1.02
    np.testing.assert_allclose(col(chunk, "ee_delta/x")[1:], 0.005)
    np.testing.assert_allclose(col(chunk, "ee_delta/yaw")[1:], -0.5 * 0.4 * 0.1)
    out = s.on_joy([0.0] * 6, [0, 0], stamp_s=1.04, now_s=1.04)  # right button released
    assert len(out.chunks) == 1 and not s.streaming
    s.on_joy([0.0] * 6, [0, 1], stamp_s=1.05, now_s=1.05)
    assert len(s.on_twist([1.0, 0, 0], [0, 0, 0], stamp_s=1.07, now_s=1.07).chunks) == 1
    assert len(s.tick(1.2).chunks) == 1 and not s.streaming  # both silent > 0.1 s: stop


def test_keyboard_keys_hold_turbo_stop_and_quit():
    kb = load_teleop_config("keyboard")
    s = fr3_session(mapping=kb)
    s.on_key("w", 1.0)
    chunk = s.tick(1.0).chunks[0]
    assert chunk.stamp_s == 1.0
    np.testing.assert_allclose(col(chunk, "ee_delta/x")[1:], 0.05 * 0.1)  # 0.05 m/s
    s.on_key("W", 1.1)
    np.testing.assert_allclose(col(s.tick(1.1).chunks[0], "ee_delta/x")[1:], 0.1 * 0.1)  # Shift: turbo x2
    assert len(s.tick(1.6).chunks) == 1  # held until key_hold_s after the last repeat
    out = s.tick(1.61)
    assert len(out.chunks) == 1 and not s.streaming and "key released" in out.messages[0][1]
    s.on_key("j", 2.0)
    np.testing.assert_allclose(col(s.tick(2.0).chunks[0], "ee_delta/yaw")[1:], 0.3 * 0.1)
    out = s.on_key(" ", 2.05)
    assert len(out.chunks) == 1 and not s.streaming
    assert "not bound" in s.on_key("z", 2.1).messages[0][1]
    assert s.on_key("1", 2.2).events == ("start_episode",)
    assert s.on_key("q", 2.3).events == ("quit",)


# ---------------------------------------------------------------------------------- leader session
LEADERS = load_teleop_config("aloha_leaders")
ALOHA_JOINTS = ["waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate", "gripper"]
ALOHA_HOME = [0.0, -0.96, 1.16, 0.0, -0.3, 0.0]
CLOSED, OPEN = -0.0552, 0.8298


def leader_session():
    s = LeaderSession(ALOHA, LEADERS)
    for arm in ("follower_left", "follower_right"):
        s.update_joint_state(arm, ALOHA_JOINTS, ALOHA_HOME + [1.6214])
    return s


def feed(s, t, offsets=None, gripper=CLOSED, arms=("follower_left", "follower_right")):
    for arm in arms:
        q = np.array(ALOHA_HOME) + np.asarray((offsets or {}).get(arm, np.zeros(6)))
        s.on_leader(arm, ALOHA_JOINTS, list(q) + [gripper], t, t)


def test_leader_mirrors_after_the_gesture_with_the_leader_gripper_constants():
    s = leader_session()
    assert s.steps == 6
    d = np.array([0.05, -0.03, 0.0, 0.0, 0.02, 0.0])
    feed(s, 1.0, {"follower_left": d}, gripper=OPEN)
    assert s.tick(1.0).chunks == () and s.state == "waiting"  # no gesture yet
    feed(s, 1.02, {"follower_left": d}, gripper=CLOSED)
    out = s.tick(1.02)
    assert s.state == "mirroring" and "mirroring" in out.messages[0][1]
    (chunk,) = out.chunks
    assert chunk.names == action_names(ALOHA, "joint_position") and chunk.stamp_s == 1.02
    np.testing.assert_allclose(col(chunk, "follower_left/waist"), 0.05)
    np.testing.assert_allclose(col(chunk, "follower_left/shoulder"), -0.99)
    np.testing.assert_allclose(col(chunk, "follower_right/elbow"), 1.16)
    np.testing.assert_allclose(col(chunk, "follower_left/gripper"), 0.0)
    # half-open leader gripper: (0.3873 + 0.0552) / (0.8298 + 0.0552) = 0.5 -> follower half open
    feed(s, 1.04, {"follower_left": d}, gripper=0.3873)
    np.testing.assert_allclose(col(s.tick(1.04).chunks[0], "follower_right/gripper"), 0.5, atol=1e-4)
    assert s.tick(1.05).chunks == ()  # nothing new
    out = s.tick(1.2)  # leaders silent for > 0.1 s
    assert s.state == "waiting" and "silent" in out.messages[0][1] and out.chunks == ()


def test_far_leader_is_refused_naming_the_joint_and_a_near_one_is_approached_slowly():
    s = leader_session()
    feed(s, 1.0, {"follower_right": [0, 1.0, 0, 0, 0, 0]})
    out = s.tick(1.0)
    assert s.state == "refused" and out.chunks == ()
    assert "leader_right/shoulder is +1.000 rad from follower_right/shoulder" in out.messages[0][1]
    assert "max_approach_rad 0.6" in out.messages[0][1]
    feed(s, 1.02, {"follower_right": [0, 0.3, 0, 0, 0, 0]})
    out = s.tick(1.02)
    assert s.state == "approaching" and "leader_right/shoulder is +0.300 rad" in out.messages[0][1]
    (chunk,) = out.chunks
    # from the follower toward the leader at 0.25 rad/s: row i = -0.96 + 0.25 * 0.02 * i
    np.testing.assert_allclose(col(chunk, "follower_right/shoulder"), -0.96 + 0.005 * np.arange(6))
    np.testing.assert_allclose(col(chunk, "follower_left/shoulder"), -0.96)
    np.testing.assert_allclose(col(chunk, "follower_right/gripper"), 1.0)  # follower's own (open)
    s.update_joint_state("follower_right", ALOHA_JOINTS, [0, -0.7, 1.16, 0, -0.3, 0, 1.6214])
    feed(s, 1.04, {"follower_right": [0, 0.3, 0, 0, 0, 0]})
    s.tick(1.04)
    assert s.state == "mirroring"


def test_bad_leader_input_is_refused_and_stops_mirroring():
    s = leader_session()
    feed(s, 1.0)
    s.tick(1.0)
    assert s.state == "mirroring"
    out = s.on_leader("follower_left", ALOHA_JOINTS, [math.nan] + ALOHA_HOME[1:] + [CLOSED], 1.02, 1.02)
    assert "['waist'] are not finite" in out.messages[0][1] and s.state == "waiting"
    out = s.on_leader("follower_left", ALOHA_JOINTS[:5], ALOHA_HOME[:5], 1.03, 1.03)
    assert "joints ['wrist_rotate', 'gripper'] missing" in out.messages[0][1]
    assert s.tick(1.04).chunks == ()
