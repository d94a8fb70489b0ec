"""SO_REUSEPORT: a zero-downtime restart with two listeners, and the same-user rule.

1. Restart: two listeners share one port, clients are steered onto each (a classic BPF
   program on one DSCP bit, so the split is the same in every run) and left in the
   accept queues; one listener closes. Each client's recv() says whether it was reset or
   is served by the other listener; net.ipv4.tcp_migrate_req decides (1 moves the queued
   connections to the other listener instead of resetting them).
2. Same user: a second SO_REUSEPORT socket may join a live group only if its effective
   uid is the group's (inet_bind_conflict(), net/ipv4/inet_connection_sock.c: uid_eq()
   against every live socket; a TIME_WAIT socket is exempt). As root the probe starts a
   child that drops to another uid and tries the bind; without root it cannot change
   user and says so.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from dataclasses import dataclass

from sockprobe import kernel
from sockprobe.kernel import reuse, sockstate
from sockprobe.probes.reuseaddr.common import (
    LISTEN,
    NO_PROC,
    SETTLE_CAP_S,
    SO_REUSEPORT,
    Ctx,
    Settings,
    inode,
    setting_cell,
)
from sockprobe.report import NA, Cell, Report, col
from sockprobe.status import oserror_name

#: The uid/gid a root probe's child drops to (the conventional "nobody").
OTHER_UID = 65534

#: The other-user child: drop to OTHER_UID, try a SO_REUSEPORT bind, print the outcome.
CHILD = r"""
import errno, os, socket, sys
host, port, uid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
os.setgroups([]); os.setgid(uid); os.setuid(uid)
s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
try:
    s.bind((host, port))
    print("ok")
except OSError as e:
    print(errno.errorcode.get(e.errno, str(e.errno)))
