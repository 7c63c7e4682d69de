"""`vla-ros eval`: measure a policy through the full ROS graph, as `vla-ros demo` runs it.

N episodes (seeds S, S+1, ...) run through `vla_ros.cli.demo.run_demo` (sim -> policy node ->
controller -> sim, simulated time); success is the sim's `sim/success` held for `--hold-s`, as
in the demo. Beside the graph, an observer node (its own rclpy context, same ROS domain) listens
to what a test cell would record:
- `sim/objects` (ground truth): which cube was lifted -- the first whose lowest corner rose
  `LIFT_HEIGHT_M` above the table, the success threshold of the task -- giving the asked-vs-lifted
  confusion; the episode's cube positions come from the task code (same seed, same scene), which
  also tells where an episode's `sim/objects` stream starts (the reset's poses);
- `joint_states` and each arm's command topic: the tracking error, |commanded - measured| per
  joint, with the commanded position interpolated exactly as the sim's JTC does;
- optionally one camera (`--video DIR`): an mp4 per episode.

Output: one line per episode; with --json a last line {"episodes", "successes", "success_rate",
"per_instruction", "mean_episode_time_s", "confusion", "tracking_error_rad", ...}; `--report PNG`
draws success per instruction, time to success, a top view of the cube positions coloured by
outcome, and the tracking error per episode.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from vla_ros.cli.demo import DEFAULT_TIMEOUT_S, EpisodeReport, add_min_success_rate, check_episode_args

log = logging.getLogger(__name__)

#: Default first seed: far from the seeds recordings use (0 ...), so evaluation scenes are held out.
DEFAULT_EVAL_SEED = 90001
NONE = "none"  # "no cube lifted" in the confusion
PICK_TEXT = "pick up the {colour} cube"  # vla_ros.sim.tasks.PICK_INSTRUCTION (not imported: mujoco)
_POSE_MATCH_M = 2e-3
_OTHER_SCENE_M = 0.03  # a cube this far from its initial position: not this episode's reset


# ---------------------------------------------------------------------------- pure analysis
def cube_clearance_m(pose: np.ndarray, half_size_m: float, table_z_m: float) -> float:
    """Height of a cube's lowest corner above the table (the task's success measure)."""
    R = pose[:3, :3]
    return float(pose[2, 3] - half_size_m * np.abs(R[2]).sum() - table_z_m)


def first_lift(samples: Sequence[tuple[float, dict[str, np.ndarray]]], threshold_m: float,
               half_size_m: float, table_z_m: float) -> tuple[str, float] | None:
    """(cube, time) of the first cube (in time) whose clearance reaches `threshold_m`, or None."""
    for t, poses in sorted(samples, key=lambda s: s[0]):
        lifted = [(cube_clearance_m(p, half_size_m, table_z_m), name) for name, p in poses.items()]
        lifted = [x for x in lifted if x[0] >= threshold_m]
        if lifted:
            return max(lifted)[1], float(t)
    return None


def first_lifted(samples: Sequence[tuple[float, dict[str, np.ndarray]]], threshold_m: float,
                 half_size_m: float, table_z_m: float) -> str | None:
    """The first cube (in time) whose clearance reaches `threshold_m`, or None."""
    found = first_lift(samples, threshold_m, half_size_m, table_z_m)
    return None if found is None else found[0]


_OBSERVER_DEPTH = 2000  # messages kept per subscription while the observer's executor lags (sim/objects: 66 s)


def episode_start_index(samples: Sequence[tuple[float, dict[str, np.ndarray]]],
                        initial_xyz: dict[str, np.ndarray], tol_m: float = _POSE_MATCH_M,
                        other_scene_m: float = _OTHER_SCENE_M) -> int | None:
    """Index of the first sample of the reset: searching back from the end, the earliest sample
    whose cube positions all equal the episode's initial ones (within tol_m) before a sample of
    another scene (a cube more than other_scene_m away: the previous episode's). A cube the arm
    brushes, which rocks and settles back, interrupts the run of matching samples without ending it
    (taken for the reset, it started the episode's window seconds late)."""
    def distances(poses: dict[str, np.ndarray]) -> list[float]:
        return [float(np.linalg.norm(poses[n][:3, 3] - xyz)) if n in poses else float("inf")
                for n, xyz in initial_xyz.items()]

    found = None
    for i in range(len(samples) - 1, -1, -1):
        d = distances(samples[i][1])
        if max(d) <= tol_m:
            found = i
        elif found is not None and max(d) > other_scene_m:
            break
    return found


@dataclass(frozen=True)
class EpisodeOutcome:
    """One evaluated episode: the demo's report plus what the observer saw."""

    report: EpisodeReport
    asked: str  # target cube of the task
    lifted: str | None  # first cube lifted, None when none was
    cube_xy_m: dict[str, tuple[float, float]]  # initial positions (world frame)
    tracking_rms_rad: float | None = None
    tracking_max_rad: float | None = None
    video: str | None = None
    lift_time_s: float | None = None  # first lift of any cube, from the reset
    # With an instruction that is not the scene's own (--ask-each-colour) the sim's success judges
    # another cube: the episode is judged here instead (asked cube lifted first).
    judged: bool | None = None

    @property
    def success(self) -> bool:
        return self.report.success if self.judged is None else self.judged

    @property
    def time_to_success_s(self) -> float | None:
        if not self.success:
            return None
        return self.report.episode_time_s if self.judged is None else self.lift_time_s


def confusion(outcomes: Sequence[EpisodeOutcome], cubes: Sequence[str]) -> dict[str, dict[str, int]]:
    """asked -> lifted -> count; columns are the cubes and "none"."""
    table = {a: {b: 0 for b in (*cubes, NONE)} for a in cubes}
    for o in outcomes:
        table.setdefault(o.asked, {b: 0 for b in (*cubes, NONE)})
        table[o.asked][o.lifted or NONE] = table[o.asked].get(o.lifted or NONE, 0) + 1
    return table


def per_instruction(outcomes: Sequence[EpisodeOutcome]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for o in outcomes:
        d = out.setdefault(o.report.instruction, {"episodes": 0, "successes": 0})
        d["episodes"] += 1
        d["successes"] += int(o.success)
    for d in out.values():
        d["success_rate"] = d["successes"] / d["episodes"]
    return dict(sorted(out.items()))


@dataclass(frozen=True)
class EvalReport:
    embodiment: str
    policy: str
    checkpoint: str
    cubes: tuple[str, ...]
    outcomes: tuple[EpisodeOutcome, ...]
    real_time_factor: float
    render_ms: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict:
        n = len(self.outcomes)
        k = sum(o.success for o in self.outcomes)
        times = [o.time_to_success_s for o in self.outcomes if o.time_to_success_s is not None]
        rms = [o.tracking_rms_rad for o in self.outcomes if o.tracking_rms_rad is not None]
        peak = [o.tracking_max_rad for o in self.outcomes if o.tracking_max_rad is not None]
        return {
            "episodes": n,
            "successes": k,
            "success_rate": k / n if n else float("nan"),
            "per_instruction": per_instruction(self.outcomes),
            "mean_episode_time_s": round(float(np.mean(times)), 3) if times else None,
            "confusion": confusion(self.outcomes, self.cubes),
            "wrong_cube_lifted": sum(o.lifted is not None and o.lifted != o.asked for o in self.outcomes),
            "instructions": "each colour" if any(o.judged is not None for o in self.outcomes) else "scene",
            "tracking_error_rad": {"mean_rms": round(float(np.mean(rms)), 5) if rms else None,
                                   "max": round(float(np.max(peak)), 5) if peak else None},
            "embodiment": self.embodiment,
            "policy": self.policy,
            "checkpoint": self.checkpoint or None,
            "seeds": [o.report.seed for o in self.outcomes],
            "real_time_factor": round(self.real_time_factor, 3),
            "render_ms": {s: round(v, 2) for s, v in self.render_ms.items()},
        }


def episode_line(o: EpisodeOutcome, n: int) -> str:
    e = o.report
    status = "success" if o.success else "FAILED "
    track = "" if o.tracking_rms_rad is None else f"  tracking rms {o.tracking_rms_rad * 1e3:.1f} mrad"
    t = o.time_to_success_s if o.time_to_success_s is not None else e.episode_time_s
    return (f"episode {e.index + 1}/{n}  seed {e.seed}  {status}  {t:6.2f} s sim  "
            f"{e.wall_time_s:6.2f} s wall  asked {o.asked}  lifted {o.lifted or NONE}{track}  \"{e.instruction}\"")


# ---------------------------------------------------------------------------- the observer
class _Observer:
    """Records sim/objects, joint states vs commands and (optionally) one camera; the main thread
    takes what was recorded at each episode's end (`take_segment`). With `instruction`, answers
    every reset's instruction with that one."""

    def __init__(self, spec, video_slot: str | None, instruction: str | None = None) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import CompressedImage, Image, JointState
        from std_msgs.msg import Float64MultiArray, String
        from trajectory_msgs.msg import JointTrajectory
        from visualization_msgs.msg import MarkerArray

        from vla_ros.nodes.runtime import BackgroundSpinner
        from vla_ros.nodes.sim_node import INSTRUCTION_QOS

        self.spec = spec
        self._lock = threading.Lock()
        self.context = rclpy.Context()
        rclpy.init(context=self.context, args=[])
        self.node = Node("eval_observer", context=self.context)
        self._home = {arm.name: np.asarray(arm.home_rad, dtype=float) for arm in spec.arms}
        self._names = {arm.name: tuple(arm.joint_names) for arm in spec.arms}
        self._forward = {arm.name for arm in spec.arms if arm.command.kind != "joint_trajectory"}
        self._last_state_s: dict[str, float] = {}
        self._segment = self._new_segment()
        node = self.node
        self._override = instruction
        if instruction is not None:
            # Each reset publishes the scene's instruction; answer it with ours, and repeat ours
            # (latest wins at the policy node) in case the two crossed on the way.
            self._instruction_pub = node.create_publisher(String, "instruction", INSTRUCTION_QOS)
            node.create_subscription(String, "instruction", self._on_instruction, INSTRUCTION_QOS)
            node.create_timer(0.25, self._publish_override)
        # Deep queues for what the measurement needs (small messages): on a loaded machine this
        # executor (which also decodes video frames) lags the sim by seconds, and a KEEP_LAST queue of
        # 50 (1.7 s of sim/objects) then dropped the very samples that show the lift.
        node.create_subscription(MarkerArray, "sim/objects", self._on_objects, _OBSERVER_DEPTH)
        for arm in spec.arms:
            bare = tuple(arm.joint_names)
            if arm.command.kind == "joint_trajectory":
                node.create_subscription(JointTrajectory, arm.command.topic,
                                         lambda m, a=arm.name: self._on_trajectory(a, m), _OBSERVER_DEPTH)
            else:
                node.create_subscription(Float64MultiArray, arm.command.topic,
                                         lambda m, a=arm.name: self._on_forward(a, m), _OBSERVER_DEPTH)
            node.create_subscription(JointState, arm.joint_states_topic,
                                     lambda m, a=arm.name, b=bare: self._on_joint_state(a, b, m),
                                     qos_profile_sensor_data)
        if video_slot is not None:
            cam = spec.camera(video_slot)
            kind = CompressedImage if cam.compressed else Image
            node.create_subscription(kind, cam.topic, self._on_image, qos_profile_sensor_data)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(node)
        self._spinner = BackgroundSpinner(self.executor, "eval_observer").start()

    def _new_segment(self) -> dict:
        return {"objects": [], "frames": [], "home": self._home, "joint_names": self._names,
                "states": {a: [] for a in self._home}, "commands": {a: [] for a in self._home},
                "forward": {a: a in self._forward for a in self._home}}

    # callbacks (executor thread): store only; the episode is measured after it ends
    def _on_instruction(self, msg) -> None:
        if msg.data != self._override:
            self._publish_override()

    def _publish_override(self) -> None:
        from std_msgs.msg import String

        self._instruction_pub.publish(String(data=self._override))

    def _on_objects(self, msg) -> None:
        from vla_ros.nodes import conversions as cv

        stamp = cv.time_to_s(msg.markers[0].header.stamp) if msg.markers else 0.0
        poses = cv.markers_to_poses(msg)
        with self._lock:
            self._segment["objects"].append((stamp, poses))

    def _on_trajectory(self, arm: str, msg) -> None:
        from vla_ros.nodes.sim_node import trajectory_command

        command = trajectory_command(msg, 0.0)
        with self._lock:
            # A stamped trajectory is sent at its stamp (the controller's now); an unstamped one
            # (a hold) starts on arrival: the newest measured time is the best estimate.
            t = command.stamp_s or self._last_state_s.get(arm, 0.0)
            self._segment["commands"][arm].append((t, command))

    def _on_forward(self, arm: str, msg) -> None:
        with self._lock:
            self._segment["commands"][arm].append((self._last_state_s.get(arm, 0.0), np.asarray(msg.data, float)))

    def _on_joint_state(self, arm: str, bare: tuple[str, ...], msg) -> None:
        from vla_ros.nodes import conversions as cv

        t = cv.time_to_s(msg.header.stamp)
        try:
            q = cv.joint_state_positions(msg, bare)
        except KeyError:
            return
        if len(msg.velocity) == len(msg.name):
            index = {n: i for i, n in enumerate(msg.name)}
            qd = np.array([msg.velocity[index[n]] for n in bare])
        else:
            qd = np.zeros_like(q)
        with self._lock:
            self._last_state_s[arm] = t
            self._segment["states"][arm].append((t, q, qd))

    def _on_image(self, msg) -> None:
        from vla_ros.nodes import conversions as cv

        t = cv.time_to_s(msg.header.stamp)
        frame = cv.image_to_rgb8(msg)
        with self._lock:
            self._segment["frames"].append((t, frame))

    # main thread
    def objects_snapshot(self) -> list:
        with self._lock:
            return sorted(self._segment["objects"], key=lambda x: x[0])

    def take_segment(self) -> dict:
        with self._lock:
            seg, self._segment = self._segment, self._new_segment()
        return seg

    def close(self) -> None:
        import rclpy

        if self._spinner.stop():
            self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


def tracking_errors(states: Sequence[tuple[float, np.ndarray, np.ndarray]], commands: Sequence[tuple[float, object]],
                    joint_names: Sequence[str], home: np.ndarray, forward: bool = False) -> list[tuple[float, float]]:
    """(t, max_j |commanded_j - measured_j|) at every measured state, the commanded position
    replayed in time order exactly as the sim's default JTC interpolates it (from holding `home`,
    as after a reset); for a forward controller the newest command is the commanded position."""
    from vla_ros.core.jtc import JointTrajectoryController

    jtc = JointTrajectoryController(tuple(joint_names))
    jtc.hold(home)
    target = np.asarray(home, dtype=float)
    events = sorted([(t, 0, i) for i, (t, _) in enumerate(commands)] + [(t, 1, i) for i, (t, _, _) in enumerate(states)])
    out: list[tuple[float, float]] = []
    for t, kind, i in events:
        if kind == 0:
            command = commands[i][1]
            if forward:
                target = np.asarray(command, dtype=float)
            else:
                jtc.receive(command, t)  # a trajectory a real JTC would reject is ignored, as in the sim
            continue
        _, q, qd = states[i]
        desired = target if forward else jtc.update(t, q, qd).positions
        if desired.shape == q.shape:
            out.append((t, float(np.max(np.abs(desired - q)))))
    return out


def write_video(frames: Sequence[np.ndarray], path: Path, fps: float) -> None:
    """H.264 mp4 (yuv420p; odd sizes padded by one pixel) from RGB frames."""
    import av

    h, w = frames[0].shape[:2]
    H, W = h + h % 2, w + w % 2
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=int(round(fps)))
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        for f in frames:
            if (H, W) != (h, w):
                f = np.pad(f, ((0, H - h), (0, W - w), (0, 0)), mode="edge")
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def episode_end_s(report: EpisodeReport, reset_s: float, hold_s: float) -> float:
    """Simulated time at which the episode ended (success held for hold_s, or the timeout). The
    episode starts after the reset (the sim's reset stamp `reset_s`) once the controller and the
    policy are active: on a loaded machine that takes seconds of simulated time, so the start the
    demo read from the sim is used where the report has it."""
    start = report.start_sim_s if report.start_sim_s is not None and report.start_sim_s >= reset_s else reset_s
    return start + report.episode_time_s + hold_s


def video_frames(stamped: Sequence[tuple[float, np.ndarray]], start_s: float, end_s: float) -> list[np.ndarray]:
    """The scene camera's frames of [start_s, end_s] in simulated-time order, one per stamp: while
    the simulated clock stands (before the first episode the sim waits for the graph; a reset takes
    no time) the camera goes on publishing the same instant, and the video showed seconds of a still
    arm that never happened in the episode. Of frames with one stamp the last to arrive is kept
    (after a reset: the new scene)."""
    last: dict[float, np.ndarray] = {}
    for t, frame in sorted(stamped, key=lambda s: s[0]):  # stable: arrival order within a stamp
        if start_s <= t <= end_s:
            last[t] = frame
    return list(last.values())


def analyse_episode(report: EpisodeReport, segment: dict, task, half_size_m: float, table_z_m: float,
                    lift_threshold_m: float, hold_s: float = 0.3, video_dir: Path | None = None,
                    camera_rate_hz: float = 30.0, asked: str | None = None) -> EpisodeOutcome:
    """Find the reset in the observer's segment (the first of the sim/objects samples that show
    this seed's initial poses), and measure the episode from there. With `asked` (an instruction
    that is not the scene's own), the episode is judged by which cube was lifted first."""
    initial = {n: np.asarray(p[:3]) for n, p in task.initial_cube_poses.items()}
    objects = sorted(segment["objects"], key=lambda s: s[0])
    start = episode_start_index(objects, initial)
    start_s = objects[start][0] if start is not None else (objects[0][0] if objects else 0.0)
    # The demo read the episode's start from the sim's clock (0.1 s of simulated time after the
    # reset): the time to the lift counts from there, like the report's episode time, and a window
    # by time from there holds none of the previous episode's samples. The reset found in the
    # stream stands in only where the report has no start (counted from it, an ask-each-colour run
    # reported a 1.17 s lift).
    begin_s = start_s if report.start_sim_s is None else report.start_sim_s
    end_s = episode_end_s(report, begin_s, hold_s if report.success else 0.0) + 0.2
    if report.start_sim_s is not None:
        window = [s for s in objects if begin_s <= s[0] <= end_s + 1e-6]
    else:
        # From the reset's first sample on, by index: the sim publishes the reset scene at the same
        # simulated time as the last sample before it (time does not advance in a reset), so a
        # window by time alone began with the previous episode's lifted cube.
        window = [s for s in objects[start or 0:] if start_s <= s[0] <= end_s + 1e-6]
    lift = first_lift(window, lift_threshold_m, half_size_m, table_z_m)
    lifted = None if lift is None else lift[0]
    errors = []
    for arm, states in segment.get("states", {}).items():
        # The reset put the arm home with its JTC holding there: replay from that moment.
        states = [s for s in states if start_s <= s[0] <= end_s]
        commands = [c for c in segment["commands"][arm] if start_s <= c[0] <= end_s]
        pairs = tracking_errors(states, commands, segment["joint_names"][arm], segment["home"][arm],
                                forward=segment["forward"][arm])
        errors.extend(e for _, e in pairs)
    errors = np.array(errors)
    video = None
    frames = video_frames(segment["frames"], start_s, end_s)
    if video_dir is not None and frames:
        tag = "" if asked is None else f"_asked_{asked}"
        path = video_dir / f"episode_{report.index:03d}_seed_{report.seed}{tag}.mp4"
        write_video(frames, path, camera_rate_hz)
        video = str(path)
    target = task.target if asked is None else asked
    judged = None
    if asked is not None:
        judged = lifted == asked
        report = dataclasses.replace(report, instruction=PICK_TEXT.format(colour=asked.removesuffix("_cube")))
    return EpisodeOutcome(
        report=report,
        asked=target,
        lifted=lifted,
        lift_time_s=None if lift is None else lift[1] - begin_s,
        judged=judged,
        cube_xy_m={n: (float(p[0]), float(p[1])) for n, p in initial.items()},
        tracking_rms_rad=float(np.sqrt(np.mean(errors ** 2))) if errors.size else None,
        tracking_max_rad=float(errors.max()) if errors.size else None,
        video=video,
    )


# ---------------------------------------------------------------------------- the report figure
_CUBE_COLOURS = {"red_cube": "tab:red", "green_cube": "tab:green", "blue_cube": "tab:blue"}


def write_report_png(report: EvalReport, path: str | Path) -> Path:
    """Four panels: success per instruction, time to success, top view of the asked cube's start
    position (filled = success, cross = failure, circle = another cube lifted), tracking error."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = report.summary()
    fig, ax = plt.subplots(2, 2, figsize=(11, 8.5))
    fig.suptitle(f"vla-ros eval: {report.policy} on {report.embodiment}: {s['successes']}/{s['episodes']} "
                 f"({100 * s['success_rate']:.0f} %)")
    names = list(s["per_instruction"])
    rates = [s["per_instruction"][k]["success_rate"] for k in names]
    counts = [f"{s['per_instruction'][k]['successes']}/{s['per_instruction'][k]['episodes']}" for k in names]
    a = ax[0, 0]
    bars = a.bar(range(len(names)), rates, color="tab:gray")
    for b, c in zip(bars, counts):
        a.text(b.get_x() + b.get_width() / 2, b.get_height() + 0.02, c, ha="center")
    a.set_xticks(range(len(names)), [n.replace("pick up the ", "") for n in names], rotation=15)
    a.set_ylim(0, 1.15)
    a.set_ylabel("success rate")
    a.set_title("success per instruction")
    a = ax[0, 1]
    times = [o.time_to_success_s for o in report.outcomes if o.time_to_success_s is not None]
    if times:
        a.hist(times, bins=max(3, min(20, len(times))), color="tab:green")
    a.set_xlabel("time to success (simulated s)")
    a.set_ylabel("episodes")
    a.set_title("time to success")
    a = ax[1, 0]
    others = [xy for o in report.outcomes for n, xy in o.cube_xy_m.items() if n != o.asked]
    if others:  # the other cubes of each scene, faint: the spawn region
        a.scatter([xy[1] for xy in others], [xy[0] for xy in others], c="lightgray", marker="s", s=12)
    for o in report.outcomes:
        if o.asked not in o.cube_xy_m:
            continue
        x, y = o.cube_xy_m[o.asked]
        colour = _CUBE_COLOURS.get(o.asked, "black")
        if o.success:
            a.scatter(y, x, c=colour, marker="o", s=50)
        elif o.lifted is not None:
            a.scatter(y, x, facecolors="none", edgecolors=colour, marker="o", s=60)
        else:
            a.scatter(y, x, c=colour, marker="x", s=50)
    a.set_xlabel("y (m, world)")
    a.set_ylabel("x (m, world)")
    a.invert_xaxis()
    a.set_aspect("equal", adjustable="datalim")
    a.set_title("asked cube's start: ● success  ○ wrong cube  × nothing")
    a = ax[1, 1]
    idx = [o.report.index + 1 for o in report.outcomes if o.tracking_rms_rad is not None]
    rms = [o.tracking_rms_rad * 1e3 for o in report.outcomes if o.tracking_rms_rad is not None]
    peak = [o.tracking_max_rad * 1e3 for o in report.outcomes if o.tracking_max_rad is not None]
    a.bar(idx, peak, color="tab:orange", label="max")
    a.bar(idx, rms, color="tab:blue", label="rms")
    a.set_xlabel("episode")
    a.xaxis.get_major_locator().set_params(integer=True)
    a.set_ylabel("|commanded - measured| (mrad)")
    a.set_title("joint tracking error")
    a.legend()
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out


# ---------------------------------------------------------------------------- running it
def run_eval(
    embodiment: str = "fr3",
    policy: str = "scripted",
    checkpoint: str = "",
    policy_kwargs: str = "{}",
    episodes: int = 10,
    seed: int = DEFAULT_EVAL_SEED,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    hold_s: float = 0.3,
    real_time_factor: float = 1.0,
    video_dir: str | Path | None = None,
    video_camera: str | None = None,
    on_episode=None,
    ask_each_colour: bool = False,
) -> EvalReport:
    """Run `episodes` episodes through the graph (vla_ros.cli.demo.run_demo) and measure them.

    ask_each_colour: run the same scenes once per cube, the instruction replaced by "pick up the
    <colour> cube" for every colour (the instruction must decide which cube is picked); such an
    episode succeeds when the asked cube is the first one lifted, and runs to the timeout when it
    is not the scene's own target (the sim's success only knows that one)."""
    os.environ.setdefault("ROS_LOG_DIR", tempfile.mkdtemp(prefix="vla_ros_eval_log_"))
    from vla_ros.cli.demo import run_demo
    from vla_ros.core.embodiment import load_embodiment
    from vla_ros.sim.scene import CUBE_HALF_SIZE_M, TABLE_TOP_Z_M, build_scene
    from vla_ros.sim.tasks import HANDOVER_CLEARANCE_M, LIFT_HEIGHT_M, make_task

    spec = load_embodiment(embodiment)
    scene = build_scene(spec)  # the task code: initial poses and target per seed
    threshold = LIFT_HEIGHT_M if len(scene.arms) == 1 else HANDOVER_CLEARANCE_M
    vdir = None
    slot = None
    if video_dir:
        vdir = Path(video_dir)
        vdir.mkdir(parents=True, exist_ok=True)
        slot = video_camera or spec.cameras[0].slot
    if ask_each_colour and len(scene.arms) != 1:
        raise ValueError(f"--ask-each-colour needs the pick task (one arm); '{embodiment}' runs a hand-over")
    passes: list[str | None] = list(scene.cubes) if ask_each_colour else [None]
    outcomes: list[EpisodeOutcome] = []
    rtf, render_ms = [], {}
    for asked in passes:
        text = None if asked is None else PICK_TEXT.format(colour=asked.removesuffix("_cube"))
        observer = _Observer(spec, slot, instruction=text)

        def episode_done(report: EpisodeReport, n: int, asked=asked, observer=observer) -> None:
            task = make_task(scene, report.seed)
            _catch_up(observer, task, report, hold_s)
            segment = observer.take_segment()
            if task.instruction != report.instruction:
                raise RuntimeError(f"seed {report.seed}: the task code gives '{task.instruction}' but the sim said "
                                   f"'{report.instruction}'")
            outcome = analyse_episode(report, segment, task, CUBE_HALF_SIZE_M, TABLE_TOP_Z_M, threshold, hold_s,
                                      vdir, asked=asked)
            outcomes.append(outcome)
            if on_episode is not None:
                on_episode(outcome, n)

        try:
            demo = run_demo(embodiment=embodiment, policy=policy, episodes=episodes, seed=seed, timeout_s=timeout_s,
                            hold_s=hold_s, real_time_factor=real_time_factor, checkpoint=checkpoint,
                            policy_kwargs=policy_kwargs, on_episode=episode_done)
        finally:
            observer.close()
        rtf.append(demo.real_time_factor)
        render_ms = dict(demo.render_ms)
    return EvalReport(embodiment, policy, checkpoint, tuple(scene.cubes), tuple(outcomes), float(np.mean(rtf)),
                      render_ms)


def _catch_up(observer: _Observer, task, report: EpisodeReport, hold_s: float, limit_wall_s: float = 30.0) -> None:
    """Wait until the observer has heard sim/objects up to the episode's end (on a loaded machine
    its executor may lag the sim by seconds)."""
    initial = {n: np.asarray(p[:3]) for n, p in task.initial_cube_poses.items()}
    deadline = time.monotonic() + limit_wall_s
    while True:
        objects = observer.objects_snapshot()
        start = episode_start_index(objects, initial)
        end_s = None if start is None else episode_end_s(report, objects[start][0], hold_s) + 0.5
        if end_s is not None and objects[-1][0] >= end_s:
            return
        if time.monotonic() > deadline:
            log.warning("eval observer: sim/objects of seed %d heard only up to %s s; measuring what arrived",
                        report.seed, objects[-1][0] if objects else None)
            return
        time.sleep(0.05)


def eval_add_arguments(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    parser.add_argument("--embodiment", default="fr3", help="embodiment config (fr3, panda, ur5, ur5e, aloha)")
    parser.add_argument("--policy", default=None,
                        help="registered policy name (default: vla when --checkpoint is given, else the built-in "
                             "VLA of the embodiment when one is shipped, else scripted)")
    parser.add_argument("--checkpoint", default="", help="checkpoint folder for the policy (e.g. vla-ros train --out)")
    parser.add_argument("--policy-kwargs", default="{}", help="YAML/JSON mapping of policy factory arguments")
    parser.add_argument("--episodes", type=int, default=10, help="number of episodes (default 10)")
    parser.add_argument("--seed", type=int, default=DEFAULT_EVAL_SEED,
                        help=f"episode k uses seed + k (default {DEFAULT_EVAL_SEED}: scenes no recording used)")
    parser.add_argument("--timeout-s", type=float, default=DEFAULT_TIMEOUT_S, help="episode timeout in simulated s")
    parser.add_argument("--hold-s", type=float, default=0.3, help="success must hold this long (simulated s)")
    parser.add_argument("--real-time-factor", type=float, default=1.0, help="cap on simulated/wall speed (0 = uncapped)")
    parser.add_argument("--video", default="", metavar="DIR", help="write an mp4 per episode into DIR")
    parser.add_argument("--video-camera", default=None, help="camera slot for --video (default: the first camera)")
    parser.add_argument("--report", default="", metavar="PNG", help="write the report figure to PNG")
    add_min_success_rate(parser)
    parser.add_argument("--ask-each-colour", action="store_true",
                        help="run the scenes once per cube colour, asking for that colour (3x the episodes; "
                             "the asked-vs-lifted confusion shows whether the instruction decides)")
    parser.add_argument("--json", action="store_true", help="print one JSON summary as the last line")


def _check_args(args: argparse.Namespace) -> None:
    check_episode_args(args)
    if args.checkpoint and not Path(args.checkpoint).exists():
        raise SystemExit(f"--checkpoint {args.checkpoint} does not exist")
    if args.report and not args.report.lower().endswith(".png"):
        raise SystemExit(f"--report must name a .png file, got {args.report}")


def resolve_policy(policy: str | None, checkpoint: str, embodiment: str = "fr3") -> str:
    """--policy as given; else `builtin.default_policy` in simulation: "vla" with --checkpoint, the
    shipped built-in VLA of the embodiment when its measured held-out success rate reaches
    `builtin.DEFAULT_MIN_SUCCESS_RATE`, else the scripted expert."""
    if policy:
        return policy
    from vla_ros.policies.builtin import default_policy

    return default_policy(embodiment, checkpoint, sim=True)


def eval_run(args: argparse.Namespace) -> int:
    _check_args(args)
    policy = resolve_policy(args.policy, args.checkpoint, args.embodiment)
    if args.video_camera is not None:
        from vla_ros.core.embodiment import load_embodiment

        slots = [c.slot for c in load_embodiment(args.embodiment).cameras]
        if args.video_camera not in slots:
            raise SystemExit(f"--video-camera {args.video_camera!r} is not a camera of {args.embodiment}: {slots}")
    report = run_eval(
        embodiment=args.embodiment, policy=policy, checkpoint=args.checkpoint, policy_kwargs=args.policy_kwargs,
        episodes=args.episodes, seed=args.seed, timeout_s=args.timeout_s, hold_s=args.hold_s,
        real_time_factor=args.real_time_factor, video_dir=args.video or None, video_camera=args.video_camera,
        on_episode=lambda o, n: print(episode_line(o, n), flush=True), ask_each_colour=args.ask_each_colour,
    )
    summary = report.summary()
    if args.report:
        summary["report"] = str(write_report_png(report, args.report))
    if args.video:
        summary["videos"] = [o.video for o in report.outcomes]
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"{summary['successes']}/{summary['episodes']} succeeded ({100 * summary['success_rate']:.0f} %) on "
              f"{summary['embodiment']} with '{summary['policy']}', mean time to success "
              f"{summary['mean_episode_time_s']} s (sim); asked -> lifted: {summary['confusion']}")
    return 0 if summary["success_rate"] >= args.min_success_rate else 1
