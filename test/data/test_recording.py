"""Frame alignment and command sampling of the recorder, on hand-made streams with hand-computed
answers (no ROS)."""

from __future__ import annotations

import numpy as np
import pytest

from vla_ros.core.embodiment import load_embodiment
from vla_ros.core.jtc import TrajectoryCommand, TrajectoryPoint
from vla_ros.core.types import ActionChunk
from vla_ros.data.recording import CommandSampler, FrameAssembler, recording_layout

FR3 = [f"fr3_joint{i}" for i in range(1, 8)]


def linear_command(stamp_s, times, rows, names=("a", "b")):
    return TrajectoryCommand(names, tuple(TrajectoryPoint(t, r) for t, r in zip(times, rows)), stamp_s)


def test_command_sampler_follows_jtc_semantics():
    s = CommandSampler(("a", "b"), "joint_trajectory")
    measured = lambda t: (np.array([0.9, 1.9]), np.zeros(2))  # noqa: E731
    assert s.sample(9.0, measured) is None  # nothing commanded yet
    s.add_trajectory(linear_command(10.0, [0.0, 1.0], [[0.0, 0.0], [1.0, 2.0]]), received_s=10.02)
    # takes over at its stamp (not on arrival); positions only -> linear
    np.testing.assert_allclose(s.sample(10.25, measured), [0.25, 0.5])
    np.testing.assert_allclose(s.sample(11.5, measured), [1.0, 2.0])  # holds the last point
    # a stamp-0 trajectory starts on arrival, from the measured state, first point 0.5 s later
    s.add_trajectory(linear_command(0.0, [0.5], [[2.0, 3.0]]), received_s=12.0)
    np.testing.assert_allclose(s.sample(12.25, measured), [(0.9 + 2.0) / 2, (1.9 + 3.0) / 2])
    # names in another order are reordered to the controller's
    s.add_trajectory(linear_command(13.0, [0.0, 1.0], [[0.0, 0.0], [4.0, 2.0]], names=("b", "a")), received_s=13.0)
    np.testing.assert_allclose(s.sample(13.5, measured), [1.0, 2.0])
    # a trajectory a JTC rejects is ignored (and counted)
    s.add_trajectory(linear_command(14.0, [0.0], [[np.nan, 0.0]]), received_s=14.0)
    np.testing.assert_allclose(s.sample(14.5, measured), [2.0, 4.0])
    assert s.rejected == 1


def test_command_sampler_takes_over_at_a_frame_time_equal_to_the_stamp():
    """Frame times are computed (grid start + k / fps) and land a rounding error either side of a
    nanosecond stamp: a trajectory stamped at the frame's time is in force at that frame either way
    (a JTC starts it from the measured state at its stamp)."""
    measured = lambda t: (np.array([0.9, 1.9]), np.zeros(2))  # noqa: E731
    t_frame = 16.2 + 42 * (1 / 30)
    assert t_frame != 17.6 and abs(t_frame - 17.6) < 1e-12  # 17.599999999999998
    for frame_time in (t_frame, 17.6, np.nextafter(17.6, 20.0)):
        s = CommandSampler(("a", "b"), "joint_trajectory")
        s.add_trajectory(linear_command(17.0, [0.0, 10.0], [[0.0, 0.0], [10.0, 10.0]]), received_s=17.0)
        s.add_trajectory(linear_command(17.6, [1.0], [[5.0, 5.0]]), received_s=17.6)
        np.testing.assert_allclose(s.sample(frame_time, measured), [0.9, 1.9])  # the new one, at its start
    s = CommandSampler(("a", "b"), "joint_trajectory")
    s.add_trajectory(linear_command(17.0, [0.0, 10.0], [[0.0, 0.0], [10.0, 10.0]]), received_s=17.0)
    s.add_trajectory(linear_command(17.6, [1.0], [[5.0, 5.0]]), received_s=17.6)
    np.testing.assert_allclose(s.sample(17.6 - 1e-6, measured), [0.6, 0.6], atol=1e-5)  # a microsecond before: the old


def make_assembler(source_space="joint_position", fps=10.0):
    spec = load_embodiment("fr3")
    layout = recording_layout(spec, source_space, camera_shapes={"front": (4, 6), "wrist": (4, 6)})
    return spec, FrameAssembler(spec, layout, fps, wait_s=0.0)


