"""Embodiment specifications: what one arm (or a bimanual pair) is, validated once at start-up.

The YAML files in config/ are loaded into these frozen dataclasses by `load_embodiment`.
Joint names are the names the vendor driver reports; for namespaced arms (ALOHA) the
*qualified* name `<namespace>/<joint>` is used everywhere inside vla_ros (URDF, kinematics,
action-chunk names) and the bare name only on the driver's own topics.

Config file layout (all keys are checked; an unknown key is an error with a suggestion)::

    description: free text                       (optional)
    alias: <other config name>                   (an alias file holds only this key)
    urdf: {file: x.urdf} | {package_path: <pkg>/<relpath>} | {topic: robot_description}
    world_frame: <URDF root link>
    tf_prefix: ""                                (optional; prefixes every URDF joint/link name,
                                                  as ur_robot_driver's tf_prefix does)
    command_rate_hz, policy_period_s, action_space
    arms:
      <arm name>:                                ("arm" for single arms, else the namespace)
        namespace: "" | <ns>
        joint_names: [...]                       (bare driver names, driver order)
        base_frame, tool_frame                   (URDF links)
        limits: {lower_rad, upper_rad, velocity_rad_s, acceleration_rad_s2}
                                                 (position / velocity default to the URDF's and may
                                                  only tighten them; acceleration is required:
                                                  a list, or one number for every joint)
        home_rad: [...]
        command: {kind: joint_trajectory | forward_position, topic, joint_names (default: arm joints),
                  interface: topic | follow_joint_trajectory   (default topic; the action is
                             action: <controller>/follow_joint_trajectory by default)}
        gripper: null | {joint_name, open_position, closed_position,
                         command: null | {kind: forward_position, topic, joint_names (default: [joint_name])}
                                       | {kind: franka_gripper, node, interface: grasp_move | gripper_action,
                                          homing, speed_m_s, force_n, min_object_width_m,
                                          max_object_width_m, close_below, open_above}}
        driver_state: {program_running_topic, speed_scaling_topic, robot_state_topic,
                       min_speed_scaling}        (optional; what the vendor driver says about itself)
        workspace_min_m, workspace_max_m         (tool position box in base_frame)
    cameras:
      <slot>: {topic (default cameras/<slot>/image_raw), width, height, compressed}

Command topics in the file are relative to the arm's namespace; the loaded `CommandInterface.topic`
has the namespace applied (`follower_left/arm_controller/joint_trajectory`), so nodes publish on it
as it is. A topic starting with "/" is absolute and kept as written.
"""

from __future__ import annotations

import difflib
import math
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping

import numpy as np
import yaml

CommandKind = Literal["joint_trajectory", "forward_position"]
COMMAND_KINDS: tuple[str, ...] = ("joint_trajectory", "forward_position")
# How a joint_trajectory command reaches the JTC: its topic, or its FollowJointTrajectory action.
COMMAND_INTERFACES: tuple[str, ...] = ("topic", "follow_joint_trajectory")
# Gripper command kinds: a forward controller's topic, or franka_gripper's actions.
GRIPPER_COMMAND_KINDS: tuple[str, ...] = ("forward_position", "franka_gripper")
FRANKA_GRIPPER_INTERFACES: tuple[str, ...] = ("grasp_move", "gripper_action")
# The action spaces defined in doc/INTERFACES.md ("Action chunks").
ACTION_SPACES: tuple[str, ...] = ("joint_position", "joint_delta", "ee_delta", "ee_pose")

PACKAGE_NAME = "vla_ros"
# Repository root when running from the source tree or an editable install; a colcon install
# has no package.xml here and falls back to the ament index (see `config_dir`).
_SOURCE_ROOT = Path(__file__).resolve().parents[2]


class EmbodimentConfigError(ValueError):
    """An embodiment config (or its URDF) is unusable; the message names file, key and fix."""


def _frozen_array(values: Any, what: str, length: int | None = None) -> np.ndarray:
    arr = np.array(values, dtype=np.float64, copy=True)
    if arr.ndim != 1:
        raise ValueError(f"{what} must be a 1-D list of numbers, got shape {arr.shape}")
    if length is not None and arr.shape[0] != length:
        raise ValueError(f"{what} must have {length} entries, got {arr.shape[0]}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} must be finite, got {arr.tolist()}")
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True)
class JointLimits:
    """Per-joint limits, arrays in the arm's joint order."""

    lower_rad: np.ndarray
    upper_rad: np.ndarray
    velocity_rad_s: np.ndarray
    acceleration_rad_s2: np.ndarray

    def __post_init__(self) -> None:
        lower = _frozen_array(self.lower_rad, "lower_rad")
        n = lower.shape[0]
        upper = _frozen_array(self.upper_rad, "upper_rad", n)
        velocity = _frozen_array(self.velocity_rad_s, "velocity_rad_s", n)
        acceleration = _frozen_array(self.acceleration_rad_s2, "acceleration_rad_s2", n)
        bad = np.flatnonzero(lower >= upper)
        if bad.size:
            i = int(bad[0])
            raise ValueError(f"lower_rad[{i}]={lower[i]} must be < upper_rad[{i}]={upper[i]}")
        for name, arr in (("velocity_rad_s", velocity), ("acceleration_rad_s2", acceleration)):
            bad = np.flatnonzero(arr <= 0.0)
            if bad.size:
                i = int(bad[0])
                raise ValueError(f"{name}[{i}]={arr[i]} must be > 0")
        object.__setattr__(self, "lower_rad", lower)
        object.__setattr__(self, "upper_rad", upper)
        object.__setattr__(self, "velocity_rad_s", velocity)
        object.__setattr__(self, "acceleration_rad_s2", acceleration)

    @property
    def num_joints(self) -> int:
        return int(self.lower_rad.shape[0])


