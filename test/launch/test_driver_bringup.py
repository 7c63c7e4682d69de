"""`ros2 launch vla_ros bringup.launch.py embodiment:=fr3 sim:=false policy:=none`: only the
controller, beside a vendor driver. A test double plays franka_ros2 (publishes `joint_states`,
receives `fr3_arm_controller/joint_trajectory`): the launch brings the controller to active, it
holds the arm where the double reports it (a JTC-valid trajectory ending at rest on those
positions), and Ctrl-C ends everything with exit 0.

Also with `use_sim_time:=true` and nobody publishing `/clock` (a sim-time graph whose clock is
gone): the controller's timers never fire, yet it is brought up and Ctrl-C still ends it cleanly
and at once (the stop path never waits on the clock).
"""

from __future__ import annotations

import math
import unittest

import pytest

from ..colcon_workspace import launch_system_missing

if launch_system_missing():
    pytest.skip(launch_system_missing(), allow_module_level=True)

import launch_testing  # noqa: E402
import launch_testing.actions  # noqa: E402
import launch_testing.markers  # noqa: E402
from launch import LaunchDescription  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402

from vla_ros.nodes import conversions as cv  # noqa: E402

from .support import (  # noqa: E402
    ESCALATION, STARTUP_TIMEOUT_S, Probe, assert_output_free_of, group_alive, output_of, pid_of, press_ctrl_c,
    ros2_launch, wait_for_output, wait_until,
)

JOINTS = tuple(f"fr3_joint{i}" for i in range(1, 8))
# a pose away from home, so that a hold at home (or anywhere else) would be caught
DRIVER_Q = (0.1, -0.6, 0.05, -2.2, 0.02, 1.7, 0.9)


@pytest.mark.slow
@pytest.mark.launch_test
@launch_testing.parametrize("use_sim_time", ["false", "true"])
@launch_testing.markers.keep_alive  # the test itself presses Ctrl-C: the launch ending is expected
def generate_test_description(use_sim_time):
    bringup = ros2_launch(f"driver_sim_time_{use_sim_time}", "embodiment:=fr3", "sim:=false", "policy:=none",
                          f"use_sim_time:={use_sim_time}")
    return LaunchDescription([bringup, launch_testing.actions.ReadyToTest()]), {"bringup": bringup}


class TestControllerBesideADriver(unittest.TestCase):
    def test_controller_holds_where_the_driver_is_and_stops_on_ctrl_c(self, proc_output, proc_info, bringup,
                                                                      use_sim_time):
        probe = Probe("franka_driver_double")
        try:
            commands = probe.record(JointTrajectory, "/fr3_arm_controller/joint_trajectory")
            states = probe.node.create_publisher(JointState, "/joint_states", 10)
            probe.node.create_timer(0.01, lambda: states.publish(cv.make_joint_state(
                JOINTS + ("fr3_finger_joint1",), list(DRIVER_Q) + [0.04],
                stamp_s=probe.node.get_clock().now().nanoseconds * 1e-9)))
            wait_for_output(proc_output, bringup, "all lifecycle nodes active (/controller)", STARTUP_TIMEOUT_S)
            self.assertEqual(probe.lifecycle_state("/controller"), "active")
            if use_sim_time == "false":
                self.assertTrue(wait_until(lambda: len(commands) >= 1, 60.0),
                                f"the controller commanded nothing:\n{output_of(proc_output, bringup)[-3000:]}")
                hold = commands[-1]
                self.assertEqual(tuple(hold.joint_names), JOINTS)
                last = hold.points[-1]
                for got, want in zip(last.positions, DRIVER_Q):
                    self.assertTrue(math.isclose(got, want, abs_tol=1e-6), (list(last.positions), DRIVER_Q))
                self.assertEqual(list(last.velocities), [0.0] * 7)
        finally:
            probe.close()
        pgid = pid_of(bringup)
        code, seconds = press_ctrl_c(bringup, proc_info)
        print(f"use_sim_time={use_sim_time}: Ctrl-C -> launch exited {code} after {seconds:.2f} s")
        self.assertEqual(code, 0)
        self.assertEqual(group_alive(pgid), [])


@launch_testing.post_shutdown_test()
class TestAfterCtrlC(unittest.TestCase):
    def test_controller_deactivated_and_exited_cleanly(self, proc_output, bringup):
        text = output_of(proc_output, bringup)
        assert_output_free_of(text, ESCALATION, "Traceback")
        self.assertIn("[controller]: SIGINT: shutting down", text)
        self.assertIn("[controller]: deactivated", text)
        self.assertRegex(text, r"\[controller_node-1\]: process has finished cleanly")
