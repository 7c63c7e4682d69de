"""Diffusion head (Octo): cosine schedule by hand, DDPM and DDIM updates, readout conditioning."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from test.policies.vla.vla_helpers import build_model, inputs_for
from vla_ros.policies.vla.heads.diffusion import cosine_beta_schedule, ddim_timesteps


def _alpha_bar(t: float, steps: int, s: float = 0.008) -> float:
    f = lambda u: math.cos((u / steps + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    return f(t) / f(0)


def test_cosine_schedule_matches_the_formula():
    steps = 20
    betas = cosine_beta_schedule(steps)
    assert betas.shape == (steps,)
    for t in range(steps):
        expected = min(max(1 - _alpha_bar(t + 1, steps) / _alpha_bar(t, steps), 0.0), 0.999)
        assert math.isclose(betas[t], expected, rel_tol=1e-12, abs_tol=1e-15)
    # alpha_bar(T) = cos^2(pi/2) = 0, so the last beta is the clip value
    assert betas[-1] == 0.999
    assert 0.007 < betas[0] < 0.009 and np.all(np.diff(betas) > 0)


def test_head_buffers_hold_the_schedule():
    model = build_model("octo")
    head = model.head
    assert head.steps == 20 and head.sampler == "ddpm"
    betas = torch.tensor(cosine_beta_schedule(20), dtype=torch.float32)
    assert torch.allclose(head.betas, betas)
    assert torch.allclose(head.alpha_bars, torch.cumprod(1 - betas, 0))
    # before the clip kicks in, prod(1 - beta) telescopes to alpha_bar(t + 1)
    assert math.isclose(float(head.alpha_bars[9]), _alpha_bar(10, 20), rel_tol=1e-5)
    # a bf16 model keeps the schedule in full precision (bf16 would turn 1 - 0.992 into 1 - 0.9922)
    model.to(torch.bfloat16)
    exact = torch.tensor(np.cumprod(1 - cosine_beta_schedule(20)), dtype=torch.float32)
    assert torch.equal(head.alpha_bars, exact)
    assert head.schedule("alpha_bars").dtype == torch.float32


@pytest.mark.parametrize("sampler,expected_steps", [("ddpm", list(range(19, -1, -1))), ("ddim", [19, 14, 10, 5, 0])])
def test_samplers_recover_the_chunk_from_an_exact_noise_predictor(sampler, expected_steps):
    model = build_model("octo", head={"sampler": sampler, "ddim_steps": 5})
    head = model.head
    x0 = torch.linspace(-2.0, 2.0, 4 * 7).reshape(1, 4, 7).repeat(2, 1, 1)
    seen = []

    def oracle(readout, t, noisy):
        # the noise that takes x0 to `noisy` at step t: eps = (x_t - sqrt(ab) x0) / sqrt(1 - ab)
        seen.append(int(t[0]))
        ab = head.alpha_bars[t][:, None, None]
        return (noisy - ab.sqrt() * x0) / (1 - ab).sqrt()

    head.predict_noise = oracle
    out = model.predict_actions(inputs_for(model), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(out, x0, atol=1e-4)
    assert seen == expected_steps


def test_ddim_timesteps_are_evenly_spaced_and_distinct():
    assert ddim_timesteps(20, 5) == [19, 14, 10, 5, 0]
    assert ddim_timesteps(20, 20) == list(range(19, -1, -1))
    assert ddim_timesteps(10, 1) == [0]


def test_diffusion_sampling_is_seeded_and_readout_conditioned():
    model = build_model("octo")
    inputs = inputs_for(model)
    a = model.predict_actions(inputs, generator=torch.Generator().manual_seed(2))
    b = model.predict_actions(inputs, generator=torch.Generator().manual_seed(2))
    assert a.shape == (2, 4, 7) and torch.equal(a, b)
    assert float(a.abs().max()) <= model.config.head.max_action
    # the readout reads the observation: different images give a different readout embedding
    r1 = model.head.readout_embedding(model.backbone, model.encode_prefix(inputs))
    r2 = model.head.readout_embedding(model.backbone, model.encode_prefix(inputs_for(model, seed=9)))
    assert r1.shape == (2, model.config.backbone.hidden_size)
    assert not torch.allclose(r1, r2, atol=1e-4)
