"""Message boundaries, for every transport x reader: one send() per message, back to back,
then the reader's view compared with what was sent.

The sender makes one send() per message (b"hello", b"world" and a few larger ones), then
closes its socket so that a stream reader ends on EOF. The receiver, by default, starts
only after the sender's last send() (streams: once SIOCINQ shows every byte queued;
datagrams: once the sender has finished), the tutorials' setup, which makes the outcome
follow the kernel's rules rather than thread scheduling; `--receiver concurrent` reads
while the sender writes. On a byte stream (tcp_recvmsg() in net/ipv4/tcp.c,
unix_stream_read_generic() in net/unix/af_unix.c) one recv() copies whatever is queued,
across the sender's write boundaries; on UDP and SOCK_SEQPACKET one recv() takes one
queued message (__skb_recv_datagram()).
"""

from __future__ import annotations

from sockprobe.kernel import udp as udp_kernel
from sockprobe.lab import Lab
from sockprobe.probes import plural
from sockprobe.probes.framing.params import (
    READERS,
    STREAMS,
    TRANSPORT_LABEL,
    TRANSPORTS,
    Params,
    reader_label,
)
from sockprobe.probes.framing.readers import (
    NO_READLINE,
    read_datagrams,
    read_lines,
    read_prefix_datagrams,
    read_prefix_stream,
    read_stream,
)
from sockprobe.probes.framing.tally import Outcome, Tally, tally
from sockprobe.probes.framing.transports import (
    NO_TCP_INFO,
    frames,
    pair,
    send,
    settle,
    unix_unsupported,
)
from sockprobe.report import CONTEXT, NA, VOLATILE, Report, col
from sockprobe.status import SockprobeError


# -- one case -------------------------------------------------------------------------------
def _case(lab: Lab, transport: str, reader: str, msgs: list[bytes], p: Params) -> Outcome:
    stream = transport in STREAMS
    if reader == "readline" and not stream:
        return Outcome(transport, reader, na=NA(NO_READLINE))
    tag = f"{transport}/{reader}"
    tx, rx = pair(lab, transport, tag)
    out = frames(reader, msgs)
    progress = [0]
    tcp = transport in ("tcp", "tcp-nodelay")
    sender = lab.thread(send, lab, tx, out, progress, tcp, name="sockprobe-framing-sender")
    settled = True
    if p.receiver == "late":
        total = sum(len(f) for f in out)
        settled = settle(sender, rx, stream, total, progress, lab.deadline)
    udp = transport == "udp"
    d = lab.deadline
    if reader in ("recv", "small-recv"):
        size = p.read_size if reader == "recv" else p.small_read
        o = read_stream(rx, size, d) if stream else read_datagrams(rx, size, len(msgs), d, udp)
    elif reader == "prefix":
        o = read_prefix_stream(rx, d) if stream else read_prefix_datagrams(rx, len(msgs), d, udp)
    else:
        o = read_lines(rx, d)
    if not sender.join(d.timeout(5.0, "waiting for the sender")):
        d.check("waiting for the sender")
        raise SockprobeError(f"framing {tag}: the sender did not finish within 5 s")
    if sender.error is not None:
        raise sender.error
    if udp:
        # The socket's own drop count (receive buffer full), from its /proc/net/udp row,
        # matched by inode: per socket, unlike Udp RcvbufErrors (this network namespace's).
        row = udp_kernel.proc_row(rx)
        o.drops = None if row is None else row.drops
    if tcp:
        o.segments = sender.result if sender.result is not None else NA(NO_TCP_INFO)
    lab.close(rx)
    o.transport, o.reader, o.settled = transport, reader, settled
    return o


def measure(lab: Lab, p: Params, msgs: list[bytes]) -> list[Outcome]:
    """Every transport x reader asked for, in a fixed order, each on fresh sockets."""
    outcomes: list[Outcome] = []
    for t in (t for t in TRANSPORTS if t in p.transports):
        missing = unix_unsupported(t) if t.startswith("unix") else None
        for r in (r for r in READERS if r in p.readers):
            if missing is not None:
                outcomes.append(Outcome(t, r, na=missing))
            else:
                outcomes.append(_case(lab, t, r, msgs, p))
    return outcomes


