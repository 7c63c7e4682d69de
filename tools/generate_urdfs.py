"""Write the self-made robot descriptions in urdf/ from published kinematic parameters.

Run once after changing a parameter:  .venv/bin/python tools/generate_urdfs.py
The .urdf files are committed; nothing imports this script at run time.

Sources of the numbers (see /work/shared/REFERENCE.md):
  * Franka Panda / FR3: Craig (modified) DH table from Franka's documentation, joint limits from
    libfranka / the FR3 datasheet, flange 0.107 m, hand rotated -pi/4, TCP 0.1034 m beyond the hand.
  * UR5 (CB3) / UR5e: UR's published standard DH d / a / alpha; `base` is the DH base frame,
    rotated pi about z from `base_link` as in ur_description; `tool0` is the DH flange frame.
  * ViperX 300 6-DoF (ALOHA follower): Interbotix joint origins and limits.
Link masses are the vendors' published (or identified) masses where known, rounded; inertias
are those of the collision primitive with that mass. Geometry is deliberately coarse
(cylinders / boxes) and shaped so that no two bodies that are not parent and child touch at
the home posture, so a physics engine can use the collision shapes as they are.
Pure frames (flanges, TCPs) carry a 1 g placeholder inertia and no geometry.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import quoteattr

import numpy as np

PI = math.pi
URDF_DIR = Path(__file__).resolve().parents[1] / "urdf"

# A frame-only link still gets an <inertial> (MuJoCo and some Pinocchio builds reject mass 0);
# 1 g with a tiny isotropic inertia keeps it physically irrelevant.
FRAME_MASS_KG = 0.001
FRAME_INERTIA = 1e-7


def _rpy_matrix(rpy: tuple[float, float, float]) -> np.ndarray:
    r, p, y = rpy
    cr, sr, cp, sp, cy, sy = math.cos(r), math.sin(r), math.cos(p), math.sin(p), math.cos(y), math.sin(y)
    rx = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
    ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
    rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
    return rz @ ry @ rx


@dataclass(frozen=True)
class Geom:
    """A collision/visual primitive in its link's frame (cylinder axis = local z)."""

    kind: str  # "cylinder" | "box" | "sphere"
    size: tuple[float, ...]  # cylinder (radius, length); box (x, y, z); sphere (radius,)
    xyz: tuple[float, float, float] = (0.0, 0.0, 0.0)
    rpy: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def inertia_about_centre(self, mass_kg: float) -> np.ndarray:
        if self.kind == "cylinder":
            r, h = self.size
            ixx = mass_kg * (3 * r * r + h * h) / 12.0
            local = np.diag([ixx, ixx, mass_kg * r * r / 2.0])
        elif self.kind == "box":
            x, y, z = self.size
            local = np.diag([y * y + z * z, x * x + z * z, x * x + y * y]) * mass_kg / 12.0
        elif self.kind == "sphere":
            (r,) = self.size
            local = np.eye(3) * 0.4 * mass_kg * r * r
        else:
            raise ValueError(f"unknown geometry kind {self.kind!r}")
        rot = _rpy_matrix(self.rpy)
        return rot @ local @ rot.T

    def xml(self) -> str:
        if self.kind == "cylinder":
            shape = f'<cylinder radius="{_f(self.size[0])}" length="{_f(self.size[1])}"/>'
        elif self.kind == "box":
            shape = f'<box size="{_v(self.size)}"/>'
        else:
            shape = f'<sphere radius="{_f(self.size[0])}"/>'
        return f'<origin xyz="{_v(self.xyz)}" rpy="{_v(self.rpy)}"/><geometry>{shape}</geometry>'


@dataclass(frozen=True)
class Link:
    name: str
    mass_kg: float = FRAME_MASS_KG
    geom: Geom | None = None  # None: a pure frame
    color: str = "grey"


@dataclass(frozen=True)
class Joint:
    name: str
    kind: str  # "revolute" | "prismatic" | "fixed"
    parent: str
    child: str
    xyz: tuple[float, float, float] = (0.0, 0.0, 0.0)
    rpy: tuple[float, float, float] = (0.0, 0.0, 0.0)
    axis: tuple[float, float, float] = (0.0, 0.0, 1.0)
    lower: float = 0.0
    upper: float = 0.0
    effort: float = 0.0
    velocity: float = 0.0
    mimic: tuple[str, float] | None = None  # (joint, multiplier)


