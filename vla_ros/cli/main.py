"""`vla-ros` entry point: a thin dispatcher over one module per subcommand.

Each subcommand module exposes `<name>_add_arguments(parser, argv)` (argv: the words after the
subcommand, for subcommands whose options depend on them) and `<name>_run(args) -> int`. Modules are
imported only when their subcommand runs, so `vla-ros fk` never imports torch or rclpy.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys

# subcommand -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "fk": ("vla_ros.cli.kinematics_cmd:fk", "forward kinematics of a frame for given joints (JSON)"),
    "ik": ("vla_ros.cli.kinematics_cmd:ik", "inverse kinematics of a pose (JSON)"),
    "bench": ("vla_ros.cli.bench:bench", "benchmarks: kinematics, policy, controller, pipeline"),
    "demo": ("vla_ros.cli.demo:demo", "run the full graph against the MuJoCo simulation"),
    "eval": ("vla_ros.cli.eval_cmd:eval", "success rate of a policy over N seeded episodes through the graph"),
    "train": ("vla_ros.cli.train_cmd:train", "train or fine-tune the VLA on LeRobotDataset v3.0 folders"),
    "checkpoint": ("vla_ros.cli.checkpoint_cmd:checkpoint", "write, inspect or try an OpenVLA / pi0 checkpoint folder"),
    "teleop": ("vla_ros.cli.teleop_cmd:teleop", "teleoperate an arm: keyboard (this terminal), gamepad, SpaceMouse, ALOHA leaders"),
    "record": ("vla_ros.cli.record_cmd:record", "record demonstrations into a LeRobotDataset v3.0 folder"),
    "dataset": ("vla_ros.cli.dataset_cmd:dataset", "inspect, view or import (rosbag2) a LeRobotDataset v3.0 folder"),
}


class _ArgumentParser(argparse.ArgumentParser):
    """argparse that reads a word starting with a minus and a digit as a value, not an option.

    Python < 3.13 takes only a lone negative number ("-0.3") as a value, so
    `--joints -0.3,0.2` failed with "expected one argument". No option of ours starts with a
    digit, so the words `-0.3,0.2`, `-1e-3` and `-.5,1` are always values. Subparsers inherit the
    class (argparse creates them with `type(self)`).
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = re.compile(r"^-\.?\d")


def _load(target: str):
    module_name, _, prefix = target.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, f"{prefix}_add_arguments"), getattr(module, f"{prefix}_run")


def _set_runtime_defaults() -> None:
    # Offline, headless, and DDS discovery restricted to this host unless the user says otherwise.
    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")


def main(argv: list[str] | None = None) -> int:
    _set_runtime_defaults()
    argv = sys.argv[1:] if argv is None else argv
    parser = _ArgumentParser(prog="vla-ros", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    # Only the chosen subcommand's module is imported.
    chosen = argv[0] if argv and argv[0] in SUBCOMMANDS else None
    runners = {}
    for name, (target, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        if name == chosen:
            add_arguments, run = _load(target)
            add_arguments(p, argv[1:])
            runners[name] = run
    args = parser.parse_args(argv)
    try:
        return int(runners[args.command](args) or 0)
    except RuntimeError as err:
        # the graph's own refusals (another simulation on this domain's clock, a failed lifecycle
        # transition, a reset that did not answer): the reason, not a traceback
        print(f"vla-ros {args.command}: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
