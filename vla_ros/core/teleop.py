"""Teleoperation logic without ROS: device mappings, and the sessions that turn device input
into action chunks (time is always passed in).

Teleop is just another action source: every device ends in an action chunk on `action_chunk`
(doc/INTERFACES.md), and the controller's IK, safety envelope and chunk watchdog do the rest.

Cartesian devices (gamepad `sensor_msgs/Joy`, SpaceMouse `geometry_msgs/Twist` + `Joy`,
keyboard) -> `CartesianSession` -> `ee_delta` chunks:
- device values in [-1, 1] per motion channel (x y z roll pitch yaw), after a scaled deadband
  (`sign(a) * max(0, |a| - d) / (1 - d)`, so the output still spans [-1, 1]);
- velocity = value x `linear_speed_m_s` / `angular_speed_rad_s` x speed scale (x `turbo_factor`
  while the turbo button is held), in the base frame or the tool frame (switchable). ee_delta
  translation is in the base frame, so a tool-frame command is rotated into it with the
  *measured* tool pose (forward kinematics of the measured joints);
- a chunk of `steps = round(horizon_s / period) + 1` rows at the embodiment's policy period:
  row 0 is zero (the reference pose at the stamp), rows 1.. move by v*period and rotate by
  exp([w] period) (R_i = R_delta R_(i-1), about the tool point, as the ee_delta convention says),
  so consecutive chunks continue one straight, constant-speed motion;
- only while the dead-man is held and the input is fresh (silent for `input_timeout_s`, 0.1 s as
  MoveIt Servo's default, = not fresh). When that ends (release, timeout, refused input, stop)
  one *stop chunk* is sent -- brake to rest within one row (half a row of motion at the last
  twist, then zero rows) from the pose commanded at its stamp -- and then nothing: the
  controller holds at rest. A dead teleop node sends nothing more: the arm stops
  when its last (short) chunk runs out;
- gripper: toggle button, and hold-to-close (closed while held); absolute [0, 1] value (1 = open)
  in every chunk; its initial state is the measured gripper;
- episode buttons (start, save, discard) are reported as events for the node to call the
  recorder's services.

ALOHA leader arms -> `LeaderSession` -> `joint_position` chunks: each follower gets its leader's
joints, and the leader gripper joint is normalised with the leader's open/close constants
(0.8298 / -0.0552 rad, ALOHA 2) so the follower gets the same opening. Mirroring starts on
ALOHA's gesture (both leader grippers squeezed closed) and only when every leader joint is within
`engage_tolerance_rad` of its follower's; a leader up to `max_approach_rad` away is reached by a
slow approach (joints at most `approach_speed_rad_s`), farther is refused with a message naming
the joint and how far off it is, and the arm holds.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import yaml

from vla_ros.core.action_spaces import EE_DELTA_FIELDS, action_names, matrix_to_rpy
from vla_ros.core.embodiment import EmbodimentSpec, config_dir
from vla_ros.core.types import ActionChunk

DEVICES: tuple[str, ...] = ("joy", "spacemouse", "keyboard", "leader")
MOTION_CHANNELS: tuple[str, ...] = EE_DELTA_FIELDS  # x y z roll pitch yaw
FRAMES: tuple[str, ...] = ("base", "tool")
EPISODE_ACTIONS: tuple[str, ...] = ("start_episode", "save_episode", "discard_episode")
BUTTON_ACTIONS: tuple[str, ...] = ("deadman", "turbo", "gripper_toggle", "gripper_close", "frame_switch",
                                   "speed_up", "speed_down", "stop", *EPISODE_ACTIONS)
KEY_ACTIONS: tuple[str, ...] = ("gripper_toggle", "frame_switch", "speed_up", "speed_down", "stop", "quit",
                                *EPISODE_ACTIONS)
DEFAULT_MAPPINGS: dict[str, str] = {"joy": "gamepad", "spacemouse": "spacemouse", "keyboard": "keyboard",
                                    "leader": "aloha_leaders"}
BUTTON_MODES: tuple[str, ...] = ("state", "events")
# speed_up / speed_down multiply the speed scale by speed_step, within these bounds
MIN_SPEED_SCALE, MAX_SPEED_SCALE = 0.125, 2.0
# an axis a hair past +-1 is float noise from a driver; beyond this it is a malformed message
_AXIS_TOLERANCE = 1e-3


class TeleopConfigError(ValueError):
    """A device mapping YAML that cannot be used (message: file, key, what was expected)."""


class InputRefused(ValueError):
    """A device message that cannot be used (NaN axes, missing buttons, unknown joints ...)."""


# ---------------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class AxisSource:
    """One motion channel: a Joy axis (times `sign`), or a pair of buttons (+1 / -1)."""

    axis: int | None = None
    buttons: tuple[int, int] | None = None
    sign: float = 1.0


@dataclass(frozen=True)
class ButtonSource:
    """One action: a Joy button, or an axis past a threshold (analog triggers)."""

    button: int | None = None
    axis: int | None = None
    threshold: float = 0.0
    below: bool = False  # pressed when value <= threshold (else >= threshold)


@dataclass(frozen=True)
class CartesianTeleopConfig:
    """A gamepad, SpaceMouse or keyboard mapping (config/teleop/<name>.yaml)."""

    name: str
    source: str
    device: str
    rate_hz: float = 20.0
    input_timeout_s: float = 0.1
    horizon_s: float = 0.3
    deadband: float = 0.1
    linear_speed_m_s: float = 0.1
    angular_speed_rad_s: float = 0.4
    turbo_factor: float = 2.0
    speed_step: float = 1.25
    frame: str = "base"
    joy_topic: str = "joy"
    twist_topic: str = ""
    button_mode: str = "state"
    twist_full_scale_linear: float = 1.0
    twist_full_scale_angular: float = 1.0
    motion: Mapping[str, AxisSource] = field(default_factory=dict)
    buttons: Mapping[str, ButtonSource] = field(default_factory=dict)
    keys: Mapping[str, str] = field(default_factory=dict)  # key -> "+x" / "-yaw" / action
    key_hold_s: float = 0.5


@dataclass(frozen=True)
class LeaderConfig:
    """ALOHA leader -> follower mirroring (config/teleop/aloha_leaders.yaml)."""

    name: str
    source: str
    leaders: Mapping[str, str]  # follower arm name -> leader namespace
    joint_names: tuple[str, ...] | None = None  # leader joints in the follower's joint order (None: same names)
    gripper_joint: str = "gripper"
    gripper_open: float = 0.8298
    gripper_closed: float = -0.0552
    rate_hz: float = 50.0
    input_timeout_s: float = 0.1
    horizon_s: float = 0.1
    gesture_gripper_max: float = 0.1
    engage_tolerance_rad: float = 0.1
    max_approach_rad: float = 0.6
    approach_speed_rad_s: float = 0.25
    max_tracking_error_rad: float = 0.5

    device: str = "leader"

    def leader_topic(self, follower: str) -> str:
        return f"{self.leaders[follower]}/joint_states"

    def normalise_gripper(self, joint_rad: float) -> float:
        return (float(joint_rad) - self.gripper_closed) / (self.gripper_open - self.gripper_closed)


class _Reader:
    """Checks one YAML mapping; errors say the file, the dotted key and what was expected."""

    def __init__(self, path: str) -> None:
        self.path = path

    def error(self, key: str, message: str) -> TeleopConfigError:
        return TeleopConfigError(f"{self.path}: {key}: {message}")

    def keys(self, mapping: Any, allowed: Sequence[str], key: str) -> dict:
        if not isinstance(mapping, dict):
            raise self.error(key, f"expected a mapping, got {mapping!r}")
        for k in mapping:
            if k not in allowed:
                close = difflib.get_close_matches(str(k), allowed, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else f"; allowed: {list(allowed)}"
                raise self.error(f"{key}.{k}" if key else str(k), f"unknown key{hint}")
        return mapping

    def number(self, value: Any, key: str, positive: bool = False, lo: float | None = None,
               hi: float | None = None) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self.error(key, f"expected a finite number, got {value!r}")
        if positive and not value > 0:
            raise self.error(key, f"expected a number > 0, got {value}")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise self.error(key, f"expected a number in [{lo}, {hi}], got {value}")
        return float(value)

    def index(self, value: Any, key: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self.error(key, f"expected an index >= 0, got {value!r}")
        return int(value)

    def text(self, value: Any, key: str, choices: Sequence[str] | None = None) -> str:
        if not isinstance(value, str) or not value:
            raise self.error(key, f"expected a non-empty string, got {value!r}")
        if choices is not None and value not in choices:
            close = difflib.get_close_matches(value, choices, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise self.error(key, f"expected one of {list(choices)}, got '{value}'{hint}")
        return value


def teleop_config_dir() -> Path:
    """The folder of the shipped device mappings (config/teleop, source tree or share/vla_ros)."""
    return config_dir() / "teleop"


def available_mappings() -> list[str]:
    return sorted(p.stem for p in teleop_config_dir().glob("*.yaml"))


def _resolve(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.is_file():
        if not p.is_file():
            raise TeleopConfigError(f"teleop mapping file '{name_or_path}' does not exist")
        return p
    candidate = teleop_config_dir() / f"{name_or_path}.yaml"
    if not candidate.is_file():
        names = available_mappings()
        close = difflib.get_close_matches(name_or_path, names, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise TeleopConfigError(f"unknown teleop mapping '{name_or_path}': shipped mappings are {names}{hint}, "
                                f"or give a YAML path")
    return candidate


_CARTESIAN_KEYS = ("device", "description", "rate_hz", "input_timeout_s", "horizon_s", "deadband",
                   "linear_speed_m_s", "angular_speed_rad_s", "turbo_factor", "speed_step", "frame",
                   "joy_topic", "twist_topic", "button_mode", "twist_full_scale", "motion", "buttons",
                   "keys", "key_hold_s")
_LEADER_KEYS = ("device", "description", "leaders", "joint_names", "gripper_joint", "gripper_open",
                "gripper_closed", "rate_hz", "input_timeout_s", "horizon_s", "gesture_gripper_max",
                "engage_tolerance_rad", "max_approach_rad", "approach_speed_rad_s", "max_tracking_error_rad")


def load_teleop_config(name_or_path: str) -> CartesianTeleopConfig | LeaderConfig:
    """A shipped mapping by name (`gamepad`, `xbox_joy_node`, `spacemouse`, `keyboard`,
    `aloha_leaders`) or a YAML path, validated; TeleopConfigError names the file and key."""
    path = _resolve(name_or_path)
    r = _Reader(str(path))
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise TeleopConfigError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise TeleopConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    device = r.text(data.get("device"), "device", DEVICES)
    if device == "leader":
        return _leader_config(r, path, r.keys(data, _LEADER_KEYS, ""))
    return _cartesian_config(r, path, device, r.keys(data, _CARTESIAN_KEYS, ""))


def _cartesian_config(r: _Reader, path: Path, device: str, data: dict) -> CartesianTeleopConfig:
    kw: dict[str, Any] = {}
    for key in ("rate_hz", "input_timeout_s", "horizon_s", "linear_speed_m_s", "angular_speed_rad_s",
                "key_hold_s"):
        if key in data:
            kw[key] = r.number(data[key], key, positive=True)
    if "deadband" in data:
        kw["deadband"] = r.number(data["deadband"], "deadband", lo=0.0, hi=0.9)
    for key in ("turbo_factor", "speed_step"):
        if key in data:
            kw[key] = r.number(data[key], key, lo=1.0, hi=10.0)
    if "frame" in data:
        kw["frame"] = r.text(data["frame"], "frame", FRAMES)
    for key in ("joy_topic", "twist_topic"):
        if key in data:
            kw[key] = r.text(data[key], key)
    if "button_mode" in data:
        kw["button_mode"] = r.text(data["button_mode"], "button_mode", BUTTON_MODES)
    if "twist_full_scale" in data:
        scale = r.keys(data["twist_full_scale"], ("linear", "angular"), "twist_full_scale")
        kw["twist_full_scale_linear"] = r.number(scale.get("linear", 1.0), "twist_full_scale.linear", positive=True)
        kw["twist_full_scale_angular"] = r.number(scale.get("angular", 1.0), "twist_full_scale.angular",
                                                  positive=True)
    motion: dict[str, AxisSource] = {}
    for channel, raw in r.keys(data.get("motion", {}) or {}, MOTION_CHANNELS, "motion").items():
        key = f"motion.{channel}"
        spec = r.keys(raw, ("axis", "buttons", "sign"), key)
        sign = r.number(spec.get("sign", 1.0), f"{key}.sign")
        if sign not in (1.0, -1.0):
            raise r.error(f"{key}.sign", f"expected 1 or -1, got {sign}")
        if ("axis" in spec) == ("buttons" in spec):
            raise r.error(key, "give exactly one of 'axis: INDEX' or 'buttons: [POSITIVE, NEGATIVE]'")
        if "axis" in spec:
            motion[channel] = AxisSource(axis=r.index(spec["axis"], f"{key}.axis"), sign=sign)
        else:
            pair = spec["buttons"]
            if not isinstance(pair, list) or len(pair) != 2:
                raise r.error(f"{key}.buttons", f"expected [POSITIVE, NEGATIVE] button indices, got {pair!r}")
            motion[channel] = AxisSource(buttons=(r.index(pair[0], f"{key}.buttons[0]"),
                                                  r.index(pair[1], f"{key}.buttons[1]")), sign=sign)
    buttons: dict[str, ButtonSource] = {}
    for action, raw in r.keys(data.get("buttons", {}) or {}, BUTTON_ACTIONS, "buttons").items():
        key = f"buttons.{action}"
        spec = r.keys(raw, ("button", "axis", "below", "above"), key)
        if "button" in spec:
            if len(spec) != 1:
                raise r.error(key, "a button source is just 'button: INDEX'")
            buttons[action] = ButtonSource(button=r.index(spec["button"], f"{key}.button"))
        elif "axis" in spec and (("below" in spec) != ("above" in spec)):
            below = "below" in spec
            threshold = r.number(spec["below" if below else "above"], f"{key}.{'below' if below else 'above'}",
                                 lo=-1.0, hi=1.0)
            buttons[action] = ButtonSource(axis=r.index(spec["axis"], f"{key}.axis"), threshold=threshold,
                                           below=below)
        else:
            raise r.error(key, "expected 'button: INDEX' or 'axis: INDEX' with one of 'below: T' / 'above: T'")
    keys: dict[str, str] = {}
    motion_words = [f"{s}{c}" for c in MOTION_CHANNELS for s in "+-"]
    for key_name, action in r.keys(data.get("keys", {}) or {}, _AnyKey(), "keys").items():
        ch = _key_char(r, key_name)
        if ch.isalpha() and ch.isupper():
            raise r.error(f"keys.{key_name}", "bind lower-case letters (Shift + letter is the turbo of that key)")
        keys[ch] = r.text(action, f"keys.{key_name}", motion_words + list(KEY_ACTIONS))
    if device in ("joy", "spacemouse") and "deadman" not in buttons:
        raise r.error("buttons.deadman", f"a {device} mapping needs a dead-man button")
    if device == "spacemouse" and not kw.get("twist_topic"):
        raise r.error("twist_topic", "a spacemouse mapping needs the Twist topic (spacenav/twist)")
    if device == "keyboard" and not keys:
        raise r.error("keys", "a keyboard mapping needs key bindings")
    return CartesianTeleopConfig(name=path.stem, source=str(path), device=device, motion=motion, buttons=buttons,
                                 keys=keys, **kw)


class _AnyKey(tuple):
    """`keys` accepts any key name (checked by _key_char)."""

    def __contains__(self, item: object) -> bool:
        return True


def _key_char(r: _Reader, key_name: Any) -> str:
    if key_name == "space":
        return " "
    if isinstance(key_name, int) and 0 <= key_name <= 9:
        return str(key_name)
    if not isinstance(key_name, str) or len(key_name) != 1 or not key_name.isprintable():
        raise r.error(f"keys.{key_name}", "expected a single printable character or 'space'")
    return key_name


def _leader_config(r: _Reader, path: Path, data: dict) -> LeaderConfig:
    leaders_raw = data.get("leaders")
    if not isinstance(leaders_raw, dict) or not leaders_raw:
        raise r.error("leaders", f"expected a mapping follower arm -> leader namespace, got {leaders_raw!r}")
    leaders = {str(k): r.text(v, f"leaders.{k}") for k, v in leaders_raw.items()}
    kw: dict[str, Any] = {}
    for key in ("rate_hz", "input_timeout_s", "horizon_s", "engage_tolerance_rad", "max_approach_rad",
                "approach_speed_rad_s", "max_tracking_error_rad"):
        if key in data:
            kw[key] = r.number(data[key], key, positive=True)
    for key in ("gripper_open", "gripper_closed"):
        if key in data:
            kw[key] = r.number(data[key], key)
    if "gesture_gripper_max" in data:
        kw["gesture_gripper_max"] = r.number(data["gesture_gripper_max"], "gesture_gripper_max", lo=0.0, hi=1.0)
    if "gripper_joint" in data:
        kw["gripper_joint"] = r.text(data["gripper_joint"], "gripper_joint")
    if data.get("joint_names") is not None:
        names = data["joint_names"]
        if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
            raise r.error("joint_names", f"expected a list of leader joint names, got {names!r}")
        kw["joint_names"] = tuple(names)
    cfg = LeaderConfig(name=path.stem, source=str(path), leaders=leaders, **kw)
    if cfg.gripper_open == cfg.gripper_closed:
        raise r.error("gripper_open", f"must differ from gripper_closed ({cfg.gripper_closed})")
    if cfg.engage_tolerance_rad > cfg.max_approach_rad:
        raise r.error("engage_tolerance_rad", f"must be <= max_approach_rad ({cfg.max_approach_rad})")
    return cfg


# ---------------------------------------------------------------------------------- pure helpers
def apply_deadband(value: np.ndarray | float, deadband: float) -> np.ndarray:
    """Scaled deadband: 0 inside +-deadband, then linear from 0 to +-1 at full deflection."""
    a = np.asarray(value, dtype=np.float64)
    return np.sign(a) * np.maximum(0.0, np.abs(a) - deadband) / (1.0 - deadband)


def rotation_from_vector(rotvec: np.ndarray) -> np.ndarray:
    """exp([w]x): the rotation by |w| rad about w (Rodrigues)."""
    w = np.asarray(rotvec, dtype=np.float64)
    theta = float(np.linalg.norm(w))
    if theta < 1e-12:
        return np.eye(3)
    k = w / theta
    kx = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + math.sin(theta) * kx + (1.0 - math.cos(theta)) * (kx @ kx)


def chunk_steps(horizon_s: float, period_s: float) -> int:
    """Rows of a teleop chunk: row 0 at the stamp, the last one `horizon_s` later (at least 2)."""
    return max(2, int(round(horizon_s / period_s)) + 1)


def twist_rows(linear_m_s: np.ndarray, angular_rad_s: np.ndarray, period_s: float, steps: int) -> np.ndarray:
    """(steps, 6) ee_delta rows (x y z roll pitch yaw) for a constant base-frame twist: row 0 is
    zero (the reference pose at the stamp), every later row moves v*period and rotates by
    exp([w] period) -- a constant-speed motion from the pose at the stamp."""
    rows = np.zeros((steps, 6))
    rows[1:, :3] = np.asarray(linear_m_s, dtype=np.float64) * period_s
    rows[1:, 3:] = matrix_to_rpy(rotation_from_vector(np.asarray(angular_rad_s, dtype=np.float64) * period_s))
    return rows


def ee_delta_chunk(spec: EmbodimentSpec, arm: str, rows: np.ndarray, grippers: Mapping[str, float],
                   stamp_s: float) -> ActionChunk:
    """An ee_delta chunk for `spec` that moves `arm` by `rows` (steps, 6); other arms keep still;
    grippers: {arm: normalised value} (arms with a gripper; absent -> open)."""
    names = action_names(spec, "ee_delta")
    steps = rows.shape[0]
    values = np.zeros((steps, len(names)))
    for a in spec.arms:
        p = f"{a.namespace}/" if a.namespace else ""
        if a.name == arm:
            for k, f in enumerate(MOTION_CHANNELS):
                values[:, names.index(f"{p}ee_delta/{f}")] = rows[:, k]
        if a.gripper is not None:
            values[:, names.index(p + "gripper")] = float(grippers.get(a.name, 1.0))
    return ActionChunk(names, values, spec.policy_period_s, stamp_s)


@dataclass(frozen=True)
class TeleopOutput:
    """What one input or tick produced: chunks to publish (in order), episode events for the
    recorder, and log messages (level: info | warn | error)."""

    chunks: tuple[ActionChunk, ...] = ()
    events: tuple[str, ...] = ()
    messages: tuple[tuple[str, str], ...] = ()

    def __add__(self, other: TeleopOutput) -> TeleopOutput:
        return TeleopOutput(self.chunks + other.chunks, self.events + other.events, self.messages + other.messages)


# ---------------------------------------------------------------------------------- device mapping
@dataclass(frozen=True)
class DeviceReading:
    motion: np.ndarray | None  # (6,) in [-1, 1] after the deadband; None: this message carries no motion
    held: frozenset[str]  # actions whose button is held now


class JoyMapper:
    """sensor_msgs/Joy (axes, buttons) -> DeviceReading through a mapping.

    `button_mode: state` (the joy package): every message carries every button's state.
    `button_mode: events` (spacenav): a message carries one button event, `buttons` sized to that
    button's index + 1; empty `buttons` = no button change. Button states are kept between
    messages."""

    def __init__(self, config: CartesianTeleopConfig) -> None:
        self.config = config
        self._events_state: dict[int, int] = {}

    def _required(self) -> tuple[int, int]:
        """(axes, buttons) a full-state message must at least have."""
        axes = [s.axis for s in self.config.motion.values() if s.axis is not None]
        axes += [b.axis for b in self.config.buttons.values() if b.axis is not None]
        buttons = [b.button for b in self.config.buttons.values() if b.button is not None]
        for s in self.config.motion.values():
            if s.buttons is not None:
                buttons.extend(s.buttons)
        return (max(axes) + 1 if axes else 0), (max(buttons) + 1 if buttons else 0)

    def read(self, axes: Sequence[float], buttons: Sequence[int], with_motion: bool = True) -> DeviceReading:
        cfg = self.config
        a = np.asarray(list(axes), dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(a))
        if bad.size:
            raise InputRefused(f"{cfg.device} message refused: axes {bad.tolist()} are not finite "
                               f"({[float(a[i]) for i in bad]}); the arm holds")
        out = np.flatnonzero(np.abs(a) > 1.0 + _AXIS_TOLERANCE)
        if out.size:
            raise InputRefused(f"{cfg.device} message refused: axes {out.tolist()} = {[float(a[i]) for i in out]} "
                               f"are outside [-1, 1]; the arm holds")
        b = [int(v) for v in buttons]
        weird = [i for i, v in enumerate(b) if v not in (0, 1)]
        if weird:
            raise InputRefused(f"{cfg.device} message refused: buttons {weird} have values {[b[i] for i in weird]} "
                               f"(a button is 0 or 1); the arm holds")
        need_axes, need_buttons = self._required()
        if with_motion and len(a) < need_axes:
            raise InputRefused(
                f"{cfg.device} message refused: mapping '{cfg.name}' ({cfg.source}) reads axis {need_axes - 1} but "
                f"the message has {len(a)} axes: unknown device or wrong mapping; the arm holds")
        if cfg.button_mode == "events":
            if b:
                self._events_state[len(b) - 1] = b[-1]
            state = self._events_state
        else:
            if len(b) < need_buttons:
                raise InputRefused(
                    f"{cfg.device} message refused: mapping '{cfg.name}' ({cfg.source}) reads button "
                    f"{need_buttons - 1} but the message has {len(b)} buttons: unknown device or wrong mapping; "
                    f"the arm holds")
            state = dict(enumerate(b))
        held = set()
        for action, src in cfg.buttons.items():
            if src.button is not None:
                pressed = state.get(src.button, 0) == 1
            elif src.axis is not None and src.axis < len(a):
                v = a[src.axis]
                pressed = v <= src.threshold if src.below else v >= src.threshold
            else:
                pressed = False
            if pressed:
                held.add(action)
        motion = None
        if with_motion:
            motion = np.zeros(6)
            for k, channel in enumerate(MOTION_CHANNELS):
                src = cfg.motion.get(channel)
                if src is None:
                    continue
                if src.axis is not None:
                    motion[k] = src.sign * float(apply_deadband(a[src.axis], cfg.deadband))
                else:
                    pos, neg = src.buttons
                    motion[k] = src.sign * (float(state.get(pos, 0) == 1) - float(state.get(neg, 0) == 1))
            motion = np.clip(motion, -1.0, 1.0)
        return DeviceReading(motion, frozenset(held))

    def read_twist(self, linear: Sequence[float], angular: Sequence[float]) -> np.ndarray:
        """geometry_msgs/Twist (spacenav) -> (6,) motion in [-1, 1] after the deadband."""
        cfg = self.config
        v = np.concatenate([np.asarray(linear, dtype=np.float64) / cfg.twist_full_scale_linear,
                            np.asarray(angular, dtype=np.float64) / cfg.twist_full_scale_angular])
        bad = [MOTION_CHANNELS[i] for i in np.flatnonzero(~np.isfinite(v))]
        if bad:
            raise InputRefused(f"twist message refused: {bad} are not finite; the arm holds")
        # spacenav's raw counts can exceed its full_scale a little: saturate, do not refuse
        return np.clip(apply_deadband(np.clip(v, -1.0, 1.0), cfg.deadband), -1.0, 1.0)


# ---------------------------------------------------------------------------------- Cartesian session
class CartesianSession:
    """Gamepad / SpaceMouse / keyboard -> ee_delta chunks. Every method takes the time and
    returns a TeleopOutput; see the module docstring for the rules.

    kinematics: a RobotKinematics of `spec` (needed for the tool frame). arm: the arm driven
    (default: the first). max_stamp_offset_s: input stamped further than this from the node's
    clock is refused (unsynchronised clocks would make every chunk stale to the controller)."""

    def __init__(self, spec: EmbodimentSpec, config: CartesianTeleopConfig, kinematics: Any = None,
                 arm: str | None = None, max_stamp_offset_s: float = 0.5) -> None:
        if config.device not in ("joy", "spacemouse", "keyboard"):
            raise ValueError(f"CartesianSession needs a joy/spacemouse/keyboard mapping, got '{config.device}'")
        self.spec = spec
        self.config = config
        self.kin = kinematics
        names = [a.name for a in spec.arms]
        self.arm = names[0] if not arm else arm
        if self.arm not in names:
            raise ValueError(f"arm '{arm}' is not an arm of embodiment '{spec.name}': {names}")
        self.period_s = spec.policy_period_s
        self.steps = chunk_steps(config.horizon_s, self.period_s)
        self.max_stamp_offset_s = float(max_stamp_offset_s)
        self.mapper = JoyMapper(config)
        self.frame = config.frame
        self.speed_scale = 1.0
        self.gripper: float | None = None  # toggle state, normalised; None until known
        self._measured: dict[str, tuple[tuple[str, ...], np.ndarray]] = {}
        self._motion = np.zeros(6)
        self._held: frozenset[str] = frozenset()
        self._valid = False
        self._joy_stamp_s = self._joy_received_s = -math.inf
        self._twist_stamp_s = self._twist_received_s = -math.inf
        self._key_times: dict[int, float] = {}  # motion channel -> last key time
        self._key_signs: dict[int, float] = {}
        self._key_turbo = False
        self._key_event_s = -math.inf  # last non-motion key that keeps a keyboard stream alive
        self._published_stamp_s = -math.inf
        self._published_at_s = -math.inf
        self._last_twist: tuple[np.ndarray, np.ndarray] | None = None  # of the last motion chunk (base frame)
        # An input is turned into a chunk on arrival unless the last chunk left less than about a
        # period ago (then the next tick sends it, if nothing newer came). A chunk is only sent for
        # an input stamped after the previous chunk was sent: the controller takes its ee_delta
        # reference from the plan at the stamp, and an input older than the plan now executing
        # would be measured from a pose the arm had already passed (a jerk, then a slow-down).
        self.min_chunk_interval_s = 0.9 / config.rate_hz
        self.streaming = False
        self.chunks_published = 0
        self.stops_published = 0
        self.refusals = 0
        self.last_refusal = ""

    # ------------------------------------------------------------------ measurements
    def update_joint_state(self, arm: str, names: Sequence[str], positions: Sequence[float]) -> None:
        """Measured joints of `arm` (bare driver names, gripper included)."""
        self._measured[arm] = (tuple(names), np.asarray(positions, dtype=np.float64))

    def _measured_joints(self) -> np.ndarray | None:
        q = []
        for a in self.spec.arms:
            got = self._measured.get(a.name)
            if got is None:
                return None
            index = {n: i for i, n in enumerate(got[0])}
            if any(j not in index for j in a.joint_names):
                return None
            q.extend(got[1][index[j]] for j in a.joint_names)
        q = np.asarray(q)
        return q if np.all(np.isfinite(q)) else None

    def _measured_gripper(self, arm_name: str) -> float | None:
        a = self.spec.arm(arm_name)
        got = self._measured.get(arm_name)
        if a.gripper is None or got is None or a.gripper.joint_name not in got[0]:
            return None
        x = got[1][got[0].index(a.gripper.joint_name)]
        return float(np.clip(a.gripper.from_joint(x), 0.0, 1.0)) if math.isfinite(x) else None

    # ------------------------------------------------------------------ inputs
    def _check_stamp(self, stamp_s: float, now_s: float, what: str) -> None:
        if abs(stamp_s - now_s) > self.max_stamp_offset_s:
            raise InputRefused(f"{what} message refused: stamped {stamp_s - now_s:+.3f} s from this node's clock "
                               f"(more than {self.max_stamp_offset_s} s): clocks out of sync, or use_sim_time "
                               f"differs between the driver and teleop; the arm holds")

    def on_joy(self, axes: Sequence[float], buttons: Sequence[int], stamp_s: float, now_s: float) -> TeleopOutput:
        """A sensor_msgs/Joy (gamepad; for the SpaceMouse its buttons)."""
        with_motion = self.config.device == "joy"
        try:
            self._check_stamp(stamp_s, now_s, self.config.device)
            reading = self.mapper.read(axes, buttons, with_motion=with_motion)
        except InputRefused as err:
            return self._refuse(str(err), stamp_s, now_s)
        out = self._apply_buttons(reading.held)
        self._valid = True
        if reading.motion is not None:
            self._motion = reading.motion
        self._joy_stamp_s, self._joy_received_s = stamp_s, now_s
        return out + self._maybe_stop(stamp_s, now_s) + self._on_input(now_s)

    def on_twist(self, linear: Sequence[float], angular: Sequence[float], stamp_s: float,
                 now_s: float) -> TeleopOutput:
        """A geometry_msgs/Twist (spacenav; it has no header: the receive time is its stamp)."""
        try:
            motion = self.mapper.read_twist(linear, angular)
        except InputRefused as err:
            return self._refuse(str(err), stamp_s, now_s)
        self._motion = motion
        self._twist_stamp_s, self._twist_received_s = stamp_s, now_s
        return self._on_input(now_s)

    def _on_input(self, now_s: float) -> TeleopOutput:
        if not self.engaged(now_s) or now_s - self._published_at_s < self.min_chunk_interval_s:
            return TeleopOutput()
        return self.tick(now_s)

    def on_key(self, key: str, now_s: float) -> TeleopOutput:
        """One key press from a terminal (auto-repeat included)."""
        binding = self.config.keys.get(key.lower() if key.isalpha() else key)
        if binding is None:
            return TeleopOutput(messages=(("info", f"key {key!r} is not bound (see the table printed at start)"),))
        if binding[0] in "+-" and binding[1:] in MOTION_CHANNELS:
            k = MOTION_CHANNELS.index(binding[1:])
            self._key_times[k] = now_s
            self._key_signs[k] = 1.0 if binding[0] == "+" else -1.0
            self._key_turbo = key.isalpha() and key.isupper()
            self._valid = True
            return TeleopOutput()
        if binding == "stop":
            self._key_times.clear()
            self._key_event_s = -math.inf
            return TeleopOutput(messages=(("info", "stop"),)) + self._maybe_stop(now_s, now_s)
        if binding == "quit":
            self._key_times.clear()
            self._key_event_s = -math.inf
            return self._maybe_stop(now_s, now_s) + TeleopOutput(events=("quit",))
        out = self._apply_buttons(frozenset({binding}))
        self._held = frozenset()
        if binding in ("gripper_toggle",):
            self._key_event_s = now_s  # send the new gripper value (with zero motion)
            self._valid = True
        return out

    def _apply_buttons(self, held: frozenset[str]) -> TeleopOutput:
        pressed = held - self._held
        self._held = held
        events, messages = [], []
        if "gripper_toggle" in pressed:
            current = self._gripper_state()
            self.gripper = 0.0 if current > 0.5 else 1.0
            messages.append(("info", f"gripper {'open' if self.gripper > 0.5 else 'closed'}"))
        if "frame_switch" in pressed:
            self.frame = "tool" if self.frame == "base" else "base"
            messages.append(("info", f"frame: {self.frame}"))
        for action, factor in (("speed_up", self.config.speed_step), ("speed_down", 1.0 / self.config.speed_step)):
            if action in pressed:
                self.speed_scale = float(np.clip(self.speed_scale * factor, MIN_SPEED_SCALE, MAX_SPEED_SCALE))
                messages.append(("info", f"speed x{self.speed_scale:.2f}"))
        for action in EPISODE_ACTIONS:
            if action in pressed:
                events.append(action)
        return TeleopOutput(events=tuple(events), messages=tuple(messages))

    def _refuse(self, reason: str, stamp_s: float, now_s: float) -> TeleopOutput:
        self.refusals += 1
        self.last_refusal = reason
        self._valid = False
        self._motion = np.zeros(6)
        self._held = frozenset()
        stamp = stamp_s if abs(stamp_s - now_s) <= self.max_stamp_offset_s else now_s
        return TeleopOutput(messages=(("error", reason),)) + self._maybe_stop(stamp, now_s)

    # ------------------------------------------------------------------ state
    def _gripper_state(self) -> float:
        """The toggle state; until the first toggle, the measured gripper (open if unknown)."""
        if self.gripper is None:
            measured = self._measured_gripper(self.arm)
            return 1.0 if measured is None else measured
        return self.gripper

    def gripper_command(self) -> float:
        return 0.0 if "gripper_close" in self._held else self._gripper_state()

    def _fresh(self, now_s: float) -> bool:
        timeout = self.config.input_timeout_s
        if self.config.device == "joy":
            return now_s - self._joy_received_s <= timeout
        if self.config.device == "spacemouse":
            return now_s - self._twist_received_s <= timeout and now_s - self._joy_received_s <= timeout
        return True

    def _keyboard_motion(self, now_s: float) -> np.ndarray | None:
        """The held keys' motion, or None when no key is held (no key within key_hold_s)."""
        hold = self.config.key_hold_s
        live = {k: s for k, s in self._key_signs.items() if now_s - self._key_times.get(k, -math.inf) <= hold}
        if not live and now_s - self._key_event_s > hold:
            return None
        motion = np.zeros(6)
        for k, s in live.items():
            motion[k] = s
        return motion

    def engaged(self, now_s: float) -> bool:
        if not self._valid:
            return False
        if self.config.device == "keyboard":
            return self._keyboard_motion(now_s) is not None
        return "deadman" in self._held and self._fresh(now_s)

    def _disengage_reason(self, now_s: float) -> str:
        if not self._valid:
            return f"input refused ({self.last_refusal})" if self.last_refusal else "no valid input"
        if self.config.device == "keyboard":
            return "key released"
        if not self._fresh(now_s):
            received = [self._joy_received_s]
            if self.config.device == "spacemouse":
                received.append(self._twist_received_s)
            return (f"input silent for {now_s - min(received):.3f} s (> input_timeout_s "
                    f"{self.config.input_timeout_s} s)")
        return "dead-man released"

    def twist_base(self, now_s: float) -> tuple[np.ndarray, np.ndarray] | str:
        """The commanded (linear m/s, angular rad/s) in the arm's base frame, or why not."""
        if self.config.device == "keyboard":
            motion = self._keyboard_motion(now_s)
            motion = np.zeros(6) if motion is None else motion
            turbo = self._key_turbo
        else:
            motion = self._motion
            turbo = "turbo" in self._held
        scale = self.speed_scale * (self.config.turbo_factor if turbo else 1.0)
        linear = motion[:3] * self.config.linear_speed_m_s * scale
        angular = motion[3:] * self.config.angular_speed_rad_s * scale
        if self.frame == "tool":
            q = self._measured_joints()
            if q is None or self.kin is None:
                return "tool frame needs the measured joints (no complete joint_states yet)"
            base, tool = self.kin.arm_frames(self.arm)
            rotation = self.kin.frame_pose(q, tool, base)[:3, :3]
            linear, angular = rotation @ linear, rotation @ angular
        return linear, angular

    def _grippers(self) -> dict[str, float]:
        out = {}
        for a in self.spec.arms:
            if a.gripper is None:
                continue
            if a.name == self.arm:
                out[a.name] = self.gripper_command()
            else:
                measured = self._measured_gripper(a.name)
                out[a.name] = 1.0 if measured is None else measured
        return out

    def _stamp_after(self, stamp_s: float) -> float:
        # a chunk older than the one already sent would be judged against an older reference
        return max(stamp_s, self._published_stamp_s + 1e-6)

    def stop_chunk(self, stamp_s: float) -> ActionChunk:
        """Brake to rest within one row: from the pose commanded at `stamp_s`, half of one row's
        motion at the last commanded twist (what a constant deceleration to zero over one period
        covers), then still. (All zero -- back to the pose at the stamp -- would make the arm,
        already past it, turn around.)"""
        rows = np.zeros((self.steps, 6))
        if self._last_twist is not None:
            rows[1] = twist_rows(0.5 * self._last_twist[0], 0.5 * self._last_twist[1], self.period_s, 2)[1]
        return ee_delta_chunk(self.spec, self.arm, rows, self._grippers(), stamp_s)

    def _maybe_stop(self, stamp_s: float, now_s: float) -> TeleopOutput:
        if not self.streaming or self.engaged(now_s):
            return TeleopOutput()
        reason = self._disengage_reason(now_s)
        chunk = self.stop_chunk(self._stamp_after(stamp_s))
        self._published_stamp_s = chunk.stamp_s
        self._last_twist = None
        self.streaming = False
        self.stops_published += 1
        return TeleopOutput(chunks=(chunk,), messages=(("info", f"{reason}: stream stopped, the arm holds"),))

    def tick(self, now_s: float) -> TeleopOutput:
        """Called at rate_hz: a motion chunk while engaged (one per new input), a stop chunk
        when the stream ends without an input saying so (input timeout)."""
        if not self.engaged(now_s):
            return self._maybe_stop(now_s, now_s)
        stamp = now_s if self.config.device == "keyboard" else (
            self._joy_stamp_s if self.config.device == "joy" else self._twist_stamp_s)
        if stamp <= self._published_stamp_s or (self.config.device != "keyboard" and stamp <= self._published_at_s):
            return TeleopOutput()  # nothing new since the last chunk
        twist = self.twist_base(now_s)
        if isinstance(twist, str):
            self.last_refusal = twist
            return TeleopOutput(messages=(("warn", twist),)) + self._stop_now(now_s, twist)
        rows = twist_rows(twist[0], twist[1], self.period_s, self.steps)
        self._last_twist = twist
        chunk = ee_delta_chunk(self.spec, self.arm, rows, self._grippers(), stamp)
        self._published_stamp_s = stamp
        self._published_at_s = now_s
        self.streaming = True
        self.chunks_published += 1
        return TeleopOutput(chunks=(chunk,))

    def _stop_now(self, now_s: float, reason: str) -> TeleopOutput:
        if not self.streaming:
            return TeleopOutput()
        chunk = self.stop_chunk(self._stamp_after(now_s))
        self._published_stamp_s = chunk.stamp_s
        self._last_twist = None
        self.streaming = False
        self.stops_published += 1
        return TeleopOutput(chunks=(chunk,), messages=(("info", f"{reason}: stream stopped, the arm holds"),))

    def stop(self, now_s: float) -> TeleopOutput:
        """End the stream now (node deactivated): a stop chunk if it was streaming."""
        self._valid = False
        self._held = frozenset()
        self._key_times.clear()
        return self._stop_now(now_s, "teleop stopped")


