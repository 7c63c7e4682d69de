"""Every conversion between ROS messages and vla_ros values, in one place.

Nodes call these and nothing else to cross the message boundary, so that the message
layout conventions (time stamps, image encodings, the action-chunk schema in
doc/INTERFACES.md) live in one tested module. No cv_bridge: images are decoded here with
numpy (raw) and Pillow (compressed).

Image conventions (sensor_msgs/Image): `step` is the length of one row in bytes and may
include padding after the pixels; `is_bigendian` says the byte order of multi-byte
channels. Arrays returned here are always in the machine's native byte order, (H, W) for
one channel and (H, W, C) otherwise.
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np
from builtin_interfaces.msg import Duration, Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Float64MultiArray, MultiArrayDimension
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint
from visualization_msgs.msg import MarkerArray

from vla_ros.core.types import ActionChunk
from vla_ros.nodes.trajectory_cdr import TooManyPoints, read_joint_trajectory

_NS_PER_S = 1_000_000_000
_INT32_MAX = 2**31 - 1
_INT32_MIN = -(2**31)

#: Spacing of time_from_start may differ from the mean period by this much: the message
#: stores integer nanoseconds, so i * period is rounded by up to 0.5 ns per point.
CHUNK_PERIOD_TOLERANCE_S = 1e-6


# --------------------------------------------------------------------------- time


def s_to_time(t_s: float) -> Time:
    """Float seconds -> builtin_interfaces/Time, rounded to the nearest nanosecond."""
    t = float(t_s)
    if not math.isfinite(t) or t < 0.0:
        raise ValueError(f"time stamp must be a finite number of seconds >= 0, got {t_s!r}")
    sec, nanosec = _split_ns(t)
    if sec > _INT32_MAX:
        raise ValueError(f"time stamp {t_s} s does not fit builtin_interfaces/Time (int32 seconds)")
    return Time(sec=sec, nanosec=nanosec)


def _split_ns(t: float) -> tuple[int, int]:
    # Splitting before scaling keeps the fraction exact: t * 1e9 for a wall-clock stamp
    # (~1.7e9 s) would lose ~100 ns. floor() keeps nanosec >= 0 for negative durations.
    sec = math.floor(t)
    nanosec = int(round((t - sec) * _NS_PER_S))
    if nanosec >= _NS_PER_S:
        sec, nanosec = sec + 1, nanosec - _NS_PER_S
    return int(sec), nanosec


def time_to_s(msg: Time) -> float:
    """builtin_interfaces/Time -> float seconds."""
    return msg.sec + msg.nanosec * 1e-9


def s_to_duration(d_s: float) -> Duration:
    """Float seconds (may be negative) -> builtin_interfaces/Duration.

    As in rclpy, nanosec is always in [0, 1e9) and carries the sign in sec: -0.25 s is
    sec=-1, nanosec=750000000.
    """
    d = float(d_s)
    if not math.isfinite(d):
        raise ValueError(f"duration must be a finite number of seconds, got {d_s!r}")
    sec, nanosec = _split_ns(d)
    if not _INT32_MIN <= sec <= _INT32_MAX:
        raise ValueError(f"duration {d_s} s does not fit builtin_interfaces/Duration (int32 seconds)")
    return Duration(sec=sec, nanosec=nanosec)


def duration_to_s(msg: Duration) -> float:
    """builtin_interfaces/Duration -> float seconds."""
    return msg.sec + msg.nanosec * 1e-9


# --------------------------------------------------------------------------- action chunks


def chunk_to_msg(chunk: ActionChunk, frame_id: str = "") -> JointTrajectory:
    """ActionChunk -> JointTrajectory per the action-chunk schema in doc/INTERFACES.md.

    header.stamp = chunk.stamp_s (capture time of the observation), joint_names = the
    column names, points[i].positions = row i, points[i].time_from_start = i * period_s.
    """
    msg = JointTrajectory()
    msg.header.stamp = s_to_time(chunk.stamp_s)
    msg.header.frame_id = frame_id
    msg.joint_names = list(chunk.names)
    points = []
    for i, row in enumerate(chunk.values):
        p = JointTrajectoryPoint()
        p.positions = row.tolist()
        p.time_from_start = s_to_duration(i * chunk.period_s)
        points.append(p)
    msg.points = points
    return msg


def msg_to_chunk(msg: JointTrajectory, default_period_s: float | None = None,
                 max_points: int | None = None) -> ActionChunk:
    """JointTrajectory on `action_chunk` -> ActionChunk, validating the schema.

    The period is recovered from time_from_start (as whole nanoseconds: exact), which must start
    at 0 and be uniformly spaced and strictly increasing. A one-point message carries no period,
    so `default_period_s` must be given for it. `max_points`: longer messages are refused before
    any of their points is read. Raises ValueError naming the offending point.
    """
    if max_points is not None and len(msg.points) > max_points:
        raise TooManyPoints(len(msg.points), max_points)
    points = msg.points
    return _chunk_from_fields(
        tuple(msg.joint_names), [p.positions for p in points],
        [p.time_from_start.sec for p in points], [p.time_from_start.nanosec for p in points],
        msg.header.stamp.sec, msg.header.stamp.nanosec, default_period_s)


def serialized_to_chunk(data: bytes, default_period_s: float | None = None,
                        max_points: int | None = None) -> ActionChunk:
    """A serialized JointTrajectory (CDR bytes from a `raw=True` subscription) -> ActionChunk,
    with exactly msg_to_chunk's rules; malformed bytes raise ValueError too (trajectory_cdr)."""
    wire = read_joint_trajectory(data, max_points=max_points)
    return _chunk_from_fields(wire.joint_names, wire.positions, wire.time_sec, wire.time_nanosec,
                              wire.stamp_sec, wire.stamp_nanosec, default_period_s)


