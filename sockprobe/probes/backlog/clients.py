"""The backlog probe's clients: non-blocking connects, and what each one became.

Shared by the experiments of this package (admission, retries, overflow, give_up).
A client's state comes from TCP_INFO tcpi_state (tcp(7)) and SO_ERROR (socket(7)).
"""

from __future__ import annotations

import errno
import socket
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from sockprobe import kernel
from sockprobe.kernel.backlog import CONNECT_PENDING, listener_view, so_error
from sockprobe.kernel.sockstate import abortive_linger
from sockprobe.kernel.synfilter import holding_acks
from sockprobe.lab import CANNOT_CONNECT, Address, Host, Lab
from sockprobe.status import Unsupported, errno_name, oserror_text

TCP_ESTABLISHED = 1
TCP_SYN_SENT = 2
RESET_ERRNOS = (errno.ECONNREFUSED, errno.ECONNRESET)
RESET_NAMES = frozenset(errno.errorcode[e] for e in RESET_ERRNOS)
#: connect() failures that say this host cannot make the connection at all (no route,
#: no local port, no descriptor, no memory), not anything about the listener.
ENVIRONMENT_ERRNOS = CANNOT_CONNECT | {errno.ENOBUFS, errno.ENOMEM, errno.EAGAIN}


@dataclass
class Client:
    sock: socket.socket
    t0: float
    #: errno of connect() itself when it failed outright (not EINPROGRESS).
    connect_errno: int = 0
    #: The SO_ERROR value once seen (reading SO_ERROR clears it, so it is kept here).
    error: int = 0
    state: int | None = None
    #: tcpi_total_retrans last seen: SYN retransmissions so far, while in SYN_SENT.
    retrans: int = 0
    retrans_at: list[float] = field(default_factory=list)
    #: When the server's accept() returned this client's connection (s after connect()).
    accepted_s: float | None = None
    #: SYN retransmissions the client had made when the server accepted it.
    accepted_retrans: int = 0
    #: When the client itself was first seen ESTABLISHED during the retry wait.
    established_s: float | None = None
    #: Its class at the end of the settle (established, connecting, refused, other).
    cls: str = ""


def errno_text(err: int) -> str:
    return errno_name(err) or ""


def note_retrans(c: Client, info: kernel.TcpInfo, now: float) -> None:
    """tcpi_total_retrans counts every retransmission (tcp(7)); before the handshake
    completes those are SYNs. Note when each new one was first seen."""
    while c.retrans < info.total_retrans:
        c.retrans += 1
        c.retrans_at.append(now - c.t0)


def classify(c: Client) -> tuple[str, str]:
    """(class, detail) for one client, from TCP_INFO tcpi_state and SO_ERROR."""
    if c.connect_errno:
        return "other", f"connect() {errno_text(c.connect_errno)}"
    info = kernel.tcp_info(c.sock)
    if info is not None:
        c.state = info.state
        note_retrans(c, info, time.monotonic())
        if info.state == TCP_ESTABLISHED and not c.error:
            return "established", ""
        if info.state == TCP_SYN_SENT and not c.error:
            return "connecting", ""
    if not c.error:
        c.error = so_error(c.sock)
    if info is None and not c.error:
        # No TCP_INFO here: a connected socket has a peer address, a pending one not.
        try:
            c.sock.getpeername()
        except OSError:
            return "connecting", ""
        return "established", ""
    if c.error in RESET_ERRNOS:
        return "refused", errno_text(c.error)
    if c.error:
        return "other", errno_text(c.error)
    return "other", kernel.tcp_state_name(c.state or 0)


def tally(clients: list[Client]) -> tuple[Counter[str], Counter[str]]:
    counts: Counter[str] = Counter()
    details: Counter[str] = Counter()
    for c in clients:
        cls, detail = classify(c)
        c.cls = cls
        counts[cls] += 1
        if cls in ("other", "refused") and detail:
            details[detail] += 1
    return counts, details


def open_client(lab: Lab, bind: bool = False) -> socket.socket:
    """A client socket closed with an RST (SO_LINGER {1, 0}), so thousands of them leave
    no TIME_WAIT. `bind`: take the local port now (bind to port 0), so that it is known
    before connect(). Running out of descriptors is this host's limit: Unsupported."""
    try:
        s = lab.open_socket()
    except OSError as exc:
        if exc.errno in (errno.EMFILE, errno.ENFILE):
            raise Unsupported(no_descriptor(exc)) from None
        raise
    abortive_linger(s)
    if bind:
        try:
            s.bind(lab.host.sockaddr(0))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL):
                raise Unsupported(no_port(exc, "bind(port 0)")) from None
            raise
    s.setblocking(False)
    return s


