"""`vla-ros bench safety`: the numbers it reports are what it says they are."""

from __future__ import annotations

import argparse

import numpy as np

import pytest

from vla_ros.bench import safety as bench_safety
from vla_ros.core.embodiment import load_embodiment
from vla_ros.core.kinematics import RobotKinematics


def test_decide_rates_per_size_and_the_oversize_refusal():
    spec = load_embodiment("fr3")
    kin = RobotKinematics.from_embodiment(spec)
    result = bench_safety.bench_decide(spec, kin, [10, 200], budget_s=0.2)
    assert set(result) == {"10", "200", "refused_oversize_1001"}
    for key, entry in result.items():
        assert entry["decided"] >= 3 and entry["chunks_per_s"] > 0
        assert entry["ms_per_chunk"] == pytest.approx(1e3 / entry["chunks_per_s"], rel=0.01)
    # The sine motion is valid at every size: all accepted; the oversize chunks all refused.
    assert result["10"]["accepted"] == result["10"]["decided"]
    assert result["200"]["accepted"] == result["200"]["decided"]
    assert result["refused_oversize_1001"]["accepted"] == 0
    # A refusal by the bounds costs less than deciding a 200-point chunk.
    assert result["refused_oversize_1001"]["chunks_per_s"] > result["200"]["chunks_per_s"]


@pytest.mark.slow
@pytest.mark.ros
def test_bench_safety_runs_through_ros_and_reports_every_measurement():
    args = argparse.Namespace(sizes="10", estops=5, chunk_rate_hz=20.0, cpu_load=0, chunk_worker=True)
    result = bench_safety.run(args)
    for phase in ("idle", "chunks", "loaded"):
        entry = result[phase]
        assert entry["estop_latency_ms"]["n"] + entry["estops_unanswered"] == 5
        assert entry["estop_latency_ms"]["n"] >= 4  # a loaded CI machine may miss one
        assert 0.0 < entry["estop_latency_ms"]["p50"] <= entry["estop_latency_ms"]["max"]
        assert entry["tick_period_ms"] == 50.0 and entry["tick_jitter_ms"]["n"] > 5
        assert entry["internal_errors"] == 0
        assert 10.0 <= entry["start_lead_ms"] <= 100.0
    for phase in ("chunks", "loaded"):
        assert result[phase]["chunks_decided_per_s"] > 0 and result[phase]["chunk_points"] == 1000
        # the controller's chunk worker decided them (the bench waits for it to be ready)
        assert result[phase]["chunks_decided_in_worker"] > 0
    assert result["chunks"]["cpu_load_processes"] == 0


def test_takeover_jumps_hand_computed():
    from vla_ros.nodes import conversions as cv

    joints = ("a",)
    # Trajectory 1: stamp 10, from 0 at 0 rad/s ... constant 1 rad/s from t = 10.0 to 10.2 (linear knots).
    first = cv.make_joint_trajectory(joints, [[0.0], [0.2]], [0.0, 0.2], velocities=[[1.0], [0.0]], stamp_s=10.0)
    # Trajectory 2 arrives at 10.05, after its first point at 10.04: its velocity there is 0.5 rad/s
    # (a cubic 0.5 -> 0 over 0.1 s, sampled 0.01 s in: 0.5 - ... computed by the Plan below).
    second = cv.make_joint_trajectory(joints, [[0.04], [0.08]], [0.0, 0.1], velocities=[[0.5], [0.0]], stamp_s=10.04)
    # Trajectory 3 arrives before its first point: no jump counted.
    third = cv.make_joint_trajectory(joints, [[0.1], [0.1]], [0.05, 0.1], velocities=[[0.0], [0.0]], stamp_s=10.06)
    from vla_ros.core.scheduler import Plan

    v_second = Plan(np.array([10.04, 10.14]), np.array([[0.04], [0.08]]), np.array([[0.5], [0.0]])).sample(10.05)[1][0]
    v_first = Plan(np.array([10.0, 10.2]), np.array([[0.0], [0.2]]), np.array([[1.0], [0.0]])).sample(10.05)[1][0]
    result = bench_safety.takeover_jumps([(10.0, first), (10.05, second), (10.061, third)], joints, cv)
    assert result["trajectories"] == 3 and result["late_share"] == pytest.approx(1 / 3, abs=1e-4)
    assert result["max_velocity_jump_rad_s"] == pytest.approx(abs(v_second - v_first), abs=1e-4)
