"""CUDA graphs for the inner loops of the released models: π0's denoising and OpenVLA's decoding.

At batch 1 a transformer step is a few hundred small kernels whose launches, not the GPU's
arithmetic, set the time (the released π0 expert: 14.8 ms per eager step on an H200, where its
weights take 0.1 ms to read; Llama-2-7B: ~18 ms per eager decode step). Each loop's step is
captured once as a CUDA graph and replayed; its inputs and outputs are static buffers that the
caller copies values into and out of.

- `GraphedDenoiser` (π0): the prefix (images + prompt) runs eagerly, exactly as transformers'
  `PI0ForConditionalGeneration.sample_actions` runs it; the expert step `model(state, noise,
  timestep, attention_mask, pixel_attention_mask, cache)` is captured per (batch, prefix length,
  dtype), reading static copies of every layer's prefix keys/values (the step's DynamicCache
  appends the suffix to them, so the cache is pointed back at them after warm-up and capture).
- `GraphedGreedyDecoder` (OpenVLA): the prompt is prefilled eagerly into a StaticCache (in-place
  updates at a position counter kept on the GPU), and one greedy decode step (token -> next
  token) is captured per (prompt length, tokens to decode, dtype) and replayed per token.

A capture that fails (an operation that cannot be captured, e.g. in another transformers
version) is logged once and the eager loop is used from then on. The loops are tested against
transformers' on the CPU (exactly) and the replays against the eager loops on a GPU.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch

log = logging.getLogger(__name__)


@dataclass
class _CapturedStep:
    graph: torch.cuda.CUDAGraph
    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    state: torch.Tensor
    attention_mask: torch.Tensor
    pixel_attention_mask: torch.Tensor
    noise: torch.Tensor
    time: torch.Tensor
    velocity: torch.Tensor


def capture_graph(run, restore=None, warmups: int = 2):
    """Warm `run` up on a side stream (CUDA graphs need that), then capture it: (graph, output).
    `restore()`, if given, undoes what one call of `run` changed, after each call."""
    current = torch.cuda.current_stream()
    side = torch.cuda.Stream()
    side.wait_stream(current)
    with torch.cuda.stream(side):
        for _ in range(warmups):
            run()
            if restore is not None:
                restore()
    current.wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            out = run()
    finally:
        if restore is not None:
            restore()
    return graph, out


def encode_prefix(model: Any, inputs: dict[str, torch.Tensor]) -> Any:
    """The prefix KV cache, as transformers' `sample_actions` computes it."""
    attention_mask = inputs["attention_mask"]
    embeds = model.model.embed_prefix(inputs["input_ids"], inputs["pixel_values"], inputs["pixel_attention_mask"])
    return model.model.vlm(
        inputs_embeds=embeds,
        attention_mask=attention_mask,
        position_ids=attention_mask.cumsum(-1) - 1,
        token_type_ids=torch.zeros_like(embeds)[:, :, 0],
        use_cache=True,
    ).cache


def _expert_velocity(model: Any, cache: Any, state: torch.Tensor, noise: torch.Tensor, time: torch.Tensor,
                     attention_mask: torch.Tensor, pixel_attention_mask: torch.Tensor) -> torch.Tensor:
    """One π0 denoising step's velocity over the cached prefix, as `sample_actions` calls it."""
    return model(state=state, noise=noise, timestep=time, attention_mask=attention_mask,
                 pixel_attention_mask=pixel_attention_mask, cache=cache).logits


def _point_at(layers: list, keys: list[torch.Tensor], values: list[torch.Tensor]) -> None:
    """Point each cache layer back at its prefix keys/values (a step appended the suffix)."""
    for layer, k, v in zip(layers, keys, values):
        layer.keys, layer.values = k, v


