"""`vla-ros bench record` at a small size: the numbers it reports are consistent with the dataset it
wrote (the full-size run, 3 x 640x480 at 30 Hz for 60 s, is measured by hand; see the README)."""

from __future__ import annotations

import argparse
import json

import pytest

from vla_ros.bench import record
from vla_ros.data import LeRobotDataset

pytestmark = pytest.mark.slow


class _DefaultTopicsListener:
    """Counts what arrives on an FR3's default topics (root namespace) while a bench runs."""

    def __init__(self) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from sensor_msgs.msg import JointState
        from trajectory_msgs.msg import JointTrajectory

        from vla_ros.nodes.runtime import BackgroundSpinner

        self.heard: dict[str, int] = {"joint_states": 0, "fr3_arm_controller/joint_trajectory": 0}
        self.context = rclpy.Context()
        rclpy.init(context=self.context, args=[])
        self.node = Node("default_topics_listener", context=self.context)
        for topic, kind in (("joint_states", JointState), ("fr3_arm_controller/joint_trajectory", JointTrajectory)):
            self.node.create_subscription(kind, "/" + topic, lambda _m, t=topic: self._count(t), 100)
        executor = SingleThreadedExecutor(context=self.context)
        executor.add_node(self.node)
        self.spinner = BackgroundSpinner(executor, "listener").start()

    def _count(self, topic: str) -> None:
        self.heard[topic] += 1

    def close(self) -> None:
        import rclpy

        if self.spinner.stop():
            self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


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
    # The episode runs from its grid's first slot to the save request, as the recorder dates them (a
    # starved recorder handles the save late: the bench's own 4 s window is then shorter). Every slot
    # in it is a row or a counted drop -- also the slots dropped before the first row (under load,
    # e.g. 15 "no gripper command sent yet"), and the slots whose frames had not come when the save's
    # wait for them ran out (seen under CI load: 13 slots left out of the count) -- and no slot is
    # counted twice:
    slots = result["slots_in_episode"]
    decided = ep.length + result["dropped_frames"]
    assert decided == slots, result
    # ... and no frame published in it is lost without a count. (Not equality with the frames
    # published: a bench publisher starved of CPU catches up in a burst, several frames ~1 ms apart
    # in one slot and the slots before it empty -- seen under CI load: 4 rows + 137 drops in 141
    # slots while 137 frames were published in them.)
    published = result["frames_published_in_episode"]
    assert published >= result["frames_published"] - 3
    assert decided >= min(published, slots) - 3, result
    assert ep.frames("observation.images.cam1").shape == (ep.length, 120, 160, 3)
    assert result["bytes_per_s"] > 0 and 0 < result["recorder_cpu_percent"] < 400
    assert result["encode_ms_per_frame"] > 0 and result["encode_latency_max_s"] >= 0


def test_bench_record_keeps_to_its_own_namespace(tmp_path):
    # The bench's FR3 joint_states and arm commands stay in its own namespace: a robot or sim on
    # this domain's default topics hears none of them (seen before: a concurrent recording's sim
    # and recorder took the bench's messages and services; 625 messages heard without it).
    parser = argparse.ArgumentParser()
    record.add_arguments(parser)
    args = parser.parse_args(["--duration-s", "1", "--cameras", "1", "--width", "64", "--height", "48",
                              "--keep", str(tmp_path / "ds")])
    listener = _DefaultTopicsListener()
    try:
        record.run(args)
    finally:
        listener.close()
    assert listener.heard == {"joint_states": 0, "fr3_arm_controller/joint_trajectory": 0}
