"""`VLAPolicy`: the VLA model behind the Policy protocol, registered as "vla".

Observation (camera images by slot, joint positions, instruction) -> preprocess -> model ->
un-normalise -> ActionChunk named in the embodiment's action space, period = the embodiment's
policy period, stamp = the observation's stamp.

State convention (when the model takes a state): per arm, in config order, the arm's joint
positions (rad) then its gripper normalised to [0, 1] (GripperSpec.from_joint) — the layout of
the joint_position action space, so ALOHA's state is the usual 14-D vector. `Observation.state`
of that length, when given, is used as is.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vla_ros.core.action_spaces import action_names
from vla_ros.core.embodiment import EmbodimentSpec, load_embodiment
from vla_ros.core.types import ActionChunk, Observation
from vla_ros.policies.vla.model import VLAModel
from vla_ros.policies.vla.presets import make_config

log = logging.getLogger(__name__)

#: What `vla-ros train` writes beside the model: its action space and names among other things.
TRAINING_FILE = "training.json"


def state_names(spec: EmbodimentSpec) -> tuple[str, ...]:
    """Names of the state vector's entries: qualified arm joints, then the arm's gripper joint."""
    names: list[str] = []
    for arm in spec.arms:
        names.extend(arm.qualified_joint_names)
        if arm.gripper is not None:
            names.append(arm.qualified(arm.gripper.joint_name))
    return tuple(names)


def observation_state(spec: EmbodimentSpec, observation: Observation) -> np.ndarray:
    """The state vector (see module doc) from an observation's joint positions."""
    expected = len(state_names(spec))
    if observation.state is not None:
        if observation.state.shape != (expected,):
            raise ValueError(f"Observation.state has shape {observation.state.shape}; embodiment "
                             f"'{spec.name}' uses a {expected}-D state {state_names(spec)}")
        return np.asarray(observation.state, dtype=np.float64)
    parts: list[np.ndarray] = []
    for arm in spec.arms:
        parts.append(observation.positions_for(arm.qualified_joint_names))
        if arm.gripper is not None:
            x = observation.positions_for((arm.qualified(arm.gripper.joint_name),))
            parts.append(np.atleast_1d(arm.gripper.from_joint(x)))
    return np.concatenate(parts)


def select_device(device: str | torch.device | None) -> tuple[torch.device, torch.dtype]:
    """None: CUDA with bf16 when available, else CPU float32. An explicit device gets bf16 on
    CUDA and float32 elsewhere."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device '{device}' requested but CUDA is not available")
    return dev, (torch.bfloat16 if dev.type == "cuda" else torch.float32)


class VLAPolicy:
    """A VLAModel as a Policy. Stateless between calls except for the sampling generator, which
    `reset()` re-seeds so that an episode's noise sequence is reproducible."""

    needs_privileged = False

    def __init__(self, model: VLAModel, embodiment: EmbodimentSpec, seed: int = 0, warmup: bool = True,
                 action_space: str | None = None, clip_actions: bool = True, execute_steps: int | None = None) -> None:
        cfg = model.config
        if execute_steps is not None and not 1 <= int(execute_steps) <= cfg.chunk_size:
            raise ValueError(f"execute_steps must be in [1, chunk_size {cfg.chunk_size}], got {execute_steps}")
        # Rows of each predicted chunk that are sent (None: all): fewer rows, a sooner replan.
        self.execute_steps = None if execute_steps is None else int(execute_steps)
        self.spec = embodiment
        self.model = model.eval()
        # Bounds and quantile normalisations map the training data's [q01, q99] (or [min, max]) to [-1, 1]: a sample
        # outside it asks for what no demonstration did (flow / diffusion samples spread past the data,
        # e.g. a grasp 1-4 cm under the lowest one, below the table). Clipped there, and counted.
        self.clip_actions = bool(clip_actions) and cfg.action_norm in ("bounds_q99", "bounds", "quantile")
        self.clipped_values = 0
        # The chunk's column names say its space; the controller takes any space of the embodiment.
        self.action_space = action_space or embodiment.action_space
        self.action_names = action_names(embodiment, self.action_space)
        self.period_s = float(embodiment.policy_period_s)
        if cfg.action_dim != len(self.action_names):
            raise ValueError(f"the model predicts {cfg.action_dim}-D actions but embodiment '{embodiment.name}' "
                             f"({self.action_space}) has {len(self.action_names)}: {self.action_names}")
        slots = {c.slot for c in embodiment.cameras}
        missing = [s for s in cfg.camera_slots if s not in slots]
        if missing:
            raise ValueError(f"the model needs camera slots {missing} that embodiment '{embodiment.name}' lacks; "
                             f"it has {sorted(slots)}")
        n_state = len(state_names(embodiment))
        if cfg.state_dim not in (0, n_state):
            raise ValueError(f"the model takes a {cfg.state_dim}-D state but embodiment '{embodiment.name}' "
                             f"provides {n_state}: {state_names(embodiment)}")
        self._seed = int(seed)
        self._generator = torch.Generator(device=model.device)
        self.reset()
        if warmup:
            self._warmup()

    def reset(self) -> None:
        self._generator.manual_seed(self._seed)

    def _warmup(self) -> None:
        # The first call pays for lazy initialisation (kernels, allocator); do it before real traffic.
        images = {c.slot: np.zeros((c.height, c.width, 3), dtype=np.uint8) for c in self.spec.cameras}
        names = state_names(self.spec)
        obs = Observation(stamp_s=0.0, images=images, joint_names=names, joint_positions=np.zeros(len(names)),
                          instruction="warm up")
        self.infer(obs)
        self.reset()

    @torch.inference_mode()
    def infer(self, observation: Observation) -> ActionChunk:
        cfg = self.model.config
        state = observation_state(self.spec, observation)[None] if cfg.state_dim else None
        inputs = self.model.prepare_inputs([dict(observation.images)], [observation.instruction], state)
        normalised = self.model.predict_actions(inputs, generator=self._generator)
        if self.clip_actions:
            mask = torch.as_tensor(np.array(self.model.norm_stats["action"].mask, dtype=bool),
                                   device=normalised.device)  # unnormalised columns pass as they are
            outside = (normalised.abs() > 1.0) & mask
            self.clipped_values += int(outside.sum())
            normalised = torch.where(mask, normalised.clamp(-1.0, 1.0), normalised)
        values = self.model.unnormalize_actions(normalised)[0][:self.execute_steps]
        if not np.all(np.isfinite(values)):
            raise FloatingPointError(f"the VLA model produced non-finite actions for '{observation.instruction}'")
        return ActionChunk(names=self.action_names, values=values, period_s=self.period_s,
                           stamp_s=observation.stamp_s)


