"""`vla-ros demo`: the whole graph against the MuJoCo simulation, in one process, headless.

sim_node -> (joint_states, cameras, instruction, sim/objects) -> policy_node -> action_chunk ->
controller_node -> JTC / gripper topics -> sim_node, all on one rclpy MultiThreadedExecutor with
simulated time (/clock from the sim; the other nodes use_sim_time). No ROS install needed.

Per episode: the controller and the policy are deactivated (the arm holds), the sim is reset
through `sim/reset` (seeded: --seed + episode index), both are activated again (the policy is
reset on activation), and the demo waits -- in simulated time -- until `sim/success` has been
true for `--hold-s` or `--timeout-s` passed. One line per episode; with --json a last line
{"episodes", "successes", "success_rate", "embodiment", "policy", "mean_episode_time_s",
"real_time_factor", ...}.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field

DEFAULT_TIMEOUT_S = 25.0


@dataclass(frozen=True)
class EpisodeReport:
    index: int
    seed: int
    instruction: str
    success: bool
    episode_time_s: float  # simulated time from the episode's start to success (or to the timeout)
    wall_time_s: float
    start_sim_s: float | None = None  # simulated time of the start (the sim's clock, as its stamps)


@dataclass(frozen=True)
class DemoReport:
    embodiment: str
    policy: str
    episodes: tuple[EpisodeReport, ...]
    real_time_factor: float
    render_ms: dict[str, float] = field(default_factory=dict)

    @property
    def successes(self) -> int:
        return sum(e.success for e in self.episodes)

    def summary(self) -> dict:
        n = len(self.episodes)
        ok = [e.episode_time_s for e in self.episodes if e.success]
        return {
            "episodes": n,
            "successes": self.successes,
            "success_rate": self.successes / n if n else float("nan"),
            "embodiment": self.embodiment,
            "policy": self.policy,
            "mean_episode_time_s": round(sum(ok) / len(ok), 3) if ok else None,
            "real_time_factor": round(self.real_time_factor, 3),
            "render_ms": {k: round(v, 2) for k, v in self.render_ms.items()},
            "seeds": [e.seed for e in self.episodes],
        }


def demo_add_arguments(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    parser.add_argument("--embodiment", default="fr3", help="embodiment config (fr3, panda, ur5, ur5e, aloha)")
    parser.add_argument("--policy", default=None,
                        help="registered policy name (default: the built-in VLA where one passed its evaluation "
                             "(vla_ros/policies/builtin/), else the scripted expert; 'vla' with --checkpoint)")
    parser.add_argument("--checkpoint", default="", help="checkpoint for the policy factory (e.g. --policy vla)")
    parser.add_argument("--policy-kwargs", default="{}", help="YAML/JSON mapping of policy factory arguments")
    parser.add_argument("--episodes", type=int, default=3, help="number of episodes (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="episode k uses seed + k (default 0)")
    parser.add_argument("--timeout-s", type=float, default=DEFAULT_TIMEOUT_S, help="episode timeout in simulated s")
    parser.add_argument("--hold-s", type=float, default=0.3, help="success must hold this long (simulated s)")
    parser.add_argument(
        "--real-time-factor", type=float, default=1.0, help="cap on simulated/wall speed (0 = uncapped)"
    )
    add_min_success_rate(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON summary as the last line")


def add_min_success_rate(parser: argparse.ArgumentParser) -> None:
    """`demo` and `eval` exit 0 when the episodes ran: a failed episode is a result, not an error."""
    parser.add_argument("--min-success-rate", type=float, default=0.0,
                        help="exit 1 when the success rate is below this (default 0: never)")


def check_episode_args(args: argparse.Namespace) -> None:
    """The episode options `demo` and `eval` share: a clear exit for each bad value."""
    if args.episodes < 1:
        raise SystemExit(f"--episodes must be >= 1, got {args.episodes}")
    if not (args.timeout_s > 0 and math.isfinite(args.timeout_s)):
        raise SystemExit(f"--timeout-s must be a positive number of seconds, got {args.timeout_s}")
    if not args.hold_s >= 0:
        raise SystemExit(f"--hold-s must be >= 0, got {args.hold_s}")
    if not args.real_time_factor >= 0:
        raise SystemExit(f"--real-time-factor must be >= 0 (0 = uncapped), got {args.real_time_factor}")
    if not 0.0 <= args.min_success_rate <= 1.0:
        raise SystemExit(f"--min-success-rate must be in [0, 1], got {args.min_success_rate}")


def demo_run(args: argparse.Namespace) -> int:
    from vla_ros.cli.eval_cmd import resolve_policy

    check_episode_args(args)
    report = run_demo(
        embodiment=args.embodiment,
        policy=resolve_policy(args.policy, args.checkpoint, args.embodiment),
        episodes=args.episodes,
        seed=args.seed,
        timeout_s=args.timeout_s,
        hold_s=args.hold_s,
        real_time_factor=args.real_time_factor,
        checkpoint=args.checkpoint,
        policy_kwargs=args.policy_kwargs,
        on_episode=lambda e, n: print(_episode_line(e, n), flush=True),
    )
    summary = report.summary()
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            f"{summary['successes']}/{summary['episodes']} succeeded on {summary['embodiment']} with "
            f"'{summary['policy']}', mean episode {summary['mean_episode_time_s']} s (sim), "
            f"real-time factor {summary['real_time_factor']}"
        )
    return 0 if summary["success_rate"] >= args.min_success_rate else 1


def _episode_line(e: EpisodeReport, n: int) -> str:
    status = "success" if e.success else "FAILED "
    return (
        f"episode {e.index + 1}/{n}  seed {e.seed}  {status}  {e.episode_time_s:6.2f} s sim  "
        f"{e.wall_time_s:6.2f} s wall  \"{e.instruction}\""
    )


class _Supervisor:
    """Judges success in simulated time; owns the sim/reset client.

    Success comes from the in-process sim node (`SimNode.success_since_s`, hardware time), not from
    `sim/success` as this node hears it: on a loaded machine its executor and its /clock lag the
    physics by seconds, and a success timed by that lagging clock was earlier than the episode's
    start (read from the hardware): the episode then ran to its timeout, or its measured time was
    too short for the eval's window to contain the lift.
    """

    def __init__(self, node, hold_s: float, sim) -> None:
        from std_srvs.srv import Trigger

        self.node = node
        self.hold_s = hold_s
        self.sim = sim
        self._trigger = Trigger
        self.reset_client = node.create_client(Trigger, "sim/reset")

    @property
    def success_at_s(self) -> float | None:
        """Simulated time at which a success that has held for hold_s began (None: none yet)."""
        since = self.sim.success_since_s
        if since is None or self.sim.hw.time_s - since < self.hold_s - 1e-6:
            return None
        return since

    def reset(self, timeout_wall_s: float = 30.0) -> str:
        if not self.reset_client.wait_for_service(timeout_sec=timeout_wall_s):
            raise RuntimeError("sim/reset service did not appear")
        future = self.reset_client.call_async(self._trigger.Request())
        deadline = time.monotonic() + timeout_wall_s
        while not future.done():
            if self.sim.fault:  # the sim stopped: nobody will answer
                raise RuntimeError(self.sim.fault)
            if time.monotonic() > deadline:
                raise RuntimeError("sim/reset did not answer")
            time.sleep(0.005)
        result = future.result()
        if not result.success:
            raise RuntimeError(f"sim/reset failed: {result.message}")
        return result.message


def _wait_sim_time(sim, duration_s: float, stop: threading.Event | None = None) -> None:
    end = sim.hw.time_s + duration_s
    while sim.hw.time_s < end and (stop is None or not stop.is_set()):
        if sim.fault:  # its physics stopped: simulated time will not advance
            raise RuntimeError(sim.fault)
        time.sleep(0.002)


def executor_stopped(spinner) -> RuntimeError:
    """The error an in-process graph raises when its executor ended: the callback's own reason."""
    from vla_ros.nodes.runtime import NodeRefusal

    if isinstance(spinner.error, NodeRefusal):  # a node stopped on purpose: its reason says it all
        return RuntimeError(str(spinner.error))
    return RuntimeError(f"the executor stopped: {spinner.error!r}" if spinner.error is not None
                        else "the executor stopped; see the node logs above")


