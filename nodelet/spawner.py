"""The process driver's resident spawner: one root process per nodelet that forks every
process task, so nothing of a task's is ever interpreted by a shell or looked up through a
$PATH while it has privileges, and no interpreter starts per task.

Why resident: a fresh `python` per task cost 30 ms of CPU (interpreter start and ctypes),
which at a hundred cron runs a second filled both cores; a fork of this warm process costs
well under a millisecond. It is started by the nodelet as `python -I -S spawner.py FD` with
a fixed environment and working directory "/", imports only the standard library, and
takes requests on the unix socket FD: one JSON message with the task's settings plus the
read end of the task's "go" pipe; it answers with the new wrapper's pid and a pidfd for it.
It exits when the nodelet closes the socket.

Slots: the spawner forks one resident *slot server* per slot of the node. A slot server
joins its slot's cgroups once, when the slot is made, and from then on forks the wrappers
of the tasks that run in that slot (the nodelet talks to it directly, over a socket the
spawner hands over): they are born inside the slot's cgroups and never join anything. Why: joining a cgroup (a write to `cgroup.procs` in each v1 hierarchy)
takes the kernel's cgroup locks, whose holders slow down when the CPUs are busy; it cost
0.4–1.9 s at p99 under load, per task. Limits are files of the slot, rewritten per task
(no join).

Each task is two processes forked from its slot's server:

- the wrapper W (root, in the node's namespaces, its own session, so it outlives a nodelet
  restart), in the slot's cgroups from birth: makes a new pid namespace for its child,
  copies the task's output into the log up to the cap (discarding the rest, so the task
  is never killed by the cap), and writes the exit code to a file. The nodelet finds it
  again by pid after a restart;
- the task's pid 1, P (dies with W): new mount, ipc, uts and (unless `network: host`)
  network namespaces; the host's file tree read-only and nosuid (`mount_setattr`,
  recursive), its own tmpfs at /tmp, /var/tmp, /dev/shm and /run/lock (at most `scratch`
  bytes each, charged to the task's memory cgroup), a fresh /proc, an empty read-only
  tmpfs over each path in `hide` (the nodelet's data directory); then the task's uid and
  gid with no groups, an empty bounding set, no ambient capabilities and no_new_privs. P
  waits for "go" as that user, and only then applies the task's environment, working
  directory and script, at its final exec of /bin/sh.

A task the cluster lets run as root (a permission an admin grants) is the node's root: it
keeps its capabilities and sees the host's files as they are, with its own /proc.
"""

import ctypes
import gc
import json
import os
import select
import signal
import socket
import sys
import time

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
SYS_MOUNT_SETATTR = 442  # the same number on x86_64 and the generic table (arm64)
AT_FDCWD = -100
AT_RECURSIVE = 0x8000
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
ENOSYS = 38
SCRATCH_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# pid 1 of a namespace ignores signals it has no handler for: this init forwards SIGTERM
# and SIGINT to the script and exits with the script's status.
INIT = 'trap "kill -TERM \\$c 2>/dev/null" TERM INT; /bin/sh -c "$0" & c=$!; while :; do wait $c; r=$?; kill -0 $c 2>/dev/null || exit $r; done'
SETUP_FAILED = 125

libc = ctypes.CDLL(None, use_errno=True)


class MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


class SetupError(Exception):
    """A step of a task's set-up failed; the message goes into the task's log."""


def check(ret: int, what: str) -> None:
    if ret != 0:
        raise SetupError(f"{what}: {os.strerror(ctypes.get_errno())}")


def mount(src: str, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    check(libc.mount(src.encode(), target.encode(), fstype.encode() if fstype else None, ctypes.c_ulong(flags),
                     data.encode() if data else None), f"mount {target}")


# ---- the task's pid 1 ----------------------------------------------------------------------


def read_only_everything() -> None:
    """Every mount the task can see becomes read-only and nosuid (one recursive call)."""
    attr = MountAttr(MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID, 0, 0, 0)
    ret = libc.syscall(SYS_MOUNT_SETATTR, AT_FDCWD, b"/", AT_RECURSIVE, ctypes.byref(attr), ctypes.sizeof(attr))
    if ret == 0:
        return
    if ctypes.get_errno() != ENOSYS:
        check(ret, "read-only root")
    # a kernel before 5.12: remount each mount point on its own
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4].encode().decode("unicode_escape") for line in f]
    for mp in points:
        flags = MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID
        if libc.mount(None, mp.encode(), None, ctypes.c_ulong(flags), None) != 0:
            # a mount that also carries nodev/noexec must be remounted with them
            check(libc.mount(None, mp.encode(), None, ctypes.c_ulong(flags | MS_NODEV | MS_NOEXEC), None), f"read-only {mp}")


