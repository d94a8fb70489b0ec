"""Plumbing the nagle experiments share: socket set-up per mode, segment counts from
TCP_INFO, bounded reads, and the words used for each mode."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

from sockprobe import kernel
from sockprobe.lab import Deadline, Lab, Worker, pair_or_unsupported
from sockprobe.probes.nagle.params import TCP_CORK

RECV_SIZE = 65536
#: TCP_ATO_MIN / TCP_DELACK_MIN and TCP_DELACK_MAX (include/net/tcp.h): 40 ms, 200 ms.
TCP_ATO_MIN_MS = 40.0
TCP_DELACK_MAX_MS = 200.0


def route_rto_min_ms(host: str) -> float | None:
    """The locked rto_min of the route to `host` (`ip route ... rto_min`), or None."""
    if not kernel.IS_LINUX:
        return None
    from sockprobe.kernel import route

    try:
        return route.rto_min_ms(host)
    except OSError:
        return None


def delack_max_ms(rto_min_ms: float | None) -> float:
    """tcp_delack_max() (include/net/tcp.h): TCP_DELACK_MAX, or the route's rto_min when
    that is lower. tcp_send_delayed_ack() (tcp_output.c) caps a receiver's delayed-ACK
    timer at it whenever the connection is interactive or the segment was pushed (all
    the experiments here). Measured on Linux 6.18 in a network namespace: a loopback
    route with rto_min 10ms makes the write-write-read stall about 10 ms instead of 40."""
    return TCP_DELACK_MAX_MS if rto_min_ms is None else min(TCP_DELACK_MAX_MS, rto_min_ms)


def stall_ms(rto_min_ms: float | None) -> float:
    """A round trip or an ACK delay at least this long counts as stalled on a delayed
    ACK: three quarters of the shortest timer the receiver would arm, TCP_ATO_MIN or
    the route's delayed-ACK cap if lower (a loopback round trip without it is tens of
    microseconds; a quarter of margin leaves room for an early timer tick)."""
    return 0.75 * min(TCP_ATO_MIN_MS, delack_max_ms(rto_min_ms))


NO_TCP_INFO = "TCP_INFO (tcpi_data_segs_out) is not available on this platform"

LABELS = {
    "nagle": "with Nagle",
    "nodelay": "with TCP_NODELAY",
    "cork": "with TCP_CORK",
    "cork-held": "with TCP_CORK held",
    "one-send": "with one send() of the whole request",
    "sendmsg": "with one sendmsg() of two buffers",
    "msg-more": "with MSG_MORE on the first piece",
    "quickack-once": "with TCP_QUICKACK set once on the server",
    "quickack-rearmed": "with TCP_QUICKACK re-armed after every server recv()",
}


def configure(mode: str) -> Callable[[socket.socket], None]:
    def apply(s: socket.socket) -> None:
        if mode == "nodelay":
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    return apply


def corks(mode: str) -> bool:
    return mode in ("cork", "cork-held")


def cork(s: socket.socket, on: bool) -> None:
    assert TCP_CORK is not None
    s.setsockopt(socket.IPPROTO_TCP, TCP_CORK, 1 if on else 0)


def pair(lab: Lab, mode: str, name: str) -> tuple[socket.socket, socket.socket]:
    """A fresh connected pair whose client is set up for `mode`; Unsupported (exit 3,
    the errno named) when this machine cannot make loopback connections now."""
    return pair_or_unsupported(lab, name, configure_client=configure(mode), name=name)


Sent = tuple[int, int]


def sent(s: socket.socket) -> Sent | None:
    """(tcpi_data_segs_out, tcpi_total_retrans) of a sender: data segments sent so far,
    retransmissions included, and how many of them were retransmissions (tcp(7))."""
    info = kernel.tcp_info(s)
    if info is None or info.data_segs_out is None:
        return None
    return info.data_segs_out, info.total_retrans


def delta(before: Sent | None, after: Sent | None) -> tuple[int | None, int | None]:
    """(new data segments, retransmitted segments) between two `sent` snapshots."""
    if before is None or after is None:
        return None, None
    retrans = after[1] - before[1]
    return after[0] - before[0] - retrans, retrans


def wait_drained(s: socket.socket, deadline: Deadline, cap: float = 3.0) -> None:
    """Wait until everything written has been sent and acknowledged (TCP_INFO
    notsent_bytes == 0 and unacked == 0), so the segment count is final. Off Linux a
    short pause stands in."""
    end = time.monotonic() + deadline.timeout(cap, "waiting for the send queue to drain")
    while time.monotonic() < end:
        info = kernel.tcp_info(s)
        if info is None:
            time.sleep(0.05)
            return
        if not info.notsent_bytes and info.unacked == 0:
            return
        time.sleep(0.0005)
    deadline.check("waiting for the send queue to drain")


def recv_exact(s: socket.socket, total: int, deadline: Deadline, doing: str) -> list[int]:
    """Read `total` bytes; return the size of every recv() that returned data."""
    sizes: list[int] = []
    got = 0
    while got < total:
        s.settimeout(deadline.timeout(5.0, doing))
        chunk = s.recv(RECV_SIZE)
        if not chunk:
            raise ConnectionError(f"peer closed after {got} of {total} bytes while {doing}")
        sizes.append(len(chunk))
        got += len(chunk)
    return sizes


def result(w: Worker, deadline: Deadline, doing: str) -> Any:
    """Join a Lab worker and return its result, re-raising its exception. The worker's
    socket calls are bounded by the deadline too, so a join that runs out means the
    deadline did (or the thread hung, which is a bug worth a clear message)."""
    if not w.join(deadline.timeout(5.0, doing)):
        deadline.check(doing)
        raise RuntimeError(f"the thread {doing} did not finish within 5 s")
    if w.error is not None:
        raise w.error
    return w.result


def ms(v: float) -> str:
    return f"{v:.3f}" if v < 1 else f"{v:.1f}"
