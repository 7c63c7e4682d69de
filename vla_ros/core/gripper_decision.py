"""Open/close decisions for action-only grippers (the real `franka_gripper`), without ROS.

A grasp on a real Franka Hand is a blocking action that squeezes until the fingers stop on an
object: one goal per command tick would restart it 20-100 times a second. So the chunk's
normalised gripper column (0 = closed ... 1 = open) is turned into a two-state decision with
hysteresis, and a goal is sent only when the decision changes:

    decision "close" once g <= close_below, "open" once g >= open_above, else unchanged.

Width conventions (franka_ros2, libfranka): the gripper reports and is commanded by the opening
WIDTH between the fingers (m); each finger joint (`fr3_finger_joint1/2`) travels width / 2. The
embodiment's gripper joint is one finger, so width = 2 x finger position and
normalised g = (width / 2 - closed_position) / (open_position - closed_position).

control_msgs/GripperCommand (franka_gripper's `~/gripper_action`): `command.position` is one
finger's travel, so the target width is 2 x position; the node moves when the target is wider
than the current width and grasps with `max_effort` as the force when it is narrower.

libfranka's grasp succeeds when the fingers stop at a width w with
`width - epsilon.inner < w < width + epsilon.outer`; a grasp that closes on nothing (the
object was missed) or loses it (slipped) ends outside that band and fails.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np

OPEN = "open"
CLOSE = "close"
Decision = Literal["open", "close"]


def _finite(value: float, what: str) -> float:
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{what} must be finite, got {value!r}")
    return v


@dataclass(frozen=True)
class GripperHysteresis:
    """Thresholds on the normalised gripper command; close_below < open_above."""

    close_below: float = 0.4
    open_above: float = 0.6

    def __post_init__(self) -> None:
        lo = _finite(self.close_below, "close_below")
        hi = _finite(self.open_above, "open_above")
        if not 0.0 <= lo < hi <= 1.0:
            raise ValueError(f"gripper hysteresis needs 0 <= close_below < open_above <= 1, got {lo}, {hi}")
        object.__setattr__(self, "close_below", lo)
        object.__setattr__(self, "open_above", hi)

    def decide(self, g: float, previous: Decision | None) -> Decision | None:
        """The decision after seeing command g (None: no decision yet and g in the dead band)."""
        g = _finite(g, "gripper command")
        if g <= self.close_below:
            return CLOSE
        if g >= self.open_above:
            return OPEN
        return previous

    def decisions(self, column: Sequence[float], previous: Decision | None) -> list[Decision | None]:
        """Run the hysteresis along a chunk's gripper column, starting from `previous`."""
        out: list[Decision | None] = []
        state = previous
        for g in column:
            state = self.decide(float(g), state)
            out.append(state)
        return out

    def needs_change(self, column: Sequence[float], previous: Decision | None) -> bool:
        """Whether executing `column` from decision `previous` would send any gripper goal."""
        return any(d is not None and d != previous for d in self.decisions(column, previous))


@dataclass(frozen=True)
class GripperWidthMap:
    """Normalised gripper <-> opening width (m) for a gripper whose joint is one finger's travel."""

    open_position: float  # finger travel when open (m), e.g. 0.04 for the Franka Hand
    closed_position: float  # finger travel when closed (m), e.g. 0.0

    def __post_init__(self) -> None:
        o = _finite(self.open_position, "open_position")
        c = _finite(self.closed_position, "closed_position")
        if o == c:
            raise ValueError(f"open_position and closed_position must differ, both are {o}")
        object.__setattr__(self, "open_position", o)
        object.__setattr__(self, "closed_position", c)

    @property
    def open_width_m(self) -> float:
        return 2.0 * self.open_position

    @property
    def closed_width_m(self) -> float:
        return 2.0 * self.closed_position

    def width_m(self, g: float) -> float:
        """Normalised command (clipped to [0, 1]) -> opening width."""
        g = min(max(_finite(g, "gripper command"), 0.0), 1.0)
        return 2.0 * (self.closed_position + g * (self.open_position - self.closed_position))

    def normalised(self, width_m: float) -> float:
        """Measured opening width -> normalised value (not clipped)."""
        w = _finite(width_m, "gripper width")
        return (w / 2.0 - self.closed_position) / (self.open_position - self.closed_position)


@dataclass(frozen=True)
class GraspSettings:
    """How a "close" decision is executed. An object counts as grasped when the fingers stop
    with an opening in [min_object_width_m, max_object_width_m]; closing further (nothing in
    the hand) or staying wider fails the grasp."""

    speed_m_s: float = 0.1
    force_n: float = 20.0
    min_object_width_m: float = 0.005
    max_object_width_m: float = 0.075

    def __post_init__(self) -> None:
        for attr in ("speed_m_s", "force_n"):
            if not _finite(getattr(self, attr), attr) > 0.0:
                raise ValueError(f"{attr} must be > 0, got {getattr(self, attr)}")
        lo = _finite(self.min_object_width_m, "min_object_width_m")
        hi = _finite(self.max_object_width_m, "max_object_width_m")
        if not 0.0 <= lo < hi:
            raise ValueError(f"need 0 <= min_object_width_m < max_object_width_m, got {lo}, {hi}")

    @property
    def grasp_width_m(self) -> float:
        return 0.5 * (self.min_object_width_m + self.max_object_width_m)

    @property
    def epsilon_m(self) -> float:
        """Inner and outer epsilon: half the accepted band around grasp_width_m."""
        return 0.5 * (self.max_object_width_m - self.min_object_width_m)


@dataclass(frozen=True)
class GripperGoal:
    """One goal for franka_gripper: kind "move" (Move, or GripperCommand when opening) or
    "grasp" (Grasp, or GripperCommand when closing)."""

    kind: Literal["move", "grasp"]
    width_m: float
    speed_m_s: float
    force_n: float = 0.0
    epsilon_inner_m: float = 0.0
    epsilon_outer_m: float = 0.0

    def gripper_command_position(self) -> float:
        """control_msgs/GripperCommand `command.position` (one finger's travel) for this goal."""
        return self.width_m / 2.0


def goal_for(decision: Decision, widths: GripperWidthMap, grasp: GraspSettings) -> GripperGoal:
    """The goal that executes `decision`: open = move to the open width; close = grasp."""
    if decision == OPEN:
        return GripperGoal("move", widths.open_width_m, grasp.speed_m_s)
    if decision == CLOSE:
        return GripperGoal("grasp", grasp.grasp_width_m, grasp.speed_m_s, grasp.force_n, grasp.epsilon_m, grasp.epsilon_m)
    raise ValueError(f"decision must be '{OPEN}' or '{CLOSE}', got {decision!r}")


def grasp_succeeds(final_width_m: float, goal: GripperGoal) -> bool:
    """libfranka's grasp criterion: width - epsilon.inner < final width < width + epsilon.outer."""
    return goal.width_m - goal.epsilon_inner_m < final_width_m < goal.width_m + goal.epsilon_outer_m


def initial_decision(measured_g: float | None, hysteresis: GripperHysteresis) -> Decision | None:
    """The decision the gripper is already in, from its measured opening (None if unknown)."""
    if measured_g is None or not np.isfinite(measured_g):
        return None
    return hysteresis.decide(float(measured_g), None)
