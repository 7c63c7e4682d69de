"""Forward kinematics, Jacobians and chunk-wise inverse kinematics on a Pinocchio model.

One `RobotKinematics` holds one immutable Pinocchio model reduced to the embodiment's arm
joints (gripper/finger joints are locked), so a configuration vector `q` is exactly
`spec.joint_names` in that order, everywhere. The Pinocchio `data` workspace is per thread
(created lazily), so one instance may be shared by the controller's threads.

Frame conventions (Pinocchio's `oMdes` naming: the pose of `des` expressed in `o`):
- `frame_pose(q, frame, base)` is `base_M_frame` as a 4x4 homogeneous matrix.
- `frame_jacobian(q, frame, base)` maps dq to the twist [v; w] of `frame` relative to `base`,
  v being the velocity of the frame's origin, both expressed in `base`'s axes.
- IK targets are poses of the arm's tool frame expressed in the arm's base frame by default;
  `frame=` / `base=` solve for any frame the arm's joints move (e.g. the flange instead of the
  tool), expressed in any frame. A base the arm does not move is held where the seed puts it; a
  base the arm moves itself (a link of its own chain) makes the target a relative pose.

IK is damped least squares on the 6-D error [p_des - p; log3(R_des R^T)] with the world-aligned
frame Jacobian (Levenberg-Marquardt damping that grows with the error), a secondary task
projected into the Jacobian's null space on redundant arms (pull towards the arm's home posture,
push away from joint limits), joint limits enforced by saturating the joints that would cross
them. Every step of a chunk is warm-started from the previous step's solution, extrapolated
with the previous joint velocity once two steps have converged. IK never fails silently: each
step reports success and the remaining position/orientation error.
"""

from __future__ import annotations

import difflib
import logging
import math
import threading
from dataclasses import dataclass

import numpy as np
import pinocchio as pin
from scipy.linalg.lapack import dposv as _dposv

from vla_ros.core.embodiment import EmbodimentSpec, load_urdf_xml

_LOG = logging.getLogger(__name__)


class KinematicsError(ValueError):
    """A kinematics request that cannot be honoured (unknown frame, wrong q size, bad model)."""


@dataclass(frozen=True)
class IKOptions:
    """Tuning of the damped-least-squares IK.

    position_tolerance_m / orientation_tolerance_rad: a step succeeds when both errors are below.
    max_iterations: hard bound per chunk step (and per restart).
    damping_min: Levenberg-Marquardt damping floor (added to J J^T); keeps steps bounded near
        singularities.
    damping_error_gain: damping added per unit squared error, so far-away targets take
        gradient-like steps and near-converged ones take Newton steps.
    max_step_rad: the joint step of one iteration is scaled down to this infinity norm.
    posture_gain: null-space pull towards the arm's home per iteration (fraction of the offset).
    limit_margin_rad: joints closer than this to a limit are pushed back in the null space
        (MoveIt Servo's default joint-limit margin is 0.1 rad).
    limit_gain: strength of that push (rad per iteration at the limit itself, times margin).
        Posture and limit push act only on redundant arms (more than 6 joints: a 6-DoF arm has no
        null space) and only while the error is above 20x tolerance. On every arm, a step that would
        cross a limit saturates that joint and re-solves the task with the remaining joints.
    stall_iterations: stop early when the error has not improved by 1 % for this many iterations.
    """

    position_tolerance_m: float = 1e-4
    orientation_tolerance_rad: float = 1e-3
    max_iterations: int = 100
    damping_min: float = 1e-6
    damping_error_gain: float = 0.5
    max_step_rad: float = 0.5
    posture_gain: float = 0.05
    limit_margin_rad: float = 0.1
    limit_gain: float = 0.5
    stall_iterations: int = 8

    def __post_init__(self) -> None:
        positive = ("position_tolerance_m", "orientation_tolerance_rad", "damping_min", "max_step_rad")
        for name in positive:
            value = getattr(self, name)
            if not (np.isfinite(value) and value > 0.0):
                raise ValueError(f"IKOptions.{name} must be a positive finite number, got {value}")
        non_negative = ("damping_error_gain", "posture_gain", "limit_margin_rad", "limit_gain")
        for name in non_negative:
            value = getattr(self, name)
            if not (np.isfinite(value) and value >= 0.0):
                raise ValueError(f"IKOptions.{name} must be a non-negative finite number, got {value}")
        for name in ("max_iterations", "stall_iterations"):
            value = getattr(self, name)
            if int(value) != value or value < 1:
                raise ValueError(f"IKOptions.{name} must be a positive integer, got {value}")


