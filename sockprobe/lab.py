"""Real loopback fixtures for probes: hosts, deadlines, listeners, pairs, worker threads.

A `Lab` owns every socket and thread a probe creates and releases all of them on exit,
including on errors and Ctrl-C. Ports are ephemeral (bind to port 0) unless a probe is
told otherwise, so two runs at once never collide.

Waking a thread blocked in recv()/accept(): close() from another thread does not wake it
on Linux (the call keeps its reference to the file, and the fd number may be reused by
the next socket), so the Lab calls shutdown(SHUT_RDWR) first, which does wake it (the
call returns b'' or fails with EINVAL), then joins the thread, then closes. SIGALRM is no
alternative: Python delivers signals only to the main thread.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any

from sockprobe.status import DeadlineExceeded, Unsupported, UsageError, oserror_text

if TYPE_CHECKING:  # imported where used: `sockprobe port --check -q` never starts a child
    import subprocess

Address = tuple[Any, ...]


@dataclass(frozen=True)
class Host:
    """A local address to run experiments on."""

    family: int
    address: str

    @property
    def is_v6(self) -> bool:
        return self.family == socket.AF_INET6

    def sockaddr(self, port: int = 0) -> Address:
        return (self.address, port)

    @property
    def wildcard(self) -> str:
        return "::" if self.is_v6 else "0.0.0.0"


def resolve_host(host: str) -> Host:
    """Turn --host into a Host. A literal address is used as is; a name is resolved once.

    Raises UsageError (exit 2) for a name that does not resolve, and for an address that
    is not one machine's own unicast address: the wildcards (0.0.0.0, ::) would make the
    probe's listeners reachable from every interface, and broadcast or multicast
    addresses cannot be bound for a TCP listener at all.
    """
    shown = host if len(host) <= 60 else host[:57] + "..."
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        try:
            infos = socket.getaddrinfo(host, None, socket.AF_UNSPEC, socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError, ValueError) as exc:
            raise UsageError(f"--host {shown!r}: unknown host ({exc})") from None
        if not infos:
            raise UsageError(f"--host {shown!r}: no address") from None
        family, _, _, _, sockaddr = infos[0]
        ip = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])
        refuse_non_unicast(shown, ip)
        return Host(family, str(sockaddr[0]))
    refuse_non_unicast(shown, ip)
    return Host(socket.AF_INET6 if ip.version == 6 else socket.AF_INET, str(ip))


def refuse_non_unicast(
    shown: str, ip: ipaddress.IPv4Address | ipaddress.IPv6Address, flag: str = "--host"
) -> None:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:224.0.0.1 is 224.0.0.1
    if ip.is_unspecified:
        raise UsageError(
            f"{flag} {shown}: a wildcard is not an address of this machine (a probe would "
            "listen on every interface); give one, such as 127.0.0.1 or ::1"
        )
    # 127.255.255.255 is the broadcast address of lo's 127.0.0.0/8 (the kernel's local
    # table has it as type broadcast); other subnets' broadcast addresses need the
    # interface's prefix, and a bind to one fails later with a message of its own.
    if ip.is_multicast or (ip.version == 4 and str(ip) in ("255.255.255.255", "127.255.255.255")):
        raise UsageError(f"{flag} {shown}: a multicast or broadcast address, not a local one")


def require_local(host: Host, needs_ports: bool = True) -> None:
    """UsageError unless `host` is an address of this machine (a trial bind to port 0):
    probes listen on it, and sockprobe never sends experiments anywhere else.

    EADDRINUSE from a bind to port 0 proves the address is local (a foreign one fails
    with EADDRNOTAVAIL) but that no ephemeral port is free: the cause is the host's
    ip_local_port_range, not the user's --host, so it is Unsupported (exit 3) with the
    range named, and only for a probe that needs ephemeral ports.
    """
    try:
        with socket.socket(host.family, socket.SOCK_STREAM) as s:
            s.bind(host.sockaddr(0))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            if needs_ports:
                raise Unsupported(ephemeral_exhausted_text(host)) from None
            return
        if exc.errno == errno.EMFILE or exc.errno == errno.ENFILE:
            raise Unsupported(f"no file descriptor left: {oserror_text(exc)}") from None
        raise UsageError(
            f"--host {host.address}: not usable on this machine ({oserror_text(exc)})"
        ) from None


def ephemeral_exhausted_text(host: Host) -> str:
    """ "no free ephemeral port on 127.0.0.1: the ephemeral port range 40000-40009
    (net.ipv4.ip_local_port_range, 10 ports) has 10 in use ..." from the kernel's range and
    sock_diag's count of the sockets holding it."""
    from sockprobe.kernel.ephemeral import ephemeral_use

    use = ephemeral_use()
    where = use.describe() if use is not None else "the ephemeral port range is all in use"
    return (
        f"no free ephemeral port on {host.address}: {where}; this probe binds ephemeral "
        "ports and cannot run until some are free"
    )


