"""The matrix: each operation in each mode, on fresh loopback sockets.

An earlier call changes the answer of the next (a reset is reported once, a first send
after the peer's close succeeds), so every cell gets its own sockets (its own Lab):

- operations: connect to a closed port; connect to a listener whose accept queue is full
  (its SYN dropped, so nothing answers); accept with nothing pending; recv with no data;
  send into full buffers; recv after the peer's FIN; recv after the peer's RST; send
  after the peer closed; send again once the peer's RST has come back;
- modes: blocking; `settimeout(T)` (Python's timeout: the socket is non-blocking inside
  and Python waits with poll()); `setblocking(False)`; and the kernel's own SO_RCVTIMEO /
  SO_SNDTIMEO (socket(7)) on a socket Python believes is blocking. connect() and
  connect_ex() are both tried for the two connect operations.

Cases that can wait run concurrently, one thread each, so the matrix takes about one
timeout plus one wake-up; blocking calls are woken by the probe's Waker (calls.py).
"""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass
from typing import Any

from sockprobe.kernel import sockstate
from sockprobe.lab import Lab
from sockprobe.probes import plural
from sockprobe.probes._outcome import Attempt, attempt, errno_name, result_errno, result_text
from sockprobe.probes.timeouts.calls import Waker, need, wait_writable
from sockprobe.probes.timeouts.params import MODES, OPS, Params
from sockprobe.probes.timeouts.setup import Case, apply_mode, prepare
from sockprobe.report import NA, VOLATILE, Cell, Report, col

#: Operations that can wait, and so run concurrently (in every mode but non-blocking;
#: a non-blocking connect to the full queue waits in poll() for T).
WAITING_OPS = ("connect-full-queue", "accept", "recv", "send-full")


@dataclass
class CaseResult:
    case: Case
    attempt: Attempt
    then: str | None
    info: dict[str, Any]
    endpoints: list[dict[str, Any]]


def run_case(
    parent: Lab, case: Case, p: Params, waker: Waker | None, labs: list[Lab] | None = None
) -> CaseResult:
    """One cell of the matrix, on its own sockets (its own Lab, closed when it ends).
    The Lab is listed in `labs` so that an interrupted run can wake its calls."""
    t = p.op_timeout
    with Lab(parent.host, parent.deadline) as lab:
        if labs is not None:
            labs.append(lab)
        prep = prepare(lab, case)
        apply_mode(prep.sock, case.mode, t)
        doing = f"{case.call} ({OPS[case.op][0]}, {MODES[case.mode]})"
        wake: float | None = None
        if case.mode == "blocking":
            wake = p.wake_after
        elif case.mode == "sockopt":
            # The kernel should end the call after t; the wake-up is only a safety net
            # for a platform that ignores SO_RCVTIMEO/SO_SNDTIMEO.
            wake = t + p.wake_after
        if case.mode in ("timeout", "sockopt"):
            need(lab.deadline, t + 0.05, doing)
        if waker is not None:
            waker.check(doing)
        if wake is not None and may_wait(case) and waker is not None:
            a = waker.call(prep.sock, prep.invoke, wake, doing)
        else:
            a = attempt(prep.invoke)
        then = follow(lab, case, prep.sock, a, t) if case.op.startswith("connect") else None
        endpoints = list(lab.endpoints)
    return CaseResult(case, a, then, prep.info, endpoints)


def follow(lab: Lab, case: Case, sock: socket.socket, a: Attempt, t: float) -> str:
    """After a connect: a non-blocking one is followed through (poll for writability,
    then SO_ERROR, connect(2)); every one reports the TCP state it left behind."""
    parts = []
    in_progress = (
        a.error is not None and getattr(a.error, "errno", None) == errno.EINPROGRESS
    ) or (case.call == "connect_ex" and a.value == errno.EINPROGRESS)
    if case.mode == "nonblocking" and in_progress:
        need(lab.deadline, t + 0.05, "polling a non-blocking connect")
        writable = wait_writable(sock, t)
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        parts.append("poll: writable" if writable else f"poll: not writable within {t:g} s")
        parts.append(f"SO_ERROR {errno_name(err)}")
    state = sockstate.tcp_state(sock)
    if state is not None:
        parts.append(f"state {state}")
    return "; ".join(parts) if parts else "-"


