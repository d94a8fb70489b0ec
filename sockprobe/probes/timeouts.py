"""sockprobe timeouts: which exception, which errno, after how long, per operation and mode.

A matrix of operations x modes, every case on fresh loopback sockets (an earlier call
changes the answer of the next: a reset is reported once, a first send after the peer's
close succeeds):

- operations: connect to a closed port; connect to a listener whose accept queue is full;
  accept with nothing pending; recv with no data; send into full buffers; recv after the
  peer's FIN; recv after the peer's RST; send after the peer closed; send again once the
  peer's RST has come back;
- modes: blocking; `settimeout(T)` (Python's timeout: the socket is non-blocking inside and
  Python waits with poll()); `setblocking(False)`; and the kernel's own SO_RCVTIMEO /
  SO_SNDTIMEO (socket(7)) on a socket Python believes is blocking. connect() and
  connect_ex() are both tried for the two connect operations.

The black hole needs no root and no firewall: a listener with listen(0) admits one
connection (Linux lets the accept queue hold backlog + 1) and, once that connection waits
unaccepted, the kernel drops every further SYN before answering it (listen(2), tcp(7)):
the client hears nothing, exactly like a filtered port. The queue length and limit are
read back from the listener's TCP_INFO before the case runs.

A blocking call that would wait forever runs in a Lab worker thread; after --wake-after
seconds the probe calls shutdown(SHUT_RDWR) on the socket, which wakes it (close() from
another thread does not: see the "thread" facts), and reports what the woken call then
returned or raised. Cases that can wait run concurrently, each with its own sockets, so
the whole matrix takes about one timeout plus one wake-up.
"""

from __future__ import annotations

import errno
import select
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sockprobe import kernel
from sockprobe.kernel import sockstate
from sockprobe.lab import Deadline, Lab, Worker
from sockprobe.probes import ProbeParams, Stopwatch, require
from sockprobe.probes._outcome import Attempt, attempt, errno_name, result_errno, result_text
from sockprobe.report import Cell, Report, environment, legacy_table, params_dict
from sockprobe.status import DeadlineExceeded

#: Operation id -> (label, the calls tried).
OPS: dict[str, tuple[str, tuple[str, ...]]] = {
    "connect-refused": ("connect to a closed port", ("connect", "connect_ex")),
    "connect-full-queue": (
        "connect to a full accept queue (SYN dropped)",
        ("connect", "connect_ex"),
    ),
    "accept": ("accept, nothing pending", ("accept",)),
    "recv": ("recv, no data", ("recv",)),
    "send-full": ("send into full buffers", ("send",)),
    "recv-after-fin": ("recv after the peer's FIN", ("recv",)),
    "recv-after-rst": ("recv after the peer's RST", ("recv",)),
    "send-after-close": ("send after the peer closed (1st send)", ("send",)),
    "send-after-rst": ("send after the peer closed (2nd send, RST back)", ("send",)),
}
MODES: dict[str, str] = {
    "blocking": "blocking",
    "timeout": "settimeout(T)",
    "nonblocking": "setblocking(False)",
    "sockopt": "SO_RCVTIMEO/SO_SNDTIMEO",
}
#: Operations that can wait, and so run concurrently (in every mode but non-blocking;
#: a non-blocking connect to the black hole waits in poll() for T).
WAITING_OPS = ("connect-full-queue", "accept", "recv", "send-full")
SYSCTLS = (
    "net.core.somaxconn",
    "net.ipv4.tcp_syn_retries",
    "net.ipv4.tcp_abort_on_overflow",
)
PAYLOAD = b"s" * 1024
RECV_SIZE = 1024
#: Requested SO_SNDBUF/SO_RCVBUF for the full-buffer cases (the kernel doubles them,
#: socket(7)); small buffers fill in a few sends.
SMALL_BUF = 16384
#: Data for the sendall case: far more than a slow reader can take in one timeout.
SENDALL_BYTES = 4 * 1024 * 1024
#: How long setup waits for a FIN or RST to arrive on loopback (normally < 1 ms).
SETTLE_S = 1.0


