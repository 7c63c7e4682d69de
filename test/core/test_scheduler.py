"""ChunkScheduler / Plan: Hermite evaluation, tangents, dropping past steps, latency compensation,
seam continuity, hold at the end, stopping, and the trajectory window a JTC accepts."""

import math

import numpy as np
import pytest

from vla_ros.core.jtc import TrajectoryCommand, TrajectoryPoint, validate_trajectory
from vla_ros.core.scheduler import ChunkScheduler, Plan, merge_chunk, monotone_tangents, stopping_plan


def test_hermite_segment_hand_computed():
    # 0 -> 1 in 1 s from rest to rest: q(0.5) = 0.5, peak velocity 1.5, acceleration +-6 at the ends.
    plan = Plan(np.array([0.0, 1.0]), np.array([[0.0], [1.0]]), np.zeros((2, 1)))
    q, v = plan.sample(0.5)
    assert q[0] == pytest.approx(0.5) and v[0] == pytest.approx(1.5)
    assert plan.acceleration(0.0)[0] == pytest.approx(6.0) and plan.acceleration(1.0 - 1e-12)[0] == pytest.approx(-6.0)
    q, v = plan.sample(0.25)  # 3 s^2 - 2 s^3 at s = 0.25
    assert q[0] == pytest.approx(3 * 0.0625 - 2 * 0.015625)
    peak_v, peak_a = plan.peak_rates()
    assert peak_v[0] == pytest.approx(1.5) and peak_a[0] == pytest.approx(6.0)


def test_plan_holds_before_and_after_its_knots():
    plan = Plan(np.array([1.0, 2.0]), np.array([[0.0, 1.0], [2.0, 3.0]]), np.array([[1.0, 0.0], [0.0, 0.0]]))
    q, v = plan.sample(np.array([0.0, 5.0, 100.0]))
    assert q.tolist() == [[0.0, 1.0], [2.0, 3.0], [2.0, 3.0]]
    assert np.all(v == 0.0)


def test_plan_rejects_bad_shapes_and_moving_end():
    with pytest.raises(ValueError, match="must end at rest"):
        Plan(np.array([0.0, 1.0]), np.zeros((2, 1)), np.ones((2, 1)))
    with pytest.raises(ValueError, match="strictly increasing"):
        Plan(np.array([0.0, 0.0]), np.zeros((2, 1)), np.zeros((2, 1)))
    with pytest.raises(ValueError, match="shapes disagree"):
        Plan(np.array([0.0, 1.0]), np.zeros((2, 2)), np.zeros((2, 1)))


def test_monotone_tangents_hand_computed():
    m = monotone_tangents(np.array([0.0, 1.0, 2.0, 3.0]), np.array([[0.0], [1.0], [1.0], [2.0]]))
    assert m[:, 0].tolist() == [1.0, 0.0, 0.0, 0.0]  # flat secant next to knots 1, 2 -> zero tangent
    m = monotone_tangents(np.array([0.0, 1.0, 2.0]), np.array([[0.0], [1.0], [3.0]]))
    assert m[1, 0] == pytest.approx(1.5)  # Catmull-Rom (3 - 0) / 2, within 3 * min(1, 2)
    m = monotone_tangents(np.array([0.0, 1.0, 2.0]), np.array([[0.0], [0.1], [3.0]]))
    assert m[1, 0] == pytest.approx(0.3)  # Catmull-Rom 1.5 capped at 3 * 0.1


def test_chunk_curve_never_overshoots_its_targets():
    rng = np.random.default_rng(0)
    t = np.arange(12) * 0.1
    q = np.cumsum(rng.normal(size=(12, 3)) * 0.05, axis=0)
    m = monotone_tangents(t, q)
    m[-1] = 0.0
    plan = Plan(t, q, m)
    ts = np.linspace(0.0, t[-1], 2000)
    qs, _ = plan.sample(ts)
    k = np.clip(np.searchsorted(t, ts, side="right") - 1, 0, len(t) - 2)
    lo = np.minimum(q[k], q[k + 1]) - 1e-12
    hi = np.maximum(q[k], q[k + 1]) + 1e-12
    assert np.all(qs >= lo) and np.all(qs <= hi)


