"""Diffusion action head (Octo): denoise a whole chunk conditioned on a readout embedding.

A learned readout token is appended after the prefix; with causal attention it reads every
observation token while none of them reads it (Octo's readout rule). Its final hidden state
conditions a noise-prediction MLP-ResNet (Octo's ScoreActor: learnable Fourier time features ->
MLP, concatenated with the readout and the flattened noisy chunk). Octo's schedule and samplers:

- cosine schedule (Nichol & Dhariwal, s = 0.008): alpha_bar(t) = cos^2(((t/T) + s)/(1 + s) * pi/2)
  normalised by its t=0 value; beta_t = clip(1 - alpha_bar(t+1)/alpha_bar(t), 0, 0.999).
- DDPM: x <- (x - (1 - alpha_t)/sqrt(1 - alpha_bar_t) * eps) / sqrt(alpha_t) + sqrt(beta_t) z (z = 0
  at the last step), clipped to [-max_action, max_action] after each step, as Octo does.
- DDIM (eta = 0) over `ddim_steps` evenly spaced timesteps, x0 clipped to [-max_action, max_action].

The backbone runs once per chunk; the sampling loop only runs the small MLP.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from vla_ros.policies.vla.backbone import base_model, run_decoder
from vla_ros.policies.vla.config import VLAConfig
from vla_ros.policies.vla.heads.common import Prefix

COSINE_S = 0.008


def cosine_beta_schedule(steps: int, s: float = COSINE_S) -> np.ndarray:
    """Octo's `cosine_beta_schedule`: (steps,) betas in float64."""
    t = np.linspace(0, steps, steps + 1) / steps
    alphas_cumprod = np.cos((t + s) / (1 + s) * np.pi * 0.5) ** 2
    alphas_cumprod = alphas_cumprod / alphas_cumprod[0]
    betas = 1 - (alphas_cumprod[1:] / alphas_cumprod[:-1])
    return np.clip(betas, 0, 0.999)


