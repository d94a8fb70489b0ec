"""sockprobe timeouts: which exception, which errno, after how long, per operation and mode.

The experiments, one module each:
- matrix.py: every operation in every mode, on fresh sockets (table `matrix`);
- facts.py: Python-level and thread facts (table `facts`).
Plumbing: setup.py builds the sockets each operation meets; calls.py makes a call that
may block and wakes it with shutdown() on time.

Threads: one per case that can wait (they wait at the same time, so the matrix takes
about one timeout plus one wake-up), two for the facts (two lanes, each one after
another), and one waker for every blocked call. A host that cannot start them (a low RLIMIT_NPROC or
address-space limit) gets Unsupported naming the cause.
"""

from __future__ import annotations

import errno
import socket
import threading
from typing import Any

from sockprobe import kernel
from sockprobe.kernel import synretry
from sockprobe.kernel.netif import loopback_down_reason
from sockprobe.lab import Lab, Worker, cannot_run, resolve_host
from sockprobe.probes import Stopwatch
from sockprobe.probes.timeouts import facts, matrix
from sockprobe.probes.timeouts.calls import Waker
from sockprobe.probes.timeouts.matrix import CaseResult, cases_for, may_wait, run_case
from sockprobe.probes.timeouts.params import MODES, OPS, SYSCTLS, Params
from sockprobe.probes.timeouts.setup import Case
from sockprobe.report import Report, environment, params_dict
from sockprobe.status import Unsupported, oserror_text

__all__ = ["MODES", "OPS", "SYSCTLS", "Case", "Params", "run"]


def _wake_all(labs: list[Lab], waker: Waker) -> None:
    """On Ctrl-C or an error, shut down every socket of the cases still running, so their
    threads return at once instead of finishing their timeouts (each thread still closes
    its own sockets). shutdown() wakes poll() too, so Python-level timeouts end as well.
    Cases and facts that had not started their call yet do not start it."""
    waker.stopping.set()
    for lab in list(labs):
        for s in list(lab.sockets):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # not connected, or already closed by its thread


def _start(lab: Lab, target: Any, *args: Any, name: str) -> Worker:
    try:
        return lab.thread(target, *args, name=name)
    except RuntimeError as exc:  # "can't start new thread": EAGAIN from pthread_create
        raise Unsupported(
            f"cannot start another thread ({threading.active_count()} running): {exc}; "
            "check RLIMIT_NPROC and the address-space limit (each thread needs a stack)"
        ) from None


def _listen_overflows() -> int | None:
    return kernel.netstat_counters().get("TcpExt", {}).get("ListenOverflows")


def _no_descriptor(exc: OSError, n_cases: int) -> str:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    shown = ["unlimited" if v == resource.RLIM_INFINITY else str(v) for v in (soft, hard)]
    return (
        f"out of file descriptors ({oserror_text(exc)}): RLIMIT_NOFILE soft {shown[0]}, "
        f"hard {shown[1]}; the {n_cases} cases run side by side, a few sockets each"
    )


def _no_port(exc: OSError, n_cases: int) -> str:
    """The cause, once the run's own sockets are closed (so the range is counted as it
    is now, beside the run's need)."""
    from sockprobe.kernel.ephemeral import ephemeral_use

    use = ephemeral_use()
    where = use.describe() if use is not None else "the ephemeral port range is not readable"
    return (
        f"no free local port ({oserror_text(exc)}) while the {n_cases} cases ran side by "
        f"side, a few ephemeral ports each; now that they are closed, {where}"
    )


def run(params: Params) -> Report:
    watch = Stopwatch()
    down = loopback_down_reason(resolve_host(params.host).address)
    if down is not None:
        raise Unsupported(down)
    host, deadline = params.resolve()
    values = kernel.sysctls(SYSCTLS)
    report = Report("timeouts", params=params_dict(params), environment=environment(values))
    cases = cases_for(params)
    overflows0 = _listen_overflows()
    results: list[CaseResult | None] = [None] * len(cases)
    found: list[facts.Fact] = []
    labs: list[Lab] = []
    waker = Waker(deadline)
    try:
        with Lab(host, deadline) as lab:
            try:
                waiting = [
                    (
                        i,
                        _start(
                            lab, run_case, lab, c, params, waker, labs, name=f"sockprobe-case-{i}"
                        ),
                    )
                    for i, c in enumerate(cases)
                    if may_wait(c)
                ]
                lanes = [
                    _start(
                        lab, facts.run_all, lab, params, labs, waker, lane, name="sockprobe-facts"
                    )
                    for lane in facts.LANES
                ]
                busy = [w for _, w in waiting] + lanes
                waker_worker = _start(
                    lab,
                    waker.serve,
                    lambda: any(w.thread.is_alive() for w in busy),
                    name="sockprobe-waker",
                )
                # While they wait, the instant cases run here one after another.
                for i, c in enumerate(cases):
                    if not may_wait(c):
                        results[i] = run_case(lab, c, params, None, labs)
                for i, w in waiting:
                    results[i] = facts.join(w, deadline, f"case {cases[i].name}")
                for w in lanes:
                    found.extend(facts.join(w, deadline, "the thread and timeout checks"))
                # One stable order, whichever lane ran a fact.
                found.sort(key=lambda f: facts.ORDER.index(f.id) if f.id in facts.ORDER else 99)
                facts.join(waker_worker, deadline, "waking the blocked calls")
            except BaseException:
                _wake_all(labs, waker)
                raise
    except OSError as exc:
        # A worker's error is re-raised here by join(); the Lab has closed everything.
        if exc.errno in (errno.EMFILE, errno.ENFILE):
            raise Unsupported(_no_descriptor(exc, len(cases))) from None
        if exc.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL):
            # bind(port 0) or connect() found no free local port: the range, not --host.
            raise Unsupported(_no_port(exc, len(cases))) from None
        unsupported = cannot_run(exc, host, "running the matrix")
        if unsupported is not None:
            raise unsupported from None
        raise
    overflows1 = _listen_overflows()
    done = [r for r in results if r is not None]
    for r in done:
        report.endpoints.extend(r.endpoints)
    delta = None if overflows0 is None or overflows1 is None else overflows1 - overflows0
    matrix.table(report, params, done)
    facts.table(report, found)
    matrix.findings(report, params, done, delta)
    facts.findings(report, found)
    report.summary = "; ".join(matrix.summary_parts(params, done))
    _notes(report)
    report.duration_s = watch()
    return report