def _ramp(stamp, steps, period, slope, offset=0.0):
    times = stamp + period * np.arange(steps)
    return times, (offset + slope * (times - 0.0))[:, None]


def test_past_steps_are_dropped_keeping_one():
    hold = Plan.hold([0.0], 0.0)
    times = np.arange(8) * 0.1
    result = merge_chunk(hold, times, np.zeros((8, 1)), now_s=0.25, blend_s=0.1)
    assert result.dropped_steps == 2 and result.first_step == 2  # steps 0, 1 dropped, 2 kept (t=0.2 < 0.25)
    result = merge_chunk(hold, times, np.zeros((8, 1)), now_s=0.0 - 1e-3, blend_s=0.1)
    assert result.dropped_steps == 0 and result.first_step == 0


def test_latency_compensation_follows_the_chunk_at_absolute_times():
    # A ramp q(t) = t (rad, t in s) stamped 0.25 s before now; the old plan already sits on it.
    now = 10.0
    stamp = now - 0.25
    times = stamp + 0.1 * np.arange(10)
    q = (times - stamp)[:, None] * 1.0
    old = Plan(np.array([now - 1.0, now + 1.0]), np.array([[-0.75], [1.25]]), np.array([[1.0], [0.0]]))
    result = merge_chunk(old, times, q, now_s=now, blend_s=0.1)
    # After the blend the plan is the chunk's curve: the value due at each absolute time, not
    # the chunk's first step at `now`.
    for t in (now + 0.12, now + 0.3, now + 0.55):
        assert result.plan.sample(t)[0][0] == pytest.approx(t - stamp, abs=1e-12)
        assert result.plan.sample(t)[1][0] == pytest.approx(1.0, abs=1e-12)


def test_seam_is_continuous_in_position_and_velocity_with_hand_bounded_acceleration():
    # Old plan: ramp at 1 rad/s.  New chunk: same ramp but 0.02 rad ahead (a slightly different
    # prediction).  Smoothstep blend over B = 0.2 s adds at most 1.5 * 0.02 / 0.2 = 0.15 rad/s and
    # 6 * 0.02 / 0.2^2 = 3 rad/s^2.
    period, now, delta, blend = 0.1, 1.03, 0.02, 0.2
    t1 = np.arange(20) * period
    sched = ChunkScheduler(1, blend_s=blend)
    sched.hold([0.0], -1.0)
    first = sched.propose(t1, t1[:, None] * 1.0, now_s=0.0)
    sched.commit(first.plan)
    q_before, v_before = sched.sample(now)
    t2 = 1.0 + np.arange(20) * period
    merged = sched.propose(t2, t2[:, None] * 1.0 + delta, now_s=now)
    q_after, v_after = merged.plan.sample(now)
    assert q_after == pytest.approx(q_before, abs=1e-12) and v_after == pytest.approx(v_before, abs=1e-12)

    dt = 0.002
    ts = np.arange(now - 0.1, now + blend + 0.1, dt)
    qs = np.where(ts[:, None] < now, sched.plan.sample(ts)[0], merged.plan.sample(ts)[0])[:, 0]
    steps = np.diff(qs)
    acc = np.diff(qs, 2) / dt**2
    assert np.max(np.abs(steps)) <= (1.0 + 1.5 * delta / blend) * dt * 1.02
    assert np.max(np.abs(acc)) <= 6 * delta / blend**2 * 1.05
    # After the blend the plan is the new chunk exactly.
    t = now + blend + 0.05
    assert merged.plan.sample(t)[0][0] == pytest.approx(t + delta, abs=1e-12)


