"""Discrete head: OpenVLA token <-> action mapping (formulas recomputed here), KV-cached decoding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from test.policies.vla.vla_helpers import build_model, inputs_for
from vla_ros.policies.vla.heads.discrete import DiscreteActionHead
from vla_ros.policies.vla.presets import make_config


def _openvla_reference(vocab_size: int):
    """OpenVLA's ActionTokenizer, written out from the published formulas."""
    bins = np.linspace(-1.0, 1.0, 256)
    centres = (bins[:-1] + bins[1:]) / 2.0

    def encode(a):
        return vocab_size - np.digitize(np.clip(a, -1.0, 1.0), bins)

    def decode(ids):
        return centres[np.clip(vocab_size - ids - 1, 0, 254)]

    return encode, decode


def test_token_mapping_matches_openvla_formulas():
    for vocab in (768, 32000):
        cfg = make_config("openvla", chunk_size=3, backbone={"vocab_size": vocab})
        head = DiscreteActionHead(cfg)
        encode, decode = _openvla_reference(vocab)
        rng = np.random.default_rng(1)
        a = rng.uniform(-1.2, 1.2, (5, 3, 7))
        a[0, 0, :4] = [-1.0, 1.0, 0.0, np.linspace(-1, 1, 256)[17]]  # edges and an exact bin edge
        tokens = head.actions_to_tokens(torch.tensor(a, dtype=torch.float64)).numpy()
        # float32 inside the head: compare with the reference on the same float32 values
        assert np.array_equal(tokens, encode(a.astype(np.float32).astype(np.float64)).reshape(5, -1))
        assert tokens.min() >= vocab - 256 and tokens.max() <= vocab - 1
        back = head.tokens_to_actions(torch.tensor(tokens)).numpy()
        assert np.allclose(back, decode(tokens).reshape(5, 3, 7), atol=1e-7)
        # decoding lands in the bin the action came from: error at most one bin width
        assert np.abs(back - np.clip(a, -1, 1)).max() <= 2.0 / 255 + 1e-6


def test_llama2_vocabulary_gives_openvla_token_ids():
    # OpenVLA on Llama-2: a = 1 -> 31744, a = -1 -> 31999 (REFERENCE.md)
    head = DiscreteActionHead(make_config("openvla", backbone={"vocab_size": 32000}))
    ids = head.actions_to_tokens(torch.tensor([[[1.0, -1.0, 0, 0, 0, 0, 0]]])).tolist()[0]
    assert ids[:2] == [31744, 31999]


@pytest.mark.parametrize("prefix_attention", ["causal", "bidirectional"])
def test_autoregressive_decoding_agrees_with_one_teacher_forced_pass(prefix_attention):
    model = build_model("openvla", chunk_size=2, prefix_attention=prefix_attention)
    inputs = inputs_for(model, batch=2)  # different instruction lengths -> left padding in the prefix
    head = model.head
    lm = model.backbone
    prefix = model.encode_prefix(inputs)
    tokens = head.decode_tokens(lm, prefix)
    assert tokens.shape == (2, 14)
    # Feed the decoded tokens in one pass without cache: the argmax at each position must reproduce them.
    n = tokens.shape[1]
    embeds = torch.cat([prefix.embeds, lm.get_input_embeddings()(tokens[:, :-1])], dim=1)
    mask = torch.cat([prefix.mask, torch.ones(2, n - 1, dtype=torch.bool)], dim=1)
    positions = (mask.long().cumsum(1) - 1).clamp(min=0)
    if prefix_attention == "bidirectional":
        mask = prefix.attention_mask(n - 1)
    with torch.no_grad():
        hidden = lm.model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions).last_hidden_state
        logits = head._action_logits(lm, hidden[:, prefix.length - 1:])
    assert torch.equal(logits.argmax(-1) + head.tokenizer.first_token_id, tokens)


def test_batched_decoding_equals_single_sample_decoding():
    model = build_model("openvla", chunk_size=2)
    both = inputs_for(model, batch=2)
    with torch.no_grad():
        batched = model.predict_actions(both)
        for i in range(2):
            single = type(both)(both.pixels[i:i + 1], both.input_ids[i:i + 1, : int(both.text_mask[i].sum())],
                                both.text_mask[i:i + 1, : int(both.text_mask[i].sum())])
            assert torch.equal(model.predict_actions(single)[0], batched[i])


def test_parallel_decoding_shapes_and_determinism():
    model = build_model("openvla", chunk_size=4, head={"parallel": True})
    inputs = inputs_for(model)
    a1 = model.predict_actions(inputs)
    a2 = model.predict_actions(inputs)
    assert a1.shape == (2, 4, 7)
    assert torch.equal(a1, a2)
    # every output is one of the 255 OpenVLA bin centres
    bins = np.linspace(-1, 1, 256)
    centres = (bins[:-1] + bins[1:]) / 2
    dist = np.abs(a1.numpy()[..., None] - centres[None, None, None]).min(-1)
    assert dist.max() < 1e-6
    # the queries see each other: changing the last query changes the first token's scores
    prefix = model.encode_prefix(inputs)
    h1 = model.head._parallel_hidden(model.backbone, prefix)
    with torch.no_grad():
        model.head.action_queries[-1] += 1.0
    h2 = model.head._parallel_hidden(model.backbone, prefix)
    assert not torch.allclose(h1[:, 0], h2[:, 0])


def test_rt1_preset_is_parallel_and_deterministic_under_seed():
    m1 = build_model("rt1", seed=3)
    m2 = build_model("rt1", seed=3)
    inputs = inputs_for(m1)
    assert torch.equal(m1.predict_actions(inputs), m2.predict_actions(inputs))
    assert m1.predict_actions(inputs).shape == (2, 1, 7)
