"""`vla-ros fk` and `vla-ros ik`: kinematics of an embodiment from the command line, as JSON.

    vla-ros fk --embodiment fr3 --joints 0,-0.785,0,-2.356,0,1.571,0.785
    vla-ros ik --embodiment ur5e --position 0.4,0.1,0.3 --orientation-xyzw 1,0,0,0

Joints are given in the embodiment's joint order (`spec.joint_names`; ALOHA: the left arm's six
joints, then the right arm's six). The default frame is the first arm's tool frame and the default
base is that arm's base frame; `--frame follower_right/ee_gripper_link` (with its `--base`) picks
ALOHA's right arm. For `ik`, `--frame` may be any frame on an arm's kinematic chain (the tool,
the flange `panda_link8` / `tool0`, a wrist link; it selects the arm whose joints move) and `--base`
any frame, as for `fk` (a base on the same arm's chain makes the pose relative to it). Lists may
start with a minus (`--joints -0.3,0.2,...`). Bad input exits with status 2 and one line on stderr
that says what was wrong.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

_EXIT_BAD_INPUT = 2


class _CliError(Exception):
    """Bad user input: reported on stderr, exit status 2."""


def _floats(text: str, what: str, count: int | None = None) -> np.ndarray:
    try:
        values = np.array([float(v) for v in text.split(",")], dtype=np.float64)
    except ValueError:
        raise _CliError(f"{what} must be comma-separated numbers, got '{text}'") from None
    if count is not None and values.shape[0] != count:
        raise _CliError(f"{what} needs {count} values, got {values.shape[0]} ('{text}')")
    if not np.all(np.isfinite(values)):
        raise _CliError(f"{what} must be finite numbers, got '{text}'")
    return values


def _common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--embodiment", required=True, help="embodiment config name (fr3, panda, ur5, ur5e, aloha) or YAML path"
    )
    parser.add_argument("--frame", default=None, help="frame to report/solve for (default: the first arm's tool frame)")
    parser.add_argument("--base", default=None, help="frame the pose is expressed in (default: that arm's base frame)")


def fk_add_arguments(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    parser.description = (
        "Pose of a frame for given joints, printed as JSON {frame, base, position, orientation_xyzw}. "
        "Example: vla-ros fk --embodiment fr3 --joints 0,-0.785,0,-2.356,0,1.571,0.785"
    )
    _common_arguments(parser)
    parser.add_argument(
        "--joints",
        required=True,
        help="comma-separated joint positions (rad, m) in the embodiment's joint order "
        "(ALOHA: the left arm's six, then the right arm's six)",
    )


def ik_add_arguments(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    parser.description = (
        "Joints that put a frame on an arm's chain (default: the tool) at a pose, printed as JSON "
        "{success, joints, joint_names, position_error_m, orientation_error_rad, frame, base}; exit status 1 "
        "when no solution is found. "
        "Example: vla-ros ik --embodiment ur5e --position 0.4,0.1,0.3 --orientation-xyzw 1,0,0,0"
    )
    _common_arguments(parser)
    parser.add_argument("--position", required=True, help="x,y,z of the frame in the base frame (m)")
    parser.add_argument("--orientation-xyzw", required=True, help="quaternion x,y,z,w (normalised here)")
    parser.add_argument(
        "--seed", default=None, help="comma-separated starting joints, embodiment order (default: the config's home)"
    )
    parser.add_argument(
        "--restarts", type=int, default=20, help="random restarts if the first attempt fails (default 20)"
    )


def _load(args: argparse.Namespace):
    from vla_ros.core.embodiment import load_embodiment
    from vla_ros.core.kinematics import RobotKinematics

    try:
        spec = load_embodiment(args.embodiment)
    except (KeyError, ValueError, FileNotFoundError) as exc:
        raise _CliError(str(exc).strip("'\"")) from None
    return spec, RobotKinematics.from_embodiment(spec)


def _resolve_frames(kin, frame: str | None, base: str | None, need_arm: bool) -> tuple[str, str, str]:
    """(arm, frame, base) with defaults filled in; unknown frames get a did-you-mean message.

    The arm is the one whose joints move `frame` (need_arm: IK, which must move one), else the first.
    """
    frame = kin.arm_frames(kin.arm_names[0])[1] if frame is None else frame
    kin.frame_id(frame)  # raises KinematicsError with close matches
    if need_arm:
        arm = kin.frame_arm(frame)
    else:
        moving = kin.arms_moving(frame)
        arm = moving[0] if len(moving) == 1 else kin.arm_names[0]
    if base is None:
        base = kin.arm_frames(arm)[0]
    kin.frame_id(base)
    return arm, frame, base


def _count_message(option: str, kin, embodiment: str, got: int) -> str:
    return f"{option} needs {kin.num_joints} values for '{embodiment}' ({','.join(kin.joint_names)}), got {got}"


def _print(result: dict) -> None:
    print(json.dumps(result))


def fk_run(args: argparse.Namespace) -> int:
    from vla_ros.core.action_spaces import matrix_to_quaternion_xyzw
    from vla_ros.core.kinematics import KinematicsError

    try:
        spec, kin = _load(args)
        q = _floats(args.joints, "--joints")
        if q.shape[0] != kin.num_joints:
            raise _CliError(_count_message("--joints", kin, spec.name, q.shape[0]))
        _, frame, base = _resolve_frames(kin, args.frame, args.base, need_arm=False)
        pose = kin.frame_pose(q, frame, base)
    except (_CliError, KinematicsError) as exc:
        print(f"vla-ros fk: error: {exc}", file=sys.stderr)
        return _EXIT_BAD_INPUT
    _print(
        {
            "frame": frame,
            "base": base,
            "position": pose[:3, 3].tolist(),
            "orientation_xyzw": matrix_to_quaternion_xyzw(pose[:3, :3]).tolist(),
        }
    )
    return 0


def ik_run(args: argparse.Namespace) -> int:
    from vla_ros.core.action_spaces import quaternion_xyzw_to_matrix
    from vla_ros.core.kinematics import KinematicsError

    try:
        spec, kin = _load(args)
        position = _floats(args.position, "--position", 3)
        quat = _floats(args.orientation_xyzw, "--orientation-xyzw", 4)
        norm = float(np.linalg.norm(quat))
        if norm < 1e-6:
            raise _CliError(f"--orientation-xyzw must be a non-zero quaternion, got '{args.orientation_xyzw}'")
        if args.restarts < 0:
            raise _CliError(f"--restarts must be >= 0, got {args.restarts}")
        arm, frame, base = _resolve_frames(kin, args.frame, args.base, need_arm=True)
        seed = kin.home_rad
        if args.seed is not None:
            seed = _floats(args.seed, "--seed")
            if seed.shape[0] != kin.num_joints:
                raise _CliError(_count_message("--seed", kin, spec.name, seed.shape[0]))
        target = np.eye(4)
        target[:3, :3] = quaternion_xyzw_to_matrix(quat / norm)
        target[:3, 3] = position
        result = kin.solve_ik(target, arm, seed, restarts=args.restarts, rng=np.random.default_rng(0),
                              frame=frame, base=base)
    except (_CliError, KinematicsError) as exc:
        print(f"vla-ros ik: error: {exc}", file=sys.stderr)
        return _EXIT_BAD_INPUT
    _print(
        {
            "success": bool(result.success[0]),
            "joints": result.q[0].tolist(),
            "joint_names": list(kin.joint_names),
            "position_error_m": float(result.position_error_m[0]),
            "orientation_error_rad": float(result.orientation_error_rad[0]),
            "frame": frame,
            "base": base,
        }
    )
    if result.success[0]:
        return 0
    # Not reaching the pose is an answer, not a usage error: the JSON says so, status 1 for scripts.
    print(
        f"vla-ros ik: no solution within tolerance after {args.restarts} restarts: position error "
        f"{result.position_error_m[0]:.4g} m, orientation error {result.orientation_error_rad[0]:.4g} rad "
        "(is the pose reachable?)",
        file=sys.stderr,
    )
    return 1
