"""Which processes hold given sockets: socket inode -> pid, fd, name, command line, user, age.

Linux has no "owner of this socket" lookup. A socket is a file whose inode number
sock_diag and /proc/net/* report; every process that holds it has an fd whose
/proc/PID/fd/N link reads `socket:[INODE]` (proc(5)). So the only way, the one `ss -p`,
`lsof` and psutil take too, is to read every fd link of every process. That walk is the
cost of the whole lookup, so this module:

- is called only with the inodes of the sockets already found on the port (psutil's
  net_connections() instead resolves every socket of the host);
- stops as soon as every wanted inode has an owner. A socket shared by several processes
  (inherited across fork(), passed with SCM_RIGHTS) is therefore attributed to the first
  holder in pid order, usually the parent that created it;
- reads the links with readlink(2) relative to an open /proc/PID/fd directory (dir_fd),
  which spares the kernel a full path walk per fd; nothing is imported that costs start-up
  time (no psutil: about 60 ms to import here, longer than the walk on a quiet host).

Without root, /proc/PID/fd of another user's process cannot be read (EACCES): such
sockets stay unresolved and the caller reports their owner as hidden. Processes come and
go during the walk; a pid or fd that vanishes is skipped (ENOENT, ESRCH just mean the
process exited under us).
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

_CLK_TCK = os.sysconf("SC_CLK_TCK")
#: Newlines and other control characters in an argument (python3 -c '...') would break a
#: table row or a one-line finding: each becomes a space.
_CONTROL = {c: " " for c in (*range(32), 127)}


@dataclass(frozen=True)
class Process:
    pid: int
    #: /proc/PID/comm (the kernel's 15-character name).
    name: str
    #: /proc/PID/cmdline with NULs turned into spaces; "" for a kernel thread or zombie.
    cmdline: str
    #: Effective uid (second field of Uid: in /proc/PID/status) and its user name.
    uid: int | None
    user: str
    #: Seconds since the process started (/proc/PID/stat field 22 against /proc/uptime).
    age_s: float | None


@dataclass
class Owners:
    #: inode -> (pid, fd) of the first process found holding it.
    holders: dict[int, tuple[int, int]] = field(default_factory=dict)
    processes: dict[int, Process] = field(default_factory=dict)
    #: Processes whose fd table could not be read (EACCES: another user's, not root).
    denied: int = 0
    scanned_processes: int = 0
    scanned_fds: int = 0

    def owner(self, inode: int) -> tuple[Process, int] | None:
        held = self.holders.get(inode)
        if held is None:
            return None
        pid, fd = held
        proc = self.processes.get(pid)
        return None if proc is None else (proc, fd)


def user_name(uid: int | None) -> str:
    if uid is None:
        return "?"
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:  # a uid with no passwd entry (containers, deleted users)
        return str(uid)


def find_owners(
    inodes: Iterable[int],
    check: Callable[[], None] | None = None,
    proc: str = "/proc",
) -> Owners:
    """Walk /proc/*/fd until every inode in `inodes` has a holder (or every process was
    read). `check` runs before each process (the caller's deadline check)."""
    want = {f"socket:[{i}]": i for i in inodes if i}
    found = Owners()
    if not want:
        return found  # nothing to resolve: no walk at all
    readlink = os.readlink
    pids = sorted(int(p) for p in os.listdir(proc) if p.isdigit())
    for pid in pids:
        if check is not None:
            check()
        try:
            dfd = os.open(f"{proc}/{pid}/fd", os.O_RDONLY | os.O_DIRECTORY)
        except PermissionError:
            found.denied += 1
            continue
        except OSError:  # ENOENT: the process exited since listdir
            continue
        found.scanned_processes += 1
        try:
            try:
                fds = os.listdir(dfd)
            except OSError:
                continue
            found.scanned_fds += len(fds)
            for fd in fds:
                try:
                    link = readlink(fd, dir_fd=dfd)
                except OSError:  # the fd was closed between listdir and readlink
                    continue
                inode = want.pop(link, None)
                if inode is None:
                    continue
                found.holders[inode] = (pid, int(fd))
                if not want:
                    break
        finally:
            os.close(dfd)
        if not want:
            break
    for pid in {pid for pid, _ in found.holders.values()}:
        info = process_info(pid, proc)
        if info is not None:
            found.processes[pid] = info
    return found


def read_file(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def process_info(pid: int, proc: str = "/proc") -> Process | None:
    """Name, command line, user and age of one process; None if it has exited."""
    base = f"{proc}/{pid}"
    comm = read_file(f"{base}/comm")
    if comm is None:
        return None
    raw_cmd = read_file(f"{base}/cmdline") or b""
    cmdline = (
        raw_cmd.rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace").translate(_CONTROL)
    )
    uid: int | None = None
    status = read_file(f"{base}/status") or b""
    for line in status.splitlines():
        if line.startswith(b"Uid:"):
            parts = line.split()
            if len(parts) >= 3:
                uid = int(parts[2])
            break
    return Process(
        pid=pid,
        name=comm.decode(errors="replace").strip(),
        cmdline=cmdline,
        uid=uid,
        user=user_name(uid),
        age_s=process_age(base, proc),
    )


def process_age(base: str, proc: str) -> float | None:
    """Seconds since the process started.

    /proc/PID/stat field 22 is the start time in clock ticks after boot; the command
    name (field 2) may contain spaces and parentheses, so the fields are counted from
    the last ')'. The fields after it start at field 3, so field 22 is index 19.
    """
    stat = read_file(f"{base}/stat")
    uptime = read_file(f"{proc}/uptime")
    if stat is None or uptime is None:
        return None
    try:
        fields = stat[stat.rindex(b")") + 2 :].split()
        started = int(fields[19]) / _CLK_TCK
        return max(0.0, float(uptime.split()[0]) - started)
    except (ValueError, IndexError):
        return None
