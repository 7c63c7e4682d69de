"""The shipped URDFs: vendor names, published limits, kinematics equal to the published DH
tables (computed here independently of the generator), and they load in Pinocchio and MuJoCo."""

from __future__ import annotations

import importlib.util
import math
import sys
import xml.etree.ElementTree as ET

import mujoco
import numpy as np
import pinocchio as pin
import pytest

from vla_ros.core.embodiment import load_embodiment, load_urdf_xml, parse_urdf, urdf_dir

ROBOTS = ("fr3", "panda", "ur5", "ur5e", "aloha")
MUJOCO_BLOCK = '<mujoco><compiler discardvisual="false" fusestatic="false"/></mujoco>'
PI = math.pi


def urdf_text(name: str) -> str:
    return (urdf_dir() / f"{name}.urdf").read_text()


def mujoco_model(name: str) -> mujoco.MjModel:
    return mujoco.MjModel.from_xml_string(urdf_text(name).replace("</robot>", MUJOCO_BLOCK + "</robot>"))


def rot(axis: str, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    m = np.eye(4)
    i, j = {"x": (1, 2), "y": (2, 0), "z": (0, 1)}[axis]
    m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
    return m


def trans(x: float = 0.0, y: float = 0.0, z: float = 0.0) -> np.ndarray:
    m = np.eye(4)
    m[:3, 3] = (x, y, z)
    return m


def pin_pose(model: pin.Model, q_by_name: dict[str, float], frame: str, base: str) -> np.ndarray:
    data = model.createData()
    q = pin.neutral(model)
    for joint, value in q_by_name.items():
        q[model.joints[model.getJointId(joint)].idx_q] = value
    pin.framesForwardKinematics(model, data, q)
    return (data.oMf[model.getFrameId(base)].inverse() * data.oMf[model.getFrameId(frame)]).homogeneous


# ------------------------------------------------------------------------------ names
EXPECTED_LINKS = {
    "panda": {f"panda_link{i}" for i in range(9)} | {"panda_hand", "panda_leftfinger", "panda_rightfinger", "panda_hand_tcp"},
    "fr3": {f"fr3_link{i}" for i in range(9)} | {"fr3_hand", "fr3_leftfinger", "fr3_rightfinger", "fr3_hand_tcp"},
    "ur5": {"base_link", "base_link_inertia", "base", "shoulder_link", "upper_arm_link", "forearm_link",
            "wrist_1_link", "wrist_2_link", "wrist_3_link", "flange", "tool0", "gripper_base",
            "gripper_left_finger", "gripper_right_finger", "gripper_tcp"},
    "aloha": {"world"} | {
        f"{arm}/{link}"
        for arm in ("follower_left", "follower_right")
        for link in ("base_link", "shoulder_link", "upper_arm_link", "upper_forearm_link", "lower_forearm_link",
                     "wrist_link", "gripper_link", "ee_arm_link", "gripper_prop_link", "gripper_bar_link",
                     "fingers_link", "ee_gripper_link", "left_finger_link", "right_finger_link")
    },
}
EXPECTED_LINKS["ur5e"] = EXPECTED_LINKS["ur5"]


@pytest.mark.parametrize("name", ROBOTS)
def test_urdf_has_the_vendor_link_names_and_a_single_root(name):
    info = parse_urdf(urdf_text(name), name)
    assert set(info.links) == EXPECTED_LINKS[name]
    assert len(info.links) == len(set(info.links))
    expected_root = {"fr3": "fr3_link0", "panda": "panda_link0", "ur5": "base_link", "ur5e": "base_link", "aloha": "world"}
    assert info.root_links == (expected_root[name],)


@pytest.mark.parametrize("name", ROBOTS)
def test_every_link_has_inertia_and_bodies_have_geometry(name):
    root = ET.fromstring(urdf_text(name))
    assert "package://" not in urdf_text(name) and root.find(".//mesh") is None
    for link in root.findall("link"):
        inertial = link.find("inertial")
        assert inertial is not None, link.get("name")
        mass = float(inertial.find("mass").get("value"))
        el = inertial.find("inertia")
        i = np.array([[float(el.get(a)) for a in row] for row in (("ixx", "ixy", "ixz"), ("ixy", "iyy", "iyz"), ("ixz", "iyz", "izz"))])
        principal = np.linalg.eigvalsh(i)
        assert mass > 0 and np.all(principal > 0), link.get("name")
        # a physical rigid body: each principal moment is at most the sum of the other two
        assert principal[2] <= principal[0] + principal[1] + 1e-12, link.get("name")
        if mass > 0.002:  # real bodies (frames carry a 1 g placeholder and no geometry)
            assert link.find("collision/geometry") is not None and link.find("visual/geometry") is not None


# ------------------------------------------------------------------------------ limits
def joint_limits(name: str) -> dict[str, tuple[float, float, float, float]]:
    out = {}
    for j in ET.fromstring(urdf_text(name)).findall("joint"):
        lim = j.find("limit")
        if lim is not None:
            out[j.get("name")] = tuple(float(lim.get(k)) for k in ("lower", "upper", "velocity", "effort"))
    return out


FRANKA_PUBLISHED = {
    "panda": ([-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973],
              [2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973],
              [2.175, 2.175, 2.175, 2.175, 2.61, 2.61, 2.61]),
    "fr3": ([-2.7437, -1.7837, -2.9007, -3.0421, -2.8065, 0.5445, -3.0159],
            [2.7437, 1.7837, 2.9007, -0.1518, 2.8065, 4.5169, 3.0159],
            [2.62, 2.62, 2.62, 2.62, 5.26, 4.18, 5.26]),
}


@pytest.mark.parametrize("name", ["panda", "fr3"])
def test_franka_joint_limits_are_the_published_ones(name):
    limits = joint_limits(name)
    lower, upper, velocity = FRANKA_PUBLISHED[name]
    for i in range(7):
        assert limits[f"{name}_joint{i + 1}"] == (lower[i], upper[i], velocity[i], 87.0 if i < 4 else 12.0)
    assert limits[f"{name}_finger_joint1"][:2] == (0.0, 0.04)
    assert limits[f"{name}_finger_joint2"][:2] == (0.0, 0.04)


@pytest.mark.parametrize("name", ["ur5", "ur5e"])
def test_ur_joint_limits_are_the_published_ones(name):
    limits = joint_limits(name)
    for joint, effort in (("shoulder_pan_joint", 150), ("shoulder_lift_joint", 150), ("elbow_joint", 150),
                          ("wrist_1_joint", 28), ("wrist_2_joint", 28), ("wrist_3_joint", 28)):
        span = PI if joint == "elbow_joint" else 2 * PI
        assert limits[joint] == (-span, span, PI, effort)


def test_viperx_joint_limits_are_the_published_ones():
    limits = joint_limits("aloha")
    published = {"waist": (-PI, PI), "shoulder": (-1.85, 1.257), "elbow": (-1.763, 1.606),
                 "forearm_roll": (-PI, PI), "wrist_angle": (-1.868, 2.234), "wrist_rotate": (-PI, PI)}
    for arm in ("follower_left", "follower_right"):
        for joint, (lo, hi) in published.items():
            assert limits[f"{arm}/{joint}"][:2] == (lo, hi)
        lo, hi = limits[f"{arm}/gripper"][:2]
        assert lo < 0.6197 and 1.6214 < hi  # ALOHA 2 calibrated closed / open inside the range
        lo, hi = limits[f"{arm}/left_finger"][:2]
        assert lo <= 0.0440 and 0.0579 <= hi  # ALOHA 2 finger positions inside the travel
        assert limits[f"{arm}/right_finger"][:2] == (-hi, -lo)


# ------------------------------------------------------------------------------ kinematics
RNG = np.random.default_rng(20261125)


def craig_dh_fk(q: np.ndarray) -> np.ndarray:
    """Franka's documented modified-DH chain, base -> flange (link8)."""
    table = [(0, 0.333, 0), (0, 0, -PI / 2), (0, 0.316, PI / 2), (0.0825, 0, PI / 2),
             (-0.0825, 0.384, -PI / 2), (0, 0, PI / 2), (0.088, 0, PI / 2)]
    t = np.eye(4)
    for (a, d, alpha), theta in zip(table, q):
        t = t @ rot("x", alpha) @ trans(x=a) @ rot("z", theta) @ trans(z=d)
    return t @ trans(z=0.107)


@pytest.mark.parametrize("name", ["panda", "fr3"])
def test_franka_kinematics_equal_the_craig_dh_table(name):
    model = pin.buildModelFromXML(urdf_text(name))
    lower, upper, _ = FRANKA_PUBLISHED[name]
    for _ in range(20):
        q = RNG.uniform(lower, upper)
        qd = {f"{name}_joint{i + 1}": v for i, v in enumerate(q)}
        flange = craig_dh_fk(q)
        np.testing.assert_allclose(pin_pose(model, qd, f"{name}_link8", f"{name}_link0"), flange, atol=1e-12)
        tcp = flange @ rot("z", -PI / 4) @ trans(z=0.1034)
        np.testing.assert_allclose(pin_pose(model, qd, f"{name}_hand_tcp", f"{name}_link0"), tcp, atol=1e-12)


def test_franka_home_tcp_is_where_franka_puts_it():
    model = pin.buildModelFromXML(urdf_text("fr3"))
    home = [0, -PI / 4, 0, -3 * PI / 4, 0, PI / 2, PI / 4]
    pose = pin_pose(model, {f"fr3_joint{i + 1}": v for i, v in enumerate(home)}, "fr3_hand_tcp", "fr3_link0")
    # Franka's "ready" pose: hand TCP ~0.307 m ahead of and ~0.487 m above the base, pointing
    # straight down (tool z = -base z) with the fingers moving along base y
    np.testing.assert_allclose(pose[:3, 3], [0.30689, 0.0, 0.48688], atol=5e-5)
    np.testing.assert_allclose(pose[:3, :3], np.diag([1.0, -1.0, -1.0]), atol=1e-12)


UR_DH = {
    "ur5": ([0.089159, 0, 0, 0.10915, 0.09465, 0.0823], [0, -0.425, -0.39225, 0, 0, 0]),
    "ur5e": ([0.1625, 0, 0, 0.1333, 0.0997, 0.0996], [0, -0.425, -0.3922, 0, 0, 0]),
}


def ur_dh_fk(name: str, q: np.ndarray) -> np.ndarray:
    d, a = UR_DH[name]
    alpha = [PI / 2, 0, 0, PI / 2, -PI / 2, 0]
    t = np.eye(4)
    for i in range(6):
        t = t @ rot("z", q[i]) @ trans(z=d[i]) @ trans(x=a[i]) @ rot("x", alpha[i])
    return t


@pytest.mark.parametrize("name", ["ur5", "ur5e"])
def test_ur_base_to_tool0_equals_the_published_dh(name):
    model = pin.buildModelFromXML(urdf_text(name))
    joints = ["shoulder_pan_joint", "shoulder_lift_joint", "elbow_joint", "wrist_1_joint", "wrist_2_joint", "wrist_3_joint"]
    for _ in range(20):
        q = RNG.uniform(-PI, PI, 6)
        expected = ur_dh_fk(name, q)
        np.testing.assert_allclose(pin_pose(model, dict(zip(joints, q)), "tool0", "base"), expected, atol=1e-12)
        # base_link is `base` turned pi about z (ROS vs UR convention)
        np.testing.assert_allclose(
            pin_pose(model, dict(zip(joints, q)), "tool0", "base_link"), rot("z", PI) @ expected, atol=1e-12
        )
        # the flange frame is tool0 with x pointing out of the flange
        flange = pin_pose(model, dict(zip(joints, q)), "flange", "base")
        np.testing.assert_allclose(flange[:3, 0], expected[:3, 2], atol=1e-12)
        np.testing.assert_allclose(flange[:3, 3], expected[:3, 3], atol=1e-12)


def test_ur5_zero_pose_reaches_out_along_base_minus_x():
    # DH at q = 0: the arm is stretched along -x of `base`: x = a2 + a3, z = d1 - d5, y = -(d4 + d6)
    model = pin.buildModelFromXML(urdf_text("ur5"))
    pose = pin_pose(model, {}, "tool0", "base")
    np.testing.assert_allclose(pose[:3, 3], [-0.81725, -0.19145, -0.005491], atol=1e-9)


def viperx_fk(q: np.ndarray) -> np.ndarray:
    """ViperX 300 6-DoF from its published joint origins, base_link -> ee_gripper_link."""
    return (
        trans(z=0.079) @ rot("z", q[0]) @ trans(z=0.04805) @ rot("y", q[1]) @ trans(x=0.05955, z=0.3)
        @ rot("y", q[2]) @ trans(x=0.2) @ rot("x", q[3]) @ trans(x=0.1) @ rot("y", q[4])
        @ trans(x=0.069744) @ rot("x", q[5]) @ trans(x=0.042825 + 0.023 + 0.027575)
    )


def test_viperx_kinematics_equal_the_published_joint_origins():
    model = pin.buildModelFromXML(urdf_text("aloha"))
    joints = ["waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate"]
    for _ in range(20):
        ql, qr = RNG.uniform(-1.2, 1.2, 6), RNG.uniform(-1.2, 1.2, 6)
        qd = {f"follower_left/{j}": v for j, v in zip(joints, ql)} | {f"follower_right/{j}": v for j, v in zip(joints, qr)}
        np.testing.assert_allclose(
            pin_pose(model, qd, "follower_left/ee_gripper_link", "world"), trans(x=-0.47) @ viperx_fk(ql), atol=1e-12
        )
        np.testing.assert_allclose(
            pin_pose(model, qd, "follower_right/ee_gripper_link", "world"),
            trans(x=0.47) @ rot("z", PI) @ viperx_fk(qr), atol=1e-12,
        )


# ------------------------------------------------------------------------------ loaders
@pytest.mark.parametrize("name", ROBOTS)
def test_urdf_loads_in_pinocchio_with_the_config_joints(name):
    spec = load_embodiment(name)
    model = pin.buildModelFromXML(load_urdf_xml(spec))
    for joint in spec.joint_names + spec.gripper_joint_names:
        assert model.existJointName(joint), joint
    for arm in spec.arms:
        assert model.existFrame(arm.base_frame) and model.existFrame(arm.tool_frame)


@pytest.mark.parametrize("name", ROBOTS)
def test_urdf_loads_in_mujoco_and_is_contact_free_at_home(name):
    spec = load_embodiment(name)
    model = mujoco_model(name)
    data = mujoco.MjData(model)
    named = {model.joint(i).name: i for i in range(model.njnt)}
    for joint in spec.joint_names:
        assert joint in named
    # mimic tags become joint equality constraints: one per mirrored finger
    assert model.neq == len(spec.arms)
    for arm in spec.arms:
        for joint, value in zip(arm.qualified_joint_names, arm.home_rad):
            data.qpos[model.jnt_qposadr[named[joint]]] = value
    for i in range(model.njnt):  # every other joint (grippers, fingers) at its open end
        movable = int(model.jnt_type[i]) in (int(mujoco.mjtJoint.mjJNT_SLIDE), int(mujoco.mjtJoint.mjJNT_HINGE))
        if movable and model.joint(i).name not in spec.joint_names:
            lo, hi = model.jnt_range[i]
            data.qpos[model.jnt_qposadr[i]] = hi if hi > 0 else lo
    mujoco.mj_forward(model, data)
    pairs = [(model.body(model.geom_bodyid[c.geom1]).name, model.body(model.geom_bodyid[c.geom2]).name)
             for c in data.contact[: data.ncon]]
    assert data.ncon == 0, pairs


def test_urdfs_are_what_the_generator_writes():
    """The committed files and tools/generate_urdfs.py agree (nobody hand-edited one of them)."""
    path = urdf_dir().parent / "tools" / "generate_urdfs.py"
    if not path.is_file():
        pytest.skip("generator not shipped in an installed package")
    module_spec = importlib.util.spec_from_file_location("generate_urdfs", path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules["generate_urdfs"] = module  # dataclasses resolve annotations through sys.modules
    try:
        module_spec.loader.exec_module(module)
    finally:
        del sys.modules["generate_urdfs"]
    for name, robot in module.build_all().items():
        assert robot.xml() == urdf_text(name), name
