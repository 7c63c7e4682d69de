"""`vla-ros record`: record demonstrations into a LeRobotDataset v3.0 folder, headless, in simulation.

The graph of `vla-ros demo` (sim_node, controller_node, policy_node on simulated time, one
process) plus the recorder (recorder_node in the same process, or an already running one with
--external-recorder). Per episode: hold, reset the sim (seed + k), activate, `recorder/start_episode`,
run until `sim/success` held for --hold-s or --timeout-s passed, then `recorder/save_episode` (a failed
episode is discarded unless --keep-failures). A progress line per episode (episodes, frames,
success) and, last, one JSON summary line:
{"dataset", "embodiment", "policy", "episodes", "saved", "successes", "frames", "dropped",
 "total_episodes", "total_frames", "seeds"}.

Episodes are appended to the folder: run it again on the same --out to add more.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass

from vla_ros.cli.demo import DEFAULT_TIMEOUT_S, _Supervisor, _transition, _wait_sim_time, executor_stopped

STREAMS_WAIT_S = 60.0  # wall seconds a session waits for a (re)started recorder to receive its streams


@dataclass(frozen=True)
class RecordedEpisode:
    index: int  # attempt number in this run
    seed: int
    instruction: str
    success: bool
    episode_time_s: float
    saved: bool
    dataset_episode: int | None
    frames: int
    dropped: int
    message: str


def record_add_arguments(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    parser.add_argument("--embodiment", default="fr3", help="embodiment config (fr3, panda, ur5, ur5e, aloha)")
    parser.add_argument("--out", required=True, help="dataset folder (created, or appended to)")
    parser.add_argument("--fps", type=int, default=30, help="dataset frame rate (default 30)")
    parser.add_argument("--episodes", type=int, default=10, help="episodes to record (default 10)")
    parser.add_argument("--policy", default="scripted", help="action source (default: scripted expert)")
    parser.add_argument("--checkpoint", default="", help="checkpoint for the policy factory")
    parser.add_argument("--policy-kwargs", default="{}", help="YAML/JSON mapping of policy factory arguments")
    parser.add_argument("--task", default="", help="task text of every episode (default: the sim's instruction)")
    parser.add_argument("--seed", type=int, default=0, help="episode k uses seed + k (default 0)")
    parser.add_argument("--timeout-s", type=float, default=DEFAULT_TIMEOUT_S, help="episode timeout (simulated s)")
    parser.add_argument("--hold-s", type=float, default=0.3, help="success must hold this long (simulated s)")
    parser.add_argument("--real-time-factor", type=float, default=1.0, help="cap on simulated/wall speed (0 = none)")
    parser.add_argument("--keep-failures", action="store_true", help="save episodes that did not succeed too")
    parser.add_argument("--codec", default="auto", help="video encoder (auto: AV1 if available, else H.264)")
    parser.add_argument("--teleop", choices=["joy", "keyboard", "leader"], default=None,
                        help="record a teleoperated session on the running graph instead (start the teleop with "
                             "bringup teleop:=... or `vla-ros teleop`; its episode buttons start/save/discard)")


def record_run(args: argparse.Namespace) -> int:
    if args.teleop is not None:
        return record_teleop(args)
    if args.episodes < 1:
        raise SystemExit(f"--episodes must be >= 1, got {args.episodes}")
    if not (args.timeout_s > 0 and math.isfinite(args.timeout_s)):
        raise SystemExit(f"--timeout-s must be a positive number of seconds, got {args.timeout_s}")
    from vla_ros.data.format import DatasetError

    try:
        session = RecordSession(args.embodiment, args.out, policy=args.policy, checkpoint=args.checkpoint,
                                policy_kwargs=args.policy_kwargs, seed=args.seed, fps=args.fps, task=args.task,
                                real_time_factor=args.real_time_factor, codec=args.codec)
    except (DatasetError, RuntimeError) as err:
        print(f"vla-ros record: {err}", file=sys.stderr)
        return 2
    results: list[RecordedEpisode] = []
    try:
        session.start()
        for k in range(args.episodes):
            r = session.run_episode(k, timeout_s=args.timeout_s, hold_s=args.hold_s,
                                    keep=lambda ok: ok or args.keep_failures,
                                    progress=lambda f, t: _progress(k, args.episodes, f, t))
            results.append(r)
            print("\r" + _episode_line(r, args.episodes), flush=True)
        summary = session.summary(results)
    finally:
        session.close()
    print(json.dumps(summary))
    return 0 if all(r.saved for r in results) else 1


def record_teleop(args: argparse.Namespace) -> int:
    """A recorder on a running graph (real, or `vla-ros demo`-like simulated) that a teleoperator
    drives with the episode buttons (teleop_node calls recorder/start|save|discard_episode): prints
    the status each second, and a JSON summary on Ctrl-C (an episode in progress is discarded)."""
    os.environ.setdefault("ROS_LOG_DIR", tempfile.mkdtemp(prefix="vla_ros_record_log_"))
    import rclpy
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.parameter import Parameter

    from vla_ros.nodes.recorder_node import RecorderNode
    from vla_ros.nodes.runtime import BackgroundSpinner

    rclpy.init(args=[])
    node = RecorderNode(parameter_overrides=[
        Parameter("embodiment", value=args.embodiment), Parameter("dataset", value=str(args.out)),
        Parameter("fps", value=int(args.fps)), Parameter("instruction", value=args.task),
        Parameter("codec", value=args.codec)])
    try:
        _transition(node, "recorder_node", "configure")
        _transition(node, "recorder_node", "activate")
    except RuntimeError as err:
        print(f"vla-ros record: {err}", file=sys.stderr)
        node.destroy_node()
        rclpy.try_shutdown()
        return 2
    executor = MultiThreadedExecutor(num_threads=5)
    executor.add_node(node)
    spinner = BackgroundSpinner(executor, "record_executor").start()
    print(f"recording into {args.out} with teleop '{args.teleop}': use the teleop's episode buttons "
          "(start / save / discard); Ctrl-C to stop", flush=True)
    saved0 = node.status_values().get("episodes_saved", 0)
    try:
        while spinner.is_alive():
            v = node.status_values()
            line = (f"episode {v['episode']}  {'RECORDING' if v['recording'] else 'idle     '}  {v['frames']:5d} frames  "
                    f"{v['seconds']:7.2f} s  {v['dropped']} dropped  {v['episodes_saved']} saved  "
                    f"{v['disk_free_mb']:.0f} MB free")
            print("\r" + line if sys.stdout.isatty() else line, end="" if sys.stdout.isatty() else "\n", flush=True)
            time.sleep(1.0)
    except KeyboardInterrupt:
        pass
    v = node.status_values()
    idle = spinner.stop()
    node.trigger_deactivate()
    if idle:
        node.destroy_node()
    rclpy.try_shutdown()
    print()
    print(json.dumps({"dataset": str(args.out), "teleop": args.teleop, "saved": v["episodes_saved"] - saved0,
                      "total_episodes": v["episodes_saved"]}))
    return 0


def _progress(k: int, n: int, frames: int, t_s: float) -> None:
    if sys.stdout.isatty():
        print(f"\repisode {k + 1}/{n}  recording  {frames:5d} frames  {t_s:6.2f} s", end="", flush=True)


def _episode_line(r: RecordedEpisode, n: int) -> str:
    status = "success" if r.success else "FAILED "
    saved = f"saved as episode {r.dataset_episode}" if r.saved else f"not saved ({r.message})"
    return (f"episode {r.index + 1}/{n}  seed {r.seed}  {status}  {r.episode_time_s:6.2f} s sim  {r.frames:5d} frames  "
            f"{r.dropped} dropped  {saved}")


class RecordSession:
    """The demo graph + a recorder, driven episode by episode (also used by the end-to-end tests:
    `external_recorder=True` talks to a recorder_node running in another process)."""

    def __init__(self, embodiment: str, out: str, *, policy: str = "scripted", checkpoint: str = "",
                 policy_kwargs: str = "{}", seed: int = 0, fps: int = 30, task: str = "",
                 real_time_factor: float = 1.0, codec: str = "auto", external_recorder: bool = False,
                 sim_params: dict | None = None) -> None:
        os.environ.setdefault("ROS_LOG_DIR", tempfile.mkdtemp(prefix="vla_ros_record_log_"))
        import rclpy
        from rclpy.executors import MultiThreadedExecutor
        from rclpy.node import Node
        from rclpy.parameter import Parameter
        from std_srvs.srv import Trigger

        from vla_ros.core.embodiment import load_embodiment
        from vla_ros.nodes.controller_node import ControllerNode
        from vla_ros.nodes.policy_node import PolicyNode
        from vla_ros.nodes.recorder_node import RecorderNode
        from vla_ros.nodes.sim_node import SimNode

        self.embodiment, self.out, self.policy_name, self.seed = embodiment, out, policy, int(seed)
        self.spec = load_embodiment(embodiment)
        self._trigger = Trigger
        self.context = rclpy.Context()
        rclpy.init(context=self.context, args=[])
        sim_time = Parameter("use_sim_time", value=True)
        self.nodes: list = []
        self._configured: list = []
        self._active: list = []
        self.executor = None
        self._spinner = None
        self.recorder = None
        try:
            sim_overrides = {"embodiment": embodiment, "seed": int(seed), "real_time_factor": float(real_time_factor)}
            sim_overrides.update(sim_params or {})
            self.sim = SimNode(context=self.context,
                               parameter_overrides=[Parameter(k, value=v) for k, v in sim_overrides.items()])
            self.nodes.append(self.sim)
            self.controller = ControllerNode(context=self.context,
                                             parameter_overrides=[Parameter("embodiment", value=embodiment)])
            self.nodes.append(self.controller)
            self.policy = PolicyNode(context=self.context, parameter_overrides=[
                Parameter("embodiment", value=embodiment), Parameter("policy", value=policy),
                Parameter("checkpoint", value=checkpoint), Parameter("policy_kwargs", value=policy_kwargs)])
            self.nodes.append(self.policy)
            for n in (self.controller, self.policy):
                n.set_parameters([sim_time])  # after construction: see vla-ros demo
            if not external_recorder:
                # The scripted expert (and most policies here) acts in ee_delta: record that as action.source.
                source = self._source_space(policy)
                self.recorder = RecorderNode(context=self.context, parameter_overrides=[
                    Parameter("embodiment", value=embodiment), Parameter("dataset", value=str(out)),
                    Parameter("fps", value=int(fps)), Parameter("instruction", value=task),
                    Parameter("source_space", value=source), Parameter("codec", value=codec)])
                self.nodes.append(self.recorder)
                self.recorder.set_parameters([sim_time])
            self.supervisor_node = Node("record_supervisor", context=self.context, parameter_overrides=[sim_time])
            self.nodes.append(self.supervisor_node)
            self.supervisor = _Supervisor(self.supervisor_node, 0.3, self.sim)
            self.clients = {name: self.supervisor_node.create_client(Trigger, f"recorder/{name}")
                            for name in ("start_episode", "save_episode", "discard_episode")}
            self._recorder_state = None
            if external_recorder:
                from lifecycle_msgs.srv import GetState

                self._recorder_state = self.supervisor_node.create_client(GetState, "recorder/get_state")
            self.executor = MultiThreadedExecutor(num_threads=5, context=self.context)
            for n in self.nodes:
                self.executor.add_node(n)
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _source_space(policy: str) -> str:
        return "ee_delta" if policy == "scripted" else ""

    def add_node(self, node) -> None:
        self.nodes.append(node)
        self.executor.add_node(node)

    def start(self) -> None:
        from vla_ros.nodes.runtime import BackgroundSpinner

        self._spinner = BackgroundSpinner(self.executor, "record_executor").start()
        if self.recorder is not None:
            _transition(self.recorder, "recorder_node", "configure")
            self._configured.insert(0, self.recorder)
            _transition(self.recorder, "recorder_node", "activate")
            self._active.append(self.recorder)
        _transition(self.controller, "controller_node", "configure")
        self._configured.append(self.controller)
        _transition(self.policy, "policy_node", "configure")
        self._configured.insert(0, self.policy)

    def call(self, name: str, timeout_wall_s: float = 300.0, attempt_s: float = 10.0):
        """Call recorder/<name>; a request whose answer does not come within attempt_s is sent again.

        (A Fast DDS client can lose the first answer of a server it has only just discovered -- a
        restarted recorder.) The services are safe to repeat: a repeated start answers "already
        recording", a repeated save or discard "no episode is being recorded"; both count as done.
        """
        client = self.clients[name]
        if not client.wait_for_service(timeout_sec=90.0):
            raise RuntimeError(f"service {client.srv_name} is not available: is the recorder running?")
        deadline = time.monotonic() + timeout_wall_s
        attempt = 0
        while True:
            attempt += 1
            future = client.call_async(self._trigger.Request())
            # a save may take a while (video append): wait longer before repeating it
            give_up = time.monotonic() + (attempt_s if name != "save_episode" else 4 * attempt_s)
            while not future.done() and time.monotonic() < min(give_up, deadline):
                time.sleep(0.005)
            if future.done():
                result = future.result()
                if attempt > 1 and not result.success and (
                        result.message.startswith("already recording") or result.message.startswith("no episode")):
                    result.success = True
                    result.message = f"{name}: done by an earlier request whose answer was lost ({result.message})"
                return result
            client.remove_pending_request(future)
            if time.monotonic() >= deadline:
                raise RuntimeError(f"{client.srv_name} did not answer within {timeout_wall_s} s")

    def wait_recorder_active(self, timeout_wall_s: float = 90.0) -> None:
        """An external recorder that configures and activates itself (autostart) offers its services
        from `configure` on: until its `activate` has run, start_episode is refused. Wait for the
        lifecycle state 'active' (a no-op for the recorder this session runs itself)."""
        if self._recorder_state is None:
            return
        from lifecycle_msgs.msg import State
        from lifecycle_msgs.srv import GetState

        client = self._recorder_state
        deadline = time.monotonic() + timeout_wall_s
        if not client.wait_for_service(timeout_sec=timeout_wall_s):
            raise RuntimeError(f"service {client.srv_name} is not available: is the recorder running?")
        label = "unknown"
        while time.monotonic() < deadline:
            future = client.call_async(GetState.Request())
            give_up = min(time.monotonic() + 5.0, deadline)
            while not future.done() and time.monotonic() < give_up:
                time.sleep(0.005)
            if future.done():
                state = future.result().current_state
                if state.id == State.PRIMARY_STATE_ACTIVE:
                    return
                label = state.label
            else:
                client.remove_pending_request(future)
            time.sleep(0.05)
        raise RuntimeError(f"the recorder did not become active within {timeout_wall_s:.0f} s (state '{label}')")

    def start_recording(self) -> str:
        """recorder/start_episode, once the recorder is active and has its streams; its message.
        A recorder that has only just started (or restarted) may not have them yet (DDS discovery
        of the cameras' publishers): asked again for up to STREAMS_WAIT_S, then its reason raised."""
        from vla_ros.data.recording import NO_READING_YET

        self.wait_recorder_active()
        r = self.call("start_episode")
        deadline = time.monotonic() + STREAMS_WAIT_S
        while not r.success and r.message.startswith(NO_READING_YET) and time.monotonic() < deadline:
            time.sleep(0.2)
            r = self.call("start_episode")
        if not r.success:
            raise RuntimeError(f"recorder/start_episode refused: {r.message}")
        return r.message

    def sim_time_s(self) -> float:
        return self.sim.hw.time_s

    def begin_episode(self, k: int) -> tuple[str, float]:
        """Hold, reset (seed + k), activate, start recording; returns (instruction, start sim time)."""
        if self.controller in self._active:
            _transition(self.policy, "policy_node", "deactivate")
            _transition(self.controller, "controller_node", "deactivate")
            self._active = [n for n in self._active if n not in (self.policy, self.controller)]
            _wait_sim_time(self.sim, 0.2)
        message = self.supervisor.reset()
        instruction = message.split(": ", 1)[-1]
        _wait_sim_time(self.sim, 0.1)
        _transition(self.controller, "controller_node", "activate")
        self._active.append(self.controller)
        # The controller's activation hold must reach the recorder before the episode starts: the
        # sim reset moved the arm, and the command in force before that hold is the last episode's.
        _wait_sim_time(self.sim, 0.1)
        self.start_recording()
        start_s = self.sim_time_s()
        _transition(self.policy, "policy_node", "activate")
        self._active.append(self.policy)
        return instruction, start_s

    def wait_outcome(self, start_s: float, timeout_s: float, hold_s: float, progress=None) -> tuple[bool, float]:
        self.supervisor.hold_s = hold_s
        last = 0.0
        while True:
            done_at = self.supervisor.success_at_s
            if done_at is not None and done_at >= start_s:
                return True, done_at - start_s
            if self.sim_time_s() - start_s > timeout_s:
                return False, timeout_s
            if not self._spinner.is_alive():
                raise executor_stopped(self._spinner)
            if progress is not None and time.monotonic() - last > 0.5 and self.recorder is not None:
                last = time.monotonic()
                v = self.recorder.status_values()
                progress(int(v.get("frames", 0)), self.sim_time_s() - start_s)
            time.sleep(0.01)

    def run_episode(self, k: int, timeout_s: float = DEFAULT_TIMEOUT_S, hold_s: float = 0.3,
                    keep=lambda ok: ok, progress=None) -> RecordedEpisode:
        instruction, start_s = self.begin_episode(k)
        success, t = self.wait_outcome(start_s, timeout_s, hold_s, progress)
        if keep(success):
            r = self.call("save_episode")
            if not r.success:
                return RecordedEpisode(k, self.seed + k, instruction, success, t, False, None, 0, 0, r.message)
            from vla_ros.data import LeRobotDataset

            ds = LeRobotDataset(self.out)
            row = ds.episode_meta(ds.num_episodes - 1)
            return RecordedEpisode(k, self.seed + k, instruction, success, t, True, int(row["episode_index"]),
                                   int(row["length"]), int(row.get("dropped_frames") or 0), r.message)
        r = self.call("discard_episode")
        return RecordedEpisode(k, self.seed + k, instruction, success, t, False, None, 0, 0,
                               "discarded: the episode did not succeed")

    def summary(self, results: list[RecordedEpisode]) -> dict:
        from vla_ros.data import LeRobotDataset

        ds = LeRobotDataset(self.out)
        return {
            "dataset": str(self.out), "embodiment": self.embodiment, "policy": self.policy_name,
            "episodes": len(results), "saved": sum(r.saved for r in results),
            "successes": sum(r.success for r in results), "frames": sum(r.frames for r in results if r.saved),
            "dropped": sum(r.dropped for r in results if r.saved), "total_episodes": ds.num_episodes,
            "total_frames": ds.num_frames, "fps": ds.fps, "seeds": [r.seed for r in results],
        }

    def close(self) -> None:
        import rclpy

        sim = getattr(self, "sim", None)
        if sim is not None:
            sim.stop()
        for n in list(self._active):
            try:
                n.trigger_deactivate()
            except Exception:  # noqa: BLE001 - best effort on the way out
                pass
        self._active = []
        # the nodes must not be destroyed under a spinning executor (a loaded machine takes a while)
        idle = self._spinner is None or self._spinner.stop()
        if idle:
            for n in self._configured:
                n.trigger_cleanup()
            for n in reversed(self.nodes):
                n.destroy_node()
        self._configured = []
        self.nodes = []
        rclpy.try_shutdown(context=self.context)
