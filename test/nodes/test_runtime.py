"""vla_ros.nodes.runtime.run_node, the process life of every node, with a small lifecycle node in a
child process: autostart, SIGINT / SIGTERM -> deactivate and exit 0 (also with a second SIGINT, as
a terminal's Ctrl-C plus launch's forwarded one), on simulated time with no /clock, exit 1 when
autostart fails or a callback raises."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

pytestmark = pytest.mark.ros

CHILD = textwrap.dedent("""
    import sys
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
    from vla_ros.nodes.runtime import run_node

    MODE = sys.argv[1]

    class Demo(LifecycleNode):
        def __init__(self):
            super().__init__("runtime_demo")
            self.timer = None

        def on_configure(self, state):
            if MODE == "fail":
                self.get_logger().error("configure failed: demo refuses")
                return TransitionCallbackReturn.FAILURE
            return TransitionCallbackReturn.SUCCESS

        def on_activate(self, state):
            print("ACTIVE", flush=True)
            if MODE == "raise":
                self.timer = self.create_timer(0.05, self.boom)
            return super().on_activate(state)

        def on_deactivate(self, state):
            print("ON_DEACTIVATE", flush=True)
            return super().on_deactivate(state)

        def boom(self):
            raise RuntimeError("demo callback bug")

    sys.exit(run_node(Demo, MultiThreadedExecutor, args=sys.argv[2:], name="runtime_demo"))
""")


def _start(mode: str, *ros_args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CHILD, mode, "--ros-args", *ros_args], env=dict(os.environ),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for_line(proc: subprocess.Popen, fragment: str, timeout_s: float = 60.0) -> list[str]:
    lines: list[str] = []
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if fragment in line:
            return lines
    proc.kill()
    raise AssertionError(f"no {fragment!r}: {''.join(lines)}")


@pytest.mark.parametrize("signals", [(signal.SIGINT,), (signal.SIGINT, signal.SIGINT), (signal.SIGTERM,)],
                         ids=["sigint", "sigint-twice", "sigterm"])
def test_a_signal_deactivates_and_exits_0(signals):
    proc = _start("ok", "-p", "use_sim_time:=true")  # nobody publishes /clock: nothing may wait on it
    _wait_for_line(proc, "ACTIVE")
    start = time.monotonic()
    for signum in signals:
        proc.send_signal(signum)
        time.sleep(0.05)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert time.monotonic() - start < 5.0  # launch escalates to SIGTERM after 5 s
    assert "ON_DEACTIVATE" in out and "deactivated" in out
    assert f"{signal.Signals(signals[0]).name}: shutting down" in out


def test_autostart_false_waits_unconfigured_and_still_stops_cleanly():
    proc = _start("ok", "-p", "autostart:=false")
    _wait_for_line(proc, "waiting in state 'unconfigured'")
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "ACTIVE" not in out and "ON_DEACTIVATE" not in out


def test_failed_autostart_exits_1_with_the_reason():
    proc = _start("fail")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "configure failed: demo refuses" in out and "autostart failed" in out


def test_a_raising_callback_ends_the_process_with_1():
    proc = _start("raise")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1, out
    assert "a callback raised; exiting: RuntimeError('demo callback bug')" in out
    assert "ON_DEACTIVATE" in out  # the way out still deactivates (a controller would hold)


# ---------------------------------------------------------------- BackgroundSpinner (in-process graphs)
def _spinner_rig(period_callback):
    import rclpy
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.node import Node

    context = rclpy.Context()
    rclpy.init(context=context, args=[])
    node = Node("spinner_probe", context=context)
    node.create_timer(0.02, period_callback)
    executor = MultiThreadedExecutor(num_threads=2, context=context)
    executor.add_node(node)
    return context, node, executor


def test_background_spinner_stops_after_a_running_callback_and_the_node_can_then_go():
    import threading

    import rclpy

    from vla_ros.nodes.runtime import BackgroundSpinner

    inside = threading.Event()
    finished = []

    def slow():
        inside.set()
        time.sleep(0.4)
        finished.append(time.monotonic())

    context, node, executor = _spinner_rig(slow)
    errors = []
    hook, threading.excepthook = threading.excepthook, lambda a: errors.append(a.exc_value)
    try:
        spinner = BackgroundSpinner(executor, "probe").start()
        assert inside.wait(5.0)
        assert spinner.stop(timeout_s=10.0)
        # stop() returned only after the callback that was running (0.4 s of it) had finished
        assert finished
        assert not spinner.is_alive() and spinner.error is None
        n = len(finished)
        node.destroy_node()  # nothing spins any more: no "cannot use Destroyable" in any thread
        time.sleep(0.2)
        assert len(finished) == n and errors == []
    finally:
        threading.excepthook = hook
        rclpy.try_shutdown(context=context)


def test_background_spinner_times_out_on_a_callback_that_does_not_end_and_reports_a_raise():
    import threading

    import rclpy

    from vla_ros.nodes.runtime import BackgroundSpinner

    release = threading.Event()
    context, node, executor = _spinner_rig(lambda: release.wait(10.0))
    try:
        spinner = BackgroundSpinner(executor, "probe").start()
        time.sleep(0.2)
        assert spinner.stop(timeout_s=0.3) is False  # still inside the callback: executor left alone
        release.set()
        assert spinner.stop(timeout_s=10.0)
    finally:
        node.destroy_node()
        rclpy.try_shutdown(context=context)

    def boom():
        raise RuntimeError("callback failed")

    context, node, executor = _spinner_rig(boom)
    try:
        spinner = BackgroundSpinner(executor, "probe").start()
        deadline = time.monotonic() + 10.0
        while spinner.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not spinner.is_alive() and isinstance(spinner.error, RuntimeError)
        assert spinner.stop(timeout_s=5.0)
    finally:
        node.destroy_node()
        rclpy.try_shutdown(context=context)
