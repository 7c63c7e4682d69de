"""franka_gripper through its actions: the controller's client and the simulation's server.

Client (`FrankaGripperClient`, used by controller_node for a `gripper.command.kind:
franka_gripper` config). Never blocks the caller:
- `update(g, now)` with the normalised gripper value the plan commands now: hysteresis
  (`vla_ros.core.gripper_decision`) turns it into open / close; only a CHANGED decision sends a
  goal (cancelling the one in flight first); open = Move to the open width, close = Grasp with
  the configured force and width band (or both through control_msgs GripperCommand on
  `<node>/gripper_action`: position = width / 2, max_effort = force);
- `<node>/joint_states` (the gripper node's finger joints, each = width / 2) is its measured state;
- `problem(now)` says why the gripper cannot be relied on: the action server is not there, its
  joint_states are stale, or a goal got no answer within `response_timeout_s` -- the controller
  then holds and refuses chunks that need the gripper (`chunk_needs_gripper`);
- results (grasp failed: object missed or slipped, move blocked, goal rejected) are published on
  `diagnostics` when they arrive and kept in `diagnostic_values()`; after a grasp succeeded, the
  fingers closing more than SLIP_MARGIN_M (1 mm) below `min_object_width_m` while the hand still
  holds is reported the same way ("object slipped while held", once, counted in grasp_failures).

Server (`FrankaGripperServer`, used by sim_node): `<node>/grasp`, `/move`, `/homing` (franka_msgs)
and `/gripper_action` (control_msgs) over `vla_ros.sim.franka_gripper`, with `current_width`
feedback, and `<node>/joint_states`; goals run on the physics thread, the execute callbacks
only wait for them.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

from rclpy.action import ActionClient, ActionServer, CancelResponse, GoalResponse
from rclpy.action.client import ClientGoalHandle
from rclpy.callback_groups import CallbackGroup, ReentrantCallbackGroup
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import JointState
from diagnostic_msgs.msg import DiagnosticArray

from vla_ros.core.embodiment import ArmSpec, FrankaGripperActions
from vla_ros.core.gripper_decision import (
    CLOSE,
    OPEN,
    GraspSettings,
    GripperGoal,
    GripperHysteresis,
    GripperWidthMap,
    goal_for,
    initial_decision,
)
from vla_ros.nodes import conversions as cv
from vla_ros.nodes import ros_msgs

GOAL_STATUS_NAMES = {0: "UNKNOWN", 1: "ACCEPTED", 2: "EXECUTING", 3: "CANCELING", 4: "SUCCEEDED", 5: "CANCELED",
                     6: "ABORTED"}
FRANKA_DEFAULT_EPSILON_M = 0.005  # franka_gripper_node's default_grasp_epsilon (inner and outer)
FRANKA_DEFAULT_SPEED_M_S = 0.1  # franka_gripper_node's default_speed (gripper_action)
# A held object has slipped out when the fingers close this far below min_object_width_m: the reported
# width jitters by a fraction of a millimetre (a fully closed hand reads -0.0000 m), which is not a slip.
SIM_STOPPED_MESSAGE = "the simulation stopped (sim_node is shutting down)"
SLIP_MARGIN_M = 0.001


def finger_joint_names(actions: FrankaGripperActions, gripper_joint: str) -> tuple[str, str]:
    """franka_gripper publishes `<arm_id>_finger_joint1` and `..._finger_joint2`."""
    if gripper_joint.endswith("finger_joint1"):
        return gripper_joint, gripper_joint[: -1] + "2"
    return gripper_joint, gripper_joint + "_mirror"


def required_packages(actions: FrankaGripperActions) -> tuple[str, ...]:
    pkgs = ("franka_msgs",) if actions.interface == "grasp_move" else ("control_msgs",)
    if actions.homing and "franka_msgs" not in pkgs:
        pkgs += ("franka_msgs",)
    return pkgs


class FrankaGripperClient:
    """One arm's franka_gripper, driven asynchronously; see the module docstring."""

    def __init__(self, node: Node, arm: ArmSpec, *, callback_group: CallbackGroup | None = None,
                 diagnostics_publisher=None, response_timeout_s: float = 2.0,
                 joint_state_timeout_s: float = 0.5, now_s: Callable[[], float] | None = None) -> None:
        if arm.gripper is None or arm.gripper.actions is None:
            raise ValueError(f"arm '{arm.name}' has no franka_gripper actions in its config")
        self.node = node
        self.arm = arm
        self.actions = arm.gripper.actions
        msgs = {pkg: ros_msgs.load(pkg) for pkg in required_packages(self.actions)}
        self._franka = msgs.get("franka_msgs")
        self._control = msgs.get("control_msgs")
        self.hysteresis = GripperHysteresis(self.actions.close_below, self.actions.open_above)
        self.widths = GripperWidthMap(arm.gripper.open_position, arm.gripper.closed_position)
        self.grasp = GraspSettings(self.actions.speed_m_s, self.actions.force_n, self.actions.min_object_width_m,
                                   self.actions.max_object_width_m)
        self.response_timeout_s = float(response_timeout_s)
        self.joint_state_timeout_s = float(joint_state_timeout_s)
        self._now = now_s or (lambda: node.get_clock().now().nanoseconds * 1e-9)
        self._diag_pub = diagnostics_publisher
        group = callback_group or ReentrantCallbackGroup()
        base = self.actions.node
        self._clients: dict[str, ActionClient] = {}
        if self._franka is not None:
            a = self._franka.action
            if self.actions.interface == "grasp_move":
                self._clients["grasp"] = ActionClient(node, a.Grasp, f"{base}/grasp", callback_group=group)
                self._clients["move"] = ActionClient(node, a.Move, f"{base}/move", callback_group=group)
            if self.actions.homing:
                self._clients["homing"] = ActionClient(node, a.Homing, f"{base}/homing", callback_group=group)
        if self._control is not None:
            self._clients["gripper_action"] = ActionClient(node, self._control.action.GripperCommand,
                                                           f"{base}/gripper_action", callback_group=group)
        self._finger = finger_joint_names(self.actions, arm.gripper.joint_name)[0]
        self._sub = node.create_subscription(JointState, f"{base}/joint_states", self._on_joint_state,
                                             qos_profile_sensor_data, callback_group=group)
        self._lock = threading.Lock()
        self.width_m: float | None = None
        self.width_received_s: float | None = None
        self.decision: str | None = None  # what was last sent (or measured at start)
        self._pending: dict[str, Any] | None = None  # {"decision", "sent_s", "handle", "goal"}
        self.last_result = ""
        self.last_result_ok = True
        self.goals_sent = 0
        self.grasp_failures = 0
        self.results: list[tuple[str, bool, str]] = []  # (decision, success, message)
        self._homed = not self.actions.homing
        self._holding = False  # a grasp succeeded and no goal came since: watch for a slip

    # ------------------------------------------------------------------ measured state
    def _on_joint_state(self, msg: JointState) -> None:
        try:
            finger = float(cv.joint_state_positions(msg, [self._finger])[0])
        except (KeyError, ValueError):
            return
        with self._lock:
            self.width_m = 2.0 * finger
            self.width_received_s = self._now()
            if self.decision is None and self._pending is None:
                self.decision = initial_decision(self.widths.normalised(self.width_m), self.hysteresis)
            # Holding after a successful grasp: fingers that close below the object band lost it.
            slipped = (self._holding and self._pending is None and self.decision == CLOSE
                       and self.width_m < self.grasp.min_object_width_m - SLIP_MARGIN_M)
            if slipped:
                self._holding = False
        if slipped:
            self._report({"decision": CLOSE}, False,
                         f"grasp failed: object slipped while held (the fingers closed to {self.width_m:.4f} m, "
                         f"more than {SLIP_MARGIN_M} m below min_object_width_m {self.grasp.min_object_width_m})")

    def measured_normalised(self) -> float | None:
        with self._lock:
            return None if self.width_m is None else self.widths.normalised(self.width_m)

    # ------------------------------------------------------------------ health
    def problem(self, now_s: float | None = None) -> str | None:
        """Why the gripper cannot be relied on now (None: healthy)."""
        now = self._now() if now_s is None else now_s
        base = self.actions.node
        for name, client in self._clients.items():
            if not client.server_is_ready():
                return f"franka_gripper action server '{base}/{name}' is not available"
        with self._lock:
            if self.width_received_s is None:
                return f"no joint_states from the gripper on '{base}/joint_states'"
            age = now - self.width_received_s
            if age > self.joint_state_timeout_s:
                return f"gripper joint_states on '{base}/joint_states' are stale: last {age:.3f} s ago"
            p = self._pending
            if p is not None and p["handle"] is None and now - p["sent_s"] > self.response_timeout_s:
                return (f"franka_gripper did not answer the {p['decision']} goal within "
                        f"{self.response_timeout_s} s")
        return None

    def chunk_needs_gripper(self, column) -> bool:
        """Whether a chunk's gripper column would make the gripper act (send a goal)."""
        with self._lock:
            return self.hysteresis.needs_change(column, self.decision)

    # ------------------------------------------------------------------ commanding
    def start(self) -> None:
        """Homing on start when configured (asynchronous)."""
        if self.actions.homing and "homing" in self._clients and self._clients["homing"].server_is_ready():
            self._send("homing", self._franka.action.Homing.Goal())
            self._homed = True

    def update(self, g: float | None, now_s: float | None = None) -> None:
        """The plan's normalised gripper value now; sends a goal only when the decision changes."""
        if g is None:
            return
        if not self._homed:
            self.start()
        with self._lock:
            decision = self.hysteresis.decide(g, self.decision)
            if decision is None or decision == self.decision:
                return
            self.decision = decision
            previous = self._pending
        goal = goal_for(decision, self.widths, self.grasp)
        if previous is not None and previous["handle"] is not None:
            previous["handle"].cancel_goal_async()
        self._send(decision, self._goal_msg(goal), goal)

    def _goal_msg(self, goal: GripperGoal):
        if self.actions.interface == "gripper_action":
            g = self._control.action.GripperCommand.Goal()
            g.command.position = goal.gripper_command_position()
            g.command.max_effort = goal.force_n
            return g
        a = self._franka.action
        if goal.kind == "move":
            return a.Move.Goal(width=goal.width_m, speed=goal.speed_m_s)
        msg = a.Grasp.Goal(width=goal.width_m, speed=goal.speed_m_s, force=goal.force_n)
        msg.epsilon.inner = goal.epsilon_inner_m
        msg.epsilon.outer = goal.epsilon_outer_m
        return msg

    def _client_for(self, decision: str) -> ActionClient:
        if decision == "homing":
            return self._clients["homing"]
        if self.actions.interface == "gripper_action":
            return self._clients["gripper_action"]
        return self._clients["grasp" if decision == CLOSE else "move"]

    def _send(self, decision: str, msg, goal: GripperGoal | None = None) -> None:
        entry = {"decision": decision, "sent_s": self._now(), "handle": None, "goal": goal}
        with self._lock:
            if decision != "homing":
                self._pending = entry
                self._holding = False
        self.goals_sent += 1
        future = self._client_for(decision).send_goal_async(msg)
        future.add_done_callback(lambda f, e=entry: self._on_goal_response(e, f))

    def _on_goal_response(self, entry: dict, future) -> None:
        handle: ClientGoalHandle = future.result()
        if handle is None or not handle.accepted:
            self._report(entry, False, f"the {entry['decision']} goal was rejected by franka_gripper")
            return
        with self._lock:
            entry["handle"] = handle
        handle.get_result_async().add_done_callback(lambda f, e=entry: self._on_result(e, f))

    def _on_result(self, entry: dict, future) -> None:
        response = future.result()
        status = GOAL_STATUS_NAMES.get(response.status, str(response.status))
        result = response.result
        if status == "CANCELED":
            # we cancelled it for a newer decision: not a failure of the hand
            self._report(entry, True, f"{entry['decision']} goal canceled (replaced)", quiet=True)
            return
        if self.actions.interface == "gripper_action" and entry["decision"] != "homing":
            ok = bool(result.reached_goal)
            error = "" if ok else (f"stopped at {2.0 * result.position:.4f} m (reached_goal false"
                                   f"{', stalled' if result.stalled else ''})")
        else:
            ok, error = bool(result.success), str(result.error)
        if status != "SUCCEEDED" and ok:
            ok, error = False, f"goal {status}"
        if entry["decision"] == CLOSE:
            with self._lock:
                self._holding = ok and self._pending is entry
        what = {CLOSE: "grasp", OPEN: "open (move)", "homing": "homing"}[entry["decision"]]
        self._report(entry, ok, f"{what} {'succeeded' if ok else 'failed: ' + error}")

    def _report(self, entry: dict, ok: bool, message: str, quiet: bool = False) -> None:
        with self._lock:
            if self._pending is entry:
                self._pending = None
            if not ok and entry["decision"] == CLOSE:
                self.grasp_failures += 1
            if not quiet:
                self.last_result, self.last_result_ok = message, ok
                self.results.append((entry["decision"], ok, message))
                del self.results[:-20]
        if quiet:
            return
        log = self.node.get_logger()
        # one call site per severity: rclpy refuses a logging call site whose severity changes
        if ok:
            log.info(f"gripper '{self.arm.name}': {message}")
        else:
            log.warning(f"gripper '{self.arm.name}': {message}")
        if self._diag_pub is not None:
            self._diag_pub.publish(cv.make_diagnostics(
                f"{self.node.get_name()}: gripper {self.arm.name}", "ok" if ok else "warn", message,
                self.diagnostic_values(), stamp_s=self._now()))

    def diagnostic_values(self) -> dict[str, str]:
        with self._lock:
            return {
                f"gripper/{self.arm.name}/decision": self.decision or "",
                f"gripper/{self.arm.name}/width_m": "" if self.width_m is None else f"{self.width_m:.4f}",
                f"gripper/{self.arm.name}/last_result": self.last_result,
                f"gripper/{self.arm.name}/goals_sent": str(self.goals_sent),
                f"gripper/{self.arm.name}/grasp_failures": str(self.grasp_failures),
            }

    def destroy(self) -> None:
        for client in self._clients.values():
            client.destroy()
        self.node.destroy_subscription(self._sub)
        self._clients = {}


