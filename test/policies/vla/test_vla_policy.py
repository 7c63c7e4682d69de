"""VLAPolicy: chunks named in the embodiment's action space, period/stamp, un-normalisation, checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vla_ros.core.embodiment import load_embodiment
from vla_ros.core.normalization import FeatureStats, NormStats
from vla_ros.core.types import Observation
from vla_ros.policies.base import Policy, make_policy
from vla_ros.policies.vla.policy import VLAPolicy, make_vla_policy, observation_state, select_device, state_names

FR3_NAMES = ("ee_delta/x", "ee_delta/y", "ee_delta/z", "ee_delta/roll", "ee_delta/pitch", "ee_delta/yaw", "gripper")
ALOHA_JOINTS = ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate")


def _observation(spec, stamp_s=3.25, instruction="pick up the red cube", seed=0):
    rng = np.random.default_rng(seed)
    names = state_names(spec)
    return Observation(
        stamp_s=stamp_s,
        images={c.slot: rng.integers(0, 256, (120, 160, 3), dtype=np.uint8) for c in spec.cameras},
        joint_names=names,
        joint_positions=rng.uniform(-0.5, 0.5, len(names)),
        instruction=instruction,
    )


def test_fr3_chunk_has_names_shape_period_and_stamp():
    spec = load_embodiment("fr3")
    policy = make_policy("vla", embodiment=spec)
    assert isinstance(policy, Policy) and isinstance(policy, VLAPolicy)
    chunk = policy.infer(_observation(spec))
    assert chunk.names == FR3_NAMES == policy.action_names
    assert chunk.values.shape == (16, 7)
    assert chunk.period_s == spec.policy_period_s == policy.period_s
    assert chunk.stamp_s == 3.25
    assert np.all(np.isfinite(chunk.values))
    assert policy.needs_privileged is False


def test_aloha_chunk_covers_both_arms():
    spec = load_embodiment("aloha")
    policy = make_vla_policy(spec, preset="pi0")
    chunk = policy.infer(_observation(spec, stamp_s=7.0))
    expected = tuple(f"{arm}/{j}" for arm in ("follower_left", "follower_right") for j in ALOHA_JOINTS + ("gripper",))
    assert chunk.names == expected
    assert chunk.values.shape == (50, 14)
    assert chunk.period_s == spec.policy_period_s and chunk.stamp_s == 7.0
    assert policy.model.config.camera_slots == ("cam_high", "cam_low", "cam_left_wrist", "cam_right_wrist")
    assert policy.model.config.state_dim == 14


def test_aloha_state_is_joints_then_normalised_gripper_per_arm():
    spec = load_embodiment("aloha")
    left, right = spec.arms
    names = state_names(spec)
    left_names = tuple(f"follower_left/{j}" for j in ALOHA_JOINTS) + (f"follower_left/{left.gripper.joint_name}",)
    assert names[:7] == left_names
    q = np.arange(14, dtype=float) * 0.1
    q[6] = left.gripper.open_position
    q[13] = right.gripper.closed_position
    obs = Observation(0.0, {}, names, q)
    state = observation_state(spec, obs)
    assert np.allclose(state[[0, 5, 7, 12]], q[[0, 5, 7, 12]])
    assert state[6] == pytest.approx(1.0) and state[13] == pytest.approx(0.0)
    with pytest.raises(ValueError, match=r"Observation.state has shape \(3,\); embodiment 'aloha' uses a 14-D state"):
        observation_state(spec, Observation(0.0, {}, names, q, state=np.zeros(3)))


def test_actions_are_unnormalised_with_the_q01_q99_rule():
    spec = load_embodiment("fr3")
    policy = make_vla_policy(spec, preset="openvla", chunk_size=2)
    q01 = np.array([-0.02, -0.03, -0.01, -0.1, -0.1, -0.2, 0.0])
    q99 = np.array([0.02, 0.03, 0.04, 0.1, 0.1, 0.2, 1.0])
    mask = np.array([True] * 6 + [False])
    policy.model.norm_stats = NormStats({"action": FeatureStats(q01=q01, q99=q99, mask=mask)})
    obs = _observation(spec)
    with torch.no_grad():
        inputs = policy.model.prepare_inputs([dict(obs.images)], [obs.instruction])
        normalised = policy.model.predict_actions(inputs)[0].cpu().double().numpy()
    chunk = policy.infer(obs)
    # OpenVLA: 0.5 (x + 1)(q99 - q01) + q01 where mask, x itself where not
    expected = np.where(mask, 0.5 * (normalised + 1) * (q99 - q01) + q01, normalised)
    assert np.allclose(chunk.values, expected, atol=1e-6)
    assert np.all(chunk.values[:, :6] >= q01[:6] - 1e-9) and np.all(chunk.values[:, :6] <= q99[:6] + 1e-9)


@pytest.mark.parametrize("rule", ["quantile", "bounds_q99"])
def test_samples_past_the_training_range_are_clipped_to_it(rule):
    # An untrained flow head samples from ~N(0, 1): many normalised values lie outside [-1, 1], i.e.
    # outside the data's [q01, q99]. Clipped (the default) they land on the bounds, in the masked
    # columns only, and are counted; clip_actions=False passes the same samples through.
    spec = load_embodiment("fr3")
    q01 = np.array([-0.02, -0.03, -0.01, -0.1, -0.1, -0.2, 0.0])
    q99 = np.array([0.02, 0.03, 0.04, 0.1, 0.1, 0.2, 1.0])
    mask = np.array([True] * 6 + [False])
    stats = NormStats({"action": FeatureStats(q01=q01, q99=q99, mask=mask)})
    chunks = {}
    for clip in (False, True):
        policy = make_vla_policy(spec, preset="default", seed=3, warmup=False, clip_actions=clip, action_norm=rule,
                                 state_dim=0)
        policy.model.norm_stats = stats
        chunks[clip] = policy.infer(_observation(spec)).values
        assert policy.clipped_values == (0 if not clip else int(np.sum(
            ((chunks[False] < q01 - 1e-9) | (chunks[False] > q99 + 1e-6)) & mask)))
    raw, clipped = chunks[False], chunks[True]
    outside = ((raw < q01) | (raw > q99 + 1e-6)) & mask
    assert outside.sum() >= 5  # the case is exercised
    np.testing.assert_allclose(clipped[:, :6], np.clip(raw[:, :6], q01[:6], q99[:6]), atol=1e-5)
    np.testing.assert_array_equal(clipped[:, 6], raw[:, 6])  # an unmasked column is not clipped


def test_execute_steps_sends_the_first_rows_of_the_same_prediction():
    spec = load_embodiment("fr3")
    full = make_vla_policy(spec, preset="default", seed=5, warmup=False)
    cut = make_vla_policy(spec, preset="default", seed=5, warmup=False, execute_steps=4)
    obs = _observation(spec)
    whole, head = full.infer(obs), cut.infer(obs)
    assert whole.values.shape == (16, 7) and head.values.shape == (4, 7)
    np.testing.assert_array_equal(head.values, whole.values[:4])  # the same sample, its first 4 rows
    assert head.period_s == whole.period_s and head.stamp_s == whole.stamp_s
    for bad in (0, 17):
        with pytest.raises(ValueError, match=r"execute_steps must be in \[1, chunk_size 16\]"):
            make_vla_policy(spec, preset="default", warmup=False, execute_steps=bad)


def test_reset_makes_stochastic_heads_repeat():
    spec = load_embodiment("fr3")
    policy = make_vla_policy(spec, preset="octo", seed=7)
    obs = _observation(spec)
    first = policy.infer(obs).values
    second = policy.infer(obs).values
    policy.reset()
    assert np.array_equal(policy.infer(obs).values, first)
    assert not np.array_equal(first, second)


def test_checkpoint_round_trip_and_mismatch(tmp_path):
    fr3 = load_embodiment("fr3")
    original = make_vla_policy(fr3, preset="default", seed=1)
    folder = original.model.save_pretrained(tmp_path / "fr3_vla")
    loaded = make_vla_policy(fr3, checkpoint=folder, seed=1)
    obs = _observation(fr3)
    assert np.array_equal(loaded.infer(obs).values, original.infer(obs).values)
    with pytest.raises(ValueError, match=r"cannot be combined with a checkpoint"):
        make_vla_policy(fr3, checkpoint=folder, chunk_size=4)
    with pytest.raises(ValueError, match=r"predicts 7-D actions but embodiment 'aloha' \(joint_position\) has 14"):
        make_vla_policy(load_embodiment("aloha"), checkpoint=folder)


def test_missing_camera_is_named():
    spec = load_embodiment("fr3")
    policy = make_vla_policy(spec, warmup=False)
    obs = _observation(spec)
    partial = Observation(obs.stamp_s, {"front": obs.images["front"]}, obs.joint_names, obs.joint_positions)
    with pytest.raises(KeyError, match=r"lacks camera slots \['wrist'\]"):
        policy.infer(partial)


def test_device_selection_on_this_machine():
    dev, dtype = select_device(None)
    if torch.cuda.is_available():
        assert (dev.type, dtype) == ("cuda", torch.bfloat16)
    else:
        assert (dev.type, dtype) == ("cpu", torch.float32)
        with pytest.raises(ValueError, match="CUDA is not available"):
            select_device("cuda")


def test_bf16_weights_run_and_track_float32():
    # What runs on a GPU (bf16); checked on the CPU here so dtype mix-ups fail without a GPU.
    spec = load_embodiment("fr3")
    policy = make_vla_policy(spec, preset="default", seed=2, warmup=False)
    obs = _observation(spec)
    reference = policy.infer(obs).values
    policy.model.to(torch.bfloat16)
    policy.reset()
    chunk = policy.infer(obs)
    assert policy.model.dtype == torch.bfloat16
    assert np.all(np.isfinite(chunk.values))
    # same noise, bf16 rounding only: the flow head's 10 Euler steps stay within a few hundredths
    assert np.abs(chunk.values - reference).max() < 0.05


def test_building_a_policy_leaves_the_global_rng_alone():
    before = torch.get_rng_state()
    make_vla_policy(load_embodiment("fr3"), preset="octo", seed=11)
    assert torch.equal(before, torch.get_rng_state())
