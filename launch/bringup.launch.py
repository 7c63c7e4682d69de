"""ros2 launch vla_ros bringup.launch.py embodiment:=fr3 sim:=true policy:=scripted

Declarative: every argument is declared with its description; which nodes start with which
parameters is decided by vla_ros.bringup.plan_bringup (unit-tested without launch).
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from vla_ros.bringup import LAUNCH_ARGUMENTS, plan_bringup


def _start_nodes(context, *args, **kwargs):
    values = {a.name: LaunchConfiguration(a.name).perform(context) for a in LAUNCH_ARGUMENTS}
    return [
        Node(
            package=plan.package,
            executable=plan.executable,
            name=plan.name,
            namespace=plan.namespace,
            parameters=[plan.parameters],
            remappings=list(plan.remappings),
            output="screen",
            emulate_tty=True,
        )
        for plan in plan_bringup(**values)
    ]


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(a.name, default_value=a.default, description=a.description) for a in LAUNCH_ARGUMENTS]
        + [OpaqueFunction(function=_start_nodes)]
    )
