"""The VLA policy in the real graph on fr3: sim_node -> (cameras, joint_states, instruction) ->
policy_node (policy=vla, checkpoint=<folder written by VLAModel.save_pretrained>) -> action_chunk
-> controller_node -> JTC -> sim, all on simulated time; and the same through `vla-ros demo`.

The model is untrained (random weights), so what it asks for is arbitrary: the test judges the
plumbing (chunk names, stamps, rows, every chunk decided by the controller with a reason) and the
safety envelope (whatever the model says, the arm stays within its joint limits and its tool
within the workspace box). The checkpoint's action statistics are those of a small-motion
dataset (a few mm / hundredths of a rad per 0.1 s step), so that some chunks are acceptable
and the arm really moves under the model's control.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402

from vla_ros.core.action_spaces import action_names  # noqa: E402
from vla_ros.core.embodiment import load_embodiment  # noqa: E402
from vla_ros.core.kinematics import RobotKinematics  # noqa: E402
from vla_ros.core.normalization import FeatureStats, NormStats  # noqa: E402
from vla_ros.nodes import conversions as cv  # noqa: E402
from vla_ros.nodes.policy_node import PolicyNode  # noqa: E402
from vla_ros.policies.vla.model import VLAModel  # noqa: E402
from vla_ros.policies.vla.policy import state_names  # noqa: E402
from vla_ros.policies.vla.presets import make_config  # noqa: E402

from .helpers import Graph  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.ros]

RUN_SIM_S = 4.0
TOOL_FRAME, BASE_FRAME = "fr3_hand_tcp", "fr3_link0"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """An untrained "default"-preset VLA for fr3 (ee_delta + gripper, front + wrist cameras, state)
    saved with save_pretrained, with small-motion action statistics."""
    spec = load_embodiment("fr3")
    names = action_names(spec, "ee_delta")
    cfg = make_config("default", action_dim=len(names), camera_slots=tuple(c.slot for c in spec.cameras),
                      state_dim=len(state_names(spec)))
    # Quantile rule (the default preset's): raw = q01 + (x + 1) / 2 * (q99 - q01).
    step = np.array([0.003, 0.003, 0.003, 0.02, 0.02, 0.02])
    action = FeatureStats(mean=np.r_[np.zeros(6), 0.5], std=np.r_[step / 2, 0.5],
                          q01=np.r_[-step, 0.0], q99=np.r_[step, 1.0], min=np.r_[-2 * step, 0.0], max=np.r_[2 * step, 1.0])
    arm = spec.arms[0]
    lo = np.r_[arm.limits.lower_rad, arm.gripper.closed_position]
    hi = np.r_[arm.limits.upper_rad, arm.gripper.open_position]
    state = FeatureStats(mean=(lo + hi) / 2, std=(hi - lo) / 4, q01=lo, q99=hi, min=lo, max=hi)
    stats = NormStats({"action": action, "state": state}, source="e2e_small_motion")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        model = VLAModel(cfg, norm_stats=stats)
    folder = model.save_pretrained(tmp_path_factory.mktemp("vla_fr3"))
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors", "norm_stats.json",
                                                         "tokenizer.json"]
    return folder


@pytest.fixture
def few_threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # the machine is shared; the sim and the executor need the rest
    yield
    torch.set_num_threads(previous)


def test_vla_policy_drives_the_simulated_fr3_within_limits(checkpoint, few_threads, capfd):
    graph = Graph("fr3", camera_rate_hz=15.0)
    try:
        policy = PolicyNode(context=graph.context, parameter_overrides=[
            Parameter("embodiment", value="fr3"), Parameter("policy", value="vla"),
            Parameter("checkpoint", value=str(checkpoint)), Parameter("use_sim_time", value=True)])
        graph.add_node(policy)
        graph.start_controller()
        assert policy.trigger_configure() == TransitionCallbackReturn.SUCCESS
        t_start = graph.now()
        assert policy.trigger_activate() == TransitionCallbackReturn.SUCCESS
        assert graph.wait(lambda: len(graph.probe.chunks) >= 1, 120.0), policy.stats
        graph.wait_sim(RUN_SIM_S, timeout_wall_s=240.0)
        assert policy.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
        graph.wait_sim(0.5)

        spec = graph.spec
        chunks = list(graph.probe.chunks)
        assert len(chunks) >= 3, policy.stats
        expected_names = list(action_names(spec, "ee_delta"))
        stamps = []
        for rec in chunks:
            chunk = cv.msg_to_chunk(rec.msg)
            assert list(chunk.names) == expected_names
            assert chunk.num_steps == 16 and chunk.period_s == pytest.approx(spec.policy_period_s, abs=1e-9)
            assert np.all(np.isfinite(chunk.values))
            # Stamped with the observation's capture time: simulated, after start, before arrival.
            assert t_start - 0.6 <= chunk.stamp_s <= rec.received_s
            assert rec.received_s - chunk.stamp_s < 3.0
            stamps.append(chunk.stamp_s)
        assert np.all(np.diff(stamps) > 0)

        # Every chunk was decided by the controller; every refusal has its reason in the log.
        core = graph.controller.core
        assert core.chunks_accepted + core.chunks_refused == len(chunks)
        log = capfd.readouterr().err
        refusals = re.findall(r"action chunk refused: (.*)", log)
        assert len(refusals) == core.chunks_refused
        assert all(len(r) > 10 for r in refusals)
        assert core.chunks_accepted >= 1, refusals[:3]

        # The arm: within its joint limits, the tool within the workspace box (5 mm servo slack).
        arm = spec.arms[0]
        t, q = graph.measured_all(since_s=t_start)
        assert np.all(q >= arm.limits.lower_rad) and np.all(q <= arm.limits.upper_rad)
        kin = RobotKinematics.from_embodiment(spec)
        tool = np.array([kin.frame_pose(qi, TOOL_FRAME, base=BASE_FRAME)[:3, 3] for qi in q[::5]])
        assert np.all(tool >= arm.workspace_min_m - 0.005) and np.all(tool <= arm.workspace_max_m + 0.005)
        moved = np.linalg.norm(tool - tool[0], axis=1).max()
        assert moved > 1e-3  # the model's accepted chunks did move the tool
        for rec in graph.commands(arm.name, since_s=t_start):
            pts = np.array([p.positions for p in rec.msg.points])
            assert np.all(pts >= arm.limits.lower_rad) and np.all(pts <= arm.limits.upper_rad)
        assert graph.sim_trajectories_rejected() == 0, graph.sim.last_rejection
    finally:
        graph.close()


# The `vla-ros` console script's entry point, run as the script runs it.
CLI = "import sys; from vla_ros.cli.main import main; sys.exit(main())"


def test_vla_policy_through_the_demo_cli(checkpoint):
    env = dict(os.environ)
    out = subprocess.run(
        [sys.executable, "-c", CLI, "demo", "--policy", "vla", "--embodiment", "fr3",
         "--episodes", "1", "--timeout-s", "2", "--checkpoint", str(checkpoint), "--min-success-rate", "1", "--json"],
        capture_output=True, text=True, timeout=300, env=env)
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    assert lines, out.stderr[-3000:]
    summary = json.loads(lines[-1])
    # An untrained model does not pick up the cube: exit 1 (below --min-success-rate), a summary.
    assert out.returncode == 1, out.stdout[-2000:] + out.stderr[-2000:]
    assert summary["episodes"] == 1 and summary["successes"] == 0 and summary["success_rate"] == 0.0
    assert summary["policy"] == "vla" and summary["embodiment"] == "fr3"
    assert summary["mean_episode_time_s"] is None and summary["real_time_factor"] > 0
    assert set(summary["render_ms"]) == {"front", "wrist"}
    assert lines[-2].startswith("episode 1/1  seed 0  FAILED")
    assert "Traceback" not in out.stderr
