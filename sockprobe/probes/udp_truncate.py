"""sockprobe udp-truncate: what happens to a datagram that does not fit.

Five experiments, each on fresh UDP sockets on the lab host:

1. Truncation sweep: one datagram per size is read with recvmsg() into a buffer of
   `bufsize` bytes (the kernel returns the head and sets MSG_TRUNC in the message flags,
   udp(7)); a second copy is read with recv_into(buf, bufsize, MSG_TRUNC), which on Linux
   returns the datagram's real length (recv(2)). The difference is the tail the kernel
   threw away: lost, but detectably.
2. The largest datagram: bisection over send() sizes finds the largest payload the kernel
   accepts (the 16-bit IP length field caps it: 65507 B over IPv4, 65527 B over IPv6);
   the limit is then sent and read back in full, and one byte more raises EMSGSIZE.
   Both address families are tried (the lab host's, then the other one's loopback).
3. Boundaries: three datagrams sent back to back are three reads; a fourth read on the
   non-blocking socket finds the queue empty.
4. Receive-queue overflow: a burst into a receiver with a small SO_RCVBUF that does not
   read. Drops are counted for that one socket twice, independently: the "drops" column
   of /proc/net/udp (matched by the socket's inode) and SO_RXQ_OVFL, whose control
   message on the next datagram queued after the burst carries the socket's cumulative
   drop count (socket(7)). The host-wide Udp RcvbufErrors delta is shown beside them as
   context only: every other socket on the host moves it too.
5. ICMP port unreachable: a connected socket, an unconnected one and an unconnected one
   with IP_RECVERR each send to a port on which no socket receives from them, then try
   one recv().
"""

from __future__ import annotations

import errno
import socket
import time
from dataclasses import dataclass, field

from sockprobe import kernel
from sockprobe.kernel import udp
from sockprobe.lab import Deadline, Host, Lab, fmt_addr
from sockprobe.probes import ProbeParams, Stopwatch, require
from sockprobe.report import NA, Cell, Report, environment, legacy_table, params_dict
from sockprobe.status import DeadlineExceeded, oserror_name, oserror_text

DEFAULT_SIZES = (64, 512, 1024, 1472, 1500, 8192, 65507)
#: Sizes the sweep accepts; beyond the family's limit send() raises EMSGSIZE and the row
#: says so, which is itself a result.
MAX_SIZE = 65535
#: The boundary experiment's three datagrams (distinct sizes, so each read is identified).
BOUNDARY_SIZES = (100, 200, 300)
#: How long to wait for a datagram that was sent on loopback and should be there at once
#: (loopback delivery happens inside the sender's send() call); a miss is reported.
ARRIVAL_CAP = 2.0
SYSCTLS = (
    "net.core.rmem_default",
    "net.core.rmem_max",
    "net.core.wmem_default",
    "net.ipv4.udp_mem",
    "net.ipv4.udp_rmem_min",
)
NO_MSG_TRUNC = "MSG_TRUNC as a recv() input flag (real datagram length) is Linux-only"
NO_PROC = "/proc/net/udp drops (per socket) exist only on Linux"
NO_RXQ_OVFL = "SO_RXQ_OVFL (per-socket drop count as ancillary data) is Linux-only"
NO_COUNTERS = "host-wide UDP counters (/proc/net/snmp) exist only on Linux"


@dataclass(frozen=True)
class Params(ProbeParams):
    sizes: tuple[int, ...] = DEFAULT_SIZES
    bufsize: int = 1024
    burst: int = 200
    burst_size: int = 512
    burst_rcvbuf: int = 4096
    op_timeout: float = 0.2

    def __post_init__(self) -> None:
        super().__post_init__()
        require(len(self.sizes) > 0, "--size: give at least one datagram size")
        for s in self.sizes:
            require(0 <= s <= MAX_SIZE, f"--size must be 0..{MAX_SIZE} bytes, not {s}")
        require(
            1 <= self.bufsize <= 1_048_576,
            f"--bufsize must be 1..1048576 bytes, not {self.bufsize}",
        )
        require(1 <= self.burst <= 100_000, f"--burst must be 1..100000, not {self.burst}")
        require(
            4 <= self.burst_size <= 65_507,
            f"--burst-size must be 4..65507 bytes (4 carry a sequence number), "
            f"not {self.burst_size}",
        )
        require(
            1 <= self.burst_rcvbuf <= 1 << 30,
            f"--burst-rcvbuf must be 1..{1 << 30} bytes, not {self.burst_rcvbuf}",
        )
        require(
            0.01 <= self.op_timeout <= 10.0,
            f"--op-timeout must be 0.01..10 seconds, not {self.op_timeout}",
        )


