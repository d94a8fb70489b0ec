"""Which processes hold the sockets on the port: every one, not the first.

Linux has no "owner of this socket" call. A socket is a file; every process that has it
in its fd table has a link /proc/PID/fd/N reading `socket:[INODE]` (proc(5)), whatever
put it there: socket() itself, fork() (a pre-fork server's workers all hold the
listener), an exec without close-on-exec (`subprocess(pass_fds=...)`, a shell's
inherited descriptors), or SCM_RIGHTS over a UNIX socket (unix(7): the receiver gets a
new fd for the same open file). So the whole /proc/*/fd walk is made, as `ss -p`, lsof
and fuser make it: stopping at the first holder would name the parent of a forked server
and leave its children, which keep the port busy after the parent is gone.

The walk reads links with readlink(2) relative to an open /proc/PID/fd directory
(dir_fd), which saves the kernel a path walk per descriptor. Without root, another
user's /proc/PID/fd is EACCES (proc(5): ptrace access mode PTRACE_MODE_READ_FSCREDS,
fs/proc/fd.c proc_fd_permission), and with hidepid=2 (or hidepid=invisible) on /proc
their /proc/PID directories are not listed at all (fs/proc/base.c has_pid_permissions):
those sockets are reported as hidden, with the reason, never as "no process".

Processes come and go during the walk: a pid or fd that vanishes (ENOENT, ESRCH) just
means it exited under us, and is skipped.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable, Iterable
from typing import NamedTuple

from sockprobe.kernel.owners import process_age, read_file
from sockprobe.kernel.owners import user_name as user_name  # re-exported for port modules


class Proc(NamedTuple):
    pid: int
    ppid: int | None
    #: /proc/PID/comm (the kernel's 15-character name).
    name: str
    #: /proc/PID/cmdline split at NULs; [] for a kernel thread or a zombie.
    argv: tuple[str, ...]
    #: Effective uid (second field of Uid: in /proc/PID/status) and its user name.
    uid: int | None
    user: str
    #: Seconds since the process started (/proc/PID/stat field 22 against /proc/uptime).
    age_s: float | None

    def command(self, width: int = 0) -> str:
        """argv shell-quoted (so it can be pasted back), shortened to `width` if given."""
        text = shlex.join(self.argv) if self.argv else f"[{self.name}]"
        # Control characters (a python3 -c '...' script's newlines) would break a row.
        text = text.translate(_CONTROL)
        if width and len(text) > width:
            return text[: width - 3] + "..."
        return text


_CONTROL = {c: " " for c in (*range(32), 127)}


class Holders:
    """What the fd walk found. A plain class: a dataclass costs about a millisecond to
    create at import, and `sockprobe port` is run in loops."""

    def __init__(self) -> None:
        #: inode -> [(pid, fd), ...] of every process holding it, in pid order.
        self.fds: dict[int, list[tuple[int, int]]] = {}
        self.procs: dict[int, Proc] = {}
        #: pids whose fd table could not be read (EACCES: another user's, without root).
        self.denied: list[int] = []
        #: /proc is mounted with hidepid=1/2 (or invisible/noaccess) and this is not root.
        self.hidepid = ""
        self.scanned = 0

    def pids(self, inode: int) -> list[int]:
        return [pid for pid, _ in self.fds.get(inode, [])]

    def of(self, inode: int) -> list[tuple[Proc, int]]:
        return [(self.procs[p], fd) for p, fd in self.fds.get(inode, []) if p in self.procs]

    def hidden_reason(self, uid: int | None) -> str | None:
        """Why a socket of `uid` with no holder found may have one this user cannot see;
        None when nothing was hidden (then no process holds it)."""
        me = os.geteuid()
        if me == 0:
            if not self.denied:
                return None
            pids = ", ".join(map(str, self.denied[:5])) + ("..." if len(self.denied) > 5 else "")
            return (
                f"hidden: the fd table of pid {pids} cannot be read even by root (EACCES: "
                "ptrace access refused), and the holder may be there"
            )
        if uid == me:
            return None
        if self.hidepid:
            return (
                f"hidden from this user: /proc is mounted with hidepid={self.hidepid}, so "
                "other users' processes are not listed; run as root"
            )
        if self.denied:
            return (
                f"hidden from this user: /proc/PID/fd of {len(self.denied)} processes of other "
                "users cannot be read (EACCES); run as root"
            )
        return None


_HIDEPID = {
    "0": "",
    "off": "",
    "noaccess": "1 (noaccess)",
    "invisible": "2 (invisible)",
    "ptraceable": "4 (ptraceable)",
}


def proc_hidepid(mountinfo: str = "/proc/self/mountinfo") -> str:
    """The hidepid= option of the /proc mount ("" when off or unreadable), from
    /proc/self/mountinfo's per-superblock options (the field after the fstype)."""
    try:
        with open(mountinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                parts = left.split()
                if len(parts) >= 5 and parts[4] == "/proc":
                    for opt in right.split()[-1].split(","):
                        if opt.startswith("hidepid="):
                            value = opt.split("=", 1)[1]
                            # Since Linux 5.8 mountinfo shows the names (fs/proc/root.c).
                            return _HIDEPID.get(value, value)
    except OSError:
        return ""
    return ""


def find_holders(
    inodes: Iterable[int], check: Callable[[], None] | None = None, proc: str = "/proc"
) -> Holders:
    """Every process holding each inode (the whole /proc/*/fd walk). `check` runs before
    each process (the caller's deadline check)."""
    want = {f"socket:[{i}]": i for i in inodes if i > 0}
    found = Holders()
    if not want:
        return found
    if os.geteuid() != 0:
        found.hidepid = proc_hidepid()
    readlink = os.readlink
    listdir = os.listdir
    pids = sorted(int(p) for p in listdir(proc) if p.isdigit())
    for pid in pids:
        if check is not None:
            check()
        try:
            dfd = os.open(f"{proc}/{pid}/fd", os.O_RDONLY | os.O_DIRECTORY)
        except PermissionError:
            found.denied.append(pid)
            continue
        except OSError:  # ENOENT: the process exited since listdir
            continue
        found.scanned += 1
        try:
            try:
                names = listdir(dfd)
            except OSError:
                continue
            for fd in names:
                try:
                    link = readlink(fd, dir_fd=dfd)
                except PermissionError:
                    # Listing the directory is allowed but reading the links is not: even
                    # root gets EACCES where ptrace access is refused (fs/proc/base.c
                    # proc_fd_link -> proc_fd_access_allowed: a non-dumpable init, an LSM).
                    found.denied.append(pid)
                    break
                except OSError:  # closed between listdir and readlink
                    continue
                inode = want.get(link)
                if inode is not None:
                    found.fds.setdefault(inode, []).append((pid, int(fd)))
        finally:
            os.close(dfd)
    for pid in sorted({p for held in found.fds.values() for p, _ in held}):
        info = process_info(pid, proc)
        if info is not None:
            found.procs[pid] = info
    return found


def process_info(pid: int, proc: str = "/proc") -> Proc | None:
    """Name, parent, argv, user and age of one process; None if it has exited."""
    base = f"{proc}/{pid}"
    comm = read_file(f"{base}/comm")
    if comm is None:
        return None
    raw = read_file(f"{base}/cmdline") or b""
    argv = tuple(a.decode(errors="replace") for a in raw.split(b"\0")[:-1]) if raw else ()
    uid: int | None = None
    ppid: int | None = None
    for line in (read_file(f"{base}/status") or b"").splitlines():
        if line.startswith(b"Uid:"):
            parts = line.split()
            if len(parts) >= 3:
                uid = int(parts[2])
        elif line.startswith(b"PPid:"):
            ppid = int(line.split()[1])
    return Proc(
        pid=pid,
        ppid=ppid,
        name=comm.decode(errors="replace").strip(),
        argv=argv,
        uid=uid,
        user=user_name(uid),
        age_s=process_age(base, proc),
    )


def relation(proc: Proc, others: dict[int, Proc]) -> str:
    """How a holder got the socket, from its parent: "a child of 5871 that inherited the
    socket" when its parent holds it too (fork or an exec that kept the fd)."""
    if proc.ppid is not None and proc.ppid in others and proc.ppid != proc.pid:
        return f"a child of {proc.ppid} that inherited the socket"
    return ""


def age_text(seconds: float | None) -> str:
    if seconds is None:
        return "for an unknown time"
    s = int(seconds)
    if s < 60:
        return f"{seconds:.1f} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


# -- the fallback: psutil (macOS, Windows, and Linux when forced) ---------------------------
def psutil_available() -> bool:
    try:
        import psutil  # noqa: F401
    except ImportError:
        return False
    return True


def psutil_info(pid: int) -> Proc | None:
    import psutil

    try:
        p = psutil.Process(pid)
        with p.oneshot():
            try:
                argv = tuple(p.cmdline())
            except psutil.AccessDenied:
                argv = ()
            try:
                uid: int | None = p.uids().effective
            except (psutil.AccessDenied, AttributeError):  # Windows has no uids()
                uid = None
            try:
                user = p.username()
            except psutil.AccessDenied:
                user = user_name(uid)
            import time

            return Proc(
                pid=pid,
                ppid=p.ppid(),
                name=p.name(),
                argv=argv,
                uid=uid,
                user=user,
                age_s=max(0.0, time.time() - p.create_time()),
            )
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return None
