"""`vla-ros bench controller`: how fast the controller turns chunks into commands, and how steadily
it streams.

Three measurements, all on the wall clock, in one process:
- core: ControllerCore.submit_chunk + tick without ROS (ms per chunk, p50/p99), for a joint-space
  chunk and an ee_delta chunk (whole-chunk IK), FR3, 10 steps at the config's policy period.
- latency: chunk-in to command-out through real ROS topics: a peer node publishes an action chunk,
  the controller node (JTC output, its own executor thread) answers with a JointTrajectory; the
  peer's receive time minus its publish time, p50/p99. Each chunk carries a distinct gripper value
  so the answer to chunk k is identified exactly (the gripper command goes out in the same
  callback, right after the arm's trajectory) and periodic replans are never mistaken for it.
- stream: a forward position controller at 100, 250 and 500 Hz while chunks arrive at the policy
  rate: achieved rate (messages / time at the subscriber) and jitter |interval - period| p50/p99.
The peer publishes joint_states at 100 Hz so the watchdog stays satisfied. Python executors share
the GIL, so the numbers include that contention -- as a deployment in one process would.
"""

from __future__ import annotations

import argparse
import os
import platform
import threading
import time

import numpy as np

FORWARD_TOPIC = "forward_position_controller/commands"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rates", default="100,250,500", help="forward streaming rates to measure (Hz, comma-separated)")
    parser.add_argument("--duration-s", type=float, default=3.0, help="seconds streamed per rate (default 3)")
    parser.add_argument("--chunks", type=int, default=200, help="chunks sent for the latency measurement (default 200)")
    parser.add_argument("--embodiment", default="fr3", help="single-arm embodiment to use (default fr3)")


def _pct_ms(samples_s) -> dict:
    arr = np.asarray(samples_s, dtype=np.float64) * 1e3
    if arr.size == 0:
        return {"p50": None, "p99": None, "n": 0}
    return {"p50": round(float(np.percentile(arr, 50)), 3), "p99": round(float(np.percentile(arr, 99)), 3),
            "n": int(arr.size)}


def _chunk_rows(home: np.ndarray, t0_s: float, steps: int, period_s: float) -> np.ndarray:
    """A slow sine on joints 1 and 7 around home (0.15 rad amplitude, 0.25 Hz), continuous in time."""
    t = t0_s + period_s * np.arange(steps)
    rows = np.tile(home, (steps, 1))
    rows[:, 0] += 0.15 * np.sin(2 * np.pi * 0.25 * t)
    rows[:, -1] += 0.15 * np.sin(2 * np.pi * 0.25 * t)
    return rows


def _bench_core(spec, kin, repeats: int = 200) -> dict:
    from vla_ros.core.action_spaces import action_names
    from vla_ros.core.controller import ControllerCore
    from vla_ros.core.types import ActionChunk

    arm = spec.arms[0]
    home = np.asarray(arm.home_rad, dtype=np.float64)
    period = spec.policy_period_s
    result = {}
    for space in ("joint_position", "ee_delta"):
        core = ControllerCore(spec, kin)
        names = action_names(spec, space)
        samples = []
        now = 1000.0
        core.update_joint_state(arm.name, arm.joint_names, home, now)
        core.activate(now)
        for k in range(repeats):
            now += period
            core.update_joint_state(arm.name, arm.joint_names, home, now)
            if space == "joint_position":
                values = np.hstack([_chunk_rows(home, k * period, 10, period), np.ones((10, 1))])
            else:
                # 2 mm steps along y, turning back every chunk: stays in the workspace.
                step = 0.002 * (1 if k % 2 == 0 else -1)
                values = np.tile([0.0, step, 0.0, 0.0, 0.0, 0.0, 1.0], (10, 1))
            chunk = ActionChunk(names, values, period, now)
            start = time.perf_counter()
            decision = core.submit_chunk(chunk, now)
            core.tick(now)
            samples.append(time.perf_counter() - start)
            if not decision.accepted:
                raise RuntimeError(f"bench chunk refused ({space}): {decision.reason}")
        result[space] = _pct_ms(samples)
    return result


