"""policy_node: camera images + joint states + instruction -> action chunks.

A lifecycle node (ros2/demos lifecycle_py pattern):
- configure: load the embodiment and the policy (registry name + checkpoint + kwargs), warm
  the policy up, create subscriptions and (lifecycle) publishers;
- activate: reset the policy and start inferring/publishing;
- deactivate: stop (an inference in flight finishes but its chunk is dropped);
- cleanup: drop the policy and free GPU memory.

Inference runs on worker threads (one, or `max_concurrent_inferences` when pipelining),
never on the executor thread, so joint states, images and instructions keep being received
while the model runs. When to start the next inference
is decided by vla_ros.core.inference_timing (async by default: early enough that the next
chunk arrives before the executing one runs out); what to infer on is decided by
vla_ros.core.observation_sync (a time-synchronised, fresh set of readings, or a refusal that
is reported on `diagnostics`). The node itself only converts messages and wires these up.

Topics (relative): camera topics from the embodiment config (Image or CompressedImage,
sensor-data QoS), `joint_states` / `<ns>/joint_states`, `instruction` (reliable +
transient-local), `sim/objects` (only for policies with needs_privileged), publishes
`action_chunk` (JointTrajectory stamped with the observation's capture time) and `diagnostics`.
"""

from __future__ import annotations

import dataclasses
import gc
import math
import os
import queue
import sys
import threading
import time
from typing import Any

import numpy as np
import rclpy
import yaml
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory
from visualization_msgs.msg import MarkerArray

from vla_ros.core.embodiment import EmbodimentSpec, load_embodiment
from vla_ros.core.inference_timing import INFERENCE_MODES, InferenceScheduler, LatencyEstimator
from vla_ros.core.observation_sync import ObservationSync, SyncConfig, privileged_objects
from vla_ros.core.types import ActionChunk, Observation
from vla_ros.nodes import conversions as cv
from vla_ros.nodes.runtime import ReleasingLifecycleNode, refuse_parameter_changes_once_configured
from vla_ros.policies.base import Policy, make_policy

INSTRUCTION_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


def parse_policy_kwargs(text: str) -> dict[str, Any]:
    """The `policy_kwargs` parameter: a YAML (or JSON) mapping of factory keyword arguments."""
    if not text.strip():
        return {}
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ValueError(f"parameter policy_kwargs is not valid YAML/JSON: {err}") from err
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise ValueError(f"parameter policy_kwargs must be a mapping of names to values, got {text!r}")
    return value


def warmup_observation(spec: EmbodimentSpec, stamp_s: float = 0.0) -> Observation:
    """A synthetic observation (black frames at the configured sizes, arms at home) for warm-up."""
    names: list[str] = []
    q: list[float] = []
    for arm in spec.arms:
        names.extend(arm.qualified_joint_names)
        q.extend(np.asarray(arm.home_rad, dtype=float).tolist())
        if arm.gripper is not None:
            names.append(arm.qualified(arm.gripper.joint_name))
            q.append(float(arm.gripper.open_position))
    images = {c.slot: np.zeros((c.height, c.width, 3), np.uint8) for c in spec.cameras}
    return Observation(stamp_s=stamp_s, images=images, joint_names=tuple(names), joint_positions=np.array(q))


@dataclasses.dataclass
class _Job:
    observation: Observation
    start_clock_s: float
    start_wall_s: float
    generation: int


@dataclasses.dataclass
class PolicyNodeStats:
    """Counters the node keeps (reported on diagnostics; tests read them)."""

    chunks_published: int = 0
    inference_failures: int = 0
    chunks_superseded: int = 0
    joint_state_messages: int = 0
    image_messages: int = 0
    refusals: dict[str, int] = dataclasses.field(default_factory=dict)
    last_refusal: str = ""
    last_error: str = ""
    last_latency_wall_s: float = float("nan")
    last_observation_age_s: float = float("nan")
    last_sync_spread_s: float = float("nan")