def connect_note(retries: int | None, linear: int | None) -> str:
    """The note on which blocking calls end on their own, with connect()'s give-up time
    computed from this namespace's tcp_syn_retries and tcp_syn_linear_timeouts."""
    if retries is None:
        budget = "it gives up after the time net.ipv4.tcp_syn_retries allows"
    else:
        lin = linear if linear is not None else "absent"
        budget = (
            f"here (net.ipv4.tcp_syn_retries {retries}, tcp_syn_linear_timeouts {lin}) "
            + synretry.describe(retries, linear)
        )
    return (
        "Which blocking calls end by themselves: connect() is the one blocking TCP call "
        f"that always does: {budget}. recv() on a peer that "
        "vanished without a word never returns unless a timeout, SO_KEEPALIVE or "
        "TCP_USER_TIMEOUT ends it; a send() whose data is never acknowledged waits for "
        "net.ipv4.tcp_retries2 (documented: about 15 minutes at the default 15); a peer "
        "that keeps its window at zero keeps a writer probing forever. So set a timeout on "
        "every call that waits for the peer, not only on connect()."
    )


def _notes(report: Report) -> None:
    sysctls = report.environment.get("sysctls", {})
    retries = sysctls.get("net.ipv4.tcp_syn_retries")
    linear = sysctls.get("net.ipv4.tcp_syn_linear_timeouts")
    report.notes.extend(
        [
            "settimeout(0) is setblocking(False) and settimeout(None) is setblocking(True) "
            "(Python socket docs); a timeout applies to each call separately, except "
            "sendall(), where since Python 3.5 it bounds the whole call.",
            "socket.timeout has been an alias of TimeoutError since Python 3.10; a Python "
            "timeout carries no errno, because no system call failed: Python made the fd "
            "non-blocking and waited in poll() itself. connect_ex() reports that case as "
            "EAGAIN.",
            connect_note(
                retries if isinstance(retries, int) else None,
                linear if isinstance(linear, int) else None,
            ),
            "SO_RCVTIMEO/SO_SNDTIMEO (socket(7)) are enforced by the kernel inside the call: "
            "recv and accept fail with EAGAIN, send returns what it queued or fails with "
            "EAGAIN, and connect fails with EINPROGRESS while the handshake carries on. They "
            "do not affect select()/poll(), and Python's gettimeout() does not see them.",
            "The full-queue connect is an unanswered SYN: a SYN that meets a full accept "
            "queue is dropped (tcp_conn_request(), net/ipv4/tcp_input.c; TcpExt "
            "ListenOverflows), so the client retransmits instead of getting ECONNREFUSED, "
            "even with net.ipv4.tcp_abort_on_overflow=1, which resets only a half-open "
            "request whose final ACK meets the full queue (`sockprobe backlog` measures "
            "each path).",
            "A thread blocked in a socket call is woken by shutdown() from another thread; "
            "close() is not enough on Linux (the call keeps its own reference and the fd "
            "number may be reused by the next socket), and SIGALRM handlers run in the main "
            "thread only (signal.signal() from another thread raises ValueError).",
            "A non-blocking connect() fails with EINPROGRESS; wait for writability "
            "(select/poll), then read SO_ERROR to learn the outcome (connect(2)).",
            "macOS: the same errno names with other numbers (EAGAIN 35, EINPROGRESS 36, "
            "ECONNREFUSED 61), and a full accept queue also drops SYNs. Windows: "
            "WSAECONNREFUSED is 10061, a timed-out connect_ex returns "
            "WSAEWOULDBLOCK (10035), SO_RCVTIMEO takes milliseconds and a timed-out recv "
            "leaves the socket in an undefined state (Winsock documentation); a full backlog "
            "is answered with RST, so connect is refused rather than left hanging.",
        ]
    )
