"""Tiny checkpoints written in the exact on-disk formats of the real ones.

They let the adapters be tested (and tried by users) offline: same file names, same
config fields, same tensor key names as `openvla/openvla-7b` and a transformers-format π0
folder, only with tiny dimensions and seeded random weights.

    write_openvla_fixture(path)   # config.json, sharded safetensors + index, tokenizer, stats
    write_pi0_fixture(path)       # PI0Config.save_pretrained + tokenizer + openpi norm_stats.json

The OpenVLA weights use the key names the released checkpoint has: timm names under
`vision_backbone.featurizer.` (DINOv2 ViT-L/14 with 4 registers) and
`vision_backbone.fused_featurizer.` (SigLIP So400m/14), with LayerScale stored as
`ls{1,2}.scale_factor` (OpenVLA renames timm's `gamma` so transformers does not touch it),
`projector.fc{1,2,3}`, and transformers Llama names under `language_model.`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

LLAMA2_VOCAB_SIZE = 32000
LLAMA_SPACE_TOKEN_ID = 29871  # "▁" in the Llama-2 vocabulary
OPENVLA_PAD_TO_MULTIPLE_OF = 64

DEFAULT_OPENVLA_STATS: dict[str, Any] = {
    "bridge_orig": {
        "action": {
            "mean": [0.00023, 0.00013, -0.00013, -0.00016, -0.00040, 0.00024, 0.57664],
            "std": [0.00977, 0.01369, 0.01266, 0.02853, 0.03064, 0.07741, 0.49705],
            "max": [0.41691, 0.25864, 0.21219, 3.12205, 1.86181, 6.28040, 1.0],
            "min": [-0.40469, -0.43252, -0.29471, -6.27315, -3.12508, -6.27665, 0.0],
            "q01": [-0.02872, -0.04170, -0.02609, -0.08092, -0.09289, -0.20718, 0.0],
            "q99": [0.02830, 0.04085, 0.04016, 0.08167, 0.07814, 0.20334, 1.0],
            "mask": [True, True, True, True, True, True, False],
        },
        "proprio": {
            "mean": [0.0] * 7, "std": [0.0] * 7, "max": [0.0] * 7, "min": [0.0] * 7,
            "q01": [0.0] * 7, "q99": [0.0] * 7,
        },
        "num_transitions": 2135463,
        "num_trajectories": 60064,
    },
    "fractal20220817_data": {
        "action": {
            "mean": [0.00697, 0.00626, -0.01263, 0.04334, -0.00575, 0.00091, 0.53553],
            "std": [0.06921, 0.05970, 0.07353, 0.15611, 0.13164, 0.14593, 0.49711],
            "max": [2.99836, 22.09341, 2.75027, 1.57079, 1.53673, 1.57924, 1.0],
            "min": [-2.02045, -5.49789, -2.03113, -1.56989, -1.56993, -1.57079, 0.0],
            "q01": [-0.22453, -0.14820, -0.23158, -0.35179, -0.41930, -0.43643, 0.0],
            "q99": [0.17824, 0.14938, 0.21842, 0.58912, 0.35272, 0.44700, 1.0],
            "mask": [True, True, True, True, True, True, False],
        },
        "proprio": {
            "mean": [0.0] * 7, "std": [0.0] * 7, "max": [0.0] * 7, "min": [0.0] * 7,
            "q01": [0.0] * 7, "q99": [0.0] * 7,
        },
        "num_transitions": 3786400,
        "num_trajectories": 87212,
    },
}


# ---- tokenizers -------------------------------------------------------------------------------

def write_llama_style_tokenizer(path: str | Path, vocab_size: int = LLAMA2_VOCAB_SIZE) -> None:
    """A character-level tokenizer laid out like Llama-2's (tokenizer.json + config files).

    ids 0-2 are <unk>, <s>, </s>; 3-258 the byte-fallback tokens <0x00>..<0xFF> (so "\\n" is
    id 13 as in Llama-2); "▁" sits at 29871 as in Llama-2; printable ASCII characters follow the
    bytes; the remaining ids are filler so that the base vocabulary has `vocab_size` entries and
    the action tokens are its last 256 ids. "<PAD>" is added as id `vocab_size` (OpenVLA's pad).
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers

    if vocab_size <= LLAMA_SPACE_TOKEN_ID:
        raise ValueError(f"vocab_size must exceed {LLAMA_SPACE_TOKEN_ID} to hold '▁' at its Llama id")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    vocab: dict[str, int] = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = 3 + b
    next_id = 3 + 256
    for ch in (chr(c) for c in range(33, 127)):
        vocab[ch] = next_id
        next_id += 1
    filler = 0
    while len(vocab) < vocab_size:
        if len(vocab) == LLAMA_SPACE_TOKEN_ID:
            vocab["▁"] = LLAMA_SPACE_TOKEN_ID
            continue
        vocab[f"<fixture_{filler}>"] = len(vocab)
        filler += 1
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in ("<unk>", "<s>", "</s>")])
    tok.add_special_tokens([AddedToken("<PAD>", special=True, normalized=False)])
    tok.save(str(path / "tokenizer.json"))
    special = {
        "bos_token": {"content": "<s>", "lstrip": False, "normalized": False, "rstrip": False, "single_word": False},
        "eos_token": {"content": "</s>", "lstrip": False, "normalized": False, "rstrip": False, "single_word": False},
        "pad_token": {"content": "<PAD>", "lstrip": False, "normalized": False, "rstrip": False, "single_word": False},
        "unk_token": {"content": "<unk>", "lstrip": False, "normalized": False, "rstrip": False, "single_word": False},
    }
    (path / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    added = {str(i): {"content": c, "lstrip": False, "normalized": False, "rstrip": False,
                      "single_word": False, "special": True}
             for i, c in ((0, "<unk>"), (1, "<s>"), (2, "</s>"), (vocab_size, "<PAD>"))}
    config = {
        "add_bos_token": True,
        "add_eos_token": False,
        "added_tokens_decoder": added,
        "auto_map": {"AutoProcessor": "processing_prismatic.PrismaticProcessor"},
        "bos_token": "<s>",
        "clean_up_tokenization_spaces": False,
        "eos_token": "</s>",
        "legacy": False,
        "model_max_length": 2048,
        "pad_token": "<PAD>",
        "padding_side": "right",
        "processor_class": "PrismaticProcessor",
        "sp_model_kwargs": {},
        "tokenizer_class": "LlamaTokenizer",
        "unk_token": "<unk>",
        "use_default_system_prompt": False,
    }
    (path / "tokenizer_config.json").write_text(json.dumps(config, indent=2))


# ---- OpenVLA -----------------------------------------------------------------------------------

def _rand(gen: torch.Generator, *shape: int, scale: float = 0.2, offset: float = 0.0) -> torch.Tensor:
    return torch.randn(*shape, generator=gen) * scale + offset


def _timm_vit(
    gen: torch.Generator, prefix: str, dim: int, depth: int, mlp: int, patch: int, num_patches: int,
    cls_and_registers: int | None, layer_scale: bool, attn_pool: bool,
) -> dict[str, torch.Tensor]:
    """Weights of a timm VisionTransformer under `prefix`, named as timm names them."""
    t: dict[str, torch.Tensor] = {}
    if cls_and_registers is not None:
        t[prefix + "cls_token"] = _rand(gen, 1, 1, dim, scale=0.5)
        t[prefix + "reg_token"] = _rand(gen, 1, cls_and_registers, dim, scale=0.5)
    t[prefix + "pos_embed"] = _rand(gen, 1, num_patches, dim, scale=0.5)
    t[prefix + "patch_embed.proj.weight"] = _rand(gen, dim, 3, patch, patch, scale=0.05)
    t[prefix + "patch_embed.proj.bias"] = _rand(gen, dim, scale=0.1)
    for i in range(depth):
        b = f"{prefix}blocks.{i}."
        t[b + "norm1.weight"] = _rand(gen, dim, scale=0.1, offset=1.0)
        t[b + "norm1.bias"] = _rand(gen, dim, scale=0.1)
        t[b + "attn.qkv.weight"] = _rand(gen, 3 * dim, dim, scale=0.3)
        t[b + "attn.qkv.bias"] = _rand(gen, 3 * dim, scale=0.1)
        t[b + "attn.proj.weight"] = _rand(gen, dim, dim, scale=0.2)
        t[b + "attn.proj.bias"] = _rand(gen, dim, scale=0.1)
        if layer_scale:
            # Well away from timm's 1e-5 init so a dropped LayerScale changes the output.
            t[b + "ls1.scale_factor"] = torch.rand(dim, generator=gen) + 0.5
        t[b + "norm2.weight"] = _rand(gen, dim, scale=0.1, offset=1.0)
        t[b + "norm2.bias"] = _rand(gen, dim, scale=0.1)
        t[b + "mlp.fc1.weight"] = _rand(gen, mlp, dim, scale=0.2)
        t[b + "mlp.fc1.bias"] = _rand(gen, mlp, scale=0.1)
        t[b + "mlp.fc2.weight"] = _rand(gen, dim, mlp, scale=0.2)
        t[b + "mlp.fc2.bias"] = _rand(gen, dim, scale=0.1)
        if layer_scale:
            t[b + "ls2.scale_factor"] = torch.rand(dim, generator=gen) + 0.5
    t[prefix + "norm.weight"] = _rand(gen, dim, scale=0.1, offset=1.0)
    t[prefix + "norm.bias"] = _rand(gen, dim, scale=0.1)
    if attn_pool:
        p = prefix + "attn_pool."
        t[p + "latent"] = _rand(gen, 1, 1, dim, scale=0.5)
        t[p + "q.weight"] = _rand(gen, dim, dim)
        t[p + "q.bias"] = _rand(gen, dim, scale=0.1)
        t[p + "kv.weight"] = _rand(gen, 2 * dim, dim)
        t[p + "kv.bias"] = _rand(gen, 2 * dim, scale=0.1)
        t[p + "proj.weight"] = _rand(gen, dim, dim)
        t[p + "proj.bias"] = _rand(gen, dim, scale=0.1)
        t[p + "norm.weight"] = _rand(gen, dim, scale=0.1, offset=1.0)
        t[p + "norm.bias"] = _rand(gen, dim, scale=0.1)
        t[p + "mlp.fc1.weight"] = _rand(gen, mlp, dim)
        t[p + "mlp.fc1.bias"] = _rand(gen, mlp, scale=0.1)
        t[p + "mlp.fc2.weight"] = _rand(gen, dim, mlp)
        t[p + "mlp.fc2.bias"] = _rand(gen, dim, scale=0.1)
    return t


def write_sharded_safetensors(path: Path, tensors: Mapping[str, torch.Tensor], num_shards: int) -> None:
    """`model-0000i-of-0000N.safetensors` shards + `model.safetensors.index.json`, as HF writes them."""
    from safetensors.torch import save_file

    keys = list(tensors)
    total = sum(int(t.numel() * t.element_size()) for t in tensors.values())
    per = -(-len(keys) // num_shards)
    weight_map: dict[str, str] = {}
    for s in range(num_shards):
        name = f"model-{s + 1:05d}-of-{num_shards:05d}.safetensors"
        part = {k: tensors[k].contiguous() for k in keys[s * per:(s + 1) * per]}
        save_file(part, str(path / name), metadata={"format": "pt"})
        weight_map.update({k: name for k in part})
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (path / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


def write_openvla_fixture(
    path: str | Path,
    *,
    seed: int = 0,
    image_size: int = 28,
    patch_size: int = 14,
    dino_dim: int = 32,
    dino_depth: int = 3,
    siglip_dim: int = 48,
    siglip_depth: int = 2,
    siglip_mlp: int = 96,
    llm_dim: int = 64,
    llm_layers: int = 2,
    llm_heads: int = 4,
    llm_mlp: int = 128,
    num_shards: int = 3,
    dtype: torch.dtype = torch.bfloat16,
    norm_stats: Mapping[str, Any] | None = None,
) -> Path:
    """Write a tiny OpenVLA checkpoint folder in the layout of `openvla/openvla-7b`.

    The real model is dinosiglip-vit-so-224px (DINOv2 ViT-L/14-reg4 1024-d x 24, SigLIP
    So400m/14 1152-d x 27, 16 heads each) + Llama-2 7B; here every width and depth is tiny,
    the head count stays 16 (it is implied by the timm model ids, not stored in the files).
    `lm_head` rows outside the action-token range are scaled down so greedy decoding emits
    action tokens, as a trained OpenVLA does.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    num_patches = (image_size // patch_size) ** 2
    padded_vocab = LLAMA2_VOCAB_SIZE + OPENVLA_PAD_TO_MULTIPLE_OF
    stats = dict(norm_stats) if norm_stats is not None else DEFAULT_OPENVLA_STATS

    tensors: dict[str, torch.Tensor] = {}
    tensors.update(_timm_vit(gen, "vision_backbone.featurizer.", dino_dim, dino_depth, 4 * dino_dim,
                             patch_size, num_patches, cls_and_registers=4, layer_scale=True, attn_pool=False))
    tensors.update(_timm_vit(gen, "vision_backbone.fused_featurizer.", siglip_dim, siglip_depth, siglip_mlp,
                             patch_size, num_patches, cls_and_registers=None, layer_scale=False, attn_pool=True))
    vision_dim = dino_dim + siglip_dim
    tensors["projector.fc1.weight"] = _rand(gen, 4 * vision_dim, vision_dim, scale=0.15)
    tensors["projector.fc1.bias"] = _rand(gen, 4 * vision_dim, scale=0.1)
    tensors["projector.fc2.weight"] = _rand(gen, llm_dim, 4 * vision_dim, scale=0.1)
    tensors["projector.fc2.bias"] = _rand(gen, llm_dim, scale=0.1)
    tensors["projector.fc3.weight"] = _rand(gen, llm_dim, llm_dim, scale=0.2)
    tensors["projector.fc3.bias"] = _rand(gen, llm_dim, scale=0.1)
    lm = "language_model."
    tensors[lm + "model.embed_tokens.weight"] = _rand(gen, padded_vocab, llm_dim, scale=0.5)
    for i in range(llm_layers):
        b = f"{lm}model.layers.{i}."
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            tensors[b + f"self_attn.{proj}.weight"] = _rand(gen, llm_dim, llm_dim, scale=0.15)
        tensors[b + "mlp.gate_proj.weight"] = _rand(gen, llm_mlp, llm_dim, scale=0.15)
        tensors[b + "mlp.up_proj.weight"] = _rand(gen, llm_mlp, llm_dim, scale=0.15)
        tensors[b + "mlp.down_proj.weight"] = _rand(gen, llm_dim, llm_mlp, scale=0.15)
        tensors[b + "input_layernorm.weight"] = _rand(gen, llm_dim, scale=0.1, offset=1.0)
        tensors[b + "post_attention_layernorm.weight"] = _rand(gen, llm_dim, scale=0.1, offset=1.0)
    tensors[lm + "model.norm.weight"] = _rand(gen, llm_dim, scale=0.1, offset=1.0)
    head = _rand(gen, padded_vocab, llm_dim, scale=1.0)
    first_action = LLAMA2_VOCAB_SIZE - 256
    head[:first_action] *= 0.02
    head[LLAMA2_VOCAB_SIZE:] *= 0.02
    tensors[lm + "lm_head.weight"] = head
    write_sharded_safetensors(path, {k: v.to(dtype) for k, v in tensors.items()}, num_shards)

    text_config = {
        "_name_or_path": "meta-llama/Llama-2-7b-hf",
        "architectures": ["LlamaForCausalLM"],
        "attention_bias": False,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "hidden_act": "silu",
        "hidden_size": llm_dim,
        "initializer_range": 0.02,
        "intermediate_size": llm_mlp,
        "max_position_embeddings": 2048,
        "model_type": "llama",
        "num_attention_heads": llm_heads,
        "num_hidden_layers": llm_layers,
        "num_key_value_heads": llm_heads,
        "pad_token_id": 32000,
        "pretraining_tp": 1,
        "rms_norm_eps": 1e-06,
        "rope_scaling": None,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "use_cache": True,
        "vocab_size": padded_vocab,
    }
    config = {
        "arch_specifier": "no-align+fused-gelu-mlp",
        "architectures": ["OpenVLAForActionPrediction"],
        "auto_map": {
            "AutoConfig": "configuration_prismatic.OpenVLAConfig",
            "AutoModelForVision2Seq": "modeling_prismatic.OpenVLAForActionPrediction",
        },
        "hf_llm_id": "meta-llama/Llama-2-7b-hf",
        "image_resize_strategy": "resize-naive",
        "image_sizes": [image_size, image_size],
        "llm_backbone_id": "llama2-7b-pure",
        "llm_max_length": 2048,
        "model_type": "openvla",
        "n_action_bins": 256,
        "norm_stats": stats,
        "output_projector_states": False,
        "pad_to_multiple_of": OPENVLA_PAD_TO_MULTIPLE_OF,
        "pad_token_id": 32000,
        "text_config": text_config,
        "timm_model_ids": ["vit_large_patch14_reg4_dinov2.lvd142m", "vit_so400m_patch14_siglip_224"],
        "timm_override_act_layers": [None, None],
        "torch_dtype": "bfloat16",
        "transformers_version": "4.40.1",
        "use_fused_vision_backbone": True,
        "vision_backbone_id": "dinosiglip-vit-so-224px",
    }
    (path / "config.json").write_text(json.dumps(config, indent=2))
    (path / "generation_config.json").write_text(json.dumps(
        {"_from_model_config": True, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 32000,
         "transformers_version": "4.40.1"}, indent=2))
    (path / "dataset_statistics.json").write_text(json.dumps(stats, indent=2))
    means = [[0.485, 0.456, 0.406], [0.5, 0.5, 0.5]]
    stds = [[0.229, 0.224, 0.225], [0.5, 0.5, 0.5]]
    preprocessor = {
        "auto_map": {
            "AutoImageProcessor": "processing_prismatic.PrismaticImageProcessor",
            "AutoProcessor": "processing_prismatic.PrismaticProcessor",
        },
        "image_processor_type": "PrismaticImageProcessor",
        "image_resize_strategy": "resize-naive",
        "input_sizes": [[3, image_size, image_size], [3, image_size, image_size]],
        "interpolations": ["bicubic", "bicubic"],
        "means": means,
        "processor_class": "PrismaticProcessor",
        "stds": stds,
        "tvf_crop_params": [{"output_size": [image_size, image_size]}] * 2,
        "tvf_do_letterbox": False,
        "tvf_letterbox_fill": None,
        "tvf_normalize_params": [{"inplace": False, "mean": m, "std": s} for m, s in zip(means, stds)],
        "tvf_resize_params": [{"antialias": True, "interpolation": 3, "max_size": None,
                               "size": [image_size, image_size]}] * 2,
        "use_fused_vision_backbone": True,
    }
    (path / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2))
    write_llama_style_tokenizer(path)
    return path


def read_safetensors_folder(path: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of a (sharded) safetensors folder, by key: for tests and inspection."""
    from safetensors.torch import load_file

    out: dict[str, torch.Tensor] = {}
    for f in sorted(Path(path).glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def random_image(seed: int, height: int = 48, width: int = 64) -> np.ndarray:
    """A seeded (H, W, 3) uint8 RGB test image with some structure (gradients + noise)."""
    rng = np.random.default_rng(seed)
    y = np.linspace(0, 1, height)[:, None, None]
    x = np.linspace(0, 1, width)[None, :, None]
    base = 0.5 + 0.3 * np.sin(6 * x + 4 * y + np.array([0.0, 1.0, 2.0]))
    img = np.clip(base + rng.normal(0, 0.05, size=(height, width, 3)), 0, 1)
    return (img * 255).astype(np.uint8)


# ---- π0 ----------------------------------------------------------------------------------------

def write_gemma_style_tokenizer(path: str | Path, vocab_size: int) -> None:
    """A character-level tokenizer laid out like PaliGemma's (Gemma): <pad>=0, <eos>=1, <bos>=2,
    <unk>=3, no dummy prefix, spaces as "▁", byte fallback; "<image>" is added after the base
    vocabulary (id `vocab_size`, PaliGemma's image token id)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    vocab: dict[str, int] = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3}
    for ch in ["\n", "▁"] + [chr(c) for c in range(33, 127)]:
        vocab[ch] = len(vocab)
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    if len(vocab) > vocab_size:
        raise ValueError(f"vocab_size must be at least {len(vocab)} for this tokenizer, got {vocab_size}")
    while len(vocab) < vocab_size:
        vocab[f"<unused{len(vocab)}>"] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in ("<pad>", "<eos>", "<bos>", "<unk>")])
    tok.add_special_tokens([AddedToken("<image>", special=True, normalized=False)])
    tok.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps({
        "add_bos_token": True, "add_eos_token": False, "bos_token": "<bos>", "eos_token": "<eos>",
        "pad_token": "<pad>", "unk_token": "<unk>", "model_max_length": 48, "padding_side": "right",
        "tokenizer_class": "GemmaTokenizer", "processor_class": "PI0Processor",
    }, indent=2))
    (path / "special_tokens_map.json").write_text(json.dumps({
        "bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>",
        "additional_special_tokens": ["<image>"],
    }, indent=2))


def aloha_openpi_norm_stats(seed: int = 0, dims: int = 14, padded_to: int = 32) -> dict[str, Any]:
    """openpi `norm_stats.json` content for a 14-D ALOHA state/action, padded with zero stats to
    32 dims as openpi computes them after padding to the model's action dimension."""
    rng = np.random.default_rng(seed)
    out = {}
    for key in ("state", "actions"):
        mean = rng.uniform(-0.5, 0.5, dims)
        std = rng.uniform(0.1, 0.6, dims)
        q01 = mean - 2.5 * std
        q99 = mean + 2.5 * std
        pad = np.zeros(padded_to - dims)
        out[key] = {n: np.concatenate([v, pad]).tolist() for n, v in
                    (("mean", mean), ("std", std), ("q01", q01), ("q99", q99))}
    return {"norm_stats": out}


def tiny_pi0_config(chunk_size: int = 50, max_dim: int = 32, image_size: int = 28, vocab_size: int = 512):
    """A PI0Config with the real structure (PaliGemma = SigLIP + Gemma, Gemma action expert) at tiny size."""
    from transformers import PI0Config

    return PI0Config(
        vlm_config={
            "model_type": "paligemma",
            "text_config": {"model_type": "gemma", "hidden_size": 32, "num_hidden_layers": 2, "intermediate_size": 64,
                            "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 16,
                            "vocab_size": vocab_size},
            "vision_config": {"model_type": "siglip_vision_model", "hidden_size": 32, "intermediate_size": 64,
                              "num_hidden_layers": 2, "num_attention_heads": 2, "patch_size": 14,
                              "image_size": image_size, "vision_use_head": False},
            "projection_dim": 32,
            "image_token_id": vocab_size,
        },
        # The expert shares the VLM's layer count, KV heads and head_dim: it attends to its cache.
        dit_config={"model_type": "gemma", "hidden_size": 16, "num_hidden_layers": 2, "intermediate_size": 32,
                    "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 16},
        chunk_size=chunk_size, max_state_dim=max_dim, max_action_dim=max_dim, num_inference_steps=10,
    )


def write_pi0_fixture(path: str | Path, *, seed: int = 0, asset_id: str = "trossen",
                      max_shard_size: str | None = "200KB") -> Path:
    """A tiny π0 folder: PI0Config/weights via save_pretrained (transformers' on-disk π0 names,
    i.e. `paligemma_with_expert.*`, `action_in_proj`, ...), a Gemma-style tokenizer, and openpi
    statistics under `assets/<asset_id>/norm_stats.json` as openpi checkpoints keep them."""
    from transformers import PI0ForConditionalGeneration

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = tiny_pi0_config()
    model = PI0ForConditionalGeneration(config)
    # The default init leaves the output projections near zero; widen every weight so that the
    # velocity field (and so the test's comparison) depends on every part of the network.
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim >= 2:
                p.normal_(0.0, 0.3)
    model.save_pretrained(str(path), **({"max_shard_size": max_shard_size} if max_shard_size else {}))
    write_gemma_style_tokenizer(path, config.vlm_config.text_config.vocab_size)
    assets = path / "assets" / asset_id
    assets.mkdir(parents=True, exist_ok=True)
    (assets / "norm_stats.json").write_text(json.dumps(aloha_openpi_norm_stats(seed), indent=2))
    return path
