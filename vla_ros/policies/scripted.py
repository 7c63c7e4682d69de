"""The scripted expert: a closed-loop pick (single arm) and hand-over (bimanual) from simulation
ground truth, as an ordinary `Policy` that emits `ee_delta` chunks.

Every call re-plans from the observation: the tool pose comes from the measured joints through
`RobotKinematics`, the cube pose from `Observation.privileged["objects"]` (world frame). A small
phase machine (approach -> descend -> close -> lift -> hold; for the hand-over: left picks and
presents, right approaches and closes, left opens and backs off) picks the goal pose; the chunk
moves the tool toward it at a bounded speed. Phases fall back when the world disagrees (the cube
slipped out, was pushed away), so the expert recovers instead of replaying a script.

No torch: it must run wherever the simulation runs.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from vla_ros.core.action_spaces import action_names, matrix_to_rpy
from vla_ros.core.embodiment import ArmSpec, EmbodimentSpec
from vla_ros.core.kinematics import RobotKinematics
from vla_ros.core.types import GRIPPER_CLOSED, GRIPPER_OPEN, ActionChunk, Observation

_AXES = {"x": 0, "y": 1, "z": 2}


@dataclass(frozen=True)
class ExpertParams:
    """Speeds and distances of the expert (m, m/s, rad/s, s)."""

    horizon_s: float = 0.8  # chunk length; rows = round(horizon_s / policy period)
    fast_speed_m_s: float = 0.25
    slow_speed_m_s: float = 0.08
    turn_speed_rad_s: float = 1.0
    # Gentle enough that a chunk's joint accelerations stay well inside an FR3/UR's limits
    # near the grasp poses (the controller refuses chunks that would need a big slow-down).
    accel_m_s2: float = 0.5
    rest_lead_in_s: float = 0.3  # about the observation-to-controller latency of the graph
    pregrasp_height_m: float = 0.10
    lift_height_m: float = 0.12
    grasp_depth_m: float = 0.0  # tool frame below the cube centre (+ = deeper)
    position_tolerance_m: float = 0.012
    orientation_tolerance_rad: float = 0.08
    close_time_s: float = 0.6
    release_time_s: float = 0.5
    lost_distance_m: float = 0.05
    # hand-over: where the cube is presented (above the midpoint between the arms) and how the
    # two grasps share it (left fingers on the half nearer the left arm, right on the other)
    handover_height_m: float = 0.15
    left_grasp_offset_m: float = 0.008
    right_grasp_offset_m: float = 0.012
    receive_standoff_m: float = 0.10
    retreat_height_m: float = 0.08
    tilt_first_rad: float = 0.3  # travel only once the tool points this close to straight down
    # Demonstrations for learning (single-arm pick): before aligning above the cube, first stop at a
    # point off-centre by 0.4-1 x `detour_offset_m` (random direction), 0.6-1 x the pregrasp height
    # above the cube, then correct. A policy trained only on perfect approaches never sees the cube
    # off-centre in its wrist camera, so it cannot correct its own misses (DART's argument: show the
    # expert recovering from the learner's errors). 0 = straight approach. `detour_seed` seeds it.
    detour_offset_m: float = 0.0
    detour_seed: int = 0
    # Also for learning, and Markovian where the detour is not (a detour's labels depend on whether
    # it was done yet, which no observation shows; a policy trained on them hovers off-centre): the
    # expert aims at the cube plus an error that shrinks with the tool's height above it -- 0.5-1 x
    # `aim_error_m` in a random horizontal direction (one per episode, from `detour_seed`) at
    # `aim_error_height_m` and above, none at the grasp -- as a visual servo's estimate sharpens on
    # the way down. Averaged over episodes the label at a state still points at the cube, and the
    # data shows the tool off-centre near the cube, corrected during the descent. 0 = exact aim.
    aim_error_m: float = 0.0
    aim_error_height_m: float = 0.2
    # Also for learning: in `miss_fraction` of the episodes (drawn from `detour_seed`) the first grasp
    # is aimed `miss_offset_m` beside the cube (across the fingers' closing direction, to the side
    # away from the other cubes), so the fingers close on nothing; the lift then finds the cube left
    # behind, the gripper opens and the expert picks it properly. Without such episodes the data never
    # shows a closed, empty gripper near the cube, and a policy that misses lifts nothing and holds
    # there as if it had the cube. The missed approach itself is no example to learn from: training
    # can leave it out (`vla-ros train --skip-missed-grasps`). 0 = never.
    miss_fraction: float = 0.0
    miss_offset_m: float = 0.04
    handover_pick_pitch_rad: float = 0.52  # 30 deg down: reachable at table height away from the wrist singularity

    def __post_init__(self) -> None:
        for name in ("fast_speed_m_s", "slow_speed_m_s", "turn_speed_rad_s", "accel_m_s2", "close_time_s", "lost_distance_m"):
            if not getattr(self, name) > 0.0:
                raise ValueError(f"ExpertParams.{name} must be positive, got {getattr(self, name)}")
        if not self.horizon_s > 0.0:
            raise ValueError(f"ExpertParams.horizon_s must be positive, got {self.horizon_s}")
        if not 0.0 <= self.detour_offset_m <= 0.1:
            raise ValueError(f"ExpertParams.detour_offset_m must be within [0, 0.1] m, got {self.detour_offset_m}")
        if not 0.0 <= self.aim_error_m <= 0.05:
            raise ValueError(f"ExpertParams.aim_error_m must be within [0, 0.05] m, got {self.aim_error_m}")
        if not self.aim_error_height_m > 0.0:
            raise ValueError(f"ExpertParams.aim_error_height_m must be positive, got {self.aim_error_height_m}")
        if not 0.0 <= self.miss_fraction <= 1.0:
            raise ValueError(f"ExpertParams.miss_fraction must be within [0, 1], got {self.miss_fraction}")
        if not 0.03 <= self.miss_offset_m <= 0.06:
            raise ValueError(
                f"ExpertParams.miss_offset_m must be within [0.03, 0.06] m (clear of the cube, short of the next), "
                f"got {self.miss_offset_m}"
            )


@dataclass(frozen=True)
class GraspAxes:
    """Which tool-frame axes point along the approach (towards the object) and the finger
    closing direction. Franka hand and the UR gripper: approach z, closing y; ViperX: x, y."""

    approach: str = "z"
    closing: str = "y"

    def __post_init__(self) -> None:
        if self.approach not in _AXES or self.closing not in _AXES or self.approach == self.closing:
            raise ValueError(f"GraspAxes needs two different axes of x/y/z, got {self.approach}, {self.closing}")


def _default_axes(arm: ArmSpec) -> GraspAxes:
    # Interbotix (ViperX) tool frames point along x; Franka and UR tool frames along z.
    if "waist" in arm.joint_names:
        return GraspAxes("x", "y")
    return GraspAxes("z", "y")


def _rotation_from_axes(approach_world: np.ndarray, closing_world: np.ndarray, axes: GraspAxes) -> np.ndarray:
    """Rotation whose `axes.approach` column is approach_world and `axes.closing` column is closing_world."""
    a = approach_world / np.linalg.norm(approach_world)
    c = closing_world - a * float(a @ closing_world)
    c /= np.linalg.norm(c)
    R = np.zeros((3, 3))
    ia, ic = _AXES[axes.approach], _AXES[axes.closing]
    third = 3 - ia - ic
    R[:, ia], R[:, ic] = a, c
    # right-handed: e_third = e_{third+1} x e_{third+2}
    R[:, third] = np.cross(R[:, (third + 1) % 3], R[:, (third + 2) % 3])
    return R


def _rotation_angle(R: np.ndarray) -> float:
    return float(math.acos(max(-1.0, min(1.0, (np.trace(R) - 1.0) / 2.0))))


def _rotvec(R: np.ndarray) -> np.ndarray:
    """Axis-angle vector of a rotation matrix."""
    angle = _rotation_angle(R)
    if angle < 1e-9:
        return np.zeros(3)
    if angle > math.pi - 1e-6:
        # axis from the symmetric part near pi
        M = (R + np.eye(3)) / 2.0
        axis = M[:, int(np.argmax(np.diag(M)))]
        return axis / np.linalg.norm(axis) * angle
    w = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]]) / (2.0 * math.sin(angle))
    return w * angle


def _exp(rotvec: np.ndarray) -> np.ndarray:
    angle = float(np.linalg.norm(rotvec))
    if angle < 1e-12:
        return np.eye(3)
    k = rotvec / angle
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + math.sin(angle) * K + (1.0 - math.cos(angle)) * (K @ K)


def plan_ee_delta_rows(
    position: np.ndarray,
    rotation: np.ndarray,
    goal_position: np.ndarray,
    goal_rotation: np.ndarray,
    speed_m_s: float,
    turn_speed_rad_s: float,
    period_s: float,
    steps: int,
    accel_m_s2: float = math.inf,
    start_speed_m_s: float = 0.0,
    delay_s: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """(steps, 6) ee_delta rows moving from (position, rotation) straight to the goal, and the
    (steps,) path speed at the row times (for a later plan's `start_speed_m_s`).

    Position and orientation share one progress variable so they arrive together (a straight
    tool path, the geodesic in rotation). Its profile is trapezoidal in the path metric
    D = max(distance, angle * speed / turn_speed): start at `start_speed_m_s`, accelerate at
    `accel_m_s2` to `speed_m_s`, brake to arrive at rest; with `delay_s`, stay put that long
    first (used when starting from rest). Row deltas compose as
    R_i = R_delta_i R_{i-1} in the base frame (the action-space convention)."""
    offset = goal_position - position
    distance = float(np.linalg.norm(offset))
    err = _rotvec(goal_rotation @ rotation.T)
    angle = float(np.linalg.norm(err))
    length = max(distance, angle * speed_m_s / turn_speed_rad_s)
    rows = np.zeros((steps, 6))
    if length < 1e-9:
        return rows, np.zeros(steps)
    # Integrate the 1-D profile finely and sample it at the row times.
    dt = min(period_s / 20.0, 0.005)
    s = 0.0
    v = min(max(start_speed_m_s, 0.0), speed_m_s) if math.isfinite(accel_m_s2) else speed_m_s
    samples, speeds, t, k = [], [], 0.0, 1
    while k <= steps:
        if t < delay_s - 1e-12:
            t += dt
            if t >= k * period_s - 1e-12:
                samples.append(0.0)
                speeds.append(0.0)
                k += 1
            continue
        braking = math.sqrt(2.0 * accel_m_s2 * max(length - s, 0.0)) if math.isfinite(accel_m_s2) else speed_m_s
        target_v = min(speed_m_s, braking)
        dv = accel_m_s2 * dt if math.isfinite(accel_m_s2) else math.inf
        v_old = v
        v = min(target_v, v + dv) if target_v >= v else max(target_v, v - dv)
        s = min(length, s + 0.5 * (v_old + v) * dt)  # exact for a constant acceleration
        t += dt
        if t >= k * period_s - 1e-12:
            samples.append(s)
            speeds.append(v)
            k += 1
    prev_p, prev_R = position, rotation
    for i, si in enumerate(samples):
        u = si / length
        p = position + u * offset
        R = _exp(u * err) @ rotation
        rows[i, :3] = p - prev_p
        rows[i, 3:] = matrix_to_rpy(R @ prev_R.T)
        prev_p, prev_R = p, R
    return rows, np.array(speeds)


class ScriptedExpert:
    """Closed-loop scripted expert over ee_delta chunks (see the module docstring)."""

    needs_privileged = True

    def __init__(
        self,
        embodiment: EmbodimentSpec,
        kinematics: RobotKinematics | None = None,
        params: ExpertParams | None = None,
        grasp_axes: dict[str, GraspAxes] | None = None,
    ) -> None:
        self.spec = embodiment
        self.kin = kinematics if kinematics is not None else RobotKinematics.from_embodiment(embodiment)
        self.params = params if params is not None else ExpertParams()
        self.period_s = float(embodiment.policy_period_s)
        self.action_names = action_names(embodiment, "ee_delta")
        self.horizon_steps = max(1, int(round(self.params.horizon_s / self.period_s)))
        self._home_q = np.concatenate([np.asarray(a.home_rad, dtype=float) for a in embodiment.arms])
        self.axes = {arm.name: (grasp_axes or {}).get(arm.name, _default_axes(arm)) for arm in embodiment.arms}
        self._detour_rng = np.random.default_rng(self.params.detour_seed)
        if len(embodiment.arms) not in (1, 2):
            raise ValueError(f"the scripted expert handles one or two arms, '{embodiment.name}' has {len(embodiment.arms)}")
        for arm in embodiment.arms:
            if arm.gripper is None:
                raise ValueError(f"the scripted expert needs a gripper on arm '{arm.name}' of '{embodiment.name}'")
        self.reset()

    def reset(self) -> None:
        self.phase = "approach"
        self._phase_since_s: float | None = None
        self._grasp_rotation: dict[str, np.ndarray] = {}
        self._grasp_position: np.ndarray | None = None
        self._speed: dict[str, tuple[float, np.ndarray]] = {}
        self._last_tool: dict[str, tuple[float, np.ndarray]] = {}
        self._rest_start: dict[str, float] = {}
        self._home_tool: dict[str, np.ndarray] | None = None
        self._hold_right: tuple[np.ndarray, np.ndarray] | None = None
        self._release_from: tuple[np.ndarray, np.ndarray] | None = None
        self._stamp_s = 0.0
        # this episode's detour: (world-frame horizontal offset, height above the cube), or None
        self.detour: tuple[np.ndarray, float] | None = None
        if self.params.detour_offset_m > 0.0 and len(self.spec.arms) == 1:
            angle = self._detour_rng.uniform(0.0, 2.0 * math.pi)
            radius = self.params.detour_offset_m * self._detour_rng.uniform(0.4, 1.0)
            height = self.params.pregrasp_height_m * self._detour_rng.uniform(0.6, 1.0)
            self.detour = (radius * np.array([math.cos(angle), math.sin(angle), 0.0]), height)
        # this episode's aim error at aim_error_height_m and above (world frame, horizontal)
        self.aim_error = np.zeros(3)
        if self.params.aim_error_m > 0.0 and len(self.spec.arms) == 1:
            angle = self._detour_rng.uniform(0.0, 2.0 * math.pi)
            radius = self.params.aim_error_m * self._detour_rng.uniform(0.5, 1.0)
            self.aim_error = radius * np.array([math.cos(angle), math.sin(angle), 0.0])
        # whether this episode's first grasp goes beside the cube (drawn only when asked for, so
        # that the detours and aim errors of a seed stay what they were without it)
        self.miss = False
        if self.params.miss_fraction > 0.0 and len(self.spec.arms) == 1:
            self.miss = bool(self._detour_rng.uniform() < self.params.miss_fraction)

    # ------------------------------------------------------------------ helpers
    def _set_phase(self, phase: str, stamp_s: float) -> None:
        if phase != self.phase:
            self.phase = phase
            self._phase_since_s = stamp_s

    def _elapsed(self, stamp_s: float) -> float:
        if self._phase_since_s is None:
            self._phase_since_s = stamp_s
        return stamp_s - self._phase_since_s

    def _target_cube(self, observation: Observation) -> str:
        objects = observation.privileged.get("objects")
        if not objects:
            raise ValueError(
                "scripted expert needs Observation.privileged['objects'] (the sim/objects ground truth); got none"
            )
        if len(self.spec.arms) == 2:
            names = sorted(objects)
            # The hand-over cube is the one nearest the left arm's home workspace: the sim names it
            # first; fall back to red if present.
            return "red_cube" if "red_cube" in objects else names[0]
        match = re.search(r"\b(red|green|blue)\b", observation.instruction.lower())
        if match is None:
            raise ValueError(
                f"scripted expert cannot find a cube colour (red/green/blue) in instruction {observation.instruction!r}"
            )
        name = f"{match.group(1)}_cube"
        if name not in objects:
            raise ValueError(f"instruction asks for '{name}' but the objects are {sorted(objects)}")
        return name

    def _arm_state(self, q: np.ndarray, arm: ArmSpec) -> tuple[np.ndarray, np.ndarray]:
        """(T_world_base, T_base_tool) of `arm` at joints q."""
        return self.kin.frame_pose(q, arm.base_frame), self.kin.frame_pose(q, arm.tool_frame, arm.base_frame)

    def _grasp_rotation_for(self, arm: ArmSpec, cube_in_base: np.ndarray, current: np.ndarray, up_in_base: np.ndarray) -> np.ndarray:
        """Top-down grasp with the fingers closing across the cube faces, the cube-face pair and
        finger sign chosen nearest the current tool orientation (least wrist rotation)."""
        axes = self.axes[arm.name]
        best, best_angle = None, float("inf")
        cube_x = cube_in_base[:3, 0]
        cube_y = cube_in_base[:3, 1]
        for candidate in (cube_x, cube_y, -cube_x, -cube_y):
            horizontal = candidate - up_in_base * float(up_in_base @ candidate)
            if np.linalg.norm(horizontal) < 1e-6:
                continue
            R = _rotation_from_axes(-up_in_base, horizontal, axes)
            angle = _rotation_angle(R @ current.T)
            if angle < best_angle:
                best, best_angle = R, angle
        if best is None:
            raise ValueError("the cube is tipped over (no horizontal face normal); the top-down expert cannot grasp it")
        return best

    def _points_down(self, arm: ArmSpec, current: np.ndarray, down: np.ndarray) -> bool:
        a = current[:, _AXES[self.axes[arm.name].approach]]
        return math.acos(max(-1.0, min(1.0, float(a @ down)))) < self.params.tilt_first_rad

    def _tilt_down(self, arm: ArmSpec, current: np.ndarray, down: np.ndarray) -> np.ndarray:
        """The smallest rotation that points the approach axis down: a pure pitch of the wrist.

        Used, in place, before any travel while the tool is far from pointing down: a 6-DoF
        wrist (ViperX) starts near its stretched-out singularity, where travelling sideways with
        a fixed tool orientation needs wild forearm/wrist roll; pitched down it is far from it.
        Franka and UR start pointing down and skip this."""
        a = current[:, _AXES[self.axes[arm.name].approach]]
        axis = np.cross(a, down)
        angle = math.acos(max(-1.0, min(1.0, float(a @ down))))
        if np.linalg.norm(axis) < 1e-9:
            return current
        return _exp(axis / np.linalg.norm(axis) * angle) @ current

    def _rows(self, arm: str, T_tool: np.ndarray, goal_p: np.ndarray, goal_R: np.ndarray, speed: float) -> np.ndarray:
        """Rows towards the goal, continuing from the speed the previous chunk had planned for now
        (the observation carries no velocities; the plan is what the arm was asked to do)."""
        p = self.params
        previous = self._speed.get(arm)
        start_speed = 0.0
        if previous is not None:
            stamp, speeds = previous
            row = int(round((self._stamp_s - stamp) / self.period_s)) - 1
            start_speed = float(speeds[min(max(row, 0), len(speeds) - 1)])
        # Never assume more speed than the tool showed since the last observation: a chunk that
        # the controller refused (or a hold) left the arm at rest, and continuing a plan at
        # cruise speed from rest would ask for a jump the controller refuses again.
        seen = self._last_tool.get(arm)
        if seen is not None and self._stamp_s > seen[0]:
            measured = float(np.linalg.norm(T_tool[:3, 3] - seen[1])) / (self._stamp_s - seen[0])
            start_speed = min(start_speed, measured + 0.2 * p.accel_m_s2 * (self._stamp_s - seen[0]) + 0.01)
        else:
            start_speed = 0.0
        self._last_tool[arm] = (self._stamp_s, T_tool[:3, 3].copy())
        # Starting from rest, the motion begins `rest_lead_in_s` after the first plan from rest
        # (later chunks keep that start time): by the time a chunk reaches the controller its
        # first ~latency is in the past, and the arm must start from rest rather than jump onto
        # a profile that is already moving. If the arm still has not moved well after that
        # start (the chunk was refused), a new start time is set.
        delay = 0.0
        if start_speed < 0.02:
            start = self._rest_start.get(arm)
            if start is None or self._stamp_s > start + p.rest_lead_in_s + 0.5:
                start = self._stamp_s
                self._rest_start[arm] = start
            delay = max(0.0, start + p.rest_lead_in_s - self._stamp_s)
        else:
            self._rest_start.pop(arm, None)
        rows, speeds = plan_ee_delta_rows(
            T_tool[:3, 3],
            T_tool[:3, :3],
            goal_p,
            goal_R,
            speed,
            p.turn_speed_rad_s * speed / p.fast_speed_m_s,
            self.period_s,
            self.horizon_steps,
            accel_m_s2=p.accel_m_s2,
            start_speed_m_s=start_speed,
            delay_s=delay,
        )
        self._speed[arm] = (self._stamp_s, speeds)
        return rows

    def _gripper_opening(self, observation: Observation, arm: ArmSpec) -> float | None:
        g = arm.gripper
        for name in (arm.qualified(g.joint_name), g.joint_name):
            if name in observation.joint_names:
                return float(g.from_joint(observation.joint_positions[observation.joint_names.index(name)]))
        return None

    # ------------------------------------------------------------------ policy
    def infer(self, observation: Observation) -> ActionChunk:
        self._stamp_s = observation.stamp_s
        q = observation.positions_for(self.spec.joint_names)
        cube = self._target_cube(observation)
        T_world_cube = np.asarray(observation.privileged["objects"][cube], dtype=float)
        if T_world_cube.shape != (4, 4):
            raise ValueError(f"privileged object pose '{cube}' must be (4, 4), got {T_world_cube.shape}")
        if len(self.spec.arms) == 1:
            rows = self._pick(observation, q, T_world_cube)
        else:
            rows = self._handover(observation, q, T_world_cube)
        return ActionChunk(self.action_names, rows, self.period_s, observation.stamp_s)

    def _pick(self, obs: Observation, q: np.ndarray, T_world_cube: np.ndarray) -> np.ndarray:
        arm = self.spec.arms[0]
        p = self.params
        T_wb, T_bt = self._arm_state(q, arm)
        cube = np.linalg.inv(T_wb) @ T_world_cube
        up = np.linalg.inv(T_wb)[:3, :3] @ np.array([0.0, 0.0, 1.0])
        tool_p, tool_R = T_bt[:3, 3], T_bt[:3, :3]
        c = cube[:3, 3]
        R_grasp = self._grasp_rotation_for(arm, cube, tool_R, up)
        height = float(up @ (tool_p - c))
        aim = c + np.linalg.inv(T_wb)[:3, :3] @ self.aim_error * min(1.0, max(height, 0.0) / p.aim_error_height_m)
        if self.miss and self.phase in ("approach", "descend", "close"):
            aim = aim + self._miss_offset(obs, arm, T_wb, c, R_grasp, up)
        grasp_p = aim - up * p.grasp_depth_m
        pre_p = aim + up * p.pregrasp_height_m
        horizontal_err = float(np.linalg.norm((tool_p - aim) - up * float(up @ (tool_p - aim))))  # from where it aims
        ori_err = _rotation_angle(R_grasp @ tool_R.T)
        stamp = obs.stamp_s
        gripper = GRIPPER_OPEN
        # Transitions (checked in order so one observation can advance several phases).
        if self.phase == "approach" and self.detour is not None:
            offset_world, detour_height = self.detour
            detour_p = c + np.linalg.inv(T_wb)[:3, :3] @ offset_world + up * detour_height
            # reached (closely: the plan brakes into it, so the tool nearly stops there): from here
            # the ordinary approach corrects to the cube
            if np.linalg.norm(tool_p - detour_p) < 0.4 * p.position_tolerance_m and ori_err < p.orientation_tolerance_rad:
                self.detour = None
            else:
                pre_p = detour_p
        if self.phase == "approach":
            if np.linalg.norm(tool_p - pre_p) < p.position_tolerance_m and ori_err < p.orientation_tolerance_rad:
                self._set_phase("descend", stamp)
        if self.phase == "descend":
            if horizontal_err > 2.5 * p.position_tolerance_m:
                self._set_phase("approach", stamp)  # cube moved: re-align above it
            elif np.linalg.norm(tool_p - grasp_p) < 0.6 * p.position_tolerance_m:
                self._grasp_position = grasp_p.copy()
                self._grasp_rotation[arm.name] = R_grasp
                self._set_phase("close", stamp)
        if self.phase == "close" and self._elapsed(stamp) >= p.close_time_s:
            self._set_phase("lift", stamp)
            self.miss = False  # missed once (on purpose): from here on the expert aims at the cube
        if self.phase in ("lift", "hold") and float(np.linalg.norm(c - tool_p)) > p.lost_distance_m:
            self._set_phase("approach", stamp)  # dropped or missed it: start over
        if self.phase in ("close", "lift", "hold"):
            gripper = GRIPPER_CLOSED
        if self.phase == "approach":
            # Above the cube first; descend only once aligned, so the fingers never sweep it.
            goal_p, goal_R, speed = pre_p, R_grasp, p.fast_speed_m_s
            if not self._points_down(arm, tool_R, -up):
                goal_p, goal_R = tool_p, self._tilt_down(arm, tool_R, -up)
            if float(up @ (tool_p - c)) < 0.5 * p.pregrasp_height_m and horizontal_err > p.position_tolerance_m:
                goal_p = tool_p + up * (p.pregrasp_height_m - float(up @ (tool_p - c)))  # straight up first
        elif self.phase == "descend":
            goal_p, goal_R, speed = grasp_p, R_grasp, p.slow_speed_m_s
        elif self.phase == "close":
            goal_p, goal_R, speed = self._grasp_position, self._grasp_rotation[arm.name], p.slow_speed_m_s
        else:
            goal_p = self._grasp_position + up * p.lift_height_m
            goal_R, speed = self._grasp_rotation[arm.name], p.slow_speed_m_s
            if np.linalg.norm(tool_p - goal_p) < p.position_tolerance_m:
                self._set_phase("hold", stamp)
        rows = self._rows(arm.name, T_bt, goal_p, goal_R, speed)
        return np.column_stack([rows, np.full(self.horizon_steps, gripper)])

    def _miss_offset(self, obs: Observation, arm: ArmSpec, T_wb: np.ndarray, c: np.ndarray,
                     R_grasp: np.ndarray, up: np.ndarray) -> np.ndarray:
        """Base-frame offset of a deliberate miss: miss_offset_m horizontally across the closing
        direction of `R_grasp` (so the open fingers straddle empty table beside the cube), to the side
        whose landing point is farther from the other objects."""
        closing = R_grasp[:, _AXES[self.axes[arm.name].closing]]
        side = np.cross(up, closing)
        side /= np.linalg.norm(side)
        T_bw = np.linalg.inv(T_wb)
        others = [(T_bw @ np.asarray(T, dtype=float))[:3, 3] for T in obs.privileged["objects"].values()]
        others = [o for o in others if np.linalg.norm(o - c) > 1e-6]

        def clearance(sign: float) -> float:
            landing = c + sign * self.params.miss_offset_m * side
            return min((float(np.linalg.norm(o - landing)) for o in others), default=float("inf"))

        return max((1.0, -1.0), key=clearance) * self.params.miss_offset_m * side

    def _nearest_rotation(self, arm: ArmSpec, approach: np.ndarray, closing: np.ndarray, current: np.ndarray) -> np.ndarray:
        """Of the two finger orientations (closing axis +/-), the one nearer `current`."""
        candidates = [_rotation_from_axes(approach, sign * closing, self.axes[arm.name]) for sign in (1.0, -1.0)]
        return min(candidates, key=lambda R: _rotation_angle(R @ current.T))

    def _handover(self, obs: Observation, q: np.ndarray, T_world_cube: np.ndarray) -> np.ndarray:
        """Left picks the cube with its fingers tilted down `handover_pick_pitch_rad` and presents
        it above the middle with the fingers level; right takes it from the side, left lets go and
        backs off. All goals are world poses, re-derived from the cube's current pose on every call.

        No top-down grasps here: from ALOHA's start pose a 6-DoF ViperX can only point straight
        down by passing its wrist singularity (wrist_angle 0), which a safe controller refuses."""
        p = self.params
        left, right = self.spec.arms
        stamp = obs.stamp_s
        up = np.array([0.0, 0.0, 1.0])
        T_wb = {a.name: self.kin.frame_pose(q, a.base_frame) for a in (left, right)}
        T_tool = {a.name: T_wb[a.name] @ self.kin.frame_pose(q, a.tool_frame, a.base_frame) for a in (left, right)}
        base_l, base_r = T_wb[left.name][:3, 3], T_wb[right.name][:3, 3]
        across = base_r - base_l
        across[2] = 0.0
        u = across / np.linalg.norm(across)  # from the left arm towards the right arm
        v = np.cross(up, u)
        meet = 0.5 * (base_l + base_r)
        meet[2] = p.handover_height_m
        c = T_world_cube[:3, 3]
        pl, Rl = T_tool[left.name][:3, 3], T_tool[left.name][:3, :3]
        pr, Rr = T_tool[right.name][:3, 3], T_tool[right.name][:3, :3]
        if self._home_tool is None:
            self._home_tool = {
                a.name: T_wb[a.name] @ self.kin.frame_pose(self._home_q, a.tool_frame, a.base_frame) for a in (left, right)
            }

        # The approach points from the left base towards the cube and pitches down; the fingers
        # close across it. Its azimuth is the waist's: turning the tool about the vertical
        # relative to the arm would need the wrist rolls near their singularity. The cube lies
        # nearly square to the arms (the hand-over task draws its yaw within +/-0.15 rad) and
        # the closing fingers square it up.
        r = c - base_l
        r = r - up * float(up @ r)
        r /= np.linalg.norm(r)
        closing = np.cross(up, r)
        pitch = p.handover_pick_pitch_rad
        a_pick = math.cos(pitch) * r - math.sin(pitch) * up
        R_pick = self._nearest_rotation(left, a_pick, closing, Rl)
        left_grasp = c - p.left_grasp_offset_m * r
        left_pre = left_grasp - p.pregrasp_height_m * a_pick
        R_present = self._nearest_rotation(left, u, v, Rl)
        R_receive = self._nearest_rotation(right, -u, v, Rr)
        right_grasp = c + p.right_grasp_offset_m * u
        right_ready = c + p.receive_standoff_m * u
        tol = p.position_tolerance_m
        lost = float(np.linalg.norm(c - pl)) > p.lost_distance_m

        phase = self.phase
        if phase == "approach":
            if np.linalg.norm(pl - left_pre) < tol and _rotation_angle(R_pick @ Rl.T) < p.orientation_tolerance_rad:
                phase = "descend"
        if phase == "descend" and np.linalg.norm(pl - left_grasp) < 0.6 * tol:
            phase = "close"
        if phase == "close":
            self._grasp_position = Rl.T @ (c - pl)  # the cube in the left tool frame
        if phase == "close" and self._elapsed_for("close", stamp) >= p.close_time_s:
            phase = "present"
        if phase in ("present", "receive", "insert") and lost:
            phase = "approach"  # dropped before the right hand had it: pick it up again
        present_tool = meet - R_present @ self._grasp_position if self._grasp_position is not None else meet
        if phase == "present":
            goal = present_tool
            if np.linalg.norm(pl - goal) < tol and _rotation_angle(R_present @ Rl.T) < p.orientation_tolerance_rad:
                phase = "receive"
        if phase == "receive":
            if np.linalg.norm(pr - right_ready) < tol and _rotation_angle(R_receive @ Rr.T) < p.orientation_tolerance_rad:
                phase = "insert"
        if phase == "insert" and np.linalg.norm(pr - right_grasp) < 0.6 * tol:
            phase = "take"
        if phase == "take" and self._elapsed_for("take", stamp) >= p.close_time_s:
            phase = "release"
        if phase == "release" and self._elapsed_for("release", stamp) >= p.release_time_s:
            phase = "retreat"
        self._set_phase(phase, stamp)

        # Goals per phase: (left position, left rotation, left gripper, right ..., speed)
        slow, fast = p.slow_speed_m_s, p.fast_speed_m_s
        home_l, home_r = self._home_tool[left.name], self._home_tool[right.name]
        goal_l, R_l, g_l, speed_l = home_l[:3, 3], home_l[:3, :3], GRIPPER_OPEN, fast
        goal_r, R_r, g_r, speed_r = home_r[:3, 3], home_r[:3, :3], GRIPPER_OPEN, fast
        if phase == "approach":
            goal_l, R_l = left_pre, R_pick
            height = float(up @ (pl - c))
            if height < 0.5 * p.pregrasp_height_m and np.linalg.norm((pl - left_grasp) - up * height) > tol:
                goal_l = pl + up * (p.pregrasp_height_m - height)  # straight up first
        elif phase == "descend":
            goal_l, R_l, speed_l = left_grasp, R_pick, slow
        elif phase == "close":
            goal_l, R_l, g_l, speed_l = left_grasp, R_pick, GRIPPER_CLOSED, slow
        if phase in ("present", "receive", "insert", "take"):
            goal_l, R_l, g_l, speed_l = present_tool, R_present, GRIPPER_CLOSED, slow
        if phase == "receive":
            goal_r, R_r = right_ready, R_receive
        elif phase == "insert":
            goal_r, R_r, speed_r = right_grasp, R_receive, slow
        elif phase in ("take", "release", "retreat"):
            if self._hold_right is None:
                self._hold_right = (pr.copy(), Rr.copy())
            goal_r, R_r, g_r, speed_r = self._hold_right[0], self._hold_right[1], GRIPPER_CLOSED, slow
        if phase in ("approach", "descend", "close", "present", "receive", "insert"):
            self._hold_right = None
        if phase in ("release", "retreat"):
            if self._release_from is None:
                self._release_from = (pl.copy(), Rl.copy())
            start, R_start = self._release_from
            goal_l, R_l, g_l, speed_l = start, R_start, GRIPPER_OPEN, slow
            if phase == "retreat":
                goal_l = start + p.retreat_height_m * up - 0.06 * u  # back out of the grasp and up
        else:
            self._release_from = None

        columns = []
        for arm, goal_p, goal_R, grip, speed in ((left, goal_l, R_l, g_l, speed_l), (right, goal_r, R_r, g_r, speed_r)):
            T_bw = np.linalg.inv(T_wb[arm.name])
            T_bt = T_bw @ T_tool[arm.name]
            rows = self._rows(arm.name, T_bt, T_bw[:3, :3] @ goal_p + T_bw[:3, 3], T_bw[:3, :3] @ goal_R, speed)
            columns.append(np.column_stack([rows, np.full(self.horizon_steps, grip)]))
        return np.hstack(columns)

    def _elapsed_for(self, phase: str, stamp_s: float) -> float:
        """Time spent in `phase` so far (0 on the call that enters it)."""
        if self.phase != phase:
            return 0.0
        return self._elapsed(stamp_s)


def make_scripted_policy(embodiment: EmbodimentSpec, **kwargs) -> ScriptedExpert:
    """Factory registered as "scripted". kwargs: `kinematics`, `params` (ExpertParams or a dict),
    `grasp_axes` ({arm: GraspAxes})."""
    params = kwargs.pop("params", None)
    if isinstance(params, dict):
        params = ExpertParams(**params)
    unknown = set(kwargs) - {"kinematics", "grasp_axes"}
    if unknown:
        raise TypeError(f"make_scripted_policy got unknown arguments {sorted(unknown)}; valid: kinematics, params, grasp_axes")
    return ScriptedExpert(embodiment, params=params, **kwargs)
