"""Observation assembly: freshness, synchronisation tolerance and refusals with reasons."""

from __future__ import annotations

import numpy as np
import pytest

from vla_ros.core.observation_sync import ObservationSync, SyncConfig, privileged_objects


def _img(value: int) -> np.ndarray:
    return np.full((4, 5, 3), value, np.uint8)


def _sync(**kw) -> ObservationSync:
    cfg = dict(camera_slots=("front", "wrist"), joint_sources=("",), tolerance_s=0.04, max_age_s=0.5)
    cfg.update(kw)
    return ObservationSync(SyncConfig(**cfg))


def _feed(s: ObservationSync, t: float, tag: int = 0) -> None:
    s.add_image("front", t, _img(tag))
    s.add_image("wrist", t + 0.005, _img(tag + 1))
    s.add_joint_state("", t + 0.002, ["j1", "j2"], [tag * 0.1, tag * 0.2])


def test_assembles_newest_synchronised_set():
    s = _sync()
    for k in range(5):
        _feed(s, 10.0 + k / 30, tag=k)
    s.set_instruction("pick the red cube")
    a = s.assemble(now_s=10.2)
    assert a.ok and a.refusal is None
    obs = a.observation
    assert obs.images["front"][0, 0, 0] == 4 and obs.images["wrist"][0, 0, 0] == 5
    np.testing.assert_allclose(obs.joint_positions, [0.4, 0.8])
    assert obs.joint_names == ("j1", "j2")
    # stamp = newest reading of the set (the wrist frame)
    assert obs.stamp_s == pytest.approx(10.0 + 4 / 30 + 0.005)
    assert a.spread_s == pytest.approx(0.005)
    assert a.age_s == pytest.approx(10.2 - (10.0 + 4 / 30))
    assert obs.instruction == "pick the red cube"


def test_missing_camera_refuses_with_reason():
    s = _sync()
    s.add_image("front", 1.0, _img(0))
    s.add_joint_state("", 1.0, ["j1"], [0.0])
    a = s.assemble(now_s=1.01)
    assert not a.ok and a.observation is None
    assert a.refusal.code == "missing" and a.refusal.source == "camera:wrist"
    assert "camera 'wrist' has sent nothing yet" in a.refusal.message


def test_stale_camera_refuses_never_uses_old_frames():
    s = _sync()
    _feed(s, 1.0)
    # front keeps streaming, wrist went silent after t = 1.005
    for k in range(1, 30):
        s.add_image("front", 1.0 + k / 30, _img(k))
        s.add_joint_state("", 1.0 + k / 30, ["j1", "j2"], [0, 0])
    a = s.assemble(now_s=1.0 + 29 / 30 + 0.01)
    assert not a.ok
    assert a.refusal.code == "stale" and a.refusal.source == "camera:wrist"
    assert "camera 'wrist' is stale" in a.refusal.message and "0.5" in a.refusal.message


def test_everything_old_is_stale_even_if_synchronised():
    s = _sync()
    _feed(s, 1.0)
    assert s.assemble(now_s=1.4).ok
    a = s.assemble(now_s=1.6)
    assert a.refusal.code == "stale" and a.refusal.source == "camera:front"


def test_readings_from_the_future_are_refused():
    s = _sync()
    _feed(s, 1000.0)  # e.g. a camera host whose clock is 1000 s ahead
    a = s.assemble(now_s=10.0)
    assert a.refusal.code == "future" and a.refusal.source == "camera:front"
    assert "990.000 s in the future" in a.refusal.message
    # a few ms ahead (message transport on one host, clock granularity) is accepted
    s2 = _sync()
    _feed(s2, 10.0)
    assert s2.assemble(now_s=9.99).ok


def test_tolerance_decides_synchronisation():
    s = _sync(tolerance_s=0.02)
    s.add_image("front", 5.00, _img(1))
    s.add_image("wrist", 5.03, _img(2))  # 30 ms apart: more than 20 ms tolerance
    s.add_joint_state("", 5.01, ["j1"], [0.0])
    a = s.assemble(now_s=5.05)
    assert a.refusal.code == "unsynchronised"
    assert "within 0.020 s" in a.refusal.message and "camera 'wrist' 5.030" in a.refusal.message
    # a wider tolerance accepts the same readings
    s2 = _sync(tolerance_s=0.035)
    s2.add_image("front", 5.00, _img(1))
    s2.add_image("wrist", 5.03, _img(2))
    s2.add_joint_state("", 5.01, ["j1"], [0.0])
    assert s2.assemble(now_s=5.05).observation.stamp_s == pytest.approx(5.03)


