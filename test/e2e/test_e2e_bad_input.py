"""Bad input through the real graph (sim + controller on simulated time, fr3 and aloha): every
bad chunk -- and a chunk sent while joint_states lack a joint -- is refused with its reason on the
controller's diagnostics and in its log, and the simulated arm holds (measured joints still over
the next simulated second; every command sent after the refusal is the hold position).

Each bad chunk is built from a chunk that WOULD move a joint by >= 0.3 rad if it were accepted, so
"the arm did not move" is evidence of the refusal, not of an idle graph.
"""

from __future__ import annotations

import numpy as np
import pytest

from vla_ros.core.action_spaces import action_names
from vla_ros.core.embodiment import load_embodiment
from vla_ros.nodes import conversions as cv

from .helpers import Graph

pytestmark = [pytest.mark.slow, pytest.mark.ros]

HOLD_TOLERANCE_RAD = 2e-3  # servo noise of a holding sim arm is far below this; a ramp moves 0.3 rad

# The joint a would-be-accepted chunk moves, and the joint an over-limit chunk drives past its
# limit without moving the tool (a wrist rotation about the tool axis: only the joint limit trips).
RAMP_JOINT = {"fr3": "fr3_joint1", "aloha": "follower_left/waist"}
LIMIT_JOINT = {"fr3": "fr3_joint7", "aloha": "follower_right/wrist_rotate"}
FOREIGN = {"fr3": "aloha", "aloha": "fr3"}


@pytest.fixture(scope="module", params=["fr3", "aloha"])
def graph(request):
    g = Graph(request.param, relay=True)
    try:
        g.start_controller()
        yield g
    finally:
        g.close()


def _ramp(graph: Graph, joint: str, total_rad: float, duration_s: float = 1.0):
    """A joint_position chunk from the measured joints: `joint` ramps by total_rad over duration_s."""
    spec = graph.spec
    names = list(action_names(spec, "joint_position"))
    steps = int(round(duration_s / spec.policy_period_s)) + 1
    q = dict(zip(spec.joint_names, graph.latest()))
    rows = np.array([[q.get(n, 1.0) for n in names]] * steps)  # grippers: 1 = open (as they are)
    rows[:, names.index(joint)] += np.linspace(0.0, total_rad, steps)
    return names, rows


def _bad_chunk(graph: Graph, case: str):
    """(names, rows, stamp or None, expected fragments of the refusal reason)."""
    emb = graph.spec.name
    names, rows = _ramp(graph, RAMP_JOINT[emb], 0.3)
    if case == "nan":
        rows[3, names.index(RAMP_JOINT[emb])] = np.nan
        return names, rows, None, ["non-finite"]
    if case == "missing_dimension":
        # Names that fit no space: the reason is worded against the default space (fr3: ee_delta,
        # aloha: joint_position) and lists what was sent.
        drop = names.index(graph.spec.joint_names[-1])
        sent = names[:drop] + names[drop + 1:]
        return sent, np.delete(rows, drop, axis=1), None, ["missing", f"got {sent}"]
    if case == "misnamed_dimension":
        wrong = list(names)
        i = names.index(RAMP_JOINT[emb])
        wrong[i] = RAMP_JOINT[emb] + "_typo"
        return wrong, rows, None, ["unexpected", RAMP_JOINT[emb] + "_typo"]
    if case == "other_embodiment_names":
        other = load_embodiment(FOREIGN[emb])
        foreign = action_names(other, "joint_position")
        values = np.tile(np.concatenate([np.asarray(a.home_rad).tolist() + [1.0] for a in other.arms]), (rows.shape[0], 1))
        values[:, 0] += np.linspace(0.0, 0.3, rows.shape[0])
        return list(foreign), values, None, ["expected", f"got {list(foreign)}",
                                             "no other supported action space matches"]
    if case == "stale_stamp":
        graph.wait_sim(max(0.0, 2.5 - graph.now()))  # a stamp 2 s back must still be a valid time
        return names, rows, graph.now() - 2.0, ["stale chunk"]
    if case == "future_stamp":
        return names, rows, graph.now() + 0.5, ["in the future"]
    if case == "over_position_limit":
        spec_arm = next(a for a in graph.spec.arms if LIMIT_JOINT[emb] in [a.qualified(j) for j in a.joint_names])
        j = [spec_arm.qualified(n) for n in spec_arm.joint_names].index(LIMIT_JOINT[emb])
        q_now = dict(zip(graph.spec.joint_names, graph.latest()))[LIMIT_JOINT[emb]]
        beyond = float(spec_arm.limits.upper_rad[j]) + 0.15 - q_now
        # At 2 rad/s (within the velocity limit) so that only the position limit is violated.
        names, rows = _ramp(graph, LIMIT_JOINT[emb], beyond, duration_s=beyond / 2.0)
        return names, rows, None, [f"{LIMIT_JOINT[emb]}: position", "above upper limit"]
    raise AssertionError(case)


