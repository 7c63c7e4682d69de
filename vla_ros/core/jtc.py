"""What a ros2_control joint_trajectory_controller (JTC) with default parameters does with a
trajectory it receives on `~/joint_trajectory`: which messages it rejects (and why), when a new
trajectory takes over, and how it interpolates between points.

Message-free on purpose (pure numpy): the simulated hardware uses it so that a trajectory the
sim follows is exactly a trajectory a real JTC would follow, and one it ignores is one a real
JTC would reject. Defaults mirrored (ros2_controllers, 2026):

- `allow_partial_joints_goal: false`, `allow_nonzero_velocity_at_trajectory_end: false`,
  `allow_trajectory_replacement: true`, `interpolation_method: splines`,
  `interpolate_from_desired_state: false`, `open_loop_control: false`, `cmd_timeout: 0`.
- A trajectory starts at `header.stamp`, or on arrival when the stamp is zero. When its first
  point lies after that start, the controller inserts the *measured* state at the moment the
  trajectory takes over as the segment's starting point.
- A trajectory stamped in the past (but ending in the future) takes over on arrival and is sampled
  at the current time: points already past are skipped, as on a real JTC (which can jump; send
  stamp 0 or a future stamp for a smooth start).
- A segment is linear when either end lacks velocities, a cubic Hermite spline when both ends have
  velocities, and a quintic when both ends also have accelerations. After the last point the
  controller holds it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class TrajectoryPoint:
    """One point of an incoming trajectory, in the message's joint order.

    Empty `velocities` / `accelerations` mean "not given", exactly as in trajectory_msgs.
    """

    time_from_start_s: float
    positions: tuple[float, ...]
    velocities: tuple[float, ...] = ()
    accelerations: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "time_from_start_s", float(self.time_from_start_s))
        for attr in ("positions", "velocities", "accelerations"):
            object.__setattr__(self, attr, tuple(float(v) for v in getattr(self, attr)))


@dataclass(frozen=True)
class TrajectoryCommand:
    """A JointTrajectory message without ROS: `stamp_s` 0 means "start on arrival"."""

    joint_names: tuple[str, ...]
    points: tuple[TrajectoryPoint, ...]
    stamp_s: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "joint_names", tuple(str(n) for n in self.joint_names))
        object.__setattr__(self, "points", tuple(self.points))
        object.__setattr__(self, "stamp_s", float(self.stamp_s))


def validate_trajectory(command: TrajectoryCommand, controller_joints: Sequence[str], now_s: float) -> str | None:
    """Return why a default-configured JTC would reject `command`, or None if it accepts it."""
    names = command.joint_names
    joints = tuple(controller_joints)
    if not names:
        return "empty joint_names on incoming trajectory"
    unknown = [n for n in names if n not in joints]
    if unknown:
        return f"incoming joint(s) {unknown} do not match the controller's joints {list(joints)}"
    if len(set(names)) != len(names):
        return f"joint_names contain duplicates: {list(names)}"
    missing = [j for j in joints if j not in names]
    if missing:
        return (
            f"trajectory does not cover joint(s) {missing} and allow_partial_joints_goal is false"
        )
    if not command.points:
        return "empty trajectory received (no points)"
    if command.stamp_s != 0.0:
        end_s = command.stamp_s + command.points[-1].time_from_start_s
        if end_s < now_s:
            return (
                f"received trajectory with non-zero start time {command.stamp_s:.6f} s that ends in the "
                f"past ({end_s:.6f} s < now {now_s:.6f} s)"
            )
    n = len(names)
    for i, p in enumerate(command.points):
        if i > 0 and not p.time_from_start_s > command.points[i - 1].time_from_start_s:
            return (
                f"time_from_start of points {i - 1} and {i} is not strictly increasing "
                f"({command.points[i - 1].time_from_start_s} s, {p.time_from_start_s} s)"
            )
        if len(p.positions) != n:
            return f"point {i} has {len(p.positions)} positions, expected {n} (one per joint name)"
        if p.velocities and len(p.velocities) != n:
            return f"point {i} has {len(p.velocities)} velocities, expected 0 or {n}"
        if p.accelerations and len(p.accelerations) != n:
            return f"point {i} has {len(p.accelerations)} accelerations, expected 0 or {n}"
        if not all(np.isfinite(p.positions + p.velocities + p.accelerations)):
            return f"point {i} contains a non-finite value"
    last = command.points[-1]
    if last.velocities and any(v != 0.0 for v in last.velocities):
        return (
            f"velocity of the last trajectory point is not zero ({list(last.velocities)}) and "
            "allow_nonzero_velocity_at_trajectory_end is false"
        )
    return None


class TrajectoryRejected(ValueError):
    """Raised by `JointTrajectory.from_command` when a real JTC would reject the message."""


@dataclass(frozen=True)
class JointState:
    """A sampled (or measured) state in the controller's joint order."""

    positions: np.ndarray
    velocities: np.ndarray
    accelerations: np.ndarray


