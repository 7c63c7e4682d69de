"""RobotKinematics against references it does not share: published DH tables and joint origins
composed by hand here, finite differences, and IK round trips through FK."""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pytest

from vla_ros.core.embodiment import load_embodiment, urdf_dir
from vla_ros.core.kinematics import IKOptions, IKResult, KinematicsError, RobotKinematics

ARMS = ("fr3", "panda", "ur5", "ur5e", "aloha")
_KIN: dict[str, RobotKinematics] = {}


def kin_for(name: str) -> RobotKinematics:
    if name not in _KIN:
        _KIN[name] = RobotKinematics.from_embodiment(load_embodiment(name))
    return _KIN[name]


# ----------------------------------------------------------------------------------- references


def rot_x(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[1, 0, 0, 0], [0, c, -s, 0], [0, s, c, 0], [0, 0, 0, 1.0]])


def rot_y(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0, s, 0], [0, 1, 0, 0], [-s, 0, c, 0], [0, 0, 0, 1.0]])


def rot_z(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0, 0], [s, c, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]])


def trans(x: float, y: float, z: float) -> np.ndarray:
    t = np.eye(4)
    t[:3, 3] = (x, y, z)
    return t


# Franka (Craig / modified DH), rows (a_{i-1}, d_i, alpha_{i-1}) from the Franka documentation.
FRANKA_MDH = [
    (0.0, 0.333, 0.0),
    (0.0, 0.0, -np.pi / 2),
    (0.0, 0.316, np.pi / 2),
    (0.0825, 0.0, np.pi / 2),
    (-0.0825, 0.384, -np.pi / 2),
    (0.0, 0.0, np.pi / 2),
    (0.088, 0.0, np.pi / 2),
]


def franka_flange(q: np.ndarray) -> np.ndarray:
    t = np.eye(4)
    for (a, d, alpha), theta in zip(FRANKA_MDH, q):
        t = t @ rot_x(alpha) @ trans(a, 0, 0) @ rot_z(theta) @ trans(0, 0, d)
    return t @ trans(0, 0, 0.107)


def franka_tcp(q: np.ndarray) -> np.ndarray:
    return franka_flange(q) @ rot_z(-np.pi / 4) @ trans(0, 0, 0.1034)


# Universal Robots standard DH (d, a; alpha = [pi/2, 0, 0, pi/2, -pi/2, 0]).
UR_DH = {
    "ur5": ([0.089159, 0, 0, 0.10915, 0.09465, 0.0823], [0, -0.425, -0.39225, 0, 0, 0]),
    "ur5e": ([0.1625, 0, 0, 0.1333, 0.0997, 0.0996], [0, -0.425, -0.3922, 0, 0, 0]),
}
UR_ALPHA = [np.pi / 2, 0, 0, np.pi / 2, -np.pi / 2, 0]


def ur_tool0(model: str, q: np.ndarray) -> np.ndarray:
    d, a = UR_DH[model]
    t = np.eye(4)
    for i in range(6):
        t = t @ rot_z(q[i]) @ trans(0, 0, d[i]) @ trans(a[i], 0, 0) @ rot_x(UR_ALPHA[i])
    return t


def viperx_gripper_link(q: np.ndarray) -> np.ndarray:
    """Published ViperX 300 6-DoF joint origins and axes, composed joint by joint."""
    return (
        trans(0, 0, 0.079) @ rot_z(q[0])
        @ trans(0, 0, 0.04805) @ rot_y(q[1])
        @ trans(0.05955, 0, 0.3) @ rot_y(q[2])
        @ trans(0.2, 0, 0) @ rot_x(q[3])
        @ trans(0.1, 0, 0) @ rot_y(q[4])
        @ trans(0.069744, 0, 0) @ rot_x(q[5])
    )


