"""Language backbone and pi0 action expert, built from configs with transformers (no download).

`run_decoder` is the one place that calls a transformers decoder: it hides the keyword rename of
the KV cache argument across transformers 5.x releases (`past_key_values` -> `cache`) and always
passes explicit position ids, so left-padded prefixes get the positions of unpadded ones.
"""

from __future__ import annotations

import inspect

import torch
from torch import nn
from transformers import GemmaConfig, GemmaForCausalLM, GemmaModel, LlamaConfig, LlamaForCausalLM, LlamaModel
from transformers.cache_utils import DynamicCache

from vla_ros.policies.vla.config import BackboneConfig


def _hf_config(cfg: BackboneConfig, hidden_size: int, intermediate_size: int, vocab_size: int):
    common = dict(
        vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=intermediate_size,
        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads, head_dim=cfg.head_dim,
        max_position_embeddings=cfg.max_position_embeddings, rms_norm_eps=cfg.rms_norm_eps,
    )
    if vocab_size > 2:
        # The text tokenizer's specials (vla_ros.policies.vla.text); the expert has no vocabulary.
        common.update(pad_token_id=0, bos_token_id=1, eos_token_id=2)
    else:
        common.update(pad_token_id=None, bos_token_id=None, eos_token_id=None)
    if cfg.kind == "gemma":
        return GemmaConfig(**common)
    return LlamaConfig(**common)


def build_backbone(cfg: BackboneConfig) -> nn.Module:
    """LlamaForCausalLM or GemmaForCausalLM with `cfg.padded_vocab_size` embedding rows."""
    hf = _hf_config(cfg, cfg.hidden_size, cfg.intermediate_size, cfg.padded_vocab_size)
    return GemmaForCausalLM(hf) if cfg.kind == "gemma" else LlamaForCausalLM(hf)


def build_action_expert(cfg: BackboneConfig, hidden_size: int, intermediate_size: int) -> nn.Module:
    """pi0's action expert: a narrower decoder of the backbone's family with the same depth,
    heads, KV heads and head_dim, so that each of its layers can attend to the backbone's cached
    keys/values of the same layer (pi0's shared attention between the VLM and the expert)."""
    # The expert never embeds token ids; a 1-row table keeps transformers' constructor happy.
    hf = _hf_config(cfg, hidden_size, intermediate_size, vocab_size=1)
    return GemmaModel(hf) if cfg.kind == "gemma" else LlamaModel(hf)


def _cache_kwarg(module: nn.Module) -> str:
    params = inspect.signature(module.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def run_decoder(
    decoder: nn.Module,
    inputs_embeds: torch.Tensor,
    attention_mask: torch.Tensor,
    position_ids: torch.Tensor,
    cache: DynamicCache | None = None,
) -> tuple[torch.Tensor, DynamicCache]:
    """One pass of a transformers base decoder (LlamaModel / GemmaModel).

    attention_mask: (B, L_total) bool padding mask over cache + new tokens (causal attention), or
    (B, 1, L_new, L_total) bool, True = may attend (a custom pattern, e.g. bidirectional queries).
    Returns the last hidden states (B, L_new, H) and the cache, which now includes the new tokens.
    """
    if cache is None:
        cache = DynamicCache()
    out = decoder(
        inputs_embeds=inputs_embeds,
        attention_mask=attention_mask,
        position_ids=position_ids,
        use_cache=True,
        **{_cache_kwarg(decoder): cache},
    )
    return out.last_hidden_state, cache


def base_model(lm: nn.Module) -> nn.Module:
    """The decoder stack of a *ForCausalLM (its `.model`)."""
    return lm.model
