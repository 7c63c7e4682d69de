"""Action spaces: the column names of an action chunk, and the chunk -> joint targets adapter.

The names of a chunk's columns say its action space (doc/INTERFACES.md, "Action chunks").
`p` is the arm prefix, `""` for a single arm and `"<namespace>/"` for namespaced arms; arms
come in config order, and each arm with a gripper ends with its `p + "gripper"` column.

| space            | columns per arm                                                         |
|------------------|-------------------------------------------------------------------------|
| `joint_position` | `p + <joint>` (driver name), absolute rad                               |
| `joint_delta`    | `p + "joint_delta/" + <joint>`, rad added to the previous row's target  |
| `ee_delta`       | `p + "ee_delta/" + x, y, z (m), roll, pitch, yaw (rad)`                 |
| `ee_pose`        | `p + "ee_pose/" + x, y, z (m), qx, qy, qz, qw`                          |
| (every space)    | `p + "gripper"` in [0, 1], 1 = open, 0 = closed, absolute               |

Conventions (all poses are of the arm's tool frame expressed in the arm's base frame):
- `joint_delta` is cumulative: row i's target = q_reference + sum of rows 0..i.
- `ee_delta` follows Bridge/OpenVLA: row i's target = row i-1's target translated by
  (x, y, z) in the base frame and rotated by R_delta = Rz(yaw) Ry(pitch) Rx(roll) applied in the
  base frame (R_i = R_delta R_{i-1}); row -1 is FK(q_reference).
- `ee_pose` quaternions are (x, y, z, w); they are normalised here, a zero-norm one is rejected.
  Either sign is accepted (q and -q are one rotation). The ones written here (`to_action_values`)
  lie in the hemisphere of the arm's home orientation (q . q_home >= 0), not w >= 0: a tool
  pointing down has w ~ 0, where "w >= 0" flips the sign of every component between nearby
  orientations and a model regressing them would average q and -q into nonsense.
- Gripper values are passed through unchanged (out-of-range values are clipped by the safety
  envelope, not here, so that the clipping is logged once, in one place).
- Non-finite values (NaN/inf) anywhere in a chunk are rejected here with ActionSpaceError
  naming the column and rows: a chunk with a NaN is malformed, and IK would propagate it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np

from vla_ros.core.embodiment import ArmSpec, EmbodimentSpec
from vla_ros.core.types import ActionChunk

if TYPE_CHECKING:  # the adapter is handed a solver; the action names need no Pinocchio (GPU inference hosts)
    from vla_ros.core.kinematics import RobotKinematics

SPACES: tuple[str, ...] = ("joint_position", "joint_delta", "ee_delta", "ee_pose")
EE_DELTA_FIELDS: tuple[str, ...] = ("x", "y", "z", "roll", "pitch", "yaw")
EE_POSE_FIELDS: tuple[str, ...] = ("x", "y", "z", "qx", "qy", "qz", "qw")

# Quaternions shorter than this cannot be normalised into a meaningful rotation.
_MIN_QUATERNION_NORM = 1e-6


class ActionSpaceError(ValueError):
    """An action chunk that does not fit the embodiment's action space."""


def _prefix(arm: ArmSpec) -> str:
    return f"{arm.namespace}/" if arm.namespace else ""


def gripper_action_name(arm: ArmSpec) -> str:
    """The action column of `arm`'s gripper command (in every space)."""
    return _prefix(arm) + "gripper"


def _arm_columns(arm: ArmSpec, space: str) -> tuple[str, ...]:
    """The non-gripper columns of one arm in `space`."""
    p = _prefix(arm)
    if space == "joint_position":
        return tuple(p + j for j in arm.joint_names)
    if space == "joint_delta":
        return tuple(f"{p}joint_delta/{j}" for j in arm.joint_names)
    if space == "ee_delta":
        return tuple(f"{p}ee_delta/{f}" for f in EE_DELTA_FIELDS)
    if space == "ee_pose":
        return tuple(f"{p}ee_pose/{f}" for f in EE_POSE_FIELDS)
    raise ActionSpaceError(f"unknown action space '{space}'; known spaces: {list(SPACES)}")


