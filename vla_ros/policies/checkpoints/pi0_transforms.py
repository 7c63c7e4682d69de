"""openpi's per-robot input/output transforms for released π0 checkpoints, on our observations.

A released π0 checkpoint was trained through openpi's data config of its robot, and its outputs
mean something only through the same transforms (openpi `training/config.py`,
`policies/aloha_policy.py`, `policies/droid_policy.py`, `transforms.py`). The formulas and
constants below are openpi's; the code is ours. Each layout says which camera feeds which image
slot, builds the state the model was trained on from an Observation, and turns the model's
un-normalised actions into a chunk of our action spaces:

- "aloha" (openpi `pi0_aloha`, `pi0_aloha_towel`, `pi0_aloha_tupperware`, `pi0_aloha_pen_uncap`,
  `pi05_aloha`: LeRobotAlohaDataConfig, adapt_to_pi=True, use_delta_joint_actions=True):
  images cam_high, cam_left_wrist, cam_right_wrist (cam_low unused, a missing wrist a masked
  black image); state = ALOHA's [left 6 joints, left gripper, right 6 joints, right gripper]
  with the gripper as ALOHA reports it (finger position through Interbotix's horn/arm linkage,
  normalised between PUPPET_GRIPPER_POSITION_CLOSE/OPEN), then `adapt_to_pi`: joints multiplied
  by the flip mask [1, -1, -1, 1, 1, 1, 1] per arm, gripper back to the motor angle normalised
  between encoder counts 2405 and 3110 (0.5476 .. 1.6296 rad). Actions: DeltaActions /
  AbsoluteActions with mask make_bool_mask(6, -1, 6, -1) (joints relative to the adapted state,
  grippers absolute), then the flip mask again and the gripper from pi's angle to ALOHA's
  normalised PUPPET_GRIPPER_JOINT (-0.6213 .. 1.4910 rad); that joint angle becomes our gripper
  column through the embodiment's gripper open/closed positions. Chunk: `joint_position`.
- "aloha_sim" (`pi0_aloha_sim`): the same with use_delta_joint_actions=False.
- "droid" (`pi0_droid`, `pi05_droid`, `pi0_fast_droid`: DroidInputs / DroidOutputs, no delta
  transform): images exterior (the first non-wrist camera), wrist, and a masked black third;
  state = [7 joints, gripper] with DROID's gripper (0 open, 1 closed); actions = the first 8
  dims: 7 joint velocities of DROID's `joint_velocity` action space and the gripper position.
  As DROID's robot does (RobotIKSolver), a velocity in [-1, 1] moves a joint 0.2 rad per
  15 Hz step: the chunk is `joint_delta` rows of 0.2 v at a 1/15 s period, gripper 1 - g.
- "none": no transform (the embodiment's own state vector and action space, absolute); for
  checkpoints trained on data in our layout.

`Observation.state`, when given, is taken as the layout's state before any adaptation (ALOHA's
standard 14-D vector, DROID's 8-D vector).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from vla_ros.core.action_spaces import action_names
from vla_ros.core.embodiment import EmbodimentSpec
from vla_ros.core.types import Observation

DATA_CONFIGS = ("aloha", "aloha_sim", "droid", "none")

# ---- openpi aloha_policy.py constants (ALOHA and Interbotix values it cites) ----------------------
ALOHA_JOINT_FLIP = np.array([1, -1, -1, 1, 1, 1, 1, 1, -1, -1, 1, 1, 1, 1], dtype=np.float64)
ALOHA_GRIPPER_DIMS = (6, 13)
PUPPET_GRIPPER_POSITION_CLOSE_M = 0.01844
PUPPET_GRIPPER_POSITION_OPEN_M = 0.05800
PUPPET_GRIPPER_JOINT_CLOSE_RAD = -0.6213
PUPPET_GRIPPER_JOINT_OPEN_RAD = 1.4910
INTERBOTIX_ARM_LENGTH_M = 0.036
INTERBOTIX_HORN_RADIUS_M = 0.022
PI_GRIPPER_ANGLE_MIN_RAD = 0.5476  # encoder count 2405 with ALOHA's zero at 2048 (of 4096)
PI_GRIPPER_ANGLE_MAX_RAD = 1.6296  # encoder count 3110

# ---- DROID robot (droid RobotIKSolver) --------------------------------------------------------------
DROID_MAX_JOINT_DELTA_RAD = 0.2
DROID_CONTROL_PERIOD_S = 1.0 / 15.0


def make_bool_mask(*dims: int) -> np.ndarray:
    """openpi's make_bool_mask: n > 0 gives n True, n < 0 gives |n| False, in order."""
    out: list[bool] = []
    for d in dims:
        out.extend([d > 0] * abs(d))
    return np.array(out, dtype=bool)


