"""Benchmarks: one module per target, each with `add_arguments(parser)` and `run(args) -> dict`.

Results are plain dicts of numbers; `vla-ros bench <target> --json` prints them as one JSON line.
"""
