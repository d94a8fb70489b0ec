"""sockprobe reuseaddr: when does a restarted server get EADDRINUSE, and what fixes it?

Five experiments, each on fresh sockets and a fresh ephemeral port:

1. The restart matrix. A listener (bound to port 0, so the kernel picks a free port)
   accepts one connection; one side closes first, then the other; the listener is closed
   or kept; then a new socket binds that same port explicitly. The settings vary: who
   closes first, SO_REUSEADDR on the old listener and on the new socket, SO_REUSEPORT on
   both, an abortive close (SO_LINGER {1, 0}). Each row counts the TIME_WAIT sockets on
   the port with their remaining timer (sock_diag; /proc/net/tcp, state 06 with the timer
   in USER_HZ ticks, where netlink is refused) and records what bind(2) said.
2. IPV6_V6ONLY: a `[::]` socket with V6ONLY default / 0 / 1, then a bind to 0.0.0.0 on
   the same port (ipv6(7): a dual-stack socket owns the IPv4 port as well).
3. Timers: the remaining TIME_WAIT timer next to the orphaned FIN_WAIT2 timer, both read
   from /proc and from sock_diag, beside net.ipv4.tcp_fin_timeout: the sysctl sets the
   second, never the first (TIME_WAIT is TCP_TIMEWAIT_LEN, 60 s, compiled in).
4. tcp_tw_reuse: a new outgoing connection whose only allowed local port is the one a
   client-side TIME_WAIT holds (IP_LOCAL_PORT_RANGE pinned to it), at once and again after
   net.ipv4.tcp_tw_reuse_delay. The sysctl is consulted only there: bind() ignores it.
5. Zero-downtime restart with SO_REUSEPORT: two listeners share one port, clients are
   steered onto each (a classic BPF program on one DSCP bit, so the split is the same in
   every run) and left in the accept queues; one listener closes. Each client's recv()
   says whether it was reset or is served by the other listener; net.ipv4.tcp_migrate_req
   decides (1 moves the queued connections to the other listener instead of resetting).

With `wait`, the probe then waits the TIME_WAIT of the first server-first row out (about
60 s), reporting progress through the `progress` callback, and binds the port plainly.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from sockprobe import kernel
from sockprobe.kernel import reuse, sockdiag, sockstate
from sockprobe.lab import Deadline, Host, Lab
from sockprobe.probes import ProbeParams, Stopwatch, require
from sockprobe.report import NA, Cell, Report, environment, legacy_table, params_dict
from sockprobe.status import DeadlineExceeded, oserror_name

#: progress(seconds_left, seconds_waited, done), called while `wait` waits TIME_WAIT out:
#: seconds_left is the kernel's timer as read each time (0 once it is overdue), `done`
#: is True on the last call, when the TIME_WAIT has gone.
Progress = Callable[[float, float, bool], None]
#: The kernel removes a TIME_WAIT socket from a coarse timer wheel, so it can disappear
#: somewhat after its timer reads 0 (measured here: 0.1 to 1.2 s after a 59 s timer).
TIMER_SLACK = 1.15

SYSCTLS = (
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_tw_reuse",
    "net.ipv4.tcp_tw_reuse_delay",
    "net.ipv4.tcp_tw_recycle",
    "net.ipv4.tcp_timestamps",
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
NO_PROC = "TIME_WAIT is counted from /proc/net/tcp, which this platform lacks"
MAX_CLIENTS = 64


@dataclass(frozen=True)
class Params(ProbeParams):
    #: Wait the TIME_WAIT of a server-first row out (about 60 s), then bind plainly.
    wait: bool = False
    #: Let the `[::]` socket of the IPV6_V6ONLY rows listen (it is then reachable from
    #: other hosts for a few milliseconds); by default it is only bound.
    wildcard_listen: bool = False
    #: Clients queued on each of the two SO_REUSEPORT listeners.
    clients: int = 4
    #: Called with (seconds left, seconds waited, done) while waiting; the CLI prints it.
    #: Not a measurement setting, so it stays out of the report's params.
    progress: Progress | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        require(
            isinstance(self.clients, int) and 1 <= self.clients <= MAX_CLIENTS,
            f"--clients must be 1..{MAX_CLIENTS}, not {self.clients}",
        )


@dataclass(frozen=True)
class Scenario:
    closes_first: str  # "server" or "client"
    old_reuseaddr: bool
    new_reuseaddr: bool
    listener_open: bool
    reuseport: bool = False
    abortive: bool = False


def _matrix() -> tuple[Scenario, ...]:
    rows = [
        Scenario(first, old, new, listener_open=False)
        for first in ("server", "client")
        for old in (False, True)
        for new in (False, True)
    ]
    rows += [
        Scenario("server", old, new, listener_open=True)
        for old in (False, True)
        for new in (False, True)
    ]
    rows += [
        Scenario("server", False, False, listener_open=False, reuseport=True),
        Scenario("server", False, False, listener_open=True, reuseport=True),
        Scenario("server", False, False, listener_open=False, abortive=True),
    ]
    return tuple(rows)


MATRIX = _matrix()


@dataclass
class Ctx:
    lab: Lab
    host: Host
    proto: str  # "tcp" or "tcp6": which /proc/net file holds the host's sockets
    watch: Watch

    @property
    def deadline(self) -> Deadline:
        return self.lab.deadline


# -- watching the kernel's sockets -------------------------------------------------------
#: States worth watching after a close: FIN_WAIT1/2, TIME_WAIT, CLOSE_WAIT, LAST_ACK,
#: LISTEN, CLOSING. ESTABLISHED is left out on purpose: a busy host can have tens of
#: thousands, and none of ours is ESTABLISHED once both ends closed.
WATCHED_STATES = (4, 5, 6, 8, 9, 10, 11)


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


class Watch:
    """Reads the TCP sockets on a few ports, by sock_diag when it works, else /proc.

    Why sock_diag first: the kernel filters by state before sending anything, so a query
    costs about 2 ms even beside 10,000 established connections, where reading and
    parsing /proc/net/tcp costs ~100 ms; each scenario polls several times. Both report
    the same timer (sock_diag in ms, /proc in USER_HZ ticks); the timers table shows both.

    Neither interface is a snapshot: both walk the kernel's hash tables in pieces, so a
    socket created or destroyed meanwhile elsewhere on a busy host can shift the walk and
    one socket can be reported twice (seen here in /proc/net/tcp) or skipped. Rows are
    de-duplicated here, and `_settle` accepts only two consecutive reads that agree.
    """

    def __init__(self, family: int, proto: str) -> None:
        self.family = family
        self.proto = proto
        self.source = "sock_diag" if kernel.IS_LINUX else ""
        self.mask = sum(1 << s for s in WATCHED_STATES)

    def rows(self, ports: Iterable[int]) -> list[Seen]:
        # dict.fromkeys keeps the first of duplicate rows (same 4-tuple, state, inode).
        return list(dict.fromkeys(self._read(set(ports))))

    def _read(self, want: set[int]) -> list[Seen]:
        if self.source == "sock_diag":
            try:
                found = sockdiag.dump(self.family, states=self.mask, meminfo=False)
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


def _settle(ctx: Ctx, port: int, cport: int) -> list[Seen]:
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


def _inode(sock: socket.socket) -> int:
    return os.fstat(sock.fileno()).st_ino


def _set(sock: socket.socket, option: int, on: bool) -> None:
    if on:
        sock.setsockopt(socket.SOL_SOCKET, option, 1)


# -- 1. the restart matrix ------------------------------------------------------------------
@dataclass
class Outcome:
    index: int
    sc: Scenario
    port: int
    tw_on_port: Cell
    tw_on_client_port: Cell
    tw_left_s: Cell
    #: Sockets on the port that are neither TIME_WAIT nor the probe's own open listener.
    others: list[str]
    bind: Cell


def _scenario(ctx: Ctx, index: int, sc: Scenario) -> Outcome:
    lab, dl = ctx.lab, ctx.deadline
    if sc.reuseport and SO_REUSEPORT is None:
        na = NA("SO_REUSEPORT does not exist on this platform")
        return Outcome(index, sc, 0, na, na, na, [], na)

    def configure(s: socket.socket) -> None:
        _set(s, socket.SO_REUSEADDR, sc.old_reuseaddr)
        if sc.reuseport and SO_REUSEPORT is not None:
            _set(s, SO_REUSEPORT, True)

    old = lab.listener(backlog=1, configure=configure, role=f"row {index} old listener")
    port = old.getsockname()[1]
    old_inode = _inode(old)
    client = lab.open_socket()
    client.settimeout(dl.timeout(5.0, "connecting"))
    client.connect(old.getsockname())
    old.settimeout(dl.timeout(5.0, "accepting"))
    server, _ = old.accept()
    lab.adopt(server)
    lab.record(f"row {index} client", client)
    cport = client.getsockname()[1]

    first, second = (server, client) if sc.closes_first == "server" else (client, server)
    if sc.abortive:
        # SO_LINGER {on, 0 s} (socket(7)): close() discards the send queue and sends RST
        # instead of FIN, so neither side goes through TIME_WAIT.
        sockstate.abortive_linger(first)
    lab.close(first)
    # The other side reads the end of the stream (b'' after a FIN, ECONNRESET after a
    # RST), then closes too, as a well-behaved peer does.
    second.settimeout(dl.timeout(5.0, "reading the peer's close"))
    try:
        second.recv(1)
    except ConnectionResetError:
        pass
    lab.close(second)
    if not sc.listener_open:
        lab.close(old)
    rows = _settle(ctx, port, cport)

    if kernel.IS_LINUX:
        tw_port = [r for r in rows if r.lport == port and r.state == TIME_WAIT]
        tw_client = [
            r for r in rows if r.lport == cport and r.rport == port and r.state == TIME_WAIT
        ]
        timer = (tw_port + tw_client)[0] if tw_port or tw_client else None
        tw_on_port: Cell = len(tw_port)
        tw_on_client: Cell = len(tw_client)
        left: Cell = None if timer is None else round(timer.left_s, 2)
        others = sorted(
            {
                kernel.tcp_state_name(r.state)
                for r in rows
                if r.lport == port
                and r.state != TIME_WAIT
                and not (sc.listener_open and r.inode == old_inode)
            }
        )
    else:
        tw_on_port = tw_on_client = left = NA(NO_PROC)
        others = []

    new = lab.open_socket()
    _set(new, socket.SO_REUSEADDR, sc.new_reuseaddr)
    if sc.reuseport and SO_REUSEPORT is not None:
        _set(new, SO_REUSEPORT, True)
    try:
        new.bind(ctx.host.sockaddr(port))
        result = "ok"
    except OSError as exc:
        result = oserror_name(exc)
    lab.close(new)
    if sc.listener_open:
        lab.close(old)
    return Outcome(index, sc, port, tw_on_port, tw_on_client, left, others, result)


def _why(o: Outcome) -> str:
    """The reason for one row, from its settings and what was measured."""
    sc = o.sc
    if isinstance(o.bind, NA):
        return o.bind.reason
    tw = o.tw_on_port if isinstance(o.tw_on_port, int) else 0
    if o.bind == "ok":
        if sc.listener_open:
            if sc.reuseport:
                return "SO_REUSEPORT on both, same user: the sockets share the port"
            return "unexpected on Linux: the new socket shared a port with a listener"
        if tw == 0:
            if sc.abortive:
                return "the abortive close sent RST: no TIME_WAIT was left on the port"
            if sc.closes_first == "client":
                return "TIME_WAIT sits on the client's port (the side that closed first)"
            return "nothing was left on the port"
        if sc.reuseport:
            # inet_bind_conflict(): a TIME_WAIT socket that kept SO_REUSEPORT never
            # conflicts with a new SO_REUSEPORT socket; the same-user test applies only to
            # live sockets (row 14).
            return "SO_REUSEPORT on both: a TIME_WAIT that kept SO_REUSEPORT does not block"
        if sc.old_reuseaddr and sc.new_reuseaddr:
            return "SO_REUSEADDR on both: the TIME_WAIT socket kept the old one's, no conflict"
        return "unexpected on Linux: TIME_WAIT without SO_REUSEADDR on both did not block"
    if o.bind == "EADDRINUSE":
        if sc.listener_open:
            return "the old listener is open: SO_REUSEADDR never shares a port with a listener"
        if tw > 0:
            if sc.new_reuseaddr and not sc.old_reuseaddr:
                return "TIME_WAIT inherited SO_REUSEADDR=0 from the old listener: both need it"
            if sc.old_reuseaddr and not sc.new_reuseaddr:
                return "the new socket did not set SO_REUSEADDR"
            if not sc.old_reuseaddr and not sc.new_reuseaddr:
                return "a TIME_WAIT socket holds the port and neither side set SO_REUSEADDR"
            return "unexpected on Linux: SO_REUSEADDR on both, TIME_WAIT still blocked"
        if o.others:
            return f"another socket took the port meanwhile ({', '.join(o.others)})"
        return "unexpected: no TIME_WAIT, closing or listening socket was seen on the port"
    return f"bind failed with {o.bind}"


# -- 2. IPV6_V6ONLY -------------------------------------------------------------------------
@dataclass
class V6Row:
    setting: int | None  # None: left at the default (net.ipv6.bindv6only)
    listening: bool
    effective: Cell
    diag_v6only: Cell
    bind: Cell


def _dual_stack_free_port(lab: Lab) -> int:
    """A port free for IPv4 and IPv6 alike, from a dual-stack [::] socket bound to port 0.

    Why not let the V6ONLY 1 socket pick its own port: the kernel then checks only IPv6
    sockets, so it may hand out a port that an IPv4 socket already holds, and the 0.0.0.0
    bind would fail for a reason that has nothing to do with V6ONLY (on a host with
    thousands of IPv4 connections, often). The probe socket is closed at once and the
    port bound again explicitly; nothing else can take it in between but a coincidence."""
    pick = lab.open_socket(family=socket.AF_INET6)
    try:
        pick.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        pick.bind(("::", 0))
        return int(pick.getsockname()[1])
    finally:
        lab.close(pick)


def _v6only(ctx: Ctx, setting: int | None, listen: bool) -> V6Row:
    lab = ctx.lab
    for attempt in range(5):
        port = 0
        wild: socket.socket | None = None
        try:
            port = _dual_stack_free_port(lab)
            wild = lab.open_socket(family=socket.AF_INET6)
            if setting is not None:
                wild.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, setting)
            wild.bind(("::", port))
            break
        except OSError as exc:
            if wild is not None:
                lab.close(wild)
            if exc.errno == errno.EADDRINUSE and attempt < 4:
                continue  # something took the port in between: pick another
            if exc.errno == errno.EADDRINUSE:
                na = NA("every [::] port tried was taken before the [::] socket could bind it")
            else:
                na = NA(f"no IPv6 here: {oserror_name(exc)}")
            return V6Row(setting, listen, na, na, na)
    assert wild is not None
    if listen:
        wild.listen(1)
    lab.record(f"[::] socket, IPV6_V6ONLY {'default' if setting is None else setting}", wild)
    effective: Cell = wild.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
    diag: Cell
    try:
        # sock_diag reports INET_DIAG_SKV6ONLY for listening and bound-only sockets alike;
        # /proc/net/tcp6 shows a listener the same either way (and omits bound-only ones).
        ino = _inode(wild)
        found = [
            d.v6only
            for d in sockdiag.dump(socket.AF_INET6, port=port, meminfo=False)
            if d.inode == ino
        ]
        diag = (
            found[0]
            if found and found[0] is not None
            else NA("sock_diag did not report this socket")
        )
    except OSError as exc:
        diag = NA(f"sock_diag unavailable: {oserror_name(exc)}")
    v4 = lab.open_socket(family=socket.AF_INET)
    try:
        v4.bind(("0.0.0.0", port))
        result: Cell = "ok"
    except OSError as exc:
        result = oserror_name(exc)
    lab.close(v4)
    lab.close(wild)
    return V6Row(setting, listen, effective, diag, result)


def _v6_why(r: V6Row, bindv6only: int | None) -> str:
    if isinstance(r.bind, NA):
        return r.bind.reason
    dual = r.effective == 0
    if r.bind == "EADDRINUSE" and dual:
        return "a dual-stack [::] socket also owns the port on every IPv4 address"
    if r.bind == "ok" and r.effective == 1:
        return "IPV6_V6ONLY 1: the [::] socket owns the port for IPv6 only"
    return f"bind gave {r.bind} with IPV6_V6ONLY {r.effective} (bindv6only={bindv6only})"


# -- 3. timers ------------------------------------------------------------------------------
@dataclass
class TimerRow:
    label: str
    state: Cell
    proc_left: Cell
    diag_left: Cell


def _timer_row(ctx: Ctx, label: str, port: int, cport: int, want: int) -> TimerRow:
    """Poll until the server end (port -> cport) is in state `want`, then read its timer
    from /proc and from sock_diag."""
    end = time.monotonic() + ctx.deadline.timeout(SETTLE_CAP_S, "waiting for a state change")
    row = None
    while True:
        rows = [
            r
            for r in kernel.proc_net_sockets(ctx.proto, port)
            if r.local[1] == port and r.remote[1] == cport
        ]
        row = rows[0] if rows else None
        if (row is not None and row.state == want) or time.monotonic() >= end:
            break
        time.sleep(0.001)
    if row is None:
        return TimerRow(label, NA("the socket was not in /proc/net/tcp"), None, None)
    diag: Cell
    try:
        found = [
            d
            for d in sockdiag.dump(ctx.host.family, port=port, meminfo=False)
            if d.remote[1] == cport
        ]
        diag = round(found[0].expires_ms / 1000, 2) if found else NA("not found by sock_diag")
    except OSError as exc:
        diag = NA(f"sock_diag unavailable: {oserror_name(exc)}")
    return TimerRow(label, kernel.tcp_state_name(row.state), round(row.timer_s, 2), diag)


def _timers(ctx: Ctx) -> list[TimerRow]:
    if not kernel.IS_LINUX:
        return []
    lab, dl = ctx.lab, ctx.deadline
    lst = lab.listener(backlog=1, role="timers listener")
    client = lab.open_socket()
    client.settimeout(dl.timeout(5.0, "connecting"))
    client.connect(lst.getsockname())
    lst.settimeout(dl.timeout(5.0, "accepting"))
    server, _ = lst.accept()
    lab.adopt(server)
    lab.record("timers client", client)
    port, cport = lst.getsockname()[1], client.getsockname()[1]
    lab.close(lst)
    # The server closes; the client keeps its end open, so the server's socket is an
    # orphan in FIN_WAIT2: its lifetime is tcp_fin_timeout (tcp(7)).
    lab.close(server)
    fw2 = _timer_row(ctx, "server closed, client still open (orphan)", port, cport, FIN_WAIT2)
    # Now the client closes: the server's end enters TIME_WAIT for TCP_TIMEWAIT_LEN.
    client.settimeout(dl.timeout(5.0, "reading EOF"))
    client.recv(1)
    lab.close(client)
    tw = _timer_row(ctx, "then the client closed", port, cport, TIME_WAIT)
    return [fw2, tw]


# -- 4. tcp_tw_reuse ------------------------------------------------------------------------
@dataclass
class TwAttempt:
    label: str
    after_s: Cell
    result: Cell
    got_port: Cell


@dataclass
class TwReuse:
    listener: socket.socket | None = None
    tw_port: int = 0
    started: float = 0.0
    attempts: list[TwAttempt] = field(default_factory=list)
    na: NA | None = None


def _pinned_connect(ctx: Ctx, tw: TwReuse) -> tuple[str, bool]:
    """connect() with the ephemeral range pinned to the TIME_WAIT's port; (result, port)."""
    lab, dl = ctx.lab, ctx.deadline
    assert tw.listener is not None
    s = lab.open_socket()
    reuse.pin_local_port_range(s, tw.tw_port)
    s.settimeout(dl.timeout(5.0, "connecting from the TIME_WAIT port"))
    try:
        s.connect(tw.listener.getsockname())
    except OSError as exc:
        lab.close(s)
        return oserror_name(exc), False
    got = s.getsockname()[1] == tw.tw_port
    tw.listener.settimeout(dl.timeout(5.0, "accepting"))
    peer, _ = tw.listener.accept()
    lab.adopt(peer)
    # Abort both ends (RST): this connection must not leave a TIME_WAIT of its own.
    for end in (s, peer):
        sockstate.abortive_linger(end)
        lab.close(end)
    return "ok", got


