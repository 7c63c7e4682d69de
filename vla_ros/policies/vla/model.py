"""The VLA model: vision encoder -> projector -> language backbone -> action head.

Module names are a contract (doc/INTERFACES.md, "VLA model"): the OpenVLA checkpoint adapter
maps prismatic's keys onto `vision.dino`, `vision.siglip`, `projector.fc1..fc3`, `backbone.*`.

Token layout of the prefix, per sample: [camera 0 patches, camera 1 patches, ..., instruction
tokens (unless the instruction only conditions a FiLM encoder), state token (if state_dim > 0 and
the state is not the flow expert's)]; OpenVLA's layout puts the patches after <s> instead.
Each camera's projected patches get that camera's learned embedding. The prefix is left-padded
so that every sample's last position is a real token (what the autoregressive head reads).

One saved model is one folder: config.json, model.safetensors, tokenizer.json, norm_stats.json.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from vla_ros.core.normalization import FeatureStats, NormStats
from vla_ros.policies.vla.backbone import build_backbone
from vla_ros.policies.vla.config import VLAConfig
from vla_ros.policies.vla.heads import build_head
from vla_ros.policies.vla.heads.common import GOAL_DIM, Prefix
from vla_ros.policies.vla.text import MINILM_DIM, EncodedText, InstructionTokenizer, MiniLMEncoder
from vla_ros.policies.vla.vision import build_vision

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = InstructionTokenizer.FILENAME
NORM_STATS_FILE = "norm_stats.json"
GOAL_HIDDEN = 256
# Pretrained frozen submodules that come from their own package, never from model.safetensors.
_EXTERNAL_PREFIXES = ("instruction_encoder.",)


class MLPProjector(nn.Module):
    """Prismatic's projectors: "gelu-mlp" (fc1, GELU, fc2: vision -> llm -> llm) and OpenVLA's
    "fused-gelu-mlp" (fc1, GELU, fc2, GELU, fc3: vision -> 4 vision -> llm -> llm)."""

    def __init__(self, vision_dim: int, llm_dim: int, layers: int) -> None:
        super().__init__()
        dims = [vision_dim, 4 * vision_dim, llm_dim, llm_dim] if layers == 3 else [vision_dim, llm_dim, llm_dim]
        self.num_layers = len(dims) - 1
        for i in range(self.num_layers):
            setattr(self, f"fc{i + 1}", nn.Linear(dims[i], dims[i + 1]))
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i + 1}")(x)
            if i + 1 < self.num_layers:
                x = self.act(x)
        return x


def identity_norm_stats(config: VLAConfig) -> NormStats:
    """Statistics under which every rule is (numerically) the identity on [-1, 1].

    An untrained model has no dataset; these keep its raw outputs as its actions.
    """

    def stats(dim: int) -> FeatureStats:
        zeros, ones = np.zeros(dim), np.ones(dim)
        return FeatureStats(mean=zeros, std=ones, min=-ones, max=ones, q01=-ones, q99=ones)

    feats = {"action": stats(config.action_dim)}
    if config.state_dim:
        feats["state"] = stats(config.state_dim)
    return NormStats(features=feats, source="identity")


@dataclass(frozen=True)
class VLAInputs:
    """One batch of model inputs (already preprocessed and normalised).

    pixels:      (B, C, 3, S, S) float in [0, 1], cameras in config.camera_slots order.
    input_ids:   (B, L) int64 instruction tokens; text_mask (B, L) bool (L = 0 with "minilm").
    state:       (B, state_dim) normalised, or None when state_dim == 0.
    text_embedding: (B, 384) sentence embeddings of the prompted instructions ("minilm" only).
    """

    pixels: torch.Tensor
    input_ids: torch.Tensor
    text_mask: torch.Tensor
    state: torch.Tensor | None = None
    text_embedding: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.pixels.ndim != 5 or self.pixels.shape[2] != 3:
            raise ValueError(f"VLAInputs.pixels must be (B, cameras, 3, S, S), got {tuple(self.pixels.shape)}")
        b = self.pixels.shape[0]
        if self.input_ids.ndim != 2 or self.input_ids.shape[0] != b or self.text_mask.shape != self.input_ids.shape:
            raise ValueError(f"VLAInputs.input_ids {tuple(self.input_ids.shape)} and text_mask "
                             f"{tuple(self.text_mask.shape)} must both be (B={b}, L)")
        if self.state is not None and (self.state.ndim != 2 or self.state.shape[0] != b):
            raise ValueError(f"VLAInputs.state must be (B={b}, state_dim), got {tuple(self.state.shape)}")
        if self.text_embedding is not None and tuple(self.text_embedding.shape) != (b, MINILM_DIM):
            raise ValueError(f"VLAInputs.text_embedding must be (B={b}, {MINILM_DIM}), "
                             f"got {tuple(self.text_embedding.shape)}")

    @property
    def batch_size(self) -> int:
        return int(self.pixels.shape[0])

    def to(self, device: torch.device | str, dtype: torch.dtype) -> "VLAInputs":
        return VLAInputs(
            pixels=self.pixels.to(device=device, dtype=dtype),
            input_ids=self.input_ids.to(device),
            text_mask=self.text_mask.to(device),
            state=None if self.state is None else self.state.to(device=device, dtype=dtype),
            text_embedding=None if self.text_embedding is None else self.text_embedding.to(device=device, dtype=dtype),
        )


class VLAModel(nn.Module):
    """vision -> projector -> backbone -> head, plus the tokenizer and normalisation stats it was
    trained with (plain attributes, saved beside the weights)."""

    def __init__(self, config: VLAConfig, tokenizer: InstructionTokenizer | None = None,
                 norm_stats: NormStats | None = None) -> None:
        super().__init__()
        self.config = config
        hidden = config.backbone.hidden_size
        self.backbone = build_backbone(config.backbone)
        # FiLM (RT-1) is conditioned on the mean instruction-token embedding, so its width is the backbone's.
        self.vision = build_vision(config.vision, cond_dim=hidden)
        self.projector = MLPProjector(self.vision.out_dim, hidden, config.projector_layers)
        n_cam = len(config.camera_slots)
        self.camera_embed = nn.Parameter(torch.randn(n_cam, hidden) * 0.02) if config.camera_embedding else None
        in_prefix = config.state_dim and config.state_token == "prefix"
        self.state_proj = nn.Linear(config.state_dim, hidden) if in_prefix else None
        if config.text.encoder == "minilm":
            self.instruction_encoder = MiniLMEncoder(max_tokens=config.text.max_tokens)
            self.text_proj = nn.Linear(MINILM_DIM, hidden)
        else:
            self.instruction_encoder = None
            self.text_proj = None
        self.head = build_head(config)
        self.goal_head = None
        self.last_goal_loss: float | None = None
        if config.goal_head:
            width = n_cam * config.vision.conv.num_tokens * hidden
            self.goal_head = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, GOAL_HIDDEN), nn.GELU(),
                                           nn.Linear(GOAL_HIDDEN, GOAL_DIM))
        self.goal_proj = nn.Linear(GOAL_DIM, hidden) if config.goal_token else None
        self.tokenizer = tokenizer if tokenizer is not None else InstructionTokenizer.build(config.text)
        self.tokenizer.check_vocab(config.backbone.vocab_size)
        self.norm_stats = norm_stats if norm_stats is not None else identity_norm_stats(config)
        self._check_norm_stats(self.norm_stats, "norm_stats")

    def _check_norm_stats(self, stats: NormStats, where: str) -> None:
        dims = {"action": self.config.action_dim}
        if self.config.state_dim:
            dims["state"] = self.config.state_dim
        for key, dim in dims.items():
            if key not in stats:
                raise ValueError(f"{where}: no '{key}' statistics; the model needs {sorted(dims)}")
            if stats[key].dim != dim:
                raise ValueError(f"{where}: '{key}' statistics are {stats[key].dim}-D, the model's {key} is {dim}-D")
            rule = self.config.action_norm if key == "action" else self.config.state_norm
            try:
                stats[key].normalize(np.zeros(dim), rule)
            except ValueError as exc:
                raise ValueError(f"{where}: '{key}': {exc}") from None

    # ---- properties ----------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Distinct parameters (tied ones once), including a frozen instruction encoder unless
        trainable_only."""
        seen: set[int] = set()
        total = 0
        for p in self.parameters():
            if id(p) in seen or (trainable_only and not p.requires_grad):
                continue
            seen.add(id(p))
            total += p.numel()
        return total

    # ---- inputs ---------------------------------------------------------------------------------
    def prepare_inputs(
        self,
        images: Sequence[dict[str, np.ndarray]],
        instructions: Sequence[str],
        states: np.ndarray | None = None,
    ) -> VLAInputs:
        """Raw observations -> VLAInputs on the model's device/dtype.

        images: per sample, camera slot -> (H, W, 3) uint8 RGB. states: (B, state_dim) raw
        (un-normalised) values, required iff config.state_dim > 0.
        """
        from vla_ros.policies.preprocess import ImagePreprocessor

        cfg = self.config
        if len(images) != len(instructions):
            raise ValueError(f"prepare_inputs got {len(images)} image sets but {len(instructions)} instructions")
        # The encoders normalise per family themselves (the fused one needs two normalisations).
        pre = ImagePreprocessor(size_px=(cfg.vision.image_size, cfg.vision.image_size), normalization="none")
        # Resizing on the model's device: on a GPU the uint8 frames are uploaded once, before resizing.
        pixels = torch.stack([pre.cameras(cams, cfg.camera_slots, device=self.device) for cams in images])
        text_embedding = None
        if self.instruction_encoder is not None:
            prompts = [cfg.text.prompt.replace("{instruction}", t.strip()) for t in instructions]
            text_embedding = self.instruction_encoder(prompts).cpu()
            # No instruction tokens in the sequence: the sentence embedding is the one text token.
            enc = EncodedText(np.zeros((len(instructions), 0), np.int64), np.zeros((len(instructions), 0), bool))
        else:
            enc = self.tokenizer.encode(list(instructions))
        state = None
        if cfg.state_dim:
            if states is None:
                raise ValueError(f"this model takes a {cfg.state_dim}-D state; prepare_inputs got states=None")
            raw = np.asarray(states, dtype=np.float64).reshape(len(images), -1)
            if raw.shape[1] != cfg.state_dim:
                raise ValueError(f"states have {raw.shape[1]} dims per sample, the model expects {cfg.state_dim}")
            state = torch.from_numpy(self.norm_stats.normalize("state", raw, cfg.state_norm))
        inputs = VLAInputs(pixels, torch.from_numpy(enc.input_ids), torch.from_numpy(enc.attention_mask), state,
                           text_embedding)
        return inputs.to(self.device, self.dtype)

    def normalize_actions(self, actions: np.ndarray) -> torch.Tensor:
        """(B, T, D) raw actions -> normalised float32 tensor on the model's device."""
        arr = self.norm_stats.normalize("action", actions, self.config.action_norm)
        return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)).to(self.device)

    def unnormalize_actions(self, actions: torch.Tensor) -> np.ndarray:
        """(B, T, D) normalised model output -> raw actions (float64 numpy)."""
        arr = actions.detach().float().cpu().numpy().astype(np.float64)
        return self.norm_stats.unnormalize("action", arr, self.config.action_norm)

    # ---- forward --------------------------------------------------------------------------------
    def encode_prefix(self, inputs: VLAInputs) -> Prefix:
        cfg = self.config
        b, n_cam = inputs.pixels.shape[:2]
        if n_cam != len(cfg.camera_slots):
            raise ValueError(f"inputs have {n_cam} cameras, the model was built for {cfg.camera_slots}")
        if (inputs.state is None) != (cfg.state_dim == 0):
            raise ValueError(f"state is {'missing' if inputs.state is None else 'given'} but config.state_dim is "
                             f"{cfg.state_dim}")
        if self.text_proj is not None:
            if inputs.text_embedding is None:
                raise ValueError("this model encodes instructions with MiniLM; VLAInputs.text_embedding is missing "
                                 "(build inputs with prepare_inputs)")
            text_emb = self.text_proj(inputs.text_embedding)[:, None]
            text_mask = torch.ones((b, 1), dtype=torch.bool, device=text_emb.device)
        else:
            text_emb = self.backbone.get_input_embeddings()(inputs.input_ids)
            text_mask = inputs.text_mask
        mask_f = text_mask.to(text_emb.dtype)[..., None]
        text_pooled = (text_emb * mask_f).sum(1) / mask_f.sum(1).clamp(min=1.0)
        image = self._image_tokens(inputs.pixels, text_pooled)
        goal = None if self.goal_head is None else self.goal_head(image.flatten(1))
        if not cfg.action_reads_instruction:
            # The action head's prefix: the scene encoded without the instruction, and no text tokens.
            image = self._image_tokens(inputs.pixels, torch.zeros_like(text_pooled))
        image_mask = torch.ones(image.shape[:2], dtype=torch.bool, device=image.device)
        if not (cfg.instruction_in_sequence and cfg.action_reads_instruction):
            parts, masks = [image], [image_mask]
        elif cfg.image_position == "after_bos":
            # OpenVLA: <s>, the projected patches, then the prompt.
            parts = [text_emb[:, :1], image, text_emb[:, 1:]]
            masks = [text_mask[:, :1], image_mask, text_mask[:, 1:]]
        else:
            parts, masks = [image, text_emb], [image_mask, text_mask]
        if self.state_proj is not None:
            parts.append(self.state_proj(inputs.state)[:, None])
            masks.append(torch.ones((b, 1), dtype=torch.bool, device=image.device))
        if self.goal_proj is not None:
            parts.append(self.goal_proj(goal)[:, None])
            masks.append(torch.ones((b, 1), dtype=torch.bool, device=image.device))
        embeds = torch.cat(parts, dim=1)
        mask = torch.cat(masks, dim=1)
        # Left-pad: a stable sort on the mask moves padding first and keeps real tokens in order.
        order = torch.sort(mask.to(torch.int8), dim=1, stable=True).indices
        mask = torch.gather(mask, 1, order)
        embeds = torch.gather(embeds, 1, order[..., None].expand_as(embeds))
        positions = (mask.long().cumsum(1) - 1).clamp(min=0)
        # At inference the flow head goes where the goal head points (no gradient through it: in
        # training the condition is the demonstration's goal, see compute_loss).
        condition = goal.detach() if cfg.goal_condition else None
        return Prefix(embeds=embeds, mask=mask, positions=positions,
                      bidirectional=cfg.prefix_attention == "bidirectional",
                      suffix_state=inputs.state if cfg.state_token == "suffix" else None, goal=goal,
                      condition=condition)

    def _image_tokens(self, pixels: torch.Tensor, text_pooled: torch.Tensor) -> torch.Tensor:
        """(B, cameras x tokens, H): every camera's projected tokens (with the camera embedding)."""
        b, n_cam = pixels.shape[:2]
        feats = self.vision(pixels.flatten(0, 1), text_pooled.repeat_interleave(n_cam, dim=0))
        tokens = self.projector(feats).unflatten(0, (b, n_cam))  # (B, C, N, H)
        if self.camera_embed is not None:
            tokens = tokens + self.camera_embed.to(tokens.dtype)[None, :, None, :]
        return tokens.flatten(1, 2)

    def compute_loss(self, inputs: VLAInputs, actions: torch.Tensor, generator: torch.Generator | None = None,
                     goals: torch.Tensor | None = None, goal_weight: float = 1.0,
                     goal_noise: torch.Tensor | None = None) -> torch.Tensor:
        """Training loss of the head for normalised target actions (B, T, D); with `goals` (B, 3),
        normalised, NaN rows for samples without one) plus goal_weight x the goal head's mean squared
        error. `last_goal_loss` keeps that error (a float; None without goals).

        With config goal_condition the flow head is conditioned on `goals` plus Gaussian noise of
        standard deviation `goal_noise` ((3,), normalised units; None: no noise) -- teacher forcing;
        samples without a goal (NaN rows, or no `goals`) get the goal head's prediction instead."""
        expected = (inputs.batch_size, self.config.chunk_size, self.config.action_dim)
        if tuple(actions.shape) != expected:
            raise ValueError(f"target actions have shape {tuple(actions.shape)}, expected {expected}")
        prefix = self.encode_prefix(inputs)
        known = None
        if goals is not None:
            if self.goal_head is None:
                raise ValueError("goals given but this model has no goal head (config goal_head is false)")
            if tuple(goals.shape) != (inputs.batch_size, GOAL_DIM):
                raise ValueError(f"goals have shape {tuple(goals.shape)}, expected ({inputs.batch_size}, {GOAL_DIM})")
            known = torch.isfinite(goals).all(dim=1)
            if self.config.goal_condition and bool(known.any()):
                given = goals.to(prefix.condition.dtype)
                if goal_noise is not None:
                    noise = torch.randn(given.shape, device=given.device, generator=generator)
                    given = given + noise * goal_noise.to(device=given.device, dtype=given.dtype)
                prefix = replace(prefix, condition=torch.where(known[:, None], given, prefix.condition))
        loss = self.head.loss(self.backbone, prefix, actions, generator)
        self.last_goal_loss = None
        if known is not None and bool(known.any()):
            pred = prefix.goal.float()
            err = ((pred[known] - goals[known].to(pred.dtype)) ** 2).mean()
            self.last_goal_loss = float(err.detach())
            loss = loss + goal_weight * err
        return loss

    @torch.no_grad()
    def predict_goal(self, inputs: VLAInputs) -> torch.Tensor:
        """(B, 3) the goal head's normalised prediction (models built with goal_head only)."""
        if self.goal_head is None:
            raise ValueError("this model has no goal head (config goal_head is false)")
        return self.encode_prefix(inputs).goal.float()

    @torch.no_grad()
    def predict_actions(self, inputs: VLAInputs, generator: torch.Generator | None = None) -> torch.Tensor:
        """Normalised action chunk (B, T, D), float32."""
        return self.head.sample(self.backbone, self.encode_prefix(inputs), generator).float()

    # ---- save / load ----------------------------------------------------------------------------
    def _saved_state(self) -> dict[str, torch.Tensor]:
        """The state dict as saved: without keys that alias an earlier key's storage (Gemma's tied
        lm_head) and without external pretrained encoders (loaded from their own package)."""
        seen: set[int] = set()
        out = {}
        for key, tensor in self.state_dict().items():
            if key.startswith(_EXTERNAL_PREFIXES):
                continue
            ptr = tensor.data_ptr()
            if ptr not in seen:
                seen.add(ptr)
                out[key] = tensor
        return out

    def save_pretrained(self, folder: str | Path) -> Path:
        """Write config.json, model.safetensors, tokenizer.json and norm_stats.json into `folder`."""
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        (out / CONFIG_FILE).write_text(json.dumps(self.config.to_dict(), indent=2))
        tensors = {k: v.detach().cpu().contiguous() for k, v in self._saved_state().items()}
        save_file(tensors, str(out / WEIGHTS_FILE), metadata={"format": "pt"})
        self.tokenizer.save(out)
        self.norm_stats.to_json(out / NORM_STATS_FILE)
        return out

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: torch.device | str = "cpu",
                        dtype: torch.dtype = torch.float32) -> "VLAModel":
        """Load a folder written by `save_pretrained`; any missing file, unknown/missing key or
        shape mismatch raises with the file and key named."""
        src = Path(folder)
        if not src.is_dir():
            raise FileNotFoundError(f"model folder not found: {src}")
        for name in (CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE, NORM_STATS_FILE):
            if not (src / name).is_file():
                raise FileNotFoundError(f"model folder {src} lacks {name}")
        try:
            raw = json.loads((src / CONFIG_FILE).read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{src / CONFIG_FILE} is not valid JSON: {exc}") from None
        config = VLAConfig.from_dict(raw, where=str(src / CONFIG_FILE))
        tokenizer = InstructionTokenizer.load(src, config.text)
        try:
            stats = NormStats.from_json(src / NORM_STATS_FILE)
        except (ValueError, KeyError) as exc:
            raise ValueError(f"{src / NORM_STATS_FILE}: {exc}") from None
        model = cls(config, tokenizer=tokenizer, norm_stats=None)
        model._check_norm_stats(stats, str(src / NORM_STATS_FILE))
        model.norm_stats = stats
        model._load_weights(src / WEIGHTS_FILE)
        return model.to(device=device, dtype=dtype).eval()

    def _load_weights(self, path: Path) -> None:
        try:
            loaded = load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise ValueError(f"{path} is not a readable safetensors file: {exc}") from None
        expected = self._saved_state()
        unknown = sorted(set(loaded) - set(expected))
        if unknown:
            raise ValueError(f"{path}: unknown key(s) {unknown[:5]}{' ...' if len(unknown) > 5 else ''} "
                             f"not in a {self.config.preset!r} model built from config.json")
        missing = sorted(set(expected) - set(loaded))
        if missing:
            raise ValueError(f"{path}: missing key(s) {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        for key, tensor in loaded.items():
            if tuple(tensor.shape) != tuple(expected[key].shape):
                raise ValueError(f"{path}: key '{key}' has shape {tuple(tensor.shape)}, config.json builds "
                                 f"{tuple(expected[key].shape)}")
        # strict=False only because tied duplicates and external encoders are absent from the file;
        # both key sets were checked above.
        self.load_state_dict(loaded, strict=False)
