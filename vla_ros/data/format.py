"""LeRobotDataset v3.0 on disk: paths, defaults, feature declarations, statistics, tasks file,
and the journaled commit that keeps a dataset consistent when the writer is killed.

Layout (what LeRobot 0.4 writes and reads):
```
meta/info.json                                   codebase_version "v3.0", fps, features, totals, templates
meta/stats.json                                  per feature: min max mean std count q01 q10 q50 q90 q99
meta/tasks.parquet                               column task_index, pandas index "task" (the string)
meta/episodes/chunk-XXX/file-XXX.parquet         one row per episode (boundaries, file indices, stats/...)
data/chunk-XXX/file-XXX.parquet                  one row per frame, several episodes per file
videos/<key>/chunk-XXX/file-XXX.mp4              episodes concatenated, per camera
```

Crash safety. Every change to a dataset (saving an episode) is one transaction: the new
versions of the files it touches are written under `.staging/<txn>/` first, then a commit
record `.staging/COMMIT.json` naming them is written and renamed into place (the commit point),
then each staged file is renamed over its final path and the staging folder removed. A process
killed before the commit point leaves the dataset as it was (the staging folder is deleted on
the next open); one killed after it leaves a commit that `recover()` completes (renames are
idempotent), and the reader reads staged files through the commit record meanwhile. So a
SIGKILL at any moment loses at most the episode being recorded or saved.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np

CODEBASE_VERSION = "v3.0"
DEFAULT_CHUNK_SIZE = 1000  # files per chunk folder
DEFAULT_DATA_FILE_SIZE_IN_MB = 100
DEFAULT_VIDEO_FILE_SIZE_IN_MB = 500
INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
STAGING_DIR = ".staging"
COMMIT_NAME = "COMMIT.json"
RECORDING_DIR = ".recording"  # the episode in progress (deleted on open)

# Columns every frame has (LeRobot's DEFAULT_FEATURES).
DEFAULT_FEATURES: dict[str, dict[str, Any]] = {
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
}
STAT_KEYS = ("min", "max", "mean", "std", "count", "q01", "q10", "q50", "q90", "q99")
QUANTILES = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}


class DatasetError(ValueError):
    """A dataset folder that cannot be read or written; the message names the file and the problem."""


def next_file_index(chunk_index: int, file_index: int, chunks_size: int) -> tuple[int, int]:
    """The (chunk, file) after this one: a chunk folder holds `chunks_size` files."""
    if file_index >= chunks_size - 1:
        return chunk_index + 1, 0
    return chunk_index, file_index + 1


def vector_feature(names: list[str], dtype: str = "float32") -> dict[str, Any]:
    return {"dtype": dtype, "shape": [len(names)], "names": list(names)}


def video_feature(height: int, width: int, fps: int, codec: str) -> dict[str, Any]:
    return {
        "dtype": "video",
        "shape": [int(height), int(width), 3],
        "names": ["height", "width", "channels"],
        "info": {
            "video.height": int(height),
            "video.width": int(width),
            "video.codec": codec,
            "video.pix_fmt": "yuv420p",
            "video.is_depth_map": False,
            "video.fps": int(fps),
            "video.channels": 3,
            "has_audio": False,
        },
    }


def make_info(fps: int, robot_type: str, features: dict[str, dict], *, chunks_size: int = DEFAULT_CHUNK_SIZE,
              data_files_size_in_mb: int = DEFAULT_DATA_FILE_SIZE_IN_MB,
              video_files_size_in_mb: int = DEFAULT_VIDEO_FILE_SIZE_IN_MB) -> dict[str, Any]:
    """info.json of an empty dataset; `features` are the user features (the defaults are added)."""
    for key in features:
        if "/" in key:
            raise DatasetError(f"feature name '{key}' must not contain '/' (LeRobot splits stats keys on it)")
    has_video = any(f["dtype"] == "video" for f in features.values())
    return {
        "codebase_version": CODEBASE_VERSION,
        "robot_type": robot_type,
        "total_episodes": 0,
        "total_frames": 0,
        "total_tasks": 0,
        "chunks_size": int(chunks_size),
        "data_files_size_in_mb": int(data_files_size_in_mb),
        "video_files_size_in_mb": int(video_files_size_in_mb),
        "fps": int(fps),
        "splits": {},
        "data_path": DATA_PATH,
        "video_path": VIDEO_PATH if has_video else None,
        "features": {**{k: dict(v) for k, v in features.items()}, **{k: dict(v) for k, v in DEFAULT_FEATURES.items()}},
    }


# ---------------------------------------------------------------------------------------- stats

def feature_stats(values: np.ndarray) -> dict[str, np.ndarray]:
    """Statistics over axis 0 (frames): each (n,) for (T, n) values, (1,) for (T,) values."""
    x = np.asarray(values, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    x = x.reshape(x.shape[0], -1)
    out = {
        "min": x.min(axis=0), "max": x.max(axis=0), "mean": x.mean(axis=0), "std": x.std(axis=0),
        "count": np.array([x.shape[0]]),
    }
    for key, q in QUANTILES.items():
        out[key] = np.quantile(x, q, axis=0)
    return out


def image_stats(frames: np.ndarray) -> dict[str, np.ndarray]:
    """Per-channel statistics of (N, H, W, 3) uint8 frames scaled to [0, 1], shaped (3, 1, 1)
    as LeRobot stores image statistics; count = the number of frames sampled."""
    x = np.asarray(frames, dtype=np.float64) / 255.0
    pix = x.reshape(-1, 3)
    out = {
        "min": pix.min(axis=0), "max": pix.max(axis=0), "mean": pix.mean(axis=0), "std": pix.std(axis=0),
    }
    for key, q in QUANTILES.items():
        out[key] = np.quantile(pix, q, axis=0)
    out = {k: v.reshape(3, 1, 1) for k, v in out.items()}
    out["count"] = np.array([x.shape[0]])
    return out


def aggregate_stats(parts: list[dict[str, dict[str, np.ndarray]]]) -> dict[str, dict[str, np.ndarray]]:
    """Dataset statistics from per-episode ones: min/max exact, mean and std by the pooled
    (parallel-axis) formula weighted by count, quantiles as the count-weighted mean of the
    episodes' quantiles (LeRobot's aggregation)."""
    out: dict[str, dict[str, np.ndarray]] = {}
    keys = sorted({k for p in parts for k in p})
    for key in keys:
        items = [p[key] for p in parts if key in p]
        counts = np.array([float(np.asarray(s["count"]).reshape(-1)[0]) for s in items])
        w = counts / counts.sum()
        shape = np.asarray(items[0]["mean"]).shape
        wb = w.reshape((-1,) + (1,) * len(shape))
        means = np.stack([np.asarray(s["mean"], dtype=np.float64) for s in items])
        stds = np.stack([np.asarray(s["std"], dtype=np.float64) for s in items])
        mean = (wb * means).sum(axis=0)
        var = (wb * (stds**2 + (means - mean) ** 2)).sum(axis=0)
        agg = {
            "min": np.min(np.stack([np.asarray(s["min"], dtype=np.float64) for s in items]), axis=0),
            "max": np.max(np.stack([np.asarray(s["max"], dtype=np.float64) for s in items]), axis=0),
            "mean": mean,
            "std": np.sqrt(np.maximum(var, 0.0)),
            "count": np.array([int(counts.sum())]),
        }
        for q in QUANTILES:
            if all(q in s for s in items):
                agg[q] = (wb * np.stack([np.asarray(s[q], dtype=np.float64) for s in items])).sum(axis=0)
        out[key] = agg
    return out


def stats_to_json(stats: dict[str, dict[str, np.ndarray]]) -> dict[str, dict[str, Any]]:
    return {k: {s: np.asarray(v).tolist() for s, v in d.items()} for k, d in stats.items()}


def stats_from_json(data: dict[str, dict[str, Any]]) -> dict[str, dict[str, np.ndarray]]:
    return {k: {s: np.asarray(v) for s, v in d.items()} for k, d in data.items()}


# ---------------------------------------------------------------------------------------- tasks

def write_tasks_parquet(path: Path, tasks: list[str]) -> None:
    """tasks.parquet as pandas writes `DataFrame({"task_index": ...}, index=Index(tasks, name="task"))`:
    columns task_index (int64) and task (string), with the pandas metadata that makes "task" the index."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()), "task": pa.array(tasks, pa.string())})
    pandas_meta = {
        "index_columns": ["task"],
        "column_indexes": [{"name": None, "field_name": None, "pandas_type": "unicode", "numpy_type": "object",
                            "metadata": {"encoding": "UTF-8"}}],
        "columns": [
            {"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64",
             "metadata": None},
            {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object", "metadata": None},
        ],
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.3",
    }
    table = table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})
    pq.write_table(table, path)


