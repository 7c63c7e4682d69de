"""ControllerCore on the real FR3 / ALOHA configs: acceptance, refusals + hold, watchdogs, e-stop,
lifecycle, JTC-valid output (checked with core/jtc.py), forward streaming within limits."""

import math

import numpy as np
import pytest

from vla_ros.core.action_spaces import action_names
from vla_ros.core.controller import (
    ESTOP,
    EXECUTING,
    FAULT,
    HOLDING,
    INACTIVE,
    WAITING_FOR_STATE,
    ControllerConfig,
    ControllerCore,
    PositionOut,
    TrajectoryOut,
)
from vla_ros.core.embodiment import load_embodiment
from vla_ros.core.jtc import TrajectoryCommand, TrajectoryPoint, validate_trajectory
from vla_ros.core.kinematics import RobotKinematics
from vla_ros.core.types import ActionChunk

HOME = np.array([0.0, -math.pi / 4, 0.0, -3 * math.pi / 4, 0.0, math.pi / 2, math.pi / 4])
BARE = tuple(f"fr3_joint{i}" for i in range(1, 8))


@pytest.fixture(scope="module")
def fr3():
    spec = load_embodiment("fr3")
    return spec, RobotKinematics.from_embodiment(spec)


@pytest.fixture(scope="module")
def fr3_forward():
    spec = load_embodiment("fr3", {"arms.arm.command.kind": "forward_position",
                                   "arms.arm.command.topic": "forward_position_controller/commands"})
    return spec, RobotKinematics.from_embodiment(spec)


def _core(spec_kin, now=100.0, q=HOME, **config):
    spec, kin = spec_kin
    core = ControllerCore(spec, kin, ControllerConfig(**config))
    core.update_joint_state("arm", BARE + ("fr3_finger_joint1",), list(q) + [0.04], now)
    core.activate(now)
    return core


def _joint_chunk(stamp, q_rows, gripper=1.0, period=0.1):
    names = BARE + ("gripper",)
    values = np.hstack([np.asarray(q_rows), np.full((len(q_rows), 1), gripper)])
    return ActionChunk(names, values, period, stamp)


def _ramp(start, joint, rate_rad_s, steps=10, period=0.1):
    rows = np.tile(start, (steps, 1))
    rows[:, joint] += rate_rad_s * period * np.arange(steps)
    return rows


def _as_jtc(out: TrajectoryOut) -> TrajectoryCommand:
    points = tuple(TrajectoryPoint(t, tuple(p), tuple(v))
                   for t, p, v in zip(out.time_from_start_s, out.positions_rad, out.velocities_rad_s))
    return TrajectoryCommand(out.joint_names, points, out.stamp_s)


def _trajectories(outs):
    return [o for o in outs if isinstance(o, TrajectoryOut)]


def _fresh(core, now, q=HOME):
    core.update_joint_state("arm", BARE, q, now)


def test_joint_chunk_becomes_a_jtc_trajectory_a_real_jtc_accepts(fr3):
    now = 100.0
    core = _core(fr3, now)
    chunk = _joint_chunk(now - 0.05, _ramp(HOME, 0, 0.3))
    decision = core.submit_chunk(chunk, now)
    assert decision.accepted, decision.reason
    assert decision.space == "joint_position" and decision.dropped_steps == 0
    (traj,) = _trajectories(core.tick(now))
    assert traj.topic == "fr3_arm_controller/joint_trajectory" and traj.joint_names == BARE
    assert validate_trajectory(_as_jtc(traj), BARE, now_s=now + 0.002) is None
    # The window follows the plan: 0.5 s ahead joint 1 is on the ramp (0.3 rad/s from the stamp).
    t = now + 0.4
    assert core.scheduler.sample(t)[0][0] == pytest.approx(0.3 * (t - chunk.stamp_s), abs=2e-3)
    assert core.state(now) == EXECUTING
    # Resent at the replan rate (20 Hz) while moving, not in between.
    assert _trajectories(core.tick(now + 0.01)) == []
    (again,) = _trajectories(core.tick(now + 0.05))
    assert validate_trajectory(_as_jtc(again), BARE, now_s=now + 0.051) is None


def test_plan_runs_out_and_holds_the_last_target(fr3):
    now = 100.0
    core = _core(fr3, now)
    rows = _ramp(HOME, 1, 0.2, steps=5)
    assert core.submit_chunk(_joint_chunk(now, rows), now).accepted
    core.tick(now)
    end = core.scheduler.plan.end_time_s
    for t in (end, end + 0.5, end + 5.0):
        _fresh(core, t)
        q, v = core.scheduler.sample(t)
        assert q == pytest.approx(rows[-1], abs=1e-12) and np.all(v == 0.0)
    assert core.state(end + 5.0) == HOLDING
    # At rest nothing more is sent to the JTC (it holds the last point by itself).
    assert _trajectories(core.tick(end + 5.0)) == []


def _assert_refused_and_holding(core, decision, now, fragment, q_hold=HOME):
    assert not decision.accepted
    assert fragment in decision.reason, decision.reason
    assert core.last_refusal == decision.reason
    q, v = core.scheduler.sample(now + 1.0)
    assert q == pytest.approx(q_hold, abs=1e-9) and np.all(v == 0.0)


