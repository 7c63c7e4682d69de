"""π0's denoising loop with the action-expert step replayed as a CUDA graph.

transformers' `PI0ForConditionalGeneration.sample_actions` encodes the prefix (images + prompt)
once, then runs the action expert over the cached prefix once per Euler step. At batch 1 each
step is a few hundred small kernels whose launches, not the GPU's arithmetic, set the time
(14.8 ms per step for the released 300M expert on an H200, where its weights take 0.1 ms to
read). Here the step is captured once as a CUDA graph and replayed for every step:

- the prefix runs eagerly, exactly as transformers runs it (embed_prefix, the PaliGemma language
  model with token_type_ids 0, a DynamicCache);
- the graph is captured per (batch, prefix length, dtype): a new instruction of another length
  captures another; its inputs are static buffers (prefix keys/values of every layer, state,
  attention masks, noise, time) that each chunk copies its values into;
- the step is what `sample_actions` calls: `model(state, noise, timestep, attention_mask,
  pixel_attention_mask, cache)`, whose cache appends the suffix keys/values to copies of the
  static prefix tensors (which is why those are restored after warm-up and capture).

A capture that fails (an operation that cannot be captured, in another transformers version)
is logged once and the eager loop is used from then on; the GPU tests compare both.
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


class GraphedDenoiser:
    """`sample(inputs, noise, num_steps)` -> (B, chunk_size, max_action_dim), like
    `model.sample_actions(noise=noise, num_steps=num_steps, **inputs)`."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.enabled = True
        self._captured: dict[tuple, _CapturedStep] = {}

    @property
    def captures(self) -> int:
        return len(self._captured)

    def sample(self, inputs: dict[str, torch.Tensor], noise: torch.Tensor, num_steps: int | None = None) -> torch.Tensor:
        model = self.model
        steps = int(num_steps or model.config.num_inference_steps)
        if not self.enabled or noise.device.type != "cuda":
            return model.sample_actions(noise=noise, num_steps=steps, **inputs)
        cache = encode_prefix(model, inputs)
        key = (tuple(inputs["input_ids"].shape), tuple(inputs["pixel_attention_mask"].shape), noise.dtype)
        step = self._captured.get(key)
        if step is None:
            try:
                step = self._capture(cache, inputs, noise)
            except RuntimeError as exc:  # an op that cannot be captured: eager from now on
                log.warning("π0: CUDA graph capture of the denoising step failed (%s); running it eagerly", exc)
                self.enabled = False
                torch.cuda.synchronize()
                return model.sample_actions(noise=noise, num_steps=steps, **inputs)
            self._captured[key] = step
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
        prefix = [(layer.keys, layer.values) for layer in layers]
        x = noise
        dt = -1.0 / steps
        for i in range(steps):
            time = torch.full((noise.shape[0],), 1.0 + i * dt, dtype=torch.float32, device=noise.device)
            velocity = model(state=inputs["state"], noise=x, timestep=time, attention_mask=inputs["attention_mask"],
                             pixel_attention_mask=inputs["pixel_attention_mask"], cache=cache).logits
            for layer, (k, v) in zip(layers, prefix):
                layer.keys, layer.values = k, v
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
        model = self.model
        layers = list(cache.layers)
        keys = [layer.keys.clone() for layer in layers]
        values = [layer.values.clone() for layer in layers]

        def restore() -> None:  # the step appends to the cache: point it back at the static prefix
            for layer, k, v in zip(layers, keys, values):
                layer.keys, layer.values = k, v

        state = inputs["state"].clone()
        attention_mask = inputs["attention_mask"].clone()
        pixel_attention_mask = inputs["pixel_attention_mask"].clone()
        x = noise.clone()
        time = torch.ones(noise.shape[0], dtype=torch.float32, device=noise.device)

        def run() -> torch.Tensor:
            return model(state=state, noise=x, timestep=time, attention_mask=attention_mask,
                         pixel_attention_mask=pixel_attention_mask, cache=cache).logits

        restore()
        side = torch.cuda.Stream(device=noise.device)
        side.wait_stream(torch.cuda.current_stream(noise.device))
        with torch.cuda.stream(side):  # warm-up off the capture stream, as CUDA graphs require
            for _ in range(2):
                run()
                restore()
        torch.cuda.current_stream(noise.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                velocity = run()
        finally:
            restore()
        return _CapturedStep(graph, keys, values, state, attention_mask, pixel_attention_mask, x, time, velocity)
