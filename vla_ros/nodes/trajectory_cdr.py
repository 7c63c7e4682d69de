"""Reading a serialized trajectory_msgs/JointTrajectory (CDR, as it arrives on the wire) directly.

Why: rclpy turns a received message into Python objects in one C call that holds the GIL for its
whole length: 8 ms for a 1000-point chunk on the test machine, during which no other thread of the
controller (the e-stop, the command timer) can run. The controller subscribes to `action_chunk`
with `raw=True` and reads the bytes here, in Python code that lets the other threads in every few
hundred microseconds, and that reads only what a chunk needs (positions and times).

The layout is plain CDR (OMG CDR / XCDR1, what ROS 2's DDS middlewares put on the wire), after a
4-byte encapsulation header (0x00 0x01: little endian, 0x00 0x00: big endian). Primitives are
aligned to their size relative to the byte after that header; a sequence is a uint32 count and
its elements (no alignment when it is empty); a string is a uint32 length that counts its NUL.
JointTrajectory = Header (stamp: int32 sec, uint32 nanosec; string frame_id), string[] joint_names,
JointTrajectoryPoint[] points; a point = float64[] positions, velocities, accelerations, effort,
Duration time_from_start (int32 sec, uint32 nanosec).

Everything is bounds-checked: truncated or inconsistent bytes raise ValueError naming the field,
never an IndexError or an allocation sized by a hostile count.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

_ENCAPSULATION = {b"\x00\x01": "<", b"\x00\x00": ">"}
_HEADER_BYTES = 4
# The fewest bytes a point can take: four empty sequences (4 counts) and a Duration.
_MIN_POINT_BYTES = 4 * 4 + 8


class TooManyPoints(ValueError):
    """A message with more points than allowed: refused before any point is read."""

    def __init__(self, num_points: int, max_points: int) -> None:
        super().__init__(f"action chunk message has {num_points} points > max_chunk_points {max_points}")
        self.num_points = num_points


@dataclass(frozen=True)
class WireTrajectory:
    """The fields of a JointTrajectory a chunk needs, read from its serialized bytes."""

    stamp_sec: int
    stamp_nanosec: int
    frame_id: str
    joint_names: tuple[str, ...]
    positions: list[np.ndarray] | np.ndarray  # per point (a [points, joints] array when all are as long)
    time_sec: np.ndarray  # int64, per point (int32 on the wire)
    time_nanosec: np.ndarray  # int64, per point (uint32 on the wire)
    size_bytes: int  # where the message ended (the header included); any bytes after it are padding

    @property
    def num_points(self) -> int:
        return len(self.positions)


class _Reader:
    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self.buf = memoryview(data).cast("B") if not isinstance(data, bytes) else data
        if len(self.buf) < _HEADER_BYTES:
            raise ValueError(f"serialized JointTrajectory has {len(self.buf)} bytes: no CDR encapsulation header")
        order = _ENCAPSULATION.get(bytes(self.buf[:2]))
        if order is None:
            raise ValueError(f"serialized JointTrajectory has an unsupported CDR encapsulation "
                             f"{bytes(self.buf[:2]).hex()} (expected 0001 little-endian or 0000 big-endian CDR)")
        self.order = order
        self.u32 = struct.Struct(order + "I")
        self.i32 = struct.Struct(order + "i")
        self.f64 = np.dtype(order + "f8")
        self.pos = _HEADER_BYTES
        self.end = len(self.buf)

    def _align(self, size: int) -> None:
        self.pos += -(self.pos - _HEADER_BYTES) % size

    def _need(self, nbytes: int, what: str) -> None:
        if self.pos + nbytes > self.end:
            raise ValueError(f"serialized JointTrajectory is truncated in {what} "
                             f"(needs {nbytes} bytes at offset {self.pos}, has {self.end - self.pos})")

    def _word(self, fmt: struct.Struct, what: str) -> int:
        self._align(4)
        self._need(4, what)
        (value,) = fmt.unpack_from(self.buf, self.pos)
        self.pos += 4
        return value

    def uint32(self, what: str) -> int:
        return self._word(self.u32, what)

    def int32(self, what: str) -> int:
        return self._word(self.i32, what)

    def string(self, what: str) -> str:
        length = self.uint32(what)
        if length == 0:  # some writers send an empty string as a bare 0 length
            return ""
        self._need(length, what)
        raw = bytes(self.buf[self.pos:self.pos + length])
        self.pos += length
        if raw[-1] != 0:
            raise ValueError(f"serialized JointTrajectory: {what} is not NUL-terminated")
        try:
            return raw[:raw.index(0)].decode("utf-8")  # a C string: it ends at its first NUL, as rclpy reads it
        except UnicodeDecodeError as err:
            raise ValueError(f"serialized JointTrajectory: {what} is not UTF-8 ({err})") from None

    def count(self, what: str, min_element_bytes: int, max_count: int | None = None) -> int:
        """A sequence's length; `max_count` (the points) is refused first, as TooManyPoints."""
        n = self.uint32(what)
        if max_count is not None and n > max_count:
            raise TooManyPoints(n, max_count)
        if n * min_element_bytes > self.end - self.pos:
            raise ValueError(f"serialized JointTrajectory: {what} claims {n} elements, more than the "
                             f"{self.end - self.pos} bytes left can hold")
        return n

    def float64s(self, what: str) -> np.ndarray:
        n = self.count(what, 8)
        if n == 0:
            return np.empty(0, dtype=np.float64)
        self._align(8)
        self._need(8 * n, what)
        values = np.frombuffer(self.buf, dtype=self.f64, count=n, offset=self.pos)
        self.pos += 8 * n
        return values.astype(np.float64)

    def skip_float64s(self, what: str) -> None:
        n = self.count(what, 8)
        if n:
            self._align(8)
            self._need(8 * n, what)
            self.pos += 8 * n


