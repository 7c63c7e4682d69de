"""recorder_node: demonstrations -> LeRobotDataset v3.0 episodes (lifecycle node `recorder`).

Hears what the graph already carries -- every configured camera, `joint_states` /
`<ns>/joint_states`, the commands the controller sent (each arm's JTC or forward command topic
and gripper command topic), the action source's `action_chunk` and the `instruction` -- and writes
one dataset row per frame period, aligned on the capture stamps by the rule in
`vla_ros.data.recording` (nearest within half a period; the command sampled as the JTC executed
it). Video is encoded on worker threads while the episode records; saving commits the episode
atomically (vla_ros.data.format), so a SIGKILL loses at most the episode in progress, and a
restart on the same `dataset` folder resumes it.

Lifecycle: configure opens (or resumes) the dataset -- an unwritable folder or an incompatible
dataset fails here with the reason -- and creates subscriptions; services work while active;
deactivate discards an episode in progress. `autostart` (default true) configures and activates at
start-up when the node runs alone.

Services (std_srvs/Trigger): `~/start_episode`, `~/save_episode`, `~/discard_episode`.
Publishes `~/status` (diagnostic_msgs/DiagnosticArray: recording, episode, frames, seconds,
dropped, fell_behind, disk_free_mb, episodes_saved) at `status_rate_hz` and after each service call.
"""

from __future__ import annotations

import json
import shutil
import sys
import threading
import time
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleState, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Float64MultiArray, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from vla_ros.core.embodiment import EmbodimentSpec, load_embodiment
from vla_ros.core.jtc import TrajectoryCommand, TrajectoryPoint
from vla_ros.core.observation_sync import check_instruction
from vla_ros.data.format import DatasetError
from vla_ros.data.recording import NO_READING_YET, FrameAssembler, RecordingLayout, recording_layout
from vla_ros.data.writer import DatasetWriter, EpisodeBuffer
from vla_ros.nodes import conversions as cv
from vla_ros.nodes.runtime import ReleasingLifecycleNode, refuse_parameter_changes_once_configured

INSTRUCTION_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
COMMAND_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
# Sensor-data QoS (best effort, so any publisher matches) with deep queues: a recorder must not lose
# readings when its executor is briefly busy (the default depth 5 dropped joint_states at 200 Hz).
STATE_QOS = QoSProfile(depth=200, reliability=ReliabilityPolicy.BEST_EFFORT)
STATE_QOS_RELIABLE = QoSProfile(depth=200, reliability=ReliabilityPolicy.RELIABLE)
IMAGE_QOS = QoSProfile(depth=30, reliability=ReliabilityPolicy.BEST_EFFORT)
IMAGE_QOS_RELIABLE = QoSProfile(depth=30, reliability=ReliabilityPolicy.RELIABLE)


def _desc(text: str) -> ParameterDescriptor:
    return ParameterDescriptor(description=text)


def trajectory_command(msg: JointTrajectory) -> TrajectoryCommand:
    points = tuple(TrajectoryPoint(cv.duration_to_s(p.time_from_start), tuple(p.positions), tuple(p.velocities),
                                   tuple(p.accelerations)) for p in msg.points)
    return TrajectoryCommand(tuple(msg.joint_names), points, cv.time_to_s(msg.header.stamp))