def _tw_reuse_start(ctx: Ctx) -> TwReuse:
    """A client-first close leaves TIME_WAIT on the client's port; try to reconnect
    from exactly that port at once."""
    tw = TwReuse()
    if not kernel.IS_LINUX:
        tw.na = NA(NO_PROC)
        return tw
    lab, dl = ctx.lab, ctx.deadline
    tw.listener = lab.listener(backlog=4, role="tcp_tw_reuse listener")
    probe = lab.open_socket()
    try:
        reuse.pin_local_port_range(probe, 1024)
    except OSError as exc:
        tw.na = NA(f"IP_LOCAL_PORT_RANGE (Linux 6.3+) unavailable: {oserror_name(exc)}")
        lab.close(probe)
        return tw
    lab.close(probe)
    client = lab.open_socket()
    client.settimeout(dl.timeout(5.0, "connecting"))
    client.connect(tw.listener.getsockname())
    tw.listener.settimeout(dl.timeout(5.0, "accepting"))
    server, _ = tw.listener.accept()
    lab.adopt(server)
    lab.record("tcp_tw_reuse client (closes first)", client)
    port, tw.tw_port = tw.listener.getsockname()[1], client.getsockname()[1]
    lab.close(client)
    server.settimeout(dl.timeout(5.0, "reading EOF"))
    server.recv(1)
    lab.close(server)
    _settle(ctx, port, tw.tw_port)
    tw.started = time.monotonic()
    result, got = _pinned_connect(ctx, tw)
    tw.attempts.append(TwAttempt("at once", round(time.monotonic() - tw.started, 3), result, got))
    return tw


