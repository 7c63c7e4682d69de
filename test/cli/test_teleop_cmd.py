"""`vla-ros teleop`: argument checks, and the keyboard loop on a real pseudo-terminal with a
stand-in node (the ROS session itself runs in test/e2e/test_e2e_teleop.py)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import termios
import threading
import time

import pytest

from vla_ros.cli.main import main
from vla_ros.cli.teleop_cmd import keyboard_session
from vla_ros.core.teleop import TeleopOutput, load_teleop_config


class KeyNode:
    """What keyboard_session needs of a TeleopNode: config, feed_key, on_output."""

    def __init__(self):
        self.config = load_teleop_config("keyboard")
        self.keys: list[str] = []
        self.on_output = None

    def feed_key(self, key: str) -> TeleopOutput:
        self.keys.append(key)
        if key == "q":
            return TeleopOutput(events=("quit",))
        out = TeleopOutput(messages=(("info", f"got {key}"),))
        self.on_output(out)
        return out


def test_keyboard_loop_feeds_keys_ignores_escape_sequences_and_restores_the_terminal():
    master, slave = os.openpty()
    before = termios.tcgetattr(slave)
    node, out, result = KeyNode(), io.StringIO(), []
    thread = threading.Thread(target=lambda: result.append(keyboard_session(node, stdin_fd=slave, out=out)),
                              daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10.0
        while "q     quit" not in out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.01)  # the table is printed just before the terminal goes to raw mode
        time.sleep(0.2)
        os.write(master, b"wg\x1b[A1q")  # w, g, an arrow key (an unbound escape sequence), 1, q
        thread.join(timeout=10.0)
        assert not thread.is_alive()
        assert termios.tcgetattr(slave) == before  # raw mode undone
    finally:
        os.close(master)
        os.close(slave)
    assert result == [0]
    assert node.keys == ["w", "g", "1", "q"]
    text = out.getvalue()
    assert "w +" in text and "q     quit" in text  # the bindings table first
    assert "got w" in text and text.rstrip().endswith("quit")


def test_keyboard_needs_a_terminal():
    proc = subprocess.run([sys.executable, "-m", "vla_ros.cli.main", "teleop", "--keyboard"], stdin=subprocess.PIPE,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "standard input is not a terminal" in proc.stderr


@pytest.mark.parametrize("argv, message", [
    (["teleop"], "one of the arguments --keyboard --device is required"),
    (["teleop", "--keyboard", "--device", "joy"], "not allowed with argument"),
    (["teleop", "--device", "gamepad"], "invalid choice: 'gamepad'"),
])
def test_bad_arguments_exit_2(capsys, argv, message):
    with pytest.raises(SystemExit) as err:
        main(argv)
    assert err.value.code == 2
    assert message in capsys.readouterr().err


def test_negative_rate_exits_2(capsys):
    assert main(["teleop", "--device", "joy", "--rate-hz", "-1"]) == 2
    assert "--rate-hz must be >= 0" in capsys.readouterr().err
