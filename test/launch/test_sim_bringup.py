"""`ros2 launch vla_ros bringup.launch.py embodiment:=<E> sim:=true policy:=scripted`, from a colcon
install, for fr3 (the README's first example), ur5e and aloha: the launch brings every lifecycle node
up to active by itself, the episode succeeds (`sim/success`) with no trajectory rejected by the
simulated JTC, and Ctrl-C (SIGINT to the launch's process group, as a terminal sends it) deactivates
every node (the controller holds), exits 0 without launch escalating to SIGTERM, and leaves no
process behind. For fr3 also the `ros2` commands a user types: `ros2 lifecycle get`, `ros2 param get`.
"""

from __future__ import annotations

import os
import unittest

import pytest

from ..colcon_workspace import launch_system_missing

if launch_system_missing():
    pytest.skip(launch_system_missing(), allow_module_level=True)

import launch_testing  # noqa: E402
import launch_testing.actions  # noqa: E402
import launch_testing.markers  # noqa: E402
from launch import LaunchDescription  # noqa: E402
from std_msgs.msg import Bool  # noqa: E402

from .support import (  # noqa: E402
    EPISODE_TIMEOUT_S, ESCALATION, STARTUP_TIMEOUT_S, Probe, assert_output_free_of, group_alive, output_of, pid_of,
    press_ctrl_c, ros2_cli, ros2_launch, wait_for_output, wait_until,
)

NODES = {"/sim": "sim_node", "/controller": "controller_node", "/policy": "policy_node"}


@pytest.mark.slow
@pytest.mark.launch_test
# VLA_ROS_LAUNCH_EMBODIMENTS=fr3 runs one of them (while working on the launch file)
@launch_testing.parametrize("embodiment", os.environ.get("VLA_ROS_LAUNCH_EMBODIMENTS", "fr3,ur5e,aloha").split(","))
@launch_testing.markers.keep_alive  # the test itself presses Ctrl-C: the launch ending is expected
def generate_test_description(embodiment):
    bringup = ros2_launch(f"bringup_{embodiment}", f"embodiment:={embodiment}", "sim:=true", "policy:=scripted")
    return LaunchDescription([bringup, launch_testing.actions.ReadyToTest()]), {"bringup": bringup}


class TestScriptedEpisode(unittest.TestCase):
    def test_brought_up_in_order_succeeds_and_stops_cleanly_on_ctrl_c(self, proc_output, proc_info, bringup,
                                                                      embodiment):
        text = wait_for_output(proc_output, bringup, "all lifecycle nodes active (/controller, /policy)",
                               STARTUP_TIMEOUT_S)
        # the order the launch drove: controller configured + active before the policy is configured
        order = [text.index(line) for line in ("bringup: configuring /controller", "/controller configured; activating",
                                               "/controller active; configuring /policy",
                                               "/policy configured; activating")]
        self.assertEqual(order, sorted(order))
        probe = Probe()
        try:
            success = probe.record(Bool, "/sim/success")
            self.assertEqual(probe.lifecycle_state("/controller"), "active")
            self.assertEqual(probe.lifecycle_state("/policy"), "active")
            if embodiment == "fr3":
                got = ros2_cli("lifecycle", "get", "/controller", "--no-daemon", "--spin-time", "5")
                self.assertEqual(got.stdout.strip(), "active [3]", got.stderr)
                got = ros2_cli("param", "get", "/sim", "use_sim_time", "--no-daemon", "--spin-time", "5")
                self.assertEqual(got.stdout.strip(), "Boolean value is: False", got.stderr)  # sim_node owns /clock
            self.assertTrue(wait_until(lambda: any(m.data for m in success), EPISODE_TIMEOUT_S),
                            f"no sim/success within {EPISODE_TIMEOUT_S} s; output:\n{output_of(proc_output, bringup)[-4000:]}")
        finally:
            probe.close()
        pgid = pid_of(bringup)
        self.assertEqual(len(group_alive(pgid)), 1 + len(NODES))  # the launch and its three nodes
        code, seconds = press_ctrl_c(bringup, proc_info)
        print(f"{embodiment}: Ctrl-C -> launch exited {code} after {seconds:.2f} s")
        self.assertEqual(code, 0)
        self.assertEqual(group_alive(pgid), [], "processes outlived the launch")


@launch_testing.post_shutdown_test()
class TestAfterCtrlC(unittest.TestCase):
    def test_every_node_deactivated_and_exited_cleanly(self, proc_output, bringup):
        text = output_of(proc_output, bringup)
        assert_output_free_of(text, ESCALATION, "trajectory rejected", "Traceback")
        self.assertIn("user interrupted with ctrl-c (SIGINT)", text)
        for executable in NODES.values():
            self.assertRegex(text, rf"\[{executable}-\d+\]: process has finished cleanly")
        self.assertIn("[controller]: deactivated: hold sent", text)
        self.assertIn("[policy]: deactivated", text)
