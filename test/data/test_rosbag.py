"""rosbag2 -> dataset on bags written in the real formats (MCAP and sqlite3 storage, CDR messages,
by the rosbags library as `ros2 bag record` writes them), with hand-computed expectations."""

from __future__ import annotations

import numpy as np
import pytest
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from vla_ros.data import LeRobotDataset
from vla_ros.data.rosbag import BagError, convert_bag

TS = get_typestore(Stores.ROS2_JAZZY)
FR3 = [f"fr3_joint{i}" for i in range(1, 8)]
T0 = 100.0  # sim time of the bag's start
DURATION = 2.0


def msg(msgtype, **kw):
    return TS.types[msgtype](**kw)


def header(t):
    return msg("std_msgs/msg/Header", stamp=msg("builtin_interfaces/msg/Time", sec=int(t), nanosec=int(round((t % 1) * 1e9))),
               frame_id="")


def duration(d):
    return msg("builtin_interfaces/msg/Duration", sec=int(d), nanosec=int(round((d % 1) * 1e9)))


def camera_image(k: int) -> np.ndarray:
    yy, xx = np.mgrid[0:224, 0:224]
    img = np.stack([xx, yy, np.full_like(xx, 80)], -1).astype(np.uint8)
    x0 = (3 * k) % 200
    img[50:70, x0:x0 + 20] = 255
    return img


def q_at(t: float) -> np.ndarray:
    return np.linspace(0.1, 0.7, 7) + 0.2 * (t - T0)


def write_bag(path, storage, namespace="", compressed=False, hostile=False):
    ns = f"/{namespace}" if namespace else ""
    with Writer(path, version=9, storage_plugin=storage) as w:
        def conn(topic, kind):
            return w.add_connection(ns + topic, kind, typestore=TS)

        cams = {s: conn(f"/cameras/{s}/image_raw", "sensor_msgs/msg/Image") for s in ("front", "wrist")}
        js = conn("/joint_states", "sensor_msgs/msg/JointState")
        jtc = conn("/fr3_arm_controller/joint_trajectory", "trajectory_msgs/msg/JointTrajectory")
        grip = conn("/gripper_controller/commands", "std_msgs/msg/Float64MultiArray")
        instr = conn("/instruction", "std_msgs/msg/String")
        chunk = conn("/action_chunk", "trajectory_msgs/msg/JointTrajectory")
        other = conn("/diagnostics_text", "std_msgs/msg/String")
        events = []

        def put(t, c, m):
            events.append((t, c, m))

        put(T0, instr, msg("std_msgs/msg/String", data="pick up the red cube"))
        put(T0, other, msg("std_msgs/msg/String", data="ignored"))
        # one trajectory: a linear ramp (positions only) from T0 for 3 s, stamped T0
        pts = [msg("trajectory_msgs/msg/JointTrajectoryPoint", positions=q_at(T0 + d).astype(float),
                   velocities=np.zeros(0), accelerations=np.zeros(0), effort=np.zeros(0), time_from_start=duration(d))
               for d in (0.0, 3.0)]
        put(T0 + 0.002, jtc, msg("trajectory_msgs/msg/JointTrajectory", header=header(T0), joint_names=FR3, points=pts))
        put(T0 - 0.01, grip, msg("std_msgs/msg/Float64MultiArray",
                                  layout=msg("std_msgs/msg/MultiArrayLayout", dim=[], data_offset=0),
                                  data=np.array([0.02])))
        rows = [msg("trajectory_msgs/msg/JointTrajectoryPoint", positions=np.array([0.01 * i] * 6 + [1.0]),
                    velocities=np.zeros(0), accelerations=np.zeros(0), effort=np.zeros(0),
                    time_from_start=duration(0.1 * i)) for i in range(30)]
        names = [f"ee_delta/{a}" for a in ("x", "y", "z", "roll", "pitch", "yaw")] + ["gripper"]
        put(T0 + 0.003, chunk, msg("trajectory_msgs/msg/JointTrajectory", header=header(T0), joint_names=names,
                                   points=rows))
        for i in range(int(DURATION * 100) + 1):
            t = T0 + i / 100
            put(t + 0.001, js, msg("sensor_msgs/msg/JointState", header=header(t), name=FR3 + ["fr3_finger_joint1"],
                                   position=np.append(q_at(t), 0.03), velocity=np.zeros(8), effort=np.zeros(0)))
        for k in range(int(DURATION * 30) + 1):
            t = T0 + k / 30
            for s, c in cams.items():
                img = camera_image(k if s == "front" else k + 7)
                put(t + 0.004, c, msg("sensor_msgs/msg/Image", header=header(t), height=224, width=224,
                                      encoding="rgb8", is_bigendian=0, step=224 * 3, data=img.reshape(-1)))
        if hostile:  # what a driver fault or a truncated write leaves in a bag, between the good messages
            names = FR3 + ["fr3_finger_joint1"]
            for t, position in ((T0 + 0.505, np.full(8, np.nan)), (T0 + 1.005, np.array([0.1, 0.2]))):
                put(t, js, msg("sensor_msgs/msg/JointState", header=header(t), name=names, position=position,
                               velocity=np.zeros(0), effort=np.zeros(0)))
            put(T0 + 0.7, cams["front"], msg("sensor_msgs/msg/Image", header=header(T0 + 0.7), height=224, width=224,
                                             encoding="rgb8", is_bigendian=0, step=224 * 3,
                                             data=np.zeros(100, np.uint8)))
            put(T0 + 0.8, grip, msg("std_msgs/msg/Float64MultiArray",
                                    layout=msg("std_msgs/msg/MultiArrayLayout", dim=[], data_offset=0),
                                    data=np.array([np.nan])))
        for t, c, m in sorted(events, key=lambda e: e[0]):
            w.write(c, int(round(t * 1e9)), TS.serialize_cdr(m, m.__msgtype__))


