"""Reads LeRobotDataset v3.0 folders: ours and LeRobot's own (several episodes per data and video
file, episodes located by the metadata's chunk/file indices and from/to timestamps).

```python
ds = LeRobotDataset(root)                 # DatasetError naming the file and the problem otherwise
ds.fps, ds.robot_type, ds.features, ds.num_episodes, ds.num_frames, ds.tasks, ds.stats, ds.camera_keys
ep = ds.episode(k)
ep.index, ep.length, ep.task, ep.timestamps (float64 [T]), ep.state / ep.action (float32 [T, n]),
ep.columns (every non-video feature), ep.frames("observation.images.front") -> uint8 [T, H, W, 3]
```
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vla_ros.data import format as fmt
from vla_ros.data.format import DatasetError

REQUIRED_INFO = ("codebase_version", "fps", "features", "total_episodes", "total_frames", "data_path")
REQUIRED_EPISODE_COLUMNS = ("episode_index", "length", "data/chunk_index", "data/file_index",
                            "dataset_from_index", "dataset_to_index")


@dataclass
class Episode:
    """One episode's rows (ordered by frame_index) and access to its video frames."""

    index: int
    length: int
    task: str
    timestamps: np.ndarray
    columns: dict[str, np.ndarray]
    meta: dict[str, Any]
    _dataset: "LeRobotDataset" = field(repr=False)

    @property
    def state(self) -> np.ndarray:
        return self._vector("observation.state")

    @property
    def action(self) -> np.ndarray:
        return self._vector("action")

    def _vector(self, key: str) -> np.ndarray:
        if key not in self.columns:
            raise DatasetError(f"{self._dataset.root}: the dataset has no '{key}' feature; it has {sorted(self.columns)}")
        return np.asarray(self.columns[key], dtype=np.float32).reshape(self.length, -1)

    def frames(self, key: str) -> np.ndarray:
        """Decoded RGB frames of camera `key`, one per row: uint8 [T, H, W, 3]."""
        return self._dataset._frames(self, key)