def test_seam_between_consistent_chunks_is_no_rougher_than_a_chunk():
    # Two chunks sampled from the same smooth motion, the second 0.3 s later: the seam's maximum
    # step and acceleration are no worse than inside the first chunk.
    f = lambda t: 0.3 * np.sin(2 * np.pi * 0.5 * t)  # noqa: E731
    period, now = 0.1, 0.33
    sched = ChunkScheduler(1, blend_s=0.1)
    sched.hold([0.0], -1.0)
    t1 = np.arange(16) * period
    sched.commit(sched.propose(t1, f(t1)[:, None], now_s=0.0).plan)
    inside = sched.plan
    t2 = 0.3 + np.arange(16) * period
    merged = sched.propose(t2, f(t2)[:, None], now_s=now).plan
    dt = 0.002

    def roughness(plan, t0, t1_):
        ts = np.arange(t0, t1_, dt)
        qs = plan.sample(ts)[0][:, 0]
        return np.max(np.abs(np.diff(qs))), np.max(np.abs(np.diff(qs, 2))) / dt**2

    step_in, acc_in = roughness(inside, 0.1, 1.2)
    ts = np.arange(now - 0.05, now + 0.2, dt)
    qs = np.where(ts < now, inside.sample(ts)[0][:, 0], merged.sample(ts)[0][:, 0])
    assert np.max(np.abs(np.diff(qs))) <= step_in * 1.001
    assert np.max(np.abs(np.diff(qs, 2))) / dt**2 <= acc_in * 1.001


def test_plan_holds_last_target_at_rest_and_never_extrapolates():
    sched = ChunkScheduler(2, blend_s=0.1, acceleration_limits=np.array([10.0, 10.0]))
    sched.hold([0.0, 0.0], 0.0)
    times = np.arange(6) * 0.1
    q = np.stack([times * 1.0, -times * 0.5], axis=1)  # moving until the last step
    plan = sched.propose(times, q, now_s=0.0).plan
    sched.commit(plan)
    late = plan.end_time_s + np.array([0.0, 0.5, 10.0])
    qs, vs = plan.sample(late)
    assert np.all(qs == q[-1]) and np.all(vs == 0.0)
    # Stopping on the last target respects the acceleration limits: the last segment (1 rad/s to
    # rest, which would need 4 * 1 / 0.1 = 40 rad/s^2 in 0.1 s) is stretched.
    last = np.linspace(plan.times_s[-2], plan.end_time_s - 1e-9, 200)
    assert np.max(np.abs(plan.acceleration(last))) <= 10.0 + 1e-6
    assert plan.end_time_s > times[-1]
    assert not sched.is_moving(plan.end_time_s + 0.01)


def test_stopping_plan_hand_computed():
    plan = stopping_plan([0.0, 1.0], [1.0, -0.5], now_s=2.0, acceleration_limits=np.array([10.0, 2.0]))
    # Joint 2 needs 0.5 / 2 = 0.25 s; both stop together, at constant deceleration v / T.
    assert plan.end_time_s == pytest.approx(2.25)
    assert plan.final_position_rad.tolist() == pytest.approx([0.125, 1.0 - 0.0625])
    assert plan.acceleration(2.1).tolist() == pytest.approx([-4.0, 2.0])
    assert stopping_plan([0.3], [0.0], 1.0, np.array([1.0])).times_s.tolist() == [1.0]


def test_window_is_accepted_by_a_default_jtc_and_matches_the_plan():
    sched = ChunkScheduler(2, blend_s=0.1, acceleration_limits=np.array([10.0, 10.0]))
    sched.hold([0.0, 0.0], 0.0)
    times = np.arange(10) * 0.1
    q = np.stack([0.3 * np.sin(times), 0.1 * times], axis=1)
    sched.commit(sched.propose(times, q, now_s=0.0).plan)
    now = 0.05
    win = sched.plan.window(now, lead_s=0.01, horizon_s=0.35)
    assert win.times_s[0] == pytest.approx(now + 0.01)
    assert win.times_s[-1] >= now + 0.35 and win.times_s[-2] < now + 0.35
    assert win.sample(now + 0.2)[0] == pytest.approx(sched.sample(now + 0.2)[0], abs=1e-12)
    command = TrajectoryCommand(
        joint_names=("j1", "j2"),
        points=tuple(TrajectoryPoint(t - now, tuple(p), tuple(v))
                     for t, p, v in zip(win.times_s, win.positions_rad, win.velocities_rad_s)),
        stamp_s=now,
    )
    assert validate_trajectory(command, ("j1", "j2"), now_s=now + 0.001) is None