def test_bad_chunks_are_refused_and_the_arm_holds(fr3):
    now = 100.0
    core = _core(fr3, now)
    good = _ramp(HOME, 0, 0.3)
    _assert_refused_and_holding(core, core.submit_chunk(_joint_chunk(now - 1.5, good), now), now, "stale chunk")
    _assert_refused_and_holding(core, core.submit_chunk(_joint_chunk(now + 0.3, good), now), now, "in the future")
    nan_rows = good.copy()
    nan_rows[3, 2] = np.nan
    _assert_refused_and_holding(core, core.submit_chunk(_joint_chunk(now, nan_rows), now), now, "non-finite")
    wrong = ActionChunk(("fr3_joint1", "fr3_joint2", "gripper"), np.zeros((2, 3)), 0.1, now)
    _assert_refused_and_holding(core, core.submit_chunk(wrong, now), now, "missing")
    over = _ramp(HOME, 3, 0.5)  # joint 4 climbs from -2.356 past -0.1518 - 0.05? no: ends at -1.9 -> fine
    over[:, 3] = -0.15  # above the upper limit -0.1518 minus the 0.05 margin
    decision = core.submit_chunk(_joint_chunk(now, over), now)
    _assert_refused_and_holding(core, decision, now, "fr3_joint4")
    assert "unsafe chunk" in decision.reason and "-0.2018" in decision.reason
    assert core.chunks_refused == 5 and core.chunks_accepted == 0


def test_other_supported_space_is_accepted_by_its_names(fr3):
    now = 100.0
    core = _core(fr3, now)
    assert fr3[0].action_space == "ee_delta"
    # ee_delta with zero motion: the targets are the reference pose, i.e. a hold.
    names = action_names(fr3[0], "ee_delta")
    chunk = ActionChunk(names, np.tile([0, 0, 0, 0, 0, 0, 1.0], (4, 1)), 0.1, now)
    decision = core.submit_chunk(chunk, now)
    assert decision.accepted and decision.space == "ee_delta"
    assert core.scheduler.sample(now + 1.0)[0] == pytest.approx(HOME, abs=1e-6)


def test_ik_failure_is_refused(fr3):
    now = 100.0
    core = _core(fr3, now)
    names = action_names(fr3[0], "ee_pose")
    chunk = ActionChunk(names, np.tile([3.0, 0.0, 0.5, 1.0, 0.0, 0.0, 0.0, 1.0], (3, 1)), 0.1, now)
    decision = core.submit_chunk(chunk, now)
    _assert_refused_and_holding(core, decision, now, "IK failed for steps [0, 1, 2]")


def test_ee_delta_reference_is_the_commanded_pose_while_executing(fr3):
    now = 100.0
    core = _core(fr3, now)
    assert core.submit_chunk(_joint_chunk(now, _ramp(HOME, 0, 0.4)), now).accepted
    later = now + 0.3
    _fresh(core, later)  # the measurement still says HOME (the arm lags): must not be the reference
    commanded_at_stamp = core.scheduler.sample(later)[0].copy()
    names = action_names(fr3[0], "ee_delta")
    chunk = ActionChunk(names, np.tile([0, 0, 0, 0, 0, 0, 1.0], (5, 1)), 0.1, later)
    assert core.submit_chunk(chunk, later).accepted
    assert core.scheduler.sample(later + 2.0)[0] == pytest.approx(commanded_at_stamp, abs=1e-5)
    assert abs(commanded_at_stamp[0] - HOME[0]) > 0.05


def test_too_fast_chunk_is_slowed_down(fr3):
    now = 100.0
    core = _core(fr3, now)
    # Joint 7 speeds up by 0.5 rad/s per 0.05 s step (10 rad/s^2) to 6 rad/s (limit 5.26): needs at
    # least x6/5.26 slower.
    speeds = np.concatenate([np.arange(0.0, 6.01, 0.5), [6.0]])
    rows = np.tile(HOME, (len(speeds), 1))
    rows[:, 6] -= 0.05 * np.cumsum(speeds)
    decision = core.submit_chunk(_joint_chunk(now, rows, period=0.05), now)
    assert decision.accepted, decision.reason
    assert 6 / 5.26 - 1e-9 <= decision.time_scale <= 2.0
    assert "slowed down" in decision.reason
    peak_v, peak_a = core.scheduler.plan.peak_rates()
    assert np.all(peak_v <= fr3[0].arms[0].limits.velocity_rad_s + 1e-9)
    assert np.all(peak_a <= fr3[0].arms[0].limits.acceleration_rad_s2 + 1e-9)


