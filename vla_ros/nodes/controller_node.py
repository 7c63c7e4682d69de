"""controller_node: action chunks in, ros2_control commands out (a thin lifecycle node over
vla_ros.core.controller.ControllerCore, which holds every decision).

Lifecycle (ros2/demos lifecycle_py pattern):
- configure: load the embodiment (+ kinematics), create subscriptions, publishers, the
  `~/release_estop` service and the timers;
- activate: start commanding (hold where the arm is measured, then follow accepted chunks);
- deactivate: hold (the stop is still published; then nothing until activated again);
- cleanup / shutdown: free everything.
Publishers are plain (not lifecycle) publishers: the core decides what may be published, and the
hold issued on deactivate must still go out.

Subscribes: `action_chunk` (trajectory_msgs/JointTrajectory, schema in doc/INTERFACES.md),
each arm's `joint_states` (`<ns>/joint_states` for namespaced arms), `estop` (std_msgs/Bool,
true latches a hold; false does nothing -- release with the service).
Publishes: each arm's command topic from the embodiment config (JointTrajectory for a JTC,
Float64MultiArray for a forward controller), each gripper's command topic (Float64MultiArray),
`diagnostics` (state, last refusal reason, chunk age, rates) and `planned_path` (MarkerArray, one
LINE_STRIP per arm of the planned tool path in the arm's base frame).
Service: `~/release_estop` (std_srvs/Trigger).

Time is the node's clock (`use_sim_time` follows /clock): chunk stamps, joint-state arrival
times and trajectory stamps are all on it.

Threads: made for a MultiThreadedExecutor. Deciding a chunk (IK, validation, plan fitting; up to
max_chunk_points steps) runs in its own callback group and outside the core's lock except for a
snapshot and the atomic commit (`ControllerCore.decide_chunk`); the e-stop (and the release
service), the command timer + joint_states, and diagnostics each have their own group, so none
of them waits for a chunk. The node also listens to its own trajectory topics to measure the
publish->arrival delay that the start lead covers.

Every callback ends in a decision: anything that escapes the core's logic (a bug) is caught at
the callback boundary, counted (`internal_errors` in diagnostics), logged with its traceback,
and the arm holds; a chunk being decided is refused.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
import time
import traceback
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import ParameterDescriptor
from rclpy._rclpy_pybind11 import InvalidHandle
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float64MultiArray
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory
from visualization_msgs.msg import MarkerArray

from vla_ros.core.action_spaces import gripper_action_name
from vla_ros.core.controller import ESTOP, HOLDING, ControllerConfig, ControllerCore, PositionOut, TrajectoryOut
from vla_ros.core.embodiment import EmbodimentSpec, load_embodiment
from vla_ros.core.kinematics import RobotKinematics
from vla_ros.core.safety import SafetyConfig
from vla_ros.core.types import ActionChunk
from vla_ros.nodes import conversions as cv
from vla_ros.nodes.chunk_worker import ChunkWorker
from vla_ros.nodes.follow_joint_trajectory import Tolerances
from vla_ros.nodes.real_interfaces import ControllerRealInterfaces, check_message_packages
from vla_ros.nodes.ros_msgs import MessagesUnavailable
from vla_ros.nodes.runtime import refuse_parameter_changes_once_configured
from vla_ros.nodes.trajectory_cdr import TooManyPoints

COMMAND_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
ESTOP_QOS = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
# Python threads take turns every switch interval (default 5 ms): while a chunk is being decided,
# the e-stop thread must get the interpreter within a fraction of a command period.
GIL_SWITCH_INTERVAL_S = 0.0005


def _desc(text: str) -> ParameterDescriptor:
    return ParameterDescriptor(description=text)


def _locked(method):
    """Serialise access to the (not thread-safe) core: callbacks run on the executor's threads,
    lifecycle transitions may be triggered from any other thread (a supervisor, a test)."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)

    return wrapper


