"""Open-loop probe of a trained ee_pose checkpoint on recorded episodes: where it aims, and whether the
instruction decides it -- the two things a closed-loop `vla-ros eval` only shows as 0 or 1.

For each probed episode (default: the checkpoint's validation episodes, never trained on):
- grasp error: the demonstration closes its gripper at frame g; the model, given frame g - (C-1) (C =
  chunk length), predicts a chunk whose last row is the pose at g. The horizontal and vertical
  distances between that row and the demonstration's own target pose (the same conversion training
  used) are what a grasp can tolerate or not (an FR3 hand is 8 cm open around a 5 cm cube: ~1.5 cm);
- the same at every frame (mean over the chunk rows), for the whole-trajectory error;
- instruction swap: on the episode's first frame, asked for each colour in turn, the cube whose
  direction (from the tool, in the table plane) best matches the predicted chunk's motion is the cube
  the model heads for. The cube positions come from the task code for the episode's seed (episode k
  of a `vla-ros record --seed S` dataset is seed S + k when every episode was saved; checked against
  the recorded instruction).

    python scripts/probe_builtin.py --data DIR --checkpoint CKPT [--episodes 0 5 ...] [--seed0 0] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

COLOURS = ("red", "green", "blue")


def _xyz_cols(names) -> list[int]:
    return [next(i for i, n in enumerate(names) if n.endswith("ee_pose/" + f)) for f in ("x", "y", "z")]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--episodes", type=int, nargs="*", default=None, help="default: training.json's val episodes")
    parser.add_argument("--seed0", type=int, default=0, help="seed of episode 0 (vla-ros record --seed)")
    parser.add_argument("--embodiment", default="fr3")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    from vla_ros.core.embodiment import load_embodiment
    from vla_ros.core.types import Observation
    from vla_ros.policies.vla.policy import make_vla_policy
    from vla_ros.sim.scene import build_scene
    from vla_ros.sim.tasks import make_task
    from vla_ros.train.data import ChunkConverter, DatasetSource, grasp_frames

    spec = load_embodiment(args.embodiment)
    training = json.loads((Path(args.checkpoint) / "training.json").read_text())
    episodes = args.episodes
    if episodes is None:
        episodes = next(v for k, v in _walk(training) if k == "val_episodes")
    policy = make_vla_policy(spec, checkpoint=args.checkpoint, device="cpu", warmup=False)
    src = DatasetSource(args.data)
    converter = ChunkConverter(spec, "ee_pose", src.action_names)
    arm = spec.arms[0]
    names = tuple(arm.joint_names) + ((arm.gripper.joint_name,) if arm.gripper is not None else ())
    scene = build_scene(spec)
    slots = src.camera_slots

    def infer(ep, frames, t: int, instruction: str) -> np.ndarray:
        q = np.asarray(ep.state[t, :len(arm.joint_names)], np.float64)
        g = [float(arm.gripper.to_joint(ep.state[t, len(arm.joint_names)]))] if arm.gripper is not None else []
        obs = Observation(stamp_s=float(ep.timestamps[t]), images={s: frames[s][t] for s in slots}, joint_names=names,
                          joint_positions=np.r_[q, g], instruction=instruction)
        policy.reset()
        chunk = policy.infer(obs)
        return np.asarray(chunk.values)[:, _xyz_cols(chunk.names)]

    per_episode, grasp_xy, grasp_z, traj, confusion = [], [], [], [], {c: {d: 0 for d in COLOURS} for c in COLOURS}
    for k in episodes:
        ep = src.episode(k)
        frames = {s: ep.frames(s) for s in slots}
        C = infer(ep, frames, 0, ep.task).shape[0]  # the model's chunk length
        chunks, valid = converter.episode_chunks(ep, 1.0 / src.fps, C)
        cols = _xyz_cols(converter.names)
        closes = grasp_frames(ep.action[:, -1])  # the last: the grasp the demonstration ends holding
        g = closes[-1] if closes else ep.length - 1
        t = max(g - (C - 1), 0)
        pred = infer(ep, frames, t, ep.task)
        target = chunks[t][:, cols]
        row = min(g - t, C - 1)
        e_xy = float(np.linalg.norm(pred[row, :2] - target[row, :2]))
        e_z = float(pred[row, 2] - target[row, 2])
        grasp_xy.append(e_xy)
        grasp_z.append(e_z)
        errs = []
        for tt in range(0, ep.length, 5):
            p = infer(ep, frames, tt, ep.task)
            m = valid[tt]
            errs.append(float(np.mean(np.linalg.norm(p[m] - chunks[tt][m][:, cols], axis=1))))
        traj.append(float(np.mean(errs)))
        task = make_task(scene, args.seed0 + k)
        asked_true = task.target.removesuffix("_cube")
        if asked_true not in ep.task:
            raise SystemExit(f"episode {k}: recorded '{ep.task}' but seed {args.seed0 + k} asks for {asked_true}: "
                             "pass the right --seed0 (or the episodes were not saved in seed order)")
        cubes = {name.removesuffix("_cube"): np.asarray(p[:2]) for name, p in task.initial_cube_poses.items()}
        tool0 = target[0, :2]  # the demonstration's first target: the tool where it starts
        heads = {}
        for colour in COLOURS:
            instruction = ep.task.replace(asked_true, colour)
            p = infer(ep, frames, 0, instruction)
            motion = p[-1, :2] - p[0, :2] if np.linalg.norm(p[-1, :2] - p[0, :2]) > 1e-3 else p[-1, :2] - tool0
            score = {c: float(np.dot(motion, (xy - tool0) / (np.linalg.norm(xy - tool0) + 1e-9))) for c, xy in cubes.items()}
            heads[colour] = max(score, key=score.get)
            confusion[colour][heads[colour]] += 1
        per_episode.append({"episode": k, "seed": args.seed0 + k, "asked": asked_true, "grasp_frame": g,
                            "grasp_xy_error_cm": round(100 * e_xy, 2), "grasp_z_error_cm": round(100 * e_z, 2),
                            "trajectory_error_cm": round(100 * traj[-1], 2), "heads_for": heads})
        if not args.json:
            print(json.dumps(per_episode[-1]), flush=True)
    right = sum(confusion[c][c] for c in COLOURS)
    total = sum(sum(v.values()) for v in confusion.values())
    summary = {"episodes": list(episodes), "grasp_xy_error_cm": {"median": round(100 * float(np.median(grasp_xy)), 2),
               "max": round(100 * float(np.max(grasp_xy)), 2)},
               "grasp_z_error_cm_mean": round(100 * float(np.mean(grasp_z)), 2),
               "trajectory_error_cm_mean": round(100 * float(np.mean(traj)), 2),
               "instruction_heads_for_named_cube": f"{right}/{total}", "confusion_asked_vs_headed": confusion}
    print(json.dumps(summary))
    return 0


def _walk(obj):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield k, v
            yield from _walk(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _walk(v)


if __name__ == "__main__":
    sys.exit(main())
