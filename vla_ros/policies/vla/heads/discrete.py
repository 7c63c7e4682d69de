"""Discrete action head (RT-2 / OpenVLA): actions are the last 256 token ids of the base vocabulary.

The backbone's own `lm_head` scores the tokens, so this head holds no output layer. Token <->
action mapping is `ActionTokenizer` (bit-compatible with OpenVLA). A chunk of T steps x D dims
is the flattened sequence step0-dim0, step0-dim1, ..., as OpenVLA-OFT orders it.

- autoregressive (`parallel=False`): greedy decoding of T*D tokens, one backbone step each,
  reusing the KV cache (OpenVLA's generate()).
- parallel (`parallel=True`, OpenVLA-OFT / RT-1): T*D learned action query tokens appended after
  the prefix attend to it and to each other bidirectionally; one pass scores all of them.

Decoding takes the argmax over the 256 action ids only, so every decoded id is a valid action
token (OpenVLA takes it over the whole vocabulary and clips, which is the same for a trained
model and avoids decoding text ids as extreme actions for an untrained one).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from vla_ros.policies.vla.action_tokenizer import ActionTokenizer
from vla_ros.policies.vla.backbone import base_model, run_decoder
from vla_ros.policies.vla.config import N_ACTION_BINS, VLAConfig
from vla_ros.policies.vla.heads.common import Prefix


class DiscreteActionHead(nn.Module):
    def __init__(self, config: VLAConfig) -> None:
        super().__init__()
        self.parallel = config.head.parallel
        self.chunk_size = config.chunk_size
        self.action_dim = config.action_dim
        self.num_tokens = config.num_action_tokens
        self.tokenizer = ActionTokenizer(config.backbone.vocab_size, n_bins=N_ACTION_BINS)
        if self.parallel:
            self.action_queries = nn.Parameter(torch.randn(self.num_tokens, config.backbone.hidden_size) * 0.02)

    # ---- token mapping -------------------------------------------------------------------------
    def actions_to_tokens(self, actions: torch.Tensor) -> torch.Tensor:
        """(B, T, D) normalised actions -> (B, T*D) token ids."""
        return self.tokenizer.encode(actions.reshape(actions.shape[0], -1).float())

    def tokens_to_actions(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T*D) token ids -> (B, T, D) normalised actions (float32, bin centres)."""
        return self.tokenizer.decode(tokens).float().reshape(tokens.shape[0], self.chunk_size, self.action_dim)

    def _action_logits(self, lm: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        """Scores of the 256 action ids only; index i is token id first_token_id + i."""
        first = self.tokenizer.first_token_id
        weight = lm.lm_head.weight[first: first + N_ACTION_BINS]
        bias = None if lm.lm_head.bias is None else lm.lm_head.bias[first: first + N_ACTION_BINS]
        return F.linear(hidden, weight, bias)

    # ---- passes --------------------------------------------------------------------------------
    def _parallel_hidden(self, lm: nn.Module, prefix: Prefix) -> torch.Tensor:
        decoder = base_model(lm)
        _, cache = run_decoder(decoder, prefix.embeds, prefix.attention_mask(), prefix.positions)
        queries = self.action_queries.to(prefix.embeds.dtype)[None].expand(prefix.batch_size, -1, -1)
        hidden, _ = run_decoder(decoder, queries, prefix.suffix_mask(self.num_tokens),
                                prefix.next_positions(self.num_tokens), cache)
        return hidden

    def loss(self, lm: nn.Module, prefix: Prefix, actions: torch.Tensor, generator: torch.Generator | None = None
             ) -> torch.Tensor:
        """Cross-entropy of the action tokens given the prefix (teacher forcing when autoregressive).

        Like OpenVLA the loss is over the full vocabulary, so training also pushes down text ids.
        """
        targets = self.actions_to_tokens(actions)
        if self.parallel:
            logits = lm.lm_head(self._parallel_hidden(lm, prefix))
        else:
            embed = lm.get_input_embeddings()
            n = self.num_tokens
            inputs = torch.cat([prefix.embeds, embed(targets[:, :-1])], dim=1)
            positions = torch.cat([prefix.positions, prefix.next_positions(n - 1)], dim=1)
            hidden, _ = run_decoder(base_model(lm), inputs, prefix.attention_mask(n - 1), positions)
            # The token at sequence index j is predicted from position j - 1.
            logits = lm.lm_head(hidden[:, prefix.length - 1:])
        return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1))

    @torch.no_grad()
    def sample(self, lm: nn.Module, prefix: Prefix, generator: torch.Generator | None = None) -> torch.Tensor:
        """Greedy decoding -> (B, T, D) normalised actions (deterministic; `generator` unused)."""
        return self.tokens_to_actions(self.decode_tokens(lm, prefix))

    @torch.no_grad()
    def decode_tokens(self, lm: nn.Module, prefix: Prefix) -> torch.Tensor:
        """Greedy action token ids (B, T*D)."""
        first = self.tokenizer.first_token_id
        if self.parallel:
            return self._action_logits(lm, self._parallel_hidden(lm, prefix)).argmax(-1) + first
        decoder = base_model(lm)
        embed = lm.get_input_embeddings()
        hidden, cache = run_decoder(decoder, prefix.embeds, prefix.attention_mask(), prefix.positions)
        positions = prefix.next_positions(self.num_tokens)
        # Cached steps: a 2-D padding mask over cache + new token (the new token is last, so
        # causality is automatic) works for both prefix attention patterns.
        mask = prefix.mask
        tokens = []
        for i in range(self.num_tokens):
            token = self._action_logits(lm, hidden[:, -1]).argmax(-1) + first
            tokens.append(token)
            if i + 1 == self.num_tokens:
                break
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            hidden, cache = run_decoder(decoder, embed(token[:, None]), mask, positions[:, i: i + 1], cache)
        return torch.stack(tokens, dim=1)