# ---------------------------------------------------------------------------------- leader session
LEADER_STATES: tuple[str, ...] = ("waiting", "approaching", "mirroring", "refused")


@dataclass
class _LeaderReading:
    positions: np.ndarray  # follower joint order
    gripper: float  # normalised, unclipped
    stamp_s: float
    received_s: float


class LeaderSession:
    """ALOHA leaders -> joint_position chunks for the followers (module docstring)."""

    def __init__(self, spec: EmbodimentSpec, config: LeaderConfig, max_stamp_offset_s: float = 0.5) -> None:
        arms = {a.name: a for a in spec.arms}
        unknown = [f for f in config.leaders if f not in arms]
        if unknown:
            raise ValueError(f"{config.source}: leaders: {unknown} are not arms of embodiment '{spec.name}' "
                             f"({list(arms)})")
        missing = [a for a in arms if a not in config.leaders]
        if missing:
            raise ValueError(f"{config.source}: leaders: no leader for follower arm(s) {missing}")
        for a in spec.arms:
            n_leader = len(config.joint_names) if config.joint_names is not None else a.num_joints
            if n_leader != a.num_joints:
                raise ValueError(f"{config.source}: joint_names has {n_leader} joints, arm '{a.name}' has "
                                 f"{a.num_joints}")
        self.spec = spec
        self.config = config
        self.period_s = spec.policy_period_s
        self.steps = chunk_steps(config.horizon_s, self.period_s)
        self.max_stamp_offset_s = float(max_stamp_offset_s)
        self.state = "waiting"
        self._leaders: dict[str, _LeaderReading] = {}
        self._followers: dict[str, tuple[np.ndarray, float]] = {}  # arm -> (joints, normalised gripper)
        self._published_stamp_s = -math.inf
        self.chunks_published = 0
        self.refusals = 0
        self.last_message = ""

    def _leader_joint_names(self, arm: str) -> tuple[str, ...]:
        return self.config.joint_names if self.config.joint_names is not None else self.spec.arm(arm).joint_names

    def update_joint_state(self, arm: str, names: Sequence[str], positions: Sequence[float]) -> None:
        """Measured follower joints (bare names, gripper included)."""
        a = self.spec.arm(arm)
        index = {n: i for i, n in enumerate(names)}
        if any(j not in index for j in a.joint_names):
            return
        q = np.array([positions[index[j]] for j in a.joint_names], dtype=np.float64)
        g = math.nan
        if a.gripper is not None and a.gripper.joint_name in index:
            g = float(a.gripper.from_joint(positions[index[a.gripper.joint_name]]))
        if np.all(np.isfinite(q)):
            self._followers[arm] = (q, g)

    def on_leader(self, arm: str, names: Sequence[str], positions: Sequence[float], stamp_s: float,
                  now_s: float) -> TeleopOutput:
        """The joint_states of the leader of follower `arm`."""
        leader = self.config.leaders[arm]
        try:
            if len(names) != len(positions):
                raise InputRefused(f"{leader}/joint_states refused: {len(names)} names but {len(positions)} positions")
            if abs(stamp_s - now_s) > self.max_stamp_offset_s:
                raise InputRefused(f"{leader}/joint_states refused: stamped {stamp_s - now_s:+.3f} s from this node's "
                                   f"clock (more than {self.max_stamp_offset_s} s): clocks out of sync or "
                                   f"use_sim_time differs")
            index = {n: i for i, n in enumerate(names)}
            wanted = list(self._leader_joint_names(arm)) + [self.config.gripper_joint]
            missing = [j for j in wanted if j not in index]
            if missing:
                raise InputRefused(f"{leader}/joint_states refused: joints {missing} missing (has {list(names)})")
            values = np.array([positions[index[j]] for j in wanted], dtype=np.float64)
            bad = [wanted[i] for i in np.flatnonzero(~np.isfinite(values))]
            if bad:
                raise InputRefused(f"{leader}/joint_states refused: joints {bad} are not finite")
        except InputRefused as err:
            self.refusals += 1
            self._leaders.pop(arm, None)
            out = TeleopOutput(messages=(("error", f"{err}; the arms hold"),))
            return out + self._halt(f"{leader} input refused")
        self._leaders[arm] = _LeaderReading(values[:-1], self.config.normalise_gripper(values[-1]), stamp_s, now_s)
        return TeleopOutput()

    def _halt(self, reason: str) -> TeleopOutput:
        if self.state in ("approaching", "mirroring"):
            self.state = "waiting"
            return self._message("warn", f"{reason}: mirroring stopped, the arms hold; squeeze both leader grippers "
                                         f"to start again")
        return TeleopOutput()

    def _message(self, level: str, text: str) -> TeleopOutput:
        self.last_message = text
        return TeleopOutput(messages=((level, text),))

    def offsets(self) -> dict[str, np.ndarray]:
        """Per arm, leader - follower (rad) for the arms with both readings."""
        return {a: self._leaders[a].positions - self._followers[a][0]
                for a in self.config.leaders if a in self._leaders and a in self._followers}

    def _worst(self, offsets: dict[str, np.ndarray]) -> tuple[str, str, float]:
        """(arm, joint, |offset|) of the largest offset."""
        best = ("", "", -1.0)
        for arm, d in offsets.items():
            j = int(np.argmax(np.abs(d)))
            if abs(d[j]) > best[2]:
                best = (arm, self.spec.arm(arm).joint_names[j], float(abs(d[j])))
        return best

    def _describe(self, offsets: dict[str, np.ndarray], limit: float) -> str:
        parts = []
        for arm, d in offsets.items():
            a = self.spec.arm(arm)
            for j in np.flatnonzero(np.abs(d) > limit):
                parts.append(f"{self.config.leaders[arm]}/{a.joint_names[j]} is {d[j]:+.3f} rad from "
                             f"{a.qualified(a.joint_names[j])}")
        return "; ".join(parts)

    def tick(self, now_s: float) -> TeleopOutput:
        cfg = self.config
        silent = [cfg.leaders[a] for a in cfg.leaders
                  if a not in self._leaders or now_s - self._leaders[a].received_s > cfg.input_timeout_s]
        if silent:
            return self._halt(f"leader(s) {silent} silent for more than input_timeout_s {cfg.input_timeout_s} s")
        if any(a not in self._followers for a in cfg.leaders):
            return self._halt("no follower joint_states")
        offsets = self.offsets()
        arm, joint, worst = self._worst(offsets)
        gesture = all(self._leaders[a].gripper <= cfg.gesture_gripper_max for a in cfg.leaders)
        out = TeleopOutput()
        if self.state in ("waiting", "refused"):
            if not gesture:
                return out
            if worst <= cfg.engage_tolerance_rad:
                self.state = "mirroring"
                out += self._message("info", f"mirroring the leaders (largest offset {worst:.3f} rad, "
                                             f"{self.spec.arm(arm).qualified(joint)})")
            elif worst <= cfg.max_approach_rad:
                self.state = "approaching"
                out += self._message("info", "leaders not at their followers: "
                                     f"{self._describe(offsets, cfg.engage_tolerance_rad)}; bringing the followers "
                                     f"to them at {cfg.approach_speed_rad_s} rad/s")
            else:
                first = self.state != "refused" or self.last_message == ""
                self.state = "refused"
                self.refusals += first
                return self._message("warn", "leader too far from its follower to start: "
                                     f"{self._describe(offsets, cfg.max_approach_rad)} (more than max_approach_rad "
                                     f"{cfg.max_approach_rad}); move the leader near its follower and squeeze again; "
                                     f"the arms hold")
        if self.state == "approaching":
            if worst > cfg.max_approach_rad:
                self.state = "refused"
                self.refusals += 1
                return out + self._message("warn", "leader moved away during the approach: "
                                           f"{self._describe(offsets, cfg.max_approach_rad)}; the arms hold")
            if worst <= cfg.engage_tolerance_rad:
                self.state = "mirroring"
                out += self._message("info", f"followers reached the leaders (largest offset {worst:.3f} rad): "
                                             f"mirroring")
        if self.state == "mirroring" and worst > cfg.max_tracking_error_rad:
            self.state = "waiting"
            self.refusals += 1
            return out + self._message("warn", "leader and follower too far apart while mirroring: "
                                       f"{self._describe(offsets, cfg.max_tracking_error_rad)} (more than "
                                       f"max_tracking_error_rad {cfg.max_tracking_error_rad}); the arms hold; "
                                       f"squeeze both leader grippers to start again")
        stamp = max(r.stamp_s for r in self._leaders.values())
        if stamp <= self._published_stamp_s:
            return out
        chunk = self._chunk(stamp)
        self._published_stamp_s = stamp
        self.chunks_published += 1
        return out + TeleopOutput(chunks=(chunk,))

    def _chunk(self, stamp_s: float) -> ActionChunk:
        names = action_names(self.spec, "joint_position")
        values = np.zeros((self.steps, len(names)))
        ramp = np.arange(self.steps)[:, None] * self.period_s * self.config.approach_speed_rad_s
        for a in self.spec.arms:
            p = f"{a.namespace}/" if a.namespace else ""
            leader = self._leaders[a.name]
            follower_q, follower_g = self._followers[a.name]
            if self.state == "mirroring":
                rows = np.tile(leader.positions, (self.steps, 1))
                gripper = float(np.clip(leader.gripper, 0.0, 1.0))
            else:  # approaching: from the follower toward the leader, at most approach_speed_rad_s
                rows = follower_q + np.clip(leader.positions - follower_q, -ramp, ramp)
                gripper = float(np.clip(follower_g, 0.0, 1.0)) if math.isfinite(follower_g) else 1.0
            for k, j in enumerate(a.joint_names):
                values[:, names.index(p + j)] = rows[:, k]
            if a.gripper is not None:
                values[:, names.index(p + "gripper")] = gripper
        return ActionChunk(names, values, self.period_s, stamp_s)