def test_missing_or_stale_joint_states_refuse_to_command(fr3):
    now = 100.0
    core = _core(fr3, now)
    assert core.submit_chunk(_joint_chunk(now, _ramp(HOME, 0, 0.3)), now).accepted
    core.tick(now)
    # Joint states stop: after the timeout the controller holds and says why.
    t_fault = now + 0.25
    outs = _trajectories(core.tick(t_fault))
    assert core.state(t_fault) == FAULT
    (stop,) = outs
    assert validate_trajectory(_as_jtc(stop), BARE, now_s=t_fault) is None
    assert np.all(stop.velocities_rad_s[-1] == 0.0)
    # Stop from ~0.3 rad/s at 10 rad/s^2: 0.3^2 / 20 = 4.5 mm past the commanded position.
    commanded = stop.positions_rad[0][0]
    assert stop.positions_rad[-1][0] - commanded <= 0.3**2 / 20 + 0.3 * 0.01 + 1e-6
    # Then nothing new while faulted, and chunks are refused.
    assert _trajectories(core.tick(t_fault + 0.05)) == [] and _trajectories(core.tick(t_fault + 0.2)) == []
    decision = core.submit_chunk(_joint_chunk(t_fault, _ramp(HOME, 0, 0.3)), t_fault + 0.01)
    assert not decision.accepted and "stale" in decision.reason
    # A joint_states message lacking a joint is a fault too, naming the joint.
    core.update_joint_state("arm", BARE[:-1], HOME[:-1], t_fault + 0.3)
    decision = core.submit_chunk(_joint_chunk(t_fault + 0.3, _ramp(HOME, 0, 0.3)), t_fault + 0.3)
    assert not decision.accepted and "lacks joints ['fr3_joint7']" in decision.reason
    # Healthy again: holding, chunks accepted.
    _fresh(core, t_fault + 0.4)
    core.tick(t_fault + 0.4)
    assert core.state(t_fault + 0.4) == HOLDING
    assert core.submit_chunk(_joint_chunk(t_fault + 0.4, _ramp(HOME, 0, 0.1)), t_fault + 0.4).accepted


def test_estop_latches_until_released(fr3):
    now = 100.0
    core = _core(fr3, now)
    assert core.submit_chunk(_joint_chunk(now, _ramp(HOME, 0, 0.3)), now).accepted
    core.tick(now)
    t = now + 0.3
    _fresh(core, t)
    q_at_estop, v_at_estop = core.scheduler.sample(t)
    core.estop(t)
    assert core.state(t) == ESTOP
    (stop,) = _trajectories(core.tick(t))
    stop_s = abs(v_at_estop[0]) / 10.0
    assert core.scheduler.plan.end_time_s == pytest.approx(t + stop_s, abs=1e-9)
    final = core.scheduler.plan.final_position_rad
    assert final[0] == pytest.approx(q_at_estop[0] + v_at_estop[0] * stop_s / 2)
    assert stop.positions_rad[-1] == pytest.approx(final)
    _fresh(core, t + 0.1)
    assert not core.submit_chunk(_joint_chunk(t + 0.1, _ramp(final, 0, 0.3)), t + 0.1).accepted
    assert "e-stop is latched" in core.last_refusal
    ok, message = core.release_estop(t + 0.2)
    assert ok and "released" in message
    _fresh(core, t + 0.2)
    assert core.state(t + 0.2) == HOLDING
    assert core.scheduler.sample(t + 5.0)[0] == pytest.approx(final)  # release does not resume
    assert core.submit_chunk(_joint_chunk(t + 0.2, _ramp(final, 0, 0.3)), t + 0.2).accepted


@pytest.mark.parametrize("stop", ["estop", "fault"])
def test_a_stop_arriving_late_is_still_taken_by_a_jtc(fr3, stop):
    """Found in a full test run: two sim graphs starting on 2 cores delivered a fault hold 0.53 s
    after its stamp, past the 0.5 s horizon; the sim's JTC rejected it ("ends in the past") and the
    previous trajectory ran on. A stop's window now ends with a hold STOP_MIN_END_S (3 s) after its
    stamp, so a JTC takes it however loaded the host (up to that); motion windows keep the horizon."""
    now = 100.0
    core = _core(fr3, now)
    assert core.submit_chunk(_joint_chunk(now, _ramp(HOME, 0, 0.3, steps=20)), now).accepted
    (moving,) = _trajectories(core.tick(now))
    # the horizon, then the brake from 0.3 rad/s at 10 rad/s^2 (0.03 s)
    assert moving.time_from_start_s[-1] == pytest.approx(core.config.horizon_s + 0.03, abs=2e-3)
    assert validate_trajectory(_as_jtc(moving), BARE, now_s=now + 0.6) is not None  # late motion: rejected
    t = now + 0.3
    if stop == "estop":
        _fresh(core, t)
        core.estop(t)
    else:  # joint_states go stale: the core refuses to command and holds
        t = now + 0.3 + core.config.joint_state_timeout_s + 0.05
    (held,) = _trajectories(core.tick(t))
    assert core.state(t) == (ESTOP if stop == "estop" else FAULT)
    assert held.stamp_s == t and held.time_from_start_s[-1] == pytest.approx(3.0)
    np.testing.assert_array_equal(held.positions_rad[-1], core.scheduler.plan.final_position_rad)
    assert held.velocities_rad_s[-1].tolist() == [0.0] * 7
    assert validate_trajectory(_as_jtc(held), BARE, now_s=t + 2.5) is None