class FrankaGripperServer:
    """The simulated franka_gripper node's actions and joint_states for one arm.

    `run_on_physics(fn)` queues fn for the physics thread; `step()` must be called there after
    every physics step; `publish(stamp_s)` with every joint-state tick."""

    def __init__(self, node: Node, hw, arm: ArmSpec, run_on_physics: Callable[[Callable[[], None]], None]) -> None:
        from vla_ros.sim.franka_gripper import Operation, SimFrankaGripper

        self._Operation = Operation
        self.node = node
        self.arm = arm
        self.actions = arm.gripper.actions
        self.sim = SimFrankaGripper(hw, arm.name)
        self._run = run_on_physics
        self._franka = ros_msgs.load("franka_msgs") if "franka_msgs" in required_packages(self.actions) else None
        self._control = ros_msgs.load("control_msgs") if "control_msgs" in required_packages(self.actions) else None
        # serve every interface whose messages are here, as the real node does
        for pkg in ("franka_msgs", "control_msgs"):
            ok, _ = ros_msgs.available(pkg)
            if ok and pkg == "franka_msgs" and self._franka is None:
                self._franka = ros_msgs.load(pkg)
            if ok and pkg == "control_msgs" and self._control is None:
                self._control = ros_msgs.load(pkg)
        group = ReentrantCallbackGroup()
        base = self.actions.node
        self._servers = []
        common = dict(callback_group=group, goal_callback=lambda g: GoalResponse.ACCEPT,
                      cancel_callback=lambda h: CancelResponse.ACCEPT)
        if self._franka is not None:
            a = self._franka.action
            self._servers += [
                ActionServer(node, a.Grasp, f"{base}/grasp", self._execute_grasp, **common),
                ActionServer(node, a.Move, f"{base}/move", self._execute_move, **common),
                ActionServer(node, a.Homing, f"{base}/homing", self._execute_homing, **common),
            ]
        if self._control is not None:
            self._servers.append(ActionServer(node, self._control.action.GripperCommand, f"{base}/gripper_action",
                                              self._execute_gripper_command, **common))
        self.fingers = finger_joint_names(self.actions, arm.gripper.joint_name)
        self._js_pub = node.create_publisher(JointState, f"{base}/joint_states", 10)
        self.silent = False  # tests: a gripper node that stopped publishing / answering
        # Set when the physics stops: an operation in flight can no longer finish, so its goal is
        # aborted (it used to wait for the physics forever, holding the executor's shutdown 30 s).
        self._stopped = threading.Event()

    # ------------------------------------------------------------------ physics thread
    def step(self) -> None:
        self.sim.update()

    def publish(self, stamp_s: float) -> None:
        if self.silent:
            return
        half = self.sim.width_m() / 2.0
        speed = self.sim.width_speed_m_s() / 2.0
        self._js_pub.publish(cv.make_joint_state(self.fingers, [half, half], [speed, speed], stamp_s=stamp_s))

    # ------------------------------------------------------------------ actions
    def _run_operation(self, goal_handle, op, feedback_cls) -> Any:
        self._run(lambda: self.sim.start(op))
        while not op.done.wait(0.05):
            if self._stopped.is_set():
                op.finish(False, SIM_STOPPED_MESSAGE)
                break
            if goal_handle.is_cancel_requested:
                self._run(lambda: self.sim.cancel(op))
                op.done.wait(2.0)
                break
            fb = feedback_cls()
            if hasattr(fb, "current_width"):
                fb.current_width = float(op.current_width_m)
            else:
                fb.position = float(op.current_width_m) / 2.0
            goal_handle.publish_feedback(fb)
        return op

    def _finish(self, goal_handle, op, result) -> Any:
        if goal_handle.is_cancel_requested:
            goal_handle.canceled()
        elif op.success:
            goal_handle.succeed()
        else:
            goal_handle.abort()
        return result

    def _execute_grasp(self, goal_handle):
        g = goal_handle.request
        op = self._Operation("grasp", float(g.width), float(g.speed), float(g.force), float(g.epsilon.inner),
                             float(g.epsilon.outer))
        a = self._franka.action
        self._run_operation(goal_handle, op, a.Grasp.Feedback)
        return self._finish(goal_handle, op, a.Grasp.Result(success=op.success, error=op.error))

    def _execute_move(self, goal_handle):
        g = goal_handle.request
        op = self._Operation("move", float(g.width), float(g.speed))
        a = self._franka.action
        self._run_operation(goal_handle, op, a.Move.Feedback)
        return self._finish(goal_handle, op, a.Move.Result(success=op.success, error=op.error))

    def _execute_homing(self, goal_handle):
        op = self._Operation("homing", self.sim.max_width_m, FRANKA_DEFAULT_SPEED_M_S)
        a = self._franka.action
        self._run_operation(goal_handle, op, a.Homing.Feedback)
        return self._finish(goal_handle, op, a.Homing.Result(success=op.success, error=op.error))

    def _execute_gripper_command(self, goal_handle):
        # franka_gripper_node: target width = 2 x position; wider than now -> move, else grasp with
        # max_effort at the default epsilon
        cmd = goal_handle.request.command
        target = 2.0 * float(cmd.position)
        if target >= self.sim.width_m():
            op = self._Operation("move", target, FRANKA_DEFAULT_SPEED_M_S)
        else:
            op = self._Operation("grasp", target, FRANKA_DEFAULT_SPEED_M_S, float(cmd.max_effort),
                                 FRANKA_DEFAULT_EPSILON_M, FRANKA_DEFAULT_EPSILON_M)
        a = self._control.action.GripperCommand
        self._run_operation(goal_handle, op, a.Feedback)
        result = a.Result(position=self.sim.width_m() / 2.0, effort=float(cmd.max_effort) if op.kind == "grasp" else 0.0,
                          stalled=op.kind == "grasp" and op.success, reached_goal=op.success)
        return self._finish(goal_handle, op, result)

    def shutdown(self) -> None:
        """The physics stopped: abort the operations in flight and any that arrive later."""
        self._stopped.set()

    def destroy(self) -> None:
        self.shutdown()
        for s in self._servers:
            s.destroy()
        self.node.destroy_publisher(self._js_pub)
