"""`vla-ros checkpoint`: write, inspect and try released-checkpoint folders (OpenVLA, π0), as JSON.

    vla-ros checkpoint fixture openvla /tmp/openvla-tiny     # tiny folder in the released layout
    vla-ros checkpoint inspect /path/to/openvla-7b           # validates every file, key and shape
    vla-ros checkpoint predict /path/to/openvla-7b --image frame.png \\
        --instruction "put the carrot on the plate" --unnorm-key bridge_orig

The folder kind is read from config.json (`model_type` "openvla" or "pi0"). `predict` runs one
inference and reports the un-normalised action(s) and the wall time of the inference. A broken
folder exits with status 2 and one line on stderr naming the file and key.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

_EXIT_BAD_INPUT = 2


def checkpoint_add_arguments(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True
    fx = sub.add_parser("fixture", help="write a tiny checkpoint folder in a released layout")
    fx.add_argument("kind", choices=("openvla", "pi0"))
    fx.add_argument("path", type=Path)
    fx.add_argument("--seed", type=int, default=0)
    ins = sub.add_parser("inspect", help="load a checkpoint folder and summarise it")
    ins.add_argument("path", type=Path)
    ins.add_argument("--unnorm-key", default=None, help="π0: openpi asset id when several are present")
    pr = sub.add_parser("predict", help="one inference on an image (and state) from files")
    pr.add_argument("path", type=Path)
    pr.add_argument("--image", type=Path, action="append", required=True,
                    help="RGB image file; repeat for π0's cameras, in the checkpoint's camera order")
    pr.add_argument("--instruction", required=True)
    pr.add_argument("--unnorm-key", default=None, help="OpenVLA dataset / π0 asset id")
    pr.add_argument("--state", default=None, help="π0: comma-separated state vector")
    pr.add_argument("--action-dim", type=int, default=None, help="π0: action dims to keep (default: state dims)")
    pr.add_argument("--seed", type=int, default=0, help="π0: noise seed")
    for p in (ins, pr):
        p.add_argument("--device", default=None, help="torch device (default: cuda if present, else cpu)")
        p.add_argument("--dtype", default=None, help="float32 / bfloat16 (default: bf16 on cuda, fp32 on cpu)")


def _kind(path: Path) -> str:
    from vla_ros.policies.checkpoints.common import read_json

    model_type = read_json(path, "config.json").get("model_type")
    if model_type not in ("openvla", "pi0"):
        raise ValueError(f"{path / 'config.json'}: model_type {model_type!r} is neither 'openvla' nor 'pi0'")
    return str(model_type)


def _load_image(path: Path) -> np.ndarray:
    from PIL import Image

    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    return np.asarray(Image.open(path).convert("RGB"))


def _inspect(args: argparse.Namespace) -> dict[str, Any]:
    kind = _kind(args.path)
    if kind == "openvla":
        from vla_ros.policies.checkpoints.openvla import load_openvla

        vla = load_openvla(args.path, device=args.device, dtype=args.dtype)
        arch = vla.model.arch
        return {
            "kind": kind, "path": str(args.path), "parameters": sum(p.numel() for p in vla.model.parameters()),
            "dino": {"dim": arch.dino.dim, "depth": arch.dino.depth, "image_size": arch.dino.image_size},
            "siglip": {"dim": arch.siglip.dim, "depth": arch.siglip.depth, "image_size": arch.siglip.image_size},
            "llm": {"hidden_size": arch.llm.hidden_size, "layers": arch.llm.num_hidden_layers,
                    "vocab_size": arch.llm.vocab_size},
            "unnorm_keys": {k: vla.action_dim(k) for k in vla.unnorm_keys},
            # which file each key's statistics came from (dataset_statistics.json wins, as in OpenVLA)
            "unnorm_key_sources": {k: vla.stats_sources[k] for k in vla.unnorm_keys},
            "default_unnorm_key": vla.default_unnorm_key,
            "device": str(vla.device), "dtype": str(vla.dtype).replace("torch.", ""),
        }
    from vla_ros.policies.checkpoints.pi0 import load_pi0

    pi0 = load_pi0(args.path, args.unnorm_key, device=args.device, dtype=args.dtype)
    cfg = pi0.config
    return {
        "kind": kind, "path": str(args.path), "parameters": sum(p.numel() for p in pi0.model.parameters()),
        "chunk_size": cfg.chunk_size, "max_action_dim": cfg.max_action_dim, "max_state_dim": cfg.max_state_dim,
        "num_inference_steps": cfg.num_inference_steps, "image_size": pi0.image_size, "asset_id": pi0.asset_id,
        "data_config": pi0.data_config,  # the openpi transforms Pi0Policy applies (pi0_transforms)
        "state_stats_dim": pi0.stats["state"].dim, "action_stats_dim": pi0.stats["action"].dim,
        "device": str(pi0.device), "dtype": str(pi0.dtype).replace("torch.", ""),
    }


def _predict(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    kind = _kind(args.path)
    images = [_load_image(p) for p in args.image]
    if kind == "openvla":
        from vla_ros.policies.checkpoints.openvla import load_openvla

        if len(images) != 1:
            raise ValueError(f"OpenVLA takes one image, got {len(images)}")
        vla = load_openvla(args.path, device=args.device, dtype=args.dtype)
        t0 = time.perf_counter()
        action = vla.predict_action(images[0], args.instruction, args.unnorm_key)
        return {"kind": kind, "action": action.tolist(), "inference_s": time.perf_counter() - t0}
    from vla_ros.policies.checkpoints.pi0 import load_pi0

    if args.state is None:
        raise ValueError("π0 needs --state (comma-separated)")
    try:
        state = np.array([float(v) for v in args.state.split(",")])
    except ValueError:
        raise ValueError(f"--state must be comma-separated numbers, got '{args.state}'") from None
    pi0 = load_pi0(args.path, args.unnorm_key, device=args.device, dtype=args.dtype)
    cfg = pi0.config
    noise = torch.randn((1, cfg.chunk_size, cfg.max_action_dim), generator=torch.Generator().manual_seed(args.seed))
    t0 = time.perf_counter()
    actions = pi0.sample_actions(images, args.instruction, state, args.action_dim or state.shape[0], noise=noise)
    return {"kind": kind, "actions": actions.tolist(), "inference_s": time.perf_counter() - t0}


def checkpoint_run(args: argparse.Namespace) -> int:
    from vla_ros.policies.checkpoints.common import CheckpointError

    try:
        if args.action == "fixture":
            from vla_ros.policies.checkpoints import fixtures

            writer = fixtures.write_openvla_fixture if args.kind == "openvla" else fixtures.write_pi0_fixture
            path = writer(args.path, seed=args.seed)
            result: dict[str, Any] = {"kind": args.kind, "path": str(path),
                                      "files": sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())}
        elif args.action == "inspect":
            result = _inspect(args)
        else:
            result = _predict(args)
    except (CheckpointError, ValueError, KeyError, FileNotFoundError) as exc:
        print(f"vla-ros checkpoint: {exc}", file=sys.stderr)
        return _EXIT_BAD_INPUT
    print(json.dumps(result, indent=2))
    return 0