class RecorderNode(ReleasingLifecycleNode):
    """See the module docstring."""

    def __init__(self, node_name: str = "recorder", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        d = self.declare_parameter
        d("embodiment", "fr3", _desc("embodiment config name (fr3, ur5e, aloha, ...) or YAML path"))
        d("dataset", "", _desc("output folder: a LeRobotDataset v3.0 (created, or resumed if it exists)"))
        d("fps", 30, _desc("dataset frame rate (Hz); camera frames are aligned to this grid"))
        d("instruction", "", _desc("task of every episode; empty: the latest `instruction` message"))
        d("source_space", "", _desc("the action source's space for action.source (empty: the embodiment's)"))
        d("codec", "auto", _desc("video encoder: auto (AV1 if available, else H.264), libsvtav1, libx264"))
        d("crf", 23, _desc("video quality (constant rate factor; lower = better, larger; LeRobot uses 30)"))
        d("preset", 8, _desc("SVT-AV1 speed preset (8: every frame >= 35 dB PSNR; 10-13 faster, blurrier)"))
        d("gop", 2, _desc("keyframe interval in frames (LeRobot: 2)"))
        d("wait_s", 0.15, _desc("a frame slot is assembled this long after its window closed (late messages)"))
        d("max_wait_s", 2.0, _desc("longest wait for the streams to pass a frame slot (a starved recorder) and, "
                                   "at save, for readings published before the request (wall s at save)"))
        d("reliable_joint_states", True, _desc("subscribe to joint_states reliably (ros2_control's joint_state_broadcaster "
                                              "and the sim publish reliably; false for a best-effort publisher)"))
        d("reliable_images", False, _desc("subscribe to cameras reliably (no loss of large frames under load; only "
                                          "matches reliable publishers, e.g. the sim; most camera drivers are best effort)"))
        d("min_free_mb", 200.0, _desc("refuse to start an episode with less free disk space (MB)"))
        d("status_rate_hz", 2.0, _desc("rate of ~/status"))
        d("assemble_rate_hz", 20.0, _desc("rate at which finished frame slots are assembled"))
        d("autostart", True, _desc("configure and activate at start-up (no lifecycle manager)"))
        # the task and the free-space floor are read at each start_episode
        refuse_parameter_changes_once_configured(self, live=("instruction", "min_free_mb"))
        self.spec: EmbodimentSpec | None = None
        self.layout: RecordingLayout | None = None
        self.writer: DatasetWriter | None = None
        self.assembler: FrameAssembler | None = None
        self.episode: EpisodeBuffer | None = None
        self._lock = threading.RLock()
        self._instruction = ""
        self._node_subs: list = []
        self._node_services: list = []
        self._node_timers: list = []
        self._status_pub = None
        self._episode_start_s = 0.0
        self._fell_behind = False
        self.last_saved: dict | None = None
        self.image_errors = 0
        self._active = False

    # ------------------------------------------------------------------ helpers
    def now_s(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _p(self, name: str) -> Any:
        return self.get_parameter(name).value

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            root = str(self._p("dataset"))
            if not root:
                raise ValueError("parameter 'dataset' (the output folder) is required")
            spec = load_embodiment(str(self._p("embodiment")))
            fps = int(self._p("fps"))
            if fps <= 0:
                raise ValueError(f"parameter 'fps' must be a positive integer, got {fps}")
            layout = recording_layout(spec, str(self._p("source_space")) or None)
            writer = DatasetWriter.open(root, fps=fps, robot_type=spec.name, features=layout.features(),
                                        codec=str(self._p("codec")), crf=int(self._p("crf")), gop=int(self._p("gop")),
                                        preset=int(self._p("preset")))
            assembler = FrameAssembler(spec, layout, fps, wait_s=float(self._p("wait_s")),
                                       max_wait_s=float(self._p("max_wait_s")))
        except (ValueError, KeyError, OSError, DatasetError) as err:
            self.get_logger().error(f"configure failed: {err}")
            return TransitionCallbackReturn.FAILURE
        self.spec, self.layout, self.writer, self.assembler = spec, layout, writer, assembler
        # One group per kind of stream: joint states are not queued behind image conversions.
        images, states, data = (MutuallyExclusiveCallbackGroup() for _ in range(3))
        state_qos = STATE_QOS_RELIABLE if self._p("reliable_joint_states") else STATE_QOS
        image_qos = IMAGE_QOS_RELIABLE if self._p("reliable_images") else IMAGE_QOS
        for cam in spec.cameras:
            kind = CompressedImage if cam.compressed else Image
            self._node_subs.append(self.create_subscription(kind, cam.topic, lambda m, s=cam.slot: self._on_image(s, m),
                                                       image_qos, callback_group=images))
        for arm in spec.arms:
            self._node_subs.append(self.create_subscription(JointState, arm.joint_states_topic,
                                                       lambda m, a=arm.name: self._on_joint_state(a, m),
                                                       state_qos, callback_group=states))
            if arm.command.kind == "joint_trajectory":
                cb = lambda m, a=arm.name: self._on_trajectory(a, m)  # noqa: E731
                self._node_subs.append(self.create_subscription(JointTrajectory, arm.command.topic, cb, COMMAND_QOS,
                                                           callback_group=data))
            else:
                cb = lambda m, a=arm.name: self._on_forward(a, m)  # noqa: E731
                self._node_subs.append(self.create_subscription(Float64MultiArray, arm.command.topic, cb, COMMAND_QOS,
                                                           callback_group=data))
            if arm.gripper is not None and arm.gripper.command is not None:
                cb = lambda m, a=arm.name: self._on_gripper(a, m)  # noqa: E731
                self._node_subs.append(self.create_subscription(Float64MultiArray, arm.gripper.command.topic, cb,
                                                           COMMAND_QOS, callback_group=data))
        self._chunk_sub = self.create_subscription(JointTrajectory, "action_chunk", self._on_chunk, 50,
                                                   callback_group=data)
        self._node_subs.append(self._chunk_sub)
        self._node_subs.append(self.create_subscription(String, "instruction", self._on_instruction, INSTRUCTION_QOS))
        services = MutuallyExclusiveCallbackGroup()
        for name, cb in (("start_episode", self._srv_start), ("save_episode", self._srv_save),
                         ("discard_episode", self._srv_discard)):
            self._node_services.append(self.create_service(Trigger, f"~/{name}", cb, callback_group=services))
        self._status_pub = self.create_publisher(DiagnosticArray, "~/status", 10)
        self._node_timers.append(self.create_timer(1.0 / float(self._p("assemble_rate_hz")), self._assemble,
                                              callback_group=MutuallyExclusiveCallbackGroup()))
        self._node_timers.append(self.create_timer(1.0 / float(self._p("status_rate_hz")), self._publish_status))
        self.get_logger().info(
            f"dataset {root}: {writer.num_episodes} episode(s), {writer.num_frames} frames, {fps} fps, video "
            f"{writer.codec}; cameras {[c.slot for c in spec.cameras]}, action source space "
            f"{layout.source_space or 'joint_position'}")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = True
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        with self._lock:
            self._active = False
            if self.episode is not None:
                self.get_logger().warning(f"deactivated while recording episode {self.episode.index}: discarded")
                self._discard()
        return super().on_deactivate(state)

    def _release(self) -> None:
        with self._lock:
            if self.episode is not None:
                self._discard()
            self.destroy_entities(timers=self._node_timers, subscriptions=self._node_subs,
                                  services=self._node_services, publishers=(self._status_pub,))
            self._node_timers, self._node_subs, self._node_services, self._status_pub = [], [], [], None
            self.writer = self.assembler = None

    # ------------------------------------------------------------------ inputs
    def _on_image(self, slot: str, msg) -> None:
        try:
            rgb = cv.image_to_rgb8(msg)
        except (ValueError, KeyError) as err:
            self.image_errors += 1
            self.get_logger().error(f"camera '{slot}': frame refused: {err}", throttle_duration_sec=5.0)
            return
        want = next((h, w) for s, h, w in self.layout.cameras if s == slot)
        if rgb.shape[:2] != want:
            self.image_errors += 1
            self.get_logger().error(f"camera '{slot}': frame is {rgb.shape[1]}x{rgb.shape[0]}, the dataset records "
                                    f"{want[1]}x{want[0]} (set the camera's width/height in the embodiment config); "
                                    "refused", throttle_duration_sec=5.0)
            return
        with self._lock:
            if self.assembler is not None:
                self.assembler.add_image(slot, cv.time_to_s(msg.header.stamp), rgb)

    def _on_joint_state(self, arm: str, msg: JointState) -> None:
        with self._lock:
            if self.assembler is None:
                return
            try:
                self.assembler.add_joint_state(arm, cv.time_to_s(msg.header.stamp), msg.name, list(msg.position),
                                               list(msg.velocity))
            except (KeyError, ValueError) as err:
                self.get_logger().error(str(err).strip("'\""), throttle_duration_sec=5.0)

    def _on_trajectory(self, arm: str, msg: JointTrajectory) -> None:
        # An invalid trajectory is rejected by the sampler's JTC (as the real one would) when it
        # takes over: counted, its rows keep the previous command.
        try:
            command = trajectory_command(msg)
        except ValueError as err:
            self.get_logger().error(f"arm '{arm}': trajectory not readable: {err}", throttle_duration_sec=5.0)
            return
        with self._lock:
            if self.assembler is not None:
                self.assembler.add_trajectory(arm, command, self.now_s())

    def _on_forward(self, arm: str, msg: Float64MultiArray) -> None:
        with self._lock:
            if self.assembler is not None:
                try:
                    self.assembler.add_forward_command(arm, cv.float64_multi_array_values(msg), self.now_s())
                except ValueError as err:
                    self.get_logger().error(str(err), throttle_duration_sec=5.0)

    def _on_gripper(self, arm: str, msg: Float64MultiArray) -> None:
        values = cv.float64_multi_array_values(msg)
        if values.shape[0] < 1 or not np.all(np.isfinite(values)):
            return
        with self._lock:
            if self.assembler is not None:
                self.assembler.add_gripper_command(arm, float(values[0]), self.now_s())

    def _on_chunk(self, msg: JointTrajectory) -> None:
        try:
            chunk = cv.msg_to_chunk(msg, default_period_s=self.spec.policy_period_s)
        except ValueError:
            return  # the controller refuses it and reports why
        with self._lock:
            if self.assembler is not None:
                self.assembler.add_chunk(chunk)

    def _on_instruction(self, msg: String) -> None:
        try:
            self._instruction = check_instruction(msg.data)
        except ValueError as err:
            self.get_logger().error(str(err), throttle_duration_sec=5.0)

    # ------------------------------------------------------------------ assembly
    def _assemble(self) -> None:
        with self._lock:
            if self.assembler is None:
                return
            frames = self.assembler.poll(self.now_s())
            self._add(frames)

    def _add(self, frames) -> None:
        if self.episode is None:
            return
        for f in frames:
            self.episode.add_frame(f.slot, f.values, f.images)
        if self.episode.encoder_backlog > 64:
            if not self._fell_behind:
                self.get_logger().warning(f"video encoding is falling behind ({self.episode.encoder_backlog} frames "
                                          "queued): the recording could not keep up")
            self._fell_behind = True

    # ------------------------------------------------------------------ services
    def task(self) -> str:
        return str(self._p("instruction")) or self._instruction

    def _srv_start(self, request, response):
        with self._lock:
            if not self._active or self.writer is None:
                response.success, response.message = False, "recorder is not active"
                return response
            if self.episode is not None:
                response.success = False
                response.message = f"already recording episode {self.episode.index}; save or discard it first"
                return response
            topics = {**{("camera", c.slot): c.topic for c in self.spec.cameras},
                      **{("joint_states", a.name): a.joint_states_topic for a in self.spec.arms}}
            names = ", ".join(f"{kind} '{name}' ({topics[(kind, name)]})"
                              for kind, name in self.assembler.silent_streams())
            if not names and self.layout.source_space is not None and self._chunk_sub.get_publisher_count() == 0:
                # action.source needs the source's chunks: rows before its publisher is matched are lost
                names = f"action chunks ({self._chunk_sub.topic_name}: no publisher matched)"
            if names:
                response.success = False
                response.message = (f"{NO_READING_YET}: {names}; not starting (is the driver running, are the "
                                    "topics remapped right?)")
                self.get_logger().warning(response.message, throttle_duration_sec=5.0)
                return response
            free_mb = self.disk_free_mb()
            if free_mb < float(self._p("min_free_mb")):
                response.success = False
                response.message = (f"only {free_mb:.0f} MB free on the dataset's disk (min_free_mb "
                                    f"{self._p('min_free_mb')}); not starting")
                self.get_logger().error(response.message)
                return response
            self.episode = self.writer.start_episode()
            self._episode_start_s = self.now_s()
            self._fell_behind = False
            self.assembler.reset_episode(self._episode_start_s)
            response.success, response.message = True, f"recording episode {self.episode.index}"
        self.get_logger().info(response.message)
        self._publish_status()
        return response

    def _srv_save(self, request, response):
        with self._lock:
            if self.episode is None:
                response.success, response.message = False, "no episode is being recorded"
                return response
            now = self.now_s()
            self.assembler.close_at(now)
        # Readings published before the request may still be queued (a busy process): give them up
        # to max_wait_s (wall) to arrive, so the episode ends where the operator saved it.
        deadline = time.monotonic() + float(self._p("max_wait_s"))
        delivered = False
        while not delivered:
            with self._lock:
                delivered = self.assembler is None or self.assembler._streams_past(now - self.assembler.half_s)
            if delivered or time.monotonic() >= deadline:
                break
            time.sleep(0.02)
        with self._lock:
            if self.episode is None:
                response.success, response.message = False, "no episode is being recorded"
                return response
            # Readings still missing now were due before the save and never came (a starved process,
            # a stalled camera): their slots are counted as dropped, not left out of the count.
            dropped_before = self.assembler.report.dropped_total
            self._add(self.assembler.flush(now, count_undelivered=True))
            if not delivered:
                self.get_logger().warning(
                    f"save: the streams had not reached the save request's time after max_wait_s "
                    f"{self._p('max_wait_s')} s; {self.assembler.report.dropped_total - dropped_before} "
                    "slot(s) before it counted as dropped")
            report = self.assembler.report
            ep = self.episode
            extra = {
                "start_stamp_s": float(self.assembler.episode_start_s or now),
                # slot 0 of the grid: the drops counted before the first row lie between the two
                "grid_start_stamp_s": float(now if self.assembler.grid_start_s is None
                                            else self.assembler.grid_start_s),
                "end_stamp_s": float(now),  # the save request's time: the episode's slots end here
                "dropped_frames": int(report.dropped_total),
                "dropped_reasons": json.dumps(dict(report.dropped)),
                "late_messages": int(report.late_messages),
                "fell_behind": bool(self._fell_behind),
            }
            self.episode = None
            self.assembler.reset_episode(None)
        # Outside the lock: the data callbacks go on while the episode is committed (the services
        # share one mutually exclusive group, so no other episode starts meanwhile).
        try:
            row = self.writer.save_episode(ep, self.task(), extra=extra)
        except ValueError as err:
            response.success = False
            response.message = f"episode {ep.index} not saved: {err} (frames not assembled: {dict(report.dropped)})"
        except OSError as err:
            response.success = False
            response.message = (f"episode {ep.index} could not be written ({err}); the {self.writer.num_episodes} "
                                "episode(s) saved before are kept")
        else:
            self.last_saved = row
            response.success = True
            response.message = (f"episode {ep.index} saved: {row['length']} frames, "
                                f"{report.dropped_total} dropped, task '{row['tasks'][0]}'")
        if response.success:
            self.get_logger().info(response.message)
        else:
            self.get_logger().error(response.message)
        self._publish_status()
        return response

    def _srv_discard(self, request, response):
        with self._lock:
            if self.episode is None:
                response.success, response.message = False, "no episode is being recorded"
                return response
            index = self.episode.index
            self._discard()
            response.success, response.message = True, f"episode {index} discarded"
        self.get_logger().info(response.message)
        self._publish_status()
        return response

    def _discard(self) -> None:
        self.writer.discard_episode(self.episode)
        self.episode = None
        self.assembler.reset_episode(None)

    # ------------------------------------------------------------------ status
    def disk_free_mb(self) -> float:
        try:
            return shutil.disk_usage(self.writer.root).free / (1024 * 1024)
        except OSError:
            return float("nan")

    def status_values(self) -> dict[str, Any]:
        with self._lock:
            if self.writer is None:
                return {}
            rec = self.episode is not None
            report = self.assembler.report
            return {
                "recording": rec,
                "episode": self.episode.index if rec else self.writer.num_episodes,
                "frames": self.episode.num_frames if rec else 0,
                "seconds": round(self.now_s() - self._episode_start_s, 3) if rec else 0.0,
                "dropped": report.dropped_total if rec else 0,
                "fell_behind": self._fell_behind if rec else False,
                "disk_free_mb": round(self.disk_free_mb(), 1),
                "episodes_saved": self.writer.num_episodes,
            }

    def _publish_status(self) -> None:
        pub = self._status_pub
        values = self.status_values()
        if pub is None or not values:
            return
        level = "warn" if values["fell_behind"] or values["dropped"] else "ok"
        message = (f"recording episode {values['episode']}" if values["recording"]
                   else f"idle, {values['episodes_saved']} episode(s) saved")
        pub.publish(cv.make_diagnostics(f"{self.get_name()}: recorder", level, message, values, stamp_s=self.now_s()))


def main(args: list[str] | None = None) -> int:
    """Run the recorder (runtime.run_node: autostart configures + activates; SIGINT/SIGTERM
    deactivate -- an episode in progress is discarded, saved episodes are untouched -- and exit 0)."""
    from vla_ros.nodes.runtime import run_node

    return run_node(RecorderNode, lambda: MultiThreadedExecutor(num_threads=5), args=args, name="recorder",
                    deactivated_message="deactivated (saved episodes are kept; one in progress is discarded)")


if __name__ == "__main__":
    sys.exit(main())
