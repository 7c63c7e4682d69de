"""teleop_node: a teleoperation device -> action chunks on `action_chunk` (a thin lifecycle node
over vla_ros.core.teleop, which holds every decision).

Teleop is just another action source: the chunks go through the controller's IK, safety
envelope and chunk watchdog like a policy's. Devices (`device` parameter):
- `joy`: sensor_msgs/Joy from the `joy` driver (mapping `gamepad` by default) -> ee_delta chunks;
- `spacemouse`: geometry_msgs/Twist `spacenav/twist` + Joy `spacenav/joy` from `spacenav` -> ee_delta;
- `keyboard`: keys fed by `vla-ros teleop --keyboard` (a terminal; `feed_key`) -> ee_delta;
- `leader`: ALOHA leaders' `leader_left/joint_states`, `leader_right/joint_states` -> joint_position.

Lifecycle: configure loads the embodiment, the mapping (config/teleop/<name>.yaml or a path) and
the kinematics and creates the subscriptions; activate starts the chunk stream; deactivate stops it
(a stop chunk when moving: the arm holds). `autostart` (default true) configures and activates at
start-up, so `ros2 run vla_ros teleop_node` works alone.

Parameters: `embodiment`, `device` (joy|spacemouse|keyboard|leader), `mapping` (empty: the
device's default), `arm` (Cartesian devices on a multi-arm embodiment: which arm; empty = first),
`rate_hz` (0 = the mapping's), `max_stamp_offset_s` (0.5: input stamped further from this node's
clock is refused), `diagnostics_period_s` (1.0), `autostart` (true), `use_sim_time`.
Subscribes: the device topics above, each arm's `joint_states` (tool frame, gripper state, leader
check). Publishes: `action_chunk` (trajectory_msgs/JointTrajectory, stamped with the input's
time), `diagnostics`. Calls: `recorder/start_episode`, `recorder/save_episode`,
`recorder/discard_episode` (std_srvs/Trigger) on the episode buttons, when the recorder runs.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Twist
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.lifecycle import LifecycleState, TransitionCallbackReturn
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import JointState, Joy
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from vla_ros.core.embodiment import EmbodimentSpec, load_embodiment
from vla_ros.core.teleop import (
    DEFAULT_MAPPINGS,
    DEVICES,
    EPISODE_ACTIONS,
    CartesianSession,
    CartesianTeleopConfig,
    LeaderConfig,
    LeaderSession,
    TeleopOutput,
    load_teleop_config,
)
from vla_ros.nodes import conversions as cv
from vla_ros.nodes.runtime import ReleasingLifecycleNode, refuse_parameter_changes_once_configured


def _desc(text: str) -> ParameterDescriptor:
    return ParameterDescriptor(description=text)


class TeleopNode(ReleasingLifecycleNode):
    """See the module docstring. `events` (episode buttons pressed) and `messages` are kept for
    tests and the keyboard front end."""

    def __init__(self, node_name: str = "teleop", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        d = self.declare_parameter
        d("embodiment", "", _desc("embodiment config name (fr3, ur5e, aloha, ...) or YAML path"))
        d("device", "joy", _desc(f"input device: {'|'.join(DEVICES)}"))
        d("mapping", "", _desc("device mapping: a name in config/teleop (gamepad, xbox_joy_node, spacemouse, "
                               "keyboard, aloha_leaders) or a YAML path; empty = the device's default"))
        d("arm", "", _desc("Cartesian devices on a multi-arm embodiment: the arm driven (empty = the first)"))
        d("rate_hz", 0.0, _desc("chunks per second while streaming; 0 = the mapping's rate_hz"))
        d("max_stamp_offset_s", 0.5, _desc("input stamped further than this from this node's clock is refused (s)"))
        d("diagnostics_period_s", 1.0, _desc("period of the diagnostics status (s)"))
        d("autostart", True, _desc("configure and activate at start-up (no lifecycle manager)"))
        refuse_parameter_changes_once_configured(self)
        self._lock = threading.RLock()
        self.spec: EmbodimentSpec | None = None
        self.config: CartesianTeleopConfig | LeaderConfig | None = None
        self.session: CartesianSession | LeaderSession | None = None
        self._active = False
        self._subs: list = []
        self._node_timers: list = []
        self._chunk_pub = None
        self._diag_pub = None
        # (not _clients / _subscriptions / _timers: those are rclpy.Node's own lists)
        self._recorder_clients: dict[str, Any] = {}
        self.events: list[str] = []
        self.messages: list[tuple[str, str]] = []
        self.on_output = None  # optional callback(TeleopOutput) (the keyboard front end prints messages)

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._configure()
        except Exception as err:  # noqa: BLE001 - any configure error fails the transition, with its reason
            self.get_logger().error(f"configure failed: {err}")
            self._release()
            return TransitionCallbackReturn.FAILURE
        return TransitionCallbackReturn.SUCCESS

    def _configure(self) -> None:
        p = self._param
        embodiment, device = str(p("embodiment")), str(p("device"))
        if not embodiment:
            raise ValueError("parameter 'embodiment' is empty; give a config name (fr3, ur5e, aloha, ...) or a "
                             "YAML path")
        if device not in DEVICES:
            raise ValueError(f"parameter 'device' must be one of {list(DEVICES)}, got '{device}'")
        for name in ("rate_hz", "max_stamp_offset_s", "diagnostics_period_s"):
            if not float(p(name)) >= (0.0 if name == "rate_hz" else 1e-9):
                raise ValueError(f"parameter '{name}' must be {'>= 0' if name == 'rate_hz' else '> 0'}, got {p(name)}")
        self.spec = load_embodiment(embodiment)
        config = load_teleop_config(str(p("mapping")) or DEFAULT_MAPPINGS[device])
        if config.device != device:
            raise ValueError(f"mapping '{config.source}' is for device '{config.device}', not '{device}'")
        self.config = config
        offset = float(p("max_stamp_offset_s"))
        if isinstance(config, LeaderConfig):
            self.session = LeaderSession(self.spec, config, max_stamp_offset_s=offset)
        else:
            from vla_ros.core.kinematics import RobotKinematics  # Pinocchio only where a tool frame may be used

            kin = RobotKinematics.from_embodiment(self.spec)
            self.session = CartesianSession(self.spec, config, kin, arm=str(p("arm")) or None,
                                            max_stamp_offset_s=offset)
        self._chunk_pub = self.create_lifecycle_publisher(JointTrajectory, "action_chunk", 10)
        self._diag_pub = self.create_lifecycle_publisher(DiagnosticArray, "diagnostics", 10)
        subs = self._subs
        for arm in self.spec.arms:
            subs.append(self.create_subscription(JointState, arm.joint_states_topic,
                                                 lambda m, a=arm.name: self._on_joint_state(a, m),
                                                 qos_profile_sensor_data))
        if device == "joy":
            subs.append(self.create_subscription(Joy, config.joy_topic, self._on_joy, 10))
        elif device == "spacemouse":
            subs.append(self.create_subscription(Joy, config.joy_topic, self._on_joy, 10))
            subs.append(self.create_subscription(Twist, config.twist_topic, self._on_twist, 10))
        elif device == "leader":
            for follower in config.leaders:
                subs.append(self.create_subscription(JointState, config.leader_topic(follower),
                                                     lambda m, a=follower: self._on_leader(a, m),
                                                     qos_profile_sensor_data))
        for action in EPISODE_ACTIONS:
            self._recorder_clients[action] = self.create_client(Trigger, f"recorder/{action}")
        rate = float(p("rate_hz")) or config.rate_hz
        self._node_timers.append(self.create_timer(1.0 / rate, self._on_tick))
        self._node_timers.append(self.create_timer(float(p("diagnostics_period_s")), self._publish_diagnostics))
        self.get_logger().info(f"configured: device {device}, mapping {config.source}, {rate:g} Hz, "
                               f"embodiment {self.spec.name}")

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        with self._lock:
            self._active = True
        self.get_logger().info("active: streaming action chunks while the device says so")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        with self._lock:
            if self.session is not None and isinstance(self.session, CartesianSession):
                self._emit(self.session.stop(self.now_s()))
            self._active = False
        self.get_logger().info("inactive: no more action chunks")
        return super().on_deactivate(state)

    def _release(self) -> None:
        with self._lock:
            self._active = False
            self.destroy_entities(timers=self._node_timers, subscriptions=self._subs,
                                  clients=self._recorder_clients.values(),
                                  lifecycle_publishers=(self._chunk_pub, self._diag_pub))
            self._node_timers, self._subs, self._recorder_clients = [], [], {}
            self._chunk_pub = self._diag_pub = None
            self.session = None

    @property
    def active(self) -> bool:
        return self._active

    def destroy_node(self) -> None:
        self._release()
        super().destroy_node()

    # ------------------------------------------------------------------ inputs
    def now_s(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _stamp_s(self, header) -> float:
        s = cv.time_to_s(header.stamp)
        return self.now_s() if s == 0.0 else s  # unset stamp: the receive time is the best estimate

    def _on_joint_state(self, arm: str, msg: JointState) -> None:
        if len(msg.name) != len(msg.position):
            return
        with self._lock:
            if self.session is not None:
                self.session.update_joint_state(arm, list(msg.name), list(msg.position))

    def _on_joy(self, msg: Joy) -> None:
        with self._lock:
            if isinstance(self.session, CartesianSession):
                self._emit(self.session.on_joy(list(msg.axes), list(msg.buttons), self._stamp_s(msg.header),
                                               self.now_s()))

    def _on_twist(self, msg: Twist) -> None:
        now = self.now_s()
        with self._lock:
            if isinstance(self.session, CartesianSession):
                lin, ang = msg.linear, msg.angular
                self._emit(self.session.on_twist([lin.x, lin.y, lin.z], [ang.x, ang.y, ang.z], now, now))

    def _on_leader(self, arm: str, msg: JointState) -> None:
        with self._lock:
            if isinstance(self.session, LeaderSession):
                self._emit(self.session.on_leader(arm, list(msg.name), list(msg.position),
                                                  self._stamp_s(msg.header), self.now_s()))

    def feed_key(self, key: str) -> TeleopOutput:
        """One key press (keyboard device); returns what it produced (the front end reads 'quit')."""
        with self._lock:
            if not isinstance(self.session, CartesianSession) or self.config.device != "keyboard":
                return TeleopOutput()
            out = self.session.on_key(key, self.now_s())
            self._emit(out)
            return out

    def _on_tick(self) -> None:
        with self._lock:
            if self.session is not None and self._active:
                self._emit(self.session.tick(self.now_s()))

    # ------------------------------------------------------------------ outputs
    def _emit(self, out: TeleopOutput) -> None:
        if self._active and self._chunk_pub is not None:
            for chunk in out.chunks:
                self._chunk_pub.publish(cv.chunk_to_msg(chunk))
        log = self.get_logger()
        for level, text in out.messages:
            self.messages.append((level, text))
            if level == "info":
                log.info(text)
            elif level == "warn":
                log.warning(text, throttle_duration_sec=1.0)
            else:
                log.error(text, throttle_duration_sec=1.0)
        for event in out.events:
            self.events.append(event)
            if event in EPISODE_ACTIONS:
                self._call_recorder(event)
        del self.messages[:-200], self.events[:-200]
        if self.on_output is not None and (out.messages or out.events):
            self.on_output(out)

    def _call_recorder(self, action: str) -> None:
        client = self._recorder_clients.get(action)
        if client is None or not client.service_is_ready():
            service = self.resolve_service_name(f"recorder/{action}")
            text = (f"{action}: the recorder is not running (no service '{service}'); start it with record:=true "
                    f"(bringup) or `ros2 run vla_ros recorder_node`; button ignored")
            self.messages.append(("warn", text))
            self.get_logger().warning(text)
            return
        future = client.call_async(Trigger.Request())
        future.add_done_callback(lambda f, a=action: self._on_recorder_reply(a, f))

    def _on_recorder_reply(self, action: str, future) -> None:
        try:
            response = future.result()
        except Exception as err:  # noqa: BLE001 - a failed service call is reported, never fatal
            text = f"{action}: recorder call failed: {err}"
            self.messages.append(("error", text))
            self.get_logger().error(text)
            return
        level = "info" if response.success else "warn"
        text = f"{action}: recorder says {'ok' if response.success else 'no'}: {response.message}"
        self.messages.append((level, text))
        (self.get_logger().info if response.success else self.get_logger().warning)(text)

    def _publish_diagnostics(self) -> None:
        with self._lock:
            s = self.session
            if not self._active or self._diag_pub is None or s is None:
                return
            if isinstance(s, CartesianSession):
                engaged = s.engaged(self.now_s())
                level = "error" if s.last_refusal and not engaged else "ok"
                message = "streaming" if engaged else (f"holding: {s.last_refusal}" if s.last_refusal else "idle")
                values = {"device": s.config.device, "frame": s.frame, "speed_scale": f"{s.speed_scale:.3f}",
                          "gripper": f"{s.gripper_command():.2f}", "chunks_published": s.chunks_published,
                          "stops_published": s.stops_published, "refusals": s.refusals}
            else:
                level = "warn" if s.state == "refused" else "ok"
                message = f"{s.state}: {s.last_message}" if s.last_message else s.state
                values = {"device": "leader", "state": s.state, "chunks_published": s.chunks_published,
                          "refusals": s.refusals}
            self._diag_pub.publish(cv.make_diagnostics(f"{self.get_name()}: teleop", level, message, values,
                                                       stamp_s=self.now_s()))

    def _param(self, name: str) -> Any:
        return self.get_parameter(name).value


def start(node: TeleopNode) -> bool:
    """configure + activate (autostart); False (logged) if either fails."""
    ok = TransitionCallbackReturn.SUCCESS
    return node.trigger_configure() == ok and node.trigger_activate() == ok


def _make_node() -> TeleopNode:
    node = TeleopNode()
    if node.get_parameter("device").value == "keyboard":
        node.destroy_node()
        raise ValueError("device 'keyboard' reads a terminal: run `vla-ros teleop --keyboard` instead")
    return node


def main(args: list[str] | None = None) -> int:
    """`ros2 run vla_ros teleop_node`: configure + activate unless `autostart:=false`; SIGINT/SIGTERM
    deactivate (a stop chunk if the arm was moving) and exit 0 (vla_ros.nodes.runtime)."""
    from rclpy.executors import SingleThreadedExecutor

    from vla_ros.nodes.runtime import run_node

    return run_node(_make_node, SingleThreadedExecutor, args=args, name="teleop",
                    deactivated_message="deactivated: no more action chunks")


if __name__ == "__main__":
    sys.exit(main())
