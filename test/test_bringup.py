"""bringup.launch.py decisions (plan_bringup), and the launch file's wiring with the real `launch` /
`launch_ros` (skipped where the ROS 2 launch wheels are not installed). The launch file running for
real is tested in test/launch/."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from vla_ros.bringup import LAUNCH_ARGUMENTS, BringupError, plan_bringup

LAUNCH_FILE = Path(__file__).resolve().parents[1] / "launch" / "bringup.launch.py"


def test_sim_graph_sim_node_owns_the_clock_the_others_follow_it():
    plan = plan_bringup(embodiment="fr3", sim="true", policy="scripted", seed="7")
    assert plan.executables == ["sim_node", "controller_node", "policy_node"]
    sim, controller, policy = plan.nodes
    # sim_node publishes /clock and refuses to run on it; everybody else runs on simulated time
    assert sim.parameters == {"embodiment": "fr3", "use_sim_time": False, "seed": 7}
    assert controller.parameters["use_sim_time"] is True and policy.parameters["use_sim_time"] is True
    assert [n.lifecycle for n in plan.nodes] == [False, True, True]
    # the launch drives the lifecycle nodes' transitions: they must not configure themselves
    assert controller.parameters["autostart"] is False and policy.parameters["autostart"] is False
    assert "autostart" not in sim.parameters  # sim_node's autostart starts its physics: keep its default
    assert policy.parameters["policy"] == "scripted" and policy.parameters["mode"] == "async"
    assert plan.autostart is True
    assert [n.full_name for n in plan.lifecycle_nodes] == ["/controller", "/policy"]
    assert all(n.remappings == () and n.namespace == "" for n in plan.nodes)


def test_hardware_graph_expects_the_driver_and_uses_wall_time():
    plan = plan_bringup(embodiment="ur5e", sim="false", policy="vla", checkpoint="/ckpt")
    assert plan.executables == ["controller_node", "policy_node"]
    assert all(n.parameters["use_sim_time"] is False for n in plan.nodes)
    assert plan.node("policy_node").parameters["checkpoint"] == "/ckpt"


def test_policy_none_starts_only_the_controller():
    plan = plan_bringup(embodiment="aloha", sim="false", policy="none")
    assert plan.executables == ["controller_node"]


def test_policy_kwargs_are_passed_as_json():
    plan = plan_bringup(embodiment="fr3", sim=True, policy="vla", policy_kwargs='{"preset": "pi0"}')
    assert json.loads(plan.node("policy_node").parameters["policy_kwargs"]) == {"preset": "pi0"}


def test_roles_split_the_graph_between_the_robot_and_the_policy_host():
    robot = plan_bringup(embodiment="fr3", sim="true", policy="scripted", role="robot")
    policy = plan_bringup(embodiment="fr3", sim="true", policy="scripted", role="policy")
    whole = plan_bringup(embodiment="fr3", sim="true", policy="scripted", role="all")
    assert robot.executables == ["sim_node", "controller_node"]
    assert policy.executables == ["policy_node"]
    assert robot.nodes + policy.nodes == whole.nodes  # the two halves are exactly the whole graph
    # the robot side ignores the policy arguments (they belong to the other host's launch)
    assert plan_bringup(embodiment="fr3", sim="false", policy="scripted", role="robot").executables == ["controller_node"]


def test_teleop_and_recorder_join_the_robot_side_in_bringup_order():
    plan = plan_bringup(embodiment="aloha", sim="true", policy="none", teleop="leader", record="true",
                        dataset="/data/demos", seed="3")
    assert plan.executables == ["sim_node", "controller_node", "teleop_node", "recorder_node"]
    teleop, recorder = plan.node("teleop_node"), plan.node("recorder_node")
    assert (teleop.name, recorder.name) == ("teleop", "recorder")
    assert teleop.parameters == {"embodiment": "aloha", "use_sim_time": True, "autostart": False, "device": "leader"}
    assert recorder.parameters == {"embodiment": "aloha", "use_sim_time": True, "autostart": False,
                                   "dataset": "/data/demos"}
    robot = plan_bringup(embodiment="fr3", sim="false", teleop="joy", role="robot")
    assert robot.executables == ["controller_node", "teleop_node"]


def test_namespace_puts_every_node_and_the_sim_clock_under_it():
    plan = plan_bringup(embodiment="fr3", sim="true", policy="scripted", namespace="/robot_a/")
    assert {n.namespace for n in plan.nodes} == {"robot_a"}
    assert all(n.remappings == (("/clock", "/robot_a/clock"),) for n in plan.nodes)
    assert [n.full_name for n in plan.nodes] == ["/robot_a/sim", "/robot_a/controller", "/robot_a/policy"]
    # on hardware there is no simulated clock to keep apart
    hw = plan_bringup(embodiment="fr3", sim="false", policy="none", namespace="robot_a")
    assert hw.nodes[0].remappings == ()


def test_autostart_false_is_passed_on_to_the_launch():
    assert plan_bringup(sim="true", policy="scripted", autostart="false").autostart is False


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"embodiment": "kuka"}, "launch argument 'embodiment': unknown embodiment 'kuka'; valid embodiments"),
        ({"policy": "gpt"}, "launch argument 'policy' is 'gpt'; valid policies: "),
        ({"policy": "scripted", "sim": "false"}, "sim:=true"),
        ({"sim": "maybe"}, "'sim' must be true or false"),
        ({"inference_mode": "fast"}, "'inference_mode'"),
        ({"seed": "x"}, "'seed' must be an integer"),
        ({"policy_kwargs": "[1]"}, "JSON object"),
        ({"policy_kwargs": "{oops"}, "not valid JSON"),
        ({"role": "gpu"}, "'role' must be one of all, robot, policy, got 'gpu'"),
        ({"role": "policy", "policy": "none"}, "role:=policy with policy:=none starts nothing"),
        ({"autostart": "sometimes"}, "'autostart' must be true or false"),
        ({"teleop": "wiimote"}, "'teleop' must be one of none, joy, spacemouse, keyboard, leader"),
        ({"teleop": "joy", "policy": "vla"}, "would both publish action_chunk: use policy:=none"),
        ({"record": "true"}, "record:=true needs dataset:=<output folder>"),
        ({"record": "true", "dataset": "  "}, "record:=true needs dataset:="),
        ({"namespace": "robot-a"}, "launch argument 'namespace' is 'robot-a'"),
        ({"namespace": "2robots"}, "do not start with a digit"),
    ],
)
def test_bad_arguments_are_refused_with_the_argument_named(kwargs, message):
    with pytest.raises(BringupError) as err:
        plan_bringup(**kwargs)
    assert message in str(err.value)


def test_use_sim_time_can_be_forced_but_never_on_the_sim():
    plan = plan_bringup(embodiment="fr3", sim="true", policy="none", use_sim_time="false")
    assert [n.parameters["use_sim_time"] for n in plan.nodes] == [False, False]
    plan = plan_bringup(embodiment="fr3", sim="false", policy="none", use_sim_time="true")
    assert [n.parameters["use_sim_time"] for n in plan.nodes] == [True]


def test_every_plan_bringup_keyword_is_a_declared_launch_argument():
    import inspect

    assert list(inspect.signature(plan_bringup).parameters) == [a.name for a in LAUNCH_ARGUMENTS]
    assert all(a.description for a in LAUNCH_ARGUMENTS)


# ---------------------------------------------------------------------------------------- launch file
def _load_launch_file():
    pytest.importorskip("launch_ros", reason="ROS 2 launch wheels not installed (../shared/ros2-wheels/install.sh)")
    spec = importlib.util.spec_from_file_location("bringup_launch", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _expand(module, **arguments):
    """Declare the arguments in a real LaunchContext and run the launch file's OpaqueFunction."""
    from launch import LaunchContext
    from launch.actions import DeclareLaunchArgument, OpaqueFunction

    description = module.generate_launch_description()
    context = LaunchContext()
    declared = [e for e in description.entities if isinstance(e, DeclareLaunchArgument)]
    for arg in declared:
        context.launch_configurations[arg.name] = arguments.get(arg.name, arg.default_value[0].text)
    (opaque,) = [e for e in description.entities if isinstance(e, OpaqueFunction)]
    return declared, opaque.execute(context)