class _Captures:
    """Captured steps by input geometry, the `max_captures` most recently used kept (each holds
    its static buffers and graph memory: ~190 MB of StaticCache for OpenVLA-7B's prompt); a
    failed capture turns graphs off for good."""

    what = "step"
    max_captures = 8

    def __init__(self) -> None:
        self.enabled = True
        self._captured: dict[tuple, Any] = {}

    @property
    def captures(self) -> int:
        return len(self._captured)

    @property
    def in_use(self) -> bool:
        """Whether graphs are being replayed (something captured, no capture failed)."""
        return self.enabled and self.captures > 0

    def _lookup(self, key: tuple, capture) -> Any:
        """The captured step for `key` (capturing it now if new), or None: run eagerly."""
        step = self._captured.pop(key, None)
        if step is None:
            while len(self._captured) >= self.max_captures:
                self._captured.pop(next(iter(self._captured)))  # least recently used
            try:
                step = capture()
            except RuntimeError as exc:  # an op that cannot be captured: eager from now on
                log.warning("CUDA graph capture of the %s failed (%s); running it eagerly", self.what, exc)
                self.enabled = False
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                return None
        self._captured[key] = step  # (re)inserted last: most recently used
        return step


class GraphedDenoiser(_Captures):
    """`sample(inputs, noise, num_steps)` -> (B, chunk_size, max_action_dim), like
    `model.sample_actions(noise=noise, num_steps=num_steps, **inputs)`."""

    what = "π0 denoising step"

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def sample(self, inputs: dict[str, torch.Tensor], noise: torch.Tensor, num_steps: int | None = None) -> torch.Tensor:
        model = self.model
        steps = int(num_steps or model.config.num_inference_steps)
        if not self.enabled or noise.device.type != "cuda":
            return model.sample_actions(noise=noise, num_steps=steps, **inputs)
        cache = encode_prefix(model, inputs)
        key = (tuple(inputs["input_ids"].shape), tuple(inputs["pixel_attention_mask"].shape), noise.dtype)
        step = self._lookup(key, lambda: self._capture(cache, inputs, noise))
        if step is None:
            return model.sample_actions(noise=noise, num_steps=steps, **inputs)
        self._load(step, cache, inputs)
        x = noise
        dt = -1.0 / steps
        for i in range(steps):
            step.noise.copy_(x)
            step.time.fill_(1.0 + i * dt)
            step.graph.replay()
            x = x + dt * step.velocity
        return x

    def sample_uncaptured(self, inputs: dict[str, torch.Tensor], noise: torch.Tensor,
                          num_steps: int | None = None) -> torch.Tensor:
        """The same loop as `sample` with the step run eagerly (what the graph replays; on any
        device): the CPU tests check it against transformers' `sample_actions`."""
        model = self.model
        steps = int(num_steps or model.config.num_inference_steps)
        cache = encode_prefix(model, inputs)
        layers = list(cache.layers)
        keys, values = [layer.keys for layer in layers], [layer.values for layer in layers]
        x = noise
        dt = -1.0 / steps
        for i in range(steps):
            time = torch.full((noise.shape[0],), 1.0 + i * dt, dtype=torch.float32, device=noise.device)
            velocity = _expert_velocity(model, cache, inputs["state"], x, time, inputs["attention_mask"],
                                        inputs["pixel_attention_mask"])
            _point_at(layers, keys, values)
            x = x + dt * velocity
        return x

    @staticmethod
    def _load(step: _CapturedStep, cache: Any, inputs: dict[str, torch.Tensor]) -> None:
        for layer, k, v in zip(cache.layers, step.keys, step.values):
            k.copy_(layer.keys)
            v.copy_(layer.values)
        step.state.copy_(inputs["state"])
        step.attention_mask.copy_(inputs["attention_mask"])
        step.pixel_attention_mask.copy_(inputs["pixel_attention_mask"])

    def _capture(self, cache: Any, inputs: dict[str, torch.Tensor], noise: torch.Tensor) -> _CapturedStep:
        layers = list(cache.layers)
        keys = [layer.keys.clone() for layer in layers]
        values = [layer.values.clone() for layer in layers]
        state = inputs["state"].clone()
        attention_mask = inputs["attention_mask"].clone()
        pixel_attention_mask = inputs["pixel_attention_mask"].clone()
        x = noise.clone()
        time = torch.ones(noise.shape[0], dtype=torch.float32, device=noise.device)

        def restore() -> None:
            _point_at(layers, keys, values)

        def run() -> torch.Tensor:
            return _expert_velocity(self.model, cache, state, x, time, attention_mask, pixel_attention_mask)

        restore()
        graph, velocity = capture_graph(run, restore)
        return _CapturedStep(graph, keys, values, state, attention_mask, pixel_attention_mask, x, time, velocity)


