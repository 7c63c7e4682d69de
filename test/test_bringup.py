"""bringup.launch.py decisions (plan_bringup) and the launch file's wiring, without `launch` installed."""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path

import pytest

from vla_ros.bringup import LAUNCH_ARGUMENTS, BringupError, plan_bringup

LAUNCH_FILE = Path(__file__).resolve().parents[1] / "launch" / "bringup.launch.py"


def test_sim_graph_starts_sim_controller_policy_on_sim_time():
    nodes = plan_bringup(embodiment="fr3", sim="true", policy="scripted", seed="7")
    assert [n.executable for n in nodes] == ["sim_node", "controller_node", "policy_node"]
    assert all(n.parameters["use_sim_time"] is True for n in nodes)
    assert all(n.parameters["embodiment"] == "fr3" for n in nodes)
    assert nodes[0].parameters["seed"] == 7
    assert nodes[2].parameters["policy"] == "scripted"
    assert nodes[2].parameters["mode"] == "async"


def test_hardware_graph_expects_the_driver_and_uses_wall_time():
    nodes = plan_bringup(embodiment="ur5e", sim="false", policy="vla", checkpoint="/ckpt")
    assert [n.executable for n in nodes] == ["controller_node", "policy_node"]
    assert all(n.parameters["use_sim_time"] is False for n in nodes)
    assert nodes[1].parameters["checkpoint"] == "/ckpt"


def test_policy_none_starts_only_the_controller():
    nodes = plan_bringup(embodiment="aloha", sim="false", policy="none")
    assert [n.executable for n in nodes] == ["controller_node"]


def test_policy_kwargs_are_passed_as_json():
    nodes = plan_bringup(embodiment="fr3", sim=True, policy="vla", policy_kwargs='{"preset": "pi0"}')
    assert json.loads(nodes[-1].parameters["policy_kwargs"]) == {"preset": "pi0"}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"embodiment": "kuka"}, "kuka"),
        ({"policy": "gpt"}, "valid policies"),
        ({"policy": "scripted", "sim": "false"}, "sim:=true"),
        ({"sim": "maybe"}, "'sim' must be true or false"),
        ({"inference_mode": "fast"}, "'inference_mode'"),
        ({"seed": "x"}, "'seed' must be an integer"),
        ({"policy_kwargs": "[1]"}, "JSON object"),
        ({"policy_kwargs": "{oops"}, "not valid JSON"),
    ],
)
def test_bad_arguments_are_refused_with_the_argument_named(kwargs, message):
    with pytest.raises((BringupError, ValueError, KeyError)) as err:
        plan_bringup(**kwargs)
    assert message in str(err.value)


def test_use_sim_time_can_be_forced():
    nodes = plan_bringup(embodiment="fr3", sim="true", policy="none", use_sim_time="false")
    assert all(n.parameters["use_sim_time"] is False for n in nodes)


class _Recorder:
    def __init__(self, **kwargs):
        self.kwargs = kwargs


def _fake_launch_modules(monkeypatch):
    """Minimal stand-ins for launch / launch_ros (not installable here) that record their arguments."""
    launch = types.ModuleType("launch")
    launch.LaunchDescription = lambda entities: list(entities)
    actions = types.ModuleType("launch.actions")
    actions.DeclareLaunchArgument = lambda name, default_value, description: ("arg", name, default_value, description)
    actions.OpaqueFunction = lambda function: ("opaque", function)
    substitutions = types.ModuleType("launch.substitutions")

    class LaunchConfiguration:
        def __init__(self, name):
            self.name = name

        def perform(self, context):
            return context[self.name]

    substitutions.LaunchConfiguration = LaunchConfiguration
    launch_ros = types.ModuleType("launch_ros")
    ros_actions = types.ModuleType("launch_ros.actions")
    ros_actions.Node = _Recorder
    for name, module in {
        "launch": launch,
        "launch.actions": actions,
        "launch.substitutions": substitutions,
        "launch_ros": launch_ros,
        "launch_ros.actions": ros_actions,
    }.items():
        monkeypatch.setitem(sys.modules, name, module)


def test_launch_file_declares_every_argument_and_starts_the_planned_nodes(monkeypatch):
    _fake_launch_modules(monkeypatch)
    spec = importlib.util.spec_from_file_location("bringup_launch", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    declared = [e for e in description if e[0] == "arg"]
    assert [d[1] for d in declared] == [a.name for a in LAUNCH_ARGUMENTS]
    assert all(d[3] for d in declared), "every launch argument has a description"
    (opaque,) = [e for e in description if e[0] == "opaque"]
    context = {a.name: a.default for a in LAUNCH_ARGUMENTS}
    context.update(embodiment="fr3", sim="true", policy="scripted")
    nodes = opaque[1](context)
    assert [n.kwargs["executable"] for n in nodes] == ["sim_node", "controller_node", "policy_node"]
    assert all(n.kwargs["package"] == "vla_ros" for n in nodes)
    assert nodes[1].kwargs["parameters"] == [{"embodiment": "fr3", "use_sim_time": True}]
