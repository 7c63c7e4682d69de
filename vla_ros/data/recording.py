"""What the recorder does with the streams it hears, without ROS: align camera frames, joint
states, the commands the controller sent and the action source's chunks to the dataset's frame
grid, and turn them into dataset rows. The recorder node and the rosbag2 import both use it.

Alignment rule (documented in the README):
- The grid: slot k lies at t_k = t_0 + k / fps, t_0 = the capture stamp of the first frame of the
  first camera at or after the episode start. A row's `timestamp` is (k - k_first) / fps, k_first
  the first slot assembled (an episode starts at timestamp 0, as LeRobot's do).
- Slot k takes, for every camera, the frame whose capture stamp is nearest to t_k within half a
  period (ties: the earlier one), and for every arm the joint_states message nearest to t_k within
  half a period. So the readings of one row lie within one frame period of each other -- the
  policy node's synchronisation rule (`ObservationSync`: every reading within the tolerance of the
  others, default one 30 Hz period plus margin).
- A slot missing any of them, or without a command sent before it, is not assembled: counted by
  reason and left out (a gap in the timestamps and the video), never filled with a duplicate.
- `action` at slot k is the command the controller had sent for t_k: for a joint_trajectory_controller
  the trajectory in force at t_k, interpolated exactly as a default JTC does (`vla_ros.core.jtc`:
  a trajectory takes over at its header stamp, or on arrival when the stamp is 0, from the
  measured state at that moment); for forward controllers the newest command at or before t_k;
  the gripper column is the newest gripper command at or before t_k, normalised.
- `action.source` (when the source's action space is not joint positions) is the row of the
  newest chunk stamped at or before t_k that covers t_k (row i covers [stamp + i·period,
  stamp + (i+1)·period)); past its end the last row. Only chunks received after the episode's start
  count: the last chunk of a policy deactivated before the episode (the previous episode's) is not
  what the source commands now. The source's first chunk of the episode may be stamped a little
  before the start (its observation was) and covers the start; slots before it are dropped.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from vla_ros.core.action_spaces import action_names
from vla_ros.core.embodiment import EmbodimentSpec
from vla_ros.core.jtc import JointTrajectoryController, TrajectoryCommand
from vla_ros.core.types import ActionChunk
from vla_ros.data.format import vector_feature

IMAGE_KEY_PREFIX = "observation.images."
TIME_RESOLUTION_S = 1e-9  # ROS time stamps are whole nanoseconds
# How a recorder's start_episode refusal begins while a stream has delivered nothing (a session that
# has just started the recorder may wait and ask again)
NO_READING_YET = "no reading yet from"


@dataclass(frozen=True)
class RecordingLayout:
    """The dataset features of an embodiment: state/action names, cameras, the source's space."""

    robot_type: str
    state_names: tuple[str, ...]
    action_names: tuple[str, ...]
    cameras: tuple[tuple[str, int, int], ...]  # (slot, height, width)
    source_space: str | None  # None: the source acts in joint positions (no action.source column)
    source_names: tuple[str, ...] = ()

    def features(self) -> dict[str, dict]:
        out = {"observation.state": vector_feature(list(self.state_names)),
               "action": vector_feature(list(self.action_names))}
        if self.source_space is not None:
            out["action.source"] = vector_feature(list(self.source_names))
        for slot, h, w in self.cameras:
            out[IMAGE_KEY_PREFIX + slot] = {"dtype": "video", "shape": [h, w, 3]}
        return out


def recording_layout(spec: EmbodimentSpec, source_space: str | None = None,
                     camera_shapes: dict[str, tuple[int, int]] | None = None) -> RecordingLayout:
    """observation.state and action: per arm, the arm's joints (driver names, qualified) then the
    normalised gripper (the `joint_position` action names); action.source in `source_space`
    (default: the embodiment's action space) unless that is joint_position."""
    names = action_names(spec, "joint_position")
    space = source_space or spec.action_space
    shapes = camera_shapes or {}
    cams = tuple((c.slot, *shapes.get(c.slot, (c.height, c.width))) for c in spec.cameras)
    if space == "joint_position":
        return RecordingLayout(spec.name, names, names, cams, None)
    return RecordingLayout(spec.name, names, names, cams, space, action_names(spec, space))


