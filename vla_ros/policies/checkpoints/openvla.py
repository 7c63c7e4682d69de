"""OpenVLA checkpoints (the Hugging Face layout of `openvla/openvla-7b`) without OpenVLA's code.

OpenVLA's remote code needs timm and transformers 4.40; this loader rebuilds the same network
from transformers classes and maps the released tensors onto it:

    vision.dino      Dinov2WithRegistersModel  <- vision_backbone.featurizer.*        (timm names)
    vision.siglip    SiglipVisionModel         <- vision_backbone.fused_featurizer.*  (timm names)
    projector.fc1/2/3                          <- projector.fc1/2/3
    backbone         LlamaForCausalLM          <- language_model.*
    head             DiscreteActionHead (no weights: OpenVLA's 256-bin action tokenizer)

timm -> transformers: the fused `attn.qkv` splits into q/k/v projections (rows q, k, v); the
LayerScale vector (`ls1.scale_factor`, timm's `gamma`) becomes `layer_scale1.lambda1`; DINOv2's
`pos_embed` has no class-token row in timm (`no_embed_class`) so a zero row is prepended; the
SigLIP attention-pool `q` and `kv` weights stack into the MultiheadAttention `in_proj`.
Both ViTs feed the projector with the patch tokens of their second-to-last block, unnormed
(timm `get_intermediate_layers(n={depth - 2})`), DINOv2 first, concatenated on features.

Inference follows OpenVLA's `predict_action`: prompt
"In: What action should the robot take to {instruction}?\\nOut:" (instruction lower-cased, as
in training), <s> first, token 29871 ("▁") appended when the prompt does not end with it, the
projected patches inserted right after <s>, greedy decoding of `action_dim` tokens over the
whole vocabulary, ActionTokenizer.decode, then un-normalisation with the chosen dataset's q01 /
q99 where its mask is true.

Statistics: OpenVLA's loaders (`openvla_utils.get_vla`, `deploy.py`) replace config.json's
`norm_stats` with the folder's `dataset_statistics.json` when there is one -- that is where
`finetune.py` writes the fine-tuning dataset's statistics, while config.json keeps the base
mixture's. Here a key in `dataset_statistics.json` wins over the same key in config.json (so every
key OpenVLA resolves gives its statistics), config.json's other keys stay available, and with no
`unnorm_key` the one dataset of `dataset_statistics.json` is used, as OpenVLA would.
`OpenVLA.stats_sources` says which file each key came from.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import (
    Dinov2WithRegistersConfig,
    Dinov2WithRegistersModel,
    LlamaConfig,
    LlamaForCausalLM,
    SiglipVisionConfig,
    SiglipVisionModel,
)

from vla_ros.core.action_spaces import action_names
from vla_ros.core.embodiment import EmbodimentSpec
from vla_ros.core.normalization import NormStats
from vla_ros.core.types import ActionChunk, Observation
from vla_ros.policies.checkpoints.common import (
    CheckpointError,
    TensorFolder,
    load_safetensors_folder,
    none_if_empty,
    pick_device_dtype,
    read_json,
    require_field,
)
from vla_ros.policies.vla.action_tokenizer import ActionTokenizer

log = logging.getLogger(__name__)

STATS_FILE = "dataset_statistics.json"
PROMPT_TEMPLATE = "In: What action should the robot take to {instruction}?\nOut:"
SPACE_TOKEN_ID = 29871  # "▁" in Llama-2; OpenVLA appends it after "Out:" as in training

# Attention heads are not stored in the files; they follow from the timm architecture id.
TIMM_DINO = {"vit_large_patch14_reg4_dinov2.lvd142m": 16}
TIMM_SIGLIP = {"vit_so400m_patch14_siglip_224": 16, "vit_so400m_patch14_siglip_384": 16}
# timm's act_layer override (OpenVLA `timm_override_act_layers`) -> transformers activation.
# None keeps timm's default nn.GELU, the exact erf GELU (not SigLIP's usual tanh approximation).
TIMM_ACT = {None: "gelu", "gelu": "gelu", "quick_gelu": "quick_gelu", "gelu_tanh": "gelu_pytorch_tanh"}
TIMM_LAYER_NORM_EPS = 1e-6

DINO = "vision_backbone.featurizer."
SIGLIP = "vision_backbone.fused_featurizer."
LLM = "language_model."


# ---- architecture --------------------------------------------------------------------------------

@dataclass(frozen=True)
class ViTDims:
    dim: int
    depth: int
    heads: int
    mlp: int
    patch: int
    image_size: int
    registers: int  # DINOv2 register tokens; 0 for SigLIP
    hidden_act: str

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch) ** 2


@dataclass(frozen=True)
class OpenVLAArch:
    """Everything needed to build the network, from config.json and the tensor shapes."""

    dino: ViTDims
    siglip: ViTDims
    llm: LlamaConfig
    layer_scale_suffix: str  # "scale_factor" (released HF checkpoints) or "gamma" (timm)

    @property
    def vision_dim(self) -> int:
        return self.dino.dim + self.siglip.dim

    def expected_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every tensor key of the checkpoint and its shape."""
        s: dict[str, tuple[int, ...]] = {}
        d, g = self.dino, self.siglip
        s[DINO + "cls_token"] = (1, 1, d.dim)
        s[DINO + "reg_token"] = (1, d.registers, d.dim)
        for prefix, v in ((DINO, d), (SIGLIP, g)):
            s[prefix + "pos_embed"] = (1, v.num_patches, v.dim)
            s[prefix + "patch_embed.proj.weight"] = (v.dim, 3, v.patch, v.patch)
            s[prefix + "patch_embed.proj.bias"] = (v.dim,)
            for i in range(v.depth):
                b = f"{prefix}blocks.{i}."
                for n in ("norm1", "norm2"):
                    s[b + n + ".weight"] = s[b + n + ".bias"] = (v.dim,)
                s[b + "attn.qkv.weight"], s[b + "attn.qkv.bias"] = (3 * v.dim, v.dim), (3 * v.dim,)
                s[b + "attn.proj.weight"], s[b + "attn.proj.bias"] = (v.dim, v.dim), (v.dim,)
                s[b + "mlp.fc1.weight"], s[b + "mlp.fc1.bias"] = (v.mlp, v.dim), (v.mlp,)
                s[b + "mlp.fc2.weight"], s[b + "mlp.fc2.bias"] = (v.dim, v.mlp), (v.dim,)
                if prefix == DINO:
                    s[b + "ls1." + self.layer_scale_suffix] = (v.dim,)
                    s[b + "ls2." + self.layer_scale_suffix] = (v.dim,)
            s[prefix + "norm.weight"] = s[prefix + "norm.bias"] = (v.dim,)
        p = SIGLIP + "attn_pool."
        s[p + "latent"] = (1, 1, g.dim)
        s[p + "q.weight"], s[p + "q.bias"] = (g.dim, g.dim), (g.dim,)
        s[p + "kv.weight"], s[p + "kv.bias"] = (2 * g.dim, g.dim), (2 * g.dim,)
        s[p + "proj.weight"], s[p + "proj.bias"] = (g.dim, g.dim), (g.dim,)
        s[p + "norm.weight"] = s[p + "norm.bias"] = (g.dim,)
        s[p + "mlp.fc1.weight"], s[p + "mlp.fc1.bias"] = (g.mlp, g.dim), (g.mlp,)
        s[p + "mlp.fc2.weight"], s[p + "mlp.fc2.bias"] = (g.dim, g.mlp), (g.dim,)
        h, inner = self.llm.hidden_size, 4 * self.vision_dim
        s["projector.fc1.weight"], s["projector.fc1.bias"] = (inner, self.vision_dim), (inner,)
        s["projector.fc2.weight"], s["projector.fc2.bias"] = (h, inner), (h,)
        s["projector.fc3.weight"], s["projector.fc3.bias"] = (h, h), (h,)
        c = self.llm
        head_dim = getattr(c, "head_dim", None) or h // c.num_attention_heads
        q_out, kv_out = c.num_attention_heads * head_dim, c.num_key_value_heads * head_dim
        s[LLM + "model.embed_tokens.weight"] = (c.vocab_size, h)
        for i in range(c.num_hidden_layers):
            b = f"{LLM}model.layers.{i}."
            s[b + "self_attn.q_proj.weight"] = (q_out, h)
            s[b + "self_attn.k_proj.weight"] = (kv_out, h)
            s[b + "self_attn.v_proj.weight"] = (kv_out, h)
            s[b + "self_attn.o_proj.weight"] = (h, q_out)
            s[b + "mlp.gate_proj.weight"] = (c.intermediate_size, h)
            s[b + "mlp.up_proj.weight"] = (c.intermediate_size, h)
            s[b + "mlp.down_proj.weight"] = (h, c.intermediate_size)
            s[b + "input_layernorm.weight"] = (h,)
            s[b + "post_attention_layernorm.weight"] = (h,)
        s[LLM + "model.norm.weight"] = (h,)
        s[LLM + "lm_head.weight"] = (c.vocab_size, h)
        return s