def action_names(spec: EmbodimentSpec, space: str) -> tuple[str, ...]:
    """The column names of a chunk in `space` for `spec`, arms in config order."""
    names: list[str] = []
    for arm in spec.arms:
        names.extend(_arm_columns(arm, space))
        if arm.gripper is not None:
            names.append(_prefix(arm) + "gripper")
    return tuple(names)


def detect_space(spec: EmbodimentSpec, names: Sequence[str]) -> str | None:
    """The space whose names are exactly `names` (any order), or None."""
    wanted = set(names)
    for space in SPACES:
        if set(action_names(spec, space)) == wanted:
            return space
    return None


def rpy_to_matrix(roll_rad: np.ndarray, pitch_rad: np.ndarray, yaw_rad: np.ndarray) -> np.ndarray:
    """Rz(yaw) Ry(pitch) Rx(roll) for arrays of angles: (...,) -> (..., 3, 3)."""
    cr, sr = np.cos(roll_rad), np.sin(roll_rad)
    cp, sp = np.cos(pitch_rad), np.sin(pitch_rad)
    cy, sy = np.cos(yaw_rad), np.sin(yaw_rad)
    return np.stack(
        [
            np.stack([cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr], axis=-1),
            np.stack([sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr], axis=-1),
            np.stack([-sp, cp * sr, cp * cr], axis=-1),
        ],
        axis=-2,
    )


def matrix_to_rpy(rotation: np.ndarray) -> np.ndarray:
    """Inverse of `rpy_to_matrix` for (..., 3, 3): (..., 3) [roll, pitch, yaw], pitch in [-pi/2, pi/2]."""
    r = np.asarray(rotation, dtype=np.float64)
    pitch = np.arcsin(np.clip(-r[..., 2, 0], -1.0, 1.0))
    roll = np.arctan2(r[..., 2, 1], r[..., 2, 2])
    yaw = np.arctan2(r[..., 1, 0], r[..., 0, 0])
    return np.stack([roll, pitch, yaw], axis=-1)


def quaternion_xyzw_to_matrix(quaternion_xyzw: np.ndarray) -> np.ndarray:
    """(..., 4) unit quaternions (x, y, z, w) -> (..., 3, 3) rotation matrices."""
    x, y, z, w = np.moveaxis(np.asarray(quaternion_xyzw, dtype=np.float64), -1, 0)
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], axis=-1),
            np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], axis=-1),
            np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], axis=-1),
        ],
        axis=-2,
    )