def _chunk_from_fields(names: tuple[str, ...], positions: Sequence, time_sec: Sequence[int],
                       time_nanosec: Sequence[int], stamp_sec: int, stamp_nanosec: int,
                       default_period_s: float | None) -> ActionChunk:
    if not names:
        raise ValueError("action chunk message has no joint_names")
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"action chunk message has duplicate joint_names {dupes}")
    if not len(positions):
        raise ValueError("action chunk message has no points")
    if isinstance(positions, np.ndarray) and positions.ndim == 2 and positions.shape[1] == len(names):
        values = positions.astype(np.float64, copy=False)
    else:
        for i, p in enumerate(positions):
            if len(p) != len(names):
                raise ValueError(
                    f"action chunk point {i} has {len(p)} positions, expected {len(names)} "
                    f"(one per joint_name)"
                )
        values = np.stack([np.asarray(p, dtype=np.float64) for p in positions])
    finite = np.isfinite(values)
    if not np.all(finite):
        i = int(np.flatnonzero(~np.all(finite, axis=1))[0])
        bad = [names[j] for j in np.flatnonzero(~finite[i])]
        raise ValueError(f"action chunk point {i} has non-finite positions for {bad}")
    sec = np.asarray(time_sec, dtype=np.int64)
    nanosec = np.asarray(time_nanosec, dtype=np.int64)
    outside = (nanosec < 0) | (nanosec >= _NS_PER_S)
    if np.any(outside):
        i = int(np.flatnonzero(outside)[0])
        raise ValueError(f"action chunk point {i} has time_from_start.nanosec {nanosec[i]} "
                         f"outside [0, 1e9)")
    if not 0 <= stamp_nanosec < _NS_PER_S:
        raise ValueError(f"action chunk header.stamp.nanosec {stamp_nanosec} is outside [0, 1e9)")
    times_ns = sec * _NS_PER_S + nanosec
    if times_ns[0] != 0:
        raise ValueError(
            f"action chunk points[0].time_from_start must be 0 (row 0 is at the header stamp), "
            f"got {times_ns[0] * 1e-9} s"
        )
    if len(times_ns) == 1:
        if default_period_s is None:
            raise ValueError(
                "action chunk with a single point carries no period; pass default_period_s"
            )
        period_s = float(default_period_s)
    else:
        steps_ns = np.diff(times_ns)
        if np.any(steps_ns <= 0):
            i = int(np.flatnonzero(steps_ns <= 0)[0]) + 1
            raise ValueError(
                f"action chunk time_from_start must be strictly increasing; point {i} is at "
                f"{times_ns[i] * 1e-9} s after {times_ns[i - 1] * 1e-9} s"
            )
        period_s = (times_ns[-1] - times_ns[0]) * 1e-9 / (len(times_ns) - 1)
        expected = period_s * np.arange(len(times_ns))
        deviation = np.abs(times_ns * 1e-9 - expected)
        if np.max(deviation) > CHUNK_PERIOD_TOLERANCE_S:
            i = int(np.argmax(deviation))
            raise ValueError(
                f"action chunk time_from_start must be uniformly spaced (i * period); point {i} "
                f"is at {times_ns[i] * 1e-9:.9f} s, expected {expected[i]:.9f} s for period "
                f"{period_s:.9f} s"
            )
    return ActionChunk(
        names=names,
        values=values,
        period_s=period_s,
        stamp_s=stamp_sec + stamp_nanosec * 1e-9,
    )


