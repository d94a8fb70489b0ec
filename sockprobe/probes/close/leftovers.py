"""What close() leaves behind when data is still on its way.

- orphan_unsent: the server fills its send buffer (the client reads nothing), then
  close()s. close() returns at once; the socket lives on as an orphan in FIN_WAIT1
  with the data still queued, and the kernel keeps sending it: the client then reads
  every byte, then EOF. Nothing was lost, but nobody could be told had it been
  (tcp_close() queues the FIN behind the data; the orphan is bounded by
  tcp_orphan_retries and tcp_max_orphans, not by the program).
- linger_acked / linger_stalled: SO_LINGER {1, 1 s}. close() blocks until the peer's
  TCP has acknowledged the data and the FIN, or the linger time runs out
  (sk_stream_wait_close() in tcp_close()). With room in the peer's receive buffer it
  returns as soon as the FIN is acknowledged, though the peer application read
  nothing; with the peer's window full it blocks the whole second, returns without an
  error on Linux, and the orphan goes on delivering. So a positive linger bounds the
  wait; it does not prove that the peer application read anything, and after a
  timeout it does not even tell the caller that the data is still unsent. The stalled
  case blocks for 1 s, so it runs in a worker thread beside the other scenarios.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass, field

from sockprobe import kernel
from sockprobe.kernel import sockstate
from sockprobe.lab import Lab, Worker
from sockprobe.probes.close.common import addr, drain, fill, wait_inq
from sockprobe.report import NA, VOLATILE, Cell, Report, col

LINGER_S = 1
FITS_B = 1000
#: The peer's receive buffer in the big cases, and what the closer queues there.
PEER_RCVBUF = 4096
BIG_B = 256 << 10


@dataclass
class Leftover:
    case: str
    queued_b: Cell
    unsent_b: Cell
    close_ms: Cell
    close_result: str
    state_after: Cell
    peer_read_b: Cell
    peer_end: str


@dataclass
class Pending:
    """A scenario whose close() runs in a worker thread."""

    case: str
    client: socket.socket
    server: socket.socket
    queued: int
    unsent: Cell
    local: tuple[str, int]
    remote: tuple[str, int]
    worker: Worker | None = None
    times: list[float] = field(default_factory=list)


def _state(lab: Lab, local: tuple[str, int], remote: tuple[str, int]) -> Cell:
    try:
        st = sockstate.lookup_state(lab.host.family, local, remote)
    except OSError:
        return NA("sock_diag is not available here (Linux netlink)")
    return "gone" if st is None else st


def _linger(s: socket.socket, seconds: int) -> None:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, seconds))


def _small_rcvbuf(s: socket.socket) -> None:
    # Set before connect() so the window scale fits it (socket(7), tcp(7)): a small
    # receive buffer fills with PEER_RCVBUF, not megabytes of autotuned buffer.
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, PEER_RCVBUF)


def _prepare(lab: Lab, case: str, big: bool) -> Pending:
    client, server = lab.tcp_pair(configure_client=_small_rcvbuf if big else None, name=case)
    if big:
        queued = fill(server, limit=BIG_B)
        server.setblocking(True)
    else:
        server.settimeout(lab.deadline.timeout(2.0, "sending"))
        server.sendall(b"y" * FITS_B)
        queued = FITS_B
        wait_inq(client, FITS_B, lab.deadline)
    q = kernel.outq(server)
    unsent: Cell = NA("SIOCOUTQ is not available") if q is None else q
    return Pending(case, client, server, queued, unsent, addr(server), addr(client))


def _close_timed(lab: Lab, p: Pending) -> None:
    t0 = time.perf_counter()
    lab.close(p.server)
    p.times.append(time.perf_counter() - t0)


def start(lab: Lab) -> Pending:
    """The stalled linger case: its close() blocks LINGER_S in a worker thread."""
    p = _prepare(lab, "linger_stalled", big=True)
    _linger(p.server, LINGER_S)
    p.worker = lab.thread(_close_timed, lab, p, name="sockprobe-linger-close")
    return p


def abandon(lab: Lab, p: Pending) -> None:
    """On an error, a deadline or Ctrl-C while the stalled close() still lingers: reset
    its peer, so that close() returns now instead of when its linger time runs out.
    Lab.cleanup()'s shutdown() does not end it (the peer's FIN only moves the closer to
    CLOSING, still waiting); the peer's RST does: tcp_reset() -> tcp_done() sets CLOSE,
    and sk_stream_wait_close() in tcp_close() waits only while the state is FIN_WAIT1,
    CLOSING or LAST_ACK (net/core/stream.c, closing())."""
    if p.worker is not None and p.worker.thread.is_alive():
        lab.close_abortively(p.client)


def _finish(lab: Lab, p: Pending) -> Leftover:
    state = _state(lab, p.local, p.remote)
    read, end = drain(p.client, lab.deadline, f"reading what {p.case} left")
    # The peer resets rather than closes: its FIN would turn the orphan into a TIME_WAIT
    # that shows nothing here (tcp_rcv_state_process, FIN_WAIT2 + FIN).
    sockstate.abortive_linger(p.client)
    lab.close(p.client)
    # In ms: a plain close() returns in microseconds, a lingering one in a second.
    close_ms: Cell = round(p.times[0] * 1000, 3) if p.times else NA("close() did not return")
    return Leftover(p.case, p.queued, p.unsent, close_ms, "returned None", state, read, end)


def measure(lab: Lab, pending: Pending) -> list[Leftover]:
    rows = []
    p = _prepare(lab, "orphan_unsent", big=True)
    _close_timed(lab, p)
    rows.append(_finish(lab, p))
    p = _prepare(lab, "linger_acked", big=False)
    _linger(p.server, LINGER_S)
    _close_timed(lab, p)
    rows.append(_finish(lab, p))
    # The stalled case: wait for its close() to return (LINGER_S after it began).
    assert pending.worker is not None
    pending.worker.join(lab.deadline.timeout(LINGER_S + 1.0, "waiting for the lingering close()"))
    if pending.worker.error is not None:
        raise pending.worker.error
    rows.append(_finish(lab, pending))
    return rows


def table(report: Report, rows: list[Leftover]) -> None:
    t = report.table(
        "leftovers",
        f"close() with data on its way: plain, and with SO_LINGER {{1, {LINGER_S} s}}",
        [
            col("case"),
            col("queued_b", "queued by the closer", "B", VOLATILE),
            col("unsent_b", "unacknowledged at close (SIOCOUTQ)", "B", VOLATILE),
            col("close_ms", "close() took", "ms", VOLATILE),
            col("close_result", "close()"),
            col("state_after", "closer's state after"),
            col("peer_read_b", "peer read afterwards", "B", VOLATILE),
            col("peer_end", "peer's read ended with"),
        ],
        keys=["case"],
    )
    for r in rows:
        t.add(
            r.case,
            r.queued_b,
            r.unsent_b,
            r.close_ms,
            r.close_result,
            r.state_after,
            r.peer_read_b,
            r.peer_end,
        )


def findings(report: Report, rows: list[Leftover]) -> None:
    by = {r.case: r for r in rows}
    o, a, s = by.get("orphan_unsent"), by.get("linger_acked"), by.get("linger_stalled")
    if o is not None and isinstance(o.close_ms, float):
        report.findings.append(
            f"close() with {o.unsent_b} B not yet acknowledged returned after "
            f"{o.close_ms:.2g} ms and left an orphan in {o.state_after}; the peer then "
            f"read {o.peer_read_b} of the {o.queued_b} B queued, then {o.peer_end}: the "
            "kernel finished the sending after the program had let go."
        )
    if a is not None and s is not None and isinstance(a.close_ms, float):
        report.findings.append(
            f"SO_LINGER {{1, {LINGER_S} s}}: with room at the peer, close() returned after "
            f"{a.close_ms:.3g} ms (the peer's TCP had acknowledged {a.queued_b} B and "
            f"the FIN; its application read them only afterwards); with the peer's window "
            f"full it blocked {_s(s.close_ms)} and {s.close_result} with no error, leaving "
            f"{s.state_after}, and the peer still read {s.peer_read_b} of {s.queued_b} B "
            f"then {s.peer_end}."
        )


def _s(ms: Cell) -> str:
    return f"{ms / 1000:.3f} s" if isinstance(ms, float) else str(ms)
