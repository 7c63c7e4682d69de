"""Write builtin.json into a shipped built-in checkpoint (called by scripts/train_builtin.sh).

What the checkpoint was made from (dataset size, tasks, the seeds of the saved recording episodes,
read from `vla-ros record`'s per-episode lines), how it was trained (training.json), how it scored
(`vla-ros eval --json`'s last line) and the timings, plus a reference chunk for a fixed synthetic
observation: test/policies/test_builtin.py checks that the shipped weights reproduce it.

    python scripts/ship_builtin.py EMBODIMENT WORK_DIR OUT_CKPT RECORD_S TRAIN_S EVAL_S [EXTRA_DATA ...]

EXTRA_DATA: more dataset folders the model was trained on (their record.log is read from the
folder above each, as train_builtin.sh writes it).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np

from vla_ros.core.embodiment import load_embodiment
from vla_ros.core.types import Observation
from vla_ros.data import LeRobotDataset
from vla_ros.policies.vla.policy import make_vla_policy

REFERENCE = {"instruction": "pick up the red cube", "image_value": 128}
_SAVED = re.compile(r"^episode \d+/\d+\s+seed (\d+)\s+success .* saved as episode", re.M)


def reference_observation(embodiment: str) -> tuple[dict, Observation]:
    """A fixed synthetic observation: grey images, the arm at home with its gripper open."""
    spec = load_embodiment(embodiment)
    names: list[str] = []
    positions: list[float] = []
    for arm in spec.arms:
        names += arm.joint_names
        positions += [round(float(v), 3) for v in arm.home_rad]
        if arm.gripper is not None:
            names.append(arm.gripper.joint_name)
            positions.append(float(arm.gripper.open_position))
    ref = {**REFERENCE, "joint_names": names, "joint_positions": positions}
    images = {c.slot: np.full((c.height, c.width, 3), ref["image_value"], np.uint8) for c in spec.cameras}
    return ref, Observation(stamp_s=0.0, images=images, joint_names=tuple(names),
                            joint_positions=np.asarray(positions), instruction=ref["instruction"])


def main(embodiment: str, work: Path, out: Path, record_s: int, train_s: int, eval_s: int, extra: list[Path]) -> None:
    datasets = [LeRobotDataset(d) for d in [work / "data", *extra]]
    training = json.loads((out / "training.json").read_text())
    seeds: list[int] | None = []
    for record_log in [work / "record.log", *(d.parent / "record.log" for d in extra)]:
        if not record_log.is_file():
            seeds = None
            break
        seeds += [int(s) for s in _SAVED.findall(record_log.read_text())]
    eval_log = work / "eval.log"
    evals = [json.loads(l) for l in eval_log.read_text().splitlines() if l.startswith("{")] if eval_log.is_file() else []
    policy = make_vla_policy(embodiment, checkpoint=str(out), warmup=False)
    ref, obs = reference_observation(embodiment)
    policy.reset()
    chunk = policy.infer(obs)
    meta = {
        "embodiment": embodiment,
        "dataset": {"episodes": sum(ds.num_episodes for ds in datasets),
                    "frames": sum(ds.num_frames for ds in datasets), "fps": datasets[0].fps, "policy": "scripted",
                    "tasks": sorted({ds.episode_meta(i)["tasks"][0] for ds in datasets for i in range(ds.num_episodes)}),
                    "record_seeds": seeds},
        "training": {k: training.get(k) for k in ("steps", "batch_size", "chunk_size", "action_space", "camera_slots",
                                                  "parameters", "final_loss", "final_val_loss", "samples_per_s")},
        "timings_s": {"record": record_s, "train": train_s, "eval": eval_s},
        "eval": evals[-1] if evals else None,
        "reference": {**ref, "names": list(chunk.names), "chunk": np.round(chunk.values, 6).tolist()},
    }
    (out / "builtin.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"wrote {out / 'builtin.json'}")


if __name__ == "__main__":
    emb, w, o, r, t, e = sys.argv[1:7]
    main(emb, Path(w), Path(o), int(r), int(t), int(e), [Path(d) for d in sys.argv[7:]])