@dataclass(frozen=True)
class AssembledFrame:
    slot: int
    stamp_s: float
    values: dict[str, np.ndarray]
    images: dict[str, np.ndarray]


class _Stream:
    """Stamped readings of one source, oldest first (a stamp going backwards clears the history)."""

    def __init__(self, retention_s: float) -> None:
        self.stamps: list[float] = []
        self.items: deque = deque()
        self.retention_s = retention_s

    def add(self, stamp_s: float, item: Any) -> None:
        if self.stamps and stamp_s < self.stamps[-1]:
            self.stamps.clear()
            self.items.clear()
        self.stamps.append(stamp_s)
        self.items.append(item)

    def prune(self, before_s: float, keep: int = 1) -> None:
        drop = max(0, min(bisect.bisect_left(self.stamps, before_s), len(self.stamps) - keep))
        if drop:
            del self.stamps[:drop]
            for _ in range(drop):
                self.items.popleft()

    def nearest(self, t_s: float, half_window_s: float) -> tuple[float, Any] | None:
        i = bisect.bisect_left(self.stamps, t_s)
        best = None
        for j in (i - 1, i):  # the earlier wins a tie
            if 0 <= j < len(self.stamps):
                d = abs(self.stamps[j] - t_s)
                if d <= half_window_s + 1e-9 and (best is None or d < best[0] - 1e-12):
                    best = (d, j)
        return None if best is None else (self.stamps[best[1]], self.items[best[1]])

    def latest_at(self, t_s: float) -> tuple[float, Any] | None:
        i = bisect.bisect_right(self.stamps, t_s) - 1
        return None if i < 0 else (self.stamps[i], self.items[i])

    @property
    def newest_s(self) -> float:
        return self.stamps[-1] if self.stamps else -math.inf


class CommandSampler:
    """The command a joint_trajectory_controller (or forward controller) was executing at a
    given time, from the messages the controller sent; queried with non-decreasing times."""

    def __init__(self, joint_names: Sequence[str], kind: str) -> None:
        self.joint_names = tuple(joint_names)
        self.kind = kind
        self._jtc = JointTrajectoryController(self.joint_names) if kind == "joint_trajectory" else None
        self._pending: list[tuple[float, int, TrajectoryCommand]] = []  # (takeover, seq, command)
        self._forward = _Stream(10.0)
        self._seq = 0
        self._t_s = -math.inf
        self._commanded = False
        self.rejected = 0
        self.last_rejection = ""

    def add_trajectory(self, command: TrajectoryCommand, received_s: float) -> None:
        """A trajectory the controller published; it takes over at its stamp (on arrival if 0)."""
        takeover = command.stamp_s if command.stamp_s != 0.0 else float(received_s)
        self._seq += 1
        bisect.insort(self._pending, (takeover, self._seq, command))

    def add_forward(self, positions: np.ndarray, received_s: float) -> None:
        self._forward.add(float(received_s), np.asarray(positions, dtype=np.float64).copy())

    def sample(self, t_s: float, measured) -> np.ndarray | None:
        """Positions commanded at t_s in `joint_names` order, or None if nothing was commanded yet.
        `measured(t) -> (q, qd) | None` gives the measured state (for a trajectory's takeover)."""
        if self.kind != "joint_trajectory":
            hit = self._forward.latest_at(t_s)
            return None if hit is None else hit[1]
        jtc = self._jtc
        # A trajectory stamped at a frame's time takes over at that frame. Frame times are computed
        # (grid start + k / fps) and stamps are whole nanoseconds: compare at ROS time's resolution,
        # or float rounding decides (17.799999999999997 < 17.8) and the row is a coin toss.
        while self._pending and self._pending[0][0] <= t_s + TIME_RESOLUTION_S:
            takeover, _, command = self._pending.pop(0)
            reason = jtc.receive(command, takeover)
            if reason is not None:
                self.rejected += 1
                self.last_rejection = reason
                continue
            state = measured(takeover)
            if state is None:
                continue
            jtc.update(takeover, state[0], state[1])
            self._commanded = True
        self._t_s = max(self._t_s, t_s)
        if not self._commanded:
            return None
        state = measured(t_s) or (np.zeros(len(self.joint_names)), np.zeros(len(self.joint_names)))
        out = jtc.update(t_s, state[0], state[1])
        return None if out is None else np.asarray(out.positions, dtype=np.float64)