def psnr(a, b):
    mse = np.mean((a.astype(float) - b.astype(float)) ** 2)
    return 10 * np.log10(255**2 / mse) if mse else float("inf")


def test_mcap_and_sqlite3_bags_become_episodes(tmp_path):
    write_bag(tmp_path / "bag_mcap", StoragePlugin.MCAP)
    write_bag(tmp_path / "bag_db3", StoragePlugin.SQLITE3, namespace="robot1")
    out = tmp_path / "ds"
    r1 = convert_bag(tmp_path / "bag_mcap", "fr3", out)
    r2 = convert_bag(tmp_path / "bag_db3", "fr3", out, instruction="stack the cubes")
    assert (r1["episode"], r2["episode"]) == (0, 1)
    assert r1["dropped"] == 0 and r1["task"] == "pick up the red cube" and r2["task"] == "stack the cubes"
    ds = LeRobotDataset(out)
    assert ds.num_episodes == 2 and ds.tasks == ["pick up the red cube", "stack the cubes"]
    for e in range(2):
        ep = ds.episode(e)
        # camera frames at k/30 for k = 0..60: the slot at 2.0 s closes when the bag ends
        assert ep.length == 61, ep.length
        t = T0 + ep.timestamps
        # state: the joint_states message (100 Hz) nearest to the frame time
        nearest = T0 + np.round(ep.timestamps * 100) / 100
        np.testing.assert_allclose(ep.state[:, :7], np.array([q_at(x) for x in nearest]), atol=1e-6)
        np.testing.assert_allclose(ep.state[:, 7], 0.75, atol=1e-6)  # 0.03 m of 0.04 open
        # the JTC ramp sampled at the frame times (linear interpolation of a positions-only trajectory)
        np.testing.assert_allclose(ep.action[:, :7], np.array([q_at(x) for x in t]), atol=1e-6)
        np.testing.assert_allclose(ep.action[:, 7], 0.5, atol=1e-6)
        src = ep.columns["action.source"]
        rel = np.round(ep.timestamps * 30) / 30  # exact frame times (the column is float32)
        np.testing.assert_allclose(src[:, 0], 0.01 * np.minimum(np.floor(rel / 0.1 + 1e-9), 29), atol=1e-6)
        fronts = ep.frames("observation.images.front")
        wrists = ep.frames("observation.images.wrist")
        assert min(psnr(f, camera_image(k)) for k, f in enumerate(fronts)) >= 35
        assert min(psnr(f, camera_image(k + 7)) for k, f in enumerate(wrists)) >= 35


def test_bag_without_the_embodiments_topics_is_refused(tmp_path):
    with Writer(tmp_path / "bag", version=9, storage_plugin=StoragePlugin.MCAP) as w:
        c = w.add_connection("/chatter", "std_msgs/msg/String", typestore=TS)
        w.write(c, 1, TS.serialize_cdr(msg("std_msgs/msg/String", data="x"), "std_msgs/msg/String"))
    with pytest.raises(BagError, match="no 'cameras/front/image_raw' topic"):
        convert_bag(tmp_path / "bag", "fr3", tmp_path / "ds")
    with pytest.raises(BagError, match="no such bag"):
        convert_bag(tmp_path / "nothing", "fr3", tmp_path / "ds")


def test_malformed_messages_in_a_bag_are_left_out_and_counted(tmp_path):
    # A NaN joint state, a short position array and a truncated image used to abort the
    # conversion (or put NaN into observation.state): now each is left out and counted.
    write_bag(tmp_path / "bag", StoragePlugin.MCAP, hostile=True)
    r = convert_bag(tmp_path / "bag", "fr3", tmp_path / "ds")
    assert r["ignored_messages"] == {"/joint_states": 2, "/cameras/front/image_raw": 1}
    assert "non-finite position for fr3_joint1" in r["ignored_first_errors"]["/joint_states"]
    assert r["dropped"] == 0
    ep = LeRobotDataset(tmp_path / "ds").episode(0)
    assert ep.length == 61
    nearest = T0 + np.round(ep.timestamps * 100) / 100
    np.testing.assert_allclose(ep.state[:, :7], np.array([q_at(x) for x in nearest]), atol=1e-6)
    np.testing.assert_allclose(ep.action[:, 7], 0.5, atol=1e-6)  # the NaN gripper command left out
