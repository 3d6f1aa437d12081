"""The multi-host suite's cluster: a lab of four network-namespace hosts (deploy/lab) deployed
by the Ansible playbooks (deploy/ansible/site.yml), exactly as an operator would deploy real
hosts. One lab serves the whole module; it is torn down by the names it recorded, also when a
test or the deploy fails.

The lab takes its own name, subnet and directory, so it never touches a `make lab` that runs
beside it. CORRAL_TEST_LAB=DIR runs the tests against a lab that is up already (`make lab`)
and leaves it up."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from labcluster import LAB, NAME, SUBNET, LabCluster


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).is_relative_to(Path(__file__).parent):
            item.add_marker(pytest.mark.deploy)


# module scope: the lab goes down once its tests are done, not after the whole suite (its
# eleven processes would otherwise share the CPUs with every later test)
@pytest.fixture(scope="module")
def lab() -> Iterator[LabCluster]:
    if os.geteuid() != 0:
        pytest.skip("the lab needs root (network namespaces, sshd, cgroups)")
    for tool in ("ip", "sshd", "ssh", "tc", "nsenter"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            pytest.fail(f"the lab needs {tool} (deploy/system-deps.sh installs it)")
    reuse = os.environ.get("CORRAL_TEST_LAB", "")
    if reuse:  # a lab that is up already (`make lab`), for working on these tests: kept afterwards
        state = json.loads((Path(reuse) / "lab.json").read_text())
        lc = LabCluster(Path(reuse).resolve(), state["name"], state.get("subnet", SUBNET))
        lc.load()
        yield lc
        return
    base = Path(tempfile.mkdtemp(prefix="corral-lab-test-"))
    lc = LabCluster(base / "lab")
    try:
        t0 = time.monotonic()
        lc.lab("up", "--hosts", "4")
        lc.ansible("site.yml")
        print(f"lab deployed in {time.monotonic() - t0:.1f}s")
        lc.load()
        yield lc
    finally:
        for h in ("h1", "h2", "h3", "h4"):
            subprocess.run([sys.executable, str(LAB), "--dir", str(lc.dir), "--name", NAME, "heal", h],
                           capture_output=True, timeout=30)
        subprocess.run([sys.executable, str(LAB), "--dir", str(lc.dir), "--name", NAME, "down"], capture_output=True, timeout=120)
        shutil.rmtree(base, ignore_errors=True)
