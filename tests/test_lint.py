"""The style gates of the project: ruff on everything, mypy on the typed packages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_clean() -> None:
    r = subprocess.run([sys.executable, "-m", "ruff", "check", "."], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr


def test_mypy_clean_on_typed_packages() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "mypy", "scheduler_core", "client", "corral", "master", "nodelet"], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_playbooks_parse() -> None:
    """Every playbook in deploy/ansible parses against the example inventory (the lab suite
    runs them; this catches a broken one in seconds)."""
    playbooks = sorted(p.name for p in (ROOT / "deploy" / "ansible").glob("*.yml"))
    assert {"site.yml", "upgrade.yml", "rotate-certs.yml", "backup.yml", "restore.yml", "remove-nodelet.yml"} <= set(playbooks)
    r = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", "inventory.example.ini", "--syntax-check",
         "-e", "target=w1", "-e", "backup=/dev/null", *playbooks],
        cwd=ROOT / "deploy" / "ansible", capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
