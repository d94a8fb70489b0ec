"""Python-level and thread facts that decide how a timeout behaves: settimeout(0) is
non-blocking, SO_RCVTIMEO is invisible to Python and to select(), a settimeout() budget
covers a whole sendall(), close() from another thread does not wake a blocked recv().

They run in two lanes (two threads, each running its facts one after another), beside the
matrix's waiting cases.
"""

from __future__ import annotations

import select
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sockprobe.kernel import sockstate
from sockprobe.lab import Deadline, Lab, Worker
from sockprobe.probes._outcome import Attempt, attempt, result_text
from sockprobe.probes.timeouts.calls import Waker, need
from sockprobe.probes.timeouts.matrix import dur, with_errno
from sockprobe.probes.timeouts.params import Params
from sockprobe.probes.timeouts.setup import RECV_SIZE, pair
from sockprobe.report import VOLATILE, Report, col

#: Data for the sendall case: far more than a slow reader can take in one timeout.
SENDALL_BYTES = 4 * 1024 * 1024


@dataclass
class Fact:
    #: Stable id (the row key).
    id: str
    check: str
    result: str
    elapsed_s: float | None = None
    detail: dict[str, Any] = field(default_factory=dict)


def join(w: Worker, deadline: Deadline, doing: str) -> Any:
    if not w.join(deadline.timeout(30.0, doing)):
        deadline.check(doing)
        raise RuntimeError(f"{doing} did not finish")
    if w.error is not None:
        raise w.error
    return w.result


def _worker_attempt(w: Worker) -> Attempt:
    if w.error is not None:
        raise w.error
    result = w.result
    assert isinstance(result, Attempt)
    return result


def settimeout_zero(lab: Lab, p: Params) -> list[Fact]:
    out = []
    a = lab.open_socket()
    a.settimeout(0)
    out.append(
        Fact(
            "settimeout_zero",
            "settimeout(0), then getblocking() / gettimeout()",
            f"{a.getblocking()} / {a.gettimeout()!r}",
        )
    )
    b = lab.open_socket()
    b.setblocking(False)
    out.append(
        Fact(
            "setblocking_false",
            "setblocking(False), then getblocking() / gettimeout()",
            f"{b.getblocking()} / {b.gettimeout()!r}",
        )
    )
    lab.close(a)
    lab.close(b)
    c, s = lab.tcp_pair(name="settimeout(0) recv")
    c.settimeout(0)
    r = attempt(lambda: c.recv(RECV_SIZE))
    out.append(
        Fact(
            "recv_timeout_zero", "recv with no data after settimeout(0)", with_errno(r), r.elapsed_s
        )
    )
    lab.close(c)
    lab.close(s)
    out.append(
        Fact(
            "timeout_alias",
            "socket.timeout is TimeoutError (Python >= 3.10)",
            str(socket.timeout is TimeoutError),
        )
    )
    k = lab.open_socket()
    try:
        sockstate.set_kernel_timeouts(k, p.op_timeout, None)
        back = sockstate.rcvtimeo(k)
        out.append(
            Fact(
                "rcvtimeo_readback",
                f"SO_RCVTIMEO {p.op_timeout:g} s set: gettimeout() / SO_RCVTIMEO read back",
                f"{k.gettimeout()!r} / " + ("n/a" if back is None else f"{back:g} s"),
            )
        )
    except OSError as exc:
        out.append(Fact("rcvtimeo_readback", "SO_RCVTIMEO set", f"raised {type(exc).__name__}"))
    lab.close(k)

    def set_alarm() -> None:
        signal.signal(signal.SIGALRM, signal.SIG_DFL)

    w = lab.thread(attempt, set_alarm, name="sockprobe-timeouts-signal")
    a2 = join(w, lab.deadline, "the signal check")
    out.append(
        Fact("signal_in_thread", "signal.signal(SIGALRM, ...) from a worker thread", with_errno(a2))
    )
    return out


def select_rcvtimeo(lab: Lab, p: Params) -> list[Fact]:
    """SO_RCVTIMEO does not shorten select(): it bounds recv() only."""
    t = p.op_timeout
    c, s = lab.tcp_pair(name="select with SO_RCVTIMEO")
    check = f"select() for {t:g} s on a socket with SO_RCVTIMEO {t / 4:g} s"
    try:
        sockstate.set_kernel_timeouts(c, t / 4, None)
    except OSError as exc:
        return [Fact("select_rcvtimeo", check, f"SO_RCVTIMEO failed: {exc}")]
    need(lab.deadline, t + 0.05, "the select check")
    r = attempt(lambda: select.select([c], [], [], t))
    ready = r.value[0] if r.error is None else None
    text = (
        result_text(r)
        if r.error is not None
        else ("nothing readable at its own timeout" if not ready else "readable")
    )
    lab.close(c)
    lab.close(s)
    return [Fact("select_rcvtimeo", check, text, r.elapsed_s)]