def test_lifecycle_without_state_then_deactivate_holds(fr3):
    spec, kin = fr3
    core = ControllerCore(spec, kin)
    assert core.state(0.0) == INACTIVE
    assert not core.submit_chunk(_joint_chunk(0.0, _ramp(HOME, 0, 0.1)), 0.0).accepted
    core.activate(0.0)
    assert core.tick(0.0) == [] and core.state(0.0) == WAITING_FOR_STATE
    _fresh(core, 0.1)
    core.tick(0.1)
    assert core.state(0.1) == HOLDING
    assert core.submit_chunk(_joint_chunk(0.1, _ramp(HOME, 0, 0.3)), 0.1).accepted
    core.tick(0.1)
    _fresh(core, 0.3)
    core.deactivate(0.3)
    assert core.state(0.3) == INACTIVE
    (stop,) = _trajectories(core.tick(0.3))
    assert np.all(stop.velocities_rad_s[-1] == 0.0)
    assert core.tick(0.35) == [] and core.tick(1.0) == []


def test_gripper_commands_use_the_gripper_mapping(fr3):
    now = 100.0
    core = _core(fr3, now)
    rows = _ramp(HOME, 0, 0.1, steps=4)
    values = np.hstack([rows, np.array([[1.0], [1.0], [0.0], [0.0]])])
    chunk = ActionChunk(BARE + ("gripper",), values, 0.1, now)
    assert core.submit_chunk(chunk, now).accepted
    grip = [o for o in core.tick(now) if isinstance(o, PositionOut)]
    assert grip[0].topic == "gripper_controller/commands" and grip[0].positions.tolist() == [0.04]
    _fresh(core, now + 0.21)
    grip = [o for o in core.tick(now + 0.21) if isinstance(o, PositionOut)]
    assert grip[0].positions.tolist() == [0.0]  # step 2 (t = 0.2 s) closes the gripper


def test_activation_holds_the_measured_gripper_not_the_last_episodes_close(fr3):
    """Found in 200 recorded demonstrations: after deactivate -> sim reset (gripper opened) ->
    activate, the controller re-sent the previous episode's close and the gripper shut again
    for up to 0.7 s at the start of every episode. Activation holds the gripper where measured;
    a hold while active (a fault) keeps the commanded close (a grasp is not loosened)."""
    now = 100.0
    core = _core(fr3, now)
    closing = np.hstack([_ramp(HOME, 0, 0.1, steps=4), np.zeros((4, 1))])
    assert core.submit_chunk(ActionChunk(BARE + ("gripper",), closing, 0.1, now), now).accepted
    assert [o.positions.tolist() for o in core.tick(now) if isinstance(o, PositionOut)] == [[0.0]]
    # a fault while holding the cube: the hold keeps squeezing
    t = now + core.config.joint_state_timeout_s + 0.05
    core.tick(t)
    assert core.state(t) == FAULT
    t += 0.05
    core.update_joint_state("arm", BARE + ("fr3_finger_joint1",), list(HOME) + [0.021], t)  # fingers on the cube
    core.tick(t)
    assert core.hold_measured(t + 0.01)
    assert [o.positions.tolist() for o in core.tick(t + 0.01) if isinstance(o, PositionOut)] == [[0.0]]
    core.deactivate(t + 0.02)
    # the episode reset opens the gripper (the sim's reset; an operator on a real arm)
    t += 1.0
    core.update_joint_state("arm", BARE + ("fr3_finger_joint1",), list(HOME) + [0.04], t)
    core.activate(t)
    grip = [o for o in core.tick(t) if isinstance(o, PositionOut)]
    assert [o.positions.tolist() for o in grip] == [[pytest.approx(0.04)]]
    # ... and keeps it open on later ticks until a chunk says otherwise
    core.update_joint_state("arm", BARE + ("fr3_finger_joint1",), list(HOME) + [0.04], t + 1.0)
    later = [o.positions.tolist() for o in core.tick(t + 1.0) if isinstance(o, PositionOut)]
    assert later in ([], [[pytest.approx(0.04)]])


def test_forward_stream_follows_the_plan_within_limits(fr3_forward):
    spec, _ = fr3_forward
    now = 100.0
    core = _core(fr3_forward, now)
    assert core.command_rate_hz == 100.0
    assert core.submit_chunk(_joint_chunk(now, _ramp(HOME, 0, 0.5, steps=10)), now).accepted
    lim = spec.arms[0].limits
    dt = 0.01
    prev_q, prev_v = HOME.copy(), np.zeros(7)
    positions = []
    for k in range(150):
        t = now + k * dt
        _fresh(core, t)
        (cmd,) = [o for o in core.tick(t) if o.topic == "forward_position_controller/commands"]
        q = cmd.positions
        v = (q - prev_q) / dt
        assert np.all(np.abs(v) <= lim.velocity_rad_s + 1e-9)
        assert np.all(np.abs(v - prev_v) <= lim.acceleration_rad_s2 * dt + 1e-9)
        positions.append(q[0])
        prev_q, prev_v = q, v
    # It reaches the chunk's last target (0.5 rad/s * 0.9 s) and holds it from the first command
    # period after the plan ends (the chunk stream stopped: hold, never extrapolate).
    assert positions[-1] == pytest.approx(0.45, abs=1e-6)
    end = core.scheduler.plan.end_time_s
    first_after = int(np.ceil((end - now) / dt - 1e-9))
    assert first_after < 149
    assert np.allclose(positions[first_after:], 0.45, atol=1e-6)
    assert core.scheduler.sample(now + 0.5)[0][0] == pytest.approx(positions[50], abs=2e-3)