def pattern(size: int, seed: int = 0) -> bytes:
    """`size` bytes that differ from any shifted copy of themselves for small shifts:
    byte i is (i * 7 + seed) mod 251 (251 is prime, so the cycle is 251 bytes long,
    longer than any header shift a bug could introduce)."""
    block = bytes((i * 7 + seed) % 251 for i in range(251))
    reps = size // 251 + 1
    return (block * reps)[:size]


def _recv_timeout(lab: Lab, cap: float, doing: str) -> float:
    return lab.deadline.timeout(cap, doing)


def _timed_out(deadline: Deadline, wanted: float, given: float, doing: str) -> None:
    """A TimeoutError is a result only if the whole wait was granted; if the deadline
    shortened it, the deadline is what ran out."""
    if given < wanted:
        raise DeadlineExceeded(f"--deadline {deadline.seconds:g} s ran out while {doing}")


# -- 1: truncation sweep ------------------------------------------------------------------
@dataclass
class SweepRow:
    size: int
    send_error: str | None = None
    received: int | None = None
    truncated: bool | None = None
    true_size: int | None = None
    head_intact: bool | None = None
    missing: bool = False


def _sweep_one(lab: Lab, size: int, bufsize: int) -> SweepRow:
    tx, rx = lab.udp_pair()
    row = SweepRow(size)
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
    wanted = ARRIVAL_CAP
    given = _recv_timeout(lab, wanted, doing)
    rx.settimeout(given)
    try:
        head, _anc, flags, _addr = rx.recvmsg(bufsize)
        row.received = len(head)
        row.head_intact = head == data[: len(head)]
        row.truncated = None if udp.MSG_TRUNC is None else bool(flags & udp.MSG_TRUNC)
        buf = bytearray(bufsize)
        row.true_size = udp.recv_true_size(rx, buf)
    except TimeoutError:
        _timed_out(lab.deadline, wanted, given, doing)
        row.missing = True
    except OSError as exc:
        # Windows fails the read with WSAEMSGSIZE instead of truncating quietly.
        row.send_error = f"recv: {oserror_name(exc)}"
    lab.close(tx)
    lab.close(rx)
    return row


# -- 2: the largest datagram ----------------------------------------------------------------
@dataclass
class LimitRow:
    family: str
    address: str
    limit: int | None = None
    arithmetic: int = 0
    received_at_limit: int | None = None
    over_error: str | None = None
    unavailable: str | None = None


def _family_hosts(host: Host) -> list[Host]:
    other = Host(socket.AF_INET, "127.0.0.1") if host.is_v6 else Host(socket.AF_INET6, "::1")
    return [host, other]


def _limit(lab: Lab, host: Host) -> LimitRow:
    fam = "IPv6" if host.is_v6 else "IPv4"
    row = LimitRow(fam, host.address, arithmetic=udp.udp_payload_limit(host.family))
    opened: list[socket.socket] = []
    try:
        # socket() itself fails (EAFNOSUPPORT) where the family is compiled out or
        # disabled; bind() fails (EADDRNOTAVAIL) where the loopback address is missing.
        opened.append(lab.open_socket(socket.SOCK_DGRAM, family=host.family))
        opened.append(lab.open_socket(socket.SOCK_DGRAM, family=host.family))
        rx, tx = opened
        rx.bind(host.sockaddr(0))
        tx.connect(rx.getsockname())
    except OSError as exc:
        row.unavailable = f"{fam} {host.address} unavailable here: {oserror_text(exc)}"
        for s in opened:
            lab.close(s)
        return row
    lab.record(f"{fam} limit receiver", rx)
    lab.record(f"{fam} limit sender", tx)
    buf = bytearray(1 << 17)

    def fits(size: int) -> bool:
        try:
            tx.send(bytes(size))
        except OSError as exc:
            if exc.errno == errno.EMSGSIZE:
                return False
            raise
        # Consume it, so the receive queue never fills during the search.
        given = _recv_timeout(lab, ARRIVAL_CAP, "reading a limit-search datagram")
        rx.settimeout(given)
        rx.recv_into(buf)
        return True

    # Bisection for the largest size send() accepts: lo always fits, hi never does.
    lo, hi = 0, 1 << 17
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid
    row.limit = lo
    tx.send(pattern(lo))
    rx.settimeout(_recv_timeout(lab, ARRIVAL_CAP, "reading the largest datagram"))
    n = rx.recv_into(buf)
    row.received_at_limit = n if buf[:n] == pattern(lo) else None
    try:
        tx.send(bytes(lo + 1))
    except OSError as exc:
        row.over_error = oserror_name(exc)
    lab.close(tx)
    lab.close(rx)
    return row


