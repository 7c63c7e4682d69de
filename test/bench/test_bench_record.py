"""`vla-ros bench record` at a small size: the numbers it reports are consistent with the dataset it
wrote (the full-size run, 3 x 640x480 at 30 Hz for 60 s, is measured by hand; see the README)."""

from __future__ import annotations

import argparse
import json

import pytest

from vla_ros.bench import record
from vla_ros.data import LeRobotDataset

pytestmark = pytest.mark.slow


@pytest.mark.xfail(strict=False, reason="known, open (issue 13): when the recorder subprocess is starved at start-up the "
                   "bench's frame accounting is off (seen: 19 recorded + 146 counted drops for 120 published; 47 + 80); "
                   "passes when the machine is idle")
def test_bench_record_small(tmp_path):
    parser = argparse.ArgumentParser()
    record.add_arguments(parser)
    args = parser.parse_args(["--duration-s", "4", "--cameras", "2", "--width", "160", "--height", "120",
                              "--keep", str(tmp_path / "ds")])
    result = record.run(args)
    json.dumps(result)
    ds = LeRobotDataset(tmp_path / "ds")
    assert ds.num_episodes == 1 and ds.camera_keys == ["observation.images.cam0", "observation.images.cam1"]
    ep = ds.episode(0)
    assert result["frames_recorded"] == ep.length
    assert result["frames_expected"] == 120
    # every published frame period between start and save is a row or a counted drop
    assert abs(ep.length + result["dropped_frames"] - result["frames_published"]) <= 3
    assert ep.frames("observation.images.cam1").shape == (ep.length, 120, 160, 3)
    assert result["bytes_per_s"] > 0 and 0 < result["recorder_cpu_percent"] < 400
    assert result["encode_ms_per_frame"] > 0 and result["encode_latency_max_s"] >= 0
