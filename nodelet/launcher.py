"""The privileged last mile of a process task: run as pid 1 of the task's new namespaces
(made by `unshare`, started by the process driver's wrapper), it sets up the task's view
of the machine, drops to the task's uid, parks until the nodelet says "go", and only then
applies anything of the task's (environment, working directory, script) at the final exec.

Why a Python file and not a shell: this part runs as root, and a shell would look up
commands through $PATH and read $ENV, $IFS and friends. This file is run as
`python -I -S launcher.py SPEC` with a fixed environment, imports only the standard
library, and reads the task's settings from SPEC, a root-only JSON file the nodelet wrote
into the task's directory (deleted once read: it may hold secret values).

What the task sees:
- the host's file tree read-only (a recursive read-only bind, `mount_setattr`), so it can
  write nowhere on the node's disks and cannot plant files for anyone else;
- its own tmpfs at /tmp, /var/tmp, /dev/shm and /run/lock (each at most `scratch` bytes,
  and charged to the task's memory cgroup), its HOME and default working directory;
- a fresh /proc of its own pid namespace (no other process on the node is visible);
- an empty read-only tmpfs over each path in `hide` (the nodelet's data directory);
- its own uid and gid with no supplementary groups, no capabilities (bounding and
  ambient sets cleared) and no_new_privs.
A task the cluster lets run as root (a permission an admin grants) is the node's root:
it keeps its capabilities and sees the host's files as they are, with its own /proc.

Standard library only, no imports of corral: the interpreter runs without site-packages.
"""

import ctypes
import json
import os
import sys

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
SYS_MOUNT_SETATTR = 442  # the same number on x86_64 and the generic table (arm64)
AT_FDCWD = -100
AT_RECURSIVE = 0x8000
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
SCRATCH_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# pid 1 of a namespace ignores signals it has no handler for: this init forwards SIGTERM
# and SIGINT to the script and exits with the script's status.
INIT = 'trap "kill -TERM \\$c 2>/dev/null" TERM INT; /bin/sh -c "$0" & c=$!; while :; do wait $c; r=$?; kill -0 $c 2>/dev/null || exit $r; done'

libc = ctypes.CDLL(None, use_errno=True)


class MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def fail(what: str, code: int = 125) -> None:
    os.write(2, f"corral: could not start the task: {what}\n".encode())
    os._exit(code)


def check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        fail(f"{what}: {os.strerror(err)}")


def mount(src: str, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    check(libc.mount(src.encode(), target.encode(), fstype.encode() if fstype else None, ctypes.c_ulong(flags),
                     data.encode() if data else None), f"mount {target}")


def read_only_everything() -> None:
    """Every mount the task can see becomes read-only and nosuid (one recursive call)."""
    attr = MountAttr(MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID, 0, 0, 0)
    ret = libc.syscall(SYS_MOUNT_SETATTR, AT_FDCWD, b"/", AT_RECURSIVE, ctypes.byref(attr), ctypes.sizeof(attr))
    if ret == 0:
        return
    if ctypes.get_errno() != 38:  # ENOSYS: a kernel before 5.12 — remount one by one below
        check(ret, "read-only root")
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    for mp in points:
        mp = mp.encode().decode("unicode_escape")
        if libc.mount(None, mp.encode(), None, ctypes.c_ulong(MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID), None) != 0:
            # a mount that refuses the plain flags keeps its own (nodev, noexec): try with them
            libc.mount(None, mp.encode(), None, ctypes.c_ulong(MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC), None)


def set_up_mounts(spec: dict) -> None:
    mount("none", "/", None, MS_REC | MS_PRIVATE)
    if spec["uid"] == 0:
        # root (a permission an admin granted) is the node's root anyway: it sees the host's
        # files as they are, with only a /proc of its own pid namespace
        mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        return
    read_only_everything()
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    for path in spec.get("hide", []):
        if os.path.isdir(path):
            mount("corral-hidden", path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=4k,mode=0555")
    opts = f"size={int(spec['scratch'])},mode=1777,uid={spec['uid']},gid={spec['gid']}"
    for path in SCRATCH_DIRS:
        if os.path.isdir(path):
            mount("corral-scratch", path, "tmpfs", MS_NOSUID | MS_NODEV, opts)


def drop_privileges(uid: int, gid: int) -> None:
    """To uid/gid with no groups, no capabilities in any set, and no way to gain any."""
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    with open("/proc/sys/kernel/cap_last_cap") as f:
        last = int(f.read())
    for cap in range(last + 1):
        check(libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0), f"dropping capability {cap}")
    check(libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "clearing ambient capabilities")
    check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    os.setresuid(uid, uid, uid)  # from root to another uid: permitted and effective sets empty


def wait_for_go() -> bool:
    """The nodelet writes "go" at the task's instant; end of file means "never start"."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = os.read(0, 16)
        if not chunk:
            return False
        data += chunk
    return data == b"go\n"


def main() -> None:
    path = sys.argv[1]
    with open(path) as f:
        spec = json.load(f)
    os.unlink(path)  # it may hold secret values; nothing else needs it
    uid, gid = int(spec["uid"]), int(spec["gid"])
    set_up_mounts(spec)
    os.chdir("/")
    if uid != 0:
        drop_privileges(uid, gid)
    if not wait_for_go():
        os._exit(0)
    # from here on, the task's own settings: applied as the task's user, never before
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    env = {"PATH": BASE_PATH, "HOME": "/tmp", **spec["env"]}
    cwd = spec.get("cwd") or "/tmp"
    try:
        os.chdir(cwd)
    except OSError as e:
        fail(f"working_dir: cannot enter {cwd}: {e.strerror}", 126)
    try:
        os.execve("/bin/sh", ["/bin/sh", "-c", INIT, spec["script"]], env)
    except OSError as e:
        fail(f"/bin/sh: {e.strerror}", 127)


if __name__ == "__main__":
    main()
