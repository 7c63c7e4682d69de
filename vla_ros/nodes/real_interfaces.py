"""The real-arm interfaces an embodiment config asks for, assembled for controller_node and sim_node.

controller side (`ControllerRealInterfaces`): franka_gripper action clients, FollowJointTrajectory
clients, driver-state subscriptions (`vla_ros.core.driver_state`); sim side (`SimRealInterfaces`):
the matching action servers and the driver-state topics a real driver publishes, plus the
services a test (or an operator) uses to stop things the way they stop on a cell:
`dashboard_client/play` / `dashboard_client/stop` (std_srvs/Trigger, as ur_robot_driver's
dashboard client) and `sim/franka_reflex` (std_srvs/SetBool: true triggers a reflex, false is the
error recovery).

Message packages are loaded only when a config uses them; a missing one raises
`ros_msgs.MessagesUnavailable` naming it (the nodes turn that into a failed configure).
"""

from __future__ import annotations

import threading
from typing import Any, Callable

import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import Bool, Float64
from std_srvs.srv import SetBool, Trigger

from vla_ros.core.driver_state import (
    FRANKA_MODE_IDLE,
    FRANKA_MODE_MOVE,
    FRANKA_MODE_REFLEX,
    DriverStateConfig,
    DriverStateMonitor,
)
from vla_ros.core.embodiment import EmbodimentSpec
from vla_ros.nodes import ros_msgs
from vla_ros.nodes.follow_joint_trajectory import (
    FollowJointTrajectoryClient,
    FollowJointTrajectoryServer,
    Tolerances,
)
from vla_ros.nodes.gripper_action import FrankaGripperClient, FrankaGripperServer, required_packages

# ur_robot_driver publishes robot_program_running latched (transient local).
LATCHED_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


def required_message_packages(spec: EmbodimentSpec) -> dict[str, list[str]]:
    """{package: [what needs it]} for the real interfaces `spec` uses."""
    out: dict[str, list[str]] = {}
    for arm in spec.arms:
        if arm.command.interface == "follow_joint_trajectory":
            out.setdefault("control_msgs", []).append(f"arms.{arm.name}.command.interface: follow_joint_trajectory")
        if arm.gripper is not None and arm.gripper.actions is not None:
            for pkg in required_packages(arm.gripper.actions):
                out.setdefault(pkg, []).append(f"arms.{arm.name}.gripper.command.kind: franka_gripper "
                                               f"({arm.gripper.actions.interface})")
        if arm.driver_state.robot_state_topic:
            out.setdefault("franka_msgs", []).append(f"arms.{arm.name}.driver_state.robot_state_topic")
    return out


def check_message_packages(spec: EmbodimentSpec) -> None:
    """Raise MessagesUnavailable naming every missing package and the config keys that need it."""
    missing = []
    for pkg, users in required_message_packages(spec).items():
        ok, why = ros_msgs.available(pkg)
        if not ok:
            missing.append(f"'{pkg}' (needed by {', '.join(users)}): {why}")
    if missing:
        raise ros_msgs.MessagesUnavailable(f"embodiment '{spec.name}' ({spec.config_path}) needs message packages "
                                           f"that are missing: " + "; ".join(missing))


def franka_error_flags(errors_msg) -> tuple[str, ...]:
    """Names of the set flags of a franka_msgs/Errors message."""
    return tuple(n for n in errors_msg.get_fields_and_field_types() if getattr(errors_msg, n) is True)


