"""openpi's ALOHA / DROID transforms for π0, against values worked out by hand from openpi's
published formulas (aloha_policy.py, transforms.py, droid_policy.py, DROID's RobotIKSolver)."""

import json
import shutil

import numpy as np
import pytest
import torch

from vla_ros.core.action_spaces import action_names
from vla_ros.core.embodiment import load_embodiment
from vla_ros.core.types import Observation
from vla_ros.policies.checkpoints.common import CheckpointError
from vla_ros.policies.checkpoints.fixtures import random_image, write_pi0_fixture
from vla_ros.policies.checkpoints.pi0 import Pi0Policy, load_pi0
from vla_ros.policies.checkpoints.pi0_transforms import (
    absolute_actions,
    delta_actions,
    gripper_from_angular,
    gripper_from_angular_inv,
    gripper_to_angular,
    interbotix_gripper_linear_m,
    make_bool_mask,
    make_layout,
)

from .embodiments import bimanual

# ---- the formulas --------------------------------------------------------------------------------


def test_make_bool_mask_is_openpis():
    assert make_bool_mask(6, -1, 6, -1).tolist() == [True] * 6 + [False] + [True] * 6 + [False]
    assert make_bool_mask(7, -1).tolist() == [True] * 7 + [False]


def test_delta_and_absolute_actions_touch_only_the_masked_dims():
    mask = make_bool_mask(2, -1)
    state = np.array([1.0, 2.0, 3.0, 9.0])  # dims beyond the mask are never touched
    actions = np.array([[1.5, 2.5, 0.7, 4.0], [0.0, 0.0, 0.0, 0.0]])
    delta = delta_actions(actions, state, mask)
    np.testing.assert_allclose(delta, [[0.5, 0.5, 0.7, 4.0], [-1.0, -2.0, 0.0, 0.0]])
    np.testing.assert_allclose(absolute_actions(delta, state, mask), actions)


def test_gripper_to_angular_at_alohas_open_and_closed_finger_positions():
    # open: x = 0.058 m = horn 0.022 + arm 0.036, so (r^2 + x^2 - L^2) / (2 r x) = 1 and the angle is pi/2
    np.testing.assert_allclose(gripper_to_angular(1.0), (np.pi / 2 - 0.5476) / (1.6296 - 0.5476), atol=1e-12)
    # closed: x = 0.01844 m: (0.000484 + 0.0003400336 - 0.001296) / (2 * 0.022 * 0.01844) = -0.0004719664 / 0.00081136
    angle = np.arcsin(-0.0004719664 / 0.00081136)
    np.testing.assert_allclose(gripper_to_angular(0.0), (angle - 0.5476) / 1.082, atol=1e-12)
    assert angle == pytest.approx(-0.6208, abs=1e-4)  # ~ PUPPET_GRIPPER_JOINT_CLOSE (-0.6213): the same linkage


def test_interbotix_linkage_is_the_inverse_of_openpis_linear_to_radian():
    for angle in (-0.6, 0.0, 0.5476, 1.2, 1.5):
        x = interbotix_gripper_linear_m(angle)
        # openpi's inverse, written out: arcsin((r^2 + x^2 - L^2) / (2 r x))
        back = np.arcsin((0.022**2 + x**2 - 0.036**2) / (2 * 0.022 * x))
        assert back == pytest.approx(angle, abs=1e-12)
    assert interbotix_gripper_linear_m(np.pi / 2) == pytest.approx(0.058, abs=1e-15)


def test_gripper_from_angular_and_its_inverse():
    # (0.5 + 0.5476 - (-0.6213)) / (1.4910 - (-0.6213)) = 1.6689 / 2.1123
    assert gripper_from_angular(0.5) == pytest.approx(1.6689 / 2.1123, abs=1e-12)
    assert gripper_from_angular_inv(1.6689 / 2.1123) == pytest.approx(0.5, abs=1e-12)


# ---- the layouts -----------------------------------------------------------------------------------