class FourierFeatures(nn.Module):
    """Octo's learnable Fourier features of the (integer) diffusion time: [cos(2 pi t w), sin(2 pi t w)]."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(dim // 2, 1) * 0.2)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        f = 2 * math.pi * t[:, None].to(self.weight.dtype) @ self.weight.T
        return torch.cat([torch.cos(f), torch.sin(f)], dim=-1)


class MLPResNetBlock(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, 4 * width)
        self.fc2 = nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(F.silu(self.fc1(self.norm(x))))


class MLPResNet(nn.Module):
    def __init__(self, in_dim: int, width: int, blocks: int, out_dim: int) -> None:
        super().__init__()
        self.fc_in = nn.Linear(in_dim, width)
        self.blocks = nn.ModuleList(MLPResNetBlock(width) for _ in range(blocks))
        self.fc_out = nn.Linear(width, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fc_in(x)
        for block in self.blocks:
            x = block(x)
        return self.fc_out(F.silu(x))


class DiffusionActionHead(nn.Module):
    def __init__(self, config: VLAConfig) -> None:
        super().__init__()
        hc = config.head
        self.chunk_size = config.chunk_size
        self.action_dim = config.action_dim
        self.steps = hc.diffusion_steps
        self.sampler = hc.sampler
        self.ddim_steps = hc.ddim_steps
        self.max_action = hc.max_action
        width = config.backbone.hidden_size
        self.readout = nn.Parameter(torch.randn(1, width) * 0.02)
        self.time_features = FourierFeatures(hc.time_dim)
        self.time_mlp = nn.Sequential(nn.Linear(hc.time_dim, 2 * hc.time_dim), nn.SiLU(),
                                      nn.Linear(2 * hc.time_dim, hc.time_dim))
        flat = config.num_action_tokens
        self.score = MLPResNet(width + hc.time_dim + flat, hc.mlp_hidden_size, hc.mlp_blocks, flat)
        betas = cosine_beta_schedule(self.steps)
        # Constants of the schedule, rebuilt from the config and never saved. Plain float64 arrays,
        # not buffers: model.to(bfloat16) would round them (alpha_bar near 1 loses its 1 - alpha_bar).
        self._schedule = {"betas": betas, "alphas": 1.0 - betas, "alpha_bars": np.cumprod(1.0 - betas)}

    def schedule(self, name: str, device: torch.device | str = "cpu") -> torch.Tensor:
        """"betas", "alphas" or "alpha_bars" as a float32 tensor of shape (diffusion_steps,)."""
        return torch.tensor(self._schedule[name], dtype=torch.float32, device=device)

    @property
    def betas(self) -> torch.Tensor:
        return self.schedule("betas")

    @property
    def alphas(self) -> torch.Tensor:
        return self.schedule("alphas")

    @property
    def alpha_bars(self) -> torch.Tensor:
        return self.schedule("alpha_bars")

    def readout_embedding(self, lm: nn.Module, prefix: Prefix) -> torch.Tensor:
        """(B, H): the readout token's final hidden state."""
        readout = self.readout.to(prefix.embeds.dtype)[None].expand(prefix.batch_size, -1, -1)
        embeds = torch.cat([prefix.embeds, readout], dim=1)
        positions = torch.cat([prefix.positions, prefix.next_positions(1)], dim=1)
        hidden, _ = run_decoder(base_model(lm), embeds, prefix.attention_mask(1), positions)
        return hidden[:, -1]

    def predict_noise(self, readout: torch.Tensor, t: torch.Tensor, noisy: torch.Tensor) -> torch.Tensor:
        """eps_theta(x_t, t | readout): (B, H), (B,) int, (B, T, D) -> (B, T, D)."""
        cond = self.time_mlp(self.time_features(t.float()))
        x = torch.cat([readout.float(), cond.float(), noisy.reshape(noisy.shape[0], -1).float()], dim=-1)
        return self.score(x.to(self.score.fc_in.weight.dtype)).float().reshape(noisy.shape)

    def loss(self, lm: nn.Module, prefix: Prefix, actions: torch.Tensor, generator: torch.Generator | None = None
             ) -> torch.Tensor:
        """Noise-prediction MSE at a uniformly drawn timestep."""
        b = actions.shape[0]
        dev = actions.device
        t = torch.randint(0, self.steps, (b,), device=dev, generator=generator)
        eps = torch.randn(actions.shape, device=dev, generator=generator)
        ab = self.schedule("alpha_bars", dev)[t][:, None, None]
        noisy = ab.sqrt() * actions.float() + (1 - ab).sqrt() * eps
        return F.mse_loss(self.predict_noise(self.readout_embedding(lm, prefix), t, noisy), eps)

    @torch.no_grad()
    def sample(self, lm: nn.Module, prefix: Prefix, generator: torch.Generator | None = None) -> torch.Tensor:
        readout = self.readout_embedding(lm, prefix)
        b = prefix.batch_size
        dev = readout.device
        x = torch.randn((b, self.chunk_size, self.action_dim), device=dev, generator=generator)
        alpha_bars = self.schedule("alpha_bars", dev)
        if self.sampler == "ddpm":
            alphas, betas = self.schedule("alphas", dev), self.schedule("betas", dev)
            for t in range(self.steps - 1, -1, -1):
                eps = self.predict_noise(readout, torch.full((b,), t, device=dev), x)
                x = (x - (1 - alphas[t]) / (1 - alpha_bars[t]).sqrt() * eps) / alphas[t].sqrt()
                if t > 0:
                    x = x + betas[t].sqrt() * torch.randn(x.shape, device=dev, generator=generator)
                x = x.clamp(-self.max_action, self.max_action)
            return x
        ts = ddim_timesteps(self.steps, self.ddim_steps)
        for i, t in enumerate(ts):
            eps = self.predict_noise(readout, torch.full((b,), t, device=dev), x)
            ab = alpha_bars[t]
            ab_prev = alpha_bars[ts[i + 1]] if i + 1 < len(ts) else torch.ones_like(ab)
            x0 = ((x - (1 - ab).sqrt() * eps) / ab.sqrt()).clamp(-self.max_action, self.max_action)
            # Re-derive eps from the clipped x0 so the step stays on the DDIM trajectory of that x0.
            eps = (x - ab.sqrt() * x0) / (1 - ab).sqrt()
            x = ab_prev.sqrt() * x0 + (1 - ab_prev).sqrt() * eps
        return x


def ddim_timesteps(steps: int, ddim_steps: int) -> list[int]:
    """`ddim_steps` distinct timesteps from steps-1 down to 0, evenly spaced."""
    return sorted({int(round(v)) for v in np.linspace(0, steps - 1, ddim_steps)}, reverse=True)
