# corral — build, test and run targets. `make test` sets up everything on a fresh Debian
# machine as root (system packages, dockerd, venv) and runs the whole suite.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: test test-deploy up lab lab-down proto proto-check lint bench system deps clean

test: deps
	$(PY) -m pytest -q -p no:cacheprovider tests

up: deps
	$(VENV)/bin/corral dev --demo

# A lab cluster: 4 network-namespace hosts (deploy/lab) deployed by the Ansible playbooks
# (deploy/ansible/site.yml); writes .corral-lab/env (`source .corral-lab/env`).
LAB_DIR ?= .corral-lab
lab: deps
	$(PY) deploy/lab/lab.py --dir $(LAB_DIR) up --hosts 4
	cd deploy/ansible && $(abspath $(VENV))/bin/ansible-playbook -i $(abspath $(LAB_DIR))/hosts.ini site.yml
	@echo "lab cluster up: source $(LAB_DIR)/env  then  corral node list"

lab-down:
	test ! -x $(PY) || $(PY) deploy/lab/lab.py --dir $(LAB_DIR) down
	test -x $(PY) || python3 deploy/lab/lab.py --dir $(LAB_DIR) down

# the multi-host suite alone (it also runs in `make test`)
test-deploy: deps
	$(PY) -m pytest -q -p no:cacheprovider tests/deploy

deps: system $(STAMP)

system:
	bash deploy/system-deps.sh

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,deploy]'
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
