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
schedule (each chunk arrives `latency` late and the next takes `latency` again);
`InferenceScheduler` can then pipeline (`max_in_flight` > 1), and `latency_exceeds_horizon`
says when even that cannot keep up.
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
    lookahead_steps: int = 0,
    lookahead_s: float = 0.0,
) -> float:
    """The time the next inference should start, given the newest chunk (see module doc).

    lookahead_steps: rows of the old chunk that should still lie ahead when the new one
    arrives; an interpolating controller starts to slow down into a chunk's last rows, so
    2 keeps a cubic-spline executor moving through the seam. lookahead_s: more time on top, the
    executor's seam blend window, so that the blend ends before the old chunk's final stop.
    Sync mode ignores both.
    """
    if mode not in INFERENCE_MODES:
        raise ValueError(f"inference mode must be one of {INFERENCE_MODES}, got '{mode}'")
    end = chunk_end_s(chunk_stamp_s, num_steps, period_s)
    if mode == "sync":
        return end
    return end - lookahead_steps * period_s - lookahead_s - latency_estimate_s - margin_s


@dataclass(frozen=True)
class _Geometry:
    num_steps: int
    period_s: float


class InferenceScheduler:
    """Decides when the next inference may start; the node reports what happens.

    The node calls `on_start(observation_stamp_s)` when it hands an observation to a worker,
    `on_finish(observation_stamp_s)` when that inference ends (published, dropped or failed),
    `on_chunk` when it publishes a chunk and `on_latency` with every measured latency; it starts
    an inference when `due(now)`, on an observation newer than `newest_stamp_s`.

    The next start is computed from the newest chunk that exists *or is being computed* (its
    stamp is the observation's), so with `max_in_flight` > 1 a second inference starts while
    the first still runs: pipelining, the only way to keep the arm moving when the latency
    exceeds half a chunk. Sync mode always runs one inference at a time. Until the first
    chunk tells the chunk length, only one inference runs.
    """

    def __init__(self, mode: InferenceMode = "async", margin_s: float = 0.02,
                 latency: LatencyEstimator | None = None, lookahead_steps: int = 0,
                 max_in_flight: int = 1, lookahead_s: float = 0.0) -> None:  # fmt: skip
        if mode not in INFERENCE_MODES:
            raise ValueError(f"inference mode must be one of {INFERENCE_MODES}, got '{mode}'")
        if not (math.isfinite(margin_s) and margin_s >= 0.0):
            raise ValueError(f"margin_s must be a finite number of seconds >= 0, got {margin_s}")
        if lookahead_steps < 0:
            raise ValueError(f"lookahead_steps must be >= 0, got {lookahead_steps}")
        if not (math.isfinite(lookahead_s) and lookahead_s >= 0.0):
            raise ValueError(f"lookahead_s must be a finite number of seconds >= 0, got {lookahead_s}")
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        self.mode: InferenceMode = mode
        self.margin_s = float(margin_s)
        self.lookahead_steps = int(lookahead_steps)
        self.lookahead_s = float(lookahead_s)
        self.max_in_flight = 1 if mode == "sync" else int(max_in_flight)
        self.latency = latency if latency is not None else LatencyEstimator()
        self._geometry: _Geometry | None = None
        self._published_stamp_s: float | None = None
        self._running: list[float] = []  # observation stamps of the inferences in flight

    @property
    def in_flight(self) -> int:
        return len(self._running)

    @property
    def newest_stamp_s(self) -> float | None:
        """Stamp of the newest chunk published or being computed (None: nothing yet)."""
        stamps = self._running + ([] if self._published_stamp_s is None else [self._published_stamp_s])
        return max(stamps) if stamps else None

    def on_start(self, observation_stamp_s: float) -> None:
        self._running.append(float(observation_stamp_s))

    def on_finish(self, observation_stamp_s: float) -> None:
        """The inference on that observation ended; if it published, on_chunk came first."""
        try:
            self._running.remove(float(observation_stamp_s))
        except ValueError:
            raise RuntimeError(
                f"InferenceScheduler.on_finish({observation_stamp_s}) without a matching on_start"
            ) from None

    def on_chunk(self, stamp_s: float, num_steps: int, period_s: float) -> None:
        chunk_end_s(stamp_s, num_steps, period_s)  # validates
        self._geometry = _Geometry(int(num_steps), float(period_s))
        s = float(stamp_s)
        self._published_stamp_s = s if self._published_stamp_s is None else max(self._published_stamp_s, s)

    def on_latency(self, latency_s: float) -> None:
        self.latency.add(latency_s)

    def reset(self) -> None:
        """Forget the chunks (the next inference is due at once); keep latencies and the count
        of inferences still running (they will report on_finish)."""
        self._geometry = None
        self._published_stamp_s = None

    @property
    def next_start_s(self) -> float:
        newest = self.newest_stamp_s
        if self._geometry is None or newest is None:
            # Nothing executing: start now, unless the first inference is still running (the
            # chunk length is unknown until it returns).
            return -math.inf if not self._running else math.inf
        g = self._geometry
        return next_inference_start_s(self.mode, newest, g.num_steps, g.period_s,
                                      self.latency.estimate_s, self.margin_s, self.lookahead_steps,
                                      self.lookahead_s)  # fmt: skip

    def due(self, now_s: float) -> bool:
        return len(self._running) < self.max_in_flight and now_s >= self.next_start_s

    @property
    def latency_exceeds_horizon(self) -> bool:
        """True when the arm will wait between chunks whatever the schedule: consecutive
        starts must be `spacing` = (T - lookahead) * period - lookahead_s - latency - margin apart, and
        `max_in_flight` inferences of `latency` each must fit in that."""
        if self._geometry is None:
            return False
        g = self._geometry
        latency = self.latency.estimate_s
        spacing = (g.num_steps - self.lookahead_steps) * g.period_s - self.lookahead_s - latency - self.margin_s
        if self.mode == "sync":
            return False  # sync waits by design
        return spacing <= 0.0 or latency > self.max_in_flight * spacing