def feed(asm, t_end=2.0, skip_front=()):
    """Cameras at 30 Hz (stamps k/30), joint_states at 100 Hz, a hold trajectory at t=0.05."""
    q_home = np.linspace(0.1, 0.7, 7)
    asm.add_trajectory("arm", linear_command(0.05, [0.0, 1.0], [q_home, q_home + 1.0], names=tuple(FR3)), 0.06)
    asm.add_gripper_command("arm", 0.04, 0.01)  # fully open: 1.0
    for i in range(int(t_end * 100) + 1):
        t = i / 100
        asm.add_joint_state("arm", t, FR3 + ["fr3_finger_joint1"], list(q_home + t) + [0.01], [0.0] * 8)
    for k in range(int(t_end * 30) + 1):
        t = k / 30
        for slot in ("front", "wrist"):
            if slot == "front" and k in skip_front:
                continue
            asm.add_image(slot, t, np.full((4, 6, 3), k, np.uint8))


def test_frames_on_the_grid_nearest_within_half_a_period():
    spec, asm = make_assembler()
    asm.reset_episode(0.3)  # grid starts at the first front frame at or after 0.3 s: 9/30 = 0.3
    feed(asm, 2.0)
    frames = asm.poll(1.2)  # slots whose window closed: t_k + 0.05 <= 1.2
    assert [f.slot for f in frames] == list(range(9))  # 0.3 .. 1.1 s
    assert asm.episode_start_s == pytest.approx(0.3)
    f = frames[2]  # t = 0.5 s: camera frame 15 (0.5 s) exactly
    assert f.stamp_s == pytest.approx(0.5)
    assert int(f.images["observation.images.front"][0, 0, 0]) == 15
    q_home = np.linspace(0.1, 0.7, 7)
    np.testing.assert_allclose(f.values["observation.state"], list(q_home + 0.5) + [0.25])  # 0.01 / 0.04 open
    np.testing.assert_allclose(f.values["action"], list(q_home + 0.45) + [1.0])  # JTC at 0.5 - 0.05 s into the ramp
    assert asm.report.dropped_total == 0


def test_a_slot_without_a_frame_is_dropped_and_counted_not_duplicated():
    _, asm = make_assembler()
    asm.reset_episode(0.0)
    # slot 3 is t = 0.3 s: the front frames within 0.05 s of it are 8 (0.2667), 9 (0.3) and 10 (0.333)
    feed(asm, 1.0, skip_front=(8, 9, 10))
    frames = asm.flush(1.0)
    # grid slot 0 (t = 0) precedes the first command (0.05 s), so the episode starts at slot 1
    # (timestamp 0); slot 10 (1.0 s) is still open at 1.0 s
    assert asm.episode_start_s == pytest.approx(0.1)
    assert asm.grid_start_s == pytest.approx(0.0)  # the dropped slot 0 lies before the first row
    # every slot from the grid's start is a row or a counted drop: 0.0 .. 0.9 s
    assert len(frames) + asm.report.dropped_total == 10
    slots = [f.slot + 1 for f in frames]
    assert 3 not in slots and slots == [1, 2, 4, 5, 6, 7, 8, 9]
    assert asm.report.dropped == {"no frame from camera 'front'": 1, "no command sent to arm 'arm' yet": 1}
    # slot 2 (0.2 s) takes frame 6 (0.2 s), slot 4 (0.4 s) frame 12: no frame is used twice
    fronts = [int(f.images["observation.images.front"][0, 0, 0]) for f in frames]
    assert len(set(fronts)) == len(fronts)


def test_a_poll_after_close_at_decides_no_slot_past_the_save():
    # the recorder's save waits for queued readings; its timer's polls meanwhile run on a later clock
    _, asm = make_assembler()
    asm.reset_episode(0.0)
    feed(asm, 2.0)
    asm.close_at(0.8)
    frames = asm.poll(1.9)
    # slots 0.0 .. 0.7 s closed by 0.8 s (0.8's window closes at 0.85); without close_at: .. 1.8 s
    assert len(frames) + asm.report.dropped_total == 8
    assert max(f.stamp_s for f in frames) == pytest.approx(0.7)
    assert asm.flush(0.8) == []  # the save's own flush adds none either
    asm.reset_episode(1.0)
    assert asm.end_s is None  # the next episode is not capped


