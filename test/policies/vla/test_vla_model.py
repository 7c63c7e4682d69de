"""VLAModel: module-name contract, prefix layout, vision features, save/load and refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import (
    Dinov2WithRegistersModel,
    GemmaForCausalLM,
    GemmaModel,
    LlamaForCausalLM,
    SiglipVisionModel,
)

from test.policies.vla.vla_helpers import build_model, inputs_for, raw_batch
from vla_ros.core.normalization import FeatureStats, NormStats
from vla_ros.policies.vla.model import VLAModel
from vla_ros.policies.vla.vision import FiLMConvEncoder


def test_openvla_preset_has_the_prismatic_structure():
    m = build_model("openvla")
    assert isinstance(m.vision.dino, Dinov2WithRegistersModel)
    assert isinstance(m.vision.siglip, SiglipVisionModel)
    assert isinstance(m.backbone, LlamaForCausalLM)
    vd = 32 + 48  # dino + siglip widths of the preset
    llm = m.config.backbone.hidden_size
    # fused-gelu-mlp: vision -> 4 vision -> llm -> llm
    assert (m.projector.fc1.in_features, m.projector.fc1.out_features) == (vd, 4 * vd)
    assert (m.projector.fc2.in_features, m.projector.fc2.out_features) == (4 * vd, llm)
    assert (m.projector.fc3.in_features, m.projector.fc3.out_features) == (llm, llm)
    assert m.camera_embed is None and m.state_proj is None
    assert m.head.tokenizer.vocab_size == m.config.backbone.vocab_size


def test_pi0_preset_expert_shares_the_backbone_attention_geometry():
    m = build_model("pi0")
    assert isinstance(m.backbone, GemmaForCausalLM)
    assert isinstance(m.head.expert, GemmaModel)
    b, e = m.backbone.config, m.head.expert.config
    assert (e.num_hidden_layers, e.num_attention_heads, e.num_key_value_heads, e.head_dim) == \
        (b.num_hidden_layers, b.num_attention_heads, b.num_key_value_heads, b.head_dim)
    assert e.hidden_size < b.hidden_size
    assert m.config.chunk_size == 50 and m.config.head.flow_steps == 10


def test_padded_vocabulary_keeps_action_ids_in_the_base_vocabulary():
    m = build_model("openvla", backbone={"vocab_size": 740, "pad_vocab_multiple": 64})
    assert m.backbone.get_input_embeddings().num_embeddings == 768
    assert m.head.tokenizer.first_token_id == 740 - 256


def test_fused_vision_features_are_dino_then_siglip_second_to_last_patches():
    m = build_model("openvla")
    pixels = torch.rand(2, 3, 56, 56)
    with torch.no_grad():
        feats = m.vision(pixels)
        mean_in = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        std_in = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        dino = m.vision.dino(pixel_values=(pixels - mean_in) / std_in, output_hidden_states=True)
        siglip = m.vision.siglip(pixel_values=(pixels - 0.5) / 0.5, output_hidden_states=True)
    n_patches = (56 // 14) ** 2
    # hidden_states[0] is the embedding output, so [-2] is the input of the last layer
    expected = torch.cat([dino.hidden_states[-2][:, 1 + 4:], siglip.hidden_states[-2]], dim=-1)
    assert feats.shape == (2, n_patches, 80)
    assert torch.allclose(feats, expected, atol=1e-6)


def test_film_encoder_is_identity_conditioned_at_init_and_uses_language_after():
    m = build_model("rt1")
    enc = m.vision
    assert isinstance(enc, FiLMConvEncoder)
    pixels = torch.rand(2, 3, 96, 96)
    c1, c2 = torch.randn(2, 128), torch.randn(2, 128)
    with torch.no_grad():
        assert torch.allclose(enc(pixels, c1), enc(pixels, c2))
        enc.films[0].gamma.weight.normal_()
        out = enc(pixels, c1)
        assert not torch.allclose(out, enc(pixels, c2))
    assert out.shape == (2, 8, 64)
    with pytest.raises(ValueError, match="text embedding of shape"):
        enc(pixels, None)


def test_film_conditioning_is_normalised_so_one_word_of_a_pooled_instruction_counts():
    from vla_ros.policies.vla.config import ConvConfig

    torch.manual_seed(0)
    enc = FiLMConvEncoder(ConvConfig(channels=(8, 16), num_tokens=2), cond_dim=32)
    with torch.no_grad():
        for film in enc.films:  # as after training: FiLM layers of unit-scale weights
            film.gamma.weight.normal_(0.0, 1.0 / 32 ** 0.5)
            film.beta.weight.normal_(0.0, 1.0 / 32 ** 0.5)
        pixels = torch.rand(1, 3, 16, 16)
        # Two instructions pooled over 6 token embeddings of std 0.02 that differ in one word.
        words = torch.randn(6, 32) * 0.02
        other = words.clone()
        other[4] = torch.randn(32) * 0.02
        a, b = words.mean(0, keepdim=True), other.mean(0, keepdim=True)
        assert float((a - b).abs().mean()) < 0.005  # the raw difference: ~0.003 per component
        out_a, out_b = enc(pixels, a), enc(pixels, b)
        # the scale of the embedding does not matter, the word does
        assert torch.allclose(enc(pixels, 50.0 * a), out_a, atol=1e-5)
        rel = float((out_a - out_b).norm() / out_a.norm())
        assert rel > 0.05, rel  # unnormalised, these weights move the output by ~0.2 %


def test_film_encoder_coordinate_channels_say_where_the_attention_looks():
    from vla_ros.policies.vla.config import ConvConfig
    from vla_ros.policies.vla.vision import coordinate_maps

    grid = coordinate_maps(3, 4)
    assert grid.shape == (2, 3, 4)
    assert grid[0, 0].tolist() == pytest.approx([-1.0, -1 / 3, 1 / 3, 1.0])  # x along a row
    assert grid[1, :, 2].tolist() == pytest.approx([-1.0, 0.0, 1.0])  # y down a column
    enc = FiLMConvEncoder(ConvConfig(channels=(8, 16), num_tokens=2, coords=True), cond_dim=4)
    assert enc.out_dim == 18 and build_model("rt1").vision.out_dim == 64  # off unless asked for
    # Attention maps that are ~1 on one feature pixel and ~0 elsewhere: token 0 looks at row 1,
    # column 3 of the 4x4 map of a 16 px image, token 1 at row 2, column 0. Their coordinate
    # channels are then that pixel's (x, y) divided by the 16 pixels TokenLearner averages over.
    targets = [(1, 3), (2, 0)]
    logits = torch.full((1, 2, 4, 4), -50.0)
    for s, (r, c) in enumerate(targets):
        logits[0, s, r, c] = 50.0

    class FixedAttention(torch.nn.Module):
        def forward(self, x):
            return logits.expand(x.shape[0], -1, -1, -1)

    enc.token_learner.attention = FixedAttention()
    with torch.no_grad():
        tokens = enc(torch.rand(2, 3, 16, 16), torch.zeros(2, 4))
    assert tokens.shape == (2, 2, 18)
    for s, (r, c) in enumerate(targets):
        xy = torch.tensor([-1 + 2 * c / 3, -1 + 2 * r / 3]) / 16
        assert torch.allclose(tokens[:, s, 16:], xy.expand(2, 2), atol=1e-6)


def test_prefix_is_left_padded_with_positions_from_zero():
    m = build_model("default")
    inputs = inputs_for(m)  # instruction 0 is shorter than instruction 1
    prefix = m.encode_prefix(inputs)
    n_img = (112 // 16) ** 2  # one camera, 16 px patches
    lengths = inputs.text_mask.sum(1).tolist()
    assert lengths[0] < lengths[1]
    real = prefix.mask.sum(1).tolist()
    assert real == [n_img + lengths[0] + 1, n_img + lengths[1] + 1]
    pad = prefix.length - real[0]
    assert not prefix.mask[0, :pad].any() and prefix.mask[0, pad:].all() and prefix.mask[1].all()
    assert prefix.positions[0, pad:].tolist() == list(range(real[0]))
    # the last token is the state token of each sample
    with torch.no_grad():
        state_tok = m.state_proj(inputs.state)
    assert torch.allclose(prefix.embeds[:, -1], state_tok)
    # the first real token of sample 0 is its first image patch (order preserved)
    with torch.no_grad():
        img = m.projector(m.vision(inputs.pixels[:, 0])) + m.camera_embed[0]
    assert torch.allclose(prefix.embeds[0, pad], img[0, 0], atol=1e-6)


def test_bidirectional_prefix_mask_by_hand():
    from vla_ros.policies.vla.heads.common import Prefix

    mask = torch.tensor([[False, True, True]])
    prefix = Prefix(torch.zeros(1, 3, 4), mask, torch.tensor([[0, 0, 1]]), bidirectional=True)
    got = prefix.attention_mask(extra=2)[0, 0].int().tolist()
    assert got == [
        [1, 1, 1, 0, 0],  # padding row: never read, and no real token attends to it
        [0, 1, 1, 0, 0],  # real prefix tokens see every real prefix token, never the padding
        [0, 1, 1, 0, 0],
        [0, 1, 1, 1, 0],  # appended tokens: the real prefix, then causal among themselves
        [0, 1, 1, 1, 1],
    ]
    # suffix with one leading (state) token and two action tokens
    assert prefix.suffix_mask(3, leading=1)[0, 0].int().tolist() == [
        [0, 1, 1, 1, 0, 0],  # state: real prefix + itself
        [0, 1, 1, 1, 1, 1],  # actions: real prefix + state + every action
        [0, 1, 1, 1, 1, 1],
    ]
    causal = Prefix(torch.zeros(1, 3, 4), mask, torch.tensor([[0, 0, 1]]))
    assert causal.attention_mask(extra=2).tolist() == [[False, True, True, True, True]]


@pytest.mark.parametrize("preset,sees_later_tokens", [("pi0", True), ("default", False)])
def test_prefix_attention_pattern_reaches_the_backbone(preset, sees_later_tokens):
    m = build_model(preset)
    inputs = inputs_for(m)
    ids = inputs.input_ids.clone()
    ids[1, -1] = 300  # sample 1 has no padding: change its last instruction token
    other = type(inputs)(inputs.pixels, ids, inputs.text_mask, inputs.state)
    with torch.no_grad():
        outs = []
        for x in (inputs, other):
            prefix = m.encode_prefix(x)
            hidden = m.backbone.model(inputs_embeds=prefix.embeds, attention_mask=prefix.attention_mask(),
                                      position_ids=prefix.positions).last_hidden_state
            outs.append(hidden[1, 0])  # sample 1 has no padding: its first image patch
    # with a bidirectional (pi0) prefix the first image token sees the instruction after it
    assert (not torch.allclose(outs[0], outs[1], atol=1e-6)) == sees_later_tokens


def test_openvla_prefix_puts_the_patches_after_bos():
    m = build_model("openvla")
    inputs = inputs_for(m)
    prefix = m.encode_prefix(inputs)
    embed = m.backbone.get_input_embeddings()
    with torch.no_grad():
        patches = m.projector(m.vision(inputs.pixels[:, 0]))
        text = embed(inputs.input_ids)
    n = patches.shape[1]
    length = int(inputs.text_mask[1].sum())  # sample 1: the longer instruction, no padding
    assert prefix.length == 1 + n + length - 1
    assert torch.equal(prefix.embeds[1, 0], text[1, 0])  # <s>
    assert torch.allclose(prefix.embeds[1, 1: 1 + n], patches[1], atol=1e-6)
    assert torch.equal(prefix.embeds[1, 1 + n:], text[1, 1:length])


def test_camera_order_matters_through_camera_embeddings():
    m = build_model("default", camera_slots=("front", "wrist"))
    inputs = inputs_for(m)
    swapped = type(inputs)(inputs.pixels.flip(1), inputs.input_ids, inputs.text_mask, inputs.state)
    p1 = m.encode_prefix(inputs).embeds
    p2 = m.encode_prefix(swapped).embeds
    assert p1.shape[1] == 2 * 49 + inputs.text_mask.shape[1] + 1
    assert not torch.allclose(p1, p2)


@pytest.mark.parametrize("preset", ["default", "openvla", "octo", "pi0", "rt1"])
def test_save_load_round_trip_gives_identical_outputs(tmp_path, preset):
    m = build_model(preset)
    stats = NormStats({"action": FeatureStats(mean=np.full(7, 0.1), std=np.full(7, 2.0), min=-np.ones(7),
                                              max=np.ones(7), q01=np.full(7, -0.5), q99=np.full(7, 0.7)),
                       **({"state": FeatureStats(mean=np.zeros(8), std=np.ones(8), min=-np.ones(8), max=np.ones(8),
                                                 q01=-np.ones(8), q99=np.ones(8))} if m.config.state_dim else {})},
                      source="toy")
    m.norm_stats = stats
    folder = m.save_pretrained(tmp_path / preset)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors", "norm_stats.json",
                                                         "tokenizer.json"]
    loaded = VLAModel.from_pretrained(folder)
    assert loaded.config == m.config
    assert loaded.norm_stats.to_dict() == stats.to_dict()
    images, instructions, states, _ = raw_batch(m)
    i1 = m.prepare_inputs(images, instructions, states)
    i2 = loaded.prepare_inputs(images, instructions, states)
    assert torch.equal(i1.input_ids, i2.input_ids)
    a1 = m.predict_actions(i1, generator=torch.Generator().manual_seed(0))
    a2 = loaded.predict_actions(i2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a1, a2)


@pytest.fixture
def saved(tmp_path):
    return build_model("default").save_pretrained(tmp_path / "m")


@pytest.mark.parametrize("name", ["config.json", "model.safetensors", "tokenizer.json", "norm_stats.json"])
def test_missing_file_is_named(saved, name):
    (saved / name).unlink()
    with pytest.raises(FileNotFoundError, match=name.replace(".", r"\.")):
        VLAModel.from_pretrained(saved)


def test_wrong_shape_names_file_and_key(saved):
    tensors = load_file(str(saved / "model.safetensors"))
    key = "projector.fc1.weight"
    tensors[key] = torch.zeros(3, 3)
    save_file(tensors, str(saved / "model.safetensors"))
    with pytest.raises(ValueError, match=r"model\.safetensors.*projector\.fc1\.weight.*\(3, 3\)"):
        VLAModel.from_pretrained(saved)


def test_unknown_and_missing_weight_keys_are_named(saved):
    tensors = load_file(str(saved / "model.safetensors"))
    tensors["head.bogus_layer.weight"] = torch.zeros(2)
    save_file(tensors, str(saved / "model.safetensors"))
    with pytest.raises(ValueError, match=r"model\.safetensors: unknown key.*head\.bogus_layer\.weight"):
        VLAModel.from_pretrained(saved)
    del tensors["head.bogus_layer.weight"]
    del tensors["state_proj.bias"]
    save_file(tensors, str(saved / "model.safetensors"))
    with pytest.raises(ValueError, match=r"model\.safetensors: missing key.*state_proj\.bias"):
        VLAModel.from_pretrained(saved)


def test_unknown_config_key_is_named(saved):
    cfg = json.loads((saved / "config.json").read_text())
    cfg["head"]["num_experts"] = 4
    (saved / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"config\.json: head: unknown key\(s\) \['num_experts'\]"):
        VLAModel.from_pretrained(saved)


def test_norm_stats_of_the_wrong_dimension_are_refused(saved):
    bad = NormStats({"action": FeatureStats(q01=-np.ones(6), q99=np.ones(6)),
                     "state": FeatureStats(q01=-np.ones(8), q99=np.ones(8))})
    bad.to_json(saved / "norm_stats.json")
    with pytest.raises(ValueError, match=r"norm_stats\.json: 'action' statistics are 6-D, the model's action is 7-D"):
        VLAModel.from_pretrained(saved)


def test_normalisation_round_trip_through_the_model():
    q01, q99 = np.linspace(-0.3, -0.1, 7), np.linspace(0.2, 0.9, 7)
    mask = np.array([True] * 6 + [False])
    raw = np.random.default_rng(0).uniform(q01, q99, (2, 1, 7))
    # discrete head (OpenVLA): bounds_q99 with the mask
    m = build_model("openvla")
    m.norm_stats = NormStats({"action": FeatureStats(q01=q01, q99=q99, mask=mask)})
    norm = m.normalize_actions(raw)
    expected = np.where(mask, 2 * (raw - q01) / (q99 - q01 + 1e-8) - 1, raw)
    assert np.allclose(norm.numpy(), expected, atol=1e-6)
    assert np.allclose(m.unnormalize_actions(norm), raw, atol=1e-6)
    # default preset (openpi quantile rule): (x - q01) / (q99 - q01 + 1e-6) * 2 - 1, no mask, no clip
    m = build_model("default", chunk_size=1)
    m.norm_stats = NormStats({"action": FeatureStats(q01=q01, q99=q99),
                              "state": FeatureStats(q01=-np.ones(8), q99=np.ones(8))})
    outside = raw * 3.0
    norm = m.normalize_actions(outside)
    assert np.allclose(norm.numpy(), (outside - q01) / (q99 - q01 + 1e-6) * 2 - 1, atol=1e-6)
    assert np.allclose(m.unnormalize_actions(norm), outside, atol=1e-5)


def test_norm_stats_lacking_the_rule_statistics_are_refused():
    m = build_model("octo")  # mean_std rule
    stats = NormStats({"action": FeatureStats(q01=-np.ones(7), q99=np.ones(7)),
                       "state": FeatureStats(mean=np.zeros(8), std=np.ones(8))})
    with pytest.raises(ValueError, match=r"'action'.*rule 'mean_std' needs statistics \['mean', 'std'\]"):
        VLAModel(m.config, tokenizer=m.tokenizer, norm_stats=stats)


def test_spatial_softmax_tokens_hold_the_expected_position_of_their_attention():
    from vla_ros.policies.vla.config import ConvConfig
    from vla_ros.policies.vla.vision import coordinate_maps

    # strides (2, 1): a 16 px image gives an 8x8 last feature map (RT-1's all-2 strides: 4x4)
    enc = FiLMConvEncoder(ConvConfig(channels=(8, 16), num_tokens=2, coords=True, pooling="spatial_softmax",
                                     strides=(2, 1)), cond_dim=4)
    assert enc.convs[0].stride == (2, 2) and enc.convs[1].stride == (1, 1)
    # token 0: all its attention on pixel (row 2, col 5); token 1: split equally between (1, 1) and
    # (1, 2), so its position is halfway between those pixel centres (sub-pixel, unlike an argmax).
    logits = torch.full((1, 2, 8, 8), -60.0)
    logits[0, 0, 2, 5] = 60.0
    logits[0, 1, 1, 1] = logits[0, 1, 1, 2] = 60.0

    class FixedAttention(torch.nn.Module):
        def forward(self, x):
            assert x.shape[-2:] == (8, 8)
            return logits.expand(x.shape[0], -1, -1, -1)

    enc.token_learner.attention = FixedAttention()
    with torch.no_grad():
        tokens = enc(torch.rand(3, 3, 16, 16), torch.zeros(3, 4))
    grid = coordinate_maps(8, 8)
    pixel = 2.0 / 7.0  # pixel-centre spacing in [-1, 1]
    assert torch.allclose(tokens[:, 0, 16:], torch.tensor([-1 + 5 * pixel, -1 + 2 * pixel]), atol=1e-6)
    assert torch.allclose(tokens[:, 1, 16:], torch.tensor([-1 + 1.5 * pixel, -1 + pixel]), atol=1e-6)
    assert torch.allclose(tokens[:, 0, 16:], grid[:, 2, 5], atol=1e-6)
    # the feature part is the attended pixels' features (a weighted mean, not divided by 64)
    assert float(tokens[:, 0, :16].abs().max()) > 1e-3


@pytest.mark.parametrize("bad, match", [
    ({"pooling": "max"}, "pooling must be"),
    ({"strides": (2,)}, "strides must give 1 or 2 for each of the 2"),
    ({"strides": (2, 3)}, "strides must give 1 or 2"),
])
def test_conv_config_refuses_unknown_pooling_and_bad_strides(bad, match):
    from vla_ros.policies.vla.config import ConvConfig

    with pytest.raises(ValueError, match=match):
        ConvConfig(channels=(8, 16), **bad)
