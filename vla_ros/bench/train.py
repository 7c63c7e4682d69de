"""`vla-ros bench train`: throughput (samples/s) and peak memory of one training step per preset.

Each preset is sized for the embodiment (default fr3: its cameras, action space and state) and
measured in its own freshly spawned process (so one preset's freed memory, kept by the
allocator, does not hide the next one's). One timed step is what `vla-ros train` runs: a batch
of cached uint8 frames at the model's resolution -> augmentation (random resized crop + colour
jitter) -> tokenised instructions and normalised state -> the head's loss -> backward ->
gradient clipping -> AdamW. Reported per preset: parameters (trainable with --lora), step time
p50 / p99, samples/s at the median step, the data part of a step, and the peak resident memory
above the process's footprint before the model was built (CPU) or the peak allocated CUDA memory
in bf16 autocast (GPU, when one exists).
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

DEFAULT_PRESETS = ("default", "rt1", "openvla", "octo", "pi0")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--presets", default=",".join(DEFAULT_PRESETS),
                        help=f"comma-separated presets (default: {','.join(DEFAULT_PRESETS)})")
    parser.add_argument("--embodiment", default="fr3", help="embodiment whose cameras/actions size the model")
    parser.add_argument("--batch-size", type=int, default=8, help="samples per step (default 8)")
    parser.add_argument("--iterations", type=int, default=5, help="timed steps per preset (default 5)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: on a shared machine more threads spin and are slower)")
    parser.add_argument("--lora", action="store_true", help="measure LoRA fine-tuning (rank 32) instead of full")


def _sized_config(spec, preset: str):
    from vla_ros.core.action_spaces import action_names
    from vla_ros.policies.vla.policy import state_names
    from vla_ros.policies.vla.presets import make_config

    base = make_config(preset)
    return make_config(preset, action_dim=len(action_names(spec, spec.action_space)),
                       camera_slots=tuple(c.slot for c in spec.cameras),
                       state_dim=len(state_names(spec)) if base.state_dim else 0)


def _measure(preset: str, embodiment: str, batch: int, iterations: int, threads: int, lora: bool) -> dict:
    """One preset's numbers; runs in a fresh process."""
    import torch

    from vla_ros.bench.policy import _proc_status_mb, _reset_peak_rss, latency_percentiles
    from vla_ros.core.embodiment import load_embodiment
    from vla_ros.policies.vla.model import VLAModel
    from vla_ros.policies.vla.training import LossModule, inputs_from_pixels
    from vla_ros.train.augment import AugmentConfig, augment, sample_params

    torch.set_num_threads(threads)
    spec = load_embodiment(embodiment)
    cfg = _sized_config(spec, preset)
    rng = np.random.default_rng(0)
    size, cams = cfg.vision.image_size, len(cfg.camera_slots)
    frames = rng.integers(0, 256, (batch, cams, size, size, 3), dtype=np.uint8)
    instructions = ["pick up the red cube"] * batch
    states = rng.uniform(-0.5, 0.5, (batch, cfg.state_dim)) if cfg.state_dim else None
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    gc.collect()
    exact_peak = _reset_peak_rss()
    rss_before = _proc_status_mb("VmRSS")
    torch.manual_seed(0)
    model = VLAModel(cfg)
    if lora:
        from vla_ros.train.lora import apply_lora

        apply_lora(model)
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    loss_fn = LossModule(model)
    actions = torch.from_numpy(rng.uniform(-0.9, 0.9, (batch, cfg.chunk_size, cfg.action_dim)).astype(np.float32))
    aug = AugmentConfig()
    gen = torch.Generator().manual_seed(0)
    if cuda:
        torch.cuda.reset_peak_memory_stats()

    def step() -> float:
        t0 = time.perf_counter()
        x = torch.from_numpy(frames).permute(0, 1, 4, 2, 3).reshape(batch * cams, 3, size, size).float() / 255.0
        x = augment(x, sample_params(aug, batch * cams, gen)).reshape(batch, cams, 3, size, size)
        inputs = inputs_from_pixels(model, x, instructions, states)
        data_s = time.perf_counter() - t0
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            loss = loss_fn(inputs, actions.to(device), gen if not cuda else None)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if cuda:
            torch.cuda.synchronize()
        return data_s

    step()  # untimed: lazy initialisation, optimiser state
    times, data = [], []
    for _ in range(iterations):
        t0 = time.perf_counter()
        data.append(step())
        times.append(time.perf_counter() - t0)
    lat = latency_percentiles(times)
    entry = {
        "parameters": model.num_parameters(),
        "trainable_parameters": model.num_parameters(trainable_only=True),
        "image_size": size,
        "chunk": [cfg.chunk_size, cfg.action_dim],
        "step_ms": lat,
        "data_ms_p50": round(float(np.median(data)) * 1e3, 2),
        "samples_per_s": round(batch / (lat["p50_ms"] / 1e3), 2),
        "device": torch.cuda.get_device_name(0) + " bf16" if cuda else f"cpu float32, {threads} threads",
    }
    peak = _proc_status_mb("VmHWM") if exact_peak else _proc_status_mb("VmRSS")
    entry["peak_rss_delta_mb" if exact_peak else "rss_delta_mb"] = round(peak - rss_before, 1)
    if cuda:
        entry["cuda_peak_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return entry


def run(args: argparse.Namespace) -> dict:
    import torch

    from vla_ros.core.embodiment import load_embodiment
    from vla_ros.policies.vla.presets import PRESETS

    presets = [p.strip() for p in getattr(args, "presets", ",".join(DEFAULT_PRESETS)).split(",") if p.strip()]
    unknown = [p for p in presets if p not in PRESETS]
    if not presets or unknown:
        raise ValueError(f"unknown preset(s) {unknown}; valid: {', '.join(PRESETS)}")
    batch, iterations, threads = int(args.batch_size), int(args.iterations), int(getattr(args, "threads", 1))
    for name, value in (("--batch-size", batch), ("--iterations", iterations), ("--threads", threads)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    spec = load_embodiment(getattr(args, "embodiment", "fr3"))
    lora = bool(getattr(args, "lora", False))
    result: dict = {
        "embodiment": spec.name,
        "batch_size": batch,
        "iterations": iterations,
        "threads": threads,
        "mode": "lora rank 32" if lora else "full",
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "presets": {},
    }
    spawn = multiprocessing.get_context("spawn")
    for preset in presets:
        with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
            result["presets"][preset] = pool.submit(_measure, preset, spec.config_path, batch, iterations, threads,
                                                    lora).result()
    return result
