"""`vla-ros bench safety`: the safety envelope under load (issue 11).

Measurements, all on the wall clock, FR3 (JTC output). Three processes, as deployed: the controller
node; the policy (max-size chunks, in the load phases); and the bench's peer, here, which plays the
driver (joint_states at 100 Hz, the JTC topic) and the e-stop button:
- decide: chunks per second ControllerCore decides (accept, merge, fit; `submit_chunk`) at each
  size (joint_position chunks, a slow sine at the config's policy period, up to max_chunk_points),
  and for refusals that the bounds catch before any work (an oversize chunk).
- estop: e-stop latency through real ROS topics: a peer publishes `estop` and waits for the hold
  trajectory (the first JointTrajectory computed after its publish time); p50/p99/max, and the
  node's own part (callback start, lock wait included, to the hold published); in three phases:
  idle, "chunks" (max-size chunks arrive at `--chunk-rate-hz`, default 50 Hz) and "loaded" (the
  same chunks, and `--cpu-load` busy processes, default one per CPU, competing for the CPUs).
- ticks: the command timer's period jitter |interval - period| p50/p99/max, idle and under the
  same load (the core's tick calls, timed inside the node).
- lead: the start lead the node derived from its measured publish->arrival delay under load, and
  that delay's p99; takeovers: the share of trajectories that reached the peer after their first
  point, and the largest command-velocity jump such a late takeover causes (`takeover_jumps`).
The peer publishes joint_states at 100 Hz so the watchdog stays satisfied.
"""

from __future__ import annotations

import argparse
import atexit
import multiprocessing as mp
import os
import platform
import threading
import time

import numpy as np

from vla_ros.bench import bench_namespace

JTC_TOPIC = "fr3_arm_controller/joint_trajectory"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", default="10,100,500,1000", help="chunk sizes decided (points, comma-separated)")
    parser.add_argument("--estops", type=int, default=20, help="e-stops per phase (default 20)")
    parser.add_argument("--chunk-rate-hz", type=float, default=50.0, help="max-size chunks per second under load")
    parser.add_argument("--cpu-load", type=int, default=-1,
                        help="busy-loop processes during the load phase (default -1: one per CPU)")
    parser.add_argument("--chunk-worker", action="store_true",
                        help="the controller decides chunks in a worker process (chunk_worker:=true), to compare")


def _pct_ms(samples_s) -> dict:
    arr = np.asarray(samples_s, dtype=np.float64) * 1e3
    if arr.size == 0:
        return {"p50": None, "p99": None, "max": None, "n": 0}
    return {"p50": round(float(np.percentile(arr, 50)), 3), "p99": round(float(np.percentile(arr, 99)), 3),
            "max": round(float(np.max(arr)), 3), "n": int(arr.size)}


def sine_rows(home: np.ndarray, t0_s: float, steps: int, period_s: float) -> np.ndarray:
    """A slow sine on joints 1 and 7 around home (0.15 rad, 0.25 Hz): valid at any length."""
    t = t0_s + period_s * np.arange(steps)
    rows = np.tile(home, (steps, 1))
    rows[:, 0] += 0.15 * np.sin(2 * np.pi * 0.25 * t)
    rows[:, 6] += 0.15 * np.sin(2 * np.pi * 0.25 * t)
    return rows


def period_for(core, steps: int) -> float:
    """The policy period, halved until a chunk of `steps` fits max_chunk_duration_s (a 1000-point
    chunk at FR3's 0.1 s would last 99.9 s and be refused unread)."""
    period = core.spec.policy_period_s
    while (steps - 1) * period > core.config.max_chunk_duration_s and period / 2 >= core.min_chunk_period_s:
        period /= 2
    return period