def test_picks_older_aligned_set_over_newest_misaligned_one():
    s = _sync(tolerance_s=0.01)
    s.add_image("front", 2.00, _img(1))
    s.add_image("wrist", 2.005, _img(2))
    s.add_image("front", 2.10, _img(3))  # newest front has no wrist partner
    for t in np.arange(1.95, 2.12, 0.001):  # joint states at 1 kHz
        s.add_joint_state("", float(t), ["j1"], [float(t)])
    a = s.assemble(now_s=2.11)
    assert a.ok
    assert a.observation.images["front"][0, 0, 0] == 1
    # the joint state is the newest in [2.000, 2.010]
    assert a.observation.joint_positions[0] == pytest.approx(2.010, abs=1.5e-3)
    assert a.observation.joint_positions[0] <= 2.010 + 1e-9


def test_instruction_latest_wins():
    s = _sync()
    _feed(s, 1.0)
    s.set_instruction("open the drawer")
    s.set_instruction("close the drawer")
    assert s.assemble(1.01).observation.instruction == "close the drawer"


def test_bimanual_joint_sources_concatenate_in_order():
    s = ObservationSync(SyncConfig(camera_slots=("cam_high",), joint_sources=("follower_left", "follower_right")))
    s.add_image("cam_high", 3.0, _img(0))
    s.add_joint_state("follower_right", 3.0, ["follower_right/waist"], [2.0])
    s.add_joint_state("follower_left", 3.0, ["follower_left/waist"], [1.0])
    obs = s.assemble(3.01).observation
    assert obs.joint_names == ("follower_left/waist", "follower_right/waist")
    np.testing.assert_array_equal(obs.joint_positions, [1.0, 2.0])


def test_privileged_required():
    s = _sync(require_privileged=True)
    _feed(s, 1.0)
    assert s.assemble(1.01).refusal.code == "no_privileged"
    s.set_privileged("objects", privileged_objects({"red_cube": np.eye(4)}))
    obs = s.assemble(1.01).observation
    np.testing.assert_array_equal(obs.privileged["objects"]["red_cube"], np.eye(4))
    with pytest.raises(ValueError, match="'cube' pose must be \\(4, 4\\)"):
        privileged_objects({"cube": np.eye(3)})


def test_time_going_backwards_resets_history():
    s = _sync()
    _feed(s, 100.0)
    _feed(s, 0.5, tag=7)  # simulation restarted its clock
    a = s.assemble(0.51)
    assert a.ok and a.observation.images["front"][0, 0, 0] == 7


def test_retention_drops_old_readings():
    s = _sync(max_age_s=0.1, tolerance_s=0.01)
    for k in range(1000):
        s.add_joint_state("", k * 0.001, ["j1"], [0.0])
    assert len(s._joints[""].stamps_s) <= 112  # (0.1 + 0.01) s at 1 kHz, plus the boundary


def test_input_validation():
    s = _sync()
    with pytest.raises(KeyError, match="unknown camera slot 'rear'"):
        s.add_image("rear", 0.0, _img(0))
    with pytest.raises(ValueError, match="must be \\(H, W, 3\\) uint8 RGB"):
        s.add_image("front", 0.0, np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="2 names but 1 positions"):
        s.add_joint_state("", 0.0, ["a", "b"], [0.0])
    with pytest.raises(ValueError, match="tolerance_s must be a positive"):
        SyncConfig(camera_slots=("a",), tolerance_s=0.0)
    with pytest.raises(ValueError, match="stamp must be finite"):
        s.add_image("front", float("nan"), _img(0))


def test_a_non_finite_joint_position_is_refused_and_not_kept():
    s = _sync(camera_slots=())
    with pytest.raises(ValueError, match="non-finite position for j2"):
        s.add_joint_state("", 1.0, ["j1", "j2"], [0.0, float("nan")])
    assert s.assemble(now_s=1.0).refusal.code == "missing"  # nothing kept: no observation
    s.add_joint_state("", 1.0, ["j1", "j2"], [0.0, 0.5])
    assert s.assemble(now_s=1.0).ok


def test_an_instruction_longer_than_the_limit_is_refused_and_the_previous_stays():
    from vla_ros.core.observation_sync import MAX_INSTRUCTION_CHARS

    s = _sync()
    s.set_instruction("pick up the red cube")
    s.set_instruction("y" * MAX_INSTRUCTION_CHARS)  # at the limit: taken
    assert len(s.instruction) == MAX_INSTRUCTION_CHARS
    with pytest.raises(ValueError, match=f"instruction of {MAX_INSTRUCTION_CHARS + 1} characters refused"):
        s.set_instruction("z" * (MAX_INSTRUCTION_CHARS + 1))
    assert s.instruction == "y" * MAX_INSTRUCTION_CHARS