def _tw_reuse_finish(ctx: Ctx, tw: TwReuse, reuse_on: bool, delay_ms: int | None) -> None:
    """Try again once the TIME_WAIT is older than tcp_tw_reuse_delay (1000 ms where the
    sysctl is absent: older kernels compare timestamps in whole seconds). With reuse on,
    retry for a further second in case the kernel rounds; with it off, one try says it."""
    if tw.na is not None or tw.listener is None:
        return
    delay = (delay_ms if delay_ms is not None else 1000) / 1000
    first = tw.started + delay + 0.02
    last = first + (1.0 if reuse_on else 0.0)
    while True:
        pause = first - time.monotonic()
        if pause > 0:
            time.sleep(min(pause, ctx.deadline.timeout(None, "waiting for tcp_tw_reuse_delay")))
        result, got = _pinned_connect(ctx, tw)
        if result == "ok" or time.monotonic() >= last:
            break
        first = time.monotonic() + 0.1
    tw.attempts.append(
        TwAttempt("after tcp_tw_reuse_delay", round(time.monotonic() - tw.started, 3), result, got)
    )
    ctx.lab.close(tw.listener)


def _tw_why(
    a: TwAttempt,
    reuse_value: int | None,
    delay_ms: int | None,
    loopback: bool,
    timestamps: int | None,
) -> str:
    if a.result == "ok":
        return (
            f"tcp_tw_reuse={reuse_value}: connect() took over the TIME_WAIT's 4-tuple "
            "(TCP timestamps keep old segments apart)"
        )
    if a.result == "EADDRNOTAVAIL":
        if reuse_value == 0:
            return "tcp_tw_reuse=0: a 4-tuple in TIME_WAIT is never reused for connect()"
        if reuse_value == 2 and not loopback:
            return "tcp_tw_reuse=2 reuses TIME_WAIT 4-tuples on loopback only"
        if timestamps == 0:
            # tcp_twsk_unique() needs the peer's last timestamp (tw_ts_recent_stamp).
            return "tcp_timestamps=0: without TCP timestamps tcp_tw_reuse cannot apply"
        if a.label == "at once":
            d = "1000 ms" if delay_ms is None else f"{delay_ms} ms"
            return f"the TIME_WAIT is younger than tcp_tw_reuse_delay ({d})"
        return "the only allowed port's 4-tuple is still in TIME_WAIT"
    return f"connect() failed with {a.result}"


