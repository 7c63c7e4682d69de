"""Minimal embodiment specs for the checkpoint tests, built from the dataclasses directly."""

import numpy as np

from vla_ros.core.embodiment import (
    ArmSpec,
    CameraSpec,
    CommandInterface,
    EmbodimentSpec,
    GripperSpec,
    JointLimits,
    UrdfSource,
)


def make_arm(name: str, namespace: str, joints: tuple[str, ...]) -> ArmSpec:
    n = len(joints)
    return ArmSpec(
        name=name,
        namespace=namespace,
        joint_names=joints,
        base_frame="base",
        tool_frame="tool",
        limits=JointLimits(-np.pi * np.ones(n), np.pi * np.ones(n), np.ones(n), np.ones(n)),
        home_rad=np.zeros(n),
        command=CommandInterface("joint_trajectory", "arm_controller/joint_trajectory", joints),
        gripper=GripperSpec("gripper", 1.0, 0.0, None),
        workspace_min_m=-np.ones(3),
        workspace_max_m=np.ones(3),
    )


def single_arm(action_space: str = "ee_delta", cameras: tuple[str, ...] = ("front",)) -> EmbodimentSpec:
    joints = tuple(f"joint{i}" for i in range(1, 8))
    return EmbodimentSpec(
        name="test_arm", config_path="", urdf=UrdfSource(file="none.urdf"), world_frame="world",
        arms=(make_arm("arm", "", joints),), command_rate_hz=100.0, policy_period_s=0.2,
        action_space=action_space,
        cameras=tuple(CameraSpec(c, f"cameras/{c}/image_raw", False, 64, 48) for c in cameras),
    )


def bimanual(cameras: tuple[str, ...] = ("cam_high", "cam_left_wrist")) -> EmbodimentSpec:
    joints = ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate")
    return EmbodimentSpec(
        name="test_bimanual", config_path="", urdf=UrdfSource(file="none.urdf"), world_frame="world",
        arms=(make_arm("follower_left", "follower_left", joints), make_arm("follower_right", "follower_right", joints)),
        command_rate_hz=100.0, policy_period_s=0.02, action_space="joint_position",
        cameras=tuple(CameraSpec(c, f"{c}/image_raw", False, 64, 48) for c in cameras),
    )