# -- 3: boundaries --------------------------------------------------------------------------
@dataclass
class Boundaries:
    reads: list[int] = field(default_factory=list)
    intact: list[bool] = field(default_factory=list)
    after: str = ""


def _boundaries(lab: Lab) -> Boundaries:
    tx, rx = lab.udp_pair()
    sent = [pattern(n, seed=i) for i, n in enumerate(BOUNDARY_SIZES)]
    for d in sent:
        tx.send(d)
    out = Boundaries()
    for d in sent:
        rx.settimeout(_recv_timeout(lab, ARRIVAL_CAP, "reading a boundary datagram"))
        got = rx.recv(65536)
        out.reads.append(len(got))
        out.intact.append(got == d)
    rx.setblocking(False)
    try:
        extra = rx.recv(65536)
        out.after = f"another datagram of {len(extra)} B"
    except BlockingIOError as exc:
        out.after = f"BlockingIOError {oserror_name(exc)} (queue empty)"
    lab.close(tx)
    lab.close(rx)
    return out


# -- 4: receive-queue overflow --------------------------------------------------------------
@dataclass
class Overflow:
    sent: int
    send_errors: int
    rcvbuf: int
    queued_bytes: int | None
    delivered: int
    delivered_seqs: list[int]
    proc_drops: int | None
    ovfl_drops: Cell
    host_rcvbuf_errors: int | None


def _udp_counter(family: int, name: str) -> int | None:
    return udp.udp_counters(family).get(name)


def _overflow(lab: Lab, p: Params) -> Overflow:
    host = lab.host
    rx = lab.open_socket(socket.SOCK_DGRAM)
    # Before any datagram arrives: the queue limit is checked as each one is queued.
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, p.burst_rcvbuf)
    have_ovfl = udp.enable_rxq_ovfl(rx)
    rx.bind(host.sockaddr(0))
    tx = lab.open_socket(socket.SOCK_DGRAM)
    tx.connect(rx.getsockname())
    lab.record("overflow receiver", rx)
    lab.record("overflow sender", tx)
    rcvbuf = rx.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    body = pattern(p.burst_size - 4)
    before = _udp_counter(host.family, "RcvbufErrors")
    errors = 0
    tx.settimeout(_recv_timeout(lab, 2.0, "sending the burst"))
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
    after = _udp_counter(host.family, "RcvbufErrors")
    # Read the per-socket counters before draining (draining does not reset them).
    row = udp.proc_row(rx)
    proc_drops = None if row is None else row.drops
    queued = None if row is None else row.rx_queue
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
        tx.send(b"\xff\xff\xff\xffmarker")
        rx.settimeout(_recv_timeout(lab, ARRIVAL_CAP, "reading the SO_RXQ_OVFL marker"))
        _data, anc, _flags, _addr = rx.recvmsg(p.burst_size, space)
        dropped = udp.rxq_ovfl_drops(anc)
        ovfl = 0 if dropped is None else dropped  # no cmsg: nothing had been dropped
    lab.close(tx)
    lab.close(rx)
    return Overflow(
        sent=p.burst - errors,
        send_errors=errors,
        rcvbuf=rcvbuf,
        queued_bytes=queued,
        delivered=len(seqs),
        delivered_seqs=seqs,
        proc_drops=proc_drops,
        ovfl_drops=ovfl,
        host_rcvbuf_errors=None if before is None or after is None else after - before,
    )


# -- 5: ICMP port unreachable ---------------------------------------------------------------
@dataclass
class IcmpRow:
    kind: str
    recverr: bool | None
    send_outcome: str
    recv_outcome: str
    after_ms: float | None
    noports: int | None


