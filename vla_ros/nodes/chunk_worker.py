"""The expensive middle of a chunk decision in a process of its own.

`ControllerCore.decide_chunk` takes a snapshot under the node's lock, prepares the chunk against
it without the lock (IK, the safety envelope, the plan fit: 4-5 ms for 1000 points on this
machine), and commits it under the lock. Without the lock is not without the interpreter lock:
while a thread of the controller prepares a chunk, the e-stop, the command timer and
joint_states wait for the GIL. `ChunkWorker.prepare` sends the snapshot and the chunk to a spawned
process holding the same `ControllerCore` (same embodiment, same configuration) and waits on the
pipe, which releases the GIL: the node's other callbacks run meanwhile.

Failure handling: the controller never depends on the worker for safety. A worker that is not
ready yet (it takes a second or two to import its libraries) leaves the decision to the node's
thread; one that dies or does not answer within `timeout_s` is killed and restarted, and the chunk
is refused with that reason (the controller holds, as for any refusal). The worker dies with the
node's process (PR_SET_PDEATHSIG) and is stopped by `close()`.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import threading
import time
from typing import Any, Callable

log = logging.getLogger(__name__)


def _serve(conn, spec, config) -> None:
    """The worker process: one ControllerCore, prepare_chunk on request until None or EOF."""
    from vla_ros.nodes.runtime import stop_with_parent

    stop_with_parent()
    try:
        from vla_ros.core.controller import ControllerCore
        from vla_ros.core.kinematics import RobotKinematics

        core = ControllerCore(spec, RobotKinematics.from_embodiment(spec), config)
    except Exception as err:  # noqa: BLE001 - said to the parent, which keeps deciding in-process
        conn.send(("failed", f"{type(err).__name__}: {err}"))
        return
    conn.send(("ready", None))
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return
        if request is None:
            return
        snapshot, chunk, extra_lead_s = request
        try:
            result = core.prepare_chunk(snapshot, chunk, extra_lead_s=extra_lead_s)
        except Exception as err:  # noqa: BLE001 - a bug: refuse this chunk, keep serving
            result = f"internal error while deciding the chunk: {type(err).__name__}: {err}"
        conn.send(result)


class ChunkWorker:
    """A spawned process that runs `ControllerCore.prepare_chunk` for one controller.

    `prepare(snapshot, chunk, extra_lead_s)` has the signature `decide_chunk` takes; `fallback`
    prepares in this process while the worker is not ready (or could not start)."""

    def __init__(self, spec, config, fallback: Callable[..., Any], timeout_s: float = 2.0) -> None:
        self._spec = spec
        self._config = config
        self._fallback = fallback
        self.timeout_s = float(timeout_s)
        self._lock = threading.Lock()  # one request in flight at a time
        self._ctx = mp.get_context("spawn")  # never fork a process with DDS threads running
        self._proc = None
        self._conn = None
        self._ready = False
        self._closed = False
        self.failed: str | None = None  # why the worker could not start (then: decided in-process)
        self.restarts = 0
        self.decided_in_worker = 0
        self.decided_in_process = 0
        self._start()

    # ------------------------------------------------------------------ process
    def _start(self) -> None:
        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(target=_serve, args=(child, self._spec, self._config), daemon=True,
                                 name="controller_chunk_worker")
        try:
            proc.start()
        except (AssertionError, OSError) as err:  # e.g. "daemonic processes are not allowed to have children"
            self.failed = f"the chunk worker could not be started: {err}"
            log.warning("%s; deciding chunks in the node's process", self.failed)
            parent.close()
            child.close()
            return
        child.close()
        self._proc, self._conn, self._ready = proc, parent, False

    def _kill(self) -> None:
        proc, conn = self._proc, self._conn
        self._proc = self._conn = None
        self._ready = False
        if conn is not None:
            conn.close()
        if proc is not None:
            proc.kill()
            proc.join(timeout=5.0)

    def _check_ready(self) -> bool:
        """Whether the worker has said it is ready (never blocks)."""
        if self._ready:
            return True
        if self._conn is None or self.failed is not None:
            return False
        try:
            if not self._conn.poll(0):
                if self._proc is not None and not self._proc.is_alive():
                    self.failed = f"the chunk worker exited with code {self._proc.exitcode} before it was ready"
                return False
            kind, detail = self._conn.recv()
        except (EOFError, OSError) as err:
            self.failed = f"the chunk worker died before it was ready ({err or type(err).__name__})"
            return False
        if kind != "ready":
            self.failed = f"the chunk worker could not build its controller: {detail}"
            log.warning("%s; deciding chunks in the node's process", self.failed)
            return False
        self._ready = True
        return True

    def wait_ready(self, timeout_s: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if self._check_ready():
                    return True
                if self.failed is not None:
                    return False
            time.sleep(0.02)
        return False

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    # ------------------------------------------------------------------ requests
    def prepare(self, snapshot, chunk, extra_lead_s: float = 0.0):
        with self._lock:
            if self._closed or not self._check_ready():
                self.decided_in_process += 1
                return self._fallback(snapshot, chunk, extra_lead_s)
            try:
                self._conn.send((snapshot, chunk, float(extra_lead_s)))
                if self._conn.poll(self.timeout_s):
                    result = self._conn.recv()
                    self.decided_in_worker += 1
                    return result
                problem = f"the chunk worker did not answer within {self.timeout_s:.1f} s"
            except (EOFError, OSError) as err:
                problem = f"the chunk worker died ({err or type(err).__name__})"
            log.error("%s; restarting it", problem)
            self._kill()
            self.restarts += 1
            self._start()
            return f"could not decide the chunk: {problem} (restarted)"

    def close(self) -> None:
        with self._lock:
            self._closed = True
            conn, proc = self._conn, self._proc
            if conn is not None:
                try:
                    conn.send(None)
                except OSError:
                    pass
            if proc is not None:
                proc.join(timeout=2.0)
            self._kill()
