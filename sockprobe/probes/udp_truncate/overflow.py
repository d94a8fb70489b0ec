"""Receive-queue overflow: a burst into a receiver that does not read, one case per
SO_RCVBUF.

A datagram that meets a full receive queue is dropped whole at arrival and the sender is
not told (__udp_enqueue_schedule_skb() in net/ipv4/udp.c compares the memory already
charged to the socket with sk_rcvbuf and, when over, counts the drop in sk_drops; the
caller counts Udp RcvbufErrors). SO_RCVBUF is doubled by the kernel (__sock_set_rcvbuf()
in net/core/sock.c: the value, capped at net.core.rmem_max, times two, at least
SOCK_MIN_RCVBUF) and each queued datagram is charged its buffer's truesize, not only its
payload, so far fewer datagrams fit than SO_RCVBUF / size suggests.

Drops are counted for that one socket twice, independently: the "drops" column of
/proc/net/udp (sk_drops, matched by the socket's inode) and SO_RXQ_OVFL, whose control
message on the next datagram queued after the burst carries the socket's cumulative drop
count (sock_recv_drops() in net/core/sock.c; socket(7)). The Udp RcvbufErrors delta of
this network namespace is shown beside them as context only: every other socket in the
namespace moves it too.
"""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass

from sockprobe import kernel
from sockprobe.kernel import udp
from sockprobe.lab import Lab
from sockprobe.probes.udp_truncate.common import (
    ARRIVAL_CAP,
    NO_COUNTERS,
    NO_PROC,
    NO_RXQ_OVFL,
    counter_group,
    n,
    pattern,
    udp_counter,
    wait_for,
)
from sockprobe.probes.udp_truncate.params import Params
from sockprobe.report import CONTEXT, NA, VOLATILE, Bars, Cell, Report, col

MARKER = b"\xff\xff\xff\xffmarker"


def expected_rcvbuf(requested: int, rmem_max: int | None, floor: int | None = None) -> int | None:
    """SO_RCVBUF as __sock_set_rcvbuf() (net/core/sock.c) sets it: the request capped at
    net.core.rmem_max, doubled, and raised to SOCK_MIN_RCVBUF (2048 + the size of
    struct sk_buff, so it depends on the build: `floor`, read back by min_rcvbuf()).
    Without the floor the rule is stated only from 4,096 B requested; without rmem_max
    not at all (None)."""
    if rmem_max is None:
        return None
    doubled = min(requested, rmem_max) * 2
    if floor is None:
        return doubled if requested >= 4096 else None
    return max(doubled, floor)


def min_rcvbuf(lab: Lab) -> int:
    """SOCK_MIN_RCVBUF as this kernel has it: what SO_RCVBUF 0 reads back (the floor
    __sock_set_rcvbuf() raises every request to)."""
    s = lab.open_socket(socket.SOCK_DGRAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 0)
        return int(s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))
    finally:
        lab.close(s)


@dataclass
class Case:
    rcvbuf_requested: int
    sent: int
    send_errors: int
    rcvbuf: int
    queued_bytes: int | None
    delivered: int
    delivered_seqs: list[int]
    proc_drops: int | None
    ovfl_drops: Cell
    ns_rcvbuf_errors: int | None
    #: net.core.rmem_max when the case ran (host-wide: not settable per namespace).
    rmem_max: int | None = None
    #: SOCK_MIN_RCVBUF, read back (see min_rcvbuf).
    min_rcvbuf: int | None = None

    @property
    def dropped(self) -> int | None:
        """The socket's own count: /proc/net/udp, else SO_RXQ_OVFL."""
        if self.proc_drops is not None:
            return self.proc_drops
        return self.ovfl_drops if isinstance(self.ovfl_drops, int) else None


