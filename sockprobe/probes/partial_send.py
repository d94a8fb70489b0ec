"""sockprobe partial-send: how much one send() accepts when the buffers fill, and whether
anything is lost.

A scenario is one fresh connected TCP pair with small buffers whose receiver does not
read, and one way of offering `size` bytes to the sender:

- nonblocking: send() on a non-blocking socket returns how many bytes it took, then
  raises BlockingIOError (EAGAIN). EAGAIN means "not now", not "never": the receiver's
  delayed ACK can open the window a little later. So the probe keeps retrying (waking on
  select() writability, and every POLL_STEP anyway, because send() can accept bytes a
  little before poll(2) reports the socket writable) until nothing more was accepted for
  a quiet period. Every call that accepted bytes is a row; a run of EAGAINs is one row.
- timeout: send() with a socket timeout returns a partial count while bytes fit, then
  raises TimeoutError once nothing fits for the whole timeout.
- sendall: sendall() with a timeout loops inside Python and raises TimeoutError: the
  exception carries no count, so the caller cannot know how much went. The kernel can:
  SIOCOUTQ on the sender plus SIOCINQ on the receiver (tcp(7)).

After every row the probe reads SIOCOUTQ (sender: bytes not yet acknowledged, sent or
not) and SIOCINQ (receiver: bytes queued, unread). Then, before any read, it reads the
same two queues through sock_diag (what `ss` prints as Send-Q and Recv-Q): an independent
interface as a cross-check. Then the sender shuts down its write side and the receiver
drains to end-of-file, checking every byte against the pattern that was offered. The
payload is a sequence of big-endian 32-bit counters, so no 4-byte word repeats within
16 GiB: a lost, duplicated or reordered chunk cannot match by accident.

Where SO_RCVBUF is set is itself a variable (tcp(7): buffer sizes must be set before
listen() or connect() to take effect on a connection), so each mode runs twice: with
SO_RCVBUF on the listener before listen() (the accepted socket inherits it, and the
SYN-ACK already advertises a window sized for it) and on the accepted socket after the
handshake (the window advertised in the SYN-ACK came from the default buffer).

The scenarios run side by side, one thread each, on separate connections: each is bound
by its own timers (the peer's delayed ACK, the quiet period, the operation timeout), so
running them together changes none of the per-connection numbers and keeps the probe
well under a second and a half.
"""

from __future__ import annotations

import selectors
import socket
import sys
import time
from array import array
from dataclasses import dataclass, field

from sockprobe import kernel
from sockprobe.kernel import sendqueue
from sockprobe.lab import Deadline, Lab
from sockprobe.probes import ProbeParams, Stopwatch, require
from sockprobe.report import NA, Cell, Report, environment, legacy_table, params_dict
from sockprobe.status import DeadlineExceeded

PLACEMENTS = ("listener", "accepted")
PLACEMENT_CHOICES = (*PLACEMENTS, "both")
MODES = ("nonblocking", "timeout", "sendall")
MAX_SIZE = 64 * 1024 * 1024
#: Longest wait between two non-blocking retries (see module docstring).
POLL_STEP = 0.005
RECV_CHUNK = 65536
SYSCTLS = (
    "net.core.wmem_max",
    "net.core.rmem_max",
    "net.ipv4.tcp_wmem",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_moderate_rcvbuf",
    "net.ipv4.tcp_adv_win_scale",
)
NO_IOCTL = "SIOCOUTQ/SIOCINQ are Linux ioctls"
NO_COUNT = "sendall() reports no count when it fails"
NO_TCP_INFO = "TCP_INFO (tcpi_bytes_acked, tcpi_total_retrans) is Linux-only"
PLACEMENT_TEXT = {
    "listener": "SO_RCVBUF on the listener before listen()",
    "accepted": "SO_RCVBUF on the accepted socket",
}
MODE_TEXT = {
    "nonblocking": "non-blocking send()",
    "timeout": "send() with a timeout",
    "sendall": "sendall() with a timeout",
}


