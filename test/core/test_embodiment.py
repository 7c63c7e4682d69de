"""Embodiment configs: every shipped config loads with the vendors' names and published limits,
and every kind of bad config is refused with a message naming file, key and a fix."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pinocchio as pin
import pytest
import yaml

from vla_ros.core import embodiment as emb
from vla_ros.core.embodiment import (
    CommandInterface,
    EmbodimentConfigError,
    GripperSpec,
    JointLimits,
    available_embodiments,
    config_dir,
    load_embodiment,
    load_urdf_xml,
    urdf_dir,
)

# ---- published numbers (REFERENCE.md), typed in independently of the URDF generator ----
PANDA_LOWER = [-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973]
PANDA_UPPER = [2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973]
PANDA_VEL = [2.175, 2.175, 2.175, 2.175, 2.61, 2.61, 2.61]
PANDA_ACC = [15, 7.5, 10, 12.5, 15, 20, 20]
FR3_LOWER = [-2.7437, -1.7837, -2.9007, -3.0421, -2.8065, 0.5445, -3.0159]
FR3_UPPER = [2.7437, 1.7837, 2.9007, -0.1518, 2.8065, 4.5169, 3.0159]
FR3_VEL = [2.62, 2.62, 2.62, 2.62, 5.26, 4.18, 5.26]
UR_JOINTS = ("shoulder_pan_joint", "shoulder_lift_joint", "elbow_joint", "wrist_1_joint", "wrist_2_joint", "wrist_3_joint")
VX_JOINTS = ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate")
ALOHA_GRIPPER_OPEN, ALOHA_GRIPPER_CLOSE = 1.6214, 0.6197

ALL = ("fr3", "franka", "panda", "ur5", "ur5e", "aloha")


def write_variant(tmp_path: Path, base: str, edit, name: str = "myrobot") -> Path:
    """A copy of a shipped config with `edit(dict)` applied, saved as <tmp>/<name>.yaml."""
    data = yaml.safe_load((config_dir() / f"{base}.yaml").read_text())
    data = copy.deepcopy(data)
    edit(data)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def refusal(tmp_path: Path, edit, base: str = "fr3") -> str:
    path = write_variant(tmp_path, base, edit)
    with pytest.raises(EmbodimentConfigError) as info:
        load_embodiment(str(path))
    message = str(info.value)
    assert str(path) in message, message  # every refusal names the file
    return message


# ------------------------------------------------------------------------------ shipped configs
def test_available_embodiments_lists_every_shipped_config():
    assert set(ALL) <= set(available_embodiments())
    assert config_dir().name == "config" and urdf_dir().name == "urdf"


@pytest.mark.parametrize("name", ALL)
def test_every_config_loads_and_is_consistent(name):
    spec = load_embodiment(name)
    assert spec.arms and spec.cameras
    assert len(spec.joint_names) == len(set(spec.joint_names))
    for arm in spec.arms:
        n = arm.num_joints
        assert arm.limits.lower_rad.shape == (n,) and arm.home_rad.shape == (n,)
        assert np.all(arm.limits.lower_rad <= arm.home_rad) and np.all(arm.home_rad <= arm.limits.upper_rad)
        assert not arm.home_rad.flags.writeable and not arm.limits.velocity_rad_s.flags.writeable
    assert spec.policy_period_s * spec.command_rate_hz >= 1.0


def test_franka_is_an_alias_of_fr3():
    a, b = load_embodiment("franka"), load_embodiment("fr3")
    assert a.name == b.name == "fr3"
    assert a.joint_names == b.joint_names and a.config_path == b.config_path


def test_fr3_names_limits_and_interfaces_match_the_vendor():
    spec = load_embodiment("fr3")
    (arm,) = spec.arms
    assert arm.name == "arm" and arm.namespace == ""
    assert arm.joint_names == tuple(f"fr3_joint{i}" for i in range(1, 8))
    assert (spec.world_frame, arm.base_frame, arm.tool_frame) == ("fr3_link0", "fr3_link0", "fr3_hand_tcp")
    np.testing.assert_array_equal(arm.limits.lower_rad, FR3_LOWER)
    np.testing.assert_array_equal(arm.limits.upper_rad, FR3_UPPER)
    np.testing.assert_array_equal(arm.limits.velocity_rad_s, FR3_VEL)
    np.testing.assert_allclose(arm.home_rad, [0, -math.pi / 4, 0, -3 * math.pi / 4, 0, math.pi / 2, math.pi / 4])
    assert arm.command == CommandInterface("joint_trajectory", "fr3_arm_controller/joint_trajectory", arm.joint_names)
    assert arm.gripper.joint_name == "fr3_finger_joint1"
    assert (arm.gripper.open_position, arm.gripper.closed_position) == (0.04, 0.0)
    assert spec.action_space == "ee_delta" and spec.command_rate_hz == 100.0 and spec.policy_period_s == 0.1
    assert [c.slot for c in spec.cameras] == ["front", "wrist"]
    assert spec.camera("front").topic == "cameras/front/image_raw"


def test_panda_limits_are_the_libfranka_values_and_differ_from_fr3():
    arm = load_embodiment("panda").arm("arm")
    assert arm.joint_names == tuple(f"panda_joint{i}" for i in range(1, 8))
    assert arm.tool_frame == "panda_hand_tcp"
    assert arm.command.topic == "panda_arm_controller/joint_trajectory"
    np.testing.assert_array_equal(arm.limits.lower_rad, PANDA_LOWER)
    np.testing.assert_array_equal(arm.limits.upper_rad, PANDA_UPPER)
    np.testing.assert_array_equal(arm.limits.velocity_rad_s, PANDA_VEL)
    np.testing.assert_array_equal(arm.limits.acceleration_rad_s2, PANDA_ACC)
    # the two arms really differ: joint 6's lower limit is 0.5445 on the FR3, -0.0175 on the Panda
    fr3 = load_embodiment("fr3").arm("arm")
    assert fr3.limits.lower_rad[5] - arm.limits.lower_rad[5] == pytest.approx(0.562)


@pytest.mark.parametrize("name", ["ur5", "ur5e"])
def test_ur_configs_use_driver_names_and_scaled_jtc(name):
    spec = load_embodiment(name)
    arm = spec.arm("arm")
    assert arm.joint_names == UR_JOINTS
    assert arm.command.kind == "joint_trajectory"
    assert arm.command.topic == "scaled_joint_trajectory_controller/joint_trajectory"
    expected_upper = [2 * math.pi, 2 * math.pi, math.pi, 2 * math.pi, 2 * math.pi, 2 * math.pi]
    np.testing.assert_allclose(arm.limits.upper_rad, expected_upper, rtol=1e-11)
    np.testing.assert_allclose(arm.limits.lower_rad, -np.array(expected_upper), rtol=1e-11)
    np.testing.assert_allclose(arm.limits.velocity_rad_s, math.pi, rtol=1e-11)
    assert arm.gripper.joint_name == "gripper_finger_joint"
    assert arm.gripper.command.topic == "gripper_controller/commands"


def test_ur_tf_prefix_prefixes_joints_frames_and_the_urdf():
    spec = load_embodiment("ur5e", {"tf_prefix": "left_"})
    arm = spec.arm("arm")
    assert arm.joint_names == tuple("left_" + j for j in UR_JOINTS)
    assert (spec.world_frame, arm.base_frame, arm.tool_frame) == ("left_base_link", "left_base_link", "left_gripper_tcp")
    assert arm.gripper.joint_name == "left_gripper_finger_joint"
    assert arm.command.joint_names == arm.joint_names
    model = pin.buildModelFromXML(load_urdf_xml(spec))
    assert model.existFrame("left_tool0") and not model.existFrame("tool0")
    assert model.names[1] == "left_shoulder_pan_joint"


def test_aloha_arms_are_namespaced_with_qualified_names():
    spec = load_embodiment("aloha")
    assert [a.name for a in spec.arms] == ["follower_left", "follower_right"]
    assert spec.joint_names == tuple(f"follower_left/{j}" for j in VX_JOINTS) + tuple(
        f"follower_right/{j}" for j in VX_JOINTS
    )
    left = spec.arm("follower_left")
    assert left.joint_names == VX_JOINTS
    assert left.joint_states_topic == "follower_left/joint_states"
    assert left.command.topic == "follower_left/arm_controller/joint_trajectory"
    assert left.gripper.command.topic == "follower_left/gripper_controller/commands"
    assert left.gripper.command.joint_names == ("gripper",)
    assert spec.gripper_joint_names == ("follower_left/gripper", "follower_right/gripper")
    np.testing.assert_array_equal(left.limits.lower_rad, [-math.pi, -1.85, -1.763, -math.pi, -1.868, -math.pi])
    np.testing.assert_array_equal(left.limits.upper_rad, [math.pi, 1.257, 1.606, math.pi, 2.234, math.pi])
    assert spec.action_space == "joint_position"
    assert spec.command_rate_hz == 50.0 and spec.policy_period_s == 0.02
    assert [c.slot for c in spec.cameras] == ["cam_high", "cam_low", "cam_left_wrist", "cam_right_wrist"]


# ------------------------------------------------------------------------------ gripper mapping
def test_gripper_normalisation_open_is_one_closed_is_zero():
    g = load_embodiment("fr3").arm("arm").gripper
    assert g.to_joint(1.0) == 0.04 and g.to_joint(0.0) == 0.0
    assert g.from_joint(0.04) == 1.0 and g.from_joint(0.0) == 0.0
    np.testing.assert_allclose(g.to_joint(np.array([0.0, 0.25, 1.0])), [0.0, 0.01, 0.04])


def test_aloha_gripper_uses_aloha2_follower_calibration():
    g = load_embodiment("aloha").arm("follower_right").gripper
    assert g.open_position == ALOHA_GRIPPER_OPEN and g.closed_position == ALOHA_GRIPPER_CLOSE
    assert g.to_joint(1.0) == pytest.approx(1.6214) and g.to_joint(0.0) == pytest.approx(0.6197)
    # ALOHA's normalisation (x - close) / (open - close), hand-computed for the midpoint
    assert g.from_joint(1.12055) == pytest.approx(0.5)
    x = np.array([[0.6197, 1.6214], [1.12055, 0.8700]])
    expected = (x - 0.6197) / (1.6214 - 0.6197)
    np.testing.assert_allclose(g.from_joint(x), expected)
    np.testing.assert_allclose(g.to_joint(g.from_joint(x)), x)


def test_gripper_to_joint_clips_overshoot_and_refuses_nan():
    g = GripperSpec("gripper", open_position=1.6214, closed_position=0.6197, command=None)
    np.testing.assert_allclose(g.to_joint([-0.2, 1.3]), [0.6197, 1.6214])
    assert g.from_joint(1.7) > 1.0  # measurements are not clipped
    with pytest.raises(ValueError, match="finite"):
        g.to_joint([0.5, float("nan")])
    with pytest.raises(ValueError, match="must differ"):
        GripperSpec("g", 0.5, 0.5, None)


# ------------------------------------------------------------------------------ workspace
@pytest.mark.parametrize("name", ["fr3", "panda", "ur5", "ur5e", "aloha"])
def test_home_tool_position_lies_inside_the_workspace(name):
    spec = load_embodiment(name)
    model = pin.buildModelFromXML(load_urdf_xml(spec))
    data = model.createData()
    q = pin.neutral(model)
    for arm in spec.arms:
        for joint, value in zip(arm.qualified_joint_names, arm.home_rad):
            q[model.joints[model.getJointId(joint)].idx_q] = value
    pin.framesForwardKinematics(model, data, q)
    for arm in spec.arms:
        base = data.oMf[model.getFrameId(arm.base_frame)]
        tool = data.oMf[model.getFrameId(arm.tool_frame)]
        p = (base.inverse() * tool).translation
        assert np.all(arm.workspace_min_m < p) and np.all(p < arm.workspace_max_m), (arm.name, p)


def test_franka_workspace_covers_the_table_region_of_the_sim_tasks():
    arm = load_embodiment("fr3").arm("arm")
    assert np.all(arm.workspace_min_m <= [0.25, -0.35, 0.0]) and np.all(arm.workspace_max_m >= [0.75, 0.35, 0.7])


# ------------------------------------------------------------------------------ overrides
def test_overrides_nested_and_dotted():
    spec = load_embodiment(
        "fr3",
        {"arms": {"arm": {"limits": {"velocity_rad_s": [1.0] * 7}}}, "arms.arm.tool_frame": "fr3_link8",
         "policy_period_s": 0.05},
    )
    arm = spec.arm("arm")
    np.testing.assert_array_equal(arm.limits.velocity_rad_s, 1.0)
    np.testing.assert_array_equal(arm.limits.lower_rad, FR3_LOWER)  # untouched keys survive the merge
    assert arm.tool_frame == "fr3_link8" and spec.policy_period_s == 0.05


def test_real_franka_gripper_override_to_action_only():
    arm = load_embodiment("fr3", {"arms.arm.gripper.command": None}).arm("arm")
    assert arm.gripper is not None and arm.gripper.command is None


def test_unknown_override_key_is_refused_with_suggestion():
    with pytest.raises(EmbodimentConfigError, match=r"overrides.*'policy_perod_s'.*did you mean 'policy_period_s'"):
        load_embodiment("fr3", {"policy_perod_s": 0.2})
    with pytest.raises(EmbodimentConfigError, match=r"arms\.arm\.tool_fram.*did you mean 'tool_frame'"):
        load_embodiment("fr3", {"arms.arm.tool_fram": "fr3_link8"})


# ------------------------------------------------------------------------------ refusals
def test_unknown_embodiment_lists_valid_names_and_suggests():
    with pytest.raises(EmbodimentConfigError) as info:
        load_embodiment("fr4")
    message = str(info.value)
    assert "unknown embodiment 'fr4'" in message and "did you mean 'fr3'" in message
    for name in ALL:
        assert f"'{name}'" in message


def test_missing_file_path_is_refused():
    with pytest.raises(EmbodimentConfigError, match="does not exist"):
        load_embodiment("/nonexistent/robot.yaml")


def test_typo_key_names_file_key_valid_keys_and_suggestion(tmp_path):
    def edit(d):
        d["arms"]["arm"]["tool_frme"] = d["arms"]["arm"].pop("tool_frame")

    message = refusal(tmp_path, edit)
    assert "arms.arm.tool_frme" in message and "did you mean 'tool_frame'" in message
    assert "'workspace_min_m'" in message  # the valid keys are listed


def test_typo_top_level_key(tmp_path):
    message = refusal(tmp_path, lambda d: d.update(comand_rate_hz=d.pop("command_rate_hz")))
    assert "comand_rate_hz" in message and "did you mean 'command_rate_hz'" in message


def test_joint_missing_from_urdf_names_joint_and_suggestion(tmp_path):
    def edit(d):
        d["arms"]["arm"]["joint_names"][2] = "fr3_jiont3"

    message = refusal(tmp_path, edit)
    assert "arms.arm.joint_names[2]" in message and "'fr3_jiont3'" in message
    assert "did you mean 'fr3_joint3'" in message


def test_frame_missing_from_urdf(tmp_path):
    message = refusal(tmp_path, lambda d: d["arms"]["arm"].update(tool_frame="fr3_hand_tpc"))
    assert "arms.arm.tool_frame" in message and "did you mean 'fr3_hand_tcp'" in message


def test_fixed_joint_is_not_an_arm_joint(tmp_path):
    message = refusal(tmp_path, lambda d: d["arms"]["arm"]["joint_names"].__setitem__(6, "fr3_joint8"))
    assert "fixed joint" in message and "arms.arm.joint_names[6]" in message


def test_lower_not_below_upper(tmp_path):
    def edit(d):
        d["arms"]["arm"]["limits"]["lower_rad"] = [-1.0, -1.0, -1.0, -2.0, -1.0, 1.0, -1.0]
        d["arms"]["arm"]["limits"]["upper_rad"] = [1.0, 1.0, 1.0, -2.0, 1.0, 2.0, 1.0]
        d["arms"]["arm"]["home_rad"] = [0.0, 0.0, 0.0, -2.0, 0.0, 1.5, 0.0]

    message = refusal(tmp_path, edit)
    assert "arms.arm.limits" in message and "lower_rad[3]=-2.0 must be < upper_rad[3]=-2.0" in message


def test_non_positive_velocity(tmp_path):
    def edit(d):
        d["arms"]["arm"]["limits"]["velocity_rad_s"] = [1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0]

    message = refusal(tmp_path, edit)
    assert "arms.arm.limits" in message and "velocity_rad_s[2]=0.0 must be > 0" in message


def test_limits_may_not_widen_the_urdf(tmp_path):
    def edit(d):
        d["arms"]["arm"]["limits"]["upper_rad"] = [2.7437, 1.7837, 2.9007, -0.1518, 2.8065, 4.5169, 3.2]

    message = refusal(tmp_path, edit)
    assert "arms.arm.limits.upper_rad[6]" in message and "wider than the URDF's 3.0159" in message


def test_home_outside_limits(tmp_path):
    message = refusal(tmp_path, lambda d: d["arms"]["arm"]["home_rad"].__setitem__(5, 0.0))
    # FR3 joint 6 starts at 0.5445: the Panda's home value 0 would be refused
    assert "arms.arm.home_rad[5]" in message and "'fr3_joint6'" in message and "0.5445" in message


def test_workspace_min_not_below_max(tmp_path):
    message = refusal(tmp_path, lambda d: d["arms"]["arm"].update(workspace_min_m=[0.2, 0.5, 0.0]))
    assert "arms.arm.workspace_min_m[1]" in message and "must be < workspace_max_m[1]" in message


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("home_rad", [0.0] * 6, "expected 7 entries"),
        ("workspace_max_m", [0.8, 0.45], "expected 3 entries"),
        ("joint_names", "fr3_joint1", "expected a non-empty list"),
    ],
)
def test_wrong_array_lengths(tmp_path, key, value, expected):
    message = refusal(tmp_path, lambda d: d["arms"]["arm"].update({key: value}))
    assert f"arms.arm.{key}" in message and expected in message


def test_acceleration_length_mismatch(tmp_path):
    message = refusal(tmp_path, lambda d: d["arms"]["arm"]["limits"].update(acceleration_rad_s2=[1.0, 2.0]))
    assert "arms.arm.limits.acceleration_rad_s2" in message and "expected 7 entries" in message


def test_gripper_positions_outside_urdf(tmp_path):
    message = refusal(tmp_path, lambda d: d["arms"]["arm"]["gripper"].update(open_position=0.08))
    assert "arms.arm.gripper.open_position" in message and "outside the URDF limits" in message


def test_bad_command_kind_and_topic(tmp_path):
    message = refusal(tmp_path, lambda d: d["arms"]["arm"]["command"].update(kind="joint_trajectroy"))
    assert "arms.arm.command.kind" in message and "did you mean 'joint_trajectory'" in message
    message = refusal(tmp_path, lambda d: d["arms"]["arm"]["command"].update(topic="fr3 arm/x"))
    assert "arms.arm.command.topic" in message and "ROS topic name" in message


def test_unknown_action_space(tmp_path):
    message = refusal(tmp_path, lambda d: d.update(action_space="ee_deltas"))
    assert "action_space" in message and "did you mean 'ee_delta'" in message


def test_policy_period_shorter_than_a_controller_cycle(tmp_path):
    message = refusal(tmp_path, lambda d: d.update(policy_period_s=0.001))
    assert "policy_period_s" in message and "expected >= 0.01 s" in message


def test_urdf_source_must_be_exactly_one(tmp_path):
    message = refusal(tmp_path, lambda d: d.update(urdf={"file": "fr3.urdf", "topic": "robot_description"}))
    assert "urdf" in message and "exactly one" in message
    message = refusal(tmp_path, lambda d: d.update(urdf={"file": "fr3_robot.urdf"}))
    assert "urdf.file" in message and "did you mean 'fr3.urdf'" in message


def test_world_frame_must_be_the_urdf_root(tmp_path):
    message = refusal(tmp_path, lambda d: d.update(world_frame="fr3_link1"))
    assert "world_frame" in message and "['fr3_link0']" in message


def test_duplicate_yaml_key_is_refused(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text((config_dir() / "fr3.yaml").read_text() + "action_space: joint_position\n")
    with pytest.raises(EmbodimentConfigError, match="duplicate key 'action_space'"):
        load_embodiment(str(path))


def test_bare_name_for_a_namespaced_urdf_joint_suggests_the_qualified_one(tmp_path):
    message = refusal(tmp_path, lambda d: d["arms"]["follower_right"].update(namespace=""), base="aloha")
    assert "arms.follower_right.joint_names[0]" in message
    assert "'waist' is not in the URDF" in message and "did you mean 'follower_left/waist' or 'follower_right/waist'" in message


def test_several_arms_need_namespaces(tmp_path):
    def split_in_two(d):
        arm = d["arms"].pop("arm")
        first, second = copy.deepcopy(arm), copy.deepcopy(arm)
        first["joint_names"], second["joint_names"] = arm["joint_names"][:3], arm["joint_names"][3:]
        first["home_rad"], second["home_rad"] = arm["home_rad"][:3], arm["home_rad"][3:]
        first["limits"]["acceleration_rad_s2"] = [10.0] * 3
        second["limits"]["acceleration_rad_s2"] = [10.0] * 4
        second["gripper"] = None
        first["tool_frame"] = second["base_frame"] = "fr3_link3"
        d["arms"] = {"upper": first, "lower": second}

    message = refusal(tmp_path, split_in_two)
    assert "arms:" in message and "needs its own namespace" in message


def test_alias_to_missing_config(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("alias: fr33\n")
    (tmp_path / "fr3.yaml").write_text((config_dir() / "fr3.yaml").read_text())
    with pytest.raises(EmbodimentConfigError, match=r"alias.*'fr33'.*did you mean 'fr3'"):
        load_embodiment(str(path))


# ------------------------------------------------------------------------------ URDF sources
def test_topic_source_needs_explicit_limits_then_checks_the_received_description(tmp_path):
    def topic_only(d):
        d["urdf"] = {"topic": "robot_description"}

    message = refusal(tmp_path, topic_only)
    assert "arms.arm.limits.lower_rad" in message and "urdf.topic" in message

    def with_limits(d):
        topic_only(d)
        d["arms"]["arm"]["limits"].update(lower_rad=FR3_LOWER, upper_rad=FR3_UPPER, velocity_rad_s=FR3_VEL)

    spec = load_embodiment(str(write_variant(tmp_path, "fr3", with_limits, name="fromtopic")))
    assert spec.urdf.topic == "robot_description" and spec.urdf.file is None
    with pytest.raises(EmbodimentConfigError, match="pass the string as robot_description"):
        load_urdf_xml(spec)
    xml = (urdf_dir() / "fr3.urdf").read_text()
    assert load_urdf_xml(spec, robot_description=xml) == xml
    with pytest.raises(EmbodimentConfigError, match=r"world_frame.*not the URDF root.*'panda_link0'"):
        load_urdf_xml(spec, robot_description=(urdf_dir() / "panda.urdf").read_text())
    renamed = xml.replace('"fr3_joint3"', '"fr3_joint_3"')
    with pytest.raises(EmbodimentConfigError, match=r"joint_names\[2\].*'fr3_joint3'.*did you mean 'fr3_joint_3'"):
        load_urdf_xml(spec, robot_description=renamed)


def test_package_path_source_resolves_through_the_ament_index(tmp_path, monkeypatch):
    prefix = tmp_path / "install"
    (prefix / "share/ament_index/resource_index/packages").mkdir(parents=True)
    (prefix / "share/ament_index/resource_index/packages/my_description").write_text("")
    (prefix / "share/my_description/urdf").mkdir(parents=True)
    (prefix / "share/my_description/urdf/robot.urdf").write_text((urdf_dir() / "fr3.urdf").read_text())
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(prefix))
    path = write_variant(tmp_path, "fr3", lambda d: d.update(urdf={"package_path": "my_description/urdf/robot.urdf"}))
    spec = load_embodiment(str(path))
    assert spec.urdf.package_path == "my_description/urdf/robot.urdf"
    assert "fr3_hand_tcp" in load_urdf_xml(spec)
    bad = write_variant(tmp_path, "fr3", lambda d: d.update(urdf={"package_path": "no_such_pkg/robot.urdf"}), "bad")
    with pytest.raises(EmbodimentConfigError, match="package 'no_such_pkg' is not in the ament index"):
        load_embodiment(str(bad))


def test_installed_layout_is_found_through_the_ament_index(tmp_path, monkeypatch):
    """A colcon install has no source tree next to the module: config/ and urdf/ come from
    share/vla_ros/ found through the ament index."""
    prefix = tmp_path / "install"
    (prefix / "share/ament_index/resource_index/packages").mkdir(parents=True)
    (prefix / "share/ament_index/resource_index/packages/vla_ros").write_text("")
    for kind in ("config", "urdf"):
        (prefix / "share/vla_ros" / kind).mkdir(parents=True)
    (prefix / "share/vla_ros/config/panda.yaml").write_text((config_dir() / "panda.yaml").read_text())
    (prefix / "share/vla_ros/urdf/panda.urdf").write_text((urdf_dir() / "panda.urdf").read_text())
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(prefix))
    monkeypatch.setattr(emb, "_SOURCE_ROOT", tmp_path / "not_a_source_tree")
    assert config_dir() == prefix / "share/vla_ros/config"
    assert available_embodiments() == ["panda"]
    spec = load_embodiment("panda")
    assert Path(spec.urdf.file) == (prefix / "share/vla_ros/urdf/panda.urdf").resolve()
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(tmp_path / "empty"))
    with pytest.raises(EmbodimentConfigError, match="not in the ament index"):
        config_dir()


# ------------------------------------------------------------------------------ dataclass guards
def test_dataclasses_check_shapes_when_built_directly():
    with pytest.raises(ValueError, match="upper_rad must have 2 entries"):
        JointLimits([0.0, 0.0], [1.0], [1.0, 1.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="kind must be one of"):
        CommandInterface("position", "x/commands", ("j",))
    limits = JointLimits([-1.0], [1.0], [1.0], [1.0])
    with pytest.raises(ValueError):
        limits.lower_rad[0] = 5.0  # frozen arrays: nobody edits a loaded spec in place


def test_apply_tf_prefix_renames_links_joints_and_their_references():
    xml = (
        '<robot name="r"><link name="a"/><link name="b"/><link name="c"/>'
        '<joint name="j1" type="revolute"><parent link="a"/><child link="b"/><limit lower="-1" upper="1" velocity="1" effort="1"/></joint>'
        '<joint name="j2" type="revolute"><parent link="b"/><child link="c"/><mimic joint="j1"/>'
        '<limit lower="-1" upper="1" velocity="1" effort="1"/></joint>'
        '<ros2_control name="hw" type="system"><joint name="j1"><command_interface name="position"/></joint></ros2_control>'
        "</robot>"
    )
    out = emb.apply_tf_prefix(xml, "left_")
    info = emb.parse_urdf(out)
    assert info.links == ("left_a", "left_b", "left_c") and set(info.joints) == {"left_j1", "left_j2"}
    assert info.joints["left_j2"].parent == "left_b" and info.root_links == ("left_a",)
    assert 'mimic joint="left_j1"' in out and '<joint name="left_j1"><command_interface' in out
    # the hardware block's name and the interface names are not frame names: unchanged
    assert 'ros2_control name="hw"' in out and 'command_interface name="position"' in out
    assert emb.apply_tf_prefix(xml, "") == xml


def test_parse_urdf_refuses_bad_xml_naming_the_source():
    with pytest.raises(EmbodimentConfigError, match="robot_description: URDF is not well-formed XML"):
        emb.parse_urdf("<robot><link name='a'></robot>", "robot_description")
    with pytest.raises(EmbodimentConfigError, match="root element must be <robot>"):
        emb.parse_urdf("<sdf/>", "x.urdf")
    with pytest.raises(EmbodimentConfigError, match="joint 'j' has a non-numeric <limit>"):
        emb.parse_urdf('<robot><joint name="j" type="revolute"><parent link="a"/><child link="b"/>'
                       '<limit lower="-pi" upper="1" velocity="1"/></joint></robot>', "x.urdf")


def test_tool_frame_must_hang_below_the_base_frame(tmp_path):
    message = refusal(
        tmp_path, lambda d: d["arms"]["follower_left"].update(tool_frame="follower_right/ee_gripper_link"), base="aloha"
    )
    assert "arms.follower_left.tool_frame" in message and "does not hang below base_frame 'follower_left/base_link'" in message


def test_arm_joints_must_be_the_chain_between_base_and_tool(tmp_path):
    # a tool frame on the hand's finger would put a finger joint into the arm chain
    message = refusal(tmp_path, lambda d: d["arms"]["arm"].update(tool_frame="fr3_leftfinger"))
    assert "arms.arm.joint_names" in message and "'fr3_finger_joint1'" in message
    message = refusal(tmp_path, lambda d: d["arms"]["arm"].update(base_frame="fr3_link1"))
    assert "arms.arm.joint_names" in message and "between 'fr3_link1' and 'fr3_hand_tcp'" in message
