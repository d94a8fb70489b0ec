"""What every dead-peer case shares: how it is run, what is measured, the table it fills.

A case arms fresh sockets (its `setup`), then makes one blocking call on the socket whose
peer has gone silent, in a worker thread. The case's own thread meanwhile samples that
socket's TCP_INFO every SAMPLE_S (the probe and backoff counters are reset when the
connection is aborted, so their peak is kept), and when the probe's bound passes with the
call still blocked it wakes the call with shutdown(SHUT_RDWR): close() from another thread
would not wake it (see lab.py). Every case runs at once, each in its own thread with its
own sockets, so the whole probe takes one bound, not the sum of the waits.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sockprobe.kernel import deadpeer, sockstate
from sockprobe.lab import CANNOT_CONNECT, Lab
from sockprobe.probes._outcome import attempt
from sockprobe.probes.dead_peer.params import Params
from sockprobe.report import NA, VOLATILE, Cell, Column, Report, Table, col
from sockprobe.status import DeadlineExceeded, errno_name

#: TCP_INFO sampling period while a call waits: finer than the 200 ms RTO floor, so each
#: retransmission and probe is seen before the next, and cheap (one getsockopt).
SAMPLE_S = 0.02
#: The payload left unacknowledged by the "unacked" cases.
PAYLOAD = b"u" * 100
#: Result text of a call the kernel never ended.
BLOCKED = "still blocked"


@dataclass
class Armed:
    """A case ready to run: the call to make and the socket it waits on."""

    sock: socket.socket
    call: Callable[[], Any]
    #: time.perf_counter() when the clock of this case started (before the setting that
    #: starts the kernel's timer, so a measured time is never shorter than the truth).
    t0: float
    #: Every socket of the case, closed abortively when it ends (see `_abort`).
    sockets: list[socket.socket] = field(default_factory=list)


@dataclass(frozen=True)
class Case:
    id: str
    options: str
    call: str
    setup: Callable[[Lab, Params], Armed]
    #: Seconds after t0 at which the settings say the call ends; None: no timer ends it.
    predicted_s: float | None
    basis: str


@dataclass
class Outcome:
    case: Case
    result: str = ""
    exception: str | None = None
    errno: str | None = None
    elapsed_s: float = 0.0
    ended: bool = False
    probes: int | None = None
    backoff: int | None = None
    retransmits: int | None = None
    total_retrans: int | None = None
    rto_ms: float | None = None
    #: The RTO before the first retransmission (for the tcp_retries2 computation).
    first_rto_ms: float | None = None
    #: Seconds after t0 of the first sample that showed a timer retransmission
    #: (tcpi_retransmits >= 1): at most SAMPLE_S after it left.
    first_retrans_s: float | None = None
    #: Seconds after t0 of the first sample with tcpi_backoff >= 1 (a timer fired: a
    #: retransmission or, against a zero window, the first window probe).
    first_backoff_s: float | None = None
    na: str | None = None
    #: A prediction that needs this run's measurement (the RTO), set after the run;
    #: it replaces the case's own.
    predicted_s: float | None = None
    samples: list[deadpeer.Timers] = field(default_factory=list)


def run_case(lab: Lab, case: Case, p: Params) -> Outcome:
    """Arm the case, make its call in a worker, sample TCP_INFO, wake it at the bound."""
    out = Outcome(case)
    try:
        armed = case.setup(lab, p)
    except OSError as exc:
        if exc.errno in CANNOT_CONNECT:
            # No loopback connection (lo down, no descriptor): not a case result; run()
            # turns it into the cannot-run error (exit 3) naming the cause.
            raise
        # An option the platform lacks (ENOPROTOOPT off Linux, EINVAL on an old kernel).
        out.na = f"could not arm the case: {exc}"
        return out
    # On an error (the deadline, Ctrl-C) the sockets stay with the Lab, whose cleanup
    # wakes any call still blocked on them (shutdown) before closing them.
    result = _run(lab, case, p, armed, out)
    _abort(lab, [armed.sock, *armed.sockets])
    return result


def _abort(lab: Lab, socks: list[socket.socket]) -> None:
    """Close with SO_LINGER {1, 0}: a normal close would leave the live end an orphan
    retransmitting its FIN to the silent peer for minutes (tcp_orphan_retries), and the
    zero-window writer's queued data would keep it alive too. An RST ends both at once
    and leaves no TIME_WAIT (socket(7))."""
    for s in dict.fromkeys(socks):
        try:
            sockstate.abortive_linger(s)
        except OSError:
            pass
        lab.close(s)


def _run(lab: Lab, case: Case, p: Params, armed: Armed, out: Outcome) -> Outcome:
    first = deadpeer.timers(armed.sock)
    out.first_rto_ms = first.rto_ms if first is not None else None
    bound_at = armed.t0 + p.bound_s
    w = lab.thread(_timed, armed.call, name=f"sockprobe-dead-peer-{case.id}")
    while True:
        t = deadpeer.timers(armed.sock)
        if t is not None and t.state != "CLOSE":
            out.samples.append(t)
            if out.first_retrans_s is None and t.retransmits >= 1:
                out.first_retrans_s = time.perf_counter() - armed.t0
            if out.first_backoff_s is None and t.backoff >= 1:
                out.first_backoff_s = time.perf_counter() - armed.t0
        left = bound_at - time.perf_counter()
        if w.join(max(0.0, min(SAMPLE_S, left))):
            break
        if lab.deadline.expired():
            raise DeadlineExceeded(
                f"--deadline {lab.deadline.seconds:g} s ran out while waiting on {case.id}"
            )
        if left <= 0:
            # Only call it blocked if the thread really sits in the call on this socket.
            sockstate.blocked_on_fd(w.thread.native_id, armed.sock.fileno(), 0.5)
            try:
                armed.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # ENOTCONN: the state change still wakes the call
            woke = time.perf_counter()
            if not w.join(2.0):
                raise RuntimeError(f"shutdown() did not wake the call of {case.id}")
            out.result = BLOCKED
            out.elapsed_s = woke - armed.t0
            break
    if w.error is not None:
        raise w.error
    a, ended_at = w.result
    if isinstance(a.error, OSError) and a.error.errno in CANNOT_CONNECT:
        # ENETUNREACH, EADDRNOTAVAIL...: the call never reached the silent peer, so no
        # timer of this case ran; the probe cannot run here (exit 3), it found nothing.
        raise a.error
    if out.result != BLOCKED:
        out.ended = True
        out.elapsed_s = ended_at - armed.t0
        if a.error is not None:
            out.exception = type(a.error).__name__
            out.errno = errno_name(getattr(a.error, "errno", None))
            out.result = out.errno or out.exception
        else:
            out.result = f"returned {a.value!r}" if a.value is not None else "returned"
    final = deadpeer.timers(armed.sock)
    seen = out.samples + ([final] if final is not None else [])
    if seen:
        out.probes = max(s.probes for s in seen)
        out.backoff = max(s.backoff for s in seen)
        out.retransmits = max(s.retransmits for s in seen)
        out.total_retrans = max(s.total_retrans for s in seen)
        out.rto_ms = out.samples[-1].rto_ms if out.samples else final.rto_ms if final else None
    return out


def _timed(call: Callable[[], Any]) -> tuple[Any, float]:
    a = attempt(call)
    return a, time.perf_counter()


def run_all(lab: Lab, cases: list[Case], p: Params) -> dict[str, Outcome]:
    """Every case at once, each in its own thread; outcomes by case id."""
    lab.deadline.check("starting the dead-peer cases")
    need = p.bound_s + 3.0
    if lab.deadline.remaining() < need:
        raise DeadlineExceeded(
            f"--deadline {lab.deadline.seconds:g} s is too short: the cases wait up to "
            f"{p.bound_s:g} s (the longest prediction + slack); give at least {need:g} s"
        )
    workers = [(c, lab.thread(run_case, lab, c, p, name=f"sockprobe-case-{c.id}")) for c in cases]
    out: dict[str, Outcome] = {}
    for c, w in workers:
        w.join(max(0.0, lab.deadline.remaining()))
        if w.thread.is_alive():
            raise DeadlineExceeded(
                f"--deadline {lab.deadline.seconds:g} s ran out while waiting on {c.id}"
            )
        if w.error is not None:
            raise w.error
        out[c.id] = w.result
    return out


# -- the table every experiment fills -----------------------------------------------------
COLUMNS: list[Column] = [
    col("case"),
    col("options"),
    col("call"),
    col("result"),
    col("exception"),
    col("elapsed_s", "after", "s", VOLATILE),
    col("predicted_s", "predicted", "s", VOLATILE),
    col("basis", "predicted from"),
    col("probes", "probes", "", VOLATILE),
    col("backoff", "backoff", "", VOLATILE),
    col("retransmissions", "retrans", "", VOLATILE),
    col("rto_ms", "rto", "ms", VOLATILE),
]


def table(report: Report, id: str, title: str, outcomes: list[Outcome]) -> Table:
    t = report.table(id, title, COLUMNS, keys=["case"])
    for o in outcomes:
        c = o.case
        p_s = o.predicted_s if o.predicted_s is not None else c.predicted_s
        pred: Cell = round(p_s, 3) if p_s is not None else NA(c.basis)
        if o.na is not None:
            na = NA(o.na)
            t.add(c.id, c.options, c.call, na, na, na, pred, c.basis, na, na, na, na)
            continue
        no_info = NA("TCP_INFO not available here")
        t.add(
            c.id,
            c.options,
            c.call,
            o.result,
            o.exception,
            round(o.elapsed_s, 3),
            pred,
            c.basis,
            _or(o.probes, no_info),
            _or(o.backoff, no_info),
            _or(o.total_retrans, no_info),
            _or(round(o.rto_ms, 1) if o.rto_ms is not None else None, no_info),
        )
    return t


def _or(v: int | float | None, na: NA) -> Cell:
    return na if v is None else v


def deaf_pair(
    lab: Lab, name: str, configure: Callable[[socket.socket], None] | None = None
) -> tuple[socket.socket, socket.socket]:
    """A connected pair whose server end then drops everything it is sent: a peer that
    vanished without a word. Returns (the live end, the silent end)."""
    live, dead = lab.tcp_pair(configure_client=configure, name=name)
    deadpeer.drop_everything(dead)
    return live, dead
