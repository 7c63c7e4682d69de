"""LoRA through peft, OpenVLA's recipe: rank 32 adapters on every linear layer of the language
backbone (not its output head), the vision encoder frozen; the small parts that are new for a
robot (projector, camera/state embeddings, the action head) train in full.

The adapters are injected in place (`model.backbone` stays the same module, so the heads keep
working); `merge_lora` folds them into the base weights and removes them, leaving a plain VLAModel
that `save_pretrained` writes and `policy:=vla` loads. `save_adapter` / `load_adapter` keep the
adapter-only form (the LoRA tensors and the fully trained small parts, by model key, plus the base
checkpoint's path); `load_adapter` merges them into the base again.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vla_ros.policies.vla.model import VLAModel

# OpenVLA's finetune.py: r=32, lora_alpha=min(r, 16), dropout 0.0, all linear layers.
DEFAULT_RANK = 32


@dataclass(frozen=True)
class LoRASettings:
    rank: int = DEFAULT_RANK
    alpha: float | None = None  # None: min(rank, 16) as OpenVLA
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {self.rank}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout}")


def backbone_linear_names(model: VLAModel) -> list[str]:
    """Qualified names (inside model.backbone) of its nn.Linear layers, without the output head."""
    out = []
    for name, module in model.backbone.named_modules():
        if isinstance(module, nn.Linear) and not name.endswith("lm_head"):
            out.append(name)
    return out


def apply_lora(model: VLAModel, settings: LoRASettings = LoRASettings()):
    """Inject adapters into the backbone, freeze what the recipe freezes; returns the peft LoraModel
    (kept for merging). Trainable afterwards: the adapters, projector, camera_embed, state_proj,
    text_proj and the head."""
    from peft import LoraConfig
    from peft.tuners.lora import LoraModel

    targets = backbone_linear_names(model)
    if not targets:
        raise ValueError("the backbone has no linear layers to adapt")
    alpha = settings.alpha if settings.alpha is not None else min(settings.rank, 16)
    config = LoraConfig(r=settings.rank, lora_alpha=alpha, lora_dropout=settings.dropout, target_modules=targets,
                        bias="none")
    for p in model.parameters():
        p.requires_grad_(False)
    lora = LoraModel(model.backbone, config, "default")  # injects in place into model.backbone's modules
    for name, p in model.backbone.named_parameters():
        p.requires_grad_("lora_" in name)
    for part in (model.projector, model.head, model.state_proj, model.text_proj):
        if part is not None:
            for p in part.parameters():
                p.requires_grad_(True)
    if model.camera_embed is not None:
        model.camera_embed.requires_grad_(True)
    # The flow head's expert is part of the head; the backbone's embeddings and vision stay frozen.
    return lora


def merge_lora(model: VLAModel, lora) -> VLAModel:
    """Fold the adapters into the backbone weights and remove them (in place); returns the model."""
    merged = lora.merge_and_unload()
    if merged is not model.backbone:
        model.backbone = merged
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def adapter_state(model: VLAModel) -> dict[str, torch.Tensor]:
    """The trainable tensors of a LoRA model (adapters and fully trained parts), by model key."""
    return {k: v.detach().cpu().clone() for k, v in model.named_parameters() if v.requires_grad}


ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_FORMAT = "vla_ros.lora_adapter/1"


def save_adapter(model: VLAModel, settings: LoRASettings, base: str, folder) -> None:
    """Adapter-only save: the LoRA tensors and the fully trained small parts (adapter_model.safetensors),
    the recipe and the base checkpoint's path (adapter_config.json), and the statistics of the
    fine-tuning data (norm_stats.json). `load_adapter` rebuilds the merged model from the base."""
    import json
    from pathlib import Path

    from safetensors.torch import save_file

    from vla_ros.policies.vla.model import NORM_STATS_FILE

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in adapter_state(model).items()}, str(out / ADAPTER_WEIGHTS),
              metadata={"format": "pt"})
    alpha = settings.alpha if settings.alpha is not None else min(settings.rank, 16)
    (out / ADAPTER_CONFIG).write_text(json.dumps({
        "format": ADAPTER_FORMAT, "base_model": str(Path(base).resolve()), "r": settings.rank, "lora_alpha": alpha,
        "lora_dropout": settings.dropout, "peft_type": "LORA"}, indent=2))
    model.norm_stats.to_json(out / NORM_STATS_FILE)


def is_adapter_folder(folder) -> bool:
    from pathlib import Path

    return (Path(folder) / ADAPTER_CONFIG).is_file()


def load_adapter(folder, device="cpu", dtype=torch.float32) -> VLAModel:
    """An adapter-only folder -> the base model with the adapters merged in and the fine-tuning
    data's statistics; errors name the file and key."""
    import json
    from pathlib import Path

    from safetensors.torch import load_file

    from vla_ros.core.normalization import NormStats
    from vla_ros.policies.vla.model import NORM_STATS_FILE

    src = Path(folder)
    try:
        meta = json.loads((src / ADAPTER_CONFIG).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{src / ADAPTER_CONFIG}: unreadable ({err})") from None
    if meta.get("format") != ADAPTER_FORMAT:
        raise ValueError(f"{src / ADAPTER_CONFIG}: 'format' is {meta.get('format')!r}, expected {ADAPTER_FORMAT!r}")
    model = VLAModel.from_pretrained(meta["base_model"])
    lora = apply_lora(model, LoRASettings(rank=int(meta["r"]), alpha=float(meta["lora_alpha"]),
                                          dropout=float(meta.get("lora_dropout", 0.0))))
    tensors = load_file(str(src / ADAPTER_WEIGHTS))
    expected = {k for k, p in model.named_parameters() if p.requires_grad}
    if set(tensors) != expected:
        missing, unknown = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
        raise ValueError(f"{src / ADAPTER_WEIGHTS}: missing {missing[:5]} unknown {unknown[:5]} for the base "
                         f"{meta['base_model']}")
    with torch.no_grad():
        params = dict(model.named_parameters())
        for k, v in tensors.items():
            if params[k].shape != v.shape:
                raise ValueError(f"{src / ADAPTER_WEIGHTS}: '{k}' has shape {tuple(v.shape)}, expected "
                                 f"{tuple(params[k].shape)}")
            params[k].copy_(v)
    merge_lora(model, lora)
    stats = NormStats.from_json(src / NORM_STATS_FILE)
    model._check_norm_stats(stats, str(src / NORM_STATS_FILE))
    model.norm_stats = stats
    return model.to(device=device, dtype=dtype).eval()
