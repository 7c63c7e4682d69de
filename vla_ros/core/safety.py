"""Safety envelope: what the controller may command, checked before and while it is commanded.

Two checks, both pure (numpy only; kinematics is passed in):

* `SafetyEnvelope.validate_chunk` looks at a WHOLE chunk of joint targets (after the action
  adapter) before any of it runs: finite values, position limits shrunk by a margin, the jump
  between consecutive steps, velocity and acceleration between consecutive steps at the policy
  period, and the tool position inside the arm's workspace box. It returns a `ChunkVerdict`
  listing every violation (step, joint, value, limit).

  Velocity/acceleration policy (chosen): a chunk that needs more than the limits is TIME-SCALED,
  i.e. executed slower, by the smallest factor s >= 1 that brings every step within the limits
  (velocities scale by 1/s, accelerations by 1/s^2), as long as s <= `max_time_scale`; beyond that
  it is REFUSED (the same holds for the slow-down near singularities below). Slowing a slightly-too-fast chunk is what a human operator would want; slowing a
  chunk by more than `max_time_scale` would turn it into a different motion than the policy meant,
  so it is refused instead. `max_time_scale = 1` disables slowing.

* `SafetyEnvelope.limit_step` is the streaming limiter applied at the command rate:
  (q_prev, qd_prev, q_target, dt) -> q_cmd that never leaves the (margin-shrunk) position limits,
  never exceeds the velocity or acceleration limits, brakes early enough to stop before a position
  limit, and slows down near kinematic singularities (condition number of the tool Jacobian,
  MoveIt Servo's thresholds: full speed below 17, linearly down to zero at 30 -- applied only
  when the step moves towards the singularity, so the arm can always back out of one).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from vla_ros.core.embodiment import EmbodimentSpec

# Violation kinds, one word each so they can be counted in diagnostics.
NON_FINITE = "non_finite"
POSITION = "position"
JUMP = "jump"
VELOCITY = "velocity"
ACCELERATION = "acceleration"
WORKSPACE = "workspace"
SINGULARITY = "singularity"

_MAX_REASONS_IN_TEXT = 6


class FrameKinematics(Protocol):
    """The part of RobotKinematics the envelope needs (see doc/INTERFACES.md)."""

    joint_names: tuple[str, ...]

    def frame_pose(self, q: np.ndarray, frame: str, base: str | None = None) -> np.ndarray: ...

    def frame_jacobian(self, q: np.ndarray, frame: str, base: str | None = None) -> np.ndarray: ...


def _vector(name: str, value, n: int) -> np.ndarray:
    arr = np.array(value, dtype=np.float64, copy=True).reshape(-1)
    if arr.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got {arr.tolist()}")
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True)
class JointLimitSet:
    """Joint limits of all arm joints, in `joint_names` order (the spec's qualified order).

    The envelope keeps commands inside [lower + margin, upper - margin]; the hard limits are
    only the last guard against rounding.
    """

    joint_names: tuple[str, ...]
    lower_rad: np.ndarray
    upper_rad: np.ndarray
    velocity_rad_s: np.ndarray
    acceleration_rad_s2: np.ndarray
    position_margin_rad: float = 0.05

    def __post_init__(self) -> None:
        names = tuple(str(n) for n in self.joint_names)
        n = len(names)
        if n == 0:
            raise ValueError("JointLimitSet needs at least one joint")
        object.__setattr__(self, "joint_names", names)
        for attr in ("lower_rad", "upper_rad", "velocity_rad_s", "acceleration_rad_s2"):
            object.__setattr__(self, attr, _vector(f"JointLimitSet.{attr}", getattr(self, attr), n))
        margin = float(self.position_margin_rad)
        if not (np.isfinite(margin) and margin >= 0.0):
            raise ValueError(f"position_margin_rad must be a finite number >= 0, got {self.position_margin_rad}")
        object.__setattr__(self, "position_margin_rad", margin)
        narrow = self.upper_rad - self.lower_rad <= 2.0 * margin
        if np.any(narrow):
            bad = [names[i] for i in np.flatnonzero(narrow)]
            raise ValueError(
                f"position_margin_rad={margin} leaves no room between the limits of joints {bad}"
            )
        for attr in ("velocity_rad_s", "acceleration_rad_s2"):
            values = getattr(self, attr)
            if np.any(values <= 0.0):
                raise ValueError(f"JointLimitSet.{attr} must be > 0 for every joint, got {values.tolist()}")

    @classmethod
    def from_embodiment(cls, spec: EmbodimentSpec, position_margin_rad: float = 0.05) -> "JointLimitSet":
        arms = spec.arms
        return cls(
            joint_names=spec.joint_names,
            lower_rad=np.concatenate([a.limits.lower_rad for a in arms]),
            upper_rad=np.concatenate([a.limits.upper_rad for a in arms]),
            velocity_rad_s=np.concatenate([a.limits.velocity_rad_s for a in arms]),
            acceleration_rad_s2=np.concatenate([a.limits.acceleration_rad_s2 for a in arms]),
            position_margin_rad=position_margin_rad,
        )

    @property
    def num_joints(self) -> int:
        return len(self.joint_names)

    @property
    def inner_lower_rad(self) -> np.ndarray:
        return self.lower_rad + self.position_margin_rad

    @property
    def inner_upper_rad(self) -> np.ndarray:
        return self.upper_rad - self.position_margin_rad


@dataclass(frozen=True)
class ArmFrames:
    """Where one arm's tool must stay: a box for the tool frame's origin, in the arm's base frame."""

    arm: str
    base_frame: str
    tool_frame: str
    joint_indices: tuple[int, ...]  # columns of this arm in the full joint vector
    workspace_min_m: np.ndarray
    workspace_max_m: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "joint_indices", tuple(int(i) for i in self.joint_indices))
        lo = _vector(f"workspace_min_m of arm '{self.arm}'", self.workspace_min_m, 3)
        hi = _vector(f"workspace_max_m of arm '{self.arm}'", self.workspace_max_m, 3)
        if np.any(lo >= hi):
            raise ValueError(f"arm '{self.arm}': workspace_min_m {lo.tolist()} must be < workspace_max_m {hi.tolist()}")
        object.__setattr__(self, "workspace_min_m", lo)
        object.__setattr__(self, "workspace_max_m", hi)