# -- 5. SO_REUSEPORT zero-downtime restart ----------------------------------------------------
@dataclass
class GroupRow:
    listener: str
    steered: int
    queued: Cell
    reset: int
    served: int
    no_answer: int


def _accept_queues(ctx: Ctx, port: int, inodes: list[int], want: int) -> list[Cell]:
    """Accept-queue length of each listener (sock_diag rqueue, /proc rx_queue).

    Polled until each holds `want` (the last ACK of a handshake is processed in softirq,
    so a connect() may return a moment before the server side is queued)."""
    if not kernel.IS_LINUX:
        return [NA(NO_PROC)] * len(inodes)
    end = time.monotonic() + ctx.deadline.timeout(SETTLE_CAP_S, "waiting for the accept queues")
    while True:
        by_inode = {r.inode: r.queue for r in ctx.watch.rows((port,)) if r.state == LISTEN}
        counts = [by_inode.get(i, 0) for i in inodes]
        if all(c >= want for c in counts) or time.monotonic() >= end:
            return list(counts)
        time.sleep(0.001)


def _reuseport(ctx: Ctx, clients: int) -> tuple[list[GroupRow], NA | None]:
    lab, dl = ctx.lab, ctx.deadline
    if SO_REUSEPORT is None:
        return [], NA("SO_REUSEPORT does not exist on this platform")
    opt = SO_REUSEPORT

    def configure(s: socket.socket) -> None:
        s.setsockopt(socket.SOL_SOCKET, opt, 1)

    # Listener 0 (the one to close) calls listen() first, so it is index 0 in the group.
    old = lab.listener(backlog=clients, configure=configure, role="reuseport listener (closed)")
    port = old.getsockname()[1]
    kept = lab.listener(
        backlog=clients, configure=configure, port=port, role="reuseport listener (kept)"
    )
    try:
        reuse.steer_reuseport_by_dscp(old)
    except OSError as exc:
        return [], NA(f"cannot steer clients (SO_ATTACH_REUSEPORT_CBPF): {oserror_name(exc)}")
    conns: list[tuple[int, socket.socket]] = []
    for group in (0, 1):
        for _ in range(clients):
            c = lab.open_socket()
            reuse.mark_client(c, group)
            c.settimeout(dl.timeout(5.0, "connecting to the SO_REUSEPORT group"))
            c.connect(old.getsockname())
            conns.append((group, c))
    queued = _accept_queues(ctx, port, [_inode(old), _inode(kept)], clients)

    # The restart: the old listener goes away with its queue still full.
    lab.close(old)
    accepted: list[socket.socket] = []
    kept.setblocking(False)
    while True:
        try:
            a, _ = kept.accept()
        except BlockingIOError:
            break
        accepted.append(lab.adopt(a))
    for a in accepted:
        a.settimeout(dl.timeout(5.0, "answering"))
        a.sendall(b"k")

    outcome: dict[int, dict[str, int]] = {0: {}, 1: {}}
    for group, c in conns:
        c.settimeout(dl.timeout(0.5, "reading the answer"))
        try:
            got = c.recv(1)
            kind = "served" if got == b"k" else "closed"
        except ConnectionResetError:
            kind = "reset"
        except TimeoutError:
            if dl.remaining() < 0.05:
                raise
            kind = "no answer"
        outcome[group][kind] = outcome[group].get(kind, 0) + 1
    for _, c in conns:
        lab.close(c)
    for a in accepted:
        lab.close(a)
    lab.close(kept)
    rows = []
    for group, name in ((0, "closed"), (1, "kept")):
        o = outcome[group]
        rows.append(
            GroupRow(
                name,
                clients,
                queued[group],
                o.get("reset", 0),
                o.get("served", 0),
                o.get("no answer", 0) + o.get("closed", 0),
            )
        )
    return rows, None


