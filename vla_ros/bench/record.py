"""`vla-ros bench record`: can the recorder keep up with a real cell's streams?

A publisher process-mate plays a cell on the wall clock: `--cameras` cameras of `--width`x`--height`
rgb8 at `--camera-hz`, joint_states at `--joint-state-hz`, a JTC trajectory at 20 Hz and a gripper
command at 1 Hz. recorder_node runs as its own process (as on a robot) and records one episode of
`--duration-s`. Reported: frames expected / recorded / dropped (target 0), the recorder's CPU use
(% of one core, from /proc), dataset bytes per second, video encode time per frame and the longest
wait of a frame in the encoder queue (encode latency), and the time to save the episode.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import yaml

from vla_ros.bench import bench_namespace


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--duration-s", type=float, default=60.0, help="episode length (s, wall clock)")
    parser.add_argument("--cameras", type=int, default=3, help="number of cameras")
    parser.add_argument("--width", type=int, default=640, help="camera width (px)")
    parser.add_argument("--height", type=int, default=480, help="camera height (px)")
    parser.add_argument("--camera-hz", type=float, default=30.0, help="camera rate (Hz)")
    parser.add_argument("--joint-state-hz", type=float, default=100.0, help="joint_states rate (Hz)")
    parser.add_argument("--codec", default="auto", help="video encoder (auto: AV1 if available, else H.264)")
    parser.add_argument("--reliable-images", action="store_true", help="the recorder subscribes to cameras reliably")
    parser.add_argument("--reliable-joint-states", action="store_true",
                        help="the recorder subscribes to joint_states reliably")
    parser.add_argument("--keep", default="", help="keep the dataset in this folder (default: a temporary one)")


def _bench_embodiment(folder: Path, cameras: int, width: int, height: int) -> Path:
    from vla_ros.core.embodiment import config_dir

    data = yaml.safe_load((config_dir() / "fr3.yaml").read_text())
    data["cameras"] = {f"cam{i}": {"topic": f"cameras/cam{i}/image_raw", "width": width, "height": height,
                                   "compressed": False} for i in range(cameras)}
    path = folder / "bench_fr3.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _frames(cameras: int, width: int, height: int, n: int = 30) -> list[list[np.ndarray]]:
    """Per camera, n frames of smooth content with a moving block (so the encoder has work)."""
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([xx * 255 // max(width - 1, 1), yy * 255 // max(height - 1, 1), np.full_like(xx, 90)], -1)
    out = []
    for c in range(cameras):
        frames = []
        for k in range(n):
            img = base.astype(np.uint8).copy()
            x0 = (k * width // n + 40 * c) % max(width - 60, 1)
            img[height // 3: height // 3 + 60, x0:x0 + 60] = (250, 30 * c, 40)
            frames.append(img)
        out.append(frames)
    return out


def _count_in(stamps: list[float], start_s: float | None, end_s: float | None) -> int | None:
    """Frames stamped in [start_s, end_s]; None when the dataset does not say its episode's span."""
    if start_s is None or end_s is None:
        return None
    return int(sum(start_s <= t <= end_s for t in stamps))


def _grid_slots(start_s: float | None, end_s: float | None, fps: float) -> int | None:
    """Slots of a grid at fps from start_s whose window (slot +- half a period) closed by end_s: the
    most rows + counted drops an episode spanning [start_s, end_s] can hold."""
    if start_s is None or end_s is None or end_s < start_s:
        return None
    return int(math.floor((end_s - start_s) * fps + 0.5 + 1e-9))


