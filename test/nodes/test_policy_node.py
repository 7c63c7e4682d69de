"""policy_node in-process with rclpy: real topics, a fake policy registered like a real one."""

from __future__ import annotations

import itertools
import threading
import time

import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState
from rclpy.executors import SingleThreadedExecutor
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory

from vla_ros.core.embodiment import load_embodiment
from vla_ros.core.types import ActionChunk, Observation
from vla_ros.nodes import conversions as cv
from vla_ros.nodes.policy_node import INSTRUCTION_QOS, PolicyNode, parse_policy_kwargs
from vla_ros.policies import base
from vla_ros.policies.base import register_policy
from vla_ros.nodes.runtime import BackgroundSpinner

SPEC = load_embodiment("fr3")
JOINTS = list(SPEC.arms[0].joint_names) + [SPEC.arms[0].gripper.joint_name]


class FakePolicy:
    """Column 0 of every row = len(instruction), column 1 = joint 1 of the observation.
    Sleeps `latency_s` inside infer, like a slow model."""

    needs_privileged = False
    thread_safe = True  # only the last observation/events are shared, for the tests to read

    def __init__(self, embodiment, latency_s: float = 0.0, steps: int = 5, period_s: float = 0.05,
                 privileged: bool = False, nan_rows: int = 0):
        self.needs_privileged = bool(privileged)
        self.action_names = tuple(embodiment.joint_names) + ("gripper",)
        self.period_s = float(period_s)
        self.steps = int(steps)
        self.latency_s = float(latency_s)
        self.nan_rows = int(nan_rows)  # a broken model: NaN in column 2 of the first rows
        self.observations: list[Observation] = []
        self.started = threading.Event()
        self.finished = threading.Event()
        self.closed = False
        self.resets = 0
        FakePolicy.last = self

    def infer(self, observation: Observation) -> ActionChunk:
        self.finished.clear()
        self.started.set()
        time.sleep(self.latency_s)
        self.observations.append(observation)
        values = np.zeros((self.steps, len(self.action_names)))
        values[:, 0] = len(observation.instruction)
        values[:, 1] = observation.joint_positions[0] if len(observation.joint_positions) else 0.0
        values[: self.nan_rows, 2] = np.nan
        self.finished.set()
        self.started.clear()
        return ActionChunk(self.action_names, values, self.period_s, observation.stamp_s)

    def reset(self) -> None:
        self.resets += 1

    def close(self) -> None:
        self.closed = True


def make_fake_policy(embodiment, **kwargs) -> FakePolicy:
    return FakePolicy(embodiment, **kwargs)


_ns = itertools.count()


@pytest.fixture(scope="module")
def ros():
    # registered like a real policy, and removed again so other tests see the real registry
    register_policy("test_fake", f"{__name__}:make_fake_policy", "test double for policy_node")
    rclpy.init()
    yield
    rclpy.shutdown()
    base._REGISTRY.pop("test_fake", None)


