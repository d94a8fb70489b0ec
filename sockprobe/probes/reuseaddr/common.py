"""Plumbing the reuseaddr experiments share: the settings they depend on, the socket
watcher (sock_diag, else /proc/net/tcp), and waiting for a close to settle."""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from sockprobe import kernel
from sockprobe.kernel import sockdiag
from sockprobe.kernel.timewait import missing_sysctl_reason
from sockprobe.lab import Address, Deadline, Host, Lab, ephemeral_exhausted_text
from sockprobe.report import NA, Cell
from sockprobe.status import Unsupported

SYSCTLS = (
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_tw_reuse",
    "net.ipv4.tcp_tw_reuse_delay",
    "net.ipv4.tcp_tw_recycle",
    "net.ipv4.tcp_timestamps",
    "net.ipv4.tcp_max_tw_buckets",
    "net.ipv4.tcp_rfc1337",
    "net.ipv4.tcp_migrate_req",
    "net.ipv6.bindv6only",
    "net.ipv4.ip_local_port_range",
)
TIME_WAIT = 6
FIN_WAIT2 = 5
LISTEN = 10
#: How long states may take to settle after a close on loopback (microseconds, usually).
SETTLE_CAP_S = 1.0
SO_REUSEPORT: int | None = getattr(socket, "SO_REUSEPORT", None)
NO_PROC = "TIME_WAIT is counted from /proc/net/tcp or sock_diag, which this platform lacks"


@dataclass(frozen=True)
class Settings:
    """The sysctls of this network namespace that the experiments' sentences follow."""

    tw_reuse: int | None
    tw_reuse_delay_ms: int | None
    timestamps: int | None
    max_tw_buckets: int | None
    rfc1337: int | None
    migrate_req: int | None
    fin_timeout: int | None
    bindv6only: int | None
    loopback: bool

    @classmethod
    def read(cls, host: Host) -> Settings:
        g = kernel.sysctl_int
        return cls(
            tw_reuse=g("net.ipv4.tcp_tw_reuse"),
            tw_reuse_delay_ms=g("net.ipv4.tcp_tw_reuse_delay"),
            timestamps=g("net.ipv4.tcp_timestamps"),
            max_tw_buckets=g("net.ipv4.tcp_max_tw_buckets"),
            rfc1337=g("net.ipv4.tcp_rfc1337"),
            migrate_req=g("net.ipv4.tcp_migrate_req"),
            fin_timeout=g("net.ipv4.tcp_fin_timeout"),
            bindv6only=g("net.ipv6.bindv6only"),
            loopback=ipaddress.ip_address(host.address.split("%")[0]).is_loopback,
        )


def setting_cell(value: int | None, name: str) -> Cell:
    """A sysctl for a table cell: its value, or n/a naming why it could not be read."""
    return value if value is not None else NA(missing_sysctl_reason(name))


@dataclass(frozen=True)
class Seen:
    """One socket as the kernel reports it, from sock_diag or /proc/net/tcp."""

    state: int
    laddr: str
    lport: int
    raddr: str
    rport: int
    #: Time left on the socket's timer (TIME_WAIT: until it disappears), in seconds.
    left_s: float = field(compare=False)
    inode: int
    #: For a listener: connections waiting in its accept queue.
    queue: int = field(compare=False)


#: States worth watching after a close: FIN_WAIT1/2, TIME_WAIT, CLOSE_WAIT, LAST_ACK,
#: LISTEN, CLOSING, and ESTABLISHED/SYN_SENT for the takeover rows. The query is
#: filtered by port in user space after the kernel's state filter.
WATCHED_STATES = (1, 2, 4, 5, 6, 8, 9, 10, 11)


