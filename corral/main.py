"""`corral`: one executable for the servers (`master`, `nodelet`, `dev`) and the CLI."""

from __future__ import annotations

import sys
from collections.abc import Callable


def _master(argv: list[str]) -> int:
    from corral.master.server import main

    return main(argv)


def _nodelet(argv: list[str]) -> int:
    from corral.nodelet.main import main

    return main(argv)


def _dev(argv: list[str]) -> int:
    from corral.dev import main

    return main(argv)


def _pki(argv: list[str]) -> int:
    from corral.pki import main

    return main(argv)


def _supervise(argv: list[str]) -> int:
    from corral.supervise import main

    return main(argv)


def _version(argv: list[str]) -> int:
    from corral import __version__

    print(f"corral {__version__}")
    return 0


def _completion(argv: list[str]) -> int:
    """Print the shell's completion script for `corral` (argcomplete)."""
    import argparse

    import argcomplete

    p = argparse.ArgumentParser(
        prog="corral completion",
        description="Print the script that completes corral's commands, flags and values in your shell.",
        epilog='Load it now with `eval "$(corral completion bash)"`; for every new shell, '
               "`corral completion bash > /etc/bash_completion.d/corral` (bash) or "
               "`corral completion zsh > \"${fpath[1]}/_corral\"` (zsh).",
    )
    p.add_argument("shell", choices=["bash", "zsh"], help="the shell to complete in")
    args = p.parse_args(argv)
    sys.stdout.write(argcomplete.shellcode(["corral"], shell=args.shell))
    return 0


SERVERS: dict[str, tuple[str, Callable[[list[str]], int]]] = {
    "master": ("run a master replica", _master),
    "nodelet": ("run the node agent", _nodelet),
    "dev": ("run etcd, masters and nodelets locally in one command (Ctrl-C stops all)", _dev),
    "pki": ("create the cluster's CA and issue master, nodelet, client and etcd certificates", _pki),
    "supervise": ("keep one member (master, nodelet, etcd) running on a host without systemd", _supervise),
    "version": ("print the version (also `corral --version`)", _version),
    "completion": ("print the bash or zsh completion script: eval \"$(corral completion bash)\"", _completion),
}


def main(argv: list[str] | None = None) -> int:
    from corral.client.cli import run

    return run(sys.argv[1:] if argv is None else argv, SERVERS)