def measure_one(lab: Lab, p: Params, rcvbuf_requested: int) -> Case:
    rx = lab.open_socket(socket.SOCK_DGRAM)
    # Before any datagram arrives: the queue limit is checked as each one is queued.
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf_requested)
    have_ovfl = udp.enable_rxq_ovfl(rx)
    rx.bind(lab.host.sockaddr(0))
    tx = lab.open_socket(socket.SOCK_DGRAM)
    tx.connect(rx.getsockname())
    lab.record(f"overflow receiver (SO_RCVBUF {rcvbuf_requested})", rx)
    lab.record("overflow sender", tx)
    rcvbuf = rx.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    body = pattern(p.burst_size - 4)
    before = udp_counter(lab.host.family, "RcvbufErrors")
    errors = 0
    tx.settimeout(wait_for(lab, 2.0, "sending the burst"))
    for seq in range(p.burst):
        lab.deadline.check("sending the burst")
        try:
            tx.send(seq.to_bytes(4, "big") + body)
        except (BlockingIOError, TimeoutError):
            errors += 1  # the sender's own buffer was full; counted, not retried
        except OSError as exc:
            if exc.errno not in (errno.ENOBUFS, errno.EAGAIN):
                raise
            errors += 1
    after = udp_counter(lab.host.family, "RcvbufErrors")
    # Read the per-socket counters before draining (draining does not reset them).
    row = udp.proc_row(rx)
    seqs: list[int] = []
    rx.setblocking(False)
    space = udp.rxq_ovfl_space() if have_ovfl else 0
    while True:
        try:
            data, _anc, _flags, _addr = rx.recvmsg(p.burst_size, space)
        except BlockingIOError:
            break
        seqs.append(int.from_bytes(data[:4], "big"))
        lab.deadline.check("draining the burst")
    ovfl: Cell = NA(NO_RXQ_OVFL)
    if have_ovfl:
        # The drop count is stamped on a datagram when it is queued, so send one more now
        # that there is room: it carries the socket's cumulative count.
        tx.send(MARKER)
        rx.settimeout(wait_for(lab, ARRIVAL_CAP, "reading the SO_RXQ_OVFL marker"))
        _data, anc, _flags, _addr = rx.recvmsg(p.burst_size, space)
        dropped = udp.rxq_ovfl_drops(anc)
        ovfl = 0 if dropped is None else dropped  # no cmsg: nothing had been dropped
    lab.close(tx)
    lab.close(rx)
    return Case(
        rcvbuf_requested=rcvbuf_requested,
        sent=p.burst - errors,
        send_errors=errors,
        rcvbuf=rcvbuf,
        queued_bytes=None if row is None else row.rx_queue,
        delivered=len(seqs),
        delivered_seqs=seqs,
        proc_drops=None if row is None else row.drops,
        ovfl_drops=ovfl,
        ns_rcvbuf_errors=None if before is None or after is None else after - before,
        rmem_max=kernel.sysctl_int("net.core.rmem_max"),
    )


def measure(lab: Lab, p: Params) -> list[Case]:
    floor = min_rcvbuf(lab)
    cases = [measure_one(lab, p, b) for b in p.burst_rcvbuf]
    for c in cases:
        c.min_rcvbuf = floor
    return cases


def add_table(report: Report, p: Params, family: int, cases: list[Case]) -> None:
    group = counter_group(family)
    t = report.table(
        "overflow",
        f"Receive-queue overflow: {p.burst:,} datagrams of {p.burst_size:,} B per case, "
        "receiver not reading",
        [
            col("rcvbuf_requested", "SO_RCVBUF requested", "B"),
            col("rcvbuf_effective", "SO_RCVBUF effective", "B"),
            col("sent", "sent", "datagrams", VOLATILE),
            col("queued_bytes", "queued (/proc rx_queue)", "B", VOLATILE),
            col("delivered", "delivered", "datagrams", VOLATILE),
            col("dropped_proc", "dropped (/proc/net/udp, this socket)", "datagrams", VOLATILE),
            col("dropped_rxq_ovfl", "dropped (SO_RXQ_OVFL, this socket)", "datagrams", VOLATILE),
            col(
                "rcvbuf_errors_delta",
                f"{group} RcvbufErrors Δ (this network namespace)",
                "",
                CONTEXT,
            ),
            col("send_errors", "send() errors", "datagrams", VOLATILE),
        ],
        keys=["rcvbuf_requested"],
    )
    chart = Bars(
        "overflow",
        f"Receive-queue overflow: each burst of {p.burst:,} sent = delivered + dropped",
        "datagrams",
    )
    for c in cases:
        if c.sent == 0:
            none = NA(f"no datagram of the burst was sent ({c.send_errors} send() errors)")
            t.add(c.rcvbuf_requested, c.rcvbuf, 0, none, none, none, none, none, c.send_errors)
            continue
        t.add(
            c.rcvbuf_requested,
            c.rcvbuf,
            c.sent,
            NA(NO_PROC) if c.queued_bytes is None else c.queued_bytes,
            c.delivered,
            NA(NO_PROC) if c.proc_drops is None else c.proc_drops,
            c.ovfl_drops,
            NA(NO_COUNTERS) if c.ns_rcvbuf_errors is None else c.ns_rcvbuf_errors,
            c.send_errors,
        )
        dropped = c.dropped
        if dropped is not None:
            chart.add(
                f"SO_RCVBUF {c.rcvbuf_requested:,}",
                ("delivered", c.delivered),
                ("dropped", dropped),
            )
    if chart.bars:
        report.charts.append(chart)


