"""`vla-ros demo`: argument checks and the summary (fast), the full graph end to end (slow)."""

import argparse
import json
import os
import subprocess
import sys

import pytest

from vla_ros.cli.demo import DemoReport, EpisodeReport, check_episode_args, demo_add_arguments, run_demo


def _args(*argv):
    parser = argparse.ArgumentParser()
    demo_add_arguments(parser, list(argv))
    return parser.parse_args(list(argv))


def test_defaults_match_make_demo():
    from vla_ros.cli.eval_cmd import resolve_policy
    from vla_ros.policies.builtin import builtin_is_default

    args = _args()
    assert (args.embodiment, args.policy, args.episodes, args.seed) == ("fr3", None, 3, 0)
    # no --policy: the built-in VLA once one passed its evaluation, until then the scripted expert
    expected = "builtin" if builtin_is_default("fr3") else "scripted"
    assert resolve_policy(args.policy, args.checkpoint, args.embodiment) == expected


@pytest.mark.parametrize(
    "argv, fragment",
    [(["--episodes", "0"], "--episodes"), (["--timeout-s", "-1"], "--timeout-s"), (["--real-time-factor", "-2"], "--real-time-factor"),
     (["--min-success-rate", "1.5"], "--min-success-rate")],
)
def test_bad_arguments_name_the_option(argv, fragment):
    with pytest.raises(SystemExit, match=fragment):
        check_episode_args(_args(*argv))


def test_summary_counts_and_means_only_successes():
    episodes = (
        EpisodeReport(0, 4, "pick up the red cube", True, 4.0, 5.0),
        EpisodeReport(1, 5, "pick up the blue cube", False, 25.0, 26.0),
        EpisodeReport(2, 6, "pick up the red cube", True, 6.0, 7.0),
    )
    s = DemoReport("fr3", "scripted", episodes, 0.9, {"front": 5.0}).summary()
    assert s["episodes"] == 3 and s["successes"] == 2
    assert s["success_rate"] == pytest.approx(2 / 3)
    assert s["mean_episode_time_s"] == pytest.approx(5.0)
    assert s["real_time_factor"] == 0.9 and s["seeds"] == [4, 5, 6]


@pytest.mark.slow
def test_demo_through_the_real_graph():
    lines = []
    report = run_demo(embodiment="fr3", episodes=2, seed=3, on_episode=lambda e, n: lines.append(e))
    assert [e.seed for e in report.episodes] == [3, 4]
    assert report.successes == 2, report.summary()
    for e in report.episodes:
        assert e.instruction.startswith("pick up the ") and 0.5 < e.episode_time_s < 15.0
    assert 0.05 < report.real_time_factor <= 1.1  # capped at 1.0 by default
    assert set(report.render_ms) == {"front", "wrist"}
    assert len(lines) == 2


def _demo_cli(*argv: str, rc: int = 0) -> tuple[list[str], dict]:
    out = subprocess.run([sys.executable, "-m", "vla_ros.cli.main", "demo", *argv, "--json"],
                         capture_output=True, text=True, timeout=300, env=dict(os.environ))
    assert out.returncode == rc, out.stdout[-2000:] + out.stderr[-2000:]
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    return lines, json.loads(lines[-1])


@pytest.mark.slow
def test_cli_prints_one_line_per_episode_and_json_last():
    lines, summary = _demo_cli("--policy", "scripted", "--episodes", "1", "--seed", "7", "--min-success-rate", "1")
    assert lines[-2].startswith("episode 1/1  seed 7  success")
    assert summary["episodes"] == 1 and summary["successes"] == 1 and summary["success_rate"] == 1.0
    assert summary["embodiment"] == "fr3" and summary["policy"] == "scripted"
    assert summary["mean_episode_time_s"] > 0 and summary["real_time_factor"] > 0