@dataclass(frozen=True)
class SafetyConfig:
    """Tunable parts of the envelope (the limits themselves come from the embodiment).

    max_step_rad:       largest change of any joint between two consecutive chunk steps (and from
                        the current command to a chunk's first step), whatever the timing: catches
                        IK branch flips and garbage that time-scaling would otherwise just slow down.
    max_time_scale:     how much slower than the policy period a chunk may be executed to respect
                        velocity/acceleration limits before it is refused (1 = never slow down).
    singularity_slowdown_condition / singularity_stop_condition: Jacobian condition numbers
                        between which the speed is scaled linearly from 1 to 0 (MoveIt Servo: 17, 30).
    """

    position_margin_rad: float = 0.05
    max_step_rad: float = 0.5
    max_time_scale: float = 2.0
    singularity_slowdown_condition: float = 17.0
    singularity_stop_condition: float = 30.0

    def __post_init__(self) -> None:
        for attr in ("position_margin_rad", "max_step_rad", "max_time_scale",
                     "singularity_slowdown_condition", "singularity_stop_condition"):
            value = float(getattr(self, attr))
            if not np.isfinite(value) or value < 0.0:
                raise ValueError(f"SafetyConfig.{attr} must be a finite number >= 0, got {getattr(self, attr)}")
            object.__setattr__(self, attr, value)
        if self.max_step_rad <= 0.0:
            raise ValueError(f"SafetyConfig.max_step_rad must be > 0, got {self.max_step_rad}")
        if self.max_time_scale < 1.0:
            raise ValueError(f"SafetyConfig.max_time_scale must be >= 1 (1 = never slow down), got {self.max_time_scale}")
        if not 1.0 <= self.singularity_slowdown_condition < self.singularity_stop_condition:
            raise ValueError(
                "SafetyConfig needs 1 <= singularity_slowdown_condition < singularity_stop_condition, got "
                f"{self.singularity_slowdown_condition} and {self.singularity_stop_condition}"
            )


