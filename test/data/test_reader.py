"""The reader on a dataset built by hand to the v3.0 specification, the way LeRobot lays it out:
two data files (episodes 0-1 in file-000, episode 2 in file-001), one concatenated video per camera
holding all three episodes with from/to timestamps, tasks.parquet with pandas' unnamed index, and
broken folders that must fail with the file and the problem named."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vla_ros.data import DatasetError, LeRobotDataset

FPS = 10
H, W = 32, 48
LENGTHS = [4, 6, 3]
TASKS = ["open the drawer", "close the drawer"]
EP_TASK = [0, 1, 0]


def frame(g: int) -> np.ndarray:
    """Global frame g: a flat colour that differs strongly between neighbours."""
    return np.full((H, W, 3), (40 + 37 * g) % 220 + 20, np.uint8)


def build(root: Path) -> None:
    (root / "meta/episodes/chunk-000").mkdir(parents=True)
    info = {
        "codebase_version": "v3.0", "robot_type": "so100", "total_episodes": 3, "total_frames": 13,
        "total_tasks": 2, "chunks_size": 1000, "data_files_size_in_mb": 100, "video_files_size_in_mb": 500,
        "fps": FPS, "splits": {"train": "0:3"},
        "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
        "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4",
        "features": {
            "action": {"dtype": "float32", "shape": [2], "names": ["shoulder", "gripper"]},
            "observation.state": {"dtype": "float32", "shape": [2], "names": ["shoulder", "gripper"]},
            "observation.images.top": {"dtype": "video", "shape": [H, W, 3], "names": ["height", "width", "channels"],
                                       "info": {"video.fps": FPS, "video.codec": "h264"}},
            "timestamp": {"dtype": "float32", "shape": [1], "names": None},
            "frame_index": {"dtype": "int64", "shape": [1], "names": None},
            "episode_index": {"dtype": "int64", "shape": [1], "names": None},
            "index": {"dtype": "int64", "shape": [1], "names": None},
            "task_index": {"dtype": "int64", "shape": [1], "names": None},
        },
    }
    (root / "meta/info.json").write_text(json.dumps(info))
    (root / "meta/stats.json").write_text(json.dumps({"action": {"mean": [0.5, 0.5], "count": [13]}}))
    # pandas' DataFrame({"task_index": [...]}, index=[...]).to_parquet(): the index column is unnamed
    pq.write_table(pa.table({"task_index": [0, 1], "__index_level_0__": TASKS}), root / "meta/tasks.parquet")

    rows = {k: [] for k in ("action", "observation.state", "timestamp", "frame_index", "episode_index", "index",
                            "task_index")}
    files = {0: [], 1: []}
    g = 0
    for e, n in enumerate(LENGTHS):
        for k in range(n):
            files[0 if e < 2 else 1].append({
                "action": [float(g), 1.0], "observation.state": [float(g) - 0.5, 0.0], "timestamp": k / FPS,
                "frame_index": k, "episode_index": e, "index": g, "task_index": EP_TASK[e]})
            g += 1
    schema = pa.schema([("action", pa.list_(pa.float32(), 2)), ("observation.state", pa.list_(pa.float32(), 2)),
                        ("timestamp", pa.float32()), ("frame_index", pa.int64()), ("episode_index", pa.int64()),
                        ("index", pa.int64()), ("task_index", pa.int64())])
    for f, recs in files.items():
        (root / f"data/chunk-000").mkdir(parents=True, exist_ok=True)
        recs = list(reversed(recs))  # row order in a file is not frame order
        pq.write_table(pa.Table.from_pylist(recs, schema=schema), root / f"data/chunk-000/file-{f:03d}.parquet")

    vpath = root / "videos/observation.images.top/chunk-000/file-000.mp4"
    vpath.parent.mkdir(parents=True)
    with av.open(str(vpath), "w") as c:
        s = c.add_stream("libx264", rate=FPS)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        s.codec_context.time_base = Fraction(1, FPS)
        s.options = {"crf": "10", "bf": "0", "g": "2"}
        for g in range(sum(LENGTHS)):
            vf = av.VideoFrame.from_ndarray(frame(g), format="rgb24")
            vf.pts = g
            for p in s.encode(vf):
                c.mux(p)
        for p in s.encode():
            c.mux(p)

    ep_rows, start = [], 0
    for e, n in enumerate(LENGTHS):
        ep_rows.append({
            "episode_index": e, "tasks": [TASKS[EP_TASK[e]]], "length": n,
            "data/chunk_index": 0, "data/file_index": 0 if e < 2 else 1,
            "dataset_from_index": start, "dataset_to_index": start + n,
            "videos/observation.images.top/chunk_index": 0, "videos/observation.images.top/file_index": 0,
            "videos/observation.images.top/from_timestamp": start / FPS,
            "videos/observation.images.top/to_timestamp": (start + n) / FPS,
            "meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0,
            "stats/action/mean": [0.0, 1.0],
        })
        start += n
    pq.write_table(pa.Table.from_pylist(ep_rows), root / "meta/episodes/chunk-000/file-000.parquet")


@pytest.fixture()
def root(tmp_path) -> Path:
    build(tmp_path / "ds")
    return tmp_path / "ds"


def test_metadata(root):
    ds = LeRobotDataset(root)
    assert (ds.fps, ds.robot_type, ds.num_episodes, ds.num_frames) == (FPS, "so100", 3, 13)
    assert ds.tasks == TASKS
    assert ds.camera_keys == ["observation.images.top"]
    assert ds.features["action"]["names"] == ["shoulder", "gripper"]
    np.testing.assert_allclose(ds.stats["action"]["mean"], [0.5, 0.5])


@pytest.mark.parametrize("e", [0, 1, 2])
def test_episodes_and_frames(root, e):
    ds = LeRobotDataset(root)
    ep = ds.episode(e)
    start = sum(LENGTHS[:e])
    assert (ep.index, ep.length, ep.task) == (e, LENGTHS[e], TASKS[EP_TASK[e]])
    assert ep.timestamps.dtype == np.float64
    np.testing.assert_allclose(ep.timestamps, np.arange(LENGTHS[e]) / FPS, atol=1e-7)
    assert ep.action.dtype == np.float32 and ep.action.shape == (LENGTHS[e], 2)
    np.testing.assert_array_equal(ep.action[:, 0], np.arange(start, start + LENGTHS[e]))
    np.testing.assert_array_equal(ep.state[:, 0], np.arange(start, start + LENGTHS[e]) - 0.5)
    np.testing.assert_array_equal(ep.columns["index"], np.arange(start, start + LENGTHS[e]))
    frames = ep.frames("observation.images.top")
    assert frames.shape == (LENGTHS[e], H, W, 3) and frames.dtype == np.uint8
    for k, f in enumerate(frames):
        assert abs(float(f.mean()) - float(frame(start + k).mean())) < 3.0, (e, k)


def test_errors_name_the_file_and_problem(root, tmp_path):
    with pytest.raises(DatasetError, match="info.json: missing"):
        LeRobotDataset(tmp_path)
    with pytest.raises(DatasetError, match="episode 7 does not exist"):
        LeRobotDataset(root).episode(7)
    with pytest.raises(DatasetError, match="not a video feature"):
        LeRobotDataset(root).episode(0).frames("observation.images.side")

    info = json.loads((root / "meta/info.json").read_text())
    (root / "meta/info.json").write_text(json.dumps({**info, "codebase_version": "v2.1"}))
    with pytest.raises(DatasetError, match=r"info.json: codebase_version 'v2.1'"):
        LeRobotDataset(root)
    (root / "meta/info.json").write_text(json.dumps({**info, "total_episodes": 4}))
    with pytest.raises(DatasetError, match="total_episodes is 4 but meta/episodes holds 3"):
        LeRobotDataset(root)
    (root / "meta/info.json").write_text("{not json")
    with pytest.raises(DatasetError, match="info.json: not valid JSON"):
        LeRobotDataset(root)
    (root / "meta/info.json").write_text(json.dumps(info))
    (root / "data/chunk-000/file-001.parquet").unlink()
    with pytest.raises(DatasetError, match="file-001.parquet: missing"):
        LeRobotDataset(root).episode(2)