# --------------------------------------------------------------------------- joints


def joint_state_positions(msg: JointState, names: Sequence[str], prefix: str = "") -> np.ndarray:
    """Positions of `names` from a JointState, in the order of `names`.

    `prefix` is prepended to every name in the message before matching, so the bare driver
    names of a namespaced arm ("waist") match qualified names ("follower_left/waist") with
    prefix="follower_left/". KeyError names every missing joint.
    """
    msg_names = [prefix + n for n in msg.name]
    if len(msg.position) != len(msg_names):
        raise ValueError(
            f"JointState has {len(msg_names)} names but {len(msg.position)} positions"
        )
    index = {n: i for i, n in enumerate(msg_names)}
    missing = [n for n in names if n not in index]
    if missing:
        raise KeyError(f"joint_states lacks joints {missing}; it has {msg_names}")
    position = np.asarray(msg.position, dtype=np.float64)
    return position[[index[n] for n in names]] if len(names) else np.zeros(0)


def make_joint_state(
    names: Sequence[str],
    positions: Iterable[float],
    velocities: Iterable[float] | None = None,
    efforts: Iterable[float] | None = None,
    stamp_s: float | None = None,
) -> JointState:
    """Build a JointState; velocity/effort arrays are left empty when not given."""
    msg = JointState()
    if stamp_s is not None:
        msg.header.stamp = s_to_time(stamp_s)
    msg.name = [str(n) for n in names]
    msg.position = _vector(positions, len(msg.name), "positions")
    if velocities is not None:
        msg.velocity = _vector(velocities, len(msg.name), "velocities")
    if efforts is not None:
        msg.effort = _vector(efforts, len(msg.name), "efforts")
    return msg


def make_float64_multi_array(values: Iterable[float], label: str = "") -> Float64MultiArray:
    """A 1-D Float64MultiArray, as forward_command_controller's ~/commands takes."""
    data = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=np.float64)
    if data.ndim != 1:
        raise ValueError(f"Float64MultiArray values must be 1-D, got shape {data.shape}")
    msg = Float64MultiArray()
    msg.layout.dim = [MultiArrayDimension(label=label, size=int(data.shape[0]), stride=int(data.shape[0]))]
    msg.layout.data_offset = 0
    msg.data = data.tolist()
    return msg


def float64_multi_array_values(msg: Float64MultiArray) -> np.ndarray:
    """The data of a Float64MultiArray (after layout.data_offset) as a float64 vector."""
    return np.asarray(msg.data, dtype=np.float64)[msg.layout.data_offset :]


def make_joint_trajectory(
    joint_names: Sequence[str],
    positions: np.ndarray,
    time_from_start_s: Sequence[float] | np.ndarray,
    velocities: np.ndarray | None = None,
    accelerations: np.ndarray | None = None,
    stamp_s: float = 0.0,
) -> JointTrajectory:
    """A JointTrajectory for a joint_trajectory_controller.

    positions/velocities/accelerations: (T, n) in joint_names order; time_from_start_s: (T,)
    strictly increasing. stamp_s = 0 means "start now" to a JTC.
    """
    names = [str(n) for n in joint_names]
    q = np.asarray(positions, dtype=np.float64)
    t = np.asarray(time_from_start_s, dtype=np.float64).reshape(-1)
    if q.ndim != 2 or q.shape[1] != len(names):
        raise ValueError(f"positions must be (T, {len(names)}), got shape {q.shape}")
    if t.shape[0] != q.shape[0]:
        raise ValueError(f"time_from_start_s has {t.shape[0]} entries, positions has {q.shape[0]} rows")
    if q.shape[0] == 0:
        raise ValueError("a joint trajectory needs at least one point")
    if np.any(np.diff(t) <= 0):
        raise ValueError(f"time_from_start_s must be strictly increasing, got {t.tolist()}")
    extras = {}
    for label, arr in (("velocities", velocities), ("accelerations", accelerations)):
        if arr is not None:
            a = np.asarray(arr, dtype=np.float64)
            if a.shape != q.shape:
                raise ValueError(f"{label} must have the shape of positions {q.shape}, got {a.shape}")
            extras[label] = a
    msg = JointTrajectory()
    msg.header.stamp = s_to_time(stamp_s)
    msg.joint_names = names
    points = []
    for i in range(q.shape[0]):
        p = JointTrajectoryPoint()
        p.positions = q[i].tolist()
        if "velocities" in extras:
            p.velocities = extras["velocities"][i].tolist()
        if "accelerations" in extras:
            p.accelerations = extras["accelerations"][i].tolist()
        p.time_from_start = s_to_duration(float(t[i]))
        points.append(p)
    msg.points = points
    return msg