@dataclass(frozen=True)
class Params(ProbeParams):
    size: int = 1024 * 1024
    sndbuf: int = 16384
    rcvbuf: int = 16384
    placement: str = "both"
    modes: tuple[str, ...] = MODES
    quiet_period: float = 0.2
    op_timeout: float = 0.2

    def __post_init__(self) -> None:
        super().__post_init__()
        require(1 <= self.size <= MAX_SIZE, f"--size must be 1..{MAX_SIZE} bytes, not {self.size}")
        for name, v in (("--sndbuf", self.sndbuf), ("--rcvbuf", self.rcvbuf)):
            require(1 <= v <= 1 << 30, f"{name} must be 1..{1 << 30} bytes, not {v}")
        require(
            self.placement in PLACEMENT_CHOICES,
            f"--placement {self.placement!r}: choose from {', '.join(PLACEMENT_CHOICES)}",
        )
        require(len(self.modes) > 0, "--mode: give at least one mode")
        for m in self.modes:
            require(m in MODES, f"--mode {m!r}: choose from {', '.join(MODES)}")
        require(
            0.01 <= self.quiet_period <= 10.0,
            f"--quiet-period must be 0.01..10 seconds, not {self.quiet_period}",
        )
        require(
            0.01 <= self.op_timeout <= 10.0,
            f"--op-timeout must be 0.01..10 seconds, not {self.op_timeout}",
        )


