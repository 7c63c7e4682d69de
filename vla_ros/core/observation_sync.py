"""Time-synchronised observation assembly (pure: no rclpy, no torch).

The policy node feeds every camera frame and joint-state message in, with its capture
stamp, and asks `assemble(now_s)` for an observation before each inference. The answer is
either an Observation built from the newest set of readings whose stamps lie within
`tolerance_s` of each other, or a Refusal saying why there is none:

- "missing":        a camera / joint-state source has sent nothing yet;
- "stale":          a source's newest reading is older than `max_age_s` (a silent camera);
- "unsynchronised": every source is fresh, but no set of readings fits in `tolerance_s`
                    within the last `max_age_s`;
- "no_privileged":  privileged data is required (scripted expert) but has not arrived;
- "future":         a reading is stamped more than `max_future_s` after `now_s`: the sensor's
                    clock and this node's disagree (hosts not time-synchronised, or a sim
                    publishing stamps without /clock), and a chunk stamped with it would be
                    refused or mis-timed by the controller.

A chunk is never computed from old frames: a stale source refuses the whole observation.
The instruction is not time-synchronised: the latest one wins and takes effect at the
next assembled observation (hence the next chunk).
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

import numpy as np

from vla_ros.core.types import Observation

RefusalCode = Literal["missing", "stale", "unsynchronised", "no_privileged", "future"]

# Longer instructions are refused (the previous one stays): tokenizing a megabyte on every inference
# would stall the policy, and no model reads past a few hundred tokens.
MAX_INSTRUCTION_CHARS = 2000


def check_instruction(text: str) -> str:
    """The instruction as given, or ValueError when it is longer than MAX_INSTRUCTION_CHARS."""
    text = str(text)
    if len(text) > MAX_INSTRUCTION_CHARS:
        raise ValueError(f"instruction of {len(text)} characters refused (at most {MAX_INSTRUCTION_CHARS}): "
                         f"{text[:60]!r}...; the previous instruction stays")
    return text


@dataclass(frozen=True)
class SyncConfig:
    """What an observation is made of and how fresh and aligned it must be.

    camera_slots:      the policy's camera slots, e.g. ("front", "wrist").
    joint_sources:     joint-state sources, in observation order: ("",) for one arm,
                       ("follower_left", "follower_right") for ALOHA.
    tolerance_s:       largest spread between the oldest and newest stamp in one observation
                       (one frame at 30 Hz plus a margin by default).
    max_age_s:         a reading older than this, relative to `now_s`, is stale.
    max_future_s:      a newest reading stamped further than this after `now_s` is refused.
    retention_s:       how long readings are kept for matching (at least tolerance + max age).
    require_privileged: refuse until privileged data (sim/objects) has been set.
    """

    camera_slots: tuple[str, ...]
    joint_sources: tuple[str, ...] = ("",)
    tolerance_s: float = 1.0 / 30.0 + 0.01
    max_age_s: float = 0.5
    max_future_s: float = 0.05
    retention_s: float | None = None
    require_privileged: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "camera_slots", tuple(str(s) for s in self.camera_slots))
        object.__setattr__(self, "joint_sources", tuple(str(s) for s in self.joint_sources))
        if len(set(self.camera_slots)) != len(self.camera_slots):
            raise ValueError(f"camera_slots must be unique, got {self.camera_slots}")
        if len(set(self.joint_sources)) != len(self.joint_sources):
            raise ValueError(f"joint_sources must be unique, got {self.joint_sources}")
        if not self.camera_slots and not self.joint_sources:
            raise ValueError("SyncConfig needs at least one camera slot or joint source")
        for label in ("tolerance_s", "max_age_s", "max_future_s"):
            v = getattr(self, label)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"SyncConfig.{label} must be a positive number of seconds, got {v}")
        retention = self.tolerance_s + self.max_age_s if self.retention_s is None else float(self.retention_s)
        if retention < self.tolerance_s + self.max_age_s:
            raise ValueError(
                f"SyncConfig.retention_s {retention} must be >= tolerance_s + max_age_s "
                f"= {self.tolerance_s + self.max_age_s}"
            )
        object.__setattr__(self, "retention_s", retention)


@dataclass(frozen=True)
class Refusal:
    """Why no observation could be assembled; `source` is "camera:<slot>", "joints:<ns>" or ""."""

    code: RefusalCode
    source: str
    message: str


@dataclass(frozen=True)
class Assembly:
    """The answer of `ObservationSync.assemble`: exactly one of observation / refusal is set.

    spread_s: newest minus oldest stamp of the chosen set; age_s: now minus the oldest stamp.
    """

    observation: Observation | None
    refusal: Refusal | None
    spread_s: float = float("nan")
    age_s: float = float("nan")

    @property
    def ok(self) -> bool:
        return self.observation is not None


@dataclass
class _Buffer:
    """Readings of one source, oldest first, stamps strictly non-decreasing."""

    stamps_s: list[float] = field(default_factory=list)
    items: deque = field(default_factory=deque)

    def add(self, stamp_s: float, item: Any, retention_s: float) -> None:
        if self.stamps_s and stamp_s < self.stamps_s[-1]:
            # Time went backwards (simulation reset, bag replay): older history is meaningless.
            self.stamps_s.clear()
            self.items.clear()
        self.stamps_s.append(stamp_s)
        self.items.append(item)
        cutoff = stamp_s - retention_s
        drop = bisect.bisect_left(self.stamps_s, cutoff)
        if drop:
            del self.stamps_s[:drop]
            for _ in range(drop):
                self.items.popleft()

    def newest_in(self, lo_s: float, hi_s: float) -> int | None:
        """Index of the newest reading with lo_s <= stamp <= hi_s, or None."""
        i = bisect.bisect_right(self.stamps_s, hi_s) - 1
        return i if i >= 0 and self.stamps_s[i] >= lo_s else None


class ObservationSync:
    """Buffers the newest readings per source and assembles synchronised observations.

    Not thread-safe by itself: the policy node calls it under one lock.
    """

    def __init__(self, config: SyncConfig) -> None:
        self.config = config
        self._cameras = {slot: _Buffer() for slot in config.camera_slots}
        self._joints = {src: _Buffer() for src in config.joint_sources}
        self._instruction = ""
        self._privileged: dict[str, Any] = {}
        self._has_privileged = False

    # ------------------------------------------------------------------ inputs

    def add_image(self, slot: str, stamp_s: float, image: np.ndarray) -> None:
        """A camera frame, (H, W, 3) uint8 RGB, captured at stamp_s."""
        if slot not in self._cameras:
            raise KeyError(f"unknown camera slot '{slot}'; configured: {list(self._cameras)}")
        img = np.asarray(image)
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise ValueError(f"camera '{slot}' frame must be (H, W, 3) uint8 RGB, got {img.shape} {img.dtype}")
        self._cameras[slot].add(_finite_stamp(stamp_s, f"camera '{slot}'"), img, self.config.retention_s)

    def add_joint_state(self, source: str, stamp_s: float, names, positions) -> None:
        """A joint-state reading of one source; names are already qualified (ns/joint)."""
        if source not in self._joints:
            raise KeyError(f"unknown joint source '{source}'; configured: {list(self._joints)}")
        names = tuple(str(n) for n in names)
        q = np.asarray(positions, dtype=np.float64).reshape(-1)
        if q.shape[0] != len(names):
            raise ValueError(f"joint source '{source}': {len(names)} names but {q.shape[0]} positions")
        bad = [n for n, v in zip(names, q) if not np.isfinite(v)]
        if bad:
            # not kept: the source goes stale and no observation is assembled from it
            raise ValueError(f"joint source '{source}': non-finite position for {', '.join(bad)}; reading ignored")
        self._joints[source].add(_finite_stamp(stamp_s, f"joint source '{source}'"), (names, q), self.config.retention_s)

    def set_instruction(self, text: str) -> None:
        """The latest instruction wins; it is used from the next assembled observation on."""
        self._instruction = check_instruction(text)

    @property
    def instruction(self) -> str:
        return self._instruction

    def set_privileged(self, key: str, value: Any) -> None:
        """Simulation ground truth (e.g. key "objects"); the latest value is used."""
        self._privileged[str(key)] = value
        self._has_privileged = True

    def clear(self) -> None:
        """Forget every reading (not the instruction), e.g. on deactivate."""
        for b in (*self._cameras.values(), *self._joints.values()):
            b.stamps_s.clear()
            b.items.clear()
        self._privileged.clear()
        self._has_privileged = False

    # ------------------------------------------------------------------ assembly

    def _sources(self) -> list[tuple[str, _Buffer]]:
        return [(f"camera:{s}", b) for s, b in self._cameras.items()] + [
            (f"joints:{s}", b) for s, b in self._joints.items()
        ]

    def assemble(self, now_s: float) -> Assembly:
        """The newest synchronised observation at time now_s, or the reason there is none."""
        cfg = self.config
        sources = self._sources()
        for name, buf in sources:
            if not buf.stamps_s:
                return _refuse("missing", name, f"{_describe(name)} has sent nothing yet")
        for name, buf in sources:
            age = now_s - buf.stamps_s[-1]
            if age > cfg.max_age_s:
                return _refuse(
                    "stale", name,
                    f"{_describe(name)} is stale: newest reading is {age:.3f} s old "
                    f"(max_observation_age_s {cfg.max_age_s:.3f} s)",
                )  # fmt: skip
        for name, buf in sources:
            ahead = buf.stamps_s[-1] - now_s
            if ahead > cfg.max_future_s:
                return _refuse(
                    "future", name,
                    f"{_describe(name)} is stamped {ahead:.3f} s in the future of this node's clock "
                    f"(max {cfg.max_future_s:.3f} s): are the hosts' clocks synchronised / use_sim_time set?",
                )  # fmt: skip
        if cfg.require_privileged and not self._has_privileged:
            return _refuse("no_privileged", "privileged", "the policy needs sim/objects and none has arrived")

        # The newest set: the largest lower bound L (some reading's stamp) such that every
        # source has a reading in [L, L + tolerance]; each source then takes its newest one there.
        oldest_allowed = now_s - cfg.max_age_s
        candidates = sorted({s for _, b in sources for s in b.stamps_s if s >= oldest_allowed}, reverse=True)
        for lo in candidates:
            picks = [b.newest_in(lo, lo + cfg.tolerance_s) for _, b in sources]
            if all(p is not None for p in picks):
                return self._build(sources, picks, now_s)
        newest = ", ".join(f"{_describe(n)} {b.stamps_s[-1]:.3f}" for n, b in sources)
        return _refuse(
            "unsynchronised", "",
            f"no set of readings within {cfg.tolerance_s:.3f} s of each other in the last "
            f"{cfg.max_age_s:.3f} s; newest stamps: {newest}",
        )  # fmt: skip

    def _build(self, sources, picks, now_s: float) -> Assembly:
        stamps = [buf.stamps_s[i] for (_, buf), i in zip(sources, picks)]
        images: dict[str, np.ndarray] = {}
        names: list[str] = []
        positions: list[np.ndarray] = []
        for (name, buf), i in zip(sources, picks):
            kind, _, key = name.partition(":")
            if kind == "camera":
                images[key] = buf.items[i]
            else:
                jn, q = buf.items[i]
                names.extend(jn)
                positions.append(q)
        if len(set(names)) != len(names):
            dupes = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"joint sources report the same joints {dupes}; qualify them by namespace")
        obs = Observation(
            stamp_s=max(stamps),
            images=images,
            joint_names=tuple(names),
            joint_positions=np.concatenate(positions) if positions else np.zeros(0),
            instruction=self._instruction,
            privileged=dict(self._privileged),
        )
        return Assembly(obs, None, spread_s=max(stamps) - min(stamps), age_s=now_s - min(stamps))


def _finite_stamp(stamp_s: float, what: str) -> float:
    s = float(stamp_s)
    if not math.isfinite(s):
        raise ValueError(f"{what}: stamp must be finite, got {stamp_s}")
    return s


def _describe(source: str) -> str:
    kind, _, key = source.partition(":")
    if kind == "camera":
        return f"camera '{key}'"
    if kind == "joints":
        return f"joint_states '{key}/joint_states'" if key else "joint_states"
    return source


def _refuse(code: RefusalCode, source: str, message: str) -> Assembly:
    return Assembly(None, Refusal(code, source, message))


def privileged_objects(poses: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Validate {object name: (4, 4) world pose} before it goes into Observation.privileged."""
    out = {}
    for name, T in poses.items():
        arr = np.asarray(T, dtype=np.float64)
        if arr.shape != (4, 4):
            raise ValueError(f"privileged object '{name}' pose must be (4, 4), got {arr.shape}")
        out[str(name)] = arr
    return out
