"""Which sockets are on the port: sock_diag(7) with the kernel's own port filter.

The TCP dump asks for every state plus the bound-inactive bit (kernel.sockdiag), so a
socket that is bound but not listening, which /proc/net/tcp never lists, is found; for a
`[::]` socket INET_DIAG_SKV6ONLY says whether it is dual-stack. Where netlink is refused
(a sandbox) the rows come from /proc/net/{tcp,udp}{,6}, without those two answers; off
Linux (or forced, for the test that compares both) from psutil.net_connections().
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from sockprobe import kernel
from sockprobe.kernel import portdiag
from sockprobe.lab import Deadline, fmt_addr
from sockprobe.port.processes import Holders, Proc, psutil_info
from sockprobe.report import NA, Cell

TCP_ESTABLISHED = 1
TCP_SYN_RECV = 3
TIME_WAIT = 6
TCP_CLOSE = 7  # what sock_diag reports for a bound-inactive TCP socket, and unconnected UDP
CLOSE_WAIT = 8
TCP_LISTEN = 10
NEW_SYN_RECV = 12
_TCP_RANK = {TCP_LISTEN: 0, TCP_CLOSE: 1, TIME_WAIT: 5}
_FAMILIES = ((socket.AF_INET, ""), (socket.AF_INET6, "6"))


class Held:
    """A socket on the port, with its sort key and labels computed once (a busy port has
    thousands). `netns` is "" for this network namespace, else the namespace's name."""

    __slots__ = ("is_tcp", "netns", "proto", "rank", "sock", "state")

    def __init__(self, sock: portdiag.PortSocket, netns: str = "") -> None:
        self.sock = sock
        self.netns = netns
        self.is_tcp = sock.protocol == socket.IPPROTO_TCP
        v6 = "6" if sock.family == socket.AF_INET6 else ""
        st = sock.state
        if self.is_tcp:
            self.proto = "tcp" + v6
            self.state = "BOUND-INACTIVE" if st == TCP_CLOSE else kernel.tcp_state_name(st)
            #: Listeners first, then other sockets that hold the port, then connections.
            self.rank = _TCP_RANK.get(st, 4)
        else:
            self.proto = "udp" + v6
            self.state = "UNCONN" if st == TCP_CLOSE else "ESTAB"
            self.rank = 2 if st == TCP_CLOSE else 3

    @property
    def is_listener(self) -> bool:
        return self.is_tcp and self.sock.state == TCP_LISTEN

    @property
    def is_connection(self) -> bool:
        return self.rank >= 3

    @property
    def pins(self) -> bool:
        """A listener, a bound TCP socket or a UDP socket: what --kill acts on."""
        return self.rank <= 2

    @property
    def kernel_only(self) -> bool:
        """TIME_WAIT and embryonic (NEW_SYN_RECV) sockets belong to no process."""
        return self.is_tcp and self.sock.state in (TIME_WAIT, NEW_SYN_RECV)

    @property
    def queued(self) -> bool:
        """A connection in a listener's accept queue that no accept() has taken yet: the
        kernel made the full socket at the handshake's end (tcp_check_req ->
        inet_csk_complete_hashdance), but it gets its struct socket and file only in
        accept() (net/ipv4/inet_connection_sock.c inet_csk_accept -> net/socket.c
        do_accept -> sock_graft), so sock_diag's sock_i_ino reports inode 0. It is
        ESTABLISHED, or CLOSE_WAIT once the client has closed its end; a process's socket
        never has inode 0 in those states, since close() moves them on (tcp_close)."""
        return (
            self.is_tcp
            and self.sock.inode == 0
            and self.sock.state in (TCP_ESTABLISHED, TCP_SYN_RECV, CLOSE_WAIT)
        )

    @property
    def orphan(self) -> bool:
        """A TCP socket its process closed while the kernel finishes the close (FIN_WAIT1/2,
        CLOSING, LAST_ACK; net/ipv4/tcp.c __tcp_close -> sock_orphan): sock_diag reports
        inode 0, since no file refers to it."""
        return self.is_tcp and self.sock.inode == 0 and not self.kernel_only and not self.queued

    @property
    def wildcard6(self) -> bool:
        return self.sock.family == socket.AF_INET6 and self.sock.local[0] == "::"

    @property
    def local(self) -> str:
        return fmt_addr(self.sock.local)

    @property
    def remote(self) -> str:
        ip, port = self.sock.remote
        if port == 0 and ip in ("0.0.0.0", "::"):
            return "*"
        return fmt_addr(self.sock.remote)

    def covers(self) -> Cell:
        """Which IP versions the socket's local address takes in."""
        if self.sock.family == socket.AF_INET:
            return "IPv4"
        if self.sock.local[0].startswith("::ffff:"):
            return "IPv4 (mapped)"
        if not self.wildcard6 or self.sock.state not in (TCP_LISTEN, TCP_CLOSE):
            return "IPv6"
        if self.sock.v6only is None:
            return NA(
                "IPV6_V6ONLY unknown: /proc/net/tcp6 and udp6 rows look the same either "
                "way and sock_diag was not available"
            )
        return "IPv6 only" if self.sock.v6only else "IPv4+IPv6"

    def sort_key(self) -> tuple[int, str, str, tuple[str, int], tuple[str, int]]:
        return (self.rank, self.netns, self.proto, self.sock.local, self.sock.remote)