def _preview(units: list[bytes], n: int = 3) -> str:
    """The first n things the reader returned: b'he', b'wo' or b'hello…'(4,096)."""
    if not units:
        return "-"
    parts = []
    for u in units[:n]:
        parts.append(repr(u) if len(u) <= 8 else f"{repr(u[:5])[:-1]}…'({len(u):,})")
    if len(units) > n:
        parts.append("…")
    return ", ".join(parts)


def sizes_text(sizes: list[int]) -> str:
    """Runs of equal sizes collapsed: [5, 5, 100] -> '5 x2, 100'."""
    runs: list[list[int]] = []
    for n in sizes:
        if runs and runs[-1][0] == n:
            runs[-1][1] += 1
        else:
            runs.append([n, 1])
    return ", ".join(f"{n:,} x{c}" if c > 1 else f"{n:,}" for n, c in runs)


def add_table(report: Report, p: Params, msgs: list[bytes], outcomes: list[Outcome]) -> None:
    when = (
        "the receiver read after the last send() (streams: with every byte queued)"
        if p.receiver == "late"
        else "the receiver read while the sender wrote"
    )
    sizes = sizes_text([len(m) for m in msgs])
    # With the late receiver, intact/truncated/discarded/lost follow from the kernel's
    # rules; how many recv() calls and segments it took depends on timing (volatile).
    # A concurrent receiver's counts measure the scheduler (which bytes had arrived when
    # the reader ran): context, never compared. When reading began measures it too.
    racing = CONTEXT if p.receiver == "concurrent" else VOLATILE
    outcome_kind = CONTEXT if p.receiver == "concurrent" else "exact"
    t = report.table(
        "boundaries",
        f"Message boundaries: {len(msgs)} messages of {sizes} B, one send() each; {when}",
        [
            col("transport"),
            col("reader"),
            col("read_size", "read size", "B"),
            col("reading_began", "reading began", "", CONTEXT),
            col("sent", "sent", "messages"),
            col("tcp_segments", "TCP segments", "", CONTEXT),
            col("recv_calls", "recv() calls", "", racing),
            col("intact", "intact", "messages", outcome_kind),
            col("merged", "merged", "messages", racing),
            col("split", "split", "messages", racing),
            col("truncated", "truncated", "messages", outcome_kind),
            col("discarded", "discarded", "B", outcome_kind),
            col("lost", "lost", "messages", outcome_kind),
            col("returned", "returned (first 3)", "", racing),
        ],
        keys=["transport", "reader"],
    )
    for o in outcomes:
        size = _read_size(o.reader, p)
        if o.na is not None:
            t.add(
                transport=o.transport,
                reader=o.reader,
                read_size=size,
                reading_began=o.na,
                sent=len(msgs),
                tcp_segments=o.na,
                recv_calls=o.na,
                intact=o.na,
                merged=o.na,
                split=o.na,
                truncated=o.na,
                discarded=o.na,
                lost=o.na,
                returned=o.na,
            )
            continue
        c = tally(o, msgs)
        segs = (
            o.segments
            if o.segments is not None
            else NA(f"{TRANSPORT_LABEL[o.transport]} has no TCP segments")
        )
        t.add(
            o.transport,
            o.reader,
            size,
            _began(o, p),
            len(msgs),
            segs,
            o.calls,
            c.intact,
            c.merged,
            c.split,
            c.truncated,
            c.discarded,
            c.lost,
            _preview(o.units),
        )


def _read_size(reader: str, p: Params) -> int | NA:
    if reader == "recv":
        return p.read_size
    if reader == "small-recv":
        return p.small_read
    return NA(f"the {reader_label(reader, p)} reader sizes its own reads")


def _began(o: Outcome, p: Params) -> str:
    """When the reader started: after the sender's last send() (the late receiver), or
    while the sender was still writing (concurrent, or late but the buffers could not
    hold every message)."""
    return "after last send" if p.receiver == "late" and o.settled else "during sends"


def _when(o: Outcome, p: Params) -> str:
    if p.receiver == "concurrent":
        return "read concurrently"
    if o.settled:
        return "read after the last send()"
    return "read while the sender was still writing (the buffers could not hold it all)"


def _find(outcomes: list[Outcome], transport: str, reader: str) -> Outcome | None:
    for o in outcomes:
        if o.transport == transport and o.reader == reader and o.na is None:
            return o
    return None


