"""The bench's execution analysis on synthetic chunk streams with hand-computed stall fractions
(the ROS part of `vla-ros bench pipeline` is exercised by test/nodes/test_policy_node.py)."""

from __future__ import annotations

import numpy as np
import pytest

from vla_ros.bench.pipeline import ReferenceMotion, execute_chunks
from vla_ros.core.types import ActionChunk

T, P, L = 10, 0.1, 0.5  # rows, period, inference latency = 50 % of the chunk
MOTION = ReferenceMotion(np.zeros(7))


def _stream(spacing_s: float, duration_s: float = 12.0):
    """A perfect policy's chunks, observations every spacing_s, each arriving L later."""
    out = []
    for s in np.arange(0.0, duration_s, spacing_s):
        out.append((s + L, ActionChunk(tuple(f"j{i}" for i in range(7)), MOTION(s + P * np.arange(T)), P, s)))
    return out


def test_sync_stalls_for_a_period_plus_the_latency_every_chunk():
    # sync: observe when the chunk has run out (every T P); the plan holds from the last row
    # (s + (T - 1) P) until the next arrival (s + T P + L): (P + L) / (T P) = 0.6
    m = execute_chunks(_stream(T * P), 7, 100.0, 0.1, reference=MOTION)
    assert m.stall_fraction == pytest.approx(0.6, abs=0.01)
    assert m.min_lead_s == pytest.approx(-(P + L))
    assert m.seam_max_acceleration_rad_s2 > 5 * m.within_max_acceleration_rad_s2


def test_back_to_back_single_inference_stalls_one_period_per_seam():
    # one inference at a time at L = T P / 2: each chunk arrives at s + T P, one period after
    # the previous chunk's last row: P / L = 0.2
    m = execute_chunks(_stream(L), 7, 100.0, 0.1, reference=MOTION)
    assert m.stall_fraction == pytest.approx(0.2, abs=0.01)
    assert m.min_lead_s == pytest.approx(-P)


def test_pipelined_stream_never_stalls_and_seams_stay_smooth():
    # two in flight, started every (T - 2) P - L - 0.02 s: each chunk is 0.12 s early
    m = execute_chunks(_stream((T - 2) * P - L - 0.02), 7, 100.0, 0.1, reference=MOTION)
    assert m.stall_fraction == 0.0
    assert m.min_lead_s == pytest.approx(0.12)
    assert m.seam_max_step_rad <= 1.2 * m.within_max_step_rad
    # Seams no worse than within a chunk (issue 6): 0.506 vs 0.500 rad/s^2 (the motion's own
    # peak is 0.2 (pi / 2)^2 = 0.49); 0.66 when the free tail's velocity was capped.
    assert m.seam_max_acceleration_rad_s2 <= 1.03 * m.within_max_acceleration_rad_s2
    assert m.max_tracking_error_rad < 5e-5  # the arm follows the reference motion


def test_needs_enough_chunks():
    with pytest.raises(ValueError, match="at least 4 chunk arrivals"):
        execute_chunks(_stream(1.0, duration_s=2.0), 7, 100.0, 0.1)


def test_chunk_to_command_matching():
    from vla_ros.bench.pipeline import chunk_to_command_latencies

    chunks = [(10.00, 9.98), (10.10, 10.07), (10.20, 10.18)]  # (received, capture stamp)
    commands = [10.001, 10.5, 10.102]  # the third chunk got no command within 50 ms
    got = chunk_to_command_latencies(chunks, commands)
    assert got == [pytest.approx((0.021, 0.001)), pytest.approx((0.032, 0.002))]
