"""The ROS-machine install path: `colcon build` of this package into a temporary workspace puts
executables, launch, config and urdf files where `ros2 run` / `ros2 launch` look for them
(`ros2 launch` itself running from that install: test/launch/)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .colcon_workspace import colcon_install as build_once

EXECUTABLES = ("vla-ros", "controller_node", "sim_node", "policy_node", "recorder_node", "teleop_node")
EMBODIMENTS = ("fr3", "panda", "ur5", "ur5e", "aloha")


@pytest.fixture(scope="module")
def colcon_install() -> Path:
    """One build per session, shared with the launch tests (test/colcon_workspace.py)."""
    return build_once()


@pytest.mark.slow
def test_executables_are_where_ros2_run_looks(colcon_install):
    for exe in EXECUTABLES:
        path = colcon_install / "lib" / "vla_ros" / exe
        assert path.is_file() and os.access(path, os.X_OK), f"missing executable {path}"


@pytest.mark.slow
def test_share_holds_package_launch_config_urdf(colcon_install):
    share = colcon_install / "share" / "vla_ros"
    assert (share / "package.xml").is_file()
    assert (share / "launch" / "bringup.launch.py").is_file()
    for name in EMBODIMENTS:
        assert (share / "config" / f"{name}.yaml").is_file(), name
    for urdf in ("fr3", "panda", "ur5", "ur5e", "aloha"):
        assert (share / "urdf" / f"{urdf}.urdf").is_file(), urdf
    assert (colcon_install / "share" / "ament_index" / "resource_index" / "packages" / "vla_ros").is_file()


@pytest.mark.slow
def test_installed_cli_uses_installed_package_and_share_files(colcon_install, tmp_path):
    site = next((colcon_install / "lib").glob("python3*/site-packages"))
    env = dict(
        os.environ,
        PYTHONPATH=str(site),
        AMENT_PREFIX_PATH=str(colcon_install),
    )
    probe = subprocess.run(
        [sys.executable, "-c", "import vla_ros, vla_ros.core.embodiment as e; print(vla_ros.__file__); print(e.config_dir())"],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=True,
    ).stdout.splitlines()
    assert probe[0].startswith(str(site)), probe
    assert Path(probe[1]).resolve() == (colcon_install / "share" / "vla_ros" / "config").resolve(), probe
    fk = subprocess.run(
        [str(colcon_install / "lib" / "vla_ros" / "vla-ros"), "fk", "--embodiment", "fr3",
         "--joints", "0,-0.785398,0,-2.356194,0,1.570796,0.785398"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert fk.returncode == 0, fk.stderr
    assert '"position"' in fk.stdout