s.close()
"""


@dataclass
class GroupRow:
    listener: str
    steered: int
    queued: Cell
    reset: int
    served: int
    no_answer: int


def _accept_queues(ctx: Ctx, port: int, inodes: list[int], want: int) -> list[Cell]:
    """Accept-queue length of each listener (sock_diag rqueue, /proc rx_queue).

    Polled until each holds `want` (the last ACK of a handshake is processed in softirq,
    so a connect() may return a moment before the server side is queued)."""
    if not kernel.IS_LINUX:
        return [NA(NO_PROC)] * len(inodes)
    end = time.monotonic() + ctx.deadline.timeout(SETTLE_CAP_S, "waiting for the accept queues")
    while True:
        by_inode = {r.inode: r.queue for r in ctx.watch.rows((port,)) if r.state == LISTEN}
        counts = [by_inode.get(i, 0) for i in inodes]
        if all(c >= want for c in counts) or time.monotonic() >= end:
            return list(counts)
        time.sleep(0.001)


def restart(ctx: Ctx, clients: int) -> tuple[list[GroupRow], NA | None]:
    lab, dl = ctx.lab, ctx.deadline
    if SO_REUSEPORT is None:
        return [], NA("SO_REUSEPORT does not exist on this platform")
    opt = SO_REUSEPORT

    def configure(s: socket.socket) -> None:
        s.setsockopt(socket.SOL_SOCKET, opt, 1)

    # Listener 0 (the one to close) calls listen() first, so it is index 0 in the group.
    old = lab.listener(backlog=clients, configure=configure, role="reuseport listener (closed)")
    port = old.getsockname()[1]
    kept = lab.listener(
        backlog=clients, configure=configure, port=port, role="reuseport listener (kept)"
    )
    try:
        reuse.steer_reuseport_by_dscp(old)
    except OSError as exc:
        return [], NA(f"cannot steer clients (SO_ATTACH_REUSEPORT_CBPF): {oserror_name(exc)}")
    conns: list[tuple[int, socket.socket]] = []
    for group in (0, 1):
        for _ in range(clients):
            c = lab.open_socket()
            reuse.mark_client(c, group)
            c.settimeout(dl.timeout(5.0, "connecting to the SO_REUSEPORT group"))
            c.connect(old.getsockname())
            conns.append((group, c))
    queued = _accept_queues(ctx, port, [inode(old), inode(kept)], clients)

    # The restart: the old listener goes away with its queue still full.
    lab.close(old)
    accepted: list[socket.socket] = []
    kept.setblocking(False)
    while True:
        try:
            a, _ = kept.accept()
        except BlockingIOError:
            break
        accepted.append(lab.adopt(a))
    for a in accepted:
        a.settimeout(dl.timeout(5.0, "answering"))
        a.sendall(b"k")

    outcome: dict[int, dict[str, int]] = {0: {}, 1: {}}
    for group, c in conns:
        c.settimeout(dl.timeout(0.5, "reading the answer"))
        try:
            got = c.recv(1)
            kind = "served" if got == b"k" else "closed"
        except ConnectionResetError:
            kind = "reset"
        except TimeoutError:
            if dl.remaining() < 0.05:
                raise
            kind = "no answer"
        outcome[group][kind] = outcome[group].get(kind, 0) + 1
    # Abortive closes on both ends: these connections are done and must not leave
    # TIME_WAIT sockets behind (the served ones would, 2 x clients of them).
    for _, c in conns:
        sockstate.abortive_linger(c)
        lab.close(c)
    for a in accepted:
        lab.close(a)
    lab.close(kept)
    rows = []
    for group, name in ((0, "closed"), (1, "kept")):
        o = outcome[group]
        rows.append(
            GroupRow(
                name,
                clients,
                queued[group],
                o.get("reset", 0),
                o.get("served", 0),
                o.get("no answer", 0) + o.get("closed", 0),
            )
        )
    return rows, None


def restart_table(
    report: Report, rows: list[GroupRow], na: NA | None, s: Settings, clients: int
) -> None:
    t = report.table(
        "reuseport_restart",
        f"SO_REUSEPORT restart: two listeners on one port, {clients} clients queued on each, "
        "one listener closed",
        [
            col("listener"),
            col("steered", "clients steered to it"),
            col("queued", "accept queue before close"),
            col("reset", "reset (ECONNRESET)"),
            col("served", "served by the kept listener"),
            col("no_answer", "no answer or EOF"),
            col("tcp_migrate_req", "tcp_migrate_req"),
        ],
        keys=["listener"],
    )
    mig = setting_cell(s.migrate_req, "net.ipv4.tcp_migrate_req")
    if na is not None:
        t.add("-", clients, na, na, na, na, mig)
    for r in rows:
        t.add(r.listener, r.steered, r.queued, r.reset, r.served, r.no_answer, mig)


def restart_findings(report: Report, rows: list[GroupRow], s: Settings) -> str:
    if not rows:
        return ""
    closed = next(r for r in rows if r.listener == "closed")
    kept = next(r for r in rows if r.listener == "kept")
    total = closed.steered + kept.steered
    rule = (
        "tcp_migrate_req = 1 moves a closing listener's queue to another listener"
        if s.migrate_req == 1
        else f"tcp_migrate_req = {s.migrate_req}: a closing listener's queue is reset"
    )
    report.findings.append(
        f"SO_REUSEPORT restart ({rule}): closing one listener with {closed.queued} clients "
        f"in its accept queue reset {closed.reset} of them; the kept listener served "
        f"{closed.served + kept.served} of {total} clients ({kept.served} of its own "
        f"{kept.queued}, {closed.served} from the closed one)."
    )
    return (
        f"closing one of two SO_REUSEPORT listeners reset {closed.reset} of "
        f"{closed.steered} queued clients"
    )


@dataclass
class UserRow:
    second: str
    uid: Cell
    bind: Cell


def same_user(ctx: Ctx) -> list[UserRow]:
    """A SO_REUSEPORT listener of this user, then a second SO_REUSEPORT bind to its
    port by this user and by another one."""
    lab = ctx.lab
    if SO_REUSEPORT is None:
        na = NA("SO_REUSEPORT does not exist on this platform")
        return [UserRow("same_user", na, na), UserRow("other_user", na, na)]
    opt = SO_REUSEPORT

    def configure(s: socket.socket) -> None:
        s.setsockopt(socket.SOL_SOCKET, opt, 1)

    holder = lab.listener(backlog=1, configure=configure, role="SO_REUSEPORT holder")
    port = holder.getsockname()[1]
    me = os.geteuid()
    second = lab.open_socket()
    second.setsockopt(socket.SOL_SOCKET, opt, 1)
    try:
        second.bind(ctx.host.sockaddr(port))
        mine: Cell = "ok"
    except OSError as exc:
        mine = oserror_name(exc)
    lab.close(second)
    rows = [UserRow("same_user", me, mine)]
    if me != 0:
        na = NA(f"needs root to run a child as another user (this process runs as uid {me})")
        rows.append(UserRow("other_user", na, na))
    else:
        limit = ctx.deadline.timeout(5.0, "running the other-user child")
        proc = lab.process(
            [sys.executable, "-I", "-c", CHILD, ctx.host.address, str(port), str(OTHER_UID)]
        )
        try:
            out, err = proc.communicate(timeout=limit)
        except Exception:
            ctx.deadline.check("running the other-user child")
            raise
        text = out.decode(errors="replace").strip()
        other: Cell = (
            text
            if proc.returncode == 0 and text
            else NA(f"the child as uid {OTHER_UID} failed: {err.decode(errors='replace')[-120:]}")
        )
        rows.append(UserRow("other_user", OTHER_UID, other))
    lab.close(holder)
    return rows


def user_table(report: Report, rows: list[UserRow]) -> None:
    t = report.table(
        "reuseport_user",
        "SO_REUSEPORT needs the same user: a second SO_REUSEPORT bind to a SO_REUSEPORT "
        "listener's port",
        [col("second", "second socket's owner"), col("uid"), col("bind"), col("why")],
        keys=["second"],
    )
    for r in rows:
        if isinstance(r.bind, NA):
            why = r.bind.reason
        elif r.bind == "ok":
            why = "same effective uid as the listener: it joins the reuseport group"
        elif r.bind == "EADDRINUSE" and r.second == "other_user":
            why = "another uid: the kernel refuses to let it join (or hijack) the group"
        else:
            why = f"bind gave {r.bind}"
        t.add(r.second, r.uid, r.bind, why)


def user_findings(report: Report, rows: list[UserRow]) -> None:
    by = {r.second: r for r in rows}
    same, other = by.get("same_user"), by.get("other_user")
    if same is None or other is None:
        return
    if isinstance(other.bind, NA):
        report.findings.append(
            f"SO_REUSEPORT bind beside a listener of the same user: {same.bind}; "
            f"the other-user case was not run ({other.bind.reason})."
        )
    else:
        report.findings.append(
            f"SO_REUSEPORT bind beside a listener owned by uid {same.uid}: {same.bind} as "
            f"the same user, {other.bind} as uid {other.uid}."
        )