@dataclass(frozen=True)
class CommandInterface:
    """A ros2_control command interface.

    kind "joint_trajectory": trajectory_msgs/JointTrajectory on `topic` (a JTC's ~/joint_trajectory).
    kind "forward_position": std_msgs/Float64MultiArray on `topic` (a forward controller's ~/commands),
    one value per entry of `joint_names`, in that order.
    `joint_names` are the names the controller is configured with (bare driver names).
    `topic` is relative, with the arm's namespace already applied.
    """

    kind: CommandKind
    topic: str
    joint_names: tuple[str, ...]
    # "follow_joint_trajectory": goals on the JTC's action `action` instead of the topic
    interface: str = "topic"
    action: str = ""

    def __post_init__(self) -> None:
        if self.kind not in COMMAND_KINDS:
            raise ValueError(f"kind must be one of {list(COMMAND_KINDS)}, got {self.kind!r}")
        _check_topic(self.topic, "topic")
        if self.interface not in COMMAND_INTERFACES:
            raise ValueError(f"interface must be one of {list(COMMAND_INTERFACES)}, got {self.interface!r}")
        if self.interface == "follow_joint_trajectory":
            if self.kind != "joint_trajectory":
                raise ValueError("interface follow_joint_trajectory needs kind joint_trajectory (a JTC), "
                                 f"got kind {self.kind!r}")
            if not self.action:
                # the JTC serves <controller>/follow_joint_trajectory beside <controller>/joint_trajectory
                head, _, _ = self.topic.rpartition("/")
                object.__setattr__(self, "action", f"{head}/follow_joint_trajectory" if head else "follow_joint_trajectory")
            _check_topic(self.action, "action")
        names = tuple(str(n) for n in self.joint_names)
        if not names:
            raise ValueError("joint_names must name at least one joint")
        if len(set(names)) != len(names):
            raise ValueError(f"joint_names must be unique, got {list(names)}")
        object.__setattr__(self, "joint_names", names)


@dataclass(frozen=True)
class FrankaGripperActions:
    """The real franka_gripper node, driven through its actions (it has no command topic).

    node:       the node's name (namespace applied): actions `<node>/grasp`, `<node>/move`,
                `<node>/homing`, `<node>/gripper_action`, measured state on `<node>/joint_states`.
    interface:  "grasp_move" (franka_msgs Grasp / Move) or "gripper_action" (control_msgs
                GripperCommand: width = 2 x position, a move when opening, a grasp when closing).
    homing:     send a Homing goal once on start (calibrates the fingers' width).
    speed_m_s, force_n: finger speed, grasp force (the actuator limit while squeezing).
    min_object_width_m / max_object_width_m: a grasp succeeds when the fingers stop in this band
                (closing on nothing, or losing the object, fails).
    close_below / open_above: hysteresis on the normalised gripper column (0 closed ... 1 open).
    """

    node: str
    interface: str = "grasp_move"
    homing: bool = False
    speed_m_s: float = 0.1
    force_n: float = 20.0
    min_object_width_m: float = 0.005
    max_object_width_m: float = 0.075
    close_below: float = 0.4
    open_above: float = 0.6

    def __post_init__(self) -> None:
        _check_topic(self.node, "node")
        if self.interface not in FRANKA_GRIPPER_INTERFACES:
            raise ValueError(f"interface must be one of {list(FRANKA_GRIPPER_INTERFACES)}, got {self.interface!r}")
        if not isinstance(self.homing, bool):
            raise ValueError(f"homing must be true or false, got {self.homing!r}")
        for attr in ("speed_m_s", "force_n", "min_object_width_m", "max_object_width_m", "close_below", "open_above"):
            value = getattr(self, attr)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{attr} must be a finite number, got {value!r}")
            object.__setattr__(self, attr, float(value))
        if self.speed_m_s <= 0.0 or self.force_n <= 0.0:
            raise ValueError(f"speed_m_s and force_n must be > 0, got {self.speed_m_s}, {self.force_n}")
        if not 0.0 <= self.min_object_width_m < self.max_object_width_m:
            raise ValueError(f"need 0 <= min_object_width_m < max_object_width_m, got "
                             f"{self.min_object_width_m}, {self.max_object_width_m}")
        if not 0.0 <= self.close_below < self.open_above <= 1.0:
            raise ValueError(f"need 0 <= close_below < open_above <= 1, got {self.close_below}, {self.open_above}")


@dataclass(frozen=True)
class DriverStateSpec:
    """Topics on which the vendor driver reports whether the arm can follow (relative, namespace
    applied; "" = not used): UR's robot_program_running (std_msgs/Bool) and speed_scaling
    (std_msgs/Float64), Franka's robot_state (franka_msgs/FrankaRobotState)."""

    program_running_topic: str = ""
    speed_scaling_topic: str = ""
    robot_state_topic: str = ""
    min_speed_scaling: float = 0.05

    def __post_init__(self) -> None:
        for attr in ("program_running_topic", "speed_scaling_topic", "robot_state_topic"):
            if getattr(self, attr):
                _check_topic(getattr(self, attr), attr)
        v = self.min_speed_scaling
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 < v <= 1.0:
            raise ValueError(f"min_speed_scaling must be in (0, 1], got {v!r}")
        object.__setattr__(self, "min_speed_scaling", float(v))


@dataclass(frozen=True)
class GripperSpec:
    """Gripper mapping: normalised command g in [0, 1], 1 = open, 0 = closed.

    joint position = closed_position + g * (open_position - closed_position)
    """

    joint_name: str  # as reported in joint_states (bare driver name)
    open_position: float
    closed_position: float
    command: CommandInterface | None  # None: the real driver has no topic interface (e.g. franka_gripper actions)
    actions: FrankaGripperActions | None = None  # `command.kind: franka_gripper` (then `command` is None)

    def __post_init__(self) -> None:
        if self.command is not None and self.actions is not None:
            raise ValueError("a gripper has either a command topic or franka_gripper actions, not both")
        for attr in ("open_position", "closed_position"):
            value = getattr(self, attr)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
                raise ValueError(f"{attr} must be a number, got {value!r}")
            if not math.isfinite(float(value)):
                raise ValueError(f"{attr} must be finite, got {value}")
            object.__setattr__(self, attr, float(value))
        if self.open_position == self.closed_position:
            raise ValueError(
                f"open_position and closed_position must differ, both are {self.open_position}"
            )

    def to_joint(self, g: Any) -> Any:
        """Normalised command(s) -> joint position(s). g is clipped to [0, 1] (a policy may
        overshoot slightly; the joint is never commanded past its calibrated open/closed)."""
        arr = np.asarray(g, dtype=np.float64)
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"gripper command must be finite, got {arr.tolist()}")
        x = self.closed_position + np.clip(arr, 0.0, 1.0) * (self.open_position - self.closed_position)
        return float(x) if x.ndim == 0 else x

    def from_joint(self, x: Any) -> Any:
        """Joint position(s) -> normalised value(s), (x - closed) / (open - closed). Not clipped,
        so a measurement outside the calibrated range stays visible."""
        arr = np.asarray(x, dtype=np.float64)
        g = (arr - self.closed_position) / (self.open_position - self.closed_position)
        return float(g) if g.ndim == 0 else g