def _unreachable_port(lab: Lab) -> socket.socket:
    """A UDP socket that holds a port but receives nothing from anyone else.

    Closing a port and hoping it stays free is a race (another program may bind it before
    the send). Instead the port stays bound, by a socket connected to its own address: the
    kernel's UDP lookup skips a connected socket for any datagram whose source is not that
    socket's peer, so a datagram from another port finds no socket, is counted in
    Udp NoPorts, and draws an ICMP port unreachable, exactly as for a closed port. And no
    other socket can bind the port meanwhile (this one sets no SO_REUSEADDR/REUSEPORT).
    """
    holder = lab.open_socket(socket.SOCK_DGRAM)
    holder.bind(lab.host.sockaddr(0))
    holder.connect(holder.getsockname())
    lab.record("icmp port holder (connected to itself)", holder)
    return holder


def _icmp(lab: Lab, kind: str, p: Params) -> IcmpRow:
    holder = _unreachable_port(lab)
    dest = lab.host.sockaddr(holder.getsockname()[1])
    s = lab.open_socket(socket.SOCK_DGRAM)
    recverr: bool | None = None
    if kind == "unconnected + IP_RECVERR":
        recverr = udp.enable_recverr(s)
    s.bind(lab.host.sockaddr(0))
    noports0 = _udp_counter(lab.host.family, "NoPorts")
    if kind == "connected":
        s.connect(dest)
    lab.record(f"icmp {kind}", s)
    # The closed port, so the ICMP port unreachable can be found in a capture.
    lab.endpoints[-1]["sent_to"] = fmt_addr(dest)
    try:
        if kind == "connected":
            s.send(b"probe")
        else:
            s.sendto(b"probe", dest)
        send_outcome = "ok"
    except OSError as exc:
        send_outcome = oserror_name(exc)
    doing = f"waiting for an ICMP error on the {kind} socket"
    given = _recv_timeout(lab, p.op_timeout, doing)
    s.settimeout(given)
    t0 = time.perf_counter()
    try:
        data = s.recv(1024)
        outcome = f"returned {len(data)} B"
    except TimeoutError:
        _timed_out(lab.deadline, p.op_timeout, given, doing)
        outcome = f"TimeoutError: nothing within {p.op_timeout:g} s"
    except OSError as exc:
        outcome = f"{type(exc).__name__} {oserror_name(exc)}"
    after_ms = (time.perf_counter() - t0) * 1000
    noports1 = _udp_counter(lab.host.family, "NoPorts")
    lab.close(s)
    lab.close(holder)
    return IcmpRow(
        kind,
        recverr,
        send_outcome,
        outcome,
        after_ms,
        None if noports0 is None or noports1 is None else noports1 - noports0,
    )


# -- the probe --------------------------------------------------------------------------------
def run(params: Params) -> Report:
    watch = Stopwatch()
    host, deadline = params.resolve()
    report = Report(
        "udp-truncate",
        params=params_dict(params),
        environment=environment(kernel.sysctls(SYSCTLS)),
    )
    with Lab(host, deadline) as lab:
        sweep = [_sweep_one(lab, size, params.bufsize) for size in params.sizes]
        limits = [_limit(lab, h) for h in _family_hosts(host)]
        bounds = _boundaries(lab)
        overflow = _overflow(lab, params)
        icmp = [
            _icmp(lab, kind, params)
            for kind in ("connected", "unconnected", "unconnected + IP_RECVERR")
        ]
        report.endpoints = lab.endpoints
    # The counter group: Udp in /proc/net/snmp, Udp6 in /proc/net/snmp6.
    group = "Udp6" if host.is_v6 else "Udp"
    _tables(report, params, group, sweep, limits, bounds, overflow, icmp)
    _findings(report, params, group, sweep, limits, bounds, overflow, icmp)
    _notes(report)
    report.duration_s = watch()
    return report


