"""Message <-> value conversions: hand-built byte layouts as the reference, plus bit-exact
round trips over shapes, row paddings and byte orders."""

from __future__ import annotations

import io

import numpy as np
import pytest
from builtin_interfaces.msg import Duration, Time
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image as PILImage
from sensor_msgs.msg import CompressedImage, Image, JointState
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint
from visualization_msgs.msg import Marker, MarkerArray

from vla_ros.core.types import ActionChunk
from vla_ros.nodes import conversions as cv

# ----------------------------------------------------------------------------- time


def test_time_hand_computed():
    t = cv.s_to_time(1700000000.25)
    assert (t.sec, t.nanosec) == (1700000000, 250000000)
    assert cv.time_to_s(Time(sec=3, nanosec=500_000_001)) == pytest.approx(3.500000001, abs=1e-12)
    # rounding to the nearest nanosecond, with carry into seconds
    t = cv.s_to_time(1.9999999999)
    assert (t.sec, t.nanosec) == (2, 0)


def test_negative_duration_keeps_nanosec_positive():
    d = cv.s_to_duration(-0.25)
    assert (d.sec, d.nanosec) == (-1, 750_000_000)
    assert cv.duration_to_s(d) == pytest.approx(-0.25)
    d = cv.s_to_duration(0.02)
    assert (d.sec, d.nanosec) == (0, 20_000_000)


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf"), 2.0**31])
def test_invalid_time_rejected(bad):
    with pytest.raises(ValueError, match="time stamp"):
        cv.s_to_time(bad)


@given(st.integers(min_value=0, max_value=2**31 - 1), st.integers(min_value=0, max_value=999_999_999))
def test_time_round_trip_within_float_precision(sec, nanosec):
    t = cv.time_to_s(Time(sec=sec, nanosec=nanosec))
    # The last ~0.12 us of the int32 range round up to 2^31 s as a float64, which no Time holds
    # (rejected with a clear error, see test_invalid_time_rejected).
    assume(t < 2.0**31)
    back = cv.s_to_time(t)
    total_in = sec * 10**9 + nanosec
    total_out = back.sec * 10**9 + back.nanosec
    # float64 has 53 bits: at 2^31 s that is ~0.5 us of resolution
    assert abs(total_out - total_in) <= max(1, int(sec * 2.3e-7))
    assert 0 <= back.nanosec < 10**9


# ----------------------------------------------------------------------------- action chunks


def _chunk(T=5, names=("a", "b", "gripper"), period_s=0.05, stamp_s=12.5):
    values = np.arange(T * len(names), dtype=np.float64).reshape(T, len(names)) * 0.1
    return ActionChunk(names=names, values=values, period_s=period_s, stamp_s=stamp_s)


def test_chunk_to_msg_layout():
    msg = cv.chunk_to_msg(_chunk())
    assert list(msg.joint_names) == ["a", "b", "gripper"]
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (12, 500_000_000)
    assert len(msg.points) == 5
    assert [p.time_from_start.nanosec for p in msg.points] == [0, 50_000_000, 100_000_000, 150_000_000, 200_000_000]
    assert list(msg.points[2].positions) == pytest.approx([0.6, 0.7, 0.8])


@pytest.mark.parametrize("period_s", [0.02, 1 / 30, 1 / 15, 0.1, 1.3])
def test_chunk_round_trip(period_s):
    chunk = _chunk(T=50, period_s=period_s)
    back = cv.msg_to_chunk(cv.chunk_to_msg(chunk))
    assert back.names == chunk.names
    np.testing.assert_array_equal(back.values, chunk.values)
    assert back.period_s == pytest.approx(period_s, abs=1e-9)
    assert back.stamp_s == chunk.stamp_s