@dataclass(frozen=True)
class ArmSpec:
    name: str  # "arm" for single-arm embodiments, the namespace ("follower_left") otherwise
    namespace: str  # "" or e.g. "follower_left"; driver topics live under it
    joint_names: tuple[str, ...]  # bare driver names, in the driver's/controller's order
    base_frame: str
    tool_frame: str
    limits: JointLimits
    home_rad: np.ndarray
    command: CommandInterface
    gripper: GripperSpec | None
    workspace_min_m: np.ndarray  # tool-frame position box, expressed in base_frame
    workspace_max_m: np.ndarray
    driver_state: DriverStateSpec = DriverStateSpec()

    def __post_init__(self) -> None:
        names = tuple(str(n) for n in self.joint_names)
        if not names:
            raise ValueError("joint_names must name at least one joint")
        if len(set(names)) != len(names):
            raise ValueError(f"joint_names must be unique, got {list(names)}")
        if self.limits.num_joints != len(names):
            raise ValueError(
                f"limits have {self.limits.num_joints} entries but joint_names has {len(names)}"
            )
        home = _frozen_array(self.home_rad, "home_rad", len(names))
        outside = np.flatnonzero((home < self.limits.lower_rad) | (home > self.limits.upper_rad))
        if outside.size:
            i = int(outside[0])
            raise ValueError(
                f"home_rad[{i}]={home[i]} ({names[i]}) is outside the joint limits "
                f"[{self.limits.lower_rad[i]}, {self.limits.upper_rad[i]}]"
            )
        wmin = _frozen_array(self.workspace_min_m, "workspace_min_m", 3)
        wmax = _frozen_array(self.workspace_max_m, "workspace_max_m", 3)
        bad = np.flatnonzero(wmin >= wmax)
        if bad.size:
            i = int(bad[0])
            raise ValueError(
                f"workspace_min_m[{i}]={wmin[i]} must be < workspace_max_m[{i}]={wmax[i]} ({'xyz'[i]})"
            )
        object.__setattr__(self, "joint_names", names)
        object.__setattr__(self, "home_rad", home)
        object.__setattr__(self, "workspace_min_m", wmin)
        object.__setattr__(self, "workspace_max_m", wmax)

    def qualified(self, joint: str) -> str:
        return f"{self.namespace}/{joint}" if self.namespace else joint

    @property
    def qualified_joint_names(self) -> tuple[str, ...]:
        return tuple(self.qualified(j) for j in self.joint_names)

    @property
    def joint_states_topic(self) -> str:
        return f"{self.namespace}/joint_states" if self.namespace else "joint_states"

    @property
    def num_joints(self) -> int:
        return len(self.joint_names)


@dataclass(frozen=True)
class CameraSpec:
    slot: str  # the policy's camera slot, e.g. "front", "wrist", "cam_high"
    topic: str  # ROS topic (relative), e.g. "cameras/front/image_raw"
    compressed: bool
    width: int
    height: int

    def __post_init__(self) -> None:
        _check_topic(self.topic, "topic")
        for attr in ("width", "height"):
            value = getattr(self, attr)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
                raise ValueError(f"{attr} must be a positive integer (pixels), got {value!r}")
        if not isinstance(self.compressed, bool):
            raise ValueError(f"compressed must be true or false, got {self.compressed!r}")


@dataclass(frozen=True)
class UrdfSource:
    """Where the URDF comes from: exactly one of the three is set."""

    file: str | None = None  # path relative to the package's urdf/ folder, or absolute
    package_path: str | None = None  # "<description_package>/<relative path>" resolved via ament index
    topic: str | None = None  # the running driver's robot_description topic

    def __post_init__(self) -> None:
        given = [k for k in ("file", "package_path", "topic") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"exactly one of file / package_path / topic must be set, got {given or 'none'}"
            )


@dataclass(frozen=True)
class EmbodimentSpec:
    name: str
    config_path: str
    urdf: UrdfSource
    world_frame: str  # root frame of the URDF
    arms: tuple[ArmSpec, ...]
    command_rate_hz: float  # rate the controller streams forward commands / replans at
    policy_period_s: float  # the policy's control period (action-chunk step)
    action_space: str  # the policy's action space, see vla_ros.core.action_spaces
    cameras: tuple[CameraSpec, ...]
    tf_prefix: str = ""  # already applied to every joint / frame name above
    description: str = ""

    @property
    def joint_names(self) -> tuple[str, ...]:
        """All arm joints, qualified, arms in order (ALOHA: left 6 then right 6)."""
        return tuple(n for arm in self.arms for n in arm.qualified_joint_names)

    @property
    def gripper_joint_names(self) -> tuple[str, ...]:
        """Qualified gripper joints of the arms that have one, arms in order."""
        return tuple(a.qualified(a.gripper.joint_name) for a in self.arms if a.gripper is not None)

    def arm(self, name: str) -> ArmSpec:
        for a in self.arms:
            if a.name == name:
                return a
        raise KeyError(f"embodiment '{self.name}' has no arm '{name}'; arms: {[a.name for a in self.arms]}")

    def camera(self, slot: str) -> CameraSpec:
        for c in self.cameras:
            if c.slot == slot:
                return c
        raise KeyError(f"embodiment '{self.name}' has no camera '{slot}'; cameras: {[c.slot for c in self.cameras]}")


# ---------------------------------------------------------------------------------- locating files
_TOPIC_RE = re.compile(r"^(~/|/)?[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*$")
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _check_topic(topic: Any, what: str) -> None:
    if not isinstance(topic, str) or not _TOPIC_RE.match(topic):
        raise ValueError(
            f"{what} must be a ROS topic name (letters, digits, '_', separated by '/'), got {topic!r}"
        )


def _share_dir() -> Path | None:
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
    except ImportError:
        return None
    try:
        return Path(get_package_share_directory(PACKAGE_NAME))
    except PackageNotFoundError:
        return None


def _data_dir(kind: str) -> Path:
    # The source tree wins so an editable checkout never reads a stale installed copy.
    if (_SOURCE_ROOT / "package.xml").is_file() and (_SOURCE_ROOT / kind).is_dir():
        return _SOURCE_ROOT / kind
    share = _share_dir()
    if share is not None and (share / kind).is_dir():
        return share / kind
    raise EmbodimentConfigError(
        f"cannot find the {kind}/ folder: not in the source tree ({_SOURCE_ROOT / kind}) and "
        f"'{PACKAGE_NAME}' is not in the ament index (source the workspace's install/setup.bash)"
    )


def config_dir() -> Path:
    """The folder holding the embodiment YAML files (source tree, else share/vla_ros/config)."""
    return _data_dir("config")


def urdf_dir() -> Path:
    """The folder holding the shipped URDFs (source tree, else share/vla_ros/urdf)."""
    return _data_dir("urdf")


def available_embodiments() -> list[str]:
    """Names `load_embodiment` accepts (config/*.yaml stems, aliases included), sorted."""
    return sorted(p.stem for p in config_dir().glob("*.yaml"))