@dataclass(frozen=True)
class Params(ProbeParams):
    op_timeout: float = 0.2
    wake_after: float = 0.3
    ops: tuple[str, ...] = tuple(OPS)
    modes: tuple[str, ...] = tuple(MODES)

    def __post_init__(self) -> None:
        super().__post_init__()
        require(
            0.01 <= self.op_timeout <= 10.0,
            f"--op-timeout must be 0.01..10 seconds, not {self.op_timeout}",
        )
        require(
            0.05 <= self.wake_after <= 10.0,
            f"--wake-after must be 0.05..10 seconds, not {self.wake_after}",
        )
        require(len(self.ops) > 0, "--op: give at least one operation")
        for op in self.ops:
            require(op in OPS, f"--op {op!r}: choose from {', '.join(OPS)}")
        require(len(self.modes) > 0, "--mode: give at least one mode")
        for m in self.modes:
            require(m in MODES, f"--mode {m!r}: choose from {', '.join(MODES)}")


# -- one call, measured ----------------------------------------------------------------
def call_bounded(
    lab: Lab, sock: socket.socket, fn: Callable[[], Any], wake_after: float | None, doing: str
) -> Attempt:
    """Make the call; if `wake_after` is given, make it in a worker thread and wake it with
    shutdown(SHUT_RDWR) if it is still blocked after that long.

    shutdown() is the only reliable way to wake a call blocked in another thread on Linux:
    it changes the socket's state and wakes every waiter (recv returns b'', accept fails
    with EINVAL, send with EPIPE, a connect in SYN_SENT with ECONNRESET). close() only
    drops the fd-table reference and leaves the call asleep; SIGALRM is delivered to the
    main thread only.
    """
    if wake_after is None:
        return attempt(fn)
    wait = lab.deadline.timeout(wake_after, doing)
    w = lab.thread(attempt, fn, name="sockprobe-timeouts-call")
    if w.join(wait):
        return _worker_attempt(w)
    # Make sure the thread really is inside the call on this socket (not still starting
    # up) before waking it, so "blocked" never describes a call that had not begun.
    sockstate.blocked_on_fd(w.thread.native_id, sock.fileno(), min(1.0, wait))
    blocked = w.thread.is_alive()
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # ENOTCONN on an unconnected socket: the state change still wakes the call
    if not w.join(2.0):
        raise RuntimeError(f"shutdown() did not wake {doing}")
    a = _worker_attempt(w)
    if wait < wake_after:  # the deadline, not the probe, cut the wait short
        raise DeadlineExceeded(f"--deadline {lab.deadline.seconds:g} s ran out while {doing}")
    if blocked:
        a.woken_after = wake_after
    return a


def _worker_attempt(w: Worker) -> Attempt:
    if w.error is not None:
        raise w.error
    result = w.result
    assert isinstance(result, Attempt)
    return result


def _need(deadline: Deadline, seconds: float, doing: str) -> None:
    """Refuse to start a timed wait the deadline cannot cover: a wait cut short would be
    reported as a shorter timeout than the one requested."""
    deadline.check(doing)
    if deadline.remaining() < seconds:
        raise DeadlineExceeded(
            f"--deadline {deadline.seconds:g} s leaves too little time for {doing} "
            f"({seconds:.2f} s needed)"
        )


def wait_writable(sock: socket.socket, timeout: float) -> bool:
    """poll() (or select() where poll is missing) for writability: how a non-blocking
    connect reports that the handshake finished, successfully or not (connect(2))."""
    if hasattr(select, "poll"):
        p = select.poll()
        p.register(sock, select.POLLOUT)
        return bool(p.poll(timeout * 1000))
    _, w, _ = select.select([], [sock], [], timeout)
    return bool(w)


# -- set-up of each operation ----------------------------------------------------------
@dataclass
class Prepared:
    sock: socket.socket
    invoke: Callable[[], Any]
    #: Facts about the set-up worth reporting (black-hole queue length...).
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Case:
    op: str
    call: str
    mode: str

    @property
    def name(self) -> str:
        return f"{self.op}/{self.call}/{self.mode}"


