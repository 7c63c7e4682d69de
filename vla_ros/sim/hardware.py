"""Simulated hardware: the MuJoCo scene behind the same interfaces a ros2_control driver offers.

No rclpy here: `vla_ros.nodes.sim_node` wraps this class in topics. Arms are driven through a
`JointTrajectoryController` (the semantics of a default ros2_control JTC, `vla_ros.core.jtc`)
or through forward position commands, grippers through joint-position commands. The
controllers update on every physics step (500 Hz at the default 2 ms timestep), like a
controller manager running at the hardware rate.

All MuJoCo calls, rendering included, must come from one thread: the EGL context of the
renderers belongs to the thread that created it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import mujoco
import numpy as np

from vla_ros.core.embodiment import EmbodimentSpec
from vla_ros.core.jtc import JointTrajectoryController, TrajectoryCommand
from vla_ros.sim.scene import TABLE_TOP_Z_M, SimScene, build_scene
from vla_ros.sim.tasks import Task, make_task


GRIPPER_FULL_STROKE_S = 0.4  # time to go from open to closed (Franka hand: 2 x 40 mm at ~0.1 m/s)


@dataclass(frozen=True)
class JointStateReading:
    """One arm's joint state as its driver reports it (bare names, gripper joint last)."""

    names: tuple[str, ...]
    positions: np.ndarray
    velocities: np.ndarray
    stamp_s: float