def matrix_to_quaternion_xyzw(rotation: np.ndarray) -> np.ndarray:
    """(3, 3) rotation -> (4,) unit quaternion (x, y, z, w) with w >= 0."""
    r = np.asarray(rotation, dtype=np.float64)
    trace = np.trace(r)
    # Branch on the largest diagonal term so the square root never takes a tiny argument.
    if trace > 0.0:
        s = 2.0 * np.sqrt(1.0 + trace)
        q = np.array([(r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s, 0.25 * s])
    else:
        i = int(np.argmax(np.diag(r)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * np.sqrt(1.0 + r[i, i] - r[j, j] - r[k, k])
        q = np.empty(4)
        q[i] = 0.25 * s
        q[j] = (r[j, i] + r[i, j]) / s
        q[k] = (r[k, i] + r[i, k]) / s
        q[3] = (r[k, j] - r[j, k]) / s
    q /= np.linalg.norm(q)
    return -q if q[3] < 0.0 else q


@dataclass(frozen=True)
class JointTargets:
    """Joint-space targets for every row of a chunk.

    joint_names:          spec.joint_names (qualified arm joints), the column order of positions.
    positions:            (T, n) rad.
    gripper_joint_names:  qualified gripper joint names, one per arm with a gripper, arms in order.
    gripper:              (T, g) normalised gripper commands (1 = open, 0 = closed), unclipped.
    ik_success:           (T,) bool; all True for joint spaces.
    ik_position_error_m:  (T,) worst remaining tool position error over the arms (0 for joint spaces).
    ik_orientation_error_rad: (T,) worst remaining tool orientation error over the arms.
    """

    joint_names: tuple[str, ...]
    positions: np.ndarray
    gripper_joint_names: tuple[str, ...]
    gripper: np.ndarray
    ik_success: np.ndarray
    ik_position_error_m: np.ndarray
    ik_orientation_error_rad: np.ndarray

    def __post_init__(self) -> None:
        joint_names = tuple(self.joint_names)
        gripper_names = tuple(self.gripper_joint_names)
        positions = np.array(self.positions, dtype=np.float64, copy=True)
        if positions.ndim != 2 or positions.shape[1] != len(joint_names) or positions.shape[0] == 0:
            raise ValueError(
                f"JointTargets.positions must be (T >= 1, {len(joint_names)}), got shape {positions.shape}"
            )
        steps = positions.shape[0]
        gripper = np.array(self.gripper, dtype=np.float64, copy=True).reshape(steps, -1)
        if gripper.shape != (steps, len(gripper_names)):
            raise ValueError(
                f"JointTargets.gripper must be ({steps}, {len(gripper_names)}), got shape {gripper.shape}"
            )
        fields = {
            "positions": positions,
            "gripper": gripper,
            "ik_success": np.array(self.ik_success, dtype=bool, copy=True),
            "ik_position_error_m": np.array(self.ik_position_error_m, dtype=np.float64, copy=True),
            "ik_orientation_error_rad": np.array(self.ik_orientation_error_rad, dtype=np.float64, copy=True),
        }
        for name in ("ik_success", "ik_position_error_m", "ik_orientation_error_rad"):
            if fields[name].shape != (steps,):
                raise ValueError(f"JointTargets.{name} must have shape ({steps},), got {fields[name].shape}")
        for name, arr in fields.items():
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)
        object.__setattr__(self, "joint_names", joint_names)
        object.__setattr__(self, "gripper_joint_names", gripper_names)

    @property
    def num_steps(self) -> int:
        return int(self.positions.shape[0])


class ActionAdapter:
    """Turns action chunks of one embodiment's action space into joint targets (IK where needed)."""

    def __init__(self, spec: EmbodimentSpec, kin: RobotKinematics, space: str | None = None) -> None:
        self.spec = spec
        self.kin = kin
        self.space = spec.action_space if space is None else space
        if self.space not in SPACES:
            raise ActionSpaceError(
                f"embodiment '{spec.name}': unknown action space '{self.space}'; known spaces: {list(SPACES)}"
            )
        if tuple(kin.joint_names) != tuple(spec.joint_names):
            raise ActionSpaceError(
                f"kinematics joints {list(kin.joint_names)} differ from embodiment '{spec.name}' joints "
                f"{list(spec.joint_names)}"
            )
        self.names = action_names(spec, self.space)
        self._column = {name: i for i, name in enumerate(self.names)}
        self.gripper_joint_names = tuple(
            arm.qualified(arm.gripper.joint_name) for arm in spec.arms if arm.gripper is not None
        )
        self._gripper_columns = tuple(gripper_action_name(arm) for arm in spec.arms if arm.gripper is not None)
        self._home_quaternion: dict[str, np.ndarray] = {}
        if self.space == "ee_pose":
            q_home = np.concatenate([np.asarray(a.home_rad, dtype=np.float64) for a in spec.arms])
            for arm in spec.arms:
                base, tool = kin.arm_frames(arm.name)
                self._home_quaternion[arm.name] = matrix_to_quaternion_xyzw(kin.frame_pose(q_home, tool, base)[:3, :3])

    def check_names(self, names: Sequence[str]) -> None:
        """Raise ActionSpaceError unless `names` are exactly this adapter's names (any order)."""
        got = tuple(names)
        if len(got) == len(self.names) and set(got) == set(self.names):
            return
        missing = [n for n in self.names if n not in set(got)]
        unexpected = [n for n in got if n not in self._column]
        duplicated = sorted({n for n in got if got.count(n) > 1})
        other = detect_space(self.spec, got)
        details = []
        if missing:
            details.append(f"missing {missing}")
        if unexpected:
            details.append(f"unexpected {unexpected}")
        if duplicated:
            details.append(f"duplicated {duplicated}")
        if other is not None:
            details.append(f"these are the names of action space '{other}'")
        raise ActionSpaceError(
            f"action names do not match embodiment '{self.spec.name}' action space '{self.space}': "
            f"expected {list(self.names)}, got {list(got)}; " + "; ".join(details)
        )

    def to_joint_targets(self, chunk: ActionChunk, q_reference: np.ndarray) -> JointTargets:
        """Joint targets for every row of `chunk`.

        q_reference: (n,) joints in spec.joint_names order; the origin of joint_delta and ee_delta
        chunks, and the IK seed of ee chunks (the controller passes the configuration commanded
        at the chunk's stamp, or the measured one if nothing is commanded).
        """
        values, q_ref = self._prepare(chunk, q_reference)
        steps = values.shape[0]
        gripper = values[:, [self._column[c] for c in self._gripper_columns]].reshape(steps, -1)
        ok = np.ones(steps, dtype=bool)
        pos_err = np.zeros(steps)
        ori_err = np.zeros(steps)
        if self.space == "joint_position":
            positions = values[:, [self._column[p] for p in self._joint_columns()]]
        elif self.space == "joint_delta":
            deltas = values[:, [self._column[p] for p in self._joint_columns()]]
            positions = q_ref + np.cumsum(deltas, axis=0)
        else:
            targets = {arm.name: self._ee_targets(arm, values, q_ref) for arm in self.spec.arms}
            result = self.kin.solve_ik_chunk_arms(targets, q_ref)
            positions, ok = result.q, result.success
            pos_err, ori_err = result.position_error_m, result.orientation_error_rad
        return JointTargets(
            joint_names=self.spec.joint_names,
            positions=positions,
            gripper_joint_names=self.gripper_joint_names,
            gripper=gripper,
            ik_success=ok,
            ik_position_error_m=pos_err,
            ik_orientation_error_rad=ori_err,
        )

    def ee_targets(self, chunk: ActionChunk, q_reference: np.ndarray) -> dict[str, np.ndarray]:
        """{arm: (T, 4, 4) tool poses in the arm's base frame} that an ee chunk asks for (no IK)."""
        if self.space not in ("ee_delta", "ee_pose"):
            raise ActionSpaceError(f"ee_targets needs an ee_delta/ee_pose adapter, this one is '{self.space}'")
        values, q_ref = self._prepare(chunk, q_reference)
        return {arm.name: self._ee_targets(arm, values, q_ref) for arm in self.spec.arms}

    def _prepare(self, chunk: ActionChunk, q_reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Checked (values in this adapter's column order, q_reference)."""
        self.check_names(chunk.names)
        n = len(self.spec.joint_names)
        q_ref = np.asarray(q_reference, dtype=np.float64)
        if q_ref.shape != (n,):
            raise ActionSpaceError(
                f"q_reference must have shape ({n},) ({list(self.spec.joint_names)}), got {q_ref.shape}"
            )
        if not np.all(np.isfinite(q_ref)):
            raise ActionSpaceError(f"q_reference contains non-finite values: {q_ref.tolist()}")
        # Columns in this adapter's order, whatever order the chunk used.
        values = chunk.values[:, [chunk.names.index(name) for name in self.names]]
        bad = ~np.isfinite(values)
        if bad.any():
            cols = sorted({self.names[c] for c in np.flatnonzero(bad.any(axis=0))})
            rows = np.flatnonzero(bad.any(axis=1)).tolist()
            raise ActionSpaceError(f"action chunk has non-finite values in columns {cols} at rows {rows}")
        return values, q_ref

    def to_action_values(self, positions: np.ndarray, gripper: np.ndarray, q_reference: np.ndarray) -> np.ndarray:
        """The inverse of `to_joint_targets`: (T, len(names)) action rows that reach `positions`.

        positions (T, n) joints in spec.joint_names order, gripper (T, g) normalised, q_reference (n,)
        the configuration before row 0 (the origin of joint_delta / ee_delta rows). Used to store
        what was actually commanded (teleop, recording) in a policy's action space.
        """
        n = len(self.spec.joint_names)
        q = np.asarray(positions, dtype=np.float64)
        if q.ndim != 2 or q.shape[1] != n or q.shape[0] == 0:
            raise ActionSpaceError(f"positions must have shape (T >= 1, {n}), got {q.shape}")
        steps = q.shape[0]
        g = np.asarray(gripper, dtype=np.float64).reshape(steps, -1)
        if g.shape[1] != len(self._gripper_columns):
            raise ActionSpaceError(
                f"gripper must have shape ({steps}, {len(self._gripper_columns)}) for {list(self._gripper_columns)}, "
                f"got {np.shape(gripper)}"
            )
        q_ref = np.asarray(q_reference, dtype=np.float64)
        if q_ref.shape != (n,):
            raise ActionSpaceError(f"q_reference must have shape ({n},), got {q_ref.shape}")
        for what, arr in (("positions", q), ("gripper", g), ("q_reference", q_ref)):
            if not np.all(np.isfinite(arr)):
                rows = sorted({int(i) for i in np.argwhere(~np.isfinite(np.atleast_2d(arr)))[:, 0]})
                raise ActionSpaceError(f"{what} has non-finite values (rows {rows})")
        values = np.empty((steps, len(self.names)))
        for column, g_col in zip(self._gripper_columns, g.T):
            values[:, self._column[column]] = g_col
        if self.space == "joint_position":
            values[:, [self._column[c] for c in self._joint_columns()]] = q
            return values
        if self.space == "joint_delta":
            values[:, [self._column[c] for c in self._joint_columns()]] = np.diff(np.vstack([q_ref, q]), axis=0)
            return values
        for arm in self.spec.arms:
            base, tool = self.kin.arm_frames(arm.name)
            poses = np.array([self.kin.frame_pose(row, tool, base) for row in np.vstack([q_ref, q])])
            cols = [self._column[c] for c in _arm_columns(arm, self.space)]
            if self.space == "ee_pose":
                values[:, cols[:3]] = poses[1:, :3, 3]
                quats = np.array([matrix_to_quaternion_xyzw(p[:3, :3]) for p in poses[1:]])
                quats[quats @ self._home_quaternion[arm.name] < 0.0] *= -1.0  # the home hemisphere
                values[:, cols[3:]] = quats
            else:
                values[:, cols[:3]] = np.diff(poses[:, :3, 3], axis=0)
                # R_i = R_delta R_{i-1}  =>  R_delta = R_i R_{i-1}^T
                deltas = np.einsum("tij,tkj->tik", poses[1:, :3, :3], poses[:-1, :3, :3])
                values[:, cols[3:]] = matrix_to_rpy(deltas)
        return values

    def _joint_columns(self) -> tuple[str, ...]:
        return tuple(c for arm in self.spec.arms for c in _arm_columns(arm, self.space))

    def _ee_targets(self, arm: ArmSpec, values: np.ndarray, q_ref: np.ndarray) -> np.ndarray:
        cols = values[:, [self._column[c] for c in _arm_columns(arm, self.space)]]
        steps = values.shape[0]
        targets = np.tile(np.eye(4), (steps, 1, 1))
        if self.space == "ee_pose":
            quat = cols[:, 3:7]
            norm = np.linalg.norm(quat, axis=1)
            short = np.flatnonzero(norm < _MIN_QUATERNION_NORM)
            if short.size:
                raise ActionSpaceError(
                    f"arm '{arm.name}': ee_pose quaternion (qx, qy, qz, qw) has (near) zero norm at rows "
                    f"{short.tolist()}; it must be a rotation"
                )
            targets[:, :3, :3] = quaternion_xyzw_to_matrix(quat / norm[:, None])
            targets[:, :3, 3] = cols[:, :3]
            return targets
        base, tool = self.kin.arm_frames(arm.name)
        previous = self.kin.frame_pose(q_ref, tool, base)
        deltas = rpy_to_matrix(cols[:, 3], cols[:, 4], cols[:, 5])
        position = previous[:3, 3].copy()
        rotation = previous[:3, :3].copy()
        for i in range(steps):
            position = position + cols[i, :3]
            rotation = deltas[i] @ rotation
            targets[i, :3, :3] = rotation
            targets[i, :3, 3] = position
        return targets