def test_scheduler_needs_an_initial_hold():
    sched = ChunkScheduler(1)
    with pytest.raises(RuntimeError, match="call hold"):
        sched.propose(np.array([0.0]), np.zeros((1, 1)), 0.0)
    with pytest.raises(ValueError, match="chunk targets must be"):
        sched.hold([0.0], 0.0)
        sched.propose(np.array([0.0]), np.zeros((1, 2)), 0.0)


def test_single_step_chunk_moves_to_it_and_holds():
    sched = ChunkScheduler(1, blend_s=0.2)
    sched.hold([0.0], 0.0)
    plan = sched.propose(np.array([0.0]), np.array([[0.1]]), now_s=0.05).plan
    assert plan.sample(0.05)[0][0] == pytest.approx(0.0)
    assert plan.sample(0.25)[0][0] == pytest.approx(0.1) and plan.sample(0.25)[1][0] == 0.0
    assert math.isclose(plan.sample(5.0)[0][0], 0.1)


def test_common_final_stretch_does_not_overshoot_a_joint_with_little_left():
    # Found end to end on ALOHA (50 Hz chunk, waist 0.3 rad/s and wrist_rotate 0.4 rad/s ramps): the
    # final segment is stretched for the joint that needs the longest stop (wrist_rotate), and the
    # waist, with only 6 mrad left, ran ~2.5 mrad past its last target on that stretched cubic.
    from vla_ros.core.scheduler import chunk_curve

    period, steps = 0.02, 51
    t = 10.0 + period * np.arange(steps)
    s = np.linspace(0.0, 1.0, steps)[:, None]
    q = s * np.array([[0.3, 0.4]])
    accel = np.array([10.0, 10.0])
    hold = Plan.hold(np.zeros(2), 10.0)
    plan, _ = chunk_curve(hold, t, q, now_s=10.0, acceleration_limits=accel)
    ts = np.linspace(10.0, plan.end_time_s + 0.1, 20001)
    qs = plan.sample(ts)[0]
    assert qs[:, 0].max() <= 0.3 + 1e-12 and qs[:, 1].max() <= 0.4 + 1e-12
    assert np.all(plan.peak_rates(from_s=t[-2])[1] <= accel + 1e-9)  # the stop (the start is the blend's job)
    np.testing.assert_allclose(plan.final_position_rad, [0.3, 0.4])
    # The waist stops by constant deceleration from 0.3 rad/s: 0.3^2 / (2 * 0.006) = 7.5 rad/s^2, and
    # wrist_rotate's motion is exactly the single-joint plan's.
    alone, _ = chunk_curve(Plan.hold(np.zeros(1), 10.0), t, q[:, 1:], now_s=10.0, acceleration_limits=accel[1:])
    np.testing.assert_allclose(qs[:, 1], alone.sample(ts)[0][:, 0], atol=1e-12)
    t_last = t[-2] + 1e-4
    assert plan.acceleration(t_last)[0] == pytest.approx(-7.5, rel=1e-6)


def test_a_chunk_ending_too_fast_to_stop_on_target_keeps_the_bounded_stop():
    # 6 rad/s with 0.3 rad left needs 60 rad/s^2 to stop on the target: the stretched cubic (within
    # the limit) is kept, overshooting as little as it must; the stop stays within 10 rad/s^2.
    from vla_ros.core.scheduler import chunk_curve

    t = np.array([0.0, 0.05, 0.1])
    q = np.array([[0.0], [0.3], [0.6]])
    plan, _ = chunk_curve(Plan.hold(np.zeros(1), 0.0), t, q, now_s=0.0, acceleration_limits=np.array([10.0]))
    assert len(plan.times_s) == 3
    assert plan.final_position_rad[0] == 0.6


# ----------------------------------------------------------------------------- smooth chunks
from vla_ros.core.scheduler import catmull_rom_tangents, chunk_curve  # noqa: E402

W = 2 * np.pi * 0.25  # rad/s: a 0.2 rad, 0.25 Hz sine per joint, phases spread over [0, pi]
PHASES = np.linspace(0.0, np.pi, 7)


def _sine(t):
    t = np.asarray(t, dtype=float)[:, None]
    return 0.2 * np.sin(W * t + PHASES), 0.2 * W * np.cos(W * t + PHASES), -0.2 * W**2 * np.sin(W * t + PHASES)


