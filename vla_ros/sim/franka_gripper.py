"""The franka_gripper node's Move / Grasp / Homing on the simulated hand (no rclpy).

Behaviour mirrored from libfranka's `franka::Gripper` as franka_gripper_node exposes it:
- move(width, speed): the fingers go to `width` at `speed` (m/s of the opening); succeeds when
  they get there, fails when something stops them on the way;
- grasp(width, epsilon, speed, force): the fingers close at `speed` until they stop -- on an
  object or fully closed -- and then squeeze with `force` (here: the finger actuator's force
  limit, so the grip is bounded as on the real hand); succeeds when the final opening w satisfies
  `width - epsilon.inner < w < width + epsilon.outer`, otherwise fails (nothing grasped / wrong
  object);
- homing(): opens fully (a real hand also calibrates its width there).
A new operation replaces the running one; `cancel` stops where the fingers are.

All methods are called on the physics thread; `Operation` is read from others (the action
servers) through its `done` event and plain fields.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

from vla_ros.sim.hardware import SimulatedHardware

# Finger speed below which the fingers count as stopped (m/s of the opening width).
STALL_SPEED_M_S = 0.002
STALL_TIME_S = 0.08  # stopped for this long = blocked (move) / grasped (grasp)
REACHED_TOLERANCE_M = 0.002
MIN_OPERATION_TIME_S = 0.05  # before this the fingers are still accelerating


@dataclass
class Operation:
    kind: str  # "move" / "grasp" / "homing"
    width_m: float
    speed_m_s: float
    force_n: float = 0.0
    epsilon_inner_m: float = 0.0
    epsilon_outer_m: float = 0.0
    started_s: float = 0.0
    done: threading.Event = field(default_factory=threading.Event)
    success: bool = False
    error: str = ""
    current_width_m: float = float("nan")
    _stalled_since_s: float | None = None

    def finish(self, success: bool, error: str = "") -> None:
        self.success, self.error = bool(success), error
        self.done.set()


class SimFrankaGripper:
    """One arm's simulated Franka Hand. Widths are openings (2 x the finger joint's travel)."""

    def __init__(self, hw: SimulatedHardware, arm: str) -> None:
        self.hw = hw
        self.arm = arm
        binding = hw.scene.arm(arm)
        if binding.gripper is None:
            raise ValueError(f"arm '{arm}' has no gripper to simulate franka_gripper on")
        self._g = binding.gripper
        self.max_width_m = 2.0 * max(self._g.open_position, self._g.closed_position)
        self.min_width_m = 2.0 * min(self._g.open_position, self._g.closed_position)
        self.operation: Operation | None = None
        self.operations_done = 0

    # ------------------------------------------------------------------ state
    def width_m(self) -> float:
        return 2.0 * float(self.hw.data.qpos[self._g.qpos_adr])

    def width_speed_m_s(self) -> float:
        return 2.0 * float(self.hw.data.qvel[self._g.dof_adr])

    # ------------------------------------------------------------------ operations
    def start(self, op: Operation) -> Operation:
        """Begin `op` now (the running operation, if any, ends as preempted)."""
        if self.operation is not None and not self.operation.done.is_set():
            self.operation.finish(False, f"preempted by a new {op.kind} goal")
        op.started_s = self.hw.time_s
        op.current_width_m = self.width_m()
        if not (np.isfinite(op.speed_m_s) and op.speed_m_s > 0.0):
            op.finish(False, f"speed must be > 0 m/s, got {op.speed_m_s}")
            return op
        if op.kind in ("move", "homing") and not (self.min_width_m - 1e-9 <= op.width_m <= self.max_width_m + 1e-9):
            op.finish(False, f"width {op.width_m:.4f} m is outside the hand's range "
                             f"[{self.min_width_m:.3f}, {self.max_width_m:.3f}] m")
            return op
        if op.kind == "grasp" and not (np.isfinite(op.force_n) and op.force_n > 0.0):
            op.finish(False, f"grasp force must be > 0 N, got {op.force_n}")
            return op
        # the finger joint moves at half the opening's speed
        if op.kind == "grasp":
            self.hw.set_gripper_motion(self.arm, speed=op.speed_m_s / 2.0, force_limit=op.force_n)
            target = self.min_width_m  # close until something stops the fingers
        else:
            self.hw.set_gripper_motion(self.arm, speed=op.speed_m_s / 2.0, force_limit=None)
            target = op.width_m
        self.hw.apply_gripper_command(self.arm, target / 2.0)
        self.operation = op
        return op

    def cancel(self, op: Operation | None = None) -> None:
        """Stop where the fingers are (a cancelled goal). With `op`: only if that operation is still
        the running one (a newer goal may already have replaced it)."""
        if op is not None and op is not self.operation:
            return
        op = self.operation
        if op is not None and not op.done.is_set():
            self.hw.apply_gripper_command(self.arm, self.width_m() / 2.0)
            op.finish(False, "canceled")

    def update(self) -> None:
        """Physics-thread tick: feedback, and the end of the running operation."""
        op = self.operation
        if op is None or op.done.is_set():
            return
        now = self.hw.time_s
        w = self.width_m()
        op.current_width_m = w
        stopped = abs(self.width_speed_m_s()) < STALL_SPEED_M_S
        commanded = 2.0 * self.hw.gripper_goal(self.arm)
        # the rate-limited command has arrived at the goal and the fingers stand still there, or
        # the fingers stand still somewhere else: blocked (move) / holding something (grasp)
        ramp_done = abs(2.0 * float(self.hw.data.ctrl[self._g.actuator_id]) - commanded) < 1e-9
        if not stopped or now - op.started_s < MIN_OPERATION_TIME_S:
            op._stalled_since_s = None
            return
        if op._stalled_since_s is None:
            op._stalled_since_s = now
        if now - op._stalled_since_s < STALL_TIME_S and not (ramp_done and abs(w - commanded) < REACHED_TOLERANCE_M):
            return
        self.operations_done += 1
        if op.kind in ("move", "homing"):
            if abs(w - op.width_m) < REACHED_TOLERANCE_M:
                op.finish(True)
            elif ramp_done or now - op._stalled_since_s >= STALL_TIME_S:
                # stop squeezing whatever blocks the fingers
                self.hw.apply_gripper_command(self.arm, w / 2.0)
                op.finish(False, f"the fingers were blocked at {w:.4f} m before reaching {op.width_m:.4f} m")
            return
        lo, hi = op.width_m - op.epsilon_inner_m, op.width_m + op.epsilon_outer_m
        if lo < w < hi:
            op.finish(True)  # keeps squeezing with the grasp force, as the real hand does
        else:
            op.finish(False, f"grasp failed: the fingers stopped at {w:.4f} m, outside ({lo:.4f}, {hi:.4f}) m "
                             f"({'nothing between them: object missed or slipped' if w <= lo else 'too wide'})")
