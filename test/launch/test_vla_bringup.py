"""`ros2 launch vla_ros bringup.launch.py embodiment:=fr3 sim:=true policy:=vla checkpoint:=<folder>`
with a checkpoint saved by `VLAModel.save_pretrained` (untrained, small-motion action statistics, as
in test/e2e/test_e2e_vla_policy.py): the policy node loads it at configure, publishes action chunks
in fr3's ee_delta space, and the controller decides every one of them (accepted, or refused with a
reason in its log)."""

from __future__ import annotations

import re
import tempfile
import unittest

import numpy as np
import pytest

from ..colcon_workspace import launch_system_missing

if launch_system_missing():
    pytest.skip(launch_system_missing(), allow_module_level=True)
torch = pytest.importorskip("torch")

import launch_testing  # noqa: E402
import launch_testing.actions  # noqa: E402
import launch_testing.markers  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from launch import LaunchDescription  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402

from vla_ros.core.action_spaces import action_names  # noqa: E402
from vla_ros.core.embodiment import load_embodiment  # noqa: E402

from .support import (  # noqa: E402
    ESCALATION, STARTUP_TIMEOUT_S, Probe, assert_output_free_of, group_alive, output_of, pid_of, press_ctrl_c,
    ros2_launch, wait_for_output, wait_until,
)

CHUNKS = 3


def save_checkpoint(folder: str) -> str:
    """An untrained "default"-preset VLA for fr3 with small-motion action statistics."""
    from vla_ros.core.normalization import FeatureStats, NormStats
    from vla_ros.policies.vla.model import VLAModel
    from vla_ros.policies.vla.policy import state_names
    from vla_ros.policies.vla.presets import make_config

    spec = load_embodiment("fr3")
    names = action_names(spec, "ee_delta")
    cfg = make_config("default", action_dim=len(names), camera_slots=tuple(c.slot for c in spec.cameras),
                      state_dim=len(state_names(spec)))
    step = np.array([0.003, 0.003, 0.003, 0.02, 0.02, 0.02])
    action = FeatureStats(mean=np.r_[np.zeros(6), 0.5], std=np.r_[step / 2, 0.5], q01=np.r_[-step, 0.0],
                          q99=np.r_[step, 1.0], min=np.r_[-2 * step, 0.0], max=np.r_[2 * step, 1.0])
    arm = spec.arms[0]
    lo = np.r_[arm.limits.lower_rad, arm.gripper.closed_position]
    hi = np.r_[arm.limits.upper_rad, arm.gripper.open_position]
    state = FeatureStats(mean=(lo + hi) / 2, std=(hi - lo) / 4, q01=lo, q99=hi, min=lo, max=hi)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        model = VLAModel(cfg, norm_stats=NormStats({"action": action, "state": state}, source="launch_test"))
    return str(model.save_pretrained(folder))


@pytest.mark.slow
@pytest.mark.launch_test
@launch_testing.markers.keep_alive  # the test itself presses Ctrl-C: the launch ending is expected
def generate_test_description():
    checkpoint = save_checkpoint(tempfile.mkdtemp(prefix="vla_ros_launch_ckpt_"))
    bringup = ros2_launch("bringup_vla", "embodiment:=fr3", "sim:=true", "policy:=vla", f"checkpoint:={checkpoint}")
    return LaunchDescription([bringup, launch_testing.actions.ReadyToTest()]), {"bringup": bringup}


def _controller_counts(diagnostics: list, since: int = 0) -> tuple[int, int] | None:
    """(chunks_accepted, chunks_refused) from the controller's newest diagnostics status."""
    values = _newest_values(diagnostics, ": controller", since)
    return None if values is None else (int(values["chunks_accepted"]), int(values["chunks_refused"]))


def _newest_values(diagnostics: list, suffix: str, since: int = 0) -> dict | None:
    """The key/values of the newest status whose name ends with `suffix`, among diagnostics[since:]."""
    for msg in reversed(diagnostics[since:]):
        for status in msg.status:
            if status.name.endswith(suffix):
                return {kv.key: kv.value for kv in status.values}
    return None


class TestVlaCheckpoint(unittest.TestCase):
    def test_chunks_published_and_decided(self, proc_output, proc_info, bringup):
        wait_for_output(proc_output, bringup, "all lifecycle nodes active (/controller, /policy)", STARTUP_TIMEOUT_S)
        probe = Probe()
        try:
            chunks = probe.record(JointTrajectory, "/action_chunk")
            diagnostics = probe.record(DiagnosticArray, "/diagnostics")
            self.assertTrue(wait_until(lambda: len(chunks) >= CHUNKS, 240.0),
                            f"{len(chunks)} chunks; output:\n{output_of(proc_output, bringup)[-3000:]}")
            expected = list(action_names(load_embodiment("fr3"), "ee_delta"))
            for msg in chunks[:CHUNKS]:
                self.assertEqual(list(msg.joint_names), expected)
                self.assertGreaterEqual(len(msg.points), 2)
                self.assertTrue(all(np.isfinite(p.positions).all() for p in msg.points))
            stamps = [m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 for m in chunks[:CHUNKS]]
            self.assertTrue(all(b > a for a, b in zip(stamps, stamps[1:])), stamps)

            def decided() -> bool:
                counts = _controller_counts(diagnostics)
                return counts is not None and sum(counts) >= CHUNKS

            self.assertTrue(wait_until(decided, 60.0), _controller_counts(diagnostics))
            # Nothing decided that was not sent: the controller's count against the policy's own count
            # of chunks published, reported after it (the probe joined late: it missed the first chunks).
            n = len(diagnostics)
            accepted, refused = _controller_counts(diagnostics)
            self.assertTrue(wait_until(lambda: _newest_values(diagnostics, ": policy", n) is not None, 30.0))
            published = int(_newest_values(diagnostics, ": policy", n)["chunks_published"])
            self.assertLessEqual(accepted + refused, published)
        finally:
            probe.close()
        pgid = pid_of(bringup)
        code, _ = press_ctrl_c(bringup, proc_info)
        self.assertEqual(code, 0)
        self.assertEqual(group_alive(pgid), [])


@launch_testing.post_shutdown_test()
class TestAfterCtrlC(unittest.TestCase):
    def test_every_refusal_has_a_reason(self, proc_output, bringup):
        text = output_of(proc_output, bringup)
        for reason in re.findall(r"action chunk refused: (.*)", text):
            self.assertGreater(len(reason.strip()), 10, reason)
        assert_output_free_of(text, ESCALATION, "Traceback", "trajectory rejected")