# -- waiting TIME_WAIT out -------------------------------------------------------------------
@dataclass
class WaitResult:
    row: int
    tw_left_at_start: float
    waited_s: float
    tw_after: int
    bind: str


def _wait_out(ctx: Ctx, o: Outcome, progress: Progress | None) -> WaitResult:
    """Wait until no TIME_WAIT holds the row's port, then bind it with no option."""
    lab, dl = ctx.lab, ctx.deadline

    def left() -> tuple[int, float]:
        tws = [r for r in ctx.watch.rows((o.port,)) if r.state == TIME_WAIT and r.lport == o.port]
        return len(tws), max((r.left_s for r in tws), default=0.0)

    n, start_left = left()
    if start_left * TIMER_SLACK + 1.0 > dl.remaining():
        raise DeadlineExceeded(
            f"--wait: TIME_WAIT on port {o.port} has {start_left:.0f} s left but --deadline "
            f"leaves {dl.remaining():.0f} s; rerun with --deadline {int(start_left) + 30}"
        )
    t0 = time.monotonic()
    now_left = start_left
    while n:
        if progress is not None:
            progress(now_left, time.monotonic() - t0, False)
        time.sleep(dl.timeout(0.25, "waiting TIME_WAIT out"))
        n, now_left = left()
    waited = time.monotonic() - t0
    if progress is not None:
        progress(0.0, waited, True)
    new = lab.open_socket()
    try:
        new.bind(ctx.host.sockaddr(o.port))
        result = "ok"
    except OSError as exc:
        result = oserror_name(exc)
    lab.close(new)
    return WaitResult(o.index, round(start_left, 2), round(waited, 2), n, result)


# -- the probe --------------------------------------------------------------------------------
def run(params: Params) -> Report:
    watch = Stopwatch()
    host, deadline = params.resolve()
    sysctls = kernel.sysctls(SYSCTLS)
    report = Report(
        "reuseaddr",
        params={k: v for k, v in params_dict(params).items() if k != "progress"},
        environment=environment(sysctls),
    )
    reuse_value = kernel.sysctl_int("net.ipv4.tcp_tw_reuse")
    delay_ms = kernel.sysctl_int("net.ipv4.tcp_tw_reuse_delay")
    with Lab(host, deadline) as lab:
        proto = "tcp6" if host.is_v6 else "tcp"
        ctx = Ctx(lab, host, proto, Watch(host.family, proto))
        # Started first: its second attempt must wait tcp_tw_reuse_delay (1 s), and the
        # rest of the probe runs in that time.
        tw = _tw_reuse_start(ctx)
        outcomes = [_scenario(ctx, i, sc) for i, sc in enumerate(MATRIX, 1)]
        v6 = [_v6only(ctx, s, params.wildcard_listen) for s in (None, 0, 1)]
        timers = _timers(ctx)
        group, group_na = _reuseport(ctx, params.clients)
        # tcp_tw_reuse: 0 off, 1 on, 2 on for loopback traffic only (the default).
        reuse_on = reuse_value == 1 or (reuse_value == 2 and _is_loopback(host))
        _tw_reuse_finish(ctx, tw, reuse_on, delay_ms)
        waited = None
        if params.wait:
            target = next(
                (
                    o
                    for o in outcomes
                    if o.sc.closes_first == "server"
                    and not o.sc.listener_open
                    and isinstance(o.tw_on_port, int)
                    and o.tw_on_port > 0
                ),
                None,
            )
            if target is not None:
                waited = _wait_out(ctx, target, params.progress)
        report.endpoints = lab.endpoints

    bindv6only = kernel.sysctl_int("net.ipv6.bindv6only")
    migrate = kernel.sysctl_int("net.ipv4.tcp_migrate_req")
    fin_timeout = kernel.sysctl_int("net.ipv4.tcp_fin_timeout")
    _matrix_table(report, host, outcomes)
    _v6_table(report, v6, bindv6only)
    _timer_table(report, timers, fin_timeout)
    timestamps = kernel.sysctl_int("net.ipv4.tcp_timestamps")
    _tw_table(report, tw, reuse_value, delay_ms, host, timestamps)
    _group_table(report, group, group_na, migrate, params.clients)
    if waited is not None:
        w = legacy_table(
            report,
            "Waiting TIME_WAIT out (--wait), then a plain bind",
            ["row", "TIME_WAIT left at start", "waited", "TIME_WAIT left after", "plain bind"],
            ["", "s", "s", "", ""],
            volatile=["TIME_WAIT left at start", "waited"],
        )
        w.add(waited.row, waited.tw_left_at_start, waited.waited_s, waited.tw_after, waited.bind)
    _findings(report, outcomes, v6, timers, tw, group, migrate, fin_timeout, waited, sysctls)
    _notes(report, params)
    report.duration_s = watch()
    return report