class PolicyNode(ReleasingLifecycleNode):
    """Runs a registered policy on time-synchronised observations; see the module docstring."""

    def __init__(self, node_name: str = "policy_node", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        d = self.declare_parameter
        d("embodiment", "", _desc("embodiment config name (fr3, ur5e, aloha, ...) or YAML path"))
        d("policy", "", _desc("registered policy name (scripted, replay, vla, ...)"))
        d("checkpoint", "", _desc("checkpoint passed to the policy factory as checkpoint= (empty: none)"))
        d("policy_kwargs", "{}", _desc("YAML/JSON mapping of extra policy factory keyword arguments"))
        d("mode", "async", _desc("async: infer ahead so the arm never waits; sync: infer after each chunk ends"))
        d("sync_tolerance_s", 1.0 / 30.0 + 0.01, _desc("largest stamp spread within one observation (s)"))
        d("max_observation_age_s", 0.5, _desc("readings older than this (s) are stale: no observation"))
        d("max_observation_future_s", 0.05, _desc("readings stamped further ahead of this node's clock (s) are refused"))
        d("latency_margin_s", 0.02, _desc("async: start this much earlier than the latency estimate requires (s)"))
        d("latency_quantile", 0.9, _desc("quantile of recent latencies used as the latency estimate"))
        d("lookahead_steps", 2, _desc("async: chunk rows that should still lie ahead when the next chunk arrives"))
        d("blend_lookahead_s", 0.0, _desc("async: time on top of lookahead_steps (s) the next chunk should arrive "
                                          "ahead (the controller blends from the old chunk's free tail, so 0 "
                                          "suffices; more keeps a whole blend clear of the old chunk's last step)"))
        d("max_concurrent_inferences", 2, _desc("async: inferences allowed in flight at once when the latency needs "
                                                "them (pipelining); 1 for a policy that is not thread_safe"))
        d("poll_period_s", 0.01, _desc("how often the node checks whether the next inference is due (s)"))
        d("diagnostics_period_s", 1.0, _desc("period of the diagnostics status (s)"))
        d("warmup", True, _desc("run one inference on a synthetic observation at configure"))
        d("autostart", True, _desc("configure and activate at start-up; false: wait for a lifecycle manager "
                                   "(bringup.launch.py passes false and drives the transitions itself)"))

        refuse_parameter_changes_once_configured(self)
        self.spec: EmbodimentSpec | None = None
        self.policy: Policy | None = None
        self.stats = PolicyNodeStats()
        self._lock = threading.Lock()
        self._sync: ObservationSync | None = None
        self._scheduler: InferenceScheduler | None = None
        self._active = False
        self._generation = 0
        self._last_published_stamp_s = -math.inf
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._workers: list[threading.Thread] = []
        # (not _subscriptions / _timers: those are rclpy.Node's own lists, /clock included)
        self._input_subs: list = []
        self._node_timers: list = []
        self._chunk_pub = None
        self._diag_pub = None
        self._zero_stamp_warned = False

    # ------------------------------------------------------------------ lifecycle

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._configure()
        except Exception as err:  # noqa: BLE001 - any configure error fails the transition, with its reason
            self.get_logger().error(f"configure failed: {err}")
            self._release()
            return TransitionCallbackReturn.FAILURE
        return TransitionCallbackReturn.SUCCESS

    def _configure(self) -> None:
        p = self._param
        embodiment = p("embodiment")
        if not embodiment:
            raise ValueError("parameter 'embodiment' is empty; give a config name (fr3, ur5e, aloha, ...) or a YAML path")
        policy_name = p("policy")
        if not policy_name:
            raise ValueError("parameter 'policy' is empty; give a registered policy name (scripted, replay, vla, ...)")
        mode = p("mode")
        if mode not in INFERENCE_MODES:
            raise ValueError(f"parameter 'mode' must be one of {INFERENCE_MODES}, got '{mode}'")
        for name in ("poll_period_s", "diagnostics_period_s"):
            if not p(name) > 0:
                raise ValueError(f"parameter '{name}' must be > 0 s, got {p(name)}")
        if p("max_concurrent_inferences") < 1:
            raise ValueError(f"parameter 'max_concurrent_inferences' must be >= 1, got {p('max_concurrent_inferences')}")
        self.spec = load_embodiment(embodiment)
        kwargs = parse_policy_kwargs(p("policy_kwargs"))
        if p("checkpoint"):
            kwargs["checkpoint"] = p("checkpoint")
        self.get_logger().info(f"loading policy '{policy_name}' for embodiment '{self.spec.name}'")
        self.policy = make_policy(policy_name, embodiment=self.spec, **kwargs)

        warm_latency_s = 0.0
        if p("warmup"):
            warm_latency_s = self._warm_up()
        self._sync = ObservationSync(
            SyncConfig(
                camera_slots=tuple(c.slot for c in self.spec.cameras),
                joint_sources=tuple(a.namespace for a in self.spec.arms),
                tolerance_s=p("sync_tolerance_s"),
                max_age_s=p("max_observation_age_s"),
                max_future_s=p("max_observation_future_s"),
                require_privileged=bool(self.policy.needs_privileged),
            )
        )
        in_flight = p("max_concurrent_inferences")
        if in_flight > 1 and not getattr(self.policy, "thread_safe", False):
            self.get_logger().info(f"policy '{policy_name}' is not thread_safe: one inference at a time "
                                   f"(max_concurrent_inferences {in_flight} ignored)")
            in_flight = 1
        self._scheduler = InferenceScheduler(
            mode=mode,
            margin_s=p("latency_margin_s"),
            latency=LatencyEstimator(quantile=p("latency_quantile"), initial_s=warm_latency_s),
            lookahead_steps=p("lookahead_steps"),
            lookahead_s=p("blend_lookahead_s"),
            max_in_flight=in_flight,
        )
        self.stats = PolicyNodeStats()

        self._chunk_pub = self.create_lifecycle_publisher(JointTrajectory, "action_chunk", 10)
        self._diag_pub = self.create_lifecycle_publisher(DiagnosticArray, "diagnostics", 10)
        subs = self._input_subs
        for cam in self.spec.cameras:
            msg_type = CompressedImage if cam.compressed else Image
            subs.append(self.create_subscription(
                msg_type, cam.topic, lambda m, slot=cam.slot: self._on_image(slot, m), qos_profile_sensor_data))  # fmt: skip
        for arm in self.spec.arms:
            prefix = f"{arm.namespace}/" if arm.namespace else ""
            subs.append(self.create_subscription(
                JointState, arm.joint_states_topic,
                lambda m, src=arm.namespace, pre=prefix: self._on_joint_state(src, pre, m), qos_profile_sensor_data))  # fmt: skip
        subs.append(self.create_subscription(String, "instruction", self._on_instruction, INSTRUCTION_QOS))
        if self.policy.needs_privileged:
            subs.append(self.create_subscription(MarkerArray, "sim/objects", self._on_objects, 10))
        self._node_timers.append(self.create_timer(p("poll_period_s"), self._on_poll))
        self._node_timers.append(self.create_timer(p("diagnostics_period_s"), self._publish_diagnostics))
        for k in range(self._scheduler.max_in_flight):
            worker = threading.Thread(target=self._work, name=f"policy_inference_{k}", daemon=True)
            worker.start()
            self._workers.append(worker)
        self.get_logger().info(
            f"configured: policy '{policy_name}', mode {mode}, cameras "
            f"{[c.slot for c in self.spec.cameras]}, warm-up latency {warm_latency_s * 1e3:.1f} ms"
        )

    def _warm_up(self) -> float:
        """The policy's own warmup() if it has one, else one inference on a synthetic
        observation; returns the latency (the first latency estimate). Policies that need
        privileged data (the scripted expert) cannot infer without objects and are not run."""
        assert self.policy is not None and self.spec is not None
        warm = getattr(self.policy, "warmup", None)
        start = time.perf_counter()
        if callable(warm):
            warm()
        elif not self.policy.needs_privileged:
            self.policy.infer(warmup_observation(self.spec))
        latency = time.perf_counter() - start
        self.policy.reset()
        return latency

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        assert self.policy is not None and self._scheduler is not None
        self.policy.reset()
        with self._lock:
            self._scheduler.reset()
            self._last_published_stamp_s = -math.inf
            self._active = True
        self.get_logger().info("active: publishing action chunks")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        with self._lock:
            self._active = False
            self._generation += 1  # a chunk still being computed is dropped
        self.get_logger().info("inactive: no more action chunks")
        return super().on_deactivate(state)

    def _release(self) -> None:
        with self._lock:
            self._active = False
            self._generation += 1
        for _ in self._workers:
            self._jobs.put(None)
        for worker in self._workers:
            worker.join(timeout=30.0)
            if worker.is_alive():
                self.get_logger().warn(f"{worker.name} still running after 30 s; abandoning it")
        self._workers = []
        self._jobs = queue.Queue()
        self.destroy_entities(timers=self._node_timers, subscriptions=self._input_subs,
                              lifecycle_publishers=(self._chunk_pub, self._diag_pub))
        self._node_timers, self._input_subs = [], []
        self._chunk_pub = self._diag_pub = None
        policy, self.policy = self.policy, None
        close = getattr(policy, "close", None)
        if callable(close):
            close()
        del policy
        self._sync = self._scheduler = None
        gc.collect()
        # Only if torch is already loaded: a scripted policy must not pull torch in here.
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()

    # ------------------------------------------------------------------ inputs

    def _stamp_s(self, header) -> float:
        s = cv.time_to_s(header.stamp)
        if s == 0.0:
            # Unset stamp (some drivers): the receive time is the best capture estimate left.
            if not self._zero_stamp_warned:
                self.get_logger().warn("a sensor message has a zero header.stamp; using its receive time")
                self._zero_stamp_warned = True
            return self._now_s()
        return s

    def _on_image(self, slot: str, msg: Image | CompressedImage) -> None:
        try:
            rgb = cv.image_to_rgb8(msg)
        except ValueError as err:
            self.get_logger().error(f"camera '{slot}': {err}", throttle_duration_sec=5.0)
            return
        with self._lock:
            if self._sync is not None:
                try:
                    self._sync.add_image(slot, self._stamp_s(msg.header), rgb)
                except ValueError as err:
                    self.get_logger().error(str(err), throttle_duration_sec=5.0)
                    return
                self.stats.image_messages += 1

    def _on_joint_state(self, source: str, prefix: str, msg: JointState) -> None:
        if len(msg.position) != len(msg.name):
            self.get_logger().error(
                f"joint_states '{source}' has {len(msg.name)} names but {len(msg.position)} positions",
                throttle_duration_sec=5.0,
            )
            return
        names = [prefix + n for n in msg.name]
        with self._lock:
            if self._sync is not None:
                try:
                    self._sync.add_joint_state(source, self._stamp_s(msg.header), names, np.asarray(msg.position))
                except ValueError as err:  # e.g. a NaN position: ignored, the source goes stale
                    self.get_logger().error(str(err), throttle_duration_sec=5.0)
                    return
                self.stats.joint_state_messages += 1

    def _on_instruction(self, msg: String) -> None:
        with self._lock:
            if self._sync is not None:
                try:
                    self._sync.set_instruction(msg.data)
                except ValueError as err:
                    self.get_logger().error(str(err), throttle_duration_sec=5.0)
                    return
        self.get_logger().info(f"instruction: '{msg.data}' (used from the next chunk)")

    def _on_objects(self, msg: MarkerArray) -> None:
        try:
            objects = privileged_objects(cv.markers_to_poses(msg))
        except ValueError as err:
            self.get_logger().error(f"sim/objects: {err}", throttle_duration_sec=5.0)
            return
        with self._lock:
            if self._sync is not None:
                self._sync.set_privileged("objects", objects)

    # ------------------------------------------------------------------ inference

    def _now_s(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_poll(self) -> None:
        now = self._now_s()
        with self._lock:
            if not self._active or self._sync is None or self._scheduler is None:
                return
            if not self._scheduler.due(now):
                return
            assembly = self._sync.assemble(now)
            if assembly.refusal is not None:
                r = assembly.refusal
                self.stats.refusals[r.code] = self.stats.refusals.get(r.code, 0) + 1
                self.stats.last_refusal = r.message
                self.get_logger().warn(f"no observation: {r.message}", throttle_duration_sec=2.0)
                return
            self.stats.last_refusal = ""
            newest = self._scheduler.newest_stamp_s
            if newest is not None and assembly.observation.stamp_s <= newest:
                return  # no new reading since the last inference started: its chunk would be a duplicate
            self.stats.last_observation_age_s = assembly.age_s
            self.stats.last_sync_spread_s = assembly.spread_s
            self._scheduler.on_start(assembly.observation.stamp_s)
            job = _Job(assembly.observation, now, time.perf_counter(), self._generation)
        self._jobs.put(job)

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            try:
                self._run_job(job)
            finally:
                with self._lock:
                    if self._scheduler is not None:
                        self._scheduler.on_finish(job.observation.stamp_s)

    def _run_job(self, job: _Job) -> None:
        policy = self.policy
        if policy is None:
            return
        try:
            chunk = policy.infer(job.observation)
            if not isinstance(chunk, ActionChunk):
                raise TypeError(f"policy.infer returned {type(chunk).__name__}, expected ActionChunk")
            bad_rows = np.flatnonzero(~np.isfinite(chunk.values).all(axis=1))
            if bad_rows.size:
                raise ValueError(f"policy.infer returned non-finite action values in rows {bad_rows[:10].tolist()} "
                                 f"of {chunk.num_steps}; chunk not published")
        except Exception as err:  # noqa: BLE001 - a failing inference is reported and retried, never kills the node
            with self._lock:
                self.stats.inference_failures += 1
                self.stats.last_error = f"{type(err).__name__}: {err}"
            self.get_logger().error(f"inference failed: {type(err).__name__}: {err}", throttle_duration_sec=2.0)
            return
        # The chunk is stamped with the capture time of the observation it was computed from.
        if chunk.stamp_s != job.observation.stamp_s:
            chunk = dataclasses.replace(chunk, stamp_s=job.observation.stamp_s)
        msg = cv.chunk_to_msg(chunk)
        with self._lock:
            if not self._active or job.generation != self._generation or self._chunk_pub is None:
                return
            if chunk.stamp_s <= self._last_published_stamp_s:
                # Pipelined inferences may finish out of order; a newer chunk is already out.
                self.stats.chunks_superseded += 1
                return
            self._chunk_pub.publish(msg)
            self._last_published_stamp_s = chunk.stamp_s
            now = self._now_s()
            latency = max(0.0, now - job.start_clock_s)
            assert self._scheduler is not None
            self._scheduler.on_latency(latency)
            self._scheduler.on_chunk(chunk.stamp_s, chunk.num_steps, chunk.period_s)
            self.stats.chunks_published += 1
            self.stats.last_latency_wall_s = time.perf_counter() - job.start_wall_s

    # ------------------------------------------------------------------ diagnostics

    def _publish_diagnostics(self) -> None:
        with self._lock:
            if not self._active or self._diag_pub is None or self._scheduler is None:
                return
            s = self.stats
            level, message = "ok", "publishing action chunks"
            if s.last_refusal:
                level, message = "warn", f"no observation: {s.last_refusal}"
            elif self._scheduler.latency_exceeds_horizon:
                level, message = "warn", (
                    "inference latency too long for the chunk: the arm will wait between chunks "
                    "(raise max_concurrent_inferences or use longer chunks)"
                )
            if s.last_error and s.inference_failures and s.chunks_published == 0:
                level, message = "error", f"inference failing: {s.last_error}"
            values = {
                "mode": self._scheduler.mode,
                "chunks_published": s.chunks_published,
                "inference_latency_s": _fmt(s.last_latency_wall_s),
                "latency_estimate_s": _fmt(self._scheduler.latency.estimate_s),
                "observation_age_s": _fmt(s.last_observation_age_s),
                "sync_spread_s": _fmt(s.last_sync_spread_s),
                "inference_failures": s.inference_failures,
                "in_flight": self._scheduler.in_flight,
                **{f"refusals_{k}": v for k, v in sorted(s.refusals.items())},
            }
            msg = cv.make_diagnostics(f"{self.get_name()}: policy", level, message, values, stamp_s=self._now_s())
            self._diag_pub.publish(msg)

    def destroy_node(self) -> None:
        self._release()
        super().destroy_node()

    def _param(self, name: str) -> Any:
        return self.get_parameter(name).value


def _desc(text: str) -> ParameterDescriptor:
    return ParameterDescriptor(description=text)


def _fmt(x: float) -> str:
    return "nan" if not math.isfinite(x) else f"{x:.4f}"


def main(args: list[str] | None = None) -> int:
    """`ros2 run vla_ros policy_node`: configure + activate unless `autostart:=false`; SIGINT/SIGTERM
    deactivate (no more chunks; an inference in flight is dropped) and exit 0 (vla_ros.nodes.runtime)."""
    from rclpy.executors import SingleThreadedExecutor

    from vla_ros.nodes.runtime import run_node

    code = run_node(PolicyNode, SingleThreadedExecutor, args=args, name="policy", destroy=_destroy_at_exit)
    if any(t.name.startswith("policy_inference_") and t.is_alive() for t in threading.enumerate()):
        # An abandoned inference (see _destroy_at_exit) holds interpreter teardown until its forward
        # pass ends (torch's thread pools are joined at exit; measured: > 5 s for a CPU VLA under
        # load, so launch escalated to SIGTERM). Nothing is left to clean up: leave now.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _destroy_at_exit(node: PolicyNode) -> None:
    """The process is exiting (deactivated already): an inference still running -- seconds on a CPU,
    more for a 7B model -- is abandoned, not joined for up to 30 s as PolicyNode.destroy_node does
    (launch escalates to SIGTERM 5 s after Ctrl-C). Its thread is a daemon and, the node being
    inactive, its chunk would be dropped anyway."""
    LifecycleNode.destroy_node(node)


if __name__ == "__main__":
    sys.exit(main())