class ControllerRealInterfaces:
    """Everything controller_node needs for the real interfaces of `spec` (empty for sim configs)."""

    def __init__(self, node: Node, spec: EmbodimentSpec, *, tolerances: Tolerances, diagnostics_publisher,
                 on_change: Callable[[], None], on_trajectory_failure: Callable[[str, str], None],
                 joint_state_timeout_s: float, now_s: Callable[[], float]) -> None:
        check_message_packages(spec)
        self.node, self.spec, self._now = node, spec, now_s
        self._on_change = on_change
        group = MutuallyExclusiveCallbackGroup()
        self.grippers: dict[str, FrankaGripperClient] = {}
        self.trajectories: dict[str, FollowJointTrajectoryClient] = {}
        self.monitors: dict[str, DriverStateMonitor] = {}
        self._subs = []
        self._lock = threading.Lock()
        for arm in spec.arms:
            if arm.gripper is not None and arm.gripper.actions is not None:
                self.grippers[arm.name] = FrankaGripperClient(
                    node, arm, diagnostics_publisher=diagnostics_publisher,
                    joint_state_timeout_s=max(joint_state_timeout_s, 0.5), now_s=now_s)
            if arm.command.interface == "follow_joint_trajectory":
                self.trajectories[arm.name] = FollowJointTrajectoryClient(
                    node, arm.command.action, tolerances=tolerances, now_s=now_s,
                    on_failure=lambda reason, a=arm.name: on_trajectory_failure(a, reason))
            ds = arm.driver_state
            if ds.program_running_topic or ds.speed_scaling_topic or ds.robot_state_topic:
                monitor = DriverStateMonitor(DriverStateConfig(ds.min_speed_scaling))
                self.monitors[arm.name] = monitor
                if ds.program_running_topic:
                    self._subs.append(node.create_subscription(
                        Bool, ds.program_running_topic,
                        lambda m, mon=monitor: self._update(mon.update_program_running, m.data), LATCHED_QOS,
                        callback_group=group))
                if ds.speed_scaling_topic:
                    self._subs.append(node.create_subscription(
                        Float64, ds.speed_scaling_topic,
                        lambda m, mon=monitor: self._update(mon.update_speed_scaling, m.data), 10,
                        callback_group=group))
                if ds.robot_state_topic:
                    state_type = ros_msgs.load("franka_msgs").msg.FrankaRobotState
                    self._subs.append(node.create_subscription(
                        state_type, ds.robot_state_topic,
                        lambda m, mon=monitor: self._update(mon.update_franka_state, m.robot_mode,
                                                            franka_error_flags(m.current_errors)), 10,
                        callback_group=group))

    @property
    def empty(self) -> bool:
        return not (self.grippers or self.trajectories or self.monitors)

    def _update(self, fn, *args) -> None:
        with self._lock:
            before = self.driver_problem()
            try:
                fn(*args)
            except ValueError as err:
                self.node.get_logger().error(f"driver state ignored: {err}")
                return
            after = self.driver_problem()
        if before != after:
            self._on_change()

    # ------------------------------------------------------------------ decisions
    def driver_problem(self) -> str | None:
        """Why a driver says its arm cannot follow now (None: all can)."""
        for name, monitor in self.monitors.items():
            permission = monitor.permission()
            if not permission.may_command:
                return f"arm '{name}': {permission.reason}"
        return None

    def driver_recovering(self) -> bool:
        return any(m.recovering for m in self.monitors.values())

    def gripper_problem(self, now_s: float) -> str | None:
        for name, client in self.grippers.items():
            problem = client.problem(now_s)
            if problem is not None:
                return f"arm '{name}': {problem}"
        return None

    def trajectory_problem(self, now_s: float) -> str | None:
        for name, client in self.trajectories.items():
            problem = client.problem(now_s)
            if problem is not None:
                return f"arm '{name}': {problem}"
        return None

    def chunk_refusal(self, gripper_columns: dict[str, np.ndarray], now_s: float) -> str | None:
        """Why a new chunk must be refused (None: it may run). Ends a driver recovery when it may."""
        for monitor in self.monitors.values():
            permission = monitor.chunk_allowed()
            if not permission.may_command:
                return f"cannot command: {permission.reason}"
        problem = self.gripper_problem(now_s)
        if problem is not None:
            for arm, column in gripper_columns.items():
                client = self.grippers.get(arm)
                if client is not None and client.chunk_needs_gripper(column):
                    return f"the chunk needs the gripper, which is stale: {problem}"
        problem = self.trajectory_problem(now_s)
        if problem is not None:
            return f"cannot command: {problem}"
        return None

    def chunk_time_scale(self) -> float:
        return max((m.chunk_time_scale() for m in self.monitors.values()), default=1.0)

    def trajectory_time_factor(self) -> float:
        return min((m.trajectory_time_factor() for m in self.monitors.values()), default=1.0)

    def diagnostic_values(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for client in self.grippers.values():
            out.update(client.diagnostic_values())
        for arm, client in self.trajectories.items():
            out.update(client.diagnostic_values(arm))
        for arm, m in self.monitors.items():
            out[f"driver/{arm}/may_command"] = str(m.permission().may_command)
            out[f"driver/{arm}/reason"] = m.permission().reason
            if m.speed_scaling is not None:
                out[f"driver/{arm}/speed_scaling"] = f"{m.speed_scaling:.3f}"
        return out

    def destroy(self) -> None:
        for c in self.grippers.values():
            c.destroy()
        for c in self.trajectories.values():
            c.destroy()
        for s in self._subs:
            self.node.destroy_subscription(s)
        self.grippers, self.trajectories, self.monitors, self._subs = {}, {}, {}, []


class SimRealInterfaces:
    """What sim_node adds for a config with real interfaces. `step()` on the physics thread after
    every physics step, `publish(stamp_s)` with every joint-state tick."""

    def __init__(self, node: Node, spec: EmbodimentSpec, hw, run_on_physics: Callable[[Callable[[], None]], None],
                 stamp_offset_s: Callable[[], float]) -> None:
        check_message_packages(spec)
        self.node, self.spec, self.hw = node, spec, hw
        self.grippers: dict[str, FrankaGripperServer] = {}
        self.trajectories: dict[str, FollowJointTrajectoryServer] = {}
        self._pubs: list[tuple[Any, Callable[[float], Any]]] = []
        self._services = []
        self.program_running = True
        self.franka_mode = FRANKA_MODE_IDLE
        self.franka_reflex = False
        self._franka = None
        for arm in spec.arms:
            if arm.gripper is not None and arm.gripper.actions is not None:
                self.grippers[arm.name] = FrankaGripperServer(node, hw, arm, run_on_physics)
            if arm.command.interface == "follow_joint_trajectory":
                self.trajectories[arm.name] = FollowJointTrajectoryServer(
                    node, hw, arm.name, arm.command.action, run_on_physics, stamp_offset_s)
            ds = arm.driver_state
            if ds.program_running_topic:
                pub = node.create_publisher(Bool, ds.program_running_topic, LATCHED_QOS)
                self._pubs.append((pub, lambda t: Bool(data=self.program_running)))
            if ds.speed_scaling_topic:
                pub = node.create_publisher(Float64, ds.speed_scaling_topic, 10)
                self._pubs.append((pub, lambda t: Float64(data=self.hw.speed_scaling)))
                # the pendant's speed slider, for tests (ur_robot_driver sets it through ur_msgs)
                self._services.append(node.create_subscription(Float64, "sim/speed_scaling", self._on_speed, 10))
            if ds.robot_state_topic:
                self._franka = ros_msgs.load("franka_msgs")
                pub = node.create_publisher(self._franka.msg.FrankaRobotState, ds.robot_state_topic, 10)
                self._pubs.append((pub, self._robot_state))
        if any(a.driver_state.program_running_topic for a in spec.arms):
            self._services.append(node.create_service(Trigger, "dashboard_client/play", self._on_play))
            self._services.append(node.create_service(Trigger, "dashboard_client/stop", self._on_stop))
        if self._franka is not None:
            self._services.append(node.create_service(SetBool, "sim/franka_reflex", self._on_reflex))

    @property
    def empty(self) -> bool:
        return not (self.grippers or self.trajectories or self._pubs)

    # ------------------------------------------------------------------ physics thread
    def step(self) -> None:
        for g in self.grippers.values():
            g.step()
        for t in self.trajectories.values():
            t.step()
        if not self.program_running or self.franka_reflex:
            # the arm does not follow: what the robot does when its program stops / a reflex fires
            for arm in self.spec.arms:
                if self.hw.jtc(arm.name).active is not None or self.hw.jtc(arm.name)._pending is not None:
                    self.hw.hold_measured(arm.name)

    def publish(self, stamp_s: float) -> None:
        for g in self.grippers.values():
            g.publish(stamp_s)
        for pub, make in self._pubs:
            pub.publish(make(stamp_s))

    def _robot_state(self, stamp_s: float):
        from vla_ros.nodes import conversions as cv

        msg = self._franka.msg.FrankaRobotState()
        msg.header.stamp = cv.s_to_time(stamp_s)
        moving = any(self.hw.jtc(a.name).active is not None for a in self.spec.arms)
        msg.robot_mode = FRANKA_MODE_REFLEX if self.franka_reflex else (FRANKA_MODE_MOVE if moving else FRANKA_MODE_IDLE)
        if self.franka_reflex:
            msg.current_errors.joint_reflex = True
            msg.last_motion_errors.joint_reflex = True
        return msg

    # ------------------------------------------------------------------ services
    def _on_speed(self, msg) -> None:
        value = float(msg.data)
        if 0.0 <= value <= 1.0:
            self.hw.speed_scaling = value  # read on the physics thread: one float, atomic
        else:
            self.node.get_logger().error(f"sim/speed_scaling must be in [0, 1], got {value}; ignored")

    def _on_play(self, request, response):
        self.program_running = True
        response.success, response.message = True, "Starting program"
        return response

    def _on_stop(self, request, response):
        self.program_running = False
        response.success, response.message = True, "Stopped"
        return response

    def _on_reflex(self, request, response):
        self.franka_reflex = bool(request.data)
        response.success = True
        response.message = "joint reflex triggered" if request.data else "error recovery done"
        return response

    def shutdown(self) -> None:
        """The physics stopped (sim_node.stop): end the action goals waiting for it."""
        for server in (*self.grippers.values(), *self.trajectories.values()):
            server.shutdown()

    def destroy(self) -> None:
        for g in self.grippers.values():
            g.destroy()
        for t in self.trajectories.values():
            t.destroy()
        for s in self._services:
            if hasattr(s, "srv_type"):
                self.node.destroy_service(s)
            else:
                self.node.destroy_subscription(s)