def _ranges(seqs: list[int]) -> str:
    """[0, 1, 2, 5] -> '0-2, 5'."""
    if not seqs:
        return "none"
    out: list[str] = []
    start = prev = seqs[0]
    for s in [*seqs[1:], None]:
        if s is not None and s == prev + 1:
            prev = s
            continue
        out.append(f"{start}" if start == prev else f"{start}-{prev}")
        if s is not None:
            start = prev = s
    return ", ".join(out)


def add_findings(report: Report, p: Params, family: int, cases: list[Case]) -> list[str]:
    group = counter_group(family)
    heads: list[str] = []
    for c in cases:
        drops: list[str] = []
        if c.proc_drops is not None:
            drops.append(f"/proc/net/udp drops {n(c.proc_drops)}")
        if isinstance(c.ovfl_drops, int):
            drops.append(f"SO_RXQ_OVFL on the next datagram {n(c.ovfl_drops)}")
        dropped = c.dropped
        ns = (
            f" {group} RcvbufErrors of this network namespace rose by "
            f"{n(c.ns_rcvbuf_errors)} meanwhile (every socket in the namespace counts there)."
            if c.ns_rcvbuf_errors is not None
            else ""
        )
        rule = expected_rcvbuf(c.rcvbuf_requested, c.rmem_max, c.min_rcvbuf)
        doubled = min(c.rcvbuf_requested, c.rmem_max or 0) * 2
        floored = (
            c.min_rcvbuf is not None
            and c.rmem_max is not None
            and min(c.rcvbuf_requested, c.rmem_max) * 2 < c.min_rcvbuf
        )
        why = (
            f": the kernel's floor SOCK_MIN_RCVBUF (what SO_RCVBUF 0 reads back), as "
            f"min(requested, net.core.rmem_max) x 2 = {n(doubled)} is below it"
            if floored and rule == c.rcvbuf
            else f", as min(requested, net.core.rmem_max {n(c.rmem_max or 0)}) x 2 gives"
            if rule == c.rcvbuf
            else f"; the kernel's rule min(requested, rmem_max) x 2 gives {n(rule)}"
            if rule is not None
            else ""
        )
        if c.sent == 0:
            report.findings.append(
                f"SO_RCVBUF {n(c.rcvbuf_requested)}: no datagram of the burst was sent "
                f"(every send() failed, {n(c.send_errors)} errors), so nothing was measured."
            )
            continue
        report.findings.append(
            f"{n(c.sent)} datagrams of {n(p.burst_size)} B into a socket that did not read "
            f"(SO_RCVBUF {n(c.rcvbuf_requested)} requested, {n(c.rcvbuf)} effective{why}): "
            f"{n(c.delivered)} delivered (sequence {_ranges(c.delivered_seqs)}), "
            + (
                f"{n(dropped)} dropped by that socket ({'; '.join(drops)})."
                if dropped is not None
                else "drops not countable on this platform."
            )
            + ns
        )
    first = cases[0]
    if first.dropped is not None and first.sent > 0:
        heads.append(
            f"burst into SO_RCVBUF {n(first.rcvbuf_requested)}: {n(first.delivered)} of "
            f"{n(first.sent)} delivered, {n(first.dropped)} dropped"
        )
    return heads
