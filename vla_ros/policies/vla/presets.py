"""Model presets: each family's structure from the same parts, at tiny CPU-friendly sizes.

| preset  | vision                              | backbone | head                                  |
|---------|-------------------------------------|----------|---------------------------------------|
| default | SigLIP-style ViT                    | Llama    | flow matching, 10 Euler steps         |
| rt1     | FiLM conv net + TokenLearner (8/img)| Llama    | discrete, one pass (RT-1), chunk 1    |
| openvla | DINOv2 + SigLIP fused, 3-layer proj | Llama    | discrete, autoregressive, chunk 1     |
| octo    | SigLIP-style ViT, readout token     | Llama    | diffusion, cosine, 20 DDPM steps, chunk 4 |
| pi0     | SigLIP-style ViT, prefix-LM mask    | Gemma    | flow, expert, state in suffix, 10 steps, chunk 50 |

Known simplification against the real families: actions and state are not zero-padded to 32
dims (pi0).
Dimensions are the tiny defaults; any field can be overridden (`make_config(..., backbone={...})`).
The real checkpoints' sizes (OpenVLA-7B, pi0-3B) come from their config files through the
checkpoint adapters, not from here.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from vla_ros.policies.vla.config import (
    _NESTED,
    BackboneConfig,
    ConvConfig,
    HeadConfig,
    TextConfig,
    ViTConfig,
    VisionConfig,
    VLAConfig,
)

OPENVLA_PROMPT = "In: What action should the robot take to {instruction}?\nOut:"
# Tokenizer ids (< 512) + 256 action ids.
_VOCAB = 768


def _default() -> VLAConfig:
    return VLAConfig(
        preset="default",
        vision=VisionConfig(kind="siglip", image_size=112, siglip=ViTConfig(hidden_size=64, num_layers=2, num_heads=4,
                                                                            intermediate_size=128, patch_size=16)),
        backbone=BackboneConfig(kind="llama", hidden_size=128, num_layers=2, num_heads=4, num_kv_heads=2,
                                head_dim=32, intermediate_size=256, vocab_size=_VOCAB),
        head=HeadConfig(kind="flow", flow_steps=10, expert_hidden_size=64, expert_intermediate_size=128),
        chunk_size=16,
        state_dim=8,
        # openpi's quantile rule (pi0-FAST / pi0.5): robust to outliers, unclipped, exactly invertible.
        action_norm="quantile",
        state_norm="quantile",
    )


def _rt1() -> VLAConfig:
    return VLAConfig(
        preset="rt1",
        vision=VisionConfig(kind="conv_film", image_size=96, conv=ConvConfig(channels=(16, 32, 64), num_tokens=8)),
        backbone=BackboneConfig(kind="llama", hidden_size=128, num_layers=2, num_heads=4, num_kv_heads=4,
                                head_dim=32, intermediate_size=256, vocab_size=_VOCAB),
        head=HeadConfig(kind="discrete", parallel=True),
        chunk_size=1,
        state_dim=0,
        instruction_in_sequence=False,
        action_norm="bounds",
    )


def _openvla() -> VLAConfig:
    return VLAConfig(
        preset="openvla",
        vision=VisionConfig(
            kind="dinosiglip", image_size=56, feature_layer=-2,
            dino=ViTConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=128, patch_size=14,
                           num_register_tokens=4),
            siglip=ViTConfig(hidden_size=48, num_layers=2, num_heads=2, intermediate_size=96, patch_size=14),
        ),
        backbone=BackboneConfig(kind="llama", hidden_size=128, num_layers=2, num_heads=4, num_kv_heads=4,
                                head_dim=32, intermediate_size=256, vocab_size=_VOCAB, pad_vocab_multiple=64),
        head=HeadConfig(kind="discrete", parallel=False),
        text=TextConfig(prompt=OPENVLA_PROMPT, max_tokens=48),
        chunk_size=1,
        state_dim=0,
        projector_layers=3,
        camera_embedding=False,
        image_position="after_bos",
        action_norm="bounds_q99",
    )


def _octo() -> VLAConfig:
    return VLAConfig(
        preset="octo",
        vision=VisionConfig(kind="siglip", image_size=64, siglip=ViTConfig(hidden_size=64, num_layers=2, num_heads=4,
                                                                           intermediate_size=128, patch_size=16)),
        backbone=BackboneConfig(kind="llama", hidden_size=128, num_layers=2, num_heads=4, num_kv_heads=4,
                                head_dim=32, intermediate_size=256, vocab_size=_VOCAB),
        head=HeadConfig(kind="diffusion", diffusion_steps=20, sampler="ddpm", mlp_hidden_size=256, mlp_blocks=3),
        chunk_size=4,
        state_dim=8,
        action_norm="mean_std",
        state_norm="mean_std",
    )


def _pi0() -> VLAConfig:
    return VLAConfig(
        preset="pi0",
        vision=VisionConfig(kind="siglip", image_size=112, siglip=ViTConfig(hidden_size=64, num_layers=2, num_heads=4,
                                                                            intermediate_size=128, patch_size=16)),
        # Gemma with multi-query attention (1 KV head), like Gemma-2B and pi0's expert.
        backbone=BackboneConfig(kind="gemma", hidden_size=128, num_layers=2, num_heads=4, num_kv_heads=1,
                                head_dim=32, intermediate_size=256, vocab_size=_VOCAB),
        head=HeadConfig(kind="flow", flow_steps=10, expert_hidden_size=64, expert_intermediate_size=128),
        chunk_size=50,
        state_dim=8,
        prefix_attention="bidirectional",
        state_token="suffix",
        action_norm="mean_std",
        state_norm="mean_std",
    )


PRESETS: dict[str, Callable[[], VLAConfig]] = {
    "default": _default,
    "rt1": _rt1,
    "openvla": _openvla,
    "octo": _octo,
    "pi0": _pi0,
}


def make_config(preset: str = "default", **overrides: Any) -> VLAConfig:
    """The preset's config with top-level fields replaced; a dict for a sub-config
    (vision/backbone/head/text) replaces fields inside it, e.g. head={"kind": "diffusion"}."""
    if preset not in PRESETS:
        raise KeyError(f"unknown VLA preset '{preset}'; valid presets: {', '.join(PRESETS)}")
    base = PRESETS[preset]()
    valid = {f.name for f in dataclasses.fields(VLAConfig)} - {"preset"}
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise ValueError(f"unknown VLAConfig override(s) {unknown}; valid: {sorted(valid)}")
    changes: dict[str, Any] = {}
    for key, value in overrides.items():
        current = getattr(base, key)
        if isinstance(value, dict) and dataclasses.is_dataclass(current):
            sub_valid = {f.name for f in dataclasses.fields(current)}
            bad = sorted(set(value) - sub_valid)
            if bad:
                raise ValueError(f"unknown {key} field(s) {bad}; valid: {sorted(sub_valid)}")
            # a nested sub-config given as a dict too (e.g. vision={"kind": "conv_film", "conv": {...}})
            value = {k: (_NESTED[k](**v) if k in _NESTED and isinstance(v, dict) else v) for k, v in value.items()}
            changes[key] = dataclasses.replace(current, **value)
        else:
            changes[key] = value
    return dataclasses.replace(base, **changes)