def _settle(sock: socket.socket, states: tuple[str, ...], deadline: Deadline, what: str) -> None:
    """Wait until a FIN or RST has arrived (TCP_INFO state), so the call under test sees it.
    Without TCP_INFO, wait for readability (a FIN or RST makes a socket readable)."""
    cap = deadline.timeout(SETTLE_S, f"waiting for {what}")
    state = sockstate.wait_for_state(sock, states, cap)
    if state is None:
        select.select([sock], [], [], cap)
        time.sleep(0.02)
        return
    if state not in states:
        raise RuntimeError(f"{what} did not arrive within {cap:.1f} s (state {state})")


def _pair(lab: Lab, case: Case, small: bool = False) -> tuple[socket.socket, socket.socket]:
    def sndbuf(s: socket.socket) -> None:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_BUF)

    def rcvbuf(s: socket.socket) -> None:
        # Set on the listener before listen(): accepted sockets inherit it (socket(7)).
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUF)

    return lab.tcp_pair(
        configure_client=sndbuf if small else None,
        configure_listener=rcvbuf if small else None,
        name=case.name,
    )


def _fill(sock: socket.socket, deadline: Deadline) -> int:
    """Send until neither the send buffer nor the peer's receive window has room.

    Non-blocking sends until EAGAIN are not enough on their own: data in flight is still
    waiting for the peer's (delayed, 40 ms or more) ACK, and that ACK frees send buffer
    space, so a "full" buffer would take more bytes a moment later. The connection is
    frozen once TCP_INFO shows nothing in flight (tcpi_unacked 0), bytes still unsent and
    the peer's window closed (tcpi_snd_wnd 0, Linux >= 5.4): nothing moves until the peer
    reads. The state is read *before* a last round of sends, so an ACK that lands between
    the two cannot leave room behind (it would have to arrive before the state read).
    Without TCP_INFO, three quiet rounds 0.1 s apart stand in.
    """
    sock.setblocking(False)
    chunk = b"\0" * 65536
    total, quiet = 0, 0
    end = time.monotonic() + deadline.timeout(3.0, "filling the buffers")
    while time.monotonic() < end:
        info = kernel.tcp_info(sock)
        frozen = (
            info is not None
            and info.unacked == 0
            and (info.notsent_bytes or 0) > 0
            # Unsent bytes with nothing in flight may still be waiting for a pacing or
            # TSQ timer (bbr paces even on loopback): only a closed window freezes them.
            and sockstate.send_window(sock) in (0, None)
        )
        added = 0
        while True:
            try:
                n = sock.send(chunk)
            except BlockingIOError:
                break
            added += n
        total += added
        if info is None:
            quiet = quiet + 1 if added == 0 else 0
            if quiet >= 3:
                return total
            time.sleep(0.1)
            continue
        if frozen and added == 0:
            return total
        time.sleep(0.002)
    deadline.check("filling the buffers")
    raise RuntimeError("the send buffer never stayed full")


def _black_hole(lab: Lab, case: Case) -> tuple[socket.socket, dict[str, Any]]:
    """A listener whose accept queue is full, so that the kernel drops the next SYN.

    listen(0), then clients connect (and are never accepted) until the listener's accept
    queue, read back from TCP_INFO, is longer than its limit. On Linux one client does
    it: the queue counts as full when its length exceeds the backlog.
    """
    lst = lab.listener(backlog=0, role=f"{case.name} full-queue listener")
    queue = sockstate.accept_queue(lst)
    fillers = 0
    for _ in range(3):
        if queue is not None and queue[0] > queue[1]:
            break
        f = lab.open_socket()
        f.settimeout(lab.deadline.timeout(1.0 if queue is not None else 0.3, "filling a queue"))
        try:
            f.connect(lst.getsockname())
        except TimeoutError:  # the queue was already full: this SYN was the dropped one
            lab.close(f)
            break
        lab.record(f"{case.name} filler client", f)
        fillers += 1
        end = time.monotonic() + lab.deadline.timeout(0.5, "filling a queue")
        while True:
            queue = sockstate.accept_queue(lst)
            if queue is None or queue[0] >= fillers or time.monotonic() >= end:
                break
            time.sleep(0.0005)
    return lst, {"fillers": fillers, "queue": queue}