def _anchor(folder: TensorFolder, key: str) -> torch.Tensor:
    if key not in folder.tensors:
        raise CheckpointError(f"checkpoint lacks tensor '{key}'")
    return folder.tensors[key]


def _depth(folder: TensorFolder, prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"blocks\.(\d+)\.")
    ids = {int(m.group(1)) for k in folder.tensors if (m := pattern.match(k))}
    if not ids:
        raise CheckpointError(f"checkpoint has no '{prefix}blocks.*' tensors")
    return max(ids) + 1


def _vit_dims(folder: TensorFolder, prefix: str, dim_key: str, heads: int, image_size: int,
              act: str, registers: int) -> ViTDims:
    dim = int(_anchor(folder, prefix + dim_key).shape[-1])
    if dim % heads:
        raise CheckpointError(f"'{prefix + dim_key}' width {dim} is not divisible by the {heads} heads of the architecture")
    patch = int(_anchor(folder, prefix + "patch_embed.proj.weight").shape[-1])
    mlp = int(_anchor(folder, prefix + "blocks.0.mlp.fc1.weight").shape[0])
    if image_size % patch:
        raise CheckpointError(f"config.json image size {image_size} is not a multiple of the patch size {patch}")
    return ViTDims(dim, _depth(folder, prefix), heads, mlp, patch, image_size, registers, act)


