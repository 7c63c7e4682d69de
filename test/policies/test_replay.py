"""Replay policy: reads a LeRobot v3.0 episode written here by the format's layout, and
.npz / .json action files; chunks advance with observation time."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vla_ros.core.embodiment import load_embodiment
from vla_ros.core.types import Observation
from vla_ros.policies.base import make_policy
from vla_ros.policies.replay import load_episode, make_replay_policy

SPEC = load_embodiment("fr3")
NAMES = ["x", "y", "gripper"]


def _obs(t: float) -> Observation:
    return Observation(stamp_s=t, images={}, joint_names=(), joint_positions=np.zeros(0))


def _actions(episode: int, length: int) -> np.ndarray:
    # exact in float32: episode * 100 + frame, and quarters
    f = np.arange(length, dtype=np.float64)
    return np.stack([episode * 100 + f, f * 0.25, np.full(length, episode % 2)], axis=1)


def write_lerobot_v3(root, lengths, fps=10):
    """Two+ episodes in one data file, as LeRobot 0.4 writes them (meta/info.json,
    meta/episodes/chunk-000/file-000.parquet, data/chunk-000/file-000.parquet)."""
    (root / "meta" / "episodes" / "chunk-000").mkdir(parents=True)
    (root / "data" / "chunk-000").mkdir(parents=True)
    info = {
        "codebase_version": "v3.0", "robot_type": "fr3", "fps": fps, "total_episodes": len(lengths),
        "total_frames": sum(lengths), "total_tasks": 1, "chunks_size": 1000,
        "data_files_size_in_mb": 100, "video_files_size_in_mb": 500,
        "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
        "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4",
        "features": {
            "action": {"dtype": "float32", "shape": [3], "names": NAMES},
            "timestamp": {"dtype": "float32", "shape": [1], "names": None},
            "frame_index": {"dtype": "int64", "shape": [1], "names": None},
            "episode_index": {"dtype": "int64", "shape": [1], "names": None},
            "index": {"dtype": "int64", "shape": [1], "names": None},
            "task_index": {"dtype": "int64", "shape": [1], "names": None},
        },
        "splits": {"train": f"0:{len(lengths)}"},
    }  # fmt: skip
    (root / "meta" / "info.json").write_text(json.dumps(info))
    ep_idx, frame, index, action = [], [], [], []
    starts = np.concatenate([[0], np.cumsum(lengths)])
    # rows deliberately written with the episodes interleaved in reverse order
    for e in reversed(range(len(lengths))):
        a = _actions(e, lengths[e])
        for k in range(lengths[e]):
            ep_idx.append(e), frame.append(k), index.append(int(starts[e]) + k), action.append(a[k].astype(np.float32))
    table = pa.table({
        "action": pa.array([list(map(float, a)) for a in action], type=pa.list_(pa.float32(), 3)),
        "timestamp": pa.array([f / fps for f in frame], type=pa.float32()),
        "frame_index": pa.array(frame, type=pa.int64()),
        "episode_index": pa.array(ep_idx, type=pa.int64()),
        "index": pa.array(index, type=pa.int64()),
        "task_index": pa.array([0] * len(frame), type=pa.int64()),
    })  # fmt: skip
    pq.write_table(table, root / "data" / "chunk-000" / "file-000.parquet")
    episodes = pa.table({
        "episode_index": pa.array(range(len(lengths)), type=pa.int64()),
        "tasks": pa.array([["pick"]] * len(lengths)),
        "length": pa.array(lengths, type=pa.int64()),
        "dataset_from_index": pa.array(starts[:-1].tolist(), type=pa.int64()),
        "dataset_to_index": pa.array(starts[1:].tolist(), type=pa.int64()),
        "data/chunk_index": pa.array([0] * len(lengths), type=pa.int64()),
        "data/file_index": pa.array([0] * len(lengths), type=pa.int64()),
    })  # fmt: skip
    pq.write_table(episodes, root / "meta" / "episodes" / "chunk-000" / "file-000.parquet")
    return root


def test_reads_lerobot_v3_episode(tmp_path):
    root = write_lerobot_v3(tmp_path / "ds", [7, 12, 5])
    ep = load_episode(root, 1)
    assert ep.names == tuple(NAMES) and ep.period_s == pytest.approx(0.1)
    np.testing.assert_array_equal(ep.actions, _actions(1, 12))


def test_chunks_advance_with_time(tmp_path):
    root = write_lerobot_v3(tmp_path / "ds", [7, 12, 5])
    pol = make_policy("replay", embodiment=SPEC, episode=str(root), episode_index=1, chunk_steps=4)
    assert pol.action_names == tuple(NAMES) and pol.period_s == pytest.approx(0.1)
    c0 = pol.infer(_obs(50.0))  # fixes the episode start
    np.testing.assert_array_equal(c0.values, _actions(1, 12)[0:4])
    assert c0.stamp_s == 50.0 and c0.period_s == pytest.approx(0.1)
    c1 = pol.infer(_obs(50.3))  # 0.3 s later: row 3
    np.testing.assert_array_equal(c1.values[:, 0], [103, 104, 105, 106])
    c2 = pol.infer(_obs(51.04))  # row round(10.4) = 10: rows 10, 11 then the last held
    np.testing.assert_array_equal(c2.values[:, 0], [110, 111, 111, 111])
    pol.reset()
    np.testing.assert_array_equal(pol.infer(_obs(80.0)).values[:, 0], [100, 101, 102, 103])


def test_loop_wraps(tmp_path):
    root = write_lerobot_v3(tmp_path / "ds", [7, 12, 5])
    pol = make_replay_policy(SPEC, episode=str(root), episode_index=2, chunk_steps=4, loop=True)
    pol.infer(_obs(0.0))
    np.testing.assert_array_equal(pol.infer(_obs(0.3)).values[:, 0], [203, 204, 200, 201])


def test_default_chunk_is_one_second(tmp_path):
    root = write_lerobot_v3(tmp_path / "ds", [30])
    assert make_replay_policy(SPEC, episode=str(root)).chunk_steps == 10  # 10 fps


def test_npz_and_json_sources(tmp_path):
    a = np.arange(12, dtype=np.float64).reshape(4, 3)
    np.savez(tmp_path / "ep.npz", actions=a, names=np.array(NAMES), fps=20.0)
    pol = make_replay_policy(SPEC, episode=str(tmp_path / "ep.npz"), chunk_steps=2)
    assert pol.period_s == pytest.approx(0.05) and pol.action_names == tuple(NAMES)
    np.testing.assert_array_equal(pol.infer(_obs(1.0)).values, a[:2])
    (tmp_path / "ep.json").write_text(json.dumps({"actions": a.tolist(), "period_s": 0.1}))
    # no names recorded: the embodiment's action-space names are used if the width fits
    with pytest.raises(ValueError, match="has no action names and 3 columns; embodiment 'fr3' expects 7"):
        make_replay_policy(SPEC, episode=str(tmp_path / "ep.json"))
    pol = make_replay_policy(SPEC, episode=str(tmp_path / "ep.json"), action_names=["a", "b", "c"])
    assert pol.action_names == ("a", "b", "c")
    np.testing.assert_array_equal(pol.infer(_obs(0.0)).values[0], a[0])


def test_errors_name_the_problem(tmp_path):
    root = write_lerobot_v3(tmp_path / "ds", [7, 12])
    with pytest.raises(ValueError, match="episode 5 does not exist; the dataset has 2 episodes"):
        load_episode(root, 5)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_episode(tmp_path / "nope.npz")
    (tmp_path / "bad.json").write_text(json.dumps({"actions": [[0.0, float("nan")]], "fps": 10}))
    with pytest.raises(ValueError, match="action row 0 is not finite"):
        load_episode(tmp_path / "bad.json")
    (tmp_path / "noperiod.json").write_text(json.dumps({"actions": [[0.0]]}))
    with pytest.raises(ValueError, match="'period_s' or 'fps'"):
        load_episode(tmp_path / "noperiod.json")
    info = json.loads((root / "meta" / "info.json").read_text())
    info["codebase_version"] = "v2.1"
    (root / "meta" / "info.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match="'v2.1' is not supported"):
        load_episode(root, 0)
