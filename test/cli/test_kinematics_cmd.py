"""`vla-ros fk` / `vla-ros ik`: JSON output checked against RobotKinematics and hand-computed poses."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vla_ros.cli.main import main
from vla_ros.core.action_spaces import matrix_to_quaternion_xyzw, quaternion_xyzw_to_matrix
from vla_ros.core.embodiment import load_embodiment
from vla_ros.core.kinematics import RobotKinematics

from test.core.test_kinematics import franka_flange, franka_tcp

FR3_READY = [0.0, -np.pi / 4, 0.0, -3 * np.pi / 4, 0.0, np.pi / 2, np.pi / 4]


def run_cli(capsys, *argv: str) -> tuple[int, dict | None, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    payload = json.loads(captured.out) if captured.out.strip() else None
    return code, payload, captured.err


def joints_arg(q) -> str:
    return ",".join(repr(float(v)) for v in q)


def test_fk_fr3_ready_pose_default_frames(capsys):
    code, out, _ = run_cli(capsys, "fk", "--embodiment", "fr3", "--joints", joints_arg(FR3_READY))
    assert code == 0
    assert out["frame"] == "fr3_hand_tcp" and out["base"] == "fr3_link0"
    # Reference: the Craig DH table composed independently in test/core/test_kinematics.py.
    pose = franka_tcp(np.array(FR3_READY))
    np.testing.assert_allclose(out["position"], pose[:3, 3], atol=1e-9)
    # At the ready pose the hand points straight down with its x along the base x: a rotation
    # of pi about x, quaternion (1, 0, 0, 0) up to sign.
    np.testing.assert_allclose(np.abs(out["orientation_xyzw"]), [1.0, 0.0, 0.0, 0.0], atol=1e-9)
    np.testing.assert_allclose(quaternion_xyzw_to_matrix(np.array(out["orientation_xyzw"])), pose[:3, :3], atol=1e-9)


def test_fk_ur5_tool0_in_base_at_zero_is_the_dh_closed_form(capsys):
    # All joints 0 (standard DH): tool0 at (a2 + a3, -(d4 + d6), d1 - d5) in `base`.
    code, out, _ = run_cli(capsys, "fk", "--embodiment", "ur5", "--joints", "0,0,0,0,0,0", "--frame", "tool0", "--base", "base")
    assert code == 0
    np.testing.assert_allclose(out["position"], [-0.425 - 0.39225, -(0.10915 + 0.0823), 0.089159 - 0.09465], atol=1e-9)


def test_fk_aloha_right_arm_frame(capsys):
    q = [0.1, -0.3, 0.4, 0.0, 0.5, 0.2, -0.2, 0.1, 0.3, 0.1, -0.4, 0.0]
    kin = RobotKinematics.from_embodiment(load_embodiment("aloha"))
    right_base, right_tool = kin.arm_frames("follower_right")
    code, out, _ = run_cli(capsys, "fk", "--embodiment", "aloha", "--joints", joints_arg(q), "--frame", right_tool)
    assert code == 0 and out["base"] == right_base
    np.testing.assert_allclose(out["position"], kin.frame_pose(np.array(q), right_tool, right_base)[:3, 3], atol=1e-12)


def test_ik_round_trips_through_fk(capsys):
    kin = RobotKinematics.from_embodiment(load_embodiment("ur5e"))
    q_true = np.array([0.4, -1.1, 1.3, -1.6, -1.2, 0.5])
    base, tool = kin.arm_frames("arm")
    pose = kin.frame_pose(q_true, tool, base)
    quat = matrix_to_quaternion_xyzw(pose[:3, :3])
    code, out, _ = run_cli(
        capsys, "ik", "--embodiment", "ur5e", "--position", joints_arg(pose[:3, 3]), "--orientation-xyzw", joints_arg(quat)
    )
    assert code == 0 and out["success"] is True
    reached = kin.frame_pose(np.array(out["joints"]), tool, base)
    assert np.linalg.norm(reached[:3, 3] - pose[:3, 3]) <= 1e-4
    assert out["position_error_m"] == pytest.approx(np.linalg.norm(reached[:3, 3] - pose[:3, 3]), abs=1e-12)
    assert out["joint_names"] == list(kin.joint_names)


def test_ik_with_seed_and_other_base(capsys):
    kin = RobotKinematics.from_embodiment(load_embodiment("aloha"))
    q_true = np.array([0.1, -0.3, 0.4, 0.0, 0.5, 0.2, -0.2, 0.1, 0.3, 0.1, -0.4, 0.0])
    _, right_tool = kin.arm_frames("follower_right")
    left_base, _ = kin.arm_frames("follower_left")
    pose = kin.frame_pose(q_true, right_tool, left_base)  # right tool expressed in the LEFT base
    code, out, _ = run_cli(
        capsys, "ik", "--embodiment", "aloha", "--frame", right_tool, "--base", left_base,
        "--position", joints_arg(pose[:3, 3]), "--orientation-xyzw", joints_arg(matrix_to_quaternion_xyzw(pose[:3, :3])),
        "--seed", joints_arg(q_true + 0.05),
    )
    assert code == 0 and out["success"]
    q = np.array(out["joints"])
    np.testing.assert_allclose(kin.frame_pose(q, right_tool, left_base)[:3, 3], pose[:3, 3], atol=1e-4)
    np.testing.assert_array_equal(q[:6], q_true[:6] + 0.05)  # the left arm keeps its seed


# The usual spelling: lists that start with a minus sign, as separate words (not `--joints=-0.3,...`).
PANDA_Q = "-0.3,0.2,0.1,-1.5,0.1,1.2,0.3"


def test_fk_accepts_a_list_starting_with_a_minus_sign(capsys):
    code, out, err = run_cli(capsys, "fk", "--embodiment", "panda", "--joints", PANDA_Q)
    assert code == 0, err
    q = np.array([float(v) for v in PANDA_Q.split(",")])
    np.testing.assert_allclose(out["position"], franka_tcp(q)[:3, 3], atol=1e-9)


def test_ik_accepts_position_orientation_and_seed_starting_with_a_minus_sign(capsys):
    kin = RobotKinematics.from_embodiment(load_embodiment("ur5e"))
    q_true = np.array([2.6, -1.1, 1.3, -1.6, -1.2, 0.5])  # puts tool0 behind the base: x < 0
    base, tool = kin.arm_frames("arm")
    pose = kin.frame_pose(q_true, tool, base)
    quat = matrix_to_quaternion_xyzw(pose[:3, :3])
    quat = quat if quat[0] < 0 else -quat  # the same rotation, written with a leading minus
    assert pose[0, 3] < 0 and quat[0] < 0
    code, out, err = run_cli(
        capsys, "ik", "--embodiment", "ur5e", "--position", joints_arg(pose[:3, 3]),
        "--orientation-xyzw", joints_arg(quat), "--seed", joints_arg(q_true - 0.05 * np.sign(q_true)),
    )
    assert code == 0 and out["success"], err
    np.testing.assert_allclose(kin.frame_pose(np.array(out["joints"]), tool, base), pose, atol=1e-3)


def test_ik_for_the_panda_flange_matches_the_dh_reference(capsys):
    # A cell without the hand: IK for panda_link8 (the flange), checked against the Craig DH table.
    q_true = np.array([0.3, -0.5, 0.2, -2.0, 0.1, 1.6, 0.5])
    pose = franka_flange(q_true)
    code, out, err = run_cli(
        capsys, "ik", "--embodiment", "panda", "--frame", "panda_link8", "--position", joints_arg(pose[:3, 3]),
        "--orientation-xyzw", joints_arg(matrix_to_quaternion_xyzw(pose[:3, :3])),
    )
    assert code == 0 and out["success"], err
    assert out["frame"] == "panda_link8" and out["base"] == "panda_link0"
    reached = franka_flange(np.array(out["joints"]))
    assert np.linalg.norm(reached[:3, 3] - pose[:3, 3]) <= 1e-4
    np.testing.assert_allclose(reached[:3, :3], pose[:3, :3], atol=2e-3)


def test_ik_for_a_frame_relative_to_a_link_of_the_same_arm(capsys):
    # --base on the arm's own chain: the pose of the flange relative to panda_link3 (which the
    # first three joints move), as fk reports it.
    kin = RobotKinematics.from_embodiment(load_embodiment("panda"))
    q_true = np.array([0.3, -0.5, 0.2, -2.0, 0.1, 1.6, 0.5])
    code, fk, _ = run_cli(capsys, "fk", "--embodiment", "panda", "--joints", joints_arg(q_true),
                          "--frame", "panda_link8", "--base", "panda_link3")
    assert code == 0
    code, out, err = run_cli(
        capsys, "ik", "--embodiment", "panda", "--frame", "panda_link8", "--base", "panda_link3",
        "--position", joints_arg(fk["position"]), "--orientation-xyzw", joints_arg(fk["orientation_xyzw"]),
    )
    assert code == 0 and out["success"], err
    reached = kin.frame_pose(np.array(out["joints"]), "panda_link8", "panda_link3")
    np.testing.assert_allclose(reached[:3, 3], fk["position"], atol=1e-4)


def test_ik_unreachable_is_json_with_success_false_and_status_1(capsys):
    code, out, err = run_cli(
        capsys, "ik", "--embodiment", "fr3", "--position", "2,0,0.5", "--orientation-xyzw", "1,0,0,0", "--restarts", "2"
    )
    assert code == 1
    assert out["success"] is False and out["position_error_m"] > 0.8
    assert "no solution within tolerance" in err


@pytest.mark.parametrize(
    "argv,message",
    [
        (["fk", "--embodiment", "fr3", "--joints", "0,0,0"], r"--joints needs 7 values for 'fr3' \(fr3_joint1,"),
        (["fk", "--embodiment", "fr3", "--joints", "0,a,0"], "--joints must be comma-separated numbers"),
        (["fk", "--embodiment", "fr4", "--joints", "0"], "unknown embodiment 'fr4'.*fr3"),
        (["fk", "--embodiment", "fr3", "--joints", "0,0,0,-1,0,1,0", "--frame", "fr3_hnd_tcp"],
         r"unknown frame 'fr3_hnd_tcp'; did you mean \['fr3_hand_tcp'"),
        (["fk", "--embodiment", "fr3", "--joints", "0,0,0,-1,0,1,0", "--base", "fr3_lnk0"], "did you mean.*fr3_link0"),
        (["ik", "--embodiment", "fr3", "--position", "0.4,0", "--orientation-xyzw", "1,0,0,0"], "--position needs 3 values"),
        (["ik", "--embodiment", "fr3", "--position", "0.4,0,0.3", "--orientation-xyzw", "0,0,0,0"], "non-zero quaternion"),
        (["ik", "--embodiment", "fr3", "--position", "0.4,0,0.3", "--orientation-xyzw", "1,0,0,0", "--frame", "fr3_link0"],
         r"frame 'fr3_link0' cannot be placed by IK: no arm's joints move it"),
        (["ik", "--embodiment", "fr3", "--position", "-0.4,0,0.3", "--orientation-xyzw", "-1,0,0,0", "--seed", "-1,0"],
         "--seed needs 7 values"),
        (["ik", "--embodiment", "fr3", "--position", "0.4,0,0.3", "--orientation-xyzw", "1,0,0,0", "--seed", "0,0"],
         "--seed needs 7 values"),
    ],
)
def test_bad_input_exits_2_with_clear_stderr(capsys, argv, message):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and out is None
    assert err.startswith(f"vla-ros {argv[0]}: error: ")
    assert re.search(message, err), err


def test_real_subprocess_fk():
    exe = Path(sys.executable).with_name("vla-ros")
    env = dict(os.environ)
    proc = subprocess.run(
        [str(exe), "fk", "--embodiment", "panda", "--joints", joints_arg(FR3_READY), "--frame", "panda_link8"],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    np.testing.assert_allclose(out["position"], franka_flange(np.array(FR3_READY))[:3, 3], atol=1e-9)
    bad = subprocess.run([str(exe), "fk", "--embodiment", "panda", "--joints", "1,2"], capture_output=True, text=True, env=env, timeout=60, check=False)
    assert bad.returncode == 2 and "--joints needs 7 values" in bad.stderr


def test_bench_kinematics_json(capsys):
    code = main(["bench", "kinematics", "--json", "--embodiments", "ur5,aloha", "--chunks", "3", "--calls", "50"])
    assert code == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["chunk_steps"] == 50
    for name, joints in (("ur5", 6), ("aloha", 12)):
        row = out[name]
        assert row["joints"] == joints
        assert row["fk_us"] > 0 and row["jacobian_us"] > 0
        assert 0 < row["ik_chunk50_warm_ms"]["p50"] <= row["ik_chunk50_warm_ms"]["p99"]
        # The bench's path is reachable by construction: every chunk must be solved.
        assert row["ik_warm_chunks_all_success"] == "3/3" and row["ik_cold_chunks_all_success"] == "3/3"
    assert 0 < row["ik_chunk50_warm_cpu_ms"]["p50"] <= row["ik_chunk50_warm_cpu_ms"]["p99"]
    assert isinstance(out["warm_cpu_p99_within_target"], bool)