class Harness:
    """The node under test, a peer node with publishers/subscribers, and a spinning executor."""

    def __init__(self, **params):
        self.ns = f"/pn{next(_ns)}"
        defaults = dict(embodiment="fr3", policy="test_fake", policy_kwargs="{}", diagnostics_period_s=0.1,
                        max_observation_age_s=0.3)  # fmt: skip
        defaults.update(params)
        self.node = PolicyNode(namespace=self.ns, parameter_overrides=[Parameter(k, value=v) for k, v in defaults.items()])
        self.peer = Node("peer", namespace=self.ns)
        self.chunks: list[tuple[float, JointTrajectory]] = []
        self.diagnostics: list[DiagnosticArray] = []
        self.peer.create_subscription(JointTrajectory, "action_chunk", lambda m: self.chunks.append((time.time(), m)), 10)
        self.peer.create_subscription(DiagnosticArray, "diagnostics", self.diagnostics.append, 10)
        self.pub_front = self.peer.create_publisher(Image, "cameras/front/image_raw", 10)
        self.pub_wrist = self.peer.create_publisher(Image, "cameras/wrist/image_raw", 10)
        self.pub_js = self.peer.create_publisher(JointState, "joint_states", 10)
        self.pub_instr = self.peer.create_publisher(String, "instruction", INSTRUCTION_QOS)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.executor.add_node(self.peer)
        self.spinner = BackgroundSpinner(self.executor, "policy_test").start()
        self._stream_stop = threading.Event()
        self._streamer: threading.Thread | None = None
        self.image = np.zeros((24, 32, 3), np.uint8)

    def start(self):
        assert self.node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert self.node.trigger_activate() == TransitionCallbackReturn.SUCCESS

    def publish_set(self, stamp_s: float, q0: float = 0.1, wrist: bool = True, wrist_stamp_s: float | None = None):
        self.pub_front.publish(cv.array_to_image(self.image, "rgb8", stamp_s=stamp_s))
        if wrist:
            ws = stamp_s + 0.004 if wrist_stamp_s is None else wrist_stamp_s
            self.pub_wrist.publish(cv.array_to_image(self.image, "rgb8", stamp_s=ws))
        q = np.full(len(JOINTS), q0)
        self.pub_js.publish(cv.make_joint_state(JOINTS, q, stamp_s=stamp_s + 0.002))

    def stream(self, rate_hz: float = 30.0, **kw):
        def run():
            while not self._stream_stop.is_set():
                self.publish_set(time.time(), **kw)
                time.sleep(1.0 / rate_hz)

        self._stream_stop.clear()
        self._streamer = threading.Thread(target=run, daemon=True)
        self._streamer.start()

    def stop_stream(self):
        self._stream_stop.set()
        if self._streamer is not None:
            self._streamer.join()

    def instruct(self, text: str):
        self.pub_instr.publish(String(data=text))

    def change_state(self, transition_id: int, timeout_s: float = 10.0) -> bool:
        """A transition requested the way `ros2 lifecycle set` does: through the node's
        `~/change_state` service, so it runs on the executor thread (a transition triggered
        from the test thread would destroy entities under the spinning executor)."""
        client = self.peer.create_client(ChangeState, f"{self.node.get_fully_qualified_name()}/change_state")
        try:
            assert client.wait_for_service(timeout_sec=timeout_s)
            request = ChangeState.Request()
            request.transition.id = transition_id
            future = client.call_async(request)
            assert self.wait_for(future.done, timeout_s)
            return bool(future.result().success)
        finally:
            self.peer.destroy_client(client)

    def wait_for(self, predicate, timeout_s: float = 3.0) -> bool:
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if predicate():
                return True
            time.sleep(0.005)
        return predicate()

    def close(self):
        self.stop_stream()
        assert self.spinner.stop()
        self.node.destroy_node()
        self.peer.destroy_node()


@pytest.fixture
def harness(ros):
    made = []

    def make(**params):
        h = Harness(**params)
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


def test_parse_policy_kwargs():
    assert parse_policy_kwargs('{"latency_s": 0.5, "steps": 3}') == {"latency_s": 0.5, "steps": 3}
    assert parse_policy_kwargs("latency_s: 0.5") == {"latency_s": 0.5}
    assert parse_policy_kwargs("") == {}
    with pytest.raises(ValueError, match="policy_kwargs must be a mapping"):
        parse_policy_kwargs("[1, 2]")


def test_chunk_is_stamped_with_observation_capture_time(harness):
    h = harness()
    h.start()
    stamp = time.time()
    h.instruct("ab")
    assert h.wait_for(lambda: h.node._sync.instruction == "ab")
    h.publish_set(stamp, q0=0.25)
    assert h.wait_for(lambda: len(h.chunks) >= 1)
    msg = h.chunks[0][1]
    # newest reading of the set: the wrist frame at stamp + 4 ms
    expected = cv.s_to_time(stamp + 0.004)
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (expected.sec, expected.nanosec)
    chunk = cv.msg_to_chunk(msg)
    assert chunk.names == FakePolicy.last.action_names
    assert chunk.period_s == pytest.approx(0.05) and chunk.num_steps == 5
    np.testing.assert_allclose(chunk.values[:, 0], 2.0)  # len("ab")
    np.testing.assert_allclose(chunk.values[:, 1], 0.25)  # the published joint state
    obs = FakePolicy.last.observations[-1]
    assert set(obs.images) == {"front", "wrist"} and obs.joint_names == tuple(JOINTS)


