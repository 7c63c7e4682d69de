"""Embodiment specifications: what one arm (or a bimanual pair) is, validated once at start-up.

The YAML files in config/ are loaded into these frozen dataclasses by `load_embodiment`.
Joint names are the names the vendor driver reports; for namespaced arms (ALOHA) the
*qualified* name `<namespace>/<joint>` is used everywhere inside vla_ros (URDF, kinematics,
action-chunk names) and the bare name only on the driver's own topics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

CommandKind = Literal["joint_trajectory", "forward_position"]


@dataclass(frozen=True)
class JointLimits:
    """Per-joint limits, arrays in the arm's joint order."""

    lower_rad: np.ndarray
    upper_rad: np.ndarray
    velocity_rad_s: np.ndarray
    acceleration_rad_s2: np.ndarray


@dataclass(frozen=True)
class CommandInterface:
    """A ros2_control command interface.

    kind "joint_trajectory": trajectory_msgs/JointTrajectory on `topic` (a JTC's ~/joint_trajectory).
    kind "forward_position": std_msgs/Float64MultiArray on `topic` (a forward controller's ~/commands),
    one value per entry of `joint_names`, in that order.
    `joint_names` are the names the controller is configured with (bare driver names).
    """

    kind: CommandKind
    topic: str
    joint_names: tuple[str, ...]


@dataclass(frozen=True)
class GripperSpec:
    """Gripper mapping: normalised command g in [0, 1], 1 = open, 0 = closed.

    joint position = closed_position + g * (open_position - closed_position)
    """

    joint_name: str  # as reported in joint_states (bare driver name)
    open_position: float
    closed_position: float
    command: CommandInterface | None  # None: the real driver has no topic interface (e.g. franka_gripper actions)


@dataclass(frozen=True)
class ArmSpec:
    name: str  # "arm" for single-arm embodiments, the namespace ("follower_left") otherwise
    namespace: str  # "" or e.g. "follower_left"; driver topics live under it
    joint_names: tuple[str, ...]  # bare driver names, in the driver's/controller's order
    base_frame: str
    tool_frame: str
    limits: JointLimits
    home_rad: np.ndarray
    command: CommandInterface
    gripper: GripperSpec | None
    workspace_min_m: np.ndarray  # tool-frame position box, expressed in base_frame
    workspace_max_m: np.ndarray

    def qualified(self, joint: str) -> str:
        return f"{self.namespace}/{joint}" if self.namespace else joint

    @property
    def qualified_joint_names(self) -> tuple[str, ...]:
        return tuple(self.qualified(j) for j in self.joint_names)

    @property
    def joint_states_topic(self) -> str:
        return f"{self.namespace}/joint_states" if self.namespace else "joint_states"


@dataclass(frozen=True)
class CameraSpec:
    slot: str  # the policy's camera slot, e.g. "front", "wrist", "cam_high"
    topic: str  # ROS topic (relative), e.g. "cameras/front/image_raw"
    compressed: bool
    width: int
    height: int


@dataclass(frozen=True)
class UrdfSource:
    """Where the URDF comes from: exactly one of the three is set."""

    file: str | None = None  # path relative to the package's urdf/ folder, or absolute
    package_path: str | None = None  # "<description_package>/<relative path>" resolved via ament index
    topic: str | None = None  # the running driver's robot_description topic


@dataclass(frozen=True)
class EmbodimentSpec:
    name: str
    config_path: str
    urdf: UrdfSource
    world_frame: str  # root frame of the URDF
    arms: tuple[ArmSpec, ...]
    command_rate_hz: float  # rate the controller streams forward commands / replans at
    policy_period_s: float  # the policy's control period (action-chunk step)
    action_space: str  # the policy's action space, see vla_ros.core.action_spaces
    cameras: tuple[CameraSpec, ...]

    @property
    def joint_names(self) -> tuple[str, ...]:
        """All arm joints, qualified, arms in order (ALOHA: left 6 then right 6)."""
        return tuple(n for arm in self.arms for n in arm.qualified_joint_names)

    def arm(self, name: str) -> ArmSpec:
        for a in self.arms:
            if a.name == name:
                return a
        raise KeyError(f"embodiment '{self.name}' has no arm '{name}'; arms: {[a.name for a in self.arms]}")
