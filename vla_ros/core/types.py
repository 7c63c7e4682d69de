"""The values that flow through the graph: observations in, action chunks out.

Both are frozen and shape-checked at construction so that a malformed value fails where
it is made, not three nodes later.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

GRIPPER_OPEN = 1.0
GRIPPER_CLOSED = 0.0


@dataclass(frozen=True)
class ActionChunk:
    """A short sequence of actions computed from one observation.

    names:     one name per action dimension; the names say which action space the chunk
               is in (see vla_ros.core.action_spaces and the README's "Action chunks").
    values:    (T, D) float64, row i is the action for time stamp_s + i * period_s.
    period_s:  the policy's control period (time between rows).
    stamp_s:   capture time of the newest observation the chunk was computed from.
    """

    names: tuple[str, ...]
    values: np.ndarray
    period_s: float
    stamp_s: float

    def __post_init__(self) -> None:
        values = np.array(self.values, dtype=np.float64, copy=True)
        if values.ndim != 2:
            raise ValueError(f"ActionChunk.values must be 2-D (steps, dims), got shape {values.shape}")
        if values.shape[0] == 0:
            raise ValueError("ActionChunk must have at least one step")
        names = tuple(str(n) for n in self.names)
        if values.shape[1] != len(names):
            raise ValueError(
                f"ActionChunk has {len(names)} names but values have {values.shape[1]} columns"
            )
        if len(set(names)) != len(names):
            raise ValueError(f"ActionChunk names must be unique, got {names}")
        if not (np.isfinite(self.period_s) and self.period_s > 0.0):
            raise ValueError(f"ActionChunk.period_s must be a positive finite number, got {self.period_s}")
        values.setflags(write=False)
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "period_s", float(self.period_s))
        object.__setattr__(self, "stamp_s", float(self.stamp_s))

    @property
    def num_steps(self) -> int:
        return int(self.values.shape[0])

    @property
    def times_s(self) -> np.ndarray:
        """Absolute time of every step."""
        return self.stamp_s + self.period_s * np.arange(self.num_steps)

    def column(self, name: str) -> np.ndarray:
        return self.values[:, self.names.index(name)]


@dataclass(frozen=True)
class Observation:
    """What a policy sees at one instant.

    stamp_s:          capture time of the newest sensor reading in the observation.
    images:           camera slot -> (H, W, 3) uint8 RGB.
    joint_names:      names of the measured joints (driver names, qualified for namespaced arms).
    joint_positions:  (N,) float64, in joint_names order.
    instruction:      the natural-language task.
    state:            optional proprioceptive vector in the policy's state convention.
    privileged:       simulation-only ground truth (object poses, ...) for scripted experts.
    """

    stamp_s: float
    images: Mapping[str, np.ndarray]
    joint_names: tuple[str, ...]
    joint_positions: np.ndarray
    instruction: str = ""
    state: np.ndarray | None = None
    privileged: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        q = np.array(self.joint_positions, dtype=np.float64, copy=True).reshape(-1)
        names = tuple(str(n) for n in self.joint_names)
        if q.shape[0] != len(names):
            raise ValueError(f"Observation has {len(names)} joint names but {q.shape[0]} positions")
        for slot, img in self.images.items():
            arr = np.asarray(img)
            if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
                raise ValueError(
                    f"Observation image '{slot}' must be (H, W, 3) uint8 RGB, got {arr.shape} {arr.dtype}"
                )
        q.setflags(write=False)
        object.__setattr__(self, "joint_positions", q)
        object.__setattr__(self, "joint_names", names)
        object.__setattr__(self, "stamp_s", float(self.stamp_s))
        if self.state is not None:
            s = np.array(self.state, dtype=np.float64, copy=True).reshape(-1)
            s.setflags(write=False)
            object.__setattr__(self, "state", s)

    def positions_for(self, names: tuple[str, ...] | list[str]) -> np.ndarray:
        """Joint positions reordered to `names`; KeyError names the missing joints."""
        index = {n: i for i, n in enumerate(self.joint_names)}
        missing = [n for n in names if n not in index]
        if missing:
            raise KeyError(f"observation lacks joints {missing}; has {list(self.joint_names)}")
        return np.array([self.joint_positions[index[n]] for n in names])