def test_forward_stream_never_runs_past_the_plans_rest_after_stalled_ticks(fr3_forward):
    # The node's timer under load: most ticks 5-15 ms apart, 20 % stalled by up to 110 ms more.
    # The command falls behind the plan in a stall and must catch up without passing the final
    # target (0.25 rad), which the plan approaches decelerating. Before the fix: up to 30 mrad past
    # it (the step's velocity after a stall was taken as step / (clipped dt), and a lagging command
    # chased the target without regard to where the target stops).
    spec, _ = fr3_forward
    lim = spec.arms[0].limits
    worst = 0.0
    for seed in range(12):
        rng = np.random.default_rng(seed)
        now = 100.0
        core = _core(fr3_forward, now)
        assert core.submit_chunk(_joint_chunk(now, _ramp(HOME, 0, 0.5, steps=6)), now).accepted
        t, q_prev, v_prev = now, HOME.copy(), np.zeros(7)
        for _ in range(250):
            dt = 0.01 + rng.uniform(-0.005, 0.005) + (rng.uniform(0.0, 0.11) if rng.random() < 0.2 else 0.0)
            t += dt
            _fresh(core, t)
            (cmd,) = [o for o in core.tick(t) if o.topic == "forward_position_controller/commands"]
            q = np.asarray(cmd.positions)
            worst = max(worst, q[0] - 0.25)
            # within the limits over the true time between commands (a stall only slows it)
            v = (q - q_prev) / dt
            assert np.all(np.abs(v) <= lim.velocity_rad_s + 1e-9)
            q_prev, v_prev = q, v
        assert q[0] == pytest.approx(0.25, abs=1e-9)
    assert worst <= 1e-9


def test_aloha_two_arms_two_command_topics():
    spec = load_embodiment("aloha")
    kin = RobotKinematics.from_embodiment(spec)
    core = ControllerCore(spec, kin)
    now = 5.0
    arm_joints = spec.arms[0].joint_names
    q_arm = np.array(spec.arms[0].home_rad)
    for arm in spec.arms:
        core.update_joint_state(arm.name, arm_joints + ("gripper",), list(q_arm) + [1.0], now)
    core.activate(now)
    names = action_names(spec, "joint_position")
    row = np.concatenate([q_arm, [1.0], q_arm, [0.0]])
    rows = np.tile(row, (10, 1))
    rows[:, 0] += 0.004 * np.arange(10)  # left waist moves 0.2 rad/s at 50 Hz
    decision = core.submit_chunk(ActionChunk(names, rows, 0.02, now), now)
    assert decision.accepted, decision.reason
    outs = core.tick(now)
    trajs = {o.topic: o for o in _trajectories(outs)}
    assert set(trajs) == {"follower_left/arm_controller/joint_trajectory", "follower_right/arm_controller/joint_trajectory"}
    for o in trajs.values():
        assert o.joint_names == arm_joints
        assert validate_trajectory(_as_jtc(o), arm_joints, now_s=now) is None
    grippers = {o.topic: o.positions[0] for o in outs if isinstance(o, PositionOut)}
    assert grippers == {"follower_left/gripper_controller/commands": pytest.approx(1.6214),
                        "follower_right/gripper_controller/commands": pytest.approx(0.6197)}
    # Only the left waist moves.
    assert trajs["follower_right/arm_controller/joint_trajectory"].positions_rad == pytest.approx(
        np.tile(q_arm, (len(trajs["follower_right/arm_controller/joint_trajectory"].positions_rad), 1)))


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="max_chunk_age_s must be a positive number"):
        ControllerConfig(max_chunk_age_s=0.0)
    with pytest.raises(ValueError, match="max_blend_s"):
        ControllerConfig(blend_s=0.5, max_blend_s=0.2)


def test_a_default_jtc_executes_exactly_the_plan_across_chunk_seams(fr3):
    """Closed loop with core/jtc.py's JointTrajectoryController at 1 kHz (perfect tracking): every
    trajectory the controller sends is accepted, and what the JTC interpolates is the plan."""
    from vla_ros.core.jtc import JointTrajectoryController

    spec = fr3[0]
    now = 100.0
    core = _core(fr3, now)
    jtc = JointTrajectoryController(BARE)
    jtc.hold(HOME)
    state_q, state_v = HOME.copy(), np.zeros(7)
    # Joint 7 (the flange rotation: the tool stays put, whatever the angle).
    chunks = {0.0: _ramp(HOME, 6, -0.3, steps=10), 0.35: None, 0.7: None}
    worst, peak_v = 0.0, np.zeros(7)
    plans = []
    for k in range(2800):
        t = now + k * 0.001
        core.update_joint_state("arm", BARE, state_q, t)
        rel = round(t - now, 3)
        if rel in chunks:
            # Each new chunk continues the ramp from where the plan says joint 7 is, faster, so the
            # seam has real work to do.
            start = core.scheduler.sample(t)[0] if rel > 0 else HOME
            rows = chunks[rel] if chunks[rel] is not None else _ramp(start, 6, -(0.3 + rel), steps=10)
            assert core.submit_chunk(_joint_chunk(t, rows), t).accepted
        if k % 10 == 0 or rel in chunks:
            for out in _trajectories(core.tick(t, stream=rel not in chunks)):
                assert jtc.receive(_as_jtc(out), t) is None
                plans.append(core.scheduler.plan)
        # Perfect tracking: the measured state at t is the previous desired state carried one
        # cycle forward (passing the 1 ms old one would make every replan start 1 ms behind).
        desired = jtc.update(t, state_q + state_v * 0.001, state_v)
        if plans:
            worst = max(worst, float(np.max(np.abs(desired.positions - plans[-1].sample(t)[0]))))
        peak_v = np.maximum(peak_v, np.abs(desired.velocities))
        state_q, state_v = desired.positions, desired.velocities
    assert worst < 1e-4
    assert np.all(peak_v <= spec.arms[0].limits.velocity_rad_s)
    # It ends at rest on the last chunk's last target.
    assert state_q[6] == pytest.approx(core.scheduler.plan.final_position_rad[6], abs=1e-9)
    assert state_q[6] < HOME[6] - 0.5


