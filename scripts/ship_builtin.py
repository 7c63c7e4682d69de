"""Write builtin.json into a shipped built-in checkpoint (called by scripts/train_builtin.sh).

What the checkpoint was made from (dataset size, tasks, the seeds of the saved recording episodes,
read from `vla-ros record`'s per-episode lines), how it was trained (training.json), how it scored
(`vla-ros eval --json`'s last line) and the timings, plus a reference chunk for a fixed synthetic
observation: test/policies/test_builtin.py checks that the shipped weights reproduce it.

    python scripts/ship_builtin.py WORK_DIR OUT_CKPT RECORD_S TRAIN_S EVAL_S
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np

from vla_ros.core.types import Observation
from vla_ros.data import LeRobotDataset
from vla_ros.policies.vla.policy import make_vla_policy

REFERENCE = {"instruction": "pick up the red cube", "image_value": 128,
             "joint_positions": [0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785, 0.04]}
JOINTS = tuple(f"fr3_joint{i}" for i in range(1, 8)) + ("fr3_finger_joint1",)
_SAVED = re.compile(r"^episode \d+/\d+\s+seed (\d+)\s+success .* saved as episode", re.M)


def main(work: Path, out: Path, record_s: int, train_s: int, eval_s: int) -> None:
    ds = LeRobotDataset(work / "data")
    training = json.loads((out / "training.json").read_text())
    record_log = work / "record.log"
    seeds = [int(s) for s in _SAVED.findall(record_log.read_text())] if record_log.is_file() else None
    eval_log = work / "eval.log"
    evals = [json.loads(l) for l in eval_log.read_text().splitlines() if l.startswith("{")] if eval_log.is_file() else []
    policy = make_vla_policy("fr3", checkpoint=str(out), warmup=False)
    obs = Observation(stamp_s=0.0, images={s: np.full((224, 224, 3), REFERENCE["image_value"], np.uint8)
                                           for s in ("front", "wrist")},
                      joint_names=JOINTS, joint_positions=np.asarray(REFERENCE["joint_positions"]),
                      instruction=REFERENCE["instruction"])
    policy.reset()
    chunk = policy.infer(obs)
    meta = {
        "embodiment": "fr3",
        "dataset": {"episodes": ds.num_episodes, "frames": ds.num_frames, "fps": ds.fps, "policy": "scripted",
                    "tasks": sorted({ds.episode_meta(i)["tasks"][0] for i in range(ds.num_episodes)}),
                    "record_seeds": seeds},
        "training": {k: training.get(k) for k in ("steps", "batch_size", "chunk_size", "action_space", "camera_slots",
                                                  "parameters", "final_loss", "final_val_loss", "samples_per_s")},
        "timings_s": {"record": record_s, "train": train_s, "eval": eval_s},
        "eval": evals[-1] if evals else None,
        "reference": {**REFERENCE, "names": list(chunk.names), "chunk": np.round(chunk.values, 6).tolist()},
    }
    (out / "builtin.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"wrote {out / 'builtin.json'}")


if __name__ == "__main__":
    w, o, r, t, e = sys.argv[1:6]
    main(Path(w), Path(o), int(r), int(t), int(e))