def counter_pattern(size: int) -> bytes:
    """Big-endian 32-bit counters 0, 1, 2, ... cut to `size` bytes."""
    words = array("I", range((size + 3) // 4))
    if words.itemsize != 4:  # pragma: no cover - "I" is 4 bytes on every CPython we run on
        words = array("L", range((size + 3) // 4))
    if sys.byteorder == "little":
        words.byteswap()
    return words.tobytes()[:size]


# -- one scenario --------------------------------------------------------------------------
@dataclass
class Call:
    """One send()/sendall() call, or one run of EAGAINs (retries counts them)."""

    t_ms: float
    requested: int
    accepted: int | None
    cumulative: int | None
    outq: int | None
    inq: int | None
    outcome: str
    retries: int = 1


@dataclass
class Scenario:
    placement: str
    mode: str
    sndbuf: int = 0
    rcvbuf: int = 0
    calls: list[Call] = field(default_factory=list)
    #: What the API reported as accepted (None for sendall, which reports nothing).
    accepted: int | None = None
    outq: int | None = None
    inq: int | None = None
    #: Every byte the sender's kernel took: tcpi_bytes_acked - 1 + SIOCOUTQ.
    taken: int | None = None
    diag_sendq: Cell = None
    diag_recvq: Cell = None
    #: Segments the receiving kernel dropped (its buffer was full; sock_diag meminfo)
    #: before the drain, and the sender's retransmissions (tcpi_total_retrans) by its end.
    rcv_drops: Cell = None
    retrans: int | None = None
    drained: int = 0
    first_mismatch: int | None = None
    duration_s: float = 0.0

    @property
    def kernel_queued(self) -> int | None:
        return None if self.outq is None or self.inq is None else self.outq + self.inq

    @property
    def intact(self) -> bool:
        return self.first_mismatch is None

    @property
    def accounted(self) -> bool:
        """Drained exactly what the API said it accepted, or, for sendall, which gives no
        count, what the sender's kernel said it took."""
        expected = self.accepted if self.accepted is not None else self.kernel_count
        return expected is not None and self.drained == expected

    @property
    def kernel_count(self) -> int | None:
        return self.taken if self.taken is not None else self.kernel_queued


@dataclass
class Pair:
    sender: socket.socket
    receiver: socket.socket


def open_pair(lab: Lab, placement: str, p: Params, name: str) -> Pair:
    """A connected pair with SO_SNDBUF on the sender (before connect) and SO_RCVBUF where
    `placement` says."""

    def sender(s: socket.socket) -> None:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, p.sndbuf)

    def listener(s: socket.socket) -> None:
        if placement == "listener":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, p.rcvbuf)

    c, s = lab.tcp_pair(configure_client=sender, configure_listener=listener, name=name)
    if placement == "accepted":
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, p.rcvbuf)
    lab.record(f"{name} receiver", s)
    return Pair(c, s)


def _queues(pair: Pair) -> tuple[int | None, int | None]:
    return kernel.outq(pair.sender), kernel.inq(pair.receiver)


def _row(
    pair: Pair, t0: float, requested: int, accepted: int | None, cum: int | None, outcome: str
) -> Call:
    outq, inq = _queues(pair)
    return Call((time.monotonic() - t0) * 1000, requested, accepted, cum, outq, inq, outcome)


def _nonblocking(pair: Pair, data: memoryview, p: Params, deadline: Deadline) -> list[Call]:
    c = pair.sender
    c.setblocking(False)
    # A selector, not select.select(), which fails on descriptors above FD_SETSIZE (1024).
    with selectors.DefaultSelector() as writable:
        writable.register(c, selectors.EVENT_WRITE)
        return _offer_nonblocking(pair, data, p, deadline, writable)


def _offer_nonblocking(
    pair: Pair,
    data: memoryview,
    p: Params,
    deadline: Deadline,
    writable: selectors.BaseSelector,
) -> list[Call]:
    c = pair.sender
    calls: list[Call] = []
    total = 0
    t0 = last_accept = time.monotonic()
    while total < len(data):
        deadline.check("offering bytes to a non-blocking send()")
        try:
            n = c.send(data[total:])
        except BlockingIOError:
            if calls and calls[-1].accepted == 0:
                calls[-1].retries += 1
            else:
                calls.append(_row(pair, t0, len(data) - total, 0, total, "BlockingIOError EAGAIN"))
            quiet_left = p.quiet_period - (time.monotonic() - last_accept)
            if quiet_left <= 0:
                break
            # Wake when the kernel reports room, or after POLL_STEP regardless.
            writable.select(min(quiet_left, POLL_STEP))
            continue
        total += n
        last_accept = time.monotonic()
        calls.append(_row(pair, t0, len(data) - total + n, n, total, f"returned {n:,}"))
    if total == len(data):
        calls[-1].outcome += " (all accepted)"
    return calls


def _timeout_mode(pair: Pair, data: memoryview, p: Params, deadline: Deadline) -> list[Call]:
    c = pair.sender
    calls: list[Call] = []
    total = 0
    t0 = time.monotonic()
    while total < len(data):
        doing = "waiting in send() with a timeout"
        given = deadline.timeout(p.op_timeout, doing)
        c.settimeout(given)
        t_call = time.monotonic()
        try:
            n = c.send(data[total:])
        except TimeoutError:
            if given < p.op_timeout:
                raise DeadlineExceeded(
                    f"--deadline {deadline.seconds:g} s ran out while {doing}"
                ) from None
            waited = time.monotonic() - t_call
            calls.append(
                _row(pair, t0, len(data) - total, 0, total, f"TimeoutError after {waited:.2f} s")
            )
            break
        total += n
        calls.append(_row(pair, t0, len(data) - total + n, n, total, f"returned {n:,}"))
    return calls


def _sendall(pair: Pair, data: memoryview, p: Params, deadline: Deadline) -> list[Call]:
    c = pair.sender
    doing = "waiting in sendall() with a timeout"
    given = deadline.timeout(p.op_timeout, doing)
    c.settimeout(given)
    t0 = time.monotonic()
    try:
        c.sendall(data)
    except TimeoutError:
        if given < p.op_timeout:
            raise DeadlineExceeded(
                f"--deadline {deadline.seconds:g} s ran out while {doing}"
            ) from None
        waited = time.monotonic() - t0
        return [_row(pair, t0, len(data), None, None, f"TimeoutError after {waited:.2f} s")]
    return [_row(pair, t0, len(data), len(data), len(data), "returned None (all accepted)")]


SENDERS = {"nonblocking": _nonblocking, "timeout": _timeout_mode, "sendall": _sendall}


def fill(lab: Lab, placement: str, mode: str, p: Params, data: bytes) -> tuple[Scenario, Pair]:
    """Open a pair and offer `data` in `mode`; the receiver reads nothing."""
    sc = Scenario(placement, mode)
    pair = open_pair(lab, placement, p, name=f"{placement}/{mode}")
    sc.sndbuf = pair.sender.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
    sc.rcvbuf = pair.receiver.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    sc.calls = SENDERS[mode](pair, memoryview(data), p, lab.deadline)
    if mode == "sendall":
        sc.accepted = sc.calls[-1].accepted
    else:
        sc.accepted = sum(c.accepted or 0 for c in sc.calls)
    sc.outq, sc.inq = _queues(pair)
    sc.taken = sendqueue.bytes_taken(pair.sender)
    sc.diag_sendq, sc.diag_recvq, sc.rcv_drops = diag_queues(pair)
    return sc, pair


def diag_queues(pair: Pair) -> tuple[Cell, Cell, Cell]:
    """Send-Q of the sender, Recv-Q and drop count of the receiver as sock_diag reports
    them (what `ss -tm` prints as Send-Q, Recv-Q and skmem d), or NA where sock_diag
    cannot be asked."""
    from sockprobe.kernel import sockdiag

    if not kernel.IS_LINUX:
        na = NA("sock_diag is Linux-only")
        return na, na, na
    local: int = pair.sender.getsockname()[1]
    remote: int = pair.sender.getpeername()[1]
    sendq: Cell = NA("the sender was not in the sock_diag dump")
    recvq: Cell = NA("the receiver was not in the sock_diag dump")
    drops: Cell = recvq
    try:
        # One query per end; both ports in the request, so the kernel filters (cheap on a
        # host with many connections). State mask 1 << 1: ESTABLISHED only.
        for r in sockdiag.dump(
            pair.sender.family, states=1 << 1, port=local, remote_port=remote, meminfo=False
        ):
            sendq = r.wqueue
        for r in sockdiag.dump(
            pair.sender.family, states=1 << 1, port=remote, remote_port=local, meminfo=True
        ):
            recvq = r.rqueue
            drops = NA("no SK_MEMINFO_DROPS in this kernel's reply") if r.drops is None else r.drops
    except OSError as exc:
        na = NA(f"sock_diag unavailable here ({exc})")
        return na, na, na
    return sendq, recvq, drops


def drain(lab: Lab, sc: Scenario, pair: Pair, data: bytes) -> None:
    """Shut the sender's write side and read everything to end-of-file, checking each
    byte against what was offered."""
    t0 = time.monotonic()
    pair.sender.setblocking(True)
    pair.sender.shutdown(socket.SHUT_WR)  # the FIN follows the queued bytes
    buf = bytearray()
    r = pair.receiver
    while True:
        r.settimeout(lab.deadline.timeout(5.0, f"draining {sc.placement}/{sc.mode}"))
        chunk = r.recv(RECV_CHUNK)
        if not chunk:
            break
        buf += chunk
        if len(buf) > len(data):
            break  # more than was ever offered: counted as a mismatch below
    sc.drained = len(buf)
    if bytes(buf) != data[: len(buf)] or len(buf) > len(data):
        sc.first_mismatch = next(
            (i for i, (a, b) in enumerate(zip(buf, data)) if a != b), min(len(buf), len(data))
        )
    sc.duration_s = time.monotonic() - t0
    # Counted now, not before the drain: a segment the receiver dropped is resent by a
    # timer (or once the window reopens), often after the sender stopped offering bytes.
    info = kernel.tcp_info(pair.sender)
    sc.retrans = None if info is None else info.total_retrans
    lab.close(pair.sender)
    lab.close(pair.receiver)


def scenario(lab: Lab, placement: str, mode: str, p: Params, data: bytes) -> Scenario:
    sc, pair = fill(lab, placement, mode, p, data)
    drain(lab, sc, pair, data)
    return sc


# -- the probe --------------------------------------------------------------------------------
def run(params: Params) -> Report:
    watch = Stopwatch()
    host, deadline = params.resolve()
    report = Report(
        "partial-send",
        params=params_dict(params),
        environment=environment(kernel.sysctls(SYSCTLS)),
    )
    placements = PLACEMENTS if params.placement == "both" else (params.placement,)
    modes = [m for m in MODES if m in params.modes]
    data = counter_pattern(params.size)
    with Lab(host, deadline) as lab:
        workers = [
            lab.thread(scenario, lab, pl, m, params, data, name=f"sockprobe-partial-{pl}-{m}")
            for pl in placements
            for m in modes
        ]
        results: list[Scenario] = []
        for w in workers:
            if not w.join(deadline.timeout(None, "waiting for the scenarios")):
                deadline.check("waiting for the scenarios")
                raise DeadlineExceeded(f"--deadline {deadline.seconds:g} s ran out")
            if w.error is not None:
                raise w.error
            results.append(w.result)
        # The scenarios ran side by side; list their endpoints in scenario order.
        order = [f"{pl}/{m}" for pl in placements for m in modes]
        report.endpoints = sorted(
            lab.endpoints, key=lambda ep: order.index(str(ep["role"]).split(" ")[0])
        )
    _tables(report, params, results)
    _findings(report, params, results)
    _notes(report)
    report.duration_s = watch()
    return report


def _na(v: int | None) -> Cell:
    return NA(NO_IOCTL) if v is None else v


def _tables(report: Report, p: Params, results: list[Scenario]) -> None:
    t = legacy_table(
        report,
        f"Timeline: {p.size:,} B offered, receiver not reading "
        f"(one row per call; a run of EAGAINs is one row)",
        [
            "SO_RCVBUF set on",
            "mode",
            "call",
            "t",
            "requested",
            "accepted",
            "cumulative",
            "sender SIOCOUTQ",
            "receiver SIOCINQ",
            "outcome",
            "calls in row",
        ],
        ["", "", "", "ms", "B", "B", "B", "B", "B", "", ""],
        volatile=[
            "t",
            "requested",
            "accepted",
            "cumulative",
            "sender SIOCOUTQ",
            "receiver SIOCINQ",
            "outcome",
            "calls in row",
        ],
    )
    for sc in results:
        for i, c in enumerate(sc.calls, 1):
            no_count: Cell = NA(NO_COUNT)
            t.add(
                sc.placement,
                sc.mode,
                i,
                round(c.t_ms, 3),
                c.requested,
                no_count if c.accepted is None else c.accepted,
                no_count if c.cumulative is None else c.cumulative,
                _na(c.outq),
                _na(c.inq),
                c.outcome,
                c.retries,
            )
    b = legacy_table(
        report,
        "Buffers: requested, and what getsockopt() read back",
        [
            "SO_RCVBUF set on",
            "SO_SNDBUF requested (sender)",
            "SO_SNDBUF effective",
            "SO_RCVBUF requested (receiver)",
            "SO_RCVBUF effective",
        ],
        ["", "B", "B", "B", "B"],
    )
    for pl in PLACEMENTS:
        first = next((sc for sc in results if sc.placement == pl), None)
        if first is not None:
            b.add(pl, p.sndbuf, first.sndbuf, p.rcvbuf, first.rcvbuf)
    s = legacy_table(
        report,
        "Per scenario: what the API said, what the kernel held, what was drained",
        [
            "SO_RCVBUF set on",
            "mode",
            "offered",
            "accepted (API)",
            "taken (tcpi_bytes_acked − 1 + SIOCOUTQ)",
            "SIOCOUTQ + SIOCINQ",
            "ss Send-Q + Recv-Q (sock_diag)",
            "receiver drops (sock_diag)",
            "sender retransmits by the end (tcpi_total_retrans)",
            "drained",
            "drained = accepted",
            "content intact",
        ],
        ["", "", "B", "B", "B", "B", "B", "segments", "segments", "B", "", ""],
        volatile=[
            "accepted (API)",
            "taken (tcpi_bytes_acked − 1 + SIOCOUTQ)",
            "SIOCOUTQ + SIOCINQ",
            "ss Send-Q + Recv-Q (sock_diag)",
            "receiver drops (sock_diag)",
            "sender retransmits by the end (tcpi_total_retrans)",
            "drained",
        ],
    )
    for sc in results:
        accepted: Cell = NA(NO_COUNT) if sc.accepted is None else sc.accepted
        diag: Cell = sc.diag_sendq if isinstance(sc.diag_sendq, NA) else sc.diag_recvq
        if isinstance(sc.diag_sendq, int) and isinstance(sc.diag_recvq, int):
            diag = sc.diag_sendq + sc.diag_recvq
        s.add(
            sc.placement,
            sc.mode,
            p.size,
            accepted,
            NA(NO_TCP_INFO) if sc.taken is None else sc.taken,
            _na(sc.kernel_queued),
            diag,
            sc.rcv_drops,
            NA(NO_TCP_INFO) if sc.retrans is None else sc.retrans,
            sc.drained,
            sc.accounted,
            sc.intact,
        )


def _n(v: int) -> str:
    return f"{v:,}"


def _kib(v: int) -> str:
    return f"{v / 1024:g} KiB" if v % 1024 == 0 else f"{v:,} B"


def _span(values: list[int]) -> str:
    """[1, 2, 1] -> '1 to 2'; [1, 1] -> '1'."""
    lo, hi = min(values), max(values)
    return str(lo) if lo == hi else f"{lo} to {hi}"


def _buffer_verb(requested: int, effective: int, cap_name: str) -> str:
    """How setsockopt's value became what getsockopt read back (socket(7): the request is
    capped at the sysctl maximum, then doubled; a floor applies to tiny requests)."""
    cap = kernel.sysctl_int(cap_name)
    if effective == 2 * requested:
        return "doubled"
    if cap is not None and requested > cap and effective == 2 * cap:
        return f"capped at {cap_name} ({_n(cap)}) and doubled"
    if effective > 2 * requested:
        return "raised to the kernel's floor"
    return "not doubled" if effective == requested else "changed"


def _nonblocking_story(sc: Scenario) -> str:
    """'32,768 + 8,192 B, then EAGAIN; 16,384 B more at +42 ms': the calls that accepted
    bytes, grouped into bursts separated by runs of EAGAIN."""
    bursts: list[tuple[float, list[int]]] = []
    after_eagain = True
    for c in sc.calls:
        if c.accepted:
            if after_eagain:
                bursts.append((c.t_ms, []))
            bursts[-1][1].append(c.accepted)
            after_eagain = False
        else:
            after_eagain = True
    parts: list[str] = []
    for i, (t_ms, sizes) in enumerate(bursts):
        amount = " + ".join(_n(x) for x in sizes) + " B"
        parts.append(amount if i == 0 else f"{amount} more at +{t_ms:.0f} ms")
    return ", then EAGAIN; ".join(parts)


def _findings(report: Report, p: Params, results: list[Scenario]) -> None:
    if not results:
        return
    eff_snd = max(sc.sndbuf for sc in results)
    eff_rcv = max(sc.rcvbuf for sc in results)
    report.findings.append(
        f"Read back with getsockopt after setsockopt: SO_SNDBUF {_n(p.sndbuf)} → "
        f"{_n(eff_snd)} B ({_buffer_verb(p.sndbuf, eff_snd, 'net.core.wmem_max')}), "
        f"SO_RCVBUF {_n(p.rcvbuf)} → {_n(eff_rcv)} B "
        f"({_buffer_verb(p.rcvbuf, eff_rcv, 'net.core.rmem_max')})."
    )
    by = {(sc.placement, sc.mode): sc for sc in results}
    for pl in PLACEMENTS:
        where = PLACEMENT_TEXT[pl]
        nb = by.get((pl, "nonblocking"))
        if nb is not None and nb.accepted is not None:
            accepting = [c for c in nb.calls if c.accepted]
            if nb.accepted >= p.size:
                report.findings.append(
                    f"{where}: non-blocking send() accepted all {_n(p.size)} B in "
                    f"{len(accepting)} call(s); the buffers were big enough."
                )
            else:
                report.findings.append(
                    f"{where}: non-blocking send() accepted {_n(nb.accepted)} of {_n(p.size)} "
                    f"bytes in {len(accepting)} call(s) before the buffers (sndbuf "
                    f"{_kib(nb.sndbuf)} + rcvbuf {_kib(nb.rcvbuf)} effective) were full: "
                    f"{_nonblocking_story(nb)}, then EAGAIN and nothing more for "
                    f"{p.quiet_period:g} s."
                )
        to = by.get((pl, "timeout"))
        if to is not None and to.calls:
            returned = [_n(c.accepted) for c in to.calls if c.accepted]
            last = to.calls[-1]
            end = (
                f"then raised {last.outcome}"
                if last.outcome.startswith("TimeoutError")
                else "and that was everything"
            )
            report.findings.append(
                f"{where}: send() with a {p.op_timeout:g} s timeout returned "
                + (", then ".join(returned) if returned else "nothing")
                + f", {end}."
            )
        sa = by.get((pl, "sendall"))
        if sa is not None and sa.calls:
            if sa.accepted is None:
                parts = []
                if sa.taken is not None:
                    parts.append(
                        f"the sender's kernel had taken {_n(sa.taken)} B (tcpi_bytes_acked − 1 "
                        "+ SIOCOUTQ)"
                    )
                if sa.kernel_queued is not None:
                    parts.append(
                        f"sender SIOCOUTQ {_n(sa.outq or 0)} + receiver SIOCINQ "
                        f"{_n(sa.inq or 0)} = {_n(sa.kernel_queued)} B"
                    )
                held = f"; {'; '.join(parts)}" if parts else ""
                report.findings.append(
                    f"{where}: sendall() raised {sa.calls[-1].outcome} and its exception "
                    f"carries no count{held}; the receiver drained {_n(sa.drained)} B."
                )
            else:
                report.findings.append(
                    f"{where}: sendall() returned: the kernel accepted all {_n(p.size)} B."
                )
    nbs = [by.get((pl, "nonblocking")) for pl in PLACEMENTS]
    if all(x is not None and x.accepted is not None for x in nbs):
        a, b = (x.accepted for x in nbs if x is not None)
        if a is not None and b is not None and a != b:
            report.findings.append(
                f"Where SO_RCVBUF was set changed the total accepted: {_n(a)} B on the "
                f"listener before listen() vs {_n(b)} B on the accepted socket, with the "
                f"same effective sizes."
            )
    bad = [sc for sc in results if not (sc.accounted and sc.intact)]
    dropped = [sc for sc in results if isinstance(sc.rcv_drops, int) and sc.rcv_drops > 0]
    if dropped:
        d_counts = [sc.rcv_drops for sc in dropped if isinstance(sc.rcv_drops, int)]
        r_counts = [sc.retrans for sc in dropped if sc.retrans is not None]
        resent = (
            f" and the sender retransmitted {_span(r_counts)} segment(s) by the end of the "
            "drain (tcpi_total_retrans)"
            if r_counts
            else ""
        )
        outcome = ": the loss stayed inside TCP; no application byte was missing" if not bad else ""
        report.findings.append(
            f"Under the hood, in {len(dropped)} of {len(results)} scenarios the receiving "
            f"kernel dropped {_span(d_counts)} segment(s) that arrived with its buffer full "
            f"(sock_diag SK_MEMINFO_DROPS, ss's skmem d){resent}{outcome}."
        )
    if not bad:
        total = ", ".join(_n(sc.drained) for sc in results)
        short = any(sc.drained < p.size for sc in results)
        report.findings.append(
            f"Drained, all {len(results)} scenarios: every byte the sender's kernel accepted "
            f"arrived, in order, byte for byte ({total} B), and nothing more."
            + (
                " Nothing was lost: the calls took less than offered, and the caller owns the rest."
                if short
                else ""
            )
        )
    else:
        for sc in bad:
            what = (
                f"first wrong byte at offset {_n(sc.first_mismatch)}"
                if sc.first_mismatch is not None
                else f"drained {_n(sc.drained)} B vs {_n(sc.accepted or 0)} B accepted"
            )
            report.findings.append(
                f"{PLACEMENT_TEXT[sc.placement]}, {MODE_TEXT[sc.mode]}: MISMATCH, {what}."
            )
    head = []
    amounts: list[int] = []
    for pl in PLACEMENTS:
        first = next((sc for sc in results if sc.placement == pl), None)
        if first is None:
            continue
        amount = first.accepted if first.accepted is not None else first.kernel_count
        if amount is not None:
            amounts.append(amount)
            head.append(f"{_n(amount)} B (SO_RCVBUF on {pl})")
    if not head:
        took = ""
    elif all(a >= p.size for a in amounts):
        took = f"the sender's kernel took all {_n(p.size)} B; "
    else:
        took = (
            f"the sender's kernel took {' / '.join(head)} of {_n(p.size)} B before the "
            "buffers were full; "
        )
    report.summary = took + (
        "all drained intact, nothing lost" if not bad else "DRAIN MISMATCH: see findings"
    )


def _notes(report: Report) -> None:
    report.notes.extend(
        [
            "send(2) returns the number of bytes the kernel accepted into the socket's send "
            "buffer; on a non-blocking socket with no room it fails with EAGAIN "
            "(BlockingIOError). Accepted bytes are the kernel's to deliver: nothing is "
            "dropped; the caller must offer the rest later.",
            "Python's socket timeouts: the socket is non-blocking underneath and each call "
            "waits for writability up to the timeout; send() returns a partial count, "
            "sendall() keeps calling send() and, on timeout, raises without saying how much "
            "went (the Python docs say so). SIOCOUTQ (sender) + SIOCINQ (receiver), tcp(7), "
            "tell how much the kernel holds.",
            "socket(7): the kernel caps a SO_SNDBUF / SO_RCVBUF request at "
            "net.core.wmem_max / rmem_max and then doubles it for bookkeeping overhead "
            "(tiny requests are raised to a floor). tcp(7): set buffer sizes before listen() "
            "(inherited by accepted sockets) or connect(); set later, as in the 'accepted' "
            "rows, the handshake has already advertised a window sized for the default "
            "buffer (tcp_rmem[1]) and a window scale sized for the largest one (tcp_rmem[2], "
            "rmem_max): compare the SYN-ACKs in a capture of the endpoints below.",
            "Accepted is not the same as delivered at once: the receiver's window counts "
            "payload, its buffer counts each segment's whole allocation, so a segment inside "
            "the advertised window can still find the buffer full. The receiving kernel drops "
            "it (the socket's drop count, ss's skmem d; TcpExt TCPRcvQDrop and RcvPruned "
            "host-wide) and the sender resends it later: TCP's problem, never the "
            "application's.",
            "EAGAIN is a moment, not the end: the receiver acknowledges data and reopens the "
            "window (on loopback often with its delayed ACK, tens of ms later), so a "
            "non-blocking writer should wait for writability (select/poll) and retry.",
            "Check by hand while the receiver is idle: `ss -tmi` shows Send-Q/Recv-Q and the "
            "skmem buffers for the endpoints listed below; the per-scenario table shows the "
            "same Send-Q/Recv-Q read through sock_diag, the interface ss uses.",
            "Other platforms (documented, not measured here): Windows: non-blocking send() "
            "fails with WSAEWOULDBLOCK (10035), SO_SNDBUF/SO_RCVBUF read back as set (not "
            "doubled), and there is no SIOCOUTQ. macOS: buffers are not doubled; there is no "
            "SIOCOUTQ, but SO_NWRITE reads the bytes still in the send buffer (sent or not, "
            "until acknowledged) and FIONREAD the unread bytes in the receive buffer.",
        ]
    )
