"""Bookkeeping of the captured CUDA graphs (the captures themselves need CUDA: test_cuda.py)."""

from __future__ import annotations

import logging

from vla_ros.policies.checkpoints.cuda_graphs import GraphedGreedyDecoder


def test_captures_are_kept_per_geometry_and_the_least_recently_used_goes_first():
    decoder = GraphedGreedyDecoder(lm=None)
    decoder.max_captures = 2
    made = []

    def capture(name):
        return lambda: made.append(name) or name

    assert decoder._lookup(("a",), capture("a")) == "a"
    assert decoder._lookup(("b",), capture("b")) == "b"
    assert decoder._lookup(("a",), capture("a2")) == "a"  # reused, now the most recent
    assert decoder._lookup(("c",), capture("c")) == "c"  # evicts b, not a
    assert made == ["a", "b", "c"] and decoder.captures == 2
    assert decoder._lookup(("a",), capture("a3")) == "a"
    assert decoder._lookup(("b",), capture("b2")) == "b2"  # b was evicted: captured again


def test_a_failed_capture_turns_graphs_off_with_a_warning(caplog):
    decoder = GraphedGreedyDecoder(lm=None)

    def broken():
        raise RuntimeError("operation not permitted when stream is capturing")

    with caplog.at_level(logging.WARNING):
        assert decoder._lookup(("a",), broken) is None
    assert not decoder.enabled and decoder.captures == 0
    assert "greedy decode step failed" in caplog.text and "running it eagerly" in caplog.text
