"""Writes LeRobotDataset v3.0 folders episode by episode (see vla_ros.data.format for the layout
and the crash-safety protocol).

```python
w = DatasetWriter.open(root, fps=30, robot_type="fr3", features={...})   # creates or resumes
ep = w.start_episode()
ep.add_frame(slot_k, {"observation.state": q, "action": a, ...}, {"observation.images.front": rgb})
w.save_episode(ep, task="pick up the red cube", extra={"start_stamp_s": t0})   # or w.discard_episode(ep)
```
Frame slot k is the frame's place on the fps grid: timestamp = k / fps. Slots must increase; a
missing slot (a frame that could not be assembled) leaves a gap in the timestamps and the video
rather than a duplicated or invented frame. Video is encoded while the episode records, on one
worker thread per camera; saving appends the episode to the current data, video and metadata files
(rolling over to the next file at the size limits) in one transaction.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vla_ros.data import format as fmt
from vla_ros.data.video import EpisodeVideoEncoder, append_videos, available_codec, codec_info_name

IMAGE_STATS_MAX_FRAMES = 64
IMAGE_STATS_MAX_SIDE = 150


def _pa_type(feature: dict):
    import pyarrow as pa

    dtype = pa.from_numpy_dtype(np.dtype(feature["dtype"]))
    shape = list(feature["shape"])
    if shape == [1] and feature.get("names") is None:
        return dtype
    if len(shape) != 1:
        raise fmt.DatasetError(f"only scalar and 1-D features are supported in data files, got shape {shape}")
    return pa.list_(dtype, shape[0])


@dataclass
class _FileCursor:
    chunk: int = 0
    file: int = 0
    used: bool = False  # the current file exists (holds at least one episode)
    frames: int = 0  # video: frame periods already in the current file


class EpisodeBuffer:
    """One episode being recorded: rows in memory, video streaming into encoders."""

    def __init__(self, writer: "DatasetWriter", index: int) -> None:
        self.writer = writer
        self.index = index
        self.slots: list[int] = []
        self.values: dict[str, list[np.ndarray]] = {k: [] for k in writer.data_features}
        self._encoders: dict[str, EpisodeVideoEncoder] = {}
        self._image_samples: dict[str, list[np.ndarray]] = {k: [] for k in writer.video_keys}
        self._closed = False
        rec = writer.root / fmt.RECORDING_DIR / f"episode-{index:06d}"
        shutil.rmtree(rec, ignore_errors=True)
        for key in writer.video_keys:
            h, w, _ = writer.features[key]["shape"]
            self._encoders[key] = EpisodeVideoEncoder(rec / f"{key}.mp4", writer.fps, w, h, writer.codec,
                                                      gop=writer.gop, crf=writer.crf, preset=writer.preset)
        self.dir = rec

    @property
    def num_frames(self) -> int:
        return len(self.slots)

    @property
    def encoder_backlog(self) -> int:
        return max((e.backlog for e in self._encoders.values()), default=0)

    def add_frame(self, slot: int, values: dict[str, Any], images: dict[str, np.ndarray]) -> None:
        if self._closed:
            raise RuntimeError("episode already saved or discarded")
        slot = int(slot)
        if self.slots and slot <= self.slots[-1]:
            raise ValueError(f"frame slot {slot} after slot {self.slots[-1]}: slots must increase")
        missing = [k for k in self.values if k not in values] + [k for k in self._encoders if k not in images]
        if missing:
            raise ValueError(f"frame {slot} lacks {missing}")
        rows = {}
        for key, feat in self.writer.data_features.items():
            v = np.asarray(values[key], dtype=feat["dtype"]).reshape(-1)
            if v.shape[0] != feat["shape"][0]:
                raise ValueError(f"frame {slot}: '{key}' has {v.shape[0]} values, the feature declares {feat['shape'][0]}")
            rows[key] = v
        for key, enc in self._encoders.items():
            enc.submit(slot, images[key])
        for key, v in rows.items():
            self.values[key].append(v)
        n = len(self.slots)
        stride = max(1, self.writer.fps // 2)  # about two frames a second for image statistics
        if n % stride == 0 and n // stride < IMAGE_STATS_MAX_FRAMES:
            for key in self._encoders:
                img = np.asarray(images[key])
                step = max(1, int(np.ceil(max(img.shape[:2]) / IMAGE_STATS_MAX_SIDE)))
                self._image_samples[key].append(img[::step, ::step].copy())
        self.slots.append(slot)

    def _close(self, abort: bool) -> dict:
        self._closed = True
        out = {}
        for key, enc in self._encoders.items():
            if abort:
                enc.abort()
            else:
                out[key] = enc.finish()
        return out


class DatasetWriter:
    """See the module docstring. Use `DatasetWriter.open`."""

    def __init__(self, root: Path, info: dict, codec: str, crf: int, gop: int, preset: int | None = None) -> None:
        self.root = Path(root)
        self.info = info
        self.fps = int(info["fps"])
        self.features = info["features"]
        self.video_keys = [k for k, f in self.features.items() if f["dtype"] == "video"]
        self.data_features = {k: f for k, f in self.features.items()
                              if f["dtype"] not in ("video", "image") and k not in fmt.DEFAULT_FEATURES}
        self.codec, self.crf, self.gop, self.preset = codec, int(crf), int(gop), preset
        self.tasks: list[str] = []
        self.episode_stats: list[dict] = []
        self.last_episode: dict | None = None
        self._data = _FileCursor()
        self._meta = _FileCursor()
        self._videos = {k: _FileCursor() for k in self.video_keys}
        self._current: EpisodeBuffer | None = None

    # ------------------------------------------------------------------ open
    @classmethod
    def open(cls, root: str | Path, *, fps: int, robot_type: str, features: dict[str, dict],
             codec: str = "auto", crf: int = 30, gop: int = 2, preset: int | None = None,
             chunks_size: int = fmt.DEFAULT_CHUNK_SIZE,
             data_files_size_in_mb: int = fmt.DEFAULT_DATA_FILE_SIZE_IN_MB,
             video_files_size_in_mb: int = fmt.DEFAULT_VIDEO_FILE_SIZE_IN_MB) -> "DatasetWriter":
        """Create a dataset in `root`, or resume the one there (its fps and features must match).

        `features` holds the user features; video features are given as
        `{"dtype": "video", "shape": [H, W, 3]}` and completed here. Fails with DatasetError when
        the folder is not writable or holds an incompatible dataset.
        """
        root = Path(root)
        try:
            root.mkdir(parents=True, exist_ok=True)
            probe = root / f".write_probe_{id(root)}"
            probe.write_bytes(b"x")
            probe.unlink()
        except OSError as err:
            raise fmt.DatasetError(f"{root}: cannot write the dataset folder ({err})") from err
        codec = available_codec(codec)
        full = {}
        for key, feat in features.items():
            if feat["dtype"] == "video":
                h, w = int(feat["shape"][0]), int(feat["shape"][1])
                full[key] = fmt.video_feature(h, w, fps, codec_info_name(codec))
            else:
                full[key] = dict(feat)
        fmt.recover(root)
        info_path = root / fmt.INFO_PATH
        if info_path.is_file():
            try:
                info = json.loads(info_path.read_text())
            except (OSError, json.JSONDecodeError) as err:
                raise fmt.DatasetError(f"{info_path}: unreadable ({err})") from err
            _check_compatible(info_path, info, fps, full)
            w = cls(root, info, codec, crf, gop, preset)
            w._resume()
            return w
        if any(root.iterdir()) and not all(p.name.startswith(".") for p in root.iterdir()):
            raise fmt.DatasetError(f"{root}: folder is not empty and holds no dataset ({fmt.INFO_PATH} is missing)")
        info = fmt.make_info(fps, robot_type, full, chunks_size=chunks_size,
                             data_files_size_in_mb=data_files_size_in_mb,
                             video_files_size_in_mb=video_files_size_in_mb)
        w = cls(root, info, codec, crf, gop, preset)
        txn = fmt.Transaction(root)
        txn.write_json(fmt.INFO_PATH, info)
        txn.commit()
        return w

    def _resume(self) -> None:
        from vla_ros.data.reader import LeRobotDataset

        ds = LeRobotDataset(self.root)
        self.tasks = list(ds.tasks)
        if ds.num_episodes == 0:
            return
        rows = ds.episodes_table(include_stats=True)
        self.episode_stats = [_row_stats(r) for r in rows]
        last = rows[-1]
        self.last_episode = last
        self._data = _FileCursor(int(last["data/chunk_index"]), int(last["data/file_index"]), True)
        self._meta = _FileCursor(int(last["meta/episodes/chunk_index"]), int(last["meta/episodes/file_index"]), True)
        for key in self.video_keys:
            to_s = float(last[f"videos/{key}/to_timestamp"])
            self._videos[key] = _FileCursor(int(last[f"videos/{key}/chunk_index"]),
                                            int(last[f"videos/{key}/file_index"]), True,
                                            int(round(to_s * self.fps)))

    # ------------------------------------------------------------------ episodes
    @property
    def num_episodes(self) -> int:
        return int(self.info["total_episodes"])

    @property
    def num_frames(self) -> int:
        return int(self.info["total_frames"])

    def start_episode(self) -> EpisodeBuffer:
        if self._current is not None:
            raise RuntimeError("an episode is already being recorded; save or discard it first")
        self._current = EpisodeBuffer(self, self.num_episodes)
        return self._current

    def discard_episode(self, ep: EpisodeBuffer) -> None:
        ep._close(abort=True)
        shutil.rmtree(ep.dir, ignore_errors=True)
        self._current = None

    def save_episode(self, ep: EpisodeBuffer, task: str, extra: dict[str, Any] | None = None) -> dict:
        """Finish the videos and commit the episode; returns its metadata row. An episode without
        frames is refused (ValueError) and discarded."""
        if ep is not self._current:
            raise RuntimeError("not the episode being recorded")
        if ep.num_frames == 0:
            self.discard_episode(ep)
            raise ValueError("the episode has no frames; nothing saved")
        try:
            videos = ep._close(abort=False)
            extra = dict(extra or {})
            if videos:  # how the encoders kept up: CPU time spent and the longest queue wait of a frame
                extra.setdefault("video_encode_s", float(sum(v.encode_s for v in videos.values())))
                extra.setdefault("video_latency_max_s", float(max(v.max_latency_s for v in videos.values())))
            row = self._commit(ep, str(task), videos, extra)
        except BaseException:
            self.discard_episode(ep)
            raise
        shutil.rmtree(ep.dir, ignore_errors=True)
        self._current = None
        return row

    def _roll(self, cursor: _FileCursor, path: Path, add_bytes: int, limit_mb: float) -> _FileCursor:
        """Where the next episode goes: the current file, or the next one past the size limit."""
        if not cursor.used:
            return _FileCursor(cursor.chunk, cursor.file, False, 0)
        size = path.stat().st_size if path.exists() else 0
        if (size + add_bytes) / (1024 * 1024) >= limit_mb:
            c, f = fmt.next_file_index(cursor.chunk, cursor.file, int(self.info["chunks_size"]))
            return _FileCursor(c, f, False, 0)
        return _FileCursor(cursor.chunk, cursor.file, True, cursor.frames)

    def _commit(self, ep: EpisodeBuffer, task: str, videos: dict, extra: dict) -> dict:
        import pyarrow as pa
        import pyarrow.parquet as pq

        root, info = self.root, self.info
        T = ep.num_frames
        index0 = int(info["total_frames"])
        tasks = list(self.tasks)
        if task not in tasks:
            tasks.append(task)
        task_index = tasks.index(task)
        slots = np.asarray(ep.slots, dtype=np.int64)
        columns: dict[str, np.ndarray] = {k: np.stack(v) for k, v in ep.values.items()}
        columns["timestamp"] = (slots / float(self.fps)).astype(np.float32)
        columns["frame_index"] = np.arange(T, dtype=np.int64)
        columns["episode_index"] = np.full(T, ep.index, np.int64)
        columns["index"] = np.arange(index0, index0 + T, dtype=np.int64)
        columns["task_index"] = np.full(T, task_index, np.int64)

        schema_fields, arrays = [], []
        for key, feat in self.features.items():
            if feat["dtype"] in ("video", "image"):
                continue
            typ = _pa_type(feat)
            col = columns[key]
            arr = pa.array(list(col), type=typ) if isinstance(typ, pa.FixedSizeListType) else pa.array(col.reshape(-1), typ)
            schema_fields.append(pa.field(key, typ))
            arrays.append(arr)
        new_table = pa.Table.from_arrays(arrays, schema=pa.schema(schema_fields))

        txn = fmt.Transaction(root)
        try:
            # data file
            data_rel = lambda c: info["data_path"].format(chunk_index=c.chunk, file_index=c.file)  # noqa: E731
            est = new_table.nbytes
            dcur = self._roll(self._data, root / data_rel(self._data), est, float(info["data_files_size_in_mb"]))
            if dcur.used:
                old = pq.read_table(fmt.resolve(root, data_rel(dcur)))
                table = pa.concat_tables([old, new_table.cast(old.schema)])
            else:
                table = new_table
            pq.write_table(table, txn.path(data_rel(dcur)))

            # videos
            meta: dict[str, Any] = {"data/chunk_index": dcur.chunk, "data/file_index": dcur.file}
            vcurs = {}
            for key in self.video_keys:
                enc = videos[key]
                rel = lambda c, k=key: info["video_path"].format(video_key=k, chunk_index=c.chunk, file_index=c.file)  # noqa: E731
                vcur = self._roll(self._videos[key], root / rel(self._videos[key]), enc.path.stat().st_size,
                                  float(info["video_files_size_in_mb"]))
                offset_frames = vcur.frames if vcur.used else 0
                sources = [(fmt.resolve(root, rel(vcur)), 0.0)] if vcur.used else []
                sources.append((enc.path, (offset_frames + enc.first_slot) / self.fps))
                append_videos(sources, txn.path(rel(vcur)))
                span = (enc.last_pts + 1) if enc.frames else int(slots[-1]) + 1
                meta[f"videos/{key}/chunk_index"] = vcur.chunk
                meta[f"videos/{key}/file_index"] = vcur.file
                meta[f"videos/{key}/from_timestamp"] = offset_frames / self.fps
                meta[f"videos/{key}/to_timestamp"] = (offset_frames + span) / self.fps
                vcurs[key] = _FileCursor(vcur.chunk, vcur.file, True, offset_frames + span)

            # statistics
            ep_stats = {k: fmt.feature_stats(columns[k]) for k in columns}
            for key in self.video_keys:
                samples = ep._image_samples[key]
                if samples:
                    ep_stats[key] = fmt.image_stats(np.stack(samples))
            all_stats = self.episode_stats + [ep_stats]
            dataset_stats = fmt.aggregate_stats(all_stats)

            # episodes metadata
            row: dict[str, Any] = {
                "episode_index": ep.index,
                "tasks": [task],
                "length": T,
                **meta,
                "dataset_from_index": index0,
                "dataset_to_index": index0 + T,
            }
            meta_rel = lambda c: fmt.EPISODES_PATH.format(chunk_index=c.chunk, file_index=c.file)  # noqa: E731
            mcur = self._roll(self._meta, root / meta_rel(self._meta), 4096, float(info["data_files_size_in_mb"]))
            row["meta/episodes/chunk_index"] = mcur.chunk
            row["meta/episodes/file_index"] = mcur.file
            for key, st in ep_stats.items():
                for s, v in st.items():
                    row[f"stats/{key}/{s}"] = np.asarray(v).tolist()
            row.update(extra)
            new_meta = _episode_row_table(row)
            if mcur.used:
                old = pq.read_table(fmt.resolve(root, meta_rel(mcur)))
                meta_table = pa.concat_tables([old, new_meta.select(old.column_names).cast(old.schema)]) \
                    if set(old.column_names) == set(new_meta.column_names) else _concat_rows(old, new_meta)
            else:
                meta_table = new_meta
            pq.write_table(meta_table, txn.path(meta_rel(mcur)))

            if tasks != self.tasks:
                fmt.write_tasks_parquet(txn.path(fmt.TASKS_PATH), tasks)
            txn.write_json(fmt.STATS_PATH, fmt.stats_to_json(dataset_stats))
            new_info = dict(info)
            new_info["total_episodes"] = ep.index + 1
            new_info["total_frames"] = index0 + T
            new_info["total_tasks"] = len(tasks)
            new_info["splits"] = {"train": f"0:{ep.index + 1}"}
            txn.write_json(fmt.INFO_PATH, new_info)  # last: written after everything it describes
            txn.commit()
        except BaseException:
            txn.abort()
            raise
        self.info = new_info
        self.tasks = tasks
        self.episode_stats = all_stats
        self._data = _FileCursor(dcur.chunk, dcur.file, True)
        self._meta = _FileCursor(mcur.chunk, mcur.file, True)
        self._videos.update(vcurs)
        self.last_episode = row
        return row

    def close(self) -> None:
        if self._current is not None:
            self.discard_episode(self._current)


def _check_compatible(info_path: Path, info: dict, fps: int, features: dict) -> None:
    if str(info.get("codebase_version")) != fmt.CODEBASE_VERSION:
        raise fmt.DatasetError(f"{info_path}: codebase_version {info.get('codebase_version')!r}; "
                               f"only {fmt.CODEBASE_VERSION} can be resumed")
    if int(info.get("fps", -1)) != int(fps):
        raise fmt.DatasetError(f"{info_path}: the dataset was recorded at {info.get('fps')} fps, not {fps}; "
                               "record into another folder")
    have = info.get("features", {})
    for key, feat in features.items():
        if key not in have:
            raise fmt.DatasetError(f"{info_path}: the dataset has no feature '{key}' (it has {sorted(have)}); "
                                   "record into another folder")
        if list(have[key]["shape"]) != list(feat["shape"]) or have[key]["dtype"] != feat["dtype"]:
            raise fmt.DatasetError(f"{info_path}: feature '{key}' is {have[key]['dtype']} {have[key]['shape']} in the "
                                   f"dataset, {feat['dtype']} {feat['shape']} now")
        if feat.get("names") is not None and have[key].get("names") != feat["names"]:
            raise fmt.DatasetError(f"{info_path}: feature '{key}' names differ: {have[key].get('names')} in the "
                                   f"dataset, {feat['names']} now")
    extra = [k for k in have if k not in features and k not in fmt.DEFAULT_FEATURES]
    if extra:
        raise fmt.DatasetError(f"{info_path}: the dataset has features {extra} this recording does not provide")


def _episode_row_table(row: dict):
    import pyarrow as pa

    arrays, fields = [], []
    for key, value in row.items():
        if isinstance(value, bool):
            typ = pa.bool_()
        elif isinstance(value, (int, np.integer)):
            typ = pa.int64()
        elif isinstance(value, (float, np.floating)):
            typ = pa.float64()
        elif isinstance(value, str):
            typ = pa.string()
        elif key == "tasks":
            typ = pa.list_(pa.string())
        else:
            depth, probe = 0, value
            while isinstance(probe, list):
                depth += 1
                probe = probe[0] if probe else 0.0
            typ = pa.int64() if isinstance(probe, (int, np.integer)) and key.endswith("/count") else pa.float64()
            for _ in range(depth):
                typ = pa.list_(typ)
        fields.append(pa.field(key, typ))
        arrays.append(pa.array([value], type=typ))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def _concat_rows(old, new):
    """Concatenate episode tables whose columns differ (a feature's stats appear later): missing
    values become nulls."""
    import pyarrow as pa

    return pa.concat_tables([old, new], promote_options="default")


def _row_stats(row: dict) -> dict[str, dict[str, np.ndarray]]:
    out: dict[str, dict[str, np.ndarray]] = {}
    for key, value in row.items():
        if not key.startswith("stats/") or value is None:
            continue
        _, rest = key.split("/", 1)
        feature, stat = rest.rsplit("/", 1)
        out.setdefault(feature, {})[stat] = np.asarray(value)
    return out
