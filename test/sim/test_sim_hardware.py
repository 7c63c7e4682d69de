"""The simulated hardware: model per embodiment, joint names, tracking, cameras, seeding, tasks."""

import math

import mujoco
import numpy as np
import pytest

from vla_ros.core.embodiment import load_embodiment
from vla_ros.core.jtc import TrajectoryCommand, TrajectoryPoint
from vla_ros.sim.hardware import GRIPPER_FULL_STROKE_S, SimulatedHardware
from vla_ros.sim.scene import CUBE_HALF_SIZE_M, TABLE_TOP_Z_M
from vla_ros.sim.tasks import HANDOVER_INSTRUCTION, MIN_CUBE_SEPARATION_M

EMBODIMENTS = ["fr3", "panda", "ur5", "ur5e", "aloha"]


@pytest.fixture(scope="module")
def fr3():
    hw = SimulatedHardware(load_embodiment("fr3"))
    yield hw
    hw.close()


@pytest.mark.parametrize("name", EMBODIMENTS)
def test_model_loads_with_the_configured_joints(name):
    spec = load_embodiment(name)
    hw = SimulatedHardware(spec)
    assert hw.model.opt.timestep == pytest.approx(0.002)
    for arm in spec.arms:
        state = hw.joint_state(arm.name)
        # driver names, arm joints in driver order, the gripper joint last
        assert state.names == tuple(arm.joint_names) + (arm.gripper.joint_name,)
        np.testing.assert_allclose(state.positions[:-1], arm.home_rad, atol=1e-12)
        assert state.positions[-1] == pytest.approx(arm.gripper.open_position)
    # robot standing still at home for 0.5 s: gravity compensation + servos hold it
    hw.step(0.5)
    for arm in spec.arms:
        np.testing.assert_allclose(hw.arm_positions(arm.name), arm.home_rad, atol=2e-3)
    assert set(hw.scene.cameras) == {c.slot for c in spec.cameras}
    assert all(cid >= 0 for cid in hw.scene.cameras.values())


def test_time_is_simulated_and_monotonic(fr3):
    fr3.reset(0)
    t0 = fr3.time_s
    fr3.step(0.1)
    assert fr3.time_s == pytest.approx(t0 + 0.1)
    fr3.reset(1)  # a reset never sends time backwards
    assert fr3.time_s == pytest.approx(t0 + 0.1) and fr3.episode_start_s == fr3.time_s
    with pytest.raises(ValueError, match="duration_s"):
        fr3.step(-1.0)


def test_trajectory_is_followed_and_reached(fr3):
    fr3.reset(0)
    arm = fr3.spec.arms[0]
    target = arm.home_rad + np.array([0.3, 0.2, -0.2, 0.25, 0.3, -0.3, 0.4])
    cmd = TrajectoryCommand(arm.joint_names, (TrajectoryPoint(1.0, tuple(target)),))
    assert fr3.apply_trajectory("arm", cmd) is None
    fr3.step(0.5)
    # halfway along the linear segment (JTC: positions only -> linear), within the servo lag
    np.testing.assert_allclose(fr3.arm_positions("arm"), (arm.home_rad + target) / 2, atol=0.01)
    fr3.step(1.0)
    np.testing.assert_allclose(fr3.arm_positions("arm"), target, atol=2e-3)


def test_rejected_trajectory_is_ignored(fr3):
    fr3.reset(0)
    arm = fr3.spec.arms[0]
    partial = TrajectoryCommand(arm.joint_names[:3], (TrajectoryPoint(1.0, (0.5, 0.5, 0.5)),))
    reason = fr3.apply_trajectory("arm", partial)
    assert "allow_partial_joints_goal" in reason
    fr3.step(1.0)
    np.testing.assert_allclose(fr3.arm_positions("arm"), arm.home_rad, atol=2e-3)


def test_forward_command_and_gripper(fr3):
    fr3.reset(0)
    arm = fr3.spec.arms[0]
    target = arm.home_rad + 0.1
    fr3.apply_forward_command("arm", target)
    fr3.apply_gripper_command("arm", 0.0)
    fr3.step(GRIPPER_FULL_STROKE_S / 2)
    # fingers move at the gripper's stroke rate: half-way after half the stroke time
    assert fr3.joint_state("arm").positions[-1] == pytest.approx(0.02, abs=0.004)
    fr3.step(1.0)
    np.testing.assert_allclose(fr3.arm_positions("arm"), target, atol=2e-3)
    assert fr3.joint_state("arm").positions[-1] == pytest.approx(0.0, abs=1e-3)
    with pytest.raises(ValueError, match="expected 7"):
        fr3.apply_forward_command("arm", [0.0] * 6)


