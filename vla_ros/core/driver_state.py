"""What the vendor drivers say about their own state, turned into "may we command?" (no ROS).

ur_robot_driver:
- `io_and_status_controller/robot_program_running` (std_msgs/Bool, latched): the External Control
  URCap program on the pendant. While it is not running the driver executes nothing: hold, and
  resume only with a NEW chunk once it runs again (a plan made before the stop is stale).
- `speed_scaling_state_broadcaster/speed_scaling` (std_msgs/Float64, 0..1; older drivers 0..100 %):
  the pendant's speed slider times the safety system's scaling. The scaled JTC advances its
  trajectories' time at that fraction of real time, so a chunk executes 1 / scaling times
  slower: the controller spreads the chunk's steps by the same factor (`chunk_time_scale`) and
  gives the JTC times in its scaled clock (`trajectory_time_factor`).
franka_ros2:
- `franka_robot_state_broadcaster/robot_state` (franka_msgs/FrankaRobotState): `robot_mode`
  REFLEX (a collision or limit reflex), USER_STOPPED (the enabling / stop button),
  OTHER / AUTOMATIC_ERROR_RECOVERY, or any flag in `current_errors`: the arm cannot follow a
  command -> hold and report; resume with a new chunk once the mode is IDLE or MOVE again with
  no current error (after `~/error_recovery`).

A driver-state topic that has never been heard from does not block commanding (the topics are
optional on a cell); the monitor only reacts to what it has received.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable

# franka_msgs/FrankaRobotState.robot_mode constants
FRANKA_MODE_OTHER = 0
FRANKA_MODE_IDLE = 1
FRANKA_MODE_MOVE = 2
FRANKA_MODE_GUIDING = 3
FRANKA_MODE_REFLEX = 4
FRANKA_MODE_USER_STOPPED = 5
FRANKA_MODE_AUTOMATIC_ERROR_RECOVERY = 6
FRANKA_MODE_NAMES = {
    FRANKA_MODE_OTHER: "OTHER", FRANKA_MODE_IDLE: "IDLE", FRANKA_MODE_MOVE: "MOVE",
    FRANKA_MODE_GUIDING: "GUIDING", FRANKA_MODE_REFLEX: "REFLEX", FRANKA_MODE_USER_STOPPED: "USER_STOPPED",
    FRANKA_MODE_AUTOMATIC_ERROR_RECOVERY: "AUTOMATIC_ERROR_RECOVERY",
}
# Modes in which the arm follows its controllers.
FRANKA_COMMANDABLE_MODES = (FRANKA_MODE_IDLE, FRANKA_MODE_MOVE)

# Topic names relative to the driver's namespace.
UR_PROGRAM_RUNNING_TOPIC = "io_and_status_controller/robot_program_running"
UR_SPEED_SCALING_TOPIC = "speed_scaling_state_broadcaster/speed_scaling"
FRANKA_ROBOT_STATE_TOPIC = "franka_robot_state_broadcaster/robot_state"


@dataclass(frozen=True)
class DriverStateConfig:
    """min_speed_scaling: below it the arm counts as paused (hold), e.g. the pendant's pause."""

    min_speed_scaling: float = 0.05

    def __post_init__(self) -> None:
        v = float(self.min_speed_scaling)
        if not (math.isfinite(v) and 0.0 < v <= 1.0):
            raise ValueError(f"min_speed_scaling must be in (0, 1], got {self.min_speed_scaling!r}")
        object.__setattr__(self, "min_speed_scaling", v)


@dataclass(frozen=True)
class CommandPermission:
    may_command: bool
    reason: str  # "" when may_command


@dataclass
class DriverStateMonitor:
    """Latest driver-state readings -> permission to command and the chunk time scale."""

    config: DriverStateConfig = field(default_factory=DriverStateConfig)
    program_running: bool | None = None
    speed_scaling: float | None = None
    franka_mode: int | None = None
    franka_errors: tuple[str, ...] = ()
    # set when the arm could not follow; cleared only by `chunk_allowed` after recovery
    _blocked_since_fault: bool = False

    # ------------------------------------------------------------------ inputs
    def update_program_running(self, running: bool) -> None:
        self.program_running = bool(running)
        self._note()

    def update_speed_scaling(self, value: float) -> None:
        """std_msgs/Float64 from the speed scaling broadcaster: a fraction (0..1), or a percentage
        (older drivers publish 0..100) -- values above 1 are read as percent."""
        v = float(value)
        if not math.isfinite(v) or v < 0.0:
            raise ValueError(f"speed scaling must be a finite number >= 0, got {value!r}")
        self.speed_scaling = v / 100.0 if v > 1.0 + 1e-9 else v
        self._note()

    def update_franka_state(self, robot_mode: int, error_flags: Iterable[str]) -> None:
        """robot_mode and the names of the `current_errors` flags that are set."""
        self.franka_mode = int(robot_mode)
        self.franka_errors = tuple(sorted(str(e) for e in error_flags))
        self._note()

    def _note(self) -> None:
        if not self.permission().may_command:
            self._blocked_since_fault = True

    # ------------------------------------------------------------------ decisions
    def permission(self) -> CommandPermission:
        if self.program_running is False:
            return CommandPermission(False, "the UR robot program (External Control) is not running")
        if self.speed_scaling is not None and self.speed_scaling < self.config.min_speed_scaling:
            return CommandPermission(
                False, f"UR speed scaling {self.speed_scaling * 100:.1f} % is below "
                f"{self.config.min_speed_scaling * 100:.1f} % (paused)")
        if self.franka_mode is not None and self.franka_mode not in FRANKA_COMMANDABLE_MODES:
            name = FRANKA_MODE_NAMES.get(self.franka_mode, str(self.franka_mode))
            errors = f", errors: {list(self.franka_errors)}" if self.franka_errors else ""
            return CommandPermission(False, f"Franka robot_mode {name}{errors}")
        if self.franka_errors:
            return CommandPermission(False, f"Franka current_errors: {list(self.franka_errors)}")
        return CommandPermission(True, "")

    def chunk_allowed(self) -> CommandPermission:
        """A new chunk may run when the driver can follow; it also ends a recovery (the arm held
        since the fault; this chunk is the documented way to resume)."""
        permission = self.permission()
        if permission.may_command:
            self._blocked_since_fault = False
        return permission

    @property
    def recovering(self) -> bool:
        """The driver can follow again but no chunk has arrived since the fault (keep holding)."""
        return self._blocked_since_fault and self.permission().may_command

    def chunk_time_scale(self) -> float:
        """How much slower than its stamps a chunk executes on a scaled JTC: 1 / speed scaling."""
        s = self.speed_scaling
        if s is None or s >= 1.0:
            return 1.0
        return 1.0 / max(s, self.config.min_speed_scaling)

    def trajectory_time_factor(self) -> float:
        """time_from_start multiplier for a scaled JTC: its clock runs at `speed_scaling` x real
        time, so a point meant d seconds from now is sent at d x scaling."""
        return 1.0 / self.chunk_time_scale()