def bench_decide(spec, kin, sizes: list[int], budget_s: float = 1.0) -> dict:
    """Chunks decided per second by the core, per size (each size for about budget_s)."""
    from vla_ros.core.action_spaces import action_names
    from vla_ros.core.controller import ControllerCore
    from vla_ros.core.types import ActionChunk

    arm = spec.arms[0]
    home = np.asarray(arm.home_rad, dtype=np.float64)
    period = spec.policy_period_s
    names = action_names(spec, "joint_position")
    out = {}
    for size in sizes + [-1]:
        core = ControllerCore(spec, kin)
        now = 1000.0
        core.update_joint_state(arm.name, arm.joint_names, home, now)
        core.activate(now)
        n = 0
        accepted = 0
        start = time.perf_counter()
        while n < 3 or time.perf_counter() - start < budget_s:
            now += period
            core.update_joint_state(arm.name, arm.joint_names, home, now)
            steps = core.config.max_chunk_points + 1 if size < 0 else size
            p = period_for(core, steps)
            values = np.hstack([sine_rows(home, now - 1000.0, steps, p), np.ones((steps, 1))])
            accepted += core.submit_chunk(ActionChunk(names, values, p, now), now).accepted
            n += 1
            if n >= 2000:
                break
        elapsed = time.perf_counter() - start
        key = f"refused_oversize_{core.config.max_chunk_points + 1}" if size < 0 else str(size)
        out[key] = {"chunks_per_s": round(n / elapsed, 1), "ms_per_chunk": round(1e3 * elapsed / n, 3),
                    "accepted": accepted, "decided": n, "period_s": period_for(core, steps)}
    return out


def _busy(stop) -> None:
    x = 0
    while not stop.is_set():
        x = (x * 1103515245 + 12345) % 2**31


def takeover_jumps(messages, joints, cv) -> dict:
    """How a default JTC takes over each received trajectory (messages: (arrival, msg), arrival
    order): one arriving before its first point is interpolated from the state at arrival
    (continuous velocity with a JTC that tracks its command); one arriving after it is sampled
    mid-way, and its velocity there may differ from what the previous trajectory commanded.
    Returns the share of late arrivals and the largest such velocity jump (rad/s), next to the
    in-window bound: the most a command's velocity changes in one 1 kHz JTC cycle (a_max x 1 ms)."""
    from vla_ros.core.scheduler import Plan

    def as_plan(arrival, msg):
        order = [list(msg.joint_names).index(j) for j in joints]
        stamp = cv.time_to_s(msg.header.stamp) or arrival
        t = np.array([stamp + cv.duration_to_s(p.time_from_start) for p in msg.points])
        q = np.array([[p.positions[k] for k in order] for p in msg.points])
        v = np.array([[p.velocities[k] for k in order] if p.velocities else [0.0] * len(order) for p in msg.points])
        return Plan(t, q, v)

    late, jumps, previous = 0, [0.0], None
    for arrival, msg in messages:
        plan = as_plan(arrival, msg)
        if previous is not None and arrival > plan.times_s[0]:
            late += 1
            jumps.append(float(np.max(np.abs(plan.sample(arrival)[1] - previous.sample(arrival)[1]))))
        previous = plan
    n = len(messages)
    return {"trajectories": n, "late_share": round(late / n, 4) if n else None,
            "max_velocity_jump_rad_s": round(max(jumps), 4)}