def set_up_mounts(req: dict) -> None:
    mount("none", "/", None, MS_REC | MS_PRIVATE)
    if req["uid"] == 0:
        mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        return
    read_only_everything()
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    for path in req["hide"]:
        if os.path.isdir(path):
            mount("corral-hidden", path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=4k,mode=0555")
    opts = f"size={int(req['scratch'])},mode=1777,uid={req['uid']},gid={req['uid']}"
    for path in SCRATCH_DIRS:
        if os.path.isdir(path):
            mount("corral-scratch", path, "tmpfs", MS_NOSUID | MS_NODEV, opts)


def drop_privileges(uid: int) -> None:
    """To uid (and gid uid) with no groups, no capabilities in any set, and no way to gain any."""
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    for cap in range(CAP_LAST + 1):
        check(libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0), f"dropping capability {cap}")
    check(libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "clearing ambient capabilities")
    check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    os.setresuid(uid, uid, uid)  # from root to another uid: the permitted and effective sets empty


def wait_for_go(fd: int) -> bool:
    """The nodelet writes "go" at the task's instant; end of file means "never start"."""
    data = b""
    while not data.endswith(b"\n") and len(data) < 16:
        chunk = os.read(fd, 16)
        if not chunk:
            return False
        data += chunk
    return data == b"go\n"


def task_pid1(req: dict, go: int, out: int) -> None:
    """Never returns: execs the task, or exits (0 without "go", else SETUP_FAILED or 126)."""
    try:
        check(libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "parent death signal")
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.close(out)
        own_net = req["network"] != "host" and (SLOT_NET < 0 or int(req["uid"]) == 0)
        if req["network"] != "host" and not own_net:
            check(libc.setns(SLOT_NET, CLONE_NEWNET), "the slot's network namespace")
        flags = CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS | (CLONE_NEWNET if own_net else 0)
        check(libc.unshare(flags), "namespaces")
        set_up_mounts(req)
        os.chdir("/")
        uid = int(req["uid"])
        if uid != 0:
            drop_privileges(uid)
        if not wait_for_go(go):
            os._exit(0)
    except (SetupError, OSError) as e:
        os.write(2, f"corral: could not start the task: {e}\n".encode())
        os._exit(SETUP_FAILED)
    # from here on, the task's own settings, applied as the task's user, never before
    os.close(go)
    for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT):  # Python's own choices: not the task's
        signal.signal(sig, signal.SIG_DFL)
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    cwd = req["cwd"] or "/tmp"
    try:
        os.chdir(cwd)
    except OSError as e:
        os.write(2, f"corral: working_dir: cannot enter {cwd}: {e.strerror}\n".encode())
        os._exit(126)
    env = {"PATH": BASE_PATH, "HOME": "/tmp", **req["env"]}
    try:
        os.execve("/bin/sh", ["/bin/sh", "-c", INIT, req["script"]], env)
    except OSError as e:
        os.write(2, f"corral: /bin/sh: {e.strerror}\n".encode())
    os._exit(127)


# ---- the wrapper --------------------------------------------------------------------------


