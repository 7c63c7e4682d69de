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
import re
from dataclasses import dataclass
from typing import Sequence

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


# Colour words and the RGB channel that dominates an object of that colour (the simulated cubes:
# red (0.85, 0.12, 0.10), green (0.10, 0.70, 0.15), blue (0.12, 0.25, 0.85)).
COLOUR_CHANNELS = {"red": 0, "green": 1, "blue": 2}
CHANNEL_PERMUTATIONS = ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0))
_COLOUR_WORD = re.compile(r"\b(" + "|".join(COLOUR_CHANNELS) + r")\b", re.IGNORECASE)


def permute_colours(images: torch.Tensor, instructions: Sequence[str], perms: Sequence[int]
                    ) -> tuple[torch.Tensor, list[str]]:
    """Colour-permutation augmentation for tasks that name objects by colour: sample i's images
    (B, ..., 3, H, W) get their RGB channels reordered by CHANNEL_PERMUTATIONS[perms[i]] (new channel
    c = old channel p[c]) and its instruction's colour words renamed to match (an object whose old
    dominant channel was p[c] now shows channel c's colour). The scene, the target and the actions
    stay what they were: one recorded scene teaches "red", "green" and "blue" for the same cube, so
    a model cannot learn which cube to take from the scene's layout alone and must read the
    instruction. Words keep their case style (lower / Capitalised / UPPER)."""
    if images.shape[0] != len(instructions) or len(perms) != len(instructions):
        raise ValueError(f"{images.shape[0]} images, {len(instructions)} instructions, {len(perms)} permutations")
    names = {c: w for w, c in COLOUR_CHANNELS.items()}
    out_images = images.clone()
    out_text = []
    for i, (text, k) in enumerate(zip(instructions, perms)):
        p = CHANNEL_PERMUTATIONS[int(k)]
        out_images[i] = images[i].index_select(-3, torch.tensor(p, device=images.device))
        new_channel = {old: new for new, old in enumerate(p)}

        def rename(m: re.Match, new_channel=new_channel) -> str:
            word = m.group(0)
            new = names[new_channel[COLOUR_CHANNELS[word.lower()]]]
            return new.upper() if word.isupper() else new.capitalize() if word[0].isupper() else new

        out_text.append(_COLOUR_WORD.sub(rename, text))
    return out_images, out_text
