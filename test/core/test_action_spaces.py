"""Action-space names and the chunk -> joint targets adapter, on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from vla_ros.core.action_spaces import (
    SPACES,
    ActionAdapter,
    ActionSpaceError,
    JointTargets,
    action_names,
    detect_space,
    matrix_to_quaternion_xyzw,
    matrix_to_rpy,
    quaternion_xyzw_to_matrix,
    rpy_to_matrix,
)
from vla_ros.core.embodiment import load_embodiment
from vla_ros.core.kinematics import RobotKinematics
from vla_ros.core.types import ActionChunk

_CACHE: dict[str, tuple] = {}


def setup(name: str):
    if name not in _CACHE:
        spec = load_embodiment(name)
        _CACHE[name] = (spec, RobotKinematics.from_embodiment(spec))
    return _CACHE[name]


def chunk(names, rows) -> ActionChunk:
    return ActionChunk(names=tuple(names), values=np.asarray(rows, dtype=np.float64), period_s=0.1, stamp_s=0.0)


def tool_pose(kin: RobotKinematics, q: np.ndarray, arm: str = "arm") -> np.ndarray:
    base, tool = kin.arm_frames(arm)
    return kin.frame_pose(q, tool, base)


def rz(a: float) -> np.ndarray:
    return np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1.0]])


def angle_between(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.arccos(np.clip((np.trace(a.T @ b) - 1) / 2, -1, 1)))


# ----------------------------------------------------------------------------------- names


def test_names_single_arm_fr3():
    spec, _ = setup("fr3")
    joints = [f"fr3_joint{i}" for i in range(1, 8)]
    assert action_names(spec, "joint_position") == (*joints, "gripper")
    assert action_names(spec, "joint_delta") == (*[f"joint_delta/{j}" for j in joints], "gripper")
    assert action_names(spec, "ee_delta") == (
        "ee_delta/x", "ee_delta/y", "ee_delta/z", "ee_delta/roll", "ee_delta/pitch", "ee_delta/yaw", "gripper",
    )
    assert action_names(spec, "ee_pose") == (
        "ee_pose/x", "ee_pose/y", "ee_pose/z", "ee_pose/qx", "ee_pose/qy", "ee_pose/qz", "ee_pose/qw", "gripper",
    )


def test_names_aloha_are_the_14d_layout():
    spec, _ = setup("aloha")
    joints = ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate")
    expected = tuple(
        [f"follower_left/{j}" for j in joints] + ["follower_left/gripper"]
        + [f"follower_right/{j}" for j in joints] + ["follower_right/gripper"]
    )
    assert action_names(spec, "joint_position") == expected
    assert action_names(spec, "ee_delta")[:7] == tuple(
        f"follower_left/ee_delta/{f}" for f in ("x", "y", "z", "roll", "pitch", "yaw")
    ) + ("follower_left/gripper",)
    assert detect_space(spec, expected[::-1]) == "joint_position"


def test_unknown_space_lists_the_known_ones():
    spec, kin = setup("fr3")
    with pytest.raises(ActionSpaceError, match=r"unknown action space 'eef'.*joint_position"):
        action_names(spec, "eef")
    with pytest.raises(ActionSpaceError, match="unknown action space 'eef'"):
        ActionAdapter(spec, kin, "eef")


def test_check_names_message_says_expected_got_missing_unexpected_and_other_space():
    spec, kin = setup("fr3")
    adapter = ActionAdapter(spec, kin, "ee_delta")
    adapter.check_names(adapter.names)
    adapter.check_names(tuple(reversed(adapter.names)))  # order does not matter: columns go by name
    wrong = action_names(spec, "joint_position")
    with pytest.raises(ActionSpaceError) as info:
        adapter.check_names(wrong)
    message = str(info.value)
    assert "action space 'ee_delta'" in message
    assert f"expected {list(adapter.names)}, got {list(wrong)}" in message
    assert "missing ['ee_delta/x', 'ee_delta/y'" in message
    assert "unexpected ['fr3_joint1'" in message
    assert "these are the names of action space 'joint_position'" in message
    with pytest.raises(ActionSpaceError, match=r"missing \['gripper'\]"):
        adapter.check_names(adapter.names[:-1])
    with pytest.raises(ActionSpaceError):
        adapter.to_joint_targets(chunk(wrong, np.zeros((1, 8))), kin.home_rad)


# ----------------------------------------------------------------------------------- rotations


def test_rpy_matrix_is_rz_ry_rx_and_round_trips():
    r = rpy_to_matrix(np.array(0.1), np.array(0.2), np.array(0.3))
    c, s = np.cos, np.sin
    rx = np.array([[1, 0, 0], [0, c(0.1), -s(0.1)], [0, s(0.1), c(0.1)]])
    ry = np.array([[c(0.2), 0, s(0.2)], [0, 1, 0], [-s(0.2), 0, c(0.2)]])
    np.testing.assert_allclose(r, rz(0.3) @ ry @ rx, atol=1e-15)
    rng = np.random.default_rng(0)
    angles = rng.uniform([-np.pi, -1.5, -np.pi], [np.pi, 1.5, np.pi], size=(100, 3))
    np.testing.assert_allclose(matrix_to_rpy(rpy_to_matrix(*angles.T)), angles, atol=1e-12)


def test_quaternion_conversions():
    # 90 deg about z: (0, 0, sin 45, cos 45)
    q = np.array([0.0, 0.0, np.sqrt(0.5), np.sqrt(0.5)])
    np.testing.assert_allclose(quaternion_xyzw_to_matrix(q), rz(np.pi / 2), atol=1e-15)
    np.testing.assert_allclose(matrix_to_quaternion_xyzw(rz(np.pi / 2)), q, atol=1e-15)
    rng = np.random.default_rng(1)
    for _ in range(100):
        quat = rng.normal(size=4)
        quat /= np.linalg.norm(quat)
        quat *= np.sign(quat[3])
        np.testing.assert_allclose(matrix_to_quaternion_xyzw(quaternion_xyzw_to_matrix(quat)), quat, atol=1e-12)


# ----------------------------------------------------------------------------------- joint spaces


def test_joint_position_passes_through_with_gripper():
    spec, kin = setup("fr3")
    adapter = ActionAdapter(spec, kin, "joint_position")
    rows = np.column_stack([np.tile(kin.home_rad, (3, 1)) + np.arange(3)[:, None] * 0.01, [1.0, 0.5, 1.7]])
    out = adapter.to_joint_targets(chunk(adapter.names, rows), kin.home_rad)
    assert isinstance(out, JointTargets)
    assert out.joint_names == spec.joint_names
    np.testing.assert_array_equal(out.positions, rows[:, :7])
    assert out.gripper_joint_names == ("fr3_finger_joint1",)
    # Out-of-range gripper values are not clipped here: the safety envelope does it.
    np.testing.assert_array_equal(out.gripper[:, 0], [1.0, 0.5, 1.7])
    assert out.ik_success.all() and not out.ik_position_error_m.any()


def test_joint_delta_is_cumulative_from_the_reference():
    spec, kin = setup("ur5e")
    adapter = ActionAdapter(spec, kin, "joint_delta")
    q_ref = np.array([0.1, -1.0, 1.0, -1.5, -1.5, 0.0])
    deltas = np.zeros((3, 6))
    deltas[:, 0] = 0.01
    deltas[1, 5] = -0.2
    rows = np.column_stack([deltas, np.zeros(3)]) if spec.arms[0].gripper else deltas
    out = adapter.to_joint_targets(chunk(adapter.names, rows), q_ref)
    np.testing.assert_allclose(out.positions[:, 0], [0.11, 0.12, 0.13], atol=1e-15)
    np.testing.assert_allclose(out.positions[:, 5], [0.0, -0.2, -0.2], atol=1e-15)
    np.testing.assert_allclose(out.positions[:, 1:5], np.tile(q_ref[1:5], (3, 1)))


def test_joint_position_aloha_columns_by_name_in_any_order():
    spec, kin = setup("aloha")
    adapter = ActionAdapter(spec, kin, "joint_position")
    values = np.arange(14, dtype=float)[None] / 10.0
    names = adapter.names
    order = np.random.default_rng(2).permutation(14)
    out = adapter.to_joint_targets(chunk([names[i] for i in order], values[:, order]), kin.home_rad)
    np.testing.assert_allclose(out.positions[0], np.r_[values[0, 0:6], values[0, 7:13]])
    np.testing.assert_allclose(out.gripper[0], [values[0, 6], values[0, 13]])
    assert out.gripper_joint_names == ("follower_left/gripper", "follower_right/gripper")


# ----------------------------------------------------------------------------------- ee spaces


def test_ee_delta_hand_computed_translation_and_yaw():
    spec, kin = setup("fr3")
    adapter = ActionAdapter(spec, kin, "ee_delta")
    q_ref = kin.home_rad
    start = tool_pose(kin, q_ref)
    # +1 cm x three times, then yaw 0.1 twice.
    rows = np.zeros((5, 7))
    rows[:3, 0] = 0.01
    rows[3:, 5] = 0.1
    rows[:, 6] = 1.0
    values = chunk(adapter.names, rows)
    targets = adapter.ee_targets(values, q_ref)["arm"]
    for i, dx in enumerate([0.01, 0.02, 0.03, 0.03, 0.03]):
        np.testing.assert_allclose(targets[i, :3, 3], start[:3, 3] + [dx, 0, 0], atol=1e-15)
    np.testing.assert_allclose(targets[2, :3, :3], start[:3, :3], atol=1e-15)
    np.testing.assert_allclose(targets[3, :3, :3], rz(0.1) @ start[:3, :3], atol=1e-15)
    np.testing.assert_allclose(targets[4, :3, :3], rz(0.2) @ start[:3, :3], atol=1e-14)

    out = adapter.to_joint_targets(values, q_ref)
    assert out.ik_success.all()
    for i in range(5):
        reached = tool_pose(kin, out.positions[i])
        assert np.linalg.norm(reached[:3, 3] - targets[i, :3, 3]) <= 1e-4
        assert angle_between(reached[:3, :3], targets[i, :3, :3]) <= 1e-3
    assert np.all(out.ik_position_error_m <= 1e-4)
    np.testing.assert_array_equal(out.gripper[:, 0], 1.0)


def test_ee_delta_rotation_is_applied_in_the_base_frame():
    spec, kin = setup("ur5e")
    adapter = ActionAdapter(spec, kin, "ee_delta")
    q_ref = np.array([0.3, -1.2, 1.4, -1.7, -1.5, 0.2])
    start = tool_pose(kin, q_ref)
    rows = np.zeros((1, len(adapter.names)))
    rows[0, 3:6] = [0.05, -0.04, 0.03]  # roll, pitch, yaw
    targets = adapter.ee_targets(chunk(adapter.names, rows), q_ref)["arm"]
    c, s = np.cos, np.sin
    rx = np.array([[1, 0, 0], [0, c(0.05), -s(0.05)], [0, s(0.05), c(0.05)]])
    ry = np.array([[c(-0.04), 0, s(-0.04)], [0, 1, 0], [-s(-0.04), 0, c(-0.04)]])
    np.testing.assert_allclose(targets[0, :3, :3], rz(0.03) @ ry @ rx @ start[:3, :3], atol=1e-14)
    np.testing.assert_allclose(targets[0, :3, 3], start[:3, 3], atol=1e-15)


def test_ee_pose_round_trip_and_quaternion_normalisation():
    spec, kin = setup("fr3")
    adapter = ActionAdapter(spec, kin, "ee_pose")
    rng = np.random.default_rng(3)
    q_goal = kin.home_rad + rng.uniform(-0.2, 0.2, 7)
    goal = tool_pose(kin, q_goal)
    quat = matrix_to_quaternion_xyzw(goal[:3, :3]) * 3.0  # not unit: must be normalised
    rows = np.r_[goal[:3, 3], quat, 0.0][None]
    out = adapter.to_joint_targets(chunk(adapter.names, rows), kin.home_rad)
    assert out.ik_success[0]
    reached = tool_pose(kin, out.positions[0])
    np.testing.assert_allclose(reached[:3, 3], goal[:3, 3], atol=1e-4)
    assert angle_between(reached[:3, :3], goal[:3, :3]) <= 1e-3
    rows[0, 3:7] = 0.0
    with pytest.raises(ActionSpaceError, match=r"zero norm at rows \[0\]"):
        adapter.to_joint_targets(chunk(adapter.names, rows), kin.home_rad)


def test_ee_delta_bimanual_moves_each_arm_in_its_own_base():
    spec, kin = setup("aloha")
    adapter = ActionAdapter(spec, kin, "ee_delta")
    q_ref = np.tile([0.0, -0.5, 0.6, 0.0, 0.8, 0.0], 2)
    rows = np.zeros((2, 14))
    rows[:, adapter.names.index("follower_left/ee_delta/z")] = 0.01
    rows[:, adapter.names.index("follower_right/ee_delta/y")] = -0.01
    out = adapter.to_joint_targets(chunk(adapter.names, rows), q_ref)
    assert out.ik_success.all()
    left0, right0 = tool_pose(kin, q_ref, "follower_left"), tool_pose(kin, q_ref, "follower_right")
    left, right = tool_pose(kin, out.positions[1], "follower_left"), tool_pose(kin, out.positions[1], "follower_right")
    np.testing.assert_allclose(left[:3, 3] - left0[:3, 3], [0, 0, 0.02], atol=1e-4)
    np.testing.assert_allclose(right[:3, 3] - right0[:3, 3], [0, -0.02, 0], atol=1e-4)


def test_unreachable_ee_target_reports_failure_not_exception():
    spec, kin = setup("fr3")
    adapter = ActionAdapter(spec, kin, "ee_delta")
    rows = np.zeros((2, 7))
    rows[:, 0] = 1.0  # +1 m per step: far out of reach
    out = adapter.to_joint_targets(chunk(adapter.names, rows), kin.home_rad)
    assert not out.ik_success.any()
    assert np.all(out.ik_position_error_m > 0.3)


def test_non_finite_values_are_rejected_naming_column_and_row():
    spec, kin = setup("fr3")
    adapter = ActionAdapter(spec, kin, "ee_delta")
    rows = np.zeros((3, 7))
    rows[2, 6] = np.nan
    with pytest.raises(ActionSpaceError, match=r"non-finite values in columns \['gripper'\] at rows \[2\]"):
        adapter.to_joint_targets(chunk(adapter.names, rows), kin.home_rad)
    with pytest.raises(ActionSpaceError, match=r"q_reference must have shape \(7,\)"):
        adapter.to_joint_targets(chunk(adapter.names, np.zeros((1, 7))), np.zeros(6))


@pytest.mark.parametrize("space", SPACES)
def test_default_space_comes_from_the_spec(space):
    spec, kin = setup("fr3")
    assert ActionAdapter(spec, kin).space == spec.action_space
    assert ActionAdapter(spec, kin, space).names == action_names(spec, space)


@pytest.mark.parametrize("name", ["fr3", "ur5e", "aloha"])
@pytest.mark.parametrize("space", SPACES)
def test_to_action_values_inverts_to_joint_targets(name, space):
    spec, kin = setup(name)
    adapter = ActionAdapter(spec, kin, space)
    q0 = kin.home_rad if name != "aloha" else np.tile([0.0, -0.5, 0.6, 0.0, 0.8, 0.0], 2)
    rng = np.random.default_rng(4)
    # A smooth joint path away from q0 (small steps, as a teleop stream or a recording has).
    positions = q0 + np.cumsum(rng.uniform(-0.02, 0.02, size=(6, kin.num_joints)), axis=0)
    gripper = rng.uniform(0, 1, size=(6, len(adapter.gripper_joint_names)))
    values = adapter.to_action_values(positions, gripper, q0)
    assert values.shape == (6, len(adapter.names))
    out = adapter.to_joint_targets(chunk(adapter.names, values), q0)
    np.testing.assert_allclose(out.gripper, gripper, atol=0)
    assert out.ik_success.all()
    if space.startswith("joint"):
        np.testing.assert_allclose(out.positions, positions, atol=1e-12)
    else:
        for arm in kin.arm_names:
            for t in range(6):
                want, got = tool_pose(kin, positions[t], arm), tool_pose(kin, out.positions[t], arm)
                assert np.linalg.norm(got[:3, 3] - want[:3, 3]) <= 1e-4
                assert angle_between(got[:3, :3], want[:3, :3]) <= 1e-3


def test_ee_pose_quaternions_keep_one_sign_through_a_top_down_wrist_turn():
    # FR3's home tool points down: its rotation is ~diag(1, -1, -1), a half turn about x, so w ~ 0.
    # Turning the wrist (joint 7, -0.6 -> +0.6 rad) while joint 5 tilts the tool through vertical
    # (-0.1 -> +0.1 rad) takes w through 0; with the w >= 0 convention every component jumps sign
    # there. The written ones must stay in one hemisphere (the home orientation's), change
    # smoothly, and still be the tool's rotation.
    spec, kin = setup("fr3")
    adapter = ActionAdapter(spec, kin, "ee_pose")
    q_home = np.asarray(spec.arms[0].home_rad, dtype=float)
    positions = np.tile(q_home, (25, 1))
    positions[:, 6] += np.linspace(-0.6, 0.6, 25)
    positions[:, 4] += np.linspace(-0.1, 0.1, 25)
    values = adapter.to_action_values(positions, np.ones((25, 1)), q_home)
    quats = values[:, [adapter.names.index(f"ee_pose/{c}") for c in ("qx", "qy", "qz", "qw")]]
    home = matrix_to_quaternion_xyzw(tool_pose(kin, q_home)[:3, :3])
    assert abs(home[3]) < 0.05  # pointing down: w ~ 0, where w >= 0 is no convention at all
    w_sign = [matrix_to_quaternion_xyzw(tool_pose(kin, q)[:3, :3]) for q in positions]
    assert min(np.sign(np.array(w_sign) @ home)) < 0  # the w >= 0 convention does flip in this sweep
    assert np.all(quats @ home > 0.9)  # +-0.3 rad of yaw (and 0.05 of tilt) about the home: cos(0.3) = 0.955
    assert np.max(np.linalg.norm(np.diff(quats, axis=0), axis=1)) < 0.06  # 0.05 rad steps: |dq| ~ 0.025
    for q, quat in zip(positions, quats):
        assert angle_between(quaternion_xyzw_to_matrix(quat), tool_pose(kin, q)[:3, :3]) < 1e-9


def test_to_action_values_hand_computed_ee_delta():
    spec, kin = setup("fr3")
    adapter = ActionAdapter(spec, kin, "ee_delta")
    q0 = kin.home_rad
    q1 = q0.copy()
    q1[0] += 0.1  # joint 1 turns the whole arm about the base z axis by 0.1 rad
    values = adapter.to_action_values(q1[None], np.ones((1, 1)), q0)
    start = tool_pose(kin, q0)
    moved = rz(0.1) @ start[:3, 3]
    np.testing.assert_allclose(values[0, :3], moved - start[:3, 3], atol=1e-12)
    np.testing.assert_allclose(values[0, 3:6], [0.0, 0.0, 0.1], atol=1e-12)
    assert values[0, 6] == 1.0


def test_to_action_values_rejects_bad_input():
    spec, kin = setup("fr3")
    adapter = ActionAdapter(spec, kin, "joint_delta")
    q = np.tile(kin.home_rad, (2, 1))
    with pytest.raises(ActionSpaceError, match=r"positions must have shape \(T >= 1, 7\)"):
        adapter.to_action_values(q[:, :6], np.ones((2, 1)), kin.home_rad)
    with pytest.raises(ActionSpaceError, match=r"gripper must have shape \(2, 1\)"):
        adapter.to_action_values(q, np.ones((2, 2)), kin.home_rad)
    q[1, 3] = np.inf
    with pytest.raises(ActionSpaceError, match=r"positions has non-finite values \(rows \[1\]\)"):
        adapter.to_action_values(q, np.ones((2, 1)), kin.home_rad)