class _Bench:
    """The controller node in its own process (as deployed: `controller_node` on a
    MultiThreadedExecutor, chunk decisions in their own callback group), a peer here that plays
    the driver and the e-stop, and in the load phases a chunk producer process (the policy). The
    controller reports its inner timings over a pipe."""

    def __init__(self, spec, chunk_worker: bool = False) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from sensor_msgs.msg import JointState
        from std_msgs.msg import Bool
        from std_srvs.srv import Trigger
        from trajectory_msgs.msg import JointTrajectory

        from vla_ros.nodes import conversions as cv
        from vla_ros.nodes.runtime import BackgroundSpinner

        self.cv = cv
        self.spec = spec
        self.arm = spec.arms[0]
        self.home = np.asarray(self.arm.home_rad, dtype=np.float64)
        self.t0 = time.time()
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        # A namespace of its own: the bench publishes joint_states for, and its controller commands,
        # an FR3; on the default topics a running robot (or sim) on this ROS domain would hear them.
        self.namespace = bench_namespace("safety")
        self.peer = Node("safety_bench_peer", namespace=self.namespace, context=self.context)
        self.lock = threading.Lock()
        self.trajectories: list[tuple[float, float]] = []  # (arrival, stamp)
        self.messages: list[tuple[float, object]] = []  # (arrival, JointTrajectory)
        self.peer.create_subscription(JointTrajectory, JTC_TOPIC, self._on_trajectory, 100)
        self.state_pub = self.peer.create_publisher(JointState, self.arm.joint_states_topic, 10)
        self.estop_pub = self.peer.create_publisher(Bool, "estop", 10)
        self.release = self.peer.create_client(Trigger, "controller/release_estop")
        self.Bool, self.Trigger = Bool, Trigger
        self.peer.create_timer(0.01, self._publish_state)
        self.peer_executor = SingleThreadedExecutor(context=self.context)
        self.peer_executor.add_node(self.peer)
        self.spinner = BackgroundSpinner(self.peer_executor, "bench_peer").start()
        ctx = mp.get_context("spawn")  # never fork a process with DDS threads running
        self.conn, child = ctx.Pipe()
        # not a daemon: the controller starts its chunk worker process (it ends on "stop", and
        # close() kills it if it does not)
        self.process = ctx.Process(target=_controller_process, daemon=False,
                                   args=(child, spec.name, self.namespace, chunk_worker),
                                   name="bench_controller")
        self.process.start()
        # a bench that dies before close() must not wait at exit for this non-daemon child
        atexit.register(lambda p=self.process: p.kill() if p.is_alive() else None)
        child.close()
        if not self.conn.poll(60.0):
            raise RuntimeError("the controller process did not start within 60 s")
        ready = self.conn.recv()
        if "error" in ready:
            raise RuntimeError(f"the controller process failed: {ready['error']}")
        self.max_chunk_points = ready["max_chunk_points"]
        self.max_chunk_period_s = ready["max_chunk_period_s"]
        self.tick_period_s = ready["tick_period_s"]

    def stats(self) -> dict:
        self.conn.send("stats")
        if not self.conn.poll(30.0):
            raise RuntimeError("the controller process did not answer within 30 s")
        return self.conn.recv()

    @staticmethod
    def _wait(predicate, timeout_s: float) -> bool:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if predicate():
                return True
            time.sleep(0.0005)
        return predicate()

    def now(self) -> float:
        return self.peer.get_clock().now().nanoseconds * 1e-9

    def _publish_state(self) -> None:
        self.state_pub.publish(self.cv.make_joint_state(self.arm.joint_names, self.home))

    def _on_trajectory(self, msg) -> None:
        with self.lock:
            self.trajectories.append((self.now(), self.cv.time_to_s(msg.header.stamp)))
            self.messages.append((self.trajectories[-1][0], msg))

    def estop_latency(self) -> float | None:
        t_pub = self.now()
        self.estop_pub.publish(self.Bool(data=True))

        # The hold: the first trajectory computed after the e-stop was published (stamped at or
        # after it; a hold at rest is one point stamped 0, "start on arrival", so arriving after).
        def hold_arrival():
            with self.lock:
                return next((a for a, s in reversed(self.trajectories[-50:])
                             if (s >= t_pub or (s == 0.0 and a >= t_pub))), None)

        ok = self._wait(lambda: hold_arrival() is not None, 5.0)
        with self.lock:
            arrival = next((a for a, s in self.trajectories if s >= t_pub or (s == 0.0 and a >= t_pub)), None)
        future = self.release.call_async(self.Trigger.Request())
        self._wait(future.done, 5.0)
        return (arrival - t_pub) if ok and arrival is not None else None

    def phase(self, estops: int, chunk_rate_hz: float, load: int) -> dict:
        ctx = mp.get_context("spawn")  # never fork a process with DDS threads running
        mp_stop = ctx.Event()
        procs = []
        feeder = None
        if chunk_rate_hz > 0:
            # The chunk producer in its own process, as the policy node is deployed: built and
            # serialized in this process, a 1000-point chunk held this interpreter's lock for
            # milliseconds, and the e-stop's publish and the hold's arrival were timed behind it.
            publishing = ctx.Event()
            feeder = ctx.Process(target=_chunk_producer_process, daemon=True, name="bench_chunks",
                                 args=(mp_stop, publishing, self.spec.name, self.namespace, chunk_rate_hz,
                                       self.max_chunk_points, self.max_chunk_period_s, self.t0))
        for _ in range(load):
            p = ctx.Process(target=_busy, args=(mp_stop,), daemon=True)
            p.start()
            procs.append(p)
        if feeder is not None:
            feeder.start()
            procs.append(feeder)
            if not publishing.wait(60.0):
                mp_stop.set()
                raise RuntimeError("the bench's chunk producer did not reach the controller within 60 s")
        # measured from here: the producer's start-up (a process importing rclpy) is not chunk load
        before = self.stats()
        with self.lock:
            self.messages.clear()
        t0 = time.perf_counter()
        time.sleep(0.5)
        latencies, missed = [], 0
        try:
            for _ in range(estops):
                lat = self.estop_latency()
                if lat is None:
                    missed += 1
                else:
                    latencies.append(lat)
                time.sleep(0.3 if chunk_rate_hz > 0 else 0.05)  # chunks get decided between e-stops
        finally:
            mp_stop.set()
            for p in procs:
                p.join(timeout=10.0)
                if p.is_alive():
                    p.kill()
        elapsed = time.perf_counter() - t0
        after = self.stats()
        with self.lock:
            messages = list(self.messages)
        takeover = takeover_jumps(messages, self.arm.command.joint_names, self.cv)
        ticks = np.diff(np.asarray([t for t in after["tick_times"] if t >= t0]))
        handled = after["estop_handling_s"][len(before["estop_handling_s"]):]
        decided = after["chunks_accepted"] + after["chunks_refused"] - before["chunks_accepted"] - before["chunks_refused"]
        return {
            "estop_latency_ms": _pct_ms(latencies),
            "estop_callback_to_hold_published_ms": _pct_ms(handled),
            "estops_unanswered": missed,
            "tick_jitter_ms": _pct_ms(np.abs(ticks - self.tick_period_s)),
            "tick_period_ms": round(1e3 * self.tick_period_s, 3),
            "chunks_decided_per_s": round(decided / elapsed, 1),
            "chunks_accepted": after["chunks_accepted"] - before["chunks_accepted"],
            "chunks_decided_in_worker": after["decided_in_worker"] - before["decided_in_worker"],
            "start_lead_ms": round(1e3 * after["start_lead_s"], 3),
            "command_delay_p99_ms": None if after["command_delay_p99_s"] is None
            else round(1e3 * after["command_delay_p99_s"], 3),
            "internal_errors": after["internal_errors"],
            "takeovers": takeover,
        }

    def close(self) -> None:
        import rclpy

        try:
            self.conn.send("stop")
        except OSError:
            pass
        self.process.join(timeout=15.0)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=5.0)
        if self.spinner.stop():
            self.peer.destroy_node()
        rclpy.try_shutdown(context=self.context)


