"""Pure pieces: unit parsing, the generated CLI covering every RPC, spec files, protos."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

import pytest

from corral import units
from corral.client import cli, specfile
from corral.client.sdk import AsyncClient, Client, rpc_methods
from corral.errors import InvalidArgument
from corral.protogen import PROTO_ROOT, generate


def test_parse_units() -> None:
    assert units.parse_cpu("0.5") == 500
    assert units.parse_cpu("500m") == 500
    assert units.parse_cpu("2") == 2000
    assert units.parse_memory("64Mi") == 64 * 1024**2
    assert units.parse_memory("1G") == 10**9
    assert units.parse_memory("4096") == 4096
    assert units.parse_duration("30s") == 30
    assert units.parse_duration("1h30m") == 5400
    assert units.parse_duration("250ms") == 0.25
    assert units.parse_duration("2.5") == 2.5
    assert units.parse_time("2026-01-02T03:04:05Z").isoformat() == "2026-01-02T03:04:05+00:00"
    for bad, fn in (("lots", units.parse_memory), ("soon", units.parse_duration), ("1h30", units.parse_duration), ("2026-01-02T03:04:05", units.parse_time), ("x", units.parse_time)):
        with pytest.raises(ValueError):
            fn(bad)
    assert units.format_memory(64 * 1024**2) == "64Mi"
    assert units.format_cpu(1500) == "1.5"


def test_every_rpc_has_a_cli_command_and_sdk_method() -> None:
    parser = cli.build_parser()
    methods = rpc_methods()
    # every RPC but the client-streaming SubmitTaskStream (the SDK's submit_many, the CLI's
    # `task submit --from-file`)
    assert len(methods) == 32
    assert callable(Client.submit_many) and callable(AsyncClient.submit_many)
    seen = set()
    for m in methods:
        group, verb = cli.command_of(m)
        seen.add((group, verb))
        # argparse resolves the command: `corral <group> <verb> --help` exits 0 after printing help
        with pytest.raises(SystemExit) as info:
            parser.parse_args([group, verb, "--help"])
        assert info.value.code == 0
        assert callable(getattr(Client, m.snake)) and callable(getattr(AsyncClient, m.snake))
    assert {("task", "submit"), ("task", "get"), ("task", "list"), ("task", "stop"), ("task", "logs"), ("task", "retry"),
            ("template", "create"), ("template", "get"), ("template", "update"), ("template", "delete"), ("template", "list"),
            ("node", "list"), ("node", "cordon"), ("node", "delete"), ("cluster", "status"),
            ("template", "pause"), ("template", "resume"), ("template", "next"), ("template", "history"),
            ("user", "create"), ("user", "list"), ("user", "delete"), ("token", "create"), ("token", "revoke"),
            ("token", "list"), ("audit", "list")} <= seen
    for m in ("submit_task", "get_task", "stop_task", "list_tasks", "create_template", "wait_task"):
        assert hasattr(Client, m)


def test_spec_file_accepts_human_units() -> None:
    t = specfile.parse_template("name: backup\nrun_script: echo hi\ncpu_request: 0.5\nmem_limit: 64Mi\ntimeout: 30s\nmem_request: 32Mi\n")
    assert (t.cpu_request, t.mem_request, t.mem_limit, t.timeout.seconds) == (500, 32 * 1024**2, 64 * 1024**2, 30)
    t = specfile.parse_template('{"name": "j", "run_script": "true", "cpu_request": "250m", "timeout": "1m"}')
    assert (t.cpu_request, t.timeout.seconds) == (250, 60)
    with pytest.raises(InvalidArgument, match="mem_request"):
        specfile.parse_template("name: x\nmem_request: lots\n")
    with pytest.raises(InvalidArgument):
        specfile.parse_template("name: x\nno_such_field: 1\n")
    with pytest.raises(InvalidArgument):
        specfile.parse_template("- a list")


def test_committed_generated_code_matches_the_protos(tmp_path: Path) -> None:
    fresh = generate(tmp_path)
    assert fresh
    committed = PROTO_ROOT / "corral" / "v1"
    for f in fresh:
        assert (committed / f.name).exists(), f"{f.name} is not committed; run `make proto`"
        assert filecmp.cmp(f, committed / f.name, shallow=False), f"{f.name} differs from a fresh generation; run `make proto`"


def test_cli_help_is_readable() -> None:
    r = subprocess.run([sys.executable, "-m", "corral", "task", "submit", "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0
    for flag in ("--command", "--cpu", "--memory", "--timeout", "--at", "--in", "--template", "--wait", "-o"):
        assert flag in r.stdout