def _project(model, data, cam_id, point, width, height):
    """Pinhole projection of a world point into camera `cam_id` (MuJoCo cameras look along -z)."""
    R = data.cam_xmat[cam_id].reshape(3, 3)
    p = R.T @ (point - data.cam_xpos[cam_id])
    f = 0.5 * height / math.tan(math.radians(model.cam_fovy[cam_id]) / 2)
    u = width / 2 + f * p[0] / -p[2]
    v = height / 2 - f * p[1] / -p[2]
    return int(round(u)), int(round(v))


def test_front_camera_sees_the_cubes_where_geometry_says(fr3):
    fr3.reset(3)
    image = fr3.render("front")
    assert image.shape == (224, 224, 3) and image.dtype == np.uint8
    assert image.std() > 10.0
    cam = fr3.scene.cameras["front"]
    expected = {"red_cube": 0, "green_cube": 1, "blue_cube": 2}
    for name, pose in fr3.object_poses().items():
        u, v = _project(fr3.model, fr3.data, cam, pose[:3, 3], 224, 224)
        assert 0 <= u < 224 and 0 <= v < 224, f"{name} projects outside the image"
        pixel = image[v, u].astype(int)
        channel = expected[name]
        assert pixel[channel] > 1.5 * max(np.delete(pixel, channel)), f"{name} pixel {pixel} at ({u},{v})"


def test_wrist_camera_renders(fr3):
    fr3.reset(0)
    image = fr3.render("wrist")
    assert image.shape == (224, 224, 3) and image.std() > 10.0
    with pytest.raises(KeyError, match="slots"):
        fr3.render("nope")
    assert set(fr3.render_time_s()) >= {"wrist"}


def test_reset_is_seeded(fr3):
    fr3.reset(7)
    first = {k: v.copy() for k, v in fr3.object_poses().items()}
    instruction = fr3.instruction
    fr3.step(0.2)
    fr3.reset(7)
    again = fr3.object_poses()
    assert fr3.instruction == instruction
    for k in first:
        np.testing.assert_array_equal(first[k], again[k])
    fr3.reset(8)
    other = fr3.object_poses()
    assert any(np.linalg.norm(first[k][:3, 3] - other[k][:3, 3]) > 0.01 for k in first)


@pytest.mark.parametrize("seed", range(5))
def test_cubes_rest_on_the_table_apart_and_in_the_region(fr3, seed):
    fr3.reset(seed)
    fr3.step(0.3)
    poses = fr3.object_poses()
    assert fr3.instruction in {f"pick up the {c} cube" for c in ("red", "green", "blue")}
    r = fr3.scene.region
    xy = []
    for pose in poses.values():
        assert pose[2, 3] == pytest.approx(TABLE_TOP_Z_M + CUBE_HALF_SIZE_M, abs=1.5e-3)
        d = pose[:2, 3] - r.center_xy_m
        assert abs(d @ r.axis_u) <= r.half_u_m + 1e-9 and abs(d @ r.axis_v) <= r.half_v_m + 1e-9
        xy.append(pose[:2, 3])
    for i in range(3):
        for j in range(i + 1, 3):
            assert np.linalg.norm(xy[i] - xy[j]) >= MIN_CUBE_SEPARATION_M - 2e-3
    assert not fr3.is_success()


def test_success_needs_lift_and_hold(fr3):
    fr3.reset(1)
    target = fr3.task.target
    adr = fr3.scene.cube_qpos_adr[target]
    # lifted 10 cm but nothing holds it: not a success
    fr3.data.qpos[adr + 2] = 0.12
    mujoco.mj_forward(fr3.model, fr3.data)
    assert fr3.task.cube_clearance_m(fr3.data) == pytest.approx(0.10, abs=1e-6)
    assert not fr3.is_success()


def test_aloha_handover_task():
    hw = SimulatedHardware(load_embodiment("aloha"))
    assert hw.instruction == HANDOVER_INSTRUCTION
    assert set(hw.scene.cameras) == {"cam_high", "cam_low", "cam_left_wrist", "cam_right_wrist"}
    for slot in hw.scene.cameras:
        assert hw.render(slot).std() > 5.0
    hw.close()
