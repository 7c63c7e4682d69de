"""ControllerCore: the controller's logic without ROS (time is always passed in).

What it does with an action chunk, in order (any failure -> refusal + HOLD, never motion):
1. gates: the controller must be active, not e-stopped, and have fresh, complete joint_states;
2. stamp: not older than `max_chunk_age_s`, not more than `max_chunk_future_s` ahead of now;
3. names -> action space: the chunk may be in ANY supported space of the embodiment, identified
   unambiguously by its column names (`action_spaces.detect_space`); the config's `action_space`
   is only the policy's default and the space named in the error when nothing matches;
4. joint targets through the ActionAdapter, with the reference pose = the position commanded at
   the chunk's stamp while a motion is executing, else the measured position; IK must succeed
   on every step;
5. the whole chunk through the SafetyEnvelope (limits with margin, jumps, velocity/acceleration at
   the policy period with time-scaling up to `max_time_scale`, workspace box, and for Cartesian
   chunks the slow-down near singularities);
6. the ChunkScheduler blends it into the executing plan; the resulting plan's exact peak velocity
   and acceleration must be within the limits: a blend that is too abrupt is widened (up to
   `max_blend_s`), a chunk curve that is too fast is slowed further (up to `max_time_scale`),
   otherwise the chunk is refused.

"HOLD" means: the plan is replaced by a stop from the currently commanded state at the
acceleration limits, then the final position is held (never a jump, never extrapolation).

Watchdogs and what is published (documented contract for the node):
- joint_states older than `joint_state_timeout_s`, or lacking joints: the controller refuses to
  command. It holds (stop plan) and, for trajectory controllers, sends that stop trajectory once
  and then nothing new until the state is healthy again; forward controllers keep receiving the
  hold positions (which never depend on measurements). Chunks are refused meanwhile. Recovery does
  not resume the old plan: the arm keeps holding until the next chunk.
- chunk stream stops: the plan runs out and holds its last target at rest (never extrapolates).
- e-stop: latched hold until `release_estop`; chunks are refused while latched.
- deactivate: hold; the stop is still published (once for a JTC, streamed until at rest for a
  forward controller), then nothing until activated again.

Bounds: a chunk with more than `max_chunk_points` points, a period outside [min_chunk_period_s,
max_chunk_period_s] (policy period / 10 and x 10 by default) or lasting more than
`max_chunk_duration_s` is refused before any work on it.

Time: inside the core every time is on the plan clock (clock - a whole-second origin for absolute
clocks; see `_plan_time`), so plans at wall-clock times keep sub-nanosecond resolution.

Threads: `submit_chunk` decides at one instant; `decide_chunk` splits the decision into a snapshot
and a commit under the caller's lock and the expensive middle outside it (see there).

Output: for `joint_trajectory` arms a window of the plan (positions + velocities, strictly
increasing times, first point `start_lead_s` after the stamp, ending in a braking tail within the
acceleration and position limits, zero final velocity, stamp = now, the controller's bare names and order)
whenever a chunk is accepted / a hold starts, and at `replan_rate_hz` while moving (near the
plan's end, a one-point at-rest trajectory stamped 0, unless the plan is running out and the last
window sent already ends at rest on its final position: a JTC holds that, and a new trajectory
would restart from the measured state); for
`forward_position` arms one position vector per tick (`command_rate_hz`), through the streaming
limiter; gripper joint positions (GripperSpec mapping) whenever they change and at the replan rate.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from vla_ros.core.action_spaces import ActionAdapter, ActionSpaceError, detect_space
from vla_ros.core.embodiment import EmbodimentSpec
from vla_ros.core.kinematics import RobotKinematics
from vla_ros.core.safety import SafetyConfig, SafetyEnvelope
from vla_ros.core.scheduler import ChunkScheduler, MergeResult, Plan
from vla_ros.core.types import ActionChunk

_log = logging.getLogger(__name__)
# A measured joint further than this outside its limits is treated as a missing reading.
_MEASURED_LIMIT_TOLERANCE_RAD = 0.2

# Chunks in these spaces get the singularity slow-down (see SafetyEnvelope.validate_chunk).
CARTESIAN_SPACES = ("ee_delta", "ee_pose")
# Smallest time between trajectory points sent to a JTC; well above the 1 ns of a ROS Duration.
MIN_KNOT_SPACING_S = 1e-3
# Fraction of the acceleration limits a window's braking tail uses (see _trajectories).
TAIL_ACCELERATION_FRACTION = 0.999
# A stop's trajectory (hold, e-stop, fault, refusal) ends with a hold at least this long after its
# stamp. A JTC rejects a stamped trajectory that arrives after its end and then runs the previous
# one on: a stop delayed by an overloaded host, a stalled /clock or the network by up to this long
# is still taken. (Seen: two sim graphs starting on 2 cores delivered a fault hold 0.53 s late,
# past the 0.5 s horizon, and the sim's JTC rejected it.) The extra hold point costs nothing: a
# JTC holds a trajectory's last point anyway.
STOP_MIN_END_S = 3.0
# Clocks below this many seconds are used as they are (float spacing < 0.25 ns there); larger ones
# (the wall clock, ~1.8e9 s, spacing ~0.24 us) get a whole-second origin subtracted at the boundary.
_ABSOLUTE_CLOCK_S = 2.0**20
# Publish->arrival delays remembered for the start lead, and the quantile it covers.
_DELAY_SAMPLES = 200
_DELAY_QUANTILE = 0.99

# Controller states reported in diagnostics.
INACTIVE = "inactive"
WAITING_FOR_STATE = "waiting_for_joint_states"
HOLDING = "holding"
EXECUTING = "executing"
ESTOP = "estop"
FAULT = "fault"


@dataclass(frozen=True)
class ControllerConfig:
    """Controller parameters (ROS parameters of the node with the same names).

    command_rate_hz: None -> the embodiment's command_rate_hz.
    horizon_s:       length of the trajectory window sent to a JTC (past it, the window brakes to
                     rest within the acceleration limits, so the arm stops safely if the controller
                     goes silent).
    blend_s / max_blend_s: seam blend window, and how far it may be widened for abrupt seams.
    max_chunk_points: longest chunk decided (longer ones are refused before any work on them).
    min_chunk_period_s / max_chunk_period_s: accepted time between a chunk's steps; None -> the
                     embodiment's policy period / 10 and x 10.
    max_chunk_duration_s: longest accepted chunk (first to last step).
    max_start_lead_s: the start lead (how far ahead of its stamp a trajectory's first point, and a
                     new chunk's take-over, is placed) covers the measured publish->arrival delay
                     of the command topic, one command period at least, this at most.
    """

    max_chunk_age_s: float = 1.0
    max_chunk_future_s: float = 0.1
    joint_state_timeout_s: float = 0.2
    replan_rate_hz: float = 20.0
    command_rate_hz: float | None = None
    horizon_s: float = 0.5
    blend_s: float = 0.1
    max_blend_s: float = 0.8
    path_points: int = 20
    max_chunk_points: int = 1000
    min_chunk_period_s: float | None = None
    max_chunk_period_s: float | None = None
    max_chunk_duration_s: float = 30.0
    max_start_lead_s: float = 0.1
    safety: SafetyConfig = field(default_factory=SafetyConfig)

    def __post_init__(self) -> None:
        for attr in ("max_chunk_age_s", "max_chunk_future_s", "joint_state_timeout_s", "replan_rate_hz",
                     "horizon_s", "blend_s", "max_blend_s", "max_chunk_duration_s", "max_start_lead_s"):
            value = getattr(self, attr)
            if not (isinstance(value, (int, float)) and np.isfinite(value) and value > 0.0):
                raise ValueError(f"ControllerConfig.{attr} must be a positive number, got {value!r}")
            object.__setattr__(self, attr, float(value))
        if self.command_rate_hz is not None:
            if not (np.isfinite(self.command_rate_hz) and self.command_rate_hz > 0.0):
                raise ValueError(f"ControllerConfig.command_rate_hz must be > 0 or None, got {self.command_rate_hz}")
            object.__setattr__(self, "command_rate_hz", float(self.command_rate_hz))
        if self.max_blend_s < self.blend_s:
            raise ValueError(f"max_blend_s ({self.max_blend_s}) must be >= blend_s ({self.blend_s})")
        if self.path_points < 2:
            raise ValueError(f"path_points must be >= 2, got {self.path_points}")
        if not (isinstance(self.max_chunk_points, (int, np.integer)) and self.max_chunk_points >= 1):
            raise ValueError(f"ControllerConfig.max_chunk_points must be an integer >= 1, got {self.max_chunk_points!r}")
        for attr in ("min_chunk_period_s", "max_chunk_period_s"):
            value = getattr(self, attr)
            if value is not None:
                if not (isinstance(value, (int, float)) and np.isfinite(value) and value > 0.0):
                    raise ValueError(f"ControllerConfig.{attr} must be a positive number or None, got {value!r}")
                object.__setattr__(self, attr, float(value))
        if (self.min_chunk_period_s is not None and self.max_chunk_period_s is not None
                and self.min_chunk_period_s > self.max_chunk_period_s):
            raise ValueError(f"min_chunk_period_s ({self.min_chunk_period_s}) must be <= max_chunk_period_s "
                             f"({self.max_chunk_period_s})")


@dataclass(frozen=True)
class TrajectoryOut:
    """A JointTrajectory for one arm's JTC: times relative to stamp_s (the plan's clock)."""

    arm: str
    topic: str
    joint_names: tuple[str, ...]  # the controller's bare names, in its order
    stamp_s: float  # 0 = "start on arrival" (used for single-point holds)
    time_from_start_s: np.ndarray  # (P,)
    positions_rad: np.ndarray  # (P, n)
    velocities_rad_s: np.ndarray  # (P, n)


@dataclass(frozen=True)
class PositionOut:
    """One Float64MultiArray for a forward position controller (arm or gripper)."""

    arm: str
    topic: str
    joint_names: tuple[str, ...]
    positions: np.ndarray  # (n,), joint units (rad, or m for prismatic grippers)


@dataclass(frozen=True)
class ChunkDecision:
    accepted: bool
    reason: str
    space: str | None = None
    time_scale: float = 1.0
    blend_s: float = 0.0
    dropped_steps: int = 0


@dataclass(frozen=True)
class ChunkSnapshot:
    """What deciding a chunk reads from the controller, taken atomically (`begin_chunk`): the
    rest of the decision (`prepare_chunk`) needs no lock, and its result is applied only if the
    plan is still this one (`finish_chunk`). Times are on the controller's plan clock."""

    plan: Plan
    version: int
    now_s: float
    q_ref: np.ndarray
    space: str
    stamp_s: float
    lead_s: float = 0.0  # the start lead at the snapshot (from the measured command delays)