def fmt_addr(addr: Address) -> str:
    """('127.0.0.1', 80) -> 127.0.0.1:80; ('::1', 80, 0, 0) -> [::1]:80."""
    if len(addr) >= 4 or ":" in str(addr[0]):
        return f"[{addr[0]}]:{addr[1]}"
    return f"{addr[0]}:{addr[1]}"


class Deadline:
    """A hard bound on a whole probe; every blocking call takes its timeout from here."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.start = time.monotonic()
        self.end = self.start + seconds

    def remaining(self) -> float:
        return max(0.0, self.end - time.monotonic())

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def expired(self) -> bool:
        return time.monotonic() >= self.end

    def check(self, doing: str) -> None:
        if self.expired():
            raise DeadlineExceeded(f"--deadline {self.seconds:g} s ran out while {doing}")

    def timeout(self, cap: float | None = None, doing: str = "waiting") -> float:
        """Seconds a blocking call may take: the time left, at most `cap`."""
        self.check(doing)
        left = self.remaining()
        return left if cap is None else min(left, cap)


@dataclass
class Worker:
    """A thread run by the Lab; its exception, if any, is kept for the caller."""

    thread: threading.Thread
    result: Any = None
    error: BaseException | None = None

    def join(self, timeout: float) -> bool:
        self.thread.join(timeout)
        return not self.thread.is_alive()


@dataclass
class Lab:
    host: Host
    deadline: Deadline
    sockets: list[socket.socket] = field(default_factory=list)
    workers: list[Worker] = field(default_factory=list)
    endpoints: list[dict[str, Any]] = field(default_factory=list)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def __enter__(self) -> Lab:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()
        # A socket timeout that was cut short by the deadline is the deadline's doing.
        if isinstance(exc, TimeoutError) and self.deadline.remaining() < 0.05:
            raise DeadlineExceeded(
                f"--deadline {self.deadline.seconds:g} s ran out before the probe finished"
            ) from exc

    # -- sockets -----------------------------------------------------------------------
    def open_socket(
        self, type: int = socket.SOCK_STREAM, family: int | None = None, proto: int = 0
    ) -> socket.socket:
        s = socket.socket(self.host.family if family is None else family, type, proto)
        self.sockets.append(s)
        return s

    def adopt(self, sock: socket.socket) -> socket.socket:
        """Track a socket made elsewhere (accept() results)."""
        self.sockets.append(sock)
        return sock

    def close(self, sock: socket.socket) -> None:
        """Close one socket now (e.g. to observe what the peer sees)."""
        sock.close()
        if sock in self.sockets:
            self.sockets.remove(sock)

    def close_abortively(self, *socks: socket.socket) -> None:
        """Close sockets whose experiment is over with SO_LINGER {1, 0}: tcp_close()
        then sends a reset instead of a FIN, so neither end lingers in TIME_WAIT and a
        probe leaves no socket behind in the kernel either. Only for connections whose
        data has all been read: a reset discards anything still queued."""
        for sock in socks:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass  # already closed by the peer's reset, or not a TCP socket
            self.close(sock)

    def listener(
        self,
        backlog: int = 128,
        configure: Callable[[socket.socket], None] | None = None,
        port: int = 0,
        role: str = "listener",
    ) -> socket.socket:
        """A TCP listener on the lab host. `configure` runs before bind (socket options
        such as SO_RCVBUF must be set before listen() to be inherited, socket(7))."""
        s = self.open_socket()
        if configure is not None:
            configure(s)
        try:
            s.bind(self.host.sockaddr(port))
        except OSError as exc:
            # Port 0 in use: the ephemeral range ran out mid-probe (the probe's own
            # connections count), the host's cause, not the user's (require_local).
            if port == 0 and exc.errno == errno.EADDRINUSE:
                raise Unsupported(ephemeral_exhausted_text(self.host)) from None
            raise UsageError(
                f"cannot bind {fmt_addr(self.host.sockaddr(port))}: {oserror_text(exc)}"
            ) from None
        s.listen(backlog)
        self.record(role, s)
        return s

    def tcp_pair(
        self,
        configure_client: Callable[[socket.socket], None] | None = None,
        configure_listener: Callable[[socket.socket], None] | None = None,
        name: str = "",
    ) -> tuple[socket.socket, socket.socket]:
        """A connected (client, server) pair over a fresh listener, which is closed after
        accept so that only the two ends remain."""
        lst = self.listener(
            backlog=1, configure=configure_listener, role=f"{name} listener".strip()
        )
        c = self.open_socket()
        if configure_client is not None:
            configure_client(c)
        c.settimeout(self.deadline.timeout(5.0, "connecting"))
        c.connect(lst.getsockname())
        lst.settimeout(self.deadline.timeout(5.0, "accepting"))
        srv, _ = lst.accept()
        self.adopt(srv)
        self.close(lst)
        c.settimeout(None)
        srv.settimeout(None)
        self.record(f"{name} client".strip(), c)
        return c, srv

    def udp_pair(self) -> tuple[socket.socket, socket.socket]:
        """(sender, receiver): the sender is connected to the receiver's address."""
        rx = self.open_socket(socket.SOCK_DGRAM)
        rx.bind(self.host.sockaddr(0))
        tx = self.open_socket(socket.SOCK_DGRAM)
        tx.connect(rx.getsockname())
        self.record("udp receiver", rx)
        self.record("udp sender", tx)
        return tx, rx

    def record(self, role: str, sock: socket.socket) -> None:
        """Note an endpoint in the report so it can be checked against ss or tcpdump."""
        ep: dict[str, Any] = {"role": role, "local": fmt_addr(sock.getsockname())}
        try:
            ep["remote"] = fmt_addr(sock.getpeername())
        except OSError:
            pass
        ep["proto"] = "tcp" if sock.type == socket.SOCK_STREAM else "udp"
        self.endpoints.append(ep)

    # -- threads -----------------------------------------------------------------------
    def thread(
        self, target: Callable[..., Any], *args: Any, name: str = "sockprobe-worker"
    ) -> Worker:
        holder: list[Worker] = []

        def body() -> None:
            w = holder[0]
            try:
                w.result = target(*args)
            except BaseException as exc:  # kept for the caller; the thread must not die loud
                w.error = exc

        t = threading.Thread(target=body, name=name, daemon=True)
        w = Worker(t)
        holder.append(w)
        self.workers.append(w)
        t.start()
        return w

    # -- child processes ---------------------------------------------------------------
    def process(self, argv: list[str], pass_fds: tuple[int, ...] = ()) -> subprocess.Popen[bytes]:
        """A child process (stdout and stderr piped) that the Lab kills at cleanup if it
        is still running. For a peer that must not share this interpreter's GIL."""
        import subprocess

        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=pass_fds,
            )
        except OSError as exc:
            # An interpreter this user cannot run (a venv under a 0700 home) or no
            # process left: the experiment that needs a second process cannot run.
            raise Unsupported(
                f"cannot start a child process ({argv[0]}): {oserror_text(exc)}"
            ) from None
        self.processes.append(proc)
        return proc

    # -- cleanup -----------------------------------------------------------------------
    def cleanup(self) -> None:
        live = [w for w in self.workers if w.thread.is_alive()]
        if live:
            # Wake any thread blocked on one of our sockets (see module docstring). A
            # copy: a woken thread may close its sockets (Lab.close() removes them from
            # the list) while this loop runs, and iterating the list itself would then
            # skip the socket after each removed one, leaving its call blocked.
            for s in list(self.sockets):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            # One bound for all of them, not 2 s each.
            end = time.monotonic() + 2.0
            for w in live:
                w.join(max(0.0, end - time.monotonic()))
        for s in list(self.sockets):
            # The experiments are over: a TCP socket still open here is closed with a
            # reset (SO_LINGER {1, 0}, tcp_close()), so a probe leaves no TIME_WAIT behind
            # except the ones it made on purpose by closing explicitly before.
            if s.fileno() != -1 and s.type == socket.SOCK_STREAM and s.family != socket.AF_UNIX:
                try:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                except OSError:
                    pass
            try:
                s.close()
            except OSError:
                pass
        self.sockets.clear()
        self.workers = [w for w in self.workers if w.thread.is_alive()]
        for proc in self.processes:
            import subprocess

            if proc.poll() is None:
                proc.kill()
            try:
                proc.wait(2.0)
            except subprocess.TimeoutExpired:
                pass
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
        self.processes.clear()


