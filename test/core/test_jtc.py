"""JTC semantics: the acceptance/rejection table of a default joint_trajectory_controller and its
interpolation, checked against hand-computed values."""

import numpy as np
import pytest

from vla_ros.core.jtc import (
    JointTrajectory,
    JointTrajectoryController,
    TrajectoryCommand,
    TrajectoryPoint,
    TrajectoryRejected,
    interpolate_segment,
    validate_trajectory,
)

JOINTS = ("j1", "j2")


def P(t, pos, vel=(), acc=()):
    return TrajectoryPoint(t, pos, vel, acc)


def cmd(points, names=JOINTS, stamp=0.0):
    return TrajectoryCommand(names, tuple(points), stamp)


GOOD = [P(0.5, (0.1, 0.2)), P(1.0, (0.3, 0.4))]


@pytest.mark.parametrize(
    "command, now, fragment",
    [
        (cmd(GOOD, names=()), 0.0, "empty joint_names"),
        (cmd([P(0.5, (0.1, 0.2, 0.3))], names=("j1", "j2", "j9")), 0.0, "'j9'"),
        (cmd([P(0.5, (0.1,))], names=("j1",)), 0.0, "does not cover joint(s) ['j2']"),
        (cmd([]), 0.0, "empty trajectory"),
        (cmd([P(0.5, (0, 0)), P(0.5, (1, 1))]), 0.0, "not strictly increasing"),
        (cmd([P(0.5, (0, 0)), P(0.4, (1, 1))]), 0.0, "not strictly increasing"),
        (cmd([P(0.5, (0, 0, 0))]), 0.0, "3 positions, expected 2"),
        (cmd([P(0.5, (0, 0), vel=(0,))]), 0.0, "1 velocities"),
        (cmd([P(0.5, (0, 0), vel=(0, 0), acc=(0, 0, 0))]), 0.0, "3 accelerations"),
        (cmd([P(0.5, (0, 0)), P(1.0, (1, 1), vel=(0.0, 0.1))]), 0.0, "last trajectory point is not zero"),
        (cmd(GOOD, stamp=10.0), 11.5, "ends in the past"),
        (cmd([P(0.5, (np.nan, 0))]), 0.0, "non-finite"),
    ],
)
def test_rejections_name_the_reason(command, now, fragment):
    reason = validate_trajectory(command, JOINTS, now)
    assert reason is not None and fragment in reason
    with pytest.raises(TrajectoryRejected, match="."):
        JointTrajectory.from_command(command, JOINTS, now)


@pytest.mark.parametrize(
    "command, now",
    [
        (cmd(GOOD), 100.0),  # stamp 0: starts on arrival, never "in the past"
        (cmd(GOOD, stamp=10.0), 10.9),  # ends at 11.0, still in the future
        (cmd(list(reversed([P(1.0, (0.3, 0.4)), P(0.5, (0.1, 0.2))])), names=("j2", "j1")), 0.0),
        (cmd([P(0.5, (0, 0), vel=(1, 1)), P(1.0, (1, 1), vel=(0, 0))]), 0.0),  # non-zero mid velocity is fine
        (cmd([P(0.0, (0, 0))]), 0.0),  # a single point at t=0 is a jump command
    ],
)
def test_accepted(command, now):
    assert validate_trajectory(command, JOINTS, now) is None


def test_joint_order_is_mapped_to_the_controller():
    t = JointTrajectory.from_command(cmd([P(1.0, (2.0, 1.0))], names=("j2", "j1")), JOINTS, 5.0)
    np.testing.assert_allclose(t.positions, [[1.0, 2.0]])
    assert t.start_s == 5.0 and t.times_s.tolist() == [6.0]


def test_linear_cubic_quintic_hand_values():
    p0, p1 = np.array([0.0]), np.array([1.0])
    z = np.array([0.0])
    lin = interpolate_segment(0.0, p0, None, None, 1.0, p1, None, None, 0.25)
    assert lin.positions[0] == pytest.approx(0.25) and lin.velocities[0] == pytest.approx(1.0)
    # rest-to-rest cubic: 3s^2 - 2s^3
    cub = interpolate_segment(0.0, p0, z, None, 1.0, p1, z, None, 0.25)
    assert cub.positions[0] == pytest.approx(0.15625)
    assert cub.velocities[0] == pytest.approx(6 * 0.25 - 6 * 0.0625)
    # rest-to-rest quintic: 10s^3 - 15s^4 + 6s^5
    qui = interpolate_segment(0.0, p0, z, z, 1.0, p1, z, z, 0.25)
    assert qui.positions[0] == pytest.approx(0.103515625)
    # one end without accelerations -> cubic, without velocities -> linear
    assert interpolate_segment(0.0, p0, z, z, 1.0, p1, z, None, 0.25).positions[0] == pytest.approx(0.15625)
    assert interpolate_segment(0.0, p0, z, z, 1.0, p1, None, z, 0.25).positions[0] == pytest.approx(0.25)


