"""Replay policy: plays back the actions of a recorded episode as action chunks.

Used to check a deployment end to end with known-good actions (a demonstration replayed on
the real arm or in simulation) and as the baseline a learned policy is compared with.

Supported sources (now):
- a LeRobotDataset v3.0 folder: `meta/info.json` (fps, the `action` feature and its names,
  data_path), `meta/episodes/chunk-*/file-*.parquet` (which data file holds the episode) and
  the data parquet files; the `action` column of the episode's rows, ordered by frame_index.
  Read with pyarrow; videos are not needed.
- an `.npz` file with `actions` (T, D) and optional `names` (D,) and `period_s` or `fps`;
- a `.json` file {"actions": [[...], ...], "names": [...], "period_s": ...} (or "fps").

Time: the first `infer` after `reset()` fixes the episode start to that observation's stamp;
every later chunk starts at row round((stamp - start) / period), so the replay advances
with time whether or not inferences are regular. Past the end the last action is held (or,
with loop=True, the episode starts over).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from vla_ros.core.embodiment import EmbodimentSpec
from vla_ros.core.types import ActionChunk, Observation


@dataclass(frozen=True)
class RecordedEpisode:
    """The actions of one episode: (T, D) float64, one row per period_s, named columns."""

    actions: np.ndarray
    names: tuple[str, ...] | None
    period_s: float
    source: str

    def __post_init__(self) -> None:
        a = np.array(self.actions, dtype=np.float64, copy=True)
        if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
            raise ValueError(f"{self.source}: actions must be a non-empty (T, D) array, got shape {a.shape}")
        if not np.all(np.isfinite(a)):
            bad = int(np.flatnonzero(~np.all(np.isfinite(a), axis=1))[0])
            raise ValueError(f"{self.source}: action row {bad} is not finite")
        if self.names is not None and len(self.names) != a.shape[1]:
            raise ValueError(f"{self.source}: {len(self.names)} action names for {a.shape[1]} action columns")
        if not (math.isfinite(self.period_s) and self.period_s > 0):
            raise ValueError(f"{self.source}: period must be a positive number of seconds, got {self.period_s}")
        a.setflags(write=False)
        object.__setattr__(self, "actions", a)
        if self.names is not None:
            object.__setattr__(self, "names", tuple(str(n) for n in self.names))


def _feature_names(feature: dict[str, Any]) -> tuple[str, ...] | None:
    names = feature.get("names")
    if names is None:
        return None
    if isinstance(names, dict):  # older LeRobot writers: {"motors": [...]}
        values = list(names.values())
        names = values[0] if len(values) == 1 else None
    if isinstance(names, list) and all(isinstance(n, str) for n in names):
        return tuple(names)
    return None


def load_lerobot_episode(root: str | Path, episode: int) -> RecordedEpisode:
    """Actions of episode `episode` from a LeRobotDataset v3.0 folder."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    root = Path(root)
    info_path = root / "meta" / "info.json"
    if not info_path.is_file():
        raise FileNotFoundError(f"{root} is not a LeRobot dataset: {info_path} is missing")
    info = json.loads(info_path.read_text())
    version = str(info.get("codebase_version", ""))
    if not version.startswith("v3"):
        raise ValueError(f"{info_path}: codebase_version {version!r} is not supported; this reader reads v3.0")
    features = info.get("features", {})
    if "action" not in features:
        raise ValueError(f"{info_path}: the dataset has no 'action' feature; features: {sorted(features)}")
    fps = float(info["fps"])
    total = int(info.get("total_episodes", -1))
    if episode < 0 or (total >= 0 and episode >= total):
        raise ValueError(f"{root}: episode {episode} does not exist; the dataset has {total} episodes (0..{total - 1})")

    files = _episode_data_files(root, info, episode)
    rows = []
    for path in files:
        table = pq.read_table(path, columns=["episode_index", "frame_index", "action"])
        table = table.filter(pc.equal(table["episode_index"], episode))
        if table.num_rows:
            rows.append(table)
    if not rows:
        raise ValueError(f"{root}: no data rows for episode {episode} in {[str(f) for f in files]}")
    frame = np.concatenate([t["frame_index"].to_numpy() for t in rows])
    action = np.concatenate([np.array(t["action"].to_pylist(), dtype=np.float64) for t in rows])
    order = np.argsort(frame, kind="stable")
    frame, action = frame[order], action[order]
    if not np.array_equal(frame, np.arange(frame.shape[0])):
        raise ValueError(f"{root}: episode {episode} frame_index is not 0..{frame.shape[0] - 1} (frames missing or repeated)")
    return RecordedEpisode(action, _feature_names(features["action"]), 1.0 / fps, f"{root} episode {episode}")


