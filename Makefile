# ctrnet_ros developer entry points. Each target does all of its own set-up.
#   make setup   create .venv with pinned ROS 2 Kilted wheels, torch (CPU) and the rest; idempotent
#   make test    run the test suite inside a private network namespace (loopback only)
#   make demo    simulated rosbag -> calibration node -> TF and its error against ground truth
#   make bench   print the benchmark tables under bench/

SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.ctrnet-setup-stamp
BUILD := $(CURDIR)/build
# make test TESTS="test/test_x.py" PYTEST_ARGS="-k name -x" runs a subset
TESTS ?= test
REQS := requirements/torch.txt requirements/ros.txt requirements/base.txt requirements/build-interfaces.txt

# ROS isolation for anything that may start rclpy: loopback-only discovery, a per-run domain id,
# logs inside the build tree. The network namespace itself is created by `netns` below.
ROS_ENV = ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST ROS_LOG_DIR=$(BUILD)/ros_log \
          ROS_DOMAIN_ID=$${ROS_DOMAIN_ID:-$$(( RANDOM % 100 + 1 ))} MUJOCO_GL=$${MUJOCO_GL:-egl} \
          PYTHONDONTWRITEBYTECODE=1
# Run $(1) in a private network namespace with only `lo` up (no DDS traffic can leave the machine).
netns = unshare -n bash -c 'ip link set lo up && exec $(1)' || \
        { rc=$$?; [ $$rc -eq 1 ] && ! unshare -n true 2>/dev/null && \
          echo "error: 'unshare -n' is not permitted here; tests that start ROS need a private network namespace (run as root or with user namespaces)" >&2; exit $$rc; }

.PHONY: setup test _test_inner demo _demo_inner bench _bench_inner refresh-experiment _refresh_experiment_inner clean

setup: $(STAMP)

$(STAMP): $(REQS) setup.py package.xml tools/build_tf2_msgs.sh
	@test -x $(PY) || python3 -m venv $(VENV)
	@echo "[setup] torch first (CPU wheel), so nothing later pulls a CUDA build"
	$(PY) -m pip install -q --disable-pip-version-check -r requirements/torch.txt 2> >(grep -v "is ignored: it is neither" >&2)
	@echo "[setup] ROS 2 Kilted wheels and Python libraries"
	$(PY) -m pip install -q --disable-pip-version-check -r requirements/ros.txt -r requirements/base.txt \
	    -r requirements/build-interfaces.txt 2> >(grep -v "is ignored: it is neither" >&2)
	@$(PY) -c "import torch,sys; v=torch.__version__; sys.exit(0 if v.startswith('2.13.0') else 'torch '+v+' installed, expected 2.13.0')"
	@echo "[setup] tf2_msgs (built from its definition only if it does not import)"
	bash tools/build_tf2_msgs.sh $(VENV)
	@echo "[setup] ctrnet_ros itself, editable"
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e . 2> >(grep -v "is ignored: it is neither" >&2)
	@touch $@
	@echo "[setup] done"

test: setup
	@mkdir -p $(BUILD)/ros_log
	@$(call netns,make --no-print-directory _test_inner)

_test_inner:
	$(ROS_ENV) $(PY) -m pytest -p no:cacheprovider -q -ra $(PYTEST_ARGS) $(TESTS)

demo: setup
	@mkdir -p $(BUILD)/ros_log
	@$(call netns,make --no-print-directory _demo_inner)

_demo_inner:
	$(ROS_ENV) $(PY) tools/demo.py $(DEMO_ARGS)

bench: setup
	@$(call netns,make --no-print-directory _bench_inner)

_bench_inner:
	@for b in bench/bench_*.py; do echo "== $$b"; $(ROS_ENV) $(PY) $$b || exit 1; done

# issue 7's experiment: pretrained vs self-supervised-refreshed model on shifted-preset bags (CPU: ~7 min once the bags exist)
refresh-experiment: setup
	@mkdir -p $(BUILD)/ros_log
	@$(call netns,make --no-print-directory _refresh_experiment_inner)

_refresh_experiment_inner:
	$(ROS_ENV) $(PY) tools/refresh_experiment.py $(EXPERIMENT_ARGS)

clean:
	rm -rf $(BUILD)