def _wait_holding(graph: Graph) -> None:
    core = graph.controller.core
    assert graph.wait(lambda: core.state(graph.now()) == "holding", 30.0), core.status(graph.now())


def _assert_holds(graph: Graph, since_s: float, q_before: np.ndarray, held: np.ndarray) -> None:
    graph.wait_sim(1.0)
    t, q = graph.measured_all(since_s=since_s)
    assert t[-1] >= since_s + 0.95
    drift = np.max(np.abs(q - q_before), axis=0)
    assert np.all(drift < HOLD_TOLERANCE_RAD), dict(zip(graph.spec.joint_names, drift.round(5)))
    for arm in graph.spec.arms:
        sl = [graph.spec.joint_names.index(arm.qualified(j)) for j in arm.joint_names]
        for rec in graph.commands(arm.name, since_s=since_s):
            pts = np.array([p.positions for p in rec.msg.points])
            np.testing.assert_allclose(pts, np.broadcast_to(held[sl], pts.shape), atol=1e-9)


@pytest.mark.parametrize("case", ["nan", "missing_dimension", "misnamed_dimension", "other_embodiment_names",
                                  "stale_stamp", "future_stamp", "over_position_limit"])
def test_bad_chunk_is_refused_with_its_reason_and_the_arm_holds(graph, case, capfd):
    _wait_holding(graph)
    core = graph.controller.core
    accepted, refused = core.chunks_accepted, core.chunks_refused
    q_before = graph.latest()
    held = core.scheduler.plan.final_position_rad.copy()
    names, rows, stamp, fragments = _bad_chunk(graph, case)
    since = graph.now()
    graph.send(names, rows, stamp_s=stamp)
    status = graph.wait_refusal_reported(refused + 1, since)
    for fragment in fragments:
        assert fragment in status["last_refusal"], status["last_refusal"]
    assert int(status["chunks_accepted"]) == accepted
    _assert_holds(graph, since, q_before, held)
    assert core.chunks_accepted == accepted
    log = capfd.readouterr().err  # rclpy logs to the process's stderr
    assert "action chunk refused: " in log and fragments[-1] in log, log[-2000:]
    assert graph.sim_trajectories_rejected() == 0, graph.sim.last_rejection


@pytest.mark.parametrize("fault", ["missing_joint", "silent"])
def test_bad_joint_states_refuse_to_command_until_healthy(graph, fault):
    """joint_states on the controller's topic lack a joint (relayed without it), or stop
    altogether (relay silent for longer than joint_state_timeout_s): chunks are refused."""
    _wait_holding(graph)
    core = graph.controller.core
    refused = core.chunks_refused
    arm = graph.spec.arms[-1]
    dropped = arm.joint_names[-1]

    def partial(arm_name, msg):
        if arm_name != arm.name:
            return msg
        if fault == "silent":
            return None
        keep = [i for i, n in enumerate(msg.name) if n != dropped]
        return cv.make_joint_state([msg.name[i] for i in keep], [msg.position[i] for i in keep],
                                   stamp_s=cv.time_to_s(msg.header.stamp))

    q_before = graph.latest()
    held = core.scheduler.plan.final_position_rad.copy()
    graph.probe.relay_filter = partial
    try:
        # The controller now only hears joint_states without `dropped` / nothing from that arm.
        timeout_s = graph.controller.get_parameter("joint_state_timeout_s").value
        graph.wait_sim(0.2 if fault == "missing_joint" else timeout_s + 0.2)
        since = graph.now()
        names, rows = _ramp(graph, RAMP_JOINT[graph.spec.name], 0.3)
        graph.send(names, rows)
        status = graph.wait_refusal_reported(refused + 1, since)
        expected = f"lacks joints ['{dropped}']" if fault == "missing_joint" else "are stale: last"
        assert expected in status["last_refusal"], status
        assert f"'{arm.joint_states_topic}'" in status["last_refusal"]
        assert status["state"] == "fault" and status["_level"] == 2
        assert "refusing to command" in status["_message"]
        _assert_holds(graph, since, q_before, held)
    finally:
        graph.probe.relay_filter = lambda arm_name, msg: msg
    # Complete joint_states again: the controller recovers to a hold and accepts the same chunk.
    _wait_holding(graph)
    names, rows = _ramp(graph, RAMP_JOINT[graph.spec.name], 0.3)
    graph.send(names, rows)
    graph.wait_decisions(core.chunks_accepted + core.chunks_refused + 1)
    assert core.last_decision.accepted, core.last_refusal
    graph.wait_sim(1.6)
    i = graph.spec.joint_names.index(RAMP_JOINT[graph.spec.name])
    assert graph.latest()[i] == pytest.approx(rows[-1, names.index(RAMP_JOINT[graph.spec.name])], abs=5e-3)