def _guarded(method):
    """The last-resort guard at a callback boundary: an exception (a bug: every input path is
    meant to end in an accept or a refusal) is reported and the arm holds; it never propagates
    into the executor, which would kill the node. A callback still running while the node is
    being destroyed (its publishers already gone) is not a bug: logged at debug level only."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except InvalidHandle as err:
            self.get_logger().debug(f"{method.__name__} during node destruction: {err}")
            return None
        except Exception as err:  # noqa: BLE001 - this is the boundary that must not raise
            self._internal_error(method.__name__, err)
            return None

    return wrapper


class ControllerNode(LifecycleNode):
    """See the module docstring. `spec` / `kinematics` may be passed in-process (tests, bench);
    otherwise the `embodiment` parameter names the config."""

    def __init__(self, node_name: str = "controller", *, spec: EmbodimentSpec | None = None,
                 kinematics: RobotKinematics | None = None, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        d = self.declare_parameter
        d("embodiment", "fr3", _desc("embodiment config name (fr3, franka, ur5e, aloha, ...) or YAML path"))
        d("max_chunk_age_s", 1.0, _desc("refuse chunks whose stamp is older than this (s)"))
        d("max_chunk_future_s", 0.1, _desc("refuse chunks stamped further than this in the future (s)"))
        d("joint_state_timeout_s", 0.2, _desc("joint_states older than this stop all commanding (s)"))
        d("replan_rate_hz", 20.0, _desc("rate at which trajectory windows are resent to a JTC while moving"))
        d("command_rate_hz", 0.0, _desc("forward-controller streaming rate; 0 = the embodiment's command_rate_hz"))
        d("horizon_s", 0.5, _desc("length of the trajectory window sent to a JTC (s)"))
        d("blend_s", 0.1, _desc("blend window at the seam between chunks (s)"))
        d("max_blend_s", 0.8, _desc("widest blend window tried before refusing an abrupt chunk (s)"))
        d("position_margin_rad", 0.05, _desc("commands stay this far inside the joint limits (rad)"))
        d("max_step_rad", 0.5, _desc("largest joint change between consecutive chunk steps (rad)"))
        d("max_time_scale", 2.0, _desc("slow a too-fast chunk by up to this factor before refusing it"))
        d("diagnostics_rate_hz", 2.0, _desc("diagnostics publishing rate"))
        d("path_rate_hz", 5.0, _desc("planned_path marker publishing rate"))
        d("max_chunk_points", 1000, _desc("longest action chunk decided; longer ones are refused unread"))
        d("min_chunk_period_s", 0.0, _desc("shortest accepted chunk period (s); 0 = policy period / 10"))
        d("max_chunk_period_s", 0.0, _desc("longest accepted chunk period (s); 0 = policy period x 10"))
        d("max_chunk_duration_s", 30.0, _desc("longest accepted chunk, first to last step (s)"))
        d("max_start_lead_s", 0.1, _desc("upper bound of the start lead that covers the measured "
                                         "publish->arrival delay of trajectories (s)"))
        d("path_tolerance_rad", 0.0, _desc("FollowJointTrajectory goals: per-joint path tolerance (rad); 0 = the JTC's"))
        d("goal_tolerance_rad", 0.0, _desc("FollowJointTrajectory goals: per-joint goal tolerance (rad); 0 = the JTC's"))
        d("goal_time_tolerance_s", 0.0, _desc("FollowJointTrajectory goals: goal_time_tolerance (s)"))
        # Off by default: on the 2-core test machine it did not shorten the e-stop's p99 under chunk
        # load (bench safety: CPU, not the interpreter lock, is the limit there); for hosts with spare cores.
        d("chunk_worker", False, _desc("decide chunks (IK, safety checks, plan fit) in a worker process, so that "
                                       "e-stops, the command timer and joint_states never wait for the "
                                       "interpreter lock meanwhile; false: in the node's chunk thread"))
        d("chunk_worker_timeout_s", 2.0, _desc("a worker that does not answer within this is restarted and the "
                                               "chunk refused (the arm holds)"))
        refuse_parameter_changes_once_configured(self)
        self._lock = threading.RLock()
        self._chunk_group = MutuallyExclusiveCallbackGroup()
        self._estop_group = MutuallyExclusiveCallbackGroup()
        self._control_group = MutuallyExclusiveCallbackGroup()
        self._report_group = MutuallyExclusiveCallbackGroup()
        self._given_spec = spec
        self._given_kin = kinematics
        self.spec: EmbodimentSpec | None = None
        self.core: ControllerCore | None = None
        self._subs: list = []
        self._pubs: dict[str, Any] = {}
        self._command_subscribers: dict[str, int] = {}  # per command topic, as of the last tick
        # not `_timers`: that is rclpy.Node's own list (shadowing it drops timers from the executor)
        self._node_timers: list = []
        self._service = None
        self._diag_pub = None
        self._path_pub = None
        self._last_state = "unconfigured"
        self.estop_handling_s: list[float] = []
        self._real: ControllerRealInterfaces | None = None  # franka_gripper / FollowJointTrajectory / driver state
        self.chunk_worker: ChunkWorker | None = None
        self._gripper_stale = False

    # ------------------------------------------------------------------ helpers
    def now_s(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _p(self, name: str) -> Any:
        return self.get_parameter(name).value

    def _config(self) -> ControllerConfig:
        rate = float(self._p("command_rate_hz"))
        return ControllerConfig(
            max_chunk_age_s=self._p("max_chunk_age_s"),
            max_chunk_future_s=self._p("max_chunk_future_s"),
            joint_state_timeout_s=self._p("joint_state_timeout_s"),
            replan_rate_hz=self._p("replan_rate_hz"),
            command_rate_hz=rate if rate > 0.0 else None,
            horizon_s=self._p("horizon_s"),
            blend_s=self._p("blend_s"),
            max_blend_s=self._p("max_blend_s"),
            max_chunk_points=int(self._p("max_chunk_points")),
            min_chunk_period_s=float(self._p("min_chunk_period_s")) or None,
            max_chunk_period_s=float(self._p("max_chunk_period_s")) or None,
            max_chunk_duration_s=self._p("max_chunk_duration_s"),
            max_start_lead_s=self._p("max_start_lead_s"),
            safety=SafetyConfig(position_margin_rad=self._p("position_margin_rad"),
                                max_step_rad=self._p("max_step_rad"),
                                max_time_scale=self._p("max_time_scale")),
        )

    # ------------------------------------------------------------------ lifecycle
    @_locked
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            spec = self._given_spec or load_embodiment(str(self._p("embodiment")))
            kin = self._given_kin or RobotKinematics.from_embodiment(spec)
            self.core = ControllerCore(spec, kin, self._config())
            for name in ("diagnostics_rate_hz", "path_rate_hz"):
                if not float(self._p(name)) > 0.0:
                    raise ValueError(f"parameter '{name}' must be a positive rate in Hz, got {self._p(name)}")
            check_message_packages(spec)  # control_msgs / franka_msgs, if the config uses them
            tolerances = Tolerances(self._p("path_tolerance_rad"), self._p("goal_tolerance_rad"),
                                    self._p("goal_time_tolerance_s"))
        except (ValueError, KeyError, OSError, MessagesUnavailable) as err:
            self.core = None
            self.get_logger().error(f"configure failed: {err}")
            return TransitionCallbackReturn.FAILURE
        self.spec = spec
        # The worker builds its own kinematics from the spec: only for the real solver (a test
        # double handed in stays in this process).
        if self._p("chunk_worker") and (self._given_kin is None or type(self._given_kin) is RobotKinematics):
            self.chunk_worker = ChunkWorker(spec, self.core.config, self.core.prepare_chunk,
                                            timeout_s=float(self._p("chunk_worker_timeout_s")))
        # raw=True: the chunk arrives as its CDR bytes and is read by trajectory_cdr, not turned into
        # Python objects by rclpy in one GIL-holding call (8 ms for 1000 points: e-stops waited).
        self._subs.append(self.create_subscription(JointTrajectory, "action_chunk", self._on_chunk, 10,
                                                   callback_group=self._chunk_group, raw=True))
        for arm in spec.arms:
            self._subs.append(self.create_subscription(
                JointState, arm.joint_states_topic,
                lambda msg, name=arm.name: self._on_joint_state(name, msg), qos_profile_sensor_data,
                callback_group=self._control_group))
            kind = JointTrajectory if arm.command.kind == "joint_trajectory" else Float64MultiArray
            self._pubs[arm.command.topic] = self.create_publisher(kind, arm.command.topic, COMMAND_QOS)
            if kind is JointTrajectory:
                # Our own trajectories as the driver receives them: the publish->arrival delay.
                self._subs.append(self.create_subscription(JointTrajectory, arm.command.topic, self._on_own_command,
                                                           COMMAND_QOS, callback_group=self._report_group))
            if arm.gripper is not None and arm.gripper.command is not None:
                topic = arm.gripper.command.topic
                self._pubs[topic] = self.create_publisher(Float64MultiArray, topic, COMMAND_QOS)
            elif arm.gripper is not None and arm.gripper.actions is None:
                self.get_logger().warning(
                    f"arm '{arm.name}': the gripper has no command topic in the config (e.g. franka_gripper is "
                    "action-only); chunks' gripper columns are accepted but not sent")
        # Deep queues: in a burst (a storm of e-stop/release messages while chunks hold the lock) a
        # KEEP_LAST of 10 dropped the oldest: an e-stop `true` followed by ten `false`s was lost,
        # and release requests went unanswered.
        self._subs.append(self.create_subscription(Bool, "estop", self._on_estop, ESTOP_QOS,
                                                   callback_group=self._estop_group))
        self._service = self.create_service(Trigger, "~/release_estop", self._on_release, qos_profile=ESTOP_QOS,
                                            callback_group=self._estop_group)
        self._diag_pub = self.create_publisher(DiagnosticArray, "diagnostics", 10)
        self._path_pub = self.create_publisher(MarkerArray, "planned_path", 10)
        self._real = ControllerRealInterfaces(
            self, spec, tolerances=tolerances, diagnostics_publisher=self._diag_pub, on_change=self._on_driver_change,
            on_trajectory_failure=self._on_trajectory_failure,
            joint_state_timeout_s=float(self._p("joint_state_timeout_s")), now_s=self.now_s)
        if not self._real.empty:
            real = self._real
            self.core.external_problem = lambda: real.driver_problem() or real.trajectory_problem(self.now_s())
        forward = any(a.command.kind == "forward_position" for a in spec.arms)
        tick_hz = self.core.command_rate_hz if forward else self.core.config.replan_rate_hz
        self._node_timers.append(self.create_timer(1.0 / tick_hz, self._on_tick, callback_group=self._control_group))
        self._node_timers.append(self.create_timer(1.0 / float(self._p("diagnostics_rate_hz")), self._publish_diagnostics,
                                                   callback_group=self._report_group))
        self._node_timers.append(self.create_timer(1.0 / float(self._p("path_rate_hz")), self._publish_path,
                                                   callback_group=self._report_group))
        self.get_logger().info(
            f"configured for '{spec.name}': {len(spec.arms)} arm(s), commands "
            f"{[a.command.topic + ' (' + a.command.kind + ')' for a in spec.arms]}, ticking at {tick_hz:.0f} Hz")
        return TransitionCallbackReturn.SUCCESS

    @_locked
    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        if sys.getswitchinterval() > GIL_SWITCH_INTERVAL_S:
            sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
        now = self.now_s()
        self.core.activate(now)
        self._publish(self.core.tick(now))
        self._command_subscribers = self._subscriber_counts()
        return super().on_activate(state)

    @_locked
    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.core.deactivate(self.now_s())
        self._publish(self.core.tick(self.now_s()))
        return super().on_deactivate(state)

    @_locked
    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._free()
        return TransitionCallbackReturn.SUCCESS

    @_locked
    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self.core is not None and self.core.active:
            self.core.deactivate(self.now_s())
            self._publish(self.core.tick(self.now_s()))
        self._free()
        return TransitionCallbackReturn.SUCCESS

    def destroy_node(self) -> None:
        worker, self.chunk_worker = self.chunk_worker, None
        if worker is not None:  # destroyed without a cleanup transition
            worker.close()
        super().destroy_node()

    def _free(self) -> None:
        if self.chunk_worker is not None:
            self.chunk_worker.close()
            self.chunk_worker = None
        if self._real is not None:
            self._real.destroy()
            self._real = None
        for timer in self._node_timers:
            self.destroy_timer(timer)
        for sub in self._subs:
            self.destroy_subscription(sub)
        for pub in self._pubs.values():
            self.destroy_publisher(pub)
        for pub in (self._diag_pub, self._path_pub):
            if pub is not None:
                self.destroy_publisher(pub)
        if self._service is not None:
            self.destroy_service(self._service)
        self._node_timers, self._subs, self._pubs, self._command_subscribers = [], [], {}, {}
        self._service = self._diag_pub = self._path_pub = None
        self.core = None
        self.spec = None

    @_locked
    def hold(self) -> None:
        """Stop where the arm is commanded now and publish that at once (used on deactivate and
        on Ctrl-C)."""
        if self.core is not None and self.core.scheduler.plan is not None:
            now = self.now_s()
            self.core.hold(now)
            self._publish(self.core.tick(now))

    # ------------------------------------------------------------------ callbacks
    def _internal_error(self, where: str, err: BaseException) -> None:
        with self._lock:
            self.get_logger().error(f"internal error in {where} (holding): {type(err).__name__}: {err}\n"
                                    f"{traceback.format_exc()}")
            if self.core is None:
                return
            try:
                now = self.now_s()
                self.core.internal_error(where, err, now)
                self._publish(self.core.tick(now, stream=False))
            except Exception as err2:  # noqa: BLE001 - the hold itself failed: say so, never raise
                self.get_logger().error(f"could not hold after the internal error: {type(err2).__name__}: {err2}")

    @_guarded
    def _on_chunk(self, data: bytes) -> None:
        # `data`: the serialized JointTrajectory (a raw subscription). Not under the lock as a whole:
        # the decision takes the lock only for its snapshot and its commit
        # (ControllerCore.decide_chunk), so e-stops and ticks never wait for it.
        core = self.core
        if core is None:
            return
        try:
            chunk = cv.serialized_to_chunk(data, default_period_s=self.spec.policy_period_s,
                                           max_points=core.config.max_chunk_points)
            problem = None
        except TooManyPoints as err:
            problem = core.chunk_bounds_problem(err.num_points)
        except ValueError as err:
            problem = f"malformed action chunk: {err}"
        real = self._real
        if problem is None and real is not None and not real.empty:
            problem = real.chunk_refusal(self._gripper_columns(chunk), self.now_s())
            scale = real.chunk_time_scale()
            if problem is None and scale != 1.0:
                # a scaled JTC (UR speed scaling) runs the chunk this much slower
                chunk = ActionChunk(chunk.names, chunk.values, chunk.period_s * scale, chunk.stamp_s)
        if problem is not None:
            with self._lock:
                decision = core.refuse(problem, self.now_s())
        else:
            worker = self.chunk_worker
            decision = core.decide_chunk(chunk, self.now_s, self._lock,
                                         prepare=None if worker is None else worker.prepare)
        if not decision.accepted and not core.active:
            # Chunks still in flight around a deactivation are expected; not worth a warning.
            self.get_logger().debug(f"action chunk refused: {decision.reason}")
        elif not decision.accepted:
            self.get_logger().warning(f"action chunk refused: {decision.reason}")
        elif real is not None:
            for client in real.trajectories.values():
                client.resume()  # a new chunk ends a hold after a failed goal
        with self._lock:
            if self.core is core:
                self._publish(core.tick(self.now_s(), stream=False))

    def _gripper_columns(self, chunk: ActionChunk) -> dict:
        out = {}
        for arm in self.spec.arms:
            name = gripper_action_name(arm)
            if name in chunk.names:
                out[arm.name] = chunk.column(name)
        return out

    @_guarded
    @_locked
    def _on_driver_change(self) -> None:
        # a driver's state changed (program stopped / reflex / recovered): act now, not at the next
        # tick. On recovery the driver has the arm where it stopped it: hold there, not on the plan.
        if self.core is not None and self._real is not None and self._real.driver_problem() is None:
            self.core.hold_measured(self.now_s())
        self._on_tick()

    @_guarded
    @_locked
    def _on_trajectory_failure(self, arm: str, reason: str) -> None:
        if self.core is None:
            return
        now = self.now_s()
        self.core.last_refusal = f"arm '{arm}': {reason}; holding until the next chunk"
        # the JTC holds the measured position after an abort: so does the plan
        if not self.core.hold_measured(now):
            self.core.hold(now)
        self._publish(self.core.tick(now, stream=False))

    def _update_grippers(self, now: float) -> None:
        real, core = self._real, self.core
        if real is None or not real.grippers:
            return
        problem = real.gripper_problem(now)
        if problem is not None and not self._gripper_stale:
            self.get_logger().warning(f"{problem}: holding; chunks that need the gripper are refused")
            core.last_refusal = f"gripper stale: {problem}"
            core.hold(now)
            self._publish(core.tick(now, stream=False))
        self._gripper_stale = problem is not None
        if not core.active or core.state(now) in ("fault", "estop", "waiting_for_joint_states"):
            return
        for arm, g in core.gripper_targets(now).items():
            client = real.grippers.get(arm)
            if client is not None:
                client.update(g, now)

    @_guarded
    @_locked
    def _on_joint_state(self, arm: str, msg: JointState) -> None:
        if self.core is not None:
            self.core.update_joint_state(arm, msg.name, msg.position, self.now_s())

    @_guarded
    def _on_own_command(self, msg: JointTrajectory) -> None:
        # No lock: recording a delay is one list append (atomic under the GIL).
        core = self.core
        stamp = cv.time_to_s(msg.header.stamp)
        if core is not None and stamp > 0.0:
            core.record_command_delay(self.now_s() - stamp)

    @_guarded
    def _on_estop(self, msg: Bool) -> None:
        if not msg.data:
            return
        start = time.perf_counter()
        with self._lock:
            if self.core is None:
                return
            now = self.now_s()
            first = not self.core.estop_latched
            self.core.estop(now)
            self._publish(self.core.tick(now, stream=False))
        # From the callback's start to the hold published, the lock wait included (bench safety).
        self.estop_handling_s.append(time.perf_counter() - start)
        del self.estop_handling_s[:-1000]
        if first:
            self.get_logger().warning("e-stop received: holding until ~/release_estop")

    @_locked
    def _on_release(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        if self.core is None:
            response.success, response.message = False, "controller is not configured"
            return response
        try:
            response.success, response.message = self.core.release_estop(self.now_s())
        except Exception as err:  # noqa: BLE001 - the guard: the e-stop stays latched
            self._internal_error("_on_release", err)
            response.success, response.message = False, f"internal error: {err}"
        self.get_logger().info(response.message)
        return response

    @_guarded
    @_locked
    def _on_tick(self) -> None:
        if self.core is None:
            return
        now = self.now_s()
        self._resend_to_new_subscribers()
        self._publish(self.core.tick(now))
        self._update_grippers(now)
        state = self.core.state(now)
        if state != self._last_state:
            # State changes (fault, recovery, e-stop) are rare and always worth a log line.
            status = self.core.status(now)
            line = f"controller state {self._last_state} -> {state}: {status.message}"
            # rclpy loggers fix one severity per call site, hence separate calls; the routine
            # executing <-> holding flip between chunks is only worth a debug line.
            if status.level == "error":
                self.get_logger().warning(line)
            elif {self._last_state, state} <= {"executing", "holding"}:
                self.get_logger().debug(line)
            else:
                self.get_logger().info(line)
            self._last_state = state

    def _subscriber_counts(self) -> dict[str, int]:
        return {topic: pub.get_subscription_count() for topic, pub in self._pubs.items()}

    def _resend_to_new_subscribers(self) -> None:
        """A trajectory controller that subscribes after the hold went out (a driver started, or
        restarted, after this node; discovery still settling when the node was activated) gets it
        with this tick, not with the next chunk: while the arm holds (or the e-stop is latched) and a
        command topic gains a subscriber, the current plan is sent again as it is. Moving plans
        stream a new window every tick anyway."""
        counts = self._subscriber_counts()
        gained = any(n > self._command_subscribers.get(topic, 0) for topic, n in counts.items())
        self._command_subscribers = counts
        if gained and self._last_state in (HOLDING, ESTOP):
            self.core.resend()

    # ------------------------------------------------------------------ output
    def _publish(self, outputs: list[TrajectoryOut | PositionOut]) -> None:
        # Every message is built before any is published: a value that cannot be encoded raises
        # here (caught by the callback's guard, which holds) and nothing half-made goes out.
        msgs = []
        real = self._real
        factor = 1.0 if real is None else real.trajectory_time_factor()
        for out in outputs:
            if isinstance(out, TrajectoryOut) and real is not None and out.arm in real.trajectories:
                # command.interface follow_joint_trajectory: a goal instead of the topic
                real.trajectories[out.arm].send(out.joint_names, out.time_from_start_s * factor, out.positions_rad,
                                                out.velocities_rad_s / factor, out.stamp_s)
            elif isinstance(out, TrajectoryOut) and factor != 1.0:
                # a scaled JTC's clock runs at the speed scaling: times in its clock
                msgs.append((out.topic, cv.make_joint_trajectory(
                    out.joint_names, out.positions_rad, out.time_from_start_s * factor,
                    velocities=out.velocities_rad_s / factor, stamp_s=out.stamp_s)))
            elif isinstance(out, TrajectoryOut):
                msgs.append((out.topic, cv.make_joint_trajectory(
                    out.joint_names, out.positions_rad, out.time_from_start_s, velocities=out.velocities_rad_s,
                    stamp_s=out.stamp_s)))
            else:
                msgs.append((out.topic, cv.make_float64_multi_array(out.positions)))
        for topic, msg in msgs:
            self._pubs[topic].publish(msg)

    @_guarded
    @_locked
    def _publish_diagnostics(self) -> None:
        if self.core is None:
            return
        now = self.now_s()
        status = self.core.status(now)
        values = status.values if self._real is None else {**status.values, **self._real.diagnostic_values()}
        self._diag_pub.publish(cv.make_diagnostics(f"{self.get_name()}: controller", status.level, status.message,
                                                   values, hardware_id=self.spec.name, stamp_s=now))

    @_guarded
    @_locked
    def _publish_path(self) -> None:
        if self.core is None or not self.core.active:
            return
        now = self.now_s()
        paths = self.core.planned_tool_path(now)
        if paths:
            frames = {a.name: a.base_frame for a in self.spec.arms}
            self._path_pub.publish(cv.make_path_markers(paths, frames, stamp_s=now))


#: Executor threads: at least one per callback group (chunks, control, e-stop, report, and the node's
#: default group: lifecycle services, action clients) and a spare. rclpy's default, one per CPU,
#: gave 2 on a 2-core machine: an e-stop then waited behind two busy groups (bench safety: idle
#: e-stop latency p99 250-460 ms with 2 threads, 8-11 ms with 4).
MIN_EXECUTOR_THREADS = 6


def make_executor(context=None) -> MultiThreadedExecutor:
    """The controller's executor, as `controller_node` runs it."""
    return MultiThreadedExecutor(num_threads=max(MIN_EXECUTOR_THREADS, os.cpu_count() or 1), context=context)


def main(args: list[str] | None = None) -> int:
    """`ros2 run vla_ros controller_node`: configure + activate unless `autostart:=false`, spin on a
    multi-threaded executor; SIGINT/SIGTERM deactivate (the arm holds) and exit 0
    (vla_ros.nodes.runtime)."""
    from vla_ros.nodes.runtime import run_node

    return run_node(ControllerNode, make_executor, args=args, name="controller",
                    deactivated_message="deactivated: hold sent")


if __name__ == "__main__":
    sys.exit(main())
