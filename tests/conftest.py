from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from corral import procs  # noqa: E402

from harness import Cluster  # noqa: E402


@pytest.fixture(scope="session")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    d = tmp_path_factory.mktemp("etcd")
    p = procs.start_etcd(d / "data", d / "logs")
    try:
        yield p.info["endpoint"]
    finally:
        p.stop()


@pytest.fixture
def cluster(etcd: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    if os.geteuid() != 0:
        pytest.skip("integration tests need root (cgroups, namespaces)")
    name = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:24]
    c = Cluster(etcd, tmp_path, name)
    try:
        yield c
    except BaseException:
        raise
    finally:
        failed = getattr(request.node, "rep_call", None)
        if failed is not None and failed.failed:
            print(c.dump_logs())
        c.stop()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    rep = yield
    setattr(item, "rep_" + rep.when, rep)
    return rep
