"""Vision encoders: transformers SigLIP / DINOv2 (alone or fused, OpenVLA-style) and RT-1's FiLM conv net.

Every encoder takes pixels (B, 3, H, W) float in [0, 1] at `VisionConfig.image_size` and returns
patch tokens (B, N, out_dim). Each ViT normalises its own input with the statistics it was
trained with (SigLIP: mean = std = 0.5; DINOv2: ImageNet), so the fused encoder can feed both
from one image as OpenVLA's prismatic backbone does.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import (
    Dinov2WithRegistersConfig,
    Dinov2WithRegistersModel,
    SiglipVisionConfig,
    SiglipVisionModel,
)

from vla_ros.policies.vla.config import ConvConfig, ViTConfig, VisionConfig

SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def build_siglip(cfg: ViTConfig, image_size: int) -> SiglipVisionModel:
    return SiglipVisionModel(SiglipVisionConfig(
        hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
        image_size=image_size, patch_size=cfg.patch_size,
        # The attention-pooling head is only for SigLIP's contrastive objective; VLAs use patches.
        vision_use_head=False,
    ))


def build_dino(cfg: ViTConfig, image_size: int) -> Dinov2WithRegistersModel:
    return Dinov2WithRegistersModel(Dinov2WithRegistersConfig(
        hidden_size=cfg.hidden_size, mlp_ratio=cfg.intermediate_size // cfg.hidden_size,
        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
        image_size=image_size, patch_size=cfg.patch_size,
        num_register_tokens=cfg.num_register_tokens,
    ))


class _Normalize(nn.Module):
    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        # Buffers so they follow .to(device/dtype); not persistent: they are constants, not weights.
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels - self.mean) / self.std


class PatchVisionEncoder(nn.Module):
    """SigLIP, DINOv2-with-registers, or both fused (`.siglip`, `.dino` are the transformers models).

    Features come from hidden state `feature_layer` (default the second-to-last layer, OpenVLA's
    choice), patch tokens only (DINOv2's CLS and register tokens are dropped). The fused encoder
    concatenates [dino, siglip] features along channels, OpenVLA's order.
    """

    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.feature_layer = cfg.feature_layer
        self.dino = build_dino(cfg.dino, cfg.image_size) if cfg.dino is not None else None
        self.siglip = build_siglip(cfg.siglip, cfg.image_size) if cfg.siglip is not None else None
        self.dino_norm = _Normalize(IMAGENET_MEAN, IMAGENET_STD) if self.dino is not None else None
        self.siglip_norm = _Normalize(SIGLIP_MEAN, SIGLIP_STD) if self.siglip is not None else None
        patch = (cfg.dino or cfg.siglip).patch_size
        self.tokens_per_image = (cfg.image_size // patch) ** 2
        self.out_dim = sum(c.hidden_size for c in (cfg.dino, cfg.siglip) if c is not None)
        self._dino_prefix = 1 + cfg.dino.num_register_tokens if cfg.dino is not None else 0

    def forward(self, pixels: torch.Tensor, text_embedding: torch.Tensor | None = None) -> torch.Tensor:
        feats = []
        if self.dino is not None:
            out = self.dino(pixel_values=self.dino_norm(pixels), output_hidden_states=True)
            feats.append(out.hidden_states[self.feature_layer][:, self._dino_prefix:])
        if self.siglip is not None:
            out = self.siglip(pixel_values=self.siglip_norm(pixels), output_hidden_states=True)
            feats.append(out.hidden_states[self.feature_layer])
        return torch.cat(feats, dim=-1) if len(feats) > 1 else feats[0]


class FiLM(nn.Module):
    """Feature-wise linear modulation: x * (1 + gamma(c)) + beta(c), identity at initialisation.

    RT-1 initialises its FiLM layers to the identity so that the pretrained EfficientNet is not
    disturbed at the start of training; zero-initialised projections do the same here.
    """

    def __init__(self, cond_dim: int, channels: int) -> None:
        super().__init__()
        self.gamma = nn.Linear(cond_dim, channels)
        self.beta = nn.Linear(cond_dim, channels)
        for layer in (self.gamma, self.beta):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return x * (1.0 + self.gamma(cond)[:, :, None, None]) + self.beta(cond)[:, :, None, None]


class TokenLearner(nn.Module):
    """RT-1's TokenLearner: S learned spatial attention maps pool a feature map into S tokens.

    softmax=False: sigmoid maps averaged over the pixels, as in the TokenLearner paper (a token's
    scale then also says how much of the image its map covers). softmax=True: each map is a
    distribution over the pixels, so a token is a weighted mean of the features: applied to
    coordinate channels it is the expected position of what the map attends to, with sub-pixel
    resolution (spatial softmax).
    """

    def __init__(self, channels: int, num_tokens: int, softmax: bool = False) -> None:
        super().__init__()
        self.attention = nn.Sequential(
            nn.Conv2d(channels, channels, kernel_size=1), nn.GELU(), nn.Conv2d(channels, num_tokens, kernel_size=1)
        )
        self.softmax = softmax

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.attention(x).flatten(2)  # (B, S, HW)
        feats = x.flatten(2)  # (B, C, HW)
        if self.softmax:
            return torch.einsum("bsn,bcn->bsc", torch.softmax(logits, dim=-1), feats)
        return torch.einsum("bsn,bcn->bsc", torch.sigmoid(logits), feats) / logits.shape[-1]


def coordinate_maps(height: int, width: int) -> torch.Tensor:
    """(2, H, W): x then y of each pixel centre, -1 at the left/top edge pixel and +1 at the right/bottom one."""
    ys = torch.linspace(-1.0, 1.0, height) if height > 1 else torch.zeros(1)
    xs = torch.linspace(-1.0, 1.0, width) if width > 1 else torch.zeros(1)
    return torch.stack([xs.expand(height, width), ys[:, None].expand(height, width)])


class FiLMConvEncoder(nn.Module):
    """RT-1 / BC-Z style: strided conv blocks, each FiLM-conditioned on the instruction embedding.

    With `ConvConfig.coords` the last feature map gets two coordinate channels first: a token then
    holds its attention map's mean x and y, i.e. where in the image it looked (unnormalised with
    RT-1's pooling, the expected position with `pooling: spatial_softmax`). `strides` of 1 keep a
    finer last feature map (finer keypoints) at more compute.

    The conditioning vector is layer-normalised (no parameters) before the FiLM layers, as RT-1's
    unit-norm sentence embedding is: the mean of an instruction's token embeddings (initialised
    with std 0.02) differs between "pick up the red cube" and "... blue cube" by ~0.003 per
    component, which zero-initialised FiLM layers can hardly pick up; normalised the colour word
    moves it by a sizeable fraction of its unit scale.
    """

    def __init__(self, cfg: ConvConfig, cond_dim: int) -> None:
        super().__init__()
        self.norm = _Normalize(IMAGENET_MEAN, IMAGENET_STD)
        chans = (3,) + cfg.channels
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        self.films = nn.ModuleList()
        for c_in, c_out, stride in zip(chans[:-1], chans[1:], cfg.block_strides):
            self.convs.append(nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1))
            self.norms.append(nn.GroupNorm(min(8, c_out), c_out))
            self.films.append(FiLM(cond_dim, c_out))
        self.coords = cfg.coords
        feature_dim = cfg.channels[-1] + (2 if cfg.coords else 0)
        self.token_learner = TokenLearner(feature_dim, cfg.num_tokens, softmax=cfg.pooling == "spatial_softmax")
        self.tokens_per_image = cfg.num_tokens
        self.out_dim = feature_dim
        self.cond_dim = cond_dim

    def forward(self, pixels: torch.Tensor, text_embedding: torch.Tensor | None = None) -> torch.Tensor:
        if text_embedding is None or text_embedding.shape != (pixels.shape[0], self.cond_dim):
            got = None if text_embedding is None else tuple(text_embedding.shape)
            raise ValueError(f"FiLMConvEncoder needs a text embedding of shape ({pixels.shape[0]}, {self.cond_dim}), "
                             f"got {got}")
        x = self.norm(pixels)
        cond = nn.functional.layer_norm(text_embedding, (self.cond_dim,), eps=1e-10)  # scale-free: tiny inputs too
        for conv, norm, film in zip(self.convs, self.norms, self.films):
            x = film(nn.functional.silu(norm(conv(x))), cond)
        if self.coords:
            grid = coordinate_maps(x.shape[2], x.shape[3]).to(device=x.device, dtype=x.dtype)
            x = torch.cat([x, grid.expand(x.shape[0], -1, -1, -1)], dim=1)
        return self.token_learner(x)


def build_vision(cfg: VisionConfig, cond_dim: int) -> nn.Module:
    """The encoder `cfg.kind` names; `cond_dim` is the FiLM conditioning width (conv_film only)."""
    if cfg.kind == "conv_film":
        return FiLMConvEncoder(cfg.conv, cond_dim)
    return PatchVisionEncoder(cfg)