class SimulatedHardware:
    """The embodiment in MuJoCo: reset, step, read joints, command arms and grippers, render.

    Time is simulated time (`time_s`), advanced only by `step`.
    """

    def __init__(self, spec: EmbodimentSpec, urdf_xml: str | None = None) -> None:
        self.spec = spec
        self.scene: SimScene = build_scene(spec, urdf_xml)
        self.model = self.scene.model
        self.data = mujoco.MjData(self.model)
        self._jtc = {a.name: JointTrajectoryController(a.driver_joint_names) for a in self.scene.arms}
        self._mode = {a.name: "trajectory" for a in self.scene.arms}
        self._forward = {a.name: a.home_rad.copy() for a in self.scene.arms}
        self._gripper_goal = {a.name: a.gripper.open_position for a in self.scene.arms if a.gripper is not None}
        self._desired: dict[str, object] = {a.name: None for a in self.scene.arms}  # JTC output, last step
        # UR speed scaling (pendant slider x safety scaling): the JTC clock runs at this x real time
        self.speed_scaling = 1.0
        self._jtc_lag_s = 0.0  # real time - JTC clock
        # joint units per second; None = the default full stroke in GRIPPER_FULL_STROKE_S
        self._gripper_speed: dict[str, float | None] = {a.name: None for a in self.scene.arms}
        self._gripper_force_range = {a.name: self.model.actuator_forcerange[a.gripper.actuator_id].copy()
                                     for a in self.scene.arms if a.gripper is not None}
        self._renderers: dict[tuple[int, int], mujoco.Renderer] = {}
        self._render_times_s: dict[str, list[float]] = {}
        self.task: Task = make_task(self.scene, seed=0)
        self.episode_seed = 0
        self.episode_start_s = 0.0
        self.reset(0)

    # ------------------------------------------------------------------ episode
    @property
    def time_s(self) -> float:
        return float(self.data.time)

    @property
    def instruction(self) -> str:
        return self.task.instruction

    def reset(self, seed: int) -> None:
        """Arms at home with grippers open, cubes re-placed from `seed`, a new task.

        Time keeps running (a robot's clock never goes back; /clock must stay monotonic):
        `episode_start_s` marks the reset."""
        now_s = float(self.data.time)
        mujoco.mj_resetData(self.model, self.data)
        self.data.time = now_s
        self.episode_start_s = now_s
        self.episode_seed = int(seed)
        self.task = make_task(self.scene, seed=int(seed))
        for arm in self.scene.arms:
            self.data.qpos[arm.qpos_adr] = arm.home_rad
            self.data.ctrl[arm.actuator_ids] = arm.home_rad
            self._forward[arm.name] = arm.home_rad.copy()
            self._mode[arm.name] = "trajectory"
            self._jtc[arm.name].hold(arm.home_rad)
            if arm.gripper is not None:
                self.data.qpos[arm.gripper.qpos_adr] = arm.gripper.open_position
                self.data.ctrl[arm.gripper.actuator_id] = arm.gripper.open_position
                self._gripper_goal[arm.name] = arm.gripper.open_position
                self._gripper_speed[arm.name] = None
                self.model.actuator_forcerange[arm.gripper.actuator_id] = self._gripper_force_range[arm.name]
        # Coupled finger joints follow the driver joint through equality constraints; start them
        # consistent so the first steps do not snap.
        self._match_coupled_joints()
        for name, pose in self.task.initial_cube_poses.items():
            adr = self.scene.cube_qpos_adr[name]
            self.data.qpos[adr : adr + 3] = pose[:3]
            self.data.qpos[adr + 3 : adr + 7] = pose[3:]
        mujoco.mj_forward(self.model, self.data)

    def _match_coupled_joints(self) -> None:
        m = self.model
        # Twice: a finger may mimic a finger that is itself coupled to a gripper motor.
        for e in list(range(m.neq)) * 2:
            if m.eq_type[e] != mujoco.mjtEq.mjEQ_JOINT:
                continue
            j1, j2 = m.eq_obj1id[e], m.eq_obj2id[e]
            if j2 < 0:
                continue
            c = m.eq_data[e]
            # MuJoCo joint equality: q1 - ref1 = poly(q2 - ref2); with ref 0 and a linear map.
            self.data.qpos[m.jnt_qposadr[j1]] = c[0] + c[1] * self.data.qpos[m.jnt_qposadr[j2]]

    # ------------------------------------------------------------------ stepping
    def step(self, duration_s: float) -> None:
        """Advance physics by `duration_s` (rounded to whole timesteps, at least one)."""
        if not (duration_s >= 0.0 and np.isfinite(duration_s)):
            raise ValueError(f"step duration_s must be a finite non-negative number, got {duration_s}")
        n = max(1, int(round(duration_s / self.model.opt.timestep)))
        for _ in range(n):
            self._update_controllers()
            mujoco.mj_step(self.model, self.data)

    @property
    def jtc_time_s(self) -> float:
        """The JTCs' clock: simulated time, slowed by the speed scaling (ur_robot_driver's scaled
        JTC advances its trajectories at speed_scaling x real time)."""
        return self.time_s - self._jtc_lag_s

    def _update_controllers(self) -> None:
        t = self.time_s
        dt = self.model.opt.timestep
        if self.speed_scaling != 1.0:
            self._jtc_lag_s += (1.0 - self.speed_scaling) * dt
        for arm in self.scene.arms:
            g = arm.gripper
            if g is not None:
                # Real grippers move their fingers slowly (Franka hand ~0.1 m/s per finger); a
                # finger slamming shut at servo speed launches the cube instead of grasping it.
                speed = self._gripper_speed[arm.name]
                if speed is None:
                    speed = abs(g.open_position - g.closed_position) / GRIPPER_FULL_STROKE_S
                step = speed * dt
                current = self.data.ctrl[g.actuator_id]
                goal = self._gripper_goal[arm.name]
                self.data.ctrl[g.actuator_id] = current + float(np.clip(goal - current, -step, step))
            if self._mode[arm.name] == "forward":
                self.data.ctrl[arm.actuator_ids] = self._forward[arm.name]
                continue
            q = self.data.qpos[arm.qpos_adr]
            qd = self.data.qvel[arm.dof_adr]
            desired = self._jtc[arm.name].update(self.jtc_time_s, q, qd)
            self._desired[arm.name] = desired
            if desired is not None:
                # Velocity feed-forward cancels the servo's damping lag on a moving target (the JTC's
                # velocities are per second of its scaled clock).
                self.data.ctrl[arm.actuator_ids] = (desired.positions + arm.servo_kv_over_kp_s * desired.velocities
                                                    * self.speed_scaling)

    # ------------------------------------------------------------------ commands
    def apply_trajectory(self, arm: str, command: TrajectoryCommand) -> str | None:
        """A JointTrajectory on the arm's JTC topic; returns the rejection reason, None if accepted."""
        if self._jtc_lag_s != 0.0 and command.stamp_s != 0.0:
            # a stamp is a real time; on the scaled clock it is that far from now
            command = TrajectoryCommand(command.joint_names, command.points, max(command.stamp_s - self._jtc_lag_s, 1e-9))
        reason = self._jtc[self.scene.arm(arm).name].receive(command, self.jtc_time_s)
        if reason is None:
            self._mode[arm] = "trajectory"
        return reason

    def apply_forward_command(self, arm: str, positions: Sequence[float]) -> None:
        """A forward position command: one value per arm joint in driver order, applied at once."""
        binding = self.scene.arm(arm)
        values = np.asarray(positions, dtype=float).reshape(-1)
        if values.shape[0] != len(binding.driver_joint_names):
            raise ValueError(
                f"forward command for arm '{arm}' has {values.shape[0]} values, expected "
                f"{len(binding.driver_joint_names)} ({list(binding.driver_joint_names)})"
            )
        if not np.all(np.isfinite(values)):
            raise ValueError(f"forward command for arm '{arm}' contains non-finite values: {values.tolist()}")
        self._forward[arm] = values.copy()
        self._mode[arm] = "forward"

    def apply_gripper_command(self, arm: str, joint_position: float) -> None:
        """Gripper joint position (the driver's gripper joint, e.g. finger travel in m)."""
        binding = self.scene.arm(arm)
        if binding.gripper is None:
            raise ValueError(f"arm '{arm}' has no gripper")
        x = float(joint_position)
        if not np.isfinite(x):
            raise ValueError(f"gripper command for arm '{arm}' is not finite: {joint_position}")
        g = binding.gripper
        lo, hi = sorted((g.open_position, g.closed_position))
        self._gripper_goal[binding.name] = min(max(x, lo), hi)

    def set_gripper_motion(self, arm: str, speed: float | None = None, force_limit: float | None = None) -> None:
        """Finger speed (joint units / s) for the following gripper commands and the actuator's force
        limit (N); None restores the defaults. A real franka_gripper moves at the requested speed
        and grasps with the requested force."""
        binding = self.scene.arm(arm)
        if binding.gripper is None:
            raise ValueError(f"arm '{arm}' has no gripper")
        for what, value in (("speed", speed), ("force_limit", force_limit)):
            if value is not None and not (np.isfinite(value) and value > 0.0):
                raise ValueError(f"gripper {what} must be a positive number, got {value}")
        self._gripper_speed[binding.name] = None if speed is None else float(speed)
        default = self._gripper_force_range[binding.name]
        self.model.actuator_forcerange[binding.gripper.actuator_id] = (
            default if force_limit is None else (-float(force_limit), float(force_limit)))

    def jtc_desired(self, arm: str):
        """The arm JTC's desired state of the last physics step (vla_ros.core.jtc.JointState, driver
        joint order), None in forward mode or before anything was commanded."""
        name = self.scene.arm(arm).name
        return None if self._mode[name] == "forward" else self._desired[name]

    def jtc(self, arm: str):
        """The arm's simulated JointTrajectoryController (read-only use: `active`, `joint_names`)."""
        return self._jtc[self.scene.arm(arm).name]

    def hold_measured(self, arm: str) -> None:
        """What a JTC does when it aborts a goal: drop the trajectory, hold the measured position."""
        name = self.scene.arm(arm).name
        self._jtc[name].hold(self.arm_positions(name))
        self._mode[name] = "trajectory"

    def gripper_goal(self, arm: str) -> float:
        """The gripper joint position the gripper is moving to (its command before rate limiting)."""
        return float(self._gripper_goal[self.scene.arm(arm).name])

    # ------------------------------------------------------------------ state
    def joint_state(self, arm: str) -> JointStateReading:
        binding = self.scene.arm(arm)
        names = list(binding.driver_joint_names)
        q = list(self.data.qpos[binding.qpos_adr])
        qd = list(self.data.qvel[binding.dof_adr])
        if binding.gripper is not None:
            names.append(binding.gripper.driver_name)
            q.append(self.data.qpos[binding.gripper.qpos_adr])
            qd.append(self.data.qvel[binding.gripper.dof_adr])
        return JointStateReading(tuple(names), np.array(q), np.array(qd), self.time_s)

    def arm_positions(self, arm: str) -> np.ndarray:
        return self.data.qpos[self.scene.arm(arm).qpos_adr].copy()

    def object_poses(self) -> dict[str, np.ndarray]:
        """Ground-truth world pose (4, 4) of every cube."""
        out = {}
        for name, bid in self.scene.cube_body_ids.items():
            T = np.eye(4)
            T[:3, :3] = self.data.xmat[bid].reshape(3, 3)
            T[:3, 3] = self.data.xpos[bid]
            out[name] = T
        return out

    def body_pose(self, body_id: int) -> np.ndarray:
        T = np.eye(4)
        T[:3, :3] = self.data.xmat[body_id].reshape(3, 3)
        T[:3, 3] = self.data.xpos[body_id]
        return T

    def is_success(self) -> bool:
        return self.task.is_success(self.data)

    @property
    def table_top_z_m(self) -> float:
        return TABLE_TOP_Z_M

    # ------------------------------------------------------------------ cameras
    def render(self, slot: str) -> np.ndarray:
        """RGB image (H, W, 3) uint8 of camera `slot` at the configured size."""
        if slot not in self.scene.cameras:
            raise KeyError(f"no camera slot '{slot}'; slots: {sorted(self.scene.cameras)}")
        cam = next(c for c in self.spec.cameras if c.slot == slot)
        key = (cam.height, cam.width)
        renderer = self._renderers.get(key)
        if renderer is None:
            renderer = mujoco.Renderer(self.model, height=cam.height, width=cam.width)
            # Shadows and reflections cost ~10x on a software (llvmpipe) EGL context.
            renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = False
            renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = False
            self._renderers[key] = renderer
        t0 = time.perf_counter()
        renderer.update_scene(self.data, camera=self.scene.cameras[slot])
        image = renderer.render().copy()
        self._render_times_s.setdefault(slot, []).append(time.perf_counter() - t0)
        return image

    def render_time_s(self) -> dict[str, float]:
        """Mean wall time of one render per camera slot so far."""
        return {k: float(np.mean(v)) for k, v in self._render_times_s.items() if v}

    def close(self) -> None:
        for r in self._renderers.values():
            r.close()
        self._renderers.clear()
