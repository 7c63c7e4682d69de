"""`vla-ros record`: argument checks (fast) and a scripted episode recorded through the demo graph (slow)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vla_ros.cli.record_cmd import record_add_arguments, record_run
from vla_ros.data import LeRobotDataset


def _args(*argv):
    parser = argparse.ArgumentParser()
    record_add_arguments(parser, list(argv))
    return parser.parse_args(list(argv))


def test_defaults_and_bad_arguments(tmp_path):
    args = _args("--out", str(tmp_path / "ds"))
    assert (args.embodiment, args.policy, args.episodes, args.fps, args.seed) == ("fr3", "scripted", 10, 30, 0)
    with pytest.raises(SystemExit, match="--episodes"):
        record_run(_args("--out", str(tmp_path / "ds"), "--episodes", "0"))
    with pytest.raises(SystemExit, match="--timeout-s"):
        record_run(_args("--out", str(tmp_path / "ds"), "--timeout-s", "-1"))


@pytest.mark.slow
# Multi-process timing under load (a 2-core CI machine): rerun up to twice; failures seen in full runs are
# listed in the closing note of 2026-12-05 (issue 11/13), not hidden here.
@pytest.mark.flaky(reruns=2)
def test_records_scripted_episodes_and_appends(tmp_path):
    out = tmp_path / "ds"
    exe = Path(sys.executable).parent / "vla-ros"
    cmd = [str(exe), "record", "--embodiment", "fr3", "--out", str(out), "--episodes", "1", "--timeout-s", "2.5",
           "--keep-failures", "--seed", "3"]
    for run in range(2):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=dict(os.environ))
        assert proc.returncode == 0, proc.stderr[-3000:]
        summary = json.loads(proc.stdout.strip().splitlines()[-1])
        assert summary["saved"] == 1 and summary["total_episodes"] == run + 1
        assert "episode 1/1" in proc.stdout
    ds = LeRobotDataset(out)
    assert ds.num_episodes == 2 and ds.tasks  # the sim's instruction
    ep = ds.episode(1)
    meta = ds.episode_meta(1)
    # ~2.5 s at 30 fps: every slot a row, but those before the policy's first chunk (counted as dropped)
    reasons = json.loads(meta["dropped_reasons"] or "{}")
    assert set(reasons) <= {"no action chunk from the source yet"}, reasons
    assert ep.length == summary["frames"] and ep.length + meta["dropped_frames"] >= 74 and ep.length >= 50
    assert ep.columns["action.source"].shape == (ep.length, 7)  # the scripted expert's ee_delta rows
    assert ep.frames("observation.images.wrist").shape == (ep.length, 224, 224, 3)


@pytest.mark.slow
def test_session_waits_for_an_external_recorder_to_become_active(tmp_path):
    """An autostarting recorder offers start_episode from `configure` on and refuses it until `activate`
    has run (a race a loaded CI machine lost): the session waits for the lifecycle state 'active'."""
    import threading
    import time

    from rclpy.parameter import Parameter

    from vla_ros.cli.record_cmd import RecordSession
    from vla_ros.nodes.recorder_node import RecorderNode

    session = RecordSession("fr3", str(tmp_path / "ds"), external_recorder=True)
    try:
        recorder = RecorderNode(context=session.context, parameter_overrides=[
            Parameter("embodiment", value="fr3"), Parameter("dataset", value=str(tmp_path / "ds")),
            Parameter("use_sim_time", value=True)])
        session.add_node(recorder)
        session.start()
        with pytest.raises(RuntimeError, match="did not become active within 2 s .state 'unconfigured'"):
            session.wait_recorder_active(timeout_wall_s=2.0)
        recorder.trigger_configure()
        assert session.call("start_episode").message == "recorder is not active"  # served, but inactive

        activated = []

        def activate_later():
            time.sleep(1.0)
            activated.append(time.monotonic())
            recorder.trigger_activate()

        thread = threading.Thread(target=activate_later)
        thread.start()
        session.wait_recorder_active(timeout_wall_s=30.0)
        done = time.monotonic()
        thread.join()
        assert activated and done >= activated[0]
        assert session.start_recording() == "recording episode 0"  # (once the sim's streams arrived)
        assert session.call("discard_episode").success
    finally:
        session.close()
