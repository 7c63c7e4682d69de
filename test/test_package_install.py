"""The ROS-machine install path: `colcon build` of this package into a temporary workspace puts
executables, launch, config and urdf files where `ros2 run` / `ros2 launch` look for them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXECUTABLES = ("vla-ros", "controller_node", "sim_node", "policy_node")
EMBODIMENTS = ("fr3", "panda", "ur5", "ur5e", "aloha")


def _package_files() -> list[str]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if line]


@pytest.fixture(scope="module")
def colcon_install(tmp_path_factory) -> Path:
    colcon = shutil.which("colcon", path=str(Path(sys.executable).parent)) or shutil.which("colcon")
    if colcon is None:
        pytest.fail("colcon is not installed: `make setup` installs colcon-common-extensions from requirements.txt")
    ws = tmp_path_factory.mktemp("colcon_ws")
    src = ws / "src" / "vla_ros"
    for rel in _package_files():  # exactly what a clone of the repository holds
        target = src / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    result = subprocess.run(
        [colcon, "build", "--base-paths", "src"], cwd=ws, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return ws / "install" / "vla_ros"


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
