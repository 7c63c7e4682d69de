"""One `colcon build` of this package per test session, into a temporary workspace, shared by
test_package_install.py (through its fixture) and the launch tests in test/launch/ (which cannot
take pytest fixtures: launch_testing calls their generate_test_description itself).

Also the environment `source install/setup.bash` gives, and the reason the launch tests skip
where the ROS 2 launch system (../shared/ros2-wheels) is not installed.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
LAUNCH_MODULES = ("launch", "launch_ros", "launch_testing", "ros2cli", "ros2launch", "ros2lifecycle", "ros2param")

_built: dict[str, Path | str] = {}


def shared_wheels_folder() -> Path | None:
    """Where `make test` installs the ROS 2 launch wheels from (the Makefile's search order)."""
    candidates = [ROOT.parent / "shared" / "ros2-wheels"]
    if os.environ.get("VLA_ROS_SHARED"):
        candidates.append(Path(os.environ["VLA_ROS_SHARED"]) / "ros2-wheels")
    candidates.append(Path("/work/shared/ros2-wheels"))
    return next((c for c in candidates if (c / "install.sh").is_file()), None)


def launch_system_missing() -> str | None:
    """None when `ros2 launch` / launch_testing can run here, else why not (the skip reason)."""
    missing = [m for m in LAUNCH_MODULES if importlib.util.find_spec(m) is None]
    if not missing and (BIN / "ros2").exists():
        return None
    folder = shared_wheels_folder()
    where = (f"{folder} exists: run `{folder}/install.sh {sys.executable}` (make test does)" if folder else
             "the ../shared/ros2-wheels folder is absent (set VLA_ROS_SHARED to the folder that holds it)")
    return f"ROS 2 launch system not installed (missing {', '.join(missing) or 'the ros2 command'}); {where}"


def _package_files() -> list[str]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if line]


def colcon_install() -> Path:
    """`colcon build` of exactly what a clone of the repository holds, once per session; returns
    `<ws>/install/vla_ros`. Raises AssertionError with colcon's output if the build fails."""
    if "install" in _built:
        return _built["install"]
    if "error" in _built:
        raise AssertionError(_built["error"])
    colcon = shutil.which("colcon", path=str(BIN)) or shutil.which("colcon")
    if colcon is None:
        _built["error"] = "colcon is not installed: `make setup` installs colcon-common-extensions from requirements.txt"
        raise AssertionError(_built["error"])
    ws = Path(tempfile.mkdtemp(prefix="vla_ros_colcon_ws_"))
    atexit.register(shutil.rmtree, ws, True)
    src = ws / "src" / "vla_ros"
    for rel in _package_files():
        if not (ROOT / rel).is_file():
            continue  # deleted in the working tree, not yet committed
        target = src / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target)
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    result = subprocess.run([colcon, "build", "--base-paths", "src"], cwd=ws, env=env, capture_output=True,
                            text=True, timeout=300)
    if result.returncode != 0:
        _built["error"] = f"colcon build failed:\n{result.stdout}\n{result.stderr}"
        raise AssertionError(_built["error"])
    _built["install"] = ws / "install" / "vla_ros"
    return _built["install"]


def installed_env(install: Path, **extra: str) -> dict[str, str]:
    """The environment `source install/setup.bash` gives (for this one package), on top of ours."""
    site = next((install / "lib").glob("python3*/site-packages"))
    env = dict(os.environ)
    env["AMENT_PREFIX_PATH"] = os.pathsep.join(p for p in (str(install), env.get("AMENT_PREFIX_PATH", "")) if p)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), env.get("PYTHONPATH", "")) if p)
    env["PATH"] = f"{install / 'bin'}{os.pathsep}{BIN}{os.pathsep}{env['PATH']}"
    env.setdefault("ROS_LOG_DIR", tempfile.mkdtemp(prefix="vla_ros_roslog_"))
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env