def _chunk_producer_process(stop, publishing, embodiment: str, namespace: str, rate_hz: float, steps: int,
                            period_s: float, t0: float) -> None:
    """The bench's policy: `steps`-point joint chunks (a slow sine) on `action_chunk` at `rate_hz`,
    on a fixed schedule (the rate is what was asked, however long a publish takes); sets
    `publishing` once the controller's subscription is matched and the first chunk is out."""
    import rclpy
    from rclpy.node import Node
    from trajectory_msgs.msg import JointTrajectory

    from vla_ros.core.action_spaces import action_names
    from vla_ros.core.embodiment import load_embodiment
    from vla_ros.core.types import ActionChunk
    from vla_ros.nodes import conversions as cv

    spec = load_embodiment(embodiment)
    home = np.asarray(spec.arms[0].home_rad, dtype=np.float64)
    names = action_names(spec, "joint_position")
    context = rclpy.Context()
    rclpy.init(context=context)
    node = Node("safety_bench_chunks", namespace=namespace, context=context)
    try:
        pub = node.create_publisher(JointTrajectory, "action_chunk", 10)
        while pub.get_subscription_count() == 0 and not stop.wait(0.01):
            pass
        due = time.monotonic()
        while not stop.is_set():
            now = node.get_clock().now().nanoseconds * 1e-9
            values = np.hstack([sine_rows(home, now - t0, steps, period_s), np.ones((steps, 1))])
            pub.publish(cv.chunk_to_msg(ActionChunk(names, values, period_s, now)))
            publishing.set()
            due = max(due + 1.0 / rate_hz, time.monotonic() - 1.0 / rate_hz)
            stop.wait(max(0.0, due - time.monotonic()))
    finally:
        node.destroy_node()
        rclpy.try_shutdown(context=context)