@dataclass(frozen=True)
class IKResult:
    """Result of IK over a chunk of T target poses.

    q:                     (T, n) joint positions in `RobotKinematics.joint_names` order (the best
                           configuration found for each step, also when it failed).
    success:               (T,) bool, both tolerances met.
    position_error_m:      (T,) distance between reached and target tool position.
    orientation_error_rad: (T,) angle of the rotation between reached and target orientation.
    iterations:            (T,) IK iterations spent on each step (0 = the seed was already there).
    """

    q: np.ndarray
    success: np.ndarray
    position_error_m: np.ndarray
    orientation_error_rad: np.ndarray
    iterations: np.ndarray

    def __post_init__(self) -> None:
        q = np.array(self.q, dtype=np.float64, copy=True)
        if q.ndim != 2:
            raise ValueError(f"IKResult.q must be (T, n), got shape {q.shape}")
        steps = q.shape[0]
        arrays = {
            "success": np.array(self.success, dtype=bool, copy=True),
            "position_error_m": np.array(self.position_error_m, dtype=np.float64, copy=True),
            "orientation_error_rad": np.array(self.orientation_error_rad, dtype=np.float64, copy=True),
            "iterations": np.array(self.iterations, dtype=np.int64, copy=True),
        }
        for name, arr in arrays.items():
            if arr.shape != (steps,):
                raise ValueError(f"IKResult.{name} must have shape ({steps},), got {arr.shape}")
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)
        q.setflags(write=False)
        object.__setattr__(self, "q", q)

    @property
    def all_success(self) -> bool:
        return bool(np.all(self.success))


@dataclass(frozen=True)
class _ArmChain:
    """Precomputed per-arm IK data, indices into the (spec-ordered) q vector."""

    name: str
    joint_index: np.ndarray  # (k,) int, positions of the arm's joints in q
    base_frame: str
    tool_frame: str
    base_id: int
    tool_id: int
    oMbase: pin.SE3  # base pose in the world; constant (checked at construction)
    lower_rad: np.ndarray
    upper_rad: np.ndarray
    home_rad: np.ndarray


def _check_poses(poses: np.ndarray, what: str) -> np.ndarray:
    """Validate a (T, 4, 4) stack of homogeneous transforms; returns it as float64."""
    m = np.asarray(poses, dtype=np.float64)
    if m.ndim != 3 or m.shape[1:] != (4, 4) or m.shape[0] == 0:
        raise KinematicsError(f"{what} must have shape (T, 4, 4) with T >= 1, got {m.shape}")
    if not np.all(np.isfinite(m)):
        bad = sorted({int(i) for i in np.argwhere(~np.isfinite(m))[:, 0]})
        raise KinematicsError(f"{what} contains non-finite values at steps {bad}")
    rot = m[:, :3, :3]
    ortho = np.abs(np.einsum("tji,tjk->tik", rot, rot) - np.eye(3)).max(axis=(1, 2))
    bad = np.flatnonzero((ortho > 1e-6) | (np.linalg.det(rot) < 0.0))
    if bad.size:
        raise KinematicsError(
            f"{what}: the rotation block of steps {bad.tolist()} is not a rotation matrix (R^T R != I or det < 0)"
        )
    return m