def make_vla_policy(
    embodiment: EmbodimentSpec | str,
    checkpoint: str | Path | None = None,
    preset: str = "default",
    device: str | torch.device | None = None,
    seed: int = 0,
    warmup: bool = True,
    clip_actions: bool = True,
    execute_steps: int | None = None,
    **overrides: Any,
) -> VLAPolicy:
    """Build the "vla" policy.

    checkpoint: a folder written by VLAModel.save_pretrained; None builds an untrained model from
                `preset` sized to the embodiment (its action space, camera slots and state).
    clip_actions: clip the model's normalised output to [-1, 1], the training data's action range
                (bounds and quantile normalisations); False passes samples through as they come.
    execute_steps: send only the first N rows of each predicted chunk (default: all of them). The
                policy node infers again when `lookahead_steps` rows are left, so a chunk of 10 cut
                to 5 replans every 3 rows instead of every 8: more closed-loop correction.
    overrides:  VLAConfig fields for the preset (e.g. head={"kind": "diffusion"}); not allowed
                with a checkpoint, whose config.json is authoritative.
    """
    spec = load_embodiment(embodiment) if isinstance(embodiment, str) else embodiment
    # ROS string parameters cannot be None; an empty string means "not set".
    checkpoint = checkpoint or None
    dev, dtype = select_device(device or None)
    if checkpoint is not None:
        if overrides:
            raise ValueError(f"config overrides {sorted(overrides)} cannot be combined with a checkpoint "
                             f"({checkpoint}); its config.json defines the model")
        model = VLAModel.from_pretrained(checkpoint, device=dev, dtype=dtype)
        action_space = trained_action_space(checkpoint, spec)
    else:
        action_space = None
        base = make_config(preset)
        sized: dict[str, Any] = {
            "action_dim": len(action_names(spec, spec.action_space)),
            "camera_slots": tuple(c.slot for c in spec.cameras),
            "state_dim": len(state_names(spec)) if base.state_dim else 0,
        }
        sized.update(overrides)
        # Seeded initialisation without disturbing the caller's global RNG state.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = VLAModel(make_config(preset, **sized)).to(device=dev, dtype=dtype)
        log.info("built an untrained '%s' VLA (%d parameters) for '%s' on %s", preset, model.num_parameters(),
                 spec.name, dev)
    return VLAPolicy(model, spec, seed=seed, warmup=warmup, action_space=action_space, clip_actions=clip_actions,
                     execute_steps=execute_steps)


def trained_action_space(checkpoint: str | Path, spec: EmbodimentSpec) -> str | None:
    """The action space a `vla-ros train` checkpoint predicts (its training.json), None when the
    folder does not say (a checkpoint saved otherwise: the embodiment's space) or it trained on a
    dataset's raw vectors. Names that differ from the embodiment's in that space are an error: the
    chunks would be read as something else."""
    path = Path(checkpoint) / TRAINING_FILE
    if not path.is_file():
        return None
    import json

    from vla_ros.core.action_spaces import SPACES

    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: unreadable ({err})") from err
    space = meta.get("action_space") if isinstance(meta, dict) else None
    if space not in SPACES:
        return None
    names = list(action_names(spec, space))
    if meta.get("action_names") is not None and list(meta["action_names"]) != names:
        raise ValueError(f"{path}: the checkpoint predicts {meta['action_names']} ({space}) but embodiment "
                         f"'{spec.name}' names that space {names}; load it with the embodiment it was trained for")
    if space != spec.action_space:
        log.info("checkpoint %s predicts %s chunks (embodiment '%s' defaults to %s)", checkpoint, space, spec.name,
                 spec.action_space)
    return space
