"""Stopping through the real graph (sim + controller on simulated time, fr3 and aloha):
- the chunk stream stops mid-motion: the plan runs to the last chunk's end and holds there (no
  extrapolation), the commanded position stops changing within one command period after the
  plan's end, the measured joints settle on it;
- a bad chunk mid-motion: the arm stops at the acceleration limits and holds;
- e-stop mid-motion: hold latched even when new chunks arrive, ~/release_estop re-enables them.

The commanded position is reconstructed from the command topic itself: the recorded
JointTrajectory messages replayed, at their arrival times, into a joint_trajectory_controller
(vla_ros.core.jtc), which is what the simulated hardware executes.
"""

from __future__ import annotations

import numpy as np
import pytest
from std_msgs.msg import Bool

from vla_ros.core.action_spaces import action_names

from .helpers import Graph, commanded_positions

pytestmark = [pytest.mark.slow, pytest.mark.ros]

RATE_RAD_S = 0.3
# Per embodiment: {qualified joint: direction} of the ramps (ALOHA: one joint of each arm).
RAMPS = {"fr3": {"fr3_joint1": 1.0}, "aloha": {"follower_left/waist": 1.0, "follower_right/waist": -1.0}}


@pytest.fixture(scope="module", params=["fr3", "aloha"])
def graph(request):
    g = Graph(request.param)
    try:
        g.start_controller()
        yield g
    finally:
        g.close()


def _wait_holding(graph: Graph) -> None:
    core = graph.controller.core
    assert graph.wait(lambda: core.state(graph.now()) == "holding", 30.0), core.status(graph.now())


