"""Truncation: a datagram larger than the read buffer comes back cut, detectably.

Each size is sent twice on a fresh pair. The first copy is read with recvmsg(bufsize):
the kernel copies the head and sets MSG_TRUNC in msg_flags when the datagram was longer
(udp_recvmsg() in net/ipv4/udp.c: `if (copied < ulen) msg->msg_flags |= MSG_TRUNC`). The
second copy is read with recv_into(buf, bufsize, MSG_TRUNC), which on Linux returns the
datagram's real length (udp_recvmsg() returns `ulen` when the caller passed MSG_TRUNC;
recv(2)). The difference is the tail the kernel threw away: lost, but detectably.
"""

from __future__ import annotations

from dataclasses import dataclass

from sockprobe.kernel import udp
from sockprobe.lab import Lab
from sockprobe.probes.udp_truncate.common import (
    ARRIVAL_CAP,
    NO_MSG_TRUNC,
    n,
    pattern,
    timed_out,
    wait_for,
)
from sockprobe.probes.udp_truncate.params import Params
from sockprobe.report import NA, Cell, Report, col
from sockprobe.status import oserror_name


@dataclass
class Row:
    size: int
    send_error: str | None = None
    received: int | None = None
    truncated: bool | None = None
    true_size: int | None = None
    head_intact: bool | None = None
    missing: bool = False


def measure_one(lab: Lab, size: int, bufsize: int) -> Row:
    tx, rx = lab.udp_pair()
    row = Row(size)
    data = pattern(size, seed=size % 251)
    try:
        tx.send(data)
        tx.send(data)
    except OSError as exc:
        row.send_error = oserror_name(exc)
        lab.close(tx)
        lab.close(rx)
        return row
    doing = f"reading the {size} B datagram"
    given = wait_for(lab, ARRIVAL_CAP, doing)
    rx.settimeout(given)
    try:
        head, _anc, flags, _addr = rx.recvmsg(bufsize)
        row.received = len(head)
        row.head_intact = head == data[: len(head)]
        row.truncated = None if udp.MSG_TRUNC is None else bool(flags & udp.MSG_TRUNC)
        row.true_size = udp.recv_true_size(rx, bytearray(bufsize))
    except TimeoutError:
        timed_out(lab.deadline, ARRIVAL_CAP, given, doing)
        row.missing = True
    except OSError as exc:
        # Windows fails the read with WSAEMSGSIZE instead of truncating quietly.
        row.send_error = f"recv: {oserror_name(exc)}"
    lab.close(tx)
    lab.close(rx)
    return row


def measure(lab: Lab, p: Params) -> list[Row]:
    return [measure_one(lab, size, p.bufsize) for size in p.sizes]


def add_table(report: Report, p: Params, rows: list[Row]) -> None:
    t = report.table(
        "truncation",
        f"Truncation: one datagram per size, read into a {p.bufsize:,} B buffer",
        [
            col("size", "sent", "B"),
            col("bufsize", "buffer", "B"),
            col("outcome", "send() / recv()"),
            col("received", "received", "B"),
            col("msg_trunc", "MSG_TRUNC flag"),
            col("true_size", "true size (MSG_TRUNC input)", "B"),
            col("lost", "lost", "B"),
            col("head_intact", "head intact"),
        ],
        keys=["size"],
    )
    for r in rows:
        if r.send_error is not None or r.missing:
            why = NA(
                f"the {r.size} B datagram was sent but not delivered within {ARRIVAL_CAP:g} s"
                if r.missing
                else f"the {r.size} B datagram failed: {r.send_error}"
            )
            t.add(
                size=r.size,
                bufsize=p.bufsize,
                outcome=r.send_error or "sent; not delivered",
                received=why,
                msg_trunc=why,
                true_size=why,
                lost=why,
                head_intact=why,
            )
            continue
        true: Cell = NA(NO_MSG_TRUNC) if r.true_size is None else r.true_size
        trunc: Cell = NA("MSG_TRUNC does not exist here") if r.truncated is None else r.truncated
        lost: Cell = (
            NA(NO_MSG_TRUNC)
            if r.true_size is None or r.received is None
            else r.true_size - r.received
        )
        t.add(r.size, p.bufsize, "ok", r.received, trunc, true, lost, r.head_intact)


def add_findings(report: Report, p: Params, rows: list[Row]) -> list[str]:
    """The findings; returns the headline's part."""
    heads: list[str] = []
    read = [r for r in rows if r.received is not None]
    cut = [r for r in read if r.truncated or (r.true_size or 0) > (r.received or 0)]
    if cut:
        sizes = ", ".join(n(r.size) for r in cut)
        got = sorted({r.received for r in cut if r.received is not None})
        flag = (
            "with MSG_TRUNC set"
            if all(r.truncated for r in cut)
            else f"MSG_TRUNC set on {sum(1 for r in cut if r.truncated)} of them"
        )
        losses = [
            r.true_size - r.received
            for r in cut
            if r.true_size is not None and r.received is not None
        ]
        tail = (
            f"; recv_into(..., MSG_TRUNC) returned each true size, so the lost tails "
            f"({n(min(losses))} to {n(max(losses))} B) were detectable"
            if all(r.true_size is not None for r in cut) and losses
            else ""
        )
        report.findings.append(
            f"With a {n(p.bufsize)} B buffer, {len(cut)} of {len(rows)} datagrams "
            f"({sizes} B) came back as {' or '.join(n(g) for g in got)} B {flag}{tail}."
        )
        heads.append(f"datagrams over {n(p.bufsize)} B truncated, {flag}")
    elif read:
        report.findings.append(
            f"Every datagram read ({', '.join(n(r.size) for r in read)} B) fitted the "
            f"{n(p.bufsize)} B buffer and came back whole, MSG_TRUNC clear."
        )
    too_big = [r for r in rows if r.send_error == "EMSGSIZE"]
    if too_big:
        report.findings.append(
            "send() refused "
            + ", ".join(f"{n(r.size)} B" for r in too_big)
            + " with EMSGSIZE: larger than the largest datagram."
        )
    failed = [r for r in rows if r.send_error not in (None, "EMSGSIZE")]
    if failed:
        report.findings.append(
            "Failed: " + ", ".join(f"{n(r.size)} B ({r.send_error})" for r in failed) + "."
        )
    missing = [r for r in rows if r.missing]
    if missing:
        report.findings.append(
            f"Sent but not delivered within {ARRIVAL_CAP:g} s: "
            + ", ".join(f"{n(r.size)} B" for r in missing)
            + " (the receive buffer may be smaller than the datagram)."
        )
    return heads
