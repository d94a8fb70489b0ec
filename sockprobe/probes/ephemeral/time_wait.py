"""TIME_WAIT left by the client keeps its ports busy; what takes them back.

The side that closes first keeps its end in TIME_WAIT for 60 s (TCP_TIMEWAIT_LEN), and a
TIME_WAIT still owns its 4-tuple. With every port of the range in TIME_WAIT toward one
server, connect() to that server finds no unique 4-tuple, unless net.ipv4.tcp_tw_reuse
lets __inet_check_established() take a TIME_WAIT over (tcp_twsk_unique(): 1 allows it
everywhere, 2 on loopback only, 0 never; the TIME_WAIT must be older than
tcp_tw_reuse_delay, 1000 ms by default, Linux 6.14+, and must carry TCP timestamps).
Toward another server the same ports are free at once. An explicit bind() to the
TIME_WAIT's port with SO_REUSEADDR, then connect(), takes it over at once: bind() lets
SO_REUSEADDR share a port whose only other holder is a TIME_WAIT, and connect() with a
bound port goes through the same unique-4-tuple check, where a timestamped TIME_WAIT
that the new connection can tell apart is recycled (tcp_twsk_unique() with the port
already bound by the user does not consult the delay).

This is the one experiment that leaves TIME_WAIT behind on purpose: the probe does not
wait 60 s for it, and its block is never handed to a second experiment of the run.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field

from sockprobe import kernel
from sockprobe.kernel import sockdiag
from sockprobe.lab import Lab
from sockprobe.probes.ephemeral._range import Ports, abort_all, client, connect, out_of_descriptors
from sockprobe.report import NA, VOLATILE, Report, col
from sockprobe.status import oserror_name

TIME_WAIT = 6
#: How long the FINs and ACKs of an orderly close may take to settle on loopback.
SETTLE_S = 1.0


@dataclass(frozen=True)
class Attempt:
    id: str
    label: str
    after_ms: float
    result: str
    took_time_wait: bool


@dataclass
class Run:
    block: tuple[int, int] | None = None
    listener: socket.socket | None = None
    tw_ports: set[int] = field(default_factory=set)
    #: How many ports of the block were in TIME_WAIT before the attempts.
    filled: int = 0
    since: float = 0.0
    attempts: list[Attempt] = field(default_factory=list)
    #: Connections kept open until `finish`: one that took a TIME_WAIT over must keep its
    #: port, or the later connect() would find that port free and prove nothing.
    held: list[socket.socket] = field(default_factory=list)
    na: NA | None = None


def _time_waits(lab: Lab, block: tuple[int, int], want: int) -> set[int]:
    """Ports of the block that are in TIME_WAIT now (polled until `want` are)."""
    end = time.monotonic() + lab.deadline.timeout(SETTLE_S, "waiting for TIME_WAIT")
    while True:
        found = {
            d.local[1]
            for p in range(block[0], block[1] + 1)
            for d in sockdiag.dump(lab.host.family, states=1 << TIME_WAIT, port=p, meminfo=False)
        }
        if len(found) >= want or time.monotonic() >= end:
            return found
        time.sleep(0.005)


def _try(
    lab: Lab,
    r: Run,
    id: str,
    label: str,
    dest: socket.socket,
    port: int = 0,
    reuseaddr: bool = True,
) -> None:
    assert r.block is not None
    live: list[socket.socket] = []
    if port:
        s = lab.open_socket()
        if reuseaddr:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(lab.host.sockaddr(port))
        except OSError as exc:
            lab.close(s)
            result = f"bind {oserror_name(exc)}"
            r.attempts.append(Attempt(id, label, _ms(r), result, False))
            return
    else:
        s = client(lab, r.block)
    result = connect(lab, s, dest)
    took = False
    if result == "ok":
        got = int(s.getsockname()[1])
        took = got in r.tw_ports and dest is r.listener
        live.append(s)
        if dest is r.listener:
            # The accepted end is never read: reset it with the client.
            dest.settimeout(lab.deadline.timeout(5.0, "accepting"))
            srv, _ = dest.accept()
            live.append(lab.adopt(srv))
        if took:
            # The TIME_WAIT is gone and this connection owns its 4-tuple: keep it, so
            # that every port of the block stays busy toward this server.
            r.tw_ports.discard(got)
            r.held.extend(live)
            live.clear()
    abort_all(lab, live)
    r.attempts.append(Attempt(id, label, _ms(r), result, took))


def _ms(r: Run) -> float:
    return round((time.monotonic() - r.since) * 1000, 1)


def start(lab: Lab, ports: Ports, n: int, listener: socket.socket, other: socket.socket) -> Run:
    """Fill the block with connections, close them client first, try at once."""
    r = Run(listener=listener)
    block = ports.block(n)
    if isinstance(block, NA):
        r.na = block
        return r
    r.block = block
    clients: list[socket.socket] = []
    servers: list[socket.socket] = []
    try:
        for _ in range(n):
            s = client(lab, block)
            # The TIME_WAIT keeps its socket's SO_REUSEADDR, and bind() lets a port be
            # shared with a TIME_WAIT only when both set it (inet_csk_bind_conflict()).
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            res = connect(lab, s, listener)
            if res != "ok":
                r.na = NA(f"filling the range failed: connect() {res}")
                abort_all(lab, clients)
                return r
            clients.append(s)
            listener.settimeout(lab.deadline.timeout(5.0, "accepting"))
            srv, _ = listener.accept()
            servers.append(lab.adopt(srv))
        for c in clients:  # the client closes first: TIME_WAIT lands on its port
            lab.close(c)
        for s in servers:
            s.settimeout(lab.deadline.timeout(SETTLE_S, "reading EOF"))
            s.recv(1)
            lab.close(s)
        r.tw_ports = _time_waits(lab, block, n)
    except OSError as exc:
        out_of_descriptors(lab, exc)
        r.na = NA(f"could not leave TIME_WAIT in the range: {exc}")
        return r
    r.since = time.monotonic()
    r.filled = len(r.tw_ports)
    if len(r.tw_ports) < n:
        r.na = NA(f"only {len(r.tw_ports)} of {n} ports reached TIME_WAIT")
        return r
    _try(lab, r, "connect_same_now", "connect() to the same server at once", listener)
    _try(lab, r, "connect_other_now", "connect() to another server at once", other)
    _try(
        lab,
        r,
        "bind_plain_now",
        "bind(TIME_WAIT port) without SO_REUSEADDR + connect() at once",
        listener,
        port=min(r.tw_ports),
        reuseaddr=False,
    )
    _try(
        lab,
        r,
        "bind_reuseaddr_now",
        "bind(TIME_WAIT port, SO_REUSEADDR) + connect() to the same server at once",
        listener,
        port=min(r.tw_ports),
    )
    return r


def delay_ms() -> int:
    """net.ipv4.tcp_tw_reuse_delay, or 1000 ms where it is absent (before Linux 6.14 the
    TIME_WAIT's timestamp had to be at least one second old)."""
    v = kernel.sysctl_int("net.ipv4.tcp_tw_reuse_delay")
    return 1000 if v is None else v


def finish(lab: Lab, r: Run) -> None:
    """Once the TIME_WAITs are older than tcp_tw_reuse_delay, connect() again."""
    if r.na is not None or r.listener is None:
        return
    due = r.since + delay_ms() / 1000 + 0.02
    pause = due - time.monotonic()
    if pause > 0:
        time.sleep(min(pause, lab.deadline.timeout(None, "waiting for tcp_tw_reuse_delay")))
    _try(
        lab,
        r,
        "connect_same_after_delay",
        "connect() to the same server after tcp_tw_reuse_delay",
        r.listener,
    )
    abort_all(lab, r.held)


def expected(reuse: int | None, timestamps: int | None, loopback: bool) -> str:
    """What tcp_twsk_unique() lets connect() do with an old enough TIME_WAIT here."""
    if reuse is None:
        return "unknown"
    allowed = reuse == 1 or (reuse == 2 and loopback)
    return "ok" if allowed and timestamps != 0 else "EADDRNOTAVAIL"


def report_on(report: Report, r: Run, loopback: bool) -> None:
    reuse = kernel.sysctl_int("net.ipv4.tcp_tw_reuse")
    ts = kernel.sysctl_int("net.ipv4.tcp_timestamps")
    t = report.table(
        "time_wait",
        "Every port of the range in TIME_WAIT toward one server (clients closed first, "
        "SO_REUSEADDR set): what connects",
        [
            col("attempt"),
            col("how"),
            col("after_ms", "after", "ms", VOLATILE),
            col("result"),
            col("took_time_wait", "took a TIME_WAIT over"),
        ],
        keys=["attempt"],
    )
    if r.na is not None:
        for id in ("connect_same_now", "connect_other_now", "bind_plain_now", "bind_reuseaddr_now"):
            t.add(id, NA(r.na.reason), r.na, r.na, r.na)
        return
    for a in r.attempts:
        t.add(a.id, a.label, a.after_ms, a.result, a.took_time_wait)
    by = {a.id: a for a in r.attempts}
    n = r.filled
    f = report.findings
    same, other = by.get("connect_same_now"), by.get("connect_other_now")
    if same is not None and other is not None:
        f.append(
            f"With all {n} ports of the range in TIME_WAIT toward one server, connect() to it "
            f"at once gave {same.result}; to another server it gave {other.result}: TIME_WAIT "
            "holds a 4-tuple, not a port."
        )
    bind, plain = by.get("bind_reuseaddr_now"), by.get("bind_plain_now")
    if bind is not None and plain is not None:
        f.append(
            f"An explicit bind() to a TIME_WAIT's port gave {plain.result} without "
            f"SO_REUSEADDR; with it (the old client had set it too), bind() + connect() to "
            f"the same server gave {bind.result} at once"
            + (
                ", taking that TIME_WAIT over whatever tcp_tw_reuse says."
                if bind.took_time_wait
                else "."
            )
        )
    late = by.get("connect_same_after_delay")
    if late is not None:
        want = expected(reuse, ts, loopback)
        scope = {0: "never", 1: "everywhere", 2: "loopback only"}.get(reuse or 0, "?")
        rule = (
            f"tcp_tw_reuse {reuse} ({scope}), tcp_tw_reuse_delay {delay_ms()} ms, "
            f"tcp_timestamps {ts}"
        )
        verdict = "as the rule predicts" if late.result == want else f"the rule predicts {want}"
        f.append(
            f"After {late.after_ms:g} ms, connect() to the same server gave {late.result}"
            + (" by taking a TIME_WAIT over" if late.took_time_wait else "")
            + f" with {rule} on {'loopback' if loopback else 'a non-loopback address'}"
            f" ({verdict})."
        )
    left = len(r.tw_ports)
    f.append(
        f"This experiment left {left} TIME_WAIT socket{'s' if left != 1 else ''} behind on "
        "purpose; they expire 60 s after the close (TCP_TIMEWAIT_LEN)."
    )
