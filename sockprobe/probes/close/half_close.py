"""Half-close: shutdown(SHUT_WR) sends FIN and keeps the socket open for reading.

- half_close: the client shuts its writing side; the server reads EOF and can still
  reply, the client reads the reply; the client's own send then fails with EPIPE.
- fin_wait2 table: a half-closed socket whose fd is still open sits in FIN_WAIT2 with
  no timer at all, as long as the peer does not close (tcp_rcv_state_process(): the
  FIN_WAIT2 timeout is armed only for an orphan, SOCK_DEAD); the same end after close()
  is an orphan, kept for tcp_fin_timeout (tcp_fin_time(), at least 3.5 x RTO, and as a
  timewait mini-socket when 60 s or less). sock_diag reports both with their timer.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass

from sockprobe import kernel
from sockprobe.kernel import sockdiag, sockstate
from sockprobe.kernel.timewait import orphan_fin_wait2_timer
from sockprobe.lab import Lab
from sockprobe.probes.close.common import (
    RECV_SIZE,
    REPLY,
    REQUEST,
    SETTLE_S,
    Closer,
    Scenario,
    Step,
    find,
    peer_saw,
    recv,
    res,
    send,
    shutdown,
    wait_inq,
    wind_down,
)
from sockprobe.report import NA, VOLATILE, Cell, Report, col
from sockprobe.status import oserror_name

#: inet_diag_msg idiag_timer values (net/ipv4/inet_diag.c, tcp_diag).
DIAG_TIMERS = {0: "none", 1: "retransmit", 2: "keepalive", 3: "timewait", 4: "zero-window probe"}


def measure(lab: Lab, steps: list[Step], closers: list[Closer]) -> None:
    sc = Scenario(lab, "half_close", steps)
    sc.record_unread("client")
    sc.do("client", "shutdown(SHUT_WR)", shutdown(sc.client, socket.SHUT_WR), settle=("FIN_WAIT2",))
    peer = sc.settle("server", ("CLOSE_WAIT",))
    sc.do("server", f"recv({RECV_SIZE})", recv(sc.server))
    sc.do("server", f"send({REPLY!r})", send(sc.server, REPLY))
    wait_inq(sc.client, len(REPLY), lab.deadline)
    sc.do("client", f"recv({RECV_SIZE})", recv(sc.client))
    sc.do("client", f"send({len(REQUEST)} B)", send(sc.client, REQUEST))
    srv_tw, cli_tw = sc.finish()
    # Here the client closed first, so "closer" and "peer" swap sides.
    closers.append(
        Closer(sc.name, "client", "shutdown(SHUT_WR)", sc.unread, peer_saw(peer), cli_tw, srv_tw)
    )


@dataclass
class Fw2Row:
    case: str
    how: str
    state: Cell
    timer: Cell
    left_s: Cell
    rule_s: Cell


def _diag(lab: Lab, local: tuple[str, int], remote: tuple[str, int]) -> tuple[Cell, Cell, Cell]:
    """(state, timer kind, seconds left) of one socket, polled until FIN_WAIT2."""
    end = time.monotonic() + lab.deadline.timeout(SETTLE_S, "waiting for FIN_WAIT2")
    while True:
        try:
            found = [
                d
                for d in sockdiag.dump(
                    lab.host.family, port=local[1], remote_port=remote[1], meminfo=False
                )
                if d.remote[1] == remote[1]
            ]
        except OSError as exc:
            na = NA(f"sock_diag unavailable: {oserror_name(exc)}")
            return na, na, na
        d = found[0] if found else None
        if (d is not None and d.state == 5) or time.monotonic() >= end:
            break
        time.sleep(0.001)
    if d is None:
        na = NA("the socket was gone before it was read")
        return na, na, na
    return (
        kernel.tcp_state_name(d.state),
        DIAG_TIMERS.get(d.timer, str(d.timer)),
        round(d.expires_ms / 1000, 2),
    )


def fin_wait2(lab: Lab) -> list[Fw2Row]:
    if not kernel.IS_LINUX:
        na = NA("sock_diag is Linux only")
        return [Fw2Row("half_closed", "shutdown(SHUT_WR)", na, na, na, na)]
    rows = []
    fin_timeout = kernel.sysctl_int("net.ipv4.tcp_fin_timeout")
    for case, how in (("half_closed", "shutdown(SHUT_WR), fd open"), ("orphan", "close()")):
        client, server = lab.tcp_pair(name=f"FIN_WAIT2 {case}")
        info = kernel.tcp_info(client)
        rto = None if info is None else info.rto_us / 1e6
        local = (str(client.getsockname()[0]), int(client.getsockname()[1]))
        remote = (str(server.getsockname()[0]), int(server.getsockname()[1]))
        if case == "half_closed":
            client.shutdown(socket.SHUT_WR)
        else:
            lab.close(client)
        state, timer, left = _diag(lab, local, remote)
        rule: Cell = (
            NA("no timer: the fd is still open, so tcp_fin_timeout does not apply")
            if case == "half_closed"
            else _rule(orphan_fin_wait2_timer(fin_timeout, rto))
        )
        rows.append(Fw2Row(case, how, state, timer, left, rule))
        # Nothing more to show: reset both ends so neither leaves a TIME_WAIT.
        for s in (client, server):
            if s.fileno() != -1:
                sockstate.abortive_linger(s)
                lab.close(s)
        wind_down(lab, remote, local, f"FIN_WAIT2 {case}")
    return rows


def _rule(v: float | None) -> Cell:
    return NA("tcp_fin_timeout unreadable") if v is None else round(v, 2)


def fin_wait2_table(report: Report, rows: list[Fw2Row]) -> None:
    t = report.table(
        "fin_wait2",
        "FIN_WAIT2 with the fd open (half-closed) vs orphaned (closed), peer silent",
        [
            col("case"),
            col("how"),
            col("state"),
            col("timer", "timer (sock_diag)"),
            col("left_s", "timer left", "s", VOLATILE),
            col("rule_s", "first timer (kernel rule)", "s"),
        ],
        keys=["case"],
    )
    for r in rows:
        t.add(r.case, r.how, r.state, r.timer, r.left_s, r.rule_s)


def findings(report: Report, steps: list[Step], fw2: list[Fw2Row]) -> None:
    eof = find(steps, "half_close", "recv")
    reply = [s for s in steps if s.scenario == "half_close" and s.side == "client"]
    if eof is not None and len(reply) >= 3:
        report.findings.append(
            f"shutdown(SHUT_WR): the peer's recv {res(eof)} (state {eof.state}), its reply "
            f"{res(find(steps, 'half_close', 'send'))} and reached the half-closed side, whose "
            f"recv {res(reply[1])}; the half-closed side's own send {res(reply[2])}."
        )
    by = {r.case: r for r in fw2}
    half, orphan = by.get("half_closed"), by.get("orphan")
    fin = kernel.sysctl_int("net.ipv4.tcp_fin_timeout")
    # Above TCP_TIMEWAIT_LEN the first timer is a keepalive for (timeout - 60 s); a
    # FIN_WAIT2 timewait socket then holds the rest (tcp_rcv_state_process).
    then = ", then 60 s as a FIN_WAIT2 timewait socket" if fin is not None and fin > 60 else ""
    if half is not None and orphan is not None and not isinstance(half.state, NA):
        report.findings.append(
            f"A half-closed socket with its fd open sat in {half.state} with timer "
            f"{half.timer} (it stays until the peer closes or the program does); the same "
            f"end after close() was an orphan in {orphan.state} with timer {orphan.timer}, "
            f"{orphan.left_s} s left (the kernel's rule from tcp_fin_timeout = {fin}: "
            f"{orphan.rule_s} s{then})."
        )