def read_tasks_parquet(path: Path) -> list[str]:
    """Task strings by task_index, from a file written by pandas (index "task", or unnamed) or us."""
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as err:  # noqa: BLE001 - pyarrow raises several types
        raise DatasetError(f"{path}: not a readable parquet file ({err})") from err
    cols = table.column_names
    text_col = next((c for c in ("task", "__index_level_0__") if c in cols), None)
    if text_col is None or "task_index" not in cols:
        raise DatasetError(f"{path}: expected columns 'task_index' and 'task' (the pandas index), got {cols}")
    idx = table["task_index"].to_pylist()
    text = table[text_col].to_pylist()
    if sorted(idx) != list(range(len(idx))):
        raise DatasetError(f"{path}: task_index must be 0..{len(idx) - 1}, got {sorted(idx)}")
    out = [""] * len(idx)
    for i, t in zip(idx, text):
        out[i] = str(t)
    return out


# ---------------------------------------------------------------------------------------- commits

def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Transaction:
    """Stage new versions of dataset files, then commit them all at once (module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.txn = uuid.uuid4().hex[:12]
        self.dir = self.root / STAGING_DIR / self.txn
        self.dir.mkdir(parents=True, exist_ok=True)
        self._staged: dict[str, str] = {}
        self.committed = False

    def path(self, rel: str) -> Path:
        """Where to write the new version of `rel` (relative to the dataset root)."""
        staged = self.dir / rel
        staged.parent.mkdir(parents=True, exist_ok=True)
        self._staged[rel] = str(staged.relative_to(self.root))
        return staged

    def write_json(self, rel: str, data: Any) -> None:
        self.path(rel).write_text(json.dumps(data, indent=4, ensure_ascii=False))

    def commit(self) -> None:
        for staged in self._staged.values():
            _fsync_file(self.root / staged)
        record = {"txn": self.txn, "files": self._staged}
        commit_path = self.root / STAGING_DIR / COMMIT_NAME
        tmp = commit_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record))
        _fsync_file(tmp)
        self.committed = True  # from here on the staged files must survive (abort keeps them)
        os.replace(tmp, commit_path)  # the commit point
        _fsync_dir(commit_path.parent)
        apply_commit(self.root)

    def abort(self) -> None:
        """Drop the staged files -- unless the commit point was passed: then the next open completes it."""
        if not self.committed:
            shutil.rmtree(self.dir, ignore_errors=True)
            try:
                self.dir.parent.rmdir()  # .staging, when no other transaction is in it
            except OSError:
                pass


def _read_commit(root: Path) -> dict | None:
    path = Path(root) / STAGING_DIR / COMMIT_NAME
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None  # a torn commit record cannot exist (written then renamed); treat as none


def apply_commit(root: Path) -> None:
    """Complete a committed transaction (idempotent), then remove the staging folder."""
    root = Path(root)
    record = _read_commit(root)
    if record is not None:
        dirs = set()
        for rel, staged in record["files"].items():
            src = root / staged
            dst = root / rel
            if src.exists():
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.replace(src, dst)
                dirs.add(dst.parent)
        for d in dirs:
            _fsync_dir(d)
    shutil.rmtree(root / STAGING_DIR, ignore_errors=True)


def recover(root: Path) -> None:
    """On opening a dataset for writing: finish a committed transaction, drop uncommitted ones and
    the remains of an episode that was being recorded."""
    apply_commit(root)
    shutil.rmtree(Path(root) / RECORDING_DIR, ignore_errors=True)


def resolve(root: Path, rel: str) -> Path:
    """The current version of `rel`: its staged file while a committed transaction is being applied."""
    root = Path(root)
    record = _read_commit(root)
    if record is not None and rel in record.get("files", {}):
        staged = root / record["files"][rel]
        if staged.exists():
            return staged
    return root / rel