def _span(values: list[float], unit: str) -> str:
    """[59.9, 60.0] -> ', 59.9-60.0 s left'; one distinct value -> ', 60.0 s left'."""
    lo, hi = f"{min(values):.1f}", f"{max(values):.1f}"
    return f", {lo}{unit}" if lo == hi else f", {lo}-{hi}{unit}"


def _is_loopback(host: Host) -> bool:
    return ipaddress.ip_address(host.address.split("%")[0]).is_loopback


def _yn(v: bool) -> str:
    return "yes" if v else "no"


def _matrix_table(report: Report, host: Host, outcomes: list[Outcome]) -> None:
    t = legacy_table(
        report,
        f"Restart matrix: a new socket binds the old listener's port again ({host.address})",
        [
            "#",
            "closes first",
            "close",
            "SO_REUSEADDR old",
            "SO_REUSEADDR new",
            "SO_REUSEPORT both",
            "old listener",
            "TIME_WAIT on port",
            "TIME_WAIT on client port",
            "TIME_WAIT left",
            "bind",
            "why",
        ],
        ["", "", "", "", "", "", "", "", "", "s", "", ""],
        volatile=["TIME_WAIT left"],
    )
    for o in outcomes:
        sc = o.sc
        t.add(
            o.index,
            sc.closes_first,
            "RST (SO_LINGER 1,0)" if sc.abortive else "FIN",
            _yn(sc.old_reuseaddr),
            _yn(sc.new_reuseaddr),
            _yn(sc.reuseport),
            "open" if sc.listener_open else "closed",
            o.tw_on_port,
            o.tw_on_client_port,
            o.tw_left_s,
            o.bind,
            _why(o),
        )


def _v6_table(report: Report, rows: list[V6Row], bindv6only: int | None) -> None:
    t = legacy_table(
        report,
        "IPV6_V6ONLY: a [::] socket on a fresh port, then bind 0.0.0.0 to the same port",
        [
            "[::] socket",
            "IPV6_V6ONLY set",
            "IPV6_V6ONLY (getsockopt)",
            "v6only (sock_diag)",
            "bind 0.0.0.0",
            "why",
        ],
    )
    for r in rows:
        setting = f"default (bindv6only={bindv6only})" if r.setting is None else str(r.setting)
        t.add(
            "listening" if r.listening else "bound",
            setting,
            r.effective,
            r.diag_v6only,
            r.bind,
            _v6_why(r, bindv6only),
        )


def _timer_table(report: Report, rows: list[TimerRow], fin_timeout: int | None) -> None:
    t = legacy_table(
        report,
        "Timers: orphaned FIN_WAIT2 vs TIME_WAIT, just after entering the state",
        ["server end", "state", "timer left (/proc)", "timer left (sock_diag)", "tcp_fin_timeout"],
        ["", "", "s", "s", "s"],
        volatile=["timer left (/proc)", "timer left (sock_diag)"],
    )
    fin: Cell = fin_timeout if fin_timeout is not None else NA("net.ipv4.tcp_fin_timeout absent")
    if not rows:
        t.add("-", NA(NO_PROC), None, None, fin)
    for r in rows:
        t.add(r.label, r.state, r.proc_left, r.diag_left, fin)


def _tw_table(
    report: Report,
    tw: TwReuse,
    reuse_value: int | None,
    delay_ms: int | None,
    host: Host,
    timestamps: int | None,
) -> None:
    t = legacy_table(
        report,
        "tcp_tw_reuse: connect() whose only allowed local port is held by a client TIME_WAIT",
        ["attempt", "after TIME_WAIT began", "tcp_tw_reuse", "result", "got that port", "why"],
        ["", "s", "", "", "", ""],
        volatile=["after TIME_WAIT began"],
    )
    rv: Cell = reuse_value if reuse_value is not None else NA("net.ipv4.tcp_tw_reuse absent")
    if tw.na is not None:
        t.add("-", None, rv, tw.na, None, tw.na.reason)
    for a in tw.attempts:
        t.add(
            a.label,
            a.after_s,
            rv,
            a.result,
            a.got_port,
            _tw_why(a, reuse_value, delay_ms, _is_loopback(host), timestamps),
        )


def _group_table(
    report: Report, rows: list[GroupRow], na: NA | None, migrate: int | None, clients: int
) -> None:
    t = legacy_table(
        report,
        f"SO_REUSEPORT restart: two listeners on one port, {clients} clients queued on each, "
        "one listener closed",
        [
            "listener",
            "clients steered to it",
            "accept queue before close",
            "reset (ECONNRESET)",
            "served by the kept listener",
            "no answer or EOF",
            "tcp_migrate_req",
        ],
    )
    mig: Cell = migrate if migrate is not None else NA("net.ipv4.tcp_migrate_req absent (< 5.14)")
    if na is not None:
        t.add("-", clients, na, na, na, na, mig)
    for r in rows:
        t.add(r.listener, r.steered, r.queued, r.reset, r.served, r.no_answer, mig)


