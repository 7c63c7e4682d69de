"""Training primitives: a batch built from raw demonstrations, the head's loss, one optimiser step.

The fine-tuning CLI (datasets, schedules, LoRA, checkpointing) builds on these; the loss itself
lives with each head (`loss(...)`), so it is the same code the tests optimise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from vla_ros.policies.vla.model import VLAInputs, VLAModel


@dataclass(frozen=True)
class TrainBatch:
    """Model inputs plus normalised target chunks (B, chunk_size, action_dim) float32."""

    inputs: VLAInputs
    actions: torch.Tensor

    def __post_init__(self) -> None:
        if self.actions.ndim != 3 or self.actions.shape[0] != self.inputs.batch_size:
            raise ValueError(f"TrainBatch.actions must be (B={self.inputs.batch_size}, T, D), "
                             f"got {tuple(self.actions.shape)}")


def make_batch(
    model: VLAModel,
    images: Sequence[dict[str, np.ndarray]],
    instructions: Sequence[str],
    actions: np.ndarray,
    states: np.ndarray | None = None,
) -> TrainBatch:
    """Raw demonstrations -> TrainBatch: images per sample by camera slot (uint8 RGB), raw action
    chunks (B, T, D) and raw states (B, state_dim), normalised with the model's NormStats."""
    raw = np.asarray(actions, dtype=np.float64)
    cfg = model.config
    expected = (len(images), cfg.chunk_size, cfg.action_dim)
    if raw.shape != expected:
        raise ValueError(f"actions have shape {raw.shape}, expected {expected} (batch, chunk_size, action_dim)")
    return TrainBatch(model.prepare_inputs(images, instructions, states), model.normalize_actions(raw))


def compute_loss(model: VLAModel, batch: TrainBatch, generator: torch.Generator | None = None) -> torch.Tensor:
    """The head's training loss (cross-entropy, noise MSE or velocity MSE) on one batch."""
    return model.compute_loss(batch.inputs, batch.actions, generator)


def train_step(
    model: VLAModel,
    optimizer: torch.optim.Optimizer,
    batch: TrainBatch,
    generator: torch.Generator | None = None,
    max_grad_norm: float | None = 1.0,
) -> float:
    """One optimiser step (train mode, zero grad, loss, backward, clip, step); returns the loss."""
    model.train()
    optimizer.zero_grad(set_to_none=True)
    loss = compute_loss(model, batch, generator)
    if not torch.isfinite(loss):
        raise FloatingPointError(f"training loss is {float(loss)}; check the learning rate and the batch")
    loss.backward()
    if max_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    return float(loss.detach())