def _lost(req: dict, why: str) -> None:
    """Tell the nodelet the task ended LOST, not by its own doing (process_driver reads it)."""
    fd = os.open(req["lost"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(fd, why.encode() + b"\n")
    os.close(fd)


class NodeLease:
    """The node lease as the nodelet writes it (agent.LeaseFile): "deadline grace" twice,
    deadline on the monotonic clock. A reading whose halves differ was half-written: the
    last good one stands. No file yet: no deadline yet (the node has not been acked)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = -1
        self.deadline = 0.0
        self.grace = 0.0

    def read(self) -> None:
        if self.fd < 0:
            try:
                self.fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                return
        text = os.pread(self.fd, 128, 0).decode(errors="replace").split()
        if len(text) == 4 and text[:2] == text[2:]:
            try:
                self.deadline, self.grace = float(text[0]), float(text[1])
            except ValueError:
                pass

    def expired(self, now: float) -> bool:
        self.read()
        return 0 < self.deadline < now


def copy_output(req: dict, r: int, log: int, lease: "NodeLease | None", pid: int, go: int, go_task: int) -> None:
    """Copy the task's output into the log up to the cap (the rest is read and dropped, so
    the task is never stopped by it) until the task's pid namespace is gone. Meanwhile:
    pass the nodelet's "go" on to the parked task only if the node lease still holds (a
    nodelet that wakes from a pause must not start what the cluster has given to another
    node), and every quarter second kill the task once the lease ran out: SIGTERM to its
    pid 1, SIGKILL (the whole namespace) after the grace. This runs whatever the nodelet
    does: paused, killed or cut off, its wrappers keep time for it."""
    cap, written = int(req["cap"]), 0
    times = -1  # when each part of the output was written (nodelet/logtimes.py reads it)
    killed_at = 0.0
    hard = False
    said = b""
    while True:
        ready, _, _ = select.select([r, go] if go >= 0 else [r], [], [], 0.25)
        now = time.monotonic()
        if go in ready:
            chunk = os.read(go, 16)
            said += chunk
            if not chunk or said.endswith(b"\n") or len(said) >= 16:
                os.close(go)
                go = -1
                if said == b"go\n" and lease is not None and lease.expired(now):
                    _lost(req, "not started: its node lease had run out (no leader acknowledged the node in time)")
                    killed_at, hard = now, True
                    os.kill(pid, signal.SIGKILL)  # parked: nothing of the task's has run
                elif said == b"go\n":
                    os.write(go_task, b"go\n")
                os.close(go_task)  # end of file without "go": the task exits without running
        if r in ready:
            chunk = os.read(r, 65536)
            if not chunk:
                return
            if written < cap:
                part = chunk[: cap - written]
                if times < 0 and req.get("times"):
                    # made at the first output only: most scheduled tasks print nothing, and every
                    # file made per task is an inode the file system must find (a cost seen in profiles)
                    times = os.open(req["times"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC, 0o600)
                if times >= 0:
                    os.write(times, f"{written} {time.time():.6f}\n".encode())  # the format of nodelet/logtimes.py
                os.write(log, part)
                written += len(part)
        if lease is None:
            continue
        if not killed_at and lease.expired(now):
            killed_at = now
            _lost(req, "killed on its node: its node lease ran out (no leader acknowledged the node in time)")
            os.kill(pid, signal.SIGTERM)
        elif killed_at and not hard and now >= killed_at + lease.grace:
            hard = True
            os.kill(pid, signal.SIGKILL)  # pid 1: the kernel ends its whole namespace


def wrapper(req: dict, go: int, joined: int) -> None:
    """Never returns. Runs forked from a slot server, as root, in the node's namespaces and
    (from birth) in the slot's cgroups. `joined` is kept for a request that names cgroups
    to join (`procs`, a slot made on the spot): it is closed once joined."""
    code = SETUP_FAILED
    log = -1
    try:
        os.setsid()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the spawner ignores it; we wait for P
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        me = os.getpid()
        join(req.get("procs", ()), me)  # before anything of the task's exists
        os.close(joined)
        log = os.open(req["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        check(libc.unshare(CLONE_NEWPID), "pid namespace")  # for the child: it will be pid 1
        r, w = os.pipe()
        go_r, go_w = os.pipe()  # "go" reaches the task through us: we check the lease first
        pid = os.fork()
        if pid == 0:
            os.close(r)
            os.close(log)
            os.close(go)
            os.close(go_w)
            task_pid1(req, go_r, w)
        os.close(w)
        os.close(go_r)
        copy_output(req, r, log, NodeLease(req["lease"]) if req["watch"] else None, pid, go, go_w)
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        code = 128 - code if code < 0 else code  # killed by a signal: as a shell says it
    except (SetupError, OSError) as e:
        if log >= 0:
            os.write(log, f"corral: could not start the task: {e}\n".encode())
    finally:
        try:
            fd = os.open(req["exit"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.write(fd, f"{code}\n".encode())
            os.close(fd)
        finally:
            os._exit(0)


# ---- the spawner and its slot servers -----------------------------------------------------


def join(procs: "list[str] | tuple[str, ...]", pid: int) -> None:
    """Move `pid` into the cgroups whose `cgroup.procs` files are listed (one per v1 hierarchy)."""
    me = str(pid).encode()
    for path in procs:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, me)
        finally:
            os.close(fd)


def launch(sock: socket.socket, req: dict, go: int) -> None:
    """Fork a task's wrapper from this process and answer with its pid and a pidfd."""
    joined_r, joined_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        sock.close()
        os.close(joined_r)
        wrapper(req, go, joined_w)
    os.close(go)
    os.close(joined_w)
    select.select([joined_r], [], [], 5.0)  # end of file: it joined what it was told to (or failed)
    os.close(joined_r)
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:  # it ended already; the nodelet reads its exit file
        socket.send_fds(sock, [json.dumps({"pid": pid}).encode()], [])
        return
    socket.send_fds(sock, [json.dumps({"pid": pid}).encode()], [pidfd])
    os.close(pidfd)


