"""OpenVLA adapter on a tiny checkpoint in the released layout.

The reference forward passes here are written from the raw fixture tensors with timm's
conventions (fused qkv, LayerScale, no position for CLS/registers, second-to-last block,
prefix tokens dropped), independently of the loader's key mapping.
"""

import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file

from vla_ros.core.types import Observation
from vla_ros.policies.checkpoints.common import CheckpointError
from vla_ros.policies.checkpoints.fixtures import (
    DEFAULT_OPENVLA_STATS,
    random_image,
    read_safetensors_folder,
    write_openvla_fixture,
)
from vla_ros.policies.checkpoints.openvla import (
    OpenVLAPolicy,
    PrismaticImageTransform,
    load_openvla,
    make_openvla_policy,
)

from .embodiments import bimanual, single_arm

HEADS = 16  # DINOv2 ViT-L and SigLIP So400m both have 16 heads
INSTRUCTION = "Pick up the red cube"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return write_openvla_fixture(tmp_path_factory.mktemp("openvla") / "openvla-7b")


@pytest.fixture(scope="module")
def vla(ckpt):
    return load_openvla(ckpt, device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def raw(ckpt):
    return {k: v.float() for k, v in read_safetensors_folder(ckpt).items()}


def timm_block(x, t, p, layer_scale):
    d = x.shape[-1]
    hd = d // HEADS
    h = F.layer_norm(x, (d,), t[p + "norm1.weight"], t[p + "norm1.bias"], eps=1e-6)
    qkv = F.linear(h, t[p + "attn.qkv.weight"], t[p + "attn.qkv.bias"])
    b, n, _ = qkv.shape
    q, k, v = qkv.reshape(b, n, 3, HEADS, hd).permute(2, 0, 3, 1, 4)
    attn = ((q @ k.transpose(-2, -1)) * hd ** -0.5).softmax(-1)
    o = F.linear((attn @ v).transpose(1, 2).reshape(b, n, d), t[p + "attn.proj.weight"], t[p + "attn.proj.bias"])
    x = x + (o * t[p + "ls1.scale_factor"] if layer_scale else o)
    h = F.layer_norm(x, (d,), t[p + "norm2.weight"], t[p + "norm2.bias"], eps=1e-6)
    h = F.linear(F.gelu(F.linear(h, t[p + "mlp.fc1.weight"], t[p + "mlp.fc1.bias"])),
                 t[p + "mlp.fc2.weight"], t[p + "mlp.fc2.bias"])
    return x + (h * t[p + "ls2.scale_factor"] if layer_scale else h)


def reference_features(t, pixels, layer_scale=True):
    """timm get_intermediate_layers(n={depth-2}) of both ViTs, then the fused-gelu-mlp projector."""
    out = []
    for prefix, px, depth, prefix_tokens in (("vision_backbone.featurizer.", pixels[:, :3], 3, 5),
                                             ("vision_backbone.fused_featurizer.", pixels[:, 3:], 2, 0)):
        w = t[prefix + "patch_embed.proj.weight"]
        x = F.conv2d(px, w, t[prefix + "patch_embed.proj.bias"], stride=w.shape[-1]).flatten(2).transpose(1, 2)
        x = x + t[prefix + "pos_embed"]
        if prefix_tokens:
            x = torch.cat([t[prefix + "cls_token"], t[prefix + "reg_token"], x], dim=1)
        for i in range(depth - 1):
            x = timm_block(x, t, f"{prefix}blocks.{i}.", layer_scale=layer_scale and bool(prefix_tokens))
        out.append(x[:, prefix_tokens:])
    feats = torch.cat(out, dim=2)
    h = F.gelu(F.linear(feats, t["projector.fc1.weight"], t["projector.fc1.bias"]))
    h = F.gelu(F.linear(h, t["projector.fc2.weight"], t["projector.fc2.bias"]))
    return F.linear(h, t["projector.fc3.weight"], t["projector.fc3.bias"])


def reference_pixels(image, size=28):
    pil = Image.fromarray(image).resize((size, size), Image.Resampling.BICUBIC)
    x = torch.from_numpy(np.asarray(pil, dtype=np.float32) / 255.0).permute(2, 0, 1)
    dino = (x - torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    siglip = (x - 0.5) / 0.5
    return torch.cat([dino, siglip])[None]


def test_fixture_has_the_released_layout(ckpt):
    names = sorted(p.name for p in ckpt.iterdir())
    assert names == sorted([
        "config.json", "generation_config.json", "dataset_statistics.json", "preprocessor_config.json",
        "model.safetensors.index.json", "model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
        "model-00003-of-00003.safetensors", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
    ])
    cfg = json.loads((ckpt / "config.json").read_text())
    assert cfg["architectures"] == ["OpenVLAForActionPrediction"] and cfg["model_type"] == "openvla"
    assert cfg["timm_model_ids"] == ["vit_large_patch14_reg4_dinov2.lvd142m", "vit_so400m_patch14_siglip_224"]
    assert cfg["text_config"]["vocab_size"] - cfg["pad_to_multiple_of"] == 32000
    index = json.loads((ckpt / "model.safetensors.index.json").read_text())["weight_map"]
    assert "vision_backbone.featurizer.blocks.0.ls1.scale_factor" in index
    assert "vision_backbone.fused_featurizer.attn_pool.kv.weight" in index
    assert "language_model.lm_head.weight" in index
    assert len(set(index.values())) == 3


def test_every_tensor_lands_where_it_belongs(vla, raw):
    m = vla.model
    dino, sig = m.vision.dino, m.vision.siglip
    qkv = raw["vision_backbone.featurizer.blocks.1.attn.qkv.weight"]
    assert torch.equal(dino.encoder.layer[1].attention.q_proj.weight, qkv[:32])
    assert torch.equal(dino.encoder.layer[1].attention.k_proj.weight, qkv[32:64])
    assert torch.equal(dino.encoder.layer[1].attention.v_proj.weight, qkv[64:])
    assert torch.equal(dino.encoder.layer[2].layer_scale2.lambda1, raw["vision_backbone.featurizer.blocks.2.ls2.scale_factor"])
    pos = dino.embeddings.position_embeddings
    assert torch.equal(pos[:, 1:], raw["vision_backbone.featurizer.pos_embed"]) and not pos[:, 0].any()
    assert torch.equal(dino.embeddings.register_tokens, raw["vision_backbone.featurizer.reg_token"])
    assert torch.equal(sig.embeddings.position_embedding.weight, raw["vision_backbone.fused_featurizer.pos_embed"][0])
    assert torch.equal(sig.head.attention.in_proj_weight[48:], raw["vision_backbone.fused_featurizer.attn_pool.kv.weight"])
    assert torch.equal(sig.head.probe, raw["vision_backbone.fused_featurizer.attn_pool.latent"])
    assert torch.equal(m.projector.fc2.bias, raw["projector.fc2.bias"])
    assert torch.equal(m.backbone.lm_head.weight, raw["language_model.lm_head.weight"])
    assert torch.equal(m.backbone.model.layers[1].mlp.down_proj.weight,
                       raw["language_model.model.layers.1.mlp.down_proj.weight"])
    # Nothing dropped, nothing invented: the model holds exactly the checkpoint's numbers plus
    # the zero CLS position row and the (unused) zero mask token transformers' DINOv2 carries.
    n_model = sum(p.numel() for p in m.parameters())
    assert n_model == sum(v.numel() for v in raw.values()) + 2 * 32


def test_vision_and_projector_match_a_timm_style_reference(vla, raw):
    image = random_image(3)
    pixels = vla.transform(image)
    torch.testing.assert_close(pixels, reference_pixels(image), rtol=0, atol=1e-6)
    with torch.no_grad():
        ours = vla.model.projector(vla.model.vision(pixels))
    ref = reference_features(raw, pixels)
    assert ours.shape == (1, 4, 64)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    # the comparison is sensitive: dropping DINOv2's LayerScale moves the output far away
    assert (ours - reference_features(raw, pixels, layer_scale=False)).abs().max() > 1e-2


def test_prompt_tokens_follow_openvla(vla):
    ids = vla.tokenizer.prompt_ids(INSTRUCTION)
    tok = vla.tokenizer.tokenizer
    assert ids[0] == 1 and ids[-1] == 29871 and tok.id_to_token(29871) == "▁"
    text = tok.decode(ids[1:-1])
    assert text == "In: What action should the robot take to pick up the red cube?\nOut:"
    assert 13 in ids  # "\n" through Llama's byte fallback <0x0A>


def test_predict_action_end_to_end_matches_an_uncached_reference(vla, ckpt):
    image = random_image(5)
    pixels, ids = vla.inputs(image, INSTRUCTION)
    # reference: recompute the full sequence for every token (no KV cache), greedy
    m = vla.model
    seq = ids
    tokens = []
    with torch.no_grad():
        for _ in range(7):
            logits = m.backbone(inputs_embeds=m.embed(pixels, seq)).logits
            nxt = int(logits[0, -1].argmax())
            tokens.append(nxt)
            seq = torch.cat([seq, torch.tensor([[nxt]])], dim=1)
    assert all(31744 <= t <= 31999 for t in tokens)
    np.testing.assert_array_equal(vla.predict_tokens(image, INSTRUCTION, 7), tokens)
    stats = json.loads((ckpt / "dataset_statistics.json").read_text())["fractal20220817_data"]["action"]
    bins = np.linspace(-1, 1, 256)
    centres = (bins[:-1] + bins[1:]) / 2
    normalized = centres[np.clip(32000 - np.array(tokens) - 1, 0, 254)]
    q01, q99, mask = np.array(stats["q01"]), np.array(stats["q99"]), np.array(stats["mask"])
    expected = np.where(mask, 0.5 * (normalized + 1) * (q99 - q01) + q01, normalized)
    action = vla.predict_action(image, INSTRUCTION, unnorm_key="fractal20220817_data")
    np.testing.assert_allclose(action, expected, rtol=0, atol=1e-12)
    assert action.shape == (7,)


def test_unnorm_key_is_required_with_several_datasets_and_must_exist(vla):
    image = random_image(1)
    with pytest.raises(ValueError, match=r"pass unnorm_key.*bridge_orig.*fractal20220817_data"):
        vla.predict_action(image, INSTRUCTION)
    with pytest.raises(KeyError, match=r"unnorm_key 'droid'.*available keys.*bridge_orig"):
        vla.predict_action(image, INSTRUCTION, unnorm_key="droid")


def test_policy_returns_one_ee_delta_row(vla):
    spec = single_arm()
    policy = OpenVLAPolicy(vla, spec, unnorm_key="bridge_orig")
    assert policy.action_names == ("ee_delta/x", "ee_delta/y", "ee_delta/z", "ee_delta/roll",
                                   "ee_delta/pitch", "ee_delta/yaw", "gripper")
    img = random_image(9)
    obs = Observation(stamp_s=12.5, images={"front": img}, joint_names=("joint1",), joint_positions=[0.0],
                      instruction=INSTRUCTION)
    chunk = policy.infer(obs)
    raw_action = vla.predict_action(img, INSTRUCTION, "bridge_orig")
    assert chunk.values.shape == (1, 7) and chunk.stamp_s == 12.5 and chunk.period_s == 0.2
    np.testing.assert_array_equal(chunk.values[0, :6], raw_action[:6])
    assert chunk.values[0, 6] == np.clip(raw_action[6], 0, 1)
    policy.warmup()  # black frame of the camera's configured size, fixed instruction
    with pytest.raises(ValueError, match="needs an instruction"):
        policy.infer(Observation(1.0, {"front": img}, ("joint1",), [0.0], ""))
    with pytest.raises(KeyError, match="lacks camera 'front'"):
        policy.infer(Observation(1.0, {"wrist": img}, ("joint1",), [0.0], INSTRUCTION))
    with pytest.raises(ValueError, match="OpenVLA drives one arm"):
        OpenVLAPolicy(vla, bimanual(), unnorm_key="bridge_orig")


def test_registered_in_the_policy_catalog(ckpt):
    from vla_ros.policies.base import available_policies, make_policy

    assert "openvla" in available_policies()
    policy = make_policy("openvla", embodiment=single_arm(), checkpoint=str(ckpt), unnorm_key="bridge_orig",
                         device="cpu")
    assert policy.unnorm_key == "bridge_orig" and policy.camera == "front"
    # ROS string parameters pass "" for unset ones
    policy = make_openvla_policy(single_arm(cameras=("wrist", "front")), str(ckpt), unnorm_key="bridge_orig",
                                 camera="", device="", dtype="")
    # unset device/dtype: CUDA in bf16 where there is a GPU, else the CPU in float32
    assert policy.camera == "wrist" and policy.vla.dtype == (torch.bfloat16 if torch.cuda.is_available() else torch.float32)
    with pytest.raises(ValueError, match=r"camera 'top' is not one of .*\['wrist', 'front'\]"):
        make_openvla_policy(single_arm(cameras=("wrist", "front")), str(ckpt), "bridge_orig", camera="top")


def test_letterbox_pads_with_the_mean_colour_then_resizes():
    t = PrismaticImageTransform(sizes=((4, 4), (4, 4)), resample=("bilinear", "bicubic"),
                                means=((0.5, 0.25, 0.0), (0.5, 0.5, 0.5)), stds=((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
                                strategy="letterbox")
    image = np.full((2, 4, 3), 255, np.uint8)  # white 2x4 -> padded to 4x4 with one row of fill above and below
    out = t(image)
    assert out.shape == (1, 6, 4, 4)
    canvas = np.zeros((4, 4, 3), np.uint8)
    canvas[:] = (127, 63, 0)  # int(mean * 255)
    canvas[1:3] = 255
    expected_dino = (torch.from_numpy(canvas / 255.0).permute(2, 0, 1).float()
                     - torch.tensor([0.5, 0.25, 0.0]).view(3, 1, 1)) / 0.5
    torch.testing.assert_close(out[0, :3], expected_dino, rtol=0, atol=1e-6)  # 4x4 -> 4x4 is an exact copy
    with pytest.raises(ValueError, match=r"image must be \(H, W, 3\) uint8"):
        t(np.zeros((4, 4), np.uint8))


# ---- refusals ---------------------------------------------------------------------------------------

@pytest.fixture
def broken(ckpt, tmp_path):
    dst = tmp_path / "ckpt"
    shutil.copytree(ckpt, dst)
    return dst


def _shard_of(folder, key):
    return json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"][key]


def test_missing_shard_is_named(broken):
    (broken / "model-00002-of-00003.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"missing shard model-00002-of-00003.safetensors"):
        load_openvla(broken)


def test_wrong_shape_names_file_and_key(broken):
    key = "projector.fc3.weight"
    shard = _shard_of(broken, key)
    tensors = load_file(str(broken / shard))
    tensors[key] = tensors[key][:, :63].contiguous()
    save_file(tensors, str(broken / shard))
    with pytest.raises(CheckpointError, match=rf"{shard}: tensor '{key}' has shape \(64, 63\), expected \(64, 64\)"):
        load_openvla(broken)


def test_unknown_key_is_named(broken):
    shard = "model-00001-of-00003.safetensors"
    tensors = load_file(str(broken / shard))
    tensors["vision_backbone.featurizer.blocks.0.attn.q_norm.weight"] = torch.ones(32)
    save_file(tensors, str(broken / shard))
    index = json.loads((broken / "model.safetensors.index.json").read_text())
    index["weight_map"]["vision_backbone.featurizer.blocks.0.attn.q_norm.weight"] = shard
    (broken / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=rf"{shard}: unknown tensor key 'vision_backbone.featurizer.blocks.0.attn.q_norm.weight'"):
        load_openvla(broken)


def test_missing_key_is_named(broken):
    key = "language_model.model.layers.1.mlp.up_proj.weight"
    shard = _shard_of(broken, key)
    tensors = load_file(str(broken / shard))
    del tensors[key]
    save_file(tensors, str(broken / shard))
    with pytest.raises(CheckpointError, match=rf"{shard} lacks tensor '{key}'"):
        load_openvla(broken)


def test_missing_config_is_named(broken):
    (broken / "config.json").unlink()
    with pytest.raises(CheckpointError, match="lacks config.json"):
        load_openvla(broken)


def test_missing_tokenizer_and_bad_config_are_named(ckpt, tmp_path):
    dst = tmp_path / "c"
    shutil.copytree(ckpt, dst)
    (dst / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError, match="lacks tokenizer.json"):
        load_openvla(dst)
    shutil.copy(ckpt / "tokenizer.json", dst / "tokenizer.json")
    cfg = json.loads((dst / "config.json").read_text())
    cfg["timm_model_ids"][1] = "vit_large_patch14_clip_224.openai"
    (dst / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"timm_model_ids .* not supported"):
        load_openvla(dst)
    with pytest.raises(CheckpointError, match="OpenVLA checkpoint folder not found"):
        load_openvla(tmp_path / "nowhere")


def test_stats_only_in_dataset_statistics_json_are_used(ckpt, tmp_path):
    dst = tmp_path / "c"
    shutil.copytree(ckpt, dst)
    cfg = json.loads((dst / "config.json").read_text())
    del cfg["norm_stats"]
    (dst / "config.json").write_text(json.dumps(cfg))
    (dst / "dataset_statistics.json").write_text(json.dumps({"bridge_orig": DEFAULT_OPENVLA_STATS["bridge_orig"]}))
    vla = load_openvla(dst)
    assert vla.unnorm_keys == ["bridge_orig"] and vla.action_dim(None) == 7
    (dst / "dataset_statistics.json").unlink()
    with pytest.raises(CheckpointError, match="no norm_stats and dataset_statistics.json is missing"):
        load_openvla(dst)


def test_real_openvla_7b_dimensions_give_its_published_size():
    """dinosiglip-vit-so-224px + Llama-2 7B (vocab padded to 32064): the released index.json
    reports total_size 15,082,474,368 bytes of bf16, i.e. 7,541,237,184 parameters."""
    import math

    from transformers import LlamaConfig

    from vla_ros.policies.checkpoints.openvla import OpenVLAArch, ViTDims

    arch = OpenVLAArch(
        ViTDims(1024, 24, 16, 4096, 14, 224, 4, "gelu"), ViTDims(1152, 27, 16, 4304, 14, 224, 0, "gelu"),
        LlamaConfig(vocab_size=32064, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                    num_attention_heads=32, num_key_value_heads=32), "scale_factor")
    shapes = arch.expected_shapes()
    assert sum(math.prod(s) for s in shapes.values()) == 7_541_237_184
    assert shapes["projector.fc1.weight"] == (8704, 2176)
    assert shapes["vision_backbone.featurizer.pos_embed"] == (1, 256, 1024)


def test_the_static_cache_decode_loop_the_cuda_graph_replays_gives_the_same_tokens(vla):
    """cuda_graphs decodes from a StaticCache (in-place, fixed shapes, what a CUDA graph can
    replay); eagerly it must pick the tokens of the DynamicCache loop. Off CUDA `tokens` is
    that loop and nothing is captured."""
    from vla_ros.policies.checkpoints.cuda_graphs import GraphedGreedyDecoder

    decoder = GraphedGreedyDecoder(vla.model.backbone)
    for seed in (1, 5, 9):
        pixels, ids = vla.inputs(random_image(seed), INSTRUCTION)
        reference = vla.model.greedy_action_tokens(pixels, ids, 7)
        with torch.no_grad():
            embeds = vla.model.embed(pixels, ids)
            torch.testing.assert_close(decoder.tokens_uncaptured(embeds, 7), reference, rtol=0, atol=0)
            torch.testing.assert_close(decoder.tokens(embeds, 7), reference, rtol=0, atol=0)
    assert decoder.captures == 0


# ---- statistics precedence (OpenVLA's get_vla / deploy.py) and the prompt ---------------------------

def _finetune_stats(offset: float) -> dict:
    """A fine-tuning dataset's statistics: bridge's with q01/q99 moved, so results differ from bridge's."""
    stats = json.loads(json.dumps(DEFAULT_OPENVLA_STATS["bridge_orig"]))
    stats["action"]["q01"] = [v - offset for v in stats["action"]["q01"][:6]] + [0.0]
    stats["action"]["q99"] = [v + offset for v in stats["action"]["q99"][:6]] + [1.0]
    return stats


def _expected_action(vla, image, stats) -> np.ndarray:
    """OpenVLA's un-normalisation by hand: bin centre x -> 0.5 (x + 1)(q99 - q01) + q01 where mask."""
    tokens = vla.predict_tokens(image, INSTRUCTION, 7)
    bins = np.linspace(-1, 1, 256)
    centres = (bins[:-1] + bins[1:]) / 2
    x = centres[np.clip(32000 - tokens - 1, 0, 254)]
    q01, q99 = np.array(stats["action"]["q01"]), np.array(stats["action"]["q99"])
    mask = np.array(stats["action"]["mask"])
    return np.where(mask, 0.5 * (x + 1) * (q99 - q01) + q01, x)


def test_a_finetunes_dataset_statistics_json_is_used_and_is_the_default(ckpt, tmp_path):
    # finetune.py writes dataset_statistics.json with the fine-tuning dataset only; config.json
    # keeps the base mixture's norm_stats (two datasets in the fixture).
    dst = tmp_path / "finetuned"
    shutil.copytree(ckpt, dst)
    mine = _finetune_stats(0.5)
    (dst / "dataset_statistics.json").write_text(json.dumps({"my_finetune": mine}))
    vla = load_openvla(dst, device="cpu", dtype="float32")
    assert vla.unnorm_keys == ["bridge_orig", "fractal20220817_data", "my_finetune"]
    assert vla.stats_sources == {"bridge_orig": "config.json", "fractal20220817_data": "config.json",
                                 "my_finetune": "dataset_statistics.json"}
    image = random_image(21)
    expected = _expected_action(vla, image, mine)
    np.testing.assert_allclose(vla.predict_action(image, INSTRUCTION, "my_finetune"), expected, rtol=0, atol=1e-12)
    # OpenVLA replaces norm_stats by the file, so no key means the fine-tune's single dataset.
    np.testing.assert_allclose(vla.predict_action(image, INSTRUCTION), expected, rtol=0, atol=1e-12)
    assert OpenVLAPolicy(vla, single_arm()).unnorm_key == "my_finetune"


def test_dataset_statistics_json_wins_over_config_json_for_the_same_key(ckpt, tmp_path):
    dst = tmp_path / "both"
    shutil.copytree(ckpt, dst)
    moved = _finetune_stats(0.25)
    (dst / "dataset_statistics.json").write_text(json.dumps({"bridge_orig": moved}))
    vla = load_openvla(dst, device="cpu", dtype="float32")
    assert vla.stats_sources["bridge_orig"] == "dataset_statistics.json"
    assert vla.stats_sources["fractal20220817_data"] == "config.json"
    image = random_image(22)
    np.testing.assert_allclose(vla.predict_action(image, INSTRUCTION, "bridge_orig"),
                               _expected_action(vla, image, moved), rtol=0, atol=1e-12)
    # ... and not config.json's bridge_orig (the old, silently wrong choice)
    assert not np.allclose(vla.predict_action(image, INSTRUCTION, "bridge_orig"),
                           _expected_action(vla, image, DEFAULT_OPENVLA_STATS["bridge_orig"]))


def test_bad_statistics_name_their_file(ckpt, tmp_path):
    dst = tmp_path / "bad"
    shutil.copytree(ckpt, dst)
    (dst / "dataset_statistics.json").write_text(json.dumps({"my_finetune": {"proprio": {}}}))
    with pytest.raises(CheckpointError, match=r"dataset_statistics.json: statistics 'my_finetune'.*lack the 'action'"):
        load_openvla(dst)


@pytest.mark.parametrize("instruction", ["Pick up the red cube", "  pick up the RED cube \n", "pick up the red cube "])
def test_instruction_is_stripped_and_lower_cased(vla, instruction):
    text = vla.tokenizer.tokenizer.decode(vla.tokenizer.prompt_ids(instruction)[1:-1])
    assert text == "In: What action should the robot take to pick up the red cube?\nOut:"
