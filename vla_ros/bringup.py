"""Which nodes `bringup.launch.py` starts, with which parameters — decided here, in tested Python.

The launch file stays declarative: it declares `LAUNCH_ARGUMENTS` and hands their values to
`plan_bringup`, which validates them (unknown embodiment or policy -> an error that lists
the valid names) and returns a `BringupPlan` of plain `NodePlan` values in bring-up order; the
launch file starts them and drives the lifecycle nodes' transitions in that order.
`vla-ros demo` runs the same graph in one process without a ROS install.

Split graphs: `role:=robot` starts what runs beside the driver (sim or nothing for the arm,
controller, teleop, recorder), `role:=policy` only the policy node (on the GPU host); both sides
with the same `namespace` on one ROS domain form one graph. Different namespaces are separate
graphs on one domain.
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


ROLES = ("all", "robot", "policy")
TELEOP_DEVICES = ("none", "joy", "spacemouse", "keyboard", "leader")

LAUNCH_ARGUMENTS: tuple[LaunchArgument, ...] = (
    LaunchArgument("embodiment", "fr3", "embodiment config: a name in config/ (fr3, franka, panda, ur5, ur5e, aloha) or a YAML path"),
    LaunchArgument("sim", "false", "true: start the MuJoCo simulated arm (sim_node) and run on simulated time; false: expect the vendor driver to be running"),
    LaunchArgument("policy", "auto", "policy registry name (scripted, replay, vla, builtin, openvla, pi0, ...), 'none' to start no policy node (teleoperation only), or 'auto': vla with a checkpoint, else (sim:=true) the built-in VLA where one passed its evaluation, else the scripted expert; a real arm needs one named; none with teleop"),
    LaunchArgument("checkpoint", "", "checkpoint folder for the policy (vla / openvla / pi0); empty: the policy's built-in default"),
    LaunchArgument("policy_kwargs", "{}", "extra policy factory arguments as a JSON object, e.g. '{\"unnorm_key\": \"bridge_orig\"}'"),
    LaunchArgument("inference_mode", "async", "async: start the next inference early so the arm never waits; sync: infer, execute the chunk open-loop, infer again"),
    LaunchArgument("namespace", "", "namespace for all vla_ros nodes and their relative topics (with sim:=true also /clock -> /<namespace>/clock), so several graphs share one ROS domain"),
    LaunchArgument("seed", "0", "simulation randomisation seed (sim:=true only)"),
    LaunchArgument("use_sim_time", "auto", "auto: true when sim:=true, else false; or true/false to force it (sim_node itself never: it publishes /clock)"),
    LaunchArgument("role", "all", "which side of the graph this launch starts: all; robot (controller + sim or the driver side, teleop, recorder; beside the driver); policy (the policy node only; on the GPU host)"),
    LaunchArgument("autostart", "true", "true: configure and activate the lifecycle nodes in order (sim, controller, teleop, recorder, policy); false: leave them unconfigured for `ros2 lifecycle set`"),
    LaunchArgument("teleop", "none", "teleoperation device on the robot side: none, joy, spacemouse, keyboard or leader (ALOHA leader arms); publishes action_chunk, so it needs policy:=none"),
    LaunchArgument("record", "false", "true: record demonstrations (recorder_node) into the 'dataset' folder"),
    LaunchArgument("dataset", "", "output folder of the recorder (LeRobotDataset v3.0); required with record:=true"),
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
    lifecycle: bool = True  # configured + activated by the launch (sim_node is a plain node)

    @property
    def full_name(self) -> str:
        """The node's fully qualified name, e.g. `/robot_a/controller`."""
        return f"/{self.namespace}/{self.name}" if self.namespace else f"/{self.name}"


@dataclass(frozen=True)
class BringupPlan:
    """The nodes of one launch in start order, which is also the order their lifecycle
    transitions are driven in (sim, controller, teleop, recorder, policy)."""

    nodes: tuple[NodePlan, ...]
    autostart: bool

    @property
    def lifecycle_nodes(self) -> tuple[NodePlan, ...]:
        return tuple(n for n in self.nodes if n.lifecycle)

    @property
    def executables(self) -> list[str]:
        return [n.executable for n in self.nodes]

    def node(self, executable: str) -> NodePlan:
        for n in self.nodes:
            if n.executable == executable:
                return n
        raise KeyError(f"no {executable} in this bring-up; it starts {self.executables}")


class BringupError(ValueError):
    """A launch argument has a value that cannot be started."""


def parse_bool(name: str, value: str | bool) -> bool:
    if isinstance(value, bool):
        return value
    lowered = str(value).strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise BringupError(f"launch argument '{name}' must be true or false, got '{value}'")


