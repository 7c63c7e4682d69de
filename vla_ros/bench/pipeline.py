"""`vla-ros bench pipeline`: what the policy side of the graph costs and how it times chunks.

All times are wall clock (not simulated time), on this machine, torch limited to one thread.

1. plumbing: per control step (wall time, and CPU time of the thread = the cost on one core
   however loaded the machine is), for 1, 2 and 4 cameras at 640x480 rgb8: sensor_msgs/Image ->
   RGB array (vla_ros.nodes.conversions), preprocessing to 224x224 (SigLIP normalisation,
   vla_ros.policies.preprocess), observation assembly, and publishing one action chunk.
   Also one 640x480 JPEG CompressedImage decode.
2. latency: camera capture stamp -> action_chunk received -> arm command received, through a
   real in-process policy_node (async mode, a policy that answers instantly with the home
   pose) and controller_node (fr3: JointTrajectory on fr3_arm_controller/joint_trajectory,
   replanning slowed to 1 Hz so that every command counted is the one a chunk triggered),
   cameras (640x480 rgb8) and joint states streamed at 30 Hz.
3. modes: a policy whose inference sleeps 50 % of the chunk duration (a chunk of 10 rows at
   the embodiment's 0.1 s period, so 0.5 s), run through policy_node in sync mode, async with
   one inference at a time, and async with two in flight. The policy is perfect: every row is
   a smooth reference motion at the row's time, so whatever is not smooth in the executed
   motion comes from chunk timing. The arrivals are then executed by the controller's
   ChunkScheduler (vla_ros.core.scheduler: cubic Hermite plan, past rows dropped, smoothstep
   blend at each new chunk) sampled at the embodiment's command rate, and measured: fraction
   of time the arm is stalled (the plan has run out and holds), and the largest joint step
   and acceleration at chunk seams (from a chunk's arrival to the end of its blend, and any
   stall before it) vs. within chunks.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from vla_ros.bench import bench_namespace
from vla_ros.core.types import ActionChunk, Observation
from vla_ros.policies.base import register_policy

EMBODIMENT = "fr3"
BENCH_POLICY = "bench_reference_motion"



def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reps", type=int, default=60, help="plumbing repetitions per camera count")
    parser.add_argument("--duration-s", type=float, default=8.0, help="seconds per sync/async run")
    parser.add_argument("--latency-duration-s", type=float, default=4.0, help="seconds of the latency run")


# ------------------------------------------------------------------------- reference policy


@dataclass(frozen=True)
class ReferenceMotion:
    """q(t) = centre + amplitude * sin(2 pi f (t - t0) + phase_j), one phase per joint."""

    centre_rad: np.ndarray
    amplitude_rad: float = 0.2
    frequency_hz: float = 0.25
    t0_s: float = 0.0

    def __call__(self, t_s: np.ndarray) -> np.ndarray:
        t = np.asarray(t_s, dtype=np.float64).reshape(-1, 1)
        phase = np.linspace(0.0, np.pi, self.centre_rad.shape[0])[None, :]
        return self.centre_rad[None, :] + self.amplitude_rad * np.sin(2 * np.pi * self.frequency_hz * (t - self.t0_s) + phase)


class ReferencePolicy:
    """A perfect policy: row i = the reference motion at stamp + i * period. Sleeps latency_s."""

    needs_privileged = False
    thread_safe = True  # stateless

    def __init__(self, embodiment, latency_s: float, steps: int, period_s: float, t0_s: float,
                 amplitude_rad: float = 0.2) -> None:  # fmt: skip
        self.motion = ReferenceMotion(np.asarray(embodiment.arms[0].home_rad, dtype=float),
                                      amplitude_rad=amplitude_rad, t0_s=t0_s)  # fmt: skip
        self.action_names = tuple(embodiment.arms[0].qualified_joint_names) + ("gripper",)
        self.period_s = float(period_s)
        self.steps = int(steps)
        self.latency_s = float(latency_s)

    def infer(self, observation: Observation) -> ActionChunk:
        time.sleep(self.latency_s)
        times = observation.stamp_s + self.period_s * np.arange(self.steps)
        q = self.motion(times)
        values = np.hstack([q, np.ones((self.steps, 1))])
        return ActionChunk(self.action_names, values, self.period_s, observation.stamp_s)

    def reset(self) -> None:
        pass


def make_reference_policy(embodiment, latency_s: float = 0.0, steps: int = 10, period_s: float = 0.1,
                          t0_s: float = 0.0, amplitude_rad: float = 0.2) -> ReferencePolicy:  # fmt: skip
    return ReferencePolicy(embodiment, latency_s, steps, period_s, t0_s, amplitude_rad)


# ------------------------------------------------------------------------- execution analysis


@dataclass(frozen=True)
class ExecutionMetrics:
    """What an arm executing a stream of chunks did (see the module docstring)."""

    stall_fraction: float
    seam_max_step_rad: float
    within_max_step_rad: float
    seam_max_acceleration_rad_s2: float
    within_max_acceleration_rad_s2: float
    max_tracking_error_rad: float
    chunks: int
    min_lead_s: float  # least time a chunk arrived before the previous one's last row (negative: late)
    # all measured from the arrival of chunk `skip_chunks` on (steady state)


def execute_chunks(
    arrivals: Sequence[tuple[float, ActionChunk]],
    joint_columns: int,
    rate_hz: float,
    blend_s: float,
    acceleration_limits: np.ndarray | None = None,
    reference=None,
    skip_chunks: int = 2,
) -> ExecutionMetrics:
    """Run (arrival time, chunk) pairs through the controller's ChunkScheduler and measure.

    Columns [0, joint_columns) of each chunk are joint targets. The arm is sampled at
    `rate_hz` from the first arrival to the last one, so a stream that simply ends is not
    counted as a stall. Metrics start at the arrival of chunk `skip_chunks`: before it the
    arm starts from rest and, in async mode, the first inference runs alone (it tells the
    chunk length), so the first seams are start-up, not steady state.
    """
    from vla_ros.core.scheduler import ChunkScheduler

    if len(arrivals) < skip_chunks + 2:
        raise ValueError(f"need at least {skip_chunks + 2} chunk arrivals to measure seams, got {len(arrivals)}")
    arrivals = sorted(arrivals, key=lambda a: a[0])
    dt = 1.0 / rate_hz
    first_t, first_chunk = arrivals[0]
    sched = ChunkScheduler(joint_columns, blend_s=blend_s, acceleration_limits=acceleration_limits)
    sched.hold(first_chunk.values[0, :joint_columns], first_t)
    ticks = first_t + dt * np.arange(int((arrivals[-1][0] - first_t) / dt) + 1)
    q = np.empty((ticks.shape[0], joint_columns))
    stalled = np.zeros(ticks.shape[0], bool)
    seam = np.zeros(ticks.shape[0], bool)
    k = 0
    leads = []
    prev_last_row_s = None
    for j, t in enumerate(ticks):
        while k < len(arrivals) and arrivals[k][0] <= t:
            t_arr, chunk = arrivals[k]
            if k >= skip_chunks:
                leads.append(prev_last_row_s - t_arr)
            res = sched.propose(chunk.times_s, chunk.values[:, :joint_columns], t_arr)
            sched.commit(res.plan)
            seam |= (ticks >= t_arr) & (ticks <= t_arr + blend_s + dt)
            prev_last_row_s = chunk.times_s[-1]
            k += 1
        q[j] = sched.sample(t)[0]
        stalled[j] = t >= sched.plan.end_time_s
    # a stall and the restart after it belong to the seam they precede
    seam |= stalled
    keep = ticks >= arrivals[skip_chunks][0]
    ticks, q, stalled, seam = ticks[keep], q[keep], stalled[keep], seam[keep]
    step = np.max(np.abs(np.diff(q, axis=0)), axis=1)  # step j: tick j -> j+1
    acc = np.max(np.abs(q[2:] - 2 * q[1:-1] + q[:-2]), axis=1) / dt**2  # centred on tick j+1
    step_seam = seam[1:] | seam[:-1]
    acc_seam = seam[1:-1] | seam[:-2] | seam[2:]
    err = 0.0 if reference is None else float(np.max(np.abs(q - reference(ticks))))
    return ExecutionMetrics(
        stall_fraction=float(np.mean(stalled)),
        seam_max_step_rad=float(np.max(step[step_seam], initial=0.0)),
        within_max_step_rad=float(np.max(step[~step_seam], initial=0.0)),
        seam_max_acceleration_rad_s2=float(np.max(acc[acc_seam], initial=0.0)),
        within_max_acceleration_rad_s2=float(np.max(acc[~acc_seam], initial=0.0)),
        max_tracking_error_rad=err,
        chunks=len(arrivals) - skip_chunks,
        min_lead_s=float(min(leads)),
    )


# ------------------------------------------------------------------------- measurements


def _stats_ms(samples_s: Sequence[float]) -> dict:
    a = np.asarray(samples_s) * 1e3
    return {"median_ms": round(float(np.median(a)), 3), "p90_ms": round(float(np.quantile(a, 0.9)), 3),
            "max_ms": round(float(np.max(a)), 3), "n": int(a.shape[0])}  # fmt: skip


def measure_plumbing(node, reps: int, camera_counts=(1, 2, 4), width: int = 640, height: int = 480) -> dict:
    """Per-step cost of conversion + preprocessing + assembly + chunk publishing."""
    from trajectory_msgs.msg import JointTrajectory

    from vla_ros.core.observation_sync import ObservationSync, SyncConfig
    from vla_ros.nodes import conversions as cv
    from vla_ros.policies.preprocess import ImagePreprocessor

    rng = np.random.default_rng(0)
    pre = ImagePreprocessor(size_px=(224, 224), resize_mode="bilinear", normalization="siglip")
    pub = node.create_publisher(JointTrajectory, "bench_action_chunk", 10)
    chunk = ActionChunk(tuple(f"j{i}" for i in range(8)), rng.normal(size=(10, 8)), 0.1, 1.0)
    out = {}
    for n in camera_counts:
        slots = tuple(f"cam{i}" for i in range(n))
        msgs = [cv.array_to_image(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "rgb8", stamp_s=1.0)
                for _ in slots]  # fmt: skip
        sync = ObservationSync(SyncConfig(camera_slots=slots, joint_sources=("",), max_age_s=1e9))
        convert, preprocess, assemble, publish, total, cpu = [], [], [], [], [], []
        for r in range(reps + 3):
            c0 = time.thread_time()
            t0 = time.perf_counter()
            for slot, m in zip(slots, msgs):
                sync.add_image(slot, 1.0 + r, cv.image_to_rgb8(m))
            sync.add_joint_state("", 1.0 + r, ["a"], [0.0])
            t1 = time.perf_counter()
            obs = sync.assemble(1.0 + r).observation
            t2 = time.perf_counter()
            pre.cameras(obs.images, slots)
            t3 = time.perf_counter()
            pub.publish(cv.chunk_to_msg(chunk))
            t4 = time.perf_counter()
            c4 = time.thread_time()
            if r >= 3:  # warm-up
                convert.append(t1 - t0), assemble.append(t2 - t1), preprocess.append(t3 - t2)
                publish.append(t4 - t3), total.append(t4 - t0), cpu.append(c4 - c0)
        med_total = statistics.median(total)
        out[f"{n}_cameras"] = {
            "total": _stats_ms(total),
            "per_camera_ms": round(med_total / n * 1e3, 3),
            # CPU time of this thread: the cost on one core, whatever else the machine runs
            "cpu_total_ms": _stats_ms(cpu)["median_ms"],
            "cpu_per_camera_ms": round(statistics.median(cpu) / n * 1e3, 3),
            "image_to_rgb_ms": _stats_ms(convert)["median_ms"],
            "preprocess_224_ms": _stats_ms(preprocess)["median_ms"],
            "assemble_ms": _stats_ms(assemble)["median_ms"],
            "publish_chunk_ms": _stats_ms(publish)["median_ms"],
        }
    jpeg = cv.array_to_compressed(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "jpeg", quality=90)
    decode = []
    for r in range(reps):
        t0 = time.perf_counter()
        cv.image_to_rgb8(jpeg)
        decode.append(time.perf_counter() - t0)
    out["jpeg_640x480_decode"] = _stats_ms(decode)
    node.destroy_publisher(pub)
    return out


class _Graph:
    """policy_node (+ controller_node) + a peer node streaming 640x480 cameras and joint states,
    spinning in a thread."""

    def __init__(self, namespace: str, params: dict, image_hw=(480, 640), controller: bool = False) -> None:
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from rclpy.parameter import Parameter
        from sensor_msgs.msg import Image, JointState
        from trajectory_msgs.msg import JointTrajectory

        from vla_ros.core.embodiment import load_embodiment
        from vla_ros.nodes.policy_node import PolicyNode
        from vla_ros.nodes.runtime import BackgroundSpinner

        # registered only in the benchmark's own process, like a real policy
        register_policy(BENCH_POLICY, f"{__name__}:make_reference_policy",
                        "bench: perfect policy tracking a sine, sleeps latency_s")  # fmt: skip
        self.spec = load_embodiment(EMBODIMENT)
        self.node = PolicyNode(namespace=namespace, parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
        self.peer = Node("bench_peer", namespace=namespace)
        self.arrivals: list[tuple[float, JointTrajectory]] = []
        self.peer.create_subscription(JointTrajectory, "action_chunk", lambda m: self.arrivals.append((time.time(), m)), 50)
        self.cam_pubs = [self.peer.create_publisher(Image, c.topic, 5) for c in self.spec.cameras]
        self.js_pub = self.peer.create_publisher(JointState, "joint_states", 10)
        arm = self.spec.arms[0]
        self.joint_names = list(arm.joint_names) + [arm.gripper.joint_name]
        self.image = np.random.default_rng(1).integers(0, 256, (*image_hw, 3), dtype=np.uint8)
        self.commands: list[tuple[float, JointTrajectory]] = []
        self.controller = None
        if controller:
            from vla_ros.nodes.controller_node import ControllerNode

            self.controller = ControllerNode(namespace=namespace, parameter_overrides=[
                Parameter("embodiment", value=EMBODIMENT), Parameter("replan_rate_hz", value=1.0)])  # fmt: skip
            self.peer.create_subscription(JointTrajectory, arm.command.topic,
                                          lambda m: self.commands.append((time.time(), m)), 50)  # fmt: skip
        self.executor = SingleThreadedExecutor()
        for n in (self.node, self.peer, self.controller):
            if n is not None:
                self.executor.add_node(n)
        self._spin = BackgroundSpinner(self.executor, "bench_pipeline")
        self._stop = threading.Event()
        self._stream = threading.Thread(target=self._publish_sensors, daemon=True)

    def _publish_sensors(self) -> None:
        from vla_ros.nodes import conversions as cv

        q = np.asarray(self.spec.arms[0].home_rad).tolist() + [0.04]
        while not self._stop.is_set():
            now = time.time()
            for pub in self.cam_pubs:
                pub.publish(cv.array_to_image(self.image, "rgb8", stamp_s=now))
            self.js_pub.publish(cv.make_joint_state(self.joint_names, q, stamp_s=now))
            self._stop.wait(1.0 / 30.0)

    def run(self, duration_s: float) -> None:
        self._spin.start()
        self._stream.start()
        from rclpy.lifecycle import TransitionCallbackReturn

        ok = TransitionCallbackReturn.SUCCESS
        if self.controller is not None:
            time.sleep(0.2)  # joint states first: the controller holds where the arm is measured
            if self.controller.trigger_configure() != ok or self.controller.trigger_activate() != ok:
                raise RuntimeError("controller_node failed to configure/activate for the benchmark")
        if self.node.trigger_configure() != ok or self.node.trigger_activate() != ok:
            raise RuntimeError("policy_node failed to configure/activate for the benchmark")
        time.sleep(duration_s)
        self.node.trigger_deactivate()
        self._stop.set()
        self._stream.join()

    def close(self) -> None:
        if self._spin.stop():
            for n in (self.node, self.peer, self.controller):
                if n is not None:
                    n.destroy_node()


def chunk_to_command_latencies(chunks: Sequence[tuple[float, float]], commands_recv_s: Sequence[float],
                               window_s: float = 0.05) -> list[tuple[float, float]]:  # fmt: skip
    """For each (chunk received, chunk stamp), the first command received within window_s after
    the chunk: returns (capture -> command, chunk -> command) pairs; chunks without one are skipped."""
    cmd = np.sort(np.asarray(commands_recv_s, dtype=float))
    out = []
    for recv, stamp in chunks:
        i = int(np.searchsorted(cmd, recv))
        if i < cmd.shape[0] and cmd[i] - recv <= window_s:
            out.append((cmd[i] - stamp, cmd[i] - recv))
    return out


def measure_latency(namespace: str, duration_s: float) -> dict:
    """Capture stamp of the newest reading -> action_chunk received, instant policy.

    Short chunks (3 rows) so that an inference is due every ~80 ms and there are many samples;
    the number includes the age of the newest camera frame when the inference starts."""
    from vla_ros.nodes import conversions as cv

    g = _Graph(namespace, {"embodiment": EMBODIMENT, "policy": BENCH_POLICY, "mode": "async",
                           "policy_kwargs": "{latency_s: 0.0, steps: 3, period_s: 0.1, amplitude_rad: 0.0}"},
               controller=True)  # fmt: skip
    try:
        g.run(duration_s)
        chunks = [(recv, cv.time_to_s(m.header.stamp)) for recv, m in g.arrivals]
        commands = [recv for recv, _ in g.commands]
        stats = g.node.stats
    finally:
        g.close()
    if not chunks:
        raise RuntimeError("no action chunk arrived during the latency run")
    both = chunk_to_command_latencies(chunks, commands)
    if not both:
        raise RuntimeError(f"{len(chunks)} chunks but no controller command followed any of them")
    return {
        "capture_to_action_chunk": _stats_ms([recv - stamp for recv, stamp in chunks]),
        "action_chunk_to_command": _stats_ms([c for _, c in both]),
        "capture_to_command": _stats_ms([t for t, _ in both]),
        "chunks_followed_by_a_command": f"{len(both)}/{len(chunks)}",
        "last_observation_age_ms": round(stats.last_observation_age_s * 1e3, 3),
    }


def compare_modes(namespace: str, duration_s: float) -> dict:
    """Sync vs async (1 and 2 in flight) with inference = 50 % of the chunk duration."""
    from vla_ros.core.embodiment import load_embodiment
    from vla_ros.nodes import conversions as cv

    spec = load_embodiment(EMBODIMENT)
    period = spec.policy_period_s
    steps = 10
    latency = 0.5 * steps * period
    blend_s = 0.1
    arm = spec.arms[0]
    n = len(arm.joint_names)
    results = {"chunk_steps": steps, "period_s": period, "inference_latency_s": latency,
               "command_rate_hz": spec.command_rate_hz, "blend_s": blend_s}  # fmt: skip
    runs = [("sync", "sync", 1), ("async_1_in_flight", "async", 1), ("async_2_in_flight", "async", 2)]
    for i, (label, mode, in_flight) in enumerate(runs):
        t0 = time.time()
        kwargs = f"{{latency_s: {latency}, steps: {steps}, period_s: {period}, t0_s: {t0}}}"
        g = _Graph(f"{namespace}_{i}", {"embodiment": EMBODIMENT, "policy": BENCH_POLICY, "mode": mode,
                                        "policy_kwargs": kwargs, "max_concurrent_inferences": in_flight,
                                        "warmup": False})  # fmt: skip
        try:
            g.run(duration_s)
            arrivals = [(recv, cv.msg_to_chunk(m)) for recv, m in g.arrivals]
        finally:
            g.close()
        motion = ReferenceMotion(np.asarray(arm.home_rad, dtype=float), t0_s=t0)
        m = execute_chunks(arrivals, n, spec.command_rate_hz, blend_s,
                           acceleration_limits=np.asarray(arm.limits.acceleration_rad_s2), reference=motion)  # fmt: skip
        results[label] = {k: (round(v, 5) if isinstance(v, float) else v) for k, v in vars(m).items()}
    return results


def run(args: argparse.Namespace) -> dict:
    import rclpy
    import torch

    torch.set_num_threads(1)
    reps = int(getattr(args, "reps", 60))
    duration = float(getattr(args, "duration_s", 8.0))
    latency_duration = float(getattr(args, "latency_duration_s", 4.0))
    namespace = bench_namespace("pipeline")
    rclpy.init()
    try:
        node = rclpy.create_node("bench_pipeline", namespace=namespace)
        try:
            plumbing = measure_plumbing(node, reps)
        finally:
            node.destroy_node()
        latency = measure_latency(namespace + "_latency", latency_duration)
        modes = compare_modes(namespace + "_modes", duration)
    finally:
        rclpy.shutdown()
    return {
        "target": "pipeline",
        "clock": "wall",
        "torch_threads": 1,
        "plumbing_640x480_to_224": plumbing,
        "latency": latency,
        "sync_vs_async": modes,
    }