@dataclass
class Robot:
    name: str
    comment: str
    links: list[Link] = field(default_factory=list)
    joints: list[Joint] = field(default_factory=list)

    def xml(self) -> str:
        colors = {
            "grey": "0.6 0.6 0.6 1",
            "white": "0.92 0.92 0.92 1",
            "dark": "0.2 0.2 0.2 1",
            "blue": "0.35 0.55 0.8 1",
        }
        out = ['<?xml version="1.0"?>', f"<!-- {self.comment} -->", f"<robot name={quoteattr(self.name)}>"]
        for cname, rgba in colors.items():
            out.append(f'  <material name="{cname}"><color rgba="{rgba}"/></material>')
        for link in self.links:
            out.append(f"  <link name={quoteattr(link.name)}>")
            if link.geom is None:
                out.append(
                    f'    <inertial><origin xyz="0 0 0" rpy="0 0 0"/><mass value="{_f(FRAME_MASS_KG)}"/>'
                    f'<inertia ixx="{FRAME_INERTIA}" ixy="0" ixz="0" iyy="{FRAME_INERTIA}" iyz="0" izz="{FRAME_INERTIA}"/></inertial>'
                )
            else:
                g = link.geom
                inertia = g.inertia_about_centre(link.mass_kg)
                out.append(
                    f'    <inertial><origin xyz="{_v(g.xyz)}" rpy="0 0 0"/><mass value="{_f(link.mass_kg)}"/>'
                    f'<inertia ixx="{_f(inertia[0, 0])}" ixy="{_f(inertia[0, 1])}" ixz="{_f(inertia[0, 2])}" '
                    f'iyy="{_f(inertia[1, 1])}" iyz="{_f(inertia[1, 2])}" izz="{_f(inertia[2, 2])}"/></inertial>'
                )
                out.append(f'    <visual>{g.xml()}<material name="{link.color}"/></visual>')
                out.append(f"    <collision>{g.xml()}</collision>")
            out.append("  </link>")
        for j in self.joints:
            out.append(f"  <joint name={quoteattr(j.name)} type=\"{j.kind}\">")
            out.append(f"    <parent link={quoteattr(j.parent)}/><child link={quoteattr(j.child)}/>")
            out.append(f'    <origin xyz="{_v(j.xyz)}" rpy="{_v(j.rpy)}"/>')
            if j.kind != "fixed":
                out.append(f'    <axis xyz="{_v(j.axis)}"/>')
                out.append(
                    f'    <limit lower="{_f(j.lower)}" upper="{_f(j.upper)}" effort="{_f(j.effort)}" velocity="{_f(j.velocity)}"/>'
                )
            if j.mimic is not None:
                out.append(f'    <mimic joint={quoteattr(j.mimic[0])} multiplier="{_f(j.mimic[1])}" offset="0"/>')
            out.append("  </joint>")
        out.append("</robot>")
        return "\n".join(out) + "\n"


def _f(x: float) -> str:
    # Shortest repr that round-trips: pi and the published parameters survive the text exactly.
    # Round-off residue of rotated inertias (~1e-20) is written as 0.
    x = float(x)
    if abs(x) < 1e-15:
        return "0"
    return str(int(x)) if x.is_integer() and abs(x) < 1e9 else repr(x)


def _v(values) -> str:
    return " ".join(_f(v) for v in values)


def _craig_origin(a: float, d: float, alpha: float) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """URDF joint origin for one modified-DH row: Rx(alpha) Tx(a) Rz(theta) Tz(d) == origin * Rz(theta)."""
    return (a, -math.sin(alpha) * d, math.cos(alpha) * d), (alpha, 0.0, 0.0)


