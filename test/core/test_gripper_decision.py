"""Gripper open/close decisions and franka_gripper width conventions (hand-computed cases)."""

import math

import pytest

from vla_ros.core.gripper_decision import (
    CLOSE,
    OPEN,
    GraspSettings,
    GripperHysteresis,
    GripperWidthMap,
    goal_for,
    grasp_succeeds,
    initial_decision,
)

H = GripperHysteresis(0.4, 0.6)


def test_hysteresis_switches_only_past_the_thresholds():
    column = [1.0, 0.5, 0.41, 0.4, 0.5, 0.59, 0.6, 0.3]
    assert H.decisions(column, None) == [OPEN, OPEN, OPEN, CLOSE, CLOSE, CLOSE, OPEN, CLOSE]
    # no decision yet and only dead-band values: still none
    assert H.decisions([0.5, 0.45], None) == [None, None]


def test_needs_change_is_true_only_when_a_goal_would_be_sent():
    assert not H.needs_change([1.0, 0.9, 0.45], OPEN)  # stays open (0.45 is in the dead band)
    assert H.needs_change([1.0, 0.9, 0.2], OPEN)
    assert not H.needs_change([0.0, 0.55], CLOSE)
    assert H.needs_change([0.55], None) is False
    assert H.needs_change([0.7], None)


@pytest.mark.parametrize("lo, hi", [(0.6, 0.4), (0.5, 0.5), (-0.1, 0.5), (0.2, 1.2), (math.nan, 0.6)])
def test_bad_thresholds_are_refused(lo, hi):
    with pytest.raises(ValueError):
        GripperHysteresis(lo, hi)


def test_nan_command_is_refused():
    with pytest.raises(ValueError, match="finite"):
        H.decide(math.nan, OPEN)


def test_width_map_franka_hand():
    # Franka Hand: each finger travels 0..40 mm, the opening is twice that
    m = GripperWidthMap(open_position=0.04, closed_position=0.0)
    assert m.open_width_m == pytest.approx(0.08) and m.closed_width_m == 0.0
    assert m.width_m(1.0) == pytest.approx(0.08)
    assert m.width_m(0.5) == pytest.approx(0.04)
    assert m.width_m(1.3) == pytest.approx(0.08)  # clipped to the calibrated range
    assert m.width_m(-0.2) == pytest.approx(0.0)
    assert m.normalised(0.06) == pytest.approx(0.75)
    assert m.normalised(0.09) == pytest.approx(1.125)  # not clipped: out-of-range stays visible


def test_width_map_with_open_below_closed():
    m = GripperWidthMap(open_position=0.01, closed_position=0.03)
    assert m.width_m(1.0) == pytest.approx(0.02) and m.width_m(0.0) == pytest.approx(0.06)
    assert m.normalised(0.04) == pytest.approx(0.5)


def test_goals_for_decisions():
    m = GripperWidthMap(0.04, 0.0)
    grasp = GraspSettings(speed_m_s=0.05, force_n=30.0, min_object_width_m=0.01, max_object_width_m=0.05)
    open_goal = goal_for(OPEN, m, grasp)
    assert (open_goal.kind, open_goal.width_m, open_goal.speed_m_s) == ("move", pytest.approx(0.08), 0.05)
    assert open_goal.gripper_command_position() == pytest.approx(0.04)
    close = goal_for(CLOSE, m, grasp)
    # the band [10, 50] mm as libfranka's width +- epsilon: 30 mm +- 20 mm
    assert close.kind == "grasp" and close.width_m == pytest.approx(0.03) and close.force_n == 30.0
    assert close.epsilon_inner_m == pytest.approx(0.02) and close.epsilon_outer_m == pytest.approx(0.02)
    assert grasp_succeeds(0.04, close)  # a 4 cm cube
    assert not grasp_succeeds(0.0, close)  # closed on nothing: missed / slipped
    assert not grasp_succeeds(0.01, close)  # libfranka's bounds are strict
    assert grasp_succeeds(0.0101, close)
    assert not grasp_succeeds(0.06, close)
    with pytest.raises(ValueError):
        goal_for("half", m, grasp)


def test_grasp_settings_validation():
    with pytest.raises(ValueError):
        GraspSettings(force_n=0.0)
    with pytest.raises(ValueError):
        GraspSettings(min_object_width_m=0.05, max_object_width_m=0.05)


def test_initial_decision_from_the_measured_opening():
    assert initial_decision(0.98, H) == OPEN
    assert initial_decision(0.02, H) == CLOSE
    assert initial_decision(0.5, H) is None
    assert initial_decision(None, H) is None
    assert initial_decision(math.nan, H) is None
