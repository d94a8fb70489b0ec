"""sockprobe close: what each side of a TCP connection observes when the other one closes.

Every scenario runs on a fresh loopback connection (client = the side that connected,
server = the accepted side), because what the peer sees depends on everything that
happened before: a reset is reported once, a FIN already received turns a later reset
into end-of-file, the first send after the peer's close succeeds.

1. The server close()s; the client reads: end-of-file (b''), again and again.
2. The server close()s; the client sends twice: the first send is accepted (the kernel
   cannot know yet), the fully closed peer answers it with RST, the second send fails.
3. The server close()s with data it never read: the kernel sends RST instead of FIN
   (RFC 2525 section 2.17, tcp(7)); what the client reads before and after the reset.
4. SO_LINGER {1, 0}, then close(): an abortive close (socket(7)), RST and no TIME_WAIT.
5. shutdown(SHUT_WR) on the client: a half-close; the server reads EOF and can still reply.
6. SIGPIPE: the disposition CPython leaves in this process, and a child process that
   restores the default to show what C programs get on the same second send.

The TCP state after each step comes from TCP_INFO, so "the peer answered with RST" is
read from the socket (state CLOSE), not assumed; TIME_WAIT entries, which belong to no
fd, are counted with sock_diag (what `ss` uses) once both sides have closed.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sockprobe import kernel
from sockprobe.kernel import sockstate
from sockprobe.lab import Deadline, Lab
from sockprobe.probes import ProbeParams, Stopwatch
from sockprobe.probes._outcome import Attempt, attempt, result_errno, result_text
from sockprobe.report import NA, Cell, Report, environment, legacy_table, params_dict

RECV_SIZE = 1024
REQUEST = b"request"
REPLY = b"reply"
SETTLE_S = 1.0
#: States in which a closing connection still has a step to go before TIME_WAIT or gone.
CLOSING_STATES = ("FIN_WAIT1", "FIN_WAIT2", "CLOSING", "LAST_ACK", "CLOSE_WAIT")
NO_TCP_INFO = "TCP_INFO is not available on this platform"
NO_SOCK_DIAG = "sock_diag is not available here (Linux netlink)"
SYSCTLS = ("net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_max_tw_buckets")

#: The child for the SIGPIPE scenario: restore SIG_DFL, reproduce scenario 2, report.
#: It bounds itself (timeouts on every blocking call) and is killed after a deadline.
CHILD = r"""
import signal, socket, sys, time
signal.signal(signal.SIGPIPE, signal.SIG_DFL)
host = sys.argv[1]
fam = socket.AF_INET6 if ":" in host else socket.AF_INET
lst = socket.socket(fam)
lst.bind((host, 0))
lst.listen(1)
c = socket.socket(fam)
c.settimeout(5)
c.connect(lst.getsockname())
s, _ = lst.accept()
s.close()
lst.close()
time.sleep(0.02)
c.send(b"a")
end = time.monotonic() + 2
while time.monotonic() < end:
    if c.getsockopt(socket.IPPROTO_TCP, getattr(socket, "TCP_INFO", 11), 1)[0] == 7:
        break
    time.sleep(0.001)
try:
    c.send(b"b")
except OSError as exc:
    print("raised", type(exc).__name__)
else:
    print("returned")