def read_arch(config: dict[str, Any], folder: TensorFolder) -> OpenVLAArch:
    """Validate config.json and derive the network's dimensions from it and the tensor shapes."""
    if config.get("model_type") != "openvla":
        raise CheckpointError(f"config.json: model_type is {config.get('model_type')!r}, expected 'openvla'")
    if not require_field(config, "use_fused_vision_backbone", "config.json"):
        raise CheckpointError("config.json: use_fused_vision_backbone is false; only the fused DINOv2+SigLIP "
                              "OpenVLA backbone (dinosiglip) is supported")
    timm_ids = require_field(config, "timm_model_ids", "config.json")
    sizes = require_field(config, "image_sizes", "config.json")
    acts = config.get("timm_override_act_layers", [None, None])
    if len(timm_ids) != 2 or len(sizes) != 2 or len(acts) != 2:
        raise CheckpointError(f"config.json: timm_model_ids / image_sizes / timm_override_act_layers must have 2 "
                              f"entries for a fused backbone, got {timm_ids}, {sizes}, {acts}")
    if timm_ids[0] not in TIMM_DINO or timm_ids[1] not in TIMM_SIGLIP:
        raise CheckpointError(f"config.json: timm_model_ids {timm_ids} not supported; expected one of "
                              f"{sorted(TIMM_DINO)} then one of {sorted(TIMM_SIGLIP)}")
    for a in acts:
        if a not in TIMM_ACT:
            raise CheckpointError(f"config.json: timm_override_act_layers entry {a!r} not supported; "
                                  f"valid: {sorted(str(k) for k in TIMM_ACT)}")
    arch_spec = config.get("arch_specifier", "")
    if "fused-gelu-mlp" not in arch_spec:
        raise CheckpointError(f"config.json: arch_specifier {arch_spec!r} not supported; expected a "
                              "'fused-gelu-mlp' projector")
    text = require_field(config, "text_config", "config.json")
    if text.get("model_type") != "llama":
        raise CheckpointError(f"config.json: text_config.model_type is {text.get('model_type')!r}, expected 'llama'")
    llm_fields = {k: v for k, v in text.items() if not k.startswith("_") and k not in ("architectures", "torch_dtype",
                                                                                      "transformers_version")}
    llm = LlamaConfig(**llm_fields)
    reg = _anchor(folder, DINO + "reg_token")
    scale_suffix = "scale_factor" if (DINO + "blocks.0.ls1.scale_factor") in folder.tensors else "gamma"
    dino = _vit_dims(folder, DINO, "cls_token", TIMM_DINO[timm_ids[0]], int(sizes[0]), TIMM_ACT[acts[0]],
                     int(reg.shape[1]))
    siglip = _vit_dims(folder, SIGLIP, "pos_embed", TIMM_SIGLIP[timm_ids[1]], int(sizes[1]), TIMM_ACT[acts[1]], 0)
    if dino.mlp % dino.dim:
        raise CheckpointError(f"'{DINO}blocks.0.mlp.fc1.weight' width {dino.mlp} is not a multiple of {dino.dim}")
    return OpenVLAArch(dino, siglip, llm, scale_suffix)


def check_tensors(arch: OpenVLAArch, folder: TensorFolder) -> None:
    """Every expected key present with its shape, nothing unknown; errors name file and key."""
    expected = arch.expected_shapes()
    unknown = sorted(set(folder.tensors) - set(expected))
    if unknown:
        k = unknown[0]
        raise CheckpointError(f"{folder.file_of(k)}: unknown tensor key '{k}' "
                              f"({len(unknown)} unknown keys) for this OpenVLA architecture")
    missing = sorted(set(expected) - set(folder.tensors))
    if missing:
        raise CheckpointError(f"checkpoint lacks tensor '{missing[0]}' ({len(missing)} missing)")
    for key, shape in expected.items():
        got = tuple(folder.tensors[key].shape)
        if got != shape:
            raise CheckpointError(f"{folder.file_of(key)}: tensor '{key}' has shape {got}, expected {shape}")


# ---- the network ---------------------------------------------------------------------------------

