"""What the kernel says about a listener's queues, and the file-descriptor budget a
backlog experiment needs.

A listener's accept queue is visible two ways, both used by `ss`:

- sock_diag (sock_diag(7), `ss -ltn`): for a socket in LISTEN, `idiag_rqueue` is the
  number of completed connections waiting for accept() and `idiag_wqueue` is the queue
  limit the kernel stored at listen() (the backlog after clamping to somaxconn);
  SK_MEMINFO_DROPS is the listener's own drop counter (`ss -m`), which the kernel bumps
  for every SYN or final ACK it throws away for this listener;
- /proc/net/tcp[6]: the LISTEN row's rx_queue column is the same accept-queue length.

Half-open requests (a SYN answered, the final ACK not yet in) live in the established
hash as request sockets; sock_diag reports them as SYN_RECV when asked for that state.
"""

from __future__ import annotations

import errno
import os
import socket
from dataclasses import dataclass

from sockprobe.kernel import IS_LINUX, proc_net_sockets

TCP_LISTEN = 10
TCP_SYN_RECV = 3
TCP_NEW_SYN_RECV = 12
_DIAG_STATES = (1 << TCP_LISTEN) | (1 << TCP_SYN_RECV) | (1 << TCP_NEW_SYN_RECV)


@dataclass(frozen=True)
class ListenerView:
    """One snapshot of a listener as the kernel reports it. None = not measurable here."""

    #: Accept-queue length from sock_diag (idiag_rqueue), what `ss -ltn` prints as Recv-Q.
    queue: int | None
    #: Queue limit from sock_diag (idiag_wqueue): sk_max_ack_backlog, `ss -ltn` Send-Q.
    limit: int | None
    #: SK_MEMINFO_DROPS of the listener (`ss -m` shows it as d<n>).
    drops: int | None
    #: Request sockets (SYN_RECV) whose local port is the listener's.
    half_open: int | None
    #: rx_queue of the LISTEN row in /proc/net/tcp[6].
    proc_queue: int | None
    #: Why sock_diag could not be asked, when it could not.
    diag_error: str | None = None


def listener_view(sock: socket.socket, proc: bool = True) -> ListenerView:
    """Read the queues of a listening TCP socket from sock_diag and /proc/net/tcp[6].

    `proc=False` skips /proc: the kernel formats every TCP socket of the namespace into
    that file, which takes tens of milliseconds on a host with ten thousand connections,
    while the sock_diag query below filters on state in the kernel and takes about 2 ms.
    """
    family = sock.family
    host, port = sock.getsockname()[:2]
    proc_queue = _proc_queue(family, host, port) if proc else None
    if not IS_LINUX:
        return ListenerView(None, None, None, None, proc_queue, "sock_diag is Linux-only")
    from sockprobe.kernel import sockdiag

    try:
        rows = sockdiag.dump(family, socket.IPPROTO_TCP, _DIAG_STATES, port, meminfo=True)
    except OSError as exc:
        # A sandbox may forbid netlink; /proc still gives the queue length.
        return ListenerView(None, None, None, None, proc_queue, f"sock_diag failed: {exc}")
    listen = [r for r in rows if r.state == TCP_LISTEN and r.local[0] == _canon(family, host)]
    half = sum(1 for r in rows if r.state in (TCP_SYN_RECV, TCP_NEW_SYN_RECV))
    if not listen:
        return ListenerView(None, None, None, half, proc_queue, "listener not found by sock_diag")
    row = listen[0]
    return ListenerView(row.rqueue, row.wqueue, row.drops, half, proc_queue)


def _canon(family: int, host: str) -> str:
    """The address as sock_diag prints it (inet_ntop of the packed form)."""
    return socket.inet_ntop(family, socket.inet_pton(family, host))


def _proc_queue(family: int, host: str, port: int) -> int | None:
    proto = "tcp6" if family == socket.AF_INET6 else "tcp"
    want = _canon(family, host)
    for row in proc_net_sockets(proto, port):
        if row.state == TCP_LISTEN and row.local[0] == want:
            return row.rx_queue
    return None


def so_error(sock: socket.socket) -> int:
    """The pending socket error (socket(7) SO_ERROR). Reading it clears it, so callers
    must keep the value they got."""
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)


# -- file descriptors ------------------------------------------------------------------------
@dataclass
class FdLimit:
    """RLIMIT_NOFILE before and during a run (None where the platform has no rlimits)."""

    soft: int | None
    hard: int | None
    #: The soft limit as it was before raise_to() changed it, else None.
    raised_from: int | None = None
    error: str | None = None


def open_fds() -> int:
    """How many descriptors this process has open now (/proc/self/fd on Linux; elsewhere a
    guess that errs high)."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 64


def nofile() -> FdLimit:
    try:
        import resource
    except ImportError:  # Windows: no rlimits, the limit is on handles and is large
        return FdLimit(None, None)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    inf = resource.RLIM_INFINITY
    return FdLimit(None if soft == inf else soft, None if hard == inf else hard)


def raise_nofile(need: int) -> FdLimit:
    """Raise the soft RLIMIT_NOFILE toward `need`, never above the hard limit
    (setrlimit(2): an unprivileged process may raise its soft limit up to the hard one).
    Returns the limits now in force; `raised_from` is set when the soft limit changed."""
    lim = nofile()
    if lim.soft is None or lim.soft >= need:
        return lim
    import resource

    target = need if lim.hard is None else min(need, lim.hard)
    if target <= lim.soft:
        return lim
    hard = resource.RLIM_INFINITY if lim.hard is None else lim.hard
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (OSError, ValueError) as exc:
        lim.error = str(exc)
        return lim
    return FdLimit(target, lim.hard, raised_from=lim.soft)


def restore_nofile(lim: FdLimit) -> None:
    """Put the soft limit back to what it was before raise_nofile()."""
    if lim.raised_from is None:
        return
    import resource

    hard = resource.RLIM_INFINITY if lim.hard is None else lim.hard
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (lim.raised_from, hard))
    except (OSError, ValueError):
        # Lowering a soft limit cannot fail for lack of privilege; if it does anyway the
        # process merely keeps the higher limit, which harms nothing.
        pass


CONNECT_PENDING = (0, errno.EINPROGRESS, errno.EALREADY, errno.EWOULDBLOCK)