STATE_STD = np.array([0.1, -0.2, 0.3, -0.4, 0.5, -0.6, 1.0, 0.7, 0.8, -0.9, 1.0, -1.1, 1.2, 0.0])
G_OPEN = (np.pi / 2 - 0.5476) / 1.082
G_CLOSED = (np.arcsin(-0.0004719664 / 0.00081136) - 0.5476) / 1.082


def aloha_observation(spec, state_std=None, motor_angles=None, images=None):
    names, q = [], []
    motor_angles = motor_angles or {}
    for arm in spec.arms:
        names.extend(arm.qualified_joint_names)
        q.extend(np.zeros(6))
        names.append(arm.qualified(arm.gripper.joint_name))
        q.append(motor_angles.get(arm.name, 1.0))
    return Observation(stamp_s=2.0, images=images or {}, joint_names=tuple(names), joint_positions=np.array(q),
                       instruction="fold the towel", state=state_std)


def test_aloha_state_is_flipped_and_the_gripper_angular():
    layout = make_layout("aloha", bimanual(("cam_high", "cam_left_wrist", "cam_right_wrist")))
    state = layout.state(aloha_observation(layout.spec, STATE_STD))
    np.testing.assert_allclose(state, [0.1, 0.2, -0.3, -0.4, 0.5, -0.6, G_OPEN,
                                       0.7, -0.8, 0.9, 1.0, -1.1, 1.2, G_CLOSED], atol=1e-12)


def test_aloha_gripper_state_from_the_motor_angle_goes_through_the_finger_position():
    # The sim/driver reports the gripper motor angle; ALOHA's state is the finger position the
    # Interbotix linkage gives for it, normalised between 0.01844 and 0.05800 m.
    layout = make_layout("aloha", bimanual(("cam_high",)))
    angle = 1.2
    x = 0.022 * np.sin(angle) + np.sqrt(0.036**2 - (0.022 * np.cos(angle)) ** 2)
    std = layout.standard_state(aloha_observation(layout.spec, motor_angles={"follower_left": angle}))
    assert std[6] == pytest.approx((x - 0.01844) / (0.05800 - 0.01844), abs=1e-12)
    # ... which adapt_to_pi turns back into the angle: below pi/2 the round trip is exact
    assert layout.state(aloha_observation(layout.spec, motor_angles={"follower_left": angle}))[6] == \
        pytest.approx((angle - 0.5476) / 1.082, abs=1e-9)


def test_aloha_actions_are_absolute_flipped_and_the_gripper_is_alohas_joint():
    spec = bimanual(("cam_high",))  # test grippers: closed 0.0, open 1.0 (rad)
    layout = make_layout("aloha", spec)
    state = layout.state(aloha_observation(spec, STATE_STD))
    model = np.zeros((2, 32))
    model[0, :14] = 0.05
    model[0, 6], model[0, 13] = 0.5, 1.0
    out = layout.actions(model[:, :14], state)
    # joints: the flip mask undoes itself around the delta: s + d unflipped, s - d flipped (shoulder, elbow)
    s = STATE_STD
    expected_joints = [s[0] + 0.05, s[1] - 0.05, s[2] - 0.05, s[3] + 0.05, s[4] + 0.05, s[5] + 0.05]
    np.testing.assert_allclose(out[0, :6], expected_joints, atol=1e-12)
    np.testing.assert_allclose(out[0, 7:13], [s[7] + 0.05, s[8] - 0.05, s[9] - 0.05, s[10] + 0.05, s[11] + 0.05,
                                              s[12] + 0.05], atol=1e-12)
    # grippers are absolute: ALOHA's joint angle = normalised * 2.1123 - 0.6213 = pi's value + 0.5476
    assert out[0, 6] == pytest.approx(0.5 + 0.5476, abs=1e-12)  # open 1.0 / closed 0.0 -> the angle itself
    assert out[0, 13] == pytest.approx(1.0 + 0.5476, abs=1e-12)
    # row 1: zero deltas give the state back on the joints
    np.testing.assert_allclose(out[1, :6], s[:6], atol=1e-12)
    assert out[1, 6] == pytest.approx(0.5476, abs=1e-12)