def test_missing_then_stale_camera_gives_no_chunk_and_says_why(harness):
    h = harness()
    h.start()
    h.stream(wrist=False)
    assert h.wait_for(lambda: any("camera 'wrist' has sent nothing yet" in d.status[0].message for d in h.diagnostics))
    assert h.node.stats.refusals.get("missing", 0) > 0
    h.stop_stream()
    # a wrist frame arrives but is 1 s old while front keeps streaming: stale, still no chunk
    h.publish_set(time.time(), wrist_stamp_s=time.time() - 1.0)
    h.stream(wrist=False)
    assert h.wait_for(lambda: any("camera 'wrist' is stale" in d.status[0].message for d in h.diagnostics))
    assert h.chunks == [] and [o for o in FakePolicy.last.observations if o.stamp_s > 0] == []  # only warm-up
    warn = [d.status[0] for d in h.diagnostics if "stale" in d.status[0].message][-1]
    assert warn.level == cv.DIAGNOSTIC_LEVELS["warn"]


def test_non_finite_joint_states_are_ignored_and_no_chunk_is_computed_from_them(harness):
    h = harness()
    h.start()
    h.stream(q0=float("nan"))
    assert h.wait_for(lambda: any("joint" in d.status[0].message and "nothing yet" in d.status[0].message
                                  for d in h.diagnostics)), [d.status[0].message for d in h.diagnostics[-3:]]
    assert h.chunks == [] and h.spinner.is_alive()
    h.stop_stream()
    h.stream(q0=0.25)  # healthy again: chunks from the new readings only
    assert h.wait_for(lambda: len(h.chunks) >= 2)
    assert all(cv.msg_to_chunk(m).values[0, 1] == 0.25 for _, m in h.chunks)


def test_a_chunk_with_non_finite_values_is_not_published(harness):
    h = harness(policy_kwargs='{"nan_rows": 2}')
    h.start()
    h.stream()
    assert h.wait_for(lambda: h.node.stats.inference_failures >= 2)
    assert "non-finite action values in rows [0, 1] of 5" in h.node.stats.last_error
    assert h.chunks == [] and h.spinner.is_alive()
    assert h.wait_for(lambda: any(d.status[0].level == cv.DIAGNOSTIC_LEVELS["error"] and
                                  "non-finite" in d.status[0].message for d in h.diagnostics))


def test_an_oversized_instruction_is_refused_and_the_previous_one_stays(harness):
    h = harness()
    h.start()
    h.instruct("ab")
    h.stream()
    assert h.wait_for(lambda: any(cv.msg_to_chunk(m).values[0, 0] == 2.0 for _, m in h.chunks))
    h.instruct("x" * 1_000_000)
    t_sent = time.time()
    assert h.wait_for(lambda: any(t > t_sent + 0.5 for t, _ in h.chunks))
    assert all(cv.msg_to_chunk(m).values[0, 0] == 2.0 for _, m in h.chunks)
    h.instruct("abc")  # a normal one is taken again
    assert h.wait_for(lambda: cv.msg_to_chunk(h.chunks[-1][1]).values[0, 0] == 3.0)


