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
  of `chunk_size` x `max_action_dim`, cut to the layout's action dims and un-normalised.

`Pi0Policy` wraps this in the input/output transforms of the checkpoint's openpi data config
(`pi0_transforms`: "aloha" -- adapt_to_pi joint flips and gripper angular/linear conversion,
delta joint actions --, "aloha_sim", "droid", or "none" for absolute actions in our own layout),
chosen by the `data_config` policy argument, else config.json's `data_config`, else the openpi
asset id of the statistics ("trossen" -> aloha, "droid" -> droid).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from vla_ros.core.action_spaces import SPACES
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
from vla_ros.policies.checkpoints.pi0_transforms import DATA_CONFIGS, Pi0Layout, data_config_for, make_layout

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
    # config.json's `data_config` (the openpi transforms the checkpoint needs), if it names one.
    configured_data_config: str | None = None
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

    @property
    def data_config(self) -> str:
        """The openpi data config this checkpoint was trained with (see pi0_transforms)."""
        return data_config_for(self.asset_id, self.configured_data_config)

    def inputs(self, images: Sequence[np.ndarray | None], instruction: str,
               state_norm: np.ndarray) -> dict[str, torch.Tensor]:
        """Model inputs for one sample: images (uint8 RGB; None = a masked image slot, black and
        not attended to, as openpi's image_mask False), instruction, normalised state."""
        present = [img for img in images if img is not None]
        if not present:
            raise ValueError("π0 needs at least one camera image")
        px = []
        for img in images:
            if img is None:
                px.append(-torch.ones(3, self.image_size, self.image_size))  # black in [-1, 1]
                continue
            arr = np.asarray(img)
            if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
                raise ValueError(f"images must be (H, W, 3) uint8 RGB, got {arr.shape} {arr.dtype}")
            sq = resize_with_pad(arr, self.image_size, self.image_size)
            px.append(torch.from_numpy(sq).permute(2, 0, 1).float() / 255.0 * 2.0 - 1.0)
        # transformers' π0 puts image tokens only for the attended slots (pixel_attention_mask).
        ids = self.tokenizer.prefix_ids(instruction, self.tokens_per_image * len(present))
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
            "pixel_attention_mask": torch.tensor([[img is not None for img in images]], dtype=torch.bool,
                                                 device=self.device),
            "state": torch.tensor(state[None], dtype=self.dtype, device=self.device),
        }

    def sample_actions(self, images: Sequence[np.ndarray | None], instruction: str, state: np.ndarray, action_dim: int,
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
    configured = config.get("data_config")
    if configured is not None and configured not in DATA_CONFIGS:
        raise CheckpointError(f"config.json: data_config {configured!r} is not one of {list(DATA_CONFIGS)}")
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
    return Pi0(folder, model, tokenizer, stats, asset_id, dev, dt, cuda_graphs=bool(cuda_graphs),
               configured_data_config=configured)


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


class Pi0Policy:
    """π0 as a Policy: camera images + state + instruction -> a `chunk_size`-row action chunk,
    through the input/output transforms of the checkpoint's openpi data config (`pi0_transforms`).

    The chunk's columns are the layout's: ALOHA `joint_position`, DROID `joint_delta` at 15 Hz,
    "none" the embodiment's `action_space` (absolute, in the layout the checkpoint was trained on).
    """

    needs_privileged = False

    def __init__(self, pi0: Pi0, embodiment: EmbodimentSpec, cameras: Sequence[str] | None = None,
                 rule: str = "mean_std", seed: int | None = None, data_config: str | None = None) -> None:
        if rule not in PI0_NORM_RULES:
            raise ValueError(f"unknown π0 normalisation rule '{rule}'; valid: {PI0_NORM_RULES}")
        self.data_config = data_config or pi0.data_config
        if self.data_config == "none" and embodiment.action_space not in SPACES:
            raise ValueError(f"π0 policy supports action spaces {list(SPACES)}, embodiment "
                             f"'{embodiment.name}' uses '{embodiment.action_space}'")
        self.layout: Pi0Layout = make_layout(self.data_config, embodiment, cameras or None)
        self.pi0 = pi0
        self.embodiment = embodiment
        self.action_names = self.layout.action_names
        dims = self.layout.action_dim
        if dims > int(pi0.config.max_action_dim):
            raise ValueError(f"the '{self.data_config}' layout of '{embodiment.name}' reads {dims} action dims; "
                             f"the checkpoint outputs {pi0.config.max_action_dim}")
        if pi0.stats["action"].dim < dims:
            raise ValueError(f"statistics cover {pi0.stats['action'].dim} action dims, the '{self.data_config}' "
                             f"layout of '{embodiment.name}' needs {dims}")
        self.cameras = tuple(s for s in self.layout.cameras.slots if s is not None)
        self.rule = rule
        self.period_s = float(self.layout.period_s)
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
        images = self.layout.cameras.images(observation)
        cfg = self.pi0.config
        noise = torch.randn((1, int(cfg.chunk_size), int(cfg.max_action_dim)), generator=self._generator,
                            device=self.pi0.device)
        state = self.layout.state(observation)
        actions = self.pi0.sample_actions(images, observation.instruction, state, self.layout.action_dim,
                                          rule=self.rule, noise=noise)
        return ActionChunk(self.action_names, self.layout.actions(actions, state), self.period_s, observation.stamp_s)


def make_pi0_policy(embodiment: EmbodimentSpec, checkpoint: str | Path, unnorm_key: str | None = None,
                    cameras: Sequence[str] | None = None, norm_rule: str = "mean_std", seed: int | None = None,
                    device: str | None = None, dtype: str | None = None, cuda_graphs: bool = True,
                    data_config: str | None = None) -> Pi0Policy:
    """Registry factory: `policy:=pi0 checkpoint:=PATH [unnorm_key:=ASSET_ID]`.

    norm_rule: "mean_std" (openpi's π0) or "quantile" (π0.5 / π0-FAST checkpoints). "" = unset.
    cuda_graphs: on CUDA, the denoising step as a CUDA graph (false: transformers' eager loop).
    data_config: openpi transforms "aloha", "aloha_sim", "droid" or "none"; unset: from the checkpoint.
    """
    pi0 = load_pi0(checkpoint, none_if_empty(unnorm_key), device=none_if_empty(device), dtype=none_if_empty(dtype),
                   cuda_graphs=cuda_graphs)
    return Pi0Policy(pi0, embodiment, cameras or None, rule=norm_rule, seed=seed,
                     data_config=none_if_empty(data_config))