@dataclass(frozen=True)
class JointTrajectory:
    """A validated trajectory, reordered to the controller's joints, with absolute times.

    times_s:        (P,) absolute time of every point (start + time_from_start).
    positions:      (P, n).
    velocities:     per point: (n,) array or None when the point had none.
    accelerations:  per point: (n,) array or None.
    """

    start_s: float
    times_s: np.ndarray
    positions: np.ndarray
    velocities: tuple[np.ndarray | None, ...]
    accelerations: tuple[np.ndarray | None, ...]

    @staticmethod
    def from_command(command: TrajectoryCommand, controller_joints: Sequence[str], now_s: float) -> "JointTrajectory":
        reason = validate_trajectory(command, controller_joints, now_s)
        if reason is not None:
            raise TrajectoryRejected(reason)
        order = [command.joint_names.index(j) for j in controller_joints]
        start_s = command.stamp_s if command.stamp_s != 0.0 else float(now_s)
        times = np.array([start_s + p.time_from_start_s for p in command.points])
        positions = np.array([[p.positions[k] for k in order] for p in command.points])
        vels = tuple(np.array([p.velocities[k] for k in order]) if p.velocities else None for p in command.points)
        accs = tuple(
            np.array([p.accelerations[k] for k in order]) if p.accelerations else None for p in command.points
        )
        return JointTrajectory(start_s, times, positions, vels, accs)

    @property
    def end_s(self) -> float:
        return float(self.times_s[-1])


def interpolate_segment(
    t0_s: float,
    p0: np.ndarray,
    v0: np.ndarray | None,
    a0: np.ndarray | None,
    t1_s: float,
    p1: np.ndarray,
    v1: np.ndarray | None,
    a1: np.ndarray | None,
    t_s: float,
) -> JointState:
    """Interpolate one segment as the JTC's `splines` method does.

    Linear if either end lacks velocities, cubic Hermite if both have velocities, quintic if both
    also have accelerations. `t_s` is clamped into [t0_s, t1_s].
    """
    duration = t1_s - t0_s
    if duration <= 0.0:
        raise ValueError(f"segment duration must be positive, got t0={t0_s} t1={t1_s}")
    s = min(max(t_s - t0_s, 0.0), duration)
    p0 = np.asarray(p0, dtype=float)
    p1 = np.asarray(p1, dtype=float)
    zero = np.zeros_like(p0)
    if v0 is None or v1 is None:
        vel = (p1 - p0) / duration
        return JointState(p0 + vel * s, vel, zero)
    v0 = np.asarray(v0, dtype=float)
    v1 = np.asarray(v1, dtype=float)
    T = duration
    if a0 is None or a1 is None:
        c2 = (3.0 * (p1 - p0) - (2.0 * v0 + v1) * T) / T**2
        c3 = (2.0 * (p0 - p1) + (v0 + v1) * T) / T**3
        pos = p0 + v0 * s + c2 * s**2 + c3 * s**3
        vel = v0 + 2.0 * c2 * s + 3.0 * c3 * s**2
        acc = 2.0 * c2 + 6.0 * c3 * s
        return JointState(pos, vel, acc)
    a0 = np.asarray(a0, dtype=float)
    a1 = np.asarray(a1, dtype=float)
    # Quintic with position, velocity and acceleration matched at both ends.
    c0, c1, c2 = p0, v0, 0.5 * a0
    c3 = (20.0 * (p1 - p0) - (8.0 * v1 + 12.0 * v0) * T - (3.0 * a0 - a1) * T**2) / (2.0 * T**3)
    c4 = (-30.0 * (p1 - p0) + (14.0 * v1 + 16.0 * v0) * T + (3.0 * a0 - 2.0 * a1) * T**2) / (2.0 * T**4)
    c5 = (12.0 * (p1 - p0) - 6.0 * (v1 + v0) * T - (a0 - a1) * T**2) / (2.0 * T**5)
    pos = c0 + c1 * s + c2 * s**2 + c3 * s**3 + c4 * s**4 + c5 * s**5
    vel = c1 + 2 * c2 * s + 3 * c3 * s**2 + 4 * c4 * s**3 + 5 * c5 * s**4
    acc = 2 * c2 + 6 * c3 * s + 12 * c4 * s**2 + 20 * c5 * s**3
    return JointState(pos, vel, acc)