def _traj(times_ns, rows, names=("a", "b")):
    msg = JointTrajectory()
    msg.joint_names = list(names)
    for t, r in zip(times_ns, rows):
        p = JointTrajectoryPoint()
        p.positions = list(r)
        p.time_from_start = Duration(sec=t // 10**9, nanosec=t % 10**9)
        msg.points.append(p)
    return msg


def test_msg_to_chunk_rejects_non_uniform_times():
    with pytest.raises(ValueError, match=r"uniformly spaced.*point 1 is at 0.100000000 s, expected 0.125000000 s"):
        cv.msg_to_chunk(_traj([0, 100_000_000, 250_000_000], [[0, 0]] * 3))


def test_msg_to_chunk_rejects_non_increasing_times():
    with pytest.raises(ValueError, match="strictly increasing; point 2"):
        cv.msg_to_chunk(_traj([0, 100_000_000, 100_000_000], [[0, 0]] * 3))


def test_msg_to_chunk_rejects_nonzero_first_time():
    with pytest.raises(ValueError, match=r"points\[0\].time_from_start must be 0"):
        cv.msg_to_chunk(_traj([50_000_000, 100_000_000], [[0, 0]] * 2))


def test_msg_to_chunk_rejects_ragged_and_empty_and_nan():
    with pytest.raises(ValueError, match="point 1 has 3 positions, expected 2"):
        cv.msg_to_chunk(_traj([0, 10**8], [[0, 0], [0, 0, 0]]))
    with pytest.raises(ValueError, match="no points"):
        cv.msg_to_chunk(_traj([], []))
    with pytest.raises(ValueError, match="no joint_names"):
        cv.msg_to_chunk(_traj([0], [[]], names=()))
    with pytest.raises(ValueError, match=r"non-finite positions for \['b'\]"):
        cv.msg_to_chunk(_traj([0, 10**8], [[0, 0], [0, float("nan")]]))
    with pytest.raises(ValueError, match="duplicate joint_names"):
        cv.msg_to_chunk(_traj([0, 10**8], [[0, 0], [0, 0]], names=("a", "a")))


def test_single_point_chunk_needs_default_period():
    msg = _traj([0], [[1.0, 2.0]])
    with pytest.raises(ValueError, match="default_period_s"):
        cv.msg_to_chunk(msg)
    chunk = cv.msg_to_chunk(msg, default_period_s=0.05)
    assert chunk.period_s == 0.05 and chunk.values.tolist() == [[1.0, 2.0]]


# ----------------------------------------------------------------------------- joints


def test_joint_state_positions_reorders_and_names_missing():
    msg = cv.make_joint_state(["j2", "j1", "j3"], [2.0, 1.0, 3.0])
    np.testing.assert_array_equal(cv.joint_state_positions(msg, ["j1", "j2", "j3"]), [1.0, 2.0, 3.0])
    with pytest.raises(KeyError, match=r"\['j4', 'j5'\]"):
        cv.joint_state_positions(msg, ["j1", "j4", "j5"])


def test_joint_state_positions_with_namespace_prefix():
    msg = cv.make_joint_state(["waist", "shoulder"], [0.1, 0.2])
    got = cv.joint_state_positions(msg, ["follower_left/shoulder"], prefix="follower_left/")
    np.testing.assert_array_equal(got, [0.2])


def test_joint_state_positions_rejects_mismatched_lengths():
    msg = JointState(name=["a", "b"], position=[1.0])
    with pytest.raises(ValueError, match="2 names but 1 positions"):
        cv.joint_state_positions(msg, ["a"])


def test_message_builders():
    js = cv.make_joint_state(["a", "b"], [1, 2], velocities=[3, 4], stamp_s=2.5)
    assert list(js.velocity) == [3.0, 4.0] and list(js.effort) == [] and js.header.stamp.sec == 2
    with pytest.raises(ValueError, match="velocities has 1 entries, expected 2"):
        cv.make_joint_state(["a", "b"], [1, 2], velocities=[3])
    fa = cv.make_float64_multi_array([1.5, -2.0, 3.25], label="joints")
    assert list(fa.data) == [1.5, -2.0, 3.25] and fa.layout.dim[0].size == 3
    np.testing.assert_array_equal(cv.float64_multi_array_values(fa), [1.5, -2.0, 3.25])
    q = np.array([[0.0, 1.0], [0.5, 1.5]])
    qd = np.array([[0.1, 0.2], [0.0, 0.0]])
    tr = cv.make_joint_trajectory(["a", "b"], q, [0.1, 0.2], velocities=qd)
    assert list(tr.points[1].positions) == [0.5, 1.5]
    assert list(tr.points[0].velocities) == [0.1, 0.2] and list(tr.points[0].accelerations) == []
    assert tr.points[1].time_from_start.nanosec == 200_000_000
    with pytest.raises(ValueError, match="strictly increasing"):
        cv.make_joint_trajectory(["a", "b"], q, [0.2, 0.2])
    with pytest.raises(ValueError, match="velocities must have the shape"):
        cv.make_joint_trajectory(["a", "b"], q, [0.1, 0.2], velocities=qd[:1])


# ----------------------------------------------------------------------------- raw images


def test_mono16_big_endian_with_padding_hand_built():
    # 2 rows x 2 px of mono16, step 6: 4 pixel bytes + 2 padding bytes per row.
    data = bytes([0x01, 0x02, 0xFF, 0x00, 0xEE, 0xEE,
                  0x00, 0x10, 0x80, 0x01, 0xEE, 0xEE])  # fmt: skip
    msg = Image(height=2, width=2, encoding="mono16", is_bigendian=1, step=6, data=data)
    arr = cv.image_to_array(msg)
    assert arr.dtype == np.uint16 and arr.dtype.isnative
    np.testing.assert_array_equal(arr, [[0x0102, 0xFF00], [0x0010, 0x8001]])
    msg.is_bigendian = 0
    np.testing.assert_array_equal(cv.image_to_array(msg), [[0x0201, 0x00FF], [0x1000, 0x0180]])


def test_32fc1_little_endian_hand_built():
    data = np.array([1.5, -2.0], dtype="<f4").tobytes()
    msg = Image(height=1, width=2, encoding="32FC1", is_bigendian=0, step=8, data=data)
    np.testing.assert_array_equal(cv.image_to_array(msg), [[1.5, -2.0]])
    msg = Image(height=1, width=2, encoding="32FC1", is_bigendian=1, step=8,
                data=np.array([1.5, -2.0], dtype=">f4").tobytes())  # fmt: skip
    np.testing.assert_array_equal(cv.image_to_array(msg), [[1.5, -2.0]])


def test_bgr8_to_rgb_hand_built():
    # one row: a blue pixel then a red pixel, in BGR byte order, with one padding byte
    msg = Image(height=1, width=2, encoding="bgr8", step=7, data=bytes([255, 0, 0, 0, 0, 255, 9]))
    np.testing.assert_array_equal(cv.image_to_rgb8(msg), [[[0, 0, 255], [255, 0, 0]]])


def test_to_rgb8_conversions():
    rgba = np.array([[[10, 20, 30, 40]]], np.uint8)
    np.testing.assert_array_equal(cv.to_rgb8(rgba, "rgba8"), [[[10, 20, 30]]])
    np.testing.assert_array_equal(cv.to_rgb8(rgba, "bgra8"), [[[30, 20, 10]]])
    np.testing.assert_array_equal(cv.to_rgb8(np.array([[7]], np.uint8), "mono8"), [[[7, 7, 7]]])
    # 16 -> 8 bit: round(v * 255 / 65535): 65535 -> 255, 257 -> 1, 128 -> 0 (0.498), 129 -> 1 (0.502)
    mono16 = np.array([[65535, 257, 128, 129, 0]], np.uint16)
    np.testing.assert_array_equal(cv.to_rgb8(mono16, "16UC1")[..., 0], [[255, 1, 0, 1, 0]])
    with pytest.raises(ValueError, match="'32FC1' cannot be shown to a policy"):
        cv.to_rgb8(np.zeros((2, 2), np.float32), "32FC1")


def test_image_errors_are_clear():
    with pytest.raises(ValueError, match="unsupported image encoding 'yuv422'"):
        cv.image_to_array(Image(height=1, width=1, encoding="yuv422", step=2, data=b"\0\0"))
    with pytest.raises(ValueError, match="step 5 B is shorter than one row of 2 px x 3 ch x 1 B = 6 B"):
        cv.image_to_array(Image(height=1, width=2, encoding="rgb8", step=5, data=b"\0" * 5))
    with pytest.raises(ValueError, match="data has 11 B, expected height 2 x step 6 = 12 B"):
        cv.image_to_array(Image(height=2, width=2, encoding="rgb8", step=6, data=b"\0" * 11))
    with pytest.raises(ValueError, match="needs dtype uint16"):
        cv.array_to_image(np.zeros((2, 2), np.uint8), "mono16")
    with pytest.raises(ValueError, match="needs an \\(H, W, 3\\) array"):
        cv.array_to_image(np.zeros((2, 2), np.uint8), "rgb8")


ENCODINGS = ["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16", "16UC1", "32FC1",
             "8UC3", "8SC1", "16SC2", "32SC1", "64FC1", "rgb16", "16UC4"]  # fmt: skip


@st.composite
def _image_case(draw):
    encoding = draw(st.sampled_from(ENCODINGS))
    fmt = cv.pixel_format(encoding)
    h = draw(st.integers(1, 6))
    w = draw(st.integers(1, 6))
    shape = (h, w) if fmt.channels == 1 else (h, w, fmt.channels)
    if fmt.dtype.kind == "f":
        # all bit patterns, NaN payloads and signed zeros included
        bits = draw(hnp.arrays(np.dtype(f"u{fmt.dtype.itemsize}"), shape))
        arr = bits.view(fmt.dtype)
    else:
        arr = draw(hnp.arrays(fmt.dtype, shape))
    padding = draw(st.integers(0, 7))
    big = draw(st.booleans())
    return encoding, arr, padding, big


@settings(max_examples=300, deadline=None)
@given(_image_case())
def test_raw_image_round_trip_is_bit_exact(case):
    encoding, arr, padding, big = case
    fmt = cv.pixel_format(encoding)
    row_bytes = arr.shape[1] * fmt.channels * fmt.dtype.itemsize
    msg = cv.array_to_image(arr, encoding, step=row_bytes + padding, is_bigendian=big)
    assert msg.step == row_bytes + padding and len(msg.data) == arr.shape[0] * msg.step
    # the wire bytes of pixel (0, 0) follow the declared byte order
    first = np.frombuffer(bytes(msg.data[: fmt.dtype.itemsize]), dtype=fmt.dtype.newbyteorder(">" if big else "<"))
    assert first.tobytes() == np.ascontiguousarray(arr.reshape(-1)[:1]).astype(first.dtype).tobytes()
    back = cv.image_to_array(msg)
    assert back.dtype == arr.dtype and back.shape == arr.shape
    assert back.tobytes() == arr.tobytes()


# ----------------------------------------------------------------------------- compressed


def test_png_round_trip_is_exact_for_rgb_mono_and_mono16():
    rng = np.random.default_rng(0)
    for arr in (rng.integers(0, 256, (17, 23, 3), dtype=np.uint8),
                rng.integers(0, 256, (5, 4), dtype=np.uint8),
                rng.integers(0, 65536, (5, 4), dtype=np.uint16),
                rng.integers(0, 256, (3, 4, 4), dtype=np.uint8)):  # fmt: skip
        msg = cv.array_to_compressed(arr, "png", stamp_s=3.0)
        assert "png compressed" in msg.format and msg.header.stamp.sec == 3
        back = cv.compressed_to_array(msg)
        assert back.dtype == arr.dtype
        np.testing.assert_array_equal(back, arr)


def test_jpeg_round_trip_is_close_and_uses_image_transport_format():
    # a smooth image compresses with small error at quality 95
    y, x = np.mgrid[0:48, 0:64]
    arr = np.stack([x * 4, y * 5, (x + y) * 2], axis=2).astype(np.uint8)
    msg = cv.array_to_compressed(arr, "jpeg", quality=95)
    assert msg.format == "rgb8; jpeg compressed bgr8"
    back = cv.image_to_rgb8(msg)
    assert back.shape == arr.shape and back.dtype == np.uint8
    assert np.mean(np.abs(back.astype(int) - arr.astype(int))) < 2.0


def test_decodes_jpeg_written_by_pillow_directly():
    arr = np.zeros((16, 16, 3), np.uint8)
    arr[:, :8] = (250, 10, 10)  # red left half: checks channel order survives decoding
    buf = io.BytesIO()
    PILImage.fromarray(arr).save(buf, format="JPEG", quality=95)
    rgb = cv.image_to_rgb8(CompressedImage(format="jpeg", data=buf.getvalue()))
    assert rgb[8, 2, 0] > 230 and rgb[8, 2, 2] < 30 and rgb[8, 13, 0] < 30


def test_compressed_errors():
    with pytest.raises(ValueError, match="expected jpeg or png"):
        cv.compressed_to_array(CompressedImage(format="tiff", data=b"xx"))
    with pytest.raises(ValueError, match="not a decodable jpeg"):
        cv.compressed_to_array(CompressedImage(format="jpeg", data=b"not an image"))
    png = cv.array_to_compressed(np.zeros((2, 2), np.uint8), "png")
    with pytest.raises(ValueError, match="format says 'jpeg' but the data is PNG"):
        cv.compressed_to_array(CompressedImage(format="jpeg", data=bytes(png.data)))
    with pytest.raises(ValueError, match="cannot encode a \\(2, 2\\) uint16 array as jpeg"):
        cv.array_to_compressed(np.zeros((2, 2), np.uint16), "jpeg")


# ----------------------------------------------------------------------------- markers, diagnostics


def test_markers_to_poses():
    m = Marker(ns="red_cube", action=Marker.ADD)
    m.pose.position.x, m.pose.position.y, m.pose.position.z = 0.5, -0.1, 0.02
    # 90 degrees about z: (x, y, z, w) = (0, 0, sin 45, cos 45)
    m.pose.orientation.z, m.pose.orientation.w = np.sin(np.pi / 4), np.cos(np.pi / 4)
    poses = cv.markers_to_poses(MarkerArray(markers=[m]))
    expected = np.array([[0, -1, 0, 0.5], [1, 0, 0, -0.1], [0, 0, 1, 0.02], [0, 0, 0, 1]])
    np.testing.assert_allclose(poses["red_cube"], expected, atol=1e-12)
    with pytest.raises(ValueError, match="no orientation"):
        bad = Marker(ns="x")
        bad.pose.orientation.w = 0.0  # all-zero quaternion
        cv.markers_to_poses(MarkerArray(markers=[bad]))


def test_diagnostics_builder():
    msg = cv.make_diagnostics("policy", "warn", "camera 'front' stale", {"age_s": 0.5})
    st_ = msg.status[0]
    assert st_.level == cv.DIAGNOSTIC_LEVELS["warn"] and st_.values[0].key == "age_s" and st_.values[0].value == "0.5"
    with pytest.raises(ValueError, match="level must be one of"):
        cv.make_diagnostics("policy", "bad", "")