#: errnos that mean "this machine cannot run loopback experiments now", not "the probe
#: found a behaviour": the loopback interface is down or has no route (ENETUNREACH,
#: EADDRNOTAVAIL on connect), or the process is out of descriptors (EMFILE, ENFILE).
_CANNOT_RUN = {
    errno.ENETUNREACH: "the network is unreachable (is the loopback interface down?)",
    errno.EHOSTUNREACH: "the host is unreachable (is the loopback interface down?)",
    errno.EADDRNOTAVAIL: "no local address or port is available for a connection",
    errno.EMFILE: "this process has no file descriptor left (RLIMIT_NOFILE)",
    errno.ENFILE: "the system has no file descriptor left",
    errno.ENETDOWN: "the network is down (is the loopback interface down?)",
}
CANNOT_CONNECT = frozenset(_CANNOT_RUN)


def cannot_run(exc: OSError, host: Host, doing: str = "") -> Unsupported | None:
    """The Unsupported (exit 3) that an OSError from setting up a connection on `host`
    means, naming the cause; None when the error is something else."""
    why = _CANNOT_RUN.get(exc.errno or 0)
    if why is None:
        return None
    during = f" ({doing})" if doing else ""
    return Unsupported(f"cannot run on {host.address}{during}: {why}: {oserror_text(exc)}")


