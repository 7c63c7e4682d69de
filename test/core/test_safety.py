"""SafetyEnvelope: hand-computed chunk verdicts, limiter cases, and property-based limit guarantees."""

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vla_ros.core.safety import (
    ACCELERATION,
    JUMP,
    NON_FINITE,
    POSITION,
    VELOCITY,
    WORKSPACE,
    ArmFrames,
    JointLimitSet,
    SafetyConfig,
    SafetyEnvelope,
    speed_scale_for_condition,
)


def _limits(margin=0.05):
    return JointLimitSet(("a", "b"), [-1.0, -1.0], [1.0, 1.0], [1.0, 2.0], [10.0, 10.0], position_margin_rad=margin)


def _envelope(**config):
    cfg = SafetyConfig(**config)
    return SafetyEnvelope(_limits(cfg.position_margin_rad), cfg)


class PlanarTwoLink:
    """Independent reference: a planar 2R arm with unit links, analytic FK and Jacobian."""

    joint_names = ("a", "b")

    def frame_pose(self, q, frame, base=None):
        T = np.eye(4)
        T[0, 3] = math.cos(q[0]) + math.cos(q[0] + q[1])
        T[1, 3] = math.sin(q[0]) + math.sin(q[0] + q[1])
        return T

    def frame_jacobian(self, q, frame, base=None):
        s1, c1 = math.sin(q[0]), math.cos(q[0])
        s12, c12 = math.sin(q[0] + q[1]), math.cos(q[0] + q[1])
        J = np.zeros((6, 2))
        J[0] = [-s1 - s12, -s12]
        J[1] = [c1 + c12, c12]
        # No angular rows: as a positioning arm it is singular when stretched out (q2 = 0).
        return J


def _planar_envelope(**config):
    cfg = SafetyConfig(**config)
    arm = ArmFrames("arm", "base", "tool", (0, 1), [0.5, -1.0, -1.0], [2.5, 1.0, 1.0])
    lim = JointLimitSet(("a", "b"), [-3.0, -3.0], [3.0, 3.0], [1.0, 1.0], [10.0, 10.0],
                        position_margin_rad=cfg.position_margin_rad)
    return SafetyEnvelope(lim, cfg, (arm,), PlanarTwoLink())


