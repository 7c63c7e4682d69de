"""The JTC's action interface, `<controller>/follow_joint_trajectory` (control_msgs), as MoveIt uses it.

Client (`FollowJointTrajectoryClient`, controller_node for `command.interface:
follow_joint_trajectory`): every trajectory window the controller would publish on the topic is
sent as a goal instead (a JTC accepts a new goal by ending the running one: "Current goal
cancelled due to new incoming action.", which is expected here and not a failure: only the newest
goal's outcome counts), with
`path_tolerance` / `goal_tolerance` per joint and `goal_time_tolerance`. A rejected goal, or the
latest goal aborted (PATH_TOLERANCE_VIOLATED, GOAL_TOLERANCE_VIOLATED, INVALID_JOINTS,
OLD_HEADER_TIMESTAMP, INVALID_GOAL), calls `on_failure(reason)` -- the controller holds and
reports the code on `diagnostics` -- and the client sends nothing more until `resume()` (the next
accepted chunk): the JTC already holds where the arm is after an abort.

Server (`FollowJointTrajectoryServer`, sim_node): the same JTC semantics as the topic
(`vla_ros.core.jtc`; an invalid goal is rejected), plus what the action adds: path tolerance
checked on every physics step against the JTC's desired state (violated -> abort with
PATH_TOLERANCE_VIOLATED and hold the measured position), goal tolerance at the end within
goal_time_tolerance, feedback (desired / actual / error) at ~20 Hz, a new goal cancels the old one.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
from rclpy.action import ActionClient, ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import CallbackGroup, ReentrantCallbackGroup
from rclpy.node import Node

from vla_ros.core.jtc import TrajectoryCommand, TrajectoryPoint, validate_trajectory
from vla_ros.nodes import conversions as cv
from vla_ros.nodes.gripper_action import SIM_STOPPED_MESSAGE
from vla_ros.nodes import ros_msgs

ERROR_CODE_NAMES = {0: "SUCCESSFUL", -1: "INVALID_GOAL", -2: "INVALID_JOINTS", -3: "OLD_HEADER_TIMESTAMP",
                    -4: "PATH_TOLERANCE_VIOLATED", -5: "GOAL_TOLERANCE_VIOLATED"}
PREEMPTED_MESSAGE = "Current goal cancelled due to new incoming action."
STATUS_SUCCEEDED, STATUS_CANCELED, STATUS_ABORTED = 4, 5, 6


@dataclass(frozen=True)
class Tolerances:
    """Per-joint tolerances sent with every goal (0 = the JTC's default, i.e. not checked)."""

    path_position_rad: float = 0.0
    goal_position_rad: float = 0.0
    goal_time_s: float = 0.0

    def __post_init__(self) -> None:
        for attr in ("path_position_rad", "goal_position_rad", "goal_time_s"):
            v = float(getattr(self, attr))
            if not np.isfinite(v) or v < 0.0:
                raise ValueError(f"{attr} must be a finite number >= 0, got {getattr(self, attr)!r}")
            object.__setattr__(self, attr, v)


def error_code_name(code: int) -> str:
    return ERROR_CODE_NAMES.get(int(code), f"error code {int(code)}")


class FollowJointTrajectoryClient:
    """One arm's JTC action client; see the module docstring. Never blocks."""

    def __init__(self, node: Node, action_name: str, *, tolerances: Tolerances = Tolerances(),
                 on_failure: Callable[[str], None] | None = None, callback_group: CallbackGroup | None = None,
                 response_timeout_s: float = 1.0, now_s: Callable[[], float] | None = None) -> None:
        self._cm = ros_msgs.load("control_msgs")
        self.node = node
        self.action_name = action_name
        self.tolerances = tolerances
        self.on_failure = on_failure or (lambda reason: None)
        self.response_timeout_s = float(response_timeout_s)
        self._now = now_s or (lambda: node.get_clock().now().nanoseconds * 1e-9)
        self._client = ActionClient(node, self._cm.action.FollowJointTrajectory, action_name,
                                    callback_group=callback_group or ReentrantCallbackGroup())
        self._lock = threading.Lock()
        self._latest = 0  # sequence number of the newest goal sent
        self._unanswered: dict[int, float] = {}  # seq -> sent time
        self.halted = False
        self.goals_sent = 0
        self.goals_accepted = 0
        self.failures = 0
        self.last_error = ""
        self.last_error_code = ""

    # ------------------------------------------------------------------ health
    def problem(self, now_s: float | None = None) -> str | None:
        now = self._now() if now_s is None else now_s
        if not self._client.server_is_ready():
            return f"FollowJointTrajectory action server '{self.action_name}' is not available"
        with self._lock:
            late = [t for t in self._unanswered.values() if now - t > self.response_timeout_s]
        if late:
            return f"'{self.action_name}' did not answer a goal within {self.response_timeout_s} s"
        return None

    def resume(self) -> None:
        """A new chunk was accepted: send goals again after a failure."""
        with self._lock:
            self.halted = False

    # ------------------------------------------------------------------ goals
    def goal(self, joint_names: Sequence[str], times_s: np.ndarray, positions: np.ndarray,
             velocities: np.ndarray | None, stamp_s: float):
        FJT = self._cm.action.FollowJointTrajectory
        msg = FJT.Goal()
        msg.trajectory = cv.make_joint_trajectory(joint_names, positions, times_s, velocities=velocities,
                                                  stamp_s=stamp_s)
        tol = self.tolerances
        if tol.path_position_rad > 0.0:
            msg.path_tolerance = [self._cm.msg.JointTolerance(name=n, position=tol.path_position_rad)
                                  for n in joint_names]
        if tol.goal_position_rad > 0.0:
            msg.goal_tolerance = [self._cm.msg.JointTolerance(name=n, position=tol.goal_position_rad)
                                  for n in joint_names]
        msg.goal_time_tolerance = cv.s_to_duration(tol.goal_time_s)
        return msg

    def send(self, joint_names: Sequence[str], times_s: np.ndarray, positions: np.ndarray,
             velocities: np.ndarray | None, stamp_s: float) -> bool:
        """Send one trajectory window as a goal; False when halted after a failure."""
        with self._lock:
            if self.halted:
                return False
            self._latest += 1
            seq = self._latest
            self._unanswered[seq] = self._now()
        self.goals_sent += 1
        future = self._client.send_goal_async(self.goal(joint_names, times_s, positions, velocities, stamp_s))
        future.add_done_callback(lambda f, s=seq: self._on_response(s, f))
        return True

    def _on_response(self, seq: int, future) -> None:
        handle = future.result()
        with self._lock:
            self._unanswered.pop(seq, None)
        if handle is None or not handle.accepted:
            self._fail(seq, "REJECTED", f"goal rejected by '{self.action_name}' (invalid trajectory, e.g. "
                                        "INVALID_JOINTS or a stamp already past: OLD_HEADER_TIMESTAMP)")
            return
        self.goals_accepted += 1
        handle.get_result_async().add_done_callback(lambda f, s=seq: self._on_result(s, f))

    def _on_result(self, seq: int, future) -> None:
        response = future.result()
        result = response.result
        if response.status == STATUS_SUCCEEDED or (response.status == STATUS_CANCELED):
            return  # finished, or replaced by our own newer goal
        name = error_code_name(result.error_code)
        self._fail(seq, name, f"goal aborted by '{self.action_name}': {name}"
                              f"{': ' + result.error_string if result.error_string else ''}")

    def _fail(self, seq: int, code: str, reason: str) -> None:
        with self._lock:
            if seq != self._latest:
                return  # an older goal; a newer one has replaced it
            self.halted = True
            self.failures += 1
            self.last_error, self.last_error_code = reason, code
        self.node.get_logger().warning(reason)
        self.on_failure(reason)

    def diagnostic_values(self, arm: str) -> dict[str, str]:
        return {f"follow_joint_trajectory/{arm}/goals_sent": str(self.goals_sent),
                f"follow_joint_trajectory/{arm}/failures": str(self.failures),
                f"follow_joint_trajectory/{arm}/last_error_code": self.last_error_code,
                f"follow_joint_trajectory/{arm}/last_error": self.last_error}

    def destroy(self) -> None:
        self._client.destroy()


class FollowJointTrajectoryServer:
    """The simulated JTC's action for one arm. `step()` runs on the physics thread after every
    physics step; `run_on_physics(fn)` queues fn there; `stamp_offset_s()` = ROS time - hw time."""

    def __init__(self, node: Node, hw, arm_name: str, action_name: str,
                 run_on_physics: Callable[[Callable[[], None]], None],
                 stamp_offset_s: Callable[[], float] = lambda: 0.0) -> None:
        self._cm = ros_msgs.load("control_msgs")
        self.node = node
        self.hw = hw
        self.arm = arm_name
        self.joints = tuple(hw.jtc(arm_name).joint_names)
        self._run = run_on_physics
        self._offset = stamp_offset_s
        self._lock = threading.Lock()
        self._active: dict[str, Any] | None = None
        self.aborted = 0
        self.last_error = ""
        self._stopped = threading.Event()  # the physics stopped: goals in flight cannot finish
        self._server = ActionServer(node, self._cm.action.FollowJointTrajectory, action_name, self._execute,
                                    goal_callback=self._on_goal, cancel_callback=lambda h: CancelResponse.ACCEPT,
                                    callback_group=ReentrantCallbackGroup())

    def _command(self, trajectory) -> TrajectoryCommand:
        stamp = cv.time_to_s(trajectory.header.stamp)
        if stamp != 0.0:
            stamp = max(stamp - self._offset(), 1e-9)
        points = tuple(TrajectoryPoint(cv.duration_to_s(p.time_from_start), tuple(p.positions), tuple(p.velocities),
                                       tuple(p.accelerations)) for p in trajectory.points)
        return TrajectoryCommand(tuple(trajectory.joint_names), points, stamp)

    def _on_goal(self, goal) -> GoalResponse:
        reason = validate_trajectory(self._command(goal.trajectory), self.joints, self.hw.jtc_time_s)
        if reason is not None:
            self.last_error = f"goal rejected: {reason}"
            self.node.get_logger().error(f"arm '{self.arm}': FollowJointTrajectory {self.last_error}")
            return GoalResponse.REJECT
        return GoalResponse.ACCEPT

    @staticmethod
    def _tolerance(tolerances, joints: Sequence[str]) -> np.ndarray:
        out = np.zeros(len(joints))
        for t in tolerances:
            if t.name in joints:
                out[joints.index(t.name)] = t.position
        return out

    def _execute(self, goal_handle):
        FJT = self._cm.action.FollowJointTrajectory
        request = goal_handle.request
        names = tuple(request.trajectory.joint_names)
        order = [names.index(j) for j in self.joints]
        state = {"handle": goal_handle, "done": threading.Event(), "code": 0, "error": "",
                 "path_tol": self._tolerance(request.path_tolerance, self.joints),
                 "goal_tol": self._tolerance(request.goal_tolerance, self.joints),
                 "goal_time_s": cv.duration_to_s(request.goal_time_tolerance),
                 "final": np.array([request.trajectory.points[-1].positions[k] for k in order]),
                 "end_s": None, "feedback": None}
        command = self._command(request.trajectory)

        def start() -> None:
            with self._lock:
                previous, self._active = self._active, state
            if previous is not None and not previous["done"].is_set():
                previous["code"], previous["error"], previous["preempted"] = -1, PREEMPTED_MESSAGE, True
                previous["done"].set()
            reason = self.hw.apply_trajectory(self.arm, command)
            if reason is not None:
                state["code"], state["error"] = -1, reason
                state["done"].set()
                return
            traj = self.hw.jtc(self.arm)._pending or self.hw.jtc(self.arm).active
            state["end_s"] = float(traj.end_s)

        self._run(start)
        while not state["done"].wait(0.05):
            if self._stopped.is_set():
                self._finish(state, -1, SIM_STOPPED_MESSAGE)
                break
            fb = state["feedback"]
            if fb is not None:
                goal_handle.publish_feedback(fb)
            if goal_handle.is_cancel_requested:
                self._run(lambda: self.hw.hold_measured(self.arm))
                with self._lock:
                    if self._active is state:
                        self._active = None
                goal_handle.canceled()
                return FJT.Result(error_code=0, error_string="canceled")
        result = FJT.Result(error_code=int(state["code"]), error_string=state["error"])
        # a preempted goal: rclpy only cancels goals whose cancel was requested; the JTC's result
        # (INVALID_GOAL + PREEMPTED_MESSAGE) is what tells the client
        if state["code"] == 0:
            goal_handle.succeed()
        else:
            goal_handle.abort()
        return result

    def step(self) -> None:
        """Physics thread: path tolerance, goal tolerance at the end, feedback."""
        with self._lock:
            state = self._active
        if state is None or state["done"].is_set() or state["end_s"] is None:
            return
        desired = self.hw.jtc_desired(self.arm)
        if desired is None:
            return
        q = self.hw.arm_positions(self.arm)
        error = q - desired.positions
        t = self.hw.jtc_time_s
        tol = state["path_tol"]
        bad = np.flatnonzero((tol > 0.0) & (np.abs(error) > tol))
        if bad.size and t < state["end_s"]:
            j = int(bad[0])
            self._finish(state, -4, f"joint {self.joints[j]} is {abs(error[j]):.5f} rad from the desired position, "
                                    f"path tolerance {tol[j]} rad")
            self.hw.hold_measured(self.arm)
            return
        if int(self.hw.time_s * 20.0) != int((self.hw.time_s - self.hw.model.opt.timestep) * 20.0):
            FJT = self._cm.action.FollowJointTrajectory
            fb = FJT.Feedback(joint_names=list(self.joints))
            fb.header.stamp = cv.s_to_time(self.hw.time_s + self._offset())
            fb.desired.positions, fb.actual.positions, fb.error.positions = (
                desired.positions.tolist(), q.tolist(), (-error).tolist())
            state["feedback"] = fb
        if t >= state["end_s"]:
            gtol = state["goal_tol"]
            off = np.abs(q - state["final"])
            bad = np.flatnonzero((gtol > 0.0) & (off > gtol))
            if not bad.size:
                self._finish(state, 0, "")
            elif t > state["end_s"] + state["goal_time_s"]:
                j = int(bad[0])
                self._finish(state, -5, f"joint {self.joints[j]} is {off[j]:.5f} rad from the goal, "
                                        f"goal tolerance {gtol[j]} rad")
                self.hw.hold_measured(self.arm)

    def _finish(self, state: dict, code: int, error: str) -> None:
        state["code"], state["error"] = code, error
        if code != 0:
            self.aborted += 1
            self.last_error = f"{error_code_name(code)}: {error}"
            self.node.get_logger().error(f"arm '{self.arm}': FollowJointTrajectory goal aborted: {self.last_error}")
        state["done"].set()

    def shutdown(self) -> None:
        """The physics stopped: abort the goal in flight and any that arrive later."""
        self._stopped.set()

    def destroy(self) -> None:
        self.shutdown()
        self._server.destroy()