def _prepare(lab: Lab, case: Case) -> Prepared:
    """Build the sockets for one case, in the state the call under test should meet."""
    op = case.op
    if op in ("connect-refused", "connect-full-queue"):
        info: dict[str, Any] = {}
        if op == "connect-refused":
            # A socket bound but not listening keeps the port ours (nobody else can
            # listen on it meanwhile) and a SYN to it is answered with RST.
            holder = lab.open_socket()
            holder.bind(lab.host.sockaddr(0))
            lab.record(f"{case.name} closed port (bound, not listening)", holder)
            target = holder.getsockname()
        else:
            lst, info = _black_hole(lab, case)
            target = lst.getsockname()
        s = lab.open_socket()
        if case.call == "connect_ex":
            return Prepared(s, lambda: s.connect_ex(target), info)
        return Prepared(s, lambda: s.connect(target), info)
    if op == "accept":
        lst = lab.listener(backlog=1, role=f"{case.name} listener")

        def accept() -> tuple[str, str]:
            conn, _addr = lst.accept()
            lab.adopt(conn)  # nobody connects, but if someone did, the Lab closes it
            return ("connection", "")

        return Prepared(lst, accept)
    c, s = _pair(lab, case, small=(op == "send-full"))
    if op == "send-full":
        _fill(c, lab.deadline)
    elif op == "recv-after-fin":
        lab.close(s)  # close() with nothing unread sends FIN
        _settle(c, ("CLOSE_WAIT",), lab.deadline, "the peer's FIN")
    elif op == "recv-after-rst":
        sockstate.abortive_linger(s)  # SO_LINGER {1, 0}: close() sends RST, not FIN
        lab.close(s)
        _settle(c, ("CLOSE",), lab.deadline, "the peer's RST")
    elif op in ("send-after-close", "send-after-rst"):
        lab.close(s)
        _settle(c, ("CLOSE_WAIT",), lab.deadline, "the peer's FIN")
        if op == "send-after-rst":
            c.settimeout(lab.deadline.timeout(1.0, "the first send"))
            c.send(PAYLOAD)  # accepted; the peer, fully closed, answers with RST
            _settle(c, ("CLOSE",), lab.deadline, "the peer's RST")
    if op in ("send-full", "send-after-close", "send-after-rst"):
        return Prepared(c, lambda: c.send(PAYLOAD))
    return Prepared(c, lambda: c.recv(RECV_SIZE))


def _apply_mode(sock: socket.socket, mode: str, t: float) -> None:
    if mode == "blocking":
        sock.settimeout(None)
    elif mode == "timeout":
        sock.settimeout(t)
    elif mode == "nonblocking":
        sock.setblocking(False)
    else:
        sock.settimeout(None)  # Python: blocking; the kernel enforces the timeouts
        sockstate.set_kernel_timeouts(sock, t, t)


# -- one case --------------------------------------------------------------------------
@dataclass
class CaseResult:
    case: Case
    attempt: Attempt
    then: str | None
    info: dict[str, Any]
    endpoints: list[dict[str, Any]]