"""


@dataclass(frozen=True)
class Params(ProbeParams):
    """Only the shared options: the scenarios are fixed."""


@dataclass
class Step:
    scenario: str
    side: str
    call: str
    result: str
    errno: str | None
    state: Cell


@dataclass
class Closer:
    scenario: str
    closer: str
    how: str
    unread: Cell
    peer_state: Cell
    closer_tw: Cell
    peer_tw: Cell


@dataclass
class Run:
    steps: list[Step]
    closers: list[Closer]
    sigpipe_here: str
    child: str | None


class Scenario:
    """Records the steps of one scenario on one fresh connection."""

    def __init__(self, lab: Lab, title: str, out: list[Step]) -> None:
        self.lab = lab
        self.title = title
        self.out = out
        self.client, self.server = lab.tcp_pair(name=title)
        self.client_addr = self._addr(self.client)
        self.server_addr = self._addr(self.server)
        for s in (self.client, self.server):
            s.settimeout(lab.deadline.timeout(2.0, f"setting up scenario {title!r}"))
        #: Bytes left unread in the receive queue of the side that closed (SIOCINQ, read
        #: just before its close() or shutdown()).
        self.unread: Cell = None

    @staticmethod
    def _addr(s: socket.socket) -> tuple[str, int]:
        host, port = s.getsockname()[:2]
        return str(host), int(port)

    def sock(self, side: str) -> socket.socket:
        return self.client if side == "client" else self.server

    def do(
        self,
        side: str,
        call: str,
        fn: Callable[[], Any],
        settle: tuple[str, ...] | None = None,
    ) -> Attempt:
        """Make one call; then, if `settle` is given, wait until this side's socket
        reaches one of those states (a FIN or RST on its way) before reading its state."""
        s = self.sock(side)
        s.settimeout(self.lab.deadline.timeout(2.0, f"running {call} in {self.title!r}"))
        a = attempt(fn)
        if settle is not None:
            wait(s, settle, self.lab.deadline, f"waiting after {call} in {self.title!r}")
        self.out.append(Step(self.title, side, call, result_text(a), result_errno(a), state_of(s)))
        return a

    def record_unread(self, side: str) -> Cell:
        """SIOCINQ of `side` now: what its close() would leave unread."""
        q = kernel.inq(self.sock(side))
        self.unread = NA("SIOCINQ is not available") if q is None else q
        return self.unread

    def close(self, side: str, call: str = "close()") -> None:
        self.record_unread(side)
        self.lab.close(self.sock(side))
        self.out.append(Step(self.title, side, call, "returned None", None, "(fd closed)"))

    def settle(self, side: str, states: tuple[str, ...]) -> Cell:
        wait(self.sock(side), states, self.lab.deadline, f"waiting on the {side} in {self.title!r}")
        return state_of(self.sock(side))

    def finish(self) -> tuple[Cell, Cell]:
        """Close whatever is still open, let the connection wind down, and count the
        TIME_WAIT entries left on each side: (server side, client side)."""
        for s in (self.client, self.server):
            if s.fileno() != -1:
                self.lab.close(s)
        family = self.lab.host.family
        end = time.monotonic() + self.lab.deadline.timeout(
            1.0, f"winding down the connection of {self.title!r}"
        )
        while True:
            try:
                srv = sockstate.lookup_state(family, self.server_addr, self.client_addr)
                cli = sockstate.lookup_state(family, self.client_addr, self.server_addr)
            except OSError:
                na = NA(NO_SOCK_DIAG)
                return na, na
            if not {srv, cli} & set(CLOSING_STATES) or time.monotonic() >= end:
                break
            time.sleep(0.001)
        return int(srv == "TIME_WAIT"), int(cli == "TIME_WAIT")


def state_of(s: socket.socket) -> Cell:
    st = sockstate.tcp_state(s)
    return NA(NO_TCP_INFO) if st is None else st


def wait(s: socket.socket, states: tuple[str, ...], deadline: Deadline, doing: str) -> None:
    """Wait for a FIN or RST to arrive (TCP_INFO state); without TCP_INFO, a short pause."""
    cap = deadline.timeout(SETTLE_S, doing)
    state = sockstate.wait_for_state(s, states, cap)
    if state is None:
        time.sleep(min(0.05, deadline.remaining()))
    elif state not in states:
        deadline.check(doing)  # cut short by --deadline: say so, not "unexpected state"
        raise RuntimeError(f"{doing}: expected {'/'.join(states)} within {cap:.1f} s, saw {state}")


def _recv(s: socket.socket) -> Callable[[], bytes]:
    return lambda: s.recv(RECV_SIZE)


def _send(s: socket.socket, data: bytes) -> Callable[[], int]:
    return lambda: s.send(data)


def _shutdown_wr(s: socket.socket) -> Callable[[], None]:
    return lambda: s.shutdown(socket.SHUT_WR)


def _wait_inq(s: socket.socket, n: int, deadline: Deadline) -> int | None:
    """Wait until `n` bytes sit unread in the receive queue (SIOCINQ); return the count."""
    end = time.monotonic() + deadline.timeout(SETTLE_S, "waiting for sent data to arrive")
    while True:
        q = kernel.inq(s)
        if q is None or q >= n or time.monotonic() >= end:
            return q
        time.sleep(0.0005)


def _peer_saw(state: Cell) -> Cell:
    if isinstance(state, NA):
        return state
    return {"CLOSE_WAIT": "FIN (peer in CLOSE_WAIT)", "CLOSE": "RST (peer in CLOSE)"}.get(
        str(state), state
    )


def _scenarios(lab: Lab) -> tuple[list[Step], list[Closer]]:
    steps: list[Step] = []
    closers: list[Closer] = []

    # 1. Plain close: FIN; the reader gets end-of-file, every time it asks.
    sc = Scenario(lab, "1. peer close(), then recv", steps)
    sc.close("server")
    peer = sc.settle("client", ("CLOSE_WAIT",))
    for n in (1, 2, 3):
        sc.do("client", f"recv({RECV_SIZE}) #{n}", _recv(sc.client))
    srv_tw, cli_tw = sc.finish()
    closers.append(
        Closer(sc.title, "server", "close()", sc.unread, _peer_saw(peer), srv_tw, cli_tw)
    )

    # 2. Send after the peer's close: accepted once, answered with RST, then EPIPE.
    sc = Scenario(lab, "2. peer close(), then send twice", steps)
    sc.close("server")
    peer = sc.settle("client", ("CLOSE_WAIT",))
    sc.do("client", f"send({len(REQUEST)} B) #1", _send(sc.client, REQUEST), settle=("CLOSE",))
    sc.do("client", f"send({len(REQUEST)} B) #2", _send(sc.client, REQUEST))
    sc.do("client", f"recv({RECV_SIZE})", _recv(sc.client))
    srv_tw, cli_tw = sc.finish()
    closers.append(
        Closer(sc.title, "server", "close()", sc.unread, _peer_saw(peer), srv_tw, cli_tw)
    )

    # 3. close() with unread data: RST; data that arrived before it is still readable.
    sc = Scenario(lab, "3. peer close() with unread data", steps)
    sc.do("server", f"send({REPLY!r})", _send(sc.server, REPLY))
    sc.do("client", f"send({REQUEST!r}), never read", _send(sc.client, REQUEST))
    _wait_inq(sc.server, len(REQUEST), lab.deadline)
    _wait_inq(sc.client, len(REPLY), lab.deadline)
    sc.close("server", f"close() with {sc.record_unread('server')} B unread")
    peer = sc.settle("client", ("CLOSE",))
    sc.do("client", f"recv({RECV_SIZE}) #1", _recv(sc.client))
    sc.do("client", f"recv({RECV_SIZE}) #2", _recv(sc.client))
    sc.do("client", f"recv({RECV_SIZE}) #3", _recv(sc.client))
    sc.do("client", f"send({len(REQUEST)} B)", _send(sc.client, REQUEST))
    srv_tw, cli_tw = sc.finish()
    closers.append(
        Closer(
            sc.title,
            "server",
            "close() with unread data",
            sc.unread,
            _peer_saw(peer),
            srv_tw,
            cli_tw,
        )
    )

    # 4. Abortive close: SO_LINGER {1, 0}.
    sc = Scenario(lab, "4. peer SO_LINGER {1, 0} + close()", steps)
    sockstate.abortive_linger(sc.server)
    sc.close("server", "SO_LINGER {1, 0}; close()")
    peer = sc.settle("client", ("CLOSE",))
    sc.do("client", f"recv({RECV_SIZE}) #1", _recv(sc.client))
    sc.do("client", f"recv({RECV_SIZE}) #2", _recv(sc.client))
    srv_tw, cli_tw = sc.finish()
    closers.append(
        Closer(
            sc.title,
            "server",
            "SO_LINGER {1, 0}; close()",
            sc.unread,
            _peer_saw(peer),
            srv_tw,
            cli_tw,
        )
    )

    # 5. Half-close: the client stops writing, the server still answers.
    sc = Scenario(lab, "5. shutdown(SHUT_WR) half-close", steps)
    sc.record_unread("client")
    sc.do("client", "shutdown(SHUT_WR)", _shutdown_wr(sc.client), settle=("FIN_WAIT2",))
    peer = sc.settle("server", ("CLOSE_WAIT",))
    sc.do("server", f"recv({RECV_SIZE})", _recv(sc.server))
    sc.do("server", f"send({REPLY!r})", _send(sc.server, REPLY))
    _wait_inq(sc.client, len(REPLY), lab.deadline)
    sc.do("client", f"recv({RECV_SIZE})", _recv(sc.client))
    sc.do("client", f"send({len(REQUEST)} B)", _send(sc.client, REQUEST))
    srv_tw, cli_tw = sc.finish()
    # Here the client closed first, so "closer" and "peer" swap sides.
    closers.append(
        Closer(sc.title, "client", "shutdown(SHUT_WR)", sc.unread, _peer_saw(peer), cli_tw, srv_tw)
    )
    return steps, closers


def _sigpipe_here() -> str:
    sig = getattr(signal, "SIGPIPE", None)
    if sig is None:
        return "no SIGPIPE on this platform"
    handler = signal.getsignal(sig)
    if handler == signal.SIG_IGN:
        return "SIG_IGN"
    if handler == signal.SIG_DFL:
        return "SIG_DFL"
    return "a Python handler"


def _child(lab: Lab) -> str | None:
    """Scenario 2 in a child process with SIGPIPE back at SIG_DFL. Returns how it ended."""
    if getattr(signal, "SIGPIPE", None) is None or not kernel.IS_LINUX:
        return None  # the child waits for the RST through Linux's TCP_INFO
    limit = lab.deadline.timeout(10.0, "running the SIGPIPE child process")
    try:
        # subprocess.run kills and reaps the child when the timeout expires.
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, lab.host.address],
            capture_output=True,
            text=True,
            timeout=limit,
        )
    except subprocess.TimeoutExpired:
        lab.deadline.check("running the SIGPIPE child process")
        return f"did not finish within {limit:.1f} s (killed)"
    if proc.returncode < 0:
        try:
            name = signal.Signals(-proc.returncode).name
        except ValueError:
            name = "?"
        return f"killed by signal {-proc.returncode} ({name})"
    out = proc.stdout.strip() or proc.stderr.strip().splitlines()[-1:] or ["no output"]
    text = out if isinstance(out, str) else out[0]
    return f"exited {proc.returncode}: {text}"


def run(params: Params) -> Report:
    watch = Stopwatch()
    host, deadline = params.resolve()
    report = Report(
        "close", params=params_dict(params), environment=environment(kernel.sysctls(SYSCTLS))
    )
    with Lab(host, deadline) as lab:
        steps, closers = _scenarios(lab)
        here = _sigpipe_here()
        child = _child(lab)
        report.endpoints = lab.endpoints
    result = Run(steps, closers, here, child)
    _tables(report, result)
    _findings(report, result)
    _notes(report)
    report.duration_s = watch()
    return report


def _tables(report: Report, r: Run) -> None:
    t = legacy_table(
        report,
        "What each side observes (client = connecting side, server = accepted side)",
        ["scenario", "side", "call", "result", "errno", "TCP state after"],
    )
    for s in r.steps:
        t.add(s.scenario, s.side, s.call, s.result, s.errno, s.state)
    t.add(
        "6. SIGPIPE",
        "this process",
        "signal.getsignal(SIGPIPE)",
        r.sigpipe_here,
        None,
        None,
    )
    t.add(
        "6. SIGPIPE",
        "child process",
        "scenario 2 with SIGPIPE = SIG_DFL",
        NA("needs SIGPIPE and TCP_INFO (Linux)") if r.child is None else r.child,
        None,
        None,
    )
    c = legacy_table(
        report,
        "The closing side: what it sent and what it left behind",
        [
            "scenario",
            "closer",
            "how",
            "unread at close",
            "peer received",
            "TIME_WAIT (closer)",
            "TIME_WAIT (peer)",
        ],
        ["", "", "", "B", "", "entries", "entries"],
    )
    for cl in r.closers:
        c.add(cl.scenario, cl.closer, cl.how, cl.unread, cl.peer_state, cl.closer_tw, cl.peer_tw)


def _find(r: Run, scenario: str, call: str) -> Step | None:
    for s in r.steps:
        if s.scenario.startswith(scenario) and s.call.startswith(call):
            return s
    return None


def _res(s: Step | None) -> str:
    if s is None:
        return "?"
    return s.result + (f" ({s.errno})" if s.errno else "")


def _findings(report: Report, r: Run) -> None:
    by = {c.scenario[:2]: c for c in r.closers}
    s1 = [s for s in r.steps if s.scenario.startswith("1.") and s.side == "client"]
    if s1:
        report.findings.append(
            f"After the peer's close(), recv {_join([_res(s) for s in s1])} "
            f"({len(s1)} calls, state {s1[-1].state}): end of stream, not an error."
        )
    first = _find(r, "2.", f"send({len(REQUEST)} B) #1")
    second = _find(r, "2.", f"send({len(REQUEST)} B) #2")
    after = _find(r, "2.", "recv")
    if first and second:
        report.findings.append(
            f"The first send after the peer's close() {_res(first)}, and the peer answered "
            f"with RST (the sender's state became {first.state}); the second {_res(second)}; "
            "recv then "
            f"{_res(after)}, because the FIN had arrived before the RST."
        )
    r3 = [s for s in r.steps if s.scenario.startswith("3.") and s.side == "client"][1:]
    c3 = by.get("3.")
    if r3 and c3 is not None:
        report.findings.append(
            f"close() with {c3.unread} unread byte(s) sent {c3.peer_state}: the peer's recv "
            + ", then ".join(_res(s) for s in r3 if s.call.startswith("recv"))
            + "; after that send "
            + _res(r3[-1])
            + ". The reset is reported once; data that arrived before it is read first."
        )
    c1, c4 = by.get("1."), by.get("4.")
    if c4 is not None:
        s4 = _find(r, "4.", "recv")
        plain = f", against {c1.closer_tw} after a plain close()" if c1 is not None else ""
        report.findings.append(
            f"SO_LINGER {{1, 0}}: close() sent {c4.peer_state} and the peer's recv "
            f"{_res(s4)}; TIME_WAIT entries left on the closing side: {c4.closer_tw}{plain}."
        )
    c2 = by.get("2.")
    if c2 is not None:
        report.findings.append(
            f"After the send that drew an RST (scenario 2), TIME_WAIT entries left: "
            f"{c2.closer_tw} on the side that closed first, {c2.peer_tw} on the other."
        )
    eof = _find(r, "5.", "recv")
    reply = [s for s in r.steps if s.scenario.startswith("5.") and s.side == "client"]
    if eof is not None and len(reply) >= 3:
        report.findings.append(
            f"shutdown(SHUT_WR): the peer's recv {_res(eof)} (state {eof.state}), its reply "
            f"{_res(_find(r, '5.', 'send'))} and reached the half-closed side, whose recv "
            f"{_res(reply[1])}; the half-closed side's own send {_res(reply[2])}."
        )
    child = (
        ""
        if r.child is None
        else f"; a child process with SIGPIPE restored to SIG_DFL was {r.child}"
        if r.child.startswith("killed")
        else f"; a child process with SIGPIPE restored to SIG_DFL {r.child}"
    )
    if r.sigpipe_here == "SIG_IGN":
        here = "SIG_IGN (CPython ignores it at start-up), so a write to a reset connection "
        here += "raises BrokenPipeError"
    else:
        here = f"{r.sigpipe_here} (something changed CPython's start-up SIG_IGN)"
    report.findings.append(
        f"SIGPIPE in this Python process: {here}{child}"
        + (" on the same second send." if child else ".")
    )
    report.summary = (
        f"recv after close: {_res(s1[0]) if s1 else '?'}; 2nd send: {_res(second)}; "
        f"close with unread data: {_res(r3[1]) if len(r3) > 1 else '?'}; "
        f"SO_LINGER {{1, 0}} TIME_WAIT: {c4.closer_tw if c4 else '?'}"
    )


def _join(items: list[str]) -> str:
    uniq = sorted(set(items))
    if len(uniq) == 1:
        return f"{uniq[0]} every time"
    return ", then ".join(items)


def _notes(report: Report) -> None:
    report.notes.extend(
        [
            "recv() returning b'' is end-of-file: the peer sent FIN (shutdown(SHUT_WR) or "
            "close()) and every later recv returns b'' too (recv(2): 0 means an orderly "
            "shutdown).",
            "A send after the peer's close() succeeds: the bytes are only queued, and the "
            "kernel learns that nobody will read them when the peer's RST comes back. The "
            "next send fails with EPIPE (send(2)); a recv after that still returns b'' when "
            "a FIN came first.",
            "close() with unread data in the receive queue sends RST instead of FIN (RFC 2525 "
            "2.17, RFC 1122 4.2.2.13) and discards the data; the peer's next recv fails with "
            "ECONNRESET once, after any data that arrived before the reset.",
            "SO_LINGER with l_onoff=1, l_linger=0 (socket(7)) makes close() abort the "
            "connection with RST: no FIN handshake and no TIME_WAIT, at the price of any "
            "unsent data and of the peer seeing an error.",
            "shutdown(SHUT_WR) sends FIN but keeps the socket open for reading: the peer reads "
            "EOF and can still send its reply (shutdown(2)). Writing on the half-closed side "
            "fails with EPIPE.",
            "TIME_WAIT stays on the side that closed first for 60 s on Linux (TCP_TIMEWAIT_LEN; "
            "tcp_fin_timeout does not change it). Counted here with sock_diag, as `ss -tan "
            "state time-wait` would.",
            "CPython sets SIGPIPE to SIG_IGN at start-up, so a write to a reset connection "
            "raises BrokenPipeError; a C program (or a Python child that restores SIG_DFL) is "
            "killed by SIGPIPE unless it ignores the signal or passes MSG_NOSIGNAL (send(2)).",
            "Other systems (not measured here). Windows has no SIGPIPE and reports a reset "
            "as ConnectionResetError (WSAECONNRESET, 10054); the tutorials report that error "
            "for a recv after the peer went away, where Linux returned b'' (scenario 1). "
            "macOS and FreeBSD offer the SO_NOSIGPIPE "
            "socket option, and in their TCP code (4.4BSD's "
            "tcp_disconnect) close() with unread data discards it and sends FIN, not RST as "
            "in scenario 3; a reset then comes only if more data arrives.",
        ]
    )