class FusedVisionBackbone(nn.Module):
    """DINOv2 (with registers) and SigLIP side by side; patch features of their second-to-last blocks."""

    def __init__(self, dino: ViTDims, siglip: ViTDims) -> None:
        super().__init__()
        self.num_registers = dino.registers
        self.dino = Dinov2WithRegistersModel(Dinov2WithRegistersConfig(
            hidden_size=dino.dim, num_hidden_layers=dino.depth, num_attention_heads=dino.heads,
            mlp_ratio=dino.mlp // dino.dim, image_size=dino.image_size, patch_size=dino.patch,
            num_register_tokens=dino.registers, hidden_act=dino.hidden_act, layer_norm_eps=TIMM_LAYER_NORM_EPS,
            qkv_bias=True,
        ))
        self.siglip = SiglipVisionModel(SiglipVisionConfig(
            hidden_size=siglip.dim, intermediate_size=siglip.mlp, num_hidden_layers=siglip.depth,
            num_attention_heads=siglip.heads, image_size=siglip.image_size, patch_size=siglip.patch,
            hidden_act=siglip.hidden_act, layer_norm_eps=TIMM_LAYER_NORM_EPS, vision_use_head=True,
        ))

    def dino_patches(self, pixels: torch.Tensor) -> torch.Tensor:
        h = self.dino.embeddings(pixels)
        for layer in self.dino.encoder.layer[:-1]:
            h = layer(h, None)
        return h[:, 1 + self.num_registers:]  # drop CLS and registers

    def siglip_patches(self, pixels: torch.Tensor) -> torch.Tensor:
        h = self.siglip.embeddings(pixels)
        for layer in self.siglip.encoder.layers[:-1]:
            h = layer(h, None)
        return h

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 6, H, W): DINOv2-normalised RGB then SigLIP-normalised RGB -> (B, N, D_dino + D_siglip)."""
        if pixel_values.ndim != 4 or pixel_values.shape[1] != 6:
            raise ValueError(f"pixel_values must be (B, 6, H, W) channel-stacked, got {tuple(pixel_values.shape)}")
        dino_px, siglip_px = pixel_values.split(3, dim=1)
        return torch.cat([self.dino_patches(dino_px), self.siglip_patches(siglip_px)], dim=2)


class FusedProjector(nn.Module):
    """OpenVLA's fused-gelu-mlp: fc1 (4x vision width) -> GELU -> fc2 -> GELU -> fc3."""

    def __init__(self, vision_dim: int, llm_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(vision_dim, 4 * vision_dim)
        self.fc2 = nn.Linear(4 * vision_dim, llm_dim)
        self.fc3 = nn.Linear(llm_dim, llm_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(nn.functional.gelu(self.fc2(nn.functional.gelu(self.fc1(x)))))


class DiscreteActionHead(nn.Module):
    """Action tokens <-> normalised actions (no weights: the LM head scores the tokens)."""

    def __init__(self, tokenizer: ActionTokenizer) -> None:
        super().__init__()
        self.tokenizer = tokenizer

    def decode(self, token_ids: torch.Tensor) -> np.ndarray:
        return np.asarray(self.tokenizer.decode(token_ids.cpu().numpy().astype(np.int64)))


class OpenVLAModel(nn.Module):
    """The OpenVLA network on transformers modules (see the module docstring for the mapping)."""

    def __init__(self, arch: OpenVLAArch, base_vocab_size: int, n_action_bins: int) -> None:
        super().__init__()
        self.arch = arch
        self.vision = FusedVisionBackbone(arch.dino, arch.siglip)
        self.projector = FusedProjector(arch.vision_dim, arch.llm.hidden_size)
        self.backbone = LlamaForCausalLM(arch.llm)
        self.head = DiscreteActionHead(ActionTokenizer(vocab_size=base_vocab_size, n_bins=n_action_bins))

    def embed(self, pixel_values: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """<s> embedding, projected patches, then the rest of the prompt (OpenVLA's order)."""
        patches = self.projector(self.vision(pixel_values))
        text = self.backbone.get_input_embeddings()(input_ids)
        return torch.cat([text[:, :1], patches.to(text.dtype), text[:, 1:]], dim=1)

    @torch.no_grad()
    def greedy_action_tokens(self, pixel_values: torch.Tensor, input_ids: torch.Tensor, num_tokens: int) -> torch.Tensor:
        """Greedy decoding of `num_tokens` tokens with a KV cache -> (B, num_tokens) ids."""
        embeds = self.embed(pixel_values, input_ids)
        # Only the last position's logits are needed; skips a (seq x 32064) LM-head product.
        out = self.backbone(inputs_embeds=embeds, use_cache=True, logits_to_keep=1)
        cache = out.cache
        tokens = [out.logits[:, -1].argmax(-1)]
        for _ in range(num_tokens - 1):
            out = self.backbone(input_ids=tokens[-1][:, None], cache=cache, use_cache=True)
            cache = out.cache
            tokens.append(out.logits[:, -1].argmax(-1))
        return torch.stack(tokens, dim=1)


# ---- inputs ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PrismaticImageTransform:
    """preprocessor_config.json of OpenVLA: resize each view, scale to [0, 1], normalise, stack."""

    sizes: tuple[tuple[int, int], ...]  # (H, W) per backbone
    resample: tuple[str, ...]
    means: tuple[tuple[float, float, float], ...]
    stds: tuple[tuple[float, float, float], ...]
    strategy: str

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> "PrismaticImageTransform":
        f = "preprocessor_config.json"
        strategy = require_field(cfg, "image_resize_strategy", f)
        if strategy not in ("resize-naive", "letterbox"):
            raise CheckpointError(f"{f}: image_resize_strategy {strategy!r} not supported; "
                                  "valid: 'resize-naive', 'letterbox'")
        sizes = tuple((int(s[1]), int(s[2])) for s in require_field(cfg, "input_sizes", f))
        interps = tuple(cfg.get("interpolations") or ["bicubic"] * len(sizes))
        for i in interps:
            if i not in ("bicubic", "bilinear"):
                raise CheckpointError(f"{f}: interpolation {i!r} not supported; valid: 'bicubic', 'bilinear'")
        means = tuple(tuple(float(v) for v in m) for m in require_field(cfg, "means", f))
        stds = tuple(tuple(float(v) for v in s) for s in require_field(cfg, "stds", f))
        if not (len(sizes) == len(interps) == len(means) == len(stds) == 2):
            raise CheckpointError(f"{f}: input_sizes / interpolations / means / stds need 2 entries (fused backbone)")
        return cls(sizes, interps, means, stds, strategy)

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        """(H, W, 3) uint8 RGB -> (1, 6, H', W') float32."""
        from PIL import Image

        arr = np.asarray(image)
        if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
            raise ValueError(f"image must be (H, W, 3) uint8 RGB, got {arr.shape} {arr.dtype}")
        pil = Image.fromarray(arr)
        views = []
        for (h, w), interp, mean, std in zip(self.sizes, self.resample, self.means, self.stds):
            img = pil
            if self.strategy == "letterbox":
                side = max(img.size)
                fill = tuple(int(m * 255) for m in mean)
                canvas = Image.new("RGB", (side, side), fill)
                canvas.paste(img, ((side - img.size[0]) // 2, (side - img.size[1]) // 2))
                img = canvas
            # PIL resampling, as the torchvision-on-PIL transform OpenVLA was trained with.
            method = Image.Resampling.BICUBIC if interp == "bicubic" else Image.Resampling.BILINEAR
            img = img.resize((w, h), method)
            t = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
            t = (t - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
            views.append(t)
        return torch.cat(views, dim=0)[None]


class PromptTokenizer:
    """tokenizer.json (Llama-2 style) -> OpenVLA prompt ids: <s>, prompt, trailing "▁"."""

    def __init__(self, folder: Path) -> None:
        from tokenizers import Tokenizer

        path = folder / "tokenizer.json"
        if not path.is_file():
            raise CheckpointError(f"checkpoint folder {folder} lacks tokenizer.json")
        self.tokenizer = Tokenizer.from_file(str(path))
        cfg = read_json(folder, "tokenizer_config.json") if (folder / "tokenizer_config.json").is_file() else {}
        bos = cfg.get("bos_token", "<s>")
        bos = bos["content"] if isinstance(bos, dict) else bos
        bos_id = self.tokenizer.token_to_id(bos)
        if bos_id is None:
            raise CheckpointError(f"tokenizer.json has no BOS token {bos!r}")
        self.bos_id = int(bos_id)
        self.base_vocab_size = int(self.tokenizer.get_vocab_size(with_added_tokens=False))

    def prompt_ids(self, instruction: str) -> list[int]:
        text = PROMPT_TEMPLATE.format(instruction=instruction.strip().lower())
        ids = [self.bos_id] + self.tokenizer.encode(text, add_special_tokens=False).ids
        if ids[-1] != SPACE_TOKEN_ID:
            ids.append(SPACE_TOKEN_ID)
        return ids


# ---- loading ----------------------------------------------------------------------------------------

def convert_state_dict(arch: OpenVLAArch, src: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Checkpoint keys (timm / prismatic names) -> OpenVLAModel state-dict keys."""
    out: dict[str, torch.Tensor] = {}
    d, g = arch.dino, arch.siglip
    dn, sg = "vision.dino.", "vision.siglip."
    out[dn + "embeddings.cls_token"] = src[DINO + "cls_token"]
    out[dn + "embeddings.register_tokens"] = src[DINO + "reg_token"]
    pos = src[DINO + "pos_embed"]
    # timm adds no position to CLS/registers (no_embed_class); transformers adds row 0 to CLS.
    out[dn + "embeddings.position_embeddings"] = torch.cat([torch.zeros_like(pos[:, :1]), pos], dim=1)
    out[dn + "embeddings.mask_token"] = torch.zeros(1, d.dim, dtype=pos.dtype)  # unused at inference
    out[dn + "embeddings.patch_embeddings.projection.weight"] = src[DINO + "patch_embed.proj.weight"]
    out[dn + "embeddings.patch_embeddings.projection.bias"] = src[DINO + "patch_embed.proj.bias"]
    for i in range(d.depth):
        s, t = f"{DINO}blocks.{i}.", f"{dn}encoder.layer.{i}."
        for n in ("norm1", "norm2", "mlp.fc1", "mlp.fc2"):
            out[t + n + ".weight"], out[t + n + ".bias"] = src[s + n + ".weight"], src[s + n + ".bias"]
        for part in ("weight", "bias"):
            q, k, v = src[s + "attn.qkv." + part].chunk(3, dim=0)
            out[t + "attention.q_proj." + part] = q
            out[t + "attention.k_proj." + part] = k
            out[t + "attention.v_proj." + part] = v
            out[t + "attention.o_proj." + part] = src[s + "attn.proj." + part]
        out[t + "layer_scale1.lambda1"] = src[s + "ls1." + arch.layer_scale_suffix]
        out[t + "layer_scale2.lambda1"] = src[s + "ls2." + arch.layer_scale_suffix]
    out[dn + "layernorm.weight"], out[dn + "layernorm.bias"] = src[DINO + "norm.weight"], src[DINO + "norm.bias"]

    out[sg + "embeddings.position_embedding.weight"] = src[SIGLIP + "pos_embed"][0]
    out[sg + "embeddings.patch_embedding.weight"] = src[SIGLIP + "patch_embed.proj.weight"]
    out[sg + "embeddings.patch_embedding.bias"] = src[SIGLIP + "patch_embed.proj.bias"]
    for i in range(g.depth):
        s, t = f"{SIGLIP}blocks.{i}.", f"{sg}encoder.layers.{i}."
        for a, b in (("norm1", "layer_norm1"), ("norm2", "layer_norm2"), ("mlp.fc1", "mlp.fc1"),
                     ("mlp.fc2", "mlp.fc2"), ("attn.proj", "self_attn.out_proj")):
            out[t + b + ".weight"], out[t + b + ".bias"] = src[s + a + ".weight"], src[s + a + ".bias"]
        for part in ("weight", "bias"):
            q, k, v = src[s + "attn.qkv." + part].chunk(3, dim=0)
            out[t + "self_attn.q_proj." + part] = q
            out[t + "self_attn.k_proj." + part] = k
            out[t + "self_attn.v_proj." + part] = v
    out[sg + "post_layernorm.weight"], out[sg + "post_layernorm.bias"] = src[SIGLIP + "norm.weight"], src[SIGLIP + "norm.bias"]
    p = SIGLIP + "attn_pool."
    out[sg + "head.probe"] = src[p + "latent"]
    # timm's kv rows are [k; v], so [q; kv] is MultiheadAttention's [q; k; v] in_proj.
    out[sg + "head.attention.in_proj_weight"] = torch.cat([src[p + "q.weight"], src[p + "kv.weight"]], dim=0)
    out[sg + "head.attention.in_proj_bias"] = torch.cat([src[p + "q.bias"], src[p + "kv.bias"]], dim=0)
    out[sg + "head.attention.out_proj.weight"] = src[p + "proj.weight"]
    out[sg + "head.attention.out_proj.bias"] = src[p + "proj.bias"]
    out[sg + "head.layernorm.weight"], out[sg + "head.layernorm.bias"] = src[p + "norm.weight"], src[p + "norm.bias"]
    for n in ("mlp.fc1", "mlp.fc2"):
        out[sg + f"head.{n}.weight"], out[sg + f"head.{n}.bias"] = src[p + n + ".weight"], src[p + n + ".bias"]

    for n in ("fc1", "fc2", "fc3"):
        for part in ("weight", "bias"):
            out[f"projector.{n}.{part}"] = src[f"projector.{n}.{part}"]
    for key, value in src.items():
        if key.startswith(LLM):
            out["backbone." + key[len(LLM):]] = value
    return out


class OpenVLA:
    """A loaded OpenVLA checkpoint: network, prompt tokenizer, image transform, statistics.

    `predict_action(image, instruction, unnorm_key=None) -> (action_dim,) float64`.
    """

    def __init__(self, folder: Path, model: OpenVLAModel, tokenizer: PromptTokenizer,
                 transform: PrismaticImageTransform, norm_stats: dict[str, Any],
                 device: torch.device, dtype: torch.dtype, cuda_graphs: bool = True,
                 stats_sources: dict[str, str] | None = None, default_unnorm_key: str | None = None) -> None:
        self.folder = folder
        # On CUDA, each greedy decode step is a replayed CUDA graph (vla_ros.policies.checkpoints.cuda_graphs).
        self.cuda_graphs = bool(cuda_graphs)
        self._decoder: Any = None
        self.model = model
        self.tokenizer = tokenizer
        self.transform = transform
        self.norm_stats_raw = norm_stats
        # dataset key -> the file its statistics came from (config.json or dataset_statistics.json)
        self.stats_sources = dict(stats_sources) if stats_sources is not None else {k: "config.json" for k in norm_stats}
        # The key used when none is given (the fine-tune's single dataset), else None: keys must be named.
        self.default_unnorm_key = default_unnorm_key
        self.device = device
        self.dtype = dtype

    @property
    def cuda_graphs_in_use(self) -> bool:
        return self._decoder is not None and self._decoder.in_use

    @property
    def unnorm_keys(self) -> list[str]:
        return sorted(self.norm_stats_raw)

    def stats(self, unnorm_key: str | None) -> NormStats:
        return NormStats.from_openvla(self.norm_stats_raw, unnorm_key=unnorm_key or self.default_unnorm_key)

    def action_dim(self, unnorm_key: str | None) -> int:
        return self.stats(unnorm_key)["action"].dim

    def inputs(self, image: np.ndarray, instruction: str) -> tuple[torch.Tensor, torch.Tensor]:
        pixels = self.transform(image).to(self.device, self.dtype)
        ids = torch.tensor([self.tokenizer.prompt_ids(instruction)], dtype=torch.long, device=self.device)
        return pixels, ids

    def predict_tokens(self, image: np.ndarray, instruction: str, num_tokens: int) -> np.ndarray:
        pixels, ids = self.inputs(image, instruction)
        if self.cuda_graphs and self.device.type == "cuda":
            if self._decoder is None:
                from vla_ros.policies.checkpoints.cuda_graphs import GraphedGreedyDecoder

                self._decoder = GraphedGreedyDecoder(self.model.backbone)
            with torch.no_grad():
                return self._decoder.tokens(self.model.embed(pixels, ids), num_tokens)[0].cpu().numpy()
        return self.model.greedy_action_tokens(pixels, ids, num_tokens)[0].cpu().numpy()

    def predict_action(self, image: np.ndarray, instruction: str, unnorm_key: str | None = None) -> np.ndarray:
        stats = self.stats(unnorm_key)
        dim = stats["action"].dim
        tokens = self.predict_tokens(image, instruction, dim)
        tok = self.model.head.tokenizer
        if not np.all(tok.is_action_token(tokens)):
            # OpenVLA clips such ids into the bin range silently; say so instead.
            log.warning("OpenVLA emitted non-action token ids %s; they decode to the edge bins", tokens.tolist())
        normalized = self.model.head.decode(torch.from_numpy(tokens))
        return stats.unnormalize("action", normalized, "bounds_q99")


def load_openvla(checkpoint: str | Path, device: str | torch.device | None = None,
                 dtype: torch.dtype | str | None = None, cuda_graphs: bool = True) -> OpenVLA:
    """Load an OpenVLA checkpoint folder (HF layout). Errors name the file and key at fault.
    cuda_graphs: on CUDA, replay each greedy decode step as a CUDA graph."""
    folder = Path(checkpoint)
    if not folder.is_dir():
        raise CheckpointError(f"OpenVLA checkpoint folder not found: {folder}")
    config = read_json(folder, "config.json")
    tensors = load_safetensors_folder(folder)
    arch = read_arch(config, tensors)
    check_tensors(arch, tensors)
    norm_stats, sources, default_key = read_openvla_statistics(folder, config)
    tokenizer = PromptTokenizer(folder)
    pad_multiple = int(config.get("pad_to_multiple_of", 0))
    if arch.llm.vocab_size - pad_multiple != tokenizer.base_vocab_size:
        raise CheckpointError(
            f"config.json: text_config.vocab_size {arch.llm.vocab_size} - pad_to_multiple_of {pad_multiple} "
            f"!= tokenizer.json base vocabulary {tokenizer.base_vocab_size}"
        )
    transform = PrismaticImageTransform.from_config(read_json(folder, "preprocessor_config.json"))
    if transform.sizes != ((arch.dino.image_size,) * 2, (arch.siglip.image_size,) * 2):
        raise CheckpointError(f"preprocessor_config.json input_sizes {transform.sizes} disagree with "
                              f"config.json image_sizes {[arch.dino.image_size, arch.siglip.image_size]}")
    dev, dt = pick_device_dtype(device, dtype)
    from transformers.initialization import no_init_weights

    with no_init_weights():  # every weight is overwritten below; skip the costly random init
        model = OpenVLAModel(arch, tokenizer.base_vocab_size, int(config.get("n_action_bins", 256)))
    state = convert_state_dict(arch, tensors.tensors)
    missing, unexpected = model.load_state_dict(state, strict=False)
    # Non-persistent buffers (rotary frequencies, position ids) are computed, not loaded.
    if unexpected or missing:
        raise CheckpointError(f"internal mapping error: missing {missing[:3]}, unexpected {unexpected[:3]}")
    model.to(device=dev, dtype=dt).eval()
    return OpenVLA(folder, model, tokenizer, transform, norm_stats, dev, dt, cuda_graphs, sources, default_key)


def read_openvla_statistics(folder: Path, config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str], str | None]:
    """(statistics by dataset key, the file each key came from, the key used when none is given).

    `dataset_statistics.json` (the fine-tune's) takes precedence over config.json's `norm_stats`
    key by key, as in OpenVLA's loaders; every dataset's statistics are validated here, errors
    naming the file.
    """
    from_config = config.get("norm_stats") or {}
    if not isinstance(from_config, dict):
        raise CheckpointError(f"config.json: norm_stats must be a mapping {{dataset: {{...}}}}, "
                              f"got {type(from_config).__name__}")
    from_file: dict[str, Any] = read_json(folder, STATS_FILE) if (folder / STATS_FILE).is_file() else {}
    if not from_config and not from_file:
        raise CheckpointError(f"{folder}: config.json has no norm_stats and {STATS_FILE} is missing")
    merged: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name, stats in (("config.json", from_config), (STATS_FILE, from_file)):
        for key in stats:
            try:
                NormStats.from_openvla(stats, unnorm_key=key)
            except (KeyError, ValueError) as exc:
                raise CheckpointError(f"{folder / name}: statistics '{key}': {str(exc).strip(chr(39))}") from None
            if key in merged and merged[key] != stats[key]:
                log.info("OpenVLA statistics '%s': %s replaces config.json's (the fine-tune's own)", key, name)
            merged[key], sources[key] = stats[key], name
    default_key = next(iter(from_file)) if len(from_file) == 1 else None
    return merged, sources, default_key


# ---- policy ------------------------------------------------------------------------------------------

class OpenVLAPolicy:
    """OpenVLA as a Policy: one camera image + instruction -> a one-row ee_delta + gripper chunk.

    The 7 outputs are OpenVLA's (dx, dy, dz, droll, dpitch, dyaw, gripper) in the dataset's
    units (Bridge: m and rad per step); the gripper (1 = open) is clipped to [0, 1].
    """

    needs_privileged = False

    def __init__(self, vla: OpenVLA, embodiment: EmbodimentSpec, unnorm_key: str | None = None,
                 camera: str | None = None) -> None:
        if len(embodiment.arms) != 1 or embodiment.arms[0].gripper is None:
            raise ValueError(f"OpenVLA drives one arm with a gripper; embodiment '{embodiment.name}' has "
                             f"{len(embodiment.arms)} arms")
        self.vla = vla
        self.unnorm_key = vla.stats(unnorm_key).source  # resolves and validates the key now
        dim = vla.action_dim(self.unnorm_key)
        self.action_names = action_names(embodiment, "ee_delta")
        if dim != len(self.action_names):
            raise ValueError(f"statistics '{self.unnorm_key}' have {dim} action dims; OpenVLA's ee_delta + "
                             f"gripper for '{embodiment.name}' needs {len(self.action_names)}")
        slots = [c.slot for c in embodiment.cameras]
        if camera is None:
            if not slots:
                raise ValueError(f"embodiment '{embodiment.name}' has no camera; OpenVLA needs one image")
            camera = slots[0]
        elif slots and camera not in slots:
            raise ValueError(f"camera '{camera}' is not one of embodiment '{embodiment.name}' cameras {slots}")
        self.camera = camera
        self.period_s = float(embodiment.policy_period_s)
        size = {c.slot: (c.height, c.width) for c in embodiment.cameras}.get(camera, (224, 224))
        self._warmup_image = np.zeros((*size, 3), np.uint8)

    def reset(self) -> None:
        """OpenVLA is memoryless: nothing to reset."""

    def warmup(self) -> None:
        """One inference on a black frame (the policy node's warm-up has no instruction, which
        `infer` refuses)."""
        self.vla.predict_action(self._warmup_image, "pick up the object", self.unnorm_key)

    def infer(self, observation: Observation) -> ActionChunk:
        if self.camera not in observation.images:
            raise KeyError(f"observation lacks camera '{self.camera}'; has {sorted(observation.images)}")
        if not observation.instruction:
            raise ValueError("OpenVLA needs an instruction; the observation's is empty")
        action = self.vla.predict_action(observation.images[self.camera], observation.instruction, self.unnorm_key)
        action[-1] = np.clip(action[-1], 0.0, 1.0)
        return ActionChunk(self.action_names, action[None, :], self.period_s, observation.stamp_s)


def make_openvla_policy(embodiment: EmbodimentSpec, checkpoint: str | Path, unnorm_key: str | None = None,
                        camera: str | None = None, device: str | None = None,
                        dtype: str | None = None, cuda_graphs: bool = True) -> OpenVLAPolicy:
    """Registry factory: `policy:=openvla checkpoint:=PATH [unnorm_key:=bridge_orig]` ("" = unset).
    cuda_graphs: false decodes with the eager loop on CUDA too."""
    vla = load_openvla(checkpoint, device=none_if_empty(device), dtype=none_if_empty(dtype), cuda_graphs=cuda_graphs)
    return OpenVLAPolicy(vla, embodiment, none_if_empty(unnorm_key), none_if_empty(camera))