def random_qs(kin: RobotKinematics, count: int, seed: int = 0, margin_rad: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.array([kin.random_configuration(rng, margin_rad) for _ in range(count)])


def rotation_angle(r: np.ndarray) -> float:
    return float(np.arccos(np.clip((np.trace(r) - 1.0) / 2.0, -1.0, 1.0)))


# ----------------------------------------------------------------------------------- FK


@pytest.mark.parametrize("name,prefix", [("fr3", "fr3"), ("panda", "panda")])
def test_franka_fk_matches_craig_dh(name, prefix):
    kin = kin_for(name)
    assert kin.joint_names == tuple(f"{prefix}_joint{i}" for i in range(1, 8))
    for q in random_qs(kin, 200, seed=1):
        flange = kin.frame_pose(q, f"{prefix}_link8", f"{prefix}_link0")
        np.testing.assert_allclose(flange, franka_flange(q), atol=1e-9, rtol=0)
        tcp = kin.frame_pose(q, f"{prefix}_hand_tcp", f"{prefix}_link0")
        np.testing.assert_allclose(tcp, franka_tcp(q), atol=1e-9, rtol=0)


@pytest.mark.parametrize("name", ["ur5", "ur5e"])
def test_ur_fk_matches_standard_dh(name):
    kin = kin_for(name)
    for q in random_qs(kin, 200, seed=2):
        np.testing.assert_allclose(kin.frame_pose(q, "tool0", "base"), ur_tool0(name, q), atol=1e-9, rtol=0)


def test_viperx_fk_matches_published_joint_origins_for_both_arms():
    kin = kin_for("aloha")
    assert kin.arm_names == ("follower_left", "follower_right")
    for q in random_qs(kin, 200, seed=3):
        for arm, cols in (("follower_left", slice(0, 6)), ("follower_right", slice(6, 12))):
            pose = kin.frame_pose(q, f"{arm}/gripper_link", f"{arm}/base_link")
            # Each arm's pose depends on its own six joints only.
            np.testing.assert_allclose(pose, viperx_gripper_link(q[cols]), atol=1e-9, rtol=0)


def test_frame_pose_base_composition():
    kin = kin_for("aloha")
    q = random_qs(kin, 1, seed=4)[0]
    world_tool = kin.frame_pose(q, "follower_right/gripper_link")
    world_base = kin.frame_pose(q, "follower_left/base_link")
    in_left = kin.frame_pose(q, "follower_right/gripper_link", "follower_left/base_link")
    np.testing.assert_allclose(in_left, np.linalg.inv(world_base) @ world_tool, atol=1e-12)


@pytest.mark.parametrize("name,frame,base", [
    ("fr3", "fr3_hand_tcp", None),
    ("fr3", "fr3_hand_tcp", "fr3_link0"),  # a fixed base: one transform for all rows
    ("fr3", "fr3_hand_tcp", "fr3_link3"),  # a base moved by q
    ("ur5e", "tool0", "base_link"),
    ("aloha", "follower_right/gripper_link", "follower_left/base_link"),
])
def test_frame_positions_are_frame_pose_per_row(name, frame, base):
    kin = kin_for(name)
    qs = random_qs(kin, 50, seed=11)
    expected = np.array([kin.frame_pose(q, frame, base)[:3, 3] for q in qs])
    np.testing.assert_allclose(kin.frame_positions(qs, frame, base), expected, atol=1e-12)


def test_frame_positions_refuse_bad_arrays():
    kin = kin_for("fr3")
    qs = random_qs(kin, 3, seed=1)
    with pytest.raises(KinematicsError, match=r"shape \(N, 7\)"):
        kin.frame_positions(qs[:, :6], "fr3_hand_tcp")
    qs[1, 2] = np.nan
    with pytest.raises(KinematicsError, match="non-finite"):
        kin.frame_positions(qs, "fr3_hand_tcp")


# ----------------------------------------------------------------------------------- Jacobian


def numeric_jacobian(kin: RobotKinematics, q: np.ndarray, frame: str, base: str | None, eps: float = 1e-6):
    jac = np.zeros((6, q.shape[0]))
    for j in range(q.shape[0]):
        dq = np.zeros_like(q)
        dq[j] = eps
        plus, minus = kin.frame_pose(q + dq, frame, base), kin.frame_pose(q - dq, frame, base)
        jac[:3, j] = (plus[:3, 3] - minus[:3, 3]) / (2 * eps)
        # angular velocity in base axes: vee(dR R^T)
        w = (plus[:3, :3] - minus[:3, :3]) / (2 * eps) @ kin.frame_pose(q, frame, base)[:3, :3].T
        jac[3:, j] = [w[2, 1], w[0, 2], w[1, 0]]
    return jac


@pytest.mark.parametrize(
    "name,frame,base",
    [
        ("fr3", "fr3_hand_tcp", None),
        ("fr3", "fr3_hand_tcp", "fr3_link0"),
        ("fr3", "fr3_hand_tcp", "fr3_link3"),  # a base moved by q: relative motion
        ("ur5", "tool0", "base"),
        ("ur5e", "tool0", "base_link"),
        ("aloha", "follower_right/gripper_link", "follower_left/base_link"),
    ],
)
def test_jacobian_matches_finite_differences(name, frame, base):
    kin = kin_for(name)
    for q in random_qs(kin, 10, seed=5, margin_rad=1e-3):
        analytic = kin.frame_jacobian(q, frame, base)
        assert analytic.shape == (6, kin.num_joints)
        np.testing.assert_allclose(analytic, numeric_jacobian(kin, q, frame, base), atol=1e-7, rtol=0)


def test_condition_number_and_manipulability_at_ur_wrist_singularity():
    kin = kin_for("ur5")
    q = np.array([0.3, -1.2, 1.5, -0.7, 0.8, 0.2])
    base, tool = kin.arm_frames("arm")
    jac = numeric_jacobian(kin, q, tool, base)
    assert kin.manipulability(q, "arm") == pytest.approx(np.sqrt(np.linalg.det(jac @ jac.T)), rel=1e-6)
    sigma = np.linalg.svd(jac, compute_uv=False)
    assert kin.condition_number(q, "arm") == pytest.approx(sigma[0] / sigma[-1], rel=1e-6)
    # wrist_2 = 0 aligns the wrist_1 and wrist_3 axes: a rank-5 Jacobian.
    singular = q.copy()
    singular[4] = 0.0
    assert kin.manipulability(singular, "arm") < 1e-12
    assert kin.condition_number(singular, "arm") > 1e8


# ----------------------------------------------------------------------------------- IK


def arm_tool_pose(kin: RobotKinematics, q: np.ndarray, arm: str) -> np.ndarray:
    base, tool = kin.arm_frames(arm)
    return kin.frame_pose(q, tool, base)


@pytest.mark.parametrize("name", ARMS)
def test_ik_round_trip_random_reachable_poses(name):
    kin = kin_for(name)
    options = kin.ik_options
    rng = np.random.default_rng(6)
    for arm in kin.arm_names:
        idx = kin.arm_joint_index(arm)
        for q_true in random_qs(kin, 15, seed=7, margin_rad=0.05):
            target = arm_tool_pose(kin, q_true, arm)
            result = kin.solve_ik(target, arm, restarts=8, rng=rng)
            assert isinstance(result, IKResult) and result.q.shape == (1, kin.num_joints)
            assert result.success[0], (name, arm, q_true, result)
            reached = arm_tool_pose(kin, result.q[0], arm)
            assert np.linalg.norm(reached[:3, 3] - target[:3, 3]) <= options.position_tolerance_m
            assert rotation_angle(reached[:3, :3].T @ target[:3, :3]) <= options.orientation_tolerance_rad
            # The reported residuals are the true ones.
            assert result.position_error_m[0] == pytest.approx(np.linalg.norm(reached[:3, 3] - target[:3, 3]), abs=1e-12)
            q = result.q[0][idx]
            assert np.all(q >= kin.lower_rad[idx]) and np.all(q <= kin.upper_rad[idx])
            # Joints of the other arm never move.
            others = np.setdiff1d(np.arange(kin.num_joints), idx)
            np.testing.assert_array_equal(result.q[0][others], kin.home_rad[others])


def circle_targets(kin: RobotKinematics, q0: np.ndarray, arm: str, steps: int, radius_m: float, turn_rad: float):
    start = arm_tool_pose(kin, q0, arm)
    phase = np.linspace(0.0, 2 * np.pi, steps + 1)[1:]
    targets = np.repeat(start[None], steps, axis=0)
    targets[:, 0, 3] += radius_m * np.sin(phase)
    targets[:, 1, 3] += radius_m * (1 - np.cos(phase))
    for i, a in enumerate(np.linspace(0, turn_rad, steps)):
        targets[i, :3, :3] = rot_z(a)[:3, :3] @ start[:3, :3]
    return targets


@pytest.mark.parametrize("name", ARMS)
def test_warm_started_chunk_converges_in_few_iterations(name):
    kin = kin_for(name)
    arm = kin.arm_names[-1]
    q0 = kin.home_rad
    if name == "aloha":
        # ALOHA's home folds the wrist close to a singularity (condition number ~100), where a
        # small tool motion legitimately needs large joint motion; start from an open wrist.
        q0 = np.tile([0.0, -0.5, 0.6, 0.0, 0.8, 0.0], 2)
    assert kin.condition_number(q0, arm) < 30
    radius = 0.03 if name == "aloha" else 0.08
    targets = circle_targets(kin, q0, arm, 50, radius, 0.3)
    result = kin.solve_ik_chunk(targets, arm, q0)
    assert result.all_success, result
    assert result.q.shape == (50, kin.num_joints)
    assert result.iterations.max() <= 3
    assert result.iterations.mean() <= 1.5
    for t in range(50):
        reached = arm_tool_pose(kin, result.q[t], arm)
        assert np.linalg.norm(reached[:3, 3] - targets[t, :3, 3]) <= 1e-4
    # A smooth path gives a smooth joint path (no branch flips).
    assert np.abs(np.diff(result.q, axis=0)).max() < 0.2


def test_unreachable_pose_reports_failure_with_residual():
    kin = kin_for("fr3")
    target = arm_tool_pose(kin, kin.home_rad, "arm")
    target[:3, 3] = [2.0, 0.0, 0.5]  # Franka reaches ~0.855 m from joint 2
    result = kin.solve_ik_chunk(np.stack([target, target]), "arm", kin.home_rad)
    assert not result.success.any()
    assert np.all(result.position_error_m > 0.8)
    reached = arm_tool_pose(kin, result.q[0], "arm")
    assert result.position_error_m[0] == pytest.approx(np.linalg.norm(reached[:3, 3] - target[:3, 3]))
    assert np.all(result.iterations <= kin.ik_options.max_iterations)


def test_ik_tolerance_and_iteration_options_are_honoured():
    kin = kin_for("ur5e")
    q_true = np.array([0.2, -1.0, 1.2, -1.5, -1.4, 0.3])
    target = arm_tool_pose(kin, q_true, "arm")
    tight = kin.solve_ik(target, "arm", options=IKOptions(position_tolerance_m=1e-9, orientation_tolerance_rad=1e-9))
    assert tight.success[0] and tight.position_error_m[0] <= 1e-9
    capped = kin.solve_ik(target, "arm", options=IKOptions(max_iterations=1, stall_iterations=1))
    assert not capped.success[0] and capped.iterations[0] == 1
    with pytest.raises(ValueError, match="position_tolerance_m"):
        IKOptions(position_tolerance_m=0.0)


def test_bimanual_chunk_solves_both_arms():
    kin = kin_for("aloha")
    q_true = random_qs(kin, 1, seed=8, margin_rad=0.3)[0]
    q_seed = q_true + 0.05
    targets = {arm: np.repeat(arm_tool_pose(kin, q_true, arm)[None], 3, axis=0) for arm in kin.arm_names}
    result = kin.solve_ik_chunk_arms(targets, q_seed)
    assert result.all_success
    for arm in kin.arm_names:
        np.testing.assert_allclose(arm_tool_pose(kin, result.q[-1], arm), targets[arm][0], atol=2e-4)


# ----------------------------------------------------------------------------------- errors


def test_bad_inputs_raise_clear_errors():
    kin = kin_for("fr3")
    with pytest.raises(KinematicsError, match=r"q must have 7 entries \(fr3_joint1"):
        kin.frame_pose(np.zeros(6), "fr3_hand_tcp")
    with pytest.raises(KinematicsError, match=r"unknown frame 'fr3_hand_tpc'; did you mean \['fr3_hand_tcp'"):
        kin.frame_pose(kin.home_rad, "fr3_hand_tpc")
    with pytest.raises(KinematicsError, match="non-finite"):
        kin.frame_pose(np.full(7, np.nan), "fr3_hand_tcp")
    with pytest.raises(KinematicsError, match=r"unknown arm 'left'; arms: \['arm'\]"):
        kin.solve_ik_chunk(np.eye(4)[None], "left", kin.home_rad)
    skewed = np.eye(4)
    skewed[0, 1] = 0.5
    with pytest.raises(KinematicsError, match=r"steps \[1\] is not a rotation"):
        kin.solve_ik_chunk(np.stack([np.eye(4), skewed]), "arm", kin.home_rad)
    with pytest.raises(KinematicsError, match=r"shape \(T, 4, 4\)"):
        kin.solve_ik_chunk(np.eye(4), "arm", kin.home_rad)


def test_urdf_override_is_checked():
    spec = load_embodiment("fr3")
    with pytest.raises(ValueError, match="not the URDF root"):
        RobotKinematics.from_embodiment(spec, urdf_xml=(urdf_dir() / "ur5.urdf").read_text())
    # A continuous joint has two Pinocchio coordinates (cos, sin): q would not be one angle per joint.
    fr3 = (urdf_dir() / "fr3.urdf").read_text()
    continuous = fr3.replace('<joint name="fr3_joint7" type="revolute">', '<joint name="fr3_joint7" type="continuous">')
    assert continuous != fr3
    with pytest.raises(ValueError, match="fr3_joint7"):
        RobotKinematics.from_embodiment(spec, urdf_xml=continuous)


def test_data_workspace_is_per_thread():
    kin = kin_for("ur5")
    qs = random_qs(kin, 40, seed=9)
    expected = [ur_tool0("ur5", q) for q in qs]
    failures = []

    def worker(offset: int) -> None:
        for i in range(200):
            k = (i + offset) % len(qs)
            if not np.allclose(kin.frame_pose(qs[k], "tool0", "base"), expected[k], atol=1e-9):
                failures.append(k)

    threads = [threading.Thread(target=worker, args=(o,)) for o in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert failures == []


def _permuted_ur5(perm: list[int]):
    spec = load_embodiment("ur5")
    arm = spec.arms[0]
    lim = arm.limits
    limits = dataclasses.replace(
        lim,
        lower_rad=lim.lower_rad[perm],
        upper_rad=lim.upper_rad[perm],
        velocity_rad_s=lim.velocity_rad_s[perm],
        acceleration_rad_s2=lim.acceleration_rad_s2[perm],
    )
    arm = dataclasses.replace(
        arm, joint_names=tuple(arm.joint_names[i] for i in perm), limits=limits, home_rad=arm.home_rad[perm]
    )
    return dataclasses.replace(spec, arms=(arm,))


def test_q_follows_the_spec_joint_order_not_the_urdf_order():
    # Drivers may list joints in any order (ur_robot_driver's joint_states is not chain order).
    perm = [2, 0, 1, 3, 5, 4]
    kin = kin_for("ur5")
    shuffled = RobotKinematics.from_embodiment(_permuted_ur5(perm))
    assert shuffled.joint_names == tuple(kin.joint_names[i] for i in perm)
    base, tool = kin.arm_frames("arm")
    for q in random_qs(kin, 20, seed=10, margin_rad=0.1):
        np.testing.assert_allclose(shuffled.frame_pose(q[perm], tool, base), kin.frame_pose(q, tool, base), atol=1e-12)
        np.testing.assert_allclose(
            shuffled.frame_jacobian(q[perm], tool, base), kin.frame_jacobian(q, tool, base)[:, perm], atol=1e-12
        )
    q_true = np.array([0.3, -1.2, 1.5, -0.7, 0.8, 0.2])
    target = arm_tool_pose(kin, q_true, "arm")
    result = shuffled.solve_ik_chunk(np.stack([target] * 2), "arm", (q_true + 0.05)[perm])
    assert result.all_success
    np.testing.assert_allclose(kin.frame_pose(result.q[-1][np.argsort(perm)], tool, base), target, atol=2e-4)


def test_bimanual_arms_in_any_config_order():
    spec = load_embodiment("aloha")
    kin = kin_for("aloha")
    swapped = RobotKinematics.from_embodiment(dataclasses.replace(spec, arms=spec.arms[::-1]))
    assert swapped.joint_names == kin.joint_names[6:] + kin.joint_names[:6]
    q = random_qs(kin, 1, seed=11, margin_rad=0.3)[0]
    q_swapped = np.r_[q[6:], q[:6]]
    for arm in kin.arm_names:
        np.testing.assert_allclose(arm_tool_pose(swapped, q_swapped, arm), arm_tool_pose(kin, q, arm), atol=1e-12)
    target = arm_tool_pose(kin, q, "follower_right")
    result = swapped.solve_ik_chunk(target[None], "follower_right", np.r_[q[6:] + 0.05, q[:6]])
    assert result.all_success
    np.testing.assert_array_equal(result.q[0][6:], q[:6])  # the left arm (now second) is untouched


def test_tool_frame_behind_a_locked_joint_is_rejected():
    spec = load_embodiment("fr3")
    arm = dataclasses.replace(spec.arms[0], tool_frame="fr3_leftfinger")  # moved by fr3_finger_joint1
    with pytest.raises(KinematicsError, match=r"tool_frame 'fr3_leftfinger' is moved by joints \['fr3_finger_joint1'\]"):
        RobotKinematics.from_embodiment(dataclasses.replace(spec, arms=(arm,)))


# ----------------------------------------------------------------------------------- IK for any frame


def test_frame_arm_names_the_arm_whose_joints_move_a_frame():
    kin = kin_for("aloha")
    assert kin.frame_arm("follower_right/wrist_link") == "follower_right"
    assert kin.frame_arm("follower_left/ee_gripper_link") == "follower_left"
    assert kin.arms_moving("follower_left/base_link") == () and kin.arms_moving("world") == ()
    with pytest.raises(KinematicsError, match=r"frame 'world' cannot be placed by IK: no arm's joints move it"):
        kin.frame_arm("world")


def test_ik_for_the_franka_flange_matches_the_dh_reference():
    # A cell without the hand solves for panda_link8 (the flange), not the configured tool frame.
    kin = kin_for("panda")
    for q_true in random_qs(kin, 5, seed=11, margin_rad=0.2):
        target = franka_flange(q_true)
        result = kin.solve_ik(target, "arm", restarts=8, frame="panda_link8")
        assert result.success[0]
        reached = franka_flange(result.q[0])  # the independent reference, not our FK
        assert np.linalg.norm(reached[:3, 3] - target[:3, 3]) <= 1e-4
        assert rotation_angle(reached[:3, :3].T @ target[:3, :3]) <= 1e-3
        assert result.position_error_m[0] == pytest.approx(np.linalg.norm(reached[:3, 3] - target[:3, 3]), abs=1e-9)


def test_ik_chunk_for_a_wrist_frame_in_another_base():
    # UR5e wrist_3_link (tool0's parent) along a short path, the targets expressed in `base`
    # (rotated pi about z from base_link), warm-started along the chunk.
    kin = kin_for("ur5e")
    q0 = np.array([0.2, -1.0, 1.2, -1.5, -1.4, 0.3])
    qs = q0 + np.linspace(0.0, 0.2, 10)[:, None] * np.array([1.0, -0.5, 0.5, 0.3, 0.2, 0.1])
    targets = np.stack([kin.frame_pose(q, "wrist_3_link", "base") for q in qs])
    result = kin.solve_ik_chunk(targets, "arm", q0, frame="wrist_3_link", base="base")
    assert result.all_success
    for t in range(10):
        np.testing.assert_allclose(ur_tool0("ur5e", result.q[t])[:3, 3], ur_tool0("ur5e", qs[t])[:3, 3], atol=2e-4)


def test_ik_relative_to_a_link_the_arm_itself_moves():
    # Base panda_link3 moves with joints 1-3: the target is the flange's pose relative to it,
    # which only joints 4-7 change. The reached relative pose must match; the absolute one need not.
    kin = kin_for("panda")
    q_true = np.array([0.3, -0.5, 0.2, -2.0, 0.1, 1.6, 0.5])
    target = kin.frame_pose(q_true, "panda_link8", "panda_link3")
    # Independent value: the Craig DH chain from frame 3 to the flange.
    ref = np.eye(4)
    for (a, d, alpha), theta in zip(FRANKA_MDH[3:], q_true[3:]):
        ref = ref @ rot_x(alpha) @ trans(a, 0, 0) @ rot_z(theta) @ trans(0, 0, d)
    ref = ref @ trans(0, 0, 0.107)
    np.testing.assert_allclose(target, ref, atol=1e-9)
    seed = kin.home_rad
    result = kin.solve_ik(target, "arm", seed, frame="panda_link8", base="panda_link3")
    assert result.success[0]
    reached = kin.frame_pose(result.q[0], "panda_link8", "panda_link3")
    np.testing.assert_allclose(reached[:3, 3], target[:3, 3], atol=1e-4)
    assert rotation_angle(reached[:3, :3].T @ target[:3, :3]) <= 1e-3
    # The residual is reported in the base's terms (an error in world terms would be wrong here).
    assert result.position_error_m[0] == pytest.approx(np.linalg.norm(reached[:3, 3] - target[:3, 3]), abs=1e-9)


def test_ik_in_a_base_moved_by_the_other_arm_holds_that_arm_at_its_seed():
    kin = kin_for("aloha")
    q_true = np.array([0.1, -0.3, 0.4, 0.0, 0.5, 0.2, -0.2, 0.1, 0.3, 0.1, -0.4, 0.0])
    target = kin.frame_pose(q_true, "follower_right/wrist_link", "follower_left/ee_gripper_link")
    seed = q_true.copy()
    seed[6:] += 0.1
    result = kin.solve_ik(target, "follower_right", seed, frame="follower_right/wrist_link",
                          base="follower_left/ee_gripper_link")
    assert result.success[0]
    np.testing.assert_array_equal(result.q[0][:6], q_true[:6])  # the left arm did not move
    reached = kin.frame_pose(result.q[0], "follower_right/wrist_link", "follower_left/ee_gripper_link")
    np.testing.assert_allclose(reached[:3, 3], target[:3, 3], atol=1e-4)


def test_ik_refuses_a_frame_the_arm_does_not_move():
    kin = kin_for("aloha")
    target = kin.frame_pose(kin.home_rad, "follower_left/ee_gripper_link", "follower_left/base_link")
    with pytest.raises(KinematicsError, match=r"frame 'follower_left/ee_gripper_link' is not moved by arm 'follower_right'"):
        kin.solve_ik(target, "follower_right", frame="follower_left/ee_gripper_link")
    with pytest.raises(KinematicsError, match=r"did you mean"):
        kin.solve_ik(target, "follower_left", frame="follower_left/ee_griper_link")