@dataclass
class _CapturedDecode:
    graph: torch.cuda.CUDAGraph
    cache: Any  # StaticCache
    token: torch.Tensor  # (B, 1) input of the step
    next_token: torch.Tensor  # (B, 1) its greedy output


class GraphedGreedyDecoder(_Captures):
    """`tokens(embeds, num_tokens)` -> (B, num_tokens) greedy ids after the prompt `embeds`, like
    prefilling a DynamicCache and decoding token by token (OpenVLAModel.greedy_action_tokens)."""

    what = "greedy decode step"

    def __init__(self, lm: Any) -> None:
        super().__init__()
        self.lm = lm  # a *ForCausalLM

    def _prefill(self, cache: Any, embeds: torch.Tensor) -> torch.Tensor:
        cache.reset()
        out = self.lm(inputs_embeds=embeds, cache=cache, use_cache=True, logits_to_keep=1)
        return out.logits[:, -1].argmax(-1, keepdim=True)

    def _step(self, cache: Any, token: torch.Tensor) -> torch.Tensor:
        return self.lm(input_ids=token, cache=cache, use_cache=True).logits[:, -1].argmax(-1, keepdim=True)

    def _static_cache(self, embeds: torch.Tensor, num_tokens: int) -> Any:
        from transformers import StaticCache

        return StaticCache(config=self.lm.config, max_cache_len=embeds.shape[1] + num_tokens)

    def tokens_uncaptured(self, embeds: torch.Tensor, num_tokens: int) -> torch.Tensor:
        """The loop `tokens` replays, with the step run eagerly (any device)."""
        cache = self._static_cache(embeds, num_tokens)
        out = [self._prefill(cache, embeds)]
        for _ in range(num_tokens - 1):
            out.append(self._step(cache, out[-1]))
        return torch.cat(out, dim=1)

    def tokens(self, embeds: torch.Tensor, num_tokens: int) -> torch.Tensor:
        if not self.enabled or embeds.device.type != "cuda" or num_tokens < 2:
            return self.tokens_uncaptured(embeds, num_tokens)
        key = (tuple(embeds.shape), num_tokens, embeds.dtype)
        step = self._lookup(key, lambda: self._capture(embeds, num_tokens))
        if step is None:
            return self.tokens_uncaptured(embeds, num_tokens)
        step.token.copy_(self._prefill(step.cache, embeds))
        out = [step.token.clone()]
        for _ in range(num_tokens - 1):
            step.graph.replay()  # writes the next position of the cache, advances its counter
            step.token.copy_(step.next_token)
            out.append(step.token.clone())
        return torch.cat(out, dim=1)

    def _capture(self, embeds: torch.Tensor, num_tokens: int) -> _CapturedDecode:
        cache = self._static_cache(embeds, num_tokens)
        token = self._prefill(cache, embeds).clone()  # initialises the cache's tensors

        def rewind() -> None:  # each warm-up / captured step advanced the position counter
            for layer in cache.layers:
                layer.cumulative_length.sub_(1)

        graph, next_token = capture_graph(lambda: self._step(cache, token), rewind)
        return _CapturedDecode(graph, cache, token, next_token)
