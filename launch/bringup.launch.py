"""ros2 launch vla_ros bringup.launch.py embodiment:=fr3 sim:=true policy:=scripted

Declarative: every argument is declared with its description; which nodes start with which
parameters is decided by vla_ros.bringup.plan_bringup (unit-tested without launch). This file
only wires the plan into launch:

- lifecycle bring-up (autostart:=true): the lifecycle nodes are started with autostart:=false and
  configured + activated here, one after the other in the plan's order (sim_node, a plain node,
  starts first; then controller, teleop, recorder, policy), with launch_ros ChangeState events
  driven by OnStateTransition handlers. A failed transition ends the launch with an error that
  names the node, the transition and the node's own last error line.
- every node is required: one that exits while the launch is not shutting down ends the whole
  launch with a non-zero exit code and a message naming it (never half a graph).
- Ctrl-C: every node deactivates (the controller holds the arm) and exits 0 on SIGINT or SIGTERM
  (vla_ros.nodes.runtime), well inside launch's 5 s before SIGTERM.
"""

import re
import signal
from functools import partial

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, LogInfo, OpaqueFunction, RegisterEventHandler, TimerAction
from launch.event_handlers import OnProcessExit, OnProcessIO, OnProcessStart
from launch.events import matches_action
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from lifecycle_msgs.msg import Transition

from vla_ros.bringup import LAUNCH_ARGUMENTS, plan_bringup

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_LOG_LINE = re.compile(r"\[(ERROR|FATAL)\]\s*\[[^\]]*\]\s*\[[^\]]*\]:\s*(.*)")
# what a transition leaves the node in when it succeeded
_SUCCESS_GOAL = {"configuring": "inactive", "activating": "active"}
_TRANSITION_NAME = {"configuring": "configure", "activating": "activate"}


class BringupFailure(RuntimeError):
    """Raised from an event handler: launch logs it, shuts every node down and exits 1."""


class _NodeOutput:
    """The last error line (and last line) a node printed: what a failure message quotes."""

    def __init__(self) -> None:
        self.last_error = ""
        self.last_line = ""

    def take(self, event) -> None:
        for raw in event.text.decode(errors="replace").splitlines():
            line = _ANSI.sub("", raw).strip()
            if not line:
                continue
            self.last_line = line
            match = _LOG_LINE.search(line)
            if match:
                self.last_error = match.group(2)

    def why(self) -> str:
        return self.last_error or self.last_line


def _fail(message: str, context) -> None:
    if not context.is_shutdown:
        raise BringupFailure(message)


def _on_exit(plan, output: _NodeOutput, event, context):
    """A required node exited: unless the launch is already shutting down, end it with an error."""
    if context.is_shutdown:
        return None
    code = event.returncode
    if code is not None and code < 0:
        try:
            how = f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            how = f"was killed by signal {-code}"
    else:
        how = f"exited with code {code}"
    last = f" (its last error: {output.why()})" if output.why() else ""
    _fail(f"required node {plan.full_name} ({plan.executable}) {how} while the graph was running{last}; "
          "ending the launch", context)
    return None


def _on_transition(index, lifecycle, plans, outputs, driven, context):
    """One lifecycle node changed state: drive the next bring-up step, or end the launch on a failure."""
    event = context.locals.event
    plan = plans[index]
    start, goal = event.start_state, event.goal_state
    if start not in _SUCCESS_GOAL or index in driven["done"]:
        return None  # deactivation at shutdown, or transitions requested by hand after bring-up
    if goal != _SUCCESS_GOAL[start]:
        message = (f"lifecycle transition '{_TRANSITION_NAME[start]}' of {plan.full_name} failed "
                   f"(ended in '{goal}')")
        # The node logs why just before it reports the failed transition; give its output a
        # moment to arrive so that the message can quote it.
        return [TimerAction(period=0.5, actions=[OpaqueFunction(
            function=lambda ctx: _fail(f"{message}: {outputs[index].why() or 'see its log above'}; ending the launch",
                                       ctx))])]
    if goal == "inactive":
        return [LogInfo(msg=f"vla_ros bringup: {plan.full_name} configured; activating"),
                EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(lifecycle[index]),
                                            transition_id=Transition.TRANSITION_ACTIVATE))]
    driven["done"].add(index)
    if index + 1 < len(lifecycle):
        return [LogInfo(msg=f"vla_ros bringup: {plan.full_name} active; configuring {plans[index + 1].full_name}"),
                EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(lifecycle[index + 1]),
                                            transition_id=Transition.TRANSITION_CONFIGURE))]
    names = ", ".join(p.full_name for p in plans)
    return [LogInfo(msg=f"vla_ros bringup: all lifecycle nodes active ({names})")]


def _start_nodes(context, *args, **kwargs):
    values = {a.name: LaunchConfiguration(a.name).perform(context) for a in LAUNCH_ARGUMENTS}
    plan = plan_bringup(**values)  # a BringupError ends the launch with its message, nothing started
    actions = []
    lifecycle, lifecycle_plans, lifecycle_outputs = [], [], []
    for node_plan in plan.nodes:
        kind = LifecycleNode if node_plan.lifecycle else Node
        node = kind(
            package=node_plan.package,
            executable=node_plan.executable,
            name=node_plan.name,
            namespace=node_plan.namespace,
            parameters=[node_plan.parameters],
            remappings=list(node_plan.remappings),
            output="screen",
            emulate_tty=True,
        )
        output = _NodeOutput()
        actions += [
            RegisterEventHandler(OnProcessIO(target_action=node, on_stdout=output.take, on_stderr=output.take)),
            RegisterEventHandler(OnProcessExit(target_action=node, on_exit=partial(_on_exit, node_plan, output))),
            node,
        ]
        if node_plan.lifecycle:
            lifecycle.append(node)
            lifecycle_plans.append(node_plan)
            lifecycle_outputs.append(output)
    if not lifecycle:
        return actions
    if not plan.autostart:
        names = " ".join(p.full_name for p in lifecycle_plans)
        return actions + [LogInfo(msg=f"vla_ros bringup: autostart:=false: {names} wait in 'unconfigured'; bring "
                                      "them up in this order with `ros2 lifecycle set <node> configure` and `activate`")]
    driven = {"done": set()}
    for index, node in enumerate(lifecycle):
        actions.append(RegisterEventHandler(OnStateTransition(
            target_lifecycle_node=node,
            entities=[OpaqueFunction(function=partial(_on_transition, index, lifecycle, lifecycle_plans,
                                                      lifecycle_outputs, driven))])))
    actions.append(RegisterEventHandler(OnProcessStart(target_action=lifecycle[0], on_start=[
        LogInfo(msg=f"vla_ros bringup: configuring {lifecycle_plans[0].full_name}"),
        EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(lifecycle[0]),
                                    transition_id=Transition.TRANSITION_CONFIGURE)),
    ])))
    return actions


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(a.name, default_value=a.default, description=a.description) for a in LAUNCH_ARGUMENTS]
        + [OpaqueFunction(function=_start_nodes)]
    )