def run_case(parent: Lab, case: Case, p: Params, labs: list[Lab] | None = None) -> CaseResult:
    """One cell of the matrix, on its own sockets (its own Lab, closed when it ends).
    The Lab is listed in `labs` so that an interrupted run can wake its calls."""
    t = p.op_timeout
    with Lab(parent.host, parent.deadline) as lab:
        if labs is not None:
            labs.append(lab)
        prep = _prepare(lab, case)
        _apply_mode(prep.sock, case.mode, t)
        doing = f"{case.call} ({OPS[case.op][0]}, {MODES[case.mode]})"
        wake: float | None = None
        if case.mode == "blocking":
            wake = p.wake_after
        elif case.mode == "sockopt":
            # The kernel should end the call after t; the wake-up is only a safety net
            # for a platform that ignores SO_RCVTIMEO/SO_SNDTIMEO.
            wake = t + p.wake_after
        if case.mode in ("timeout", "sockopt"):
            _need(lab.deadline, t + 0.05, doing)
        a = call_bounded(lab, prep.sock, prep.invoke, wake, doing)
        then = _follow(lab, case, prep.sock, a, t) if case.op.startswith("connect") else None
        endpoints = list(lab.endpoints)
    return CaseResult(case, a, then, prep.info, endpoints)


def _follow(lab: Lab, case: Case, sock: socket.socket, a: Attempt, t: float) -> str:
    """After a connect: a non-blocking one is followed through (poll for writability,
    then SO_ERROR, connect(2)); every one reports the TCP state it left behind."""
    parts = []
    in_progress = (
        a.error is not None and getattr(a.error, "errno", None) == errno.EINPROGRESS
    ) or (case.call == "connect_ex" and a.value == errno.EINPROGRESS)
    if case.mode == "nonblocking" and in_progress:
        _need(lab.deadline, t + 0.05, "polling a non-blocking connect")
        writable = wait_writable(sock, t)
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        parts.append("poll: writable" if writable else f"poll: not writable within {t:g} s")
        parts.append(f"SO_ERROR {errno_name(err)}")
    state = sockstate.tcp_state(sock)
    if state is not None:
        parts.append(f"state {state}")
    return "; ".join(parts) if parts else "-"


def _may_wait(case: Case) -> bool:
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


# -- Python-level and thread facts -----------------------------------------------------
@dataclass
class Fact:
    check: str
    result: str
    elapsed_s: float | None = None
    detail: dict[str, Any] = field(default_factory=dict)


def _fact_settimeout_zero(lab: Lab, p: Params) -> list[Fact]:
    out = []
    a = lab.open_socket()
    a.settimeout(0)
    out.append(
        Fact(
            "settimeout(0), then getblocking() / gettimeout()",
            f"{a.getblocking()} / {a.gettimeout()!r}",
        )
    )
    b = lab.open_socket()
    b.setblocking(False)
    out.append(
        Fact(
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
            "recv with no data after settimeout(0)",
            _with_errno(r),
            r.elapsed_s,
        )
    )
    lab.close(c)
    lab.close(s)
    out.append(
        Fact("socket.timeout is TimeoutError (Python >= 3.10)", str(socket.timeout is TimeoutError))
    )
    k = lab.open_socket()
    try:
        sockstate.set_kernel_timeouts(k, p.op_timeout, None)
        back = sockstate.rcvtimeo(k)
        out.append(
            Fact(
                f"SO_RCVTIMEO {p.op_timeout:g} s set: gettimeout() / SO_RCVTIMEO read back",
                f"{k.gettimeout()!r} / " + ("n/a" if back is None else f"{back:g} s"),
            )
        )
    except OSError as exc:
        out.append(Fact("SO_RCVTIMEO set", f"raised {type(exc).__name__}"))
    lab.close(k)

    def set_alarm() -> None:
        signal.signal(signal.SIGALRM, signal.SIG_DFL)

    w = lab.thread(attempt, set_alarm, name="sockprobe-timeouts-signal")
    a = _join(w, lab.deadline, "the signal check")
    out.append(Fact("signal.signal(SIGALRM, ...) from a worker thread", _with_errno(a)))
    return out


def _with_errno(a: Attempt, call: str = "") -> str:
    name = result_errno(a, call)
    return result_text(a) + (f" ({name})" if name else "")


