"""Augmentation: identity parameters change nothing, each op does what its definition says on
images whose answer is known, draws are deterministic and slice like the global batch."""

from __future__ import annotations

import math

import pytest
import torch

from vla_ros.train.augment import AugmentConfig, augment, colour_jitter, resized_crop, sample_params, slice_params


def _identity(n):
    one, zero = torch.ones(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)
    return {"w": one, "h": one, "cx": zero, "cy": zero, "brightness": zero, "contrast": one, "saturation": one,
            "hue": zero}


def test_identity_parameters_leave_the_image_unchanged():
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(augment(x, _identity(3)), x, atol=1e-5, rtol=0)


def test_crop_of_the_right_half_of_a_half_black_half_white_image_is_white():
    x = torch.zeros(1, 3, 16, 16)
    x[..., 8:] = 1.0
    p = _identity(1)
    p["w"] = torch.tensor([0.5], dtype=torch.float64)
    p["cx"] = torch.tensor([0.5], dtype=torch.float64)  # centre of the right half in [-1, 1] coordinates
    y = resized_crop(x, p)
    assert y.shape == x.shape
    assert float(y[..., 1:].min()) > 0.99  # the first column blends across the edge (bilinear)


def test_colour_ops_follow_their_definitions():
    grey = torch.full((1, 3, 4, 4), 0.5)
    p = _identity(1)
    p["hue"] = torch.tensor([0.25], dtype=torch.float64)
    p["saturation"] = torch.tensor([3.0], dtype=torch.float64)
    torch.testing.assert_close(colour_jitter(grey, p), grey, atol=1e-6, rtol=0)  # grey has no hue or saturation
    red = torch.zeros(1, 3, 4, 4)
    red[:, 0] = 0.6
    p = _identity(1)
    p["brightness"] = torch.tensor([0.1], dtype=torch.float64)
    torch.testing.assert_close(colour_jitter(red, p)[:, 0], torch.full((1, 4, 4), 0.7), atol=1e-6, rtol=0)
    p = _identity(1)
    p["saturation"] = torch.tensor([0.0], dtype=torch.float64)
    out = colour_jitter(red, p)
    torch.testing.assert_close(out, torch.full_like(out, 0.299 * 0.6), atol=1e-6, rtol=0)  # luma grey
    p = _identity(1)
    p["contrast"] = torch.tensor([2.0], dtype=torch.float64)
    ramp = torch.linspace(0.3, 0.7, 16).reshape(1, 1, 4, 4).repeat(1, 3, 1, 1)
    torch.testing.assert_close(colour_jitter(ramp, p), (ramp - 0.5) * 2 + 0.5, atol=1e-6, rtol=0)
    # hue: a full turn is the identity, half a turn keeps the luma (Y) of a colour
    p = _identity(1)
    p["hue"] = torch.tensor([0.5], dtype=torch.float64)
    c = torch.tensor([0.5, 0.4, 0.3]).reshape(1, 3, 1, 1)
    y = colour_jitter(c, p)
    luma = lambda v: 0.299 * v[:, 0] + 0.587 * v[:, 1] + 0.114 * v[:, 2]  # noqa: E731
    torch.testing.assert_close(luma(y), luma(c), atol=1e-6, rtol=0)


def test_draws_are_seeded_within_the_published_ranges_and_slice_like_the_global_batch():
    cfg = AugmentConfig()
    a = sample_params(cfg, 64, torch.Generator().manual_seed(5))
    b = sample_params(cfg, 64, torch.Generator().manual_seed(5))
    for k in a:
        assert torch.equal(a[k], b[k])
    area = a["w"] * a["h"]
    assert float(area.min()) >= 0.8 - 1e-9 and float(area.max()) <= 1.0 + 1e-9
    ratio = a["w"] / a["h"]
    assert 0.9 - 1e-9 <= float(ratio.min()) and float(ratio.max()) <= 1.1 + 1e-9
    assert float((a["cx"].abs() + a["w"]).max()) <= 1.0 + 1e-9  # the crop stays inside the image
    assert float(a["brightness"].abs().max()) <= 0.1 and float(a["hue"].abs().max()) <= 0.05
    x = torch.rand(64, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    whole = augment(x, a)
    part = augment(x[16:32], slice_params(a, 16, 32))
    torch.testing.assert_close(part, whole[16:32])


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="crop_scale"):
        AugmentConfig(crop_scale=(0.5, 1.2))
    with pytest.raises(ValueError, match="hue"):
        AugmentConfig(hue=0.7)
