"""`--retry-wait S`: what becomes of the clients left in SYN_SENT once accept() runs.

After the admission drain, keep accepting for S seconds and watch the clients that were
left in SYN_SENT: when each SYN retransmission happened (tcpi_total_retrans grows), when
the server's accept() returned each one (matched by address: a client that is
ESTABLISHED on its own side may still be unknown to the server), and whether any was
refused or gave up.

Retransmitted SYNs of many waiting clients arrive together: the first ones become
half-open requests, those beyond the backlog get SYN cookies (tcp_syncookies 1). A cookie
client reaches ESTABLISHED on its side, but when its final ACK meets a full accept queue
the listener drops it (kernel/overflow.py), and the client learns nothing until it sends.
"""

from __future__ import annotations

import errno
import socket
import statistics
import time
from collections import Counter
from dataclasses import dataclass

from sockprobe import kernel
from sockprobe.kernel.backlog import listener_view
from sockprobe.lab import Address, Lab
from sockprobe.probes import plural
from sockprobe.probes.backlog.admission import Row, delta, drain, na_none
from sockprobe.probes.backlog.clients import TCP_SYN_SENT, Client, classify, note_retrans
from sockprobe.report import CONTEXT, VOLATILE, Report, col


@dataclass
class Retry:
    backlog: int
    waited_s: float
    pending: int
    #: Seconds after connect() at which accept() returned each client that got in.
    accepted_at: list[float]
    retrans_needed: list[int]
    #: k -> times (s after connect()) at which clients' k-th SYN retransmission was seen.
    retrans_at: dict[int, list[float]]
    #: ESTABLISHED on the client's side, never accepted by the server.
    client_only: int
    refused: int
    timed_out: int
    other: Counter[str]
    still: int
    accepted: int
    overflows: int | None
    cookies: int | None
    #: The listener's own drop counter over the wait (dropped SYNs and final ACKs).
    listener_drops: int | None


def _cookie_counters() -> tuple[int | None, int | None]:
    tcpext = kernel.netstat_counters().get("TcpExt", {})
    return tcpext.get("ListenOverflows"), tcpext.get("SyncookiesSent")


def _accept_known(
    lab: Lab, lst: socket.socket, by_addr: dict[Address, Client], pending: list[Client]
) -> int:
    """Accept what is queued; note when each watched client got in, and how many SYN
    retransmissions it had needed by then (its tcpi_total_retrans)."""
    peers = drain(lab, lst)
    for peer in peers:
        c = by_addr.get(peer)
        if c is None or c.accepted_s is not None:
            continue
        now = time.monotonic()
        c.accepted_s = now - c.t0
        info = kernel.tcp_info(c.sock)
        if info is not None:
            note_retrans(c, info, now)
        c.accepted_retrans = c.retrans
        if c in pending:
            pending.remove(c)
    return len(peers)


def watch(lab: Lab, lst: socket.socket, row: Row, wait: float) -> Retry:
    """Keep accepting for `wait` seconds and follow the clients left in SYN_SENT.

    A client "got in" when the server's accept() returned its connection (matched by
    address), not when the client reached ESTABLISHED: a client can complete its side
    of the handshake while the server drops its final ACK (the accept queue was full
    when it came), and the client cannot tell until it sends.
    """
    waiting = [c for c in row.clients if c.cls == "connecting"]
    n_pending = len(waiting)
    by_addr = {c.sock.getsockname()[:2]: c for c in waiting}
    # Some may have got in already, while the first accept() drained the queue.
    pending = [c for c in waiting if c.accepted_s is None]
    before = _cookie_counters()
    drops_before = listener_view(lst, proc=False).drops
    t_start = time.monotonic()
    end = t_start + lab.deadline.timeout(wait, "watching SYN retransmissions")
    accepted = 0
    refused = timed_out = 0
    other: Counter[str] = Counter()
    while True:
        accepted += _accept_known(lab, lst, by_addr, pending)
        now = time.monotonic()
        for c in list(pending):
            info = kernel.tcp_info(c.sock)
            if info is not None:
                note_retrans(c, info, now)
                if info.state == TCP_SYN_SENT:
                    continue
            cls, detail = classify(c)
            if cls == "connecting":
                continue
            if cls == "established":
                # Still waiting for the server to accept it: keep it pending.
                if c.established_s is None:
                    c.established_s = now - c.t0
                continue
            pending.remove(c)
            if cls == "refused":
                refused += 1
            elif c.error == errno.ETIMEDOUT:
                timed_out += 1
            else:
                other[detail] += 1
        if not pending or now >= end:
            break
        # Polling thousands of clients takes time of its own: keep it to about half
        # of the wall clock.
        interval = max(0.01, 2 * (time.monotonic() - now))
        time.sleep(min(interval, max(0.0, end - time.monotonic())))
    if pending:
        # The wait ended early only if the deadline cut it: then the counts are partial.
        lab.deadline.check("watching SYN retransmissions")
    accepted += _accept_known(lab, lst, by_addr, pending)
    after = _cookie_counters()
    drops_after = listener_view(lst, proc=False).drops
    got_in = [c for c in by_addr.values() if c.accepted_s is not None]
    by_index: dict[int, list[float]] = {}
    for c in by_addr.values():
        for k, t in enumerate(c.retrans_at, start=1):
            by_index.setdefault(k, []).append(t)
    client_only = sum(1 for c in pending if c.established_s is not None)
    return Retry(
        backlog=row.backlog,
        waited_s=time.monotonic() - t_start,
        pending=n_pending,
        accepted_at=sorted(c.accepted_s for c in got_in if c.accepted_s is not None),
        retrans_needed=sorted(c.accepted_retrans for c in got_in),
        retrans_at=by_index,
        client_only=client_only,
        refused=refused,
        timed_out=timed_out,
        other=other,
        still=len(pending) - client_only,
        accepted=accepted,
        overflows=delta(before[0], after[0]),
        cookies=delta(before[1], after[1]),
        listener_drops=delta(drops_before, drops_after),
    )