def test_changed_instruction_is_used_by_the_next_chunk(harness):
    h = harness()
    h.start()
    h.instruct("ab")
    h.stream()
    assert h.wait_for(lambda: any(cv.msg_to_chunk(m).values[0, 0] == 2.0 for _, m in h.chunks))
    h.instruct("pick up the cube")
    t_changed = time.time()
    assert h.wait_for(lambda: cv.msg_to_chunk(h.chunks[-1][1]).values[0, 0] == len("pick up the cube"))
    # chunks published more than one chunk (0.25 s) after the change never use the old one
    late = [m for t, m in h.chunks if t > t_changed + 0.3]
    assert all(cv.msg_to_chunk(m).values[0, 0] == 16.0 for m in late)


def test_slow_policy_does_not_block_the_executor(harness):
    h = harness(policy_kwargs='{"latency_s": 1.0}', warmup=False)
    h.start()
    h.publish_set(time.time())
    assert h.wait_for(lambda: FakePolicy.last.started.is_set())
    before = h.node.stats.joint_state_messages
    t0 = time.time()
    for k in range(20):
        h.pub_js.publish(cv.make_joint_state(JOINTS, np.zeros(len(JOINTS)), stamp_s=time.time()))
        time.sleep(0.01)
    # all 20 joint states were processed while the 1 s inference was still running
    assert h.wait_for(lambda: h.node.stats.joint_state_messages >= before + 20, timeout_s=0.3)
    assert not FakePolicy.last.finished.is_set() and time.time() - t0 < 1.0
    assert h.wait_for(lambda: len(h.chunks) >= 1)


def test_async_chunks_arrive_before_the_executing_one_runs_out(harness):
    # chunk 10 x 0.05 s = 0.5 s, inference 0.1 s
    h = harness(policy_kwargs='{"latency_s": 0.1, "steps": 10}', mode="async")
    h.start()
    h.stream()
    assert h.wait_for(lambda: len(h.chunks) >= 5, timeout_s=5)
    h.stop_stream()
    for (_, prev), (arrived, _) in zip(h.chunks, h.chunks[1:]):
        end = cv.time_to_s(prev.header.stamp) + 10 * 0.05
        assert arrived <= end + 0.02  # no wait between chunks (20 ms slack for a loaded 2-core CI box)
    # ...and not far earlier than needed: starts (T - 2) P - L - margin = 0.28 s apart, less up
    # to one camera frame (1/30 s) for the observation's age; back to back would be 0.1 s
    stamps = [cv.time_to_s(m.header.stamp) for _, m in h.chunks]
    assert np.median(np.diff(stamps)) > 0.2


def test_pipelined_inferences_keep_chunks_ahead_of_the_arm(harness):
    # latency 0.3 s = half of the 10 x 0.06 s chunk: two inferences in flight keep each new
    # chunk arriving 2 rows (+ margin) before the previous one runs out
    h = harness(policy_kwargs='{"latency_s": 0.3, "steps": 10, "period_s": 0.06}', mode="async",
                max_concurrent_inferences=2, lookahead_steps=2, blend_lookahead_s=0.0, warmup=False)
    h.start()
    h.stream()
    assert h.wait_for(lambda: len(h.chunks) >= 6, timeout_s=6)
    h.stop_stream()
    stamps = [cv.time_to_s(m.header.stamp) for _, m in h.chunks]
    assert all(np.diff(stamps) > 0)  # published in capture order
    # from the second seam on (the first inference alone tells the chunk length): scheduled to
    # arrive 2 rows + 20 ms before the previous chunk runs out (one worker could only reach 0)
    leads = [cv.time_to_s(prev.header.stamp) + 0.6 - arrived
             for (_, prev), (arrived, _) in list(zip(h.chunks, h.chunks[1:]))[1:]]  # fmt: skip
    assert min(leads) >= 0.0  # never late, even on a loaded machine
    assert np.median(leads) >= 0.07


def test_sync_mode_waits_for_the_chunk_to_end(harness):
    h = harness(policy_kwargs='{"latency_s": 0.05, "steps": 6}', mode="sync")
    h.start()
    h.stream()
    assert h.wait_for(lambda: len(h.chunks) >= 3, timeout_s=5)
    h.stop_stream()
    stamps = [cv.time_to_s(m.header.stamp) for _, m in h.chunks]
    # the next observation is taken once the 0.3 s chunk has run out (its newest frame is ~1/30 s
    # older, more on a loaded machine); async would start every 0.3 - 0.12 - 0.05 - 0.02 = 0.11 s
    assert min(np.diff(stamps)) >= 0.22