def run(args: argparse.Namespace) -> dict:
    os.environ.setdefault("ROS_LOG_DIR", tempfile.mkdtemp(prefix="vla_ros_bench_log_"))
    import rclpy
    from rclpy.node import Node
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import Float64MultiArray
    from std_srvs.srv import Trigger
    from trajectory_msgs.msg import JointTrajectory

    from vla_ros.core.embodiment import load_embodiment
    from vla_ros.data import LeRobotDataset
    from vla_ros.nodes import conversions as cv

    work = Path(tempfile.mkdtemp(prefix="vla_ros_bench_record_"))
    out = Path(args.keep) if args.keep else work / "ds"
    if args.keep and out.exists():
        shutil.rmtree(out)
    yaml_path = _bench_embodiment(work, args.cameras, args.width, args.height)
    # A namespace of its own: the bench publishes an FR3's joint_states and arm commands, which a
    # robot, sim or recorder on the default topics of this ROS domain would otherwise hear.
    namespace = bench_namespace("record")
    spec = load_embodiment(str(yaml_path))
    exe = Path(sys.executable).parent / "recorder_node"
    cmd = ([str(exe)] if exe.exists() else [sys.executable, "-m", "vla_ros.nodes.recorder_node"]) + [
        "--ros-args", "-p", f"embodiment:={yaml_path}", "-p", f"dataset:={out}", "-p", "source_space:=joint_position",
        "-p", f"codec:={args.codec}", "-p", f"reliable_images:={str(args.reliable_images).lower()}",
        "-p", f"reliable_joint_states:={str(getattr(args, 'reliable_joint_states', False)).lower()}",
        "-r", f"__ns:={namespace}"]
    log = open(work / "recorder.log", "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)

    context = rclpy.Context()
    rclpy.init(context=context, args=[])
    node = Node("bench_record_cell", namespace=namespace, context=context)
    qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
    cam_pubs = [node.create_publisher(Image, c.topic, qos) for c in spec.cameras]
    js_pub = node.create_publisher(JointState, "joint_states", qos)
    arm = spec.arms[0]
    jtc_pub = node.create_publisher(JointTrajectory, arm.command.topic, 10)
    grip_pub = node.create_publisher(Float64MultiArray, arm.gripper.command.topic, 10)
    clients = {n: node.create_client(Trigger, f"recorder/{n}") for n in ("start_episode", "save_episode",
                                                                         "discard_episode")}
    frames = _frames(args.cameras, args.width, args.height)
    images = [[cv.array_to_image(f, "rgb8") for f in cam] for cam in frames]
    names = list(arm.joint_names) + [arm.gripper.joint_name]
    home = np.asarray(arm.home_rad, dtype=float)
    stop = threading.Event()
    published = {"images": 0, "joint_states": 0}
    image_stamps: list[float] = []  # of each published camera frame (all cameras share it)

    def now_s() -> float:
        return time.time()

    def cell() -> None:
        t0 = time.monotonic()
        k_cam = k_js = k_cmd = k_grip = 0
        while not stop.is_set():
            t = time.monotonic() - t0
            if t >= k_js / args.joint_state_hz:
                q = home + 0.1 * np.sin(0.5 * t)
                js_pub.publish(cv.make_joint_state(names, np.append(q, 0.03), np.zeros(len(names)), stamp_s=now_s()))
                published["joint_states"] += 1
                k_js += 1
            if t >= k_cam / args.camera_hz:
                stamp_s = now_s()
                stamp = cv.s_to_time(stamp_s)
                for pub, imgs in zip(cam_pubs, images):
                    msg = imgs[k_cam % len(imgs)]
                    msg.header.stamp = stamp
                    pub.publish(msg)
                published["images"] += 1
                image_stamps.append(stamp_s)
                k_cam += 1
            if t >= k_cmd / 20.0:
                s = now_s()
                ts = np.array([0.01, 0.25, 0.5])
                qs = np.array([home + 0.1 * np.sin(0.5 * (t + d)) for d in ts])
                vs = np.array([0.05 * np.cos(0.5 * (t + d)) * np.ones_like(home) for d in ts])
                vs[-1] = 0.0
                jtc_pub.publish(cv.make_joint_trajectory(arm.command.joint_names, qs, ts, velocities=vs, stamp_s=s))
                k_cmd += 1
            if t >= k_grip:
                grip_pub.publish(cv.make_float64_multi_array([0.04 if k_grip % 2 == 0 else 0.0]))
                k_grip += 1
            time.sleep(0.001)

    def call(name: str) -> Trigger.Response:
        client = clients[name]
        if not client.wait_for_service(timeout_sec=120.0):
            raise RuntimeError(f"recorder/{name} did not appear; see {work / 'recorder.log'}")
        for _ in range(20):  # a lost first answer from a just-discovered server is asked again
            future = client.call_async(Trigger.Request())
            give_up = time.monotonic() + (600.0 if name == "save_episode" else 5.0)
            while not future.done() and time.monotonic() < give_up:
                time.sleep(0.01)
            if future.done():
                result = future.result()
                if not result.success and result.message.startswith("already recording"):
                    result.success = True
                return result
            client.remove_pending_request(future)
        raise RuntimeError(f"recorder/{name} did not answer")

    from rclpy.executors import SingleThreadedExecutor

    from vla_ros.data.recording import NO_READING_YET
    from vla_ros.nodes.runtime import BackgroundSpinner

    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spinner = BackgroundSpinner(executor, "bench_spin").start()
    thread = threading.Thread(target=cell, name="bench_cell", daemon=True)
    try:
        thread.start()
        time.sleep(2.0)  # streams flowing, recorder subscribed
        # Round trip first (a harmless save with nothing recorded): a client can lose the first answer
        # of a server it has just discovered, and a repeated start would then date from the first one.
        call("discard_episode")
        r = call("start_episode")
        deadline = time.monotonic() + 30.0
        while not r.success and r.message.startswith(NO_READING_YET) and time.monotonic() < deadline:
            time.sleep(0.2)  # a stream the recorder has not matched yet (DDS discovery)
            r = call("start_episode")
        if not r.success:
            raise RuntimeError(f"start_episode refused: {r.message}")
        cpu0, wall0, img0 = _cpu_s(proc.pid), time.monotonic(), published["images"]
        time.sleep(args.duration_s)
        img1 = published["images"]
        t_save = time.monotonic()
        r = call("save_episode")
        save_s = time.monotonic() - t_save
        cpu1, wall1 = _cpu_s(proc.pid), time.monotonic()
        if not r.success:
            raise RuntimeError(f"save_episode failed: {r.message}")
    finally:
        stop.set()
        thread.join(timeout=5.0)
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        if spinner.stop():
            node.destroy_node()
        rclpy.try_shutdown(context=context)
    ds = LeRobotDataset(out)
    meta = ds.episode_meta(0)
    ep = ds.episode(0)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    expected = int(round(args.duration_s * args.camera_hz))
    result = {
        "cameras": args.cameras, "width": args.width, "height": args.height, "camera_hz": args.camera_hz,
        "joint_state_hz": args.joint_state_hz, "duration_s": args.duration_s, "reliable_images": args.reliable_images,
        "reliable_joint_states": bool(getattr(args, "reliable_joint_states", False)), "codec": ds.features[
            ds.camera_keys[0]]["info"]["video.codec"] if ds.camera_keys else None,
        "frames_published": img1 - img0, "frames_expected": expected, "frames_recorded": ep.length,
        # The episode as the recorder saw it: from its grid's first slot (slots it could not assemble
        # before its first row are counted drops too) to the save request on its own clock (a starved
        # recorder handles the save late, and its episode is longer than the bench's sleep).
        "frames_published_in_episode": _count_in(image_stamps, meta.get("grid_start_stamp_s"),
                                                 meta.get("end_stamp_s")),
        # Grid slots in that span: rows + drops never exceed it. A publisher starved of CPU catches up
        # in a burst (frames ~1 ms apart share a slot and leave the slots before it empty), so the
        # frames published in the span can be fewer than its slots; those empty slots are drops.
        "slots_in_episode": _grid_slots(meta.get("grid_start_stamp_s"), meta.get("end_stamp_s"), float(ds.fps)),
        "dropped_frames": int(meta["dropped_frames"]), "dropped_reasons": json.loads(meta["dropped_reasons"]),
        "fell_behind": bool(meta["fell_behind"]),
        "recorder_cpu_percent": round(100.0 * (cpu1 - cpu0) / (wall1 - wall0), 1),
        "bytes_per_s": round(size / args.duration_s),
        "encode_ms_per_frame": round(1e3 * float(meta["video_encode_s"]) / max(ep.length * args.cameras, 1), 2),
        "encode_latency_max_s": round(float(meta["video_latency_max_s"]), 3),
        "save_s": round(save_s, 2),
        "dataset": str(out) if args.keep else None,
    }
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return result
