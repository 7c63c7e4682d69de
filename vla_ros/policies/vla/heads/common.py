"""What every head receives from the model: the encoded prefix and access to the backbone."""

from __future__ import annotations

from dataclasses import dataclass

import torch

GOAL_DIM = 3  # the goal head's target: the tool's x, y, z at the episode's first grasp


@dataclass(frozen=True)
class Prefix:
    """The observation prefix [image tokens, instruction tokens, state token] of a batch.

    embeds:    (B, P, H) backbone-width embeddings, LEFT-padded so the last position is real.
    mask:      (B, P) bool, True on real tokens.
    positions: (B, P) int64 rotary positions (0 at each sample's first real token).
    bidirectional: prefix tokens attend to each other in both directions (PaliGemma / pi0
               prefix-LM) instead of causally (Llama / OpenVLA).
    suffix_state: (B, state_dim) normalised state for a head that embeds it in its own suffix
               (pi0), else None (the state, if any, is a prefix token).
    """

    embeds: torch.Tensor
    mask: torch.Tensor
    positions: torch.Tensor
    bidirectional: bool = False
    suffix_state: torch.Tensor | None = None
    goal: torch.Tensor | None = None  # (B, 3) the goal head's normalised prediction (models with one)
    # (B, 3) normalised goal the flow head's action tokens are conditioned on (config goal_condition):
    # the goal head's prediction at inference, the demonstration's noisy true goal in training.
    condition: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.embeds.ndim != 3:
            raise ValueError(f"Prefix.embeds must be (B, P, H), got {tuple(self.embeds.shape)}")
        bp = tuple(self.embeds.shape[:2])
        if tuple(self.mask.shape) != bp or tuple(self.positions.shape) != bp:
            raise ValueError(f"Prefix.mask {tuple(self.mask.shape)} and positions {tuple(self.positions.shape)} "
                             f"must both be {bp}")
        if self.mask.dtype != torch.bool:
            raise ValueError(f"Prefix.mask must be bool, got {self.mask.dtype}")

    @property
    def batch_size(self) -> int:
        return int(self.embeds.shape[0])

    @property
    def length(self) -> int:
        return int(self.embeds.shape[1])

    def next_positions(self, n: int) -> torch.Tensor:
        """(B, n) positions of n tokens appended after the prefix."""
        start = self.mask.sum(dim=1, keepdim=True)
        return start + torch.arange(n, device=self.mask.device)[None, :]

    def attention_mask(self, extra: int = 0) -> torch.Tensor:
        """Mask for one pass over the prefix plus `extra` appended tokens that attend causally.

        Causal prefix: the (B, P + extra) padding mask (transformers adds the causal part).
        Bidirectional prefix: (B, 1, L, L) bool, True = may attend; the prefix block is full
        (over real tokens), appended tokens see the real prefix and themselves causally.
        """
        b, p = self.mask.shape
        dev = self.mask.device
        keys = torch.cat([self.mask, torch.ones(b, extra, dtype=torch.bool, device=dev)], dim=1)
        if not self.bidirectional:
            return keys
        total = p + extra
        pattern = torch.ones(total, total, dtype=torch.bool, device=dev).tril()
        pattern[:p, :p] = True
        # A padding row would attend to nothing (NaN softmax); letting it see itself keeps it finite,
        # and no real token ever attends to it.
        allowed = (pattern[None] & keys[:, None, :]) | torch.eye(total, dtype=torch.bool, device=dev)[None]
        return allowed[:, None]

    def suffix_mask(self, n: int, leading: int = 0) -> torch.Tensor:
        """(B, 1, n, P + n) bool for n appended tokens: all see every real prefix token; the
        first `leading` ones (pi0's state token) see only each other in the suffix, the rest see
        the whole suffix bidirectionally (pi0's action tokens, OFT's action queries)."""
        b = self.batch_size
        prefix_part = self.mask[:, None, None, :].expand(b, 1, n, self.length)
        suffix_part = torch.ones(n, n, dtype=torch.bool, device=self.mask.device)
        suffix_part[:leading, leading:] = False
        return torch.cat([prefix_part, suffix_part[None, None].expand(b, 1, n, n)], dim=-1)


def sinusoidal_embedding(t: torch.Tensor, dim: int, min_period: float, max_period: float) -> torch.Tensor:
    """pi0's time embedding: sin/cos of t at periods geometrically spaced in [min_period, max_period].

    t: (B,) -> (B, dim), computed in float64 for accuracy and returned in float32.
    """
    if dim % 2:
        raise ValueError(f"sinusoidal embedding dim must be even, got {dim}")
    fraction = torch.linspace(0.0, 1.0, dim // 2, dtype=torch.float64, device=t.device)
    period = min_period * (max_period / min_period) ** fraction
    angle = t.to(torch.float64)[:, None] * (2.0 * torch.pi / period)[None, :]
    return torch.cat([torch.sin(angle), torch.cos(angle)], dim=-1).to(torch.float32)