def _read_sizes(units: list[bytes]) -> str:
    shown = ", ".join(f"{len(u):,}" for u in units[:4])
    return shown + (f" … ({len(units)} reads)" if len(units) > 4 else "")


def _grouped(
    outcomes: list[Outcome], transports: tuple[str, ...], reader: str, msgs: list[bytes]
) -> list[tuple[list[str], Outcome, Tally]]:
    """Transports whose reader got the same pieces share one finding."""
    groups: list[tuple[list[str], Outcome, Tally]] = []
    for t in transports:
        o = _find(outcomes, t, reader)
        if o is None:
            continue
        c = tally(o, msgs)
        sizes = [len(u) for u in o.units]
        for names, first, tal in groups:
            same_start = first.settled == o.settled
            if tal == c and same_start and [len(u) for u in first.units] == sizes:
                names.append(t)
                break
        else:
            groups.append(([t], o, c))
    return groups


def _lost_text(c: Tally, o: Outcome) -> str:
    if o.drops is None or (c.lost == 0 and o.drops == 0):
        return f"{c.lost} lost"
    return f"{c.lost} lost (the receiving socket's drop counter in /proc/net/udp: {o.drops})"


def _names(transports: list[str]) -> str:
    labels = [TRANSPORT_LABEL[t] for t in transports]
    return labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + " and " + labels[-1]


def add_findings(report: Report, p: Params, msgs: list[bytes], outcomes: list[Outcome]) -> None:
    k = len(msgs)
    total = sum(len(m) for m in msgs)
    f = report.findings
    streams = ("tcp", "tcp-nodelay", "unix-stream")
    # 1. Byte streams with one recv(read_size) per message.
    for names, o, c in _grouped(outcomes, streams, "recv", msgs):
        got = sum(len(u) for u in o.units)
        f.append(
            f"{_names(names)}, recv({p.read_size}) {_when(o, p)}: {k} messages ({total:,} B) came "
            f"back as {len(o.units)} reads of {_read_sizes(o.units)} B: {c.intact} intact, "
            f"{c.merged} merged, {c.split} split; {got:,} of {total:,} bytes arrived, in order."
        )
    # What went on the wire, beside what the reads returned.
    wire: list[tuple[list[str], int, int, int]] = []
    for t in ("tcp", "tcp-nodelay"):
        found = _find(outcomes, t, "recv")
        if found is None or not isinstance(found.segments, int):
            continue
        key = (found.segments, len(found.units), tally(found, msgs).intact)
        same = next((w for w in wire if w[1:] == key), None)
        if same is not None:
            same[0].append(t)
        else:
            wire.append(([t], *key))
    for names, segs, reads, intact in wire:
        head = (
            f"{_names(names)}: the sender's {k} send() calls left as {segs} data segments "
            f"(TCP_INFO tcpi_data_segs_out{', each' if len(names) > 1 else ''})"
        )
        if intact < k:
            f.append(
                f"{head}, yet recv({p.read_size}) returned {plural(reads, 'read')} with "
                f"{plural(intact, 'message')} intact: recv() copies bytes across segment "
                "boundaries, so segments are not messages either."
            )
        else:
            f.append(
                f"{head}, and recv({p.read_size}) returned all {k} intact in {reads} reads: "
                "the reader kept pace this time, which TCP does not promise."
            )
    tcp, nd = _find(outcomes, "tcp", "recv"), _find(outcomes, "tcp-nodelay", "recv")
    if tcp is not None and nd is not None:
        a, b = tally(tcp, msgs), tally(nd, msgs)
        verdict = "did not keep the boundaries" if b.intact < k else "kept every boundary"
        f.append(
            f"TCP_NODELAY {verdict}: {b.intact} of {k} intact with it, {a.intact} of {k} "
            "without it. Nagle decides when segments leave, not what one recv() returns."
        )
    # 2. Tiny reads on byte streams.
    longer = sum(1 for m in msgs if len(m) > p.small_read)
    for names, o, c in _grouped(outcomes, streams, "small-recv", msgs):
        f.append(
            f"{_names(names)}, recv({p.small_read}): {c.split} of {k} messages split over "
            f"{o.calls:,} reads ({longer} are longer than {p.small_read} B), {c.merged} merged "
            f"(a read spanning two messages); {c.lost} lost, nothing truncated."
        )
    # 3. Datagram transports read with buffers of read_size and small_read bytes.
    largest = max(len(m) for m in msgs)
    for reader, size in (("recv", p.read_size), ("small-recv", p.small_read)):
        for names, o, c in _grouped(outcomes, ("udp", "unix-seqpacket"), reader, msgs):
            head = f"{_names(names)}, recv({size})"
            if c.truncated == 0:
                f.append(
                    f"{head}: every boundary kept, {c.intact} of {k} messages whole in "
                    f"{o.calls} reads (the largest, {largest:,} B, fits the buffer); "
                    f"{c.merged} merged, {c.split} split, {_lost_text(c, o)}."
                )
                continue
            returned = f" (returned {_preview(o.units)})" if c.intact == 0 else ""
            f.append(
                f"{head}: every boundary kept ({c.merged} merged, {c.split} split), but "
                f"{c.truncated} of {k} messages came back cut to the {size:,} B buffer"
                f"{returned}; the kernel discarded the other {c.discarded:,} B "
                f"and set MSG_TRUNC on {plural(o.msg_trunc, 'read')}; {c.intact} intact, "
                f"{_lost_text(c, o)}."
            )
    # 4. The length prefix.
    pre = [o for o in outcomes if o.reader == "prefix" and o.na is None]
    if pre:
        counts = {o.transport: tally(o, msgs).intact for o in pre}
        if all(v == k for v in counts.values()):
            f.append(
                f"The '!I' length prefix recovered all {k} messages on every transport tried "
                f"({', '.join(TRANSPORT_LABEL[t] for t in counts)})."
            )
        else:
            lost = {o.transport: tally(o, msgs).lost for o in pre}
            f.append(
                "The '!I' length prefix recovered "
                + ", ".join(
                    f"{n} of {k} on {TRANSPORT_LABEL[t]}"
                    + (f" ({lost[t]} never arrived)" if lost[t] else "")
                    for t, n in counts.items()
                )
                + "."
            )
    # 5. Newline framing.
    lines = [o for o in outcomes if o.reader == "readline" and o.na is None]
    if lines:
        f.append(
            "makefile().readline() recovered "
            + ", ".join(
                f"{tally(o, msgs).intact} of {k} on {TRANSPORT_LABEL[o.transport]} "
                f"from {o.calls} buffered reads"
                for o in lines
            )
            + "; its buffer merges, readline() splits at the newlines."
        )
    unsettled = [o for o in outcomes if o.na is None and not o.settled]
    if unsettled and p.receiver == "late":
        f.append(
            f"In {plural(len(unsettled), 'case')} the buffers could not hold every message, so the "
            "receiver began reading while the sender was still writing; their counts depend "
            "on timing."
        )