# ----------------------------------------------------------------------------- construction
def test_limits_reject_bad_values_with_the_parameter_name():
    with pytest.raises(ValueError, match="no room between the limits of joints \\['a'\\]"):
        JointLimitSet(("a",), [0.0], [0.1], [1.0], [1.0], position_margin_rad=0.05)
    with pytest.raises(ValueError, match="velocity_rad_s must be > 0"):
        JointLimitSet(("a",), [-1.0], [1.0], [0.0], [1.0])
    with pytest.raises(ValueError, match="lower_rad must have shape \\(2,\\)"):
        JointLimitSet(("a", "b"), [-1.0], [1.0, 1.0], [1.0, 1.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="max_time_scale must be >= 1"):
        SafetyConfig(max_time_scale=0.5)
    with pytest.raises(ValueError, match="differs from the limits' margin"):
        SafetyEnvelope(_limits(0.05), SafetyConfig(position_margin_rad=0.1))


# ----------------------------------------------------------------------------- whole chunk
def test_chunk_within_limits_is_accepted_unscaled():
    verdict = _envelope().validate_chunk(np.array([[0.0, 0.0], [0.05, -0.1], [0.1, -0.2]]), 0.1)
    assert verdict.ok and verdict.violations == () and verdict.time_scale == 1.0
    assert verdict.reason == "ok"


def test_position_violation_names_step_joint_value_and_margined_limit():
    q = np.array([[0.0, 0.0], [0.0, 0.05], [0.0, 0.97]])  # 0.97 > 1 - 0.05
    verdict = _envelope(max_step_rad=2.0, max_time_scale=100.0).validate_chunk(q, 1.0)
    assert not verdict.ok
    (v,) = verdict.violations
    assert (v.kind, v.step, v.joint, v.value) == (POSITION, 2, "b", 0.97)
    assert v.limit == pytest.approx(0.95)
    assert "step 2 b" in verdict.reason and "0.9700" in verdict.reason and "0.9500" in verdict.reason


def test_non_finite_values_are_listed_and_stop_further_checks():
    q = np.array([[0.0, 0.0], [np.nan, 0.0], [0.0, np.inf]])
    verdict = _envelope().validate_chunk(q, 0.1)
    assert not verdict.ok
    assert [(v.kind, v.step, v.joint) for v in verdict.violations] == [(NON_FINITE, 1, "a"), (NON_FINITE, 2, "b")]


def test_too_fast_chunk_is_time_scaled_by_the_hand_computed_factor():
    # joint a moves 0.15 rad per 0.1 s = 1.5 rad/s against a 1 rad/s limit -> x1.5 slower.
    q = np.array([[0.0, 0.0], [0.15, 0.0], [0.30, 0.0]])
    verdict = _envelope().validate_chunk(q, 0.1)
    assert verdict.ok
    assert verdict.time_scale == pytest.approx(1.5)


def test_acceleration_can_set_the_time_scale():
    # v = [0, 0.5] rad/s, a = 5 rad/s^2: fine.  v = [0, 1] on joint b (limit 2): a = 10 -> ok at x1.
    # v = [0, 1.6] on joint b: velocity fine (limit 2), a = 16 > 10 -> sqrt(1.6) = 1.2649.
    env = _envelope()
    assert env.validate_chunk(np.array([[0.0, 0.0], [0.0, 0.0], [0.0, 0.1]]), 0.1).time_scale == 1.0
    verdict = env.validate_chunk(np.array([[0.0, 0.0], [0.0, 0.0], [0.0, 0.16]]), 0.1)
    assert verdict.ok and verdict.time_scale == pytest.approx(math.sqrt(1.6))


def test_chunk_needing_more_than_max_time_scale_is_refused_with_the_velocity_at_fault():
    q = np.array([[0.0, 0.0], [0.3, 0.0]])  # 3 rad/s needed, limit 1 x max scale 2 = 2
    verdict = _envelope().validate_chunk(q, 0.1)
    assert not verdict.ok
    (v,) = verdict.violations
    assert (v.kind, v.step, v.joint) == (VELOCITY, 1, "a")
    assert v.value == pytest.approx(3.0) and v.limit == pytest.approx(2.0)
    # With slowing disabled, even 1.5x is refused.
    strict = _envelope(max_time_scale=1.0).validate_chunk(np.array([[0.0, 0.0], [0.15, 0.0]]), 0.1)
    assert not strict.ok and strict.violations[0].kind == VELOCITY


def test_acceleration_violation_reported_beyond_max_time_scale():
    # a = 0.5 / 0.1 / 0.1 = 50 rad/s^2 > 10 * 2^2 = 40 on joint b; its velocity 5 > 4 too.
    verdict = _envelope(max_step_rad=1.0).validate_chunk(np.array([[0.0, 0.0], [0.0, 0.0], [0.0, 0.5]]), 0.1)
    kinds = {(v.kind, v.joint, v.step) for v in verdict.violations}
    assert (ACCELERATION, "b", 1) in kinds and (VELOCITY, "b", 2) in kinds
    acc = next(v for v in verdict.violations if v.kind == ACCELERATION)
    assert acc.value == pytest.approx(50.0) and acc.limit == pytest.approx(40.0)


def test_jump_limit_includes_the_step_from_the_current_command():
    env = _envelope(max_step_rad=0.2, max_time_scale=100.0)
    verdict = env.validate_chunk(np.array([[0.5, 0.0], [0.55, 0.0]]), 1.0, q_start=np.array([0.0, 0.0]))
    (v,) = verdict.violations
    assert (v.kind, v.step, v.joint) == (JUMP, 0, "a") and v.value == pytest.approx(0.5)
    verdict = env.validate_chunk(np.array([[0.0, 0.0], [0.0, -0.3]]), 1.0)
    assert [(v.kind, v.step, v.joint) for v in verdict.violations] == [(JUMP, 1, "b")]


def test_workspace_box_uses_forward_kinematics():
    env = _planar_envelope(max_time_scale=100.0, max_step_rad=3.0)
    # q = (0, 1): tool at (1 + cos 1, sin 1), inside.  q = (pi/2, 1): tool at (-sin 1, 1 + cos 1):
    # x < 0.5 and y > 1.
    verdict = env.validate_chunk(np.array([[0.0, 1.0], [math.pi / 2, 1.0]]), 10.0)
    got = {(v.kind, v.step, v.joint): (v.value, v.limit) for v in verdict.violations}
    assert set(got) == {(WORKSPACE, 1, "arm/x"), (WORKSPACE, 1, "arm/y")}
    assert got[(WORKSPACE, 1, "arm/x")] == pytest.approx((-math.sin(1.0), 0.5))
    assert got[(WORKSPACE, 1, "arm/y")] == pytest.approx((1.0 + math.cos(1.0), 1.0))


def test_reason_text_is_truncated_with_a_count():
    q = np.full((10, 2), 0.99)
    verdict = _envelope().validate_chunk(q, 0.1)
    assert len(verdict.violations) == 20
    assert verdict.reason.endswith("and 14 more")


# ----------------------------------------------------------------------------- singularities
def test_speed_scale_follows_moveit_servo_thresholds():
    assert speed_scale_for_condition(10.0) == 1.0
    assert speed_scale_for_condition(17.0) == 1.0
    assert speed_scale_for_condition(23.5) == pytest.approx(0.5)
    assert speed_scale_for_condition(30.0) == 0.0
    assert speed_scale_for_condition(float("inf")) == 0.0


def _planar_condition(q2):
    # Reference for the 2R arm: the 6x2 Jacobian's singular values, computed independently.
    J = PlanarTwoLink().frame_jacobian(np.array([0.0, q2]), "tool")
    s = np.linalg.svd(J, compute_uv=False)
    return s[0] / s[-1]


def test_singularity_slows_motion_towards_it_but_not_away():
    env = _planar_envelope()
    # Find q2 where the stretched-out singularity (q2 = 0) gives a condition number of ~23.5.
    q2 = next(x for x in np.linspace(0.5, 0.001, 20000) if _planar_condition(x) >= 23.5)
    cond = _planar_condition(q2)
    expected = (30.0 - cond) / 13.0
    q0 = np.array([0.0, q2])
    towards = env.singularity_scale(q0, q0 + [0.0, -1e-7])
    away = env.singularity_scale(q0, q0 + [0.0, 1e-7])
    assert towards == pytest.approx(expected, rel=1e-3)
    assert away == 1.0
    # The limiter applies it, conservatively with the condition number where the step would end
    # (joint b wants -1 rad/s for 0.01 s).
    step = env.limit_step(q0, np.array([0.0, -1.0]), np.array([0.0, q2 - 0.01]), 0.01, qd_target=[0.0, -1.0])
    assert step.speed_scale == pytest.approx((30.0 - _planar_condition(q2 - 0.01)) / 13.0, rel=1e-9)
    # Deceleration is bounded by the acceleration limit, so the drop is gradual.
    assert step.velocity_rad_s[1] == pytest.approx(-1.0 + 10.0 * 0.01)


# ----------------------------------------------------------------------------- streaming limiter
def test_limiter_hand_computed_cases():
    env = _envelope()
    # From rest towards a far target: acceleration-limited, v = a * dt.
    s = env.limit_step([0.0, 0.0], [0.0, 0.0], [0.5, 0.0], 0.01)
    assert s.velocity_rad_s.tolist() == pytest.approx([0.1, 0.0]) and s.position_rad[0] == pytest.approx(0.001)
    assert s.limited
    # Cruising at the velocity limit.
    s = env.limit_step([0.0, 0.0], [1.0, 0.0], [0.5, 0.0], 0.01)
    assert s.position_rad[0] == pytest.approx(0.01)
    # A target moving at 0.5 rad/s that the command is exactly on: followed without lag.
    s = env.limit_step([0.0, 0.0], [0.5, 0.0], [0.005, 0.0], 0.01, qd_target=[0.5, 0.0])
    assert s.position_rad[0] == pytest.approx(0.005, abs=1e-15) and not s.limited
    # Braking for the (margined) upper limit 0.95 from 0.9 at 1 rad/s:
    # v = -a dt + sqrt((a dt)^2 + 2 a d) = -0.1 + sqrt(0.01 + 1.0).
    s = env.limit_step([0.9, 0.0], [1.0, 0.0], [2.0, 0.0], 0.01)
    assert s.velocity_rad_s[0] == pytest.approx(-0.1 + math.sqrt(1.01))


def test_limiter_holds_on_non_finite_target_and_rejects_bad_state():
    env = _envelope()
    s = env.limit_step([0.2, 0.1], [0.0, 0.0], [np.nan, 0.5], 0.01)
    assert s.target_rejected and s.position_rad.tolist() == [0.2, 0.1]
    with pytest.raises(ValueError, match="qd_prev must be finite"):
        env.limit_step([0.0, 0.0], [np.inf, 0.0], [0.0, 0.0], 0.01)
    with pytest.raises(ValueError, match="dt_s must be a positive finite number"):
        env.limit_step([0.0, 0.0], [0.0, 0.0], [0.0, 0.0], 0.0)


def test_limiter_settles_exactly_on_a_standing_target_without_overshoot():
    env = _envelope()
    q, v = np.zeros(2), np.zeros(2)
    peak = 0.0
    for _ in range(400):
        s = env.limit_step(q, v, [0.4, -0.3], 0.01)
        q, v = s.position_rad, s.velocity_rad_s
        peak = max(peak, q[0])
    assert q == pytest.approx([0.4, -0.3], abs=1e-9) and v == pytest.approx([0.0, 0.0], abs=1e-6)
    assert peak <= 0.4 + 1e-12


_any_float = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-5.0, max_value=5.0),
    st.sampled_from([1e300, -1e300, 0.94, -0.94, 0.951, 1.5]),
)