def _standard_dh_origin(
    a_prev: float, alpha_prev: float, d: float
) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Standard DH chain Rz(t_i) Tz(d_i) Tx(a_i) Rx(alpha_i), regrouped so joint i's origin is
    Tx(a_{i-1}) Rx(alpha_{i-1}) Tz(d_i) (the way ur_description lays out its joints)."""
    return (a_prev, -math.sin(alpha_prev) * d, math.cos(alpha_prev) * d), (alpha_prev, 0.0, 0.0)


# ----------------------------------------------------------------------------------- Franka
FRANKA_DH = [  # (a, d, alpha), Craig convention, Franka documentation
    (0.0, 0.333, 0.0),
    (0.0, 0.0, -PI / 2),
    (0.0, 0.316, PI / 2),
    (0.0825, 0.0, PI / 2),
    (-0.0825, 0.384, -PI / 2),
    (0.0, 0.0, PI / 2),
    (0.088, 0.0, PI / 2),
]
FRANKA_FLANGE_M = 0.107
FRANKA_TCP_M = 0.1034
FRANKA_FINGER_ORIGIN_M = 0.0584
FRANKA_FINGER_TRAVEL_M = 0.04
FRANKA_EFFORT_NM = [87.0, 87.0, 87.0, 87.0, 12.0, 12.0, 12.0]
PANDA_LOWER = [-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973]
PANDA_UPPER = [2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973]
PANDA_VELOCITY = [2.175, 2.175, 2.175, 2.175, 2.61, 2.61, 2.61]
FR3_LOWER = [-2.7437, -1.7837, -2.9007, -3.0421, -2.8065, 0.5445, -3.0159]
FR3_UPPER = [2.7437, 1.7837, 2.9007, -0.1518, 2.8065, 4.5169, 3.0159]
FR3_VELOCITY = [2.62, 2.62, 2.62, 2.62, 5.26, 4.18, 5.26]
# Masses from published dynamic identification of the Panda (Gaz et al., RA-L 2019), rounded.
FRANKA_MASS_KG = [2.9, 4.97, 0.65, 3.23, 3.59, 1.23, 1.67, 0.74]
# Coarse shapes per link, in the link's own frame (see the module docstring).
FRANKA_GEOMS = [
    Geom("cylinder", (0.07, 0.2), (0.0, 0.0, 0.1)),  # link0: base column
    Geom("cylinder", (0.06, 0.12), (0.0, 0.0, -0.07)),  # link1: shoulder column below joint 2
    Geom("cylinder", (0.06, 0.16), (0.0, -0.12, 0.0), (PI / 2, 0.0, 0.0)),  # link2: upper arm (along -y)
    Geom("cylinder", (0.055, 0.1), (0.0, 0.0, -0.06)),  # link3: elbow side of the upper arm
    Geom("cylinder", (0.055, 0.1), (0.0, 0.0, 0.0)),  # link4: elbow housing (joint-4 axis)
    Geom("cylinder", (0.05, 0.24), (0.0, 0.0, -0.22)),  # link5: forearm
    Geom("cylinder", (0.05, 0.09), (0.0, 0.0, 0.0)),  # link6: wrist housing (joint-6 axis)
    Geom("cylinder", (0.045, 0.06), (0.0, 0.0, 0.04)),  # link7: flange housing
]


def franka(prefix: str, lower: list[float], upper: list[float], velocity: list[float], title: str) -> Robot:
    robot = Robot(
        name=prefix.rstrip("_"),
        comment=(
            f"{title}: self-written from Franka's published Craig DH table and joint limits; coarse "
            "primitive geometry, no meshes. Generated by tools/generate_urdfs.py - edit that, not this."
        ),
    )
    for i, (mass, geom) in enumerate(zip(FRANKA_MASS_KG, FRANKA_GEOMS)):
        robot.links.append(Link(f"{prefix}link{i}", mass, geom, "white" if i % 2 == 0 else "grey"))
    for i, (a, d, alpha) in enumerate(FRANKA_DH):
        xyz, rpy = _craig_origin(a, d, alpha)
        robot.joints.append(
            Joint(
                f"{prefix}joint{i + 1}", "revolute", f"{prefix}link{i}", f"{prefix}link{i + 1}", xyz, rpy,
                lower=lower[i], upper=upper[i], effort=FRANKA_EFFORT_NM[i], velocity=velocity[i],
            )
        )
    hand, left, right = f"{prefix}hand", f"{prefix}leftfinger", f"{prefix}rightfinger"
    robot.links += [
        Link(f"{prefix}link8"),
        Link(hand, 0.73, Geom("box", (0.06, 0.2, 0.06), (0.0, 0.0, 0.03)), "white"),
        # finger pads: inner face on the joint's zero plane so that the gap is 2 * joint position
        Link(left, 0.015, Geom("box", (0.02, 0.02, 0.054), (0.0, 0.01, 0.027)), "dark"),
        Link(right, 0.015, Geom("box", (0.02, 0.02, 0.054), (0.0, -0.01, 0.027)), "dark"),
        Link(f"{prefix}hand_tcp"),
    ]
    robot.joints += [
        Joint(f"{prefix}joint8", "fixed", f"{prefix}link7", f"{prefix}link8", (0.0, 0.0, FRANKA_FLANGE_M)),
        Joint(f"{prefix}hand_joint", "fixed", f"{prefix}link8", hand, rpy=(0.0, 0.0, -PI / 4)),
        Joint(
            f"{prefix}finger_joint1", "prismatic", hand, left, (0.0, 0.0, FRANKA_FINGER_ORIGIN_M),
            axis=(0.0, 1.0, 0.0), lower=0.0, upper=FRANKA_FINGER_TRAVEL_M, effort=100.0, velocity=0.2,
        ),
        Joint(
            f"{prefix}finger_joint2", "prismatic", hand, right, (0.0, 0.0, FRANKA_FINGER_ORIGIN_M),
            axis=(0.0, -1.0, 0.0), lower=0.0, upper=FRANKA_FINGER_TRAVEL_M, effort=100.0, velocity=0.2,
            mimic=(f"{prefix}finger_joint1", 1.0),
        ),
        Joint(f"{prefix}hand_tcp_joint", "fixed", hand, f"{prefix}hand_tcp", (0.0, 0.0, FRANKA_TCP_M)),
    ]
    return robot


# ----------------------------------------------------------------------------------- UR
UR_DH = {  # standard DH, UR's published values: d, a (alpha = [pi/2, 0, 0, pi/2, -pi/2, 0])
    "ur5": ([0.089159, 0.0, 0.0, 0.10915, 0.09465, 0.0823], [0.0, -0.425, -0.39225, 0.0, 0.0, 0.0]),
    "ur5e": ([0.1625, 0.0, 0.0, 0.1333, 0.0997, 0.0996], [0.0, -0.425, -0.3922, 0.0, 0.0, 0.0]),
}
UR_ALPHA = [PI / 2, 0.0, 0.0, PI / 2, -PI / 2, 0.0]
UR_JOINTS = [
    "shoulder_pan_joint", "shoulder_lift_joint", "elbow_joint", "wrist_1_joint", "wrist_2_joint", "wrist_3_joint",
]
UR_LINKS = ["shoulder_link", "upper_arm_link", "forearm_link", "wrist_1_link", "wrist_2_link", "wrist_3_link"]
UR_EFFORT_NM = [150.0, 150.0, 150.0, 28.0, 28.0, 28.0]
UR_MASS_KG = {  # ur_description physical parameters
    "ur5": [4.0, 3.7, 8.393, 2.275, 1.219, 1.219, 0.1879],
    "ur5e": [4.0, 3.761, 8.058, 2.846, 1.37, 1.3, 0.365],
}
# Simulation gripper on tool0 (a generic parallel gripper, not a vendor model).
UR_GRIPPER_BASE_HEIGHT_M = 0.07
UR_GRIPPER_FINGER_LENGTH_M = 0.05
UR_GRIPPER_TRAVEL_M = 0.04
UR_GRIPPER_TCP_M = 0.105  # centre of the pads' lower part, 35 mm past the base


def ur(model: str, title: str) -> Robot:
    d, a = UR_DH[model]
    mass = UR_MASS_KG[model]
    robot = Robot(
        name=model,
        comment=(
            f"{title}: self-written from UR's published DH parameters (base -> tool0 equals the DH "
            "base -> flange), ur_description link names, a simple parallel gripper on tool0 for "
            "simulation; coarse primitive geometry. Generated by tools/generate_urdfs.py - edit that, not this."
        ),
    )
    upper_len, fore_len = -a[1], -a[2]
    # The real upper arm / forearm tubes sit beside the joint axes; the offsets below are rough
    # but keep the tubes apart when the elbow folds (their sum matches d4 roughly as on the robot).
    upper_off, fore_off = 0.135, 0.015
    geoms = [
        Geom("cylinder", (0.075, 0.6 * d[0]), (0.0, 0.0, 0.3 * d[0])),  # base_link_inertia
        # shoulder housing on the pan axis, kept clear of the base: the base is welded to the
        # world, and MuJoCo does not filter contacts between a world-welded parent and its child
        Geom("cylinder", (0.065, 0.06 + 0.3 * d[0]), (0.0, 0.0, (0.06 - 0.3 * d[0]) / 2)),
        Geom("cylinder", (0.055, upper_len - 0.14), (-upper_len / 2, 0.0, upper_off), (0.0, PI / 2, 0.0)),
        Geom("cylinder", (0.045, fore_len - 0.12), (-fore_len / 2, 0.0, fore_off), (0.0, PI / 2, 0.0)),
        Geom("cylinder", (0.045, 0.09), (0.0, 0.0, 0.0)),  # wrist 1 housing
        Geom("cylinder", (0.045, 0.09), (0.0, 0.0, 0.0)),  # wrist 2 housing
        Geom("cylinder", (0.045, 0.03), (0.0, 0.0, -0.02)),  # wrist 3 flange disc, behind tool0
    ]
    robot.links.append(Link("base_link"))
    robot.links.append(Link("base_link_inertia", mass[0], geoms[0], "dark"))
    robot.links.append(Link("base"))
    robot.joints.append(Joint("base_link-base_link_inertia", "fixed", "base_link", "base_link_inertia", rpy=(0, 0, PI)))
    robot.joints.append(Joint("base_link-base_fixed_joint", "fixed", "base_link", "base", rpy=(0, 0, PI)))
    parents = ["base_link_inertia"] + UR_LINKS[:-1]
    alpha_prev = [0.0] + UR_ALPHA[:-1]
    a_prev = [0.0] + a[:-1]
    for i, (jname, lname) in enumerate(zip(UR_JOINTS, UR_LINKS)):
        robot.links.append(Link(lname, mass[i + 1], geoms[i + 1], "blue" if i % 2 == 0 else "grey"))
        xyz, rpy = _standard_dh_origin(a_prev[i], alpha_prev[i], d[i])
        limit = PI if jname == "elbow_joint" else 2 * PI
        robot.joints.append(
            Joint(jname, "revolute", parents[i], lname, xyz, rpy,
                  lower=-limit, upper=limit, effort=UR_EFFORT_NM[i], velocity=PI)
        )
    # DH frame 6 (a6 = 0, alpha6 = 0) coincides with wrist_3_link, so tool0 sits on it; `flange`
    # is the ROS-Industrial flange (x out of the flange).
    robot.links += [Link("flange"), Link("tool0")]
    robot.joints += [
        Joint("wrist_3-flange", "fixed", "wrist_3_link", "flange", rpy=(0.0, -PI / 2, -PI / 2)),
        Joint("flange-tool0", "fixed", "flange", "tool0", rpy=(PI / 2, 0.0, PI / 2)),
    ]
    h, fl = UR_GRIPPER_BASE_HEIGHT_M, UR_GRIPPER_FINGER_LENGTH_M
    robot.links += [
        Link("gripper_base", 0.4, Geom("box", (0.05, 0.16, h - 0.005), (0.0, 0.0, (h + 0.005) / 2)), "dark"),
        Link("gripper_left_finger", 0.03, Geom("box", (0.02, 0.015, fl), (0.0, 0.0075, fl / 2)), "grey"),
        Link("gripper_right_finger", 0.03, Geom("box", (0.02, 0.015, fl), (0.0, -0.0075, fl / 2)), "grey"),
        Link("gripper_tcp"),
    ]
    robot.joints += [
        Joint("tool0-gripper_base", "fixed", "tool0", "gripper_base"),
        Joint("gripper_finger_joint", "prismatic", "gripper_base", "gripper_left_finger", (0.0, 0.0, h),
              axis=(0.0, 1.0, 0.0), lower=0.0, upper=UR_GRIPPER_TRAVEL_M, effort=60.0, velocity=0.2),
        Joint("gripper_right_finger_joint", "prismatic", "gripper_base", "gripper_right_finger", (0.0, 0.0, h),
              axis=(0.0, -1.0, 0.0), lower=0.0, upper=UR_GRIPPER_TRAVEL_M, effort=60.0, velocity=0.2,
              mimic=("gripper_finger_joint", 1.0)),
        Joint("gripper_base-gripper_tcp", "fixed", "gripper_base", "gripper_tcp", (0.0, 0.0, UR_GRIPPER_TCP_M)),
    ]
    return robot


# ----------------------------------------------------------------------------------- ALOHA
ALOHA_BASES = {  # arm -> (xyz, yaw) of its base_link in `world`; the arms face each other across x
    "follower_left": ((-0.47, 0.0, 0.0), 0.0),
    "follower_right": ((0.47, 0.0, 0.0), PI),
}
VX300S_LIMITS = {  # joint -> (lower, upper) rad, Interbotix vx300s
    "waist": (-PI, PI),
    "shoulder": (-1.85, 1.257),
    "elbow": (-1.763, 1.606),
    "forearm_roll": (-PI, PI),
    "wrist_angle": (-1.868, 2.234),
    "wrist_rotate": (-PI, PI),
}
VX300S_EFFORT_NM = {"waist": 10.0, "shoulder": 20.0, "elbow": 15.0, "forearm_roll": 2.0,
                    "wrist_angle": 5.0, "wrist_rotate": 1.0}
# The gripper motor's range covers ALOHA 2's calibrated closed (0.6197) and open (1.6214) angles.
VX300S_GRIPPER_RAD = (0.5, 1.75)
# Finger travel: Interbotix 0.021..0.057 m, widened to 0.058 so ALOHA 2's open finger position
# (0.0579 m) is inside the limits.
VX300S_FINGER_M = (0.021, 0.058)
# Gripper stack (Interbotix vx300s): gripper_link -> ee_arm 0.042825, -> gripper_prop 0.0055 (motor
# horn), ee_arm -> gripper_bar 0, gripper_bar -> fingers_link 0.023, fingers_link -> ee_gripper
# 0.027575: ee_gripper_link is 0.0934 m beyond gripper_link.
VX300S_EE_ARM_M = 0.042825
VX300S_PROP_M = 0.0055
VX300S_FINGERS_M = 0.023
VX300S_EE_GRIPPER_M = 0.027575


def aloha() -> Robot:
    robot = Robot(
        name="aloha",
        comment=(
            "ALOHA (bimanual, two Interbotix ViperX 300 6-DoF followers on one table, facing each other "
            "along x): self-written from Interbotix joint origins and limits; coarse primitive geometry. "
            "Generated by tools/generate_urdfs.py - edit that, not this."
        ),
    )
    robot.links.append(Link("world"))
    # table top = world z 0; the arms' bases stand on it
    for arm, (xyz, yaw) in ALOHA_BASES.items():
        p = f"{arm}/"
        links = [
            Link(p + "base_link", 0.97, Geom("box", (0.12, 0.12, 0.06), (0.0, 0.0, 0.03)), "dark"),
            # clear of the base box (world-welded: MuJoCo would let the two collide)
            Link(p + "shoulder_link", 0.8, Geom("cylinder", (0.045, 0.03), (0.0, 0.0, 0.01)), "dark"),
            Link(p + "upper_arm_link", 0.79, Geom("box", (0.05, 0.05, 0.22), (0.03, 0.0, 0.15)), "dark"),
            Link(p + "upper_forearm_link", 0.32, Geom("cylinder", (0.025, 0.13), (0.1, 0.0, 0.0), (0.0, PI / 2, 0.0)), "grey"),
            Link(p + "lower_forearm_link", 0.41, Geom("box", (0.05, 0.05, 0.05), (0.05, 0.0, 0.0)), "dark"),
            Link(p + "wrist_link", 0.12, Geom("box", (0.03, 0.04, 0.04), (0.035, 0.0, 0.0)), "dark"),
            Link(p + "gripper_link", 0.1, Geom("box", (0.025, 0.05, 0.04), (0.025, 0.0, 0.0)), "dark"),
            Link(p + "ee_arm_link"),
            Link(p + "gripper_prop_link", 0.004, Geom("cylinder", (0.012, 0.005), (0.0, 0.0, 0.0), (0.0, PI / 2, 0.0)), "grey"),
            Link(p + "gripper_bar_link", 0.034, Geom("box", (0.01, 0.12, 0.02), (0.015, 0.0, 0.0)), "dark"),
            Link(p + "fingers_link"),
            Link(p + "ee_gripper_link"),
            # pads: inner face on the joint's zero plane (left at +y, right at -y of fingers_link)
            Link(p + "left_finger_link", 0.016, Geom("box", (0.04, 0.01, 0.02), (0.02, 0.005, 0.0)), "grey"),
            Link(p + "right_finger_link", 0.016, Geom("box", (0.04, 0.01, 0.02), (0.02, -0.005, 0.0)), "grey"),
        ]
        robot.links += links
        lim = VX300S_LIMITS
        eff = VX300S_EFFORT_NM
        robot.joints += [
            Joint(p + "base_mount", "fixed", "world", p + "base_link", xyz, (0.0, 0.0, yaw)),
            Joint(p + "waist", "revolute", p + "base_link", p + "shoulder_link", (0.0, 0.0, 0.079),
                  axis=(0, 0, 1), lower=lim["waist"][0], upper=lim["waist"][1], effort=eff["waist"], velocity=PI),
            Joint(p + "shoulder", "revolute", p + "shoulder_link", p + "upper_arm_link", (0.0, 0.0, 0.04805),
                  axis=(0, 1, 0), lower=lim["shoulder"][0], upper=lim["shoulder"][1], effort=eff["shoulder"], velocity=PI),
            Joint(p + "elbow", "revolute", p + "upper_arm_link", p + "upper_forearm_link", (0.05955, 0.0, 0.3),
                  axis=(0, 1, 0), lower=lim["elbow"][0], upper=lim["elbow"][1], effort=eff["elbow"], velocity=PI),
            Joint(p + "forearm_roll", "revolute", p + "upper_forearm_link", p + "lower_forearm_link", (0.2, 0.0, 0.0),
                  axis=(1, 0, 0), lower=lim["forearm_roll"][0], upper=lim["forearm_roll"][1],
                  effort=eff["forearm_roll"], velocity=PI),
            Joint(p + "wrist_angle", "revolute", p + "lower_forearm_link", p + "wrist_link", (0.1, 0.0, 0.0),
                  axis=(0, 1, 0), lower=lim["wrist_angle"][0], upper=lim["wrist_angle"][1],
                  effort=eff["wrist_angle"], velocity=PI),
            Joint(p + "wrist_rotate", "revolute", p + "wrist_link", p + "gripper_link", (0.069744, 0.0, 0.0),
                  axis=(1, 0, 0), lower=lim["wrist_rotate"][0], upper=lim["wrist_rotate"][1],
                  effort=eff["wrist_rotate"], velocity=PI),
            Joint(p + "ee_arm", "fixed", p + "gripper_link", p + "ee_arm_link", (VX300S_EE_ARM_M, 0.0, 0.0)),
            Joint(p + "gripper", "revolute", p + "ee_arm_link", p + "gripper_prop_link", (VX300S_PROP_M, 0.0, 0.0),
                  axis=(1, 0, 0), lower=VX300S_GRIPPER_RAD[0], upper=VX300S_GRIPPER_RAD[1], effort=5.0, velocity=PI),
            Joint(p + "gripper_bar", "fixed", p + "ee_arm_link", p + "gripper_bar_link"),
            Joint(p + "ee_bar", "fixed", p + "gripper_bar_link", p + "fingers_link", (VX300S_FINGERS_M, 0.0, 0.0)),
            Joint(p + "ee_gripper", "fixed", p + "fingers_link", p + "ee_gripper_link", (VX300S_EE_GRIPPER_M, 0.0, 0.0)),
            Joint(p + "left_finger", "prismatic", p + "fingers_link", p + "left_finger_link",
                  axis=(0, 1, 0), lower=VX300S_FINGER_M[0], upper=VX300S_FINGER_M[1], effort=5.0, velocity=1.0),
            # Interbotix convention: the right finger reports the negated left finger position
            Joint(p + "right_finger", "prismatic", p + "fingers_link", p + "right_finger_link",
                  axis=(0, 1, 0), lower=-VX300S_FINGER_M[1], upper=-VX300S_FINGER_M[0], effort=5.0, velocity=1.0,
                  mimic=(p + "left_finger", -1.0)),
        ]
    return robot


def build_all() -> dict[str, Robot]:
    return {
        "panda": franka("panda_", PANDA_LOWER, PANDA_UPPER, PANDA_VELOCITY, "Franka Emika Panda"),
        "fr3": franka("fr3_", FR3_LOWER, FR3_UPPER, FR3_VELOCITY, "Franka Research 3"),
        "ur5": ur("ur5", "Universal Robots UR5 (CB3)"),
        "ur5e": ur("ur5e", "Universal Robots UR5e"),
        "aloha": aloha(),
    }


def main() -> None:
    URDF_DIR.mkdir(exist_ok=True)
    for name, robot in build_all().items():
        path = URDF_DIR / f"{name}.urdf"
        path.write_text(robot.xml())
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
