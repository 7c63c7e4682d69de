"""rosbag2 -> LeRobotDataset v3.0: one bag (MCAP or sqlite3 storage) becomes one episode, with
the recorder's alignment rule (vla_ros.data.recording). Read with `rosbags` (pure Python, no ROS
install). Topics are matched to the embodiment config by name (a bag recorded under a namespace
matches by suffix): cameras (sensor_msgs/Image or CompressedImage), `joint_states` per arm, each
arm's command topic (JointTrajectory for a JTC, Float64MultiArray for a forward controller), the
gripper command topics, `action_chunk` and `instruction`.

Camera frames and joint states are placed by their header stamps; commands by the time the bag
recorded them (their arrival), as the recorder node does.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from vla_ros.core.embodiment import load_embodiment
from vla_ros.core.jtc import TrajectoryCommand, TrajectoryPoint
from vla_ros.core.types import ActionChunk
from vla_ros.data.recording import FrameAssembler, recording_layout
from vla_ros.data.writer import DatasetWriter

TYPE_IMAGE = "sensor_msgs/msg/Image"
TYPE_COMPRESSED = "sensor_msgs/msg/CompressedImage"
TYPE_JOINT_STATE = "sensor_msgs/msg/JointState"
TYPE_TRAJECTORY = "trajectory_msgs/msg/JointTrajectory"
TYPE_FLOAT_ARRAY = "std_msgs/msg/Float64MultiArray"
TYPE_STRING = "std_msgs/msg/String"


class BagError(ValueError):
    """A bag that cannot be converted; the message names the bag and what is wrong."""


def _stamp_s(header) -> float:
    return float(header.stamp.sec) + float(header.stamp.nanosec) * 1e-9


def _duration_s(d) -> float:
    return float(d.sec) + float(d.nanosec) * 1e-9


def image_msg_to_rgb8(msg, msgtype: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB from a rosbags Image (rgb8, bgr8, rgba8, bgra8, mono8) or CompressedImage."""
    if msgtype == TYPE_COMPRESSED:
        from PIL import Image

        with Image.open(io.BytesIO(bytes(msg.data))) as img:
            return np.asarray(img.convert("RGB"), dtype=np.uint8)
    channels = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}
    enc = str(msg.encoding).lower()
    if enc not in channels:
        raise BagError(f"image encoding '{msg.encoding}' is not supported (rgb8, bgr8, rgba8, bgra8, mono8, or compressed)")
    c = channels[enc]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    raw = np.asarray(msg.data, dtype=np.uint8)
    if raw.size < h * step or step < w * c:
        raise BagError(f"image data has {raw.size} bytes, expected height {h} x step {step} (>= width {w} x {c})")
    img = raw[: h * step].reshape(h, step)[:, : w * c].reshape(h, w, c)
    if enc == "mono8":
        return np.repeat(img, 3, axis=2)
    if enc.startswith("bgr"):
        img = img[:, :, [2, 1, 0]]
    return np.ascontiguousarray(img[:, :, :3])


def _match(topic: str, wanted: str) -> bool:
    wanted = wanted.lstrip("/")
    return topic.lstrip("/") == wanted or topic.endswith("/" + wanted)


