"""close() vs shutdown() when the descriptor is shared.

close() releases one reference to the open file; the kernel closes the socket (and
sends FIN or RST) only when the last reference goes (sock_close() runs from the final
fput()). A dup()ed fd or a child process that inherited the fd keeps the connection
open, and the peer sees nothing at all. shutdown() acts on the socket itself: from any
copy it sends FIN at once, for every holder.

- dup: close() one of two fds: nothing is sent; shutdown(SHUT_WR) on the other: the
  peer reads b''.
- fork_child: a child process inherits the fd (pass_fds); the parent close()s its copy:
  nothing is sent; the child exits: the last reference goes and the peer reads b''.
"""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass

from sockprobe.kernel import sockstate
from sockprobe.lab import Lab
from sockprobe.probes.close.common import state_of, wait
from sockprobe.report import Cell, Report, col

#: Read one byte from the pipe fd (the parent's go-ahead), then exit, closing the socket.
CHILD = "import os, sys\nos.read(int(sys.argv[1]), 1)\n"


@dataclass
class SharedRow:
    case: str
    first: str
    peer_after_first: str
    peer_state_first: Cell
    second: str
    peer_after_second: str
    peer_state_second: Cell


def _peek(s: socket.socket) -> str:
    """What a non-blocking recv on the peer says right now."""
    s.setblocking(False)
    try:
        got = s.recv(1)
    except BlockingIOError:
        return "EAGAIN (nothing arrived)"
    except ConnectionResetError:
        return "ECONNRESET"
    return "b'' (FIN arrived)" if not got else f"{got!r}"


def _after(peer: socket.socket, lab: Lab, want_fin: bool, doing: str) -> tuple[str, Cell]:
    if want_fin:
        wait(peer, ("CLOSE_WAIT", "CLOSE"), lab.deadline, doing)
    return _peek(peer), state_of(peer)


def dup(lab: Lab) -> SharedRow:
    client, server = lab.tcp_pair(name="shared fd (dup)")
    copy = lab.adopt(client.dup())
    lab.close(client)
    # Nothing was sent: the peer is still ESTABLISHED with nothing to read. Loopback
    # delivers a FIN within microseconds, so a short settle is enough to see none came.
    sockstate.wait_for_state(server, ("CLOSE_WAIT",), lab.deadline.timeout(0.02, "watching"))
    a1, s1 = _after(server, lab, False, "after closing one copy")
    copy.shutdown(socket.SHUT_WR)
    a2, s2 = _after(server, lab, True, "after shutdown on the other copy")
    for s in (copy, server):
        sockstate.abortive_linger(s)
        lab.close(s)
    return SharedRow(
        "dup", "close() one of two fds", a1, s1, "shutdown(SHUT_WR) on the other", a2, s2
    )


def fork_child(lab: Lab) -> SharedRow:
    client, server = lab.tcp_pair(name="shared fd (child)")
    r, w = os.pipe()
    try:
        proc = lab.process(
            [sys.executable, "-I", "-c", CHILD, str(r)], pass_fds=(r, client.fileno())
        )
    finally:
        os.close(r)
    try:
        lab.close(client)
        sockstate.wait_for_state(server, ("CLOSE_WAIT",), lab.deadline.timeout(0.02, "watching"))
        a1, s1 = _after(server, lab, False, "after the parent's close")
        os.write(w, b"x")
    finally:
        os.close(w)
    proc.wait(lab.deadline.timeout(5.0, "waiting for the child to exit"))
    a2, s2 = _after(server, lab, True, "after the child exited")
    sockstate.abortive_linger(server)
    lab.close(server)
    return SharedRow(
        "fork_child",
        "the parent close()s its copy",
        a1,
        s1,
        "the child (holding the other) exits",
        a2,
        s2,
    )


def table(report: Report, rows: list[SharedRow]) -> None:
    t = report.table(
        "shared_fd",
        "One connection, two descriptors: what the peer sees after each step",
        [
            col("case"),
            col("first", "first step"),
            col("peer_after_first", "peer recv"),
            col("peer_state_first", "peer state"),
            col("second", "second step"),
            col("peer_after_second", "peer recv"),
            col("peer_state_second", "peer state"),
        ],
        keys=["case"],
    )
    for r in rows:
        t.add(
            r.case,
            r.first,
            r.peer_after_first,
            r.peer_state_first,
            r.second,
            r.peer_after_second,
            r.peer_state_second,
        )


def findings(report: Report, rows: list[SharedRow]) -> None:
    for r in rows:
        report.findings.append(
            f"Shared descriptor ({r.case}): after '{r.first}' the peer's recv gave "
            f"{r.peer_after_first} (state {r.peer_state_first}); after '{r.second}' it gave "
            f"{r.peer_after_second} (state {r.peer_state_second})."
        )
