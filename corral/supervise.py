"""`corral supervise`: keep one cluster member running on a host without systemd.

    corral supervise --pidfile /run/corral/master.pid --log /var/log/corral/master.log \\
        --env-file /etc/corral/master.env [--detach] -- corral master --etcd ...
    corral supervise --stop --pidfile /run/corral/master.pid

The member (a master, a nodelet, an etcd member: any command) runs as a child in a process
group of its own, its output appended to `--log`. When it exits it is started again after
a backoff (1 s, doubling to 30 s; back to 1 s once it has run a minute), and the log says
how it ended. SIGTERM (or `--stop`) stops the member with SIGTERM, then SIGKILL after
`--stop-timeout`, and ends the supervisor; the pid file holds the supervisor's pid while it
runs. Credentials come from `--env-file` (KEY=VALUE lines, which must not be readable by
group or others) or from files the member itself reads (`--token-file`), never from this
command line. Where PID 1 is systemd, use the units in deploy/ instead (deploy/README.md).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

BACKOFF_FIRST, BACKOFF_MAX, STEADY = 1.0, 30.0, 60.0


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines (blank lines and # comments skipped); refused if others may read it."""
    mode = path.stat().st_mode
    if mode & 0o077:
        raise SystemExit(f"corral supervise: --env-file {path}: mode {mode & 0o777:o} lets others read it; chmod 600 it")
    env = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise SystemExit(f"corral supervise: --env-file {path}, line {n}: expected KEY=VALUE")
        env[key.strip()] = value.strip()
    return env


def _log(log: Path, text: str) -> None:
    with open(log, "a") as f:
        f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')} corral supervise: {text}\n")


class Supervisor:
    def __init__(self, command: list[str], log: Path, env: dict[str, str], stop_timeout: float) -> None:
        self.command = command
        self.log = log
        self.env = env
        self.stop_timeout = stop_timeout
        self.child: subprocess.Popen[bytes] | None = None
        self.stopping = False

    def _start(self) -> None:
        with open(self.log, "ab") as out:
            self.child = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                          env=self.env, start_new_session=True)
        _log(self.log, f"started {self.command[0]} (pid {self.child.pid})")

    def stop(self, *_: object) -> None:
        self.stopping = True

    def _stop_child(self) -> None:
        child = self.child
        if child is None or child.poll() is not None:
            return
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(self.stop_timeout)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait(5)
        _log(self.log, f"stopped pid {child.pid} ({child.returncode})")

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        backoff = BACKOFF_FIRST
        self._start()
        began = time.monotonic()
        while not self.stopping:
            time.sleep(0.2)
            assert self.child is not None
            code = self.child.poll()
            if code is None:
                if time.monotonic() - began > STEADY:
                    backoff = BACKOFF_FIRST
                continue
            _log(self.log, f"pid {self.child.pid} exited ({code}); starting it again in {backoff:.0f}s")
            wake = time.monotonic() + backoff
            while not self.stopping and time.monotonic() < wake:
                time.sleep(0.2)
            if self.stopping:
                break
            backoff = min(backoff * 2, BACKOFF_MAX)
            self._start()
            began = time.monotonic()
        self._stop_child()
        return 0


def _running(pidfile: Path) -> int:
    """The supervisor's pid from the pid file if that process still runs, else 0."""
    try:
        pid = int(pidfile.read_text().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return 0


def stop(pidfile: Path, timeout: float) -> int:
    pid = _running(pidfile)
    if not pid:
        print(f"corral supervise: nothing runs under {pidfile}")
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout + 10
    while time.monotonic() < deadline:
        if not _running(pidfile):
            return 0
        time.sleep(0.1)
    print(f"corral supervise: pid {pid} did not stop within {timeout + 10:.0f}s", file=sys.stderr)
    return 1


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="corral supervise", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pidfile", required=True, type=Path, help="holds the supervisor's pid while it runs")
    p.add_argument("--log", type=Path, help="the member's output and the supervisor's own lines are appended here")
    p.add_argument("--env-file", type=Path, help="KEY=VALUE lines for the member's environment (mode 600)")
    p.add_argument("--detach", action="store_true", help="run in the background and return once it has started")
    p.add_argument("--stop", action="store_true", help="stop the supervisor (and its member) named by --pidfile")
    p.add_argument("--stop-timeout", type=float, default=10.0, help="seconds between SIGTERM and SIGKILL (default 10)")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- then the member's command line")
    args = p.parse_args(argv)
    if args.stop:
        return stop(args.pidfile, args.stop_timeout)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command or not args.log:
        p.error("give --log and, after --, the command to supervise")
    if _running(args.pidfile):
        print(f"corral supervise: already running (pid {_running(args.pidfile)}, {args.pidfile})", file=sys.stderr)
        return 1
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "LANG": "C.UTF-8"}
    if args.env_file:
        env.update(read_env_file(args.env_file))
    args.log.parent.mkdir(parents=True, exist_ok=True)
    args.pidfile.parent.mkdir(parents=True, exist_ok=True)
    if args.detach and os.fork() > 0:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not _running(args.pidfile):
            time.sleep(0.05)
        return 0 if _running(args.pidfile) else 1
    if args.detach:
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
    args.pidfile.write_text(f"{os.getpid()}\n")
    try:
        return Supervisor(command, args.log, env, args.stop_timeout).run()
    finally:
        if _running(args.pidfile) == os.getpid():
            args.pidfile.unlink(missing_ok=True)
