"""Tasks of the simulated cell: seeded cube placement, the instruction, and the success check.

Single arm: "pick up the <colour> cube" (colour drawn per seed); success when that cube is
lifted at least `LIFT_HEIGHT_M` above the table and touches the gripper (held, not balanced).
Bimanual (ALOHA): "transfer the cube from the left arm to the right arm"; success when the cube
touches the right gripper, not the left one, and is clear of the table by `HANDOVER_CLEARANCE_M`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import mujoco
import numpy as np

from vla_ros.sim.scene import CUBE_HALF_SIZE_M, TABLE_TOP_Z_M, SimScene

LIFT_HEIGHT_M = 0.05
HANDOVER_CLEARANCE_M = 0.03
MIN_CUBE_SEPARATION_M = 0.09
HANDOVER_MAX_YAW_RAD = 0.15
PICK_INSTRUCTION = "pick up the {colour} cube"
HANDOVER_INSTRUCTION = "transfer the cube from the left arm to the right arm"


def _yaw_quat(yaw: float) -> np.ndarray:
    return np.array([math.cos(yaw / 2.0), 0.0, 0.0, math.sin(yaw / 2.0)])


@dataclass(frozen=True)
class Task:
    """One episode's task. `initial_cube_poses`: cube -> (7,) position + quaternion (w, x, y, z)."""

    kind: str  # "pick" | "handover"
    target: str  # cube body name
    instruction: str
    initial_cube_poses: dict[str, np.ndarray]
    scene: SimScene

    def cube_contacts(self, data: mujoco.MjData) -> set[int]:
        """Body ids touching the target cube."""
        cube = self.scene.cube_body_ids[self.target]
        model = self.scene.model
        out = set()
        for c in data.contact[: data.ncon]:
            b1, b2 = model.geom_bodyid[c.geom1], model.geom_bodyid[c.geom2]
            if b1 == cube:
                out.add(int(b2))
            elif b2 == cube:
                out.add(int(b1))
        return out

    def cube_clearance_m(self, data: mujoco.MjData) -> float:
        """Height of the cube's lowest corner above the table top."""
        bid = self.scene.cube_body_ids[self.target]
        R = data.xmat[bid].reshape(3, 3)
        lowest = data.xpos[bid][2] - CUBE_HALF_SIZE_M * float(np.abs(R[2]).sum())
        return float(lowest - TABLE_TOP_Z_M)

    def is_success(self, data: mujoco.MjData) -> bool:
        touching = self.cube_contacts(data)
        arms = self.scene.arms
        if self.kind == "pick":
            gripper = arms[0].gripper
            held = gripper is not None and bool(touching & gripper.body_ids)
            return held and self.cube_clearance_m(data) >= LIFT_HEIGHT_M
        left, right = arms[0].gripper, arms[1].gripper
        held_right = bool(touching & right.body_ids)
        released_left = not (touching & left.body_ids)
        return held_right and released_left and self.cube_clearance_m(data) >= HANDOVER_CLEARANCE_M


def _sample_positions(rng: np.random.Generator, scene: SimScene, count: int) -> list[np.ndarray]:
    r = scene.region
    points: list[np.ndarray] = []
    for _ in range(10_000):
        a, b = rng.uniform(-1.0, 1.0, size=2)
        p = r.center_xy_m + a * r.half_u_m * r.axis_u + b * r.half_v_m * r.axis_v
        if all(np.linalg.norm(p - q) >= MIN_CUBE_SEPARATION_M for q in points):
            points.append(p)
            if len(points) == count:
                return points
    raise RuntimeError(
        f"could not place {count} cubes {MIN_CUBE_SEPARATION_M} m apart in the spawn region {r}"
    )


def make_task(scene: SimScene, seed: int) -> Task:
    """The task of episode `seed`: same seed, same cubes and instruction."""
    rng = np.random.default_rng(seed)
    z = TABLE_TOP_Z_M + CUBE_HALF_SIZE_M
    poses: dict[str, np.ndarray] = {}
    if len(scene.arms) == 1:
        positions = _sample_positions(rng, scene, len(scene.cubes))
        for name, p in zip(scene.cubes, positions):
            poses[name] = np.concatenate([[p[0], p[1], z], _yaw_quat(rng.uniform(-math.pi / 4, math.pi / 4))])
        target = scene.cubes[int(rng.integers(len(scene.cubes)))]
        colour = target.removesuffix("_cube")
        return Task("pick", target, PICK_INSTRUCTION.format(colour=colour), poses, scene)
    # Hand-over: one cube in reach of the left arm; the others parked far behind, out of the way.
    target = scene.cubes[0]
    (p,) = _sample_positions(rng, scene, 1)
    # Nearly square to the arms: a 6-DoF ViperX cannot turn its fingers far about the vertical
    # near its start pose without passing its wrist singularity.
    poses[target] = np.concatenate([[p[0], p[1], z], _yaw_quat(rng.uniform(-HANDOVER_MAX_YAW_RAD, HANDOVER_MAX_YAW_RAD))])
    r = scene.region
    for k, name in enumerate(scene.cubes[1:]):
        q = r.center_xy_m + 0.4 * r.axis_v + (0.15 * k - 0.05) * r.axis_u
        poses[name] = np.concatenate([[q[0], q[1], z], _yaw_quat(0.0)])
    return Task("handover", target, HANDOVER_INSTRUCTION, poses, scene)
