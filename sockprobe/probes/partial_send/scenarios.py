"""The scenarios: one fresh connected TCP pair with small buffers whose receiver does
not read, and one way of offering `size` bytes to the sender:

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

After every call the probe reads SIOCOUTQ (sender: bytes not yet acknowledged, sent or
not) and SIOCINQ (receiver: bytes queued, unread). Then, before any read, it reads the
same two queues through sock_diag (what `ss` prints as Send-Q and Recv-Q): an independent
interface as a cross-check. Then the sender shuts down its write side and the receiver
drains to end-of-file, checking every byte against the pattern that was offered. The
payload is a sequence of big-endian 32-bit counters, so no 4-byte word repeats within
16 GiB: a lost, duplicated or reordered chunk cannot match by accident.

This module holds the measurement and the per-scenario table (`scenarios`): what the
API said, what the kernel held, what was drained. timeline.py shows the calls.
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
from sockprobe.lab import Deadline, Lab, pair_or_unsupported
from sockprobe.probes.partial_send.params import PLACEMENTS, Params
from sockprobe.report import NA, VOLATILE, Cell, Report, col
from sockprobe.status import DeadlineExceeded

#: Longest wait between two non-blocking retries (see module docstring).
POLL_STEP = 0.005
RECV_CHUNK = 65536
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
    #: How long a call that timed out waited, in seconds.
    waited_s: float | None = None


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

    c, s = pair_or_unsupported(
        lab, name, configure_client=sender, configure_listener=listener, name=name
    )
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
        calls.append(_row(pair, t0, len(data) - total + n, n, total, "returned"))
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
            calls.append(_row(pair, t0, len(data) - total, 0, total, "TimeoutError"))
            calls[-1].waited_s = waited
            break
        total += n
        calls.append(_row(pair, t0, len(data) - total + n, n, total, "returned"))
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
        call = _row(pair, t0, len(data), None, None, "TimeoutError")
        call.waited_s = waited
        return [call]
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
    lab.close_abortively(pair.sender, pair.receiver)


def scenario(lab: Lab, placement: str, mode: str, p: Params, data: bytes) -> Scenario:
    sc, pair = fill(lab, placement, mode, p, data)
    drain(lab, sc, pair, data)
    return sc


# -- the per-scenario table and its findings ---------------------------------------------
def na_ioctl(v: int | None) -> Cell:
    """A queue size, or NA where SIOCOUTQ/SIOCINQ do not exist."""
    return NA(NO_IOCTL) if v is None else v


def thousands(v: int) -> str:
    return f"{v:,}"


_na, _n = na_ioctl, thousands


def span(values: list[int]) -> str:
    """[1, 2, 1] -> '1 to 2'; [1, 1] -> '1'."""
    lo, hi = min(values), max(values)
    return str(lo) if lo == hi else f"{lo} to {hi}"


def table(report: Report, p: Params, results: list[Scenario]) -> None:
    t = report.table(
        "scenarios",
        "Per scenario: what the API said, what the kernel held, what was drained",
        [
            col("placement", "SO_RCVBUF set on"),
            col("mode"),
            col("offered", unit="B"),
            col("accepted", "accepted (API)", "B", VOLATILE),
            col("taken", "taken (tcpi_bytes_acked − 1 + SIOCOUTQ)", "B", VOLATILE),
            col("ioctl_queued", "SIOCOUTQ + SIOCINQ", "B", VOLATILE),
            col("diag_queued", "ss Send-Q + Recv-Q (sock_diag)", "B", VOLATILE),
            col("receiver_drops", "receiver drops (sock_diag)", "segments", VOLATILE),
            col(
                "retransmitted",
                "sender retransmits by the end (tcpi_total_retrans)",
                "segments",
                VOLATILE,
            ),
            col("drained", unit="B", kind=VOLATILE),
            col("drained_equals_accepted", "drained = accepted"),
            col("intact", "content intact"),
        ],
        keys=["placement", "mode"],
    )
    for sc in results:
        accepted: Cell = NA(NO_COUNT) if sc.accepted is None else sc.accepted
        diag: Cell = sc.diag_sendq if isinstance(sc.diag_sendq, NA) else sc.diag_recvq
        if isinstance(sc.diag_sendq, int) and isinstance(sc.diag_recvq, int):
            diag = sc.diag_sendq + sc.diag_recvq
        t.add(
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


def sendall_finding(sa: Scenario, p: Params) -> str:
    where = PLACEMENT_TEXT[sa.placement]
    if sa.accepted is not None:
        return f"{where}: sendall() returned: the kernel accepted all {_n(p.size)} B."
    parts = []
    if sa.taken is not None:
        parts.append(
            f"the sender's kernel had taken {_n(sa.taken)} B (tcpi_bytes_acked − 1 + SIOCOUTQ)"
        )
    if sa.kernel_queued is not None:
        parts.append(
            f"sender SIOCOUTQ {_n(sa.outq or 0)} + receiver SIOCINQ {_n(sa.inq or 0)} = "
            f"{_n(sa.kernel_queued)} B"
        )
    held = f"; {'; '.join(parts)}" if parts else ""
    waited = sa.calls[-1].waited_s
    after = "" if waited is None else f" after {waited:.2f} s"
    return (
        f"{where}: sendall() raised TimeoutError{after} and its exception carries no "
        f"count{held}; the receiver drained {_n(sa.drained)} B."
    )


def findings(p: Params, results: list[Scenario]) -> list[str]:
    out: list[str] = []
    by = {(sc.placement, sc.mode): sc for sc in results}
    for pl in PLACEMENTS:
        sa = by.get((pl, "sendall"))
        if sa is not None and sa.calls:
            out.append(sendall_finding(sa, p))
    nbs = [by.get((pl, "nonblocking")) for pl in PLACEMENTS]
    if all(x is not None and x.accepted is not None for x in nbs):
        a, b = (x.accepted for x in nbs if x is not None)
        if a is not None and b is not None and a != b:
            out.append(
                f"Where SO_RCVBUF was set changed the total accepted: {_n(a)} B on the "
                f"listener before listen() vs {_n(b)} B on the accepted socket, with the "
                "same effective sizes."
            )
    bad = [sc for sc in results if not (sc.accounted and sc.intact)]
    dropped = [sc for sc in results if isinstance(sc.rcv_drops, int) and sc.rcv_drops > 0]
    if dropped:
        d_counts = [sc.rcv_drops for sc in dropped if isinstance(sc.rcv_drops, int)]
        r_counts = [sc.retrans for sc in dropped if sc.retrans is not None]
        resent = (
            f" and the sender retransmitted {span(r_counts)} segment(s) by the end of the "
            "drain (tcpi_total_retrans)"
            if r_counts
            else ""
        )
        outcome = ": the loss stayed inside TCP; no application byte was missing" if not bad else ""
        out.append(
            f"Under the hood, in {len(dropped)} of {len(results)} scenarios the receiving "
            f"kernel dropped {span(d_counts)} segment(s) that arrived with its buffer full "
            f"(sock_diag SK_MEMINFO_DROPS, ss's skmem d){resent}{outcome}."
        )
    if not bad:
        total = ", ".join(_n(sc.drained) for sc in results)
        short = any(sc.drained < p.size for sc in results)
        out.append(
            f"Drained, all {len(results)} scenarios: every byte the sender's kernel accepted "
            f"arrived, in order, byte for byte ({total} B), and nothing more."
            + (
                " Nothing was lost here: the calls took less than offered, and the rest is "
                "still the caller's to send."
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
            out.append(f"{PLACEMENT_TEXT[sc.placement]}, {MODE_TEXT[sc.mode]}: MISMATCH, {what}.")
    return out


def headline(p: Params, results: list[Scenario]) -> str:
    bad = [sc for sc in results if not (sc.accounted and sc.intact)]
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
    return took + (
        "all drained intact, nothing lost" if not bad else "DRAIN MISMATCH: see findings"
    )