def test_aloha_gripper_column_uses_the_embodiments_gripper_range():
    spec = load_embodiment("aloha")  # ALOHA 2 follower: closed 0.6197, open 1.6214 rad
    layout = make_layout("aloha", spec)
    model = np.zeros((1, 14))
    model[0, 6] = 0.5
    out = layout.actions(model, layout.state(aloha_observation(spec, STATE_STD)))
    assert out[0, 6] == pytest.approx((0.5 + 0.5476 - 0.6197) / (1.6214 - 0.6197), abs=1e-12)
    assert layout.action_names == action_names(spec, "joint_position")
    assert layout.cameras.slots == ("cam_high", "cam_left_wrist", "cam_right_wrist")  # cam_low unused


def test_aloha_sim_keeps_absolute_joints():
    layout = make_layout("aloha_sim", bimanual(("cam_high",)))
    state = layout.state(aloha_observation(layout.spec, STATE_STD))
    model = np.full((1, 14), 0.3)
    out = layout.actions(model, state)
    np.testing.assert_allclose(out[0, :6], [0.3, -0.3, -0.3, 0.3, 0.3, 0.3], atol=1e-12)  # flip only


def fr3_observation(spec, q, opening, images):
    arm = spec.arms[0]
    g = arm.gripper
    names = tuple(arm.qualified_joint_names) + (arm.qualified(g.joint_name),)
    position = g.closed_position + opening * (g.open_position - g.closed_position)
    return Observation(stamp_s=4.0, images=images, joint_names=names, joint_positions=np.r_[q, position],
                       instruction="put the marker in the cup")


def test_droid_state_actions_and_cameras():
    spec = load_embodiment("fr3")
    layout = make_layout("droid", spec)
    assert layout.cameras.slots == ("front", "wrist", None)
    q = np.linspace(-1.0, 1.0, 7)
    state = layout.state(fr3_observation(spec, q, 0.25, {}))
    np.testing.assert_allclose(state, np.r_[q, 0.75], atol=1e-12)  # DROID: 1 = closed
    model = np.zeros((2, 8))
    model[0] = [0.5, -2.0, 0.0, 1.0, -0.25, 0.1, 0.0, 0.8]
    out = layout.actions(model, state)
    # |v| <= 1 (DROID's client clips), 0.2 rad per 15 Hz step at |v| = 1; our gripper is 1 - DROID's
    np.testing.assert_allclose(out[0], [0.1, -0.2, 0.0, 0.2, -0.05, 0.02, 0.0, 0.2], atol=1e-12)
    assert layout.action_names == action_names(spec, "joint_delta")
    assert layout.period_s == pytest.approx(1 / 15)


def test_layouts_refuse_embodiments_they_do_not_fit():
    with pytest.raises(ValueError, match="ALOHA π0 layout needs two 6-joint arms"):
        make_layout("aloha", load_embodiment("fr3"))
    with pytest.raises(ValueError, match="DROID π0 layout needs one 7-joint arm"):
        make_layout("droid", load_embodiment("ur5e"))
    with pytest.raises(ValueError, match=r"unknown π0 data_config 'libero'"):
        make_layout("libero", load_embodiment("fr3"))


# ---- through the policy, on a tiny checkpoint ----------------------------------------------------


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return write_pi0_fixture(tmp_path_factory.mktemp("pi0t") / "pi0_aloha")


@pytest.fixture(scope="module")
def pi0(ckpt):
    return load_pi0(ckpt, device="cpu", dtype="float32")


def test_the_data_config_follows_the_checkpoint(ckpt, pi0, tmp_path):
    assert pi0.data_config == "aloha"  # openpi's ALOHA configs keep their statistics as asset "trossen"
    droid = tmp_path / "droid"
    shutil.copytree(ckpt, droid)
    (droid / "assets" / "trossen").rename(droid / "assets" / "droid")
    assert load_pi0(droid).data_config == "droid"
    config = json.loads((droid / "config.json").read_text())
    config["data_config"] = "none"
    (droid / "config.json").write_text(json.dumps(config))
    assert load_pi0(droid).data_config == "none"
    config["data_config"] = "libero"
    (droid / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"data_config 'libero' is not one of"):
        load_pi0(droid)