def test_position_range_is_exact():
    rng = np.random.default_rng(3)
    for _ in range(20):
        t = np.cumsum(rng.uniform(0.02, 0.2, size=8))
        q = rng.normal(size=(8, 3))
        v = rng.normal(size=(8, 3)) * 3
        v[-1] = 0.0
        plan = Plan(t, q, v)
        for from_s in (None, float(t[2] + 0.013)):
            lo, hi = plan.position_range(from_s)
            ts = np.linspace(t[0] if from_s is None else from_s, t[-1], 200001)
            qs = plan.sample(ts)[0]
            np.testing.assert_allclose(lo, qs.min(axis=0), atol=1e-9)
            np.testing.assert_allclose(hi, qs.max(axis=0), atol=1e-9)


def test_catmull_rom_tangents_hand_computed():
    m = catmull_rom_tangents(np.array([0.0, 1.0, 2.0, 4.0]), np.array([[0.0], [1.0], [1.0], [3.0]]))
    # (1 - 0) / 1 one-sided, (1 - 0) / 2, (3 - 1) / 3, last left to the caller (0)
    np.testing.assert_allclose(m[:, 0], [1.0, 0.5, 2.0 / 3.0, 0.0])
    m = catmull_rom_tangents(np.array([0.0, 1.0, 2.0]), np.array([[0.0], [1.0], [0.0]]), start_velocity=[2.0])
    np.testing.assert_allclose(m[:, 0], [2.0, 0.0, 0.0])


def test_chunk_curve_through_a_smooth_motion_has_about_its_acceleration():
    """Samples of a sine at 10 Hz (joints turning around between steps included): the curve's
    acceleration is within 10 % of the sine's peak (|a| <= 0.2 w^2), where monotone tangents
    give several times it."""
    t = 5.0 + 0.1 * np.arange(10)
    q = _sine(t)[0]
    current = Plan.hold(q[0], 5.0)  # not used: the first kept step has a row before it
    plan, first = chunk_curve(current, t, q, now_s=5.25, acceleration_limits=np.full(7, 10.0))
    assert first == 2
    ts = np.linspace(t[2], t[-2] - 1e-9, 2001)  # up to the stop on the last target
    peak = 0.2 * W**2
    assert np.max(np.abs(plan.acceleration(ts))) < 1.1 * peak
    np.testing.assert_allclose(plan.sample(ts)[0], _sine(ts)[0], atol=2e-4)
    m = monotone_tangents(t, q)
    m[-1] = 0.0
    assert np.max(np.abs(Plan(t, q, m).acceleration(ts))) > 2.0 * peak  # what it replaces


def test_chunk_curve_falls_back_to_monotone_tangents_at_a_position_limit():
    # Turning around on the (inner) limit 0.5: Catmull-Rom would pass it between the steps.
    t = 0.1 * np.arange(7)
    q = np.array([[0.2], [0.4], [0.49], [0.5], [0.49], [0.4], [0.2]])
    hold = Plan.hold(q[0], 0.0)
    free, _ = chunk_curve(hold, t, q, now_s=0.0)
    assert free.position_range()[1][0] > 0.5 + 1e-4
    limited, _ = chunk_curve(hold, t, q, now_s=0.0, position_limits=(np.array([-1.0]), np.array([0.5])))
    assert limited.position_range()[1][0] <= 0.5 + 1e-12


def _one_ramp_chunk(blend_s: float) -> ChunkScheduler:
    """A scheduler executing one 1 rad/s ramp chunk, steps 0 .. 0.9 s (it stops on 0.9 rad)."""
    sched = ChunkScheduler(1, blend_s=blend_s, acceleration_limits=np.array([50.0]))
    sched.hold([0.0], 0.0)
    t1 = 0.1 * np.arange(10)
    sched.commit(sched.propose(t1, t1[:, None], 0.0).plan)
    return sched


