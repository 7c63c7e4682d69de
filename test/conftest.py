"""Test-wide environment: set before anything imports rclpy, mujoco or transformers."""

import os
import random
import tempfile

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ["MESA_SHADER_CACHE_DISABLE"] = "true"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
# Keep DDS discovery on this host and give each test run its own domain so parallel runs
# (and a demo running beside the tests) never hear each other.
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", str(random.Random(os.getpid()).randint(1, 100)))
os.environ.setdefault("ROS_LOG_DIR", tempfile.mkdtemp(prefix="vla_ros_roslog_"))

# launch_testing's pytest plugin imports `launch`, whose logging module installs its own Logger class
# (propagate=False) for every logger created afterwards: vla_ros' module loggers, created when the test
# modules are collected, would then never reach pytest's capture handlers on the root logger (caplog
# saw nothing while the warning went to stderr). Our loggers are plain `logging.Logger`s, as in a node.
import logging  # noqa: E402

try:
    import launch.logging  # noqa: F401,E402  (installs its class at import; import it first, then undo)
except ImportError:
    pass
logging.setLoggerClass(logging.Logger)

# Each test module's ROS graph on a domain of its own. A graph a module leaves behind (a participant
# of a SIGKILL'd process lives on until its lease runs out; a node a failed test never destroyed) was
# heard by the next module's graph: a second /controller commanding the same simulated arm made later
# end-to-end tests fail only in the full run. Subprocesses inherit the variable. The launch tests
# use one more domain, never given to a module (test/launch/support.py: LAUNCH_DOMAIN_ID).
import itertools  # noqa: E402

import pytest  # noqa: E402

_BASE_DOMAIN_ID = int(os.environ["ROS_DOMAIN_ID"])
_LAUNCH_DOMAIN_ID = (_BASE_DOMAIN_ID + 50) % 100 + 1  # = test/launch/support.py's
_module_index = itertools.count()


def _next_domain() -> int:
    domain = (_BASE_DOMAIN_ID + next(_module_index)) % 100 + 1
    return domain % 100 + 1 if domain == _LAUNCH_DOMAIN_ID else domain


@pytest.fixture(scope="module", autouse=True)
def _ros_domain_per_module():
    previous = os.environ.get("ROS_DOMAIN_ID")
    os.environ["ROS_DOMAIN_ID"] = str(domain := _next_domain())
    yield domain
    os.environ["ROS_DOMAIN_ID"] = previous


@pytest.fixture
def own_ros_domain():
    """A domain for this test alone: for a test that builds its own graph in a module whose
    module-scoped graph (a sim publishing joint_states, a controller) is still alive."""
    previous = os.environ.get("ROS_DOMAIN_ID")
    os.environ["ROS_DOMAIN_ID"] = str(domain := _next_domain())
    yield domain
    os.environ["ROS_DOMAIN_ID"] = previous