def headline(p: Params, msgs: list[bytes], outcomes: list[Outcome]) -> str:
    k = len(msgs)
    parts = []
    tcp = _find(outcomes, "tcp", "recv")
    if tcp is not None:
        c = tally(tcp, msgs)
        parts.append(
            f"TCP recv({p.read_size}) returned {c.intact} of {k} messages intact "
            f"({c.merged} merged, {c.split} split)"
        )
    pre = [tally(o, msgs).intact for o in outcomes if o.reader == "prefix" and o.na is None]
    if pre:
        if min(pre) == k:
            parts.append(f"the '!I' prefix recovered all {k} on every transport")
        else:
            parts.append(f"the '!I' prefix recovered as few as {min(pre)} of {k}")
    for t in ("udp", "unix-seqpacket"):
        o = _find(outcomes, t, "recv")
        if o is not None:
            c = tally(o, msgs)
            if c.truncated:
                parts.append(
                    f"{TRANSPORT_LABEL[t]} kept boundaries but truncated {c.truncated} of {k} "
                    f"at {p.read_size:,} B"
                )
            else:
                parts.append(
                    f"{TRANSPORT_LABEL[t]} kept every boundary: {c.intact} of {k} intact "
                    f"with recv({p.read_size})"
                )
            break
    if not parts:
        rows = [o for o in outcomes if o.na is None]
        if not rows:
            return "no transport could run here"
        o = rows[0]
        c = tally(o, msgs)
        parts.append(
            f"{TRANSPORT_LABEL[o.transport]} {reader_label(o.reader, p)}: "
            f"{c.intact} of {k} messages intact, {c.merged} merged, {c.split} split, "
            f"{c.truncated} truncated"
        )
    return "; ".join(parts)
