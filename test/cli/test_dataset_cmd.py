"""`vla-ros dataset inspect | view | from-bag` on datasets and bags built in the test."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image
from rosbags.rosbag2 import StoragePlugin

from vla_ros.cli.main import main
from vla_ros.data.format import vector_feature
from vla_ros.data.writer import DatasetWriter

H, W = 32, 48


@pytest.fixture()
def dataset(tmp_path) -> Path:
    feats = {"observation.state": vector_feature(["j1", "gripper"]), "action": vector_feature(["j1", "gripper"]),
             "observation.images.front": {"dtype": "video", "shape": [H, W, 3]},
             "observation.images.wrist": {"dtype": "video", "shape": [H, W, 3]}}
    w = DatasetWriter.open(tmp_path / "ds", fps=10, robot_type="fr3", features=feats)
    for e, n in enumerate((6, 4)):
        ep = w.start_episode()
        for k in range(n):
            img = np.full((H, W, 3), 20 * k, np.uint8)
            ep.add_frame(k, {"observation.state": [0.1 * k, 1.0], "action": [0.1 * k + 0.05, 1.0]},
                         {"observation.images.front": img, "observation.images.wrist": 255 - img})
        w.save_episode(ep, f"task {e}")
    return tmp_path / "ds"


def test_inspect_json(dataset, capsys):
    assert main(["dataset", "inspect", str(dataset), "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (report["episodes"], report["frames"], report["fps"], report["robot_type"]) == (2, 10, 10, "fr3")
    assert report["tasks"] == ["task 0", "task 1"]
    assert [e["length"] for e in report["episode_list"]] == [6, 4]
    assert report["features"]["action"]["names"] == ["j1", "gripper"]
    np.testing.assert_allclose(report["stats"]["action"]["max"], [0.55, 1.0], atol=1e-6)
    np.testing.assert_allclose(report["stats"]["action"]["mean"],
                               [np.mean([0.1 * k + 0.05 for k in (*range(6), *range(4))]), 1.0], atol=1e-6)


def test_inspect_table_and_broken_folder(dataset, tmp_path, capsys):
    assert main(["dataset", "inspect", str(dataset)]) == 0
    out = capsys.readouterr().out
    assert "2 episodes, 10 frames" in out and "task 1" in out
    (dataset / "meta" / "info.json").write_text("{")
    assert main(["dataset", "inspect", str(dataset)]) == 2
    assert "info.json: not valid JSON" in capsys.readouterr().err


def test_view_writes_video_and_plot(dataset, tmp_path, capsys):
    assert main(["dataset", "view", str(dataset), "--episode", "1", "--out", str(tmp_path / "v")]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["frames"] == 4
    with av.open(report["video"]) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == 4 and frames[0].shape == (H, 2 * W, 3)  # the two cameras side by side
    assert abs(float(frames[2][:, :W].mean()) - 40) < 3 and abs(float(frames[2][:, W:].mean()) - 215) < 3
    with Image.open(report["plot"]) as img:
        assert img.size[0] > 500 and img.size[1] > 100


def test_from_bag(tmp_path, capsys):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
    from test_rosbag import write_bag

    write_bag(tmp_path / "bag", StoragePlugin.MCAP)
    assert main(["dataset", "from-bag", str(tmp_path / "bag"), "--embodiment", "fr3", "--out", str(tmp_path / "ds"),
                 "--instruction", "pick"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["episode"] == 0 and report["frames"] == 61 and report["task"] == "pick"
    assert main(["dataset", "from-bag", str(tmp_path / "missing"), "--embodiment", "fr3", "--out",
                 str(tmp_path / "ds")]) == 2