def sendall_budget(lab: Lab, p: Params) -> list[Fact]:
    """The settimeout() budget covers a whole sendall() since Python 3.5, even while the
    peer keeps draining: it is not restarted after each chunk that goes out."""
    t = p.op_timeout
    c, s = pair(lab, "sendall/sendall/timeout", small=True)
    stop = threading.Event()
    interval = t / 5

    def slow_reader() -> tuple[int, int]:
        s.setblocking(False)
        got, reads = 0, 0
        end = time.monotonic() + lab.deadline.timeout(t * 4 + 1.0, "the slow reader")
        while not stop.wait(interval) and time.monotonic() < end:
            try:
                data = s.recv(65536)
            except BlockingIOError:
                continue
            if not data:
                break
            got += len(data)
            reads += 1
        return got, reads

    need(lab.deadline, t + 0.05, "the sendall check")
    reader = lab.thread(slow_reader, name="sockprobe-timeouts-reader")
    c.settimeout(t)
    data = b"a" * SENDALL_BYTES
    r = attempt(lambda: c.sendall(data))
    stop.set()
    if not reader.join(lab.deadline.timeout(2.0, "stopping the slow reader")):
        raise RuntimeError("the slow reader did not stop")
    if reader.error is not None:
        raise reader.error
    got, reads = reader.result
    lab.close(c)
    lab.close(s)
    return [
        Fact(
            "sendall_budget",
            f"sendall({SENDALL_BYTES // (1024 * 1024)} MiB) with settimeout({t:g}), "
            f"peer reading every {interval:g} s",
            with_errno(r),
            r.elapsed_s,
            {"drained": got, "reads": reads},
        )
    ]


def close_wake(lab: Lab, p: Params) -> list[Fact]:
    """close() from another thread does not wake a recv() blocked on the socket."""
    c, s = lab.tcp_pair(name="close from another thread")
    # A second descriptor for the same socket: after close(c) it is the only way left to
    # reach the socket and shutdown() it, which wakes the stuck recv.
    d = lab.adopt(c.dup())
    c.settimeout(None)
    need(lab.deadline, p.wake_after + 0.1, "the close() check")
    w = lab.thread(attempt, lambda: c.recv(RECV_SIZE), name="sockprobe-timeouts-close")
    fd = c.fileno()
    seen = sockstate.blocked_on_fd(w.thread.native_id, fd, 1.0)
    if seen is None:
        time.sleep(0.05)  # no /proc here: give the thread time to enter recv()
    lab.close(c)  # the fd is released; the blocked recv keeps its own reference
    still = not w.join(p.wake_after)
    probe = lab.open_socket()
    reused = probe.fileno() == fd
    lab.close(probe)
    try:
        d.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    if not w.join(lab.deadline.timeout(2.0, "waking the recv after close()")):
        raise RuntimeError("shutdown() on a dup did not wake the recv")
    a = _worker_attempt(w)
    text = (
        f"still blocked after {p.wake_after:.2f} s; shutdown() on a dup() then woke it: "
        + with_errno(a)
        if still
        else f"woken by close(): {with_errno(a)}"
    )
    lab.close(d)
    lab.close(s)
    return [
        Fact(
            "close_from_thread",
            "close() from another thread while recv is blocked",
            text,
            a.elapsed_s,
            {"still_blocked": still, "fd_reused": reused, "fd": fd},
        )
    ]


FactFn = Callable[[Lab, Params], list[Fact]]
#: Two lanes of facts, each run one after another in one thread: each lane waits about
#: as long as the matrix does (T + T, or a few ms + the wake-up), so two threads finish
#: with it instead of one thread taking twice as long.
LANES: tuple[tuple[FactFn, ...], ...] = (
    (settimeout_zero, close_wake),
    (select_rcvtimeo, sendall_budget),
)
FACTS: tuple[FactFn, ...] = (settimeout_zero, select_rcvtimeo, sendall_budget, close_wake)
#: The facts' ids in the order the table lists them.
ORDER = (
    "settimeout_zero",
    "setblocking_false",
    "recv_timeout_zero",
    "timeout_alias",
    "rcvtimeo_readback",
    "signal_in_thread",
    "select_rcvtimeo",
    "sendall_budget",
    "close_from_thread",
)


def run_all(
    parent: Lab, p: Params, labs: list[Lab], waker: Waker, fns: tuple[FactFn, ...] = FACTS
) -> list[Fact]:
    """The facts `fns`, one after another, each on its own Lab; none starts once the
    probe is being stopped."""
    out: list[Fact] = []
    for fn in fns:
        waker.check(f"the fact {fn.__name__}")
        with Lab(parent.host, parent.deadline) as lab:
            labs.append(lab)
            out.extend(fn(lab, p))
    return out


def table(report: Report, facts: list[Fact]) -> None:
    f = report.table(
        "facts",
        "Python-level and thread facts",
        [
            col("fact"),
            col("check"),
            col("result"),
            col("elapsed_ms", "elapsed", "ms", VOLATILE),
        ],
        keys=["fact"],
    )
    for fact in facts:
        f.add(
            fact.id,
            fact.check,
            fact.result,
            None if fact.elapsed_s is None else round(fact.elapsed_s * 1000, 3),
        )


def findings(report: Report, facts: list[Fact]) -> None:
    for fact in facts:
        if "drained" in fact.detail:
            report.findings.append(
                f"{fact.check}: {fact.result} after {dur(fact.elapsed_s or 0.0)} although "
                f"the reader drained {fact.detail['drained']:,} bytes in "
                f"{fact.detail['reads']} reads meanwhile: the timeout bounds the whole "
                "sendall, not each chunk, and the caller cannot tell how much was sent."
            )
        if "still_blocked" in fact.detail:
            reuse = (
                "the next socket got the same fd number while the old call still ran"
                if fact.detail["fd_reused"]
                else "the next socket happened to get another fd number"
            )
            report.findings.append(f"close() from another thread: {fact.result}; {reuse}.")
