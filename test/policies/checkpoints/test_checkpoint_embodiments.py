"""The registered checkpoint policies on the shipped embodiment configs (fr3, aloha), fed the
kind of observation the policy node assembles (driver joint names, configured camera sizes)."""

import numpy as np
import pytest
import torch

from vla_ros.core.action_spaces import action_names
from vla_ros.core.embodiment import load_embodiment
from vla_ros.core.types import Observation
from vla_ros.policies.base import make_policy
from vla_ros.policies.checkpoints.fixtures import write_openvla_fixture, write_pi0_fixture


def node_like_observation(spec, instruction):
    names, q = [], []
    for arm in spec.arms:
        names.extend(arm.qualified_joint_names)
        q.extend(np.asarray(arm.home_rad, dtype=float).tolist())
        if arm.gripper is not None:
            names.append(arm.qualified(arm.gripper.joint_name))
            q.append(float(arm.gripper.open_position))
    rng = np.random.default_rng(0)
    images = {c.slot: rng.integers(0, 256, (c.height, c.width, 3), dtype=np.uint8) for c in spec.cameras}
    return Observation(stamp_s=7.0, images=images, joint_names=tuple(names), joint_positions=np.array(q),
                       instruction=instruction)


@pytest.fixture(scope="module")
def openvla_ckpt(tmp_path_factory):
    return write_openvla_fixture(tmp_path_factory.mktemp("o") / "openvla")


@pytest.mark.parametrize("embodiment", ["fr3", "ur5e"])
def test_openvla_on_single_arm_configs(openvla_ckpt, embodiment):
    spec = load_embodiment(embodiment)
    ckpt = openvla_ckpt
    policy = make_policy("openvla", embodiment=spec, checkpoint=str(ckpt), unnorm_key="bridge_orig", device="cpu")
    policy.warmup()
    chunk = policy.infer(node_like_observation(spec, "put the carrot on the plate"))
    assert chunk.names == action_names(spec, "ee_delta") and chunk.values.shape == (1, 7)
    assert chunk.period_s == spec.policy_period_s and chunk.stamp_s == 7.0


def test_pi0_on_aloha(tmp_path):
    spec = load_embodiment("aloha")
    ckpt = write_pi0_fixture(tmp_path / "p")
    policy = make_policy("pi0", embodiment=spec, checkpoint=str(ckpt), seed=0, device="cpu")
    obs = node_like_observation(spec, "transfer the cube")
    chunk = policy.infer(obs)
    assert chunk.names == action_names(spec, "joint_position") and chunk.values.shape == (50, 14)
    # openpi's ALOHA layout (the fixture's statistics are asset "trossen"): cam_low is not used
    assert policy.data_config == "aloha" and policy.cameras == ("cam_high", "cam_left_wrist", "cam_right_wrist")
    # the state the policy built, by openpi's formulas: joints times the flip mask, the open gripper
    # (motor 1.6214 rad, past pi/2) through the finger position back to pi's angle pi - 1.6214
    flip = np.array([1, -1, -1, 1, 1, 1])
    grip = (np.pi - 1.6214 - 0.5476) / (1.6296 - 0.5476)
    state = np.concatenate([np.r_[flip * np.asarray(a.home_rad, float), grip] for a in spec.arms])
    noise = torch.randn((1, 50, 32), generator=torch.Generator().manual_seed(0))
    raw = policy.pi0.sample_actions([obs.images[s] for s in policy.cameras], "transfer the cube", state, 14,
                                    noise=noise)
    for arm, g in ((slice(0, 6), 6), (slice(7, 13), 13)):
        np.testing.assert_allclose(chunk.values[:, arm], flip * (raw[:, arm] + state[arm]), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(chunk.values[:, g], (raw[:, g] + 0.5476 - 0.6197) / (1.6214 - 0.6197),
                                   rtol=1e-6, atol=1e-6)