def _check_sequence(env, targets, dt, feedforward):
    lim = env.limits
    q = np.zeros(lim.num_joints)
    v = np.zeros(lim.num_joints)
    tol = 1e-9
    for target, w in zip(targets, feedforward):
        s = env.limit_step(q, v, target, dt, qd_target=w)
        q1, v1 = s.position_rad, s.velocity_rad_s
        assert np.all(np.isfinite(q1)) and np.all(np.isfinite(v1))
        assert np.all(q1 >= lim.inner_lower_rad - tol) and np.all(q1 <= lim.inner_upper_rad + tol)
        assert np.all(np.abs(v1) <= lim.velocity_rad_s + tol)
        assert np.all(np.abs(v1 - v) <= lim.acceleration_rad_s2 * dt + tol)
        assert np.allclose(q1 - q, v1 * dt, atol=1e-12)
        q, v = q1, v1


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    targets=st.lists(st.tuples(_any_float, _any_float), min_size=1, max_size=60),
    feedforward=st.lists(st.tuples(_any_float, _any_float), min_size=60, max_size=60),
    dt=st.sampled_from([0.002, 0.004, 0.01, 0.05]),
)
def test_property_limiter_output_respects_every_limit(targets, feedforward, dt):
    _check_sequence(_envelope(), targets, dt, feedforward)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    targets=st.lists(st.tuples(_any_float, _any_float), min_size=1, max_size=40),
    dt=st.sampled_from([0.002, 0.01]),
)
def test_property_limiter_with_singularity_scaling_respects_every_limit(targets, dt):
    _check_sequence(_planar_envelope(), targets, dt, [None] * len(targets))