def _did_you_mean(word: str, options: Any) -> str:
    word, options = str(word), [str(o) for o in options]
    # a bare name whose qualified form exists ('waist' -> 'follower_left/waist') is the common slip
    qualified = [o for o in options if o.endswith("/" + word)]
    match = qualified or difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    if not match:
        return ""
    return "; did you mean " + " or ".join(f"'{m}'" for m in match) + "?"


# ---------------------------------------------------------------------------------- YAML reading
class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (plain YAML silently keeps the last one)."""


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # noqa: S506 - safe subclass
    except yaml.YAMLError as exc:
        raise EmbodimentConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise EmbodimentConfigError(f"{path}: expected a mapping of keys at the top level, got {type(data).__name__}")
    return data


# ---------------------------------------------------------------------------------- URDF facts
@dataclass(frozen=True)
class UrdfJoint:
    name: str
    kind: str  # revolute / continuous / prismatic / fixed / floating / planar
    parent: str
    child: str
    lower: float | None  # None: no position limit (continuous, or no <limit>)
    upper: float | None
    velocity: float | None


@dataclass(frozen=True)
class UrdfInfo:
    """The names and limits in a URDF that a config refers to (parsed with xml.etree)."""

    robot_name: str
    links: tuple[str, ...]
    joints: Mapping[str, UrdfJoint]

    @property
    def root_links(self) -> tuple[str, ...]:
        children = {j.child for j in self.joints.values()}
        return tuple(link for link in self.links if link not in children)

    @property
    def movable_joints(self) -> tuple[str, ...]:
        return tuple(n for n, j in self.joints.items() if j.kind not in ("fixed",))

    def chain(self, base: str, tip: str) -> tuple[str, ...] | None:
        """Joints from link `base` down to link `tip` (root-to-tip order), None if `tip` does
        not hang below `base`."""
        parent_joint = {j.child: j for j in self.joints.values()}
        joints: list[str] = []
        link = tip
        while link != base:
            joint = parent_joint.get(link)
            if joint is None:
                return None
            joints.append(joint.name)
            link = joint.parent
        return tuple(reversed(joints))


def parse_urdf(xml: str, source: str = "<urdf>") -> UrdfInfo:
    """Links, joints and limits of a URDF string; EmbodimentConfigError names `source` on bad XML."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise EmbodimentConfigError(f"{source}: URDF is not well-formed XML: {exc}") from exc
    if root.tag != "robot":
        raise EmbodimentConfigError(f"{source}: URDF root element must be <robot>, got <{root.tag}>")
    links = tuple(el.get("name", "") for el in root.findall("link"))
    joints: dict[str, UrdfJoint] = {}
    for el in root.findall("joint"):
        name = el.get("name", "")
        parent, child, limit = el.find("parent"), el.find("child"), el.find("limit")
        if parent is None or child is None:
            raise EmbodimentConfigError(f"{source}: joint '{name}' lacks <parent> or <child>")
        kind = el.get("type", "")
        lower = upper = velocity = None
        if limit is not None:
            try:
                velocity = float(limit.get("velocity")) if limit.get("velocity") is not None else None
                if kind in ("revolute", "prismatic"):
                    # URDF defaults: a missing lower/upper is 0
                    lower = float(limit.get("lower", 0.0))
                    upper = float(limit.get("upper", 0.0))
            except ValueError as exc:
                raise EmbodimentConfigError(f"{source}: joint '{name}' has a non-numeric <limit>: {exc}") from exc
        joints[name] = UrdfJoint(name, kind, parent.get("link", ""), child.get("link", ""), lower, upper, velocity)
    return UrdfInfo(root.get("name", ""), links, joints)


def apply_tf_prefix(xml: str, prefix: str) -> str:
    """Prefix every link and joint name (and the references to them) in a URDF string.

    The shipped URDFs carry bare names; a driver started with tf_prefix publishes prefixed ones.
    """
    if not prefix:
        return xml
    root = ET.fromstring(xml)
    # top-level <link>/<joint> and the <joint> entries of <ros2_control> blocks carry names
    named = [el for el in root if el.tag in ("link", "joint")]
    named += [el for block in root.iter("ros2_control") for el in block.iter("joint")]
    for el in named:
        if el.get("name") is not None:
            el.set("name", prefix + el.get("name"))
    for el in root.iter():
        if el.tag in ("parent", "child") and el.get("link") is not None:
            el.set("link", prefix + el.get("link"))
        elif el.tag == "mimic" and el.get("joint") is not None:
            el.set("joint", prefix + el.get("joint"))
    return ET.tostring(root, encoding="unicode")


def _resolve_package_path(package_path: str, context: str) -> Path:
    package, _, relative = package_path.partition("/")
    if not package or not relative:
        raise EmbodimentConfigError(
            f"{context}: urdf.package_path must be '<package>/<relative path>', got {package_path!r}"
        )
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
    except ImportError as exc:
        raise EmbodimentConfigError(
            f"{context}: urdf.package_path '{package_path}' needs ament_index_python (a ROS install)"
        ) from exc
    try:
        path = Path(get_package_share_directory(package)) / relative
    except PackageNotFoundError as exc:
        raise EmbodimentConfigError(
            f"{context}: urdf.package_path: package '{package}' is not in the ament index "
            "(is it installed and the workspace sourced?)"
        ) from exc
    if path.suffix == ".xacro":
        raise EmbodimentConfigError(
            f"{context}: urdf.package_path '{package_path}' is a xacro file; expand it with xacro first "
            "or use `topic: robot_description` of the running driver"
        )
    if not path.is_file():
        raise EmbodimentConfigError(f"{context}: urdf.package_path resolves to {path}, which does not exist")
    return path


def load_urdf_xml(spec: EmbodimentSpec, robot_description: str | None = None) -> str:
    """The URDF the embodiment refers to, with names as the config uses them.

    `robot_description` (e.g. received on the driver's robot_description topic) takes precedence
    and is used as it is; it is checked against the config (joints, frames, limits). A `file` or
    `package_path` source is read and gets `spec.tf_prefix` applied. A `topic` source without
    `robot_description` is an error: the core never touches ROS, the node fetches the string.
    """
    if robot_description is not None:
        validate_against_urdf(spec, parse_urdf(robot_description, "robot_description"), "robot_description")
        return robot_description
    source = spec.urdf
    if source.topic is not None:
        raise EmbodimentConfigError(
            f"{spec.config_path}: urdf.topic '{source.topic}': subscribe to it (reliable, transient local) "
            "and pass the string as robot_description"
        )
    if source.file is not None:
        path = Path(source.file)
    else:
        path = _resolve_package_path(str(source.package_path), spec.config_path)
    try:
        xml = path.read_text()
    except OSError as exc:
        raise EmbodimentConfigError(f"{spec.config_path}: cannot read URDF {path}: {exc}") from exc
    return apply_tf_prefix(xml, spec.tf_prefix)