@pytest.mark.slow
def test_a_failed_episode_is_a_result_unless_a_minimum_rate_is_asked_for():
    # A 0.5 s timeout fails every episode: exit 0 by default (make demo must not break on a miss of a
    # policy that succeeds 60 % of the time), exit 1 with --min-success-rate.
    args = ("--policy", "scripted", "--episodes", "1", "--seed", "7", "--timeout-s", "0.5")
    lines, summary = _demo_cli(*args)
    assert summary["successes"] == 0 and "FAILED" in lines[-2]
    _, strict = _demo_cli(*args, "--min-success-rate", "0.5", rc=1)
    assert strict["success_rate"] == 0.0


@pytest.mark.slow
def test_make_demo_runs_the_default_policy_through_the_graph():
    # `make demo` names no policy: the shipped built-in VLA once it passed its evaluation (it looks at
    # the cameras: no ground truth), else the scripted expert. One episode, its line and summary.
    from vla_ros.policies.builtin import builtin_is_default

    expected = "builtin" if builtin_is_default("fr3") else "scripted"
    lines, summary = _demo_cli("--episodes", "1", "--seed", "2")
    assert summary["policy"] == expected and summary["episodes"] == 1 and summary["embodiment"] == "fr3"
    assert lines[-2].startswith("episode 1/1  seed 2  ") and ("success" in lines[-2] or "FAILED" in lines[-2])
    assert summary["real_time_factor"] > 0


def _other_shipped_builtins() -> list[str]:
    from vla_ros.policies.builtin import shipped_embodiments

    return [e for e in shipped_embodiments() if e != "fr3"]


@pytest.mark.slow
@pytest.mark.parametrize("embodiment", _other_shipped_builtins())
def test_demo_runs_each_other_shipped_builtin_policy_through_the_graph(embodiment):
    # Another arm's shipped built-in VLA (the FR3's runs in the make-demo test above): the default with no
    # policy named once it passed its evaluation, its chunks through that arm's controller and sim.
    from vla_ros.policies.builtin import builtin_is_default

    lines, summary = _demo_cli("--embodiment", embodiment, "--episodes", "1", "--seed", "3",
                               *(() if builtin_is_default(embodiment) else ("--policy", "builtin")))
    assert summary["policy"] == "builtin" and summary["embodiment"] == embodiment and summary["episodes"] == 1
    assert lines[-2].startswith("episode 1/1  seed 3  ") and ("success" in lines[-2] or "FAILED" in lines[-2])
    assert summary["real_time_factor"] > 0


@pytest.mark.slow
def test_demo_aloha_hand_over_through_the_real_graph():
    report = run_demo(embodiment="aloha", episodes=1, seed=2)
    assert report.successes == 1, report.summary()
    assert report.episodes[0].instruction == "transfer the cube from the left arm to the right arm"
    assert set(report.render_ms) == {"cam_high", "cam_low", "cam_left_wrist", "cam_right_wrist"}


@pytest.mark.slow
def test_demo_refuses_to_run_on_a_domain_whose_clock_another_simulation_publishes():
    # A second `vla-ros demo` (or record/eval) started next to a running one on the same
    # ROS_DOMAIN_ID: its sim finds the other /clock publisher, stops, and the command exits 1 with
    # the reason and the way out, instead of running two interleaved clocks.
    import rclpy
    from rclpy.node import Node
    from rosgraph_msgs.msg import Clock

    context = rclpy.Context()
    rclpy.init(context=context)
    node = Node("running_sim", context=context)
    node.create_publisher(Clock, "/clock", 10)
    try:
        out = subprocess.run([sys.executable, "-m", "vla_ros.cli.main", "demo", "--policy", "scripted", "--episodes", "1"],
                             capture_output=True, text=True, timeout=300, env=dict(os.environ))
    finally:
        node.destroy_node()
        rclpy.shutdown(context=context)
    assert out.returncode == 1, out.stdout[-2000:] + out.stderr[-2000:]
    # (rclpy may add "The following exception was never retrieved: <the same reason>" at exit)
    said = [l for l in out.stderr.splitlines() if l.startswith("vla-ros demo: another node already publishes /clock")]
    assert said and "on ROS_DOMAIN_ID" in said[0], out.stderr[-2000:]
    assert "/running_sim" in said[0] and "ROS_DOMAIN_ID=N" in said[0]
    assert "Traceback" not in out.stderr
