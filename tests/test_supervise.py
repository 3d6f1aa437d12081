"""`corral supervise` keeps a member running: a member killed with -9 is started again, and
--stop ends both the supervisor and its member (checked in the process table)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from harness import wait_for

MEMBER = "import os, time, pathlib; pathlib.Path({out!r}).write_text(str(os.getpid())); time.sleep(3600)"


def _corral(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "corral", "supervise", *args], capture_output=True, text=True, timeout=60)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_a_member_that_dies_is_started_again_and_stop_ends_both(tmp_path: Path) -> None:
    pidfile, log, out, env = tmp_path / "m.pid", tmp_path / "m.log", tmp_path / "member-pid", tmp_path / "m.env"
    env.write_text("SECRET=from-the-file\n")
    env.chmod(0o644)
    refused = _corral("--pidfile", str(pidfile), "--log", str(log), "--env-file", str(env), "--", "true")
    assert refused.returncode != 0 and "chmod 600" in refused.stderr
    env.chmod(0o600)
    started = _corral("--pidfile", str(pidfile), "--log", str(log), "--env-file", str(env), "--detach", "--",
                      sys.executable, "-c", MEMBER.format(out=str(out)))
    assert started.returncode == 0, started.stderr
    supervisor = int(pidfile.read_text())
    first = wait_for(lambda: out.exists() and out.read_text() and int(out.read_text()), 10, what="the member")
    try:
        environ = Path(f"/proc/{first}/environ").read_bytes().split(b"\0")
        assert b"SECRET=from-the-file" in environ
        assert "from-the-file" not in Path(f"/proc/{supervisor}/cmdline").read_text()
        os.kill(first, 9)
        second = wait_for(lambda: (p := int(out.read_text() or 0)) != first and p, 15, what="the member started again")
        assert _alive(second) and _alive(supervisor)
        assert "exited (-9)" in log.read_text()
    finally:
        stopped = _corral("--stop", "--pidfile", str(pidfile))
    assert stopped.returncode == 0, stopped.stderr
    wait_for(lambda: not _alive(supervisor) and not _alive(second), 15, what="supervisor and member gone")
    assert not pidfile.exists()