class _Spinner:
    """Spin one node's executor in a background thread."""

    def __init__(self, node) -> None:
        from rclpy.executors import SingleThreadedExecutor

        self.executor = SingleThreadedExecutor()
        self.executor.add_node(node)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self._stop = threading.Event()
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.executor.spin_once(timeout_sec=0.01)

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(timeout=2.0)
        self.executor.shutdown()


def _peer(spec, name: str):
    """A node that plays driver (joint_states at 100 Hz) and policy (publishes chunks)."""
    from rclpy.node import Node
    from sensor_msgs.msg import JointState
    from trajectory_msgs.msg import JointTrajectory

    from vla_ros.nodes import conversions as cv

    arm = spec.arms[0]
    home = np.asarray(arm.home_rad, dtype=np.float64)
    node = Node(name)
    state_pub = node.create_publisher(JointState, arm.joint_states_topic, 10)
    names = arm.joint_names + ((arm.gripper.joint_name,) if arm.gripper is not None else ())
    positions = list(home) + ([arm.gripper.open_position] if arm.gripper is not None else [])
    node.create_timer(0.01, lambda: state_pub.publish(cv.make_joint_state(names, positions)))
    chunk_pub = node.create_publisher(JointTrajectory, "action_chunk", 10)
    return node, chunk_pub, home


def _wait(predicate, timeout_s: float) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


def _start_controller(spec, kin, params: dict, name: str = "bench_controller"):
    import rclpy
    from rclpy.lifecycle import TransitionCallbackReturn

    from vla_ros.nodes.controller_node import ControllerNode

    overrides = [rclpy.parameter.Parameter(k, value=v) for k, v in params.items()]
    node = ControllerNode(name, spec=spec, kinematics=kin, parameter_overrides=overrides)
    if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
        raise RuntimeError("controller failed to configure")
    return node


def _activate(node) -> None:
    from rclpy.lifecycle import TransitionCallbackReturn

    if not _wait(lambda: node.core.measured_positions() is not None, 5.0):
        raise RuntimeError("controller never received joint_states")
    if node.trigger_activate() != TransitionCallbackReturn.SUCCESS:
        raise RuntimeError("controller failed to activate")


def _bench_latency(spec, kin, chunks: int) -> dict:
    from std_msgs.msg import Float64MultiArray
    from trajectory_msgs.msg import JointTrajectory

    from vla_ros.core.action_spaces import action_names
    from vla_ros.core.types import ActionChunk
    from vla_ros.nodes import conversions as cv

    arm = spec.arms[0]
    gripper = arm.gripper
    if arm.command.kind != "joint_trajectory" or gripper is None or gripper.command is None:
        raise RuntimeError(f"latency bench needs a JTC arm with a gripper topic; '{spec.name}' has neither")
    controller = _start_controller(spec, kin, {"replan_rate_hz": 20.0})
    peer, chunk_pub, home = _peer(spec, "bench_controller_peer")
    last_traj = {"t": None}
    sent: dict[int, float] = {}
    latencies: list[float] = []
    values = np.linspace(0.05, 0.95, 19)
    joint_values = np.array([gripper.to_joint(v) for v in values])

    def on_traj(msg) -> None:
        last_traj["t"] = time.perf_counter()

    def on_gripper(msg) -> None:
        k = int(np.argmin(np.abs(joint_values - msg.data[0])))
        if k in sent and last_traj["t"] is not None:
            latencies.append(last_traj["t"] - sent.pop(k))

    peer.create_subscription(JointTrajectory, arm.command.topic, on_traj, 100)
    peer.create_subscription(Float64MultiArray, gripper.command.topic, on_gripper, 100)
    spin_c, spin_p = _Spinner(controller), _Spinner(peer)
    try:
        _activate(controller)
        time.sleep(0.3)
        names = action_names(spec, "joint_position")
        period = spec.policy_period_s
        for k in range(chunks):
            idx = k % len(values)
            rows = _chunk_rows(home, k * 0.05, 10, period)
            stamp = controller.now_s()
            chunk = ActionChunk(names, np.hstack([rows, np.full((10, 1), values[idx])]), period, stamp)
            msg = cv.chunk_to_msg(chunk)
            sent[idx] = time.perf_counter()
            chunk_pub.publish(msg)
            time.sleep(0.05)
        time.sleep(0.2)
        refused = controller.core.chunks_refused
    finally:
        spin_c.stop()
        spin_p.stop()
        controller.destroy_node()
        peer.destroy_node()
    out = _pct_ms(latencies)
    out["chunks_sent"] = chunks
    out["chunks_refused"] = refused
    return out


