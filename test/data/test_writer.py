"""The v3.0 writer, checked field by field against the LeRobotDataset v3.0 specification
(LeRobot 0.4's dataset_metadata / utils: meta/info.json keys and templates, features with dtype /
shape / names / info, the default frame columns, meta/episodes columns, tasks.parquet as pandas
writes it, stats keys), plus resume, rollover and the crash-safety journal."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vla_ros.data import DatasetError, LeRobotDataset
from vla_ros.data import format as fmt
from vla_ros.data.format import vector_feature
from vla_ros.data.writer import DatasetWriter

H, W = 48, 64
NAMES = ["j1", "j2", "gripper"]
FEATURES = {
    "observation.state": vector_feature(NAMES),
    "action": vector_feature(NAMES),
    "observation.images.front": {"dtype": "video", "shape": [H, W, 3]},
}


def image(i: int) -> np.ndarray:
    """Smooth content with a bright square that moves 2 px per frame (neighbours differ)."""
    yy, xx = np.mgrid[0:H, 0:W]
    img = np.stack([xx * 3, yy * 4, np.full_like(xx, 60)], -1).astype(np.float64)
    x0 = (2 * i) % (W - 10)
    img[10:20, x0:x0 + 10] = 250
    return img.astype(np.uint8)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def record(w: DatasetWriter, n: int, base: int, task: str, skip: tuple[int, ...] = (), extra=None) -> dict:
    ep = w.start_episode()
    for k in range(n):
        if k in skip:
            continue
        q = np.array([0.1 * k, -0.2 * k + base, 0.5], np.float32)
        ep.add_frame(k, {"observation.state": q, "action": q + 0.01}, {"observation.images.front": image(base + k)})
    return w.save_episode(ep, task, extra=extra)


def open_writer(root, **kw) -> DatasetWriter:
    return DatasetWriter.open(root, fps=30, robot_type="fr3", features=FEATURES, **kw)


@pytest.fixture()
def dataset(tmp_path) -> Path:
    root = tmp_path / "ds"
    w = open_writer(root)
    record(w, 12, 0, "pick up the red cube", extra={"start_stamp_s": 100.0})
    record(w, 9, 50, "pick up the blue cube", skip=(4,))
    record(w, 7, 80, "pick up the red cube")
    return root


def test_info_json_fields(dataset):
    info = json.loads((dataset / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0"
    assert info["fps"] == 30 and isinstance(info["fps"], int)
    assert info["robot_type"] == "fr3"
    assert (info["total_episodes"], info["total_frames"], info["total_tasks"]) == (3, 12 + 8 + 7, 2)
    assert info["chunks_size"] == 1000
    assert info["data_files_size_in_mb"] == 100 and info["video_files_size_in_mb"] == 500
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert info["video_path"] == "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    assert info["splits"] == {"train": "0:3"}
    f = info["features"]
    assert f["observation.state"] == {"dtype": "float32", "shape": [3], "names": NAMES}
    assert f["action"] == {"dtype": "float32", "shape": [3], "names": NAMES}
    cam = f["observation.images.front"]
    assert cam["dtype"] == "video" and cam["shape"] == [H, W, 3] and cam["names"] == ["height", "width", "channels"]
    assert cam["info"]["video.height"] == H and cam["info"]["video.width"] == W
    assert cam["info"]["video.codec"] in ("av1", "h264") and cam["info"]["video.pix_fmt"] == "yuv420p"
    assert cam["info"]["video.fps"] == 30 and cam["info"]["video.channels"] == 3
    assert cam["info"]["video.is_depth_map"] is False and cam["info"]["has_audio"] is False
    for key, dtype in [("timestamp", "float32"), ("frame_index", "int64"), ("episode_index", "int64"),
                       ("index", "int64"), ("task_index", "int64")]:
        assert f[key] == {"dtype": dtype, "shape": [1], "names": None}


def test_data_file_columns(dataset):
    files = sorted((dataset / "data").glob("chunk-*/file-*.parquet"))
    assert [f.relative_to(dataset).as_posix() for f in files] == ["data/chunk-000/file-000.parquet"]
    t = pq.read_table(files[0])
    assert t.schema.field("observation.state").type == pa.list_(pa.float32(), 3)
    assert t.schema.field("action").type == pa.list_(pa.float32(), 3)
    assert t.schema.field("timestamp").type == pa.float32()
    for c in ("frame_index", "episode_index", "index", "task_index"):
        assert t.schema.field(c).type == pa.int64()
    assert "observation.images.front" not in t.column_names  # videos live in mp4 files
    assert t["index"].to_pylist() == list(range(27))
    assert t["episode_index"].to_pylist() == [0] * 12 + [1] * 8 + [2] * 7
    assert t["frame_index"].to_pylist() == list(range(12)) + list(range(8)) + list(range(7))
    assert t["task_index"].to_pylist() == [0] * 12 + [1] * 8 + [0] * 7
    ts = np.array(t["timestamp"].to_pylist())
    # episode 1 lost grid slot 4: a gap in the timestamps, not a duplicated frame
    np.testing.assert_allclose(ts[12:20], np.array([0, 1, 2, 3, 5, 6, 7, 8]) / 30, atol=1e-7)
    np.testing.assert_allclose(np.array(t["action"].to_pylist())[1], [0.11, -0.19, 0.51], atol=1e-6)


def test_episodes_metadata(dataset):
    files = sorted((dataset / "meta/episodes").glob("chunk-*/file-*.parquet"))
    assert len(files) == 1
    rows = pq.read_table(files[0]).to_pylist()
    assert [r["episode_index"] for r in rows] == [0, 1, 2]
    assert [r["length"] for r in rows] == [12, 8, 7]
    assert [r["tasks"] for r in rows] == [["pick up the red cube"], ["pick up the blue cube"], ["pick up the red cube"]]
    assert [(r["dataset_from_index"], r["dataset_to_index"]) for r in rows] == [(0, 12), (12, 20), (20, 27)]
    key = "videos/observation.images.front"
    for r in rows:
        assert (r["data/chunk_index"], r["data/file_index"]) == (0, 0)
        assert (r[f"{key}/chunk_index"], r[f"{key}/file_index"]) == (0, 0)
        assert (r["meta/episodes/chunk_index"], r["meta/episodes/file_index"]) == (0, 0)
    # concatenated video: each episode starts where the previous one's frame periods end
    spans = [v for r in rows for v in (r[f"{key}/from_timestamp"], r[f"{key}/to_timestamp"])]
    assert spans == pytest.approx([0.0, 12 / 30, 12 / 30, 21 / 30, 21 / 30, 28 / 30])
    assert rows[0]["start_stamp_s"] == 100.0
    r = rows[1]
    for stat in fmt.STAT_KEYS:
        assert f"stats/action/{stat}" in r and f"stats/observation.images.front/{stat}" in r
    assert r["stats/action/count"] == [8]
    expected = np.array([[0.1 * k, -0.2 * k + 50, 0.5] for k in (0, 1, 2, 3, 5, 6, 7, 8)], np.float32) + np.float32(0.01)
    np.testing.assert_allclose(r["stats/action/min"], expected.min(0), rtol=1e-6)
    np.testing.assert_allclose(r["stats/action/mean"], expected.astype(np.float64).mean(0), rtol=1e-6)
    np.testing.assert_allclose(r["stats/action/q50"], np.quantile(expected.astype(np.float64), 0.5, axis=0), rtol=1e-6)
    img_mean = np.array(r["stats/observation.images.front/mean"])
    assert img_mean.shape == (3, 1, 1) and np.all((img_mean >= 0) & (img_mean <= 1))


def test_tasks_parquet_as_pandas_writes_it(dataset):
    t = pq.read_table(dataset / "meta/tasks.parquet")
    assert t.column_names == ["task_index", "task"]
    assert t["task"].to_pylist() == ["pick up the red cube", "pick up the blue cube"]
    assert t["task_index"].to_pylist() == [0, 1]
    pandas_meta = json.loads(t.schema.metadata[b"pandas"])
    assert pandas_meta["index_columns"] == ["task"]


def test_stats_json(dataset):
    stats = json.loads((dataset / "meta/stats.json").read_text())
    for key in ("observation.state", "action", "observation.images.front", "timestamp", "index"):
        assert set(stats[key]) == set(fmt.STAT_KEYS), key
    assert stats["action"]["count"] == [27]
    all_actions = np.concatenate([LeRobotDataset(dataset).episode(k).action for k in range(3)]).astype(np.float64)
    np.testing.assert_allclose(stats["action"]["min"], all_actions.min(0), rtol=1e-6)
    np.testing.assert_allclose(stats["action"]["max"], all_actions.max(0), rtol=1e-6)
    np.testing.assert_allclose(stats["action"]["mean"], all_actions.mean(0), rtol=1e-6)
    np.testing.assert_allclose(stats["action"]["std"], all_actions.std(0), rtol=1e-5, atol=1e-7)
    assert np.array(stats["observation.images.front"]["mean"]).shape == (3, 1, 1)


def test_round_trip_and_video_frames(dataset):
    ds = LeRobotDataset(dataset)
    assert (ds.num_episodes, ds.num_frames, ds.fps, ds.robot_type) == (3, 27, 30, "fr3")
    assert ds.tasks == ["pick up the red cube", "pick up the blue cube"]
    assert ds.camera_keys == ["observation.images.front"]
    ep = ds.episode(1)
    assert (ep.index, ep.length, ep.task) == (1, 8, "pick up the blue cube")
    slots = np.array([0, 1, 2, 3, 5, 6, 7, 8])
    np.testing.assert_allclose(ep.timestamps, slots / 30, atol=1e-7)
    assert ep.state.dtype == np.float32 and ep.state.shape == (8, 3)
    np.testing.assert_allclose(ep.state[:, 0], 0.1 * slots, atol=1e-6)
    frames = ep.frames("observation.images.front")
    assert frames.shape == (8, H, W, 3) and frames.dtype == np.uint8
    for f, k in zip(frames, slots):
        own = psnr(f, image(50 + k))
        assert own >= 35.0
        assert own > psnr(f, image(50 + k + 1)) + 3 and own > psnr(f, image(50 + k - 1)) + 3


def test_resume_appends_to_the_same_files(dataset):
    w = open_writer(dataset)
    assert w.num_episodes == 3
    record(w, 5, 120, "pick up the green cube")
    ds = LeRobotDataset(dataset)
    assert ds.num_episodes == 4 and ds.tasks[-1] == "pick up the green cube"
    meta = ds.episode_meta(3)
    assert meta["dataset_from_index"] == 27
    assert meta["videos/observation.images.front/from_timestamp"] == pytest.approx(28 / 30)
    frames = ds.episode(3).frames("observation.images.front")
    assert min(psnr(f, image(120 + k)) for k, f in enumerate(frames)) >= 35.0
    # earlier episodes still decode from the rewritten file
    assert psnr(ds.episode(0).frames("observation.images.front")[11], image(11)) >= 35.0


def test_resume_refuses_another_layout(dataset):
    with pytest.raises(DatasetError, match="fps"):
        DatasetWriter.open(dataset, fps=15, robot_type="fr3", features=FEATURES)
    other = dict(FEATURES, action=vector_feature(["a", "b"]))
    with pytest.raises(DatasetError, match="action"):
        DatasetWriter.open(dataset, fps=30, robot_type="fr3", features=other)


def test_rollover_at_the_size_limit(tmp_path):
    # a 0 MB limit starts a new file for every episode after the first
    w = open_writer(tmp_path / "ds", data_files_size_in_mb=0, video_files_size_in_mb=0)
    for e in range(3):
        record(w, 4, 10 * e, "t")
    ds = LeRobotDataset(tmp_path / "ds")
    rows = ds.episodes_table()
    assert [r["data/file_index"] for r in rows] == [0, 1, 2]
    assert [r["videos/observation.images.front/file_index"] for r in rows] == [0, 1, 2]
    assert [r["videos/observation.images.front/from_timestamp"] for r in rows] == [0.0, 0.0, 0.0]
    assert psnr(ds.episode(2).frames("observation.images.front")[3], image(23)) >= 35.0


def test_interrupted_save_before_the_commit_point_changes_nothing(dataset, monkeypatch):
    before = {p: p.read_bytes() for p in dataset.rglob("*") if p.is_file()}
    w = open_writer(dataset)
    monkeypatch.setattr(fmt.Transaction, "commit", lambda self: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        record(w, 5, 0, "t")
    monkeypatch.undo()
    # (a real SIGKILL leaves the staging folder; opening recovers)
    open_writer(dataset)
    after = {p: p.read_bytes() for p in dataset.rglob("*") if p.is_file()}
    assert after == before
    assert LeRobotDataset(dataset).num_episodes == 3


def test_interrupted_commit_is_read_through_and_completed(dataset, monkeypatch):
    w = open_writer(dataset)
    applied = []
    real_replace = os.replace

    def replace_then_die(src, dst):
        real_replace(src, dst)
        applied.append(dst)
        if str(dst).endswith("COMMIT.json"):
            raise KeyboardInterrupt  # killed right after the commit point, nothing applied yet

    monkeypatch.setattr(os, "replace", replace_then_die)
    with pytest.raises(KeyboardInterrupt):
        record(w, 5, 0, "late task")
    monkeypatch.undo()
    ds = LeRobotDataset(dataset)  # reads the staged files through the commit record
    assert ds.num_episodes == 4 and ds.tasks[-1] == "late task" and ds.episode(3).length == 5
    open_writer(dataset)  # completes the commit
    assert not (dataset / fmt.STAGING_DIR).exists()
    assert LeRobotDataset(dataset).num_episodes == 4


def test_unwritable_folder_fails_at_start(tmp_path):
    target = tmp_path / "ro"
    target.mkdir()
    os.chmod(target, 0o500)
    try:
        if os.access(target, os.W_OK):
            pytest.skip("running as root: permissions are not enforced")
        with pytest.raises(DatasetError, match="cannot write"):
            open_writer(target / "ds")
    finally:
        os.chmod(target, 0o700)


def test_empty_episode_is_refused(tmp_path):
    w = open_writer(tmp_path / "ds")
    ep = w.start_episode()
    with pytest.raises(ValueError, match="no frames"):
        w.save_episode(ep, "t")
    assert LeRobotDataset(tmp_path / "ds").num_episodes == 0
    shutil.rmtree(tmp_path / "ds")


def test_full_disk_at_save_keeps_the_saved_episodes(dataset, monkeypatch):
    import errno

    w = open_writer(dataset)

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pq, "write_table", no_space)
    with pytest.raises(OSError, match="No space left"):
        record(w, 5, 0, "t")
    monkeypatch.undo()
    ds = LeRobotDataset(dataset)
    assert ds.num_episodes == 3 and ds.num_frames == 27
    assert not (dataset / fmt.STAGING_DIR).exists()
    record(w, 4, 0, "after the disk was freed")  # the writer goes on
    assert LeRobotDataset(dataset).num_episodes == 4
