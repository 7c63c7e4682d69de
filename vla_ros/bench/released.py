"""`vla-ros bench released`: inference latency of the released model sizes, OpenVLA-7B and π0.

The networks are the ones our checkpoint loaders build (vla_ros.policies.checkpoints), at the
published sizes, with random weights (no hub here, and a 15 GB download would not be the
point): latency depends on the architecture and the input sizes, not on the weight values.

- `openvla`: DINOv2 ViT-L/14-reg4 + SigLIP So400m/14 at 224 px, fused-GELU projector,
  Llama-2-7B (vocab 32064); one `OpenVLA.predict_action` per call (a 640x480 frame through the
  prismatic transform, the prompt, greedy decoding of 7 action tokens, un-normalisation), on
  CUDA with each decode step a CUDA graph (the default) and with the eager loop.
- `pi0`: transformers' PI0ForConditionalGeneration with its default PI0Config, i.e. π0's
  PaliGemma (SigLIP So400m/14 at 224 px + Gemma 2B) and the Gemma-300M action expert, chunk 50,
  10 Euler steps; one `Pi0.sample_actions` per call with three 640x480 cameras and a 14-D state
  (ALOHA), as the π0 paper times it; on CUDA with the denoising step as a CUDA graph (the
  default, vla_ros.policies.checkpoints.cuda_graphs) and with transformers' eager loop.

Reported per model: parameters, p50 / p99 ms of the whole call and of its parts (vision +
projector, prefix, decode or denoise), peak GPU memory. `--size tiny` builds the same code paths
at fixture sizes so the benchmark itself is tested on a CPU; `--size released` needs about
16 GB (OpenVLA, bf16) of accelerator memory and refuses to run on a CPU.

Published references (other GPUs): OpenVLA ~6 Hz on an RTX 4090 in bf16 without compilation
(OpenVLA paper); π0 73 ms per chunk on an RTX 4090 with three cameras (π0 paper, Table I).
"""

from __future__ import annotations

import argparse
import gc
import logging
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

MODELS = ("openvla", "pi0")
SIZES = ("released", "tiny")
INSTRUCTION = "pick up the red cube and put it in the bowl"
CAMERA_HW = (480, 640)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of: {', '.join(MODELS)}")
    parser.add_argument("--size", choices=SIZES, default="released",
                        help="released: the published sizes (accelerator only); tiny: fixture sizes (tests)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if present, else cpu)")
    parser.add_argument("--dtype", default=None, help="float32 / bfloat16 (default: bf16 on cuda, fp32 on cpu)")
    parser.add_argument("--iterations", type=int, default=20, help="timed calls per model (default 20)")


# ---- architectures ------------------------------------------------------------------------------

def openvla_arch(size: str):
    """OpenVLA-7B's dinosiglip-vit-so-224px + Llama-2-7B, or the fixture's tiny dimensions."""
    from transformers import LlamaConfig

    from vla_ros.policies.checkpoints.fixtures import LLAMA2_VOCAB_SIZE, OPENVLA_PAD_TO_MULTIPLE_OF
    from vla_ros.policies.checkpoints.openvla import OpenVLAArch, ViTDims

    vocab = LLAMA2_VOCAB_SIZE + OPENVLA_PAD_TO_MULTIPLE_OF
    if size == "released":
        # timm vit_large_patch14_reg4_dinov2 / vit_so400m_patch14_siglip_224; Llama-2-7b-hf config.
        dino = ViTDims(dim=1024, depth=24, heads=16, mlp=4096, patch=14, image_size=224, registers=4, hidden_act="gelu")
        siglip = ViTDims(dim=1152, depth=27, heads=16, mlp=4304, patch=14, image_size=224, registers=0,
                         hidden_act="gelu")
        llm = LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                          num_key_value_heads=32, vocab_size=vocab, max_position_embeddings=2048,
                          rms_norm_eps=1e-6, pad_token_id=LLAMA2_VOCAB_SIZE)
    else:
        dino = ViTDims(dim=32, depth=3, heads=16, mlp=128, patch=14, image_size=28, registers=4, hidden_act="gelu")
        siglip = ViTDims(dim=48, depth=2, heads=16, mlp=96, patch=14, image_size=28, registers=0, hidden_act="gelu")
        llm = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=4, vocab_size=vocab, max_position_embeddings=2048,
                          pad_token_id=LLAMA2_VOCAB_SIZE)
    return OpenVLAArch(dino, siglip, llm, "scale_factor")


