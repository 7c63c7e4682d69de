"""Training data: episodes -> (frame, instruction, state, action chunk in the model's space).

Sources. `DatasetSource` reads a LeRobotDataset v3.0 folder (`vla_ros.data.LeRobotDataset`: ours,
and LeRobot's own layout); `MemorySource` holds episodes in memory (tests, synthetic data). Both
give `EpisodeData`: timestamps, state, the recorded joint commands (`action`: driver joint
names + normalised gripper, the `joint_position` names) and frames per camera slot.

Action chunks. The chunk of frame t has row i = the command in force at t + i * period (period =
the embodiment's policy period; the recorded commands are interpolated linearly in time and held
after the episode's end), converted into the model's action space with the controller's own
adapter (`ActionAdapter.to_action_values`) relative to the command at t -- the reference the
controller uses for a chunk stamped t. Executing the chunk therefore replays the recording.
Rows past the episode's end are marked invalid (they do not count in the statistics).

Frames are decoded once into a cache at the model's input resolution (uint8, resized exactly as
the policy resizes a camera image at inference), one memory-mapped .npy per dataset and camera.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from vla_ros.core.action_spaces import SPACES, ActionAdapter, action_names, gripper_action_name
from vla_ros.core.embodiment import EmbodimentSpec
from vla_ros.core.normalization import FeatureStats, NormStats

log = logging.getLogger(__name__)

IMAGE_KEY_PREFIX = "observation.images."
#: --action-space value that trains on the dataset's action vectors as they are (foreign datasets).
RAW_SPACE = "dataset"


class TrainingDataError(ValueError):
    """A dataset that cannot train the requested model; the message names the dataset and field."""


@dataclass(frozen=True)
class EpisodeData:
    """One episode as training reads it."""

    index: int
    task: str
    timestamps: np.ndarray  # (T,) float64 s
    state: np.ndarray  # (T, S) float
    action: np.ndarray  # (T, A) float: commanded joint positions + normalised gripper
    frames: Callable[[str], np.ndarray] = field(repr=False)  # slot -> uint8 (T, H, W, 3)

    @property
    def length(self) -> int:
        return int(self.timestamps.shape[0])


class DatasetSource:
    """A LeRobotDataset v3.0 folder behind the source interface."""

    def __init__(self, root: str | Path) -> None:
        from vla_ros.data import LeRobotDataset

        self.root = Path(root).resolve()
        self.ds = LeRobotDataset(self.root)
        self.name = str(self.root)
        self.fps = float(self.ds.fps)
        self.robot_type = self.ds.robot_type
        self.num_episodes = self.ds.num_episodes
        for key in ("observation.state", "action"):
            if key not in self.ds.features:
                raise TrainingDataError(f"{self.root}: no '{key}' feature; it has {sorted(self.ds.features)}")
        self.state_names = tuple(self.ds.features["observation.state"].get("names") or ())
        self.action_names = tuple(self.ds.features["action"].get("names") or ())
        self.camera_slots = tuple(k[len(IMAGE_KEY_PREFIX):] for k in self.ds.camera_keys
                                  if k.startswith(IMAGE_KEY_PREFIX))

    def episode(self, k: int) -> EpisodeData:
        ep = self.ds.episode(k)
        return EpisodeData(ep.index, ep.task, np.asarray(ep.timestamps, np.float64), ep.state, ep.action,
                           lambda slot, ep=ep: ep.frames(IMAGE_KEY_PREFIX + slot))

    def fingerprint(self) -> str:
        info = (self.root / "meta" / "info.json").read_bytes()
        h = hashlib.sha256(info)
        h.update(str(self.root).encode())
        for p in sorted((self.root / "meta" / "episodes").glob("*/*.parquet")):
            h.update(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}".encode())
        return h.hexdigest()[:16]


class MemorySource:
    """Episodes held in memory, same interface as DatasetSource."""

    def __init__(self, episodes: Sequence[dict], fps: float, state_names: Sequence[str],
                 action_names: Sequence[str], camera_slots: Sequence[str], name: str = "memory",
                 robot_type: str | None = None) -> None:
        self._episodes = list(episodes)
        self.name = name
        self.fps = float(fps)
        self.robot_type = robot_type
        self.num_episodes = len(self._episodes)
        self.state_names = tuple(state_names)
        self.action_names = tuple(action_names)
        self.camera_slots = tuple(camera_slots)

    def episode(self, k: int) -> EpisodeData:
        e = self._episodes[k]
        T = len(e["action"])
        ts = np.asarray(e.get("timestamps", np.arange(T) / self.fps), np.float64)
        return EpisodeData(k, e["task"], ts, np.asarray(e["state"], np.float32), np.asarray(e["action"], np.float32),
                           lambda slot, e=e: np.asarray(e["frames"][slot], np.uint8))

    def fingerprint(self) -> str:
        h = hashlib.sha256(self.name.encode())
        for e in self._episodes:
            h.update(np.ascontiguousarray(e["action"], np.float32).tobytes())
            for slot in sorted(e["frames"]):
                h.update(np.ascontiguousarray(e["frames"][slot]).tobytes())
        return h.hexdigest()[:16]


# ---------------------------------------------------------------------------------- actions
class ChunkConverter:
    """Recorded joint commands -> action chunks in one action space of an embodiment."""

    def __init__(self, spec: EmbodimentSpec, space: str, source_action_names: Sequence[str],
                 kinematics=None) -> None:
        self.spec = spec
        self.space = space
        self.recorded = action_names(spec, "joint_position")
        src = tuple(source_action_names)
        if space == RAW_SPACE:
            self.names = src
            self.order = None
            self.adapter = None
            return
        if space not in SPACES:
            raise TrainingDataError(f"unknown action space '{space}'; valid: {list(SPACES)} or '{RAW_SPACE}' "
                                    "(the dataset's action vectors as they are)")
        if set(src) != set(self.recorded) or len(src) != len(self.recorded):
            raise TrainingDataError(
                f"the dataset's action names {list(src)} are not embodiment '{spec.name}''s joint commands "
                f"{list(self.recorded)}; pick the matching --embodiment, or --action-space {RAW_SPACE} to train on "
                "the recorded vectors as they are")
        self.order = [src.index(n) for n in self.recorded]
        self.names = action_names(spec, space)
        if space == "joint_position":
            self.adapter = None
        else:
            if kinematics is None:
                from vla_ros.core.kinematics import RobotKinematics

                kinematics = RobotKinematics.from_embodiment(spec)
            self.adapter = ActionAdapter(spec, kinematics, space)
        n = len(spec.joint_names)
        self._joint_cols = [self.recorded.index(j) for j in spec.joint_names]
        self._grip_cols = [i for i in range(len(self.recorded)) if i not in self._joint_cols]
        assert len(self._joint_cols) == n

    @property
    def action_dim(self) -> int:
        return len(self.names)

    def episode_chunks(self, ep: EpisodeData, period_s: float, chunk_size: int) -> tuple[np.ndarray, np.ndarray]:
        """(T, chunk_size, D) chunks and (T, chunk_size) validity (row time within the episode)."""
        ts = ep.timestamps
        cmd = np.asarray(ep.action, np.float64)
        if cmd.ndim != 2 or cmd.shape[0] != ts.shape[0]:
            raise TrainingDataError(f"episode {ep.index}: action has shape {cmd.shape}, timestamps {ts.shape}")
        if not np.all(np.isfinite(cmd)):
            raise TrainingDataError(f"episode {ep.index}: non-finite recorded actions")
        if self.order is not None:
            cmd = cmd[:, self.order]
        T = ts.shape[0]
        times = ts[:, None] + period_s * np.arange(chunk_size)[None, :]  # (T, C)
        valid = times <= ts[-1] + 1e-9
        flat = np.clip(times.reshape(-1), ts[0], ts[-1])
        rows = np.stack([np.interp(flat, ts, cmd[:, j]) for j in range(cmd.shape[1])], axis=1)
        rows = rows.reshape(T, chunk_size, -1)
        if self.adapter is None:
            return rows, valid
        out = np.empty((T, chunk_size, len(self.names)))
        for t in range(T):
            q = rows[t][:, self._joint_cols]
            g = rows[t][:, self._grip_cols]
            out[t] = self.adapter.to_action_values(q, g, q_reference=cmd[t, self._joint_cols])
        return out, valid


def grasp_frames(gripper: np.ndarray) -> list[int]:
    """Every frame whose normalised gripper command turns closed (< 0.5) from open (an episode may
    start with a stale close, which is no grasp): one per grasp, in order."""
    closed = np.asarray(gripper, np.float64) < 0.5
    return [int(t) for t in np.flatnonzero(closed[1:] & ~closed[:-1]) + 1]


def missed_grasp_frames(gripper: np.ndarray) -> np.ndarray:
    """bool (T,): the frames that lead to a grasp the episode lets go of again before its last grasp --
    from the start, or from where the gripper opened, up to that close. In a demonstration that
    ends holding the object these are approaches that missed (the rest of the episode, closed on
    nothing, opening and coming back, shows how to recover and stays)."""
    grip = np.asarray(gripper, np.float64)
    out = np.zeros(grip.shape[0], dtype=bool)
    closes = grasp_frames(grip)
    start = 0
    for g in closes[:-1]:
        out[start:g] = True
        reopened = np.flatnonzero(grip[g:] >= 0.5)
        start = g + int(reopened[0]) if reopened.size else grip.shape[0]
    return out


def _gripper_column(conv: ChunkConverter) -> int:
    """The column of the first arm's gripper command in the dataset's action vectors."""
    name = gripper_action_name(conv.spec.arms[0])
    if conv.order is not None:
        return conv.order[conv.recorded.index(name)]
    if name not in conv.names:
        raise TrainingDataError(f"the dataset's actions {list(conv.names)} have no '{name}' command")
    return list(conv.names).index(name)


def episode_goals(ep: EpisodeData, spec: EmbodimentSpec, converter: ChunkConverter | None = None) -> np.ndarray:
    """(T, 3) for every frame the episode's goal: where the first arm's tool is commanded to be at its
    last grasp (`grasp_frames`; x, y, z in the base frame, from the recorded joint command) -- the
    one a demonstration ends with, after any that missed; the only one in most. All NaN when the
    episode never grasps (or the arm has no gripper). `converter`: an ee_pose ChunkConverter of
    `spec` to reuse (one is built, with its kinematics, when None)."""
    arm = spec.arms[0]
    goal = np.full((ep.length, 3), np.nan)
    if arm.gripper is None or ep.length == 0:
        return goal
    conv = converter or ChunkConverter(spec, "ee_pose", action_names(spec, "joint_position"))
    closes = grasp_frames(np.asarray(ep.action, np.float64)[:, _gripper_column(conv)])
    if not closes:
        return goal
    g = closes[-1]
    one = EpisodeData(ep.index, ep.task, ep.timestamps[g:g + 1], ep.state[g:g + 1], ep.action[g:g + 1], ep.frames)
    rows, _ = conv.episode_chunks(one, 1.0, 1)
    xyz = [next(i for i, n in enumerate(conv.names) if n.endswith("ee_pose/" + f)) for f in ("x", "y", "z")]
    goal[:] = rows[0, 0, xyz]
    return goal


# ---------------------------------------------------------------------------------- the set
def _resize_frames(frames: np.ndarray, size: int) -> np.ndarray:
    """uint8 (T, H, W, 3) -> uint8 (T, size, size, 3), the policy's resize (vla_ros.policies.preprocess)."""
    import torch

    from vla_ros.policies.preprocess import images_to_tensor, resize

    out = []
    for i in range(0, len(frames), 64):
        x = resize(images_to_tensor(np.ascontiguousarray(frames[i:i + 64])), size)
        out.append(x.permute(0, 2, 3, 1).contiguous().numpy())
    return np.concatenate(out) if out else np.zeros((0, size, size, 3), np.uint8)