@dataclass(frozen=True)
class Violation:
    """One reason a chunk is refused. `joint` is a joint name, or `<arm>/<axis>` for workspace."""

    kind: str
    step: int
    joint: str
    value: float
    limit: float
    unit: str

    def __str__(self) -> str:
        if self.kind == NON_FINITE:
            return f"step {self.step} {self.joint}: value {self.value} is not finite"
        if self.kind == POSITION:
            side = "below lower" if self.value < self.limit else "above upper"
            return (f"step {self.step} {self.joint}: position {self.value:.4f} {self.unit} is {side} "
                    f"limit {self.limit:.4f} {self.unit} (joint limit with margin)")
        if self.kind == SINGULARITY:
            if self.step < 0:
                return (f"moving towards a singularity needs a x{self.value:.2f} slow-down, more than "
                        f"max_time_scale {self.limit:.2f}")
            return (f"step {self.step} arm {self.joint}: moves towards a singularity, condition number "
                    f"{self.value:.1f} >= {self.limit:.1f}")
        if self.kind == WORKSPACE:
            side = "below" if self.value < self.limit else "above"
            return (f"step {self.step} {self.joint}: tool position {self.value:.4f} {self.unit} is {side} "
                    f"the workspace bound {self.limit:.4f} {self.unit}")
        what = {JUMP: "step change", VELOCITY: "velocity", ACCELERATION: "acceleration"}[self.kind]
        return (f"step {self.step} {self.joint}: {what} |{self.value:.4f}| {self.unit} exceeds "
                f"{self.limit:.4f} {self.unit}")


@dataclass(frozen=True)
class ChunkVerdict:
    """Outcome of validating a whole chunk.

    ok:          no violation; the chunk may run.
    violations:  every violation found (empty when ok).
    time_scale:  factor >= 1 by which the chunk's period must be stretched to respect velocity and
                 acceleration limits (1 when it already does; meaningful only when ok).
    """

    ok: bool
    violations: tuple[Violation, ...]
    time_scale: float = 1.0

    @property
    def reason(self) -> str:
        if self.ok:
            return "ok" if self.time_scale == 1.0 else f"ok, slowed down by x{self.time_scale:.3f}"
        shown = "; ".join(str(v) for v in self.violations[:_MAX_REASONS_IN_TEXT])
        more = len(self.violations) - _MAX_REASONS_IN_TEXT
        return shown + (f"; and {more} more" if more > 0 else "")


@dataclass(frozen=True)
class LimitedStep:
    """Output of the streaming limiter.

    position_rad / velocity_rad_s: the command for this period, within every limit.
    speed_scale:   singularity scaling applied (1 = none).
    limited:       True when the command differs from what was asked (clipped, slowed or held).
    target_rejected: True when the target was not finite and the limiter held instead.
    """

    position_rad: np.ndarray
    velocity_rad_s: np.ndarray
    speed_scale: float
    limited: bool
    target_rejected: bool


def speed_scale_for_condition(condition: float, slowdown: float = 17.0, stop: float = 30.0) -> float:
    """1 below `slowdown`, linearly down to 0 at `stop`, 0 beyond (and for inf/NaN)."""
    if not np.isfinite(condition) or condition >= stop:
        return 0.0
    if condition <= slowdown:
        return 1.0
    return float((stop - condition) / (stop - slowdown))


def _towards(c_from: float, c_to: float) -> bool:
    """Does a move from condition number c_from to c_to approach a singularity? A relative margin
    keeps rounding noise (e.g. a base rotation, which leaves it unchanged) from counting."""
    if not np.isfinite(c_to):
        return True
    return np.isfinite(c_from) and c_to > c_from * (1.0 + 1e-9)