class JointTrajectoryController:
    """The JTC's topic interface and update loop, for simulated hardware.

    `receive` is the `~/joint_trajectory` callback; `update` is the controller-manager cycle:
    it takes the measured state and returns the state to command (None while nothing was ever
    commanded, so the hardware keeps whatever it holds).
    """

    def __init__(self, joint_names: Sequence[str]) -> None:
        if not joint_names:
            raise ValueError("JointTrajectoryController needs at least one joint name")
        self.joint_names = tuple(joint_names)
        self._pending: JointTrajectory | None = None
        self._active: JointTrajectory | None = None
        self._before_time_s = 0.0
        self._before_positions = np.zeros(len(self.joint_names))
        self._before_velocities = np.zeros(len(self.joint_names))
        self._hold: JointState | None = None

    def receive(self, command: TrajectoryCommand, now_s: float) -> str | None:
        """Queue `command`; return the rejection reason (and keep the old trajectory) if invalid."""
        try:
            trajectory = JointTrajectory.from_command(command, self.joint_names, now_s)
        except TrajectoryRejected as e:
            return str(e)
        self._pending = trajectory
        return None

    def hold(self, positions: np.ndarray) -> None:
        """Drop every trajectory and hold `positions` (what the controller does on activation)."""
        p = np.asarray(positions, dtype=float).copy()
        if p.shape != (len(self.joint_names),):
            raise ValueError(f"hold positions must have shape ({len(self.joint_names)},), got {p.shape}")
        self._pending = None
        self._active = None
        self._hold = JointState(p, np.zeros_like(p), np.zeros_like(p))

    @property
    def active(self) -> JointTrajectory | None:
        return self._active

    def update(self, now_s: float, measured_positions: np.ndarray, measured_velocities: np.ndarray) -> JointState | None:
        pending = self._pending
        # A queued trajectory replaces the running one from its start time onwards.
        if pending is not None and pending.start_s <= now_s:
            self._active = pending
            self._pending = None
            self._before_time_s = float(now_s)
            self._before_positions = np.asarray(measured_positions, dtype=float).copy()
            self._before_velocities = np.asarray(measured_velocities, dtype=float).copy()
        traj = self._active
        if traj is None:
            return self._hold
        if now_s < traj.times_s[0]:
            v0 = self._before_velocities if traj.velocities[0] is not None else None
            a0 = np.zeros_like(self._before_positions) if traj.accelerations[0] is not None else None
            return interpolate_segment(
                self._before_time_s,
                self._before_positions,
                v0,
                a0,
                float(traj.times_s[0]),
                traj.positions[0],
                traj.velocities[0],
                traj.accelerations[0],
                now_s,
            )
        if now_s >= traj.end_s:
            last = traj.positions[-1]
            self._hold = JointState(last.copy(), np.zeros_like(last), np.zeros_like(last))
            return self._hold
        i = int(np.searchsorted(traj.times_s, now_s, side="right")) - 1
        return interpolate_segment(
            float(traj.times_s[i]),
            traj.positions[i],
            traj.velocities[i],
            traj.accelerations[i],
            float(traj.times_s[i + 1]),
            traj.positions[i + 1],
            traj.velocities[i + 1],
            traj.accelerations[i + 1],
            now_s,
        )