def pair_or_unsupported(
    lab: Lab,
    doing: str,
    configure_client: Callable[[socket.socket], None] | None = None,
    configure_listener: Callable[[socket.socket], None] | None = None,
    name: str = "",
) -> tuple[socket.socket, socket.socket]:
    """`lab.tcp_pair(...)`, but a connection that cannot be made here (an errno of
    CANNOT_CONNECT, or a connect timeout: lo down drops the SYN) raises Unsupported
    naming the cause and what the probe was doing, so that no experiment reports a
    result it never measured."""

    try:
        return lab.tcp_pair(configure_client, configure_listener, name=name)
    except TimeoutError:
        lab.deadline.check(doing)
        raise Unsupported(
            f"cannot connect on {lab.host.address} ({doing}): the connect timed out"
        ) from None
    except OSError as exc:
        unsupported = cannot_run(exc, lab.host, doing)
        if unsupported is not None:
            raise unsupported from None
        raise


#: How long a datagram sent on the lab host may take to arrive before the host is judged
#: unable to deliver (loopback delivers inside send(); this is generous for a loaded box).
DELIVERY_CAP_S = 0.5


def require_udp_delivery(lab: Lab) -> None:
    """Unsupported (exit 3) unless one UDP datagram sent on the lab host arrives.

    A UDP probe's numbers rest on datagrams being delivered; a send() that succeeds proves
    nothing (with `lo` down, a loopback send() still returns its length and the kernel
    drops the packet). The cause is named: the send's errno (ENETUNREACH, EADDRNOTAVAIL,
    EPERM from a firewall) or, when it vanished, the state of `lo` for a loopback host.
    """
    from sockprobe.kernel import netif
    from sockprobe.status import Unsupported

    where = f"[{lab.host.address}]" if lab.host.is_v6 else lab.host.address
    try:
        tx, rx = lab.udp_pair()
        tx.send(b"sockprobe: delivery check")
    except OSError as exc:
        raise Unsupported(f"UDP on {where} cannot send here: {oserror_text(exc)}") from None
    del lab.endpoints[-2:]  # a check, not an endpoint of the experiments
    rx.settimeout(lab.deadline.timeout(DELIVERY_CAP_S, "checking UDP delivery"))
    try:
        rx.recv(64)
    except TimeoutError:
        lab.deadline.check("checking UDP delivery")
        cause = ""
        if ipaddress.ip_address(lab.host.address).is_loopback and netif.link_is_up("lo") is False:
            cause = ": the loopback interface lo is down"
        raise Unsupported(
            f"a UDP datagram sent to {where} did not arrive within {DELIVERY_CAP_S:g} s{cause}"
        ) from None
    except OSError as exc:
        raise Unsupported(f"UDP on {where} cannot receive here: {oserror_text(exc)}") from None
    finally:
        lab.close(tx)
        lab.close(rx)
