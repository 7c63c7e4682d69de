"""Chunk scheduler: turns a stream of overlapping joint-target chunks into one smooth plan.

The executing plan is a piecewise cubic Hermite spline through knots (time, position, velocity),
absolute times on the controller's clock. Positions + velocities at knots is exactly what a
joint_trajectory_controller interpolates with its cubic splines, so a plan window sent as a
JointTrajectory is executed as planned.

Merging a new chunk (already joint targets, row i due at stamp + i * period):
1. Steps already in the past are dropped, keeping the newest past one so that the new chunk's
   own curve is defined at `now` (this is the latency compensation: a chunk that arrives late
   starts at the step that is due now, not at its first step).
2. The chunk's knots get Catmull-Rom tangents (a smooth motion's samples then give about its
   own acceleration, also where a joint turns around between two steps). Where that curve would
   leave the position limits, the monotone (Fritsch-Carlson limited) tangents are used instead:
   no overshoot between knots, the curve stays within the range of the targets it connects.
   A new chunk blends from the executing chunk's free tail (its last segment without the stop
   at the end, continued at its end velocity for the rest of the blend), so a chunk that arrives
   before the old one starts slowing down into its last target does not inherit that stop.
3. Over a blend window [now, now + blend_s] the executing plan fades into the new curve with
   smoothstep weights w = 3u^2 - 2u^3 (w' = 0 at both ends), so position and velocity are
   continuous at the seam; the blend is sampled at a few knots with exact velocities.
4. The plan ends on the chunk's last target with zero velocity and then HOLDS it; it never
   extrapolates. The final segment is stretched, if needed, so that stopping on the last target
   respects the acceleration limits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.array(a, dtype=np.float64, copy=True)
    a.setflags(write=False)
    return a


@dataclass(frozen=True)
class Plan:
    """Piecewise cubic Hermite joint trajectory; before its first knot and after its last it holds
    the first / last position with zero velocity.

    times_s:          (K,) strictly increasing absolute times.
    positions_rad:    (K, n).
    velocities_rad_s: (K, n); the last row must be zero (a plan always ends at rest).
    """

    times_s: np.ndarray
    positions_rad: np.ndarray
    velocities_rad_s: np.ndarray
    # The chunk's last segment as it would run without the stop at its end (see FreeTail).
    tail: "FreeTail | None" = None

    def __post_init__(self) -> None:
        t = _frozen(np.reshape(self.times_s, -1))
        q = _frozen(self.positions_rad)
        v = _frozen(self.velocities_rad_s)
        if t.shape[0] == 0:
            raise ValueError("Plan needs at least one knot")
        if q.ndim != 2 or q.shape[0] != t.shape[0] or v.shape != q.shape:
            raise ValueError(
                f"Plan shapes disagree: times {t.shape}, positions {q.shape}, velocities {v.shape}; "
                "expected (K,), (K, n), (K, n)"
            )
        if not (np.all(np.isfinite(t)) and np.all(np.isfinite(q)) and np.all(np.isfinite(v))):
            raise ValueError("Plan times, positions and velocities must be finite")
        if np.any(np.diff(t) <= 0.0):
            raise ValueError(f"Plan times must be strictly increasing, got {t.tolist()}")
        if np.any(v[-1] != 0.0):
            raise ValueError(f"Plan must end at rest; last velocities are {v[-1].tolist()}")
        object.__setattr__(self, "times_s", t)
        object.__setattr__(self, "positions_rad", q)
        object.__setattr__(self, "velocities_rad_s", v)
        if self.tail is not None and self.tail.positions_rad.shape[1] != q.shape[1]:
            raise ValueError(f"Plan tail has {self.tail.positions_rad.shape[1]} joints, the plan {q.shape[1]}")

    def sample_free(self, t_s, now_s: float) -> tuple[np.ndarray, np.ndarray]:
        """The motion a chunk arriving at now_s blends from: like `sample`, but through the free
        tail (and on at its end velocity past its end, for at most a blend window) when the plan
        has one whose segment has not started by now_s. Otherwise (no tail, or the plan is
        already slowing down into its last target) exactly `sample`."""
        tail = self.tail
        if tail is None or now_s > tail.times_s[0]:
            return self.sample(t_s)
        t = np.atleast_1d(np.asarray(t_s, dtype=np.float64))
        q, v = self.sample(t)
        on = (t >= tail.times_s[0]) & (t <= tail.times_s[1])
        if np.any(on):
            q[on], v[on], _ = _hermite(tail.times_s, tail.positions_rad, tail.velocities_rad_s, t[on])
        past = t > tail.times_s[1]
        if np.any(past):
            v[past] = tail.velocities_rad_s[1]
            q[past] = tail.positions_rad[1] + (t[past] - tail.times_s[1])[:, None] * tail.velocities_rad_s[1]
        if np.ndim(t_s) == 0:
            return q[0], v[0]
        return q, v

    @classmethod
    def hold(cls, q: np.ndarray, t_s: float) -> "Plan":
        q = np.asarray(q, dtype=np.float64).reshape(1, -1)
        return cls(np.array([t_s]), q, np.zeros_like(q))

    @property
    def num_joints(self) -> int:
        return int(self.positions_rad.shape[1])

    @property
    def start_time_s(self) -> float:
        return float(self.times_s[0])

    @property
    def end_time_s(self) -> float:
        return float(self.times_s[-1])

    @property
    def final_position_rad(self) -> np.ndarray:
        return self.positions_rad[-1]

    def _segment(self, t: np.ndarray):
        k = np.clip(np.searchsorted(self.times_s, t, side="right") - 1, 0, max(len(self.times_s) - 2, 0))
        return k

    def sample(self, t_s) -> tuple[np.ndarray, np.ndarray]:
        """Position and velocity at time(s) t_s: scalar -> ((n,), (n,)); (M,) -> ((M, n), (M, n))."""
        q, v, _ = self._evaluate(t_s)
        return q, v

    def acceleration(self, t_s) -> np.ndarray:
        return self._evaluate(t_s)[2]

    def _evaluate(self, t_s):
        scalar = np.ndim(t_s) == 0
        t = np.atleast_1d(np.asarray(t_s, dtype=np.float64))
        n = self.num_joints
        q = np.empty((t.shape[0], n))
        v = np.zeros((t.shape[0], n))
        a = np.zeros((t.shape[0], n))
        after = t >= self.times_s[-1]
        before = (t < self.times_s[0]) & ~after
        q[before] = self.positions_rad[0]
        q[after] = self.positions_rad[-1]
        inside = ~(before | after)
        if np.any(inside):
            q[inside], v[inside], a[inside] = _hermite(self.times_s, self.positions_rad, self.velocities_rad_s, t[inside])
        if scalar:
            return q[0], v[0], a[0]
        return q, v, a

    def peak_rates(self, from_s: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Exact per-joint maximum |velocity| and |acceleration| over the plan (from `from_s` on,
        if given: what happens before is already history).

        On a cubic segment the acceleration is linear (extremes at the ends) and the velocity is
        quadratic (extremes at the ends or where the acceleration crosses zero).
        """
        n = self.num_joints
        if len(self.times_s) < 2:
            return np.zeros(n), np.zeros(n)
        t0, t1 = self.times_s[:-1], self.times_s[1:]
        live = np.ones(t0.shape, dtype=bool) if from_s is None else t1 > from_s
        if not np.any(live):
            return np.zeros(n), np.zeros(n)
        t0, t1 = t0[live], t1[live]
        h = (t1 - t0)[:, None]
        p0, p1 = self.positions_rad[:-1][live], self.positions_rad[1:][live]
        m0, m1 = self.velocities_rad_s[:-1][live], self.velocities_rad_s[1:][live]
        s_lo = np.zeros_like(h) if from_s is None else np.clip((from_s - t0)[:, None] / h, 0.0, 1.0)

        def vel(s):
            return (6 * s**2 - 6 * s) / h * (p0 - p1) + (3 * s**2 - 4 * s + 1) * m0 + (3 * s**2 - 2 * s) * m1

        def acc(s):
            return (12 * s - 6) / h**2 * (p0 - p1) + (6 * s - 4) / h * m0 + (6 * s - 2) / h * m1

        a_lo, a_hi = acc(s_lo), acc(np.ones_like(h))
        peak_a = np.max(np.maximum(np.abs(a_lo), np.abs(a_hi)), axis=0)
        peak_v = np.max(np.maximum(np.abs(vel(s_lo)), np.abs(m1)), axis=0)
        # Zero of the linear acceleration inside [s_lo, 1] is where the velocity may peak.
        a0, a1 = acc(np.zeros_like(h)), a_hi
        denom = a0 - a1
        with np.errstate(divide="ignore", invalid="ignore"):
            s_star = np.where(denom != 0.0, a0 / denom, -1.0)
        ok = (s_star > s_lo) & (s_star < 1.0)
        v_star = vel(np.where(ok, s_star, 0.0))
        peak_v = np.maximum(peak_v, np.max(np.where(ok, np.abs(v_star), 0.0), axis=0))
        return peak_v, peak_a

    def position_range(self, from_s: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Exact per-joint (lowest, highest) position over the plan (from `from_s` on, if given):
        a cubic segment's extremes are at its ends or where its quadratic velocity is zero."""
        t0, t1 = self.times_s[:-1], self.times_s[1:]
        start = self.sample(self.times_s[0] if from_s is None else max(from_s, self.times_s[0]))[0]
        lo, hi = np.minimum(start, self.positions_rad[-1]), np.maximum(start, self.positions_rad[-1])
        live = np.ones(t0.shape, dtype=bool) if from_s is None else t1 > from_s
        if not np.any(live):
            return lo, hi
        h = (t1 - t0)[live][:, None]
        p0, p1 = self.positions_rad[:-1][live], self.positions_rad[1:][live]
        m0, m1 = self.velocities_rad_s[:-1][live], self.velocities_rad_s[1:][live]
        s_lo = np.zeros_like(h) if from_s is None else np.clip((from_s - t0[live])[:, None] / h, 0.0, 1.0)
        # h * velocity = a s^2 + b s + c for s in [0, 1]
        a = 6 * (p0 - p1) + 3 * h * (m0 + m1)
        b = -6 * (p0 - p1) - 2 * h * (2 * m0 + m1)
        c = h * m0
        with np.errstate(divide="ignore", invalid="ignore"):
            disc = np.sqrt(np.maximum(b * b - 4 * a * c, 0.0))
            quad = np.abs(a) > 1e-15
            r1 = np.where(quad, (-b + disc) / (2 * a), np.where(np.abs(b) > 1e-15, -c / b, -1.0))
            r2 = np.where(quad, (-b - disc) / (2 * a), -1.0)
        for s in (np.ones_like(a), r1, r2):
            s = np.where(np.isfinite(s), s, -1.0)
            ok = (s >= s_lo) & (s <= 1.0)
            s = np.clip(s, 0.0, 1.0)
            s2, s3 = s * s, s * s * s
            qs = (2 * s3 - 3 * s2 + 1) * p0 + (s3 - 2 * s2 + s) * h * m0 + (-2 * s3 + 3 * s2) * p1 + (s3 - s2) * h * m1
            lo = np.minimum(lo, np.min(np.where(ok, qs, np.inf), axis=0))
            hi = np.maximum(hi, np.max(np.where(ok, qs, -np.inf), axis=0))
        return lo, hi

    def window(self, start_s: float, lead_s: float, horizon_s: float,
               acceleration_limits: np.ndarray | None = None,
               position_limits: tuple[np.ndarray, np.ndarray] | None = None,
               to_end_within_s: float = 0.0) -> "Plan":
        """The part of the plan a trajectory controller should get at `start_s`: a first knot at
        start_s + lead_s (sampled), then the plan's knots up to the first one at or after
        start_s + horizon_s. A window cut before the plan's end must still end at rest, so that a
        driver that hears nothing more (the controller crashed, hung, the network dropped) brings
        the arm to rest instead of running on: with `acceleration_limits` the cut knot keeps its
        true velocity and a feasible braking tail follows (`braking_tail`: within the acceleration
        limits and, given `position_limits`, inside them); without, the cut knot's velocity is
        zeroed (an abrupt stop, for callers that know no limits). A plan that ends within
        `to_end_within_s` after the horizon is sent to its end instead: it ends at rest on its last
        target within the limits already, and a braking tail could carry a joint past that target."""
        if lead_s <= 0.0 or horizon_s <= lead_s:
            raise ValueError(f"need 0 < lead_s < horizon_s, got lead_s={lead_s}, horizon_s={horizon_s}")
        t_first = start_s + lead_s
        q_first, v_first = self.sample(t_first)
        # Knots closer than 1 ms to the sampled first knot are skipped: stamped in whole
        # nanoseconds they could share its time_from_start, which a JTC rejects.
        later = np.flatnonzero(self.times_s > t_first + 1e-3)
        t_end = start_s + horizon_s
        if self.end_time_s <= t_end + to_end_within_s:
            t_end = self.end_time_s
        keep = []
        for k in later:
            keep.append(k)
            if self.times_s[k] >= t_end:
                break
        times = np.concatenate([[t_first], self.times_s[keep]])
        q = np.vstack([q_first[None, :], self.positions_rad[keep]])
        v = np.vstack([v_first[None, :], self.velocities_rad_s[keep]])
        if np.any(v[-1] != 0.0) and acceleration_limits is not None:
            tt, tq, tv = braking_tail(times[-1], q[-1], v[-1], acceleration_limits, position_limits)
            times, q, v = np.concatenate([times, tt]), np.vstack([q, tq]), np.vstack([v, tv])
        v[-1] = 0.0
        return Plan(times, q, v)


@dataclass(frozen=True)
class FreeTail:
    """The last segment of a chunk's curve as it would run if the chunk went on: knots
    (t_{K-2}, q_{K-2}, m_{K-2}) -> (t_{K-1}, q_{K-1}, m_free), the same curve as the plan up to
    t_{K-2}. The plan itself stops on q_{K-1} (m = 0, the segment stretched if the acceleration
    limits need it), which is what runs when no new chunk comes; a new chunk that arrives by
    t_{K-2} blends from this free tail instead (continued at m_free past t_{K-1} for the rest of
    the blend, at a weight that is gone by the blend's end), so the seam does not inherit the old
    chunk's stop. The executed plan itself never extrapolates."""

    times_s: np.ndarray  # (2,)
    positions_rad: np.ndarray  # (2, n)
    velocities_rad_s: np.ndarray  # (2, n)

    def __post_init__(self) -> None:
        t, q, v = (_frozen(a) for a in (np.reshape(self.times_s, -1), self.positions_rad, self.velocities_rad_s))
        if t.shape != (2,) or not t[1] > t[0] or q.ndim != 2 or q.shape[0] != 2 or v.shape != q.shape:
            raise ValueError(f"FreeTail needs 2 increasing times and (2, n) positions/velocities, got "
                             f"{t.tolist()}, {q.shape}, {v.shape}")
        object.__setattr__(self, "times_s", t)
        object.__setattr__(self, "positions_rad", q)
        object.__setattr__(self, "velocities_rad_s", v)


def _hermite(times: np.ndarray, qk: np.ndarray, vk: np.ndarray, t: np.ndarray):
    """Positions, velocities, accelerations of the cubic Hermite spline through knots (times, qk,
    vk) at t (M,), every t within [times[0], times[-1]]."""
    k = np.clip(np.searchsorted(times, t, side="right") - 1, 0, max(len(times) - 2, 0))
    h = (times[k + 1] - times[k])[:, None]
    s = ((t - times[k]) / h[:, 0])[:, None]
    p0, p1 = qk[k], qk[k + 1]
    m0, m1 = vk[k], vk[k + 1]
    s2, s3 = s * s, s * s * s
    q = (2 * s3 - 3 * s2 + 1) * p0 + (s3 - 2 * s2 + s) * h * m0 + (-2 * s3 + 3 * s2) * p1 + (s3 - s2) * h * m1
    v = (6 * s2 - 6 * s) / h * (p0 - p1) + (3 * s2 - 4 * s + 1) * m0 + (3 * s2 - 2 * s) * m1
    a = (12 * s - 6) / h**2 * (p0 - p1) + (6 * s - 4) / h * m0 + (6 * s - 2) / h * m1
    return q, v, a


def free_end_tangent(times_s: np.ndarray, positions: np.ndarray, limited: bool = False) -> np.ndarray:
    """The velocity at the last knot if the motion went on: the slope of the parabola through the
    last three knots there (the one-sided secant with two). `limited` (for monotone curves near a
    position limit): same sign as the last secant and at most 3x it, like monotone tangents.
    Unlimited by default, like Catmull-Rom tangents: near a turnaround the cap would cut the
    slope to a fraction of the true velocity, and a new chunk would blend from a wrong motion."""
    t = np.asarray(times_s, dtype=np.float64)
    q = np.asarray(positions, dtype=np.float64)
    if q.shape[0] < 2:
        return np.zeros(q.shape[1:])
    h1 = t[-1] - t[-2]
    d1 = (q[-1] - q[-2]) / h1
    if q.shape[0] == 2:
        return d1
    h0 = t[-2] - t[-3]
    d0 = (q[-2] - q[-3]) / h0
    m = d1 + (d1 - d0) * h1 / (h0 + h1)
    if not limited:
        return m
    return np.where(m * d1 > 0.0, np.clip(m, -3.0 * np.abs(d1), 3.0 * np.abs(d1)), 0.0)


def monotone_tangents(times_s: np.ndarray, positions: np.ndarray, start_velocity: np.ndarray | None = None) -> np.ndarray:
    """Catmull-Rom tangents limited (Fritsch-Carlson) so each cubic segment stays between its two
    knot values; zero at local extrema. The first knot gets `start_velocity` (limited the same way)
    if given, else the one-sided secant; the caller decides the last one."""
    t = np.asarray(times_s, dtype=np.float64)
    q = np.asarray(positions, dtype=np.float64)
    m = np.zeros_like(q)
    if q.shape[0] < 2:
        return m
    h = np.diff(t)[:, None]
    d = np.diff(q, axis=0) / h
    if q.shape[0] > 2:
        cr = (q[2:] - q[:-2]) / (t[2:] - t[:-2])[:, None]
        same_sign = d[:-1] * d[1:] > 0.0
        cap = 3.0 * np.minimum(np.abs(d[:-1]), np.abs(d[1:]))
        m[1:-1] = np.where(same_sign, np.clip(cr, -cap, cap), 0.0)
    if start_velocity is None:
        m[0] = d[0]
    else:
        sv = np.asarray(start_velocity, dtype=np.float64).reshape(-1)
        m[0] = np.where(sv * d[0] > 0.0, np.clip(sv, -3.0 * np.abs(d[0]), 3.0 * np.abs(d[0])), 0.0)
    return m


def catmull_rom_tangents(times_s: np.ndarray, positions: np.ndarray, start_velocity: np.ndarray | None = None) -> np.ndarray:
    """Catmull-Rom tangents (q[k+1] - q[k-1]) / (t[k+1] - t[k-1]): the curve through samples of a
    smooth motion then has about that motion's acceleration, also where a joint turns around
    between two steps (monotone tangents are zeroed or capped there, which puts several times
    the true acceleration into the curve). It may pass a target it turns around near by a little
    (the motion's own extremum lies between the steps); `chunk_curve` checks the position limits.
    The first knot gets `start_velocity` if given, else the one-sided secant."""
    t = np.asarray(times_s, dtype=np.float64)
    q = np.asarray(positions, dtype=np.float64)
    m = np.zeros_like(q)
    if q.shape[0] < 2:
        return m
    if q.shape[0] > 2:
        m[1:-1] = (q[2:] - q[:-2]) / (t[2:] - t[:-2])[:, None]
    m[0] = (q[1] - q[0]) / (t[1] - t[0]) if start_velocity is None else np.asarray(start_velocity, float).reshape(-1)
    return m


def _smoothstep(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    u = np.clip(u, 0.0, 1.0)
    return 3 * u**2 - 2 * u**3, 6 * u - 6 * u**2


def _stretch_final_segment(times: np.ndarray, q: np.ndarray, m: np.ndarray, accel: np.ndarray | None) -> np.ndarray:
    """Lengthen the last segment (which stops on the last target) until its acceleration is
    within `accel`; the path is unchanged, only its timing near the end."""
    if accel is None or len(times) < 2:
        return times
    times = times.copy()
    p0, p1, m0 = q[-2], q[-1], m[-2]
    for _ in range(40):
        h = times[-1] - times[-2]
        a0 = (-6 / h**2) * (p0 - p1) + (-4 / h) * m0
        a1 = (6 / h**2) * (p0 - p1) + (2 / h) * m0
        if np.all(np.maximum(np.abs(a0), np.abs(a1)) <= accel * (1 + 1e-9)):
            break
        times[-1] = times[-2] + h * 1.25
    return times


def chunk_curve(current: Plan, times_s: np.ndarray, positions: np.ndarray, now_s: float,
                acceleration_limits: np.ndarray | None = None,
                position_limits: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[Plan, int]:
    """The new chunk's own curve (before blending) and the index of its first kept step: steps
    due at or before now_s are dropped except the newest of them.

    Catmull-Rom tangents; where that curve would leave `position_limits` (lower, upper), the
    monotone tangents instead (the curve then stays between the steps it connects)."""
    t = np.asarray(times_s, dtype=np.float64).reshape(-1)
    q = np.asarray(positions, dtype=np.float64)
    past = int(np.count_nonzero(t <= now_s))
    first = max(past - 1, 0)
    plan = _curve(current, t, q, first, now_s, acceleration_limits, catmull_rom_tangents)
    if position_limits is not None:
        lo, hi = plan.position_range()
        if np.any(lo < position_limits[0]) or np.any(hi > position_limits[1]):
            plan = _curve(current, t, q, first, now_s, acceleration_limits, monotone_tangents)
    return plan, first


def _curve(current: Plan, t: np.ndarray, q: np.ndarray, first: int, now_s: float, acceleration_limits,
           tangents) -> Plan:
    t_new, q_new = t[first:], q[first:]
    if first >= 1:
        # The chunk's own rows on both sides of its first kept step give it a central tangent,
        # like every other step (not the executing plan's velocity: an error there would be
        # passed on from chunk to chunk).
        m_new = tangents(t[first - 1:], q[first - 1:])[1:]
    else:
        # Its first step is still ahead: start from the executing plan's velocity there, so two
        # chunks that predict the same motion give the same curve and the blend has no work.
        m_new = tangents(t_new, q_new, start_velocity=current.sample_free(t_new[0], now_s)[1])
    tail = None
    if len(t_new) >= 2:
        m_free = free_end_tangent(t, q, limited=tangents is monotone_tangents)
        tail = FreeTail(t_new[-2:], q_new[-2:], np.vstack([m_new[-2], m_free]))
    m_new[-1] = 0.0
    t_new = _stretch_final_segment(t_new, q_new, m_new, acceleration_limits)
    t_new, q_new, m_new = _stop_without_overshoot(t_new, q_new, m_new, acceleration_limits)
    return Plan(t_new, q_new, m_new, tail)


_MIN_STOP_KNOT_SPACING_S = 1e-4


def _stop_without_overshoot(times: np.ndarray, q: np.ndarray, m: np.ndarray, accel: np.ndarray | None):
    """Keep the final (stopping) segment from overshooting the last target.

    The stretch above is common to all joints (the one that needs the longest stop sets it), and
    a Hermite segment ending at rest overshoots its end when m0 * h > 3 * (p1 - p0): a joint with
    little distance left then runs past its last target and comes back. Such a joint instead
    stops on its target by the parabola q = p0 + m0 t - m0 t^2 / (2 tau), tau = 2 (p1 - p0) / m0
    (constant deceleration, exactly a Hermite segment p0, m0 -> p1, 0 over tau), then holds; a knot
    is added at each such tau, where every other joint gets its own unchanged cubic's value, so
    their motion is exactly what it was. Only where that stop is within the joint's acceleration
    limit (m0^2 / (2 |p1 - p0|) <= a_max): a chunk that ends too fast to stop on its last target
    keeps the stretched cubic, which is within the limit and overshoots as little as it must.
    """
    if accel is None or len(times) < 2:
        return times, q, m
    t0, h = times[-2], times[-1] - times[-2]
    p0, p1, m0 = q[-2], q[-1], m[-2]
    delta = p1 - p0
    # (The limited tangents give m0 = 0 wherever delta = 0 and never the opposite sign.)
    over = (m0 * delta > 0.0) & (np.abs(m0) * h > 3.0 * np.abs(delta) * (1 + 1e-9))
    with np.errstate(divide="ignore", invalid="ignore"):
        over &= m0**2 <= 2.0 * np.abs(delta) * np.broadcast_to(accel, m0.shape) * (1 + 1e-9)
    if not np.any(over):
        return times, q, m
    with np.errstate(divide="ignore", invalid="ignore"):
        tau = np.where(over, 2.0 * delta / m0, 0.0)
    knots = []
    # One knot for stops less than 0.1 ms apart (and none that close to the segment's ends): on an
    # absolute clock (~1.8e9 s, float resolution ~0.24 us) closer knots could share a time.
    for s_ in np.unique(tau[over & (tau > 0.0) & (tau < h)]):
        if s_ - (knots[-1] if knots else 0.0) >= _MIN_STOP_KNOT_SPACING_S and h - s_ >= _MIN_STOP_KNOT_SPACING_S:
            knots.append(float(s_))
    knots = np.array(knots)
    segment = Plan(np.array([0.0, h]), np.vstack([p0, p1]), np.vstack([m0, np.zeros_like(m0)]))
    rows_q, rows_v = [p0], [m0]
    for s in knots:
        qs, vs = segment.sample(s)
        # The stopping parabola for the overshooting joints, holding once stopped.
        with np.errstate(divide="ignore", invalid="ignore"):
            ss = np.minimum(s, tau)
            qp = np.where(over, p0 + m0 * ss - np.where(tau > 0, m0 * ss**2 / (2.0 * tau), 0.0), qs)
            vp = np.where(over, np.where(s < tau, m0 * (1.0 - s / np.where(tau > 0, tau, 1.0)), 0.0), vs)
        rows_q.append(qp)
        rows_v.append(vp)
    new_t = np.concatenate([times[:-1], t0 + knots, times[-1:]])
    new_q = np.vstack([q[:-2], np.array(rows_q), q[-1:]])
    new_m = np.vstack([m[:-2], np.array(rows_v), np.zeros((1, q.shape[1]))])
    return new_t, new_q, new_m


@dataclass(frozen=True)
class MergeResult:
    """A proposed plan and what the merge did to the chunk."""

    plan: Plan
    dropped_steps: int  # chunk steps whose time had passed (not executed)
    first_step: int  # the chunk step the new curve starts from (dropped_steps - 1, or 0)


def merge_chunk(
    current: Plan,
    times_s: np.ndarray,
    positions: np.ndarray,
    now_s: float,
    blend_s: float,
    blend_knots: int = 6,
    acceleration_limits: np.ndarray | None = None,
    position_limits: tuple[np.ndarray, np.ndarray] | None = None,
    start_s: float | None = None,
) -> MergeResult:
    """Blend joint targets (T, n) due at absolute `times_s` into the executing plan at `now_s`.

    `start_s` (>= now_s, default now_s): where the new chunk takes over. Until then the plan is
    the executing one, knot for knot, so a trajectory carrying the merge that reaches the driver
    late (but before start_s) continues exactly the motion the driver is already running."""
    t = np.asarray(times_s, dtype=np.float64).reshape(-1)
    q = np.asarray(positions, dtype=np.float64)
    if q.ndim != 2 or q.shape[0] != t.shape[0] or q.shape[1] != current.num_joints:
        raise ValueError(
            f"chunk targets must be (T, {current.num_joints}) with T = len(times_s); got {q.shape} and {t.shape}"
        )
    if not (np.all(np.isfinite(q)) and np.all(np.isfinite(t))):
        raise ValueError("chunk targets and times must be finite")
    if np.any(np.diff(t) <= 0.0):
        raise ValueError(f"chunk times must be strictly increasing, got {t.tolist()}")
    if not (np.isfinite(blend_s) and blend_s > 0.0) or blend_knots < 2:
        raise ValueError(f"need blend_s > 0 and blend_knots >= 2, got {blend_s}, {blend_knots}")

    start = now_s if start_s is None else max(float(start_s), now_s)
    if start > now_s:
        # A knot of the executing plan just short of the take-over point becomes the take-over
        # point (no needlessly short segment; the shift is below 0.1 ms).
        near = current.times_s[(current.times_s > now_s) & (np.abs(current.times_s - start) < _MIN_STOP_KNOT_SPACING_S)]
        if near.size:
            start = float(near[0])
    new, first = chunk_curve(current, t, q, start, acceleration_limits, position_limits)
    dropped = first

    # Blend window: the executing plan at weight 1 - w, the new curve at w.
    tb = start + blend_s * np.linspace(0.0, 1.0, blend_knots)
    plan = _blend(current.sample_free(tb, start), new, tb, start, blend_s)
    if position_limits is not None and current.tail is not None:
        lo, hi = plan.position_range()
        if np.any(lo < position_limits[0]) or np.any(hi > position_limits[1]):
            plan = _blend(current.sample(tb), new, tb, start, blend_s)  # no free tail near a limit
    if start > now_s:
        # The executing plan's own knots from now until the take-over (a piece of a cubic between
        # two of its points is the same cubic: the motion until `start` is unchanged).
        # (An old knot within 0.1 ms after now is left out: a float-noise segment would blow
        # up the exact rate checks; the curve there is C1 and barely changes.)
        pre = np.concatenate([[now_s], current.times_s[(current.times_s > now_s + _MIN_STOP_KNOT_SPACING_S)
                                                       & (current.times_s < start)]])
        q_pre, v_pre = current.sample(pre)
        plan = Plan(np.concatenate([pre, plan.times_s]), np.vstack([q_pre, plan.positions_rad]),
                    np.vstack([v_pre, plan.velocities_rad_s]), plan.tail)
    return MergeResult(plan, dropped, first)


def _blend(old: tuple[np.ndarray, np.ndarray], new: Plan, tb: np.ndarray, now_s: float, blend_s: float) -> Plan:
    """The plan that fades from `old` (positions, velocities at the blend knots tb) into `new`."""
    q_old, v_old = old
    q_nw, v_nw = new.sample(tb)
    w, dw = _smoothstep((tb - now_s) / blend_s)
    w, dw = w[:, None], dw[:, None] / blend_s
    qb = (1 - w) * q_old + w * q_nw
    vb = (1 - w) * v_old + w * v_nw + dw * (q_nw - q_old)

    after = new.times_s > tb[-1] + 1e-9
    times = np.concatenate([tb, new.times_s[after]])
    qs = np.vstack([qb, new.positions_rad[after]])
    vs = np.vstack([vb, new.velocities_rad_s[after]])
    tail = new.tail
    if not np.any(after):
        # The new curve already rests on its last target at the end of the blend.
        vs[-1] = 0.0
        tail = None
    elif tail is not None and tail.times_s[0] < tb[-1] - 1e-9:
        tail = None  # the blend reaches into the new curve's last segment: the plan is blended there
    return Plan(times, qs, vs, tail)


# Braking-tail knots closer than this are merged (the later stop time is used for both): sent
# as whole nanoseconds they stay strictly increasing, and a JTC gets no needlessly short segments.
MIN_TAIL_KNOT_SPACING_S = 1e-3


def braking_tail(t0_s: float, q0: np.ndarray, v0: np.ndarray, acceleration_limits: np.ndarray,
                 position_limits: tuple[np.ndarray, np.ndarray] | None = None):
    """Knots (times (M,), positions (M, n), velocities (M, n)) after (t0_s, q0, v0) that bring
    every joint to rest at constant deceleration within `acceleration_limits`; the last knot
    is at rest. Every segment between consecutive knots is exactly a piece of each joint's
    stopping parabola (or a hold), so a JTC's cubic interpolation runs the stop as planned.

    Preferred: all joints stop together (the path keeps its direction), in the time the slowest
    joint needs at its limit. When that stop would leave `position_limits` (a joint near a limit
    braking more gently than it could), each joint instead stops as fast as its own limit allows:
    the shortest stop there is, so from any state of a plan that stays within the limits with
    accelerations within the limits, it stays within the limits too. Stop times are rounded up to
    knots at least MIN_TAIL_KNOT_SPACING_S apart (rounding up only lowers a deceleration).
    """
    q0 = np.asarray(q0, dtype=np.float64).reshape(-1)
    v0 = np.asarray(v0, dtype=np.float64).reshape(-1)
    acc = np.broadcast_to(np.asarray(acceleration_limits, dtype=np.float64), v0.shape)
    own = np.abs(v0) / acc  # each joint's shortest stop
    tau = np.full_like(v0, float(np.max(own)))
    if position_limits is not None:
        end = q0 + v0 * tau / 2.0
        if np.any(end < position_limits[0]) or np.any(end > position_limits[1]):
            tau = own
    tau = np.where(v0 != 0.0, tau, 0.0)
    knots: list[float] = []
    for s in np.unique(tau[tau > 0.0]):
        s = max(float(s), MIN_TAIL_KNOT_SPACING_S)
        if knots and s - knots[-1] < MIN_TAIL_KNOT_SPACING_S:
            knots[-1] = s  # merge into the later stop
        else:
            knots.append(s)
    if not knots:
        return np.zeros(0), np.zeros((0, v0.size)), np.zeros((0, v0.size))
    ks = np.array(knots)
    # Each moving joint stops at the first knot at or after its own stop time.
    tau = np.where(tau > 0.0, ks[np.minimum(np.searchsorted(ks, tau - 1e-12), len(ks) - 1)], 0.0)
    s = ks[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        moving = (tau > 0.0) & (s < tau)
        safe_tau = np.where(tau > 0.0, tau, 1.0)
        q = np.where(moving, q0 + v0 * s - v0 * s**2 / (2.0 * safe_tau), q0 + v0 * tau / 2.0)
        v = np.where(moving, v0 * (1.0 - s / safe_tau), 0.0)
    return t0_s + ks, q, v


def stopping_plan(q: np.ndarray, v: np.ndarray, now_s: float, acceleration_limits: np.ndarray) -> Plan:
    """Decelerate from (q, v) to rest at constant deceleration, all joints stopping together, then
    hold. The Hermite segment p0=q, m0=v, p1=q+v*T/2, m1=0 is exactly that parabola."""
    q = np.asarray(q, dtype=np.float64).reshape(-1)
    v = np.asarray(v, dtype=np.float64).reshape(-1)
    acc = np.asarray(acceleration_limits, dtype=np.float64).reshape(-1)
    stop_s = float(np.max(np.abs(v) / acc))
    if stop_s <= 1e-9:
        return Plan.hold(q, now_s)
    return Plan(np.array([now_s, now_s + stop_s]), np.vstack([q, q + v * stop_s / 2.0]), np.vstack([v, np.zeros_like(v)]))


class ChunkScheduler:
    """Holds the executing plan; `propose` computes a merge without committing it so the caller
    can check it against the safety limits first."""

    def __init__(self, num_joints: int, blend_s: float = 0.1, blend_knots: int = 6,
                 acceleration_limits: np.ndarray | None = None,
                 position_limits: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        if num_joints <= 0:
            raise ValueError(f"num_joints must be > 0, got {num_joints}")
        if not (np.isfinite(blend_s) and blend_s > 0.0):
            raise ValueError(f"blend_s must be > 0, got {blend_s}")
        self.num_joints = int(num_joints)
        self.blend_s = float(blend_s)
        self.blend_knots = int(blend_knots)
        self.acceleration_limits = None if acceleration_limits is None else np.asarray(acceleration_limits, float)
        self.position_limits = None if position_limits is None else (
            np.asarray(position_limits[0], float), np.asarray(position_limits[1], float))
        self._plan: Plan | None = None

    @property
    def plan(self) -> Plan | None:
        return self._plan

    def hold(self, q: np.ndarray, now_s: float) -> Plan:
        """Replace the plan by a hold at q (no motion)."""
        self._plan = Plan.hold(q, now_s)
        return self._plan

    def stop(self, now_s: float, q: np.ndarray | None = None, v: np.ndarray | None = None) -> Plan:
        """Replace the plan by a stop from where it is commanded now (or from (q, v) when the
        caller knows the commanded state better, e.g. a rate-limited stream); smooth when
        acceleration limits are known, else an immediate hold."""
        if self._plan is None:
            raise RuntimeError("ChunkScheduler.stop: no plan yet; call hold(q, now_s) first")
        if q is None or v is None:
            q, v = self._plan.sample(now_s)
        if self.acceleration_limits is None:
            self._plan = Plan.hold(q, now_s)
        else:
            self._plan = stopping_plan(q, v, now_s, self.acceleration_limits)
        return self._plan

    def propose(self, times_s: np.ndarray, positions: np.ndarray, now_s: float, blend_s: float | None = None,
                start_s: float | None = None, plan: Plan | None = None) -> MergeResult:
        """The merge of a chunk into `plan` (default: the executing plan), not committed."""
        current = self._plan if plan is None else plan
        if current is None:
            raise RuntimeError("ChunkScheduler.propose: no plan yet; call hold(q, now_s) with the measured position first")
        return merge_chunk(current, times_s, positions, now_s, self.blend_s if blend_s is None else blend_s,
                           self.blend_knots, self.acceleration_limits, self.position_limits, start_s)

    def curve(self, times_s: np.ndarray, positions: np.ndarray, now_s: float) -> tuple[Plan, int]:
        """The chunk's own curve as `propose` would build it (see `chunk_curve`)."""
        if self._plan is None:
            raise RuntimeError("ChunkScheduler.curve: no plan yet; call hold(q, now_s) first")
        return chunk_curve(self._plan, times_s, positions, now_s, self.acceleration_limits, self.position_limits)

    def commit(self, plan: Plan) -> None:
        if plan.num_joints != self.num_joints:
            raise ValueError(f"plan has {plan.num_joints} joints, scheduler {self.num_joints}")
        self._plan = plan

    def sample(self, now_s: float) -> tuple[np.ndarray, np.ndarray]:
        if self._plan is None:
            raise RuntimeError("ChunkScheduler.sample: no plan yet")
        return self._plan.sample(now_s)

    def is_moving(self, now_s: float) -> bool:
        return self._plan is not None and now_s < self._plan.end_time_s