class RobotKinematics:
    """FK, Jacobians and IK for one embodiment; q is `joint_names` order (spec.joint_names)."""

    def __init__(
        self,
        model: pin.Model,
        joint_names: tuple[str, ...],
        arms: tuple[_ArmChain, ...],
        world_frame: str,
        ik_options: IKOptions,
    ) -> None:
        self._model = model
        self._joint_names = tuple(joint_names)
        self._arms = {arm.name: arm for arm in arms}
        self._arm_order = tuple(arm.name for arm in arms)
        self._world_frame = world_frame
        self._ik_options = ik_options
        self._local = threading.local()
        n = len(joint_names)
        # Pinocchio orders joints depth-first through the tree; q is in the spec's order.
        pin_index = np.array([model.joints[model.getJointId(j)].idx_q for j in joint_names], dtype=np.int64)
        self._to_pin = np.argsort(pin_index)  # q_pin = q[self._to_pin]
        self._from_pin = pin_index  # q = q_pin[self._from_pin]
        self._identity_order = bool(np.all(pin_index == np.arange(n)))
        self._frame_names = tuple(f.name for f in model.frames)
        # Where each arm's joints sit in Pinocchio's q: a slice (a cheap view) when contiguous.
        self._pin_sel: dict[str, slice | np.ndarray] = {}
        for arm in arms:
            cols = pin_index[arm.joint_index]
            contiguous = np.array_equal(cols, np.arange(cols[0], cols[0] + cols.shape[0]))
            self._pin_sel[arm.name] = slice(int(cols[0]), int(cols[0]) + cols.shape[0]) if contiguous else cols
        self._frame_ids = {name: _lookup_frame(model, name, "") for name in set(self._frame_names)}
        # Pinocchio joint ids of each arm's joints: which frames an arm moves (`frame_arm`).
        self._arm_joint_ids = {
            arm.name: frozenset(model.getJointId(joint_names[i]) for i in arm.joint_index) for arm in arms
        }
        # Frames on the universe joint never move: cache (oMb, bMo as 4x4, block-diag(bRo, bRo)).
        self._fixed_frames: dict[int, tuple[pin.SE3, np.ndarray, np.ndarray]] = {}
        for fid in set(self._frame_ids.values()):
            if model.frames[fid].parentJoint == 0:
                placement = model.frames[fid].placement.copy()
                rot_t = placement.rotation.T
                self._fixed_frames[fid] = (
                    placement,
                    placement.inverse().homogeneous,
                    np.block([[rot_t, np.zeros((3, 3))], [np.zeros((3, 3)), rot_t]]),
                )

    # ----------------------------------------------------------------------------- construction

    @classmethod
    def from_embodiment(
        cls, spec: EmbodimentSpec, urdf_xml: str | None = None, ik_options: IKOptions | None = None
    ) -> "RobotKinematics":
        """Build from an embodiment spec; `urdf_xml` overrides the spec's URDF source.

        `urdf_xml` is typically the running driver's robot_description; it is checked against the
        config (joints, frames, limits) by `load_urdf_xml` just like a shipped file.
        """
        xml = load_urdf_xml(spec, urdf_xml)
        try:
            full = pin.buildModelFromXML(xml)
        except (RuntimeError, ValueError) as exc:
            raise KinematicsError(f"embodiment '{spec.name}': Pinocchio cannot parse the URDF: {exc}") from exc
        joint_names = spec.joint_names
        known = [full.names[i] for i in range(1, full.njoints)]
        missing = [j for j in joint_names if not full.existJointName(j)]
        if missing:
            raise KinematicsError(
                f"embodiment '{spec.name}': URDF lacks arm joints {missing}; URDF joints: {known}"
            )
        for name in joint_names:
            joint = full.joints[full.getJointId(name)]
            if joint.nq != 1 or joint.nv != 1:
                raise KinematicsError(
                    f"embodiment '{spec.name}': joint '{name}' has {joint.nq} position coordinates "
                    f"({joint.shortname()}); only 1-DoF revolute/prismatic arm joints are supported "
                    "(a 'continuous' joint needs explicit revolute limits)"
                )
        keep = set(joint_names)
        lock_ids = [i for i in range(1, full.njoints) if full.names[i] not in keep]
        for arm in spec.arms:
            for role, frame in (("base", arm.base_frame), ("tool", arm.tool_frame)):
                fid = _lookup_frame(full, frame, f"embodiment '{spec.name}' arm '{arm.name}' {role}_frame")
                movers = [full.names[j] for j in full.supports[full.frames[fid].parentJoint] if j in lock_ids]
                if movers:
                    # Locking e.g. a gripper joint upstream of the tool would freeze a moving frame.
                    raise KinematicsError(
                        f"embodiment '{spec.name}' arm '{arm.name}': {role}_frame '{frame}' is moved by joints "
                        f"{movers} that are not arm joints; pick a frame upstream of them"
                    )
        q_lock = pin.neutral(full)
        # Locked joints (fingers, gripper) sit at the neutral value moved into their limits.
        lower, upper = full.lowerPositionLimit, full.upperPositionLimit
        finite = np.isfinite(lower) & np.isfinite(upper) & (upper >= lower)
        q_lock[finite] = np.clip(q_lock[finite], lower[finite], upper[finite])
        model = pin.buildReducedModel(full, lock_ids, q_lock) if lock_ids else full
        _LOG.debug(
            "embodiment '%s': locked joints %s for kinematics", spec.name, [full.names[i] for i in lock_ids]
        )
        data = model.createData()
        pin.framesForwardKinematics(model, data, pin.neutral(model))

        arms = []
        offset = 0
        for arm in spec.arms:
            k = len(arm.joint_names)
            index = np.arange(offset, offset + k)
            offset += k
            ids = {}
            for role, frame in (("base", arm.base_frame), ("tool", arm.tool_frame)):
                ids[role] = _lookup_frame(model, frame, f"embodiment '{spec.name}' arm '{arm.name}' {role}_frame")
            # Targets are given in the arm's base frame; a base that moves with q would make them drift.
            base_joint = model.frames[ids["base"]].parentJoint
            if base_joint != 0:
                raise KinematicsError(
                    f"embodiment '{spec.name}' arm '{arm.name}': base frame '{arm.base_frame}' is moved by "
                    f"joint '{model.names[base_joint]}'; arm bases must be fixed in the world"
                )
            lower_rad = np.asarray(arm.limits.lower_rad, dtype=np.float64).copy()
            upper_rad = np.asarray(arm.limits.upper_rad, dtype=np.float64).copy()
            home = np.asarray(arm.home_rad, dtype=np.float64).copy()
            for name, arr in (("limits.lower_rad", lower_rad), ("limits.upper_rad", upper_rad), ("home_rad", home)):
                if arr.shape != (k,):
                    raise KinematicsError(
                        f"embodiment '{spec.name}' arm '{arm.name}': {name} has shape {arr.shape}, expected ({k},)"
                    )
            if np.any(lower_rad >= upper_rad):
                raise KinematicsError(f"embodiment '{spec.name}' arm '{arm.name}': lower limit >= upper limit")
            for arr in (lower_rad, upper_rad, home):
                arr.setflags(write=False)
            arms.append(
                _ArmChain(
                    name=arm.name,
                    joint_index=index,
                    base_frame=arm.base_frame,
                    tool_frame=arm.tool_frame,
                    base_id=ids["base"],
                    tool_id=ids["tool"],
                    oMbase=data.oMf[ids["base"]].copy(),
                    lower_rad=lower_rad,
                    upper_rad=upper_rad,
                    home_rad=home,
                )
            )
        return cls(model, joint_names, tuple(arms), spec.world_frame, ik_options or IKOptions())

    # ----------------------------------------------------------------------------- properties

    @property
    def model(self) -> pin.Model:
        """The reduced Pinocchio model (treat as read-only: it is shared between threads)."""
        return self._model

    @property
    def joint_names(self) -> tuple[str, ...]:
        return self._joint_names

    @property
    def ik_options(self) -> IKOptions:
        """Default IK options (pass `options=` per call to override)."""
        return self._ik_options

    @property
    def num_joints(self) -> int:
        return len(self._joint_names)

    @property
    def arm_names(self) -> tuple[str, ...]:
        return self._arm_order

    @property
    def frame_names(self) -> tuple[str, ...]:
        return self._frame_names

    @property
    def world_frame(self) -> str:
        return self._world_frame

    def arm_joint_index(self, arm: str) -> np.ndarray:
        """Positions of `arm`'s joints in q."""
        return self._arm(arm).joint_index.copy()

    def arm_frames(self, arm: str) -> tuple[str, str]:
        """(base_frame, tool_frame) of `arm`."""
        chain = self._arm(arm)
        return chain.base_frame, chain.tool_frame

    def arms_moving(self, frame: str) -> tuple[str, ...]:
        """The arms whose joints move `frame` (in arm order); () for a frame fixed in the world."""
        support = set(self._model.supports[self._model.frames[self.frame_id(frame)].parentJoint])
        return tuple(a for a in self._arm_order if support & self._arm_joint_ids[a])

    def frame_arm(self, frame: str) -> str:
        """The arm IK moves to place `frame`: the one arm whose joints move it.

        KinematicsError for a frame no arm moves (a base, the world) or one several arms move.
        """
        arms = self.arms_moving(frame)
        if len(arms) != 1:
            what = "no arm's joints move it" if not arms else f"the joints of several arms move it {list(arms)}"
            tools = [self._arms[a].tool_frame for a in self._arm_order]
            raise KinematicsError(
                f"frame '{frame}' cannot be placed by IK: {what}; pick a frame on one arm's chain, e.g. {tools}"
            )
        return arms[0]

    @property
    def lower_rad(self) -> np.ndarray:
        return np.concatenate([self._arms[a].lower_rad for a in self._arm_order])

    @property
    def upper_rad(self) -> np.ndarray:
        return np.concatenate([self._arms[a].upper_rad for a in self._arm_order])

    @property
    def home_rad(self) -> np.ndarray:
        return np.concatenate([self._arms[a].home_rad for a in self._arm_order])

    def random_configuration(self, rng: np.random.Generator, margin_rad: float = 0.0) -> np.ndarray:
        """A uniform random q within the joint limits shrunk by `margin_rad` on each side."""
        lower, upper = self.lower_rad + margin_rad, self.upper_rad - margin_rad
        if np.any(lower > upper):
            raise KinematicsError(f"margin_rad={margin_rad} leaves no room inside the joint limits")
        return rng.uniform(lower, upper)

    # ----------------------------------------------------------------------------- FK / Jacobian

    def frame_id(self, frame: str) -> int:
        """Pinocchio frame id of `frame`; KinematicsError with close matches if unknown."""
        fid = self._frame_ids.get(frame) if isinstance(frame, str) else None
        return fid if fid is not None else _lookup_frame(self._model, frame, "")

    def frame_positions(self, qs: np.ndarray, frame: str, base: str | None = None) -> np.ndarray:
        """(N, 3) positions of `frame` in `base` for each row of `qs` (N, num_joints): the
        translation of frame_pose(qs[i], frame, base), with the checks done once for the whole
        array (a 1000-point chunk's workspace check: 3x faster than frame_pose per row)."""
        arr = np.asarray(qs, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] != self.num_joints:
            raise KinematicsError(f"qs must have shape (N, {self.num_joints}), got {np.shape(qs)}")
        if not np.all(np.isfinite(arr)):
            raise KinematicsError("qs contains non-finite values")
        arr = np.ascontiguousarray(arr if self._identity_order else arr[:, self._to_pin])
        model, data = self._model, self._data()
        fid = self.frame_id(frame)
        bid = None if base is None else self.frame_id(base)
        fixed = None if bid is None else self._fixed_frames.get(bid)
        relative = bid is not None and fixed is None  # a moving base: its pose per row
        forward, update = pin.forwardKinematics, pin.updateFramePlacement
        out = np.empty((len(arr), 3))
        for i in range(len(arr)):
            forward(model, data, arr[i])
            oMf = update(model, data, fid)
            out[i] = update(model, data, bid).actInv(oMf).translation if relative else oMf.translation
        if fixed is not None:
            out = out @ fixed[1][:3, :3].T + fixed[1][:3, 3]
        return out

    def frame_pose(self, q: np.ndarray, frame: str, base: str | None = None) -> np.ndarray:
        """(4, 4) pose of `frame` expressed in `base` (default: the URDF root / world)."""
        data = self._data()
        q_pin = self._q_pin(q)
        fid = self.frame_id(frame)
        pin.forwardKinematics(self._model, data, q_pin)
        oMf = pin.updateFramePlacement(self._model, data, fid)
        if base is None:
            return oMf.homogeneous
        bid = self.frame_id(base)
        fixed = self._fixed_frames.get(bid)
        if fixed is not None:
            return fixed[1] @ oMf.homogeneous
        oMb = pin.updateFramePlacement(self._model, data, bid)
        return oMb.actInv(oMf).homogeneous

    def frame_jacobian(self, q: np.ndarray, frame: str, base: str | None = None) -> np.ndarray:
        """(6, n) Jacobian [v; w] of `frame` relative to `base`, expressed in `base`'s axes.

        Columns are in q order. v is the velocity of `frame`'s origin. When `base` itself moves
        with q, the result is the derivative of `frame_pose(q, frame, base)`, i.e. the motion
        relative to the moving base.
        """
        data = self._data()
        q_pin = self._q_pin(q)
        fid = self.frame_id(frame)
        jac = pin.computeFrameJacobian(self._model, data, q_pin, fid, pin.LOCAL_WORLD_ALIGNED)
        if base is not None:
            bid = self.frame_id(base)
            fixed = self._fixed_frames.get(bid)
            if fixed is not None:
                jac = fixed[2] @ jac
            else:
                oMf = data.oMf[fid]
                oMb = pin.updateFramePlacement(self._model, data, bid)
                jac_base = pin.computeFrameJacobian(self._model, data, q_pin, bid, pin.LOCAL_WORLD_ALIGNED)
                offset = oMf.translation - oMb.translation
                # v_rel = v_f - v_b - w_b x r = v_f - v_b + [r]x w_b, all then rotated into base axes.
                jac[:3] -= jac_base[:3] - pin.skew(offset) @ jac_base[3:]
                jac[3:] -= jac_base[3:]
                rot_t = oMb.rotation.T
                jac[:3] = rot_t @ jac[:3]
                jac[3:] = rot_t @ jac[3:]
        return jac if self._identity_order else jac[:, self._from_pin]

    def arm_jacobian(self, q: np.ndarray, arm: str) -> np.ndarray:
        """(6, k) Jacobian of `arm`'s tool in its base frame, columns = the arm's joints only."""
        chain = self._arm(arm)
        return self.frame_jacobian(q, chain.tool_frame, chain.base_frame)[:, chain.joint_index]

    def singular_values(self, q: np.ndarray, arm: str) -> np.ndarray:
        """Singular values (descending) of `arm_jacobian(q, arm)`."""
        return np.linalg.svd(self.arm_jacobian(q, arm), compute_uv=False)

    def manipulability(self, q: np.ndarray, arm: str) -> float:
        """Yoshikawa manipulability sqrt(det(J J^T)) of the arm's tool Jacobian (0 at a singularity)."""
        return float(np.prod(self.singular_values(q, arm)[:6]))

    def condition_number(self, q: np.ndarray, arm: str) -> float:
        """sigma_max / sigma_min of the arm's 6-D tool Jacobian (inf at a singularity).

        MoveIt Servo decelerates at 17 and halts at 30 with the same quantity.
        """
        sigma = self.singular_values(q, arm)
        if sigma.shape[0] < 6 or sigma[5] <= 0.0:
            return float("inf")
        return float(sigma[0] / sigma[5])

    # ----------------------------------------------------------------------------- IK

    def solve_ik_chunk(
        self,
        targets: np.ndarray,
        arm: str,
        q_seed: np.ndarray,
        options: IKOptions | None = None,
        frame: str | None = None,
        base: str | None = None,
    ) -> IKResult:
        """IK for T poses `targets` (T, 4, 4) of `frame` (default: `arm`'s tool frame) expressed in
        `base` (default: `arm`'s base frame).

        Only `arm`'s joints move; the other joints keep their `q_seed` values. Step 0 starts from
        `q_seed`, step t from step t-1's result (warm start along the chunk).
        """
        chain = self._arm(arm)
        opts = options or self.ik_options
        targets = _check_poses(targets, "targets")
        seed = self._check_q(q_seed, "q_seed")
        frame_id, moving_base_id, oMbase = self._ik_frames(chain, frame, base, seed)
        idx = chain.joint_index
        lower, upper = chain.lower_rad, chain.upper_rad
        base_rot, base_pos = oMbase.rotation, oMbase.translation
        rot_des = np.einsum("ij,tjk->tik", base_rot, targets[:, :3, :3])
        pos_des = targets[:, :3, 3] @ base_rot.T + base_pos
        steps = targets.shape[0]
        q_pin = seed[self._to_pin]  # workspace: the other joints stay at their seed values
        q_arm_out = np.empty((steps, idx.shape[0]))
        success = np.empty(steps, dtype=bool)
        pos_err = np.empty(steps)
        ori_err = np.empty(steps)
        iters = np.empty(steps, dtype=np.int64)
        # Start from inside the limits: a seed outside them would be clamped at the first step anyway.
        q_arm = np.minimum(np.maximum(seed[idx], lower), upper)
        for t in range(steps):
            start = q_arm
            if t >= 2 and success[t - 1] and success[t - 2]:
                # Along a smooth path the previous joint velocity predicts the next solution far
                # better than the previous solution alone; often no iteration is needed at all.
                start = np.minimum(np.maximum(2.0 * q_arm - q_arm_out[t - 2], lower), upper)
            q_arm, ok, ep, eo, it = self._solve_one(
                chain, pos_des[t], rot_des[t], q_pin, start, opts, frame_id, moving_base_id
            )
            q_arm_out[t] = q_arm
            success[t], pos_err[t], ori_err[t], iters[t] = ok, ep, eo, it
        q_out = np.tile(seed, (steps, 1))
        q_out[:, idx] = q_arm_out
        return IKResult(q_out, success, pos_err, ori_err, iters)

    def solve_ik_chunk_arms(
        self,
        targets_by_arm: dict[str, np.ndarray],
        q_seed: np.ndarray,
        options: IKOptions | None = None,
    ) -> IKResult:
        """IK for several arms at once (bimanual): {arm: (T, 4, 4)} -> one IKResult over all joints.

        Arms are independent (disjoint joints), so each is solved with `solve_ik_chunk`; a step
        succeeds when every arm's step succeeds, and its errors are the worst over the arms.
        Joints of arms not in `targets_by_arm` keep their seed values.
        """
        if not targets_by_arm:
            raise KinematicsError("targets_by_arm is empty; give at least one arm's targets")
        seed = self._check_q(q_seed, "q_seed")
        lengths = {arm: np.shape(t)[0] if np.ndim(t) == 3 else -1 for arm, t in targets_by_arm.items()}
        if len(set(lengths.values())) != 1:
            raise KinematicsError(f"every arm needs the same number of (4, 4) targets, got {lengths}")
        steps = next(iter(lengths.values()))
        q_out = np.tile(seed, (steps, 1))
        success = np.ones(steps, dtype=bool)
        pos_err = np.zeros(steps)
        ori_err = np.zeros(steps)
        iters = np.zeros(steps, dtype=np.int64)
        for arm, targets in targets_by_arm.items():
            result = self.solve_ik_chunk(targets, arm, seed, options)
            idx = self._arm(arm).joint_index
            q_out[:, idx] = result.q[:, idx]
            success &= result.success
            pos_err = np.maximum(pos_err, result.position_error_m)
            ori_err = np.maximum(ori_err, result.orientation_error_rad)
            iters += result.iterations
        return IKResult(q_out, success, pos_err, ori_err, iters)

    def solve_ik(
        self,
        target: np.ndarray,
        arm: str,
        q_seed: np.ndarray | None = None,
        restarts: int = 0,
        rng: np.random.Generator | None = None,
        options: IKOptions | None = None,
        frame: str | None = None,
        base: str | None = None,
    ) -> IKResult:
        """IK for one pose (4, 4) of `frame` (default: `arm`'s tool frame) in `base` (default:
        `arm`'s base frame), cold start from `q_seed` (default: home).

        If the first attempt fails, up to `restarts` more attempts start from random
        configurations within the limits (`rng`, default seeded 0, so results are repeatable);
        the best attempt (success first, then smallest error) is returned as a T = 1 result.
        """
        if restarts < 0:
            raise KinematicsError(f"restarts must be >= 0, got {restarts}")
        chain = self._arm(arm)
        opts = options or self.ik_options
        seed = self.home_rad if q_seed is None else self._check_q(q_seed, "q_seed")
        frame_id, moving_base_id, oMbase = self._ik_frames(chain, frame, base, seed)
        oMdes = oMbase * pin.SE3(_check_poses(np.asarray(target)[None], "target")[0])
        rng = rng if rng is not None else np.random.default_rng(0)
        best = None
        total_iterations = 0
        idx = chain.joint_index
        q_pin = seed[self._to_pin]
        for attempt in range(restarts + 1):
            if attempt == 0:
                q0 = np.clip(seed[idx], chain.lower_rad, chain.upper_rad)
            else:
                q0 = rng.uniform(chain.lower_rad, chain.upper_rad)
            q_arm, ok, ep, eo, it = self._solve_one(
                chain, oMdes.translation, oMdes.rotation, q_pin, q0, opts, frame_id, moving_base_id
            )
            total_iterations += it
            score = (not ok, ep / opts.position_tolerance_m + eo / opts.orientation_tolerance_rad)
            if best is None or score < best[0]:
                best = (score, q_arm, ok, ep, eo)
            if ok:
                break
        _, q_arm, ok, ep, eo = best
        q = seed.copy()
        q[idx] = q_arm
        return IKResult(q[None], [ok], [ep], [eo], [total_iterations])

    def _solve_one(
        self,
        chain: _ArmChain,
        p_des: np.ndarray,
        rot_des: np.ndarray,
        q_pin: np.ndarray,
        q_start: np.ndarray,
        opts: IKOptions,
        frame_id: int,
        moving_base_id: int | None = None,
    ) -> tuple[np.ndarray, bool, float, float, int]:
        """DLS iterations for one pose of frame `frame_id` (a frame `chain`'s joints move) in the
        world frame, or, when `moving_base_id` is given, relative to that frame (which the arm
        moves too): then p_des / rot_des are in the base's axes and so are the error and Jacobian.

        q_pin is the full configuration in Pinocchio's order (a workspace: the arm's entries are
        overwritten, the others are held); q_start the arm's starting joints. Returns (best arm
        joints, success, position error, orientation error, iterations).

        The error is e = [p_des - p; log3(R_des R^T)] in world axes at the tool origin, which the
        world-aligned frame Jacobian maps to exactly (to first order): no extra Jacobian of log.
        This loop is the controller's hot path, hence scalar math on Python floats where numpy's
        per-call overhead would dominate.
        """
        model, data = self._model, self._data()
        sel = self._pin_sel[chain.name]
        lower, upper, home = chain.lower_rad, chain.upper_rad, chain.home_rad
        tol_p, tol_o = opts.position_tolerance_m, opts.orientation_tolerance_rad
        margin = opts.limit_margin_rad
        max_step = opts.max_step_rad
        q_arm = q_start
        best_q, best_cost = q_arm, math.inf
        best_pos = best_ori = math.inf
        stall = 0
        iteration = 0
        err = np.empty(6)
        err_pos, err_rot = err[:3], err[3:]
        # The secondary task only has room to act on a redundant arm. Its damped projection leaks
        # into the task (error floor ~ damping * |z| / sigma), so it is dropped near convergence and
        # after a stall, letting the last iterations polish to tight tolerances.
        use_secondary = q_arm.shape[0] > 6
        while True:
            q_pin[sel] = q_arm
            jac_full = pin.computeFrameJacobian(model, data, q_pin, frame_id, pin.LOCAL_WORLD_ALIGNED)
            oMf = data.oMf[frame_id]  # refreshed by the LOCAL_WORLD_ALIGNED Jacobian (LOCAL does not)
            if moving_base_id is None:
                np.subtract(p_des, oMf.translation, out=err_pos)
                err_rot[:] = pin.log3(rot_des @ oMf.rotation.T)
            else:
                jac_full, bMf = self._relative_jacobian(jac_full, oMf, q_pin, moving_base_id)
                np.subtract(p_des, bMf.translation, out=err_pos)
                err_rot[:] = pin.log3(rot_des @ bMf.rotation.T)
            e0, e1, e2, e3, e4, e5 = err.tolist()
            e_pos = math.sqrt(e0 * e0 + e1 * e1 + e2 * e2)
            e_ori = math.sqrt(e3 * e3 + e4 * e4 + e5 * e5)
            cost = e_pos / tol_p + e_ori / tol_o
            stall = 0 if cost < best_cost * 0.995 else stall + 1
            if cost < best_cost:
                best_cost, best_q, best_pos, best_ori = cost, q_arm, e_pos, e_ori
            if (e_pos <= tol_p and e_ori <= tol_o) or iteration >= opts.max_iterations:
                break
            if stall >= opts.stall_iterations:
                if not use_secondary:
                    break
                use_secondary, stall = False, 0
            iteration += 1
            jac = jac_full[:, sel]
            damping = opts.damping_min + opts.damping_error_gain * (e_pos * e_pos + e_ori * e_ori)
            secondary = None
            if use_secondary and cost > 20.0:
                secondary = opts.posture_gain * (home - q_arm)
                if opts.limit_gain > 0.0 and (
                    np.minimum.reduce(q_arm - lower) < margin or np.minimum.reduce(upper - q_arm) < margin
                ):
                    push = np.clip((margin - (q_arm - lower)) / margin, 0.0, 1.0)
                    push -= np.clip((margin - (upper - q_arm)) / margin, 0.0, 1.0)
                    secondary += opts.limit_gain * margin * push
            dq = _dls_step(jac, err, secondary, damping)
            q_new = q_arm + dq
            clipped = np.minimum(np.maximum(q_new, lower), upper)
            if (clipped != q_new).any():
                # Saturate the joints that would leave their range and let the others take over
                # the task, instead of clamping after the fact (which stalls at a limit).
                outside = clipped != q_new
                fixed = clipped[outside] - q_arm[outside]
                if secondary is not None:
                    secondary = secondary.copy()
                    secondary[outside] = 0.0
                dq = _dls_step(jac * ~outside, err - jac[:, outside] @ fixed, secondary, damping)
                dq[outside] = fixed
            step = max(dq.max(), -dq.min())
            if step > max_step:
                dq *= max_step / step
            q_arm = np.minimum(np.maximum(q_arm + dq, lower), upper)
        ok = best_pos <= tol_p and best_ori <= tol_o
        return best_q, bool(ok), best_pos, best_ori, iteration

    def _relative_jacobian(
        self, jac_frame: np.ndarray, oMf: pin.SE3, q_pin: np.ndarray, base_id: int
    ) -> tuple[np.ndarray, pin.SE3]:
        """(world-aligned Jacobian of a frame at q_pin, its pose) -> (Jacobian relative to frame
        `base_id`, in the base's axes, Pinocchio column order; the frame's pose in the base)."""
        model, data = self._model, self._data()
        oMf = oMf.copy()
        jac_base = pin.computeFrameJacobian(model, data, q_pin, base_id, pin.LOCAL_WORLD_ALIGNED)
        oMb = data.oMf[base_id].copy()
        offset = oMf.translation - oMb.translation
        rel = jac_frame.copy()
        # v_rel = v_f - v_b - w_b x r, w_rel = w_f - w_b (world axes), then rotated into the base's.
        rel[:3] -= jac_base[:3] - pin.skew(offset) @ jac_base[3:]
        rel[3:] -= jac_base[3:]
        rot_t = oMb.rotation.T
        rel[:3] = rot_t @ rel[:3]
        rel[3:] = rot_t @ rel[3:]
        return rel, oMb.actInv(oMf)

    def _ik_frames(
        self, chain: _ArmChain, frame: str | None, base: str | None, seed: np.ndarray
    ) -> tuple[int, int | None, pin.SE3]:
        """(id of the frame to place, id of the base when `chain` moves it else None, world pose
        of a base `chain` does not move: constant, or where `seed` puts it)."""
        if frame is None or frame == chain.tool_frame:
            frame_id = chain.tool_id
        else:
            frame_id = self.frame_id(frame)
            if chain.name not in self.arms_moving(frame):
                raise KinematicsError(
                    f"frame '{frame}' is not moved by arm '{chain.name}''s joints; IK for that arm places "
                    f"a frame on its chain (e.g. '{chain.tool_frame}'); frame '{frame}' belongs to "
                    f"{list(self.arms_moving(frame)) or 'no arm'}"
                )
        if base is None or base == chain.base_frame:
            return frame_id, None, chain.oMbase
        base_id = self.frame_id(base)
        if chain.name in self.arms_moving(base):
            return frame_id, base_id, pin.SE3.Identity()
        # Moved (if at all) only by other arms' joints, which IK holds at the seed.
        return frame_id, None, pin.SE3(self.frame_pose(seed, base))

    # ----------------------------------------------------------------------------- helpers

    def _arm(self, arm: str) -> _ArmChain:
        try:
            return self._arms[arm]
        except KeyError:
            raise KinematicsError(f"unknown arm '{arm}'; arms: {list(self._arm_order)}") from None

    def _data(self) -> pin.Data:
        data = getattr(self._local, "data", None)
        if data is None:
            data = self._local.data = self._model.createData()
        return data

    def _check_q(self, q: np.ndarray, what: str = "q") -> np.ndarray:
        if type(q) is np.ndarray and q.shape == (self.num_joints,) and q.dtype == np.float64:
            # Fast path for the common case; the sum is non-finite iff some entry is (or it overflows,
            # which the slow path below then reports precisely).
            if math.isfinite(q.sum()):
                return q.copy()
        arr = np.asarray(q, dtype=np.float64).reshape(-1) if np.ndim(q) <= 1 else np.asarray(q)
        if arr.shape != (self.num_joints,):
            raise KinematicsError(
                f"{what} must have {self.num_joints} entries ({', '.join(self._joint_names)}), "
                f"got shape {np.shape(q)}"
            )
        if not np.all(np.isfinite(arr)):
            raise KinematicsError(f"{what} contains non-finite values: {arr.tolist()}")
        return np.array(arr, dtype=np.float64)

    def _q_pin(self, q: np.ndarray) -> np.ndarray:
        arr = self._check_q(q)
        return arr if self._identity_order else arr[self._to_pin]