# ---------------------------------------------------------------------------------- validation
_TOP_KEYS = (
    "description", "urdf", "world_frame", "tf_prefix", "command_rate_hz", "policy_period_s",
    "action_space", "arms", "cameras",
)
_REQUIRED_TOP = ("urdf", "world_frame", "command_rate_hz", "policy_period_s", "action_space", "arms")
_URDF_KEYS = ("file", "package_path", "topic")
_ARM_KEYS = (
    "namespace", "joint_names", "base_frame", "tool_frame", "limits", "home_rad", "command",
    "gripper", "workspace_min_m", "workspace_max_m", "driver_state",
)
_REQUIRED_ARM = ("joint_names", "base_frame", "tool_frame", "limits", "home_rad", "command",
                 "workspace_min_m", "workspace_max_m")
_LIMIT_KEYS = ("lower_rad", "upper_rad", "velocity_rad_s", "acceleration_rad_s2")
_COMMAND_KEYS = ("kind", "topic", "joint_names", "interface", "action")
_FRANKA_GRIPPER_KEYS = ("kind", "node", "interface", "homing", "speed_m_s", "force_n", "min_object_width_m",
                        "max_object_width_m", "close_below", "open_above")
_DRIVER_STATE_KEYS = ("program_running_topic", "speed_scaling_topic", "robot_state_topic", "min_speed_scaling")
_GRIPPER_KEYS = ("joint_name", "open_position", "closed_position", "command")
_CAMERA_KEYS = ("topic", "width", "height", "compressed")

# Relative tolerance when comparing config limits with the URDF's (text round-off).
_LIMIT_TOL = 1e-9


class _Ctx:
    """Where a value came from, for error messages: file + dotted key."""

    def __init__(self, path: str) -> None:
        self.path = path

    def error(self, key: str, message: str) -> EmbodimentConfigError:
        return EmbodimentConfigError(f"{self.path}: {key}: {message}" if key else f"{self.path}: {message}")

    def check_keys(self, mapping: Any, allowed: tuple[str, ...], key: str, required: tuple[str, ...] = ()) -> dict:
        if not isinstance(mapping, dict):
            raise self.error(key or "(top level)", f"expected a mapping with keys {list(allowed)}, got {mapping!r}")
        for k in mapping:
            if k not in allowed:
                where = f"{key}.{k}" if key else str(k)
                raise self.error(
                    where, f"unknown key '{k}'; valid keys here: {list(allowed)}{_did_you_mean(k, allowed)}"
                )
        missing = [k for k in required if k not in mapping]
        if missing:
            raise self.error(key or "(top level)", f"missing required key(s) {missing}")
        return mapping

    def number(self, value: Any, key: str, positive: bool = False) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self.error(key, f"expected a finite number, got {value!r}")
        if positive and value <= 0:
            raise self.error(key, f"expected a number > 0, got {value}")
        return float(value)

    def numbers(self, value: Any, key: str, length: int, allow_scalar: bool = False) -> np.ndarray:
        if allow_scalar and not isinstance(value, (list, tuple)):
            return np.full(length, self.number(value, key))
        if not isinstance(value, (list, tuple)):
            raise self.error(key, f"expected a list of {length} numbers, got {value!r}")
        if len(value) != length:
            raise self.error(key, f"expected {length} entries (one per joint/axis), got {len(value)}: {value}")
        return np.array([self.number(v, f"{key}[{i}]") for i, v in enumerate(value)])

    def name(self, value: Any, key: str, allow_empty: bool = False) -> str:
        if not isinstance(value, str) or (not value and not allow_empty):
            raise self.error(key, f"expected a non-empty string, got {value!r}")
        return value

    def names(self, value: Any, key: str) -> tuple[str, ...]:
        if not isinstance(value, (list, tuple)) or not value:
            raise self.error(key, f"expected a non-empty list of names, got {value!r}")
        out = tuple(self.name(v, f"{key}[{i}]") for i, v in enumerate(value))
        dup = sorted({n for n in out if out.count(n) > 1})
        if dup:
            raise self.error(key, f"names must be unique, repeated: {dup}")
        return out

    def build(self, key: str, factory: Any, *args: Any, **kwargs: Any) -> Any:
        """Construct a dataclass; its own ValueError becomes an error naming file and key."""
        try:
            return factory(*args, **kwargs)
        except EmbodimentConfigError:
            raise
        except ValueError as exc:
            raise self.error(key, str(exc)) from exc


def _deep_merge(base: dict, overrides: Mapping, ctx: _Ctx, allowed_top: tuple[str, ...]) -> dict:
    """Overrides as nested dicts or dotted keys ("arms.arm.tool_frame"); unknown keys are
    caught by the normal validation afterwards, naming 'overrides' only for new top-level keys."""
    merged = dict(base)
    for raw_key, value in overrides.items():
        parts = str(raw_key).split(".")
        if parts[0] not in allowed_top:
            raise ctx.error(
                str(raw_key), f"unknown override key '{parts[0]}'; valid keys: {list(allowed_top)}"
                f"{_did_you_mean(parts[0], allowed_top)}"
            )
        node = merged
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if not isinstance(child, dict):
                if child is not None:
                    raise ctx.error(".".join(parts[: depth + 1]), f"is not a mapping, cannot override '{raw_key}'")
                child = {}
            node[part] = child = dict(child)
            node = child
        leaf = parts[-1]
        if isinstance(value, Mapping) and isinstance(node.get(leaf), dict):
            node[leaf] = _deep_merge_plain(node[leaf], value)
        else:
            node[leaf] = value
    return merged


def _deep_merge_plain(base: dict, overrides: Mapping) -> dict:
    out = dict(base)
    for k, v in overrides.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _deep_merge_plain(out[k], v)
        else:
            out[k] = v
    return out


def _resolve_config_path(name_or_path: str) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or "/" in name_or_path or candidate.is_file():
        if not candidate.is_file():
            raise EmbodimentConfigError(f"embodiment config file '{name_or_path}' does not exist")
        return candidate.resolve()
    path = config_dir() / f"{name_or_path}.yaml"
    if not path.is_file():
        valid = available_embodiments()
        raise EmbodimentConfigError(
            f"unknown embodiment '{name_or_path}'; valid embodiments: {valid}{_did_you_mean(name_or_path, valid)}"
        )
    return path