def _namespace(value: str) -> str:
    """`robot_a`, `/robot_a/` -> `robot_a`; a valid ROS namespace or a BringupError."""
    ns = str(value).strip().strip("/")
    if not ns:
        return ""
    for token in ns.split("/"):
        if not token or not (token[0].isalpha() or token[0] == "_") or not all(c.isalnum() or c == "_" for c in token):
            raise BringupError(
                f"launch argument 'namespace' is '{value}': use letters, digits and '_' in '/'-separated "
                "parts that do not start with a digit (e.g. robot_a)"
            )
    return ns


def plan_bringup(
    embodiment: str = "fr3",
    sim: str | bool = False,
    policy: str = "auto",
    checkpoint: str = "",
    policy_kwargs: str = "{}",
    inference_mode: str = "async",
    namespace: str = "",
    seed: str | int = 0,
    use_sim_time: str | bool = "auto",
    role: str = "all",
    autostart: str | bool = True,
    teleop: str = "none",
    record: str | bool = False,
    dataset: str = "",
) -> BringupPlan:
    """Validate the launch arguments and return the nodes to start, in start order."""
    import json

    from vla_ros.core.embodiment import load_embodiment
    from vla_ros.policies.base import available_policies

    sim_on = parse_bool("sim", sim)
    autostart_on = parse_bool("autostart", autostart)
    record_on = parse_bool("record", record)
    try:
        load_embodiment(embodiment)  # only to validate: the error names the valid names / the offending key
    except (ValueError, KeyError, OSError) as exc:
        raise BringupError(f"launch argument 'embodiment': {exc}") from exc
    if role not in ROLES:
        raise BringupError(f"launch argument 'role' must be one of {', '.join(ROLES)}, got '{role}'")
    robot_side, policy_side = role in ("all", "robot"), role in ("all", "policy")
    if str(use_sim_time).strip().lower() == "auto":
        sim_time = sim_on
    else:
        sim_time = parse_bool("use_sim_time", use_sim_time)
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
    ns = _namespace(namespace)
    if teleop not in TELEOP_DEVICES:
        raise BringupError(f"launch argument 'teleop' must be one of {', '.join(TELEOP_DEVICES)}, got '{teleop}'")
    if record_on and not str(dataset).strip():
        raise BringupError("record:=true needs dataset:=<output folder> (where the recorder writes the episodes)")

    if policy_side and policy == "auto":
        if role == "all" and teleop != "none":
            policy = "none"  # teleoperating: the device publishes the chunks
        else:
            from vla_ros.policies.builtin import default_policy

            try:
                policy = default_policy(embodiment, checkpoint, sim_on)
            except ValueError as exc:
                raise BringupError(f"launch argument 'policy' is 'auto': {exc}") from exc
    if policy_side:
        policies = available_policies()
        if policy != "none" and policy not in policies:
            raise BringupError(
                f"launch argument 'policy' is '{policy}'; valid policies: {', '.join(sorted(policies))}, none"
            )
        if policy == "scripted" and not sim_on:
            raise BringupError(
                "policy 'scripted' reads simulation ground truth and only runs with sim:=true"
            )
        if role == "policy" and policy == "none":
            raise BringupError("role:=policy with policy:=none starts nothing: name a policy")
        if role == "all" and policy != "none" and teleop != "none":
            raise BringupError(
                f"teleop:={teleop} and policy:={policy} would both publish action_chunk: use policy:=none to teleoperate"
            )

    # sim_node owns simulated time: it publishes /clock and must not itself follow it. With a
    # namespace, each graph's clock is its own (/clock is absolute: two sims on one domain would
    # otherwise interleave their times on it).
    remap = ((("/clock", f"/{ns}/clock"),) if ns and sim_on else ())
    common = {"embodiment": embodiment, "use_sim_time": sim_time}
    managed = {**common, "autostart": False}  # the launch drives their transitions
    nodes: list[NodePlan] = []
    if robot_side:
        if sim_on:
            nodes.append(NodePlan("sim_node", "sim", ns, {"embodiment": embodiment, "use_sim_time": False,
                                                            "seed": seed_int}, remappings=remap, lifecycle=False))
        nodes.append(NodePlan("controller_node", "controller", ns, dict(managed), remappings=remap))
        if teleop != "none":
            nodes.append(NodePlan("teleop_node", "teleop", ns, {**managed, "device": teleop}, remappings=remap))
        if record_on:
            nodes.append(NodePlan("recorder_node", "recorder", ns, {**managed, "dataset": str(dataset).strip()},
                                  remappings=remap))
    if policy_side and policy != "none":
        nodes.append(
            NodePlan(
                "policy_node",
                "policy",
                ns,
                {
                    **managed,
                    "policy": policy,
                    "checkpoint": checkpoint,
                    "policy_kwargs": json.dumps(kwargs),
                    "mode": inference_mode,
                },
                remappings=remap,
            )
        )
    return BringupPlan(tuple(nodes), autostart_on)
