"""When to start the next inference (pure: the policy node asks, this module decides).

A chunk computed from an observation captured at t_obs has rows due at t_obs + i * period;
row i is the command for [t_obs + i * period, t_obs + (i + 1) * period), so the chunk runs
out at t_obs + T * period (the discrete-step execution of openpi / LeRobot clients and of
the real-time-chunking analysis, where an inference delay of d steps needs d <= T / 2 when
inferences run back to back).
A new chunk can only take over once it exists: it arrives `latency` after its inference
starts. So:

- "async" (default): start the next inference at
      end_of_executing_chunk - latency_estimate - margin
  so that the next chunk arrives before the executing one runs out and the arm never waits.
  The latency estimate is a high quantile of recent measured latencies (a slow outlier then
  costs a little extra overlap, not a stall).
- "sync": start the next inference when the executing chunk has run out (what openpi's
  clients do: infer, execute the chunk open-loop to its end, infer again). The arm holds for
  one inference latency at every seam; kept for comparison.

With one inference at a time, a latency above half the chunk duration stalls whatever the
schedule; `InferenceScheduler` then starts inferences back to back and
`latency_exceeds_horizon` says so.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Literal

import numpy as np

InferenceMode = Literal["async", "sync"]
INFERENCE_MODES = ("async", "sync")


class LatencyEstimator:
    """A high quantile of the last `window` inference latencies.

    Before any measurement the estimate is `initial_s` (e.g. the warm-up latency).
    """

    def __init__(self, window: int = 20, quantile: float = 0.9, initial_s: float = 0.0) -> None:
        if window < 1:
            raise ValueError(f"latency window must be >= 1, got {window}")
        if not 0.0 <= quantile <= 1.0:
            raise ValueError(f"latency quantile must be in [0, 1], got {quantile}")
        if not (math.isfinite(initial_s) and initial_s >= 0.0):
            raise ValueError(f"initial latency must be a finite number of seconds >= 0, got {initial_s}")
        self.quantile = float(quantile)
        self.initial_s = float(initial_s)
        self._samples: deque[float] = deque(maxlen=int(window))

    def add(self, latency_s: float) -> None:
        if not (math.isfinite(latency_s) and latency_s >= 0.0):
            raise ValueError(f"latency must be a finite number of seconds >= 0, got {latency_s}")
        self._samples.append(float(latency_s))

    @property
    def count(self) -> int:
        return len(self._samples)

    @property
    def last_s(self) -> float:
        return self._samples[-1] if self._samples else self.initial_s

    @property
    def estimate_s(self) -> float:
        if not self._samples:
            return self.initial_s
        return float(np.quantile(np.fromiter(self._samples, float), self.quantile))

    def reset(self) -> None:
        self._samples.clear()


def chunk_end_s(stamp_s: float, num_steps: int, period_s: float) -> float:
    """End of the last row's period: from then on the chunk has no row for the current time."""
    if num_steps < 1 or not period_s > 0.0:
        raise ValueError(f"a chunk needs num_steps >= 1 and period_s > 0, got {num_steps}, {period_s}")
    return stamp_s + num_steps * period_s


def next_inference_start_s(
    mode: InferenceMode,
    chunk_stamp_s: float,
    num_steps: int,
    period_s: float,
    latency_estimate_s: float,
    margin_s: float,
) -> float:
    """The time the next inference should start, given the executing chunk (see module doc)."""
    if mode not in INFERENCE_MODES:
        raise ValueError(f"inference mode must be one of {INFERENCE_MODES}, got '{mode}'")
    end = chunk_end_s(chunk_stamp_s, num_steps, period_s)
    if mode == "sync":
        return end
    return end - latency_estimate_s - margin_s


@dataclass(frozen=True)
class _Executing:
    stamp_s: float
    num_steps: int
    period_s: float


class InferenceScheduler:
    """Tracks the executing chunk and the latency; answers `due(now_s)`.

    The node calls `on_chunk` when it publishes a chunk, `on_latency` with every measured
    inference latency, and starts an inference when the worker is idle and `due(now)` holds.
    With no chunk yet, an inference is always due.
    """

    def __init__(self, mode: InferenceMode = "async", margin_s: float = 0.02,
                 latency: LatencyEstimator | None = None) -> None:  # fmt: skip
        if mode not in INFERENCE_MODES:
            raise ValueError(f"inference mode must be one of {INFERENCE_MODES}, got '{mode}'")
        if not (math.isfinite(margin_s) and margin_s >= 0.0):
            raise ValueError(f"margin_s must be a finite number of seconds >= 0, got {margin_s}")
        self.mode: InferenceMode = mode
        self.margin_s = float(margin_s)
        self.latency = latency if latency is not None else LatencyEstimator()
        self._executing: _Executing | None = None

    def on_chunk(self, stamp_s: float, num_steps: int, period_s: float) -> None:
        chunk_end_s(stamp_s, num_steps, period_s)  # validates
        self._executing = _Executing(float(stamp_s), int(num_steps), float(period_s))

    def on_latency(self, latency_s: float) -> None:
        self.latency.add(latency_s)

    def reset(self) -> None:
        """Forget the executing chunk (the next inference is due at once); keep latencies."""
        self._executing = None

    @property
    def next_start_s(self) -> float:
        if self._executing is None:
            return -math.inf
        e = self._executing
        return next_inference_start_s(self.mode, e.stamp_s, e.num_steps, e.period_s,
                                      self.latency.estimate_s, self.margin_s)  # fmt: skip

    def due(self, now_s: float) -> bool:
        return now_s >= self.next_start_s

    @property
    def latency_exceeds_horizon(self) -> bool:
        """True when back-to-back inferences cannot keep up: each chunk arrives `latency` late
        and the next takes `latency` again, so latency must not exceed half the chunk."""
        if self._executing is None:
            return False
        e = self._executing
        return self.latency.estimate_s + self.margin_s > e.num_steps * e.period_s / 2.0
