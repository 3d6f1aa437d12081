"""A tiny local image for tests and benchmarks: busybox-static as a root filesystem,
imported into Docker as `corral-test/busybox:1`. No registry is involved."""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
from typing import Any

TAG = "corral-test/busybox:1"


def rootfs_tar() -> bytes:
    """/bin/busybox plus a link per applet, /tmp, /etc/passwd with nobody, as a tar."""
    busybox = shutil.which("busybox") or "/bin/busybox"
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True).stdout.split()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d in ("bin", "tmp", "etc", "proc", "sys", "dev", "work"):
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o1777 if d in ("tmp", "work") else 0o755
            tar.addfile(info)
        tar.add(busybox, arcname="bin/busybox")
        for a in applets:
            if a == "busybox":
                continue
            info = tarfile.TarInfo(f"bin/{a}")
            info.type = tarfile.SYMTYPE
            info.linkname = "busybox"
            tar.addfile(info)
        for name, text in (
            ("etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"),
            ("etc/group", "root:x:0:\nnogroup:x:65534:\n"),
        ):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def ensure_image(client: Any = None, tag: str = TAG) -> str:
    """Import the image unless it is already there; returns its tag."""
    import docker
    from docker.errors import ImageNotFound

    c: Any = client or docker.from_env()
    try:
        c.images.get(tag)
        return tag
    except ImageNotFound:
        pass
    repo, _, version = tag.partition(":")
    c.api.import_image_from_data(rootfs_tar(), repository=repo, tag=version or "latest", changes=["ENV PATH=/bin", 'CMD ["/bin/sh"]'])
    return tag
