"""Run a policy directly against `SimulatedHardware`, without ROS: observation -> policy ->
ActionAdapter (IK) -> JTC trajectory + gripper command -> physics.

This is the reference loop the ROS graph must reproduce; it proves a policy (the scripted
expert above all) on the simulation alone, and serves data generation where the graph is not
needed. Chunks are re-planned every `replan_period_s` of simulated time; row i of a chunk is
reached at (i + 1) * period after the observation (the action moves state t to t + 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vla_ros.core.action_spaces import ActionAdapter, detect_space
from vla_ros.core.jtc import TrajectoryCommand, TrajectoryPoint
from vla_ros.core.kinematics import RobotKinematics
from vla_ros.core.types import Observation
from vla_ros.policies.base import Policy
from vla_ros.sim.hardware import SimulatedHardware


@dataclass(frozen=True)
class EpisodeResult:
    seed: int
    success: bool
    duration_s: float  # simulated time until success (or the timeout)
    instruction: str
    chunks: int


def observe(hw: SimulatedHardware, with_images: bool, privileged: bool) -> Observation:
    """The observation a policy node would assemble from the sim's topics at this instant."""
    names: list[str] = []
    positions: list[float] = []
    for binding in hw.scene.arms:
        arm = hw.spec.arm(binding.name)
        state = hw.joint_state(binding.name)
        names.extend(arm.qualified(n) for n in state.names)
        positions.extend(state.positions.tolist())
    images = {c.slot: hw.render(c.slot) for c in hw.spec.cameras} if with_images else {}
    extra = {"objects": hw.object_poses()} if privileged else {}
    return Observation(hw.time_s, images, tuple(names), np.array(positions), hw.instruction, privileged=extra)


def send_joint_targets(hw: SimulatedHardware, names: tuple[str, ...], positions: np.ndarray, gripper: np.ndarray, period_s: float) -> None:
    """Row i as a JTC point at (i + 1) * period (stamp 0: start now); the gripper takes row 0."""
    for binding in hw.scene.arms:
        arm = hw.spec.arm(binding.name)
        cols = [names.index(arm.qualified(j)) for j in arm.joint_names]
        points = tuple(TrajectoryPoint((i + 1) * period_s, tuple(row[cols])) for i, row in enumerate(positions))
        reason = hw.apply_trajectory(binding.name, TrajectoryCommand(tuple(arm.joint_names), points))
        if reason is not None:
            raise RuntimeError(f"the simulated JTC rejected a trajectory for arm '{binding.name}': {reason}")
    k = 0
    for arm in hw.spec.arms:
        if arm.gripper is not None:
            hw.apply_gripper_command(arm.name, arm.gripper.to_joint(gripper[0, k]))
            k += 1


def run_episode(
    hw: SimulatedHardware,
    policy: Policy,
    seed: int,
    timeout_s: float = 20.0,
    replan_period_s: float | None = None,
    kinematics: RobotKinematics | None = None,
    with_images: bool = False,
    hold_success_s: float = 0.3,
) -> EpisodeResult:
    """Reset to `seed`, run the closed loop until the task has succeeded for `hold_success_s`
    (held, not a bounce) or `timeout_s` of simulated time passed."""
    kin = kinematics if kinematics is not None else RobotKinematics.from_embodiment(hw.spec)
    replan = policy.period_s if replan_period_s is None else float(replan_period_s)
    hw.reset(seed)
    policy.reset()
    adapter: ActionAdapter | None = None
    chunks = 0
    success_since: float | None = None
    deadline_s = hw.time_s + timeout_s
    while hw.time_s < deadline_s:
        obs = observe(hw, with_images, policy.needs_privileged)
        chunk = policy.infer(obs)
        if adapter is None:
            space = detect_space(hw.spec, chunk.names)
            if space is None:
                raise ValueError(f"policy action names {list(chunk.names)} fit no action space of '{hw.spec.name}'")
            adapter = ActionAdapter(hw.spec, kin, space)
        q_ref = obs.positions_for(hw.spec.joint_names)
        targets = adapter.to_joint_targets(chunk, q_ref)
        send_joint_targets(hw, targets.joint_names, targets.positions, targets.gripper, chunk.period_s)
        chunks += 1
        t_end = hw.time_s + replan
        while hw.time_s < t_end - 1e-9:
            hw.step(hw.model.opt.timestep)
            if hw.is_success():
                success_since = hw.time_s if success_since is None else success_since
                if hw.time_s - success_since >= hold_success_s:
                    return EpisodeResult(seed, True, success_since - hw.episode_start_s, hw.instruction, chunks)
            else:
                success_since = None
    return EpisodeResult(seed, False, hw.time_s - hw.episode_start_s, hw.instruction, chunks)
