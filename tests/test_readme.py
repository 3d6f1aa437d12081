"""The README runs as written: its command blocks, in order, against the cluster its
quickstart starts.

The quickstart, the tour (templates and Docker included), the SDK and the security
sections are run; a block there runs unless a `<!-- doctest: … -->` comment on the line
before it says otherwise:

- `skip: WHY` — not run (the reason is required);
- `background until "TEXT"` — started in the background (`make up` keeps running), the
  next block waits until its output shows TEXT; it is stopped by SIGTERM at the end;
- `needs docker` — run when a Docker engine answers (always, with CORRAL_REQUIRE_DOCKER=1);
- `output contains "TEXT"` — and its output must show TEXT.

The shell blocks run one after the other in one bash, as a reader would paste them: a
block's variables, `source`d environment and directory carry over to the next. The
directory is a fresh one holding the repository's files (links to them), so `make up`,
`.corral-dev/env` and `.venv` are where the README says; the only change from a reader's
machine is CORRAL_DEV_PORT, a free port instead of 7070. A command that fails fails the
test with the block's line and its output (an ERR trap reports each failed command,
also where the block goes on).
"""

from __future__ import annotations

import os
import queue
import random
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
# the sections whose blocks run: by their "##" title, or "###" for Security (and below it)
RUN_H2 = ("Quickstart", "A five-minute tour of the CLI", "The SDK")
RUN_H3 = ("Security",)
MARKER = re.compile(r"<!--\s*doctest:\s*(.*?)\s*-->")


@dataclass
class Block:
    line: int  # of the opening fence, 1-based
    lang: str
    code: str
    headings: list[str]  # by level: [_, "#", "##", "###", "####"]
    marker: str = ""
    checks: list[str] = field(default_factory=list)

    @property
    def runs(self) -> bool:
        h2, h3 = self.headings[2], self.headings[3]
        return self.lang in ("sh", "python") and (h2 in RUN_H2 or h3 in RUN_H3)

    def where(self) -> str:
        return f"README.md:{self.line} ({' / '.join(h for h in self.headings[2:] if h)})"


def parse(text: str) -> list[Block]:
    blocks: list[Block] = []
    headings = ["", "", "", "", ""]
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        m = re.match(r"(#{1,4}) (.*)", line)
        if m:
            level = len(m.group(1))
            headings = headings[:level] + [m.group(2).strip()] + [""] * (4 - level)
        elif line.startswith("```"):
            lang = line[3:].strip()
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            prev = next((lines[k] for k in range(i - 1, -1, -1) if lines[k].strip()), "")
            mk = MARKER.fullmatch(prev.strip())
            b = Block(i + 1, lang, "\n".join(lines[i + 1:j]) + "\n", headings[:5], mk.group(1) if mk else "")
            blocks.append(b)
            i = j
        i += 1
    return blocks


def _marker_kind(b: Block) -> tuple[str, str]:
    """(kind, argument) of a block's marker; a marker this file does not know fails."""
    if not b.marker:
        return "run", ""
    if m := re.fullmatch(r"skip:\s*(\S.*)", b.marker):
        return "skip", m.group(1)
    if m := re.fullmatch(r'background until "(.+)"', b.marker):
        return "background", m.group(1)
    if b.marker == "needs docker":
        return "docker", ""
    if m := re.fullmatch(r'output contains "(.+)"', b.marker):
        return "contains", m.group(1)
    raise AssertionError(f"{b.where()}: unknown doctest marker {b.marker!r}")


def test_readme_blocks_and_markers_parse() -> None:
    """Every marker is one this test knows, every skip says why, and the sections it runs
    hold the blocks they should (so a renamed heading cannot silently run nothing)."""
    blocks = parse(README.read_text())
    run = [b for b in blocks if b.runs]
    for b in blocks:
        _marker_kind(b)
        if b.marker and not b.runs:
            raise AssertionError(f"{b.where()}: a doctest marker outside the sections that run")
    sections = {b.headings[2] for b in run} | {b.headings[3] for b in run if b.headings[3] in RUN_H3}
    assert set(RUN_H2) | set(RUN_H3) <= sections, f"sections without a block that runs: {set(RUN_H2) | set(RUN_H3) - sections}"
    assert sum(1 for b in run if _marker_kind(b)[0] != "skip") >= 10
    assert any(b.lang == "python" for b in run)


def _free_ports(n: int) -> int:
    """A first port with the n-1 after it free too (corral dev: gRPC, HTTP, nodelet metrics)."""
    for _ in range(200):
        base = random.randint(20000, 60000)
        try:
            socks = []
            for p in range(base, base + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free ports")


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=5).ping()
        return True
    except Exception:
        return False


