"""`vla-ros record` for the built-in policy's demonstrations, with a longer assembly wait.

On a loaded machine (2 cores shared by many processes) the recorder's joint_states queue lags the
simulated clock by more than the recorder's default `wait_s` (0.15 simulated s): every frame slot
is decided before its joint reading arrives and the episode is saved with almost no frames
("no joint_states of arm 'arm'"). This wrapper runs the unchanged `vla-ros record` command with the
recorder's `wait_s` raised (RECORD_WAIT_S, default 2.0 s), which only delays when a slot is
assembled, not what goes into it.

    python scripts/record_builtin.py --embodiment fr3 --out DIR --episodes N --seed S ...
"""

from __future__ import annotations

import os
import sys

from rclpy.parameter import Parameter

from vla_ros.cli import record_cmd
from vla_ros.cli.main import main

WAIT_S = float(os.environ.get("RECORD_WAIT_S", "2.0"))
_init = record_cmd.RecordSession.__init__


def _init_with_wait(self, *args, **kwargs):
    _init(self, *args, **kwargs)
    if self.recorder is not None:
        self.recorder.set_parameters([Parameter("wait_s", value=WAIT_S)])


record_cmd.RecordSession.__init__ = _init_with_wait

if __name__ == "__main__":
    sys.exit(main(["record", *sys.argv[1:]]))