def may_wait(case: Case) -> bool:
    if case.op not in WAITING_OPS:
        return False
    return case.mode != "nonblocking" or case.op == "connect-full-queue"


def cases_for(p: Params) -> list[Case]:
    return [
        Case(op, call, mode)
        for op in OPS
        if op in p.ops
        for call in OPS[op][1]
        for mode in MODES
        if mode in p.modes
    ]


# -- table ----------------------------------------------------------------------------------
def _timeout_cell(mode: str, t: float) -> Cell:
    if mode == "blocking":
        return NA("blocking mode has no timeout")
    if mode == "nonblocking":
        return 0.0
    return t


def table(report: Report, p: Params, results: list[CaseResult]) -> None:
    t = report.table(
        "matrix",
        f"Operation x mode (T = {p.op_timeout:g} s; blocked calls woken after "
        f"{p.wake_after:.2f} s)",
        [
            col("op", "operation"),
            col("call"),
            col("mode"),
            col("timeout_s", "timeout", "s"),
            col("woken", "woken by shutdown()"),
            col("result"),
            col("errno"),
            col("elapsed_ms", "elapsed", "ms", VOLATILE),
            col("then"),
        ],
        keys=["op", "call", "mode"],
    )
    for r in results:
        a = r.attempt
        t.add(
            r.case.op,
            r.case.call,
            r.case.mode,
            _timeout_cell(r.case.mode, p.op_timeout),
            a.woken_after is not None,
            result_text(a),
            result_errno(a, r.case.call),
            round(a.elapsed_s * 1000, 3),
            r.then,
        )


# -- findings -------------------------------------------------------------------------------
def dur(seconds: float) -> str:
    return f"{seconds * 1000:.3f} ms" if seconds < 0.001 else f"{seconds:.3f} s"


def _span(lo: float, hi: float) -> str:
    """0.2001, 0.2004 -> '0.200 s'; 0.2001, 0.2074 -> '0.200..0.207 s'."""
    a, b = f"{lo:.3f}", f"{hi:.3f}"
    return f"{a} s" if a == b else f"{a}..{b} s"


def with_errno(a: Attempt, call: str = "") -> str:
    name = result_errno(a, call)
    return result_text(a) + (f" ({name})" if name else "")


def _short(r: CaseResult) -> str:
    a = r.attempt
    what = with_errno(a, r.case.call)
    if a.woken_after is not None:
        return f"blocked until shutdown() after {dur(a.elapsed_s)}, then {what}"
    return f"{what} after {dur(a.elapsed_s)}"


