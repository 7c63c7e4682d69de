"""trajectory_cdr: a JointTrajectory read from its CDR bytes, against a hand-built byte string (the
CDR rules written out), against rclpy's own (de)serialization of random messages, and against
hostile bytes (truncated, flipped, random): only ValueError ever comes out."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rclpy.serialization import deserialize_message, serialize_message
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from vla_ros.nodes import conversions as cv
from vla_ros.nodes.trajectory_cdr import TooManyPoints, read_joint_trajectory


def _hand_built(order: str) -> bytes:
    """stamp (7 s, 5 ns), frame_id "ab", joint_names ["a"], two points:
    p0 positions [1.0], time (2 s, 0); p1 positions [2.0], velocities [3.0], time (0, 9).
    Offsets relative to the byte after the 4-byte encapsulation header; '.' marks padding."""
    u, i, d = order + "I", order + "i", order + "d"
    body = b"".join([
        struct.pack(i, 7), struct.pack(u, 5),           # 0: stamp
        struct.pack(u, 3), b"ab\x00", b".",             # 8: frame_id (length counts the NUL), pad to 16
        struct.pack(u, 1),                              # 16: one joint name
        struct.pack(u, 2), b"a\x00", b"..",             # 20: "a", pad to 28
        struct.pack(u, 2),                              # 28: two points
        struct.pack(u, 1), b"....", struct.pack(d, 1.0),  # 32: positions: count, pad to 40, 1.0
        struct.pack(u, 0), struct.pack(u, 0), struct.pack(u, 0),  # 48: empty sequences: no padding
        struct.pack(i, 2), struct.pack(u, 0),           # 60: time_from_start
        struct.pack(u, 1), struct.pack(d, 2.0),         # 68: positions: 72 is 8-aligned, no pad
        struct.pack(u, 1), b"....", struct.pack(d, 3.0),  # 80: velocities
        struct.pack(u, 0), struct.pack(u, 0),           # 96
        struct.pack(i, 0), struct.pack(u, 9),           # 104: time_from_start
    ])
    assert len(body) == 112
    return (b"\x00\x01\x00\x00" if order == "<" else b"\x00\x00\x00\x00") + body


@pytest.mark.parametrize("order", ["<", ">"])
def test_a_hand_built_message_in_both_byte_orders(order):
    w = read_joint_trajectory(_hand_built(order) + b"\xff" * 7)  # trailing bytes are ignored
    assert w.size_bytes == 116
    assert (w.stamp_sec, w.stamp_nanosec, w.frame_id, w.joint_names) == (7, 5, "ab", ("a",))
    assert [p.tolist() for p in w.positions] == [[1.0], [2.0]]
    assert w.time_sec.tolist() == [2, 0] and w.time_nanosec.tolist() == [0, 9]


def test_the_hand_built_bytes_are_what_rclpy_reads():
    # The same bytes through rclpy's deserializer: the rules above are the middleware's.
    msg = deserialize_message(_hand_built("<"), JointTrajectory)
    assert msg.header.stamp.sec == 7 and msg.header.frame_id == "ab" and list(msg.joint_names) == ["a"]
    assert list(msg.points[1].velocities) == [3.0] and msg.points[1].time_from_start.nanosec == 9


def _message(names, rows, times_ns, stamp=(1_800_000_000, 123), extra=None, frame_id=""):
    msg = JointTrajectory()
    msg.header.stamp.sec, msg.header.stamp.nanosec = stamp
    msg.header.frame_id = frame_id
    msg.joint_names = list(names)
    for k, (row, t) in enumerate(zip(rows, times_ns)):
        p = JointTrajectoryPoint(positions=list(row))
        if extra is not None:
            p.velocities, p.accelerations, p.effort = extra(k)
        p.time_from_start.sec, p.time_from_start.nanosec = divmod(int(t), 10**9)
        msg.points.append(p)
    return msg


def test_a_regular_chunk_reads_as_msg_to_chunk_does():
    names = [f"fr3_joint{i}" for i in range(1, 8)] + ["gripper"]
    rows = np.random.default_rng(0).uniform(-2, 2, (1000, 8))
    msg = _message(names, rows, [k * 25_000_000 for k in range(1000)])
    data = serialize_message(msg)
    w = read_joint_trajectory(data)
    assert isinstance(w.positions, np.ndarray) and w.positions.shape == (1000, 8)  # the vectorised path
    a, b = cv.serialized_to_chunk(data), cv.msg_to_chunk(msg)
    assert a.names == b.names and a.period_s == b.period_s == 0.025 and a.stamp_s == b.stamp_s
    np.testing.assert_array_equal(a.values, rows)


def test_velocities_on_every_point_shift_the_layout_and_still_read_right():
    # positions of 3 and velocities of 3: a point is 4+4+24+4+4+24+4+4+8 = 80 or 76 bytes by phase
    rows = np.arange(30, dtype=float).reshape(10, 3)
    msg = _message("abc", rows, [k * 10**8 for k in range(10)],
                   extra=lambda k: ([k, k, k], [], [1.0]))
    w = read_joint_trajectory(serialize_message(msg))
    assert isinstance(w.positions, np.ndarray)  # read without a loop over points
    np.testing.assert_array_equal(w.positions, rows)
    # one point with a longer effort: the layout check sees it, and the loop reads it right
    msg.points[6].effort = [1.0, 2.0]
    w = read_joint_trajectory(serialize_message(msg))
    assert isinstance(w.positions, list)
    np.testing.assert_array_equal(np.stack(w.positions), rows)
    assert w.time_nanosec.tolist() == [k * 10**8 % 10**9 for k in range(10)]


def test_too_many_points_is_refused_before_reading_them():
    head = _hand_built("<")[:4 + 28] + struct.pack("<I", 2**32 - 1)  # a count no buffer holds
    with pytest.raises(TooManyPoints) as err:
        read_joint_trajectory(head, max_points=1000)
    assert err.value.num_points == 2**32 - 1
    with pytest.raises(ValueError, match="more than the .* bytes left"):
        read_joint_trajectory(head)


@pytest.mark.parametrize("data, match", [
    (b"", "no CDR encapsulation header"),
    (b"\x00\x07\x00\x00" + bytes(40), "unsupported CDR encapsulation 0007"),
    (b"\x00\x01\x00\x00" + struct.pack("<iII", 0, 0, 9) + b"ab", "truncated in header.frame_id"),
    (b"\x00\x01\x00\x00" + struct.pack("<iII", 0, 0, 3) + b"abc", "not NUL-terminated"),
    (b"\x00\x01\x00\x00" + struct.pack("<iIII", 0, 0, 0, 1) + struct.pack("<I", 2) + b"\xff\x00",
     "joint_names\\[0\\] is not UTF-8"),
])
def test_malformed_bytes_name_the_field(data, match):
    with pytest.raises(ValueError, match=match):
        read_joint_trajectory(data)


def test_every_truncation_and_every_bit_flip_is_a_value_error_or_a_message():
    msg = _message(["a", "b"], [[0.0, 1.0], [0.5, 1.5], [1.0, 2.0]], [0, 10**8, 2 * 10**8],
                   extra=lambda k: ([0.1, 0.2], [], []))
    data = serialize_message(msg)
    end = read_joint_trajectory(data).size_bytes
    # hand-counted: encapsulation 4; stamp 8, frame_id "" (length 1 + NUL + pad) 8, names count 4,
    # "a" and "b" 8 each, points count 4 (40); each point at an 8-byte boundary: positions 4 + pad 4
    # + 16, velocities 4 + pad 4 + 16, two empty sequences 8, time 8 = 64
    assert end == 4 + 40 + 3 * 64
    for n in range(end):
        with pytest.raises(ValueError):
            cv.serialized_to_chunk(data[:n])
    rng = np.random.default_rng(1)
    for _ in range(2000):
        flipped = bytearray(data)
        pos = int(rng.integers(len(flipped)))
        flipped[pos] ^= 1 << int(rng.integers(8))
        try:
            cv.serialized_to_chunk(bytes(flipped), default_period_s=0.1)
        except ValueError:
            pass


_finite = st.floats(-1e6, 1e6, allow_nan=False, width=64)
_any_float = st.floats(allow_nan=True, allow_infinity=True, width=64)


@st.composite
def _messages(draw, regular=False):
    """Random messages; `regular`: every point's sequences as long as the first's (the vectorised
    path), but for at most one point (`odd`), which the reader must notice."""
    names = draw(st.lists(st.text(min_size=0, max_size=6), min_size=0, max_size=5))
    n_points = draw(st.integers(0, 6) if not regular else st.integers(2, 40))
    lengths = (len(names), draw(st.integers(0, 3)), draw(st.integers(0, 2)), draw(st.integers(0, 1)))
    odd = draw(st.integers(-1, n_points - 1)) if regular else -1
    points = []
    for k in range(n_points):
        if regular and k != odd:
            width, nv, na, ne = lengths
        else:
            width = draw(st.sampled_from([len(names), len(names), max(0, len(names) - 1), len(names) + 1]))
            nv, na, ne = draw(st.integers(0, 3)), draw(st.integers(0, 2)), draw(st.integers(0, 1))
        p = JointTrajectoryPoint(positions=draw(st.lists(_any_float, min_size=width, max_size=width)))
        p.velocities = draw(st.lists(_finite, min_size=nv, max_size=nv))
        p.accelerations = draw(st.lists(_finite, min_size=na, max_size=na))
        p.effort = draw(st.lists(_finite, min_size=ne, max_size=ne))
        p.time_from_start.sec = draw(st.integers(-2**31, 2**31 - 1) | st.integers(0, 3))
        p.time_from_start.nanosec = draw(st.integers(0, 2**32 - 1) | st.just(0) | st.integers(0, 10**9 - 1))
        points.append(p)
    msg = JointTrajectory(joint_names=names, points=points)
    msg.header.stamp.sec = draw(st.integers(-2**31, 2**31 - 1))
    msg.header.stamp.nanosec = draw(st.integers(0, 2**32 - 1))
    msg.header.frame_id = draw(st.text(max_size=4))
    return msg


def _outcome(fn):
    try:
        c = fn()
    except ValueError as err:
        return ("refused", str(err))
    return ("chunk", c.names, c.values.tobytes(), c.period_s, c.stamp_s)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_messages() | _messages(regular=True))
def test_random_messages_read_exactly_as_rclpy_deserializes_them(msg):
    data = serialize_message(msg)
    ref = deserialize_message(data, JointTrajectory)  # what rclpy would have handed the callback
    w = read_joint_trajectory(data)
    assert (w.stamp_sec, w.stamp_nanosec, w.frame_id) == (ref.header.stamp.sec, ref.header.stamp.nanosec,
                                                         ref.header.frame_id)
    assert w.joint_names == tuple(ref.joint_names) and w.num_points == len(ref.points)
    for got, p in zip(w.positions, ref.points):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(p.positions))
    assert w.time_sec.tolist() == [p.time_from_start.sec for p in ref.points]
    assert w.time_nanosec.tolist() == [p.time_from_start.nanosec for p in ref.points]
    # and the same decision (chunk or the same refusal) as the deserialized path
    assert _outcome(lambda: cv.serialized_to_chunk(data, 0.1, max_points=5)) == \
        _outcome(lambda: cv.msg_to_chunk(ref, 0.1, max_points=5))
