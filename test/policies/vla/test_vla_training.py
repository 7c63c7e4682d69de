"""A few optimisation steps on a toy batch reduce every head's loss (on a fixed noise/time draw)."""

from __future__ import annotations

import pytest
import torch

from test.policies.vla.vla_helpers import build_model, raw_batch
from vla_ros.policies.vla.training import compute_loss, make_batch, train_step


def _fixed_loss(model, batch) -> float:
    model.eval()
    with torch.no_grad():
        return float(compute_loss(model, batch, generator=torch.Generator().manual_seed(123)))


@pytest.mark.parametrize("preset,overrides,steps,ratio", [
    ("default", {"chunk_size": 4}, 30, 0.6),                                   # flow
    ("pi0", {"chunk_size": 4}, 30, 0.6),                                      # flow, Gemma, bidirectional prefix
    ("octo", {}, 30, 0.6),                                                    # diffusion
    ("openvla", {"chunk_size": 2}, 15, 0.5),                                  # discrete, autoregressive
    ("openvla", {"chunk_size": 2, "head": {"parallel": True}}, 15, 0.5),      # discrete, parallel (OFT)
    ("rt1", {}, 15, 0.5),                                                     # discrete + FiLM conv
])
def test_training_steps_reduce_the_loss(preset, overrides, steps, ratio):
    model = build_model(preset, **overrides)
    images, instructions, states, actions = raw_batch(model, batch=2)
    batch = make_batch(model, images, instructions, actions, states)
    before = _fixed_loss(model, batch)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    # The same noise/time draw every step: the loss on it must fall if gradients reach every part.
    losses = [train_step(model, opt, batch, generator=torch.Generator().manual_seed(123)) for _ in range(steps)]
    after = _fixed_loss(model, batch)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert after < ratio * before, (before, after)


def test_make_batch_checks_the_action_shape():
    model = build_model("default")
    images, instructions, states, actions = raw_batch(model)
    with pytest.raises(ValueError, match=r"actions have shape \(2, 15, 7\), expected \(2, 16, 7\)"):
        make_batch(model, images, instructions, actions[:, :15], states)
    with pytest.raises(ValueError, match="takes a 8-D state"):
        make_batch(model, images, instructions, actions, None)