def _findings(
    report: Report,
    outcomes: list[Outcome],
    v6: list[V6Row],
    timers: list[TimerRow],
    tw: TwReuse,
    group: list[GroupRow],
    migrate: int | None,
    fin_timeout: int | None,
    waited: WaitResult | None,
    sysctls: dict[str, Cell],
) -> None:
    f = report.findings

    def pick(**kw: Any) -> Outcome | None:
        for o in outcomes:
            if all(getattr(o.sc, k) == v for k, v in kw.items()):
                return o
        return None

    base = dict(closes_first="server", listener_open=False, reuseport=False, abortive=False)
    combos = [
        ("neither socket", pick(**base, old_reuseaddr=False, new_reuseaddr=False)),
        ("only the new socket", pick(**base, old_reuseaddr=False, new_reuseaddr=True)),
        ("only the old listener", pick(**base, old_reuseaddr=True, new_reuseaddr=False)),
        ("both", pick(**base, old_reuseaddr=True, new_reuseaddr=True)),
    ]
    found = [(label, o) for label, o in combos if o is not None]
    headline = ""
    if found:
        tw_counts = sorted({o.tw_on_port for _, o in found if isinstance(o.tw_on_port, int)})
        lefts = [o.tw_left_s for _, o in found if isinstance(o.tw_left_s, float)]
        tw_text = (
            f" ({'/'.join(map(str, tw_counts))} TIME_WAIT socket(s) on the port"
            + (_span(lefts, " s left") if lefts else "")
            + ")"
            if tw_counts
            else ""
        )
        f.append(
            "Server closed first"
            + tw_text
            + ": the rebind gave "
            + "; ".join(f"{o.bind} with SO_REUSEADDR on {label}" for label, o in found)
            + "."
        )
        ok_with = [label for label, o in found if o.bind == "ok"]
        fail_with = [label for label, o in found if o.bind != "ok"]
        headline = (
            f"after a server-first close the rebind failed with SO_REUSEADDR on "
            f"{', '.join(fail_with) or 'no combination'} and worked with it on "
            f"{', '.join(ok_with) or 'no combination'}"
        )
    client_rows = [
        o
        for o in outcomes
        if o.sc.closes_first == "client" and not o.sc.listener_open and not o.sc.reuseport
    ]
    if client_rows:
        res = sorted({str(o.bind) for o in client_rows})
        on_client = sorted({str(o.tw_on_client_port) for o in client_rows})
        on_port = sorted({str(o.tw_on_port) for o in client_rows})
        f.append(
            f"Client closed first: TIME_WAIT on the client's port {'/'.join(on_client)}, on "
            f"the server's port {'/'.join(on_port)}; the rebind gave {'/'.join(res)} in all "
            f"{len(client_rows)} SO_REUSEADDR combinations."
        )
    open_rows = [o for o in outcomes if o.sc.listener_open and not o.sc.reuseport]
    if open_rows:
        res = sorted({str(o.bind) for o in open_rows})
        rp = pick(listener_open=True, reuseport=True)
        rp_text = f"; with SO_REUSEPORT on both it gave {rp.bind}" if rp is not None else ""
        f.append(
            f"With the old listener still open the bind gave {'/'.join(res)} in all "
            f"{len(open_rows)} SO_REUSEADDR combinations{rp_text}."
        )
    rp_closed = pick(listener_open=False, reuseport=True)
    if rp_closed is not None:
        f.append(
            f"SO_REUSEPORT on both, listener closed after a server-first close: "
            f"{rp_closed.tw_on_port} TIME_WAIT on the port, bind {rp_closed.bind}."
        )
    ab = pick(abortive=True)
    if ab is not None:
        f.append(
            f"Abortive close (SO_LINGER {{1, 0}}) by the server: {ab.tw_on_port} TIME_WAIT "
            f"on the port and {ab.tw_on_client_port} on the client's; bind without any "
            f"option gave {ab.bind}."
        )
    by_setting = {r.setting: r for r in v6 if not isinstance(r.bind, NA)}
    if by_setting:
        parts = []
        for s in (None, 0, 1):
            r = by_setting.get(s)
            if r is None:
                continue
            label = (
                f"IPV6_V6ONLY left at its default ({r.effective})"
                if s is None
                else f"IPV6_V6ONLY {s}"
            )
            parts.append(f"{r.bind} with {label}")
        what = "listening" if v6[0].listening else "bound"
        f.append(f"A [::] socket ({what}), then bind 0.0.0.0 to its port: {'; '.join(parts)}.")
    tw_row = next((r for r in timers if r.state == "TIME_WAIT"), None)
    fw_row = next((r for r in timers if r.state == "FIN_WAIT2"), None)
    if tw_row is not None and isinstance(tw_row.proc_left, float):
        fw_text = (
            f"; the orphaned FIN_WAIT2 timer read {fw_row.proc_left:.2f} s"
            if fw_row is not None and isinstance(fw_row.proc_left, float)
            else ""
        )
        verdict = ""
        if fin_timeout is not None and fw_row is not None and isinstance(fw_row.proc_left, float):
            fw_follows = abs(fw_row.proc_left - fin_timeout) <= 1.5
            tw_follows = abs(tw_row.proc_left - fin_timeout) <= 1.5
            if fw_follows and not tw_follows:
                verdict = ": the FIN_WAIT2 timer followed tcp_fin_timeout, TIME_WAIT did not"
            elif fw_follows and tw_follows:
                verdict = (
                    ": tcp_fin_timeout equals the TIME_WAIT length here, so this run cannot "
                    "tell which timer follows it (see the notes)"
                )
        diag_text = f"{tw_row.diag_left:.2f} s" if isinstance(tw_row.diag_left, float) else "n/a"
        f.append(
            f"TIME_WAIT timer just after entering the state: {tw_row.proc_left:.2f} s "
            f"(/proc; sock_diag {diag_text}), with net.ipv4.tcp_fin_timeout = "
            f"{fin_timeout}{fw_text}{verdict}."
        )
    if tw.attempts:
        parts = [
            f"{a.result} {a.label} ({a.after_s:.2f} s)"
            if isinstance(a.after_s, float)
            else f"{a.result} {a.label}"
            for a in tw.attempts
        ]
        rv = sysctls.get("net.ipv4.tcp_tw_reuse")
        blocked = [
            o
            for o in outcomes
            if o.bind == "EADDRINUSE"
            and not o.sc.listener_open
            and isinstance(o.tw_on_port, int)
            and o.tw_on_port > 0
        ]
        bind_text = (
            f" It did not help bind(): {len(blocked)} rebinds over a TIME_WAIT in the "
            "matrix still gave EADDRINUSE with it set."
            if blocked and rv not in (0, None)
            else ""
        )
        f.append(
            f"tcp_tw_reuse = {rv}: a connect() whose only allowed port was held by a "
            f"TIME_WAIT to the same server gave {', then '.join(parts)}.{bind_text}"
        )
    recycle = sysctls.get("net.ipv4.tcp_tw_recycle")
    f.append(
        "net.ipv4.tcp_tw_recycle does not exist on this kernel (removed in Linux 4.12)."
        if isinstance(recycle, NA)
        else f"net.ipv4.tcp_tw_recycle exists here and is {recycle} (pre-4.12 kernel)."
    )
    if group:
        closed = next(r for r in group if r.listener == "closed")
        kept = next(r for r in group if r.listener == "kept")
        total = closed.steered + kept.steered
        f.append(
            f"SO_REUSEPORT restart with net.ipv4.tcp_migrate_req = {migrate}: closing one "
            f"listener with {closed.queued} clients in its accept queue reset {closed.reset} "
            f"of them; the kept listener served {closed.served + kept.served} of {total} "
            f"clients ({kept.served} of its own {kept.queued}, {closed.served} from the "
            "closed one)."
        )
        headline += (
            f"; closing one of two SO_REUSEPORT listeners reset {closed.reset} of "
            f"{closed.steered} queued clients"
        )
    if waited is not None:
        f.append(
            f"--wait: row {waited.row}'s TIME_WAIT ({waited.tw_left_at_start:.1f} s left) "
            f"was gone after {waited.waited_s:.1f} s; a bind without any option then gave "
            f"{waited.bind}."
        )
    report.summary = (headline[:1].upper() + headline[1:]) if headline else (f[0] if f else "")