_EYE6 = np.eye(6)


def _dls_step(jac: np.ndarray, err: np.ndarray, secondary: np.ndarray | None, damping: float) -> np.ndarray:
    """Damped least-squares step for J dq = err plus `secondary` projected into J's null space.

    dq = z + J^T (J J^T + damping I)^-1 (err - J z): the task part is the DLS solution and the
    secondary part is (I - J^+ J) z with the same damped pseudo-inverse, in one 6x6 solve.
    """
    gram = jac @ jac.T
    gram += damping * _EYE6
    rhs = err if secondary is None else err - jac @ secondary
    # LAPACK's Cholesky solve directly: numpy.linalg.solve costs 4x more on a 6x6 system.
    _, x, info = _dposv(gram, rhs)
    if info != 0:
        x = np.linalg.lstsq(gram, rhs, rcond=None)[0]
    return jac.T @ x if secondary is None else secondary + jac.T @ x


def _lookup_frame(model: pin.Model, frame: str, what: str) -> int:
    if not isinstance(frame, str) or not model.existFrame(frame):
        names = sorted({f.name for f in model.frames})
        close = difflib.get_close_matches(str(frame), names, n=3)
        hint = f"; did you mean {close}?" if close else ""
        context = f"{what}: " if what else ""
        raise KinematicsError(f"{context}unknown frame '{frame}'{hint} (frames: {names})")
    # Prefer the link (BODY) frame when a joint carries the same name.
    for kind in (pin.FrameType.BODY, pin.FrameType.FIXED_JOINT):
        if model.existFrame(frame, kind):
            return model.getFrameId(frame, kind)
    return model.getFrameId(frame)
