"""Embodiment schema for the real-arm interfaces: franka_gripper actions, the JTC's
FollowJointTrajectory action, driver-state topics. Existing configs are unchanged by them."""

import pytest
import yaml

from vla_ros.core.embodiment import EmbodimentConfigError, config_dir, load_embodiment, urdf_dir


def _with_gripper_command(tmp_path, base: str, arm: str, command):
    """The config with one arm's gripper command replaced (overrides would merge into the old one)."""
    raw = yaml.safe_load((config_dir() / f"{base}.yaml").read_text())
    raw["arms"][arm]["gripper"]["command"] = command
    raw["urdf"]["file"] = str(urdf_dir() / raw["urdf"]["file"])
    path = tmp_path / f"{base}_gripper.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_fr3_real_uses_the_franka_gripper_actions_and_robot_state():
    spec = load_embodiment("fr3_real")
    g = spec.arm("arm").gripper
    assert g.command is None  # no topic: the hand is action-only
    a = g.actions
    assert (a.node, a.interface, a.homing, a.speed_m_s, a.force_n) == ("fr3_gripper", "grasp_move", False, 0.1, 20.0)
    assert (a.min_object_width_m, a.max_object_width_m, a.close_below, a.open_above) == (0.005, 0.075, 0.4, 0.6)
    assert spec.arm("arm").driver_state.robot_state_topic == "franka_robot_state_broadcaster/robot_state"
    assert spec.arm("arm").command.interface == "topic"


def test_plain_configs_have_no_real_interfaces():
    for name in ("fr3", "ur5e", "aloha"):
        for arm in load_embodiment(name).arms:
            assert arm.command.interface == "topic" and arm.command.action == ""
            assert arm.gripper.actions is None and arm.gripper.command is not None
            ds = arm.driver_state
            assert not (ds.program_running_topic or ds.speed_scaling_topic or ds.robot_state_topic)


def test_ur5e_real_driver_state_topics():
    ds = load_embodiment("ur5e_real").arm("arm").driver_state
    assert ds.program_running_topic == "io_and_status_controller/robot_program_running"
    assert ds.speed_scaling_topic == "speed_scaling_state_broadcaster/speed_scaling"
    assert ds.min_speed_scaling == 0.05


def test_follow_joint_trajectory_action_name_defaults_to_the_controller():
    cmd = load_embodiment("fr3", {"arms.arm.command.interface": "follow_joint_trajectory"}).arm("arm").command
    assert cmd.action == "fr3_arm_controller/follow_joint_trajectory" and cmd.topic == "fr3_arm_controller/joint_trajectory"
    cmd = load_embodiment("fr3", {"arms.arm.command.interface": "follow_joint_trajectory",
                                  "arms.arm.command.action": "/moveit_arm/follow_joint_trajectory"}).arm("arm").command
    assert cmd.action == "/moveit_arm/follow_joint_trajectory"


def test_namespaces_apply_to_actions_nodes_and_driver_topics(tmp_path):
    path = _with_gripper_command(tmp_path, "aloha", "follower_left", {"kind": "franka_gripper", "node": "hand"})
    spec = load_embodiment(path, {
        "arms.follower_left.command.interface": "follow_joint_trajectory",
        "arms.follower_left.driver_state": {"program_running_topic": "io/running"},
    })
    left = spec.arm("follower_left")
    assert left.command.action == "follower_left/arm_controller/follow_joint_trajectory"
    assert left.gripper.actions.node == "follower_left/hand"
    assert left.driver_state.program_running_topic == "follower_left/io/running"


@pytest.mark.parametrize("overrides, key, fragment", [
    ({"arms.arm.command.interface": "follow_joint_trajectry"}, "arms.arm.command.interface", "follow_joint_trajectory"),
    ({"arms.arm.command.action": "x/follow_joint_trajectory"}, "arms.arm.command.action", "only used with"),
    ({"arms.arm.driver_state": {"program_running": "x"}}, "arms.arm.driver_state.program_running",
     "program_running_topic"),
    ({"arms.arm.driver_state": {"min_speed_scaling": 2.0}}, "arms.arm.driver_state", "min_speed_scaling"),
])
def test_refusals_name_the_key(overrides, key, fragment):
    with pytest.raises(EmbodimentConfigError) as err:
        load_embodiment("fr3", overrides)
    assert f": {key}" in str(err.value) and fragment in str(err.value), str(err.value)


@pytest.mark.parametrize("command, key, fragment", [
    ({"kind": "franka_griper", "node": "g"}, "arms.arm.gripper.command", "franka_gripper"),
    ({"kind": "franka_gripper", "node": "g", "forse_n": 3}, "arms.arm.gripper.command.forse_n", "force_n"),
    ({"kind": "franka_gripper"}, "arms.arm.gripper.command", "node"),
    ({"kind": "franka_gripper", "node": "g", "interface": "grasp"}, "arms.arm.gripper.command.interface",
     "grasp_move"),
    ({"kind": "franka_gripper", "node": "g", "min_object_width_m": 0.05, "max_object_width_m": 0.01},
     "arms.arm.gripper.command", "min_object_width_m"),
    ({"kind": "franka_gripper", "node": "g", "close_below": 0.7}, "arms.arm.gripper.command", "close_below"),
    ({"kind": "franka_gripper", "node": "g", "speed_m_s": "fast"}, "arms.arm.gripper.command.speed_m_s",
     "finite number"),
])
def test_franka_gripper_refusals_name_the_key(tmp_path, command, key, fragment):
    with pytest.raises(EmbodimentConfigError) as err:
        load_embodiment(_with_gripper_command(tmp_path, "fr3", "arm", command))
    assert f": {key}" in str(err.value) and fragment in str(err.value), str(err.value)


def test_follow_joint_trajectory_needs_a_jtc():
    with pytest.raises(EmbodimentConfigError, match="needs kind joint_trajectory"):
        load_embodiment("fr3", {"arms.arm.command": {"kind": "forward_position", "topic": "fwd/commands",
                                                      "interface": "follow_joint_trajectory"}})