def _controller_process(conn, embodiment: str, namespace: str, chunk_worker: bool = False) -> None:
    """The bench's controller: `ControllerNode` on a MultiThreadedExecutor in this process, its
    command timer's tick calls timed; answers "stats" with its counters and timings, ends on "stop"."""
    import rclpy
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.parameter import Parameter

    from vla_ros.nodes.controller_node import ControllerNode, make_executor
    from vla_ros.nodes.runtime import BackgroundSpinner

    context = rclpy.Context()
    rclpy.init(context=context)
    node = ControllerNode(context=context, namespace=namespace, parameter_overrides=[Parameter("embodiment", value=embodiment),
                                                                 Parameter("joint_state_timeout_s", value=1.0),
                                                                 Parameter("chunk_worker", value=chunk_worker)])
    executor = make_executor(context)
    executor.add_node(node)
    spinner = BackgroundSpinner(executor, "bench_controller").start()
    tick_times: list[float] = []
    try:
        if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            raise RuntimeError("configure failed (see the controller's log)")
        core = node.core
        core_tick = core.tick
        if node.chunk_worker is not None and not node.chunk_worker.wait_ready(60.0):
            raise RuntimeError(f"the chunk worker did not start: {node.chunk_worker.failed}")

        def timed_tick(now_s, stream=True):
            if stream:
                tick_times.append(time.perf_counter())
                del tick_times[:-100000]
            return core_tick(now_s, stream)

        core.tick = timed_tick
        if not _Bench._wait(lambda: core.measured_positions() is not None, 30.0):
            raise RuntimeError("no joint_states from the bench's peer within 30 s")
        if node.trigger_activate() != TransitionCallbackReturn.SUCCESS:
            raise RuntimeError("activate failed")
        forward = any(a.command.kind == "forward_position" for a in core.spec.arms)
        conn.send({"max_chunk_points": core.config.max_chunk_points,
                   "max_chunk_period_s": period_for(core, core.config.max_chunk_points),
                   "tick_period_s": 1.0 / (core.command_rate_hz if forward else core.config.replan_rate_hz)})
        while True:
            request = conn.recv()
            if request == "stop":
                break
            conn.send({"tick_times": list(tick_times), "estop_handling_s": list(node.estop_handling_s),
                       "chunks_accepted": core.chunks_accepted, "chunks_refused": core.chunks_refused,
                       "decided_in_worker": 0 if node.chunk_worker is None else node.chunk_worker.decided_in_worker,
                       "start_lead_s": core.start_lead_s, "command_delay_p99_s": core.command_delay_p99_s,
                       "internal_errors": core.internal_errors})
    except (RuntimeError, EOFError, OSError) as err:
        try:
            conn.send({"error": str(err)})
        except OSError:
            pass
    finally:
        if spinner.stop():
            node.destroy_node()
        rclpy.try_shutdown(context=context)


def run(args: argparse.Namespace) -> dict:
    from vla_ros.core.embodiment import load_embodiment
    from vla_ros.core.kinematics import RobotKinematics

    spec = load_embodiment("fr3")
    kin = RobotKinematics.from_embodiment(spec)
    sizes = [int(s) for s in str(args.sizes).split(",") if s.strip()]
    load = (os.cpu_count() or 1) if args.cpu_load < 0 else int(args.cpu_load)
    result = {
        "embodiment": spec.name,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "load_average_1min_at_start": round(os.getloadavg()[0], 2),
        "decide": bench_decide(spec, kin, sizes),
    }
    bench = _Bench(spec, chunk_worker=bool(getattr(args, "chunk_worker", False)))
    try:
        result["idle"] = bench.phase(args.estops, chunk_rate_hz=0.0, load=0)
        # chunk load alone (what the e-stop and the timer must not notice), then with CPU hogs too
        for phase, hogs in (("chunks", 0), ("loaded", load)):
            result[phase] = bench.phase(args.estops, chunk_rate_hz=args.chunk_rate_hz, load=hogs)
            result[phase].update(chunk_rate_hz=args.chunk_rate_hz, cpu_load_processes=hogs,
                                 chunk_points=bench.max_chunk_points)
    finally:
        bench.close()
    return result