def _stats(values: np.ndarray) -> FeatureStats:
    v = np.asarray(values, np.float64)
    return FeatureStats(mean=v.mean(0), std=v.std(0), min=v.min(0), max=v.max(0),
                        q01=np.quantile(v, 0.01, axis=0), q99=np.quantile(v, 0.99, axis=0))


@dataclass
class TrainingSet:
    """Every (episode, frame) sample of the sources, with its chunk, state, task and cached frames."""

    camera_slots: tuple[str, ...]
    image_size: int
    action_names: tuple[str, ...]
    tasks: list[str]
    episode_keys: list[tuple[int, int]]  # (source, episode) per global episode id
    sample_episode: np.ndarray  # (N,) global episode id
    sample_frame: np.ndarray  # (N,) global frame row in the caches
    sample_task: np.ndarray  # (N,) index into tasks
    actions: np.ndarray  # (N, C, D) float32, raw (model space)
    valid: np.ndarray  # (N, C) bool
    states: np.ndarray  # (N, S) float32, raw
    images: dict[str, np.ndarray]  # slot -> uint8 (F, size, size, 3) (memory-mapped)
    train_index: np.ndarray  # sample ids
    val_index: np.ndarray
    val_episodes: tuple[int, ...]
    sample_in_episode: np.ndarray  # (N,) frame number within its episode (episodes may lose frames: skip_missed_grasps)
    goals: np.ndarray | None = None  # (N, 3) float64, NaN rows: no grasp in that episode (see episode_goals)

    @property
    def num_samples(self) -> int:
        return int(self.sample_frame.shape[0])

    def norm_stats(self) -> NormStats:
        """Action statistics over the valid chunk rows and state statistics over the frames of the
        training episodes only (held-out episodes never leak into the normalisation)."""
        idx = self.train_index
        acts = self.actions[idx][self.valid[idx]]
        feats = {"action": _stats(acts)}
        if self.states.shape[1]:
            feats["state"] = _stats(self.states[idx])
        return NormStats(features=feats, source="vla_ros.train")

    def frame_in_episode(self) -> np.ndarray:
        """(N,) each sample's frame number within its episode (0 = the episode's first frame)."""
        return self.sample_in_episode

    def pixels(self, samples: np.ndarray) -> np.ndarray:
        """uint8 (B, cameras, size, size, 3)."""
        rows = self.sample_frame[samples]
        return np.stack([np.asarray(self.images[s][rows]) for s in self.camera_slots], axis=1)