def _resolve_urdf_source(raw: Any, ctx: _Ctx, config_path: Path) -> tuple[UrdfSource, Path | None]:
    ctx.check_keys(raw, _URDF_KEYS, "urdf")
    given = [k for k in _URDF_KEYS if raw.get(k) is not None]
    if len(given) != 1:
        raise ctx.error("urdf", f"give exactly one of {list(_URDF_KEYS)}, got {given or 'none'}")
    kind = given[0]
    value = ctx.name(raw[kind], f"urdf.{kind}")
    if kind == "topic":
        try:
            _check_topic(value, "urdf.topic")
        except ValueError as exc:
            raise ctx.error("urdf.topic", str(exc)) from exc
        return UrdfSource(topic=value), None
    if kind == "package_path":
        return UrdfSource(package_path=value), _resolve_package_path(value, ctx.path)
    path = Path(value)
    if path.is_absolute():
        candidates = [path]
    else:
        # a user's config beside its own URDF works too
        candidates = [urdf_dir() / path, config_path.parent / path]
    for c in candidates:
        if c.is_file():
            return UrdfSource(file=str(c.resolve())), c.resolve()
    shipped = sorted(p.name for p in urdf_dir().glob("*.urdf"))
    raise ctx.error(
        "urdf.file", f"'{value}' not found (looked in {[str(c.parent) for c in candidates]}); shipped URDFs: "
        f"{shipped}{_did_you_mean(value, shipped)}"
    )


def _check_urdf_name(ctx: _Ctx, info: UrdfInfo | None, key: str, name: str, kind: str) -> None:
    if info is None:
        return
    pool = info.links if kind == "link" else tuple(info.joints)
    if name not in pool:
        raise ctx.error(key, f"{kind} '{name}' is not in the URDF '{info.robot_name}'{_did_you_mean(name, pool)}")


def _command(raw: Any, ctx: _Ctx, key: str, namespace: str, default_joints: tuple[str, ...], prefix: str,
             info: UrdfInfo | None, kinds: tuple[str, ...] = COMMAND_KINDS) -> CommandInterface:
    ctx.check_keys(raw, _COMMAND_KEYS, key, required=("kind", "topic"))
    kind = raw["kind"]
    if kind not in kinds:
        raise ctx.error(f"{key}.kind", f"expected one of {list(kinds)}, got {kind!r}{_did_you_mean(kind, kinds)}")
    topic = ctx.name(raw["topic"], f"{key}.topic")
    try:
        _check_topic(topic, f"{key}.topic")
    except ValueError as exc:
        raise ctx.error(f"{key}.topic", str(exc)) from exc
    if namespace and not topic.startswith(("/", "~")):
        topic = f"{namespace}/{topic}"
    if "joint_names" in raw:
        joints = tuple(prefix + n for n in ctx.names(raw["joint_names"], f"{key}.joint_names"))
        for i, j in enumerate(joints):
            qualified = f"{namespace}/{j}" if namespace else j
            _check_urdf_name(ctx, info, f"{key}.joint_names[{i}]", qualified, "joint")
    else:
        joints = default_joints
    interface = raw.get("interface", "topic")
    if interface not in COMMAND_INTERFACES:
        raise ctx.error(f"{key}.interface", f"expected one of {list(COMMAND_INTERFACES)}, got {interface!r}"
                        f"{_did_you_mean(interface, COMMAND_INTERFACES)}")
    action = ""
    if "action" in raw:
        if interface != "follow_joint_trajectory":
            raise ctx.error(f"{key}.action", "only used with interface: follow_joint_trajectory")
        action = ctx.name(raw["action"], f"{key}.action")
        if namespace and not action.startswith(("/", "~")):
            action = f"{namespace}/{action}"
    return ctx.build(key, CommandInterface, kind, topic, joints, interface, action)


def _franka_gripper(raw: Any, ctx: _Ctx, key: str, namespace: str) -> FrankaGripperActions:
    ctx.check_keys(raw, _FRANKA_GRIPPER_KEYS, key, required=("kind", "node"))
    node = ctx.name(raw["node"], f"{key}.node")
    if namespace and not node.startswith("/"):
        node = f"{namespace}/{node}"
    interface = raw.get("interface", "grasp_move")
    if interface not in FRANKA_GRIPPER_INTERFACES:
        raise ctx.error(f"{key}.interface", f"expected one of {list(FRANKA_GRIPPER_INTERFACES)}, got {interface!r}"
                        f"{_did_you_mean(interface, FRANKA_GRIPPER_INTERFACES)}")
    values = {k: raw[k] for k in _FRANKA_GRIPPER_KEYS[3:] if k in raw}
    for k, v in values.items():
        if k != "homing":
            ctx.number(v, f"{key}.{k}")
    return ctx.build(key, FrankaGripperActions, node, interface, **values)


def _driver_state(raw: Any, ctx: _Ctx, key: str, namespace: str) -> DriverStateSpec:
    if raw is None:
        return DriverStateSpec()
    ctx.check_keys(raw, _DRIVER_STATE_KEYS, key)
    values: dict[str, Any] = {}
    for k in _DRIVER_STATE_KEYS[:3]:
        if raw.get(k):
            topic = ctx.name(raw[k], f"{key}.{k}")
            values[k] = f"{namespace}/{topic}" if namespace and not topic.startswith(("/", "~")) else topic
    if "min_speed_scaling" in raw:
        values["min_speed_scaling"] = ctx.number(raw["min_speed_scaling"], f"{key}.min_speed_scaling")
    return ctx.build(key, DriverStateSpec, **values)


def _urdf_limit(info: UrdfInfo | None, qualified: tuple[str, ...], attr: str) -> np.ndarray | None:
    """The URDF's limit `attr` for every joint, or None when the URDF lacks it for any joint."""
    if info is None:
        return None
    values = []
    for j in qualified:
        v = getattr(info.joints[j], attr)
        if v is None:
            return None
        values.append(v)
    return np.array(values)