def pi0_config(size: str):
    from transformers import PI0Config

    from vla_ros.policies.checkpoints.fixtures import tiny_pi0_config

    return PI0Config() if size == "released" else tiny_pi0_config()


# ---- timing -------------------------------------------------------------------------------------

def _timer(device) -> Callable[[], float]:
    import torch

    if device.type == "cuda":
        def now() -> float:
            torch.cuda.synchronize(device)
            return time.perf_counter()
        return now
    return time.perf_counter


def time_parts(parts: dict[str, Callable[[], Any]], iterations: int, now: Callable[[], float]) -> dict[str, dict]:
    """p50/p99 of each callable after one untimed warm-up call of each."""
    from vla_ros.bench.policy import latency_percentiles

    for fn in parts.values():
        fn()
    out = {}
    for name, fn in parts.items():
        samples = []
        for _ in range(iterations):
            start = now()
            fn()
            samples.append(now() - start)
        out[name] = latency_percentiles(samples)
    return out


def _randomize(model, seed: int = 0) -> None:
    """Weights at a trained network's scale: N(0, 0.02) matrices, unit norms, zero biases."""
    import torch

    gen = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2:
                p.normal_(0.0, 0.02, generator=gen)
            elif "norm" in name or "layernorm" in name or "scale" in name or "lambda" in name:
                p.fill_(1.0)
            else:
                p.zero_()


def _eagerly(wrapper, call: Callable[[], Any]) -> Callable[[], Any]:
    """`call` with the wrapper's (OpenVLA / Pi0) CUDA graphs turned off for its duration."""
    def run():
        wrapper.cuda_graphs = False
        try:
            return call()
        finally:
            wrapper.cuda_graphs = True
    return run


def _build(factory: Callable[[], Any], device, dtype):
    """Construct on the target device (a 7B model never passes through host memory), then cast."""
    import torch
    from transformers.initialization import no_init_weights

    with torch.device(device), no_init_weights():
        model = factory()
    _randomize(model)
    return model.to(dtype=dtype).eval()


# ---- the two models -------------------------------------------------------------------------------

def bench_openvla(size: str, device, dtype, iterations: int, workdir: Path) -> dict:
    import torch

    from vla_ros.policies.checkpoints.fixtures import DEFAULT_OPENVLA_STATS, write_llama_style_tokenizer
    from vla_ros.policies.checkpoints.openvla import (
        OpenVLA,
        OpenVLAModel,
        PrismaticImageTransform,
        PromptTokenizer,
    )

    arch = openvla_arch(size)
    write_llama_style_tokenizer(workdir)
    tokenizer = PromptTokenizer(workdir)
    model = _build(lambda: OpenVLAModel(arch, tokenizer.base_vocab_size, 256), device, dtype)
    side = arch.dino.image_size
    transform = PrismaticImageTransform(((side, side), (side, side)), ("bicubic", "bicubic"),
                                        ((0.485, 0.456, 0.406), (0.5, 0.5, 0.5)),
                                        ((0.229, 0.224, 0.225), (0.5, 0.5, 0.5)), "resize-naive")
    vla = OpenVLA(workdir, model, tokenizer, transform, DEFAULT_OPENVLA_STATS, device, dtype)
    image = np.random.default_rng(0).integers(0, 256, (*CAMERA_HW, 3), dtype=np.uint8)
    pixels, ids = vla.inputs(image, INSTRUCTION)
    dim = vla.action_dim("bridge_orig")

    def prefill():
        with torch.no_grad():
            return model.backbone(inputs_embeds=model.embed(pixels, ids), use_cache=True, logits_to_keep=1)

    def vision():
        with torch.no_grad():
            return model.projector(model.vision(pixels))

    def predict():
        return vla.predict_action(image, INSTRUCTION, "bridge_orig")

    now = _timer(device)
    timings = time_parts({
        "predict_action": predict,
        "predict_action_eager": _eagerly(vla, predict),
        "vision_projector": vision,
        "prefill_with_vision": prefill,
    }, iterations, now)
    action = predict()
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "prompt_tokens": int(ids.shape[1]),
        "image_tokens": arch.dino.num_patches,
        "action_tokens": dim,
        "action_finite": bool(np.all(np.isfinite(action))),
        "cuda_graphs": vla.cuda_graphs_in_use,
        "hz": round(1e3 / timings["predict_action"]["p50_ms"], 2),
        **timings,
    }