def test_lifecycle_round_trip(harness):
    h = harness()
    h.start()
    h.stream()
    assert h.wait_for(lambda: len(h.chunks) >= 2)
    first = FakePolicy.last
    assert first.resets >= 2  # after warm-up and on activate
    assert h.change_state(Transition.TRANSITION_DEACTIVATE)
    time.sleep(0.1)
    n = len(h.chunks)
    time.sleep(0.4)
    assert len(h.chunks) == n  # inactive: nothing published
    assert h.change_state(Transition.TRANSITION_CLEANUP)
    assert first.closed and h.node.policy is None
    assert h.change_state(Transition.TRANSITION_CONFIGURE)
    assert FakePolicy.last is not first
    assert h.change_state(Transition.TRANSITION_ACTIVATE)
    assert h.wait_for(lambda: len(h.chunks) > n)


def test_configure_fails_clearly_on_unknown_policy(harness, caplog):
    h = harness(policy="no_such_policy")
    assert h.node.trigger_configure() == TransitionCallbackReturn.FAILURE
    assert h.node.policy is None
    h2 = harness(mode="eager")
    assert h2.node.trigger_configure() == TransitionCallbackReturn.FAILURE


def test_bimanual_joint_states_are_qualified_per_namespace(ros):
    spec = load_embodiment("aloha")
    h = Harness(embodiment="aloha")
    try:
        pubs = {c.slot: h.peer.create_publisher(Image, c.topic, 10) for c in spec.cameras}
        left = h.peer.create_publisher(JointState, "follower_left/joint_states", 10)
        right = h.peer.create_publisher(JointState, "follower_right/joint_states", 10)
        h.start()
        bare = list(spec.arms[0].joint_names) + ["gripper"]
        now = time.time()
        for pub in pubs.values():
            pub.publish(cv.array_to_image(h.image, "rgb8", stamp_s=now))
        left.publish(cv.make_joint_state(bare, np.arange(7) * 0.1, stamp_s=now))
        right.publish(cv.make_joint_state(bare, -np.arange(7) * 0.1, stamp_s=now))
        assert h.wait_for(lambda: len(h.chunks) >= 1)
        obs = FakePolicy.last.observations[-1]
        assert obs.joint_names[:2] == ("follower_left/waist", "follower_left/shoulder")
        assert obs.joint_names[7] == "follower_right/waist"
        np.testing.assert_allclose(obs.positions_for(["follower_right/shoulder", "follower_left/gripper"]), [-0.1, 0.6])
        assert set(obs.images) == {c.slot for c in spec.cameras}
    finally:
        h.close()


def test_privileged_policy_gets_sim_objects(harness):
    from visualization_msgs.msg import Marker, MarkerArray

    h = harness(policy_kwargs="{privileged: true}")
    pub = h.peer.create_publisher(MarkerArray, "sim/objects", 10)
    h.start()
    h.publish_set(time.time())
    time.sleep(0.2)
    assert h.chunks == [] and h.node.stats.refusals.get("no_privileged", 0) > 0
    m = Marker(ns="red_cube")
    m.pose.position.x, m.pose.position.y, m.pose.position.z = 0.5, 0.1, 0.02
    pub.publish(MarkerArray(markers=[m]))
    assert h.wait_for(lambda: h.node._sync is not None and h.node._sync._has_privileged)
    h.publish_set(time.time())
    assert h.wait_for(lambda: len(h.chunks) >= 1)
    pose = FakePolicy.last.observations[-1].privileged["objects"]["red_cube"]
    np.testing.assert_allclose(pose[:3, 3], [0.5, 0.1, 0.02])
    np.testing.assert_allclose(pose[:3, :3], np.eye(3))