def _vector(values: Iterable[float], n: int, label: str) -> list[float]:
    arr = np.asarray(values if isinstance(values, np.ndarray) else list(values), dtype=np.float64).reshape(-1)
    if arr.shape[0] != n:
        raise ValueError(f"{label} has {arr.shape[0]} entries, expected {n} (one per name)")
    return arr.tolist()


# --------------------------------------------------------------------------- raw images


@dataclass(frozen=True)
class PixelFormat:
    """How one sensor_msgs/Image encoding lays out a pixel."""

    dtype: np.dtype  # channel type, byte order not yet applied
    channels: int


_NAMED_ENCODINGS: dict[str, PixelFormat] = {
    "rgb8": PixelFormat(np.dtype(np.uint8), 3),
    "bgr8": PixelFormat(np.dtype(np.uint8), 3),
    "rgba8": PixelFormat(np.dtype(np.uint8), 4),
    "bgra8": PixelFormat(np.dtype(np.uint8), 4),
    "mono8": PixelFormat(np.dtype(np.uint8), 1),
    "rgb16": PixelFormat(np.dtype(np.uint16), 3),
    "bgr16": PixelFormat(np.dtype(np.uint16), 3),
    "rgba16": PixelFormat(np.dtype(np.uint16), 4),
    "bgra16": PixelFormat(np.dtype(np.uint16), 4),
    "mono16": PixelFormat(np.dtype(np.uint16), 1),
}
# The generic OpenCV-style encodings of sensor_msgs/image_encodings.hpp: <bits><U|S|F>C<n>.
_GENERIC_ENCODING = re.compile(r"^(8|16|32|64)(U|S|F)C([1-4])$")
_GENERIC_DTYPES = {
    ("8", "U"): np.uint8, ("8", "S"): np.int8, ("16", "U"): np.uint16, ("16", "S"): np.int16,
    ("32", "S"): np.int32, ("32", "F"): np.float32, ("64", "F"): np.float64,
}  # fmt: skip


def pixel_format(encoding: str) -> PixelFormat:
    """The pixel layout of a sensor_msgs/Image encoding; ValueError lists what is supported."""
    if encoding in _NAMED_ENCODINGS:
        return _NAMED_ENCODINGS[encoding]
    m = _GENERIC_ENCODING.match(encoding)
    if m and (m.group(1), m.group(2)) in _GENERIC_DTYPES:
        return PixelFormat(np.dtype(_GENERIC_DTYPES[(m.group(1), m.group(2))]), int(m.group(3)))
    raise ValueError(
        f"unsupported image encoding '{encoding}'; supported: {sorted(_NAMED_ENCODINGS)} and "
        f"<8|16|32|64><U|S|F>C<1-4> (8UC3, 16UC1, 32FC1, ...; no 32U, 8F, 16F)"
    )


def image_to_array(msg: Image) -> np.ndarray:
    """sensor_msgs/Image -> ndarray, native byte order; (H, W) for 1 channel else (H, W, C).

    Honours `step` (padding after each row is dropped) and `is_bigendian`. Raises ValueError
    when `step` is shorter than a row of pixels or `data` is not `height * step` bytes.
    """
    fmt = pixel_format(msg.encoding)
    h, w = int(msg.height), int(msg.width)
    row_bytes = w * fmt.channels * fmt.dtype.itemsize
    step = int(msg.step)
    if step < row_bytes:
        raise ValueError(
            f"image step {step} B is shorter than one row of {w} px x {fmt.channels} ch x "
            f"{fmt.dtype.itemsize} B = {row_bytes} B (encoding {msg.encoding})"
        )
    raw = np.frombuffer(msg.data, dtype=np.uint8)
    if raw.shape[0] != h * step:
        raise ValueError(
            f"image data has {raw.shape[0]} B, expected height {h} x step {step} = {h * step} B"
        )
    rows = raw.reshape(h, step)[:, :row_bytes]
    wire = fmt.dtype.newbyteorder(">" if msg.is_bigendian else "<")
    # A contiguous copy is needed before reinterpreting bytes whenever rows are padded.
    pixels = np.ascontiguousarray(rows).view(wire).astype(fmt.dtype.newbyteorder("="), copy=False)
    shape = (h, w) if fmt.channels == 1 else (h, w, fmt.channels)
    return pixels.reshape(shape)


