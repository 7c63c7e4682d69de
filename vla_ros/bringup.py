"""Which nodes `bringup.launch.py` starts, with which parameters — decided here, in tested Python.

The launch file stays declarative: it declares `LAUNCH_ARGUMENTS` and hands their values to
`plan_bringup`, which validates them (unknown embodiment or policy -> an error that lists
the valid names) and returns plain `NodePlan` values. `vla-ros demo` runs the same graph
in one process without a ROS install.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PACKAGE = "vla_ros"


@dataclass(frozen=True)
class LaunchArgument:
    name: str
    default: str
    description: str


LAUNCH_ARGUMENTS: tuple[LaunchArgument, ...] = (
    LaunchArgument("embodiment", "fr3", "embodiment config: a name in config/ (fr3, franka, panda, ur5, ur5e, aloha) or a YAML path"),
    LaunchArgument("sim", "false", "true: start the MuJoCo simulated arm (sim_node) and run on simulated time; false: expect the vendor driver to be running"),
    LaunchArgument("policy", "vla", "policy registry name (scripted, replay, vla, openvla, pi0, ...) or 'none' to start no policy node (teleoperation only)"),
    LaunchArgument("checkpoint", "", "checkpoint folder for the policy (vla / openvla / pi0); empty: the policy's built-in default"),
    LaunchArgument("policy_kwargs", "{}", "extra policy factory arguments as a JSON object, e.g. '{\"unnorm_key\": \"bridge_orig\"}'"),
    LaunchArgument("inference_mode", "async", "async: start the next inference early so the arm never waits; sync: infer, execute the chunk open-loop, infer again"),
    LaunchArgument("namespace", "", "namespace for all vla_ros nodes and their relative topics"),
    LaunchArgument("seed", "0", "simulation randomisation seed (sim:=true only)"),
    LaunchArgument("use_sim_time", "auto", "auto: true when sim:=true, else false; or true/false to force it"),
)


@dataclass(frozen=True)
class NodePlan:
    """One node to start: what `launch_ros.actions.Node` needs, nothing ROS-specific."""

    executable: str
    name: str
    namespace: str
    parameters: dict[str, Any]
    package: str = PACKAGE
    remappings: tuple[tuple[str, str], ...] = field(default_factory=tuple)


class BringupError(ValueError):
    """A launch argument has a value that cannot be started."""


def _parse_bool(name: str, value: str | bool) -> bool:
    if isinstance(value, bool):
        return value
    lowered = str(value).strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise BringupError(f"launch argument '{name}' must be true or false, got '{value}'")


def plan_bringup(
    embodiment: str = "fr3",
    sim: str | bool = False,
    policy: str = "vla",
    checkpoint: str = "",
    policy_kwargs: str = "{}",
    inference_mode: str = "async",
    namespace: str = "",
    seed: str | int = 0,
    use_sim_time: str | bool = "auto",
) -> list[NodePlan]:
    """Validate the launch arguments and return the nodes to start, in start order."""
    import json

    from vla_ros.core.embodiment import load_embodiment
    from vla_ros.policies.base import available_policies

    sim_on = _parse_bool("sim", sim)
    spec = load_embodiment(embodiment)  # raises with the valid names / the offending key
    if str(use_sim_time).strip().lower() == "auto":
        sim_time = sim_on
    else:
        sim_time = _parse_bool("use_sim_time", use_sim_time)
    if inference_mode not in ("async", "sync"):
        raise BringupError(f"launch argument 'inference_mode' must be 'async' or 'sync', got '{inference_mode}'")
    try:
        seed_int = int(seed)
    except ValueError as exc:
        raise BringupError(f"launch argument 'seed' must be an integer, got '{seed}'") from exc
    try:
        kwargs = json.loads(policy_kwargs or "{}")
    except json.JSONDecodeError as exc:
        raise BringupError(f"launch argument 'policy_kwargs' is not valid JSON: {exc}") from exc
    if not isinstance(kwargs, dict):
        raise BringupError(f"launch argument 'policy_kwargs' must be a JSON object, got {policy_kwargs!r}")

    policies = available_policies()
    if policy != "none" and policy not in policies:
        raise BringupError(
            f"launch argument 'policy' is '{policy}'; valid policies: {', '.join(sorted(policies))}, none"
        )
    if policy == "scripted" and not sim_on:
        raise BringupError(
            "policy 'scripted' reads simulation ground truth and only runs with sim:=true"
        )

    common = {"embodiment": embodiment, "use_sim_time": sim_time}
    nodes: list[NodePlan] = []
    if sim_on:
        nodes.append(NodePlan("sim_node", "sim", namespace, {**common, "seed": seed_int}))
    nodes.append(NodePlan("controller_node", "controller", namespace, dict(common)))
    if policy != "none":
        nodes.append(
            NodePlan(
                "policy_node",
                "policy",
                namespace,
                {
                    **common,
                    "policy": policy,
                    "checkpoint": checkpoint,
                    "policy_kwargs": json.dumps(kwargs),
                    "mode": inference_mode,
                },
            )
        )
    del spec  # loaded only to validate the embodiment before anything starts
    return nodes
