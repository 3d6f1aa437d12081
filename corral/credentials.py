"""Secrets for the long-running parts (the bootstrap token of a master, a nodelet's node
token) come from a file or the environment, never from the command line, where every
local account reads them with `ps`. A file must not be readable by group or others, as
ssh insists for its keys.
"""

from __future__ import annotations

import argparse
import os
import stat
from pathlib import Path


class CredentialError(Exception):
    """A credential file is missing, unreadable, empty or readable by others."""


def read_secret_file(path: str, what: str) -> str:
    p = Path(path)
    try:
        st = p.stat()
        text = p.read_text().strip()
    except OSError as e:
        raise CredentialError(f"{what}: cannot read {path}: {e.strerror}") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise CredentialError(f"{what}: {path} is readable by others (mode {stat.S_IMODE(st.st_mode):04o}); chmod 600 it")
    if not text:
        raise CredentialError(f"{what}: {path} is empty")
    return text


def write_secret_file(path: Path, secret: str) -> None:
    """Write a secret readable by its owner only (created with that mode: no window)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")
    os.chmod(path, 0o600)


def add_secret_arguments(p: argparse.ArgumentParser, name: str, env: str, help_text: str) -> None:
    """`--NAME-file FILE` (env ENV_FILE) and the env variable ENV itself; a plain
    `--NAME VALUE` is refused with a sentence saying why and what to use."""
    p.add_argument(f"--{name}-file", dest=f"{name.replace('-', '_')}_file", default=os.environ.get(f"{env}_FILE", ""), metavar="FILE",
                   help=f"{help_text}: read from FILE (mode 0600; env {env}_FILE), or set {env}")
    p.add_argument(f"--{name}", dest=f"{name.replace('-', '_')}_on_command_line", default=None, help=argparse.SUPPRESS)


def resolve_secret(p: argparse.ArgumentParser, args: argparse.Namespace, name: str, env: str) -> str:
    attr = name.replace("-", "_")
    if getattr(args, f"{attr}_on_command_line") is not None:
        p.error(f"--{name}: a secret on the command line is visible to every local user (ps); "
                f"use --{name}-file FILE (mode 0600) or the environment variable {env}")
    path = getattr(args, f"{attr}_file")
    if path:
        try:
            return read_secret_file(path, f"--{name}-file")
        except CredentialError as e:
            p.error(str(e))
    return os.environ.get(env, "")