def _ramp_indices(graph: Graph, q0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the ramped joints and their directions: the configured one, or back towards
    home when an earlier test left the joint on that side (keeps the tool in its workspace)."""
    idx = np.array([graph.spec.joint_names.index(j) for j in RAMPS[graph.spec.name]])
    signs = np.array(list(RAMPS[graph.spec.name].values()))
    home = np.concatenate([a.home_rad for a in graph.spec.arms])[idx]
    signs = np.where(signs * (q0[idx] - home) > 0.05, -signs, signs)
    return idx, signs


def _chunk_on_ramp(graph: Graph, q0: np.ndarray, t0: float, stamp: float, duration_s: float, signs: np.ndarray):
    """The rows of the moving target q0 + sign * rate * (t - t0) at stamp + i * period (grippers open)."""
    spec = graph.spec
    names = list(action_names(spec, "joint_position"))
    steps = int(round(duration_s / spec.policy_period_s)) + 1
    t = stamp + spec.policy_period_s * np.arange(steps)
    base = dict(zip(spec.joint_names, q0))
    rows = np.array([[base.get(n, 1.0) for n in names]] * steps)
    for joint, sign in zip(RAMPS[spec.name], signs):
        rows[:, names.index(joint)] += sign * RATE_RAD_S * (t - t0)
    return names, rows


def _commanded_all(graph: Graph, times: np.ndarray) -> np.ndarray:
    return np.hstack([commanded_positions(graph, arm.name, times) for arm in graph.spec.arms])


def test_stopping_the_chunk_stream_holds_the_last_target(graph):
    _wait_holding(graph)
    core = graph.controller.core
    spec = graph.spec
    q0 = graph.latest()
    t0 = graph.now()
    idx, signs = _ramp_indices(graph, q0)
    accepted = core.chunks_accepted
    # Five overlapping 0.5 s chunks, one every 0.2 s of simulated time, then silence.
    for k in range(5):
        stamp = graph.now()
        names, rows = _chunk_on_ramp(graph, q0, t0, stamp, 0.5, signs)
        graph.send(names, rows, stamp_s=stamp)
        graph.wait_decisions(core.chunks_accepted + core.chunks_refused + 1)
        assert core.last_decision.accepted, core.last_refusal
        if k < 4:
            graph.wait_sim(0.2)
    assert core.chunks_accepted == accepted + 5
    final = np.array([dict(zip(names, rows[-1]))[j] for j in spec.joint_names])
    plan_end = core.scheduler.plan.end_time_s
    graph.wait_sim(max(0.0, plan_end - graph.now()) + 1.0)

    period = 1.0 / core.command_rate_hz
    replan = 1.0 / core.config.replan_rate_hz
    times = np.arange(t0, plan_end + 1.0, period / 2)
    cmd = _commanded_all(graph, times)
    # Commanded: constant at the last chunk's last row from one command period after the plan's
    # end. The windows sent while the plan ran already end at rest on it and a JTC holds that, so
    # no further trajectory restarts the JTC from the measured state (the servo overshoots a stop
    # by a few mrad). Within the first replan period the reconstruction may still be finishing a
    # window whose arrival the probe saw late (restarted from the measured state then); exactly
    # the last row from then on.
    after = times >= plan_end + period
    assert after.sum() > 50
    np.testing.assert_allclose(cmd[after], np.broadcast_to(final, cmd[after].shape), atol=2e-3)
    exact = times >= plan_end + replan + period
    np.testing.assert_allclose(cmd[exact], np.broadcast_to(final, cmd[exact].shape), atol=1e-6)
    # What the controller sent never goes past the last target: every point of every trajectory
    # (the command columns are the arms' joints in spec.joint_names order, as in cmd).
    offset = 0
    for arm in spec.arms:
        n = len(arm.joint_names)
        cols = [k for k in range(n) if offset + k in idx]
        for k in cols:
            col = arm.command.joint_names.index(arm.joint_names[k])
            sign, target = signs[list(idx).index(offset + k)], final[offset + k]
            sent = np.array([p.positions[col] for r in graph.commands(arm.name, since_s=t0) for p in r.msg.points])
            assert sent.size > 50 and np.all(sign * sent <= sign * target + 1e-9), (arm.name, k)
        offset += n

    t, q = graph.measured_all(since_s=t0)
    settled = t >= plan_end + 0.5
    assert settled.sum() > 20
    np.testing.assert_allclose(q[settled], np.broadcast_to(final, q[settled].shape), atol=5e-3)
    assert np.ptp(q[settled], axis=0).max() < 1e-3  # at rest, not creeping on
    # Extrapolating the ramp would have gone RATE_RAD_S * 1 s further by now; it went nowhere.
    assert np.all(signs * q[:, idx] <= signs * final[idx] + 0.01)
    assert graph.sim_trajectories_rejected() == 0, graph.sim.last_rejection


def test_bad_chunk_mid_motion_stops_at_the_acceleration_limit_and_holds(graph):
    _wait_holding(graph)
    core = graph.controller.core
    q0 = graph.latest()
    t0 = graph.now()
    idx, signs = _ramp_indices(graph, q0)
    names, rows = _chunk_on_ramp(graph, q0, t0, t0, 2.0, signs)
    graph.send(names, rows, stamp_s=t0)
    graph.wait_decisions(core.chunks_accepted + core.chunks_refused + 1)
    assert core.last_decision.accepted, core.last_refusal
    graph.wait_sim(0.6)
    refused = core.chunks_refused
    bad_names, bad_rows = _chunk_on_ramp(graph, q0, t0, graph.now(), 1.0, signs)
    bad_rows[1, 0] = np.nan
    graph.send(bad_names, bad_rows)
    status = graph.wait_refusal_reported(refused + 1, t0)
    assert "non-finite" in status["last_refusal"]
    refused_at = graph.now()
    graph.wait_sim(1.2)

    period = 1.0 / core.command_rate_hz
    times = np.arange(t0, graph.probe.now_s() - 0.05, period / 2)
    cmd = _commanded_all(graph, times)
    # Braking from 0.3 rad/s at 10 rad/s^2 takes 0.03 s and 4.5 mrad; allow the chunk's trip
    # through DDS and the executor (< 0.1 s simulated) on top.
    late = times >= refused_at + 0.03 + period
    stop = cmd[late][-1]
    np.testing.assert_allclose(cmd[late], np.broadcast_to(stop, cmd[late].shape), atol=1e-6)
    travelled = signs * (stop[idx] - q0[idx])
    assert np.all(travelled > 0.1) and np.all(travelled < RATE_RAD_S * (refused_at - t0) + 0.0045 + 0.03)
    t, q = graph.measured_all(since_s=refused_at + 0.5)
    np.testing.assert_allclose(q, np.broadcast_to(stop, q.shape), atol=5e-3)
    # The ramp's end (0.6 rad away) is never approached: the arm stayed where it stopped.
    assert np.all(signs * (q[:, idx] - q0[idx]) < RATE_RAD_S * (refused_at - t0) + 0.0045 + 0.03 + 5e-3)
    assert graph.sim_trajectories_rejected() == 0, graph.sim.last_rejection


def test_estop_latches_a_hold_until_released(graph):
    _wait_holding(graph)
    core = graph.controller.core
    q0 = graph.latest()
    t0 = graph.now()
    idx, signs = _ramp_indices(graph, q0)
    names, rows = _chunk_on_ramp(graph, q0, t0, t0, 2.0, signs)
    graph.send(names, rows, stamp_s=t0)
    graph.wait_decisions(core.chunks_accepted + core.chunks_refused + 1)
    assert core.last_decision.accepted, core.last_refusal
    graph.wait_sim(0.5)
    estop_at = graph.now()
    graph.probe.estop_pub.publish(Bool(data=True))
    assert graph.wait(lambda: (s := graph.controller_status(estop_at)) is not None and s["state"] == "estop", 30.0)
    status = graph.controller_status(estop_at)
    assert status["_message"] == "e-stop latched" and status["_level"] == 2
    graph.wait_sim(0.3)
    held = graph.latest()

    # New chunks while latched: refused, the arm stays where it stopped.
    accepted = core.chunks_accepted
    since = graph.now()
    for _ in range(3):
        names, rows = _chunk_on_ramp(graph, held, graph.now(), graph.now(), 1.0, signs)
        graph.send(names, rows)
        graph.wait_sim(0.2)
    status = graph.wait_refusal_reported(core.chunks_refused, since)
    assert "e-stop is latched" in status["last_refusal"]
    assert core.chunks_accepted == accepted
    t, q = graph.measured_all(since_s=since)
    assert np.max(np.abs(q - held)) < 2e-3
    assert np.all(signs * (held[idx] - q0[idx]) < RATE_RAD_S * (estop_at - t0) + 0.05)  # stopped at once

    response = graph.release_estop()
    assert response.success and "released" in response.message
    _wait_holding(graph)
    start = graph.now()
    names, rows = _chunk_on_ramp(graph, held, start, start, 1.0, signs)
    graph.send(names, rows, stamp_s=start)
    graph.wait_decisions(core.chunks_accepted + core.chunks_refused + 1)
    assert core.last_decision.accepted, core.last_refusal
    graph.wait_sim(1.8)
    target = np.array([dict(zip(names, rows[-1]))[j] for j in graph.spec.joint_names])
    np.testing.assert_allclose(graph.latest(), target, atol=5e-3)
    assert graph.sim_trajectories_rejected() == 0, graph.sim.last_rejection
