"""Driver state -> may the controller command, and how chunk timing follows UR speed scaling."""

import pytest

from vla_ros.core.driver_state import (
    FRANKA_MODE_IDLE,
    FRANKA_MODE_MOVE,
    FRANKA_MODE_REFLEX,
    FRANKA_MODE_USER_STOPPED,
    DriverStateConfig,
    DriverStateMonitor,
)


def test_nothing_heard_means_no_objection():
    m = DriverStateMonitor()
    assert m.permission().may_command and m.chunk_time_scale() == 1.0 and m.trajectory_time_factor() == 1.0


def test_stopped_ur_program_blocks_until_running_and_a_new_chunk():
    m = DriverStateMonitor()
    m.update_program_running(True)
    assert m.permission().may_command and not m.recovering
    m.update_program_running(False)
    p = m.permission()
    assert not p.may_command and "program" in p.reason
    assert not m.chunk_allowed().may_command
    m.update_program_running(True)
    # the driver follows again, but the old plan is stale: hold until a new chunk
    assert m.permission().may_command and m.recovering
    assert m.chunk_allowed().may_command and not m.recovering


@pytest.mark.parametrize("raw, fraction", [(0.5, 0.5), (50.0, 0.5), (1.0, 1.0), (100.0, 1.0), (0.25, 0.25)])
def test_speed_scaling_fraction_or_percent(raw, fraction):
    m = DriverStateMonitor()
    m.update_speed_scaling(raw)
    assert m.speed_scaling == pytest.approx(fraction)
    # a chunk runs 1 / scaling times slower; the scaled JTC's clock runs at the scaling
    assert m.chunk_time_scale() == pytest.approx(1.0 / fraction)
    assert m.trajectory_time_factor() == pytest.approx(fraction)


def test_speed_scaling_below_the_minimum_is_a_pause():
    m = DriverStateMonitor(DriverStateConfig(min_speed_scaling=0.05))
    m.update_speed_scaling(0.02)
    p = m.permission()
    assert not p.may_command and "2.0 %" in p.reason and "paused" in p.reason
    m.update_speed_scaling(0.3)
    assert m.permission().may_command


def test_bad_speed_scaling_is_refused():
    m = DriverStateMonitor()
    with pytest.raises(ValueError):
        m.update_speed_scaling(-0.1)
    with pytest.raises(ValueError):
        m.update_speed_scaling(float("nan"))
    with pytest.raises(ValueError):
        DriverStateConfig(min_speed_scaling=0.0)


def test_franka_reflex_and_errors():
    m = DriverStateMonitor()
    m.update_franka_state(FRANKA_MODE_MOVE, [])
    assert m.permission().may_command
    m.update_franka_state(FRANKA_MODE_REFLEX, ["joint_reflex", "cartesian_reflex"])
    p = m.permission()
    assert not p.may_command and "REFLEX" in p.reason and "joint_reflex" in p.reason
    m.update_franka_state(FRANKA_MODE_IDLE, ["power_limit_violation"])
    assert "power_limit_violation" in m.permission().reason
    m.update_franka_state(FRANKA_MODE_USER_STOPPED, [])
    assert "USER_STOPPED" in m.permission().reason
    m.update_franka_state(FRANKA_MODE_IDLE, [])
    assert m.permission().may_command and m.recovering
    assert m.chunk_allowed().may_command and not m.recovering
