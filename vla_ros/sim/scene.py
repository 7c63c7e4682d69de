"""Build a MuJoCo scene from an embodiment's URDF: the arm(s) with position actuators and gravity
compensation, a table, three coloured cubes on free joints, lights and the configured cameras.

The URDF is imported by MuJoCo itself (a `<mujoco><compiler/></mujoco>` block is added) and the
result is edited through `mujoco.MjSpec`; nothing here re-implements URDF parsing. Fixed joints
are kept (`fusestatic="false"`) so every URDF link, including tool frames, stays a named body.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import mujoco
import numpy as np

from vla_ros.core.embodiment import ArmSpec, EmbodimentSpec, load_urdf_xml

TIMESTEP_S = 0.002
TABLE_TOP_Z_M = 0.0  # arms stand on the table top; the floor is below it
TABLE_HEIGHT_M = 0.75
CUBE_HALF_SIZE_M = 0.02
CUBE_MASS_KG = 0.05
CUBE_COLOURS = {"red": (0.85, 0.12, 0.1, 1.0), "green": (0.1, 0.7, 0.15, 1.0), "blue": (0.12, 0.25, 0.85, 1.0)}
# Collision groups: robot geoms (bit 2) touch the environment (bit 1) but never each other,
# so coarse URDF collision shapes of neighbouring links cannot lock the arm.
_ROBOT_CONTYPE, _ROBOT_CONAFFINITY = 2, 1
_ENV_CONTYPE, _ENV_CONAFFINITY = 1, 3
_FRICTION = (1.5, 0.02, 0.001)
# Position servo bandwidth (rad/s) for arm joints and the reflected motor inertia added to them.
_ARM_SERVO_OMEGA = 60.0
_ARM_ARMATURE = 0.1
_GRIPPER_FORCE_N = 60.0


class SceneError(ValueError):
    """The URDF or the embodiment config cannot be turned into a simulation."""


@dataclass(frozen=True)
class GripperBinding:
    joint: str  # qualified model joint name of the driver's gripper joint
    driver_name: str  # bare name reported in joint_states
    qpos_adr: int
    dof_adr: int
    actuator_id: int
    body_ids: frozenset[int]  # the gripper's bodies (hand + fingers): contacts with these mean "held"
    open_position: float
    closed_position: float


@dataclass(frozen=True)
class ArmBinding:
    """Where one arm of the embodiment lives in the compiled model."""

    name: str
    driver_joint_names: tuple[str, ...]  # bare names, in the driver's order
    qpos_adr: np.ndarray  # (n,) int
    dof_adr: np.ndarray  # (n,) int
    actuator_ids: np.ndarray  # (n,) int
    servo_kv_over_kp_s: np.ndarray  # (n,) velocity feed-forward that cancels the servo's damping lag
    base_body_id: int
    tool_body_id: int
    home_rad: np.ndarray
    gripper: GripperBinding | None


@dataclass(frozen=True)
class CubeRegion:
    """Where cubes are spawned: a rectangle on the table, axes `axis_u` (away from the arm base)
    and `axis_v`, in world coordinates."""

    center_xy_m: np.ndarray
    axis_u: np.ndarray
    axis_v: np.ndarray
    half_u_m: float
    half_v_m: float


@dataclass(frozen=True)
class SimScene:
    spec: EmbodimentSpec
    model: mujoco.MjModel
    arms: tuple[ArmBinding, ...]
    cubes: tuple[str, ...]  # body names, e.g. "red_cube"
    cube_qpos_adr: dict[str, int]
    cube_body_ids: dict[str, int]
    table_geom_id: int
    cameras: dict[str, int]  # camera slot -> model camera id
    region: CubeRegion

    def arm(self, name: str) -> ArmBinding:
        for a in self.arms:
            if a.name == name:
                return a
        raise KeyError(f"no arm '{name}' in the scene; arms: {[a.name for a in self.arms]}")


def _with_compiler_block(urdf_xml: str) -> str:
    if "package://" in urdf_xml or "<mesh" in urdf_xml:
        raise SceneError("the simulation URDF must use primitive geometry only (found a mesh reference)")
    match = re.search(r"<robot\b[^>]*>", urdf_xml)
    if match is None:
        raise SceneError("URDF has no <robot> element")
    block = (
        '<mujoco><compiler fusestatic="false" discardvisual="true" balanceinertia="true" '
        'strippath="true" angle="radian"/></mujoco>'
    )
    return urdf_xml[: match.end()] + block + urdf_xml[match.end() :]


def _look_at_quat(pos: np.ndarray, target: np.ndarray, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """Quaternion (w, x, y, z) of a MuJoCo camera at `pos` looking at `target` (cameras look along -z)."""
    forward = np.asarray(target, float) - np.asarray(pos, float)
    forward /= np.linalg.norm(forward)
    x = np.cross(forward, np.asarray(up, float))
    if np.linalg.norm(x) < 1e-6:
        x = np.cross(forward, np.array([1.0, 0.0, 0.0]))
    x /= np.linalg.norm(x)
    y = np.cross(-forward, x)
    rot = np.column_stack([x, y, -forward])
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, rot.reshape(-1))
    return quat


def _subtree_bodies(spec_body) -> list:
    out = [spec_body]
    for child in spec_body.bodies:
        out.extend(_subtree_bodies(child))
    return out


def build_scene(spec: EmbodimentSpec, urdf_xml: str | None = None) -> SimScene:
    """Compile the simulation of `spec`; `urdf_xml` overrides the URDF named by the config."""
    urdf_xml = load_urdf_xml(spec, urdf_xml)  # same resolution and checks as the kinematics
    try:
        mj = mujoco.MjSpec.from_string(_with_compiler_block(urdf_xml))
    except ValueError as e:
        raise SceneError(f"MuJoCo could not import the URDF of '{spec.name}': {e}") from e

    mj.option.timestep = TIMESTEP_S
    mj.option.integrator = mujoco.mjtIntegrator.mjINT_IMPLICITFAST
    mj.option.cone = mujoco.mjtCone.mjCONE_ELLIPTIC
    mj.option.impratio = 10.0
    mj.visual.quality.offsamples = 0
    max_w = max([c.width for c in spec.cameras] + [640])
    max_h = max([c.height for c in spec.cameras] + [480])
    mj.visual.global_.offwidth = max_w
    mj.visual.global_.offheight = max_h

    joints = {j.name: j for j in mj.joints}
    bodies = {b.name: b for b in mj.bodies}
    robot_roots = [b for b in mj.worldbody.bodies]
    for root in robot_roots:
        for body in _subtree_bodies(root):
            body.gravcomp = 1.0  # the servos see no gravity load, like torque-controlled arms
    for geom in mj.geoms:
        geom.contype, geom.conaffinity = _ROBOT_CONTYPE, _ROBOT_CONAFFINITY
        geom.friction = _FRICTION
        geom.condim = 4
        geom.rgba = (0.82, 0.82, 0.85, 1.0)

    arm_plans = []
    for arm in spec.arms:
        arm_plans.append(_add_arm_actuators(mj, joints, bodies, arm, spec))

    region = _cube_region(mj, spec)
    _add_environment(mj, spec, region)
    cube_names = []
    for colour, rgba in CUBE_COLOURS.items():
        name = f"{colour}_cube"
        body = mj.worldbody.add_body(name=name, pos=(0.0, 0.0, TABLE_TOP_Z_M + CUBE_HALF_SIZE_M))
        body.add_freejoint(name=f"{name}_joint")
        body.add_geom(
            name=name,
            type=mujoco.mjtGeom.mjGEOM_BOX,
            size=(CUBE_HALF_SIZE_M,) * 3,
            rgba=rgba,
            mass=CUBE_MASS_KG,
            friction=_FRICTION,
            condim=4,
            contype=_ENV_CONTYPE,
            conaffinity=_ENV_CONAFFINITY,
        )
        cube_names.append(name)
    _add_cameras(mj, spec, region)

    try:
        model = mj.compile()
    except ValueError as e:
        raise SceneError(f"MuJoCo could not compile the scene of '{spec.name}': {e}") from e

    arms = tuple(_bind_arm(model, plan) for plan in arm_plans)
    cameras = {}
    for cam in spec.cameras:
        cameras[cam.slot] = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, cam.slot)
    return SimScene(
        spec=spec,
        model=model,
        arms=arms,
        cubes=tuple(cube_names),
        cube_qpos_adr={n: int(model.jnt_qposadr[model.joint(f"{n}_joint").id]) for n in cube_names},
        cube_body_ids={n: int(model.body(n).id) for n in cube_names},
        table_geom_id=int(model.geom("table").id),
        cameras=cameras,
        region=region,
    )


@dataclass(frozen=True)
class _ArmPlan:
    arm: ArmSpec
    joints: tuple[str, ...]
    actuators: tuple[str, ...]
    kv_over_kp: tuple[float, ...]
    gripper_joint: str | None
    gripper_actuator: str | None
    gripper_bodies: tuple[str, ...]


def _add_arm_actuators(mj, joints: dict, bodies: dict, arm: ArmSpec, spec: EmbodimentSpec) -> _ArmPlan:
    qualified = arm.qualified_joint_names
    missing = [j for j in qualified if j not in joints]
    if missing:
        raise SceneError(
            f"embodiment '{spec.name}' arm '{arm.name}': joints {missing} are not in the URDF; "
            f"URDF joints: {sorted(joints)}"
        )
    for frame in (arm.base_frame, arm.tool_frame):
        if frame not in bodies:
            raise SceneError(f"arm '{arm.name}': frame '{frame}' is not a link of the URDF")
    # Servo gains from the joint's effort limit: the full effort at a 0.05 rad error, critically
    # damped for the link inertia the joint drives (approximated after compilation would need a
    # second compile; the armature dominates the wrist joints, so a fixed bandwidth is used).
    actuators, ratios = [], []
    for j in qualified:
        joint = joints[j]
        joint.armature = _ARM_ARMATURE
        effort = float(joint.actfrcrange[1]) if joint.actfrcrange[1] > 0 else 100.0
        kp = max(effort / 0.05, 200.0)
        kv = 2.0 * kp / _ARM_SERVO_OMEGA
        act = mj.add_actuator(name=f"{j}_servo", target=j, trntype=mujoco.mjtTrn.mjTRN_JOINT)
        act.set_to_position(kp=kp, kv=kv)
        act.forcelimited = mujoco.mjtLimited.mjLIMITED_TRUE
        act.forcerange = (-effort, effort)
        act.ctrllimited = mujoco.mjtLimited.mjLIMITED_FALSE
        actuators.append(act.name)
        ratios.append(kv / kp)
    gripper_joint = gripper_actuator = None
    gripper_bodies: tuple[str, ...] = ()
    if arm.gripper is not None:
        gj = arm.qualified(arm.gripper.joint_name)
        if gj not in joints:
            raise SceneError(f"arm '{arm.name}': gripper joint '{gj}' is not in the URDF")
        joint = joints[gj]
        lo, hi = sorted((arm.gripper.open_position, arm.gripper.closed_position))
        travel = hi - lo
        if travel <= 0.0:
            raise SceneError(f"arm '{arm.name}': gripper open and closed positions are equal ({lo})")
        # Stiff enough to reach the commanded opening quickly, force-limited like a real gripper
        # so a grasp squeezes with a bounded force instead of crushing through the cube.
        joint.armature = 0.01
        kp = _GRIPPER_FORCE_N / (0.25 * travel)
        act = mj.add_actuator(name=f"{gj}_servo", target=gj, trntype=mujoco.mjtTrn.mjTRN_JOINT)
        act.set_to_position(kp=kp, dampratio=1.0)
        act.forcelimited = mujoco.mjtLimited.mjLIMITED_TRUE
        act.forcerange = (-_GRIPPER_FORCE_N, _GRIPPER_FORCE_N)
        act.ctrllimited = mujoco.mjtLimited.mjLIMITED_TRUE
        act.ctrlrange = (lo, hi)
        gripper_joint, gripper_actuator = gj, act.name
        # The gripper is everything below the last arm joint's child link.
        last = joints[qualified[-1]].parent
        gripper_bodies = tuple(b.name for b in _subtree_bodies(last))
        if joint.type != mujoco.mjtJoint.mjJNT_SLIDE:
            _couple_fingers_to_motor(mj, arm, joint, [joints[n] for n in joints if n not in qualified and n != gj
                                                      and joints[n].parent.name in gripper_bodies])
    return _ArmPlan(arm, qualified, tuple(actuators), tuple(ratios), gripper_joint, gripper_actuator, gripper_bodies)


def _couple_fingers_to_motor(mj, arm: ArmSpec, motor, fingers: list) -> None:
    """A gripper driven by a motor joint (ViperX: `gripper`, rad) moves its prismatic fingers
    through a linkage the URDF does not model: couple the leading finger linearly, closed -> its
    inner limit, open -> its outer limit (the other finger mirrors it through its URDF mimic).

    The self-written ViperX fingers are plain outer plates (a 42 mm gap at the inner limit), so
    each finger also gets a pad reaching towards the other finger, as the real fingers have,
    leaving ~4 mm at full close: a 40 mm cube is then gripped near half stroke."""
    mimicked = {e.name1 for e in mj.equalities if e.type == mujoco.mjtEq.mjEQ_JOINT}
    sliders = [f for f in fingers if f.type == mujoco.mjtJoint.mjJNT_SLIDE]
    leaders = [f for f in sliders if f.name not in mimicked]
    if len(leaders) != 1:
        raise SceneError(
            f"arm '{arm.name}': gripper '{motor.name}' is a motor joint; expected exactly one prismatic finger "
            f"that no other joint mimics, found {[f.name for f in leaders]}"
        )
    leader = leaders[0]
    g = arm.gripper
    lo, hi = float(leader.range[0]), float(leader.range[1])
    # Which finger limit is "closed": the one nearer the gripper's centre line.
    inner, outer = (lo, hi) if abs(lo) < abs(hi) else (hi, lo)
    slope = (outer - inner) / (g.open_position - g.closed_position)
    eq = mj.add_equality(type=mujoco.mjtEq.mjEQ_JOINT, name1=leader.name, name2=motor.name)
    # MuJoCo joint equality: q1 = c0 + c1 * q2 (reference positions are 0 here).
    eq.data[:5] = (inner - slope * g.closed_position, slope, 0.0, 0.0, 0.0)
    for finger in sliders:
        body = finger.parent
        side = 1.0 if (finger.range[0] + finger.range[1]) > 0 else -1.0  # which side of the centre line
        axis = np.asarray(finger.axis, dtype=float)
        plate = next((geom for geom in body.geoms if geom.type == mujoco.mjtGeom.mjGEOM_BOX), None)
        if plate is None:
            raise SceneError(f"finger '{finger.name}' has no box collision geometry to put a pad on")
        reach = abs(min(abs(lo), abs(hi))) - 0.002
        half = np.asarray(plate.size, dtype=float).copy()
        k = int(np.argmax(np.abs(axis)))
        inner_face = np.asarray(plate.pos, dtype=float) - side * axis * half[k]
        half[k] = reach / 2.0
        body.add_geom(
            name=f"{finger.name}_pad",
            type=mujoco.mjtGeom.mjGEOM_BOX,
            size=half,
            pos=inner_face - side * axis * reach / 2.0,
            rgba=(0.2, 0.2, 0.2, 1.0),
            friction=_FRICTION,
            condim=4,
            contype=_ROBOT_CONTYPE,
            conaffinity=_ROBOT_CONAFFINITY,
            mass=0.001,
        )


def _bind_arm(model: mujoco.MjModel, plan: _ArmPlan) -> ArmBinding:
    jids = [model.joint(j).id for j in plan.joints]
    gripper = None
    if plan.gripper_joint is not None:
        gid = model.joint(plan.gripper_joint).id
        g = plan.arm.gripper
        gripper = GripperBinding(
            joint=plan.gripper_joint,
            driver_name=g.joint_name,
            qpos_adr=int(model.jnt_qposadr[gid]),
            dof_adr=int(model.jnt_dofadr[gid]),
            actuator_id=int(model.actuator(plan.gripper_actuator).id),
            body_ids=frozenset(int(model.body(b).id) for b in plan.gripper_bodies),
            open_position=float(g.open_position),
            closed_position=float(g.closed_position),
        )
    home = np.asarray(plan.arm.home_rad, dtype=float)
    if home.shape != (len(jids),):
        raise SceneError(f"arm '{plan.arm.name}': home_rad has shape {home.shape}, expected ({len(jids)},)")
    return ArmBinding(
        name=plan.arm.name,
        driver_joint_names=tuple(plan.arm.joint_names),
        qpos_adr=np.array([model.jnt_qposadr[j] for j in jids], dtype=int),
        dof_adr=np.array([model.jnt_dofadr[j] for j in jids], dtype=int),
        actuator_ids=np.array([model.actuator(a).id for a in plan.actuators], dtype=int),
        servo_kv_over_kp_s=np.array(plan.kv_over_kp),
        base_body_id=int(model.body(plan.arm.base_frame).id),
        tool_body_id=int(model.body(plan.arm.tool_frame).id),
        home_rad=home,
        gripper=gripper,
    )


def _home_frames(mj, spec: EmbodimentSpec) -> list[tuple[np.ndarray, np.ndarray]]:
    """(base position, tool position) in the world of every arm at its home configuration."""
    model = mj.compile()
    data = mujoco.MjData(model)
    for arm in spec.arms:
        for j, q in zip(arm.qualified_joint_names, arm.home_rad):
            data.qpos[model.jnt_qposadr[model.joint(j).id]] = q
    mujoco.mj_kinematics(model, data)
    return [
        (data.xpos[model.body(a.base_frame).id].copy(), data.xpos[model.body(a.tool_frame).id].copy())
        for a in spec.arms
    ]


def _cube_region(mj, spec: EmbodimentSpec) -> CubeRegion:
    """Cubes go where the first arm reaches comfortably: in the direction of its home tool
    position, 0.40–0.56 m from its base, within ±0.15 m sideways (bimanual: between the arms)."""
    frames = _home_frames(mj, spec)
    if len(frames) == 1:
        base, tool = frames[0]
        d = tool[:2] - base[:2]
        if np.linalg.norm(d) < 1e-3:
            d = np.array([1.0, 0.0])
        u = d / np.linalg.norm(d)
        center = base[:2] + 0.48 * u
        return CubeRegion(center, u, np.array([-u[1], u[0]]), 0.08, 0.15)
    # Bimanual: spawn on the left arm's side of the midpoint so the hand-over is needed.
    bases = np.array([f[0][:2] for f in frames])
    mid = bases.mean(axis=0)
    across = bases[1] - bases[0]
    span = float(np.linalg.norm(across))
    if span < 1e-3:
        raise SceneError("bimanual arms share a base position; cannot place the hand-over cube")
    u = across / span
    center = bases[0] + u * (0.42 * span)
    return CubeRegion(center, u, np.array([-u[1], u[0]]), 0.03, 0.05)


def _add_environment(mj, spec: EmbodimentSpec, region: CubeRegion) -> None:
    world = mj.worldbody
    world.add_geom(
        name="floor",
        type=mujoco.mjtGeom.mjGEOM_PLANE,
        size=(3.0, 3.0, 0.05),
        pos=(0.0, 0.0, TABLE_TOP_Z_M - TABLE_HEIGHT_M),
        rgba=(0.35, 0.35, 0.38, 1.0),
        contype=_ENV_CONTYPE,
        conaffinity=_ENV_CONAFFINITY,
    )
    frames = _home_frames(mj, spec)
    pts = np.array([f[0][:2] for f in frames] + [region.center_xy_m])
    lo = pts.min(axis=0) - 0.45
    hi = pts.max(axis=0) + 0.45
    center = (lo + hi) / 2.0
    half = (hi - lo) / 2.0
    world.add_geom(
        name="table",
        type=mujoco.mjtGeom.mjGEOM_BOX,
        size=(half[0], half[1], TABLE_HEIGHT_M / 2.0),
        pos=(center[0], center[1], TABLE_TOP_Z_M - TABLE_HEIGHT_M / 2.0),
        rgba=(0.62, 0.48, 0.33, 1.0),
        friction=_FRICTION,
        contype=_ENV_CONTYPE,
        conaffinity=_ENV_CONAFFINITY,
    )
    world.add_light(name="key", pos=(center[0], center[1], 2.5), dir=(0.0, 0.0, -1.0), type=mujoco.mjtLightType.mjLIGHT_DIRECTIONAL, castshadow=0, diffuse=(0.55, 0.55, 0.55))
    world.add_light(name="fill", pos=(center[0] + 1.5, center[1] + 1.0, 2.0), dir=(-0.6, -0.4, -0.7), castshadow=0, diffuse=(0.3, 0.3, 0.3))


def _approach_axes(mj, spec: EmbodimentSpec) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per arm, (approach, side) unit axes in the tool frame. The approach axis points from the
    last arm joint's link to the tool frame (Franka/UR tool frames approach along z, ViperX
    along x); the side axis is the tool axis most orthogonal to both it and the fingers (y)."""
    model = mj.compile()
    data = mujoco.MjData(model)
    for arm in spec.arms:
        for j, q in zip(arm.qualified_joint_names, arm.home_rad):
            data.qpos[model.jnt_qposadr[model.joint(j).id]] = q
    mujoco.mj_kinematics(model, data)
    out = []
    for arm in spec.arms:
        tool = model.body(arm.tool_frame).id
        wrist = model.jnt_bodyid[model.joint(arm.qualified_joint_names[-1]).id]
        R = data.xmat[tool].reshape(3, 3)
        d = R.T @ (data.xpos[tool] - data.xpos[wrist])
        if np.linalg.norm(d) < 1e-6:
            d = np.array([0.0, 0.0, 1.0])
        k = int(np.argmax(np.abs(d)))
        approach = np.zeros(3)
        approach[k] = np.sign(d[k])
        side = np.zeros(3)
        side[3 - k - 1] = 1.0  # z -> x, x -> z: never the finger axis y
        out.append((approach, side))
    return out


