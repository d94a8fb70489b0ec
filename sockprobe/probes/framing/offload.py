"""Where "one send() is one read" stops holding: UDP_CORK, MSG_MORE, UDP_SEGMENT, UDP_GRO.

A default UDP or SOCK_SEQPACKET socket keeps the rule the boundaries table shows: each
send() is one datagram and each recv() returns one. Four Linux features change it, each
measured here on fresh loopback pairs (N = --offload-segments datagrams or sends):

- MSG_MORE on a UDP send(), and the UDP_CORK option (udp(7)): udp_sendmsg() in
  net/ipv4/udp.c appends the data to a pending datagram (the socket is "corked") and sends
  it only on a send without MSG_MORE, or when UDP_CORK is cleared: N sends, one datagram,
  one read.
- UDP_SEGMENT (a socket option or a per-sendmsg control message): udp_send_skb() marks the
  one buffer as a GSO packet of gso_size segments and the stack cuts it into separate
  datagrams of gso_size bytes (the last may be shorter): one send, N reads.
- UDP_GRO on the receiver: when a GSO packet reaches a socket that set it, udp_queue_rcv_skb()
  leaves it whole (udp_unexpected_gso() is false) and one recvmsg() returns all N segments'
  bytes, with the segment size in a SOL_UDP/UDP_GRO control message (udp_cmsg_recv()); a
  socket without it gets them cut back into N datagrams (udp_rcv_segment()). On a NIC,
  GRO can also glue separate datagrams of one flow (udp_gro_receive() in
  net/ipv4/udp_offload.c); loopback hands each packet up on its own (loopback_xmit() calls
  __netif_rx(), no GRO), which the `gro_separate` row measures.
- SOCK_SEQPACKET ignores MSG_MORE (unix_seqpacket_sendmsg() -> unix_dgram_sendmsg() has no
  corking): N sends are N reads.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field

from sockprobe.kernel import udp
from sockprobe.lab import Lab
from sockprobe.probes import plural
from sockprobe.probes.framing.params import Params
from sockprobe.report import NA, Cell, Report, col
from sockprobe.status import oserror_name

#: Bytes per datagram (or per corked send); the UDP_SEGMENT send is one segment short of
#: N full ones by SHORT bytes, so the last datagram shows it may be shorter.
SEGMENT = 1000
SHORT = 100
ARRIVAL_S = 1.0
MSG_MORE: int | None = getattr(socket, "MSG_MORE", None)

#: (case key, transport label, what is done); order of the table.
CASES = (
    ("default", "UDP", "N send() calls, no option"),
    ("msg_more", "UDP", "N send() calls, MSG_MORE on all but the last"),
    ("udp_cork", "UDP", "UDP_CORK on, N send() calls, UDP_CORK off"),
    ("udp_segment", "UDP", "one send() with UDP_SEGMENT gso_size"),
    ("udp_segment_gro", "UDP", "one send() with UDP_SEGMENT, receiver with UDP_GRO"),
    ("gro_separate", "UDP", "N send() calls, receiver with UDP_GRO"),
    ("seqpacket_msg_more", "UNIX seqpacket", "N send() calls, MSG_MORE on all but the last"),
)


@dataclass
class Row:
    case: str
    transport: str
    what: str
    send_calls: int = 0
    bytes_sent: int = 0
    read_sizes: list[int] = field(default_factory=list)
    #: Per read: the UDP_GRO segment size its control message carried, or None.
    read_gro: list[int | None] = field(default_factory=list)
    gro_size: int | None = None
    gro_set: bool = False
    na: str | None = None


def _drain(rx: socket.socket, lab: Lab, row: Row, expect: int) -> None:
    """Read until `expect` bytes came, waiting at most ARRIVAL_S in all. Loopback usually
    delivers inside send(), but under load the receive softirq may run later (in
    ksoftirqd), so every read may wait; a complete case never waits at all."""
    space = udp.gro_space() if row.gro_set else 0
    end = time.monotonic() + lab.deadline.timeout(ARRIVAL_S, "reading the offload case")
    got = 0
    while got < expect:
        left = end - time.monotonic()
        if left <= 0:
            break
        rx.settimeout(left)
        try:
            data, anc, _flags, _addr = rx.recvmsg(65536, space)
        except TimeoutError:
            break
        row.read_sizes.append(len(data))
        got += len(data)
        size = udp.gro_segment_size(anc)
        row.read_gro.append(size)
        if size is not None:
            row.gro_size = size


def _udp(lab: Lab, row: Row, n: int) -> None:
    tx, rx = lab.udp_pair()
    for ep in lab.endpoints[-2:]:
        ep["role"] = f"framing offload {row.case} {ep['role'].removeprefix('udp ')}"
    try:
        if row.case in ("udp_segment_gro", "gro_separate"):
            if udp.UDP_GRO is None:
                row.na = "UDP_GRO is Linux-only"
                return
            rx.setsockopt(socket.IPPROTO_UDP, udp.UDP_GRO, 1)
            row.gro_set = True
        if row.case in ("udp_segment", "udp_segment_gro"):
            if udp.UDP_SEGMENT is None:
                row.na = "UDP_SEGMENT is Linux-only"
                return
            tx.setsockopt(socket.IPPROTO_UDP, udp.UDP_SEGMENT, SEGMENT)
            total = n * SEGMENT - SHORT
            tx.send(bytes(total))
            row.send_calls, row.bytes_sent = 1, total
        elif row.case == "msg_more":
            if MSG_MORE is None:
                row.na = "MSG_MORE does not exist on this platform"
                return
            for i in range(n):
                tx.send(bytes(SEGMENT), MSG_MORE if i < n - 1 else 0)
            row.send_calls, row.bytes_sent = n, n * SEGMENT
        elif row.case == "udp_cork":
            if udp.UDP_CORK is None:
                row.na = "UDP_CORK is Linux-only"
                return
            tx.setsockopt(socket.IPPROTO_UDP, udp.UDP_CORK, 1)
            for _ in range(n):
                tx.send(bytes(SEGMENT))
            tx.setsockopt(socket.IPPROTO_UDP, udp.UDP_CORK, 0)  # this sends the datagram
            row.send_calls, row.bytes_sent = n, n * SEGMENT
        else:  # default, gro_separate
            for _ in range(n):
                tx.send(bytes(SEGMENT))
            row.send_calls, row.bytes_sent = n, n * SEGMENT
    except OSError as exc:
        row.na = f"{row.what}: {oserror_name(exc)} here"
        return
    finally:
        if row.na is not None:
            lab.close(tx)
            lab.close(rx)
    _drain(rx, lab, row, row.bytes_sent)
    lab.close(tx)
    lab.close(rx)


def _seqpacket(lab: Lab, row: Row, n: int) -> None:
    kind = getattr(socket, "SOCK_SEQPACKET", None)
    if kind is None or not hasattr(socket, "AF_UNIX") or MSG_MORE is None:
        row.na = "AF_UNIX SOCK_SEQPACKET or MSG_MORE does not exist on this platform"
        return
    try:
        a, b = socket.socketpair(socket.AF_UNIX, kind)
    except OSError as exc:
        row.na = f"AF_UNIX SOCK_SEQPACKET socketpair() failed here ({oserror_name(exc)})"
        return
    lab.adopt(a)
    lab.adopt(b)
    for i in range(n):
        a.send(bytes(SEGMENT), MSG_MORE if i < n - 1 else 0)
    row.send_calls, row.bytes_sent = n, n * SEGMENT
    _drain(b, lab, row, row.bytes_sent)
    lab.close(a)
    lab.close(b)


def measure(lab: Lab, p: Params) -> list[Row]:
    rows = []
    for case, transport, what in CASES:
        row = Row(case, transport, what.replace("N ", f"{p.offload_segments} "))
        if transport == "UDP":
            _udp(lab, row, p.offload_segments)
        else:
            _seqpacket(lab, row, p.offload_segments)
        rows.append(row)
    return rows


def datagrams_per_read(r: Row) -> int:
    """The most datagrams one read returned: a read with a UDP_GRO control message holds
    ceil(length / segment size) of them (every segment but the last is full size,
    udp_gro_receive()); any other read holds one."""
    counts = [-(-size // gro) if gro else 1 for size, gro in zip(r.read_sizes, r.read_gro)]
    return max(counts, default=0)


def sizes_text(sizes: list[int]) -> str:
    """[1000, 1000, 900] -> '1,000 x2, 900'."""
    runs: list[list[int]] = []
    for s in sizes:
        if runs and runs[-1][0] == s:
            runs[-1][1] += 1
        else:
            runs.append([s, 1])
    return ", ".join(f"{s:,} x{c}" if c > 1 else f"{s:,}" for s, c in runs) or "none"


def add_table(report: Report, p: Params, rows: list[Row]) -> None:
    t = report.table(
        "offload",
        f"When one send() is not one read: UDP_CORK, MSG_MORE, UDP_SEGMENT, UDP_GRO "
        f"({p.offload_segments} x {SEGMENT:,} B)",
        [
            col("case"),
            col("transport"),
            col("what"),
            col("send_calls", "send() calls"),
            col("bytes_sent", "sent", "B"),
            col("reads", "reads"),
            col("read_sizes", "read sizes", "B"),
            col("gro_size", "UDP_GRO segment size", "B"),
            col("datagrams_per_read", "datagrams per read"),
            col("one_send_one_read", "one send = one read"),
        ],
        keys=["case"],
    )
    for r in rows:
        if r.na is not None:
            na = NA(r.na)
            t.add(r.case, r.transport, r.what, na, na, na, na, na, na, na)
            continue
        gro: Cell = (
            r.gro_size
            if r.gro_size is not None
            else NA("no UDP_GRO control message: the receiver did not set UDP_GRO")
            if not r.gro_set
            else NA("no UDP_GRO control message: no read returned a GSO packet")
        )
        t.add(
            r.case,
            r.transport,
            r.what,
            r.send_calls,
            r.bytes_sent,
            len(r.read_sizes),
            sizes_text(r.read_sizes),
            gro,
            datagrams_per_read(r),
            r.send_calls == len(r.read_sizes),
        )


def add_findings(report: Report, p: Params, rows: list[Row]) -> None:
    by = {r.case: r for r in rows if r.na is None}
    parts: list[str] = []
    for key in ("msg_more", "udp_cork"):
        r = by.get(key)
        if r is not None:
            label = "MSG_MORE" if key == "msg_more" else "UDP_CORK"
            parts.append(
                f"with {label}, {plural(r.send_calls, 'send')} of {SEGMENT:,} B came back as "
                f"{plural(len(r.read_sizes), 'read')} of {sizes_text(r.read_sizes)} B"
            )
    seg, gro = by.get("udp_segment"), by.get("udp_segment_gro")
    if seg is not None:
        parts.append(
            f"one send() of {seg.bytes_sent:,} B with UDP_SEGMENT {SEGMENT:,} came back as "
            f"{plural(len(seg.read_sizes), 'read')} of {sizes_text(seg.read_sizes)} B"
        )
    if gro is not None:
        size = f"{gro.gro_size:,} B" if gro.gro_size is not None else "no"
        parts.append(
            f"the same send() to a UDP_GRO receiver came back as "
            f"{plural(len(gro.read_sizes), 'read')} of {sizes_text(gro.read_sizes)} B holding "
            f"{plural(datagrams_per_read(gro), 'datagram')}, with a {size} segment size in its "
            "UDP_GRO control message"
        )
    sep = by.get("gro_separate")
    if sep is not None:
        parts.append(
            f"{plural(sep.send_calls, 'separate send')} to a UDP_GRO receiver stayed "
            f"{plural(len(sep.read_sizes), 'read')} on loopback"
        )
    sq = by.get("seqpacket_msg_more")
    if sq is not None:
        parts.append(
            f"SOCK_SEQPACKET with MSG_MORE: {plural(sq.send_calls, 'send')}, "
            f"{plural(len(sq.read_sizes), 'read')}"
        )
    d = by.get("default")
    if d is not None and parts:
        report.findings.append(
            f"One send() is one read only for default sockets (UDP here: "
            f"{plural(d.send_calls, 'send')}, {plural(len(d.read_sizes), 'read')}): "
            + "; ".join(parts)
            + "."
        )


def headline(rows: list[Row]) -> str | None:
    """The headline's part: the two rows that break the rule in opposite directions."""
    by = {r.case: r for r in rows if r.na is None}
    seg, gro = by.get("udp_segment"), by.get("udp_segment_gro")
    if seg is None:
        return None
    text = f"one UDP_SEGMENT send() came back as {plural(len(seg.read_sizes), 'read')}" + (
        f", {plural(len(gro.read_sizes), 'read')} with UDP_GRO" if gro is not None else ""
    )
    return text