# -- table ----------------------------------------------------------------------------------
def times_text(values: list[float]) -> str:
    """[1.01, 1.02, 2.03] -> '1.0 x2, 2.0' (tenths of a second)."""
    if not values:
        return "-"
    groups = Counter(round(v, 1) for v in values)
    return ", ".join(f"{t:.1f} x{n}" if n > 1 else f"{t:.1f}" for t, n in sorted(groups.items()))


def _ints(values: list[int]) -> str:
    if not values:
        return "-"
    groups = Counter(values)
    return ", ".join(f"{v} x{n}" if n > 1 else f"{v}" for v, n in sorted(groups.items()))


def _schedule(retry: Retry) -> str:
    """Median time of the k-th SYN retransmission over the clients that made one."""
    if not retry.retrans_at:
        return "-"
    return ", ".join(f"{statistics.median(ts):.1f}" for _, ts in sorted(retry.retrans_at.items()))


def table(report: Report, wait: float, retries: list[Retry], diag_reason: str) -> None:
    rt = report.table(
        "retries",
        f"After accept(): the clients left in SYN_SENT, watched for {wait:g} s while the "
        "server kept accepting",
        [
            col("backlog", "requested backlog"),
            col("pending", "left in SYN_SENT"),
            col("got_in", "got in (accepted)", kind=VOLATILE),
            col("accepted_at", "accepted at", "s after connect", VOLATILE),
            col("retrans_needed", "SYN retransmissions needed", kind=VOLATILE),
            col(
                "retrans_seen_at",
                "SYN retransmissions seen at (median)",
                "s after connect",
                VOLATILE,
            ),
            col("client_only", "ESTABLISHED on client side only", kind=VOLATILE),
            col("refused", "refused (RST)", kind=VOLATILE),
            col("timed_out", "timed out", kind=VOLATILE),
            col("still_waiting", "still SYN_SENT", kind=VOLATILE),
            col("accepted_during_wait", "accepted during wait", kind=VOLATILE),
            col("listener_drops", "listener drops Δ (sk_drops)", kind=VOLATILE),
            col("syncookies_sent", "SyncookiesSent Δ (this netns)", kind=CONTEXT),
        ],
        keys=["backlog"],
    )
    no_counter = "/proc/net/netstat TcpExt is not readable here"
    for rr in retries:
        rt.add(
            rr.backlog,
            rr.pending,
            len(rr.accepted_at),
            times_text(rr.accepted_at),
            _ints(rr.retrans_needed),
            _schedule(rr),
            rr.client_only,
            rr.refused,
            rr.timed_out,
            rr.still,
            rr.accepted,
            na_none(rr.listener_drops, diag_reason),
            na_none(rr.cookies, no_counter),
        )


def finding(rr: Retry) -> str:
    if rr.pending == 0:
        return f"listen({rr.backlog}): no client was left in SYN_SENT to watch."
    text = (
        f"listen({rr.backlog}): after accept() emptied the queue and went on accepting, "
        f"{len(rr.accepted_at)} of the {rr.pending} clients left in SYN_SENT got in through "
        f"SYN retransmission during the {rr.waited_s:.1f} s wait"
    )
    if rr.accepted_at:
        text += (
            f" (accepted at {times_text(rr.accepted_at)} s after connect(), after "
            f"{_ints(rr.retrans_needed)} SYN retransmission(s))"
        )
    text += f"; {rr.still} still in SYN_SENT, {rr.refused} refused, {rr.timed_out} timed out"
    if rr.other:
        text += ", " + ", ".join(f"{k} x{v}" for k, v in rr.other.items())
    if rr.retrans_at:
        text += f"; SYN retransmissions were seen at {_schedule(rr)} s after connect()"
    text += "."
    if rr.client_only:
        them = "it" if rr.client_only == 1 else "them"
        text += (
            f" {plural(rr.client_only, 'client')} reached ESTABLISHED on the client side, "
            f"yet the server never accepted {them}"
        )
        if rr.listener_drops is not None and rr.listener_drops >= rr.client_only:
            text += (
                f": their SYNs were answered, and the listener counted {rr.listener_drops} "
                "drops during the wait, which leaves their final ACKs as the dropped packets"
            )
        ns = []
        if rr.cookies is not None:
            ns.append(f"SyncookiesSent rose by {rr.cookies}")
        if rr.overflows is not None:
            ns.append(f"ListenOverflows by {rr.overflows}")
        text += (" (in this network namespace, " + " and ".join(ns) + ")" if ns else "") + "."
    return text