def _bench_stream(spec, kin, rate_hz: float, duration_s: float) -> dict:
    from std_msgs.msg import Float64MultiArray

    from vla_ros.core.action_spaces import action_names
    from vla_ros.core.embodiment import load_embodiment
    from vla_ros.core.types import ActionChunk
    from vla_ros.nodes import conversions as cv

    fwd = load_embodiment(spec.config_path, {"arms.arm.command.kind": "forward_position",
                                             "arms.arm.command.topic": FORWARD_TOPIC})
    controller = _start_controller(fwd, kin, {"command_rate_hz": float(rate_hz)}, f"bench_controller_{rate_hz:g}hz")
    peer, chunk_pub, home = _peer(fwd, f"bench_stream_peer_{rate_hz:g}hz")
    arrivals: list[float] = []
    peer.create_subscription(Float64MultiArray, FORWARD_TOPIC, lambda m: arrivals.append(time.perf_counter()), 1000)
    spin_c, spin_p = _Spinner(controller), _Spinner(peer)
    try:
        _activate(controller)
        names = action_names(fwd, "joint_position")
        period = fwd.policy_period_s
        time.sleep(0.3)
        arrivals.clear()
        start = time.perf_counter()
        k = 0
        while time.perf_counter() - start < duration_s:
            t = time.perf_counter() - start
            rows = _chunk_rows(home, t, 10, period)
            chunk = ActionChunk(names, np.hstack([rows, np.ones((10, 1))]), period, controller.now_s())
            chunk_pub.publish(cv.chunk_to_msg(chunk))
            k += 1
            time.sleep(period)
        window = list(arrivals)
        refused = controller.core.chunks_refused
        interventions = controller.core.limiter_interventions
    finally:
        spin_c.stop()
        spin_p.stop()
        controller.destroy_node()
        peer.destroy_node()
    t = np.asarray(window)
    intervals = np.diff(t)
    target = 1.0 / rate_hz
    jitter = np.abs(intervals - target)
    return {
        "target_hz": rate_hz,
        "achieved_hz": round(float((len(t) - 1) / (t[-1] - t[0])), 2) if len(t) > 1 else 0.0,
        "jitter_ms": _pct_ms(jitter),
        "max_interval_ms": round(float(intervals.max() * 1e3), 3) if intervals.size else None,
        "chunks_sent": k,
        "chunks_refused": refused,
        "limiter_interventions": interventions,
    }


def run(args: argparse.Namespace) -> dict:
    import rclpy

    from vla_ros.core.embodiment import load_embodiment
    from vla_ros.core.kinematics import RobotKinematics

    spec = load_embodiment(args.embodiment)
    if len(spec.arms) != 1:
        raise SystemExit(f"bench controller: --embodiment must be single-arm, '{args.embodiment}' has {len(spec.arms)}")
    kin = RobotKinematics.from_embodiment(spec)
    rates = [float(r) for r in str(args.rates).split(",") if r.strip()]
    result = {
        "embodiment": spec.name,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "core_submit_and_tick_ms": _bench_core(spec, kin),
    }
    rclpy.init()
    try:
        result["chunk_to_command_latency_ms"] = _bench_latency(spec, kin, args.chunks)
        result["forward_stream"] = {f"{r:g}hz": _bench_stream(spec, kin, r, args.duration_s) for r in rates}
    finally:
        rclpy.shutdown()
    return result
