"""Shared builders for the VLA tests: tiny models and raw observation batches."""

from __future__ import annotations

import numpy as np
import torch

from vla_ros.policies.vla.model import VLAModel
from vla_ros.policies.vla.presets import make_config

INSTRUCTIONS = ["pick up the red cube", "open the drawer and put the sponge inside it"]


def build_model(preset: str = "default", seed: int = 0, **overrides) -> VLAModel:
    torch.manual_seed(seed)
    return VLAModel(make_config(preset, **overrides)).eval()


def raw_batch(model: VLAModel, batch: int = 2, seed: int = 0, height: int = 48, width: int = 64):
    """(images per sample by slot, instructions, raw states or None, raw actions (B, T, D) in [-1, 1])."""
    rng = np.random.default_rng(seed)
    cfg = model.config
    images = [{s: rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for s in cfg.camera_slots}
              for _ in range(batch)]
    instructions = [INSTRUCTIONS[i % len(INSTRUCTIONS)] for i in range(batch)]
    states = rng.uniform(-0.9, 0.9, (batch, cfg.state_dim)) if cfg.state_dim else None
    actions = rng.uniform(-0.9, 0.9, (batch, cfg.chunk_size, cfg.action_dim))
    return images, instructions, states, actions


def inputs_for(model: VLAModel, batch: int = 2, seed: int = 0):
    images, instructions, states, _ = raw_batch(model, batch, seed)
    return model.prepare_inputs(images, instructions, states)