@settings(max_examples=100, deadline=None)
@given(
    q=st.lists(st.lists(st.one_of(st.floats(-1.0, 1.0), st.floats(-0.2, 0.2),
                                  st.floats(allow_nan=True, allow_infinity=True)), min_size=2, max_size=2),
               min_size=1, max_size=8),
    period=st.floats(min_value=0.01, max_value=1.0),
)
def test_property_accepted_chunks_respect_every_limit_at_their_scaled_period(q, period):
    env = _envelope()
    q = np.array(q)
    verdict = env.validate_chunk(q, period)
    if not verdict.ok:
        assert verdict.violations
        return
    lim = env.limits
    assert np.all(np.isfinite(q))
    assert np.all(q >= lim.inner_lower_rad) and np.all(q <= lim.inner_upper_rad)
    assert np.all(np.abs(np.diff(q, axis=0)) <= env.config.max_step_rad)
    dt = period * verdict.time_scale
    assert 1.0 <= verdict.time_scale <= env.config.max_time_scale
    vel = np.diff(q, axis=0) / dt
    assert np.all(np.abs(vel) <= lim.velocity_rad_s * (1 + 1e-9))
    if len(q) >= 3:
        assert np.all(np.abs(np.diff(vel, axis=0) / dt) <= lim.acceleration_rad_s2 * (1 + 1e-9))