from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    deltas=st.lists(st.lists(st.floats(-0.4, 0.4), min_size=7, max_size=7), min_size=1, max_size=12),
    latency=st.floats(0.0, 0.3),
    period=st.sampled_from([0.02, 0.05, 0.1]),
    second=st.booleans(),
    size=st.sampled_from([0.05, 0.2, 1.0]),  # about half the chunks are then accepted
)
def test_property_every_accepted_plan_is_within_limits(fr3, deltas, latency, period, second, size):
    """Random joint chunks (random walks from home, arriving late, possibly onto a running plan):
    each is refused with a reason, or its plan stays inside the margined position limits and
    within the velocity and acceleration limits from now on."""
    spec = fr3[0]
    lim = spec.arms[0].limits
    now = 50.0
    core = _core(fr3, now)
    if second:
        assert core.submit_chunk(_joint_chunk(now, _ramp(HOME, 6, -0.5, steps=8)), now).accepted
        now += 0.25
        _fresh(core, now)
    rows = HOME + np.cumsum(np.asarray(deltas) * size, axis=0) * (period / 0.1)
    v_before = core.scheduler.sample(now)[1]
    decision = core.submit_chunk(_joint_chunk(now - latency, rows, period=period), now)
    plan = core.scheduler.plan
    if not decision.accepted:
        assert decision.reason and core.last_refusal == decision.reason
        if second:
            # A stop from the running motion at the acceleration limits (10 rad/s^2 on the FR3).
            assert plan.end_time_s == pytest.approx(now + np.max(np.abs(v_before)) / 10.0, abs=1e-9)
        else:
            assert plan.sample(now + 5.0)[0] == pytest.approx(HOME, abs=1e-12)  # nothing moves
        return
    peak_v, peak_a = plan.peak_rates(from_s=now)
    assert np.all(peak_v <= lim.velocity_rad_s * (1 + 1e-9))
    assert np.all(peak_a <= lim.acceleration_rad_s2 * (1 + 1e-9))
    ts = np.linspace(now, plan.end_time_s, 400)
    q = plan.sample(ts)[0]
    assert np.all(q >= lim.lower_rad + 0.05 - 1e-9) and np.all(q <= lim.upper_rad - 0.05 + 1e-9)
    lo, hi = plan.position_range(from_s=now)  # exact, between the samples too
    assert np.all(lo >= lim.lower_rad + 0.05 - 1e-9) and np.all(hi <= lim.upper_rad - 0.05 + 1e-9)


@pytest.mark.parametrize("stamp, now", [(0.57, 0.67), (1.29, 1.59), (3.58, 3.68)])
def test_window_ending_a_hair_before_the_horizon_keeps_distinct_point_times(fr3, stamp, now):
    # Found end to end (sim rejected "time_from_start of points 6 and 7 is not strictly increasing
    # (0.5 s, 0.5 s)"): at these times the knot `t - now` is 0.4999999999999998 s, float noise short of
    # the 0.5 s horizon, and the hold pad at exactly 0.5 s collapsed onto it in whole nanoseconds.
    core = _core(fr3, stamp)
    assert core.submit_chunk(_joint_chunk(stamp, _ramp(HOME, 0, 0.3, steps=11)), stamp).accepted
    _fresh(core, now)
    (out,) = _trajectories(core.tick(now))
    ns = np.round(np.asarray(out.time_from_start_s) * 1e9).astype(np.int64)  # as a ROS Duration carries it
    assert np.all(np.diff(ns) > 0), out.time_from_start_s
    assert out.time_from_start_s[-1] >= core.config.horizon_s
    assert validate_trajectory(_as_jtc(out), BARE, now_s=now) is None


def _ticks(core, times):
    """(time, trajectory) for every trajectory the core sends on ticks at `times`."""
    sent = []
    for t in times:
        core.update_joint_state("arm", BARE, HOME, t)
        sent += [(t, o) for o in _trajectories(core.tick(t))]
    return sent