def build_training_set(
    sources: Sequence,
    converter: ChunkConverter,
    period_s: float,
    chunk_size: int,
    camera_slots: Sequence[str],
    image_size: int,
    cache_dir: str | Path,
    val_fraction: float = 0.1,
    val_episodes: int | None = None,
    seed: int = 0,
    state_dim: int | None = None,
    log_fn=None,
    min_episode_frames: int = 1,
    goals: bool = False,
    max_episodes: int | None = None,
    skip_missed_grasps: bool = False,
) -> TrainingSet:
    """Read every episode of `sources`, convert the actions, fill (or reuse) the frame caches and
    split whole episodes into training and held-out validation sets (seeded). Episodes shorter than
    `min_episode_frames` (a recording cut short) are left out, and named. With `goals`, each
    sample's episode goal too (`episode_goals`). With `max_episodes`, only the first that many
    episodes kept (in the order of `sources`, then of their episodes) are used: a learning curve's
    smaller datasets are prefixes of the full one. With `skip_missed_grasps`, the frames that lead to
    a grasp the episode lets go of again (`missed_grasp_frames`, first arm) are no samples."""
    say = log_fn or log.info
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    slots = tuple(camera_slots)
    tasks: list[str] = []
    keys: list[tuple[int, int]] = []
    per_ep: list[tuple[np.ndarray, ...]] = []
    goal_rows: list[np.ndarray] = []
    goal_converter = ChunkConverter(converter.spec, "ee_pose", action_names(converter.spec, "joint_position")) \
        if goals else None  # built once: it carries the kinematics
    images: dict[str, list[np.ndarray]] = {s: [] for s in slots}
    frame_offset = 0
    for si, src in enumerate(sources):
        missing = [s for s in slots if s not in src.camera_slots]
        if missing:
            raise TrainingDataError(f"{src.name}: no camera {missing}; it records {list(src.camera_slots)}")
        if tuple(src.action_names) != tuple(sources[0].action_names):
            raise TrainingDataError(f"{src.name}: action names {list(src.action_names)} differ from "
                                    f"{sources[0].name}'s {list(sources[0].action_names)}")
        episodes = [src.episode(k) for k in range(src.num_episodes)]
        total = sum(e.length for e in episodes)
        caches = {}
        for slot in slots:
            path = cache / f"{src.fingerprint()}_{slot}_{image_size}px.npy"
            done = path.with_suffix(".done")
            if not done.is_file():
                say(f"caching {src.name} camera '{slot}' at {image_size}x{image_size} ({total} frames) -> {path}")
                arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(total, image_size, image_size, 3))
                row = 0
                for e in episodes:
                    frames = e.frames(slot)
                    if frames.shape[0] != e.length:
                        raise TrainingDataError(f"{src.name}: episode {e.index} camera '{slot}' has {frames.shape[0]} "
                                                f"frames for {e.length} rows")
                    arr[row:row + e.length] = _resize_frames(frames, image_size)
                    row += e.length
                arr.flush()
                del arr
                done.write_text(json.dumps({"frames": total, "size": image_size}))
            caches[slot] = np.load(path, mmap_mode="r")
            if caches[slot].shape[0] != total:
                raise TrainingDataError(f"{path}: cache holds {caches[slot].shape[0]} frames, expected {total}; delete it")
        row = 0
        skipped: list[tuple[int, int]] = []  # (episode, frames left out) of missed grasps
        short = [e.index for e in episodes if e.length < max(min_episode_frames, 1)]
        if short:
            say(f"{src.name}: leaving out {len(short)} episode(s) shorter than {min_episode_frames} frames: {short}")
        for e in episodes:
            if e.length < max(min_episode_frames, 1) or (max_episodes is not None and len(keys) >= max_episodes):
                row += e.length  # their frames stay in the cache, unused
                continue
            chunks, valid = converter.episode_chunks(e, period_s, chunk_size)
            state = np.asarray(e.state, np.float32).reshape(e.length, -1)
            if state_dim is not None and state_dim and state.shape[1] != state_dim:
                raise TrainingDataError(f"{src.name}: episode {e.index} state is {state.shape[1]}-D, the model "
                                        f"takes {state_dim}")
            if e.task not in tasks:
                tasks.append(e.task)
            keep = np.ones(e.length, dtype=bool)
            if skip_missed_grasps and converter.spec.arms[0].gripper is not None:
                keep = ~missed_grasp_frames(np.asarray(e.action, np.float64)[:, _gripper_column(converter)])
                if not keep.all():
                    skipped.append((e.index, int((~keep).sum())))
            gid = len(keys)
            keys.append((si, e.index))
            frames = np.arange(e.length)
            per_ep.append(tuple(x[keep] for x in (
                np.full(e.length, gid), frame_offset + row + frames, np.full(e.length, tasks.index(e.task)),
                chunks.astype(np.float32), valid, state, frames)))
            if goals:
                goal_rows.append(episode_goals(e, converter.spec, goal_converter)[keep])
            row += e.length
        if skipped:
            say(f"{src.name}: leaving out the approaches to missed grasps, {sum(n for _, n in skipped)} frames of "
                f"{len(skipped)} episode(s): {[k for k, _ in skipped]}")
        for slot in slots:
            images[slot].append(caches[slot])
        frame_offset += total
    if not keys:
        raise TrainingDataError("no episodes in the given datasets")
    cat = [np.concatenate([p[i] for p in per_ep]) for i in range(7)]
    merged = {s: (v[0] if len(v) == 1 else np.concatenate(v)) for s, v in images.items()}
    n_ep = len(keys)
    k_val = val_episodes if val_episodes is not None else int(round(val_fraction * n_ep))
    k_val = min(max(k_val, 0), n_ep - 1)
    held = tuple(sorted(np.random.default_rng([seed, 7]).permutation(n_ep)[:k_val].tolist()))
    is_val = np.isin(cat[0], held)
    return TrainingSet(slots, image_size, tuple(converter.names), tasks, keys, cat[0], cat[1], cat[2], cat[3],
                       cat[4], cat[5], merged, np.flatnonzero(~is_val), np.flatnonzero(is_val), held, cat[6],
                       np.concatenate(goal_rows) if goals else None)
