"""`vla-ros bench policy`: the numbers it reports belong to the model it describes."""

from __future__ import annotations

import argparse
import json

import pytest

from vla_ros.bench import policy as bench_policy
from vla_ros.cli.main import main


@pytest.mark.slow  # spawns one process per head (torch import each), ~15 s on 2 shared cores
def test_bench_policy_reports_latency_parameters_and_memory():
    args = argparse.Namespace(heads="flow,discrete_parallel", embodiment="fr3", iterations=3, threads="1")
    result = bench_policy.run(args)
    assert result["embodiment"] == "fr3" and set(result["heads"]) == {"flow", "discrete_parallel"}
    from vla_ros.policies.vla.policy import make_vla_policy

    for head, entry in result["heads"].items():
        model = make_vla_policy("fr3", warmup=False, **bench_policy.HEAD_OVERRIDES[head]).model
        assert entry["parameters"] == sum(p.numel() for p in model.parameters())
        assert entry["parameter_mb"] == pytest.approx(entry["parameters"] * 4 / 2**20, abs=0.01)
        assert entry["chunk"] == [16, 7]
        timing = entry["cpu_threads_1"]
        assert 0 < timing["p50_ms"] <= timing["p99_ms"]
        memory = entry.get("peak_rss_delta_mb", entry.get("rss_delta_mb"))
        assert memory > entry["parameter_mb"]  # at least the weights themselves
    assert result["default_head"] == "flow"
    assert result["default_meets_target"] == (result["heads"]["flow"]["cpu_threads_1"]["p50_ms"] < 50.0)


def test_bench_policy_refuses_unknown_heads():
    with pytest.raises(ValueError, match=r"unknown head\(s\) \['unet'\]"):
        bench_policy.run(argparse.Namespace(heads="unet", embodiment="fr3", iterations=1, threads="1"))


@pytest.mark.slow
def test_cli_prints_one_json_line(capsys):
    assert main(["bench", "policy", "--json", "--heads", "discrete_parallel", "--iterations", "2",
                 "--threads", "1"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert set(json.loads(last)["heads"]) == {"discrete_parallel"}