def test_quintic_matches_boundary_conditions():
    p0, v0, a0 = np.array([0.3]), np.array([-1.0]), np.array([2.0])
    p1, v1, a1 = np.array([1.2]), np.array([0.5]), np.array([-3.0])
    for t, (p, v, a) in ((2.0, (p0, v0, a0)), (4.0, (p1, v1, a1))):
        s = interpolate_segment(2.0, p0, v0, a0, 4.0, p1, v1, a1, t)
        np.testing.assert_allclose([s.positions[0], s.velocities[0], s.accelerations[0]], [p[0], v[0], a[0]], atol=1e-12)
    # cubic: end velocities matched
    s = interpolate_segment(2.0, p0, v0, None, 4.0, p1, v1, None, 4.0)
    np.testing.assert_allclose([s.positions[0], s.velocities[0]], [1.2, 0.5], atol=1e-12)


def test_controller_inserts_measured_state_and_holds_last_point():
    jtc = JointTrajectoryController(JOINTS)
    assert jtc.update(0.0, np.zeros(2), np.zeros(2)) is None  # nothing commanded yet
    assert jtc.receive(cmd([P(1.0, (1.0, -1.0)), P(2.0, (2.0, 0.0))]), now_s=10.0) is None
    # takes over at 10.0 from the measured state (0.5, 0.5): linear to point 0 at 11.0
    s = jtc.update(10.0, np.array([0.5, 0.5]), np.zeros(2))
    np.testing.assert_allclose(s.positions, [0.5, 0.5])
    s = jtc.update(10.5, np.zeros(2), np.zeros(2))  # measurement after take-over does not matter
    np.testing.assert_allclose(s.positions, [0.75, -0.25])
    s = jtc.update(11.25, np.zeros(2), np.zeros(2))
    np.testing.assert_allclose(s.positions, [1.25, -0.75])
    np.testing.assert_allclose(s.velocities, [1.0, 1.0])
    s = jtc.update(50.0, np.zeros(2), np.zeros(2))
    np.testing.assert_allclose(s.positions, [2.0, 0.0])
    np.testing.assert_allclose(s.velocities, [0.0, 0.0])


def test_rejected_trajectory_keeps_the_running_one():
    jtc = JointTrajectoryController(JOINTS)
    jtc.receive(cmd([P(1.0, (1.0, 1.0))]), now_s=0.0)
    jtc.update(0.0, np.zeros(2), np.zeros(2))
    reason = jtc.receive(cmd([P(1.0, (9.0,))], names=("j1",)), now_s=0.5)
    assert "allow_partial_joints_goal" in reason
    s = jtc.update(0.5, np.zeros(2), np.zeros(2))
    np.testing.assert_allclose(s.positions, [0.5, 0.5])


def test_replacement_waits_for_the_new_start_time():
    jtc = JointTrajectoryController(JOINTS)
    jtc.receive(cmd([P(2.0, (2.0, 2.0))]), now_s=0.0)
    jtc.update(0.0, np.zeros(2), np.zeros(2))
    # new trajectory stamped to start at 1.0; at 0.5 the old one still runs
    assert jtc.receive(cmd([P(1.0, (0.0, 0.0))], stamp=1.0), now_s=0.5) is None
    np.testing.assert_allclose(jtc.update(0.5, np.zeros(2), np.zeros(2)).positions, [0.5, 0.5])
    # at 1.0 it takes over from the measured state (1.0, 1.0) and goes linearly to 0 at 2.0
    np.testing.assert_allclose(jtc.update(1.0, np.ones(2), np.zeros(2)).positions, [1.0, 1.0])
    np.testing.assert_allclose(jtc.update(1.5, np.ones(2), np.zeros(2)).positions, [0.5, 0.5])


def test_cubic_first_segment_uses_measured_velocity():
    jtc = JointTrajectoryController(("j",))
    jtc.receive(TrajectoryCommand(("j",), (P(1.0, (1.0,), vel=(0.0,)),)), now_s=0.0)
    # measured: position 0, velocity 1 -> Hermite p(s) = s + c2 s^2 + c3 s^3, c2 = (3-2)/1 = 1, c3 = (-2+1) = -1
    s = jtc.update(0.0, np.array([0.0]), np.array([1.0]))
    np.testing.assert_allclose(s.velocities, [1.0])
    s = jtc.update(0.5, np.array([0.0]), np.array([0.0]))
    assert s.positions[0] == pytest.approx(0.5 + 0.25 - 0.125)


def test_hold_and_shape_checks():
    jtc = JointTrajectoryController(JOINTS)
    jtc.hold(np.array([0.1, 0.2]))
    np.testing.assert_allclose(jtc.update(3.0, np.zeros(2), np.zeros(2)).positions, [0.1, 0.2])
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        jtc.hold(np.zeros(3))
    with pytest.raises(ValueError, match="duration"):
        interpolate_segment(1.0, np.zeros(1), None, None, 1.0, np.ones(1), None, None, 1.0)


def test_stamp_in_the_past_starts_mid_trajectory():
    # Stamped at 9.0, received at 10.0: the JTC samples the trajectory at its own time, so the
    # points before 10.0 are skipped and the command starts halfway along the second segment.
    jtc = JointTrajectoryController(("j",))
    cmd_past = TrajectoryCommand(("j",), (P(0.5, (1.0,)), P(1.5, (3.0,)), P(2.0, (3.0,))), stamp_s=9.0)
    assert jtc.receive(cmd_past, now_s=10.0) is None
    s = jtc.update(10.0, np.array([0.0]), np.array([0.0]))
    assert s.positions[0] == pytest.approx(2.0)  # 1.0 + (3.0 - 1.0) * (10.0 - 9.5) / 1.0