def convert_bag(bag: str | Path, embodiment: str, out: str | Path, *, instruction: str = "", fps: int = 30,
                source_space: str | None = None, codec: str = "auto") -> dict[str, Any]:
    """Append the bag as one episode to the dataset `out` (created if needed); returns a summary."""
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_typestore

    bag = Path(bag)
    if not bag.exists():
        raise BagError(f"{bag}: no such bag")
    folder = bag if bag.is_dir() else bag.parent
    spec = load_embodiment(embodiment)
    layout = recording_layout(spec, source_space)
    asm = FrameAssembler(spec, layout, fps, wait_s=0.0)
    typestore = get_typestore(Stores.ROS2_JAZZY)
    try:
        reader = Reader(folder)
        reader.open()
    except Exception as err:  # noqa: BLE001 - rosbags raises its own error types
        raise BagError(f"{folder}: not a readable rosbag2 ({err})") from err
    try:
        routes: dict[str, tuple[str, Any]] = {}
        for conn in reader.connections:
            t, kind = conn.topic, conn.msgtype
            for cam in spec.cameras:
                if _match(t, cam.topic) and kind in (TYPE_IMAGE, TYPE_COMPRESSED):
                    routes[t] = ("image", cam.slot)
            for arm in spec.arms:
                if _match(t, arm.joint_states_topic) and kind == TYPE_JOINT_STATE:
                    routes[t] = ("state", arm.name)
                if _match(t, arm.command.topic) and kind in (TYPE_TRAJECTORY, TYPE_FLOAT_ARRAY):
                    routes[t] = ("trajectory" if kind == TYPE_TRAJECTORY else "forward", arm.name)
                if arm.gripper is not None and arm.gripper.command is not None and \
                        _match(t, arm.gripper.command.topic) and kind == TYPE_FLOAT_ARRAY:
                    routes[t] = ("gripper", arm.name)
            if _match(t, "action_chunk") and kind == TYPE_TRAJECTORY:
                routes[t] = ("chunk", "")
            if _match(t, "instruction") and kind == TYPE_STRING:
                routes[t] = ("instruction", "")
        kinds = {v[0] for v in routes.values()}
        needed = {"image": [c.topic for c in spec.cameras], "state": [a.joint_states_topic for a in spec.arms]}
        for kind, topics in needed.items():
            for topic in topics:
                if not any(_match(t, topic) for t in routes):
                    raise BagError(f"{folder}: no '{topic}' topic for embodiment '{spec.name}'; the bag has "
                                   f"{sorted((c.topic, c.msgtype) for c in reader.connections)}")
        if not kinds & {"trajectory", "forward"}:
            raise BagError(f"{folder}: no command topic ({[a.command.topic for a in spec.arms]}): the dataset's "
                           "`action` is the command the controller sent")
        task = instruction
        bag_start = reader.start_time * 1e-9
        asm.reset_episode(-np.inf)
        writer = DatasetWriter.open(out, fps=fps, robot_type=spec.name, features=layout.features(), codec=codec)
        ep = writer.start_episode()
        try:
            conns = [c for c in reader.connections if c.topic in routes]
            newest = bag_start
            ignored: dict[str, int] = {}  # topic -> malformed messages left out
            first_errors: dict[str, str] = {}
            for conn, t_ns, raw in reader.messages(connections=conns):
                kind, key = routes[conn.topic]
                t_bag = t_ns * 1e-9
                try:
                    msg = typestore.deserialize_cdr(raw, conn.msgtype)
                    _route(asm, kind, key, msg, conn.msgtype, t_bag, spec.policy_period_s)
                except (ValueError, KeyError, IndexError) as err:
                    # a malformed message (NaN positions, a short array, a broken image) is left
                    # out and counted, as the live recorder does; the frames around it still count
                    ignored[conn.topic] = ignored.get(conn.topic, 0) + 1
                    first_errors.setdefault(conn.topic, str(err).strip("'\""))
                    continue
                if kind == "instruction" and not instruction:
                    task = str(msg.data)
                newest = max(newest, t_bag)
                for f in asm.poll(newest - 0.5):  # readings stamped up to 0.5 s late still count
                    ep.add_frame(f.slot, f.values, f.images)
            for f in asm.flush(np.inf):
                ep.add_frame(f.slot, f.values, f.images)
            report = asm.report
            if ep.num_frames == 0:
                raise BagError(f"{folder}: no frame could be assembled ({dict(report.dropped)})")
            row = writer.save_episode(ep, task, extra={
                "start_stamp_s": float(asm.episode_start_s), "dropped_frames": int(report.dropped_total),
                "dropped_reasons": __import__("json").dumps(dict(report.dropped)),
                "late_messages": int(report.late_messages), "fell_behind": False, "source_bag": str(folder)})
        except BaseException:
            if writer._current is not None:
                writer.discard_episode(ep)
            raise
    finally:
        reader.close()
    return {"dataset": str(out), "bag": str(folder), "episode": int(row["episode_index"]), "frames": int(row["length"]),
            "dropped": int(report.dropped_total), "dropped_reasons": dict(report.dropped), "task": task,
            "total_episodes": writer.num_episodes, "ignored_messages": ignored, "ignored_first_errors": first_errors}


def _route(asm: FrameAssembler, kind: str, key: str, msg, msgtype: str, t_bag: float, default_period_s: float) -> None:
    """One bag message into the assembler (raises ValueError / KeyError on a malformed one)."""
    if kind == "image":
        asm.add_image(key, _stamp_s(msg.header), image_msg_to_rgb8(msg, msgtype))
    elif kind == "state":
        asm.add_joint_state(key, _stamp_s(msg.header), list(msg.name), list(msg.position), list(msg.velocity))
    elif kind == "trajectory":
        points = tuple(TrajectoryPoint(_duration_s(p.time_from_start), tuple(p.positions),
                                       tuple(p.velocities), tuple(p.accelerations)) for p in msg.points)
        asm.add_trajectory(key, TrajectoryCommand(tuple(msg.joint_names), points, _stamp_s(msg.header)), t_bag)
    elif kind == "forward":
        asm.add_forward_command(key, np.asarray(msg.data, dtype=float), t_bag)
    elif kind == "gripper":
        if len(msg.data) and np.isfinite(msg.data[0]):
            asm.add_gripper_command(key, float(msg.data[0]), t_bag)
    elif kind == "chunk":
        _add_chunk(asm, msg, default_period_s)


def _add_chunk(asm: FrameAssembler, msg, default_period_s: float) -> None:
    names = tuple(msg.joint_names)
    if not msg.points or not names:
        return
    rows = np.array([list(p.positions) for p in msg.points], dtype=float)
    times = [_duration_s(p.time_from_start) for p in msg.points]
    period = times[1] - times[0] if len(times) > 1 else default_period_s
    if rows.ndim != 2 or rows.shape[1] != len(names) or not np.all(np.isfinite(rows)) or period <= 0:
        return
    asm.add_chunk(ActionChunk(names, rows, period, _stamp_s(msg.header)))