def array_to_image(
    array: np.ndarray,
    encoding: str,
    stamp_s: float | None = None,
    frame_id: str = "",
    step: int | None = None,
    is_bigendian: bool = False,
) -> Image:
    """ndarray -> sensor_msgs/Image.

    `array` is (H, W) or (H, W, 1) for one channel, (H, W, C) otherwise, with the dtype the
    encoding implies. `step` defaults to the packed row length; a larger step pads every row
    with zero bytes. `is_bigendian` chooses the byte order written for multi-byte channels.
    """
    fmt = pixel_format(encoding)
    arr = np.asarray(array)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] != fmt.channels:
        raise ValueError(
            f"encoding '{encoding}' needs an (H, W{'' if fmt.channels == 1 else f', {fmt.channels}'}) "
            f"array, got shape {np.shape(array)}"
        )
    if arr.dtype != fmt.dtype:
        raise ValueError(f"encoding '{encoding}' needs dtype {fmt.dtype}, got {arr.dtype}")
    h, w = arr.shape[:2]
    row_bytes = w * fmt.channels * fmt.dtype.itemsize
    step = row_bytes if step is None else int(step)
    if step < row_bytes:
        raise ValueError(f"step {step} B is shorter than one row of {row_bytes} B for encoding '{encoding}'")
    wire = arr.astype(fmt.dtype.newbyteorder(">" if is_bigendian else "<"), copy=False)
    packed = np.ascontiguousarray(wire).view(np.uint8).reshape(h, row_bytes)
    if step != row_bytes:
        padded = np.zeros((h, step), dtype=np.uint8)
        padded[:, :row_bytes] = packed
        packed = padded
    msg = Image()
    if stamp_s is not None:
        msg.header.stamp = s_to_time(stamp_s)
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(h), int(w)
    msg.encoding = encoding
    msg.is_bigendian = 1 if is_bigendian else 0
    msg.step = step
    msg.data = packed.tobytes()
    return msg


