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
