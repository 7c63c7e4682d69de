"""Does a goal-head checkpoint find the cube its instruction names, on scenes it never saw?

For each seed the simulation is reset (the scene `vla-ros eval --seed` would give), both cameras are
rendered at the start pose and the model's goal head is asked, for each colour in turn, where the
grasp will be; the answer counts as right when the asked cube is the nearest one (table plane).
Works on a saved model folder, or with --step-file on a training checkpoint (`checkpoints/step_*.pt`)
of a run whose model config and goal statistics are those of the folder given (the same recipe), so
a run can be judged while it trains.

With --above H the arm is first put (by IK, pointing down) with its tool H m above the asked cube,
off-centre by --offset m in a random direction: the view of the final approach, where the wrist
camera sees the cube up close. The median error there is the precision a grasp can get from it.

    python scripts/probe_goal.py CKPT [--step-file PATH] [--seed 90001] [--scenes 20] [--above H [--offset R]]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

COLOURS = ("red", "green", "blue")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="a model folder (config.json, model.safetensors, training.json)")
    parser.add_argument("--step-file", default=None, help="a training checkpoint .pt to load instead of the weights")
    parser.add_argument("--seed", type=int, default=90001)
    parser.add_argument("--scenes", type=int, default=20)
    parser.add_argument("--embodiment", default="fr3")
    parser.add_argument("--above", type=float, default=None, help="tool this high (m) above the asked cube")
    parser.add_argument("--offset", type=float, default=0.02, help="with --above: horizontal offset (m)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    import mujoco
    import torch

    from vla_ros.core.embodiment import load_embodiment
    from vla_ros.core.kinematics import RobotKinematics
    from vla_ros.core.normalization import NormStats
    from vla_ros.policies.vla.config import VLAConfig
    from vla_ros.policies.vla.model import VLAModel
    from vla_ros.policies.vla.training import inputs_from_pixels
    from vla_ros.sim.hardware import SimulatedHardware
    from vla_ros.train.data import _resize_frames

    folder = Path(args.checkpoint)
    training = json.loads((folder / "training.json").read_text())
    if args.step_file:
        state = torch.load(args.step_file, map_location="cpu", weights_only=False)
        config = VLAConfig.from_dict(json.loads((folder / "config.json").read_text()))
        model = VLAModel(config, norm_stats=NormStats.from_json(state["norm_stats"]))
        model.load_state_dict(state["model"])
    else:
        model = VLAModel.from_pretrained(folder)
    model.eval()
    if model.goal_head is None:
        raise SystemExit(f"{folder}: the model has no goal head")
    mean, std = (np.asarray(training["goal"][k]) for k in ("mean_m", "std_m"))
    spec = load_embodiment(args.embodiment)
    hw = SimulatedHardware(spec)
    arm = spec.arms[0]
    size = model.config.vision.image_size
    right, errors, confusion = 0, [], {c: {d: 0 for d in COLOURS} for c in COLOURS}
    kin = RobotKinematics.from_embodiment(spec)
    rng = np.random.default_rng(args.seed)
    arm_index = np.array([kin.joint_names.index(j) for j in arm.joint_names])

    def pose_above(cube_world: np.ndarray) -> None:
        """Teleport the arm (no physics step: the cubes stay put) to the tool above the cube."""
        home = np.asarray(arm.home_rad, dtype=float)
        T_wb = kin.frame_pose(home, arm.base_frame)
        target = kin.frame_pose(home, arm.tool_frame, arm.base_frame)  # home points the tool down
        angle = rng.uniform(0.0, 2.0 * np.pi)
        world = cube_world + np.array([args.offset * np.cos(angle), args.offset * np.sin(angle), args.above])
        target[:3, 3] = (np.linalg.inv(T_wb) @ np.r_[world, 1.0])[:3]
        result = kin.solve_ik(target, arm.name, q_seed=home)
        if not bool(result.success[0]):
            raise SystemExit(f"no IK solution {args.above} m above the cube at {cube_world.round(3).tolist()}")
        q = result.q[0][arm_index]
        hw.data.qpos[hw.scene.arms[0].qpos_adr] = q
        mujoco.mj_forward(hw.model, hw.data)

    def observe() -> tuple[torch.Tensor, np.ndarray]:
        pix = np.stack([_resize_frames(hw.render(s)[None], size)[0] for s in model.config.camera_slots])
        reading = hw.joint_state(arm.name)
        state = np.r_[reading.positions[:len(arm.joint_names)], arm.gripper.from_joint(reading.positions[-1])]
        return torch.from_numpy(pix).permute(0, 3, 1, 2).float()[None] / 255.0, state

    try:
        for k in range(args.scenes):
            hw.reset(args.seed + k)
            hw.step(0.05)
            x, state = observe()
            cubes = {n.removesuffix("_cube"): np.asarray(p[:2, 3]) for n, p in hw.object_poses().items()}
            centres = {n.removesuffix("_cube"): np.asarray(p[:3, 3]) for n, p in hw.object_poses().items()}
            for colour in COLOURS:
                if args.above is not None:
                    pose_above(centres[colour])
                    x, state = observe()
                inputs = inputs_from_pixels(model, x, [f"pick up the {colour} cube"], state[None])
                goal = model.predict_goal(inputs)[0].numpy() * std + mean
                dist = {c: float(np.linalg.norm(goal[:2] - xy)) for c, xy in cubes.items()}
                nearest = min(dist, key=dist.get)
                confusion[colour][nearest] += 1
                right += nearest == colour
                errors.append(dist[colour])
    finally:
        hw.close()
    total = 3 * args.scenes
    summary = {"checkpoint": str(args.step_file or folder), "seed": args.seed, "scenes": args.scenes,
               "view": "start pose" if args.above is None else f"{args.above} m above the asked cube, {args.offset} m off",
               "nearest_is_asked": f"{right}/{total}", "xy_error_cm_median": round(100 * float(np.median(errors)), 2),
               "xy_error_cm_p90": round(100 * float(np.percentile(errors, 90)), 2),
               "confusion_asked_vs_nearest": confusion}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