def diag(
    port: int, protocols: tuple[str, ...], timeout: Callable[[], float]
) -> tuple[list[portdiag.PortSocket], list[str]]:
    """The raw sockets on `port` (sock_diag, else /proc/net), and a note for each protocol
    sock_diag could not answer."""
    rows: list[portdiag.PortSocket] = []
    problems: list[str] = []
    for proto in protocols:
        number = socket.IPPROTO_TCP if proto == "tcp" else socket.IPPROTO_UDP
        for family, suffix in _FAMILIES:
            try:
                rows.extend(portdiag.diag_port(family, number, port, timeout=timeout()))
            except OSError as exc:
                from sockprobe.status import oserror_text

                problems.append(
                    f"sock_diag for {proto}{suffix} failed ({oserror_text(exc)}): read "
                    f"/proc/net/{proto}{suffix} instead"
                    + (
                        ", which lists no bound-but-not-listening TCP socket"
                        if proto == "tcp"
                        else ""
                    )
                )
                rows.extend(portdiag.proc_port(proto + suffix, port))
    return rows, problems


def collect(
    port: int, protocols: tuple[str, ...], deadline: Deadline
) -> tuple[list[Held], list[str]]:
    rows, problems = diag(port, protocols, lambda: deadline.timeout(2.0, "querying sock_diag"))
    held = [Held(r) for r in rows]
    held.sort(key=Held.sort_key)
    return held, problems


# -- the psutil fallback --------------------------------------------------------------------
_PSUTIL_STATES = {
    "ESTABLISHED": 1,
    "SYN_SENT": 2,
    "SYN_RECV": 3,
    "FIN_WAIT1": 4,
    "FIN_WAIT2": 5,
    "TIME_WAIT": 6,
    "CLOSE": 7,
    "CLOSE_WAIT": 8,
    "LAST_ACK": 9,
    "LISTEN": 10,
    "CLOSING": 11,
    "NONE": 7,
}

#: What the psutil path cannot see, for the table's caveat.
FALLBACK_LIMITS = (
    "holders from psutil.net_connections(): it lists no TCP socket that is bound but not "
    "listening, cannot tell a dual-stack [::] from an IPV6_V6ONLY one, and without "
    "privilege shows other users' sockets with no pid (macOS, and Linux without root) or "
    "refuses (AccessDenied on macOS)"
)


#: (family, proto, local, remote, state): what tells psutil's sockets apart.
_Key = tuple[int, str, tuple[str, int], tuple[str, int], int]


def collect_psutil(port: int, protocols: tuple[str, ...]) -> tuple[list[Held], Holders, list[str]]:
    """The sockets on `port` and their holders from psutil. psutil.net_connections() lists
    each socket once, with one pid (on Linux the first /proc/PID/fd it met), so every
    holder comes from each process's own connection list (Process.net_connections),
    which names a socket once per process holding it. psutil gives no inode: each
    distinct socket gets a negative stand-in number."""
    import psutil

    held: list[Held] = []
    holders = Holders()
    ids: dict[_Key, int] = {}
    problems: list[str] = []

    def key_of(c: Any, proto: str) -> _Key | None:
        if not c.laddr or c.laddr.port != port:
            return None
        wild = "::" if c.family == socket.AF_INET6 else "0.0.0.0"
        remote = (c.raddr.ip, c.raddr.port) if c.raddr else (wild, 0)
        state = (1 if c.raddr else 7) if proto == "udp" else _PSUTIL_STATES.get(c.status, 7)
        return (c.family, proto, (c.laddr.ip, c.laddr.port), remote, state)

    def add(key: _Key) -> int:
        if key not in ids:
            ids[key] = -(len(ids) + 1)
            family, proto, local, remote, state = key
            number = socket.IPPROTO_TCP if proto == "tcp" else socket.IPPROTO_UDP
            sock = portdiag.PortSocket(
                family,
                number,
                state,
                local,
                remote,
                0,
                0,
                0,
                0,
                -1,
                ids[key],
                None,
                None,
            )
            held.append(Held(sock))
        return ids[key]

    for proto in protocols:
        try:
            for sc in psutil.net_connections(kind=proto):
                key = key_of(sc, proto)
                if key is not None:
                    add(key)
        except psutil.AccessDenied:
            problems.append(f"psutil.net_connections({proto!r}) was refused (AccessDenied)")
    for proc in psutil.process_iter():
        try:
            conns = [(proto, c) for proto in protocols for c in proc.net_connections(kind=proto)]
        except psutil.AccessDenied:
            holders.denied.append(proc.pid)
            continue
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        for proto, c in conns:
            key = key_of(c, proto)
            if key is not None:
                holders.fds.setdefault(add(key), []).append((proc.pid, c.fd))
    for pid in sorted({p for fds in holders.fds.values() for p, _ in fds}):
        info: Proc | None = psutil_info(pid)
        if info is not None:
            holders.procs[pid] = info
    for fds in holders.fds.values():
        fds.sort()
    held.sort(key=Held.sort_key)
    return held, holders, problems