@pytest.mark.parametrize("blend_s, now", [(0.1, 0.78), (0.2, 0.79)])
def test_a_new_chunk_blends_from_the_old_chunks_free_tail_not_its_stop(blend_s, now):
    """Two chunks on the same 1 rad/s ramp; the second arrives just before the first one's last
    segment (where it stops on its last step). The seam keeps exactly 1 rad/s: the blend runs
    from the first chunk's free tail, not from its stop -- with a 0.2 s blend also past the first
    chunk's last step, where the old motion goes on at its end velocity under the fading weight."""
    sched = _one_ramp_chunk(blend_s)
    assert sched.plan.sample(0.88)[1][0] < 0.9  # the first chunk alone is slowing down there
    t2 = 0.5 + 0.1 * np.arange(10)
    result = sched.propose(t2, t2[:, None], now_s=now)
    ts = np.linspace(now, 1.3, 400)
    q, v = result.plan.sample(ts)
    np.testing.assert_allclose(v[:, 0], 1.0, atol=1e-9)
    np.testing.assert_allclose(q[:, 0], ts, atol=1e-9)


def test_free_end_tangent_is_the_parabola_slope_also_through_a_turnaround():
    from vla_ros.core.scheduler import free_end_tangent

    # q = -4 t^2 + 1.4 t through (0, 0), (0.1, 0.1), (0.2, 0.12): the joint turns around at
    # t = 0.175, inside the last segment; the slope at 0.2 is -8 * 0.2 + 1.4 = -0.2.
    t = np.array([0.0, 0.1, 0.2])
    q = np.array([[0.0], [0.1], [0.12]])
    np.testing.assert_allclose(free_end_tangent(t, q), [-0.2], atol=1e-12)
    # the monotone rule (for curves kept between their steps near a limit) zeroes it
    np.testing.assert_allclose(free_end_tangent(t, q, limited=True), [0.0])


def test_a_seam_near_a_turnaround_keeps_the_motions_acceleration():
    """Found by `vla-ros bench pipeline`: a joint turning around in the old chunk's last segment
    had its free-tail velocity capped at 3x the last (tiny) secant, so the seam blended from a
    wrong motion (0.70 rad/s^2 at seams vs 0.50 within chunks on a 0.49 rad/s^2 sine)."""
    w = 2 * math.pi * 0.25
    motion = lambda t: 0.2 * np.sin(w * (np.asarray(t) + 0.03))[:, None]  # noqa: E731
    sched = ChunkScheduler(1, blend_s=0.1, acceleration_limits=np.array([10.0]))
    sched.hold(motion([0.0])[0], 0.0)
    t1 = 0.1 * np.arange(10) + 0.1
    sched.commit(sched.propose(t1, motion(t1), 0.0).plan)  # turns around at 0.97, in its last segment
    t2 = 0.533 + 0.1 * np.arange(10)  # rows at other instants than the first chunk's
    now = t1[-2] - 0.01  # just before the first chunk's last segment
    plan = sched.propose(t2, motion(t2), now).plan
    ts = np.linspace(now, now + 0.1, 201)
    assert np.max(np.abs(plan.sample(ts)[0] - motion(ts))) < 2e-5
    assert np.max(np.abs(plan.acceleration(ts))) < 0.49 * 1.05  # the sine's own peak is 0.2 w^2 = 0.49


def test_stops_of_several_joints_a_hair_apart_on_a_wall_clock_give_distinct_knots():
    # Found by `vla-ros bench pipeline` (wall-clock stamps ~1.8e9 s): two joints whose stops on
    # their last targets end 0.1 us apart gave two knots at the same float time.
    from vla_ros.core.scheduler import chunk_curve

    t0 = 1795640899.3384483
    t = t0 + 0.1 * np.arange(4)
    q = np.array([[0.0, 0.0], [0.1, 0.1], [0.2, 0.2], [0.21, 0.21 + 1e-8]])
    # Both stop on their last targets by constant deceleration (0.55^2 / (2 * 0.01) = 15 rad/s^2),
    # tau = 2 * 0.01 / 0.55 s after the third step, 36 ns apart.
    plan, _ = chunk_curve(Plan.hold(q[0], t0), t, q, now_s=t0, acceleration_limits=np.array([20.0, 20.0]))
    assert np.all(np.diff(plan.times_s) > 0.0)
    np.testing.assert_allclose(plan.final_position_rad, q[-1])
    assert np.all(plan.position_range()[1] <= q[-1] + 1e-7)
    assert len(plan.times_s) == 5  # the 3 steps kept before the stop, one stop knot, the end


