"""Boundaries: datagrams sent back to back are read back one per call, never merged.

Each UDP datagram is queued as its own buffer on the receive queue (__udp_enqueue_schedule_skb()
in net/ipv4/udp.c) and each recvmsg() dequeues exactly one (udp_recvmsg() ->
__skb_recv_udp()), so three sends are three reads on a default socket; a fourth read on
the non-blocking socket finds the queue empty (EAGAIN). What changes that rule (UDP_CORK,
MSG_MORE, UDP_SEGMENT, UDP_GRO) is framing's `offload` experiment.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sockprobe.lab import Lab
from sockprobe.probes.udp_truncate.common import ARRIVAL_CAP, n, pattern, wait_for
from sockprobe.report import NA, Report, col
from sockprobe.status import oserror_name

#: Three datagrams of distinct sizes, so each read is identified.
BOUNDARY_SIZES = (100, 200, 300)


@dataclass
class Result:
    reads: list[int] = field(default_factory=list)
    intact: list[bool] = field(default_factory=list)
    #: What the read after the last datagram gave: an errno name, or a size.
    after: str = ""
    after_size: int | None = None


def measure(lab: Lab) -> Result:
    tx, rx = lab.udp_pair()
    sent = [pattern(size, seed=i) for i, size in enumerate(BOUNDARY_SIZES)]
    for d in sent:
        tx.send(d)
    out = Result()
    for d in sent:
        rx.settimeout(wait_for(lab, ARRIVAL_CAP, "reading a boundary datagram"))
        got = rx.recv(65536)
        out.reads.append(len(got))
        out.intact.append(got == d)
    rx.setblocking(False)
    try:
        extra = rx.recv(65536)
        out.after, out.after_size = "another datagram", len(extra)
    except BlockingIOError as exc:
        out.after = oserror_name(exc)
    lab.close(tx)
    lab.close(rx)
    return out


def add_table(report: Report, r: Result) -> None:
    t = report.table(
        "boundaries",
        f"Boundaries: {len(BOUNDARY_SIZES)} datagrams sent back to back, then recv(65536) each",
        [
            col("read"),
            col("sent", "sent", "B"),
            col("returned", "returned", "B"),
            col("intact", "content intact"),
            col("outcome", "recv() outcome"),
        ],
        keys=["read"],
    )
    for i, (sent, got, ok) in enumerate(zip(BOUNDARY_SIZES, r.reads, r.intact)):
        t.add(i + 1, sent, got, ok, "datagram")
    none = NA("nothing more was sent")
    t.add(
        len(BOUNDARY_SIZES) + 1,
        none,
        none if r.after_size is None else r.after_size,
        none,
        r.after if r.after_size is not None else f"{r.after} (queue empty)",
    )


def add_findings(report: Report, r: Result) -> None:
    kept = r.reads == list(BOUNDARY_SIZES)
    after = (
        f"another datagram of {n(r.after_size)} B"
        if r.after_size is not None
        else f"{r.after} (queue empty)"
    )
    report.findings.append(
        f"{len(BOUNDARY_SIZES)} datagrams sent back to back came back as "
        f"{len(r.reads)} reads of {', '.join(n(x) for x in r.reads)} B"
        + (": boundaries kept, never merged" if kept else ": boundaries NOT kept")
        + f"; the next read: {after}. This holds for a default socket; UDP_CORK, MSG_MORE, "
        "UDP_SEGMENT and UDP_GRO change it (sockprobe framing, table offload)."
    )
