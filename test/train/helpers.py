"""Synthetic FR3 demonstrations for the training tests: in memory (MemorySource) or written as a
LeRobotDataset v3.0 folder by the project's writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vla_ros.core.action_spaces import action_names
from vla_ros.core.embodiment import load_embodiment
from vla_ros.train.data import MemorySource

TASKS = ["pick up the red cube", "pick up the green cube", "pick up the blue cube"]
COLOURS = [(200, 30, 30), (30, 180, 40), (30, 60, 200)]
# Tiny model: 32 px images (4 patches), one backbone layer, 4-row chunks.
TINY = {"vision": {"image_size": 32}, "backbone": {"num_layers": 1}, "chunk_size": 4}


def fr3():
    return load_embodiment("fr3")


def episodes(n: int = 4, T: int = 12, fps: float = 10.0, size: int = 40, seed: int = 0) -> list[dict]:
    """Episode k moves joint k % 7 by a sine and closes the gripper; the front camera shows a
    square of the task's colour that moves with time."""
    spec = fr3()
    home = np.asarray(spec.arms[0].home_rad)
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        t = np.arange(T) / fps
        q = np.tile(home, (T, 1))
        q[:, k % 7] += 0.2 * np.sin(2 * np.pi * 0.5 * t + k)
        grip = np.clip(1.0 - t / t[-1] * 1.5, 0.0, 1.0)
        action = np.concatenate([q, grip[:, None]], axis=1).astype(np.float32)
        state = action.copy()
        state[1:, :7] = action[:-1, :7]  # the arm follows its command one frame late
        task = k % len(TASKS)
        front = np.zeros((T, size, size, 3), np.uint8) + 90
        for i in range(T):
            x = 2 + (i * 2) % (size - 12)
            front[i, 10:20, x:x + 10] = COLOURS[task]
        wrist = rng.integers(0, 255, (T, size, size, 3), dtype=np.uint8)
        out.append({"task": TASKS[task], "timestamps": t, "state": state, "action": action,
                    "frames": {"front": front, "wrist": wrist}})
    return out


def memory_source(n: int = 4, T: int = 12, fps: float = 10.0, size: int = 40, name: str = "memory") -> MemorySource:
    names = action_names(fr3(), "joint_position")
    return MemorySource(episodes(n, T, fps, size), fps, names, names, ("front", "wrist"), name=name, robot_type="fr3")


def write_dataset(root: Path, n: int = 4, T: int = 12, fps: int = 10, size: int = 40) -> Path:
    from vla_ros.data.format import vector_feature
    from vla_ros.data.writer import DatasetWriter

    names = list(action_names(fr3(), "joint_position"))
    features = {"observation.state": vector_feature(names), "action": vector_feature(names),
                "observation.images.front": {"dtype": "video", "shape": [size, size, 3]},
                "observation.images.wrist": {"dtype": "video", "shape": [size, size, 3]}}
    w = DatasetWriter.open(root, fps=fps, robot_type="fr3", features=features)
    for e in episodes(n, T, fps, size):
        ep = w.start_episode()
        for i in range(T):
            ep.add_frame(i, {"observation.state": e["state"][i], "action": e["action"][i]},
                         {f"observation.images.{s}": e["frames"][s][i] for s in ("front", "wrist")})
        w.save_episode(ep, task=e["task"])
    w.close()
    return root
