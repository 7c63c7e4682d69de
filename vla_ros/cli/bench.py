"""`vla-ros bench <target>`: print benchmark numbers (human table, or one JSON line with --json)."""

from __future__ import annotations

import argparse
import importlib
import json

TARGETS = {
    "kinematics": "vla_ros.bench.kinematics",
    "controller": "vla_ros.bench.controller",
    "policy": "vla_ros.bench.policy",
    "pipeline": "vla_ros.bench.pipeline",
    "released": "vla_ros.bench.released",
    "train": "vla_ros.bench.train",
    "record": "vla_ros.bench.record",
    "safety": "vla_ros.bench.safety",
}


def bench_add_arguments(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    parser.add_argument("target", choices=sorted(TARGETS), help="what to measure")
    parser.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    # Each target may add its own options; only the chosen target's module is imported.
    target = next((a for a in argv if a in TARGETS), None)
    if target is not None:
        module = importlib.import_module(TARGETS[target])
        if hasattr(module, "add_arguments"):
            module.add_arguments(parser)


def _print_table(result: dict, prefix: str = "") -> None:
    for key, value in result.items():
        if isinstance(value, dict):
            _print_table(value, prefix=f"{prefix}{key}.")
        else:
            print(f"{prefix}{key}: {value}")


def bench_run(args: argparse.Namespace) -> int:
    module = importlib.import_module(TARGETS[args.target])
    result = module.run(args)
    if args.json:
        print(json.dumps(result))
    else:
        _print_table(result)
    return 0