def _fact_select(lab: Lab, p: Params) -> list[Fact]:
    """SO_RCVTIMEO does not shorten select(): it bounds recv() only."""
    t = p.op_timeout
    c, s = lab.tcp_pair(name="select with SO_RCVTIMEO")
    try:
        sockstate.set_kernel_timeouts(c, t / 4, None)
    except OSError as exc:
        return [Fact("select() with SO_RCVTIMEO set", f"SO_RCVTIMEO failed: {exc}")]
    _need(lab.deadline, t + 0.05, "the select check")
    r = attempt(lambda: select.select([c], [], [], t))
    ready = r.value[0] if r.error is None else None
    text = (
        result_text(r)
        if r.error is not None
        else ("nothing readable at its own timeout" if not ready else "readable")
    )
    lab.close(c)
    lab.close(s)
    return [
        Fact(
            f"select() for {t:g} s on a socket with SO_RCVTIMEO {t / 4:g} s",
            text,
            r.elapsed_s,
        )
    ]


def _fact_sendall(lab: Lab, p: Params) -> list[Fact]:
    """The settimeout() budget covers a whole sendall() since Python 3.5, even while the
    peer keeps draining: it is not restarted after each chunk that goes out."""
    t = p.op_timeout
    case = Case("sendall", "sendall", "timeout")
    c, s = _pair(lab, case, small=True)
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

    _need(lab.deadline, t + 0.05, "the sendall check")
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
            f"sendall({SENDALL_BYTES // (1024 * 1024)} MiB) with settimeout({t:g}), "
            f"peer reading every {interval:g} s",
            _with_errno(r),
            r.elapsed_s,
            {"drained": got, "reads": reads},
        )
    ]


def _fact_close_wake(lab: Lab, p: Params) -> list[Fact]:
    """close() from another thread does not wake a recv() blocked on the socket."""
    c, s = lab.tcp_pair(name="close from another thread")
    # A second descriptor for the same socket: after close(c) it is the only way left to
    # reach the socket and shutdown() it, which wakes the stuck recv.
    d = lab.adopt(c.dup())
    c.settimeout(None)
    _need(lab.deadline, p.wake_after + 0.1, "the close() check")
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
        + _with_errno(a)
        if still
        else f"woken by close(): {_with_errno(a)}"
    )
    lab.close(d)
    lab.close(s)
    return [
        Fact(
            "close() from another thread while recv is blocked",
            text,
            a.elapsed_s,
            {"still_blocked": still, "fd_reused": reused, "fd": fd},
        )
    ]


SLOW_FACTS: tuple[Callable[[Lab, Params], list[Fact]], ...] = (
    _fact_select,
    _fact_sendall,
    _fact_close_wake,
)


def _isolated(
    fn: Callable[[Lab, Params], list[Fact]], parent: Lab, p: Params, labs: list[Lab]
) -> list[Fact]:
    with Lab(parent.host, parent.deadline) as lab:
        labs.append(lab)
        return fn(lab, p)


def _wake_all(labs: list[Lab]) -> None:
    """On Ctrl-C or an error, shut down every socket of the cases still running, so their
    threads return at once instead of finishing their timeouts (each thread still closes
    its own sockets). shutdown() wakes poll() too, so Python-level timeouts end as well."""
    for lab in list(labs):
        for s in list(lab.sockets):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # not connected, or already closed by its thread


def _join(w: Worker, deadline: Deadline, doing: str) -> Any:
    if not w.join(deadline.timeout(30.0, doing)):
        deadline.check(doing)
        raise RuntimeError(f"{doing} did not finish")
    if w.error is not None:
        raise w.error
    return w.result


def _listen_overflows() -> int | None:
    return kernel.netstat_counters().get("TcpExt", {}).get("ListenOverflows")


