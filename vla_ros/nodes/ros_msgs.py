"""Optional ROS message packages: control_msgs and franka_msgs.

The package runs in simulation without them; only configs that use the real-arm interfaces
(`gripper.command.kind: franka_gripper`, `command.interface: follow_joint_trajectory`, Franka
driver state) need them, and those fail at configure with `MessagesUnavailable` naming what is
missing and how to get it.

Where they come from:
- a ROS 2 machine: the ROS install (`apt install ros-jazzy-control-msgs ros-jazzy-franka-msgs`
  or a franka_ros2 workspace), sourced as usual -- a plain import works;
- here (pip-only ROS): `../shared/ros2-msgs/build.sh .venv/bin/python .ros2_msgs` (`make test`
  does it) builds them with rosidl into a prefix; `load()` finds it at $VLA_ROS_MSGS_PREFIX or
  `<repository>/.ros2_msgs`, puts its Python folder on sys.path, its lib folder on
  LD_LIBRARY_PATH (read at run time when rosidl looks for a type support library) and loads its
  libraries once, globally, because the dynamic loader read LD_LIBRARY_PATH at process start.
"""

from __future__ import annotations

import ctypes
import importlib
import os
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

PREFIX_ENV = "VLA_ROS_MSGS_PREFIX"
_SOURCE_ROOT = Path(__file__).resolve().parents[2]
_lock = threading.Lock()
_prefix_loaded: Path | None = None


class MessagesUnavailable(ImportError):
    """A message package a config asks for cannot be imported; the message says how to fix it."""


def default_prefix() -> Path:
    env = os.environ.get(PREFIX_ENV)
    return Path(env) if env else _SOURCE_ROOT / ".ros2_msgs"


def _add_prefix(prefix: Path) -> None:
    global _prefix_loaded
    if _prefix_loaded == prefix:
        return
    site = prefix / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
    lib = prefix / "lib"
    if not site.is_dir():
        return
    if str(site) not in sys.path:
        sys.path.append(str(site))
    parts = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
    if str(lib) not in parts:
        os.environ["LD_LIBRARY_PATH"] = os.pathsep.join([str(lib), *parts])
    pending = sorted(lib.glob("*.so"))
    # dependency order is unknown: load what loads, retry the rest
    for _ in range(len(pending) + 1):
        failed = []
        for path in pending:
            try:
                ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
            except OSError:
                failed.append(path)
        if not failed or len(failed) == len(pending):
            break
        pending = failed
    importlib.invalidate_caches()
    _prefix_loaded = prefix


def load(package: str) -> SimpleNamespace:
    """Import `package`'s msg and action modules (e.g. "control_msgs", "franka_msgs").

    Returns a namespace with `msg` and `action` (and `srv` when present). Raises
    MessagesUnavailable with what is missing and how to install or build it."""
    with _lock:
        try:
            return _import(package)
        except ImportError:
            pass
        prefix = default_prefix()
        _add_prefix(prefix)
        try:
            return _import(package)
        except ImportError as err:
            raise MessagesUnavailable(
                f"the ROS message package '{package}' is not available ({err}). On a ROS 2 machine install "
                f"it (apt: ros-jazzy-{package.replace('_', '-')}) and source the workspace; in a pip-only "
                f"environment build it with `../shared/ros2-msgs/build.sh .venv/bin/python .ros2_msgs` "
                f"(looked for a built prefix at {prefix}; set ${PREFIX_ENV} to use another)") from err


def _import(package: str) -> SimpleNamespace:
    out = {"msg": importlib.import_module(f"{package}.msg"), "action": importlib.import_module(f"{package}.action")}
    # The generated Python modules import without their C type support; load one so that a
    # prefix whose libraries cannot load fails here, not at the first publisher.
    action_module = out["action"]
    names = sorted(n for n in dir(action_module) if not n.startswith("_") and n[0].isupper())
    if names:
        try:
            getattr(action_module, names[0]).__class__.__import_type_support__()
        except Exception as err:  # rosidl's UnsupportedTypeSupport is not an ImportError
            raise ImportError(f"type support of {package} does not load: {err}") from err
    return SimpleNamespace(**out)


def available(package: str) -> tuple[bool, str]:
    """(True, "") when `package` loads, else (False, why)."""
    try:
        load(package)
    except MessagesUnavailable as err:
        return False, str(err)
    return True, ""
