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


def _simulate(mode, latency_s, T=10, period_s=0.1, duration_s=20.0, max_in_flight=1, lookahead_steps=0,
              margin_s=0.02, dt=0.001):
    """Time-stepped simulation of the node loop; returns (stall time, chunks published, least
    slack). Stall: time after the first chunk when the newest published chunk has run out.
    Slack: how long before the newest chunk runs out the next one arrives, in steady state
    (from the second seam on: the first inference alone tells the chunk length)."""
    sched = InferenceScheduler(mode=mode, margin_s=margin_s, latency=LatencyEstimator(initial_s=latency_s),
                               lookahead_steps=lookahead_steps, max_in_flight=max_in_flight)
    running = []  # (finish time, observation stamp)
    newest_end = None
    stall = 0.0
    published = 0
    slacks = []
    for k in range(int(duration_s / dt)):
        t = k * dt
        for job in [j for j in running if j[0] <= t + 1e-12]:
            running.remove(job)
            sched.on_latency(latency_s)
            sched.on_chunk(job[1], T, period_s)
            sched.on_finish(job[1])
            if newest_end is not None:
                slacks.append(newest_end - t)
            newest_end = max(newest_end or -1.0, chunk_end_s(job[1], T, period_s))
            published += 1
        if sched.due(t):
            sched.on_start(t)
            running.append((t + latency_s, t))
        if newest_end is not None and t >= newest_end - 1e-12:
            stall += dt
    return stall, published, min(slacks[1:], default=math.inf)


def test_async_keeps_the_arm_moving_and_sync_waits_every_seam():
    # latency = 30 % of the 1 s chunk: one worker suffices
    stall, _, slack = _simulate("async", 0.3)
    assert stall == 0.0 and slack == pytest.approx(0.02, abs=0.002)  # arrives `margin` early
    stall, n, _ = _simulate("sync", 0.3)
    # sync: every chunk runs out, then one latency of waiting (to within the time step)
    assert stall == pytest.approx((n - 1) * 0.3, abs=n * 0.002)


def test_latency_of_half_a_chunk_needs_pipelining():
    # one worker: the break-even point; each chunk arrives just as the previous one runs out,
    # never the 2 rows + margin ahead an interpolating controller wants
    stall_1, n1, slack_1 = _simulate("async", 0.5, lookahead_steps=2)
    assert stall_1 == 0.0 and slack_1 == pytest.approx(0.0, abs=0.002)
    # two inferences in flight: started every (T - 2) p - L - m = 0.28 s, arriving 0.22 s early
    stall_2, n2, slack_2 = _simulate("async", 0.5, lookahead_steps=2, max_in_flight=2)
    assert stall_2 == 0.0 and slack_2 == pytest.approx(0.22, abs=0.002) and n2 > n1
    # above half a chunk one worker stalls 2 L - T p per seam
    stall_3, n3, _ = _simulate("async", 0.6)
    assert stall_3 == pytest.approx((n3 - 1) * 0.2, abs=n3 * 0.002)
    # sync never pipelines
    assert InferenceScheduler(mode="sync", max_in_flight=4).max_in_flight == 1


def test_first_inference_blocks_pipelining_until_the_chunk_length_is_known():
    sched = InferenceScheduler(mode="async", max_in_flight=3)
    assert sched.due(0.0)
    sched.on_start(0.0)
    assert not sched.due(100.0)  # T and period unknown yet
    sched.on_chunk(0.0, 10, 0.1)
    sched.on_finish(0.0)
    assert sched.in_flight == 0 and sched.due(1.0 - 0.02)
    with pytest.raises(RuntimeError, match="without a matching on_start"):
        sched.on_finish(0.0)


def test_failed_inference_does_not_delay_the_next_one():
    sched = InferenceScheduler(mode="async", margin_s=0.0, max_in_flight=2, latency=LatencyEstimator(initial_s=0.3))
    sched.on_start(0.0)
    sched.on_chunk(0.0, 10, 0.1)
    sched.on_finish(0.0)
    sched.on_start(0.7)  # pipelined inference on the observation of t = 0.7
    assert sched.newest_stamp_s == 0.7 and sched.next_start_s == pytest.approx(1.4)
    sched.on_finish(0.7)  # ...failed: the schedule falls back to the chunk that exists
    assert sched.newest_stamp_s == 0.0 and sched.next_start_s == pytest.approx(0.7)


def test_latency_longer_than_horizon_is_reported():
    sched = InferenceScheduler(mode="async", margin_s=0.0, latency=LatencyEstimator(initial_s=0.51))
    assert sched.due(0.0) and sched.next_start_s == -math.inf
    sched.on_chunk(0.0, 10, 0.1)
    assert sched.latency_exceeds_horizon  # 0.51 > 1.0 - 0.51
    two = InferenceScheduler(mode="async", margin_s=0.0, latency=LatencyEstimator(initial_s=0.51), max_in_flight=2)
    two.on_chunk(0.0, 10, 0.1)
    assert not two.latency_exceeds_horizon  # 0.51 <= 2 * 0.49
    assert sched.due(0.49) and not sched.due(0.48)  # 1.0 s chunk end - 0.51 s latency
    sched.reset()
    assert not sched.latency_exceeds_horizon and sched.due(-100.0)