# -- the probe ----------------------------------------------------------------------------
def run(params: Params) -> Report:
    watch = Stopwatch()
    host, deadline = params.resolve()
    report = Report(
        "timeouts", params=params_dict(params), environment=environment(kernel.sysctls(SYSCTLS))
    )
    cases = cases_for(params)
    overflows0 = _listen_overflows()
    results: list[CaseResult | None] = [None] * len(cases)
    facts: list[Fact] = []
    labs: list[Lab] = []
    with Lab(host, deadline) as lab:
        try:
            # Cases that can wait run concurrently, each in its own thread with its own
            # sockets; while they wait, the instant ones run here one after another.
            waiting = [
                (i, lab.thread(run_case, lab, c, params, labs, name=f"sockprobe-case-{i}"))
                for i, c in enumerate(cases)
                if _may_wait(c)
            ]
            slow_facts = [
                lab.thread(_isolated, fn, lab, params, labs, name="sockprobe-fact")
                for fn in SLOW_FACTS
            ]
            for i, c in enumerate(cases):
                if not _may_wait(c):
                    results[i] = run_case(lab, c, params, labs)
            facts.extend(_isolated(_fact_settimeout_zero, lab, params, labs))
            for i, w in waiting:
                results[i] = _join(w, deadline, f"case {cases[i].name}")
            for w in slow_facts:
                facts.extend(_join(w, deadline, "the thread and timeout checks"))
        except BaseException:
            _wake_all(labs)
            raise
    overflows1 = _listen_overflows()
    done = [r for r in results if r is not None]
    for r in done:
        report.endpoints.extend(r.endpoints)
    overflow_delta = None if overflows0 is None or overflows1 is None else overflows1 - overflows0
    _tables(report, params, done, facts)
    _findings(report, params, done, facts, overflow_delta)
    _notes(report)
    report.duration_s = watch()
    return report


def _timeout_cell(mode: str, t: float) -> Cell:
    if mode == "blocking":
        return "none"
    if mode == "nonblocking":
        return 0.0
    return t


def _tables(report: Report, p: Params, results: list[CaseResult], facts: list[Fact]) -> None:
    t = legacy_table(
        report,
        f"Operation x mode (T = {p.op_timeout:g} s; blocked calls woken after "
        f"{p.wake_after:.2f} s)",
        ["operation", "call", "mode", "timeout", "blocked", "result", "errno", "elapsed", "then"],
        ["", "", "", "s", "", "", "", "ms", ""],
        volatile=["elapsed"],
    )
    for r in results:
        a = r.attempt
        t.add(
            OPS[r.case.op][0],
            r.case.call,
            MODES[r.case.mode],
            _timeout_cell(r.case.mode, p.op_timeout),
            "-"
            if a.woken_after is None
            else f"blocked (woken by shutdown after {a.woken_after:.2f} s)",
            result_text(a),
            result_errno(a, r.case.call),
            round(a.elapsed_s * 1000, 3),
            r.then,
        )
    f = legacy_table(
        report,
        "Python-level and thread facts",
        ["check", "result", "elapsed"],
        ["", "", "ms"],
        volatile=["elapsed"],
    )
    for fact in facts:
        f.add(
            fact.check,
            fact.result,
            None if fact.elapsed_s is None else round(fact.elapsed_s * 1000, 3),
        )


def _dur(seconds: float) -> str:
    return f"{seconds * 1000:.3f} ms" if seconds < 0.001 else f"{seconds:.3f} s"


def _span(lo: float, hi: float) -> str:
    """0.2001, 0.2004 -> '0.200 s'; 0.2001, 0.2074 -> '0.200..0.207 s'."""
    a, b = f"{lo:.3f}", f"{hi:.3f}"
    return f"{a} s" if a == b else f"{a}..{b} s"


def _short(r: CaseResult) -> str:
    a = r.attempt
    name = result_errno(a, r.case.call)
    what = result_text(a) + (f" ({name})" if name else "")
    if a.woken_after is not None:
        return f"blocked until shutdown() after {_dur(a.elapsed_s)}, then {what}"
    return f"{what} after {_dur(a.elapsed_s)}"


