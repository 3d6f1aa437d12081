"""Build the wheelhouse the hosts install corral from: the corral wheel and a wheel of
every dependency, built on the control host (the hosts need no package index).

    python wheelhouse.py SRC OUT        prints {"release": ..., "changed": ...}

The release id is a digest of the wheels' names and of the corral wheel's RECORD (the
hashes of every file in it), not of the files' bytes, which carry build timestamps: the
same source gives the same release, so a second run upgrades nothing.
"""

import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path


def release_id(wheels: Path) -> str:
    h = hashlib.sha256()
    for w in sorted(wheels.glob("*.whl")):
        h.update(w.name.encode() + b"\n")
        if w.name.startswith("corral-"):
            with zipfile.ZipFile(w) as z:
                record = next(n for n in z.namelist() if n.endswith(".dist-info/RECORD"))
                h.update(z.read(record))
    return h.hexdigest()[:16]


def main(src: str, out: str) -> int:
    out_dir = Path(out)
    new = out_dir / "wheels.new"
    shutil.rmtree(new, ignore_errors=True)
    new.mkdir(parents=True)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check", "-w", str(new), src],
                   check=True, stdout=subprocess.DEVNULL)
    release = release_id(new)
    current = out_dir / "RELEASE"
    if current.exists() and current.read_text().strip() == release and (out_dir / "wheelhouse.tar").exists():
        shutil.rmtree(new)
        print(json.dumps({"release": release, "changed": False}))
        return 0
    (new / "RELEASE").write_text(release + "\n")
    with tarfile.open(out_dir / "wheelhouse.tar.tmp", "w") as tar:
        tar.add(new, arcname="wheelhouse")
    (out_dir / "wheelhouse.tar.tmp").replace(out_dir / "wheelhouse.tar")
    current.write_text(release + "\n")
    shutil.rmtree(new)
    print(json.dumps({"release": release, "changed": True}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