def _tables(
    report: Report,
    p: Params,
    group: str,
    sweep: list[SweepRow],
    limits: list[LimitRow],
    bounds: Boundaries,
    ov: Overflow,
    icmp: list[IcmpRow],
) -> None:
    t = legacy_table(
        report,
        f"Truncation: one datagram per size, read into a {p.bufsize:,} B buffer",
        [
            "sent",
            "buffer",
            "send()",
            "received",
            "MSG_TRUNC flag",
            "true size (MSG_TRUNC input)",
            "lost",
            "head intact",
        ],
        ["B", "B", "", "B", "", "B", "B", ""],
    )
    for r in sweep:
        if r.send_error is not None or r.missing:
            outcome = r.send_error or "sent; not delivered"
            t.add(r.size, p.bufsize, outcome, None, None, None, None, None)
            continue
        true: Cell = NA(NO_MSG_TRUNC) if r.true_size is None else r.true_size
        trunc: Cell = NA("MSG_TRUNC does not exist here") if r.truncated is None else r.truncated
        lost: Cell = (
            NA(NO_MSG_TRUNC)
            if r.true_size is None or r.received is None
            else r.true_size - r.received
        )
        t.add(r.size, p.bufsize, "ok", r.received, trunc, true, lost, r.head_intact)

    lt = legacy_table(
        report,
        "The largest datagram (found by bisection over send() sizes)",
        ["family", "address", "largest send()", "read back", "one byte more", "header arithmetic"],
        ["", "", "B", "B", "", "B"],
    )
    for lr in limits:
        if lr.unavailable is not None:
            na = NA(lr.unavailable)
            lt.add(lr.family, lr.address, na, na, na, lr.arithmetic)
            continue
        lt.add(
            lr.family,
            lr.address,
            lr.limit,
            lr.received_at_limit,
            lr.over_error or "accepted",
            lr.arithmetic,
        )

    bt = legacy_table(
        report,
        f"Boundaries: {len(BOUNDARY_SIZES)} datagrams sent back to back, then recv(65536) each",
        ["read", "sent", "returned", "content intact"],
        ["", "B", "B", ""],
    )
    for i, (sent, got, ok) in enumerate(zip(BOUNDARY_SIZES, bounds.reads, bounds.intact)):
        bt.add(i + 1, sent, got, ok)
    bt.add(len(BOUNDARY_SIZES) + 1, None, bounds.after, None)

    ot = legacy_table(
        report,
        f"Receive-queue overflow: {p.burst:,} datagrams of {p.burst_size:,} B, "
        "receiver not reading",
        [
            "sent",
            "SO_RCVBUF requested",
            "SO_RCVBUF effective",
            "queued (/proc rx_queue)",
            "delivered",
            "dropped (/proc/net/udp, this socket)",
            "dropped (SO_RXQ_OVFL, this socket)",
            f"{group} RcvbufErrors Δ (host-wide)",
            "send() errors",
        ],
        ["datagrams", "B", "B", "B", "datagrams", "datagrams", "datagrams", "", "datagrams"],
        volatile=[
            "queued (/proc rx_queue)",
            "delivered",
            "dropped (/proc/net/udp, this socket)",
            "dropped (SO_RXQ_OVFL, this socket)",
            "send() errors",
        ],
        context=[f"{group} RcvbufErrors Δ (host-wide)"],
    )
    ot.add(
        ov.sent,
        p.burst_rcvbuf,
        ov.rcvbuf,
        NA(NO_PROC) if ov.queued_bytes is None else ov.queued_bytes,
        ov.delivered,
        NA(NO_PROC) if ov.proc_drops is None else ov.proc_drops,
        ov.ovfl_drops,
        NA(NO_COUNTERS) if ov.host_rcvbuf_errors is None else ov.host_rcvbuf_errors,
        ov.send_errors,
    )

    it = legacy_table(
        report,
        "Sending to a closed port (ICMP port unreachable), then one recv()",
        ["socket", "send()", "next recv()", "after", f"{group} NoPorts Δ (host-wide)"],
        ["", "", "", "ms", ""],
        volatile=["after"],
        context=[f"{group} NoPorts Δ (host-wide)"],
    )
    for ir in icmp:
        kind = ir.kind
        if ir.recverr is False:
            kind += " (option refused)"
        it.add(
            kind,
            ir.send_outcome,
            ir.recv_outcome,
            None if ir.after_ms is None else round(ir.after_ms, 3),
            NA(NO_COUNTERS) if ir.noports is None else ir.noports,
        )


def _n(v: int) -> str:
    return f"{v:,}"


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


def _arith_text(family: str) -> str:
    if family == "IPv4":
        return f"65,535 − {udp.IPV4_HEADER} IPv4 header − {udp.UDP_HEADER} UDP header bytes"
    return f"65,535 − {udp.UDP_HEADER} UDP header bytes; IPv6's length excludes its own header"


