"""`vla-ros teleop`: teleoperate an arm through the same controller, IK and safety envelope as a
policy (the teleop node publishes action chunks; see vla_ros/nodes/teleop_node.py).

    vla-ros teleop --keyboard --embodiment fr3              # from this terminal, no X server
    vla-ros teleop --device joy --embodiment fr3            # gamepad (joy driver running)
    vla-ros teleop --device spacemouse --embodiment ur5e    # SpaceMouse (spacenav driver running)
    vla-ros teleop --device leader --embodiment aloha       # ALOHA leader arms

`--keyboard` reads keys from the terminal (raw mode, restored on exit) and prints the bindings
table first; `q` or Ctrl-C quits. Other devices run the teleop node until Ctrl-C. `--use-sim-time`
for a simulated graph (sim_node publishes /clock). Bad arguments exit with status 2.
"""

from __future__ import annotations

import argparse
import os
import re
import select
import sys

_EXIT_BAD_INPUT = 2
_ESCAPE_SEQUENCE = re.compile(r"\x1b(\[[0-9;?]*[ -/]*[@-~]|O.|.)?", re.DOTALL)
DEVICE_CHOICES = ("joy", "spacemouse", "leader")


def teleop_add_arguments(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    how = parser.add_mutually_exclusive_group(required=True)
    how.add_argument("--keyboard", action="store_true", help="keyboard teleop from this terminal")
    how.add_argument("--device", choices=DEVICE_CHOICES, help="a ROS input device: joy, spacemouse or leader")
    parser.add_argument("--embodiment", default="fr3", help="embodiment config (fr3, panda, ur5, ur5e, aloha)")
    parser.add_argument("--mapping", default="", help="device mapping name in config/teleop or a YAML path "
                                                      "(default: the device's own)")
    parser.add_argument("--arm", default="", help="Cartesian devices on a multi-arm embodiment: the arm to drive")
    parser.add_argument("--rate-hz", type=float, default=0.0, help="chunks per second (default: the mapping's)")
    parser.add_argument("--use-sim-time", action="store_true", help="use /clock (a simulated graph)")


def _node_parameters(args: argparse.Namespace, device: str):
    from rclpy.parameter import Parameter

    values = {"embodiment": args.embodiment, "device": device, "mapping": args.mapping, "arm": args.arm,
              "rate_hz": float(args.rate_hz), "use_sim_time": bool(args.use_sim_time), "autostart": True}
    return [Parameter(k, value=v) for k, v in values.items()]


def teleop_run(args: argparse.Namespace) -> int:
    if args.rate_hz < 0:
        print(f"vla-ros teleop: --rate-hz must be >= 0, got {args.rate_hz}", file=sys.stderr)
        return _EXIT_BAD_INPUT
    if args.keyboard and not os.isatty(sys.stdin.fileno()):
        print("vla-ros teleop --keyboard: standard input is not a terminal (run it in a terminal, not a pipe)",
              file=sys.stderr)
        return _EXIT_BAD_INPUT
    if not args.keyboard:
        from vla_ros.nodes.teleop_node import main as node_main

        # the node's own process handling (vla_ros.nodes.runtime): SIGINT/SIGTERM deactivate, exit 0
        ros_args = ["--ros-args"]
        for p in _node_parameters(args, args.device):
            ros_args += ["-p", f"{p.name}:={_ros_value(p.value)}"]
        return node_main(ros_args)
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    from vla_ros.nodes.runtime import BackgroundSpinner
    from vla_ros.nodes.teleop_node import TeleopNode, start

    # Ctrl-C stays a KeyboardInterrupt in this (the terminal's) thread: the session deactivates
    # the node (a stop chunk if the arm was moving) before rclpy goes down.
    rclpy.init(args=[], signal_handler_options=SignalHandlerOptions.NO)
    node = TeleopNode(parameter_overrides=_node_parameters(args, "keyboard"))
    executor = SingleThreadedExecutor()
    spinner = None
    try:
        if not start(node):
            print("vla-ros teleop: the teleop node did not start (see the error above)", file=sys.stderr)
            return _EXIT_BAD_INPUT
        executor.add_node(node)
        spinner = BackgroundSpinner(executor, "teleop_spin").start()
        return keyboard_session(node)
    finally:
        if node.active:
            node.trigger_deactivate()  # a stop chunk if the arm was moving
        if spinner is None or spinner.stop():
            node.destroy_node()
        rclpy.try_shutdown()


def _ros_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value if value else "''"
    return repr(value)


def keyboard_session(node, stdin_fd: int | None = None, out=None) -> int:
    """Read keys from the terminal and feed them to `node` until `q` or Ctrl-C."""
    import termios
    import tty

    from vla_ros.core.teleop import keyboard_bindings_table

    fd = sys.stdin.fileno() if stdin_fd is None else stdin_fd
    out = sys.stdout if out is None else out

    def show(output) -> None:
        for _, text in output.messages:
            out.write(f"  {text}\n")
        out.flush()

    node.on_output = show
    out.write(keyboard_bindings_table(node.config) + "\n")
    out.flush()
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)  # keys one at a time, no echo; Ctrl-C still interrupts
        while True:
            ready, _, _ = select.select([fd], [], [], 0.1)
            if not ready:
                continue
            data = os.read(fd, 64)
            if not data:
                return 0  # the terminal closed
            # escape sequences (arrow keys, function keys, Esc) are not bound: dropped whole
            text = _ESCAPE_SEQUENCE.sub("", data.decode(errors="ignore"))
            for key in text:
                if "quit" in node.feed_key(key).events:
                    out.write("  quit\n")
                    out.flush()
                    return 0
    except KeyboardInterrupt:
        return 0
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