def _findings(
    report: Report,
    p: Params,
    results: list[CaseResult],
    facts: list[Fact],
    overflow_delta: int | None,
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
        report.findings.append(
            f"settimeout({t:g}): {len(timed)} call(s) timed out after {_span(lo, hi)}; "
            "each raised TimeoutError with errno None, except connect_ex, which returned "
            f"{errno.EAGAIN} ({errno_name(errno.EAGAIN)}) instead."
            if any(r.case.call == "connect_ex" for r in timed)
            else f"settimeout({t:g}): {len(timed)} call(s) timed out after {_span(lo, hi)}, "
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
        kinds = sorted({_with_errno(r.attempt, r.case.call) for r in kt})
        py_timeout = any(isinstance(r.attempt.error, TimeoutError) for r in kt)
        report.findings.append(
            f"SO_RCVTIMEO/SO_SNDTIMEO {t:g} s: {len(kt)} call(s) gave up after "
            f"{_span(lo, hi)} and "
            + ", ".join(kinds)
            + (" (TimeoutError appeared)" if py_timeout else ", never TimeoutError")
            + ": the kernel's timeouts surface as errno values on a socket Python "
            "considers blocking."
        )
    blocked = [r for r in results if r.attempt.woken_after is not None]
    if blocked:
        report.findings.append(
            f"{len(blocked)} call(s) were still blocked after {p.wake_after:.2f} s and "
            "shutdown(SHUT_RDWR) from another thread woke every one: "
            + "; ".join(
                f"{OPS[r.case.op][0]} [{r.case.call}] {_with_errno(r.attempt, r.case.call)}"
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
            else f" TcpExt ListenOverflows rose by {overflow_delta} during the run "
            "(host-wide: other traffic counts too; every retried SYN counts again)."
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
    for fact in facts:
        if "drained" in fact.detail:
            report.findings.append(
                f"{fact.check}: {fact.result} after {_dur(fact.elapsed_s or 0.0)} although "
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
    _summary(report, p, results)


def _summary(report: Report, p: Params, results: list[CaseResult]) -> None:
    by = {(r.case.op, r.case.call, r.case.mode): r for r in results}
    parts = []
    hole = by.get(("connect-full-queue", "connect", "timeout"))
    if hole is not None:
        parts.append(
            f"black-hole connect with settimeout({p.op_timeout:g}): "
            f"{_with_errno(hole.attempt)} after {hole.attempt.elapsed_s:.3f} s"
        )
    kr = by.get(("recv", "recv", "sockopt"))
    if kr is not None:
        parts.append(
            f"SO_RCVTIMEO recv: {_with_errno(kr.attempt)} after {kr.attempt.elapsed_s:.3f} s"
        )
    blocked = sum(r.attempt.woken_after is not None for r in results)
    parts.append(f"{len(results)} cases, {blocked} blocked until shutdown()")
    report.summary = "; ".join(parts)


def _notes(report: Report) -> None:
    report.notes.extend(
        [
            "settimeout(0) is setblocking(False) and settimeout(None) is setblocking(True) "
            "(Python socket docs); a timeout applies to each call separately, except "
            "sendall(), where since Python 3.5 it bounds the whole call.",
            "socket.timeout has been an alias of TimeoutError since Python 3.10; a Python "
            "timeout carries no errno, because no system call failed: Python made the fd "
            "non-blocking and waited in poll() itself. connect_ex() reports that case as "
            "EAGAIN.",
            "Set the timeout before connect(): connect() is the call most likely to hang "
            "(a SYN that nobody answers is retransmitted until the budget set by "
            "net.ipv4.tcp_syn_retries runs out: ETIMEDOUT after about two minutes with the "
            "default 6).",
            "SO_RCVTIMEO/SO_SNDTIMEO (socket(7)) are enforced by the kernel inside the call: "
            "recv and accept fail with EAGAIN, send returns what it queued or fails with "
            "EAGAIN, and connect fails with EINPROGRESS while the handshake carries on. They "
            "do not affect select()/poll(), and Python's gettimeout() does not see them.",
            "A full accept queue is a black hole: Linux drops the SYN (listen(2), tcp(7); "
            "counted in TcpExt ListenOverflows), so the client retries instead of getting "
            "ECONNREFUSED, even with net.ipv4.tcp_abort_on_overflow=1, which only resets a "
            "handshake that completes into a full queue.",
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
            "leaves the socket in an undefined state; a full backlog is answered with RST, so "
            "connect is refused rather than left hanging.",
        ]
    )