def _episode_data_files(root: Path, info: dict, episode: int) -> list[Path]:
    """The data parquet file(s) of an episode, from meta/episodes; all data files otherwise."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    meta_files = sorted((root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
    template = info.get("data_path", "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet")
    for mf in meta_files:
        t = pq.read_table(mf)
        if "episode_index" not in t.column_names:
            continue
        t = t.filter(pc.equal(t["episode_index"], episode))
        if t.num_rows and {"data/chunk_index", "data/file_index"} <= set(t.column_names):
            chunk = int(t["data/chunk_index"][0].as_py())
            file = int(t["data/file_index"][0].as_py())
            path = root / template.format(chunk_index=chunk, file_index=file)
            if not path.is_file():
                raise FileNotFoundError(f"{mf} places episode {episode} in {path}, which is missing")
            return [path]
    files = sorted((root / "data").glob("chunk-*/file-*.parquet"))
    if not files:
        raise FileNotFoundError(f"{root}: no data files under data/chunk-*/file-*.parquet")
    return files


def load_action_file(path: str | Path) -> RecordedEpisode:
    """Actions from an .npz or .json file (see the module docstring for the keys)."""
    path = Path(path)
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            if "actions" not in z:
                raise ValueError(f"{path}: no 'actions' array; it has {sorted(z.files)}")
            data = {k: z[k] for k in z.files}
        names = tuple(str(n) for n in data["names"].tolist()) if "names" in data else None
        actions = data["actions"]
    elif path.suffix == ".json":
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or "actions" not in data:
            raise ValueError(f"{path}: expected an object with 'actions' (and optional 'names', 'period_s'/'fps')")
        names = tuple(data["names"]) if data.get("names") is not None else None
        actions = np.asarray(data["actions"], dtype=np.float64)
    else:
        raise ValueError(f"unsupported episode file '{path}'; use a LeRobot v3.0 folder, .npz or .json")
    if "period_s" in data:
        period = float(np.asarray(data["period_s"]))
    elif "fps" in data:
        period = 1.0 / float(np.asarray(data["fps"]))
    else:
        raise ValueError(f"{path}: give the action period as 'period_s' or 'fps'")
    return RecordedEpisode(np.asarray(actions, dtype=np.float64), names, period, str(path))


def load_episode(source: str | Path, episode: int = 0) -> RecordedEpisode:
    """A LeRobot v3.0 folder (episode index), or an .npz / .json action file."""
    p = Path(source)
    if p.is_dir():
        return load_lerobot_episode(p, episode)
    if not p.exists():
        raise FileNotFoundError(f"episode source '{source}' does not exist")
    if episode != 0:
        raise ValueError(f"{source} holds one episode; episode={episode} is only valid for LeRobot folders")
    return load_action_file(p)


class ReplayPolicy:
    """Plays a RecordedEpisode back in chunks of `chunk_steps` rows; see the module docstring."""

    needs_privileged = False

    def __init__(self, episode: RecordedEpisode, action_names: Sequence[str], chunk_steps: int, loop: bool = False):
        if chunk_steps < 1:
            raise ValueError(f"chunk_steps must be >= 1, got {chunk_steps}")
        if len(action_names) != episode.actions.shape[1]:
            raise ValueError(
                f"{episode.source}: {episode.actions.shape[1]} action columns but {len(action_names)} action names"
            )
        self.episode = episode
        self.action_names = tuple(action_names)
        self.period_s = episode.period_s
        self.chunk_steps = int(chunk_steps)
        self.loop = bool(loop)
        self._start_s: float | None = None

    @property
    def num_steps(self) -> int:
        return int(self.episode.actions.shape[0])

    def row_index(self, stamp_s: float) -> int:
        """The episode row due at stamp_s (the start is fixed by the first infer after reset)."""
        if self._start_s is None:
            return 0
        return max(0, int(round((stamp_s - self._start_s) / self.period_s)))

    def infer(self, observation: Observation) -> ActionChunk:
        if self._start_s is None:
            self._start_s = observation.stamp_s
        k = self.row_index(observation.stamp_s)
        idx = k + np.arange(self.chunk_steps)
        idx = idx % self.num_steps if self.loop else np.minimum(idx, self.num_steps - 1)
        return ActionChunk(self.action_names, self.episode.actions[idx], self.period_s, observation.stamp_s)

    def reset(self) -> None:
        """The next infer starts the episode again from row 0."""
        self._start_s = None


def make_replay_policy(
    embodiment: EmbodimentSpec,
    episode: str,
    episode_index: int = 0,
    chunk_steps: int | None = None,
    chunk_duration_s: float = 1.0,
    action_names: Sequence[str] | None = None,
    loop: bool = False,
) -> ReplayPolicy:
    """Factory registered as "replay".

    episode:         a LeRobot v3.0 dataset folder, an .npz or a .json action file.
    episode_index:   the episode of a LeRobot dataset.
    chunk_steps:     rows per chunk; default: the rows in `chunk_duration_s`.
    action_names:    override the recorded names; default: the recorded names, or (if the
                     recording has none) the embodiment's action-space names.
    """
    ep = load_episode(episode, int(episode_index))
    names = action_names if action_names is not None else ep.names
    if names is None:
        from vla_ros.core.action_spaces import action_names as space_names

        names = space_names(embodiment, embodiment.action_space)
        if len(names) != ep.actions.shape[1]:
            raise ValueError(
                f"{ep.source} has no action names and {ep.actions.shape[1]} columns; embodiment "
                f"'{embodiment.name}' expects {len(names)} for {embodiment.action_space}: {list(names)}. "
                f"Pass action_names="
            )
    steps = chunk_steps if chunk_steps is not None else max(1, int(round(chunk_duration_s / ep.period_s)))
    return ReplayPolicy(ep, names, steps, loop=loop)
