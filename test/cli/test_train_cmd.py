"""`vla-ros train`: argument checks (fast); a LeRobotDataset written by the project's writer
trained through the command line, killed with SIGKILL mid-run and resumed: the same loss curve
and weights as an uninterrupted run (slow)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from test.train.helpers import TINY, write_dataset
from vla_ros.cli.train_cmd import config_from_args, train_add_arguments


def _args(*argv):
    parser = argparse.ArgumentParser()
    train_add_arguments(parser, list(argv))
    return parser.parse_args(list(argv))


def test_arguments_become_the_config():
    cfg = config_from_args(_args("--data", "a", "b", "--out", "o", "--steps", "7", "--lora", "--action-space",
                                 "joint_position", "--config", '{"chunk_size": 8}', "--no-augment",
                                 "--skip-missed-grasps"))
    assert cfg.data == ("a", "b") and cfg.steps == 7 and cfg.lora and cfg.lora_rank == 32 and cfg.skip_missed_grasps
    assert not config_from_args(_args("--data", "a", "--out", "o")).skip_missed_grasps
    assert cfg.action_space == "joint_position" and cfg.config_overrides == {"chunk_size": 8} and not cfg.augment


@pytest.mark.parametrize("argv, fragment", [
    (["--config", "{nope"], "--config is not valid JSON"),
    (["--config", "[1]"], "must be a JSON object"),
    (["--steps", "0"], "steps must be >= 1"),
    (["--from", "ckpt", "--chunk-size", "4"], "chunk_size / config overrides cannot be changed"),
])
def test_bad_arguments_are_named(argv, fragment):
    with pytest.raises(SystemExit, match=fragment):
        config_from_args(_args("--data", "d", "--out", "o", *argv))


def test_a_folder_that_is_no_dataset_exits_2_with_the_reason(tmp_path, capsys):
    from vla_ros.cli.train_cmd import train_run

    (tmp_path / "empty").mkdir()
    code = train_run(_args("--data", str(tmp_path / "empty"), "--out", str(tmp_path / "o"), "--no-progress"))
    assert code == 2
    assert "meta/info.json: missing" in capsys.readouterr().err


def _cmd(data, out, cache, steps):
    return [sys.executable, "-m", "vla_ros.cli.main", "train", "--data", str(data), "--out", str(out),
            "--config", json.dumps(TINY), "--steps", str(steps), "--batch-size", "4", "--save-every", "3",
            "--val-every", "4", "--val-episodes", "1", "--cache-dir", str(cache), "--threads", "1", "--seed", "2",
            "--no-progress"]


def _losses(out):
    return [(r["step"], r["loss"]) for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
            if "loss" in r]


@pytest.mark.slow
def test_killed_run_resumes_with_the_same_loss_curve(tmp_path):
    from vla_ros.policies.vla.model import VLAModel

    data = write_dataset(tmp_path / "ds", n=4, T=10)
    env = dict(os.environ)
    ref = subprocess.run(_cmd(data, tmp_path / "ref", tmp_path / "cache", 8) + ["--json"], capture_output=True,
                         text=True, timeout=600, env=env)
    assert ref.returncode == 0, ref.stderr[-3000:]
    summary = json.loads(ref.stdout.strip().splitlines()[-1])
    assert summary["episodes"] == 4 and summary["action_space"] == "ee_delta" and summary["steps"] == 8
    # The same run, killed once step 4 is logged (after the step-3 checkpoint), then resumed.
    out = tmp_path / "killed"
    proc = subprocess.Popen(_cmd(data, out, tmp_path / "cache", 8), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        metrics = out / "metrics.jsonl"
        if metrics.is_file() and any(s >= 4 for s, _ in _losses_safe(out)):
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "model.safetensors").exists()
    resumed = subprocess.run(_cmd(data, out, tmp_path / "cache", 8) + ["--resume"], capture_output=True, text=True,
                             timeout=600, env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stderr
    assert _losses(out) == _losses(tmp_path / "ref")
    a, b = VLAModel.from_pretrained(out).state_dict(), VLAModel.from_pretrained(tmp_path / "ref").state_dict()
    assert all(bool((a[k] == b[k]).all()) for k in a)


def _losses_safe(out):
    try:
        return _losses(out)
    except (json.JSONDecodeError, FileNotFoundError):
        return []