def findings(
    report: Report, p: Params, results: list[CaseResult], overflow_delta: int | None
) -> None:
    t = p.op_timeout
    for op, (label, calls) in OPS.items():
        rows = [r for r in results if r.case.op == op]
        if not rows:
            continue
        parts = []
        for r in rows:
            who = MODES[r.case.mode].replace("(T)", f"({t:g})")
            if r.case.mode == "sockopt":
                who += f" {t:g} s"
            if len(calls) > 1:
                who = f"{r.case.call}, {who}"
            parts.append(f"{who}: {_short(r)}")
        report.findings.append(f"{label[0].upper()}{label[1:]}: " + "; ".join(parts) + ".")

    timed = [
        r
        for r in results
        if r.case.mode == "timeout"
        and (
            isinstance(r.attempt.error, TimeoutError)
            or (r.case.call == "connect_ex" and r.attempt.value == errno.EAGAIN)
        )
    ]
    if timed:
        lo = min(r.attempt.elapsed_s for r in timed)
        hi = max(r.attempt.elapsed_s for r in timed)
        n = plural(len(timed), "call")
        report.findings.append(
            f"settimeout({t:g}): {n} timed out after {_span(lo, hi)}; "
            "each raised TimeoutError with errno None, except connect_ex, which returned "
            f"{errno.EAGAIN} ({errno_name(errno.EAGAIN)}) instead."
            if any(r.case.call == "connect_ex" for r in timed)
            else f"settimeout({t:g}): {n} timed out after {_span(lo, hi)}, "
            "each raising TimeoutError with errno None."
        )
    kt = [
        r
        for r in results
        if r.case.mode == "sockopt"
        and r.attempt.woken_after is None
        and r.attempt.elapsed_s >= 0.5 * t
    ]
    if kt:
        lo = min(r.attempt.elapsed_s for r in kt)
        hi = max(r.attempt.elapsed_s for r in kt)
        kinds = sorted({with_errno(r.attempt, r.case.call) for r in kt})
        py_timeout = any(isinstance(r.attempt.error, TimeoutError) for r in kt)
        report.findings.append(
            f"SO_RCVTIMEO/SO_SNDTIMEO {t:g} s: {plural(len(kt), 'call')} gave up after "
            f"{_span(lo, hi)} and "
            + ", ".join(kinds)
            + (" (TimeoutError appeared)" if py_timeout else ", never TimeoutError")
            + ": the kernel's timeouts surface as errno values on a socket Python "
            "considers blocking."
        )
    blocked = [r for r in results if r.attempt.woken_after is not None]
    if blocked:
        were = "was" if len(blocked) == 1 else "were"
        report.findings.append(
            f"{plural(len(blocked), 'call')} {were} still blocked after {p.wake_after:.2f} s "
            "and shutdown(SHUT_RDWR) from another thread woke every one: "
            + "; ".join(
                f"{OPS[r.case.op][0]} [{r.case.call}] {with_errno(r.attempt, r.case.call)}"
                for r in blocked
            )
            + "."
        )
    holes = [r for r in results if r.case.op == "connect-full-queue"]
    queues = {r.info.get("queue") for r in holes}
    if holes:
        refused = sum(isinstance(r.attempt.error, ConnectionRefusedError) for r in holes)
        q = next(iter(queues)) if len(queues) == 1 else None
        qtext = (
            f"accept queue {q[0]} waiting for a limit of {q[1]} (TCP_INFO), "
            if q is not None
            else "accept queue not readable here, "
        )
        fillers = sorted({int(r.info.get("fillers", 0)) for r in holes})
        ov = (
            ""
            if overflow_delta is None
            else f" TcpExt ListenOverflows rose by {overflow_delta} in this network "
            "namespace during the run (other traffic counts too; every retried SYN counts "
            "again)."
        )
        unanswered = sum(
            r.attempt.woken_after is not None or "SYN_SENT" in (r.then or "") for r in holes
        )
        report.findings.append(
            f"Each of the {len(holes)} full-queue listeners was listen(0) with "
            f"{'/'.join(map(str, fillers))} unaccepted client(s): {qtext}"
            f"so the kernel drops the next SYN. {refused} of {len(holes)} connects to them "
            f"were refused; {unanswered} got no answer at all (still SYN_SENT after their "
            "timeout, or blocked until shutdown())." + ov
        )


def _bare(a: Attempt) -> str:
    """The result without "raised ": short, for the headline."""
    return with_errno(a).removeprefix("raised ")


def summary_parts(p: Params, results: list[CaseResult]) -> list[str]:
    by = {(r.case.op, r.case.call, r.case.mode): r for r in results}
    parts = []
    hole = by.get(("connect-full-queue", "connect", "timeout"))
    if hole is not None:
        parts.append(
            f"connect() with settimeout({p.op_timeout:g}) to a full accept queue (SYN "
            f"dropped, no answer): {_bare(hole.attempt)} after {hole.attempt.elapsed_s:.3f} s"
        )
    kr = by.get(("recv", "recv", "sockopt"))
    if kr is not None:
        parts.append(f"SO_RCVTIMEO recv: {_bare(kr.attempt)} after {kr.attempt.elapsed_s:.3f} s")
    blocked = sum(r.attempt.woken_after is not None for r in results)
    parts.append(f"{plural(len(results), 'case')}, {blocked} woken by shutdown()")
    return parts