def test_a_plan_running_out_sends_no_redundant_at_rest_trajectory(fr3):
    """The windows sent while the plan runs already end at rest on its last target, which a JTC
    then holds; a one-point 'start now' trajectory on top would restart from the measured state."""
    now = 100.0
    core = _core(fr3, now, horizon_s=0.3)
    rows = _ramp(HOME, 0, 0.3)
    assert core.submit_chunk(_joint_chunk(now, rows), now).accepted
    end = core.scheduler.plan.end_time_s
    # Replan ticks every 0.05 s, one of them within a command period (0.01 s) of the plan's end.
    times = end - 0.005 + 0.05 * np.arange(-int((end - now) / 0.05), 20)
    assert core.command_rate_hz == 100.0 and times[0] >= now
    sent = _ticks(core, times)
    assert sent and all(o.stamp_s > 0.0 for _, o in sent)  # windows only, no stamp-0 hold
    last_t, last = sent[-1]
    assert last_t + last.time_from_start_s[-1] >= end - 1e-9
    np.testing.assert_array_equal(last.positions_rad[-1], core.scheduler.plan.final_position_rad)
    assert last.velocities_rad_s[-1].tolist() == [0.0] * 7
    assert last.positions_rad[-1][0] == pytest.approx(rows[-1][0], abs=1e-12)


def test_a_plan_running_out_after_a_stalled_tick_sends_the_at_rest_trajectory(fr3):
    """When the last window ended before the plan did (the ticks stalled), the final hold is sent.
    (Windows reach the plan's end once it is within horizon + the longest stop, 0.3 + 0.526 s:
    the ticks stall before that.)"""
    now = 100.0
    core = _core(fr3, now, horizon_s=0.3)
    assert core.submit_chunk(_joint_chunk(now, _ramp(HOME, 0, 0.3, steps=25)), now).accepted
    end = core.scheduler.plan.end_time_s
    _ticks(core, np.arange(now, end - 1.0, 0.05))
    core.update_joint_state("arm", BARE, HOME, end - 0.01)
    rest = _trajectories(core.tick(end - 0.01))
    assert len(rest) == 1 and rest[0].stamp_s == 0.0 and len(rest[0].positions_rad) == 1
    np.testing.assert_array_equal(rest[0].positions_rad[0], core.scheduler.plan.final_position_rad)
    assert rest[0].velocities_rad_s[0].tolist() == [0.0] * 7


# --------------------------------------------------------------------------- adversarial bounds, clock, threads

WALL = 1_796_400_000.123456  # a wall-clock instant (2026): float64 resolves it to ~0.24 us only


def test_wall_clock_reproducer_100ns_period_is_refused_with_a_reason(fr3):
    # Issue 11's first reproducer: 10 identical points 100 ns apart, stamp = now (it crashed).
    core = _core(fr3, now=WALL)
    assert core.clock_origin_s == math.floor(WALL)
    chunk = _joint_chunk(WALL, np.tile(HOME, (10, 1)), period=1e-7)
    decision = core.submit_chunk(chunk, WALL)
    assert not decision.accepted and "period 1e-07 s is outside [0.01, 1] s" in decision.reason
    assert core.state(WALL + 0.01) == HOLDING


def test_wall_clock_plan_resolves_short_periods(fr3):
    # Relative to the origin, knots 10 ms apart (the minimum period) at ~1.8e9 s are exact to far
    # below a nanosecond, and the window's times come out as sent.
    core = _core(fr3, now=WALL, min_chunk_period_s=0.001)
    decision = core.submit_chunk(_joint_chunk(WALL, _ramp(HOME, 0, 0.2, steps=20, period=0.001), period=0.001), WALL)
    assert decision.accepted, decision.reason
    plan = core.scheduler.plan
    assert np.all(np.diff(plan.times_s) > 1e-4) and plan.times_s[0] < 10.0  # plan clock, not 1.8e9
    out = [o for o in core.tick(WALL + 0.001, stream=False) if isinstance(o, TrajectoryOut)]
    assert out and out[0].stamp_s == WALL + 0.001
    assert core.to_clock(plan.end_time_s) == math.floor(WALL) + plan.end_time_s


def test_reproducer_2_pow_31_second_step_is_refused(fr3):
    # Issue 11's second reproducer: 2 points, the second (2^31 - 1) s + 999999999 ns later.
    core = _core(fr3, now=WALL)
    chunk = _joint_chunk(WALL + 0.05, np.tile(HOME, (2, 1)), period=2147483647.999999999)
    decision = core.submit_chunk(chunk, WALL)
    assert not decision.accepted and "period 2.14748365e+09 s is outside" in decision.reason


def test_chunk_size_period_and_duration_bounds(fr3):
    core = _core(fr3, max_chunk_points=50, max_chunk_duration_s=2.0)
    now = 100.0
    assert core.min_chunk_period_s == pytest.approx(0.01) and core.max_chunk_period_s == pytest.approx(1.0)
    d = core.submit_chunk(_joint_chunk(now, np.tile(HOME, (51, 1))), now)
    assert not d.accepted and d.reason == "chunk has 51 points > max_chunk_points 50"
    d = core.submit_chunk(_joint_chunk(now, np.tile(HOME, (2, 1)), period=1.5), now)
    assert not d.accepted and "outside [0.01, 1] s" in d.reason
    d = core.submit_chunk(_joint_chunk(now, np.tile(HOME, (30, 1)), period=0.1), now)  # 2.9 s
    assert not d.accepted and d.reason == "chunk lasts 2.9 s > max_chunk_duration_s 2.0"
    d = core.submit_chunk(_joint_chunk(now, np.tile(HOME, (20, 1)), period=0.1), now)  # 1.9 s: fine
    assert d.accepted, d.reason
    assert core.chunks_refused == 3
    with pytest.raises(ValueError, match="max_chunk_points"):
        ControllerConfig(max_chunk_points=0)
    with pytest.raises(ValueError, match="min_chunk_period_s"):
        ControllerConfig(min_chunk_period_s=0.5, max_chunk_period_s=0.1)