def test_launch_file_declares_every_argument_with_its_description():
    module = _load_launch_file()
    declared, _ = _expand(module, sim="true", policy="scripted")
    assert [(d.name, d.description) for d in declared] == [(a.name, a.description) for a in LAUNCH_ARGUMENTS]


def test_launch_file_starts_lifecycle_nodes_and_registers_the_bringup_chain():
    from launch.actions import RegisterEventHandler
    from launch.event_handlers import OnProcessExit, OnProcessStart
    from launch_ros.actions import LifecycleNode, Node
    from launch_ros.event_handlers import OnStateTransition

    module = _load_launch_file()
    _, actions = _expand(module, embodiment="ur5e", sim="true", policy="scripted", namespace="cell_2")
    nodes = [a for a in actions if isinstance(a, Node)]
    assert [type(n) for n in nodes] == [Node, LifecycleNode, LifecycleNode]
    handlers = [a.event_handler for a in actions if isinstance(a, RegisterEventHandler)]
    assert sum(isinstance(h, OnProcessExit) for h in handlers) == 3  # every node is required
    assert sum(isinstance(h, OnStateTransition) for h in handlers) == 2  # one per lifecycle node
    assert sum(isinstance(h, OnProcessStart) for h in handlers) == 1  # configure the first one when it starts

    _, actions = _expand(module, embodiment="ur5e", sim="true", policy="scripted", autostart="false")
    handlers = [a.event_handler for a in actions if isinstance(a, RegisterEventHandler)]
    assert not any(isinstance(h, (OnStateTransition, OnProcessStart)) for h in handlers)


