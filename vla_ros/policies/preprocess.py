"""Image preprocessing for vision encoders, in torch only (no torchvision, no PIL on the hot path).

The order is the one the Hugging Face image processors and openpi use: resize the uint8
image, optionally crop, rescale to [0, 1], normalise with the encoder family's mean/std.
Resizing uint8 images stays in uint8 (rounded), as PIL does inside those processors, which
also keeps torch on its fast vectorised uint8 path (~0.3 ms for 640x480 -> 224x224 on one
core). Antialiasing is on by default so that downscaling matches PIL's filters.

Tensors are (N, 3, H, W). Camera images arrive as (H, W, 3) uint8 RGB numpy arrays
(vla_ros.core.types.Observation.images).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

ResizeMode = Literal["bilinear", "bicubic"]
CropMode = Literal["none", "center", "random"]


@dataclass(frozen=True)
class ImageNormalization:
    """Per-channel mean and std applied to [0, 1] RGB: x' = (x - mean) / std."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __post_init__(self) -> None:
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError(f"mean and std need 3 entries (RGB), got {self.mean} and {self.std}")
        if any(not s > 0 for s in self.std):
            raise ValueError(f"std must be positive, got {self.std}")


#: Published constants of the encoder families. SigLIP (PaliGemma, pi0) maps [0, 1] to
#: [-1, 1]; DINOv2 uses the ImageNet statistics; CLIP has its own (OpenAI CLIP paper code).
NORMALIZATIONS: dict[str, ImageNormalization] = {
    "siglip": ImageNormalization((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "imagenet": ImageNormalization((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "dinov2": ImageNormalization((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "clip": ImageNormalization((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    "none": ImageNormalization((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
}


def normalization(name: str) -> ImageNormalization:
    """The normalisation of an encoder family; KeyError lists the known names."""
    if name not in NORMALIZATIONS:
        raise KeyError(f"unknown image normalisation '{name}'; valid: {sorted(NORMALIZATIONS)}")
    return NORMALIZATIONS[name]


def images_to_tensor(images: Sequence[np.ndarray] | np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 RGB arrays (all the same size) -> (N, 3, H, W) uint8 tensor.

    The result is a channels-last view of the stacked arrays, the layout torch's fast uint8
    resize kernels want; no pixel is copied twice.
    """
    arrays = [images] if isinstance(images, np.ndarray) and images.ndim == 3 else list(images)
    if not arrays:
        raise ValueError("images_to_tensor needs at least one image")
    for i, a in enumerate(arrays):
        if not isinstance(a, np.ndarray) or a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
            raise ValueError(
                f"image {i} must be an (H, W, 3) uint8 RGB array, got "
                f"{getattr(a, 'shape', type(a))} {getattr(a, 'dtype', '')}"
            )
        if a.shape != arrays[0].shape:
            raise ValueError(f"image {i} is {a.shape}, image 0 is {arrays[0].shape}; resize them separately")
    stacked = np.stack(arrays) if len(arrays) > 1 else np.ascontiguousarray(arrays[0])[None]
    return torch.from_numpy(stacked).permute(0, 3, 1, 2)


def _size_hw(size: int | Sequence[int], label: str) -> tuple[int, int]:
    hw = (int(size), int(size)) if isinstance(size, (int, np.integer)) else tuple(int(s) for s in size)
    if len(hw) != 2 or hw[0] <= 0 or hw[1] <= 0:
        raise ValueError(f"{label} must be a positive int or (height, width), got {size}")
    return hw  # type: ignore[return-value]


def _check_batch(x: torch.Tensor) -> None:
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"expected an (N, 3, H, W) tensor, got shape {tuple(x.shape)}")


def resize(
    x: torch.Tensor, size: int | Sequence[int], mode: ResizeMode = "bilinear", antialias: bool = True
) -> torch.Tensor:
    """Resize (N, 3, H, W) to `size` (int or (h, w)), ignoring aspect ratio.

    uint8 in -> uint8 out (rounded and clamped, as PIL); float in -> float out (bicubic may
    overshoot [0, 1] slightly, as in PIL's float mode).
    """
    _check_batch(x)
    if mode not in ("bilinear", "bicubic"):
        raise ValueError(f"resize mode must be 'bilinear' or 'bicubic', got '{mode}'")
    hw = _size_hw(size, "resize size")
    if tuple(x.shape[-2:]) == hw:
        return x
    if x.dtype == torch.uint8 and x.device.type != "cpu":
        # torch's uint8 resize kernels are CPU-only; elsewhere resize in float and round back,
        # which keeps the uint8-in/uint8-out contract.
        return resize_uint8_via_float(x, hw, mode, antialias)
    return F.interpolate(x, size=hw, mode=mode, antialias=antialias, align_corners=False)


def resize_uint8_via_float(
    x: torch.Tensor, size: tuple[int, int], mode: ResizeMode = "bilinear", antialias: bool = True
) -> torch.Tensor:
    """uint8 resize computed in float32, rounded half-up and clamped to [0, 255] (as PIL)."""
    y = F.interpolate(x.to(torch.float32), size=size, mode=mode, antialias=antialias, align_corners=False)
    return torch.floor(y + 0.5).clamp_(0, 255).to(torch.uint8)


def resize_with_pad(
    x: torch.Tensor, size: int | Sequence[int], mode: ResizeMode = "bilinear", pad_value: float = 0.0
) -> torch.Tensor:
    """Resize keeping the aspect ratio, then pad symmetrically to `size` (openpi's
    resize_with_pad convention: black bars, the extra pixel of an odd pad at the end)."""
    _check_batch(x)
    th, tw = _size_hw(size, "resize size")
    h, w = x.shape[-2:]
    scale = min(th / h, tw / w)
    rh, rw = max(1, min(th, round(h * scale))), max(1, min(tw, round(w * scale)))
    y = resize(x, (rh, rw), mode=mode)
    top, left = (th - rh) // 2, (tw - rw) // 2
    return F.pad(y, (left, tw - rw - left, top, th - rh - top), value=pad_value)


def center_crop(x: torch.Tensor, size: int | Sequence[int]) -> torch.Tensor:
    """The central (h, w) window; an odd margin leaves the extra pixel at the bottom/right."""
    _check_batch(x)
    ch, cw = _size_hw(size, "crop size")
    h, w = x.shape[-2:]
    if ch > h or cw > w:
        raise ValueError(f"crop size {(ch, cw)} is larger than the image {(h, w)}")
    top, left = (h - ch) // 2, (w - cw) // 2
    return x[..., top : top + ch, left : left + cw]


def random_crop(
    x: torch.Tensor, size: int | Sequence[int], generator: torch.Generator | None = None
) -> tuple[torch.Tensor, tuple[int, int]]:
    """A uniformly placed (h, w) window, the same for the whole batch; returns it and (top, left)."""
    _check_batch(x)
    ch, cw = _size_hw(size, "crop size")
    h, w = x.shape[-2:]
    if ch > h or cw > w:
        raise ValueError(f"crop size {(ch, cw)} is larger than the image {(h, w)}")
    top = int(torch.randint(0, h - ch + 1, (1,), generator=generator))
    left = int(torch.randint(0, w - cw + 1, (1,), generator=generator))
    return x[..., top : top + ch, left : left + cw], (top, left)


def normalize(x: torch.Tensor, norm: ImageNormalization | str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 [0, 255] or float [0, 1] (N, 3, H, W) -> (x / 255 - mean) / std in `dtype`.

    The arithmetic runs in float32 (then casts) so that bf16 models get correctly rounded inputs.
    """
    _check_batch(x)
    n = normalization(norm) if isinstance(norm, str) else norm
    if x.dtype != torch.uint8 and not x.is_floating_point():
        raise ValueError(f"normalize needs uint8 or floating images, got {x.dtype}")
    # Make the (small, resized) batch NCHW-contiguous first: elementwise float ops on a
    # channels-last batch are several times slower on the CPU.
    xf = x.contiguous().to(torch.float32)
    std = torch.tensor(n.std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    mean = torch.tensor(n.mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    scale = 1.0 / (std * 255.0) if x.dtype == torch.uint8 else 1.0 / std
    # (x / 255 - mean) / std as one fused multiply-add
    return torch.addcmul(-mean / std, xf, scale).to(dtype)


@dataclass(frozen=True)
class ImagePreprocessor:
    """One vision encoder's input pipeline: resize -> crop -> rescale -> normalise.

    size_px:        (height, width) the encoder takes, e.g. (224, 224).
    resize_mode:    "bilinear" or "bicubic" (SigLIP/DINOv2 processors use bicubic, openpi bilinear).
    keep_aspect:    resize with padding instead of stretching.
    crop:           "none", "center" or "random" (training augmentation).
    crop_scale:     the crop keeps this fraction of the area of the resized image
                    (OpenVLA: random 0.9 in training, centre 0.9 at test); 1.0 = no crop.
                    After cropping the image is resized back to size_px.
    normalization:  a key of NORMALIZATIONS.
    """

    size_px: tuple[int, int] = (224, 224)
    resize_mode: ResizeMode = "bilinear"
    keep_aspect: bool = False
    crop: CropMode = "none"
    crop_scale: float = 1.0
    normalization: str = "siglip"

    def __post_init__(self) -> None:
        object.__setattr__(self, "size_px", _size_hw(self.size_px, "size_px"))
        if self.resize_mode not in ("bilinear", "bicubic"):
            raise ValueError(f"resize_mode must be 'bilinear' or 'bicubic', got '{self.resize_mode}'")
        if self.crop not in ("none", "center", "random"):
            raise ValueError(f"crop must be 'none', 'center' or 'random', got '{self.crop}'")
        if not 0.0 < self.crop_scale <= 1.0:
            raise ValueError(f"crop_scale must be in (0, 1], got {self.crop_scale}")
        normalization(self.normalization)

    def __call__(
        self,
        images: Sequence[np.ndarray] | torch.Tensor,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Images ((H, W, 3) uint8 arrays, any sizes, or an (N, 3, H, W) tensor) -> (N, 3, h, w) `dtype`."""
        if isinstance(images, torch.Tensor):
            batches = [images]
        else:
            arrays = list(images)
            if not arrays:
                raise ValueError("ImagePreprocessor needs at least one image")
            # One camera at a time: a zero-copy view of each frame, no stacking of full-size
            # frames (only the small resized ones are concatenated).
            batches = [images_to_tensor([a]) for a in arrays]
        out = torch.cat([self._resize_crop(b.to(device), generator) for b in batches], dim=0)
        return normalize(out, self.normalization, dtype=dtype)

    def _resize_crop(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        if self.keep_aspect:
            x = resize_with_pad(x, self.size_px, mode=self.resize_mode)
        else:
            x = resize(x, self.size_px, mode=self.resize_mode)
        if self.crop == "none" or self.crop_scale == 1.0:
            return x
        side = float(np.sqrt(self.crop_scale))
        crop_hw = (max(1, round(self.size_px[0] * side)), max(1, round(self.size_px[1] * side)))
        if self.crop == "center":
            x = center_crop(x, crop_hw)
        else:
            x, _ = random_crop(x, crop_hw, generator=generator)
        return resize(x, self.size_px, mode=self.resize_mode)

    def cameras(
        self,
        images: Mapping[str, np.ndarray],
        slots: Sequence[str],
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """Observation.images -> (len(slots), 3, h, w), cameras in `slots` order.

        KeyError names the missing slots, so a config/policy camera mismatch is found at once.
        """
        missing = [s for s in slots if s not in images]
        if missing:
            raise KeyError(f"observation lacks camera slots {missing}; it has {sorted(images)}")
        return self([images[s] for s in slots], device=device, dtype=dtype)
