# corral — build, test and run targets. `make test` sets up everything on a fresh Debian
# machine as root (system packages, dockerd, venv) and runs the whole suite.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: test up proto proto-check lint bench system deps clean

test: deps
	$(PY) -m pytest -q -p no:cacheprovider tests

up: deps
	$(VENV)/bin/corral dev --demo

deps: system $(STAMP)

system:
	bash deploy/system-deps.sh

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

proto: $(STAMP)
	$(PY) -m corral.protogen proto

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy scheduler_core client corral master nodelet

bench: deps
	$(PY) bench/e2e.py --quick
	$(PY) bench/failover.py --quick
	$(PY) bench/chaos.py --quick
	$(PY) bench/placement.py --quick
	$(PY) bench/docker_start.py --quick
	$(PY) bench/cron_lateness.py --quick
	$(PY) bench/throughput.py --quick

clean:
	rm -rf $(VENV) .corral-dev
