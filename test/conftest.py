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