ALOHA_DELTA_MASK = make_bool_mask(6, -1, 6, -1)


def delta_actions(actions: np.ndarray, state: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """openpi DeltaActions: actions[..., :n] -= state[:n] where mask (n = len(mask))."""
    out = np.array(actions, dtype=np.float64, copy=True)
    n = mask.shape[0]
    out[..., :n] -= np.where(mask, np.asarray(state, dtype=np.float64)[..., :n], 0.0)[..., None, :]
    return out


def absolute_actions(actions: np.ndarray, state: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """openpi AbsoluteActions, the inverse of `delta_actions`."""
    out = np.array(actions, dtype=np.float64, copy=True)
    n = mask.shape[0]
    out[..., :n] += np.where(mask, np.asarray(state, dtype=np.float64)[..., :n], 0.0)[..., None, :]
    return out


def _normalize(x, low, high):
    return (x - low) / (high - low)


def _unnormalize(x, low, high):
    return x * (high - low) + low


def interbotix_gripper_linear_m(angle_rad):
    """Finger position of the ViperX gripper for a motor angle (Interbotix's horn/arm linkage):
    r sin(a) + sqrt(L^2 - (r cos(a))^2). Its inverse is openpi's `linear_to_radian`."""
    a = np.asarray(angle_rad, dtype=np.float64)
    r, arm = INTERBOTIX_HORN_RADIUS_M, INTERBOTIX_ARM_LENGTH_M
    return r * np.sin(a) + np.sqrt(arm**2 - (r * np.cos(a)) ** 2)


def gripper_to_angular(value):
    """openpi `_gripper_to_angular`: ALOHA's normalised finger position -> pi's normalised angle."""
    linear = _unnormalize(np.asarray(value, dtype=np.float64), PUPPET_GRIPPER_POSITION_CLOSE_M,
                          PUPPET_GRIPPER_POSITION_OPEN_M)
    r, arm = INTERBOTIX_HORN_RADIUS_M, INTERBOTIX_ARM_LENGTH_M
    angle = np.arcsin(np.clip((r**2 + linear**2 - arm**2) / (2 * r * linear), -1.0, 1.0))
    return _normalize(angle, PI_GRIPPER_ANGLE_MIN_RAD, PI_GRIPPER_ANGLE_MAX_RAD)


def gripper_from_angular(value):
    """openpi `_gripper_from_angular`: pi's gripper action -> ALOHA's normalised gripper joint."""
    return _normalize(np.asarray(value, dtype=np.float64) + PI_GRIPPER_ANGLE_MIN_RAD,
                      PUPPET_GRIPPER_JOINT_CLOSE_RAD, PUPPET_GRIPPER_JOINT_OPEN_RAD)


def gripper_from_angular_inv(value):
    """openpi `_gripper_from_angular_inv` (used on training actions): the inverse of the above."""
    return _unnormalize(np.asarray(value, dtype=np.float64), PUPPET_GRIPPER_JOINT_CLOSE_RAD,
                        PUPPET_GRIPPER_JOINT_OPEN_RAD) - PI_GRIPPER_ANGLE_MIN_RAD


@dataclass(frozen=True)
class ImageSlots:
    """Camera slot per model image (None: a black image the model does not attend to)."""

    slots: tuple[str | None, ...]

    def images(self, observation: Observation) -> list[np.ndarray | None]:
        missing = [s for s in self.slots if s is not None and s not in observation.images]
        if missing:
            raise KeyError(f"observation lacks cameras {missing}; has {sorted(observation.images)}")
        return [None if s is None else observation.images[s] for s in self.slots]


def _gripper_position(observation: Observation, arm) -> float:
    return float(observation.positions_for([arm.qualified(arm.gripper.joint_name)])[0])


@dataclass(frozen=True)
class Pi0Layout:
    """One data config: image slots, model state from an Observation, model actions -> chunk."""

    name: str
    spec: EmbodimentSpec
    cameras: ImageSlots
    action_names: tuple[str, ...]
    action_dim: int  # model output dims the layout reads
    period_s: float

    def state(self, observation: Observation) -> np.ndarray:
        raise NotImplementedError

    def actions(self, actions: np.ndarray, state: np.ndarray) -> np.ndarray:
        """Un-normalised model actions (T, action_dim) + `state(...)` -> chunk values (T, columns)."""
        raise NotImplementedError


@dataclass(frozen=True)
class NoTransform(Pi0Layout):
    """Our own layout: per arm joints then the gripper in [0, 1]; actions absolute."""

    def state(self, observation: Observation) -> np.ndarray:
        if observation.state is not None:
            return np.asarray(observation.state, dtype=np.float64)
        parts: list[np.ndarray] = []
        for arm in self.spec.arms:
            parts.append(observation.positions_for(arm.qualified_joint_names))
            if arm.gripper is not None:
                g = arm.gripper
                x = _gripper_position(observation, arm)
                parts.append(np.array([(x - g.closed_position) / (g.open_position - g.closed_position)]))
        return np.concatenate(parts)

    def actions(self, actions: np.ndarray, state: np.ndarray) -> np.ndarray:
        return np.asarray(actions, dtype=np.float64)


@dataclass(frozen=True)
class AlohaLayout(Pi0Layout):
    adapt_to_pi: bool = True
    delta_joints: bool = True

    def standard_state(self, observation: Observation) -> np.ndarray:
        """ALOHA's 14-D state: per arm 6 joints and the normalised finger position."""
        if observation.state is not None:
            state = np.asarray(observation.state, dtype=np.float64)
            if state.shape != (14,):
                raise ValueError(f"ALOHA layout: Observation.state must have 14 values, got {state.shape}")
            return state
        parts = []
        for arm in self.spec.arms:
            parts.append(observation.positions_for(arm.qualified_joint_names))
            linear = interbotix_gripper_linear_m(_gripper_position(observation, arm))
            parts.append(np.array([_normalize(linear, PUPPET_GRIPPER_POSITION_CLOSE_M, PUPPET_GRIPPER_POSITION_OPEN_M)]))
        return np.concatenate(parts)

    def state(self, observation: Observation) -> np.ndarray:
        state = self.standard_state(observation)
        if self.adapt_to_pi:
            state = ALOHA_JOINT_FLIP * state
            state[list(ALOHA_GRIPPER_DIMS)] = gripper_to_angular(state[list(ALOHA_GRIPPER_DIMS)])
        return state

    def standard_actions(self, actions: np.ndarray, state: np.ndarray) -> np.ndarray:
        """Model actions -> ALOHA's actions (joints rad, grippers as normalised gripper joint)."""
        a = np.asarray(actions, dtype=np.float64)[:, :14]
        if self.delta_joints:
            a = absolute_actions(a, state, ALOHA_DELTA_MASK)
        if self.adapt_to_pi:
            a = ALOHA_JOINT_FLIP * a
            a[:, list(ALOHA_GRIPPER_DIMS)] = gripper_from_angular(a[:, list(ALOHA_GRIPPER_DIMS)])
        return a

    def actions(self, actions: np.ndarray, state: np.ndarray) -> np.ndarray:
        out = self.standard_actions(actions, state)
        for arm, dim in zip(self.spec.arms, ALOHA_GRIPPER_DIMS):
            g = arm.gripper
            angle = _unnormalize(out[:, dim], PUPPET_GRIPPER_JOINT_CLOSE_RAD, PUPPET_GRIPPER_JOINT_OPEN_RAD)
            out[:, dim] = (angle - g.closed_position) / (g.open_position - g.closed_position)
        return out


@dataclass(frozen=True)
class DroidLayout(Pi0Layout):
    def state(self, observation: Observation) -> np.ndarray:
        if observation.state is not None:
            state = np.asarray(observation.state, dtype=np.float64)
            if state.shape != (8,):
                raise ValueError(f"DROID layout: Observation.state must have 8 values, got {state.shape}")
            return state
        arm = self.spec.arms[0]
        g = arm.gripper
        opening = (_gripper_position(observation, arm) - g.closed_position) / (g.open_position - g.closed_position)
        return np.concatenate([observation.positions_for(arm.qualified_joint_names), [1.0 - opening]])

    def actions(self, actions: np.ndarray, state: np.ndarray) -> np.ndarray:
        a = np.asarray(actions, dtype=np.float64)[:, :8]
        out = np.empty_like(a)
        out[:, :7] = np.clip(a[:, :7], -1.0, 1.0) * DROID_MAX_JOINT_DELTA_RAD
        out[:, 7] = np.clip(1.0 - a[:, 7], 0.0, 1.0)
        return out


def _aloha_compatible(spec: EmbodimentSpec) -> None:
    ok = len(spec.arms) == 2 and all(len(a.joint_names) == 6 and a.gripper is not None for a in spec.arms)
    if not ok:
        raise ValueError(f"the ALOHA π0 layout needs two 6-joint arms with grippers (left first); embodiment "
                         f"'{spec.name}' has {[len(a.joint_names) for a in spec.arms]} joints per arm")


def make_layout(name: str, spec: EmbodimentSpec, cameras: Sequence[str] | None = None) -> Pi0Layout:
    """The layout `name` (one of DATA_CONFIGS) for `spec`; `cameras` overrides the image slots."""
    if name not in DATA_CONFIGS:
        raise ValueError(f"unknown π0 data_config '{name}'; valid: {list(DATA_CONFIGS)}")
    slots = [c.slot for c in spec.cameras]
    given = tuple(cameras) if cameras else None
    if name in ("aloha", "aloha_sim"):
        _aloha_compatible(spec)
        if given is None:
            if "cam_high" not in slots:
                raise ValueError(f"the ALOHA π0 layout needs a 'cam_high' camera; '{spec.name}' has {slots}")
            given = tuple(s if s in slots else None for s in ("cam_high", "cam_left_wrist", "cam_right_wrist"))
        return AlohaLayout(name, spec, ImageSlots(given), action_names(spec, "joint_position"), 14,
                           float(spec.policy_period_s), adapt_to_pi=True, delta_joints=(name == "aloha"))
    if name == "droid":
        if len(spec.arms) != 1 or len(spec.arms[0].joint_names) != 7 or spec.arms[0].gripper is None:
            raise ValueError(f"the DROID π0 layout needs one 7-joint arm with a gripper (Franka); embodiment "
                             f"'{spec.name}' has {[len(a.joint_names) for a in spec.arms]} joints per arm")
        if given is None:
            exterior = [s for s in slots if "wrist" not in s]
            if not exterior or "wrist" not in slots:
                raise ValueError(f"the DROID π0 layout needs an exterior and a 'wrist' camera; '{spec.name}' has "
                                 f"{slots} (pass cameras=[exterior, wrist])")
            given = (exterior[0], "wrist")
        if len(given) != 2:
            raise ValueError(f"the DROID π0 layout takes cameras=[exterior, wrist], got {list(given)}")
        return DroidLayout(name, spec, ImageSlots((*given, None)), action_names(spec, "joint_delta"), 8,
                           DROID_CONTROL_PERIOD_S)
    if given is None:
        given = tuple(slots)
    if not given:
        raise ValueError(f"embodiment '{spec.name}' has no cameras; π0 needs at least one image")
    names = action_names(spec, spec.action_space)
    return NoTransform(name, spec, ImageSlots(given), names, len(names), float(spec.policy_period_s))


def data_config_for(asset_id: str, configured: str | None) -> str:
    """The data config of a checkpoint: config.json's `data_config` if set, else from openpi's asset
    id ("trossen" -> aloha, "droid" -> droid, an aloha_sim dataset -> aloha_sim), else "none"."""
    if configured:
        if configured not in DATA_CONFIGS:
            raise ValueError(f"config.json: data_config '{configured}' is not one of {list(DATA_CONFIGS)}")
        return configured
    asset = asset_id.lower()
    if asset.startswith("trossen"):
        return "aloha"
    if "aloha_sim" in asset:
        return "aloha_sim"
    if asset.startswith("droid"):
        return "droid"
    return "none"
