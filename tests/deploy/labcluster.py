"""The deployed lab as the multi-host tests drive it (see conftest.py)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from corral.client import Client
from corral.tls import TlsFiles

ROOT = Path(__file__).resolve().parents[2]
LAB = ROOT / "deploy" / "lab" / "lab.py"
ANSIBLE = ROOT / "deploy" / "ansible"
NAME = "ctest"
SUBNET = "10.78.0"


class LabCluster:
    """The deployed lab as the tests drive it: the CLI and SDK with the admin's mutual-TLS
    client files, the playbooks, and the lab's link faults."""

    def __init__(self, directory: Path, name: str = NAME, subnet: str = SUBNET) -> None:
        self.dir = directory
        self.name, self.subnet = name, subnet
        self.markers = directory / "markers"  # shared by all hosts (one file tree)
        self.env: dict[str, str] = {}
        self.hosts: dict[str, str] = {}  # host name → address

    # ---- set-up ----------------------------------------------------------------------------

    def lab(self, *args: str) -> None:
        r = subprocess.run([sys.executable, str(LAB), "--dir", str(self.dir), "--name", self.name, "--subnet", self.subnet, *args],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, f"lab.py {' '.join(args)}: {r.stdout}{r.stderr}"

    def ansible(self, playbook: str, *extra: str, timeout: float = 900) -> float:
        """Run a playbook against the lab; its output goes to DIR/ansible-PLAYBOOK.log. Seconds taken."""
        log = self.dir / f"ansible-{playbook.removesuffix('.yml')}.log"
        t0 = time.monotonic()
        with open(log, "a") as out:
            r = subprocess.run(
                [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(self.dir / "hosts.ini"), playbook, *extra],
                cwd=ANSIBLE, stdout=out, stderr=subprocess.STDOUT, timeout=timeout,
                env={**os.environ, "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1"},
            )
        took = time.monotonic() - t0
        if r.returncode != 0:
            tail = "\n".join(log.read_text().splitlines()[-60:])
            raise AssertionError(f"ansible-playbook {playbook} failed (exit {r.returncode}) after {took:.0f}s:\n{tail}")
        print(f"ansible-playbook {playbook} {' '.join(extra)}: {took:.1f}s")
        return took

    def load(self) -> None:
        for line in (self.dir / "env").read_text().splitlines():
            k, _, v = line.removeprefix("export ").partition("=")
            self.env[k] = shlex.split(v)[0] if v else ""
        state = json.loads((self.dir / "lab.json").read_text())
        self.hosts = {h["name"]: h["address"] for h in state["hosts"]}
        self.markers.mkdir(exist_ok=True)
        self.markers.chmod(0o1777)

    # ---- driving it ------------------------------------------------------------------------

    def node_id(self, host: str) -> str:
        return f"{self.name}-{host}"

    def host_of(self, address: str) -> str:
        ip = address.rpartition(":")[0]
        return next(h for h, a in self.hosts.items() if a == ip)

    def cli(self, *args: str, check: bool = True, timeout: float = 90) -> subprocess.CompletedProcess[str]:
        r = subprocess.run([sys.executable, "-m", "corral", *args], capture_output=True, text=True, timeout=timeout,
                           env={**os.environ, **self.env})
        if check:
            assert r.returncode == 0, f"corral {' '.join(args)} → exit {r.returncode}\n{r.stdout}{r.stderr}"
        return r

    def cli_json(self, *args: str) -> Any:
        return json.loads(self.cli(*args, "-o", "json").stdout)

    def client(self, timeout: float = 30.0) -> Client:
        tls = TlsFiles(self.env["CORRAL_TLS_CA"], self.env["CORRAL_TLS_CERT"], self.env["CORRAL_TLS_KEY"])
        return Client(self.env["CORRAL_ADDR"], self.env["CORRAL_TOKEN"], timeout=timeout, tls=tls)

    def leader_host(self) -> str:
        with self.client() as c:
            return self.host_of(c.cluster_status().leader.address)  # type: ignore[attr-defined]

    def member_pid(self, host: str, kind: str) -> int:
        """The PID of a host's corral member (`master`, `nodelet`), from the process table."""
        root = str(self.dir / "hosts" / host)
        for p in psutil.process_iter(["cmdline"]):
            cmd = p.info["cmdline"] or []
            if len(cmd) > 2 and cmd[0].startswith(root) and kind in cmd[1:4] and "supervise" not in cmd:
                return int(p.pid)
        raise AssertionError(f"no {kind} process of {host} in the process table")

    def cut(self, host: str) -> None:
        self.lab("cut", host)

    def heal(self, host: str) -> None:
        self.lab("heal", host)

    def netem(self, host: str, spec: str) -> bool:
        """tc netem on a host's link; False where the kernel has no sch_netem."""
        r = subprocess.run([sys.executable, str(LAB), "--dir", str(self.dir), "--name", self.name, "netem", host, spec],
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0 and "no sch_netem" in r.stderr:
            return False
        assert r.returncode == 0, f"lab.py netem {host} {spec!r}: {r.stderr}"
        return True

    def loss(self, host: str, percent: float) -> None:
        self.lab("loss", host, str(percent))