def keyboard_bindings_table(config: CartesianTeleopConfig) -> str:
    """The key table printed when a keyboard session starts."""
    describe = {"gripper_toggle": "gripper open/close", "frame_switch": "base/tool frame", "speed_up": "faster",
                "speed_down": "slower", "stop": "stop now", "quit": "quit", "start_episode": "start episode",
                "save_episode": "save episode", "discard_episode": "discard episode"}
    lines = [f"vla-ros teleop --keyboard ({config.source})",
             f"  hold a key to move (it counts as held {config.key_hold_s} s after its last repeat); "
             f"Shift+key = turbo x{config.turbo_factor}",
             f"  speeds: {config.linear_speed_m_s} m/s, {config.angular_speed_rad_s} rad/s; frame: {config.frame}"]
    motion = [(k, v) for k, v in config.keys.items() if v[0] in "+-"]
    other = [(k, v) for k, v in config.keys.items() if v[0] not in "+-"]
    for channel in MOTION_CHANNELS:
        keys = [f"{'space' if k == ' ' else k} {v[0]}" for k, v in motion if v[1:] == channel]
        if keys:
            unit = "m/s" if channel in ("x", "y", "z") else "rad/s"
            lines.append(f"  {channel:<5} ({unit}): " + ", ".join(keys))
    for k, v in other:
        lines.append(f"  {'space' if k == ' ' else k:<5} {describe.get(v, v)}")
    return "\n".join(lines)