def test_launch_file_refuses_bad_arguments_before_starting_anything():
    module = _load_launch_file()
    with pytest.raises(BringupError, match="valid policies"):
        _expand(module, policy="gpt")


def test_policy_auto_runs_what_was_measured_to_work_never_an_untrained_model(tmp_path, monkeypatch):
    from vla_ros.policies import builtin

    monkeypatch.setattr(builtin, "BUILTIN_DIR", tmp_path)

    def chosen(**kw):
        plan = plan_bringup(**{"embodiment": "fr3", **kw})
        return plan.node("policy_node").parameters["policy"] if "policy_node" in plan.executables else "none"

    assert chosen(sim="true") == "scripted"  # nothing shipped: the expert, in simulation
    with pytest.raises(BringupError, match="policy' is 'auto': no policy named.*policy:=none to teleoperate"):
        plan_bringup(embodiment="fr3", sim="false")  # a real arm: never an untrained model
    assert chosen(sim="false", checkpoint="/ckpt") == "vla"
    assert chosen(sim="true", teleop="joy") == "none"  # teleoperation publishes the chunks itself
    (tmp_path / "fr3").mkdir()
    (tmp_path / "fr3" / "config.json").write_text("{}")
    (tmp_path / "fr3" / "builtin.json").write_text('{"eval": {"success_rate": 0.3}}')
    assert chosen(sim="true") == "scripted"  # shipped but below the bar
    (tmp_path / "fr3" / "builtin.json").write_text('{"eval": {"success_rate": 0.6}}')
    assert chosen(sim="true") == "builtin"
    # on a real arm the policy trained in simulation runs only when named
    with pytest.raises(BringupError, match="no policy named and no checkpoint given for the real 'fr3'"):
        plan_bringup(embodiment="fr3", sim="false")
    assert chosen(sim="false", policy="builtin") == "builtin"
    assert chosen(embodiment="ur5e", sim="true") == "scripted"
    assert chosen(sim="true", policy="scripted") == "scripted"  # a named policy is never replaced
