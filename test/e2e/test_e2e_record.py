"""Acceptance: recording in simulation survives a SIGKILL of the recorder.

The demo graph (sim, controller, scripted policy) runs in this process; recorder_node runs as its
own process (`.venv/bin/recorder_node`). Three episodes are recorded, the recorder is killed with
SIGKILL during a fourth, restarted on the same folder, and a fifth is recorded. The dataset must
then hold 4 complete episodes: the right frame counts, strictly increasing timestamps, contiguous
boundaries, video frames equal to the frames the sim published (PSNR >= 35 dB), and `action` equal
to the commands the controller sent, sampled at the frame times as a JTC executes them.
Video PSNR is the mean over an episode's frames (every frame >= 30 dB and the best match among the
published frames around its time).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from vla_ros.core.embodiment import load_embodiment
from vla_ros.core.jtc import JointTrajectoryController
from vla_ros.data import LeRobotDataset

pytestmark = pytest.mark.slow

EPISODE_S = 3.0  # simulated seconds per episode (the test is about recording, not success)
RECORDER = Path(sys.executable).parent / "recorder_node"


def start_recorder(out: Path, embodiment: str, log: Path) -> subprocess.Popen:
    exe = [str(RECORDER)] if RECORDER.exists() else [sys.executable, "-m", "vla_ros.nodes.recorder_node"]
    cmd = exe + ["--ros-args", "-p", f"embodiment:={embodiment}", "-p", f"dataset:={out}", "-p", "use_sim_time:=true",
                 "-p", "source_space:=ee_delta"]
    return subprocess.Popen(cmd, stdout=open(log, "ab"), stderr=subprocess.STDOUT, env=dict(os.environ))


class Capture:
    """Every camera frame, joint state and command the graph published, as the probe received them."""

    def __init__(self, spec, node) -> None:
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image, JointState
        from std_msgs.msg import Float64MultiArray
        from trajectory_msgs.msg import JointTrajectory

        from vla_ros.nodes import conversions as cv

        self.cv = cv
        self.node = node
        self.lock = threading.Lock()
        self.images = {c.slot: {} for c in spec.cameras}
        self.states = {a.name: [] for a in spec.arms}
        self.commands = {a.name: [] for a in spec.arms}
        qos = QoSProfile(depth=200, reliability=ReliabilityPolicy.BEST_EFFORT)
        for cam in spec.cameras:
            node.create_subscription(Image, cam.topic, lambda m, s=cam.slot: self._image(s, m), qos)
        for arm in spec.arms:
            node.create_subscription(JointState, arm.joint_states_topic, lambda m, a=arm.name: self._state(a, m), qos)
            node.create_subscription(JointTrajectory, arm.command.topic, lambda m, a=arm.name: self._command(a, m), 100)

    def now_s(self) -> float:
        return self.node.get_clock().now().nanoseconds * 1e-9

    def _image(self, slot, msg) -> None:
        with self.lock:
            self.images[slot][round(self.cv.time_to_s(msg.header.stamp), 6)] = self.cv.image_to_rgb8(msg)

    def _state(self, arm, msg) -> None:
        with self.lock:
            self.states[arm].append((self.cv.time_to_s(msg.header.stamp), msg))

    def _command(self, arm, msg) -> None:
        with self.lock:
            self.commands[arm].append((self.now_s(), msg))


def sent_commands(capture: Capture, spec, arm_name: str, times_s: np.ndarray) -> np.ndarray:
    """What a default JTC fed with the captured trajectories executes at times_s: each takes over at
    its stamp (on arrival when 0) from the measured state then."""
    from vla_ros.nodes.recorder_node import trajectory_command

    arm = spec.arm(arm_name)
    jtc = JointTrajectoryController(arm.command.joint_names)
    with capture.lock:
        states = sorted(capture.states[arm_name], key=lambda r: r[0])
        cmds = [(trajectory_command(m), t) for t, m in capture.commands[arm_name]]
    st = np.array([s for s, _ in states])
    cv = capture.cv

    def measured(t):
        i = max(int(np.searchsorted(st, t, side="right")) - 1, 0)
        msg = states[i][1]
        names = list(msg.name)
        q = np.array([msg.position[names.index(j)] for j in arm.joint_names])
        qd = np.array([msg.velocity[names.index(j)] for j in arm.joint_names])
        return q, qd

    events = sorted((((c.stamp_s if c.stamp_s != 0.0 else t), c) for c, t in cmds), key=lambda ev: ev[0])
    # A trajectory stamped 0 starts on arrival, which differs between subscribers (this probe and the
    # recorder) by a few ms: until its first point the command depends on that instant. Those frames
    # are left out of the comparison.
    ambiguous = np.zeros(len(times_s), bool)
    for c, t in cmds:
        if c.stamp_s == 0.0:
            ambiguous |= (times_s > t - 0.05) & (times_s < t + c.points[-1].time_from_start_s + 0.05)
    out = np.full((len(times_s), arm.num_joints), np.nan)
    k = 0
    for i, t in enumerate(times_s):
        while k < len(events) and events[k][0] <= t + 1e-9:  # a stamp at a frame's time is in force at it
            takeover, c = events[k]
            if jtc.receive(c, takeover) is None:
                jtc.update(takeover, *measured(takeover))
            k += 1
        state = jtc.update(t, *measured(t))
        if state is not None and not ambiguous[i]:
            out[i] = state.positions
    return out


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


# Multi-process timing under load (a 2-core CI machine): rerun up to twice; failures seen in full runs are
# listed in the closing note of 2026-12-05 (issue 11/13), not hidden here.
@pytest.mark.flaky(reruns=2)
@pytest.mark.parametrize("embodiment", ["fr3", "aloha"])
def test_record_kill_restart_resume(tmp_path, embodiment):
    from rclpy.node import Node
    from rclpy.parameter import Parameter

    from vla_ros.cli.record_cmd import RecordSession

    spec = load_embodiment(embodiment)
    out = tmp_path / "ds"
    log = tmp_path / "recorder.log"
    proc = start_recorder(out, embodiment, log)
    # Half real time: the recorder is a separate process on a shared machine and must not be starved
    # of CPU by the simulation (frames it cannot assemble are counted; this test wants few of them).
    session = RecordSession(embodiment, str(out), external_recorder=True, real_time_factor=0.5,
                            sim_params={"joint_state_rate_hz": 100.0})
    try:
        probe = Node("record_probe", context=session.context, parameter_overrides=[Parameter("use_sim_time", value=True)])
        capture = Capture(spec, probe)
        session.add_node(probe)
        session.start()
        results = []
        for k in range(3):
            results.append(session.run_episode(k, timeout_s=EPISODE_S, keep=lambda ok: True))
        assert all(r.saved for r in results), [r.message for r in results]

        _, start = session.begin_episode(3)  # the 4th: killed while it records
        while session.sim_time_s() < start + 1.5:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert (out / ".recording").exists()  # the killed episode's half-written video

        proc = start_recorder(out, embodiment, log)
        results.append(session.run_episode(4, timeout_s=EPISODE_S, keep=lambda ok: True))
        assert results[-1].saved and results[-1].dataset_episode == 3, results[-1].message
    finally:
        session.close()
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()

    ds = LeRobotDataset(out)
    assert ds.num_episodes == 4 and not (out / ".staging").exists()
    assert not list((out / ".recording").glob("*"))  # the killed episode's remains were removed on restart
    assert ds.camera_keys == [f"observation.images.{c.slot}" for c in spec.cameras]
    frm = 0
    for e in range(4):
        ep = ds.episode(e)
        meta = ds.episode_meta(e)
        # boundaries: contiguous global indices
        assert (meta["dataset_from_index"], meta["dataset_to_index"]) == (frm, frm + ep.length)
        np.testing.assert_array_equal(ep.columns["index"], np.arange(frm, frm + ep.length))
        frm += ep.length
        assert np.all(np.diff(ep.timestamps) > 0)
        slots = np.round(ep.timestamps * ds.fps).astype(int)
        np.testing.assert_allclose(ep.timestamps, slots / ds.fps, atol=1e-6)
        # frame count: every grid slot of the episode is a row, except the counted drops
        assert slots[0] == 0 and 0 <= slots[-1] + 1 - ep.length <= meta["dropped_frames"]
        t_end = meta["start_stamp_s"] + slots[-1] / ds.fps
        with capture.lock:
            half = 0.5 / ds.fps  # the sim stamps frames on its physics steps: near, not on, the grid
            grid = [t for t in capture.images[spec.cameras[0].slot] if meta["start_stamp_s"] - half < t < t_end + half]
        assert len(grid) == slots[-1] + 1  # the camera published once per slot (sim camera rate = fps)
        assert ep.length >= 0.7 * EPISODE_S * ds.fps, (e, ep.length)  # (the save cuts what has not arrived yet)
        reasons = meta["dropped_reasons"]
        # The policy is activated after the recording starts: the slots before its first chunk of the
        # episode have no action.source and are counted drops by the documented rule (a few usually,
        # ~0.6 s when the first inference is slow; after the restart also until the new recorder process
        # has discovered the policy's publisher), not a recorder that could not keep up. The rest (a
        # starved recorder loses readings) stays within 10 %.
        counts = json.loads(reasons) if isinstance(reasons, str) and reasons else (reasons or {})
        dropped = meta["dropped_frames"] - counts.get("no action chunk from the source yet", 0)
        assert dropped <= max(3, 0.1 * (slots[-1] + 1)), (e, reasons)
        t_abs = meta["start_stamp_s"] + slots / ds.fps
        # video: what was published at those capture times
        for cam in spec.cameras:
            frames = ep.frames(f"observation.images.{cam.slot}")
            assert frames.shape == (ep.length, cam.height, cam.width, 3)
            with capture.lock:
                published = dict(capture.images[cam.slot])
            stamps = np.array(sorted(published))
            refs = []
            for t in t_abs:  # the frame published nearest to the frame time (within half a period)
                j = int(np.argmin(np.abs(stamps - t)))
                refs.append(published[stamps[j]] if abs(stamps[j] - t) <= 0.5 / ds.fps else None)
            assert all(r is not None for r in refs), f"episode {e} camera {cam.slot}: a frame nobody published"
            values = np.array([psnr(f, r) for f, r in zip(frames, refs)])
            # Video PSNR (the mean over the episode's frames) >= 35 dB. yuv420p, LeRobot's pixel format,
            # alone caps ALOHA's cam_high at 36.2 dB (its chroma detail), so single frames may dip below.
            assert values.mean() >= 35.0, (e, cam.slot, float(values.mean()), float(values.min()))
            # ... and every frame is the one published at its time: it matches that frame at least as well
            # as the frames published one and two periods around it, within 2 dB (in slow motion the codec
            # copies unchanged blocks from the previous frame; a wrong frame in motion loses 5-15 dB)
            for i in range(ep.length):
                j = int(np.argmin(np.abs(stamps - t_abs[i])))
                others = [psnr(frames[i], published[stamps[m]]) for m in (j - 2, j - 1, j + 1, j + 2)
                          if 0 <= m < len(stamps)]
                assert values[i] >= max(others) - 2.0, (e, cam.slot, i, float(values[i]), others)
                assert values[i] >= 30.0, (e, cam.slot, i, float(values[i]))
        # action: the commands the controller sent, at the frame times
        col = 0
        for arm in spec.arms:
            expected = sent_commands(capture, spec, arm.name, t_abs)
            got = ep.action[:, col:col + arm.num_joints].astype(np.float64)
            ok = ~np.isnan(expected).any(axis=1)
            assert ok.mean() > 0.9, ok.mean()
            err = np.abs(got[ok] - expected[ok]).max()
            assert err <= 1e-6, (e, arm.name, err)
            col += arm.num_joints + (1 if arm.gripper is not None else 0)
        assert ep.task  # the sim's instruction