def _notes(report: Report, params: Params) -> None:
    report.notes.extend(
        [
            "Linux bind rule (socket(7) SO_REUSEADDR; inet_bind_conflict() in the kernel): "
            "on the same or an overlapping address (a wildcard overlaps every address), a "
            "socket may share a port with non-listening sockets (TIME_WAIT included) only if "
            "both it and each of them set SO_REUSEADDR; a TIME_WAIT socket carries the flag "
            "of the socket it came from, and an accepted socket inherits it from its "
            "listener. A listening socket blocks the port whatever SO_REUSEADDR says; only "
            "SO_REUSEPORT on both (next note) shares it.",
            "SO_REUSEPORT (socket(7), Linux 3.9+) lets sockets of the same effective user "
            "share a port, listeners included, when every one of them set it before bind(); "
            "the kernel spreads new connections over the listeners. A TIME_WAIT socket that "
            "kept SO_REUSEPORT never blocks a new SO_REUSEPORT bind, whoever owned it.",
            "TIME_WAIT belongs to whichever side closed first. It lasts TCP_TIMEWAIT_LEN "
            "(60 s, fixed at compile time); net.ipv4.tcp_fin_timeout (tcp(7)) is the lifetime "
            "of an orphaned FIN_WAIT2 socket whose peer never closes, not of TIME_WAIT. "
            "SO_LINGER {1, 0} closes with RST and skips TIME_WAIT, but discards unsent data "
            "and the peer sees ECONNRESET. The two timers are told apart only when "
            "tcp_fin_timeout is not 60: in a network namespace with tcp_fin_timeout = 5 "
            "(docs/reuseaddr.md, tests/test_reuseaddr.py) FIN_WAIT2 lasted 5 s and TIME_WAIT "
            "still 60 s.",
            "net.ipv4.tcp_tw_reuse (the kernel's ip-sysctl documentation: 0 off, 1 on, 2 "
            "loopback only, the default) lets connect() reuse a TIME_WAIT 4-tuple when "
            "choosing its local port, once the TIME_WAIT is older than "
            "net.ipv4.tcp_tw_reuse_delay and only if TCP timestamps were in use on it "
            "(net.ipv4.tcp_timestamps); it never affects bind(). "
            "tcp_tw_recycle was removed in Linux 4.12 (it broke clients behind NAT).",
            "The tcp_tw_reuse rows pin the connecting socket's ephemeral range to one port "
            "with IP_LOCAL_PORT_RANGE (Linux 6.3+), so the kernel's own port selection, the "
            "only path that consults tcp_tw_reuse, has to face the TIME_WAIT.",
            "SO_REUSEPORT restart: the two listeners' accept queues are separate. Closing one "
            "resets the connections still queued on it unless net.ipv4.tcp_migrate_req = 1 "
            "(Linux 5.14+), which moves them to another listener of the group. The probe "
            "steers clients with a classic BPF program (SO_ATTACH_REUSEPORT_CBPF) reading one "
            "DSCP bit of the SYN (set with IP_TOS / IPV6_TCLASS), so the split is fixed.",
            "IPV6_V6ONLY (ipv6(7)): a [::] socket with V6ONLY 0 also accepts IPv4 "
            "(v4-mapped) and owns the port on every IPv4 address; net.ipv6.bindv6only is the "
            "default for new sockets. /proc/net/tcp6 cannot tell the two apart; sock_diag "
            "can (INET_DIAG_SKV6ONLY)."
            + (
                ""
                if params.wildcard_listen
                else " Here the [::] socket is only bound, not listening, to keep the probe "
                "off the network; the bind conflict is the same (--wildcard-listen to listen)."
            ),
            "Cross-check the TIME_WAIT rows with `ss -tan state time-wait` or "
            "`grep ' 06 ' /proc/net/tcp` using the ports under Endpoints; the TIME_WAIT sockets "
            "belong to the kernel, not to this process, and outlive the probe.",
            "Other systems (not measured here): on BSD and macOS the option that matters is the "
            "one on the socket being bound, SO_REUSEADDR also lets a specific address bind "
            "beside a wildcard listener on the same port, SO_REUSEPORT allows duplicate "
            "bindings without spreading connections (FreeBSD adds SO_REUSEPORT_LB for that), "
            "and TIME_WAIT is twice the MSL (macOS: net.inet.tcp.msl). Windows differs more: "
            "SO_REUSEADDR lets a socket take over a port another socket is actively using, "
            "SO_EXCLUSIVEADDRUSE is the option that forbids that, there is no SO_REUSEPORT, "
            "and the TIME_WAIT length is the TcpTimedWaitDelay setting.",
        ]
    )
