"""TCP_DEFER_ACCEPT: accept() does not see a connection until its first data arrives.

A listener with TCP_DEFER_ACCEPT (tcp(7)) drops a client's bare final ACK and keeps the
half-open request (`tcp_check_req()` sets `acked`), so the client is ESTABLISHED on its
side while accept() and poll() on the listener see nothing; the first data segment
completes the handshake, and accept() returns a connection with the data already queued.
A client that sends nothing is let in only after the request's SYN-ACK has been resent
as often as the option's seconds convert to (kernel/synretry.py): the client's answer to
the last one creates the connection. A server-speaks-first protocol (SMTP, FTP, SSH
banners) under TCP_DEFER_ACCEPT therefore waits that long for every client.

Two clients, each on its own listener with TCP_DEFER_ACCEPT 1: one sends a byte at once;
one sends nothing (only with `--defer-wait`: it takes about a second).
"""

from __future__ import annotations

import select
import socket
import time
from dataclasses import dataclass

from sockprobe import kernel
from sockprobe.kernel import synretry
from sockprobe.kernel.backlog import listener_view
from sockprobe.lab import Lab
from sockprobe.probes.backlog.clients import TCP_ESTABLISHED, open_client, tcp_state, until
from sockprobe.report import NA, VOLATILE, Cell, Report, col
from sockprobe.status import Unsupported

DEFER_S = 1
#: Past the stated time, how long the silent client is waited for.
GRACE_S = 1.0


@dataclass
class Deferred:
    client: str
    readback: int | None
    client_established: bool
    half_open: int | None
    queue: int | None
    #: Seconds from the client's connect() (silent) or its send() (data) to the
    #: listener becoming readable; None if it never did.
    acceptable_s: float | None
    stated_s: float | None
    data_at_accept: int | None


def _readable(lst: socket.socket, timeout: float) -> bool:
    return bool(select.select([lst], [], [], timeout)[0])


def _one(lab: Lab, silent: bool) -> Deferred:
    lst = lab.listener(
        backlog=8,
        configure=lambda s: s.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, DEFER_S),
        role=f"defer-accept listener ({'silent' if silent else 'data'} client)",
    )
    readback = lst.getsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT)
    c = open_client(lab)
    t0 = time.monotonic()
    c.connect_ex(lst.getsockname())
    established = until(lab, lambda: tcp_state(c) == TCP_ESTABLISHED, "the handshake")
    # The final ACK reaches the listener in the same softirq pass on loopback; a short
    # look at the listener shows what it kept.
    time.sleep(0.005)
    view = listener_view(lst, proc=False)
    stated: float | None = None
    if silent:
        stated = synretry.defer_accept_promotes_after(DEFER_S)
        wait = lab.deadline.timeout(stated + GRACE_S, "waiting for a silent deferred client")
        ok = _readable(lst, max(0.0, wait - (time.monotonic() - t0)))
        acceptable = time.monotonic() - t0 if ok else None
    else:
        before = _readable(lst, 0)
        if before:
            acceptable = 0.0
        else:
            t0 = time.monotonic()
            c.send(b"x")
            ok = _readable(lst, lab.deadline.timeout(0.5, "a deferred accept"))
            acceptable = time.monotonic() - t0 if ok else None
    data: int | None = None
    if acceptable is not None:
        lst.setblocking(False)
        s, _ = lst.accept()
        lab.adopt(s)
        data = kernel.inq(s)
    return Deferred(
        "silent" if silent else "data",
        readback,
        established,
        view.half_open,
        view.queue,
        acceptable,
        stated,
        data,
    )


def measure(lab: Lab, silent: bool) -> list[Deferred]:
    if not hasattr(socket, "TCP_DEFER_ACCEPT"):
        raise Unsupported("TCP_DEFER_ACCEPT is Linux's")
    out = [_one(lab, False)]
    if silent:
        out.append(_one(lab, True))
    return out


def table(report: Report, rows: list[Deferred]) -> None:
    t = report.table(
        "defer_accept",
        f"TCP_DEFER_ACCEPT {DEFER_S}: when accept() sees a client",
        [
            col("client"),
            col("readback", "option read back", "s"),
            col("client_established", "client ESTABLISHED"),
            col("half_open", "server half-open (SYN_RECV)"),
            col("queue", "accept queue"),
            col("acceptable_ms", "acceptable after", "ms", VOLATILE),
            col("stated_ms", "stated (rule)", "ms"),
            col("data_at_accept", "bytes queued at accept", "B"),
        ],
        keys=["client"],
    )
    for r in rows:
        never = NA("accept() never saw it")
        cells: list[Cell] = [
            r.client,
            r.readback,
            r.client_established,
            NA("sock_diag did not report it") if r.half_open is None else r.half_open,
            NA("sock_diag did not report it") if r.queue is None else r.queue,
            never if r.acceptable_s is None else round(r.acceptable_s * 1000, 3),
            NA("counted from its send(): no timer")
            if r.stated_s is None
            else round(r.stated_s * 1000, 3),
            never if r.data_at_accept is None else r.data_at_accept,
        ]
        t.add(*cells)


def findings(report: Report, rows: list[Deferred]) -> None:
    data = next(r for r in rows if r.client == "data")
    if data.acceptable_s is not None:
        report.findings.append(
            f"TCP_DEFER_ACCEPT {DEFER_S}: the client was ESTABLISHED on its side while the "
            f"server kept {data.half_open} half-open request and an accept queue of "
            f"{data.queue}; its first byte made the connection acceptable "
            f"{data.acceptable_s * 1000:.2f} ms after send(), with {data.data_at_accept} B "
            "already queued at accept()."
        )
    silent = next((r for r in rows if r.client == "silent"), None)
    if silent is not None and silent.stated_s is not None:
        got = (
            f"became acceptable after {silent.acceptable_s:.2f} s"
            if silent.acceptable_s is not None
            else "never became acceptable"
        )
        report.findings.append(
            f"A client that sends nothing {got} (the rule: after the request's SYN-ACK was "
            f"resent {synretry.defer_accept_retransmits(DEFER_S)} time(s), "
            f"{silent.stated_s:g} s); a server-speaks-first protocol would wait that long "
            "for every client."
        )