def _transition(node, name: str, verb: str) -> None:
    from rclpy.lifecycle import TransitionCallbackReturn

    result = getattr(node, f"trigger_{verb}")()
    if result != TransitionCallbackReturn.SUCCESS:
        raise RuntimeError(f"{name}: lifecycle transition '{verb}' failed ({result}); see its log above")


def run_demo(
    embodiment: str = "fr3",
    policy: str = "scripted",
    episodes: int = 3,
    seed: int = 0,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    hold_s: float = 0.3,
    real_time_factor: float = 1.0,
    checkpoint: str = "",
    policy_kwargs: str = "{}",
    on_episode=None,
) -> DemoReport:
    """Run the graph for `episodes` episodes and report; see the module docstring."""
    os.environ.setdefault("ROS_LOG_DIR", tempfile.mkdtemp(prefix="vla_ros_demo_log_"))
    import rclpy
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.parameter import Parameter

    from vla_ros.nodes.controller_node import ControllerNode
    from vla_ros.nodes.policy_node import PolicyNode
    from vla_ros.nodes.runtime import BackgroundSpinner
    from vla_ros.nodes.sim_node import SimNode

    context = rclpy.Context()
    rclpy.init(context=context, args=[])
    sim_time = Parameter("use_sim_time", value=True)
    nodes = []
    lifecycle_configured: list = []  # what the teardown must undo, in order
    lifecycle_active: list = []
    spinner = None
    try:
        sim = SimNode(
            context=context,
            parameter_overrides=[
                Parameter("embodiment", value=embodiment),
                Parameter("seed", value=int(seed)),
                Parameter("real_time_factor", value=float(real_time_factor)),
            ],
        )
        nodes.append(sim)
        controller = ControllerNode(context=context, parameter_overrides=[Parameter("embodiment", value=embodiment)])
        nodes.append(controller)
        policy_node = PolicyNode(
            context=context,
            parameter_overrides=[
                Parameter("embodiment", value=embodiment),
                Parameter("policy", value=policy),
                Parameter("checkpoint", value=checkpoint),
                Parameter("policy_kwargs", value=policy_kwargs),
            ],
        )
        nodes.append(policy_node)
        # use_sim_time is switched on after construction: rclpy then creates the /clock
        # subscription at this point, after the node's own set-up (policy_node re-initialises
        # the node's subscription list in its constructor, which drops a /clock subscription
        # made earlier and leaves its clock at 0).
        for n in (controller, policy_node):
            n.set_parameters([sim_time])
        from rclpy.node import Node

        supervisor_node = Node("demo_supervisor", context=context, parameter_overrides=[sim_time])
        nodes.append(supervisor_node)
        supervisor = _Supervisor(supervisor_node, hold_s, sim)
        executor = MultiThreadedExecutor(num_threads=4, context=context)
        for n in nodes:
            executor.add_node(n)
        spinner = BackgroundSpinner(executor, "demo_executor").start()

        _transition(controller, "controller_node", "configure")
        lifecycle_configured.append(controller)
        _transition(policy_node, "policy_node", "configure")
        lifecycle_configured.insert(0, policy_node)
        reports: list[EpisodeReport] = []
        active = False
        for k in range(episodes):
            if active:
                # Hold first, let the hold reach the sim, then reset: the controller must not
                # carry a plan from the old episode into the new one.
                lifecycle_active.clear()
                _transition(policy_node, "policy_node", "deactivate")
                _transition(controller, "controller_node", "deactivate")
                _wait_sim_time(sim, 0.2)
            message = supervisor.reset()
            instruction = message.split(": ", 1)[-1]
            # Let the reset state reach the controller before it takes its reference from it.
            _wait_sim_time(sim, 0.1)
            start_s = sim.hw.time_s
            wall0 = time.monotonic()
            _transition(controller, "controller_node", "activate")
            lifecycle_active.append(controller)
            _transition(policy_node, "policy_node", "activate")
            lifecycle_active.insert(0, policy_node)
            active = True
            while True:
                done_at = supervisor.success_at_s
                if done_at is not None and done_at >= start_s:
                    report = EpisodeReport(k, seed + k, instruction, True, done_at - start_s, time.monotonic() - wall0,
                                           start_s)
                    break
                if sim.hw.time_s - start_s > timeout_s:
                    report = EpisodeReport(k, seed + k, instruction, False, timeout_s, time.monotonic() - wall0, start_s)
                    break
                if not spinner.is_alive():
                    raise executor_stopped(spinner)
                time.sleep(0.01)
            reports.append(report)
            if on_episode is not None:
                on_episode(report, episodes)
        rtf = sim.overall_real_time_factor()
        sim.stop()  # the render statistics are written by the physics thread
        render_ms = {k: v * 1e3 for k, v in sim.hw.render_time_s().items()}
        return DemoReport(embodiment, policy, tuple(reports), rtf, render_ms)
    finally:
        # Quiet the graph before tearing it down: no physics, no timers, then the executor.
        for n in nodes:
            if isinstance(n, SimNode):
                n.stop()
        for n in lifecycle_active:
            n.trigger_deactivate()
        # Stop spinning before cleanup destroys the nodes' publishers and subscriptions: the
        # executor must not be waiting on entities that are being destroyed.
        idle = spinner is None or spinner.stop()
        if idle:
            for n in lifecycle_configured:
                n.trigger_cleanup()
            for n in reversed(nodes):
                n.destroy_node()
        # (not idle: a callback still runs after 30 s; the nodes go with the process)
        rclpy.try_shutdown(context=context)