class LeRobotDataset:
    """A LeRobotDataset v3.0 folder, read-only; see the module docstring."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        info_path = self.root / fmt.INFO_PATH
        if not self.root.is_dir():
            raise DatasetError(f"{self.root}: no such dataset folder")
        src = fmt.resolve(self.root, fmt.INFO_PATH)
        if not src.is_file():
            raise DatasetError(f"{info_path}: missing; {self.root} is not a LeRobot dataset")
        try:
            info = json.loads(src.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise DatasetError(f"{info_path}: not valid JSON ({err})") from err
        missing = [k for k in REQUIRED_INFO if k not in info]
        if missing:
            raise DatasetError(f"{info_path}: missing keys {missing}")
        if not str(info["codebase_version"]).startswith("v3"):
            raise DatasetError(f"{info_path}: codebase_version {info['codebase_version']!r}; this reader reads v3.0 "
                               "(convert older datasets with LeRobot's convert_dataset_v21_to_v30)")
        if not isinstance(info["features"], dict):
            raise DatasetError(f"{info_path}: 'features' must be a mapping")
        for key, feat in info["features"].items():
            if not isinstance(feat, dict) or "dtype" not in feat or "shape" not in feat:
                raise DatasetError(f"{info_path}: feature '{key}' needs 'dtype' and 'shape', got {feat}")
        self.info = info
        self.fps = int(info["fps"]) if float(info["fps"]).is_integer() else float(info["fps"])
        self.robot_type = info.get("robot_type")
        self.features: dict[str, dict] = info["features"]
        self.camera_keys = [k for k, f in self.features.items() if f["dtype"] in ("video", "image")]
        self.video_keys = [k for k, f in self.features.items() if f["dtype"] == "video"]
        self.num_episodes = int(info["total_episodes"])
        self.num_frames = int(info["total_frames"])
        self.tasks = self._load_tasks()
        self.stats = self._load_stats()
        self._episodes = self._load_episodes(include_stats=False)
        self._tables: dict[Path, Any] = {}

    # ------------------------------------------------------------------ metadata
    def _load_tasks(self) -> list[str]:
        path = fmt.resolve(self.root, fmt.TASKS_PATH)
        if not path.is_file():
            if self.num_episodes:
                raise DatasetError(f"{self.root / fmt.TASKS_PATH}: missing")
            return []
        return fmt.read_tasks_parquet(path)

    def _load_stats(self) -> dict:
        path = fmt.resolve(self.root, fmt.STATS_PATH)
        if not path.is_file():
            return {}
        try:
            return fmt.stats_from_json(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError, AttributeError) as err:
            raise DatasetError(f"{self.root / fmt.STATS_PATH}: unreadable ({err})") from err

    def _episode_files(self) -> list[Path]:
        base = self.root / "meta" / "episodes"
        rels = sorted(str(p.relative_to(self.root)) for p in base.glob("chunk-*/file-*.parquet")) if base.is_dir() else []
        staged = fmt._read_commit(self.root)
        if staged:
            rels = sorted(set(rels) | {r for r in staged["files"] if r.startswith("meta/episodes/")})
        return [fmt.resolve(self.root, r) for r in rels]

    def _load_episodes(self, include_stats: bool) -> list[dict[str, Any]]:
        import pyarrow.parquet as pq

        rows: list[dict[str, Any]] = []
        for path in self._episode_files():
            try:
                table = pq.read_table(path)
            except Exception as err:  # noqa: BLE001
                raise DatasetError(f"{path}: not a readable parquet file ({err})") from err
            missing = [c for c in REQUIRED_EPISODE_COLUMNS if c not in table.column_names]
            if missing:
                raise DatasetError(f"{path}: missing episode columns {missing}")
            if not include_stats:
                table = table.select([c for c in table.column_names if not c.startswith("stats/")])
            rows.extend(table.to_pylist())
        rows.sort(key=lambda r: int(r["episode_index"]))
        got = [int(r["episode_index"]) for r in rows]
        if got != list(range(len(rows))):
            raise DatasetError(f"{self.root / 'meta/episodes'}: episode indices must be 0..{len(rows) - 1} without gaps "
                               f"or repeats, got {got}")
        if len(rows) != self.num_episodes:
            raise DatasetError(f"{self.root / fmt.INFO_PATH}: total_episodes is {self.num_episodes} but "
                               f"meta/episodes holds {len(rows)}")
        frames = sum(int(r["length"]) for r in rows)
        if frames != self.num_frames:
            raise DatasetError(f"{self.root / fmt.INFO_PATH}: total_frames is {self.num_frames} but the episodes' "
                               f"lengths sum to {frames}")
        for r in rows:
            if int(r["dataset_to_index"]) - int(r["dataset_from_index"]) != int(r["length"]):
                raise DatasetError(f"{self.root / 'meta/episodes'}: episode {r['episode_index']}: dataset_to_index - "
                                   f"dataset_from_index != length ({r['dataset_to_index']} - "
                                   f"{r['dataset_from_index']} != {r['length']})")
        return rows

    def episodes_table(self, include_stats: bool = False) -> list[dict[str, Any]]:
        """Every episode's metadata row (with the `stats/...` columns if asked)."""
        return self._load_episodes(include_stats) if include_stats else [dict(r) for r in self._episodes]

    def episode_meta(self, k: int) -> dict[str, Any]:
        self._check_index(k)
        return dict(self._episodes[k])

    def _check_index(self, k: int) -> None:
        if not 0 <= int(k) < self.num_episodes:
            raise DatasetError(f"{self.root}: episode {k} does not exist; the dataset has {self.num_episodes} "
                               f"episodes (0..{self.num_episodes - 1})")

    # ------------------------------------------------------------------ episodes
    def _data_table(self, rel: str):
        import pyarrow.parquet as pq

        path = fmt.resolve(self.root, rel)
        if path not in self._tables:
            if not path.is_file():
                raise DatasetError(f"{self.root / rel}: missing (referenced by meta/episodes)")
            try:
                self._tables[path] = pq.read_table(path)
            except Exception as err:  # noqa: BLE001
                raise DatasetError(f"{path}: not a readable parquet file ({err})") from err
        return self._tables[path]

    def episode(self, k: int) -> Episode:
        import pyarrow.compute as pc

        self._check_index(k)
        meta = self._episodes[k]
        rel = self.info["data_path"].format(chunk_index=int(meta["data/chunk_index"]),
                                            file_index=int(meta["data/file_index"]))
        table = self._data_table(rel)
        if "episode_index" not in table.column_names:
            raise DatasetError(f"{self.root / rel}: no 'episode_index' column")
        table = table.filter(pc.equal(table["episode_index"], k))
        length = int(meta["length"])
        if table.num_rows != length:
            raise DatasetError(f"{self.root / rel}: episode {k} has {table.num_rows} rows, meta/episodes says {length}")
        columns: dict[str, np.ndarray] = {}
        for name in table.column_names:
            feat = self.features.get(name)
            col = table[name]
            if feat is not None and len(feat["shape"]) == 1 and (feat["shape"][0] > 1 or feat.get("names")):
                arr = np.array(col.to_pylist(), dtype=np.dtype(feat["dtype"])).reshape(table.num_rows, -1)
            else:
                arr = col.to_numpy(zero_copy_only=False)
                if arr.dtype == object:
                    try:
                        arr = np.array(arr.tolist())
                    except ValueError:
                        pass
            columns[name] = arr
        order = np.argsort(columns["frame_index"], kind="stable") if "frame_index" in columns else np.arange(length)
        columns = {n: a[order] for n, a in columns.items()}
        if "frame_index" in columns and not np.array_equal(columns["frame_index"], np.arange(length)):
            raise DatasetError(f"{self.root / rel}: episode {k} frame_index is not 0..{length - 1}")
        timestamps = np.asarray(columns.get("timestamp", np.arange(length) / float(self.fps)), dtype=np.float64)
        if length > 1 and not np.all(np.diff(timestamps) > 0):
            raise DatasetError(f"{self.root / rel}: episode {k} timestamps are not strictly increasing")
        task = ""
        tasks = meta.get("tasks")
        if tasks:
            task = str(tasks[0])
        elif "task_index" in columns and len(columns["task_index"]) and self.tasks:
            task = self.tasks[int(columns["task_index"][0])]
        return Episode(int(k), length, task, timestamps, columns, dict(meta), self)

    def _frames(self, ep: Episode, key: str) -> np.ndarray:
        from vla_ros.data.video import decode_frames

        if key not in self.video_keys:
            raise DatasetError(f"{self.root}: '{key}' is not a video feature; cameras: {self.camera_keys}")
        meta = ep.meta
        try:
            chunk, file = int(meta[f"videos/{key}/chunk_index"]), int(meta[f"videos/{key}/file_index"])
            from_s = float(meta[f"videos/{key}/from_timestamp"])
            to_s = float(meta[f"videos/{key}/to_timestamp"])
        except KeyError as err:
            raise DatasetError(f"{self.root / 'meta/episodes'}: episode {ep.index} lacks {err}") from err
        rel = self.info["video_path"].format(video_key=key, chunk_index=chunk, file_index=file)
        path = fmt.resolve(self.root, rel)
        if not path.is_file():
            raise DatasetError(f"{self.root / rel}: missing (episode {ep.index}, camera '{key}')")
        try:
            frames, _ = decode_frames(path, from_s, to_s, timestamps_s=from_s + ep.timestamps)
        except ValueError as err:
            raise DatasetError(f"{path}: episode {ep.index}: {err}") from err
        return frames
