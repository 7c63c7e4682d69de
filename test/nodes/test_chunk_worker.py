"""The controller's chunk worker process: same decisions as in-process, and a dead or silent
worker costs one refused chunk (the arm holds), never a crash or a silently wrong decision."""

from __future__ import annotations

import math
import os
import signal

import numpy as np
import pytest

from vla_ros.core.controller import ControllerConfig, ControllerCore, PreparedChunk
from vla_ros.core.embodiment import load_embodiment
from vla_ros.core.kinematics import RobotKinematics
from vla_ros.core.types import ActionChunk
from vla_ros.nodes.chunk_worker import ChunkWorker

HOME = np.array([0.0, -math.pi / 4, 0.0, -3 * math.pi / 4, 0.0, math.pi / 2, math.pi / 4])
NAMES = tuple(f"fr3_joint{i}" for i in range(1, 8)) + ("gripper",)


@pytest.fixture(scope="module")
def core():
    spec = load_embodiment("fr3")
    c = ControllerCore(spec, RobotKinematics.from_embodiment(spec), ControllerConfig())
    c.update_joint_state("arm", NAMES[:7] + ("fr3_finger_joint1",), list(HOME) + [0.04], 100.0)
    c.activate(100.0)
    return c


@pytest.fixture(scope="module")
def worker(core):
    w = ChunkWorker(core.spec, core.config, core.prepare_chunk, timeout_s=5.0)
    assert w.wait_ready(60.0), w.failed
    yield w
    w.close()


def _chunk(steps=200, stamp=100.0, period=0.02):
    """A smooth there-and-back of joints 1 and 4: amplitude min(0.3, 0.02 T^2) rad over the chunk's
    T seconds, so that its acceleration (<= 0.1 rad/s^2) is far inside the limits at any length."""
    rows = np.tile(np.append(HOME, 1.0), (steps, 1))
    duration = (steps - 1) * period
    amplitude = min(0.3, 0.02 * duration ** 2)
    bump = 0.5 * amplitude * (1 - np.cos(2 * math.pi * np.arange(steps) * period / duration))
    rows[:, 0] += bump
    rows[:, 3] += 0.5 * bump
    return ActionChunk(NAMES, rows, period, stamp)


def test_the_worker_decides_exactly_as_the_node_would(core, worker):
    chunk = _chunk()
    snapshot = core.begin_chunk(chunk, 100.0)
    local = core.prepare_chunk(snapshot, chunk, extra_lead_s=0.01)
    remote = worker.prepare(snapshot, chunk, 0.01)
    assert isinstance(local, PreparedChunk) and isinstance(remote, PreparedChunk)
    assert (remote.start_s, remote.time_scale, remote.blend_s, remote.reason) == \
        (local.start_s, local.time_scale, local.blend_s, local.reason)
    ts = np.linspace(100.0, local.result.plan.end_time_s, 500)
    np.testing.assert_array_equal(remote.result.plan.sample(ts)[0], local.result.plan.sample(ts)[0])
    np.testing.assert_array_equal(remote.gripper, local.gripper)
    # a refusal comes back as the same reason
    bad = ActionChunk(NAMES, np.vstack([np.append(HOME, 1.0), np.append(HOME + 1.5, 1.0)]), 0.1, 100.0)
    snap = core.begin_chunk(bad, 100.0)
    assert worker.prepare(snap, bad, 0.0) == core.prepare_chunk(snap, bad) and "unsafe" in core.prepare_chunk(snap, bad)
    assert worker.decided_in_worker >= 2 and worker.pid != os.getpid()


def test_a_killed_worker_costs_one_refused_chunk_and_is_restarted(core, worker):
    chunk = _chunk(steps=20)
    snapshot = core.begin_chunk(chunk, 100.0)
    os.kill(worker.pid, signal.SIGKILL)
    refusal = worker.prepare(snapshot, chunk, 0.0)
    assert isinstance(refusal, str) and "the chunk worker died" in refusal and "restarted" in refusal
    assert worker.restarts == 1
    assert worker.wait_ready(60.0)
    assert isinstance(worker.prepare(snapshot, chunk, 0.0), PreparedChunk)


def test_a_silent_worker_is_restarted_and_the_chunk_refused(core, worker):
    chunk = _chunk(steps=1000)
    snapshot = core.begin_chunk(chunk, 100.0)
    worker.timeout_s = 1e-4  # no decision of 1000 points takes 0.1 ms
    try:
        refusal = worker.prepare(snapshot, chunk, 0.0)
    finally:
        worker.timeout_s = 5.0
    assert isinstance(refusal, str) and "did not answer within" in refusal
    assert worker.wait_ready(60.0)
    small = _chunk(steps=10)
    assert isinstance(worker.prepare(core.begin_chunk(small, 100.0), small, 0.0), PreparedChunk)


def test_until_it_is_ready_the_node_decides_in_process(core):
    calls = []

    def fallback(snapshot, chunk, extra):
        calls.append(extra)
        return "decided here"

    w = ChunkWorker(core.spec, core.config, fallback)
    try:
        chunk = _chunk(steps=10)
        assert w.prepare(core.begin_chunk(chunk, 100.0), chunk, 0.5) == "decided here"  # spawned just now
        assert calls == [0.5] and w.decided_in_process == 1
    finally:
        w.close()
    assert w.prepare(core.begin_chunk(chunk, 100.0), chunk, 0.0) == "decided here"  # closed: in-process


def test_a_worker_that_cannot_build_its_controller_says_why(core):
    import dataclasses

    from vla_ros.core.embodiment import UrdfSource

    broken = dataclasses.replace(core.spec, urdf=UrdfSource(file="/nonexistent/robot.urdf"))
    w = ChunkWorker(broken, core.config, lambda *a: "in process")
    try:
        assert not w.wait_ready(60.0)
        assert w.failed and "could not build its controller" in w.failed
        chunk = _chunk(steps=10)
        assert w.prepare(core.begin_chunk(chunk, 100.0), chunk, 0.0) == "in process"
    finally:
        w.close()