def slot_network() -> int:
    """A network namespace of the slot's own (loopback only, down, as a fresh one is), kept
    alive by the fd returned; the server itself stays in the node's. Why: making and
    tearing down a network namespace per task was the largest single cost of a start (the
    kernel frees them on one work queue: 169 → 279 starts/s without it on this machine
    kind). The slot's tasks enter this one (setns), one after another: an unprivileged task
    cannot change it (no capabilities), and nothing of a task's outlives it in the slot. A
    task that runs as root still gets a fresh one."""
    host = os.open("/proc/self/ns/net", os.O_RDONLY)
    try:
        check(libc.unshare(CLONE_NEWNET), "network namespace")
        fd = os.open("/proc/self/ns/net", os.O_RDONLY)  # close-on-exec: never reaches a task's program
        check(libc.setns(host, CLONE_NEWNET), "back to the node's network namespace")
    finally:
        os.close(host)
    return fd


def slot_server(sock: socket.socket, procs: list[str]) -> None:
    """Never returns. Joins the slot's cgroups once, then forks one wrapper per request
    until the spawner closes the socket."""
    global SLOT_NET
    try:
        join(procs, os.getpid())
        SLOT_NET = slot_network()
    except (OSError, SetupError) as e:
        sock.send(json.dumps({"error": f"the slot could not be set up: {e}"}).encode())
        os._exit(1)
    sock.send(b'{"joined": true}')  # the nodelet hands the slot out only after this
    while True:
        try:
            msg, fds, _, _ = socket.recv_fds(sock, 1 << 22, 1)
        except OSError:
            os._exit(0)
        if not msg:
            os._exit(0)
        launch(sock, json.loads(msg), fds[0])


def serve(sock: socket.socket) -> None:
    """Requests, one at a time: {"op": "slot", "procs": [...]} makes a slot server and
    answers {"slot_pid": pid} with the nodelet's end of that server's socket (the nodelet
    then sends the slot's task requests to the server itself; the server exits when the
    nodelet closes it); a task request (with its "go" fd) is forked here and joins its
    "procs" itself (the way without slots)."""
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # wrappers and servers are reaped by the kernel
    gc.freeze()  # the warm heap stays shared with every fork (no copy-on-write by the collector)
    while True:
        try:
            msg, fds, _, _ = socket.recv_fds(sock, 1 << 22, 1)
        except OSError:
            return
        if not msg:
            return  # the nodelet is gone
        try:
            req = json.loads(msg)
            op = req.get("op", "task")
            if op == "slot":
                procs = [str(p) for p in req["procs"]]
            else:
                go = fds[0]
        except (ValueError, IndexError, AttributeError, KeyError, TypeError):
            for fd in fds:
                os.close(fd)
            sock.send(b'{"error": "bad request"}')
            continue
        if op == "slot":
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            pid = os.fork()
            if pid == 0:
                ours.close()
                sock.close()
                slot_server(theirs, procs)
            theirs.close()
            socket.send_fds(sock, [json.dumps({"slot_pid": pid}).encode()], [ours.fileno()])
            ours.close()
        else:
            launch(sock, req, go)


def main() -> None:
    global CAP_LAST
    with open("/proc/sys/kernel/cap_last_cap") as f:
        CAP_LAST = int(f.read())
    serve(socket.socket(fileno=int(sys.argv[1])))


CAP_LAST = 40
SLOT_NET = -1  # a slot server's network namespace (slot_network); -1: each task makes its own

if __name__ == "__main__":
    main()
