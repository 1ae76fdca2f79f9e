# Each target makes what it needs: a virtualenv in .venv (torch's CPU wheel first, so pip
# never pulls a multi-GB CUDA build) and, for the tests and benchmarks, Dynamo's own
# replay (ai-dynamo 1.6.1 from PyPI) in .peer-venv as the side-by-side reference.
PYTHON ?= python3
VENV ?= .venv
PEER_VENV ?= $(CURDIR)/.peer-venv
SHARED ?= $(CURDIR)/../shared
PY := $(VENV)/bin/python
export DYNOSIM_PEER_VENV := $(PEER_VENV)
export DYNOSIM_SHARED := $(SHARED)

.PHONY: install demo test test-all peer bench clean

# Sources of the native and Cython-compiled modules (setup.py): a change rebuilds them.
NATIVE_SRC := sim/_kvpool.c $(wildcard sim/*.py sim/*.pxd sim/engines/*.py sim/engines/*.pxd sim/workloads/*.py dynosim_gym/*.py dynosim_gym/*.pxd)

$(VENV)/.installed: pyproject.toml setup.py $(NATIVE_SRC)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev,ray]'
	touch $@

install: $(VENV)/.installed

demo: install
	mkdir -p out
	$(VENV)/bin/dynosim simulate --config envs_configs/demo.yaml --plot out/demo.png

# Dynamo's replay (with its planner's deps, for the planner parity tests) for parity tests and
# benchmarks; tests that need it skip without it.
peer:
	@if [ -x "$(SHARED)/peer/run_dynosim.sh" ]; then \
	  PEER_VENV=$(PEER_VENV) PEER_WITH_PLANNER=1 bash $(SHARED)/peer/run_dynosim.sh tests/data/peer_smoke.jsonl 1 round_robin >/dev/null 2>$(CURDIR)/.peer-install.log \
	    || echo "note: Dynamo peer not installed (see .peer-install.log); parity tests will skip"; \
	else echo "note: $(SHARED)/peer not found; parity tests will skip"; fi

# --dist loadgroup: the Ray tests (xdist_group "ray") run one after another in one worker.
test: install peer
	$(PY) -m pytest -q -n 2 --dist loadgroup

test-all: install peer
	$(PY) -m pytest -q -n 2 --dist loadgroup -m "expensive or not expensive"

bench: install peer
	$(PY) bench/peer_side_by_side.py --repeats 3

clean:
	rm -rf $(VENV) $(PEER_VENV) out .pytest_cache .hypothesis