def test_every_window_ends_in_a_feasible_stop(fr3):
    # Joint 7 cruising at 2 rad/s (a 3 s ramp), windows every 0.05 s: each one, run to its end by
    # a JTC (the controller fell silent), stays within velocity, acceleration and position limits.
    core = _core(fr3)
    now = 100.0
    rows = _ramp(HOME, 6, 2.0, steps=31)
    rows[:, 6] = np.minimum(rows[:, 6], 2.9)  # stays inside the limit 3.0159 - 0.05 margin
    assert core.submit_chunk(_joint_chunk(now, rows), now).accepted
    vmax, amax = core.limits.velocity_rad_s, core.limits.acceleration_rad_s2
    checked = 0
    for k in range(60):
        t = now + 0.05 * k
        core.update_joint_state("arm", BARE, core.scheduler.sample(t)[0], t)
        for out in core.tick(t):
            if not isinstance(out, TrajectoryOut) or len(out.time_from_start_s) < 2:
                continue
            from vla_ros.core.scheduler import Plan

            plan = Plan(out.time_from_start_s, out.positions_rad, out.velocities_rad_s)
            peak_v, peak_a = plan.peak_rates()
            lo, hi = plan.position_range()
            assert np.all(peak_v <= vmax + 1e-9) and np.all(peak_a <= amax * (1 + 1e-9)), (k, peak_a)
            assert np.all(lo >= core.limits.lower_rad) and np.all(hi <= core.limits.upper_rad)
            checked += 1
    assert checked > 20


def test_start_lead_follows_the_measured_command_delay(fr3):
    core = _core(fr3)
    assert core.start_lead_s == pytest.approx(0.01)  # one command period until something is measured
    for d in np.linspace(0.001, 0.02, 100):
        core.record_command_delay(d)
    p99 = float(np.quantile(np.linspace(0.001, 0.02, 100), 0.99))
    assert core.start_lead_s == pytest.approx(1.25 * p99 + 1e-3)
    core.record_command_delay(float("nan"))  # ignored
    for _ in range(200):
        core.record_command_delay(3.0)
    assert core.start_lead_s == pytest.approx(0.1)  # max_start_lead_s
    now = 100.0
    assert core.submit_chunk(_joint_chunk(now, _ramp(HOME, 0, 0.3)), now).accepted
    # The plan is the hold until the take-over, 0.1 s ahead.
    assert core.scheduler.sample(now + 0.099)[0] == pytest.approx(HOME, abs=1e-12)
    out = [o for o in core.tick(now, stream=False) if isinstance(o, TrajectoryOut)][0]
    assert out.time_from_start_s[0] == pytest.approx(0.1)


def test_decision_is_not_applied_when_an_estop_came_meanwhile(fr3):
    core = _core(fr3)
    now = 100.0
    chunk = _joint_chunk(now, _ramp(HOME, 0, 0.3))
    snapshot = core.begin_chunk(chunk, now)
    prepared = core.prepare_chunk(snapshot, chunk)
    core.estop(now + 0.001)
    d = core.finish_chunk(prepared, now + 0.002)
    assert not d.accepted and "e-stop is latched" in d.reason
    core.release_estop(now + 0.003)
    d = core.finish_chunk(prepared, now + 0.004)
    assert not d.accepted and "the plan changed while the chunk was being decided" in d.reason
    # Too late for its take-over time: None (decide again).
    snapshot = core.begin_chunk(chunk, now + 0.005)
    prepared = core.prepare_chunk(snapshot, chunk)
    assert core.finish_chunk(prepared, now + 0.005 + 0.011) is None
    assert core.finish_chunk(prepared, now + 0.005 + 0.009).accepted


def test_decide_chunk_retries_a_late_decision_with_a_longer_lead(fr3):
    import threading

    core = _core(fr3)
    clock = iter(100.0 + 0.03 * np.arange(100))  # every clock read 30 ms later: slow decisions
    d = core.decide_chunk(_joint_chunk(100.0, _ramp(HOME, 0, 0.3)), lambda: float(next(clock)), threading.RLock())
    assert d.accepted, d.reason  # first attempt late (lead 10 ms < 30 ms), second with 60 ms more


def test_joint_states_outside_the_limits_are_not_a_position(fr3):
    core = _core(fr3)
    q = HOME.copy()
    q[3] = 50.0
    core.update_joint_state("arm", BARE, q, 100.01)
    assert core.state(100.02) == FAULT
    assert "fr3_joint4 (at 50.000 rad, outside its limits)" in core.status(100.02).message
    d = core.submit_chunk(_joint_chunk(100.02, _ramp(HOME, 0, 0.3)), 100.02)
    assert not d.accepted and "outside its limits" in d.reason
