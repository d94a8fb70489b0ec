"""A peer that is alive but stopped reading: the writer blocks, and who notices?

The peer's receive buffer fills, it advertises a zero window, and the writer's kernel
probes the window on the RTO backoff schedule (tcp_probe_timer(), net/ipv4/tcp_timer.c).
The peer's kernel answers every probe, so by RFC 1122 4.2.2.17 the writer may wait
forever, and Linux does: with no option the blocked send() never ends. The keepalive
timer stands aside while data waits to be sent (`packets_out || !tcp_write_queue_empty`
in tcp_keepalive_timer()), so SO_KEEPALIVE changes nothing here. TCP_USER_TIMEOUT is the
one setting that ends it: tcp_probe_timer() aborts once the window has been probed for
that long, even though every probe was answered.
"""

from __future__ import annotations

import socket
import time

from sockprobe.kernel import deadpeer
from sockprobe.lab import Lab
from sockprobe.probes.dead_peer._case import Armed, Case, Outcome, table
from sockprobe.probes.dead_peer.params import Params
from sockprobe.report import Report

#: Requested buffer sizes (the kernel doubles them, socket(7)): small, so they fill in
#: one sendall() and the window closes within milliseconds.
SMALL_BUF = 8192
#: Far more than both buffers hold, so sendall() must block.
WRITE_BYTES = 4 * 1024 * 1024


def _writer(lab: Lab, p: Params, option: str) -> Armed:
    def small_send(s: socket.socket) -> None:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_BUF)

    def small_recv(s: socket.socket) -> None:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUF)

    writer, reader = lab.tcp_pair(small_send, small_recv, name=f"zero window, {option}")
    if option == "keepalive":
        deadpeer.set_keepalive(writer, *p.keepalive)
    elif option == "user_timeout":
        deadpeer.set_user_timeout(writer, p.user_timeout)
    data = b"z" * WRITE_BYTES
    return Armed(writer, lambda: writer.sendall(data), time.perf_counter(), [reader])


def cases(p: Params) -> list[Case]:
    idle, intvl, cnt = p.keepalive
    call = f"sendall() {WRITE_BYTES // (1024 * 1024)} MiB"
    return [
        Case(
            "zero_window_none",
            "none",
            call,
            lambda lab, q: _writer(lab, q, "none"),
            None,
            "the peer answers window probes",
        ),
        Case(
            "zero_window_keepalive",
            f"SO_KEEPALIVE {idle}/{intvl}/{cnt}",
            call,
            lambda lab, q: _writer(lab, q, "keepalive"),
            None,
            "keepalive waits while data is queued",
        ),
        Case(
            "zero_window_user_timeout",
            f"TCP_USER_TIMEOUT {p.user_timeout} ms",
            call,
            lambda lab, q: _writer(lab, q, "user_timeout"),
            p.user_timeout / 1000,
            "1st window probe + timeout",
        ),
    ]


def report_on(report: Report, out: dict[str, Outcome], p: Params) -> None:
    table(
        report,
        "zero_window",
        "A live peer that stopped reading: a blocked sendall()",
        [out[c.id] for c in cases(p)],
    )