def _braking_speed(distance: np.ndarray, accel: np.ndarray, dt: float) -> np.ndarray:
    """Largest speed v towards a bound `distance` away such that after moving v*dt this period the
    joint can still stop before the bound by decelerating at `accel`: v*dt + v^2/(2a) <= d."""
    d = np.maximum(distance, 0.0)
    a_dt = accel * dt
    return -a_dt + np.sqrt(a_dt * a_dt + 2.0 * accel * d)


@dataclass(frozen=True)
class SafetyEnvelope:
    """Limits + workspace + singularity handling for one embodiment.

    kinematics is optional: without it the workspace and singularity checks are skipped (and
    `has_kinematics` is False so callers can say so); every joint-space check still runs.
    """

    limits: JointLimitSet
    config: SafetyConfig = field(default_factory=SafetyConfig)
    arms: tuple[ArmFrames, ...] = ()
    kinematics: FrameKinematics | None = None

    def __post_init__(self) -> None:
        if abs(self.config.position_margin_rad - self.limits.position_margin_rad) > 1e-12:
            raise ValueError(
                f"SafetyConfig.position_margin_rad={self.config.position_margin_rad} differs from the "
                f"limits' margin {self.limits.position_margin_rad}; build both from the same value"
            )
        if self.kinematics is not None and tuple(self.kinematics.joint_names) != self.limits.joint_names:
            raise ValueError(
                f"kinematics joint order {tuple(self.kinematics.joint_names)} differs from the limits' "
                f"{self.limits.joint_names}"
            )

    @classmethod
    def from_embodiment(
        cls, spec: EmbodimentSpec, kinematics: FrameKinematics | None = None, config: SafetyConfig | None = None
    ) -> "SafetyEnvelope":
        config = config or SafetyConfig()
        limits = JointLimitSet.from_embodiment(spec, position_margin_rad=config.position_margin_rad)
        arms, start = [], 0
        for arm in spec.arms:
            n = len(arm.joint_names)
            arms.append(ArmFrames(arm.name, arm.base_frame, arm.tool_frame, tuple(range(start, start + n)),
                                  arm.workspace_min_m, arm.workspace_max_m))
            start += n
        return cls(limits=limits, config=config, arms=tuple(arms), kinematics=kinematics)

    @property
    def has_kinematics(self) -> bool:
        return self.kinematics is not None

    # ------------------------------------------------------------------ whole chunk
    def validate_chunk(self, positions: np.ndarray, period_s: float, q_start: np.ndarray | None = None,
                       singularity: bool = True) -> ChunkVerdict:
        """Check joint targets (T, n) meant to be reached at 0, period_s, 2 period_s, ...

        singularity: apply the singularity slow-down (meant for chunks that came from Cartesian
        actions, where IK near a singularity turns small tool motions into large joint motions; a
        joint-space chunk says exactly how the joints move and is only rate-limited).

        q_start: the position the arm is commanded to be at when the chunk starts; the jump from it
        to step 0 is checked against max_step_rad (velocity is not: the chunk's start time relative
        to the current command is the scheduler's business).
        """
        lim = self.limits
        names = lim.joint_names
        q = np.asarray(positions, dtype=np.float64)
        if q.ndim != 2 or q.shape[1] != lim.num_joints:
            raise ValueError(f"chunk positions must have shape (steps, {lim.num_joints}), got {q.shape}")
        if not (np.isfinite(period_s) and period_s > 0.0):
            raise ValueError(f"period_s must be a positive finite number, got {period_s}")
        violations: list[Violation] = []
        bad = np.argwhere(~np.isfinite(q))
        for i, j in bad:
            violations.append(Violation(NON_FINITE, int(i), names[j], float(q[i, j]), float("nan"), "rad"))
        if q_start is not None:
            q_start = np.asarray(q_start, dtype=np.float64).reshape(-1)
            if q_start.shape != (lim.num_joints,) or not np.all(np.isfinite(q_start)):
                raise ValueError(f"q_start must be ({lim.num_joints},) finite, got {q_start}")
        if violations:
            # Nothing else is meaningful on non-finite numbers.
            return ChunkVerdict(False, tuple(violations), 1.0)

        lo, hi = lim.inner_lower_rad, lim.inner_upper_rad
        for i, j in np.argwhere(q < lo):
            violations.append(Violation(POSITION, int(i), names[j], float(q[i, j]), float(lo[j]), "rad"))
        for i, j in np.argwhere(q > hi):
            violations.append(Violation(POSITION, int(i), names[j], float(q[i, j]), float(hi[j]), "rad"))

        seq = q if q_start is None else np.vstack([q_start, q])
        offset = 0 if q_start is None else 1  # step index of the row a jump arrives at
        jumps = np.abs(np.diff(seq, axis=0))
        for k, j in np.argwhere(jumps > self.config.max_step_rad):
            violations.append(Violation(JUMP, int(k + 1 - offset), names[j], float(jumps[k, j]),
                                        self.config.max_step_rad, "rad"))

        time_scale = 1.0
        if q.shape[0] >= 2:
            # Huge (finite) garbage overflows to inf here, which correctly means "refuse".
            with np.errstate(over="ignore", invalid="ignore"):
                time_scale = self._rate_violations(q, period_s, violations)
        violations.extend(self._workspace_violations(q))
        if singularity:
            time_scale = max(time_scale, self._singularity_time_scale(q, violations))
        return ChunkVerdict(not violations, tuple(violations), time_scale if not violations else 1.0)

    def _rate_violations(self, q: np.ndarray, period_s: float, violations: list[Violation]) -> float:
        """Append velocity/acceleration violations; return the time scale the chunk needs."""
        lim = self.limits
        names = lim.joint_names
        vel = np.diff(q, axis=0) / period_s
        need_v = float(np.max(np.abs(vel) / lim.velocity_rad_s))
        need_a = 0.0
        acc = None
        if q.shape[0] >= 3:
            acc = np.diff(vel, axis=0) / period_s
            need_a = float(np.sqrt(np.max(np.abs(acc) / lim.acceleration_rad_s2)))
        time_scale = max(1.0, need_v, need_a)
        s_max = self.config.max_time_scale
        if time_scale > s_max:
            # Report what even the slowest allowed execution cannot fix, against the limit
            # the chunk would have at its policy period.
            for k, j in np.argwhere(np.abs(vel) > lim.velocity_rad_s * s_max):
                violations.append(Violation(VELOCITY, int(k + 1), names[j], float(vel[k, j]),
                                            float(lim.velocity_rad_s[j] * s_max), "rad/s at the policy period"))
            if acc is not None:
                for k, j in np.argwhere(np.abs(acc) > lim.acceleration_rad_s2 * s_max**2):
                    violations.append(Violation(ACCELERATION, int(k + 1), names[j], float(acc[k, j]),
                                                float(lim.acceleration_rad_s2[j] * s_max**2),
                                                "rad/s^2 at the policy period"))
        return time_scale

    def _singularity_time_scale(self, q: np.ndarray, violations: list[Violation]) -> float:
        """The same slow-down as the streaming limiter, for a whole chunk: every step that moves an
        arm towards a singularity (its condition number grows) must run at most at
        speed_scale(condition) of the speed, i.e. the chunk is stretched by 1/scale; a step at or
        beyond the stop threshold is a violation."""
        if self.kinematics is None or q.shape[0] < 2:
            return 1.0
        conds = [self.condition_numbers(row) for row in q]
        scale = 1.0
        stop = self.config.singularity_stop_condition
        for i in range(1, len(conds)):
            for arm, c1 in conds[i].items():
                c0 = conds[i - 1][arm]
                if not _towards(c0, c1):
                    continue
                s = speed_scale_for_condition(c1, self.config.singularity_slowdown_condition, stop)
                if s <= 0.0:
                    violations.append(Violation(SINGULARITY, i, arm, float(c1), stop, "(Jacobian condition number)"))
                scale = min(scale, s)
        if scale <= 0.0:
            return 1.0
        need = 1.0 / scale
        if need > self.config.max_time_scale:
            violations.append(Violation(SINGULARITY, -1, "chunk", need, self.config.max_time_scale,
                                        "x slow-down near a singularity"))
        return need

    def tool_positions(self, q: np.ndarray) -> dict[str, np.ndarray]:
        """Tool-frame origin of every arm in its base frame, (3,) each. Needs kinematics."""
        if self.kinematics is None:
            raise RuntimeError("SafetyEnvelope has no kinematics; tool positions are unavailable")
        return {a.arm: np.asarray(self.kinematics.frame_pose(q, a.tool_frame, base=a.base_frame))[:3, 3]
                for a in self.arms}

    def _workspace_violations(self, q: np.ndarray) -> list[Violation]:
        if self.kinematics is None:
            return []
        found: list[tuple[int, int, int, Violation]] = []  # (row, arm, axis): the order reported
        axes = ("x", "y", "z")
        for a, arm in enumerate(self.arms):
            p = self._tool_positions(q, arm)
            lo, hi = np.asarray(arm.workspace_min_m, dtype=float), np.asarray(arm.workspace_max_m, dtype=float)
            for i, k in np.argwhere((p < lo) | (p > hi)):
                bound = lo[k] if p[i, k] < lo[k] else hi[k]
                found.append((int(i), a, int(k), Violation(WORKSPACE, int(i), f"{arm.arm}/{axes[k]}",
                                                           float(p[i, k]), float(bound), "m")))
        return [v for *_, v in sorted(found, key=lambda f: f[:3])]

    def _tool_positions(self, q: np.ndarray, arm) -> np.ndarray:
        batch = getattr(self.kinematics, "frame_positions", None)  # RobotKinematics; any FK works per row
        if batch is not None:
            return batch(q, arm.tool_frame, base=arm.base_frame)
        return np.array([np.asarray(self.kinematics.frame_pose(row, arm.tool_frame, base=arm.base_frame))[:3, 3]
                         for row in q]).reshape(len(q), 3)

    # ------------------------------------------------------------------ singularities
    def condition_numbers(self, q: np.ndarray) -> dict[str, float]:
        """2-norm condition number of each arm's 6 x n_arm tool Jacobian (base frame)."""
        if self.kinematics is None:
            return {}
        out = {}
        for arm in self.arms:
            jac = np.asarray(self.kinematics.frame_jacobian(q, arm.tool_frame, base=arm.base_frame))
            sv = np.linalg.svd(jac[:, list(arm.joint_indices)], compute_uv=False)
            out[arm.arm] = float(sv[0] / sv[-1]) if sv[-1] > 0.0 else float("inf")
        return out

    def singularity_scale(self, q_from: np.ndarray, q_to: np.ndarray) -> float:
        """Speed factor for moving q_from -> q_to: scaled by the condition number at q_from for
        every arm whose condition number grows along the move (moving away is never slowed)."""
        if self.kinematics is None:
            return 1.0
        c_from = self.condition_numbers(q_from)
        c_to = self.condition_numbers(q_to)
        scale = 1.0
        for arm, c0 in c_from.items():
            c1 = c_to[arm]
            if _towards(c0, c1):
                scale = min(scale, speed_scale_for_condition(
                    max(c0, c1) if np.isfinite(c1) else c1,
                    self.config.singularity_slowdown_condition, self.config.singularity_stop_condition))
        return scale

    # ------------------------------------------------------------------ streaming limiter
    def limit_step(
        self,
        q_prev: np.ndarray,
        qd_prev: np.ndarray,
        q_target: np.ndarray,
        dt_s: float,
        qd_target: np.ndarray | None = None,
        singularity: bool = True,
        rest_bounds: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> LimitedStep:
        """One command period of the streaming limiter.

        q_prev / qd_prev: the previous command and its velocity (the limiter's own output; they must
        be finite). q_target: where the plan wants to be after dt_s (anything: non-finite targets
        are refused and the limiter brakes to a hold). qd_target: the plan's velocity there, used so
        that a moving target is followed without lag while a standing one is approached without
        overshoot. singularity: apply the singularity slow-down (see validate_chunk).
        rest_bounds: (lowest, highest) position per joint the target still reaches (the rest of its
        plan). A command that lags behind its target (a stalled tick let the target run ahead) and
        catches up must not be faster towards either than it can still stop there: chasing the
        target alone, it overshoots where a decelerating target comes to rest. Applied before the
        acceleration clip, so the acceleration guarantee below still holds.

        Guarantees, by induction from a state at rest inside the margin-shrunk limits: the returned
        position stays inside them, |velocity| <= velocity limit and |velocity - qd_prev| <=
        acceleration limit * dt_s.
        """
        lim = self.limits
        n = lim.num_joints
        if not (np.isfinite(dt_s) and dt_s > 0.0):
            raise ValueError(f"dt_s must be a positive finite number, got {dt_s}")
        q0 = _vector("q_prev", q_prev, n)
        v0 = _vector("qd_prev", qd_prev, n)
        target = np.asarray(q_target, dtype=np.float64).reshape(-1)
        if target.shape != (n,):
            raise ValueError(f"q_target must have shape ({n},), got {target.shape}")
        w = np.zeros(n) if qd_target is None else np.asarray(qd_target, dtype=np.float64).reshape(-1)
        if w.shape != (n,):
            raise ValueError(f"qd_target must have shape ({n},), got {w.shape}")
        rejected = not (np.all(np.isfinite(target)) and np.all(np.isfinite(w)))
        if rejected:
            target, w = q0.copy(), np.zeros(n)
        vmax, amax = lim.velocity_rad_s, lim.acceleration_rad_s2
        lo, hi = lim.inner_lower_rad, lim.inner_upper_rad
        # A bogus or huge plan velocity must not widen the approach band below.
        w = np.clip(w, -vmax, vmax)
        target_c = np.clip(target, lo, hi)

        err = target_c - q0
        v_want = err / dt_s
        # Close the gap no faster than one can still stop on the target (relative to its motion);
        # only the closing side is bounded, so this never pushes the command past the target.
        # Where landing on the target at v_want still lets the joint take the target's velocity w
        # within one period, there is nothing to brake for: follow exactly.
        approach = _braking_speed(np.abs(err), amax, dt_s)
        capped = np.where(err >= 0.0, np.minimum(v_want, w + approach), np.maximum(v_want, w - approach))
        v = np.where(np.abs(v_want - w) <= amax * dt_s, v_want, capped)
        if rest_bounds is not None:
            low = np.asarray(rest_bounds[0], dtype=np.float64).reshape(-1)
            high = np.asarray(rest_bounds[1], dtype=np.float64).reshape(-1)
            if low.shape != (n,) or high.shape != (n,):
                raise ValueError(f"rest_bounds must be two arrays of shape ({n},)")
            if np.all(np.isfinite(low)) and np.all(np.isfinite(high)) and not rejected:
                v = np.clip(v, -_braking_speed(q0 - low, amax, dt_s), _braking_speed(high - q0, amax, dt_s))

        speed_scale = 1.0
        if singularity and self.kinematics is not None and np.any(v != 0.0):
            speed_scale = self.singularity_scale(q0, q0 + v * dt_s)
        # Uniform scaling keeps the direction of motion (the tool path) while slowing down.
        ratio = float(np.max(np.abs(v) / (vmax * speed_scale))) if speed_scale > 0.0 else (
            np.inf if np.any(v != 0.0) else 0.0)
        if ratio > 1.0:
            v = v / ratio if np.isfinite(ratio) else np.zeros(n)
        v = np.clip(v, v0 - amax * dt_s, v0 + amax * dt_s)
        # Position limits win over everything: brake so a stop before the bound stays possible.
        v = np.clip(v, -_braking_speed(q0 - lo, amax, dt_s), _braking_speed(hi - q0, amax, dt_s))
        v = np.clip(v, -vmax, vmax)
        q1 = np.clip(q0 + v * dt_s, lim.lower_rad, lim.upper_rad)
        v = (q1 - q0) / dt_s
        limited = rejected or not np.allclose(q1, target, rtol=0.0, atol=1e-12)
        q1.setflags(write=False)
        v.setflags(write=False)
        return LimitedStep(q1, v, float(speed_scale), bool(limited), bool(rejected))
