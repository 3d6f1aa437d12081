"""A lab of K "hosts" on one machine: network namespaces on a bridge, each with its own
address and its own sshd, so the Ansible playbooks target them as they would real hosts
and the fault tests can cut real links.

    python deploy/lab/lab.py up --hosts 4 [--dir .corral-lab]   make them; print the inventory
    python deploy/lab/lab.py cut HOST | heal HOST                 take a host's link down / up
    python deploy/lab/lab.py netem HOST "delay 100ms loss 5%"     shape a host's link (tc netem)
    python deploy/lab/lab.py loss HOST 5                           drop 5% of its packets each way
    python deploy/lab/lab.py down [--dir .corral-lab]             remove all it made

What it makes, all named from the lab's name (default `clab`): a bridge `clab0` in the
machine's own namespace with 10.77.0.1/24 (the control host's address in the lab); per host
`clab-hN` a network namespace with loopback and `eth0` at 10.77.0.(10+N)/24, joined to the
bridge by a veth pair whose outer end is named `clab-hN` too; an sshd inside it listening
on that address only, with keys made for the lab (root may log in with the lab's key only).
Only these addresses and loopback are used. The hosts share the machine's file tree, so
each has a directory of its own, DIR/hosts/hN, that the inventory names as `corral_root`:
everything the playbooks install or keep for that host lives there.

`down` removes exactly what `up` recorded in DIR/lab.json (namespaces, links, the
processes running inside the namespaces, DIR itself), also after a failed `up`.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

LOSS_TAG = "corral-lab-loss"
SUBNET = "10.77.0"  # the default /24; a second lab (e.g. the tests') takes another


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=check, capture_output=True, text=True)


class Lab:
    def __init__(self, directory: Path, name: str = "clab", subnet: str = SUBNET) -> None:
        self.dir = directory.resolve()
        self.name = name
        self.subnet = subnet
        self.state_file = self.dir / "lab.json"

    @property
    def control(self) -> str:
        """The control host's address in the lab (on the bridge)."""
        return f"{self.subnet}.1"

    def host_addr(self, n: int) -> str:
        return f"{self.subnet}.{10 + n}"

    @property
    def bridge(self) -> str:
        return f"{self.name}0"

    def ns(self, n: int) -> str:
        return f"{self.name}-h{n}"

    def _record(self, state: dict[str, object]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(json.dumps(state, indent=1))

    def state(self) -> dict:  # type: ignore[type-arg]
        try:
            return json.loads(self.state_file.read_text())  # type: ignore[no-any-return]
        except (OSError, ValueError):
            return {"name": self.name, "hosts": [], "bridge": ""}

    # ---- up ----------------------------------------------------------------------------

    def up(self, count: int) -> dict:  # type: ignore[type-arg]
        if self.state_file.exists():
            raise SystemExit(f"lab: {self.state_file} exists: the lab is up (run `down` first)")
        state: dict = {"name": self.name, "subnet": self.subnet, "bridge": "", "hosts": []}  # type: ignore[type-arg]
        self._record(state)
        keys = self.dir / "keys"
        keys.mkdir(mode=0o700, exist_ok=True)
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "corral-lab", "-f", str(keys / "id_ed25519"))
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "corral-lab-host", "-f", str(keys / "host_ed25519"))
        shutil.copy(keys / "id_ed25519.pub", keys / "authorized_keys")
        (keys / "authorized_keys").chmod(0o600)
        sh("ip", "link", "add", self.bridge, "type", "bridge")
        state["bridge"] = self.bridge
        self._record(state)
        sh("ip", "addr", "add", f"{self.control}/24", "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")
        # Docker sets the FORWARD policy to DROP and bridged frames pass iptables
        # (br_netfilter): let the hosts reach each other across the lab's bridge
        if shutil.which("iptables"):
            sh("iptables", "-I", "FORWARD", "-i", self.bridge, "-o", self.bridge, "-j", "ACCEPT")
            state["forward_rule"] = True
            self._record(state)
        for n in range(1, count + 1):
            ns, addr = self.ns(n), self.host_addr(n)
            sh("ip", "netns", "add", ns)
            state["hosts"].append({"name": f"h{n}", "netns": ns, "address": addr, "veth": ns, "sshd_pid": 0})
            self._record(state)
            sh("ip", "link", "add", ns, "type", "veth", "peer", "name", "eth0", "netns", ns)
            sh("ip", "link", "set", ns, "master", self.bridge)
            sh("ip", "link", "set", ns, "up")
            for cmd in (["ip", "link", "set", "lo", "up"], ["ip", "addr", "add", f"{addr}/24", "dev", "eth0"],
                        ["ip", "link", "set", "eth0", "up"]):
                sh("ip", "netns", "exec", ns, *cmd)
            root = self.dir / "hosts" / f"h{n}"
            root.mkdir(parents=True, exist_ok=True)
            state["hosts"][-1]["sshd_pid"] = self._sshd(ns, addr, root, keys)
            self._record(state)
        self._wait_ssh(state)
        self._inventory(state)
        return state

    def _sshd(self, ns: str, addr: str, root: Path, keys: Path) -> int:
        config = root / "sshd_config"
        pidfile = root / "sshd.pid"
        config.write_text(
            f"ListenAddress {addr}\nPort 22\nHostKey {keys / 'host_ed25519'}\nPidFile {pidfile}\n"
            f"AuthorizedKeysFile {keys / 'authorized_keys'}\nPermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
            "Subsystem sftp internal-sftp\nLogLevel ERROR\n"
        )
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory
        # nsenter joins the network namespace only: `ip netns exec` would also remount /sys,
        # hiding the cgroup hierarchies the nodelets need from everything sshd starts
        sh("nsenter", f"--net=/run/netns/{ns}", "/usr/sbin/sshd", "-f", str(config), "-E", str(root / "sshd.log"))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                return int(pidfile.read_text())
            except (OSError, ValueError):
                time.sleep(0.05)
        raise SystemExit(f"lab: sshd in {ns} did not start; see {root / 'sshd.log'}")

    def ssh_args(self) -> list[str]:
        return ["-i", str(self.dir / "keys" / "id_ed25519"), "-o", "StrictHostKeyChecking=no",
                "-o", f"UserKnownHostsFile={self.dir / 'keys' / 'known_hosts'}", "-o", "BatchMode=yes",
                "-o", "ConnectTimeout=5"]

    def _wait_ssh(self, state: dict) -> None:  # type: ignore[type-arg]
        for h in state["hosts"]:
            deadline = time.monotonic() + 20
            while True:
                r = sh("ssh", *self.ssh_args(), f"root@{h['address']}", "true", check=False)
                if r.returncode == 0:
                    break
                if time.monotonic() > deadline:
                    raise SystemExit(f"lab: ssh to {h['name']} ({h['address']}) fails: {r.stderr.strip()}")
                time.sleep(0.2)

    def _inventory(self, state: dict) -> None:  # type: ignore[type-arg]
        """An Ansible inventory for deploy/ansible: the first three hosts run etcd and a
        master, nodelets run on the first host (beside a master) and on every host after
        the third. The hosts share this machine's PID 1, so members run under `corral
        supervise`; the control directory (CAs, admin env) is the lab's own directory."""
        hosts = [h["name"] for h in state["hosts"]]
        lines = ["[lab]"]
        for h in state["hosts"]:
            # the node id is the namespace's name: unique on the machine, as the node's
            # cgroups (shared by all labs) need
            lines.append(f"{h['name']} ansible_host={h['address']} corral_root={self.dir / 'hosts' / h['name']} "
                         f"corral_node_id={h['netns']}")
        lines += ["", "[etcd]", *hosts[:3], "", "[master]", *hosts[:3], "", "[nodelet]", *(hosts[:1] + hosts[3:])]
        lines += ["", "[lab:vars]", "ansible_user=root", "ansible_python_interpreter=/usr/bin/python3",
                  f"ansible_ssh_private_key_file={self.dir / 'keys' / 'id_ed25519'}",
                  f"ansible_ssh_common_args='-o StrictHostKeyChecking=no -o UserKnownHostsFile={self.dir / 'keys' / 'known_hosts'}'",
                  "corral_service_manager=supervise", "",
                  "[control]", f"localhost ansible_connection=local ansible_python_interpreter={sys.executable}", "",
                  "[all:vars]", f"corral_control_dir={self.dir}", f"lab_control_address={self.control}", ""]
        (self.dir / "hosts.ini").write_text("\n".join(lines))

    # ---- faults --------------------------------------------------------------------------

    def link(self, host: str, up: bool) -> None:
        h = self._host(host)
        sh("ip", "link", "set", h["veth"], "up" if up else "down")

    def netem(self, host: str, spec: str) -> None:
        """Delay, jitter or loss on a host's link with tc netem (traffic towards the host:
        the qdisc is on the bridge side of its veth); an empty spec removes it."""
        h = self._host(host)
        sh("tc", "qdisc", "del", "dev", h["veth"], "root", check=False)
        if spec:
            r = sh("tc", "qdisc", "add", "dev", h["veth"], "root", "netem", *spec.split(), check=False)
            if r.returncode != 0:
                hint = " (this kernel has no sch_netem; `loss` drops packets without it)" if "unknown" in r.stderr else ""
                raise SystemExit(f"lab: tc netem {spec!r} on {host}: {r.stderr.strip()}{hint}")

    def loss(self, host: str, percent: float) -> None:
        """Drop `percent`% of the packets on a host's link, each way, chosen at random: iptables
        rules in the host's namespace (works on kernels without sch_netem); 0 removes them."""
        h = self._host(host)
        ns = ["ip", "netns", "exec", h["netns"], "iptables"]
        for line in sh(*ns, "-S", check=False).stdout.splitlines():
            if LOSS_TAG in line and line.startswith("-A "):
                sh(*ns, "-D", *shlex.split(line)[1:], check=False)
        if percent > 0:
            for chain, way in (("INPUT", "-i"), ("OUTPUT", "-o")):
                sh(*ns, "-I", chain, way, "eth0", "-m", "statistic", "--mode", "random", "--probability",
                   f"{percent / 100:.4f}", "-m", "comment", "--comment", LOSS_TAG, "-j", "DROP")

    def _host(self, name: str) -> dict:  # type: ignore[type-arg]
        for h in self.state()["hosts"]:
            if name in (h["name"], h["address"], h["netns"]):
                return h  # type: ignore[no-any-return]
        raise SystemExit(f"lab: no host {name!r}")

    # ---- down ------------------------------------------------------------------------------

    def down(self) -> None:
        state = self.state()
        for h in state["hosts"]:
            pids = sh("ip", "netns", "pids", h["netns"], check=False).stdout.split()
            for sig in (signal.SIGTERM, signal.SIGKILL):
                for pid in pids:
                    try:
                        os.kill(int(pid), sig)
                    except (ProcessLookupError, ValueError):
                        pass
                deadline = time.monotonic() + 5
                while sig == signal.SIGTERM and time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
                    time.sleep(0.1)
            sh("ip", "link", "del", h["veth"], check=False)
            sh("ip", "netns", "del", h["netns"], check=False)
        if state.get("forward_rule"):
            sh("iptables", "-D", "FORWARD", "-i", state["bridge"], "-o", state["bridge"], "-j", "ACCEPT", check=False)
        if state.get("bridge"):
            sh("ip", "link", "del", state["bridge"], check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", type=Path, default=Path(os.environ.get("CORRAL_LAB_DIR", ".corral-lab")))
    p.add_argument("--name", default="clab", help="prefix of every namespace and link the lab makes")
    p.add_argument("--subnet", default=SUBNET, help="the lab's /24, as its first three octets (default %(default)s)")
    sub = p.add_subparsers(dest="cmd", required=True)
    u = sub.add_parser("up")
    u.add_argument("--hosts", type=int, default=4)
    sub.add_parser("down")
    for name in ("cut", "heal"):
        sub.add_parser(name).add_argument("host")
    n = sub.add_parser("netem", help="tc netem on a host's link")
    n.add_argument("host")
    n.add_argument("spec", nargs="?", default="", help='e.g. "delay 100ms loss 5%%"; empty removes it')
    ls = sub.add_parser("loss", help="drop a share of a host's packets each way (iptables; no sch_netem needed)")
    ls.add_argument("host")
    ls.add_argument("percent", type=float, help="e.g. 5; 0 removes it")
    args = p.parse_args(argv)
    lab = Lab(args.dir, args.name, args.subnet)
    if args.cmd == "up":
        try:
            state = lab.up(args.hosts)
        except BaseException:
            lab.down()
            raise
        for h in state["hosts"]:
            print(f"{h['name']} {h['address']} ({h['netns']})")
        print(f"inventory: {lab.dir / 'hosts.ini'}")
    elif args.cmd == "down":
        lab.down()
    elif args.cmd in ("cut", "heal"):
        lab.link(args.host, args.cmd == "heal")
    elif args.cmd == "loss":
        lab.loss(args.host, args.percent)
    else:
        lab.netem(args.host, args.spec)
    return 0


if __name__ == "__main__":
    sys.exit(main())
