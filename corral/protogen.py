"""Generate the Python code for proto/corral/v1/*.proto (`make proto`).

`python -m corral.protogen OUT_ROOT` writes `OUT_ROOT/corral/v1/*_pb2.py`, `*_pb2_grpc.py`
and `*.pyi`. The test suite generates into a temporary folder and compares with the
committed files, so a proto change without regeneration fails CI.
"""

from __future__ import annotations

import sys
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent.parent / "proto"


def generate(out_root: Path) -> list[Path]:
    import grpc_tools
    from grpc_tools import protoc

    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / "corral" / "v1").glob("*.proto"))
    (out_root / "corral" / "v1").mkdir(parents=True, exist_ok=True)
    include = str(Path(grpc_tools.__file__).parent / "_proto")
    rc = protoc.main([
        "grpc_tools.protoc", f"-I{PROTO_ROOT}", f"-I{include}",
        f"--python_out={out_root}", f"--pyi_out={out_root}", f"--grpc_python_out={out_root}", *protos,
    ])
    if rc != 0:
        raise RuntimeError(f"protoc failed with {rc}")
    return sorted(p for p in (out_root / "corral" / "v1").iterdir() if p.suffix in (".py", ".pyi") and p.name != "__init__.py")


def main() -> int:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else PROTO_ROOT
    for p in generate(out):
        print(p)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