def test_a_masked_image_slot_is_not_attended(pi0):
    image = random_image(3)
    noise = torch.randn(1, 50, 32, generator=torch.Generator().manual_seed(2))
    state = np.linspace(-0.5, 0.5, 14)
    with_mask = pi0.sample_actions([image, None], "x", state, 14, noise=noise)
    alone = pi0.sample_actions([image], "x", state, 14, noise=noise)
    np.testing.assert_array_equal(with_mask, alone)


def test_pi0_policy_on_aloha_gives_openpis_actions(pi0):
    spec = load_embodiment("aloha")
    policy = Pi0Policy(pi0, spec, seed=0)  # data_config from the checkpoint: aloha
    assert policy.data_config == "aloha" and policy.cameras == ("cam_high", "cam_left_wrist", "cam_right_wrist")
    images = {c.slot: random_image(10 + i) for i, c in enumerate(spec.cameras)}
    angles = {"follower_left": 1.3, "follower_right": 0.9}
    obs = aloha_observation(spec, motor_angles=angles, images=images)
    joints = np.array([0.1, -0.3, 0.4, 0.0, 0.5, 0.2, -0.2, 0.1, 0.3, 0.1, -0.4, 0.0])
    obs = Observation(obs.stamp_s, obs.images, obs.joint_names,
                      np.r_[joints[:6], angles["follower_left"], joints[6:], angles["follower_right"]],
                      obs.instruction)
    chunk = policy.infer(obs)
    assert chunk.names == action_names(spec, "joint_position") and chunk.period_s == spec.policy_period_s
    # By hand: the model sees the flipped joints and pi's gripper angle (angles below pi/2 come
    # back exactly through the finger position), normalised by the checkpoint's statistics.
    flip = np.array([1, -1, -1, 1, 1, 1])
    state = np.r_[flip * joints[:6], (1.3 - 0.5476) / 1.082, flip * joints[6:], (0.9 - 0.5476) / 1.082]
    noise = torch.randn((1, 50, 32), generator=torch.Generator().manual_seed(0))
    raw = pi0.sample_actions([images["cam_high"], images["cam_left_wrist"], images["cam_right_wrist"]],
                             "fold the towel", state, 14, noise=noise)
    expected = raw.copy()
    for arm, g in ((slice(0, 6), 6), (slice(7, 13), 13)):
        expected[:, arm] = flip * (raw[:, arm] + state[arm])
        expected[:, g] = (raw[:, g] + 0.5476 - 0.6197) / (1.6214 - 0.6197)
    np.testing.assert_allclose(chunk.values, expected, rtol=1e-6, atol=1e-6)
    # without the transforms the same model output would be off by far more than noise
    assert np.abs(expected - raw).max() > 0.3


def test_pi0_policy_on_fr3_with_the_droid_layout(pi0):
    spec = load_embodiment("fr3")
    policy = Pi0Policy(pi0, spec, seed=1, data_config="droid")
    images = {"front": random_image(20), "wrist": random_image(21)}
    q = np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785])
    chunk = policy.infer(fr3_observation(spec, q, 1.0, images))
    assert chunk.names == action_names(spec, "joint_delta") and chunk.period_s == pytest.approx(1 / 15)
    noise = torch.randn((1, 50, 32), generator=torch.Generator().manual_seed(1))
    raw = pi0.sample_actions([images["front"], images["wrist"], None], "put the marker in the cup",
                             np.r_[q, 0.0], 8, noise=noise)
    np.testing.assert_allclose(chunk.values[:, :7], 0.2 * np.clip(raw[:, :7], -1, 1), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(chunk.values[:, 7], np.clip(1.0 - raw[:, 7], 0, 1), rtol=1e-6, atol=1e-6)
