"""`sockprobe port PATH|@name`: who holds a UNIX socket name, and would a bind succeed.

The /proc/net/unix rows bound to the name (unix(7)) and their holders (processes.py), a
trial connect (non-blocking: ECONNREFUSED means nothing listens, the file is stale) and
a trial bind, which never creates, unlinks or otherwise touches an existing file.

A path this user cannot look at (lstat gives EACCES: a directory on the way denies
search permission, path_resolution(7)) is reported as hidden from this user, never as
"no file".
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import struct

from sockprobe.kernel import portdiag
from sockprobe.lab import Deadline
from sockprobe.port.diagnosis import new_report
from sockprobe.port.params import Params
from sockprobe.port.processes import Proc, age_text, find_holders, process_info, user_name
from sockprobe.report import CONTEXT, NA, VOLATILE, Cell, Report, col
from sockprobe.status import oserror_text


def _n(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def _who(procs: list[Proc]) -> str:
    first = procs[0]
    pids = " and ".join(str(p.pid) for p in procs)
    return (
        f"{'pid' if len(procs) == 1 else 'pids'} {pids} (`{first.command(60)}`, user "
        f"{first.user}, running {age_text(first.age_s)})"
    )


def _denying_dir(path: str) -> str:
    """The first directory on the way to `path` this user may not search."""
    parts = os.path.abspath(path).split("/")[1:-1]
    d = ""
    for part in parts:
        d += "/" + part
        if os.path.isdir(d) and not os.access(d, os.X_OK):
            return d
    return ""


def _trial_connect(address: str | bytes) -> tuple[Cell, str | None, tuple[int, int, int] | None]:
    """Connect to `address` without blocking; (result cell, socket type that answered,
    SO_PEERCRED of the listener). A stream connect to a datagram socket fails with
    EPROTOTYPE, so the other types are tried in turn; ECONNREFUSED means nothing is
    bound there (or it is bound but not listening) whatever the type."""
    last: Cell = None
    for kind, name in (
        (socket.SOCK_STREAM, "stream"),
        (socket.SOCK_SEQPACKET, "seqpacket"),
        (socket.SOCK_DGRAM, "dgram"),
    ):
        with socket.socket(socket.AF_UNIX, kind) as s:
            # Non-blocking: connect() to a listener whose accept queue is full would
            # otherwise block; here it fails at once with EAGAIN (unix(7)).
            s.setblocking(False)
            code = s.connect_ex(address)
            if code == errno.EPROTOTYPE:
                last = "EPROTOTYPE"
                continue
            if code == 0:
                cred = None
                if kind != socket.SOCK_DGRAM:
                    try:
                        raw = s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
                        pid, uid, gid = struct.unpack("=iII", raw)
                        cred = (pid, uid, gid)
                    except OSError:
                        pass
                return "ok", name, cred
            return errno.errorcode.get(code, str(code)), name, None
    return last, None, None


def _trial_unix_bind(address: str | bytes, reuse: bool, created_ok: bool) -> Cell:
    """bind() a fresh AF_UNIX socket to `address`. For a filesystem path this is done
    only when the file exists: bind() then fails with EADDRINUSE without touching it.
    Should the file vanish between the check and the bind, the bind creates a new file
    that is ours alone, which is removed at once (`created_ok` is False then)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        if reuse:
            # Accepted and ignored for AF_UNIX: it exists to show that it does not help.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(address)
        except OSError as exc:
            return errno.errorcode.get(exc.errno or 0, str(exc))
        if isinstance(address, str) and not created_ok:
            try:
                os.unlink(address)
            except OSError:
                pass
        return "ok"