def _findings(
    report: Report,
    p: Params,
    group: str,
    sweep: list[SweepRow],
    limits: list[LimitRow],
    bounds: Boundaries,
    ov: Overflow,
    icmp: list[IcmpRow],
) -> None:
    heads: list[str] = []
    read = [r for r in sweep if r.received is not None]
    cut = [r for r in read if r.truncated or (r.true_size or 0) > (r.received or 0)]
    if cut:
        sizes = ", ".join(_n(r.size) for r in cut)
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
        true_known = all(r.true_size is not None for r in cut)
        tail = (
            f"; recv_into(..., MSG_TRUNC) returned each true size, so the lost tails "
            f"({_n(min(losses))} to {_n(max(losses))} B) were detectable"
            if true_known and losses
            else ""
        )
        report.findings.append(
            f"With a {_n(p.bufsize)} B buffer, {len(cut)} of {len(sweep)} datagrams "
            f"({sizes} B) came back as {' or '.join(_n(g) for g in got)} B {flag}{tail}."
        )
        heads.append(f"datagrams over {_n(p.bufsize)} B truncated, {flag}")
    elif read:
        report.findings.append(
            f"Every datagram read ({', '.join(_n(r.size) for r in read)} B) fitted the "
            f"{_n(p.bufsize)} B buffer and came back whole, MSG_TRUNC clear."
        )
    too_big = [r for r in sweep if r.send_error == "EMSGSIZE"]
    if too_big:
        report.findings.append(
            "send() refused "
            + ", ".join(f"{_n(r.size)} B" for r in too_big)
            + " with EMSGSIZE: larger than the largest datagram."
        )
    failed = [r for r in sweep if r.send_error not in (None, "EMSGSIZE")]
    if failed:
        report.findings.append(
            "Failed: " + ", ".join(f"{_n(r.size)} B ({r.send_error})" for r in failed) + "."
        )
    missing = [r for r in sweep if r.missing]
    if missing:
        report.findings.append(
            f"Sent but not delivered within {ARRIVAL_CAP:g} s: "
            + ", ".join(f"{_n(r.size)} B" for r in missing)
            + " (the receive buffer may be smaller than the datagram)."
        )
    for lr in limits:
        if lr.limit is None:
            continue
        arith = (
            f" ({_arith_text(lr.family)})"
            if lr.limit == lr.arithmetic
            else f" (the header arithmetic gives {_n(lr.arithmetic)})"
        )
        back = (
            "it was read back whole"
            if lr.received_at_limit == lr.limit
            else "it did not come back whole"
        )
        report.findings.append(
            f"{lr.family} ({lr.address}): the largest datagram send() accepted was "
            f"{_n(lr.limit)} B{arith} and {back}; {_n(lr.limit + 1)} B raised "
            f"{lr.over_error or 'nothing'}."
        )
    first = next((lr for lr in limits if lr.limit is not None), None)
    if first is not None:
        heads.append(f"largest datagram {_n(first.limit or 0)} B ({first.family})")
    merged = len(bounds.reads) != len(BOUNDARY_SIZES) or list(bounds.reads) != list(BOUNDARY_SIZES)
    report.findings.append(
        f"{len(BOUNDARY_SIZES)} datagrams sent back to back came back as "
        f"{len(bounds.reads)} reads of {', '.join(_n(n) for n in bounds.reads)} B"
        + (": boundaries kept, never merged" if not merged else ": boundaries NOT kept")
        + f"; the next read: {bounds.after}."
    )
    drops: list[str] = []
    if ov.proc_drops is not None:
        drops.append(f"/proc/net/udp drops {_n(ov.proc_drops)}")
    if isinstance(ov.ovfl_drops, int):
        drops.append(f"SO_RXQ_OVFL on the next datagram {_n(ov.ovfl_drops)}")
    dropped = ov.proc_drops if ov.proc_drops is not None else ov.ovfl_drops
    host = (
        f" Host-wide {group} RcvbufErrors rose by {_n(ov.host_rcvbuf_errors)} meanwhile "
        "(every socket on the host counts there)."
        if ov.host_rcvbuf_errors is not None
        else ""
    )
    report.findings.append(
        f"{_n(ov.sent)} datagrams of {_n(p.burst_size)} B into a socket that did not read "
        f"(SO_RCVBUF {_n(p.burst_rcvbuf)} requested, {_n(ov.rcvbuf)} effective): "
        f"{_n(ov.delivered)} delivered (sequence {_ranges(ov.delivered_seqs)}), "
        + (
            f"{_n(dropped)} dropped by that socket ({'; '.join(drops)})."
            if isinstance(dropped, int)
            else "drops not countable on this platform."
        )
        + host
    )
    if isinstance(dropped, int):
        heads.append(f"burst: {_n(ov.delivered)} of {_n(ov.sent)} delivered, {_n(dropped)} dropped")
    parts = []
    for r in icmp:
        when = f" after {r.after_ms:.2f} ms" if r.after_ms is not None else ""
        if r.recv_outcome.startswith("TimeoutError"):
            parts.append(f"the {r.kind} one saw nothing within {p.op_timeout:g} s")
        else:
            parts.append(f"the {r.kind} one's next recv() raised {r.recv_outcome}{when}")
    noports = [r.noports for r in icmp if r.noports is not None]
    np_text = (
        f" {group} NoPorts, which counts datagrams that found no receiving socket, rose by "
        f"{', '.join(str(n) for n in noports)} across the {len(noports)} sends (host-wide: "
        "other traffic adds to it)."
        if noports
        else ""
    )
    report.findings.append("Sending to a closed port: " + "; ".join(parts) + "." + np_text)
    report.summary = "; ".join(heads)