def _limits(raw: Any, ctx: _Ctx, key: str, joints: tuple[str, ...], qualified: tuple[str, ...],
            info: UrdfInfo | None) -> JointLimits:
    ctx.check_keys(raw, _LIMIT_KEYS, key, required=("acceleration_rad_s2",))
    n = len(joints)
    resolved: dict[str, np.ndarray] = {}
    for attr, urdf_attr in (("lower_rad", "lower"), ("upper_rad", "upper"), ("velocity_rad_s", "velocity")):
        from_urdf = _urdf_limit(info, qualified, urdf_attr)
        if raw.get(attr) is not None:
            value = ctx.numbers(raw[attr], f"{key}.{attr}", n)
            if from_urdf is not None:
                # the config may tighten the URDF's limits, never widen them
                if attr == "lower_rad":
                    wider = value < from_urdf - _LIMIT_TOL * np.maximum(1.0, np.abs(from_urdf))
                else:
                    wider = value > from_urdf + _LIMIT_TOL * np.maximum(1.0, np.abs(from_urdf))
                if np.any(wider):
                    i = int(np.flatnonzero(wider)[0])
                    raise ctx.error(
                        f"{key}.{attr}[{i}]",
                        f"{value[i]} for joint '{joints[i]}' is wider than the URDF's {from_urdf[i]}; "
                        "the config may only tighten URDF limits",
                    )
            resolved[attr] = value
        elif from_urdf is not None:
            resolved[attr] = from_urdf
        else:
            why = "the URDF is only known at run time (urdf.topic)" if info is None else "the URDF gives none for some joint"
            raise ctx.error(f"{key}.{attr}", f"required: {why}; give {n} values in joint order")
    resolved["acceleration_rad_s2"] = ctx.numbers(raw["acceleration_rad_s2"], f"{key}.acceleration_rad_s2", n,
                                                  allow_scalar=True)
    return ctx.build(key, JointLimits, **resolved)


def _gripper(raw: Any, ctx: _Ctx, key: str, namespace: str, prefix: str, info: UrdfInfo | None) -> GripperSpec | None:
    if raw is None:
        return None
    ctx.check_keys(raw, _GRIPPER_KEYS, key, required=("joint_name", "open_position", "closed_position"))
    joint = prefix + ctx.name(raw["joint_name"], f"{key}.joint_name")
    qualified = f"{namespace}/{joint}" if namespace else joint
    _check_urdf_name(ctx, info, f"{key}.joint_name", qualified, "joint")
    open_pos = ctx.number(raw["open_position"], f"{key}.open_position")
    closed_pos = ctx.number(raw["closed_position"], f"{key}.closed_position")
    if info is not None:
        uj = info.joints[qualified]
        if uj.lower is not None and uj.upper is not None:
            for attr, v in (("open_position", open_pos), ("closed_position", closed_pos)):
                if not (uj.lower - 1e-9 <= v <= uj.upper + 1e-9):
                    raise ctx.error(
                        f"{key}.{attr}", f"{v} is outside the URDF limits [{uj.lower}, {uj.upper}] of '{qualified}'"
                    )
    command = actions = None
    raw_command = raw.get("command")
    if isinstance(raw_command, dict) and raw_command.get("kind") == "franka_gripper":
        actions = _franka_gripper(raw_command, ctx, f"{key}.command", namespace)
    elif raw_command is not None:
        command = _command(raw_command, ctx, f"{key}.command", namespace, (joint,), prefix, info,
                           kinds=(*COMMAND_KINDS, "franka_gripper"))
        if command.interface != "topic":
            raise ctx.error(f"{key}.command.interface", "a gripper command is a forward controller's topic")
    return ctx.build(key, GripperSpec, joint, open_pos, closed_pos, command, actions)


def _arm(name: Any, raw: Any, ctx: _Ctx, prefix: str, info: UrdfInfo | None) -> ArmSpec:
    key = f"arms.{name}"
    ctx.check_keys(raw, _ARM_KEYS, key, required=_REQUIRED_ARM)
    namespace = ctx.name(raw.get("namespace", ""), f"{key}.namespace", allow_empty=True)
    if namespace and not _NAME_RE.match(namespace):
        raise ctx.error(f"{key}.namespace", f"expected '' or a ROS name (letters, digits, '_'), got {namespace!r}")
    joints = tuple(prefix + j for j in ctx.names(raw["joint_names"], f"{key}.joint_names"))
    qualified = tuple(f"{namespace}/{j}" if namespace else j for j in joints)
    for i, j in enumerate(qualified):
        _check_urdf_name(ctx, info, f"{key}.joint_names[{i}]", j, "joint")
        if info is not None and info.joints[j].kind not in ("revolute", "continuous", "prismatic"):
            raise ctx.error(f"{key}.joint_names[{i}]", f"'{j}' is a {info.joints[j].kind} joint, not a movable one")
    frames = {}
    for fkey in ("base_frame", "tool_frame"):
        frame = prefix + ctx.name(raw[fkey], f"{key}.{fkey}")
        _check_urdf_name(ctx, info, f"{key}.{fkey}", frame, "link")
        frames[fkey] = frame
    if info is not None:
        # the arm joints must be exactly the movable joints between base and tool, or IK and the
        # workspace box would silently work on another chain
        chain = info.chain(frames["base_frame"], frames["tool_frame"])
        if chain is None:
            raise ctx.error(
                f"{key}.tool_frame", f"'{frames['tool_frame']}' does not hang below base_frame '{frames['base_frame']}' in the URDF"
            )
        movable = [j for j in chain if info.joints[j].kind != "fixed"]
        if sorted(movable) != sorted(qualified):
            raise ctx.error(
                f"{key}.joint_names", f"the joints between '{frames['base_frame']}' and '{frames['tool_frame']}' are "
                f"{movable}, but the arm lists {list(qualified)}"
            )
    limits = _limits(raw["limits"], ctx, f"{key}.limits", joints, qualified, info)
    home = ctx.numbers(raw["home_rad"], f"{key}.home_rad", len(joints))
    outside = np.flatnonzero((home < limits.lower_rad) | (home > limits.upper_rad))
    if outside.size:
        i = int(outside[0])
        raise ctx.error(
            f"{key}.home_rad[{i}]",
            f"{home[i]} for joint '{joints[i]}' is outside its limits [{limits.lower_rad[i]}, {limits.upper_rad[i]}]",
        )
    command = _command(raw["command"], ctx, f"{key}.command", namespace, joints, prefix, info)
    if set(command.joint_names) != set(joints) and command.kind == "joint_trajectory":
        # a JTC rejects goals that do not cover all of its joints
        raise ctx.error(
            f"{key}.command.joint_names", f"a joint_trajectory command must cover the arm joints {list(joints)}, "
            f"got {list(command.joint_names)}"
        )
    gripper = _gripper(raw.get("gripper"), ctx, f"{key}.gripper", namespace, prefix, info)
    wmin = ctx.numbers(raw["workspace_min_m"], f"{key}.workspace_min_m", 3)
    wmax = ctx.numbers(raw["workspace_max_m"], f"{key}.workspace_max_m", 3)
    bad = np.flatnonzero(wmin >= wmax)
    if bad.size:
        i = int(bad[0])
        raise ctx.error(
            f"{key}.workspace_min_m[{i}]", f"{wmin[i]} must be < workspace_max_m[{i}] = {wmax[i]} ({'xyz'[i]} axis)"
        )
    driver_state = _driver_state(raw.get("driver_state"), ctx, f"{key}.driver_state", namespace)
    return ctx.build(
        key, ArmSpec, str(name), namespace, joints, frames["base_frame"], frames["tool_frame"], limits, home,
        command, gripper, wmin, wmax, driver_state,
    )


