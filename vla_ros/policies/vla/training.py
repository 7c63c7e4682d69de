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


def inputs_from_pixels(
    model: VLAModel,
    pixels: torch.Tensor,
    instructions: Sequence[str],
    states: np.ndarray | None = None,
) -> VLAInputs:
    """Model inputs from already-resized pixels (B, cameras, 3, S, S) in [0, 1] (a frame cache plus
    augmentation), tokenised instructions and raw states normalised with the model's NormStats:
    `prepare_inputs` without its image path."""
    from vla_ros.policies.vla.text import EncodedText

    cfg = model.config
    size = cfg.vision.image_size
    expected = (len(instructions), len(cfg.camera_slots), 3, size, size)
    if tuple(pixels.shape) != expected:
        raise ValueError(f"pixels have shape {tuple(pixels.shape)}, expected {expected} (batch, cameras "
                         f"{cfg.camera_slots}, 3, image_size, image_size)")
    text_embedding = None
    if model.instruction_encoder is not None:
        prompts = [cfg.text.prompt.replace("{instruction}", t.strip()) for t in instructions]
        with torch.no_grad():
            text_embedding = model.instruction_encoder(prompts).cpu()
        enc = EncodedText(np.zeros((len(instructions), 0), np.int64), np.zeros((len(instructions), 0), bool))
    else:
        enc = model.tokenizer.encode(list(instructions))
    state = None
    if cfg.state_dim:
        if states is None:
            raise ValueError(f"this model takes a {cfg.state_dim}-D state; got states=None")
        raw = np.asarray(states, dtype=np.float64).reshape(len(instructions), -1)
        if raw.shape[1] != cfg.state_dim:
            raise ValueError(f"states have {raw.shape[1]} dims per sample, the model expects {cfg.state_dim}")
        state = torch.from_numpy(model.norm_stats.normalize("state", raw, cfg.state_norm))
    inputs = VLAInputs(pixels, torch.from_numpy(enc.input_ids), torch.from_numpy(enc.attention_mask), state,
                       text_embedding)
    return inputs.to(model.device, model.dtype)


class LossModule(torch.nn.Module):
    """The model's training loss as `forward`, so DistributedDataParallel (which synchronises
    gradients through forward/backward hooks) can wrap it."""

    def __init__(self, model: VLAModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, inputs: VLAInputs, actions: torch.Tensor, generator: torch.Generator | None = None,
                goals: torch.Tensor | None = None, goal_weight: float = 1.0,
                goal_noise: torch.Tensor | None = None) -> torch.Tensor:
        return self.model.compute_loss(inputs, actions, generator, goals, goal_weight, goal_noise)