@dataclass(frozen=True)
class PreparedChunk:
    """A chunk decided against a snapshot, ready to be committed (`finish_chunk`)."""

    snapshot: ChunkSnapshot
    result: MergeResult
    start_s: float  # where it takes over from the snapshot's plan (plan clock)
    time_scale: float
    blend_s: float
    reason: str
    cartesian: bool
    gripper: np.ndarray
    gripper_times_s: np.ndarray


@dataclass(frozen=True)
class ControllerStatus:
    """Snapshot for diagnostics."""

    state: str
    level: str  # "ok" / "warn" / "error"
    message: str
    values: dict


@dataclass
class _ArmState:
    positions: np.ndarray | None = None  # qualified order of this arm
    received_s: float | None = None
    gripper: float | None = None  # measured, normalised (0 closed .. 1 open); None: not reported
    missing: tuple[str, ...] = ()


class ControllerCore:
    """One embodiment's controller logic. Not thread-safe: every call under one lock (the node's),
    except `prepare_chunk`, which only reads a snapshot (one chunk at a time; see decide_chunk)."""

    def __init__(self, spec: EmbodimentSpec, kinematics: RobotKinematics, config: ControllerConfig | None = None) -> None:
        self.spec = spec
        self.kin = kinematics
        self.config = config or ControllerConfig()
        self.min_chunk_period_s = self.config.min_chunk_period_s or spec.policy_period_s / 10.0
        self.max_chunk_period_s = self.config.max_chunk_period_s or spec.policy_period_s * 10.0
        # The plan clock: every time inside the core is (clock - origin); see _plan_time.
        self.clock_origin_s: float | None = None
        self.envelope = SafetyEnvelope.from_embodiment(spec, kinematics, self.config.safety)
        self.limits = self.envelope.limits
        self.command_rate_hz = self.config.command_rate_hz or spec.command_rate_hz
        self.scheduler = ChunkScheduler(self.limits.num_joints, self.config.blend_s,
                                        acceleration_limits=self.limits.acceleration_rad_s2,
                                        position_limits=(self.limits.inner_lower_rad, self.limits.inner_upper_rad))
        self._adapters: dict[str, ActionAdapter] = {}
        self._default_adapter = self._adapter(spec.action_space)
        self._arm_slices: dict[str, slice] = {}
        start = 0
        for arm in spec.arms:
            self._arm_slices[arm.name] = slice(start, start + len(arm.joint_names))
            start += len(arm.joint_names)
        self._arm_state = {arm.name: _ArmState() for arm in spec.arms}
        self._grippers = [(arm, arm.gripper) for arm in spec.arms if arm.gripper is not None]
        self.active = False
        self.estop_latched = False
        self._fault: str | None = None
        # Why the arm cannot follow for reasons outside joint_states (the driver's own state: a
        # stopped UR program, a Franka reflex); set by the node, treated like stale joint_states.
        self.external_problem: Callable[[], str | None] | None = None
        self._send_now = False
        self._last_sent_s: float | None = None
        # Where the last trajectory sent ends (at rest): a JTC holds that once it has run out.
        self._sent_final: np.ndarray | None = None
        self._cmd: tuple[np.ndarray, np.ndarray] | None = None  # streaming limiter state (q, qd)
        self._stream_lagging = False  # the last streamed command was limited: it is off its plan
        self._cartesian = False  # the executing plan came from a Cartesian chunk
        self._last_tick_s: float | None = None
        self._gripper_times = np.zeros(0)
        self._gripper_values = np.zeros((0, len(self._grippers)))
        self._gripper_sent: np.ndarray | None = None
        self._gripper_sent_s: float | None = None
        self.last_refusal = ""
        self.last_decision: ChunkDecision | None = None
        self.last_chunk_stamp_s: float | None = None
        self.chunks_accepted = 0
        self.chunks_refused = 0
        self.limiter_interventions = 0
        self.gripper_clipped = 0
        self._tick_times: list[float] = []
        self._chunk_times: list[float] = []
        self._plan_version = 0  # bumped whenever the plan is replaced
        self._stopping = False  # the plan is a stop (hold): its windows use the shortest lead
        self._delays: list[float] = []  # measured publish -> arrival delays of trajectories
        self._decide_s_per_point = 0.0  # clock time a chunk decision took, per chunk step
        self.internal_errors = 0
        self.last_internal_error = ""

    # ------------------------------------------------------------------ time
    def _plan_time(self, t_s: float) -> float:
        """Clock time -> plan-clock time. Times inside the core are relative to a whole-second
        origin fixed at the first call when the clock is absolute (the wall clock): as float64
        seconds since 1970 they are only resolved to ~0.24 us, relative ones to far below 1 ns.
        Clocks that start near zero (simulated time, tests) keep origin 0."""
        t = float(t_s)
        if self.clock_origin_s is None:
            self.clock_origin_s = float(math.floor(t)) if math.isfinite(t) and abs(t) >= _ABSOLUTE_CLOCK_S else 0.0
        return t - self.clock_origin_s

    def to_clock(self, plan_time_s: float) -> float:
        """Plan-clock time -> clock time (for plan times such as `scheduler.plan.end_time_s`)."""
        return float(plan_time_s) + (self.clock_origin_s or 0.0)

    def record_command_delay(self, delay_s: float) -> None:
        """A trajectory this controller published arrived `delay_s` after its stamp (the node
        measures its own command topic): the start lead covers the recent p99 of these."""
        d = float(delay_s)
        if math.isfinite(d) and d >= 0.0:
            self._delays.append(d)
            if len(self._delays) > 2 * _DELAY_SAMPLES:
                del self._delays[:-_DELAY_SAMPLES]

    @property
    def command_delay_p99_s(self) -> float | None:
        recent = self._delays[-_DELAY_SAMPLES:]
        return float(np.quantile(recent, _DELAY_QUANTILE)) if recent else None

    @property
    def start_lead_s(self) -> float:
        """How far ahead of its stamp a trajectory's first point lies (and a new chunk takes
        over): a JTC samples a trajectory that arrives after its first point mid-way, so the
        lead is the measured p99 publish->arrival delay x 1.25 + 1 ms, at least one command
        period, at most max_start_lead_s. A trajectory arriving within it continues the motion
        the JTC is running (the plan is unchanged until the lead has passed)."""
        period = 1.0 / self.command_rate_hz
        p99 = self.command_delay_p99_s
        lead = period if p99 is None else max(period, 1.25 * p99 + 1e-3)
        return float(min(lead, max(self.config.max_start_lead_s, period)))

    # ------------------------------------------------------------------ inputs
    def update_joint_state(self, arm: str, names: Sequence[str], positions: Sequence[float], now_s: float) -> None:
        """A joint_states message for `arm` (bare driver names, any order, extra joints ignored)."""
        now_s = self._plan_time(now_s)
        spec_arm = self.spec.arm(arm)
        state = self._arm_state[arm]
        names = [str(n) for n in names]
        values = np.asarray(positions, dtype=np.float64).reshape(-1)
        if values.shape[0] != len(names):
            state.missing = tuple(spec_arm.joint_names)
            _log.debug("joint_states for arm '%s' has %d names but %d positions; ignored", arm, len(names),
                       values.shape[0])
            return
        index = {n: i for i, n in enumerate(names)}
        missing = tuple(j for j in spec_arm.joint_names if j not in index)
        state.missing = missing
        if missing:
            return
        q = values[[index[j] for j in spec_arm.joint_names]]
        if not np.all(np.isfinite(q)):
            state.missing = tuple(j for j, x in zip(spec_arm.joint_names, q) if not np.isfinite(x))
            return
        lo, hi = self.limits.lower_rad[self._arm_slices[arm]], self.limits.upper_rad[self._arm_slices[arm]]
        outside = (q < lo - _MEASURED_LIMIT_TOLERANCE_RAD) | (q > hi + _MEASURED_LIMIT_TOLERANCE_RAD)
        if np.any(outside):
            # A reading no arm can be at (garbage, a unit mix-up): never hold or plan from it.
            state.missing = tuple(f"{j} (at {x:.3f} rad, outside its limits)"
                                  for j, x, o in zip(spec_arm.joint_names, q, outside) if o)
            return
        state.positions = q
        state.received_s = float(now_s)
        gripper = spec_arm.gripper
        if gripper is not None and gripper.joint_name in index:
            g = float(values[index[gripper.joint_name]])
            state.gripper = float(np.clip(gripper.from_joint(g), 0.0, 1.0)) if math.isfinite(g) else None

    def measured_positions(self) -> np.ndarray | None:
        parts = [self._arm_state[a.name].positions for a in self.spec.arms]
        if any(p is None for p in parts):
            return None
        return np.concatenate(parts)

    def _state_problem(self, now_s: float) -> str | None:
        for arm in self.spec.arms:
            st = self._arm_state[arm.name]
            if st.missing:
                return f"joint_states on '{arm.joint_states_topic}' lacks joints {list(st.missing)}"
            if st.received_s is None:
                return f"no joint_states received yet on '{arm.joint_states_topic}'"
            age = now_s - st.received_s
            if age > self.config.joint_state_timeout_s:
                return (f"joint_states on '{arm.joint_states_topic}' are stale: last {age:.3f} s ago "
                        f"> joint_state_timeout_s {self.config.joint_state_timeout_s}")
        if self.external_problem is not None:
            return self.external_problem()
        return None

    # ------------------------------------------------------------------ lifecycle / e-stop
    def activate(self, now_s: float) -> None:
        """Start commanding: hold where the arm and its grippers are measured (once joint_states
        are there). The gripper command of an earlier activation is forgotten: between the two
        an operator, or a simulation's episode reset, may have opened the gripper, and re-sending
        the old close would shut it again. (Seen: every recorded demonstration began with the
        gripper closing for up to 0.7 s on the previous episode's grasp command.)"""
        now_s = self._plan_time(now_s)
        self._gripper_times = np.zeros(0)
        self._gripper_values = np.zeros((0, len(self._grippers)))
        self.active = True
        self._fault = None
        self._cmd = None
        self._last_sent_s = None
        self._gripper_sent = None
        self._gripper_sent_s = None
        self._init_hold(now_s)

    def deactivate(self, now_s: float) -> None:
        """Stop commanding: hold (the stop is still published until at rest)."""
        now_s = self._plan_time(now_s)
        if self.scheduler.plan is not None:
            self._hold(now_s)
        self.active = False

    def estop(self, now_s: float) -> None:
        now_s = self._plan_time(now_s)
        self.estop_latched = True
        if self.scheduler.plan is not None:
            self._hold(now_s)

    def release_estop(self, now_s: float) -> tuple[bool, str]:
        if not self.estop_latched:
            return True, "e-stop was not latched"
        self.estop_latched = False
        return True, "e-stop released; holding until the next chunk"

    def _init_hold(self, now_s: float) -> bool:
        q = self.measured_positions()
        if q is None or self._state_problem(now_s) is not None:
            return False
        self.scheduler.hold(q, now_s)
        self._plan_version += 1
        self._cmd = (q.copy(), np.zeros_like(q))
        self._sent_final = None  # whatever the JTC was given before is unknown: send the hold
        self._send_now = True  # ... on this tick: a plan at rest is otherwise never (re)sent
        self._set_gripper_hold()
        return True

    def _set_gripper_hold(self) -> None:
        """Hold the grippers at their last command; with none since activation, where measured."""
        current = self._gripper_current(None)
        if current is None and self._grippers:
            measured = [self._arm_state[arm.name].gripper for arm, _ in self._grippers]
            current = None if any(g is None for g in measured) else np.array(measured, dtype=np.float64)
        self._gripper_times = np.zeros(0)
        self._gripper_values = np.zeros((0, len(self._grippers))) if current is None else current[None, :]

    def hold(self, now_s: float) -> None:
        """Stop from the commanded state at the acceleration limits and hold (published on the
        next tick); the plan is dropped. No-op before the first joint_states."""
        self._hold(self._plan_time(now_s))

    def resend(self) -> None:
        """Send the current plan again on the next tick (its window, or the hold it ends in), as it
        is: for a trajectory controller that may have missed it. Nothing is replanned."""
        if self.scheduler.plan is not None:
            self._send_now = True

    def _hold(self, now_s: float) -> None:
        if self.scheduler.plan is None:
            return
        if self._cmd is not None and self._forward_arms():
            # The streamed (rate-limited) command is the commanded state for forward controllers.
            self.scheduler.stop(now_s, *self._cmd)
        else:
            self.scheduler.stop(now_s)
        self._plan_version += 1
        self._stopping = True
        g = self._gripper_current(now_s)
        self._gripper_times = np.zeros(0)
        self._gripper_values = self._gripper_values[:0] if g is None else g[None, :]
        self._send_now = True

    # ------------------------------------------------------------------ chunks
    def _adapter(self, space: str) -> ActionAdapter:
        if space not in self._adapters:
            self._adapters[space] = ActionAdapter(self.spec, self.kin, space)
        return self._adapters[space]

    def _refuse(self, reason: str, now_s: float, hold: bool = True) -> ChunkDecision:
        self.chunks_refused += 1
        self.last_refusal = reason
        # The node logs refusals with its own logger; here only for debugging without ROS.
        _log.debug("action chunk refused: %s", reason)
        if hold and self.active:
            self._hold(now_s)
        decision = ChunkDecision(False, reason)
        self.last_decision = decision
        return decision

    def _names_mismatch(self, names: Sequence[str]) -> str:
        """Why `names` fit no action space, worded against the embodiment's default space."""
        try:
            self._default_adapter.check_names(names)
        except ActionSpaceError as err:
            return f"{err}; no other supported action space matches either"
        return f"action names {list(names)} match no supported action space"

    def refuse(self, reason: str, now_s: float) -> ChunkDecision:
        """Refuse a chunk that could not even be decoded (malformed message): counted, logged,
        and the arm holds like for any other refusal."""
        return self._refuse(reason, self._plan_time(now_s), hold=True)

    def internal_error(self, where: str, err: BaseException, now_s: float) -> ChunkDecision:
        """The last-resort guard of the node's callbacks: an exception escaped the logic above
        (a bug). Counted and reported; the arm holds (stop from the commanded state); a chunk
        being decided is refused."""
        self.internal_errors += 1
        self.last_internal_error = f"{where}: {type(err).__name__}: {err}"
        return self._refuse(f"internal error in {self.last_internal_error}", self._plan_time(now_s), hold=True)

    def submit_chunk(self, chunk: ActionChunk, now_s: float) -> ChunkDecision:
        """Validate and schedule a chunk; on any problem refuse it (and hold). Everything at one
        instant (`begin_chunk` + `prepare_chunk` + `finish_chunk`); see `decide_chunk` for the
        same with the heavy part outside a lock."""
        snapshot = self.begin_chunk(chunk, now_s)
        if isinstance(snapshot, ChunkDecision):
            return snapshot
        decision = self.finish_chunk(self.prepare_chunk(snapshot, chunk), now_s)
        assert decision is not None  # at one instant a prepared chunk is never late
        return decision

    def decide_chunk(self, chunk: ActionChunk, clock: Callable[[], float], lock: threading.RLock,
                     attempts: int = 3, prepare: Callable[..., PreparedChunk | str] | None = None) -> ChunkDecision:
        """`submit_chunk` for a multi-threaded node: the gates and the snapshot (`begin_chunk`)
        and the commit (`finish_chunk`) under `lock`, the expensive middle (IK, validation, plan
        fitting) outside it, so that e-stops, ticks and joint_states never wait for a chunk.

        The chunk takes over `start_lead_s` plus the expected decision time after the snapshot;
        a decision that finishes later than that (the plan would already have changed) is redone
        with twice the time it took, at most `attempts` times, then refused.

        `prepare(snapshot, chunk, extra_lead_s)`: who runs the middle part (default: this core's
        `prepare_chunk`, in this thread; the node may hand it to a worker process)."""
        prepare = prepare or self.prepare_chunk
        extra = 1.5 * self._decide_s_per_point * chunk.num_steps
        spent = 0.0
        for _ in range(attempts):
            with lock:
                t0 = clock()
                snapshot = self.begin_chunk(chunk, t0)
            if isinstance(snapshot, ChunkDecision):
                return snapshot
            prepared = prepare(snapshot, chunk, extra)
            with lock:
                t1 = clock()
                decision = self.finish_chunk(prepared, t1)
            spent = max(t1 - t0, 0.0)
            if decision is not None:
                rate = spent / chunk.num_steps
                self._decide_s_per_point = max(rate, 0.8 * self._decide_s_per_point)
                return decision
            extra = max(2.0 * spent, 2.0 * extra)
            self._decide_s_per_point = max(self._decide_s_per_point, spent / chunk.num_steps)
        with lock:
            return self._refuse(f"could not decide the chunk before its take-over time ({attempts} attempts, "
                                f"the last took {spent:.3f} s)", self._plan_time(clock()))

    def chunk_bounds_problem(self, num_points: int, period_s: float | None = None) -> str | None:
        """Why a chunk of this size / period is refused before any work on it (None: fine)."""
        if num_points > self.config.max_chunk_points:
            return f"chunk has {num_points} points > max_chunk_points {self.config.max_chunk_points}"
        if period_s is None or num_points < 2:
            return None
        if not (self.min_chunk_period_s - 1e-9 <= period_s <= self.max_chunk_period_s + 1e-9):
            return (f"chunk period {period_s:.9g} s is outside [{self.min_chunk_period_s:.6g}, "
                    f"{self.max_chunk_period_s:.6g}] s (min_chunk_period_s / max_chunk_period_s, from the "
                    f"policy period {self.spec.policy_period_s} s)")
        duration = (num_points - 1) * period_s
        if duration > self.config.max_chunk_duration_s:
            return f"chunk lasts {duration:.6g} s > max_chunk_duration_s {self.config.max_chunk_duration_s}"
        return None

    def begin_chunk(self, chunk: ActionChunk, now_s: float) -> ChunkSnapshot | ChunkDecision:
        """The cheap gates (active, e-stop, joint_states, size/period/duration bounds, stamp,
        names) and a snapshot to decide the chunk against; a refusal is returned as a decision
        (and the arm holds). Call under the node's lock."""
        now_s = self._plan_time(now_s)
        if not self.active:
            return self._refuse("controller is not active", now_s, hold=False)
        if self.estop_latched:
            return self._refuse("e-stop is latched (call ~/release_estop)", now_s)
        problem = self._state_problem(now_s)
        if problem is not None:
            return self._refuse(f"cannot command: {problem}", now_s)
        if self.scheduler.plan is None and not self._init_hold(now_s):
            return self._refuse("cannot command: no complete joint_states yet", now_s)
        problem = self.chunk_bounds_problem(chunk.num_steps, chunk.period_s)
        if problem is not None:
            return self._refuse(problem, now_s)
        if not math.isfinite(chunk.stamp_s):
            return self._refuse(f"chunk stamp {chunk.stamp_s} is not a finite time", now_s)
        stamp = self._plan_time(chunk.stamp_s)
        age = now_s - stamp
        if age > self.config.max_chunk_age_s:
            return self._refuse(f"stale chunk: stamp is {age:.3f} s old > max_chunk_age_s "
                                f"{self.config.max_chunk_age_s}", now_s)
        if -age > self.config.max_chunk_future_s:
            return self._refuse(f"chunk stamp is {-age:.3f} s in the future > max_chunk_future_s "
                                f"{self.config.max_chunk_future_s} (clocks out of sync? use_sim_time?)", now_s)
        space = detect_space(self.spec, chunk.names)
        if space is None:
            return self._refuse(self._names_mismatch(chunk.names), now_s)
        plan = self.scheduler.plan
        q_ref = plan.sample(stamp)[0] if self.scheduler.is_moving(now_s) else self.measured_positions()
        return ChunkSnapshot(plan, self._plan_version, now_s, np.array(q_ref), space, stamp, self.start_lead_s)

    def prepare_chunk(self, snapshot: ChunkSnapshot, chunk: ActionChunk,
                      extra_lead_s: float = 0.0) -> PreparedChunk | str:
        """The expensive part of a decision (joint targets through IK, the safety envelope, the
        plan fit), against `snapshot` only: no state of the controller changes, so it may run
        without the lock (one chunk at a time). Returns the prepared merge or the refusal reason."""
        space, q_ref = snapshot.space, snapshot.q_ref
        try:
            targets = self._adapter(space).to_joint_targets(chunk, q_ref)
        except ActionSpaceError as err:
            return str(err)
        if not np.all(targets.ik_success):
            bad = np.flatnonzero(~targets.ik_success)
            return (f"IK failed for steps {bad.tolist()} (position error up to "
                    f"{float(np.max(targets.ik_position_error_m[bad])):.4f} m, orientation error up to "
                    f"{float(np.max(targets.ik_orientation_error_rad[bad])):.4f} rad)")
        cartesian = space in CARTESIAN_SPACES
        verdict = self.envelope.validate_chunk(targets.positions, chunk.period_s, q_start=q_ref,
                                               singularity=cartesian)
        if not verdict.ok:
            return f"unsafe chunk: {verdict.reason}"
        start_s = snapshot.now_s + snapshot.lead_s + max(float(extra_lead_s), 0.0)
        proposal = self._fit_plan(snapshot, chunk.num_steps, chunk.period_s, targets.positions,
                                  verdict.time_scale, start_s)
        if isinstance(proposal, str):
            return proposal
        result, scale, blend = proposal
        gripper = np.asarray(targets.gripper, dtype=np.float64)
        times = snapshot.stamp_s + np.arange(chunk.num_steps) * chunk.period_s * scale
        reason = verdict.reason if scale == verdict.time_scale else f"ok, slowed down by x{scale:.3f}"
        return PreparedChunk(snapshot, result, start_s, scale, blend, reason, cartesian, gripper, times)

    def finish_chunk(self, prepared: PreparedChunk | str, now_s: float) -> ChunkDecision | None:
        """Apply a prepared chunk atomically (call under the node's lock): refused if the
        controller stopped meanwhile (e-stop, fault, deactivation: the plan was replaced), None
        if the take-over time has already passed (decide again with a longer lead)."""
        now_s = self._plan_time(now_s)
        if isinstance(prepared, str):
            return self._refuse(prepared, now_s)
        if not self.active:
            return self._refuse("controller is not active", now_s, hold=False)
        if self.estop_latched:
            return self._refuse("e-stop is latched (call ~/release_estop)", now_s)
        problem = self._state_problem(now_s)
        if problem is not None:
            return self._refuse(f"cannot command: {problem}", now_s)
        if prepared.snapshot.version != self._plan_version:
            return self._refuse("the plan changed while the chunk was being decided (a hold, e-stop or "
                                "another chunk came first)", now_s)
        if now_s > prepared.start_s:
            return None
        result = prepared.result
        self.scheduler.commit(result.plan)
        self._plan_version += 1
        self._stopping = False
        self._cartesian = prepared.cartesian
        gripper = prepared.gripper
        if gripper.size and (np.any(gripper < 0.0) or np.any(gripper > 1.0)):
            # Normalised commands saturate at open/closed (the documented gripper convention);
            # counted so that a policy that lives outside [0, 1] shows in diagnostics.
            self.gripper_clipped += 1
        keep = result.first_step
        self._gripper_times = prepared.gripper_times_s[keep:]
        self._gripper_values = np.clip(gripper[keep:], 0.0, 1.0)
        self._send_now = True
        self.chunks_accepted += 1
        self.last_chunk_stamp_s = self.to_clock(prepared.snapshot.stamp_s)
        self._chunk_times = (self._chunk_times + [now_s])[-50:]
        decision = ChunkDecision(True, prepared.reason, prepared.snapshot.space, prepared.time_scale,
                                 prepared.blend_s, result.dropped_steps)
        self.last_decision = decision
        return decision

    def _fit_plan(self, snapshot: ChunkSnapshot, num_steps: int, period_s: float, positions: np.ndarray,
                  scale: float, start_s: float):
        """Find the smallest slow-down, and for it the shortest blend window, whose plan (from now
        on) respects the velocity and acceleration limits exactly (`Plan.peak_rates`).

        Blends double from blend_s to max_blend_s; when none fits, the chunk is slowed by the
        factor the best candidate still needs (velocity ratio, or the square root of the
        acceleration ratio), up to max_time_scale. Returns (MergeResult, scale, blend) or the
        refusal reason.
        """
        vmax, amax = self.limits.velocity_rad_s, self.limits.acceleration_rad_s2
        s_max = self.config.safety.max_time_scale
        steps = np.arange(num_steps)
        now_s = snapshot.now_s
        blends = []
        blend = self.config.blend_s
        while blend <= self.config.max_blend_s + 1e-9:
            blends.append(blend)
            blend *= 2.0
        problem = ""
        for _ in range(8):
            times = snapshot.stamp_s + steps * period_s * scale
            best = np.inf
            for blend in blends:
                result = self.scheduler.propose(times, positions, now_s, blend, start_s=start_s, plan=snapshot.plan)
                peak_v, peak_a = result.plan.peak_rates(from_s=now_s)
                ratios = np.maximum(peak_v / vmax, np.sqrt(peak_a / amax))
                need = float(np.max(ratios))
                if need <= 1.0 + 1e-9:
                    return result, scale, blend
                if need < best:
                    best = need
                    j = int(np.argmax(ratios))
                    problem = (f"joint {self.limits.joint_names[j]} peaks at {peak_v[j]:.3f} rad/s (limit "
                               f"{vmax[j]:.3f}) and {peak_a[j]:.2f} rad/s^2 (limit {amax[j]:.2f})")
            if scale >= s_max - 1e-9:
                break
            scale = min(s_max, scale * max(best, 1.05))
        return (f"unsafe chunk: no slow-down up to max_time_scale {s_max} with a blend up to max_blend_s "
                f"{self.config.max_blend_s} s keeps its interpolated motion within the limits: {problem}")

    # ------------------------------------------------------------------ output
    def _forward_arms(self):
        return [a for a in self.spec.arms if a.command.kind == "forward_position"]

    def tick(self, now_s: float, stream: bool = True) -> list[TrajectoryOut | PositionOut]:
        """The commands due at now_s. Call from a timer at command_rate_hz when any arm has a
        forward controller, else at least at replan_rate_hz; also right after submit_chunk /
        estop with stream=False, which sends what is urgent (trajectories, grippers) without an
        extra forward command that would break the stream's regular period."""
        stamp_s = float(now_s)
        now_s = self._plan_time(now_s)
        out: list[TrajectoryOut | PositionOut] = []
        if stream:
            self._tick_times.append(now_s)
            if len(self._tick_times) > 200:
                del self._tick_times[:100]
        if self.scheduler.plan is None:
            if not (self.active and self._init_hold(now_s)):
                return out
        if self.active:
            problem = self._state_problem(now_s)
            if problem is not None and self._fault is None:
                _log.debug("refusing to command: %s; holding", problem)
                self._fault = problem
                self._hold(now_s)
            elif problem is None and self._fault is not None:
                _log.debug("joint_states healthy again; holding until the next chunk")
                self._fault = None
            elif problem is not None:
                self._fault = problem
        moving = self.scheduler.is_moving(now_s)
        streaming = self.active or moving or (self._cmd is not None and self._cmd_moving(now_s))
        if not streaming and not self._send_now:
            if stream:
                self._last_tick_s = now_s
            return out

        forward = self._forward_arms()
        if forward and stream:
            out.extend(self._stream(now_s, forward))
        trajectory_arms = [a for a in self.spec.arms if a.command.kind == "joint_trajectory"]
        replan_due = self._last_sent_s is None or now_s - self._last_sent_s >= 1.0 / self.config.replan_rate_hz - 1e-9
        fault_silent = self._fault is not None and not self._send_now
        if trajectory_arms and (self._send_now or (moving and replan_due and self.active)) and not fault_silent:
            out.extend(self._trajectories(now_s, trajectory_arms, stamp_s))
            self._last_sent_s = now_s
        gripper_due = (self._gripper_sent_s is None
                       or now_s - self._gripper_sent_s >= 1.0 / self.config.replan_rate_hz - 1e-9)
        if self.active:
            out.extend(self._gripper_outputs(now_s, gripper_due or self._send_now))
        self._send_now = False
        if stream:
            self._last_tick_s = now_s
        return out

    def _cmd_moving(self, now_s: float) -> bool:
        q, v = self._cmd
        target = self.scheduler.sample(now_s)[0]
        return bool(np.any(v != 0.0) or np.any(np.abs(q - target) > 1e-12))

    def _stream(self, now_s: float, arms) -> list[PositionOut]:
        q_target, v_target = self.scheduler.sample(now_s)
        period = 1.0 / self.command_rate_hz
        # The real elapsed time (so velocities are true velocities), but never more than a few
        # periods: after a stall the command must not jump by what the stall would have allowed.
        elapsed = period if self._last_tick_s is None else max(now_s - self._last_tick_s, 1e-6)
        dt = min(elapsed, 5 * period)
        if self._cmd is None:
            self._cmd = (q_target.copy(), np.zeros_like(q_target))
        q_prev, v_prev = self._cmd
        rest = None
        if self._stream_lagging:
            # The command is off its plan (a stalled tick, a limited step): bound its approach by
            # where the plan still goes, so that catching up never overshoots the plan's rest.
            rest = self._plan_rest_bounds(now_s)
        step = self.envelope.limit_step(q_prev, v_prev, q_target, dt, qd_target=v_target,
                                        singularity=self._cartesian, rest_bounds=rest)
        self._stream_lagging = bool(step.limited)
        if step.limited and not np.allclose(step.position_rad, q_target, atol=1e-6):
            self.limiter_interventions += 1
        # The velocity the next step's acceleration bound starts from. On the plan: the plan's
        # own (feasible) velocity. Off it: the step's true velocity -- after a stall the step was
        # sized for dt but took `elapsed`. (From the step's mean velocity over a stall, or from
        # step / dt, the command could not slow down in time and ran up to 30 mrad past the
        # plan's rest when it stopped: replayed with 5-20 % stalled ticks of up to 110 ms.)
        velocity = np.array(step.velocity_rad_s) * (dt / elapsed) if step.limited else np.clip(
            np.asarray(v_target, dtype=np.float64), -self.limits.velocity_rad_s, self.limits.velocity_rad_s)
        self._cmd = (np.array(step.position_rad), velocity)
        return [PositionOut(a.name, a.command.topic, a.command.joint_names,
                            np.array(step.position_rad[self._arm_slices[a.name]])) for a in arms]

    def _plan_rest_bounds(self, now_s: float, resolution_s: float = 0.01,
                          max_samples: int = 3000) -> tuple[np.ndarray, np.ndarray]:
        """Lowest and highest position per joint of the plan from now_s to its end (sampled every
        `resolution_s`, its end included; the plan holds its final position after that)."""
        plan = self.scheduler.plan
        end = max(plan.end_time_s, now_s)
        n = int(min(max_samples, max(2, math.ceil((end - now_s) / resolution_s) + 1)))
        qs = plan.sample(np.linspace(now_s, end, n))[0]
        return qs.min(axis=0), qs.max(axis=0)

    def _trajectories(self, now_s: float, arms, stamp_s: float) -> list[TrajectoryOut]:
        """Windows of the plan at plan time now_s, stamped stamp_s (the same instant on the clock)."""
        plan = self.scheduler.plan
        # A stop (hold, e-stop, fault, refusal) takes effect one command period after its stamp:
        # stopping promptly matters more than a seamless takeover. Motion gets the start lead.
        lead = 1.0 / self.command_rate_hz if self._stopping else self.start_lead_s
        horizon = max(self.config.horizon_s, 2.0 * lead)
        stamp = stamp_s
        if now_s + lead >= plan.end_time_s:
            if (not self._send_now and self._sent_final is not None
                    and np.array_equal(self._sent_final, plan.final_position_rad)):
                # A plan running out (a stop is always sent): the trajectory already sent ends at
                # rest on this plan's final position and a JTC holds a trajectory's last point;
                # another one would only restart it from the MEASURED state (a default JTC does),
                # putting the servo's tracking error into the command just as the arm stops.
                return []
            # At rest (or about to be): one point, the final position, stamped 0 ("start on
            # arrival") so that however late it arrives a JTC never finds it ending in the past.
            q = plan.final_position_rad[None, :]
            times, qs, vs = np.array([lead]), q, np.zeros_like(q)
            stamp = 0.0
        else:
            # Past the horizon the window brakes to rest within the limits (`Plan.window`): what a
            # JTC runs to its end if nothing follows.
            # The tail brakes at 99.9 % of the limits: a JTC evaluates it on float times with
            # nanosecond-rounded points (at a wall-clock stamp ~1e-6 relative), never above them.
            # A plan ending within the longest possible stop after the horizon goes out whole.
            win = plan.window(now_s, lead, horizon, self.limits.acceleration_rad_s2 * TAIL_ACCELERATION_FRACTION,
                              (self.limits.inner_lower_rad, self.limits.inner_upper_rad),
                              to_end_within_s=float(np.max(self.limits.velocity_rad_s / self.limits.acceleration_rad_s2)))
            times, qs, vs = win.times_s - now_s, win.positions_rad, win.velocities_rad_s
            # A window that ends early (a stop, the end of a chunk) is padded with a hold so that it
            # still ends a full horizon (a stop: STOP_MIN_END_S) after its stamp: a JTC rejects a
            # stamped trajectory that arrives after its end, and a rejected stop would let the
            # previous trajectory run on.
            end = max(horizon, STOP_MIN_END_S) if self._stopping else horizon
            if times[-1] < end:
                # A knot just short of the horizon (float noise of `knot - now`) would give the pad
                # the same time_from_start once stamped in whole nanoseconds, which a JTC rejects.
                times = np.append(times, max(end, times[-1] + MIN_KNOT_SPACING_S))
                qs = np.vstack([qs, qs[-1]])
                vs = np.vstack([vs, np.zeros_like(vs[-1])])
        self._sent_final = qs[-1].copy()
        out = []
        for arm in arms:
            sl = self._arm_slices[arm.name]
            out.append(TrajectoryOut(arm.name, arm.command.topic, arm.command.joint_names, stamp,
                                     times.copy(), qs[:, sl].copy(), vs[:, sl].copy()))
        return out

    def _gripper_current(self, now_s: float | None) -> np.ndarray | None:
        if not self._grippers or self._gripper_values.shape[0] == 0:
            return None
        if now_s is None or self._gripper_times.shape[0] == 0:
            return self._gripper_values[-1] if now_s is None else self._gripper_values[0]
        k = int(np.searchsorted(self._gripper_times, now_s, side="right")) - 1
        return self._gripper_values[max(k, 0)]

    def _gripper_outputs(self, now_s: float, due: bool) -> list[PositionOut]:
        g = self._gripper_current(now_s)
        if g is None:
            return []
        changed = self._gripper_sent is None or np.any(np.abs(g - self._gripper_sent) > 1e-9)
        if not (changed or due) or (self._fault is not None and not changed):
            return []
        out = []
        for (arm, gripper), value in zip(self._grippers, g):
            if gripper.command is None:
                continue
            out.append(PositionOut(arm.name, gripper.command.topic, gripper.command.joint_names,
                                   np.array([gripper.to_joint(value)])))
        self._gripper_sent = g.copy()
        self._gripper_sent_s = now_s
        return out

    def hold_measured(self, now_s: float) -> bool:
        """Hold where the arm is MEASURED now, dropping the plan (published on the next tick): after
        the driver itself stopped the arm (a stopped UR program, a Franka reflex, an aborted
        FollowJointTrajectory goal) the plan's position is not where the arm is. False (nothing
        changed) while joint_states are not healthy. The hold is sent at once: it replaces whatever
        the driver was given while it could not follow."""
        if not self._init_hold(self._plan_time(now_s)):
            return False
        self._send_now = True
        return True

    def gripper_targets(self, now_s: float) -> dict[str, float]:
        """{arm: normalised gripper value the plan commands at now_s} (for action-driven grippers)."""
        g = self._gripper_current(self._plan_time(now_s))
        if g is None:
            return {}
        return {arm.name: float(value) for (arm, _), value in zip(self._grippers, g)}

    # ------------------------------------------------------------------ introspection
    def planned_tool_path(self, now_s: float) -> dict[str, np.ndarray]:
        """{arm: (M, 3)} tool positions in the arm's base frame along the rest of the plan."""
        now_s = self._plan_time(now_s)
        plan = self.scheduler.plan
        if plan is None or not self.envelope.has_kinematics:
            return {}
        end = max(plan.end_time_s, now_s)
        ts = np.linspace(now_s, end, self.config.path_points)
        qs = plan.sample(ts)[0]
        paths = {a.name: np.empty((len(ts), 3)) for a in self.spec.arms}
        for i, q in enumerate(qs):
            for arm, p in self.envelope.tool_positions(q).items():
                paths[arm][i] = p
        return paths

    def state(self, now_s: float) -> str:
        return self._state(self._plan_time(now_s))

    def _state(self, now_s: float) -> str:
        if not self.active:
            return INACTIVE
        if self.estop_latched:
            return ESTOP
        if self._fault is not None or self._state_problem(now_s) is not None:
            return FAULT if self.measured_positions() is not None else WAITING_FOR_STATE
        if self.scheduler.plan is None:
            return WAITING_FOR_STATE
        return EXECUTING if self.scheduler.is_moving(now_s) else HOLDING

    def status(self, now_s: float) -> ControllerStatus:
        clock_now = float(now_s)
        now_s = self._plan_time(now_s)
        state = self._state(now_s)
        problem = (self._state_problem(now_s) or self._fault) if self.active else None
        level = {INACTIVE: "ok", HOLDING: "ok", EXECUTING: "ok", WAITING_FOR_STATE: "warn",
                 ESTOP: "error", FAULT: "error"}[state]
        message = {ESTOP: "e-stop latched", FAULT: f"refusing to command: {problem}",
                   WAITING_FOR_STATE: f"waiting: {problem}"}.get(state, state)
        ticks = np.diff(np.asarray(self._tick_times[-100:]))
        values = {
            "state": state,
            "last_refusal": self.last_refusal,
            "chunks_accepted": self.chunks_accepted,
            "chunks_refused": self.chunks_refused,
            "chunk_age_s": "" if self.last_chunk_stamp_s is None else f"{clock_now - self.last_chunk_stamp_s:.3f}",
            "last_time_scale": "" if self.last_decision is None else f"{self.last_decision.time_scale:.3f}",
            "tick_rate_hz": f"{1.0 / float(np.mean(ticks)):.1f}" if ticks.size and np.mean(ticks) > 0 else "",
            "command_rate_hz": f"{self.command_rate_hz:.1f}",
            "chunk_rate_hz": (f"{(len(self._chunk_times) - 1) / (self._chunk_times[-1] - self._chunk_times[0]):.1f}"
                              if len(self._chunk_times) > 1 and self._chunk_times[-1] > self._chunk_times[0] else ""),
            "limiter_interventions": self.limiter_interventions,
            "gripper_commands_clipped": self.gripper_clipped,
            "start_lead_s": f"{self.start_lead_s:.4f}",
            "command_delay_p99_s": "" if self.command_delay_p99_s is None else f"{self.command_delay_p99_s:.4f}",
            "internal_errors": self.internal_errors,
            "last_internal_error": self.last_internal_error,
        }
        return ControllerStatus(state, level, message, values)
