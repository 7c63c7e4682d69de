"""`vla-ros bench policy`: VLA latency per action chunk for each head at the default model size.

Each head is the `default` preset (tiny SigLIP-style encoder, tiny Llama) with that head, sized
for the embodiment (default fr3: two 224x224 cameras, 7-D ee_delta actions, 8-D state). One
timed call is `VLAPolicy.infer(observation)`: preprocessing, the model and un-normalisation,
exactly what the policy node runs per chunk. Reported per head:

- p50 / p99 ms per chunk on the CPU with torch.set_num_threads(1) and (2) (the machine may be
  shared, so both are given), and in bf16 on CUDA with the card's name when a GPU exists;
- parameter count and size;
- peak resident memory (MiB) above the process's footprint before the model was built. Each
  head is measured in its own freshly spawned process, so that one head's freed memory, kept
  by the allocator, does not hide the next head's.
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

DEFAULT_HEADS = ("flow", "diffusion_ddpm", "diffusion_ddim", "discrete_parallel", "discrete_autoregressive")
TARGET_P50_MS = 50.0

# head name -> VLAConfig overrides of the default preset
HEAD_OVERRIDES: dict[str, dict] = {
    "flow": {"head": {"kind": "flow"}},
    "diffusion_ddpm": {"head": {"kind": "diffusion", "sampler": "ddpm"}},
    "diffusion_ddim": {"head": {"kind": "diffusion", "sampler": "ddim"}},
    # Discrete tokens cover [-1, 1]: the head needs OpenVLA's bounded rule, not the default's quantile.
    "discrete_parallel": {"head": {"kind": "discrete", "parallel": True}, "action_norm": "bounds_q99"},
    "discrete_autoregressive": {"head": {"kind": "discrete", "parallel": False}, "action_norm": "bounds_q99"},
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--heads", default=",".join(DEFAULT_HEADS),
                        help=f"comma-separated heads to measure, of: {', '.join(HEAD_OVERRIDES)}")
    parser.add_argument("--embodiment", default="fr3", help="embodiment whose cameras/actions size the model")
    parser.add_argument("--iterations", type=int, default=30, help="timed chunks per head and setting (default 30)")
    parser.add_argument("--threads", default="1,2", help="comma-separated CPU thread counts (default 1,2)")


def _proc_status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"/proc/self/status has no {field} line")


def _reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark (VmHWM) of this process; False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _observation(spec, rng: np.random.Generator):
    from vla_ros.core.types import Observation
    from vla_ros.policies.vla.policy import state_names

    names = state_names(spec)
    return Observation(
        stamp_s=0.0,
        images={c.slot: rng.integers(0, 256, (c.height, c.width, 3), dtype=np.uint8) for c in spec.cameras},
        joint_names=names,
        joint_positions=rng.uniform(-0.3, 0.3, len(names)),
        instruction="pick up the red cube and put it in the bowl",
    )


def _time_chunks(policy, obs, iterations: int, sync=None) -> dict:
    policy.infer(obs)  # one untimed call after any thread/device change
    samples = []
    for _ in range(iterations):
        start = time.perf_counter()
        policy.infer(obs)
        if sync is not None:
            sync()
        samples.append(time.perf_counter() - start)
    return latency_percentiles(samples)


def latency_percentiles(samples_s) -> dict[str, float]:
    """{"p50_ms", "p99_ms"} of durations in seconds."""
    arr = np.asarray(samples_s) * 1e3
    return {"p50_ms": round(float(np.percentile(arr, 50)), 2), "p99_ms": round(float(np.percentile(arr, 99)), 2)}


def _parse_list(text: str, what: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise ValueError(f"--{what} must name at least one item")
    return items


def _measure_head(head: str, embodiment: str, iterations: int, threads: list[int]) -> dict:
    """One head's numbers; runs in a fresh process (see module doc)."""
    import torch

    from vla_ros.core.embodiment import load_embodiment
    from vla_ros.policies.vla.policy import make_vla_policy

    spec = load_embodiment(embodiment)
    obs = _observation(spec, np.random.default_rng(0))
    gc.collect()
    exact_peak = _reset_peak_rss()
    rss_before = _proc_status_mb("VmRSS")
    policy = make_vla_policy(spec, preset="default", device="cpu", warmup=False, **HEAD_OVERRIDES[head])
    model = policy.model
    entry: dict = {
        "parameters": model.num_parameters(),
        "parameter_mb": round(sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20, 2),
        "chunk": [model.config.chunk_size, model.config.action_dim],
    }
    for n in threads:
        torch.set_num_threads(n)
        entry[f"cpu_threads_{n}"] = _time_chunks(policy, obs, iterations)
    # Without a reset the high-water mark includes start-up; then only the growth is known.
    peak = _proc_status_mb("VmHWM") if exact_peak else _proc_status_mb("VmRSS")
    entry["peak_rss_delta_mb" if exact_peak else "rss_delta_mb"] = round(peak - rss_before, 1)
    del policy, model
    if torch.cuda.is_available():
        gpu = make_vla_policy(spec, preset="default", device="cuda", warmup=False, **HEAD_OVERRIDES[head])
        torch.cuda.reset_peak_memory_stats()
        entry["cuda_bf16"] = _time_chunks(gpu, obs, iterations, sync=torch.cuda.synchronize)
        entry["cuda_bf16"]["peak_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return entry


def run(args: argparse.Namespace) -> dict:
    import torch

    from vla_ros.core.embodiment import load_embodiment

    heads = _parse_list(getattr(args, "heads", ",".join(DEFAULT_HEADS)), "heads")
    unknown = [h for h in heads if h not in HEAD_OVERRIDES]
    if unknown:
        raise ValueError(f"unknown head(s) {unknown}; valid: {', '.join(HEAD_OVERRIDES)}")
    threads = [int(t) for t in _parse_list(getattr(args, "threads", "1,2"), "threads")]
    if any(t < 1 for t in threads):
        raise ValueError(f"--threads must be positive integers, got {threads}")
    iterations = int(getattr(args, "iterations", 30))
    if iterations < 1:
        raise ValueError(f"--iterations must be >= 1, got {iterations}")
    spec = load_embodiment(getattr(args, "embodiment", "fr3"))
    cuda = torch.cuda.is_available()
    result: dict = {
        "embodiment": spec.name,
        "preset": "default",
        "cameras": [f"{c.slot} {c.width}x{c.height}" for c in spec.cameras],
        "iterations": iterations,
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "cuda_device": torch.cuda.get_device_name(0) if cuda else None,
        "target_p50_ms": TARGET_P50_MS,
        "heads": {},
    }
    spawn = multiprocessing.get_context("spawn")
    for head in heads:
        with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
            result["heads"][head] = pool.submit(_measure_head, head, spec.config_path, iterations, threads).result()
    if "flow" in result["heads"]:
        best = min(v["p50_ms"] for k, v in result["heads"]["flow"].items() if k.startswith("cpu_threads_"))
        result["default_head"] = "flow"
        result["default_meets_target"] = best < TARGET_P50_MS
    return result
