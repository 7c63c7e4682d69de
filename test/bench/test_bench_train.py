"""`vla-ros bench train`: the numbers belong to the model and step they describe."""

from __future__ import annotations

import argparse

import pytest

from vla_ros.bench import train as bench_train


def _args(**kw):
    base = dict(presets="rt1", embodiment="fr3", batch_size=2, iterations=1, threads=1, lora=False)
    base.update(kw)
    return argparse.Namespace(**base)


@pytest.mark.slow  # one spawned process (torch import) per preset
# Multi-process timing under load (a 2-core CI machine): rerun up to twice; failures seen in full runs are
# listed in the closing note of 2026-12-05 (issue 11/13), not hidden here.
@pytest.mark.flaky(reruns=2)
def test_bench_train_reports_throughput_and_memory_of_the_sized_model():
    from vla_ros.core.embodiment import load_embodiment
    from vla_ros.policies.vla.model import VLAModel

    result = bench_train.run(_args(presets="rt1,octo"))
    assert result["embodiment"] == "fr3" and result["mode"] == "full" and set(result["presets"]) == {"rt1", "octo"}
    spec = load_embodiment("fr3")
    for preset, entry in result["presets"].items():
        cfg = bench_train._sized_config(spec, preset)
        params = VLAModel(cfg).num_parameters()
        assert entry["parameters"] == params == entry["trainable_parameters"]
        assert entry["chunk"] == [cfg.chunk_size, 7] and entry["image_size"] == cfg.vision.image_size
        assert entry["samples_per_s"] == pytest.approx(2 / (entry["step_ms"]["p50_ms"] / 1e3), rel=1e-3)
        assert 0 < entry["data_ms_p50"] < entry["step_ms"]["p50_ms"]
        memory = entry.get("peak_rss_delta_mb", entry.get("rss_delta_mb"))
        assert memory > 4 * params * 4 / 2**20  # weights, gradients and AdamW's two moments at least


@pytest.mark.slow
def test_lora_mode_trains_fewer_parameters():
    entry = bench_train.run(_args(presets="default", lora=True))["presets"]["default"]
    assert 0 < entry["trainable_parameters"] < entry["parameters"]


def test_unknown_presets_and_bad_sizes_are_refused():
    with pytest.raises(ValueError, match=r"unknown preset\(s\) \['gpt'\]"):
        bench_train.run(_args(presets="gpt"))
    with pytest.raises(ValueError, match="--batch-size must be >= 1"):
        bench_train.run(_args(batch_size=0))