@dataclass
class EpisodeReport:
    frames: int = 0
    dropped: Counter = field(default_factory=Counter)
    late_messages: int = 0
    foreign_chunks: int = 0

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())


class FrameAssembler:
    """Streams in, aligned rows out (rule in the module docstring).

    Feed every message with its capture stamp (cameras, joint states) or the time it was
    received (commands); `poll(now_s)` returns the rows whose slot can no longer change (its
    window closed `wait_s` ago); `flush(end_s)` the rest up to end_s at the end of an episode.
    """

    def __init__(self, spec: EmbodimentSpec, layout: RecordingLayout, fps: float, wait_s: float = 0.15,
                 max_wait_s: float = 2.0) -> None:
        if not (fps > 0 and math.isfinite(fps)):
            raise ValueError(f"fps must be a positive number, got {fps}")
        self.spec = spec
        self.layout = layout
        self.fps = float(fps)
        self.period_s = 1.0 / self.fps
        self.half_s = 0.5 * self.period_s
        self.wait_s = float(wait_s)
        self.max_wait_s = max(float(max_wait_s), self.wait_s)
        self.cameras = {slot: _Stream(5.0) for slot, _, _ in layout.cameras}
        self.arms = {arm.name: _Stream(5.0) for arm in spec.arms}
        self.samplers = {arm.name: CommandSampler(arm.command.joint_names, arm.command.kind) for arm in spec.arms}
        self.grippers = {arm.name: _Stream(30.0) for arm in spec.arms if arm.gripper is not None}
        self._chunks: list[ActionChunk] = []
        self._qualified = {arm.name: arm.qualified_joint_names for arm in spec.arms}
        self.reset_episode(None)

    # ------------------------------------------------------------------ episode
    def reset_episode(self, start_s: float | None) -> None:
        """Start a new grid at the first frame stamped >= start_s (None: not recording)."""
        self.start_s = start_s
        self.t0_s: float | None = None
        self.next_slot = 0
        self.first_slot: int | None = None  # grid slot of the episode's first row (its timestamp 0)
        self.end_s: float | None = None  # set by close_at: no slot past it is decided
        self.report = EpisodeReport()
        if start_s is not None:  # chunks received before the start are not this episode's source
            self._chunks = []

    def close_at(self, end_s: float) -> None:
        """The episode ends at end_s (the save request's time): polls made while the save waits for
        queued readings decide no slot whose window closes after it."""
        self.end_s = float(end_s)

    @property
    def episode_start_s(self) -> float | None:
        """Capture time of the episode's first row (timestamp 0); slots that could not be assembled
        before it are counted as dropped, but the episode starts with a row."""
        if self.t0_s is None or self.first_slot is None:
            return None
        return self.t0_s + self.first_slot * self.period_s

    @property
    def grid_start_s(self) -> float | None:
        """Capture time of slot 0 (the first frame of the first camera at or after the start): the
        episode's slots, assembled or counted as dropped, run from here."""
        return self.t0_s

    @property
    def recording(self) -> bool:
        return self.start_s is not None

    # ------------------------------------------------------------------ inputs
    def add_image(self, slot: str, stamp_s: float, rgb: np.ndarray) -> None:
        stream = self.cameras[slot]
        if self.t0_s is not None and stamp_s < self.t0_s + (self.next_slot - 0.5) * self.period_s:
            self.report.late_messages += 1  # its slot was already decided
        stream.add(float(stamp_s), rgb)
        first = self.layout.cameras[0][0]
        if self.recording and self.t0_s is None and slot == first and stamp_s >= self.start_s:
            self.t0_s = float(stamp_s)

    def add_joint_state(self, arm: str, stamp_s: float, names: Sequence[str], positions, velocities=None) -> None:
        arm_spec = self.spec.arm(arm)
        names = list(names)
        if len(positions) != len(names):
            raise ValueError(f"joint_states of arm '{arm}' have {len(names)} names but {len(positions)} positions; "
                             "reading ignored")
        try:
            q = np.array([positions[names.index(j)] for j in arm_spec.joint_names], dtype=np.float64)
            qd = (np.array([velocities[names.index(j)] for j in arm_spec.joint_names], dtype=np.float64)
                  if velocities is not None and len(velocities) == len(names) else np.zeros_like(q))
            g = None
            if arm_spec.gripper is not None:
                g = float(arm_spec.gripper.from_joint(positions[names.index(arm_spec.gripper.joint_name)]))
        except ValueError as err:
            raise KeyError(f"joint_states of arm '{arm}' lack a joint: {err}") from err
        bad = [j for j, v in zip(arm_spec.joint_names, q) if not np.isfinite(v)]
        if g is not None and not np.isfinite(g):
            bad.append(arm_spec.gripper.joint_name)
        if bad:
            # never a NaN in observation.state: the reading is not kept (its frames are dropped as
            # having no state if no other reading is near)
            raise ValueError(f"joint_states of arm '{arm}': non-finite position for {', '.join(bad)}; reading ignored")
        qd = np.where(np.isfinite(qd), qd, 0.0)  # drivers leave unmeasured velocities NaN
        self.arms[arm].add(float(stamp_s), (q, qd, g))

    def add_trajectory(self, arm: str, command: TrajectoryCommand, received_s: float) -> None:
        self.samplers[arm].add_trajectory(command, received_s)

    def add_forward_command(self, arm: str, positions, received_s: float) -> None:
        arm_spec = self.spec.arm(arm)
        values = np.asarray(positions, dtype=np.float64).reshape(-1)
        names = arm_spec.command.joint_names
        if values.shape[0] != len(names) or not np.all(np.isfinite(values)):
            raise ValueError(f"forward command of arm '{arm}': expected {len(names)} finite values, got "
                             f"{values.tolist()[:16]}; ignored")
        self.samplers[arm].add_forward(values[[names.index(j) for j in arm_spec.joint_names]], received_s)

    def add_gripper_command(self, arm: str, joint_position: float, received_s: float) -> None:
        gripper = self.spec.arm(arm).gripper
        self.grippers[arm].add(float(received_s), float(np.clip(gripper.from_joint(float(joint_position)), 0.0, 1.0)))

    def add_chunk(self, chunk: ActionChunk) -> bool:
        """The action source's chunk; False (and counted) when it is not in the source's space."""
        if self.layout.source_space is None:
            return True
        if set(chunk.names) != set(self.layout.source_names):
            self.report.foreign_chunks += 1
            return False
        order = [chunk.names.index(n) for n in self.layout.source_names]
        self._chunks.append(ActionChunk(self.layout.source_names, chunk.values[:, order], chunk.period_s,
                                        chunk.stamp_s))
        self._chunks.sort(key=lambda c: c.stamp_s)
        if len(self._chunks) > 64:
            del self._chunks[:-64]
        return True

    # ------------------------------------------------------------------ assembly
    def _measured(self, arm: str):
        stream = self.arms[arm]

        def at(t_s: float):
            hit = stream.latest_at(t_s) or (stream.nearest(t_s, math.inf) if stream.stamps else None)
            return None if hit is None else (hit[1][0], hit[1][1])

        return at

    def _source_row(self, t_s: float) -> np.ndarray | None:
        best = None
        for c in self._chunks:
            if c.stamp_s <= t_s + TIME_RESOLUTION_S:
                best = c
        if best is None:
            return None
        i = int(math.floor((t_s - best.stamp_s) / best.period_s + 1e-9))
        return best.values[min(max(i, 0), best.values.shape[0] - 1)]

    def _assemble(self, k: int) -> AssembledFrame | None:
        t = self.t0_s + k * self.period_s
        images = {}
        for slot, stream in self.cameras.items():
            hit = stream.nearest(t, self.half_s)
            if hit is None:
                self.report.dropped[f"no frame from camera '{slot}'"] += 1
                return None
            images[IMAGE_KEY_PREFIX + slot] = hit[1]
        state, action = [], []
        for arm in self.spec.arms:
            hit = self.arms[arm.name].nearest(t, self.half_s)
            if hit is None:
                self.report.dropped[f"no joint_states of arm '{arm.name}'"] += 1
                return None
            q, _, g = hit[1]
            state.extend(q)
            cmd = self.samplers[arm.name].sample(t, self._measured(arm.name))
            if cmd is None:
                self.report.dropped[f"no command sent to arm '{arm.name}' yet"] += 1
                return None
            action.extend(cmd)
            if arm.gripper is not None:
                state.append(g)
                gc = self.grippers[arm.name].latest_at(t)
                if gc is None:
                    self.report.dropped[f"no gripper command sent to arm '{arm.name}' yet"] += 1
                    return None
                action.append(gc[1])
        values = {"observation.state": np.asarray(state, np.float64), "action": np.asarray(action, np.float64)}
        if self.layout.source_space is not None:
            row = self._source_row(t)
            if row is None:
                self.report.dropped["no action chunk from the source yet"] += 1
                return None
            values["action.source"] = np.asarray(row, np.float64)
        return AssembledFrame(k, t, values, images)

    def silent_streams(self) -> list[tuple[str, str]]:
        """The camera and joint-state streams that have delivered nothing yet, as ("camera" |
        "joint_states", slot or arm name): an episode started now could not assemble a row."""
        return ([("camera", slot) for slot, s in self.cameras.items() if not s.stamps]
                + [("joint_states", arm) for arm, s in self.arms.items() if not s.stamps])

    def _streams_past(self, t_s: float) -> bool:
        """Every camera and joint-state stream has delivered a reading stamped at or after t_s."""
        return all(s.newest_s >= t_s - 1e-9 for s in (*self.cameras.values(), *self.arms.values()))

    def _ready(self, until_s: float, patient: bool = False) -> list[AssembledFrame]:
        out = []
        if self.t0_s is None:
            return out
        while self.t0_s + self.next_slot * self.period_s + self.half_s <= until_s + 1e-9:
            k = self.next_slot
            close_s = self.t0_s + k * self.period_s + self.half_s
            # A slow consumer (this process starved of CPU) sees the clock run ahead of the queued
            # readings: wait for the streams to pass the window, up to max_wait_s, before deciding.
            if patient and not self._streams_past(close_s) and close_s + self.max_wait_s > until_s + self.wait_s:
                break
            self.next_slot += 1
            frame = self._assemble(k)
            if frame is not None:
                if self.first_slot is None:
                    self.first_slot = k
                out.append(AssembledFrame(k - self.first_slot, frame.stamp_s, frame.values, frame.images))
                self.report.frames += 1
        self._prune()
        return out

    def poll(self, now_s: float) -> list[AssembledFrame]:
        """Rows whose window closed at least wait_s before now_s."""
        if not self.recording:
            self._prune_idle(now_s)
            return []
        until_s = now_s - self.wait_s
        return self._ready(until_s if self.end_s is None else min(until_s, self.end_s), patient=True)

    def flush(self, end_s: float, count_undelivered: bool = False) -> list[AssembledFrame]:
        """At the end of an episode: every slot whose window closed by end_s. By default the newest
        camera frame bounds it (a bag converted to its end: slots past what the cameras recorded are
        not the episode's). With count_undelivered -- a save request at end_s whose wait for queued
        readings ran out -- the slots up to end_s are the episode's all the same, and those whose
        frames never came are counted as dropped rather than left out of the count."""
        if not self.recording:
            return []
        if count_undelivered:
            return self._ready(end_s)
        newest = min(s.newest_s for s in self.cameras.values()) if self.cameras else end_s
        return self._ready(min(end_s, newest + self.half_s))

    def _prune(self) -> None:
        if self.t0_s is None:
            return
        t = self.t0_s + self.next_slot * self.period_s - self.period_s
        for s in self.cameras.values():
            s.prune(t - self.half_s, keep=1)
        for s in self.arms.values():
            s.prune(t - 1.0, keep=2)

    def _prune_idle(self, now_s: float) -> None:
        for s in self.cameras.values():
            s.prune(now_s - 1.0, keep=2)
        for s in self.arms.values():
            s.prune(now_s - 2.0, keep=2)
