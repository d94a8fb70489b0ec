"""Plumbing the close scenarios share: a recorder of the calls made on one fresh
connection, the TCP state after each (TCP_INFO), and the wind-down that counts the
TIME_WAIT entries each side is left with (sock_diag exact lookup)."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sockprobe import kernel
from sockprobe.kernel import sockstate
from sockprobe.lab import Deadline, Lab
from sockprobe.probes._outcome import Attempt, attempt, result_errno, result_text
from sockprobe.report import NA, Cell, col

RECV_SIZE = 1024
REQUEST = b"request"
REPLY = b"reply"
SETTLE_S = 1.0
#: States in which a closing connection still has a step to go before TIME_WAIT or gone.
CLOSING_STATES = ("FIN_WAIT1", "FIN_WAIT2", "CLOSING", "LAST_ACK", "CLOSE_WAIT")
NO_TCP_INFO = "TCP_INFO is not available on this platform"
NO_SOCK_DIAG = "sock_diag is not available here (Linux netlink)"


@dataclass
class Step:
    scenario: str
    step: int
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


def addr(s: socket.socket) -> tuple[str, int]:
    host, port = s.getsockname()[:2]
    return str(host), int(port)


class Scenario:
    """Records the steps of one scenario on one fresh connection."""

    def __init__(self, lab: Lab, name: str, out: list[Step]) -> None:
        self.lab = lab
        self.name = name
        self.out = out
        self.client, self.server = lab.tcp_pair(name=name)
        self.client_addr = addr(self.client)
        self.server_addr = addr(self.server)
        for s in (self.client, self.server):
            s.settimeout(lab.deadline.timeout(2.0, f"setting up scenario {name}"))
        #: Bytes left unread in the receive queue of the side that closed (SIOCINQ, read
        #: just before its close() or shutdown()).
        self.unread: Cell = None

    def sock(self, side: str) -> socket.socket:
        return self.client if side == "client" else self.server

    def _add(self, side: str, call: str, result: str, err: str | None, state: Cell) -> None:
        n = sum(1 for s in self.out if s.scenario == self.name) + 1
        self.out.append(Step(self.name, n, side, call, result, err, state))

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
        s.settimeout(self.lab.deadline.timeout(2.0, f"running {call} in {self.name}"))
        a = attempt(fn)
        if settle is not None:
            wait(s, settle, self.lab.deadline, f"waiting after {call} in {self.name}")
        self._add(side, call, result_text(a), result_errno(a), state_of(s))
        return a

    def record_unread(self, side: str) -> Cell:
        """SIOCINQ of `side` now: what its close() would leave unread."""
        q = kernel.inq(self.sock(side))
        self.unread = NA("SIOCINQ is not available") if q is None else q
        return self.unread

    def close(self, side: str, call: str = "close()") -> None:
        self.record_unread(side)
        self.lab.close(self.sock(side))
        self._add(side, call, "returned None", None, "(fd closed)")

    def settle(self, side: str, states: tuple[str, ...]) -> Cell:
        wait(self.sock(side), states, self.lab.deadline, f"waiting on the {side} in {self.name}")
        return state_of(self.sock(side))

    def finish(self, abort: bool = False) -> tuple[Cell, Cell]:
        """Close whatever is still open, let the connection wind down, and count the
        TIME_WAIT entries left on each side: (server side, client side). With `abort`
        the ends still open close with RST (SO_LINGER {1, 0}), leaving no TIME_WAIT where
        it is not what the scenario shows."""
        for s in (self.client, self.server):
            if s.fileno() != -1:
                if abort:
                    sockstate.abortive_linger(s)
                self.lab.close(s)
        return wind_down(self.lab, self.server_addr, self.client_addr, self.name)


def wind_down(
    lab: Lab, server: tuple[str, int], client: tuple[str, int], name: str
) -> tuple[Cell, Cell]:
    family = lab.host.family
    end = time.monotonic() + lab.deadline.timeout(1.0, f"winding down the connection of {name}")
    while True:
        try:
            srv = sockstate.lookup_state(family, server, client)
            cli = sockstate.lookup_state(family, client, server)
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


def recv(s: socket.socket) -> Callable[[], bytes]:
    return lambda: s.recv(RECV_SIZE)


def send(s: socket.socket, data: bytes) -> Callable[[], int]:
    return lambda: s.send(data)


def shutdown(s: socket.socket, how: int) -> Callable[[], None]:
    return lambda: s.shutdown(how)


def wait_inq(s: socket.socket, n: int, deadline: Deadline) -> int | None:
    """Wait until `n` bytes sit unread in the receive queue (SIOCINQ); return the count."""
    end = time.monotonic() + deadline.timeout(SETTLE_S, "waiting for sent data to arrive")
    while True:
        q = kernel.inq(s)
        if q is None or q >= n or time.monotonic() >= end:
            return q
        time.sleep(0.0005)


def peer_saw(state: Cell) -> Cell:
    if isinstance(state, NA):
        return state
    return {"CLOSE_WAIT": "FIN (peer in CLOSE_WAIT)", "CLOSE": "RST (peer in CLOSE)"}.get(
        str(state), state
    )


def fill(s: socket.socket, chunk: int = 65536, limit: int = 8 << 20) -> int:
    """Send until the kernel accepts no more (non-blocking): the bytes it took."""
    s.setblocking(False)
    data = b"x" * chunk
    total = 0
    try:
        while total < limit:
            total += s.send(data)
    except BlockingIOError:
        pass
    return total


def drain(s: socket.socket, deadline: Deadline, doing: str, cap: float = 2.0) -> tuple[int, str]:
    """Read until end of stream or an error: (bytes read, how it ended)."""
    s.settimeout(deadline.timeout(cap, doing))
    total = 0
    while True:
        try:
            got = s.recv(1 << 16)
        except ConnectionResetError:
            return total, "ECONNRESET"
        except TimeoutError:
            deadline.check(doing)
            return total, "timed out"
        if not got:
            return total, "EOF"
        total += len(got)


def steps_table(report: Any, steps: list[Step]) -> None:
    t = report.table(
        "steps",
        "What each side observes (client = connecting side, server = accepted side)",
        [
            col("scenario"),
            col("step", "#"),
            col("side"),
            col("call"),
            col("result"),
            col("errno"),
            col("state_after", "TCP state after"),
        ],
        keys=["scenario", "step"],
    )
    for s in steps:
        t.add(s.scenario, s.step, s.side, s.call, s.result, s.errno, s.state)


def closers_table(report: Any, closers: list[Closer]) -> None:
    c = report.table(
        "closers",
        "The closing side: what it sent and what it left behind",
        [
            col("scenario"),
            col("closer"),
            col("how"),
            col("unread_b", "unread at close", "B"),
            col("peer_received", "peer received"),
            col("tw_closer", "TIME_WAIT (closer)"),
            col("tw_peer", "TIME_WAIT (peer)"),
        ],
        keys=["scenario"],
    )
    for cl in closers:
        c.add(cl.scenario, cl.closer, cl.how, cl.unread, cl.peer_state, cl.closer_tw, cl.peer_tw)


def find(steps: list[Step], scenario: str, call: str) -> Step | None:
    for s in steps:
        if s.scenario == scenario and s.call.startswith(call):
            return s
    return None


def res(s: Step | None) -> str:
    if s is None:
        return "?"
    return s.result + (f" ({s.errno})" if s.errno else "")
