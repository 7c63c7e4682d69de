"""Benchmarks: one module per target, each with `add_arguments(parser)` and `run(args) -> dict`.

Results are plain dicts of numbers; `vla-ros bench <target> --json` prints them as one JSON line.
"""

from __future__ import annotations

import os


def bench_namespace(kind: str) -> str:
    """A ROS namespace no running graph uses (`/vla_ros_bench_<kind>_<pid>`): benches that publish an
    arm's joint_states or commands put every topic and service under it, so that a robot, sim or
    recorder on the default topics of the same ROS domain never hears them."""
    return f"/vla_ros_bench_{kind}_{os.getpid()}"
