"""OpenVLA's action tokenizer: continuous actions in [-1, 1] <-> the last 256 vocabulary ids.

Bit-compatible with OpenVLA (prismatic/vla/action_tokenizer.py and predict_action):

- ``bins = linspace(min_action, max_action, n_bins)``; ``bin_centers = (bins[:-1] + bins[1:]) / 2``
  (n_bins - 1 centres: an action decodes to one of 255 values for the default 256 bins).
- encode: ``token_id = vocab_size - digitize(clip(a, min, max), bins)`` with numpy's digitize
  semantics (``bins[i-1] <= a < bins[i]`` gives i, ``a >= bins[-1]`` gives n_bins), so
  ids lie in ``[vocab_size - n_bins, vocab_size - 1]`` (Llama-2: 31744..31999).
- decode: ``bin_centers[clip(vocab_size - token_id - 1, 0, n_bins - 2)]``.

`vocab_size` is the *base* tokenizer's vocabulary (32000 for Llama-2), not the padded
embedding size of the model (OpenVLA pads to 32064 and subtracts `pad_to_multiple_of`).
Works on numpy arrays and torch tensors (torch is only touched when a tensor is passed).
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

LLAMA2_VOCAB_SIZE = 32000
OPENVLA_N_BINS = 256


def _is_tensor(x: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


class ActionTokenizer:
    """Maps normalised actions to token ids and back, exactly as OpenVLA does.

    vocab_size:  size of the base text vocabulary; the action tokens are its last `n_bins` ids.
    n_bins:      number of bin edges (OpenVLA: 256).
    min_action / max_action: the normalised range (OpenVLA: -1, 1).
    """

    def __init__(
        self,
        vocab_size: int = LLAMA2_VOCAB_SIZE,
        n_bins: int = OPENVLA_N_BINS,
        min_action: float = -1.0,
        max_action: float = 1.0,
    ) -> None:
        if int(n_bins) != n_bins or n_bins < 2:
            raise ValueError(f"n_bins must be an integer >= 2, got {n_bins}")
        if int(vocab_size) != vocab_size or vocab_size <= n_bins:
            raise ValueError(f"vocab_size must be an integer > n_bins ({n_bins}), got {vocab_size}")
        if not (np.isfinite(min_action) and np.isfinite(max_action) and min_action < max_action):
            raise ValueError(f"need finite min_action < max_action, got {min_action}, {max_action}")
        self.vocab_size = int(vocab_size)
        self.n_bins = int(n_bins)
        self.min_action = float(min_action)
        self.max_action = float(max_action)
        self.bins = np.linspace(self.min_action, self.max_action, self.n_bins)
        self.bin_centers = (self.bins[:-1] + self.bins[1:]) / 2.0
        self.bins.setflags(write=False)
        self.bin_centers.setflags(write=False)

    @property
    def first_token_id(self) -> int:
        """Smallest action token id (encodes the largest actions)."""
        return self.vocab_size - self.n_bins

    @property
    def last_token_id(self) -> int:
        """Largest action token id (encodes actions at `min_action`)."""
        return self.vocab_size - 1

    @property
    def token_id_range(self) -> range:
        """All action token ids, e.g. range(31744, 32000) for Llama-2."""
        return range(self.first_token_id, self.vocab_size)

    def is_action_token(self, token_ids: Any) -> Any:
        """Elementwise: is the id one of the action tokens?"""
        return (token_ids >= self.first_token_id) & (token_ids <= self.last_token_id)

    def encode(self, actions: Any) -> Any:
        """Normalised actions (any shape) -> token ids (same shape, int64, same array type)."""
        if _is_tensor(actions):
            import torch

            if not torch.is_floating_point(actions):
                raise TypeError(f"actions must be a floating tensor, got {actions.dtype}")
            if not bool(torch.isfinite(actions).all()):
                raise ValueError("actions contain NaN or inf; cannot tokenize")
            a = actions.detach().to(torch.float64).clamp(self.min_action, self.max_action)
            bins = torch.from_numpy(self.bins.copy()).to(a.device)
            # torch's right=True is numpy digitize's default: bins[i-1] <= a < bins[i] -> i.
            discretized = torch.bucketize(a, bins, right=True)
            return self.vocab_size - discretized
        arr = np.asarray(actions)
        if not np.issubdtype(arr.dtype, np.floating):
            raise TypeError(f"actions must be floating point, got {arr.dtype}")
        if not np.all(np.isfinite(arr)):
            raise ValueError("actions contain NaN or inf; cannot tokenize")
        clipped = np.clip(arr, self.min_action, self.max_action)
        return (self.vocab_size - np.digitize(clipped, self.bins)).astype(np.int64)

    def decode(self, token_ids: Any) -> Any:
        """Token ids (any shape) -> normalised actions (float64 numpy or tensor, same shape).

        Ids outside the action range are clipped to the nearest bin centre, as OpenVLA does;
        use `is_action_token` first when that should be an error.
        """
        last = self.bin_centers.shape[0] - 1
        if _is_tensor(token_ids):
            import torch

            if torch.is_floating_point(token_ids):
                raise TypeError(f"token ids must be an integer tensor, got {token_ids.dtype}")
            idx = (self.vocab_size - token_ids.long() - 1).clamp(0, last)
            centers = torch.from_numpy(self.bin_centers.copy()).to(token_ids.device)
            return centers[idx]
        ids = np.asarray(token_ids)
        if not np.issubdtype(ids.dtype, np.integer):
            raise TypeError(f"token ids must be integers, got {ids.dtype}")
        idx = np.clip(self.vocab_size - ids.astype(np.int64) - 1, 0, last)
        return self.bin_centers[idx]
