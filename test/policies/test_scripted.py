"""The scripted expert: chunk geometry against hand-computed values, input checks, and closed-loop
success directly against the simulation (no ROS)."""

import math

import numpy as np
import pytest

from vla_ros.core.action_spaces import action_names, rpy_to_matrix
from vla_ros.core.embodiment import load_embodiment
from vla_ros.core.kinematics import RobotKinematics
from vla_ros.core.types import Observation
from vla_ros.policies.base import make_policy
from vla_ros.policies.scripted import ExpertParams, plan_ee_delta_rows
from vla_ros.sim.hardware import SimulatedHardware
from vla_ros.sim.rollout import observe, run_episode


def _compose(p0, R0, rows):
    p, R = p0.copy(), R0.copy()
    out = []
    for r in rows:
        p = p + r[:3]
        R = rpy_to_matrix(r[3], r[4], r[5]) @ R
        out.append((p.copy(), R.copy()))
    return out


def test_rows_move_at_the_speed_limit_then_stay():
    # 0.1 m along x at 0.25 m/s with 0.1 s rows: 0.025 m per row for 4 rows, then nothing
    rows, speeds = plan_ee_delta_rows(np.zeros(3), np.eye(3), np.array([0.1, 0, 0]), np.eye(3), 0.25, 1.0, 0.1, 6)
    np.testing.assert_allclose(rows[:, 0], [0.025, 0.025, 0.025, 0.025, 0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(rows[:, 1:], 0.0, atol=1e-12)


def test_rows_follow_a_trapezoidal_profile():
    # from rest, 0.5 m/s^2 up to 0.25 m/s: s(t) = a t^2 / 2 until 0.5 s (0.0625 m), then +0.025 m per row
    rows, speeds = plan_ee_delta_rows(np.zeros(3), np.eye(3), np.array([1.0, 0, 0]), np.eye(3), 0.25, 1.0, 0.1, 7,
                                      accel_m_s2=0.5)  # fmt: skip
    s = np.cumsum(rows[:, 0])
    np.testing.assert_allclose(s, [0.0025, 0.01, 0.0225, 0.04, 0.0625, 0.0875, 0.1125], atol=1e-9)
    np.testing.assert_allclose(speeds, [0.05, 0.1, 0.15, 0.2, 0.25, 0.25, 0.25], atol=1e-9)
    # already moving at 0.25 m/s, 0.05 m from the goal: brakes at 0.5 m/s^2 (0.0625 m needed) and
    # still arrives at rest exactly at the goal, never beyond it
    rows, speeds = plan_ee_delta_rows(np.zeros(3), np.eye(3), np.array([0.05, 0, 0]), np.eye(3), 0.25, 1.0, 0.1, 12,
                                      accel_m_s2=0.5, start_speed_m_s=0.25)  # fmt: skip
    s = np.cumsum(rows[:, 0])
    assert np.all(np.diff(s) >= -1e-12) and s[-1] == pytest.approx(0.05, abs=1e-9) and speeds[-1] == 0.0


def test_rows_compose_to_the_goal_rotation_in_the_base_frame():
    R0 = rpy_to_matrix(0.1, -0.2, 0.3)
    goal_R = rpy_to_matrix(math.pi, 0.0, 0.5)
    goal_p = np.array([0.4, -0.1, 0.2])
    rows, _ = plan_ee_delta_rows(np.array([0.3, 0.0, 0.4]), R0, goal_p, goal_R, 0.3, 1.0, 0.1, 40)
    p, R = _compose(np.array([0.3, 0.0, 0.4]), R0, rows)[-1]
    np.testing.assert_allclose(p, goal_p, atol=1e-9)
    np.testing.assert_allclose(R, goal_R, atol=1e-9)
    # rotation limited to 1 rad/s -> at most 0.1 rad per row
    for r in rows:
        angle = math.acos(max(-1.0, min(1.0, (np.trace(rpy_to_matrix(*r[3:])) - 1) / 2)))
        assert angle <= 0.1 + 1e-9


@pytest.fixture(scope="module")
def fr3_setup():
    spec = load_embodiment("fr3")
    kin = RobotKinematics.from_embodiment(spec)
    hw = SimulatedHardware(spec)
    yield spec, kin, hw
    hw.close()


def test_chunk_format(fr3_setup):
    spec, kin, hw = fr3_setup
    policy = make_policy("scripted", embodiment=spec, kinematics=kin)
    assert policy.needs_privileged and policy.period_s == spec.policy_period_s
    hw.reset(0)
    chunk = policy.infer(observe(hw, with_images=False, privileged=True))
    assert chunk.names == action_names(spec, "ee_delta")
    assert chunk.num_steps == round(ExpertParams().horizon_s / spec.policy_period_s) and chunk.period_s == spec.policy_period_s
    assert np.all(chunk.column("gripper") == 1.0)  # approaching: open


def test_input_errors_are_explicit(fr3_setup):
    spec, kin, hw = fr3_setup
    policy = make_policy("scripted", embodiment=spec, kinematics=kin)
    hw.reset(0)
    obs = observe(hw, with_images=False, privileged=True)
    no_objects = Observation(obs.stamp_s, {}, obs.joint_names, obs.joint_positions, obs.instruction)
    with pytest.raises(ValueError, match="privileged"):
        policy.infer(no_objects)
    odd = Observation(obs.stamp_s, {}, obs.joint_names, obs.joint_positions, "wave hello", privileged=obs.privileged)
    with pytest.raises(ValueError, match="colour"):
        policy.infer(odd)
    with pytest.raises(TypeError, match="unknown arguments"):
        make_policy("scripted", embodiment=spec, speed=3)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_expert_picks_the_instructed_cube_fr3(fr3_setup, seed):
    spec, kin, hw = fr3_setup
    policy = make_policy("scripted", embodiment=spec, kinematics=kin)
    result = run_episode(hw, policy, seed, timeout_s=12.0, kinematics=kin)
    assert result.success, f"seed {seed}: {result}"
    assert result.duration_s < 8.0
    # the cube that is up is the instructed one; the others still lie on the table
    poses = hw.object_poses()
    target = hw.task.target
    assert result.instruction == f"pick up the {target.removesuffix('_cube')} cube"
    assert poses[target][2, 3] > 0.06
    assert all(poses[n][2, 3] < 0.03 for n in poses if n != target)


def _run_watching_the_tool(hw, kin, policy, seed, timeout_s):
    """run_episode, and (phase, tool position - target cube position) at every call of the expert."""
    tool_frame = policy.spec.arms[0].tool_frame
    seen = []
    infer = policy.infer

    def spying_infer(observation):
        chunk = infer(observation)
        tool = kin.frame_pose(observation.positions_for(policy.spec.joint_names), tool_frame)[:3, 3]  # world = URDF root
        seen.append((policy.phase, tool - np.asarray(observation.privileged["objects"][hw.task.target])[:3, 3]))
        return chunk

    policy.infer = spying_infer
    try:
        return run_episode(hw, policy, seed, timeout_s=timeout_s, kinematics=kin), seen
    finally:
        del policy.infer


def test_expert_detour_shows_a_correction_from_off_centre_and_still_picks(fr3_setup):
    """With detour_offset_m the expert first stops off-centre above the cube (a different point
    each episode, repeatable from detour_seed), then corrects and picks as before."""
    spec, kin, hw = fr3_setup
    params = {"detour_offset_m": 0.05, "detour_seed": 7}
    policy = make_policy("scripted", embodiment=spec, kinematics=kin, params=params)
    detours = []
    for seed in (0, 1):
        result, seen = _run_watching_the_tool(hw, kin, policy, seed, timeout_s=14.0)
        assert result.success, f"seed {seed}: {result}"
        # reset() drew this episode's detour: 2-5 cm off, 6-10 cm up
        detours.append(policy._detour_rng.bit_generator.state["state"]["state"])
        # the tool hovered off-centre above the cube (slowed near the detour point: several calls
        # 1.5-5.5 cm off at 5-11 cm up) before the descent started centred
        hover = [d for phase, d in seen
                 if phase == "approach" and 0.015 < np.linalg.norm(d[:2]) < 0.055 and 0.05 < d[2] < 0.11]
        assert len(hover) >= 3, (seed, seen[-20:])
        first_descend = next(d for phase, d in seen if phase == "descend")
        assert float(np.linalg.norm(first_descend[:2])) < 0.012
    assert detours[0] != detours[1]
    # the same seed gives the same detours
    again = make_policy("scripted", embodiment=spec, kinematics=kin, params=params)
    first = make_policy("scripted", embodiment=spec, kinematics=kin, params=params)
    assert np.allclose(again.detour[0], first.detour[0]) and again.detour[1] == first.detour[1]
    assert 0.02 - 1e-9 <= float(np.linalg.norm(first.detour[0])) <= 0.05 + 1e-9
    assert 0.06 - 1e-9 <= first.detour[1] <= 0.10 + 1e-9
    with pytest.raises(ValueError, match="detour_offset_m"):
        ExpertParams(detour_offset_m=0.5)


def test_expert_aim_error_shrinks_on_the_way_down_and_it_still_picks(fr3_setup):
    """With aim_error_m the expert aims off-centre by 0.5-1 x aim_error_m (one direction per
    episode) at aim_error_height_m and above, by a share proportional to the height below it, and
    at the cube itself at the grasp: the descent starts off-centre and is corrected on the way."""
    spec, kin, hw = fr3_setup
    params = {"aim_error_m": 0.04, "aim_error_height_m": 0.2, "detour_seed": 3}
    policy = make_policy("scripted", embodiment=spec, kinematics=kin, params=params)
    errors = []
    for seed in (0, 1):
        result, seen = _run_watching_the_tool(hw, kin, policy, seed, timeout_s=12.0)
        assert result.success, f"seed {seed}: {result}"
        error = policy.aim_error.copy()
        errors.append(error)
        assert 0.02 - 1e-9 <= float(np.linalg.norm(error)) <= 0.04 + 1e-9 and error[2] == 0.0
        descent = [d for phase, d in seen if phase == "descend"]
        start, end = descent[0], descent[-1]
        # aligned above where it aims at ~10 cm: half the error there (tolerance 1.2 cm)
        assert 0.09 < start[2] < 0.115
        assert np.linalg.norm(start[:2] - 0.5 * error[:2]) < 0.012 + 1e-3
        assert np.linalg.norm(start[:2]) > 0.01  # really off-centre
        assert np.linalg.norm(end[:2]) < 0.008 and end[2] < 0.015  # corrected by the grasp
    assert not np.allclose(errors[0], errors[1])
    with pytest.raises(ValueError, match="aim_error_m"):
        ExpertParams(aim_error_m=0.2)
    with pytest.raises(ValueError, match="aim_error_height_m"):
        ExpertParams(aim_error_height_m=0.0)
    # off by default: the expert aims at the cube
    assert np.all(make_policy("scripted", embodiment=spec, kinematics=kin).aim_error == 0.0)


def test_expert_miss_closes_beside_the_cube_then_picks_it(fr3_setup):
    """With miss_fraction 1 the first grasp closes miss_offset_m beside the cube, across the
    fingers (nothing lifted), the expert opens, comes back and picks it; the episode still succeeds."""
    spec, kin, hw = fr3_setup
    params = {"aim_error_m": 0.04, "detour_seed": 3, "miss_fraction": 1.0, "miss_offset_m": 0.04}
    policy = make_policy("scripted", embodiment=spec, kinematics=kin, params=params)
    result, seen = _run_watching_the_tool(hw, kin, policy, 0, timeout_s=20.0)
    assert result.success, result
    phases = [phase for phase, _ in seen]
    closes = [i for i in range(1, len(phases)) if phases[i] == "close" and phases[i - 1] != "close"]
    assert len(closes) == 2, phases
    first, second = seen[closes[0]][1], seen[closes[1]][1]
    # the first close: 4 cm (+- the 0.6 x 1.2 cm arrival tolerance) off horizontally, at grasp height
    assert 0.033 < float(np.linalg.norm(first[:2])) < 0.048 and abs(first[2]) < 0.015
    # between the two: open again (approach) after the lift found the cube left behind
    assert "approach" in phases[closes[0]:closes[1]]
    assert float(np.linalg.norm(second[:2])) < 0.008
    assert policy.miss is False
    # only the miss was added to the seed's random stream: the aim error is the one drawn without it
    plain = make_policy("scripted", embodiment=spec, kinematics=kin, params={"aim_error_m": 0.04, "detour_seed": 3})
    again = make_policy("scripted", embodiment=spec, kinematics=kin, params=params)
    assert np.allclose(plain.aim_error, again.aim_error) and again.miss is True
    # a fraction draws per episode: about half of 200 episodes with 0.5, none by default
    half = make_policy("scripted", embodiment=spec, kinematics=kin, params={"miss_fraction": 0.5, "detour_seed": 1})
    draws = []
    for _ in range(200):
        half.reset()
        draws.append(half.miss)
    assert 70 < sum(draws) < 130
    assert make_policy("scripted", embodiment=spec, kinematics=kin).miss is False
    with pytest.raises(ValueError, match="miss_fraction"):
        ExpertParams(miss_fraction=1.5)
    with pytest.raises(ValueError, match="miss_offset_m"):
        ExpertParams(miss_offset_m=0.01)


@pytest.mark.parametrize("name", ["ur5", "panda"])
def test_expert_succeeds_on_other_single_arms(name):
    spec = load_embodiment(name)
    kin = RobotKinematics.from_embodiment(spec)
    hw = SimulatedHardware(spec)
    policy = make_policy("scripted", embodiment=spec, kinematics=kin)
    for seed in (0, 1):
        result = run_episode(hw, policy, seed, timeout_s=12.0, kinematics=kin)
        assert result.success, f"{name} seed {seed}: {result}"
    hw.close()


def test_expert_hands_the_cube_over_aloha():
    spec = load_embodiment("aloha")
    kin = RobotKinematics.from_embodiment(spec)
    hw = SimulatedHardware(spec)
    policy = make_policy("scripted", embodiment=spec, kinematics=kin)
    assert policy.action_names == action_names(spec, "ee_delta")  # both arms, left first
    # re-plan every 0.1 s (5 policy periods) to keep the test fast; the chunks cover 0.8 s
    result = run_episode(hw, policy, seed=0, timeout_s=20.0, kinematics=kin, replan_period_s=0.1)
    assert result.success, result
    left, right = hw.scene.arms
    touching = hw.task.cube_contacts(hw.data)
    assert touching & right.gripper.body_ids and not touching & left.gripper.body_ids
    assert hw.task.cube_clearance_m(hw.data) > 0.08  # presented ~0.15 m above the table
    hw.close()