def test_a_chunk_arriving_once_the_old_one_slows_down_blends_from_what_runs():
    """Past the start of the old chunk's last segment the arm already runs its stop on the last
    step: the blend starts from that (executed) motion, continuous in position and velocity."""
    sched = _one_ramp_chunk(0.1)
    old = sched.plan
    t2 = 0.5 + 0.1 * np.arange(10)
    now = 0.83
    result = sched.propose(t2, t2[:, None], now_s=now)
    np.testing.assert_allclose(result.plan.sample(now)[0], old.sample(now)[0], atol=1e-12)
    np.testing.assert_allclose(result.plan.sample(now)[1], old.sample(now)[1], atol=1e-12)
    assert abs(old.sample(now)[1][0] - 1.0) > 0.1  # its stop, not the free ramp, runs there


# --------------------------------------------------------------------------- braking tail, take-over


def test_braking_tail_together_hand_computed():
    from vla_ros.core.scheduler import braking_tail

    # Joint 0 at 2 rad/s (limit 10 rad/s^2) needs 0.2 s; joint 1 at -1 rad/s brakes with it: both
    # stop at t0 + 0.2 s, joint 0 after 2 * 0.2 / 2 = 0.2 rad, joint 1 after -0.1 rad.
    t, q, v = braking_tail(5.0, np.array([0.0, 1.0]), np.array([2.0, -1.0]), np.array([10.0, 10.0]))
    assert t.tolist() == pytest.approx([5.2])
    assert q[-1].tolist() == pytest.approx([0.2, 0.9]) and v[-1].tolist() == [0.0, 0.0]
    plan = Plan(np.concatenate([[5.0], t]), np.vstack([[0.0, 1.0], q]), np.vstack([[2.0, -1.0], v]))
    peak_v, peak_a = plan.peak_rates()
    assert peak_a.tolist() == pytest.approx([10.0, 5.0])  # a parabola: constant deceleration
    assert plan.sample(5.1)[1].tolist() == pytest.approx([1.0, -0.5])


def test_braking_tail_each_joint_at_its_own_limit_near_a_position_limit():
    from vla_ros.core.scheduler import braking_tail

    # Stopping together, joint 1 (0.5 rad/s, 0.1 s alone) would brake over 0.2 s and travel 0.05 rad
    # past its limit at 1.03; alone it needs 0.5^2 / (2 * 5) = 0.025 rad: stops at 1.025.
    lo, hi = np.array([-5.0, -5.0]), np.array([5.0, 1.03])
    t, q, v = braking_tail(0.0, np.array([0.0, 1.0]), np.array([2.0, 0.5]), np.array([10.0, 5.0]), (lo, hi))
    assert t.tolist() == pytest.approx([0.1, 0.2])
    assert q[0].tolist() == pytest.approx([2.0 * 0.1 - 2.0 * 0.01 / 0.4, 1.025])
    assert q[-1].tolist() == pytest.approx([0.2, 1.025]) and np.all(v[-1] == 0.0)
    plan = Plan(np.concatenate([[0.0], t]), np.vstack([[0.0, 1.0], q]), np.vstack([[2.0, 0.5], v]))
    lo_p, hi_p = plan.position_range()
    assert hi_p[1] == pytest.approx(1.025) and np.all(plan.peak_rates()[1] <= np.array([10.0, 5.0]) + 1e-9)


def test_braking_tail_knots_are_at_least_a_millisecond_apart():
    from vla_ros.core.scheduler import MIN_TAIL_KNOT_SPACING_S, braking_tail

    v = np.array([1.0, 1.0001, 1.0002, 0.0001])  # stop times 0.1, 0.10001, 0.10002 and 1e-5 s
    t, q, vel = braking_tail(0.0, np.zeros(4), v, np.full(4, 10.0), (np.full(4, -0.06), np.full(4, 0.06)))
    assert np.all(np.diff(np.concatenate([[0.0], t])) >= MIN_TAIL_KNOT_SPACING_S - 1e-12)
    plan = Plan(np.concatenate([[0.0], t]), np.vstack([np.zeros(4), q]), np.vstack([v, vel]))
    assert np.all(plan.peak_rates()[1] <= 10.0 + 1e-9)