def test_chunk_moving_towards_a_singularity_is_slowed_then_refused():
    env = _planar_envelope(max_time_scale=3.0)
    # Two steps straightening the elbow; the second ends where the condition number is c.
    q2 = next(x for x in np.linspace(0.5, 0.001, 20000) if _planar_condition(x) >= 23.5)
    c = _planar_condition(q2)
    verdict = env.validate_chunk(np.array([[0.0, 0.4], [0.0, 0.3], [0.0, q2]]), 10.0)
    assert verdict.ok and verdict.time_scale == pytest.approx(13.0 / (30.0 - c))  # 1 / speed scale
    # Moving away from it (the same steps reversed) is not slowed.
    assert env.validate_chunk(np.array([[0.0, q2], [0.0, 0.3], [0.0, 0.4]]), 10.0).time_scale == 1.0
    # Into the stop zone (condition number >= 30): refused, naming step and arm.
    q_stop = next(x for x in np.linspace(0.5, 0.001, 20000) if _planar_condition(x) >= 31.0)
    verdict = env.validate_chunk(np.array([[0.0, 0.4], [0.0, q_stop]]), 10.0)
    assert not verdict.ok and "step 1 arm arm: moves towards a singularity" in verdict.reason
    # Slowed beyond max_time_scale: refused with the slow-down it would need.
    strict = _planar_envelope(max_time_scale=1.5).validate_chunk(np.array([[0.0, 0.4], [0.0, q2]]), 10.0)
    assert not strict.ok and "x2.0" in strict.reason


def test_limiter_rest_bounds_cap_the_approach_to_where_the_target_stops():
    env = _envelope()
    amax = env.limits.acceleration_rad_s2
    dt = 0.01
    # A command at 0.5 rad/s following a target 5 mrad ahead that comes to rest 15 mrad ahead
    # (joint a): it may go no faster than it can still stop there, v dt + v^2 / 2a <= 0.015.
    # Joint b's rest is 8 mrad ahead: that cap (0.31 rad/s) would need more than the acceleration
    # limit allows in one period, which wins (0.5 - a dt).
    q0, v0 = np.array([0.1, 0.1]), np.array([0.5, 0.5])
    target = np.array([0.105, 0.105])
    free = env.limit_step(q0, v0, target, dt, qd_target=np.array([0.5, 0.5]))
    capped = env.limit_step(q0, v0, target, dt, qd_target=np.array([0.5, 0.5]),
                            rest_bounds=(np.array([0.0, 0.0]), np.array([0.115, 0.108])))
    assert free.position_rad == pytest.approx(target, abs=1e-12)
    a = amax[0]
    v_stop = -a * dt + math.sqrt((a * dt) ** 2 + 2 * a * 0.015)
    assert 0.5 - a * dt < v_stop < 0.5
    assert capped.velocity_rad_s[0] == pytest.approx(v_stop, rel=1e-12)
    assert capped.velocity_rad_s[1] == pytest.approx(0.5 - amax[1] * dt, rel=1e-12)
    # a rest behind the motion (the low bound) does not brake it
    behind = env.limit_step(q0, v0, target, dt, qd_target=np.array([0.5, 0.5]),
                            rest_bounds=(np.array([0.0, 0.0]), np.array([0.5, 0.5])))
    assert behind.position_rad == pytest.approx(target, abs=1e-12)
    with pytest.raises(ValueError, match="rest_bounds must be two arrays"):
        env.limit_step(q0, v0, target, dt, rest_bounds=(np.zeros(3), np.zeros(3)))


def test_limiter_follows_a_feasible_moving_target_exactly_despite_jittery_periods():
    # q(t) = 0.3 (1 - cos 2t): starts at rest, |v| <= 0.6 rad/s, |a| <= 1.2 rad/s^2, all well inside
    # the limits, so whatever the tick jitter the limiter must not change a single command.
    env = _envelope()
    rng = np.random.default_rng(3)
    q, v, t = np.zeros(2), np.zeros(2), 0.0
    for _ in range(300):
        dt = rng.uniform(0.006, 0.014)
        t += dt
        target = 0.3 * (1 - math.cos(2 * t)) * np.ones(2)
        step = env.limit_step(q, v, target, dt, qd_target=0.6 * math.sin(2 * t) * np.ones(2))
        assert not step.limited
        assert step.position_rad == pytest.approx(target, abs=1e-15)
        q, v = step.position_rad, step.velocity_rad_s
