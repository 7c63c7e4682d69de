"""A joint_position chunk through the real graph (sim_node + controller_node, simulated time)
moves each embodiment's simulated arms to the commanded joints: fr3, ur5, ur5e, aloha (both arms)."""

from __future__ import annotations

import numpy as np
import pytest

from vla_ros.core.action_spaces import action_names
from vla_ros.nodes import conversions as cv

from .helpers import Graph

pytestmark = [pytest.mark.slow, pytest.mark.ros]

# Per embodiment: {qualified joint: total change (rad)} over a 1 s chunk, gripper target (0 = closed).
MOTIONS = {
    "fr3": ({"fr3_joint1": 0.30, "fr3_joint2": 0.20, "fr3_joint4": -0.25, "fr3_joint6": 0.20, "fr3_joint7": -0.30}, 0.0),
    "ur5": ({"shoulder_pan_joint": -0.30, "shoulder_lift_joint": 0.20, "wrist_1_joint": 0.25, "wrist_2_joint": -0.30}, 0.0),
    "ur5e": ({"shoulder_pan_joint": 0.30, "shoulder_lift_joint": 0.15, "elbow_joint": -0.20, "wrist_3_joint": 0.40}, 0.0),
    "aloha": ({"follower_left/waist": 0.30, "follower_left/elbow": -0.20, "follower_right/waist": -0.25,
               "follower_right/shoulder": 0.20, "follower_right/wrist_rotate": 0.40}, 0.0),
}


def _chunk_rows(spec, q0: np.ndarray, changes: dict[str, float], gripper: float, duration_s: float = 1.0):
    """Rows of a joint_position chunk: a linear ramp of the changed joints over duration_s, the
    gripper columns at `gripper`; columns in action_names order."""
    names = action_names(spec, "joint_position")
    steps = int(round(duration_s / spec.policy_period_s)) + 1
    s = np.linspace(0.0, 1.0, steps)
    by_joint = dict(zip(spec.joint_names, q0))
    rows = np.empty((steps, len(names)))
    for c, name in enumerate(names):
        if name.endswith("gripper"):
            rows[:, c] = gripper
        else:
            rows[:, c] = by_joint[name] + changes.get(name, 0.0) * s
    return names, rows


@pytest.mark.parametrize("embodiment", ["fr3", "ur5", "ur5e", "aloha"])
def test_joint_chunk_moves_the_simulated_arm_to_the_commanded_joints(embodiment):
    graph = Graph(embodiment)
    try:
        graph.start_controller()
        spec = graph.spec
        q0 = graph.latest()
        changes, gripper = MOTIONS[embodiment]
        names, rows = _chunk_rows(spec, q0, changes, gripper)
        start_s = graph.now()
        chunk = graph.send(names, rows, stamp_s=start_s)
        graph.wait_decisions(1)
        core = graph.controller.core
        assert core.chunks_accepted == 1, core.last_refusal
        graph.wait_sim(chunk.num_steps * chunk.period_s + 1.0)

        target = np.array([dict(zip(names, rows[-1]))[j] for j in spec.joint_names])
        q_end = graph.latest()
        # Position-controlled sim joints settle on the target (the changed joints moved 0.15-0.4 rad).
        np.testing.assert_allclose(q_end, target, atol=5e-3)
        moved = np.array([j in changes for j in spec.joint_names])
        assert np.all(np.abs(q_end - q0)[moved] > 0.1)

        t, q = graph.measured_all(since_s=start_s)
        lower = np.concatenate([a.limits.lower_rad for a in spec.arms])
        upper = np.concatenate([a.limits.upper_rad for a in spec.arms])
        assert np.all(q >= lower) and np.all(q <= upper)
        # The measured joints stay between start and target up to the sim servo's overshoot
        # (ALOHA's light links overshoot ~5 mrad at the end of a 0.3 rad/s ramp).
        lo, hi = np.minimum(q0, target), np.maximum(q0, target)
        assert np.all((q >= lo - 0.01) & (q <= hi + 0.01)), (q.min(axis=0) - lo, q.max(axis=0) - hi)

        for arm in spec.arms:
            recs = graph.commands(arm.name, since_s=start_s)
            assert len(recs) >= 5, f"only {len(recs)} trajectories for '{arm.name}'"
            for r in recs:
                assert tuple(r.msg.joint_names) == arm.command.joint_names
                pts = np.array([p.positions for p in r.msg.points])
                assert np.all(pts >= arm.limits.lower_rad) and np.all(pts <= arm.limits.upper_rad)
                # The commanded path itself never overshoots the ramp (monotone interpolation).
                sl = [spec.joint_names.index(arm.qualified(j)) for j in arm.joint_names]
                assert np.all((pts >= lo[sl] - 1e-5) & (pts <= hi[sl] + 1e-5)), (pts, lo[sl], hi[sl])
            # The gripper was commanded closed on the topic, and the fingers closed (nothing to grasp).
            g = graph.probe.grippers[arm.name][-1].msg
            assert cv.float64_multi_array_values(g).tolist() == [arm.gripper.closed_position]
            assert graph.measured_gripper(arm.name) == pytest.approx(arm.gripper.closed_position, abs=0.02)
        assert graph.sim_trajectories_rejected() == 0, graph.sim.last_rejection
        assert graph.sim.last_rejection == ""
    finally:
        graph.close()
