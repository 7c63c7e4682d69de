"""The process around every vla_ros node: `main()` of controller_node, sim_node and policy_node.

One way in and one way out for all of them, so that `ros2 launch` (and a user at a terminal)
sees the same behaviour from every node:

- start: `rclpy.init` without rclpy's signal handlers, build the node, spin its executor on a
  background thread; a lifecycle node with `autostart:=true` (the default, for `ros2 run` and
  tests that start one node) configures and activates itself, one started by the launch
  (`autostart:=false`) waits for the launch's lifecycle transitions.
- stop, on SIGINT (Ctrl-C: the terminal sends it to the whole process group, launch sends it
  too) or SIGTERM (launch's escalation, systemd, `kill`): deactivate an active lifecycle node
  (the controller holds the arm, the policy stops publishing), wait briefly until the last
  messages (the hold) are acknowledged, stop the executor, destroy the node, shut rclpy down,
  exit 0. This never waits on a clock, so it is as quick on simulated time without `/clock`
  as on the wall clock.

Why rclpy's own handlers are not used: they shut the context down from the signal handler, so
nothing (the hold) can be published afterwards and threads that still publish (the sim's physics)
die with "publisher's context is invalid"; and with rclpy's SIGTERM handler alone, SIGINT reached
a controller blocked in its executor's wait only when a timer woke it, which on simulated time
without `/clock` is never. Here the signal only sets an event; the main thread waits on that
event (signal handlers run in the main thread), the executor never has to wake up for it.

Exit codes: 0 after a signal; 1 when the node cannot be built, autostart fails, or a callback
raises (the executor thread ends): a launch then sees a required node die and ends the graph. A
node that stops on purpose raises `NodeRefusal` from a callback: logged as its reason, no traceback.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
import traceback
from typing import Callable

import rclpy
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.duration import Duration
from rclpy.executors import Executor, ExternalShutdownException
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

AUTOSTART_DESCRIPTION = ("configure and activate at start-up; false: wait for a lifecycle manager "
                         "(bringup.launch.py passes false and drives the transitions itself)")
# What the whole stop may take: launch escalates to SIGTERM 5 s after SIGINT.
FLUSH_TIMEOUT_S = 1.0
EXECUTOR_SHUTDOWN_TIMEOUT_S = 2.0
PR_SET_PDEATHSIG = 1  # linux/prctl.h
SPIN_PERIOD_S = 0.1  # wall-clock wait per executor turn: how soon the executor thread sees a stop


class StopSignal:
    """SIGINT / SIGTERM -> an event the main thread waits on. Repeated signals (the terminal's
    Ctrl-C and launch's SIGINT arrive both) are remembered but change nothing."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.received: list[str] = []

    def install(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame) -> None:  # noqa: ARG002 - signal handler signature
        self.received.append(signal.Signals(signum).name)
        self.event.set()

    @property
    def name(self) -> str:
        return self.received[0] if self.received else ""


class ReleasingLifecycleNode(LifecycleNode):
    """A lifecycle node whose cleanup and shutdown transitions both release what on_configure
    made (`_release`, idempotent): the policy, teleop and recorder nodes."""

    def _release(self) -> None:
        raise NotImplementedError

    def on_cleanup(self, state) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def destroy_entities(self, *, timers=(), subscriptions=(), services=(), clients=(), publishers=(),
                         lifecycle_publishers=()) -> None:
        """Destroy what a configure created (None entries are skipped)."""
        for kind, items in ((self.destroy_timer, timers), (self.destroy_subscription, subscriptions),
                            (self.destroy_service, services), (self.destroy_client, clients),
                            (self.destroy_publisher, publishers),
                            (self.destroy_lifecycle_publisher, lifecycle_publishers)):
            for item in items:
                if item is not None:
                    kind(item)


def lifecycle_state(node: LifecycleNode) -> str:
    """The node's primary state label ('unconfigured', 'inactive', 'active', 'finalized')."""
    # rclpy's own LifecycleNodeMixin.trigger_shutdown reads it the same way; there is no public getter.
    return node._state_machine.current_state[1]


def refuse_parameter_changes_once_configured(node: LifecycleNode, live: tuple[str, ...] = ()) -> None:
    """Parameters are read at configure: a change while the node is configured would be accepted
    and silently do nothing (`ros2 param set` says "Set parameter successful"). Refused instead,
    with what to do; `live` names the parameters the node reads as it runs (and use_sim_time)."""
    from rcl_interfaces.msg import SetParametersResult

    allowed = {"use_sim_time", *live}

    def check(params) -> SetParametersResult:
        state = lifecycle_state(node)
        fixed = [p.name for p in params if p.name not in allowed]
        if fixed and state in ("inactive", "active"):
            return SetParametersResult(successful=False, reason=(
                f"{', '.join(fixed)}: read at configure and this node is {state}; deactivate and clean it up "
                f"(ros2 lifecycle set {node.get_fully_qualified_name()} cleanup), set it, then configure again"))
        return SetParametersResult(successful=True)

    node.add_on_set_parameters_callback(check)


def declare_autostart(node: Node, default: bool = True) -> bool:
    """The `autostart` parameter (declared here when the node class does not declare it)."""
    if not node.has_parameter("autostart"):
        node.declare_parameter("autostart", default, ParameterDescriptor(description=AUTOSTART_DESCRIPTION))
    return bool(node.get_parameter("autostart").value)


def flush_publishers(node: Node, timeout_s: float = FLUSH_TIMEOUT_S) -> bool:
    """Wait until every reliable publisher's messages are acknowledged by its subscribers (the
    hold must not be lost when the process exits right after publishing it). True if all were."""
    deadline = time.monotonic() + timeout_s
    ok = True
    for publisher in list(node.publishers):
        left_s = deadline - time.monotonic()
        if left_s <= 0.0:
            return False
        try:
            ok = publisher.wait_for_all_acked(Duration(nanoseconds=int(left_s * 1e9))) and ok
        except Exception:  # noqa: BLE001 - a destroyed publisher or a best-effort one has nothing to flush
            continue
    return ok


def _wait_for_callbacks(executor: Executor, timeout_s: float) -> bool:
    """Wait until callbacks a MultiThreadedExecutor handed to its thread pool have finished.
    Executor.shutdown() is meant to, but in Jazzy's rclpy its wait is unreachable (it tests the
    flag it has just set) and it destroys the guard condition under running callbacks, which then
    fail with "'NoneType' object has no attribute 'trigger'"."""
    deadline = time.monotonic() + timeout_s
    for task in list(getattr(executor, "_futures", ())):
        while not task.done():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
    return True


class NodeRefusal(RuntimeError):
    """Raised from a callback by a node that must stop running (e.g. a sim that finds another
    simulation on its clock): ends the executor like any error, logged as the reason alone."""


class BackgroundSpinner:
    """An executor spun on a daemon thread, for the in-process graphs (`vla-ros demo|eval|record`,
    the benches, the tests), with the stop that rclpy's own `executor.spin()` + `shutdown()` lacks.

    `executor.shutdown()` called while another thread is inside `executor.spin()` destroys the
    guard condition in that thread's wait set ("cannot use Destroyable because destruction was
    requested", seen in CI under load). Here the thread runs `spin_once` in a loop that ends on a
    flag; `stop()` clears the flag, joins the thread, waits for callbacks still running in the
    executor's pool, and only then shuts the executor down. Nodes may be destroyed after `stop()`
    returns True.

    `stop_event`: the flag, shared with the owner (run_node's signal event); the loop also sets it
    when it ends on its own (a callback raised: `error`, logged fatal on `logger`)."""

    def __init__(self, executor: Executor, name: str = "executor", period_s: float = SPIN_PERIOD_S,
                 stop_event: threading.Event | None = None, logger=None) -> None:
        self.executor = executor
        self.period_s = period_s
        self.error: BaseException | None = None
        self._stop = stop_event if stop_event is not None else threading.Event()
        self._logger = logger if logger is not None else rclpy.logging.get_logger(name)
        self._thread = threading.Thread(target=self._spin, name=name, daemon=True)

    def _spin(self) -> None:
        try:
            while not self._stop.is_set():
                self.executor.spin_once(timeout_sec=self.period_s)
        except ExternalShutdownException:
            pass
        except NodeRefusal as err:
            self.error = err
            self._logger.fatal(f"stopping: {err}")
        except Exception as err:  # noqa: BLE001 - kept for the owner: is_alive() turns False
            self.error = err
            self._logger.fatal(f"a callback raised; exiting: {err!r}\n{traceback.format_exc()}")
        finally:
            self._stop.set()

    def start(self) -> "BackgroundSpinner":
        self._thread.start()
        return self

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Stop spinning; True when the thread and every callback have finished (then the executor
        is shut down and the nodes can be destroyed), False on timeout (the executor is left alone)."""
        deadline = time.monotonic() + timeout_s
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(timeout=max(0.0, deadline - time.monotonic()))
            if self._thread.is_alive():
                return False
        if not _wait_for_callbacks(self.executor, max(0.0, deadline - time.monotonic())):
            return False
        self.executor.shutdown(timeout_sec=0)
        return True


def stop_with_parent() -> bool:
    """Linux: have the kernel send SIGTERM (handled like Ctrl-C) to this process when the process
    that started it dies. A launch killed with SIGKILL, or with SIGTERM (launch then cancels itself
    and warns that its processes may be orphaned), cannot stop its nodes; this way none outlives it.
    True if set up."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    if os.getppid() == 1:  # the parent died before prctl: nobody will signal us
        os.kill(os.getpid(), signal.SIGTERM)
    return True


def run_node(
    make_node: Callable[[], Node],
    make_executor: Callable[[], Executor],
    *,
    args: list[str] | None = None,
    name: str,
    on_stop: Callable[[Node], None] | None = None,
    deactivated_message: str = "deactivated",
    destroy: Callable[[Node], None] | None = None,
) -> int:
    """Run one node until SIGINT/SIGTERM; see the module docstring. `on_stop(node)` runs first on
    the way out (the sim stops its physics thread there), then an active lifecycle node is
    deactivated and `deactivated_message` logged; `destroy(node)` replaces `node.destroy_node()`."""
    stop = StopSignal()
    stop.install()  # before anything slow: a Ctrl-C during start-up must still end cleanly
    stop_with_parent()
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    logger = rclpy.logging.get_logger(name)
    node: Node | None = None
    spinner: BackgroundSpinner | None = None
    try:
        try:
            node = make_node()
        except (ValueError, KeyError, OSError, RuntimeError) as err:
            logger.fatal(f"cannot start: {err}")
            return 1
        logger = node.get_logger()
        lifecycle = isinstance(node, LifecycleNode)
        autostart = declare_autostart(node) if lifecycle else False
        executor = make_executor()
        executor.add_node(node)
        # Ends on the signal's event; a callback that raises ends it too (and sets the event): exit 1.
        spinner = BackgroundSpinner(executor, f"{name}_executor", stop_event=stop.event, logger=logger).start()
        if autostart and not stop.event.is_set():
            ok = TransitionCallbackReturn.SUCCESS
            if node.trigger_configure() != ok or (not stop.event.is_set() and node.trigger_activate() != ok):
                logger.fatal("autostart failed (see the error above); exiting")
                return 1
        elif lifecycle and not stop.event.is_set():
            logger.info("autostart is false: waiting in state 'unconfigured' for a lifecycle manager")
        while not stop.event.wait(0.5):
            pass
        logger.info(f"{stop.name or 'executor stopped'}: shutting down")
        spinner.stop(EXECUTOR_SHUTDOWN_TIMEOUT_S)
        if on_stop is not None:
            on_stop(node)
        if lifecycle and lifecycle_state(node) == "active":
            if node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS:
                logger.info(deactivated_message)
            else:
                logger.error("deactivate failed on the way out")
        if not flush_publishers(node):
            logger.warning("some messages were not acknowledged before exiting")
        return 1 if spinner.error is not None else 0
    finally:
        if spinner is not None:  # also on the early ways out (autostart failed): the executor thread ends
            spinner.stop(EXECUTOR_SHUTDOWN_TIMEOUT_S)
        if node is not None:
            (destroy or type(node).destroy_node)(node)
        rclpy.try_shutdown()
        # A second SIGINT is normal (the terminal's Ctrl-C reaches every node and launch forwards
        # one more, late on a loaded machine); during interpreter teardown Python resets Python-level
        # handlers to SIG_DFL, so it would turn a clean exit into death by SIGINT. Ignored handlers
        # are left alone. SIGTERM stays deadly: it is launch's escalation should teardown hang.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