def test_window_cut_mid_motion_brakes_within_the_limits():
    # 2 rad/s cruise on joint 0 (a 5 s ramp); the window is cut 0.35 s in. Without limits the
    # cut knot's velocity is zeroed (the abrupt stop of old); with them a tail brakes at 10 rad/s^2.
    acc = np.array([10.0, 10.0])
    sched = ChunkScheduler(2, blend_s=0.1, acceleration_limits=acc)
    sched.hold([0.0, 0.0], 0.0)
    times = np.arange(51) * 0.1
    q = np.stack([2.0 * times, np.zeros_like(times)], axis=1)
    sched.commit(sched.propose(times, q, now_s=0.0).plan)
    now = 1.0
    abrupt = sched.plan.window(now, 0.01, 0.35)
    assert abrupt.peak_rates(from_s=now)[1][0] > 30.0
    win = sched.plan.window(now, 0.01, 0.35, acc, (np.array([-10.0, -10.0]), np.array([20.0, 20.0])))
    cut = np.flatnonzero(win.times_s >= now + 0.35)[0]
    assert win.velocities_rad_s[cut][0] == pytest.approx(2.0)  # the plan's true velocity at the cut
    assert win.times_s[-1] == pytest.approx(win.times_s[cut] + 0.2)  # 2 rad/s / 10 rad/s^2
    peak_v, peak_a = win.peak_rates()
    assert peak_a[0] <= 10.0 + 1e-9 and peak_v[0] <= 2.0 + 1e-9
    assert win.sample(now + 0.2)[0] == pytest.approx(sched.sample(now + 0.2)[0], abs=1e-12)


def test_merge_takes_over_only_at_start_s():
    # A new chunk merged at now = 0.3 with start_s = 0.35: until 0.35 the plan is the old one exactly.
    sched = ChunkScheduler(1, blend_s=0.1, acceleration_limits=np.array([10.0]))
    sched.hold([0.0], 0.0)
    times = np.arange(11) * 0.1
    sched.commit(sched.propose(times, (0.3 * times)[:, None], now_s=0.0).plan)
    old = sched.plan
    new_times = 0.3 + np.arange(8) * 0.1
    result = sched.propose(new_times, (0.09 - 0.2 * (new_times - 0.3))[:, None], now_s=0.3, start_s=0.35)
    ts = np.linspace(0.3, 0.35, 11)
    np.testing.assert_allclose(result.plan.sample(ts)[0], old.sample(ts)[0], atol=1e-12)
    np.testing.assert_allclose(result.plan.sample(ts)[1], old.sample(ts)[1], atol=1e-12)
    assert result.plan.sample(0.5)[1][0] < old.sample(0.5)[1][0]  # then it turns to the new motion
    # The step at 0.3 is before the take-over: the newest past one, kept as the curve's first.
    assert result.dropped_steps == 0 and result.plan.times_s[0] == 0.3
    assert np.all(np.diff(result.plan.times_s) > 1e-4)


def test_window_goes_to_the_plan_end_when_it_is_near():
    # A plan ending 0.2 s after the horizon, to_end_within_s 0.3: sent whole (no tail that could
    # carry the joint past the last target); 0.1 s: cut at the horizon with a braking tail.
    acc = np.array([10.0])
    sched = ChunkScheduler(1, blend_s=0.1, acceleration_limits=acc)
    sched.hold([0.0], 0.0)
    times = np.arange(8) * 0.1
    sched.commit(sched.propose(times, (0.3 * times)[:, None], now_s=0.0).plan)
    plan = sched.plan
    whole = plan.window(0.0, 0.01, plan.end_time_s - 0.2, acc, None, to_end_within_s=0.3)
    assert whole.times_s[-1] == plan.end_time_s and whole.final_position_rad[0] == plan.final_position_rad[0]
    cut = plan.window(0.0, 0.01, plan.end_time_s - 0.35, acc, None, to_end_within_s=0.1)
    assert cut.velocities_rad_s[cut.times_s == 0.4][0, 0] == pytest.approx(0.3)  # cut at 0.4 s, moving
    assert np.all(cut.peak_rates(from_s=0.4)[1] <= 10.0 + 1e-9)  # the tail after it brakes within the limit