def _notes(report: Report) -> None:
    report.notes.extend(
        [
            "udp(7): every receive returns at most one datagram; when it is bigger than the "
            "buffer the rest is discarded and recvmsg() sets MSG_TRUNC in msg_flags. "
            "recv(2): MSG_TRUNC passed as a flag makes Linux return the datagram's real "
            "length. Pass it only to recv_into()/recvmsg_into(): Python's recv() would size "
            "its result by that length and return bytes the kernel never wrote.",
            "The largest UDP payload comes from the 16-bit length fields: IPv4's total "
            "length counts the 20-byte IP header, IPv6's payload length does not, and both "
            "count the 8-byte UDP header (65,507 vs 65,527 B). Larger sends fail with "
            "EMSGSIZE; on a real link, datagrams above the MTU are fragmented or refused "
            "(udp(7), IP_MTU_DISCOVER).",
            "A full receive queue drops whole datagrams at arrival; the sender is not told. "
            "Per-socket counts: the drops column of /proc/net/udp (match the inode), `ss "
            "-uamn` (the d field of skmem), and SO_RXQ_OVFL (socket(7)), which stamps the "
            "cumulative count on each datagram queued after a drop. Udp RcvbufErrors in "
            "/proc/net/snmp (Udp6 in /proc/net/snmp6) is host-wide.",
            "SO_RCVBUF (socket(7)): the kernel doubles the value set, for bookkeeping, and "
            "each queued datagram is charged its whole buffer (truesize), not only its "
            "payload, so far fewer datagrams fit than SO_RCVBUF / size suggests.",
            "ICMP errors: a connected UDP socket gets ECONNREFUSED on its next call after a "
            "port unreachable; an unconnected one only with IP_RECVERR (ip(7); the error "
            "also goes to the error queue, MSG_ERRQUEUE). udp(7)'s error-handling paragraph "
            "reads as if unconnected sockets always got the error; this run shows what "
            "this kernel did.",
            "The 'closed' port is held by a socket connected to its own address, so no other "
            "program can take it during the run; the kernel delivers a datagram to a "
            "connected UDP socket only from its peer, so ours found no socket, as at a "
            "closed port (the holder is listed under Endpoints).",
            "Other platforms (documented, not measured here): Windows fills the buffer with "
            "the head of a too-large datagram but fails the receive with WSAEMSGSIZE (10040) "
            "instead of returning quietly, and an ICMP port unreachable makes even an "
            "unconnected socket's next recvfrom() fail with WSAECONNRESET (10054) unless "
            "SIO_UDP_CONNRESET is turned off. macOS sets MSG_TRUNC in the flags but does not "
            "take it as an input flag, and has no SO_RXQ_OVFL and no /proc (`netstat -s -p "
            "udp` shows host-wide full-buffer drops); there a datagram larger than the "
            "socket's send buffer fails with EMSGSIZE, and that buffer defaults to the sysctl "
            "net.inet.udp.maxdgram (9,216 B on many releases): raise SO_SNDBUF to send more.",
        ]
    )