def bench_pi0(size: str, device, dtype, iterations: int, workdir: Path) -> dict:
    import json

    from transformers import PI0ForConditionalGeneration

    from vla_ros.core.normalization import NormStats
    from vla_ros.policies.checkpoints.fixtures import aloha_openpi_norm_stats, write_gemma_style_tokenizer
    from vla_ros.policies.checkpoints.pi0 import Pi0, Pi0PromptTokenizer

    config = pi0_config(size)
    vocab = int(config.vlm_config.text_config.vocab_size)
    write_gemma_style_tokenizer(workdir, vocab)
    stats_path = workdir / "norm_stats.json"
    stats_path.write_text(json.dumps(aloha_openpi_norm_stats(dims=14, padded_to=int(config.max_action_dim))))
    model = _build(lambda: PI0ForConditionalGeneration(config), device, dtype)
    pi0 = Pi0(workdir, model, Pi0PromptTokenizer(workdir, config.vlm_config.image_token_id),
              NormStats.from_openpi(stats_path), "", device, dtype)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (*CAMERA_HW, 3), dtype=np.uint8) for _ in range(3)]
    state = rng.uniform(-0.5, 0.5, 14)

    def sample(steps: int | None = None):
        return pi0.sample_actions(images, INSTRUCTION, state, 14, num_steps=steps)

    now = _timer(device)
    timings = time_parts({
        "sample_actions": sample,
        "sample_actions_1_step": lambda: sample(1),
        "sample_actions_eager": _eagerly(pi0, sample),
    }, iterations, now)
    # Each extra Euler step re-runs only the expert over the cached prefix.
    steps = int(config.num_inference_steps)
    per_step = (timings["sample_actions"]["p50_ms"] - timings["sample_actions_1_step"]["p50_ms"]) / max(steps - 1, 1)
    actions = sample()
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "cameras": len(images),
        "image_tokens": pi0.tokens_per_image * len(images),
        "chunk": list(actions.shape),
        "flow_steps": steps,
        "actions_finite": bool(np.all(np.isfinite(actions))),
        "cuda_graphs": pi0.cuda_graphs_in_use,
        "expert_step_p50_ms": round(per_step, 2),
        "chunks_per_s": round(1e3 / timings["sample_actions"]["p50_ms"], 2),
        **timings,
    }


def run(args: argparse.Namespace) -> dict:
    import torch

    from vla_ros.policies.checkpoints.common import pick_device_dtype

    models = [m.strip() for m in str(getattr(args, "models", ",".join(MODELS))).split(",") if m.strip()]
    unknown = [m for m in models if m not in MODELS]
    if not models or unknown:
        raise ValueError(f"--models must name some of {', '.join(MODELS)}; got {models}")
    size = getattr(args, "size", "released")
    if size not in SIZES:
        raise ValueError(f"--size must be one of {SIZES}, got {size!r}")
    iterations = int(getattr(args, "iterations", 20))
    if iterations < 1:
        raise ValueError(f"--iterations must be >= 1, got {iterations}")
    device, dtype = pick_device_dtype(getattr(args, "device", None), getattr(args, "dtype", None))
    if size == "released" and device.type == "cpu":
        raise ValueError("--size released builds 3-7.5 billion parameter models and needs an accelerator "
                         "(torch.cuda.is_available() is False here); use --size tiny on a CPU")
    result: dict = {
        "size": size, "device": str(device), "dtype": str(dtype).removeprefix("torch."),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "iterations": iterations, "models": {},
    }
    bench = {"openvla": bench_openvla, "pi0": bench_pi0}
    # Random weights emit non-action tokens; the loader's per-call warning would flood the output.
    logging.getLogger("vla_ros.policies.checkpoints.openvla").setLevel(logging.ERROR)
    for name in models:
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        with tempfile.TemporaryDirectory(prefix=f"vla_ros_bench_{name}_") as tmp:
            entry = bench[name](size, device, dtype, iterations, Path(tmp))
        if device.type == "cuda":
            entry["peak_gpu_memory_gb"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
        result["models"][name] = entry
        gc.collect()  # the model goes before the next one is built
    return result
