"""The whole graph in one process for the end-to-end tests: sim_node (MuJoCo, publishes /clock),
controller_node (+ policy_node) on simulated time, and a probe node that plays the policy / the
operator (action_chunk, estop, ~/release_estop) and records every topic the tests judge.

Everything the tests assert on arrives through real ROS topics; the node objects are only read
for values a topic does not carry (the plan's end time, the sim's rejection counter is also on
its diagnostics).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float64MultiArray
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from vla_ros.core.embodiment import EmbodimentSpec, load_embodiment
from vla_ros.core.jtc import JointTrajectoryController, TrajectoryCommand, TrajectoryPoint
from vla_ros.core.types import ActionChunk
from vla_ros.nodes import conversions as cv
from vla_ros.nodes.controller_node import ControllerNode
from vla_ros.nodes.runtime import BackgroundSpinner
from vla_ros.nodes.sim_node import SimNode

RELAY_PREFIX = "e2e_relay"


@dataclass(frozen=True)
class Recorded:
    """One received message and the probe's simulated clock when it arrived."""

    received_s: float
    msg: object


class Probe(Node):
    """Subscribes to joint_states, command, gripper, diagnostics and action_chunk topics;
    publishes action_chunk and estop; optionally relays joint_states to the controller through
    `relay_filter` (return None to drop a message, or a modified copy)."""

    def __init__(self, spec: EmbodimentSpec, context, relay: bool) -> None:
        super().__init__("e2e_probe", context=context, parameter_overrides=[Parameter("use_sim_time", value=True)])
        self.spec = spec
        self.states: dict[str, list[Recorded]] = {a.name: [] for a in spec.arms}
        self.commands: dict[str, list[Recorded]] = {a.name: [] for a in spec.arms}
        self.grippers: dict[str, list[Recorded]] = {a.name: [] for a in spec.arms}
        self.controller_diagnostics: list[Recorded] = []
        self.sim_diagnostics: list[Recorded] = []
        self.chunks: list[Recorded] = []
        self.relay_filter: Callable[[str, JointState], JointState | None] = lambda arm, msg: msg
        self._relay_pubs = {}
        for arm in spec.arms:
            self.create_subscription(JointState, arm.joint_states_topic,
                                     lambda m, a=arm.name: self._on_state(a, m), qos_profile_sensor_data)
            self.create_subscription(JointTrajectory, arm.command.topic,
                                     lambda m, a=arm.name: self._record(self.commands[a], m), 100)
            if arm.gripper is not None and arm.gripper.command is not None:
                self.create_subscription(Float64MultiArray, arm.gripper.command.topic,
                                         lambda m, a=arm.name: self._record(self.grippers[a], m), 100)
            if relay:
                self._relay_pubs[arm.name] = self.create_publisher(
                    JointState, f"{RELAY_PREFIX}/{arm.joint_states_topic}", 10)
        self.create_subscription(DiagnosticArray, "diagnostics", self._on_diagnostics, 50)
        self.create_subscription(JointTrajectory, "action_chunk", lambda m: self._record(self.chunks, m), 50)
        self.chunk_pub = self.create_publisher(JointTrajectory, "action_chunk", 10)
        self.estop_pub = self.create_publisher(Bool, "estop", 10)
        self.release_client = self.create_client(Trigger, "controller/release_estop")

    def now_s(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _record(self, bucket: list, msg) -> None:
        bucket.append(Recorded(self.now_s(), msg))

    def _on_state(self, arm: str, msg: JointState) -> None:
        self._record(self.states[arm], msg)
        pub = self._relay_pubs.get(arm)
        if pub is not None:
            out = self.relay_filter(arm, msg)
            if out is not None:
                pub.publish(out)

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.startswith("controller"):
                self._record(self.controller_diagnostics, status)
            elif status.name.startswith("sim_node"):
                self._record(self.sim_diagnostics, status)


class Graph:
    """sim_node + controller_node (+ optional extra nodes) on one MultiThreadedExecutor, on
    simulated time. `relay=True` remaps the controller's joint_states through the probe so a
    test can drop joints or stop them."""

    def __init__(self, embodiment: str, *, relay: bool = False, real_time_factor: float = 1.0,
                 joint_state_rate_hz: float = 100.0, camera_rate_hz: float = 10.0,
                 controller_params: dict | None = None) -> None:
        self.spec = load_embodiment(embodiment)
        self.context = rclpy.Context()
        rclpy.init(context=self.context, args=[])
        self.nodes: list[Node] = []
        self.executor: MultiThreadedExecutor | None = None
        self.spinner: BackgroundSpinner | None = None
        try:
            self.sim = SimNode(context=self.context, parameter_overrides=[
                Parameter("embodiment", value=embodiment),
                Parameter("joint_state_rate_hz", value=joint_state_rate_hz),
                Parameter("camera_rate_hz", value=camera_rate_hz),
                Parameter("real_time_factor", value=real_time_factor)])
            self.nodes.append(self.sim)
            # A generous joint_states watchdog: on a loaded machine the executor may fall behind
            # the sim thread for a while, and a stale-state fault would stop the motion a test
            # is about (tests that are about missing joint_states drop joints instead).
            params = {"embodiment": embodiment, "use_sim_time": True, "joint_state_timeout_s": 1.0}
            params.update(controller_params or {})
            remaps: list[str] = []
            if relay:
                for arm in self.spec.arms:
                    remaps += ["-r", f"{arm.joint_states_topic}:={RELAY_PREFIX}/{arm.joint_states_topic}"]
            self.controller = ControllerNode(
                context=self.context, cli_args=(["--ros-args", *remaps] if remaps else None),
                parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
            self.nodes.append(self.controller)
            self.probe = Probe(self.spec, self.context, relay)
            self.nodes.append(self.probe)
            # The controller alone may run four callback groups at once (chunk, e-stop, control,
            # reports): enough threads that the sim and the probe never wait for it.
            self.executor = MultiThreadedExecutor(num_threads=6, context=self.context)
            for n in self.nodes:
                self.executor.add_node(n)
            self.spinner = BackgroundSpinner(self.executor, "e2e_executor", period_s=0.05).start()
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ set-up
    def add_node(self, node: Node) -> None:
        self.nodes.append(node)
        self.executor.add_node(node)

    def start_controller(self) -> None:
        """Configure + activate once joint_states flow; returns when the controller holds."""
        assert self.wait(lambda: all(len(v) > 5 for v in self.probe.states.values()), 60.0), "no joint_states"
        assert self.controller.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert self.wait(lambda: self.controller.core.measured_positions() is not None, 30.0)
        assert self.controller.trigger_activate() == TransitionCallbackReturn.SUCCESS
        assert self.wait(lambda: self.controller.core.state(self.controller.now_s()) == "holding", 30.0), \
            self.controller.core.status(self.controller.now_s())

    def close(self) -> None:
        # Quiet the graph first (no physics, lifecycle nodes inactive), then stop spinning before
        # the nodes' entities are destroyed, as `vla-ros demo` does.
        if getattr(self, "sim", None) is not None:
            self.sim.stop()
        for n in self.nodes:
            if isinstance(n, LifecycleNode) and n._state_machine.current_state[1] == "active":
                n.trigger_deactivate()
        # Generous: on a loaded machine the executor's threads may take a while to finish their
        # callbacks, and destroying a node under a spinning executor raises in its thread.
        if self.spinner is None or self.spinner.stop(timeout_s=30.0):
            for n in reversed(self.nodes):
                n.destroy_node()
        rclpy.try_shutdown(context=self.context)

    # ------------------------------------------------------------------ time
    def sim_now(self) -> float:
        return self.sim.hw.time_s

    def now(self) -> float:
        """The controller's clock (simulated time from /clock): what chunk stamps are judged on."""
        return self.controller.now_s()

    @staticmethod
    def wait(predicate: Callable[[], bool], timeout_wall_s: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout_wall_s
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.005)
        return bool(predicate())

    def wait_sim(self, duration_s: float, timeout_wall_s: float = 60.0) -> None:
        end = self.probe.now_s() + duration_s
        assert self.wait(lambda: self.probe.now_s() >= end, timeout_wall_s), "simulated time stalled"

    # ------------------------------------------------------------------ chunks
    def send(self, names, rows, period_s: float | None = None, stamp_s: float | None = None) -> ActionChunk:
        chunk = ActionChunk(tuple(names), np.asarray(rows, dtype=float),
                            self.spec.policy_period_s if period_s is None else period_s,
                            self.now() if stamp_s is None else stamp_s)
        self.probe.chunk_pub.publish(cv.chunk_to_msg(chunk))
        return chunk

    def wait_decisions(self, n: int, timeout_wall_s: float = 30.0) -> None:
        core = self.controller.core
        assert self.wait(lambda: core.chunks_accepted + core.chunks_refused >= n, timeout_wall_s), \
            f"the controller decided {core.chunks_accepted + core.chunks_refused} chunks, expected {n}"

    def release_estop(self) -> Trigger.Response:
        client = self.probe.release_client
        assert client.wait_for_service(timeout_sec=10.0)
        future = client.call_async(Trigger.Request())
        assert self.wait(future.done, 10.0)
        return future.result()

    # ------------------------------------------------------------------ measurements
    def measured(self, arm: str, since_s: float = -np.inf) -> tuple[np.ndarray, np.ndarray]:
        """(stamps (K,), positions (K, n)) of `arm`'s joints from joint_states stamped >= since_s."""
        spec_arm = self.spec.arm(arm)
        rows = [r.msg for r in list(self.probe.states[arm]) if cv.time_to_s(r.msg.header.stamp) >= since_s]
        t = np.array([cv.time_to_s(m.header.stamp) for m in rows])
        q = np.array([cv.joint_state_positions(m, spec_arm.joint_names) for m in rows]).reshape(len(rows), -1)
        return t, q

    def measured_all(self, since_s: float = -np.inf) -> tuple[np.ndarray, np.ndarray]:
        """Every arm's joints in spec.joint_names order, sampled on the first arm's stamps."""
        ts, parts = None, []
        for arm in self.spec.arms:
            t, q = self.measured(arm.name, since_s)
            if ts is None:
                ts = t
            parts.append(np.array([np.interp(ts, t, q[:, j]) for j in range(q.shape[1])]).T.reshape(len(ts), -1))
        return ts, np.hstack(parts)

    def latest(self) -> np.ndarray:
        """Every arm's newest measured joints (spec.joint_names order). From each arm's newest
        message, not the probe's clock: on a loaded machine /clock can be handled before the
        joint_states queued behind it."""
        parts = []
        for arm in self.spec.arms:
            assert self.wait(lambda a=arm.name: len(self.probe.states[a]) > 0, 30.0), f"no joint_states for {arm.name}"
            parts.append(cv.joint_state_positions(self.probe.states[arm.name][-1].msg, arm.joint_names))
        return np.concatenate(parts)

    def measured_gripper(self, arm: str) -> float:
        spec_arm = self.spec.arm(arm)
        msg = self.probe.states[arm][-1].msg
        return float(cv.joint_state_positions(msg, [spec_arm.gripper.joint_name])[0])

    def commands(self, arm: str, since_s: float = -np.inf) -> list[Recorded]:
        return [r for r in list(self.probe.commands[arm]) if r.received_s >= since_s]

    def controller_status(self, since_s: float = -np.inf) -> dict[str, str] | None:
        """The newest controller diagnostics (values + level/message), if one arrived since since_s."""
        recs = [r for r in list(self.probe.controller_diagnostics) if r.received_s >= since_s]
        if not recs:
            return None
        status = recs[-1].msg
        out = {kv.key: kv.value for kv in status.values}
        out["_message"] = status.message
        out["_level"] = int.from_bytes(status.level, "little") if isinstance(status.level, bytes) else int(status.level)
        return out

    def wait_refusal_reported(self, refused: int, since_s: float, timeout_wall_s: float = 30.0) -> dict[str, str]:
        """Wait for controller diagnostics that count `refused` refusals; return them."""
        def ok():
            s = self.controller_status(since_s)
            return s is not None and int(s["chunks_refused"]) >= refused
        assert self.wait(ok, timeout_wall_s), f"no diagnostics with chunks_refused >= {refused}: {self.controller_status()}"
        return self.controller_status(since_s)

    def sim_trajectories_rejected(self) -> int:
        """From the sim's diagnostics topic (and cross-checked against the node's counter)."""
        assert self.wait(lambda: self.probe.sim_diagnostics, 30.0), "no sim diagnostics"
        values = {kv.key: kv.value for kv in self.probe.sim_diagnostics[-1].msg.values}
        return max(int(values["trajectories_rejected"]), self.sim.rejections)


def trajectory_command(msg: JointTrajectory) -> TrajectoryCommand:
    points = tuple(TrajectoryPoint(cv.duration_to_s(p.time_from_start), tuple(p.positions), tuple(p.velocities))
                   for p in msg.points)
    return TrajectoryCommand(tuple(msg.joint_names), points, cv.time_to_s(msg.header.stamp))


def commanded_positions(graph: Graph, arm: str, times_s: np.ndarray) -> np.ndarray:
    """What a joint_trajectory_controller fed with the recorded command messages (at their
    arrival times) commands at `times_s` -- the commanded position, reconstructed from the topic."""
    spec_arm = graph.spec.arm(arm)
    jtc = JointTrajectoryController(spec_arm.command.joint_names)
    recs = sorted(graph.commands(arm), key=lambda r: r.received_s)
    t_meas, q_meas = graph.measured(arm)
    out = np.full((len(times_s), len(spec_arm.joint_names)), np.nan)
    k = 0
    for i, t in enumerate(times_s):
        while k < len(recs) and recs[k].received_s <= t:
            reason = jtc.receive(trajectory_command(recs[k].msg), recs[k].received_s)
            assert reason is None, f"a default JTC rejects command {k} on '{arm}': {reason}"
            k += 1
        q = np.array([np.interp(t, t_meas, q_meas[:, j]) for j in range(q_meas.shape[1])])
        state = jtc.update(t, q, np.zeros_like(q))
        if state is not None:
            out[i] = state.positions
    return out
