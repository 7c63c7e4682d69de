"""π0 adapter on a tiny PI0Config checkpoint written with save_pretrained + openpi statistics."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from vla_ros.core.types import Observation
from vla_ros.policies.checkpoints.common import CheckpointError
from vla_ros.policies.checkpoints.fixtures import random_image, read_safetensors_folder, write_pi0_fixture
from vla_ros.policies.checkpoints.pi0 import Pi0Policy, load_pi0

from .embodiments import bimanual, single_arm

INSTRUCTION = "fold_the towel\n"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return write_pi0_fixture(tmp_path_factory.mktemp("pi0") / "pi0_aloha")


@pytest.fixture(scope="module")
def pi0(ckpt):
    return load_pi0(ckpt, device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def stats(ckpt):
    return json.loads((ckpt / "assets" / "trossen" / "norm_stats.json").read_text())["norm_stats"]


def test_weights_land_and_config_is_the_real_structure(pi0, ckpt):
    raw = read_safetensors_folder(ckpt)
    m = pi0.model
    # transformers' on-disk π0 names, mapped to the in-memory modules
    assert torch.equal(m.embed_action_time.state_proj.weight, raw["state_proj.weight"])
    assert torch.equal(m.action_out_proj.bias, raw["action_out_proj.bias"])
    assert torch.equal(m.model.dit.layers[1].mlp.down_proj.weight,
                       raw["paligemma_with_expert.gemma_expert.model.layers.1.mlp.down_proj.weight"])
    assert sum(p.numel() for p in m.parameters()) == sum(v.numel() for v in raw.values())
    assert pi0.asset_id == "trossen"
    assert (pi0.config.chunk_size, pi0.config.max_action_dim, pi0.config.max_state_dim) == (50, 32, 32)


def test_prefix_tokens(pi0):
    ids = pi0.tokenizer.prefix_ids(INSTRUCTION, num_image_tokens=8)
    tok = pi0.tokenizer.tokenizer
    assert ids[:8] == [512] * 8 and ids[8] == 2  # <image> x 8, <bos>
    assert tok.decode(ids[9:]) == "fold the towel\n"  # openpi's cleaning, then "\n"


def reference_pixels(image, size=28):
    # openpi resize_with_pad by hand: 48x64 -> scale 28/64 -> 21x28, 3 black rows above
    resized = np.asarray(Image.fromarray(image).resize((28, 21), Image.Resampling.BILINEAR))
    canvas = np.zeros((size, size, 3), np.uint8)
    canvas[3:24] = resized
    return torch.from_numpy(canvas).permute(2, 0, 1).float() / 127.5 - 1.0


def test_one_inference_unnormalises_with_openpi_stats(pi0, stats):
    images = [random_image(1), random_image(2)]
    rng = np.random.default_rng(4)
    state = rng.normal(size=14)
    noise = torch.randn(1, 50, 32, generator=torch.Generator().manual_seed(3))
    actions = pi0.sample_actions(images, INSTRUCTION, state, action_dim=14, noise=noise)
    assert actions.shape == (50, 14)

    # independent reference: inputs assembled by hand, the transformers model called directly
    mean_s, std_s = np.array(stats["state"]["mean"][:14]), np.array(stats["state"]["std"][:14])
    state_in = np.zeros(32)
    state_in[:14] = (state - mean_s) / (std_s + 1e-6)
    ids = [512] * 8 + [2] + pi0.tokenizer.tokenizer.encode("fold the towel\n", add_special_tokens=False).ids
    ids_t = torch.tensor([ids])
    with torch.no_grad():
        raw = pi0.model.sample_actions(
            state=torch.tensor(state_in[None], dtype=torch.float32), input_ids=ids_t,
            attention_mask=torch.ones_like(ids_t),
            pixel_values=torch.stack([reference_pixels(i) for i in images])[None],
            pixel_attention_mask=torch.ones(1, 2, dtype=torch.bool), noise=noise)
    raw = raw[0, :, :14].double().numpy()
    mean_a, std_a = np.array(stats["actions"]["mean"][:14]), np.array(stats["actions"]["std"][:14])
    np.testing.assert_allclose(actions, raw * (std_a + 1e-6) + mean_a, rtol=1e-6, atol=1e-6)
    # the un-normalisation is not a no-op on these statistics
    assert np.max(np.abs(actions - raw)) > 0.1
    # π0.5/FAST checkpoints use openpi's quantile rule instead: check its output mapping too
    q = pi0.stats["action"].first(14)
    np.testing.assert_allclose(q.unnormalize(raw, "quantile"),
                               (raw + 1) / 2 * (np.array(stats["actions"]["q99"][:14]) - np.array(stats["actions"]["q01"][:14]) + 1e-6)
                               + np.array(stats["actions"]["q01"][:14]), rtol=0, atol=1e-12)


def test_policy_builds_a_50_step_chunk_from_joint_states(pi0, stats):
    spec = bimanual()
    # our own layout, no openpi transforms (test_pi0_transforms covers the ALOHA/DROID ones)
    policy = Pi0Policy(pi0, spec, seed=0, data_config="none")
    names = policy.action_names
    assert len(names) == 14 and names[6] == "follower_left/gripper" and names[7] == "follower_right/waist"
    joints = list(spec.joint_names) + ["follower_left/gripper", "follower_right/gripper"]
    q = np.linspace(-0.5, 0.5, 14)
    obs = Observation(stamp_s=3.0, images={"cam_high": random_image(5), "cam_left_wrist": random_image(6)},
                      joint_names=tuple(joints), joint_positions=np.concatenate([q[:12], [0.25, 0.75]]),
                      instruction="fold the towel")
    chunk = policy.infer(obs)
    assert chunk.values.shape == (50, 14) and chunk.period_s == 0.02 and chunk.stamp_s == 3.0
    # same seed, same state (joints then gripper per arm, gripper normalised) -> same chunk
    policy.reset()
    state = np.concatenate([q[:6], [0.25], q[6:12], [0.75]])
    noise = torch.randn(1, 50, 32, generator=torch.Generator().manual_seed(0))
    expected = pi0.sample_actions([obs.images["cam_high"], obs.images["cam_left_wrist"]], "fold the towel",
                                  state, 14, noise=noise)
    np.testing.assert_allclose(policy.infer(obs).values, expected, rtol=1e-6, atol=1e-6)
    with pytest.raises(KeyError, match=r"lacks cameras \['cam_left_wrist'\]"):
        policy.infer(Observation(3.0, {"cam_high": random_image(5)}, tuple(joints), np.zeros(14), "x"))


def test_registered_in_the_policy_catalog(ckpt):
    from vla_ros.policies.base import available_policies, make_policy

    assert "pi0" in available_policies()
    policy = make_policy("pi0", embodiment=bimanual(), checkpoint=str(ckpt), unnorm_key="", seed=1,
                         device="", dtype="")  # "" = unset, as ROS string parameters pass it
    assert policy.pi0.asset_id == "trossen" and policy.cameras == ("cam_high", "cam_left_wrist")
    assert policy.data_config == "aloha"  # from the checkpoint's asset id "trossen"
    with pytest.raises(ValueError, match="supports action spaces"):
        Pi0Policy(policy.pi0, single_arm(action_space="cartesian_velocity"), data_config="none")
    with pytest.raises(ValueError, match="ALOHA π0 layout needs two 6-joint arms"):
        Pi0Policy(policy.pi0, single_arm())
    policy = make_policy("pi0", embodiment=single_arm(cameras=("front", "wrist")), checkpoint=str(ckpt),
                         data_config="droid", device="cpu")
    assert policy.data_config == "droid" and policy.cameras == ("front", "wrist")


# ---- refusals ---------------------------------------------------------------------------------------

@pytest.fixture
def broken(ckpt, tmp_path):
    dst = tmp_path / "ckpt"
    shutil.copytree(ckpt, dst)
    return dst


def _shard_of(folder, key):
    return json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"][key]


def _edit_shard(folder, key, fn):
    shard = _shard_of(folder, key)
    tensors = load_file(str(folder / shard))
    fn(tensors)
    save_file(tensors, str(folder / shard), metadata={"format": "pt"})
    return shard


def test_missing_shard_is_named(broken):
    (broken / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointError, match="missing shard model-00002-of-00002.safetensors"):
        load_pi0(broken)


def test_wrong_shape_names_file_and_key(broken):
    shard = _edit_shard(broken, "state_proj.weight", lambda t: t.update({"state_proj.weight": t["state_proj.weight"][:, :7].contiguous()}))
    with pytest.raises(CheckpointError, match=rf"{shard} \('state_proj.weight' on disk\): tensor for 'embed_action_time.state_proj.weight' has shape \(16, 7\), expected \(16, 32\)"):
        load_pi0(broken)


def test_unknown_and_missing_keys_are_named(broken, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(broken, other)
    shard = _edit_shard(broken, "state_proj.bias", lambda t: t.update({"state_proj.extra": torch.zeros(3)}))
    index = json.loads((broken / "model.safetensors.index.json").read_text())
    index["weight_map"]["state_proj.extra"] = shard
    (broken / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=rf"{shard} \('state_proj.extra' on disk\): unknown tensor key 'embed_action_time.state_proj.extra'"):
        load_pi0(broken)
    _edit_shard(other, "action_out_proj.weight", lambda t: t.pop("action_out_proj.weight"))
    index = json.loads((other / "model.safetensors.index.json").read_text())
    del index["weight_map"]["action_out_proj.weight"]
    (other / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="lacks the tensor for 'action_out_proj.weight'"):
        load_pi0(other)


def test_asset_selection_and_missing_files(broken):
    shutil.copytree(broken / "assets" / "trossen", broken / "assets" / "droid")
    with pytest.raises(ValueError, match=r"2 assets; pass unnorm_key, one of \['droid', 'trossen'\]"):
        load_pi0(broken)
    with pytest.raises(KeyError, match=r"asset 'libero' has no norm_stats.json.*\['droid', 'trossen'\]"):
        load_pi0(broken, unnorm_key="libero")
    assert load_pi0(broken, unnorm_key="droid").asset_id == "droid"
    (broken / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError, match="lacks tokenizer.json"):
        load_pi0(broken, unnorm_key="droid")
    shutil.rmtree(broken / "assets")
    with pytest.raises(CheckpointError, match="has no norm_stats.json"):
        load_pi0(broken)
    (broken / "config.json").unlink()
    with pytest.raises(CheckpointError, match="lacks config.json"):
        load_pi0(broken)


def test_state_and_action_dims_are_checked(pi0):
    with pytest.raises(ValueError, match="action_dim must be in 1..32"):
        pi0.sample_actions([random_image(0)], "x", np.zeros(14), action_dim=33)
    with pytest.raises(ValueError, match="state has 40 dims but the statistics"):
        pi0.sample_actions([random_image(0)], "x", np.zeros(40), action_dim=14)
    with pytest.raises(ValueError, match="unknown π0 normalisation rule 'bounds'"):
        pi0.sample_actions([random_image(0)], "x", np.zeros(14), action_dim=14, rule="bounds")


def test_the_loop_the_cuda_graph_replays_is_transformers_sample_actions(pi0):
    """cuda_graphs runs its own loop (prefix once, the expert step per Euler step, the cache put
    back on the prefix after each); eagerly it must give transformers' result exactly. On the CPU
    `sample` itself falls back to transformers' loop."""
    from vla_ros.policies.checkpoints.cuda_graphs import GraphedDenoiser

    inputs = pi0.inputs([random_image(1), random_image(2)], INSTRUCTION, np.linspace(-1.0, 1.0, 14))
    noise = torch.randn(1, 50, 32, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        reference = pi0.model.sample_actions(noise=noise, **inputs)
        denoiser = GraphedDenoiser(pi0.model)
        torch.testing.assert_close(denoiser.sample_uncaptured(inputs, noise), reference, rtol=0, atol=0)
        torch.testing.assert_close(denoiser.sample_uncaptured(inputs, noise, num_steps=3),
                                   pi0.model.sample_actions(noise=noise, num_steps=3, **inputs), rtol=0, atol=0)
        torch.testing.assert_close(denoiser.sample(inputs, noise), reference, rtol=0, atol=0)
    assert denoiser.captures == 0  # nothing is captured off CUDA