def connect_all(lab: Lab, addr: Address, n: int) -> list[Client]:
    """n non-blocking connects. The deadline is checked before every one: a connect is a
    few microseconds, a check is one clock read, and checking only every few hundred let
    100,000 connects overrun a 0.3 s deadline by most of a second."""
    clients: list[Client] = []
    for i in range(n):
        lab.deadline.check(f"connecting client {i + 1} of {n}")
        s = open_client(lab)
        t0 = time.monotonic()
        err = s.connect_ex(addr)
        c = Client(s, t0, 0 if err in CONNECT_PENDING else err)
        clients.append(c)
        if c.connect_errno in ENVIRONMENT_ERRNOS:
            raise Unsupported(connect_failed(c.connect_errno, i, n))
    return clients


def no_descriptor(exc: OSError) -> str:
    from sockprobe.kernel.backlog import nofile

    lim = nofile()
    return (
        f"no file descriptor for another client ({oserror_text(exc)}): RLIMIT_NOFILE soft "
        f"{lim.soft if lim.soft is not None else 'unlimited'}, hard "
        f"{lim.hard if lim.hard is not None else 'unlimited'}"
    )


def no_port(exc: OSError | int, call: str) -> str:
    from sockprobe.kernel.ephemeral import ephemeral_use

    text = oserror_text(exc) if isinstance(exc, OSError) else oserror_text(OSError(exc, ""))
    use = ephemeral_use()
    where = use.describe() if use is not None else "the ephemeral port range is not readable"
    return f"{call} found no free local port ({text.split(' (')[0]}): {where}"


def require_ports(host: Host) -> None:
    """Unsupported when the ephemeral range has no free port: every listener (bind to
    port 0) and every client of this probe needs one. A trial bind to port 0 finds out
    (EADDRINUSE: none free); only then is the range counted for the message, since
    reading every TCP socket of a busy namespace takes a while."""
    try:
        with socket.socket(host.family, socket.SOCK_STREAM) as s:
            s.bind(host.sockaddr(0))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise Unsupported(no_port(exc, "bind(port 0)")) from None


def connect_failed(err: int, i: int, n: int) -> str:
    """The cause, for Unsupported, when connect() itself failed."""
    which = f"connect() of client {i + 1} of {n}"
    if err == errno.EADDRNOTAVAIL:
        return no_port(err, which)
    if err in (errno.EMFILE, errno.ENFILE):
        return f"{which} failed: " + no_descriptor(OSError(err, ""))
    if err in (errno.ENETUNREACH, errno.EHOSTUNREACH):
        return f"{which} failed with {errno_text(err)}: no route to the listener's address"
    return f"{which} failed with {errno_text(err)}: this host cannot make the connection"


def until(lab: Lab, cond: object, what: str, cap: float = 0.3) -> bool:
    """Poll `cond()` until true or `cap` seconds pass; False on time-out. Loopback
    delivers in well under a millisecond; the listener retransmits a SYN-ACK after 1 s,
    so every step that holds an ACK back ends far sooner."""
    assert callable(cond)
    end = time.monotonic() + lab.deadline.timeout(cap, what)
    while not cond():
        if time.monotonic() >= end:
            return False
        time.sleep(0.0005)
    return True


def tcp_state(s: socket.socket) -> int | None:
    info = kernel.tcp_info(s)
    return None if info is None else info.state


def half_open(lst: socket.socket) -> int:
    return listener_view(lst, proc=False).half_open or 0


@contextmanager
def held_back(
    lab: Lab, lst: socket.socket, ports: Sequence[int], hold_request: bool
) -> Iterator[bool]:
    """While the block runs, final ACKs from `ports` never reach `lst`
    (kernel/synfilter.py). With `hold_request`, first make one client whose ACK is held
    too, so that the listener keeps a half-open request: over a backlog of 0 that makes
    tcp_syncookies 1 answer the next SYNs with cookies. Yields False if the request
    could not be held."""
    holder = open_client(lab, bind=True) if hold_request else None
    held = list(ports) + ([holder.getsockname()[1]] if holder is not None else [])
    if not held:
        yield True
        return
    with holding_acks(lst, held):
        if holder is None:
            yield True
            return
        holder.connect_ex(lst.getsockname())
        yield until(
            lab,
            lambda: tcp_state(holder) == TCP_ESTABLISHED and half_open(lst) >= 1,
            "holding a half-open request",
        )
