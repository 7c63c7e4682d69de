"""Flow-matching action head (pi0): an action expert integrates a velocity field over a chunk.

Conventions (openpi's pi0):
- x_t = t * eps + (1 - t) * a (t = 1 is noise, t = 0 the action chunk), target u = eps - a;
- training time t ~ Beta(1.5, 1) * 0.999 + 0.001;
- sampling integrates dx/dt = v from t = 1 to t = 0 with `flow_steps` Euler steps (dt = -1/steps);
- time embedding: sin/cos at periods in [4e-3, 4.0], mixed with the action embedding by an MLP
  (action_in_proj -> concat time -> action_time_mlp_in -> swish -> action_time_mlp_out).

The expert (`build_action_expert`) has the backbone's depth and attention geometry, so its layer
i attends to the backbone's cached keys/values of layer i plus its own suffix tokens; the
action tokens see each other bidirectionally. With `state_token="suffix"` (pi0) the suffix
starts with the projected state, which sees the prefix and itself, and which the action tokens
see. The prefix is encoded ONCE per chunk and its KV cache reused by every Euler step: each step
appends the suffix to the cache, runs the expert only, and crops the suffix off again.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from transformers.cache_utils import DynamicCache

from vla_ros.policies.vla.backbone import base_model, build_action_expert, run_decoder
from vla_ros.policies.vla.config import VLAConfig
from vla_ros.policies.vla.heads.common import GOAL_DIM, Prefix, sinusoidal_embedding

TIME_MIN_PERIOD = 4e-3
TIME_MAX_PERIOD = 4.0
BETA_ALPHA = 1.5
BETA_BETA = 1.0


def sample_flow_time(batch: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
                     ) -> torch.Tensor:
    """pi0's training time: Beta(1.5, 1) * 0.999 + 0.001, shape (batch,).

    Drawn by inverse CDF (Beta(a, 1) has CDF t^a, so t = U^(1/a)) to honour `generator`, which
    torch.distributions.Beta does not take.
    """
    u = torch.rand(batch, device=device, generator=generator)
    return u.pow(1.0 / BETA_ALPHA) * 0.999 + 0.001


def interpolate(actions: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_t, u_t) = (t eps + (1 - t) a, eps - a) for t of shape (B,)."""
    tt = t[:, None, None]
    return tt * noise + (1 - tt) * actions, noise - actions


class FlowActionHead(nn.Module):
    def __init__(self, config: VLAConfig) -> None:
        super().__init__()
        hc = config.head
        self.chunk_size = config.chunk_size
        self.action_dim = config.action_dim
        self.num_steps = hc.flow_steps
        width = hc.expert_hidden_size
        self.width = width
        self.expert = build_action_expert(config.backbone, width, hc.expert_intermediate_size)
        self.action_in_proj = nn.Linear(config.action_dim, width)
        self.action_time_mlp_in = nn.Linear(2 * width, width)
        self.action_time_mlp_out = nn.Linear(width, width)
        self.action_out_proj = nn.Linear(width, config.action_dim)
        self.state_proj = nn.Linear(config.state_dim, width) if config.state_token == "suffix" else None
        self.goal_in_proj = nn.Linear(GOAL_DIM, width) if config.goal_condition else None

    def encode_prefix(self, lm: nn.Module, prefix: Prefix) -> DynamicCache:
        """Run the backbone over the prefix once; the returned cache holds every layer's K/V."""
        _, cache = run_decoder(base_model(lm), prefix.embeds, prefix.attention_mask(), prefix.positions)
        return cache

    def velocity(self, prefix: Prefix, cache: DynamicCache, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """v_theta(x_t, t | prefix): (B, T, D), (B,) -> (B, T, D). Leaves `cache` as it found it."""
        dtype = self.action_in_proj.weight.dtype
        a_emb = self.action_in_proj(x_t.to(dtype))
        t_emb = sinusoidal_embedding(t, self.width, TIME_MIN_PERIOD, TIME_MAX_PERIOD).to(dtype)
        t_emb = t_emb[:, None, :].expand_as(a_emb)
        h = self.action_time_mlp_out(F.silu(self.action_time_mlp_in(torch.cat([a_emb, t_emb], dim=-1))))
        if self.goal_in_proj is not None:
            if prefix.condition is None:
                raise ValueError("this flow head is conditioned on a goal, but the prefix carries none")
            h = h + self.goal_in_proj(prefix.condition.to(dtype))[:, None]
        leading = 0
        if self.state_proj is not None:
            if prefix.suffix_state is None:
                raise ValueError("this flow head embeds the state in its suffix, but the prefix carries no state")
            h = torch.cat([self.state_proj(prefix.suffix_state.to(dtype))[:, None], h], dim=1)
            leading = 1
        n = h.shape[1]
        try:
            out, _ = run_decoder(self.expert, h, prefix.suffix_mask(n, leading), prefix.next_positions(n), cache)
        finally:
            # The decoder appended the suffix's K/V; drop them so the next step sees the prefix only.
            if cache.get_seq_length() > prefix.length:
                cache.crop(-n)
        return self.action_out_proj(out[:, leading:]).float()

    def loss(self, lm: nn.Module, prefix: Prefix, actions: torch.Tensor, generator: torch.Generator | None = None
             ) -> torch.Tensor:
        """MSE between the predicted velocity and u = eps - a at x_t."""
        b = actions.shape[0]
        noise = torch.randn(actions.shape, device=actions.device, generator=generator)
        t = sample_flow_time(b, generator, actions.device)
        x_t, u = interpolate(actions.float(), noise, t)
        cache = self.encode_prefix(lm, prefix)
        return F.mse_loss(self.velocity(prefix, cache, x_t, t), u)

    @torch.no_grad()
    def sample(self, lm: nn.Module, prefix: Prefix, generator: torch.Generator | None = None) -> torch.Tensor:
        """Euler integration from noise (t = 1) to actions (t = 0) -> (B, T, D) normalised."""
        cache = self.encode_prefix(lm, prefix)
        b = prefix.batch_size
        dev = prefix.embeds.device
        x = torch.randn((b, self.chunk_size, self.action_dim), device=dev, generator=generator)
        dt = -1.0 / self.num_steps
        for k in range(self.num_steps):
            t = torch.full((b,), 1.0 + k * dt, device=dev)
            x = x + dt * self.velocity(prefix, cache, x, t)
        return x
