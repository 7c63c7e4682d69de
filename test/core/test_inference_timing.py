"""The async scheduling decision: hand-computed start times and a small event simulation."""

from __future__ import annotations

import math

import pytest

from vla_ros.core.inference_timing import (
    InferenceScheduler,
    LatencyEstimator,
    chunk_end_s,
    next_inference_start_s,
)


def test_hand_computed_start_times():
    # 10 rows at 0.1 s from t = 2.0: the last row (due 2.9) is the command until 3.0
    assert chunk_end_s(2.0, 10, 0.1) == pytest.approx(3.0)
    assert next_inference_start_s("async", 2.0, 10, 0.1, latency_estimate_s=0.3, margin_s=0.02) == pytest.approx(2.68)
    assert next_inference_start_s("sync", 2.0, 10, 0.1, latency_estimate_s=0.3, margin_s=0.02) == pytest.approx(3.0)
    with pytest.raises(ValueError, match="inference mode must be one of"):
        next_inference_start_s("eager", 0.0, 10, 0.1, 0.3, 0.0)
    with pytest.raises(ValueError, match="num_steps >= 1"):
        chunk_end_s(0.0, 0, 0.1)


def test_latency_estimator_quantile():
    est = LatencyEstimator(window=5, quantile=0.5, initial_s=0.2)
    assert est.estimate_s == 0.2
    for v in [0.1, 0.5, 0.3]:
        est.add(v)
    assert est.estimate_s == pytest.approx(0.3)  # median of 0.1, 0.3, 0.5
    for v in [1.0, 1.0, 1.0, 1.0, 1.0]:
        est.add(v)  # the window forgets the old ones
    assert est.estimate_s == 1.0 and est.count == 5
    p90 = LatencyEstimator(window=10, quantile=0.9)
    for v in range(10):
        p90.add(v / 10)
    # numpy's linear quantile of 0.0..0.9 at 0.9: position 8.1 -> 0.81
    assert p90.estimate_s == pytest.approx(0.81)
    with pytest.raises(ValueError, match="latency must be"):
        p90.add(-1.0)


def _simulate(mode: str, latency_s: float, T: int = 10, period_s: float = 0.1, n_chunks: int = 20):
    """Event simulation of the node loop: returns the total stall time (no row left to execute)."""
    sched = InferenceScheduler(mode=mode, margin_s=0.02, latency=LatencyEstimator(initial_s=latency_s))
    t = 0.0
    stall = 0.0
    end = None
    for _ in range(n_chunks):
        start = max(t, sched.next_start_s)  # the worker is free from t on
        obs_stamp = start
        arrival = start + latency_s
        if end is not None and arrival > end + 1e-12:
            stall += arrival - end
        sched.on_latency(latency_s)
        sched.on_chunk(obs_stamp, T, period_s)
        end = chunk_end_s(obs_stamp, T, period_s)
        t = arrival
    return stall


def test_async_never_stalls_when_latency_fits_and_sync_stalls_every_seam():
    # latency = 50 % of the 1 s chunk: the break-even point for back-to-back inference
    assert _simulate("async", 0.5) == 0.0
    assert _simulate("async", 0.3) == 0.0
    assert _simulate("sync", 0.5) == pytest.approx(19 * 0.5)
    # above half the chunk even async stalls, by 2 L - T p per seam once back to back
    assert _simulate("async", 0.6) == pytest.approx(19 * 0.2)


def test_latency_longer_than_horizon_is_reported():
    sched = InferenceScheduler(mode="async", margin_s=0.0, latency=LatencyEstimator(initial_s=0.51))
    assert sched.due(0.0) and sched.next_start_s == -math.inf
    sched.on_chunk(0.0, 10, 0.1)
    assert sched.latency_exceeds_horizon
    assert sched.due(0.49) and not sched.due(0.48)  # 1.0 s chunk end - 0.51 s latency
    sched.reset()
    assert not sched.latency_exceeds_horizon and sched.due(-100.0)