def test_compressed_camera_from_config(ros, tmp_path):
    from sensor_msgs.msg import CompressedImage

    text = open(SPEC.config_path).read()
    assert "front: {topic: cameras/front/image_raw, width: 224, height: 224, compressed: false}" in text
    text = text.replace("front: {topic: cameras/front/image_raw, width: 224, height: 224, compressed: false}",
                        "front: {topic: cameras/front/compressed, width: 224, height: 224, compressed: true}")
    (tmp_path / "fr3_compressed.yaml").write_text(text)
    h = Harness(embodiment=str(tmp_path / "fr3_compressed.yaml"))
    try:
        pub = h.peer.create_publisher(CompressedImage, "cameras/front/compressed", 10)
        h.start()
        frame = np.random.default_rng(2).integers(0, 256, (24, 32, 3), dtype=np.uint8)
        now = time.time()
        pub.publish(cv.array_to_compressed(frame, "png", stamp_s=now))
        h.pub_wrist.publish(cv.array_to_image(h.image, "rgb8", stamp_s=now))
        h.pub_js.publish(cv.make_joint_state(JOINTS, np.zeros(len(JOINTS)), stamp_s=now))
        assert h.wait_for(lambda: len(h.chunks) >= 1)
        np.testing.assert_array_equal(FakePolicy.last.observations[-1].images["front"], frame)
    finally:
        h.close()


def test_replay_policy_through_the_registry(ros, tmp_path):
    names = list(SPEC.joint_names) + ["gripper"]
    actions = np.arange(20 * 8, dtype=np.float64).reshape(20, 8) * 0.01
    np.savez(tmp_path / "episode.npz", actions=actions, names=np.array(names), fps=10.0)
    h = Harness(policy="replay", policy_kwargs=f'{{episode: "{tmp_path / "episode.npz"}", chunk_steps: 3}}')
    try:
        h.start()
        h.publish_set(time.time())
        assert h.wait_for(lambda: len(h.chunks) >= 1)
        chunk = cv.msg_to_chunk(h.chunks[0][1])
        assert list(chunk.names) == names and chunk.period_s == pytest.approx(0.1)
        np.testing.assert_allclose(chunk.values, actions[:3])  # first chunk after activate: rows 0..2
    finally:
        h.close()


def test_main_exits_nonzero_when_autostart_fails():
    import subprocess
    import sys

    code = ("import sys; from vla_ros.nodes.policy_node import main; "
            "sys.exit(main(['policy_node', '--ros-args', '-p', 'embodiment:=fr3', '-p', 'policy:=no_such_policy', "
            "'-p', 'autostart:=true']))")  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "unknown policy 'no_such_policy'" in proc.stderr and "autostart failed" in proc.stderr


def test_use_sim_time_follows_clock(harness):
    from rosgraph_msgs.msg import Clock

    h = harness(use_sim_time=True, warmup=False)
    clock_pub = h.peer.create_publisher(Clock, "/clock", 10)
    stop = threading.Event()
    sim_t = [100.0]

    def run_clock():  # simulated time from t = 100 s, sensors stamped with it
        while not stop.is_set():
            sim_t[0] += 0.01
            clock_pub.publish(Clock(clock=cv.s_to_time(sim_t[0])))
            if round(sim_t[0] * 100) % 3 == 0:
                h.publish_set(sim_t[0])
            time.sleep(0.01)

    t = threading.Thread(target=run_clock, daemon=True)
    t.start()
    try:
        assert h.wait_for(lambda: abs(h.node.get_clock().now().nanoseconds * 1e-9 - sim_t[0]) < 0.1)
        h.start()
        assert h.wait_for(lambda: len(h.chunks) >= 1)
        stamp = cv.time_to_s(h.chunks[0][1].header.stamp)
        assert 100.0 < stamp <= sim_t[0] + 0.005  # the set's newest reading: the wrist frame at +4 ms
    finally:
        stop.set()
        t.join()