def read_joint_trajectory(data: bytes | bytearray | memoryview, max_points: int | None = None) -> WireTrajectory:
    """Parse a serialized JointTrajectory (velocities, accelerations and effort are skipped).

    `max_points`: a message with more points raises ValueError before any point is read.
    Bytes after the message are ignored (serialized buffers may be padded)."""
    r = _Reader(data)
    stamp_sec = r.int32("header.stamp.sec")
    stamp_nanosec = r.uint32("header.stamp.nanosec")
    frame_id = r.string("header.frame_id")
    names = tuple(r.string(f"joint_names[{i}]") for i in range(r.count("joint_names", 4)))
    n_points = r.count("points", _MIN_POINT_BYTES, max_points)
    regular = _regular_points(r, n_points, len(names))
    if regular is not None:
        positions, sec, nanosec = regular
        return WireTrajectory(stamp_sec, stamp_nanosec, frame_id, names, positions, sec, nanosec, r.pos)
    positions = []
    sec = np.empty(n_points, dtype=np.int64)
    nanosec = np.empty(n_points, dtype=np.int64)
    for i in range(n_points):
        positions.append(r.float64s(f"points[{i}].positions"))
        r.skip_float64s(f"points[{i}].velocities")
        r.skip_float64s(f"points[{i}].accelerations")
        r.skip_float64s(f"points[{i}].effort")
        sec[i] = r.int32(f"points[{i}].time_from_start.sec")
        nanosec[i] = r.uint32(f"points[{i}].time_from_start.nanosec")
    return WireTrajectory(stamp_sec, stamp_nanosec, frame_id, names, positions, sec, nanosec, r.pos)


def _point_layout(start: int, counts: tuple[int, ...]) -> tuple[list[int], int, int, int]:
    """Where a point's fields lie when it starts at `start` with these 4 sequence lengths:
    (the 4 count offsets, the positions' first double, time_from_start, the end)."""
    o, count_at, data_at = start, [], start
    for k, c in enumerate(counts):
        count_at.append(o)
        o += 4
        if c:
            o += -(o - _HEADER_BYTES) % 8
            if k == 0:
                data_at = o
            o += 8 * c
    return count_at, data_at, o, o + 8


def _regular_points(r: _Reader, n: int, width: int):
    """The common case, read without a loop over fields: every point has the same sequence lengths
    (its positions as many as the joint names). Only two layouts exist then (a point starting at
    an 8-byte boundary or 4 bytes past one); the offsets follow, and every count in the message is
    checked against them before anything is used. Returns (positions [n, width], sec, nanosec), or
    None to read point by point (irregular, malformed or short messages)."""
    if n < 2 or width == 0:
        return None
    base = r.pos
    counts, o = [], base
    for _ in range(4):
        if o + 4 > r.end:
            return None
        (c,) = r.u32.unpack_from(r.buf, o)
        counts.append(c)
        o += 4
        if c:
            o += -(o - _HEADER_BYTES) % 8 + 8 * c
    if counts[0] != width:
        return None
    counts = tuple(counts)
    layouts = {}
    for phase in (0, 4):
        count_at, data_at, time_at, end = _point_layout(_HEADER_BYTES + phase, counts)
        first = _HEADER_BYTES + phase
        layouts[phase] = ([c - first for c in count_at], data_at - first, time_at - first, end - first)
    starts = np.empty(n, dtype=np.int64)
    o = base
    for i in range(n):
        starts[i] = o
        o += layouts[(o - _HEADER_BYTES) % 8][3]
        if o > r.end:
            return None
    odd = ((starts - _HEADER_BYTES) % 8) == 4

    def rel(pick):
        return starts + np.where(odd, pick(layouts[4]), pick(layouts[0]))

    words = (r.end - _HEADER_BYTES) // 4
    u32 = np.frombuffer(r.buf, dtype=r.order + "u4", count=words, offset=_HEADER_BYTES)
    for k, c in enumerate(counts):
        if np.any(u32[(rel(lambda lay: lay[0][k]) - _HEADER_BYTES) // 4] != c):
            return None
    f64 = np.frombuffer(r.buf, dtype=r.f64, count=(r.end - _HEADER_BYTES) // 8, offset=_HEADER_BYTES)
    first_double = (rel(lambda lay: lay[1]) - _HEADER_BYTES) // 8
    positions = f64[first_double[:, None] + np.arange(width)].astype(np.float64)
    time_word = (rel(lambda lay: lay[2]) - _HEADER_BYTES) // 4
    sec = u32[time_word].astype(np.int64)
    sec = np.where(sec >= 2**31, sec - 2**32, sec)  # int32 on the wire
    nanosec = u32[time_word + 1].astype(np.int64)
    r.pos = o
    return positions, sec, nanosec