class Shell:
    """One bash, fed block after block; each block's output and failed commands."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            ["bash", "--noprofile", "--norc"], cwd=cwd, env=env, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.cwd = cwd
        self.n = 0
        self.send("trap 'echo \"__DOCTEST_FAILED rc=$? line=$LINENO: $BASH_COMMAND\"' ERR")
        self.wait_done(30)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\necho \"__DOCTEST_DONE $?\"\n")
        self.proc.stdin.flush()

    def wait_done(self, timeout: float) -> str:
        out: list[str] = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError("timed out; output so far:\n" + "".join(out)) from None
            if line.startswith("__DOCTEST_DONE"):
                return "".join(out)
            out.append(line)

    def run(self, b: Block, timeout: float = 240) -> str:
        """The block, sourced (stdin from /dev/null, so nothing in it eats the rest)."""
        self.n += 1
        if b.lang == "python":
            path = self.cwd / f".doctest-{self.n}.py"
            path.write_text(b.code)
            self.send(f"python {path.name} < /dev/null")
        else:
            path = self.cwd / f".doctest-{self.n}.sh"
            path.write_text(b.code)
            self.send(f"source {path.name} < /dev/null")
        return self.wait_done(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(10)


def _workdir(tmp: Path) -> Path:
    """A directory that looks like a clone to the README's commands: links to the
    repository's files (the venv included), nothing of a running cluster."""
    d = tmp / "clone"
    d.mkdir()
    for entry in ROOT.iterdir():
        if entry.name in (".corral-dev", ".corral-lab", ".git") or entry.name.startswith(".doctest"):
            continue
        (d / entry.name).symlink_to(entry)
    return d


@pytest.mark.timeout(900)
def test_readme_runs_as_written(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the README's cluster needs root (cgroups, namespaces)")
    blocks = [b for b in parse(README.read_text()) if b.runs]
    cwd = _workdir(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CORRAL_", "VIRTUAL_ENV"))}
    env["PATH"] = ":".join(p for p in env.get("PATH", "").split(":") if ".venv" not in p)
    env["CORRAL_DEV_PORT"] = str(_free_ports(3))
    if os.environ.get("CORRAL_REQUIRE_DOCKER"):
        env["CORRAL_REQUIRE_DOCKER"] = os.environ["CORRAL_REQUIRE_DOCKER"]
    docker_ok = _docker_answers()
    if not docker_ok and os.environ.get("CORRAL_REQUIRE_DOCKER") == "1":
        pytest.fail("Docker is required (CORRAL_REQUIRE_DOCKER=1) but the engine does not answer")
    made_srv = not Path("/srv/jobs").exists()
    background: list[tuple[subprocess.Popen[bytes], Path]] = []
    shell: Shell | None = None
    ran: list[str] = []
    try:
        for b in blocks:
            kind, arg = _marker_kind(b)
            if kind == "skip" or (kind == "docker" and not docker_ok):
                continue
            if kind == "background":
                log = tmp_path / f"background-{b.line}.log"
                with open(log, "wb") as out:
                    p = subprocess.Popen(["bash", "-c", b.code], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
                background.append((p, log))
                deadline = time.monotonic() + 600
                while arg not in log.read_text(errors="replace"):
                    assert p.poll() is None, f"{b.where()}: exited {p.returncode} before {arg!r}:\n{log.read_text()[-4000:]}"
                    assert time.monotonic() < deadline, f"{b.where()}: no {arg!r} in 600 s:\n{log.read_text()[-4000:]}"
                    time.sleep(0.5)
                ran.append(b.where())
                continue
            if shell is None:
                shell = Shell(cwd, env)
            out = shell.run(b)
            print(f"=== {b.where()}\n{out}")  # shown when the test fails
            failed = [ln for ln in out.splitlines() if ln.startswith("__DOCTEST_FAILED")]
            assert not failed, f"{b.where()}: {failed[0]}\n--- block ---\n{b.code}--- output ---\n{out[-6000:]}"
            assert "Traceback" not in out, f"{b.where()}: a traceback\n{out[-6000:]}"
            if kind == "contains":
                assert arg in out, f"{b.where()}: output lacks {arg!r}:\n{out[-6000:]}"
            ran.append(b.where())
        assert len(ran) >= 10, ran
    finally:
        if shell is not None:
            shell.close()
        for p, _log in background:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(60)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait(10)
        if made_srv:
            shutil.rmtree("/srv/jobs", ignore_errors=True)
    # `make up` stops everything it started on SIGTERM: nothing runs from the clone's files
    deadline = time.monotonic() + 60
    while (leftover := subprocess.run(["pgrep", "-f", str(cwd)], capture_output=True, text=True).stdout.split()) \
            and time.monotonic() < deadline:
        time.sleep(0.5)
    for pid in leftover:  # do not leave them to the next test
        os.kill(int(pid), signal.SIGKILL)
    assert not leftover, f"processes of the README's cluster still running 60 s after SIGTERM: {leftover}"