class Watch:
    """Reads the TCP sockets on a few ports, by sock_diag when it works, else /proc.

    Why sock_diag first: the kernel filters by state before sending anything, so a query
    costs about 2 ms even beside 10,000 established connections, where reading and
    parsing /proc/net/tcp costs ~100 ms; each scenario polls several times. Both report
    the same timer (sock_diag in ms, /proc in USER_HZ ticks); the timers table shows both.

    Neither interface is a snapshot: both walk the kernel's hash tables in pieces, so a
    socket created or destroyed meanwhile elsewhere on a busy host can shift the walk and
    one socket can be reported twice (seen here in /proc/net/tcp) or skipped. Rows are
    de-duplicated here, and `settle` accepts only two consecutive reads that agree.
    """

    def __init__(self, family: int, proto: str) -> None:
        self.family = family
        self.proto = proto
        self.source = "sock_diag" if kernel.IS_LINUX else ""
        self.mask = sum(1 << s for s in WATCHED_STATES)

    def rows(self, ports: Iterable[int], whole: bool = False) -> list[Seen]:
        """Sockets with one of `ports` at either end. By default one sock_diag query per
        port, filtered by local port in the kernel (both ends of a loopback connection
        are local, so each end is found by its own port): on a host with thousands of
        sockets that costs a few ms where a whole-table dump costs tens. `whole` makes
        one dump instead, for many ports at once."""
        # dict.fromkeys keeps the first of duplicate rows (same 4-tuple, state, inode).
        return list(dict.fromkeys(self._read(set(ports), whole)))

    def time_waits(self, local: int, remote: int) -> list[Seen]:
        """TIME_WAIT sockets with exactly this local and remote port."""
        return [
            r
            for r in self.rows((local,))
            if r.state == TIME_WAIT and r.lport == local and r.rport == remote
        ]

    def _read(self, want: set[int], whole: bool) -> list[Seen]:
        if self.source == "sock_diag":
            try:
                if whole:
                    found = sockdiag.dump(self.family, states=self.mask, meminfo=False)
                else:
                    found = [
                        d
                        for p in sorted(want)
                        for d in sockdiag.dump(self.family, states=self.mask, port=p, meminfo=False)
                    ]
            except OSError:
                # A sandbox may forbid netlink; /proc says the same, more slowly.
                self.source = f"/proc/net/{self.proto}"
            else:
                return [
                    Seen(
                        d.state,
                        d.local[0],
                        d.local[1],
                        d.remote[0],
                        d.remote[1],
                        left_s=d.expires_ms / 1000,
                        inode=d.inode,
                        queue=d.rqueue,
                    )
                    for d in found
                    if d.local[1] in want or d.remote[1] in want
                ]
        if not kernel.IS_LINUX:
            return []
        self.source = f"/proc/net/{self.proto}"
        return [
            Seen(
                r.state,
                r.local[0],
                r.local[1],
                r.remote[0],
                r.remote[1],
                left_s=r.timer_s,
                inode=r.inode,
                queue=r.rx_queue,
            )
            for r in kernel.proc_net_sockets(self.proto)
            if r.state in WATCHED_STATES and (r.local[1] in want or r.remote[1] in want)
        ]


@dataclass
class Ctx:
    lab: Lab
    host: Host
    proto: str  # "tcp" or "tcp6": which /proc/net file holds the host's sockets
    watch: Watch
    settings: Settings

    @property
    def deadline(self) -> Deadline:
        return self.lab.deadline


def settle(ctx: Ctx, port: int, cport: int) -> list[Seen]:
    """Wait until both ends of the connection (port <-> cport) are gone or in TIME_WAIT,
    as seen by two consecutive reads that agree (see Watch on skipped rows).

    After the second close the last FIN still has to be acknowledged (LAST_ACK ->
    closed, FIN_WAIT2 -> TIME_WAIT); on loopback that takes microseconds, but the
    kernel does it in softirq context, so the first look may be early."""
    pair = {(port, cport), (cport, port)}
    end = time.monotonic() + ctx.deadline.timeout(SETTLE_CAP_S, "waiting for the close to settle")
    previous: set[Seen] | None = None
    while True:
        rows = ctx.watch.rows((port, cport))
        mine = [r for r in rows if (r.lport, r.rport) in pair]
        settled = all(r.state == TIME_WAIT for r in mine)
        if (settled and previous == set(rows)) or time.monotonic() >= end:
            return rows
        previous = set(rows) if settled else None
        time.sleep(0.001)


def connected(
    ctx: Ctx,
    listener: socket.socket,
    role: str,
    configure_client: bool = False,
    bind_client: bool = False,
) -> tuple[socket.socket, socket.socket]:
    """(client, server): one connection to `listener`, the client recorded as `role`.
    With `configure_client` the client sets SO_REUSEADDR before connecting.

    With `bind_client` the client binds port 0 before connect(). Why: connect() alone may
    pick a port that other connections (to other peers, or their TIME_WAITs) still use,
    which is fine for connect() but makes a later bind() of that port fail for reasons
    that have nothing to do with this connection; bind() picks a port nobody holds
    (or, with SO_REUSEADDR, only sockets that set it too)."""
    lab, dl = ctx.lab, ctx.deadline
    client = lab.open_socket()
    if configure_client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if bind_client:
        bind_any_port(client, ctx.host.sockaddr(0), ctx.host)
    client.settimeout(dl.timeout(5.0, "connecting"))
    client.connect(listener.getsockname())
    listener.settimeout(dl.timeout(5.0, "accepting"))
    server, _ = listener.accept()
    lab.adopt(server)
    lab.record(role, client)
    return client, server


def read_eof(ctx: Ctx, sock: socket.socket) -> None:
    """Read the peer's end of stream (b'' after FIN; ECONNRESET after RST)."""
    sock.settimeout(ctx.deadline.timeout(5.0, "reading the peer's close"))
    try:
        sock.recv(1)
    except ConnectionResetError:
        pass


def inode(sock: socket.socket) -> int:
    return os.fstat(sock.fileno()).st_ino


def set_opt(sock: socket.socket, option: int, on: bool) -> None:
    if on:
        sock.setsockopt(socket.SOL_SOCKET, option, 1)


def yn(v: bool) -> str:
    return "yes" if v else "no"


def bind_any_port(sock: socket.socket, addr: Address, host: Host) -> None:
    """bind() to port 0. EADDRINUSE there means inet_csk_find_open_port() found no free
    port in ip_local_port_range: the host's state, not a result of the probe (exit 3
    naming the range)."""
    try:
        sock.bind(addr)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise Unsupported(ephemeral_exhausted_text(host)) from None
        raise
