"""Image augmentation as Octo publishes it for its primary camera (random resized crop, then
colour jitter), in torch, batched, deterministic given a generator.

Defaults (Octo's `image_augment_kwargs`): random_resized_crop scale [0.8, 1.0], ratio [0.9, 1.1];
random_brightness 0.1 (additive); random_contrast [0.9, 1.1]; random_saturation [0.9, 1.1];
random_hue 0.05 (a fraction of a full turn). The crop is resampled back to the input size
bilinearly; hue is rotated about the grey axis in YIQ space (a linear stand-in for TF's HSV
shift: identical on grey, close for small angles). Parameters are drawn per image for a whole
(global) batch from one generator, so a data-parallel rank that takes a slice of the batch
augments its images exactly as a single process would.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)


@dataclass(frozen=True)
class AugmentConfig:
    crop_scale: tuple[float, float] = (0.8, 1.0)
    crop_ratio: tuple[float, float] = (0.9, 1.1)
    brightness: float = 0.1
    contrast: tuple[float, float] = (0.9, 1.1)
    saturation: tuple[float, float] = (0.9, 1.1)
    hue: float = 0.05

    def __post_init__(self) -> None:
        lo, hi = self.crop_scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"crop_scale must satisfy 0 < lo <= hi <= 1, got {self.crop_scale}")
        if not 0 < self.crop_ratio[0] <= self.crop_ratio[1]:
            raise ValueError(f"crop_ratio must satisfy 0 < lo <= hi, got {self.crop_ratio}")
        if self.brightness < 0 or self.hue < 0 or self.hue > 0.5:
            raise ValueError(f"brightness must be >= 0 and hue in [0, 0.5], got {self.brightness}, {self.hue}")


def _uniform(n: int, lo: float, hi: float, g: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g, dtype=torch.float64)


def sample_params(cfg: AugmentConfig, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Per-image parameters for n images: crop (relative width/height and centre in [-1, 1]
    coordinates), brightness delta, contrast, saturation and hue factors."""
    area = _uniform(n, *cfg.crop_scale, generator)
    log_r = _uniform(n, math.log(cfg.crop_ratio[0]), math.log(cfg.crop_ratio[1]), generator)
    ratio = torch.exp(log_r)
    w = torch.sqrt(area * ratio).clamp(max=1.0)
    h = torch.sqrt(area / ratio).clamp(max=1.0)
    cx = (2 * torch.rand(n, generator=generator, dtype=torch.float64) - 1) * (1 - w)
    cy = (2 * torch.rand(n, generator=generator, dtype=torch.float64) - 1) * (1 - h)
    return {
        "w": w, "h": h, "cx": cx, "cy": cy,
        "brightness": _uniform(n, -cfg.brightness, cfg.brightness, generator),
        "contrast": _uniform(n, *cfg.contrast, generator),
        "saturation": _uniform(n, *cfg.saturation, generator),
        "hue": _uniform(n, -cfg.hue, cfg.hue, generator),
    }


def slice_params(params: dict[str, torch.Tensor], start: int, stop: int) -> dict[str, torch.Tensor]:
    return {k: v[start:stop] for k, v in params.items()}


def resized_crop(x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """(n, 3, S, S) float -> the crop (w, h, cx, cy) of each image resampled to S x S (bilinear)."""
    n = x.shape[0]
    theta = torch.zeros((n, 2, 3), dtype=x.dtype)
    theta[:, 0, 0] = params["w"].to(x.dtype)
    theta[:, 0, 2] = params["cx"].to(x.dtype)
    theta[:, 1, 1] = params["h"].to(x.dtype)
    theta[:, 1, 2] = params["cy"].to(x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def colour_jitter(x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """Brightness (additive), contrast (about each channel's mean), saturation (about the
    luma grey), hue (rotation in YIQ); clipped to [0, 1] after each step as TF does."""
    def per(k: str) -> torch.Tensor:
        return params[k].to(x.dtype)[:, None, None, None]

    x = (x + per("brightness")).clamp(0, 1)
    mean = x.mean(dim=(2, 3), keepdim=True)
    x = ((x - mean) * per("contrast") + mean).clamp(0, 1)
    grey = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
    x = ((x - grey) * per("saturation") + grey).clamp(0, 1)
    angle = params["hue"].to(x.dtype) * 2 * math.pi
    c, s = torch.cos(angle), torch.sin(angle)
    rot = torch.zeros((x.shape[0], 3, 3), dtype=x.dtype)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = c, -s, s, c
    m = _YIQ_TO_RGB.to(x.dtype) @ rot @ _RGB_TO_YIQ.to(x.dtype)  # (n, 3, 3)
    x = torch.einsum("nij,njhw->nihw", m, x)
    return x.clamp(0, 1)


def augment(x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """(n, 3, S, S) float in [0, 1] -> augmented, same shape."""
    return colour_jitter(resized_crop(x, params), params)
