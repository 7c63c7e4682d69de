"""What the launch tests share: `ros2 launch` of the colcon-installed package as a process of its
own session (so that a test can press Ctrl-C the way a terminal does: SIGINT to the whole process
group), a probe node that reads the graph from outside (lifecycle states, topics), and checks on
what the launch printed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Callable

from ..colcon_workspace import colcon_install, installed_env

# Run the command as the leader of a new session: SIGINT to its process group is a terminal's Ctrl-C
# and reaches exactly the launch and the nodes it started (never pytest). SIGINT is set back to its
# default first, as a terminal has it: pytest started as a background job (`cmd &` without job
# control) ignores SIGINT, exec keeps an ignored signal ignored, and a `ros2 launch` that ignores
# SIGINT never sees the Ctrl-C (launch only watches Python's wakeup fd) while its nodes, which
# install their own handlers, exit: every Ctrl-C test then failed with "required node exited".
_NEW_SESSION = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.setsid(); "
                "os.execvp(sys.argv[1], sys.argv[1:])")
EPISODE_TIMEOUT_S = 180.0  # wall clock for one scripted episode incl. start-up, on a loaded 2-core machine
STARTUP_TIMEOUT_S = 150.0
# ros2 launch sends SIGTERM 5 s after SIGINT: a clean Ctrl-C never lets it get there
ESCALATION = "escalating to 'SIGTERM'"


# The launch tests' graphs run on a ROS domain of their own, not the one the in-process tests of the
# same pytest session use (test/conftest.py): a node those tests leave behind in this process (or a
# participant of a killed process, until its lease runs out) answered as a second /controller, and
# the launch's lifecycle calls to /controller went astray (the whole launch hung in 'configuring').
LAUNCH_DOMAIN_ID = (int(os.environ.get("ROS_DOMAIN_ID", "0")) + 50) % 100 + 1


def default_sigint() -> None:
    """preexec_fn for a child that must take Ctrl-C like one started from a terminal (see above)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def launch_env() -> dict[str, str]:
    return installed_env(colcon_install(), RCUTILS_COLORIZED_OUTPUT="0", ROS_DOMAIN_ID=str(LAUNCH_DOMAIN_ID))


def ros2_launch(name: str, *arguments: str, env: dict[str, str] | None = None):
    """An ExecuteProcess action for `ros2 launch vla_ros bringup.launch.py <arguments>`."""
    from launch.actions import ExecuteProcess

    return ExecuteProcess(
        cmd=[sys.executable, "-c", _NEW_SESSION, "ros2", "launch", "vla_ros", "bringup.launch.py", *arguments],
        name=name,
        env=env or launch_env(),
        output="screen",
        sigterm_timeout="20",  # the test's own Ctrl-C comes first; this is launch_testing's fallback
    )


def pid_of(action) -> int:
    return int(action.process_details["pid"])


def group_alive(pgid: int) -> list[int]:
    """Processes left in the launch's process group (the launch itself and every node it started)."""
    out = subprocess.run(["ps", "-o", "pid=", "-g", str(pgid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def press_ctrl_c(action, proc_info, timeout_s: float = 30.0) -> tuple[int, float]:
    """SIGINT to the launch's whole process group, as Ctrl-C in its terminal; returns the launch's
    exit code and the seconds it took to exit."""
    pgid = pid_of(action)
    start = time.monotonic()
    os.killpg(pgid, signal.SIGINT)
    proc_info.assertWaitForShutdown(process=action, timeout=timeout_s)
    return proc_info[action].returncode, time.monotonic() - start


def output_of(proc_output, action) -> str:
    """Everything the process printed so far, stdout and stderr (launch logs to both)."""
    try:
        events = proc_output[action]
    except KeyError:  # nothing printed yet
        return ""
    return "".join(event.text.decode(errors="replace") for event in events)


def assert_output_free_of(text: str, *forbidden: str, context_lines: int = 6) -> None:
    """AssertionError naming the first forbidden string found in `text`, with the lines around it
    (a launch's whole output is far too long for a CI log to show)."""
    lines = text.splitlines()
    for needle in forbidden:
        for index, line in enumerate(lines):
            if needle in line:
                window = "\n".join(lines[max(0, index - context_lines):index + context_lines + 1])
                raise AssertionError(f"{needle!r} in the output (line {index + 1} of {len(lines)}):\n{window}")


def wait_for_output(proc_output, action, text: str, timeout_s: float) -> str:
    """Wait until `text` appears in the process's output; returns the output (AssertionError with
    its tail otherwise)."""
    if not wait_until(lambda: text in output_of(proc_output, action), timeout_s, 0.2):
        raise AssertionError(f"no {text!r} within {timeout_s:.0f} s; output:\n{output_of(proc_output, action)[-5000:]}")
    return output_of(proc_output, action)


def wait_until(predicate: Callable[[], bool], timeout_s: float, period_s: float = 0.1) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(period_s)
    return predicate()


def ros2_cli(*args: str, timeout_s: float = 60.0) -> subprocess.CompletedProcess:
    """The `ros2` command a user types, against the colcon install (no daemon: nothing outlives it)."""
    return subprocess.run(["ros2", *args], env=launch_env(), capture_output=True, text=True, timeout=timeout_s)


class Probe:
    """A node in the test process, on its own rclpy context, reading the graph from outside."""

    def __init__(self, name: str = "launch_test_probe") -> None:
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor

        from vla_ros.nodes.runtime import BackgroundSpinner

        self.context = Context()
        rclpy.init(context=self.context, domain_id=LAUNCH_DOMAIN_ID)  # the launched graph's domain
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._spinner = BackgroundSpinner(self.executor, "launch_test_probe", period_s=0.05).start()
        self._clients: dict[str, object] = {}

    def record(self, msg_type, topic: str, qos=10) -> list:
        received: list = []
        self.node.create_subscription(msg_type, topic, received.append, qos)
        return received

    def lifecycle_state(self, node: str, timeout_s: float = 10.0) -> str:
        """The node's lifecycle state label from its `get_state` service ('' if it does not answer)."""
        from lifecycle_msgs.srv import GetState

        client = self._clients.get(node)
        if client is None:
            client = self._clients[node] = self.node.create_client(GetState, f"{node}/get_state")
        if not client.wait_for_service(timeout_sec=timeout_s):
            return ""
        future = client.call_async(GetState.Request())
        if not wait_until(future.done, timeout_s, 0.02):
            return ""
        return future.result().current_state.label

    def close(self) -> None:
        import rclpy

        if self._spinner.stop(timeout_s=30.0):
            self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
