"""π0 checkpoints through transformers' native `PI0ForConditionalGeneration`.

A π0 folder holds `config.json` (model_type "pi0") + safetensors weights (transformers'
on-disk π0 names), `tokenizer.json` (PaliGemma / Gemma), and openpi statistics: either
`norm_stats.json` at the top or `assets/<asset_id>/norm_stats.json` (openpi's layout; the
asset id plays the role of OpenVLA's unnorm_key).

Inference follows openpi's π0 pipeline:
- images: resize with padding to the SigLIP size (aspect kept, black bars, PIL bilinear),
  scaled to [-1, 1]; one image per camera slot, in the order given;
- prompt: `<image>` x tokens-per-image per camera, `<bos>`, the instruction (stripped,
  "_" -> " ", newlines -> " ") and "\\n";
- state: normalised (openpi: z-score for π0, quantiles for π0.5 / FAST), zero-padded to
  `max_state_dim`;
- actions: flow matching, `num_inference_steps` Euler steps from t = 1 (noise) to 0, a chunk
  of `chunk_size` x `max_action_dim`, cut to the embodiment's action dims and un-normalised.
Actions are absolute (no delta-to-state conversion): use checkpoints trained that way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from vla_ros.core.action_spaces import SPACES, action_names
from vla_ros.core.embodiment import EmbodimentSpec
from vla_ros.core.normalization import NormStats
from vla_ros.core.types import ActionChunk, Observation
from vla_ros.policies.checkpoints.common import (
    CheckpointError,
    none_if_empty,
    pick_device_dtype,
    read_json,
    shard_map,
)

PI0_NORM_RULES = ("mean_std", "quantile")


def find_norm_stats(folder: Path, asset_id: str | None) -> tuple[Path, str]:
    """The openpi statistics file of the checkpoint and its asset id ("" for a top-level file)."""
    assets = sorted(p.parent.name for p in (folder / "assets").glob("*/norm_stats.json"))
    if asset_id is not None:
        path = folder / "assets" / asset_id / "norm_stats.json"
        if not path.is_file():
            raise KeyError(f"asset '{asset_id}' has no norm_stats.json in {folder / 'assets'}; "
                           f"available assets: {assets}")
        return path, asset_id
    if (folder / "norm_stats.json").is_file():
        return folder / "norm_stats.json", ""
    if len(assets) == 1:
        return folder / "assets" / assets[0] / "norm_stats.json", assets[0]
    if not assets:
        raise CheckpointError(f"{folder} has no norm_stats.json (top level or assets/<asset_id>/norm_stats.json)")
    raise ValueError(f"{folder} holds statistics for {len(assets)} assets; pass unnorm_key, one of {assets}")


def resize_with_pad(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """openpi's resize_with_pad: keep the aspect ratio, bilinear, centre on a black canvas."""
    from PIL import Image

    h, w = image.shape[:2]
    ratio = max(w / width, h / height)
    rh, rw = int(h / ratio), int(w / ratio)
    resized = np.asarray(Image.fromarray(image).resize((rw, rh), Image.Resampling.BILINEAR))
    out = np.zeros((height, width, 3), dtype=np.uint8)
    top, left = max(0, (height - rh) // 2), max(0, (width - rw) // 2)
    out[top:top + rh, left:left + rw] = resized
    return out


class Pi0PromptTokenizer:
    """tokenizer.json (Gemma) -> π0 prefix ids: image placeholders, <bos>, instruction, "\\n"."""

    def __init__(self, folder: Path, image_token_id: int) -> None:
        from tokenizers import Tokenizer

        path = folder / "tokenizer.json"
        if not path.is_file():
            raise CheckpointError(f"checkpoint folder {folder} lacks tokenizer.json")
        self.tokenizer = Tokenizer.from_file(str(path))
        cfg = read_json(folder, "tokenizer_config.json") if (folder / "tokenizer_config.json").is_file() else {}
        bos = cfg.get("bos_token", "<bos>")
        bos = bos["content"] if isinstance(bos, dict) else bos
        bos_id = self.tokenizer.token_to_id(bos)
        if bos_id is None:
            raise CheckpointError(f"tokenizer.json has no BOS token {bos!r}")
        self.bos_id = int(bos_id)
        self.image_token_id = int(image_token_id)

    def prefix_ids(self, instruction: str, num_image_tokens: int) -> list[int]:
        cleaned = instruction.strip().replace("_", " ").replace("\n", " ")
        text = self.tokenizer.encode(cleaned + "\n", add_special_tokens=False).ids
        return [self.image_token_id] * num_image_tokens + [self.bos_id] + text


@dataclass
class Pi0:
    """A loaded π0 checkpoint (model, tokenizer, statistics) with `sample_actions`."""

    folder: Path
    model: Any  # transformers PI0ForConditionalGeneration
    tokenizer: Pi0PromptTokenizer
    stats: NormStats
    asset_id: str
    device: torch.device
    dtype: torch.dtype
    # On CUDA, replay the denoising step as a CUDA graph (vla_ros.policies.checkpoints.cuda_graphs).
    cuda_graphs: bool = True
    _denoiser: Any = field(default=None, init=False, repr=False)

    @property
    def cuda_graphs_in_use(self) -> bool:
        return self._denoiser is not None and self._denoiser.in_use

    @property
    def config(self) -> Any:
        return self.model.config

    @property
    def image_size(self) -> int:
        return int(self.config.vlm_config.vision_config.image_size)

    @property
    def tokens_per_image(self) -> int:
        vc = self.config.vlm_config.vision_config
        return (vc.image_size // vc.patch_size) ** 2

    def inputs(self, images: Sequence[np.ndarray], instruction: str, state_norm: np.ndarray) -> dict[str, torch.Tensor]:
        """Model inputs for one sample: images (uint8 RGB), instruction, normalised state."""
        if not images:
            raise ValueError("π0 needs at least one camera image")
        px = []
        for img in images:
            arr = np.asarray(img)
            if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
                raise ValueError(f"images must be (H, W, 3) uint8 RGB, got {arr.shape} {arr.dtype}")
            sq = resize_with_pad(arr, self.image_size, self.image_size)
            px.append(torch.from_numpy(sq).permute(2, 0, 1).float() / 255.0 * 2.0 - 1.0)
        ids = self.tokenizer.prefix_ids(instruction, self.tokens_per_image * len(images))
        max_state = int(self.config.max_state_dim)
        if state_norm.shape[-1] > max_state:
            raise ValueError(f"state has {state_norm.shape[-1]} dims, the checkpoint takes at most {max_state}")
        state = np.zeros(max_state)
        state[:state_norm.shape[-1]] = state_norm
        input_ids = torch.tensor([ids], dtype=torch.long, device=self.device)
        return {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "pixel_values": torch.stack(px)[None].to(self.device, self.dtype),
            "pixel_attention_mask": torch.ones(1, len(images), dtype=torch.bool, device=self.device),
            "state": torch.tensor(state[None], dtype=self.dtype, device=self.device),
        }

    def sample_actions(self, images: Sequence[np.ndarray], instruction: str, state: np.ndarray, action_dim: int,
                       rule: str = "mean_std", noise: torch.Tensor | None = None,
                       num_steps: int | None = None) -> np.ndarray:
        """Raw state -> un-normalised actions (chunk_size, action_dim) float64."""
        if rule not in PI0_NORM_RULES:
            raise ValueError(f"unknown π0 normalisation rule '{rule}'; valid: {PI0_NORM_RULES}")
        max_action = int(self.config.max_action_dim)
        if not 0 < action_dim <= max_action:
            raise ValueError(f"action_dim must be in 1..{max_action}, got {action_dim}")
        state = np.asarray(state, dtype=np.float64).reshape(-1)
        state_stats = self.stats["state"]
        if state_stats.dim < state.shape[0]:
            raise ValueError(f"state has {state.shape[0]} dims but the statistics ({self.asset_id or 'norm_stats.json'})"
                             f" cover {state_stats.dim}")
        action_stats = self.stats["action"]
        if action_stats.dim < action_dim:
            raise ValueError(f"{action_dim} action dims requested but the statistics cover {action_stats.dim}")
        state_norm = state_stats.first(state.shape[0]).normalize(state, rule)
        inputs = self.inputs(images, instruction, state_norm)
        if noise is not None:
            expected = (1, int(self.config.chunk_size), max_action)
            if tuple(noise.shape) != expected:
                raise ValueError(f"noise must have shape {expected}, got {tuple(noise.shape)}")
            noise = noise.to(self.device, self.dtype)
        with torch.no_grad():
            if self.cuda_graphs and self.device.type == "cuda":
                if self._denoiser is None:
                    from vla_ros.policies.checkpoints.cuda_graphs import GraphedDenoiser

                    self._denoiser = GraphedDenoiser(self.model)
                if noise is None:
                    shape = (1, int(self.config.chunk_size), int(self.config.max_action_dim))
                    noise = torch.randn(shape, device=self.device, dtype=self.dtype)
                out = self._denoiser.sample(inputs, noise, num_steps)
            else:
                out = self.model.sample_actions(noise=noise, num_steps=num_steps, **inputs)
        actions = out[0, :, :action_dim].float().cpu().numpy().astype(np.float64)
        return action_stats.first(action_dim).unnormalize(actions, rule)


def load_pi0(checkpoint: str | Path, unnorm_key: str | None = None, device: str | torch.device | None = None,
             dtype: torch.dtype | str | None = None, cuda_graphs: bool = True) -> Pi0:
    """Load a π0 folder offline; errors name the file and key at fault. `unnorm_key` = asset id.
    cuda_graphs: on CUDA, replay the denoising step as a CUDA graph (see cuda_graphs)."""
    from transformers import PI0ForConditionalGeneration

    folder = Path(checkpoint)
    if not folder.is_dir():
        raise CheckpointError(f"π0 checkpoint folder not found: {folder}")
    config = read_json(folder, "config.json")
    if config.get("model_type") != "pi0":
        raise CheckpointError(f"config.json: model_type is {config.get('model_type')!r}, expected 'pi0'")
    shards = shard_map(folder)
    stats_path, asset_id = find_norm_stats(folder, unnorm_key)
    stats = NormStats.from_openpi(stats_path)
    for key in ("state", "action"):
        if key not in stats:
            raise CheckpointError(f"{stats_path} lacks the '{'actions' if key == 'action' else key}' statistics")
    dev, dt = pick_device_dtype(device, dtype)
    from safetensors import SafetensorError

    try:
        model, info = PI0ForConditionalGeneration.from_pretrained(
            str(folder), dtype=dt, output_loading_info=True, ignore_mismatched_sizes=True, local_files_only=True)
    except SafetensorError as exc:  # shard_map read the headers; this is damage further in
        raise CheckpointError(f"{folder}: a safetensors file is corrupt ({exc})") from None
    except (OSError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{folder}: transformers could not build π0 from config.json: {exc}") from exc
    # from_pretrained initialises missing tensors randomly and skips mismatched ones; refuse both.
    where = _key_files(shards)
    if info["mismatched_keys"]:
        key, got, expected = sorted(info["mismatched_keys"])[0]
        raise CheckpointError(f"{where(key)}: tensor for '{key}' has shape {tuple(got)}, expected {tuple(expected)}")
    if info["unexpected_keys"]:
        key = sorted(info["unexpected_keys"])[0]
        raise CheckpointError(f"{where(key)}: unknown tensor key '{key}' for this π0 architecture")
    if info["missing_keys"]:
        key = sorted(info["missing_keys"])[0]
        raise CheckpointError(f"checkpoint lacks the tensor for '{key}' ({len(info['missing_keys'])} missing)")
    model.to(dev).eval()
    tokenizer = Pi0PromptTokenizer(folder, model.config.vlm_config.image_token_id)
    return Pi0(folder, model, tokenizer, stats, asset_id, dev, dt, cuda_graphs=bool(cuda_graphs))


def _key_files(shards: dict[str, list[str]]):
    """model key -> the shard that holds it. transformers renames π0 keys on load
    (`paligemma_with_expert.*` -> `model.vlm`/`model.dit`, ...), so match on the key's tail."""
    owners = {key: f for f, keys in shards.items() for key in keys}

    def where(model_key: str) -> str:
        if model_key in owners:
            return owners[model_key]
        parts = model_key.split(".")

        def common_tail(key: str) -> int:
            other = key.split(".")
            n = 0
            while n < min(len(parts), len(other)) and parts[-1 - n] == other[-1 - n]:
                n += 1
            return n

        scores = {k: common_tail(k) for k in owners}
        best = max(scores.values(), default=0)
        keys = sorted(k for k, s in scores.items() if s == best) if best >= 2 else []
        files = sorted({owners[k] for k in keys})
        place = " or ".join(files) if files else ", ".join(sorted(shards))
        return f"{place} ('{keys[0]}' on disk)" if len(keys) == 1 else place
    return where


def _state_vector(observation: Observation, embodiment: EmbodimentSpec) -> np.ndarray:
    """Observation.state if given, else per arm: joints, then the gripper normalised to [0, 1]."""
    if observation.state is not None:
        return np.asarray(observation.state, dtype=np.float64)
    parts: list[np.ndarray] = []
    for arm in embodiment.arms:
        parts.append(observation.positions_for(arm.qualified_joint_names))
        if arm.gripper is not None:
            x = observation.positions_for([arm.qualified(arm.gripper.joint_name)])
            g = arm.gripper
            parts.append((x - g.closed_position) / (g.open_position - g.closed_position))
    return np.concatenate(parts)


class Pi0Policy:
    """π0 as a Policy: camera images + state + instruction -> a `chunk_size`-row action chunk.

    Columns are the names of the embodiment's `action_space` (vla_ros.core.action_spaces), the
    layout the checkpoint must have been trained on; the model's 32-D output is cut to that many dims.
    """

    needs_privileged = False

    def __init__(self, pi0: Pi0, embodiment: EmbodimentSpec, cameras: Sequence[str] | None = None,
                 rule: str = "mean_std", seed: int | None = None) -> None:
        if embodiment.action_space not in SPACES:
            raise ValueError(f"π0 policy supports action spaces {list(SPACES)}, embodiment "
                             f"'{embodiment.name}' uses '{embodiment.action_space}'")
        if rule not in PI0_NORM_RULES:
            raise ValueError(f"unknown π0 normalisation rule '{rule}'; valid: {PI0_NORM_RULES}")
        self.pi0 = pi0
        self.embodiment = embodiment
        self.action_names = action_names(embodiment, embodiment.action_space)
        if len(self.action_names) > int(pi0.config.max_action_dim):
            raise ValueError(f"embodiment '{embodiment.name}' has {len(self.action_names)} action dims; "
                             f"the checkpoint outputs {pi0.config.max_action_dim}")
        if pi0.stats["action"].dim < len(self.action_names):
            raise ValueError(f"statistics cover {pi0.stats['action'].dim} action dims, "
                             f"'{embodiment.name}' needs {len(self.action_names)}")
        slots = [c.slot for c in embodiment.cameras]
        self.cameras = tuple(cameras) if cameras is not None else tuple(slots)
        if not self.cameras:
            raise ValueError(f"embodiment '{embodiment.name}' has no cameras; π0 needs at least one image")
        self.rule = rule
        self.period_s = float(embodiment.policy_period_s)
        self._generator = torch.Generator(device=pi0.device)
        self._seed = seed
        self.reset()

    def reset(self) -> None:
        """Restart the noise sequence (reproducible when a seed was given)."""
        if self._seed is not None:
            self._generator.manual_seed(self._seed)
        else:
            self._generator.seed()

    def infer(self, observation: Observation) -> ActionChunk:
        missing = [c for c in self.cameras if c not in observation.images]
        if missing:
            raise KeyError(f"observation lacks cameras {missing}; has {sorted(observation.images)}")
        cfg = self.pi0.config
        noise = torch.randn((1, int(cfg.chunk_size), int(cfg.max_action_dim)), generator=self._generator,
                            device=self.pi0.device)
        actions = self.pi0.sample_actions([observation.images[c] for c in self.cameras], observation.instruction,
                                          _state_vector(observation, self.embodiment), len(self.action_names),
                                          rule=self.rule, noise=noise)
        return ActionChunk(self.action_names, actions, self.period_s, observation.stamp_s)


def make_pi0_policy(embodiment: EmbodimentSpec, checkpoint: str | Path, unnorm_key: str | None = None,
                    cameras: Sequence[str] | None = None, norm_rule: str = "mean_std", seed: int | None = None,
                    device: str | None = None, dtype: str | None = None, cuda_graphs: bool = True) -> Pi0Policy:
    """Registry factory: `policy:=pi0 checkpoint:=PATH [unnorm_key:=ASSET_ID]`.

    norm_rule: "mean_std" (openpi's π0) or "quantile" (π0.5 / π0-FAST checkpoints). "" = unset.
    cuda_graphs: on CUDA, the denoising step as a CUDA graph (false: transformers' eager loop).
    """
    pi0 = load_pi0(checkpoint, none_if_empty(unnorm_key), device=none_if_empty(device), dtype=none_if_empty(dtype),
                   cuda_graphs=cuda_graphs)
    return Pi0Policy(pi0, embodiment, cameras or None, rule=norm_rule, seed=seed)
