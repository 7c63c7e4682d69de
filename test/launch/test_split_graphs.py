"""Graphs split over launches, as deployed across machines, on one ROS domain:

- roles: `role:=robot` (sim + controller, beside the driver) and `role:=policy` (the policy node,
  on the GPU host) as two separate `ros2 launch` processes form one fr3 graph that completes the task;
- namespaces: two whole fr3 graphs with `namespace:=robot_a` / `robot_b` (different seeds) run side
  by side without crosstalk: each has its own simulated clock (`/<ns>/clock`, nothing on `/clock`)
  and each completes its own episode.
"""

from __future__ import annotations

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
    press_ctrl_c, ros2_launch, wait_for_output, wait_until,
)

LAYOUTS = {
    # name -> [(launch name, arguments, what it brings up, namespace)]
    "roles": [
        ("robot_side", ["embodiment:=fr3", "sim:=true", "role:=robot"], "all lifecycle nodes active (/controller)", ""),
        ("policy_side", ["embodiment:=fr3", "sim:=true", "role:=policy", "policy:=scripted"],
         "all lifecycle nodes active (/policy)", ""),
    ],
    "namespaces": [
        (f"graph_{ns}", ["embodiment:=fr3", "sim:=true", "policy:=scripted", f"namespace:={ns}", f"seed:={seed}"],
         f"all lifecycle nodes active (/{ns}/controller, /{ns}/policy)", ns)
        for ns, seed in (("robot_a", 0), ("robot_b", 1))
    ],
}


@pytest.mark.slow
@pytest.mark.launch_test
@launch_testing.parametrize("layout", list(LAYOUTS))
@launch_testing.markers.keep_alive  # the test itself presses Ctrl-C: the launches ending is expected
def generate_test_description(layout):
    first, second = (ros2_launch(name, *args) for name, args, _, _ in LAYOUTS[layout])
    return LaunchDescription([first, second, launch_testing.actions.ReadyToTest()]), {"first": first, "second": second}


class TestSplitGraphs(unittest.TestCase):
    def test_each_graph_completes_its_episode(self, proc_output, proc_info, first, second, layout):
        launches = (first, second)
        for action, (_, _, active_line, _) in zip(launches, LAYOUTS[layout]):
            wait_for_output(proc_output, action, active_line, STARTUP_TIMEOUT_S)
        namespaces = sorted({ns for _, _, _, ns in LAYOUTS[layout]})
        probe = Probe()
        try:
            prefixes = [f"/{ns}" if ns else "" for ns in namespaces]
            success = {p: probe.record(Bool, f"{p}/sim/success") for p in prefixes}
            for prefix in prefixes:
                self.assertEqual(probe.lifecycle_state(f"{prefix}/controller"), "active")
                self.assertEqual(probe.lifecycle_state(f"{prefix}/policy"), "active")
            if layout == "namespaces":
                # each sim publishes its own clock; nothing on the shared /clock
                self.assertTrue(wait_until(lambda: all(probe.node.count_publishers(f"{p}/clock") == 1
                                                       for p in prefixes), 20.0))
                self.assertEqual(probe.node.count_publishers("/clock"), 0)
            for prefix, received in success.items():
                self.assertTrue(wait_until(lambda r=received: any(m.data for m in r), EPISODE_TIMEOUT_S),
                                f"no {prefix}/sim/success within {EPISODE_TIMEOUT_S} s")
        finally:
            probe.close()
        for action in launches:
            pgid = pid_of(action)
            code, seconds = press_ctrl_c(action, proc_info)
            print(f"{layout}: Ctrl-C -> {action.process_details['name']} exited {code} after {seconds:.2f} s")
            self.assertEqual(code, 0)
            self.assertEqual(group_alive(pgid), [])


@launch_testing.post_shutdown_test()
class TestAfterCtrlC(unittest.TestCase):
    def test_no_rejection_no_escalation(self, proc_output, first, second):
        for action in (first, second):
            text = output_of(proc_output, action)
            assert_output_free_of(text, ESCALATION, "trajectory rejected", "Traceback", "process has died")