def test_a_save_whose_frames_never_came_counts_their_slots_as_dropped():
    # The streams stop at 0.5 s; the save request comes at 1.0 s and its wait for them runs out.
    # A bag converted to its end stops where the cameras stop; a save counts the rest as dropped:
    # every slot whose window closed by the save (0.0 .. 0.9 s) is a row or a counted drop. (Slot
    # 0.0 precedes feed's first command.)
    before_first_command = {"no command sent to arm 'arm' yet": 1}
    for count_undelivered, dropped in ((False, before_first_command),
                                       (True, {**before_first_command, "no frame from camera 'front'": 4})):
        _, asm = make_assembler()
        asm.reset_episode(0.0)
        feed(asm, 0.5)
        frames = asm.flush(1.0, count_undelivered=count_undelivered)
        assert [round(f.stamp_s, 3) for f in frames] == [0.1, 0.2, 0.3, 0.4, 0.5]
        assert dict(asm.report.dropped) == dropped


def test_no_command_yet_drops_the_slot():
    spec, asm = make_assembler()
    asm.reset_episode(0.0)
    for k in range(10):
        asm.add_image("front", k / 10, np.zeros((4, 6, 3), np.uint8))
        asm.add_image("wrist", k / 10, np.zeros((4, 6, 3), np.uint8))
        asm.add_joint_state("arm", k / 10, FR3 + ["fr3_finger_joint1"], [0.0] * 8)
    assert asm.flush(1.0) == []
    assert asm.report.dropped == {"no command sent to arm 'arm' yet": 10}


def test_action_source_row_covering_the_frame_time():
    spec, asm = make_assembler("ee_delta")
    names = asm.layout.source_names
    assert names == ("ee_delta/x", "ee_delta/y", "ee_delta/z", "ee_delta/roll", "ee_delta/pitch", "ee_delta/yaw",
                     "gripper")
    rows = np.arange(8 * 7, dtype=float).reshape(8, 7)
    asm.reset_episode(0.0)
    assert asm.add_chunk(ActionChunk(names, rows, 0.1, 0.25))
    assert not asm.add_chunk(ActionChunk(tuple(FR3) + ("gripper",), np.zeros((2, 8)), 0.1, 0.3))
    feed(asm, 1.5)
    frames = {round(f.stamp_s * 10): f for f in asm.flush(1.5)}  # by grid time (0.1 s)
    # 0.0 s precedes the first command, 0.1 and 0.2 s the chunk
    assert asm.report.dropped == {"no command sent to arm 'arm' yet": 1, "no action chunk from the source yet": 2}
    np.testing.assert_allclose(frames[5].values["action.source"], rows[2])  # t=0.5: row floor(0.25/0.1) = 2
    np.testing.assert_allclose(frames[12].values["action.source"], rows[7])  # past the end: the last row
    assert asm.report.foreign_chunks == 1
    # The next episode: the chunks received before its start (the last one of the episode before, its
    # policy since deactivated) are not its source; its source's first chunk, stamped at its observation
    # a little before the start, is.
    def next_episode(start_s, end_s, chunks):
        asm.reset_episode(start_s)
        for k in range(int(start_s * 30) + 1, int(end_s * 30) + 1):
            for slot in ("front", "wrist"):
                asm.add_image(slot, k / 30, np.zeros((4, 6, 3), np.uint8))
        for i in range(int(start_s * 100) + 1, int(end_s * 100) + 1):
            asm.add_joint_state("arm", i / 100, FR3 + ["fr3_finger_joint1"], [0.0] * 8, [0.0] * 8)
        for c in chunks:
            assert asm.add_chunk(c)
        return {round(f.stamp_s * 10): f for f in asm.flush(end_s)}  # (10 fps: slots 1.6, 1.7, ...)

    frames = next_episode(1.6, 2.2, [ActionChunk(names, rows + 100.0, 0.1, 1.85)])
    assert asm.report.dropped == {"no action chunk from the source yet": 3}  # 1.6, 1.7, 1.8 s: not the 0.25 s chunk
    assert min(frames) == 19
    np.testing.assert_allclose(frames[19].values["action.source"], rows[0] + 100.0)
    np.testing.assert_allclose(frames[21].values["action.source"], rows[2] + 100.0)  # floor(0.25 / 0.1)
    frames = next_episode(2.3, 2.8, [ActionChunk(names, rows - 100.0, 0.1, 2.25)])
    assert asm.report.dropped == {} and min(frames) == 23
    np.testing.assert_allclose(frames[23].values["action.source"], rows[0] - 100.0)  # stamped before the start
    np.testing.assert_allclose(frames[26].values["action.source"], rows[3] - 100.0)