def diagnose_unix(params: Params, deadline: Deadline) -> tuple[Report, bool]:
    """(report, a bind on the name would fail now)."""
    target = params.parsed.unix
    abstract = target.startswith("@")
    address: str | bytes = b"\0" + os.fsencode(target[1:]) if abstract else target
    names = {target}
    if not abstract:
        names |= {os.path.abspath(target), os.path.realpath(target)}
    report = new_report(params)
    rows = portdiag.unix_sockets(names)
    rows.sort(key=lambda r: (not r.listening, r.state, r.type))
    deadline.check("reading /proc/net/unix")

    # What is at the path.
    st: os.stat_result | None = None
    st_error: OSError | None = None
    if not abstract:
        try:
            st = os.lstat(target)
        except OSError as exc:
            st_error = exc
    # EACCES (a directory on the way denies search, path_resolution(7)): whether a file
    # is there cannot be known by this user, which is not "no file".
    denied = st_error is not None and st_error.errno == errno.EACCES
    exists = st is not None
    is_sock = st is not None and stat.S_ISSOCK(st.st_mode)

    # Trial connect: only where something could answer.
    conn: Cell = None
    conn_type: str | None = None
    cred: tuple[int, int, int] | None = None
    if (abstract and rows) or is_sock:
        conn, conn_type, cred = _trial_connect(address)
    deadline.check("trying a connect")

    # Trial binds: only where the name is taken, so that a bind cannot create anything.
    plain: Cell = None
    reuse: Cell = None
    if exists or (abstract and rows):
        plain = _trial_unix_bind(address, reuse=False, created_ok=abstract)
        reuse = _trial_unix_bind(address, reuse=True, created_ok=abstract)

    parent = os.path.dirname(os.path.abspath(target)) if not abstract else ""
    parent_ok = bool(parent) and os.path.isdir(parent) and os.access(parent, os.W_OK | os.X_OK)

    shown = [r for r in rows if r.listening or r.state != 3]
    shown += [r for r in rows if not r.listening and r.state == 3][: params.limit or None]
    owners = find_holders(
        {r.inode for r in shown}, check=lambda: deadline.check("reading /proc/*/fd")
    )
    peer: Proc | None = process_info(cred[0]) if cred and cred[0] > 0 else None

    t = report.table(
        "unix_sockets",
        f"Sockets bound to {target} (/proc/net/unix; listeners first)",
        [
            col("type"),
            col("state"),
            col("inode", kind=VOLATILE),
            col("pid", kind=VOLATILE),
            col("ppid", "parent", kind=VOLATILE),
            col("user"),
            col("age_s", "age", "s", CONTEXT),
            col("command", "command line"),
        ],
        keys=["type", "state", "inode", "pid"],
    )
    hidden = owners.hidden_reason(None)
    missing = hidden or "no process holds it in its fd table"
    for r in shown:
        held = owners.of(r.inode)
        if not held:
            na = NA(missing)
            t.add(r.type_name, r.state_name, r.inode, na, na, na, na, na)
        for proc, _fd in held:
            t.add(
                r.type_name,
                r.state_name,
                r.inode,
                proc.pid,
                proc.ppid,
                proc.user,
                None if proc.age_s is None else round(proc.age_s, 1),
                proc.command(60),
            )

    o = report.table("unix_trials", f"Trials on {target} now", [col("operation"), col("result")])
    if not abstract:
        if st is not None:
            o.add(
                "lstat",
                f"{_file_kind(st.st_mode)}, mode {stat.filemode(st.st_mode)}, "
                f"owner {user_name(st.st_uid)}",
            )
        else:
            o.add("lstat", oserror_text(st_error) if st_error else "?")
    if conn is not None:
        o.add(f"connect ({conn_type or 'stream'}, non-blocking)", conn)
    if cred is not None:
        o.add("SO_PEERCRED of the listener", f"pid {cred[0]}, uid {cred[1]}")
    o.add("bind", plain if plain is not None else NA(_no_bind_reason(abstract, exists, denied)))
    o.add(
        "bind with SO_REUSEADDR",
        reuse if reuse is not None else NA(_no_bind_reason(abstract, exists, denied)),
    )

    f = report.findings
    listeners = [r for r in rows if r.listening]
    if conn == "ok" and conn_type == "dgram":
        # A datagram socket never listens: the bound socket itself is what answered.
        listeners = [r for r in rows if r.type == socket.SOCK_DGRAM] or listeners
    live_owner = ""
    if listeners:
        own = owners.of(listeners[0].inode)
        if own:
            live_owner = _who([p for p, _ in own])
        elif peer is not None:
            live_owner = _who([peer]) + " (from SO_PEERCRED)"
    elif peer is not None:
        live_owner = _who([peer]) + " (from SO_PEERCRED)"
    if not live_owner and listeners and hidden:
        live_owner = f"an owner {hidden}"
    bind_fails: bool
    if conn in ("ok", "EAGAIN"):
        full = " (its accept queue is full)" if conn == "EAGAIN" else ""
        what = (
            f"A datagram socket is bound to {target} and receives"
            if conn_type == "dgram"
            else f"A process listens on {target}{full}"
        )
        f.append(
            f"{what}: {live_owner or 'owner not found'}; the trial connect "
            f"({conn_type}) was {conn}. Stop it or choose another "
            + (
                "name."
                if abstract
                else "path; do not unlink a live socket's file (new clients could no "
                "longer reach it)."
            )
        )
        kind = "dgram socket" if conn_type == "dgram" else f"{conn_type} listener"
        summary = f"{target}: live, {kind} {live_owner.split(' (')[0]}".rstrip()
        bind_fails = True
    elif abstract:
        if rows:
            f.append(
                f"The abstract name {target} is bound by {_n(len(rows), 'socket')} that do not "
                f"accept connections (trial connect: {conn}); a bind gives {plain}."
            )
            summary = f"{target}: bound, not accepting (connect {conn})"
            bind_fails = plain != "ok"
        else:
            f.append(
                f"No socket is bound to the abstract name {target}: a bind would succeed "
                "(abstract names vanish with their last socket, so they never go stale)."
            )
            summary = f"{target}: free (abstract name, no socket bound)"
            bind_fails = False
    elif denied:
        blocker = _denying_dir(target)
        f.append(
            f"{target} is hidden from this user: lstat gives EACCES"
            + (f" ({blocker} denies search permission)" if blocker else "")
            + (
                # /proc/net/unix lists the path a socket was bound to whatever the
                # directory's mode (net/unix/af_unix.c unix_seq_show).
                f", so this user cannot see the file, but /proc/net/unix lists "
                f"{_n(len(rows), 'socket')} bound to it"
                + (" (listening)" if any(r.listening for r in rows) else "")
                if rows
                else ", so whether a socket file is there cannot be seen"
            )
            + ", and a bind or connect "
            f"by this user fails the same way; run as root (sudo sockprobe port {target})."
        )
        summary = f"{target}: hidden from this user (lstat EACCES): run as root"
        bind_fails = True
    elif not exists:
        if parent_ok:
            f.append(
                f"No file at {target}: the path is free, and a bind would create the socket "
                f"file there ({parent} exists and is writable; not tried, because a trial "
                "bind would create the file)."
            )
            summary = f"{target}: free (no file; directory writable)"
            bind_fails = False
        else:
            missing_dir = not os.path.isdir(parent)
            problem, err = (
                ("does not exist", "ENOENT")
                if missing_dir
                else ("is not writable by this user", "EACCES")
            )
            f.append(
                f"No file at {target}, but {parent} {problem}, so a bind "
                f"there would fail ({err}; not tried): "
                + ("create the directory" if missing_dir else "fix its permissions")
                + " or choose another path."
            )
            summary = f"{target}: no file, but its directory {problem}"
            bind_fails = True
    elif not is_sock:
        f.append(
            f"{target} exists and is not a socket: a bind gives {plain}. Something else "
            "owns that name; choose another path unless you know the file can go."
        )
        summary = f"{target}: exists and is not a socket (bind {plain})"
        bind_fails = True
    elif conn == "ECONNREFUSED" and [r for r in rows if not r.listening]:
        own = owners.of(rows[0].inode)
        who = (
            _who([p for p, _ in own])
            if own
            else f"a process {hidden}"
            if hidden
            else "no process found"
        )
        f.append(
            f"A socket is bound to {target} but not listening: connect gives ECONNREFUSED, "
            f"bind gives {plain}; bound by {who}. It will accept once that process calls "
            "listen(); otherwise stop it."
        )
        summary = f"{target}: bound by a live socket that does not listen yet"
        bind_fails = True
    elif conn == "ECONNREFUSED":
        f.append(
            f"{target} is stale: the socket file is left over from a socket that was "
            f"closed (or whose process exited) without unlinking it. Nothing listens "
            f"(connect: ECONNREFUSED), yet bind gives "
            f"{plain} even with SO_REUSEADDR ({reuse}). Fix: remove it (rm {target}), have the "
            "server unlink() the path before bind() once a trial connect is refused, or use "
            "an abstract-namespace address (@name, Linux), which vanishes with its socket."
        )
        summary = f"{target}: stale socket file (connect ECONNREFUSED, bind {plain})"
        bind_fails = True
    else:
        f.append(
            f"{target} is a socket file; the trial connect gave {conn} and a bind {plain}."
            + (" Permission to write the file is needed to connect." if conn == "EACCES" else "")
        )
        summary = f"{target}: connect {conn}, bind {plain}"
        bind_fails = plain not in (None, "ok")
    if hidden and shown and not any(owners.of(r.inode) for r in shown):
        f.append(f"Holders may be {hidden} (sudo sockprobe port {target}).")
    report.summary = summary
    report.notes.extend(
        [
            "/proc/net/unix lists every AF_UNIX socket of this network namespace with the "
            "name it was bound to (as given, possibly relative), its type, state and "
            "whether it listens (flag __SO_ACCEPTCON); owners come from /proc/PID/fd links.",
            "The trial connect is non-blocking: ok means a listener accepted the connection "
            "(it sees a client that closes at once), EAGAIN a listener with a full accept "
            "queue, ECONNREFUSED that no socket listens on the file (unix(7)).",
            "bind() on a path that exists fails with EADDRINUSE whatever the file is, and "
            "SO_REUSEADDR changes nothing for AF_UNIX; close() never removes the file. The "
            "trial bind runs only where the name is taken, so it cannot create, unlink or "
            "change anything.",
            "The fix for a stale file is unlink() before bind(), after a connect has been "
            "refused (so a live server is never cut off), or the Linux abstract namespace "
            "(sun_path starting with a NUL byte), whose names disappear with their socket.",
            "macOS and the BSDs have no abstract namespace and no /proc/net/unix (lsof -U); "
            "Windows supports AF_UNIX stream sockets (since Windows 10 1803) with the same "
            "left-over file problem.",
        ]
    )
    return report, bind_fails


def _file_kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISREG, "regular file"),
        (stat.S_ISDIR, "directory"),
        (stat.S_ISLNK, "symbolic link"),
        (stat.S_ISFIFO, "FIFO"),
    ):
        if test(mode):
            return name
    return "special file"


def _no_bind_reason(abstract: bool, exists: bool, denied: bool = False) -> str:
    if denied:
        return "not tried: lstat gives EACCES, so a bind by this user fails the same way"
    if abstract:
        return "not tried: no socket holds this abstract name, and a trial bind would take it"
    return "not tried: no file at the path, and a trial bind would create one"
