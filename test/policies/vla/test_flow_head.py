"""Flow head (pi0 conventions): interpolation, target, time sampling, Euler integration, KV-cache reuse."""

from __future__ import annotations

import math

import pytest
import torch

from test.policies.vla.vla_helpers import build_model, inputs_for
from vla_ros.policies.vla.heads.flow import interpolate, sample_flow_time


def test_interpolation_and_target_follow_pi0():
    a = torch.tensor([[[0.5, -0.2]]])
    eps = torch.tensor([[[1.5, 0.4]]])
    t = torch.tensor([0.25])
    x_t, u = interpolate(a, eps, t)
    # x_t = t eps + (1 - t) a, u = eps - a, by hand
    assert torch.allclose(x_t, torch.tensor([[[0.25 * 1.5 + 0.75 * 0.5, 0.25 * 0.4 + 0.75 * -0.2]]]))
    assert torch.allclose(u, torch.tensor([[[1.0, 0.6]]]))
    # t = 1 is pure noise, t = 0 the action
    assert torch.equal(interpolate(a, eps, torch.tensor([1.0]))[0], eps)
    assert torch.equal(interpolate(a, eps, torch.tensor([0.0]))[0], a)


def test_time_sampling_is_scaled_beta_1p5_1():
    g = torch.Generator().manual_seed(0)
    t = sample_flow_time(200_000, g).double()
    assert float(t.min()) >= 0.001 and float(t.max()) <= 1.0
    # Beta(1.5, 1): mean 0.6, CDF t^1.5; scaled by 0.999 and shifted by 0.001
    assert abs(float(t.mean()) - (0.6 * 0.999 + 0.001)) < 3e-3
    q = 0.5 ** (1 / 1.5) * 0.999 + 0.001  # median
    assert abs(float((t < q).double().mean()) - 0.5) < 5e-3
    assert torch.equal(sample_flow_time(5, torch.Generator().manual_seed(3)),
                       sample_flow_time(5, torch.Generator().manual_seed(3)))


def test_euler_integration_runs_from_noise_to_actions():
    model = build_model("default", chunk_size=4)
    head = model.head
    target = torch.linspace(-0.8, 0.8, 4 * 7).reshape(1, 4, 7).repeat(2, 1, 1)
    times = []

    def exact_velocity(prefix, cache, x, t):
        # the straight-path field: x_t = t eps + (1 - t) a  =>  v = eps - a = (x_t - a) / t
        times.append(float(t[0]))
        return (x - target) / t[:, None, None]

    head.velocity = exact_velocity
    out = model.predict_actions(inputs_for(model))
    assert torch.allclose(out, target, atol=1e-5)
    assert len(times) == 10
    assert all(math.isclose(a, b, abs_tol=1e-6) for a, b in zip(times, [1.0 - k / 10 for k in range(10)]))


@pytest.mark.parametrize("preset", ["default", "pi0"])
def test_prefix_is_encoded_once_per_chunk_and_the_cache_reused(preset):
    model = build_model(preset, chunk_size=4, head={"flow_steps": 7})
    calls = {"backbone": 0, "expert": 0}
    model.backbone.model.register_forward_pre_hook(lambda *_: calls.__setitem__("backbone", calls["backbone"] + 1))
    model.head.expert.register_forward_pre_hook(lambda *_: calls.__setitem__("expert", calls["expert"] + 1))
    inputs = inputs_for(model)
    model.predict_actions(inputs, generator=torch.Generator().manual_seed(0))
    assert calls == {"backbone": 1, "expert": 7}


def test_velocity_with_reused_cache_equals_fresh_cache_and_depends_on_prefix():
    model = build_model("default", chunk_size=4)
    head = model.head
    inputs = inputs_for(model)
    prefix = model.encode_prefix(inputs)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 7, generator=g)
    t = torch.tensor([0.7, 0.3])
    with torch.no_grad():
        cache = head.encode_prefix(model.backbone, prefix)
        length = cache.get_seq_length()
        for _ in range(3):  # several steps on the same cache
            v_reused = head.velocity(prefix, cache, x, t)
        assert cache.get_seq_length() == length == prefix.length
        v_fresh = head.velocity(prefix, head.encode_prefix(model.backbone, prefix), x, t)
        assert torch.allclose(v_reused, v_fresh, atol=1e-6)
        other = model.encode_prefix(inputs_for(model, seed=5))
        v_other = head.velocity(other, head.encode_prefix(model.backbone, other), x, t)
    assert not torch.allclose(v_fresh, v_other, atol=1e-4)


def test_pi0_state_is_the_first_suffix_token_not_a_prefix_token():
    model = build_model("pi0", chunk_size=4)
    inputs = inputs_for(model)
    prefix = model.encode_prefix(inputs)
    assert model.state_proj is None and model.head.state_proj is not None
    assert prefix.mask.sum(1).tolist() == [49 + int(n) for n in inputs.text_mask.sum(1)]  # images + text only
    assert torch.equal(prefix.suffix_state, inputs.state)
    x = torch.randn(2, 4, 7, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0.5, 0.5])
    with torch.no_grad():
        v1 = model.head.velocity(prefix, model.head.encode_prefix(model.backbone, prefix), x, t)
        moved = type(prefix)(prefix.embeds, prefix.mask, prefix.positions, True, prefix.suffix_state + 0.5)
        v2 = model.head.velocity(moved, model.head.encode_prefix(model.backbone, moved), x, t)
    assert v1.shape == (2, 4, 7)
    assert not torch.allclose(v1, v2, atol=1e-5)


def test_flow_sampling_is_deterministic_under_a_seed():
    model = build_model("pi0")
    inputs = inputs_for(model)
    a = model.predict_actions(inputs, generator=torch.Generator().manual_seed(4))
    b = model.predict_actions(inputs, generator=torch.Generator().manual_seed(4))
    c = model.predict_actions(inputs, generator=torch.Generator().manual_seed(5))
    assert a.shape == (2, 50, 7)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