def _add_cameras(mj, spec: EmbodimentSpec, region: CubeRegion) -> None:
    frames = _home_frames(mj, spec)
    if len(spec.arms) == 1:
        c = np.array([region.center_xy_m[0], region.center_xy_m[1], TABLE_TOP_Z_M])
        u = np.array([region.axis_u[0], region.axis_u[1], 0.0])
        v = np.array([region.axis_v[0], region.axis_v[1], 0.0])
    else:
        # Bimanual: centred between the arms; u runs from the first arm to the second.
        bases = np.array([f[0] for f in frames])
        c = np.array([bases[:, 0].mean(), bases[:, 1].mean(), TABLE_TOP_Z_M])
        u = np.array([region.axis_u[0], region.axis_u[1], 0.0])
        v = np.array([region.axis_v[0], region.axis_v[1], 0.0])
    bodies = {b.name: b for b in mj.bodies}
    up = np.array([0.0, 0.0, 1.0])
    fixed = {
        # opposite the (first) arm, looking back over the cubes towards it
        "front": (c + 0.85 * u + 0.65 * up, c - 0.25 * u + 0.15 * up),
        # ALOHA: high above the operator's edge of the table, and low in front of it
        "cam_high": (c - 0.35 * v + 0.8 * up, c + 0.05 * up),
        "cam_low": (c - 0.6 * v + 0.15 * up, c + 0.08 * up),
    }
    axes = _approach_axes(mj, spec)
    wrist_arm = {"wrist": 0, "cam_left_wrist": 0, "cam_right_wrist": 1}
    for cam in spec.cameras:
        if cam.slot in wrist_arm or cam.slot.endswith("wrist"):
            index = wrist_arm.get(cam.slot, 0)
            if index >= len(spec.arms):
                raise SceneError(f"camera slot '{cam.slot}' needs arm #{index + 1}; '{spec.name}' has {len(spec.arms)}")
            tool = bodies[spec.arms[index].tool_frame]
            approach, side = axes[index]
            # Off the hand's side and behind the fingertips, looking ahead along the approach
            # axis so the fingers and what lies between and beyond them are in view.
            pos = 0.1 * side - 0.07 * approach
            quat = _look_at_quat(pos, 0.25 * approach, up=tuple(side))
            tool.add_camera(name=cam.slot, pos=pos, quat=quat, fovy=75.0)
        elif cam.slot in fixed:
            pos, target = fixed[cam.slot]
            mj.worldbody.add_camera(name=cam.slot, pos=pos, quat=_look_at_quat(pos, target), fovy=58.0)
        else:
            raise SceneError(
                f"camera slot '{cam.slot}' has no simulated placement; known: {sorted(fixed)} and *wrist slots"
            )