def _camera(slot: Any, raw: Any, ctx: _Ctx) -> CameraSpec:
    key = f"cameras.{slot}"
    ctx.check_keys(raw, _CAMERA_KEYS, key, required=("width", "height"))
    topic = raw.get("topic", f"cameras/{slot}/image_raw")
    return ctx.build(key, CameraSpec, str(slot), topic, raw.get("compressed", False), raw["width"], raw["height"])


def validate_against_urdf(spec: EmbodimentSpec, info: UrdfInfo, source: str) -> None:
    """Check a loaded spec against a URDF known only at run time (e.g. robot_description):
    every joint and frame must exist and the spec's limits must lie within the URDF's."""
    ctx = _Ctx(f"{spec.config_path} (checked against {source})")
    if spec.world_frame not in info.root_links:
        raise ctx.error("world_frame", f"'{spec.world_frame}' is not the URDF root; roots: {list(info.root_links)}")
    for arm in spec.arms:
        key = f"arms.{arm.name}"
        for i, j in enumerate(arm.qualified_joint_names):
            _check_urdf_name(ctx, info, f"{key}.joint_names[{i}]", j, "joint")
            uj = info.joints[j]
            if uj.lower is not None and (arm.limits.lower_rad[i] < uj.lower - 1e-9 or arm.limits.upper_rad[i] > uj.upper + 1e-9):
                raise ctx.error(
                    f"{key}.limits", f"joint '{j}' limits [{arm.limits.lower_rad[i]}, {arm.limits.upper_rad[i]}] "
                    f"exceed the URDF's [{uj.lower}, {uj.upper}]"
                )
        _check_urdf_name(ctx, info, f"{key}.base_frame", arm.base_frame, "link")
        _check_urdf_name(ctx, info, f"{key}.tool_frame", arm.tool_frame, "link")
        if arm.gripper is not None:
            _check_urdf_name(ctx, info, f"{key}.gripper.joint_name", arm.qualified(arm.gripper.joint_name), "joint")


def load_embodiment(name_or_path: str, overrides: Mapping[str, Any] | None = None) -> EmbodimentSpec:
    """Load and validate an embodiment config.

    name_or_path: a config name (`available_embodiments()`, e.g. "fr3", "franka", "ur5e",
                  "aloha") or a path to a YAML file.
    overrides:    values merged over the file before validation, as nested mappings
                  ({"arms": {"arm": {"tool_frame": "tool0"}}}) or dotted keys
                  ({"arms.arm.tool_frame": "tool0", "policy_period_s": 0.05}).
    Raises EmbodimentConfigError naming the file, the key and what was expected.
    """
    path = _resolve_config_path(str(name_or_path))
    raw = _read_yaml(path)
    if "alias" in raw:
        # an alias file holds only `alias:` (and comments); following it keeps one source of truth
        ctx = _Ctx(str(path))
        ctx.check_keys(raw, ("alias",), "")
        target = ctx.name(raw["alias"], "alias")
        target_path = path.parent / f"{target}.yaml"
        if not target_path.is_file():
            valid = sorted(p.stem for p in path.parent.glob("*.yaml"))
            raise ctx.error("alias", f"names '{target}', which has no config; valid: {valid}{_did_you_mean(target, valid)}")
        if "alias" in _read_yaml(target_path):
            raise ctx.error("alias", f"'{target}' is itself an alias; point at the real config")
        return load_embodiment(str(target_path), overrides)
    ctx = _Ctx(str(path))
    if overrides:
        raw = _deep_merge(raw, overrides, _Ctx(f"{path} (overrides)"), _TOP_KEYS)
    ctx.check_keys(raw, _TOP_KEYS, "", required=_REQUIRED_TOP)

    prefix = ctx.name(raw.get("tf_prefix", ""), "tf_prefix", allow_empty=True)
    if prefix and not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", prefix):
        raise ctx.error("tf_prefix", f"expected letters, digits and '_' (e.g. 'left_'), got {prefix!r}")
    source, urdf_path = _resolve_urdf_source(raw["urdf"], ctx, path)
    info = None
    if urdf_path is not None:
        info = parse_urdf(apply_tf_prefix(urdf_path.read_text(), prefix), str(urdf_path))

    world = prefix + ctx.name(raw["world_frame"], "world_frame")
    if info is not None and world not in info.root_links:
        raise ctx.error(
            "world_frame", f"'{world}' must be the URDF's root link; the root is {list(info.root_links)}"
            f"{_did_you_mean(world, info.links)}"
        )
    rate = ctx.number(raw["command_rate_hz"], "command_rate_hz", positive=True)
    period = ctx.number(raw["policy_period_s"], "policy_period_s", positive=True)
    if period * rate < 1.0 - 1e-9:
        raise ctx.error(
            "policy_period_s", f"{period} s is shorter than one controller cycle (command_rate_hz={rate}); "
            f"expected >= {1.0 / rate} s"
        )
    space = raw["action_space"]
    if space not in ACTION_SPACES:
        raise ctx.error("action_space", f"expected one of {list(ACTION_SPACES)}, got {space!r}{_did_you_mean(space, ACTION_SPACES)}")

    arms_raw = raw["arms"]
    if not isinstance(arms_raw, dict) or not arms_raw:
        raise ctx.error("arms", f"expected a mapping of arm name -> arm settings, got {arms_raw!r}")
    arms = tuple(_arm(name, arm_raw, ctx, prefix, info) for name, arm_raw in arms_raw.items())
    seen: dict[str, str] = {}
    for arm in arms:
        for j in arm.qualified_joint_names:
            if j in seen:
                raise ctx.error(f"arms.{arm.name}.joint_names", f"joint '{j}' also belongs to arm '{seen[j]}'")
            seen[j] = arm.name
    if len(arms) > 1 and any(not a.namespace for a in arms):
        raise ctx.error("arms", "with several arms every arm needs its own namespace (their driver topics would clash)")

    cameras_raw = raw.get("cameras") or {}
    if not isinstance(cameras_raw, dict):
        raise ctx.error("cameras", f"expected a mapping of slot -> camera settings, got {cameras_raw!r}")
    cameras = tuple(_camera(slot, cam, ctx) for slot, cam in cameras_raw.items())
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise ctx.error("description", f"expected text, got {description!r}")

    return EmbodimentSpec(
        name=path.stem,
        config_path=str(path),
        urdf=source,
        world_frame=world,
        arms=arms,
        command_rate_hz=rate,
        policy_period_s=period,
        action_space=space,
        cameras=cameras,
        tf_prefix=prefix,
        description=description,
    )