def to_rgb8(array: np.ndarray, encoding: str) -> np.ndarray:
    """Convert a decoded image array of `encoding` to (H, W, 3) uint8 RGB for a policy.

    Colour orders are swapped and alpha dropped (8UC3 says no order and is taken as RGB);
    mono8/8UC1 is replicated; 16-bit colour and mono16/16UC1 are scaled by 255/65535 and
    rounded. Float and signed encodings (depth, disparity) have no canonical RGB and are refused.
    """
    arr = np.asarray(array)
    if encoding in ("rgb8", "8UC3"):
        out = arr
    elif encoding == "bgr8":
        out = arr[:, :, ::-1]
    elif encoding == "rgba8":
        out = arr[:, :, :3]
    elif encoding == "bgra8":
        out = arr[:, :, 2::-1]
    elif encoding in ("mono8", "8UC1"):
        out = np.repeat(arr.reshape(arr.shape[0], arr.shape[1], 1), 3, axis=2)
    elif encoding in ("mono16", "16UC1", "rgb16", "bgr16", "rgba16", "bgra16"):
        eight = ((arr.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
        return to_rgb8(eight, {"mono16": "mono8", "16UC1": "mono8", "rgb16": "rgb8",
                               "bgr16": "bgr8", "rgba16": "rgba8", "bgra16": "bgra8"}[encoding])  # fmt: skip
    else:
        raise ValueError(
            f"image encoding '{encoding}' cannot be shown to a policy as RGB; use rgb8, bgr8, "
            f"rgba8, bgra8, mono8, mono16/16UC1 or their 16-bit colour variants"
        )
    return np.ascontiguousarray(out, dtype=np.uint8)


# --------------------------------------------------------------------------- compressed images

_PIL_FORMATS = {"jpeg": "JPEG", "jpg": "JPEG", "png": "PNG"}


def _compressed_kind(fmt: str) -> str:
    """'jpeg' or 'png' from a CompressedImage.format ("jpeg", "rgb8; jpeg compressed bgr8", ...)."""
    words = re.findall(r"[a-z0-9]+", fmt.lower())
    if "compresseddepth" in words:
        raise ValueError(f"CompressedImage format '{fmt}' (compressedDepth) is not supported")
    for w in words:
        if w in ("jpeg", "jpg"):
            return "jpeg"
        if w == "png":
            return "png"
    raise ValueError(f"CompressedImage format '{fmt}' is not supported; expected jpeg or png")


def compressed_to_array(msg: CompressedImage) -> np.ndarray:
    """Decode a jpeg/png CompressedImage: (H, W, 3) uint8 RGB for colour images,
    (H, W) uint8 for 8-bit grey, (H, W) uint16 for 16-bit grey png, (H, W, 4) for RGBA png."""
    from PIL import Image as PILImage

    kind = _compressed_kind(msg.format)
    try:
        with PILImage.open(io.BytesIO(bytes(msg.data))) as img:
            img.load()
            actual = (img.format or "").lower()
            if _PIL_FORMATS.get(actual, "").lower() != _PIL_FORMATS[kind].lower():
                raise ValueError(f"CompressedImage format says '{msg.format}' but the data is {img.format}")
            if img.mode in ("I;16", "I;16B", "I;16L"):
                return np.asarray(img, dtype=np.uint16).copy()
            if img.mode == "I":
                return np.asarray(img).astype(np.uint16)
            if img.mode not in ("L", "RGB", "RGBA"):
                img = img.convert("RGB")
            return np.asarray(img).copy()
    except PILImage.UnidentifiedImageError as err:
        raise ValueError(f"CompressedImage data is not a decodable {kind} image: {err}") from err


def array_to_compressed(
    array: np.ndarray,
    fmt: str = "jpeg",
    quality: int = 90,
    stamp_s: float | None = None,
    frame_id: str = "",
) -> CompressedImage:
    """Encode (H, W, 3) uint8 RGB, (H, W) uint8 grey, or (png only) (H, W) uint16 / (H, W, 4)
    uint8 as a CompressedImage. `format` follows image_transport ("rgb8; jpeg compressed bgr8")
    so that its compressed subscribers decode it too."""
    from PIL import Image as PILImage

    kind = _compressed_kind(fmt)
    arr = np.ascontiguousarray(array)
    if arr.ndim == 2 and arr.dtype == np.uint8:
        source, carried, img = "mono8", "mono8", PILImage.fromarray(arr)
    elif arr.ndim == 2 and arr.dtype == np.uint16 and kind == "png":
        source, carried, img = "mono16", "mono16", PILImage.fromarray(arr)
    elif arr.ndim == 3 and arr.shape[2] == 3 and arr.dtype == np.uint8:
        source, carried, img = "rgb8", "bgr8", PILImage.fromarray(arr)
    elif arr.ndim == 3 and arr.shape[2] == 4 and arr.dtype == np.uint8 and kind == "png":
        source, carried, img = "rgba8", "bgra8", PILImage.fromarray(arr)
    else:
        raise ValueError(
            f"cannot encode a {arr.shape} {arr.dtype} array as {kind}; expected (H, W, 3) uint8, "
            f"(H, W) uint8, or for png also (H, W) uint16 and (H, W, 4) uint8"
        )
    if not 1 <= int(quality) <= 100:
        raise ValueError(f"jpeg quality must be in [1, 100], got {quality}")
    buf = io.BytesIO()
    if kind == "jpeg":
        img.save(buf, format="JPEG", quality=int(quality))
    else:
        img.save(buf, format="PNG")
    msg = CompressedImage()
    if stamp_s is not None:
        msg.header.stamp = s_to_time(stamp_s)
    msg.header.frame_id = frame_id
    msg.format = f"{source}; {kind} compressed {carried}"
    msg.data = buf.getvalue()
    return msg


def image_to_rgb8(msg: Image | CompressedImage) -> np.ndarray:
    """Any camera message (raw or jpeg/png compressed) -> (H, W, 3) uint8 RGB for a policy."""
    if isinstance(msg, CompressedImage):
        arr = compressed_to_array(msg)
        if arr.ndim == 2:
            return to_rgb8(arr, "mono16" if arr.dtype == np.uint16 else "mono8")
        return to_rgb8(arr, "rgba8" if arr.shape[2] == 4 else "rgb8")
    return to_rgb8(image_to_array(msg), msg.encoding)


# --------------------------------------------------------------------------- markers, diagnostics


def quaternion_to_matrix(x: float, y: float, z: float, w: float) -> np.ndarray:
    """Unit quaternion (x, y, z, w) -> 3x3 rotation; the quaternion is normalised first."""
    q = np.array([x, y, z, w], dtype=np.float64)
    n = np.linalg.norm(q)
    if not np.isfinite(n) or n < 1e-9:
        raise ValueError(f"quaternion {q.tolist()} has no orientation (norm {n})")
    x, y, z, w = q / n
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def markers_to_poses(msg: MarkerArray) -> dict[str, np.ndarray]:
    """`sim/objects` -> {marker.ns: (4, 4) pose}; a DELETE/DELETEALL marker drops its entries."""
    poses: dict[str, np.ndarray] = {}
    for m in msg.markers:
        if m.action == m.DELETEALL:
            poses.clear()
            continue
        if m.action == m.DELETE:
            poses.pop(m.ns, None)
            continue
        T = np.eye(4)
        o = m.pose.orientation
        T[:3, :3] = quaternion_to_matrix(o.x, o.y, o.z, o.w)
        T[:3, 3] = (m.pose.position.x, m.pose.position.y, m.pose.position.z)
        poses[m.ns] = T
    return poses


DIAGNOSTIC_LEVELS = {"ok": DiagnosticStatus.OK, "warn": DiagnosticStatus.WARN,
                     "error": DiagnosticStatus.ERROR, "stale": DiagnosticStatus.STALE}  # fmt: skip


def make_diagnostics(
    name: str,
    level: str,
    message: str,
    values: Mapping[str, object] | None = None,
    hardware_id: str = "",
    stamp_s: float | None = None,
) -> DiagnosticArray:
    """A DiagnosticArray with one status; level is 'ok', 'warn', 'error' or 'stale'."""
    if level not in DIAGNOSTIC_LEVELS:
        raise ValueError(f"diagnostic level must be one of {sorted(DIAGNOSTIC_LEVELS)}, got '{level}'")
    status = DiagnosticStatus(level=DIAGNOSTIC_LEVELS[level], name=name, message=message, hardware_id=hardware_id)
    status.values = [KeyValue(key=str(k), value=str(v)) for k, v in (values or {}).items()]
    msg = DiagnosticArray()
    if stamp_s is not None:
        msg.header.stamp = s_to_time(stamp_s)
    msg.status = [status]
    return msg


# --------------------------------------------------------------------------- planned path
# (added by the controller engineer: the controller's `planned_path` MarkerArray)


def make_path_markers(
    paths: Mapping[str, np.ndarray],
    frame_ids: Mapping[str, str],
    stamp_s: float | None = None,
    ns_prefix: str = "planned_path",
    line_width_m: float = 0.005,
) -> MarkerArray:
    """One LINE_STRIP marker per arm: `paths[arm]` is (M, 3) points in frame `frame_ids[arm]`.

    Marker ns is `<ns_prefix>/<arm>` with id 0, so each publish replaces the previous strip.
    """
    from geometry_msgs.msg import Point
    from visualization_msgs.msg import Marker

    msg = MarkerArray()
    for arm, points in paths.items():
        pts = np.asarray(points, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] != 3:
            raise ValueError(f"path of arm '{arm}' must be (M, 3) points, got shape {pts.shape}")
        if arm not in frame_ids:
            raise KeyError(f"no frame_id for arm '{arm}'; have {sorted(frame_ids)}")
        m = Marker()
        m.header.frame_id = frame_ids[arm]
        if stamp_s is not None:
            m.header.stamp = s_to_time(stamp_s)
        m.ns = f"{ns_prefix}/{arm}"
        m.id = 0
        m.type = Marker.LINE_STRIP
        m.action = Marker.ADD
        m.pose.orientation.w = 1.0
        m.scale.x = float(line_width_m)
        m.color.r, m.color.g, m.color.b, m.color.a = 0.1, 0.8, 0.2, 1.0
        m.points = [Point(x=float(p[0]), y=float(p[1]), z=float(p[2])) for p in pts]
        msg.markers.append(m)
    return msg
