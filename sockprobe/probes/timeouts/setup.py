"""The sockets each operation of the matrix meets, built fresh for every case.

The full accept queue needs no root and no firewall: a listener with listen(0) admits one
connection (Linux lets the accept queue hold backlog + 1) and, once that connection waits
unaccepted, the kernel drops every further SYN before answering it (tcp_conn_request()
in net/ipv4/tcp_input.c): the client hears nothing, as if the port were filtered. The
queue length and limit are read back from the listener's TCP_INFO before the case runs.
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sockprobe import kernel
from sockprobe.kernel import sockstate
from sockprobe.lab import Deadline, Lab

PAYLOAD = b"s" * 1024
RECV_SIZE = 1024
#: Requested SO_SNDBUF/SO_RCVBUF for the full-buffer cases (the kernel doubles them,
#: socket(7)); small buffers fill in a few sends.
SMALL_BUF = 16384
#: How long setup waits for a FIN or RST to arrive on loopback (normally < 1 ms).
SETTLE_S = 1.0


@dataclass
class Prepared:
    sock: socket.socket
    invoke: Callable[[], Any]
    #: Facts about the set-up worth reporting (full-queue length...).
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Case:
    op: str
    call: str
    mode: str

    @property
    def name(self) -> str:
        return f"{self.op}/{self.call}/{self.mode}"


def settle(sock: socket.socket, states: tuple[str, ...], deadline: Deadline, what: str) -> None:
    """Wait until a FIN or RST has arrived (TCP_INFO state), so the call under test sees it.
    Without TCP_INFO, wait for readability (a FIN or RST makes a socket readable)."""
    cap = deadline.timeout(SETTLE_S, f"waiting for {what}")
    state = sockstate.wait_for_state(sock, states, cap)
    if state is None:
        select.select([sock], [], [], cap)
        time.sleep(0.02)
        return
    if state not in states:
        raise RuntimeError(f"{what} did not arrive within {cap:.1f} s (state {state})")


def pair(lab: Lab, name: str, small: bool = False) -> tuple[socket.socket, socket.socket]:
    def sndbuf(s: socket.socket) -> None:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_BUF)

    def rcvbuf(s: socket.socket) -> None:
        # Set on the listener before listen(): accepted sockets inherit it (socket(7)).
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUF)

    return lab.tcp_pair(
        configure_client=sndbuf if small else None,
        configure_listener=rcvbuf if small else None,
        name=name,
    )


def fill(sock: socket.socket, deadline: Deadline) -> int:
    """Send until neither the send buffer nor the peer's receive window has room.

    Non-blocking sends until EAGAIN are not enough on their own: data in flight is still
    waiting for the peer's (delayed, 40 ms or more) ACK, and that ACK frees send buffer
    space, so a "full" buffer would take more bytes a moment later. The connection is
    frozen once TCP_INFO shows nothing in flight (tcpi_unacked 0), bytes still unsent and
    the peer's window closed (tcpi_snd_wnd 0, Linux >= 5.4): nothing moves until the peer
    reads. The state is read *before* a last round of sends, so an ACK that lands between
    the two cannot leave room behind (it would have to arrive before the state read).
    Without TCP_INFO, three quiet rounds 0.1 s apart stand in.
    """
    sock.setblocking(False)
    chunk = b"\0" * 65536
    total, quiet = 0, 0
    end = time.monotonic() + deadline.timeout(3.0, "filling the buffers")
    while time.monotonic() < end:
        info = kernel.tcp_info(sock)
        frozen = (
            info is not None
            and info.unacked == 0
            and (info.notsent_bytes or 0) > 0
            # Unsent bytes with nothing in flight may still be waiting for a pacing or
            # TSQ timer (bbr paces even on loopback): only a closed window freezes them.
            and sockstate.send_window(sock) in (0, None)
        )
        added = 0
        while True:
            try:
                n = sock.send(chunk)
            except BlockingIOError:
                break
            added += n
        total += added
        if info is None:
            quiet = quiet + 1 if added == 0 else 0
            if quiet >= 3:
                return total
            time.sleep(0.1)
            continue
        if frozen and added == 0:
            return total
        time.sleep(0.002)
    deadline.check("filling the buffers")
    raise RuntimeError("the send buffer never stayed full")


def full_queue(lab: Lab, case: Case) -> tuple[socket.socket, dict[str, Any]]:
    """A listener whose accept queue is full, so that the kernel drops the next SYN.

    listen(0), then clients connect (and are never accepted) until the listener's accept
    queue, read back from TCP_INFO, is longer than its limit. On Linux one client does
    it: the queue counts as full when its length exceeds the backlog.
    """
    lst = lab.listener(backlog=0, role=f"{case.name} full-queue listener")
    queue = sockstate.accept_queue(lst)
    fillers = 0
    for _ in range(3):
        if queue is not None and queue[0] > queue[1]:
            break
        f = lab.open_socket()
        f.settimeout(lab.deadline.timeout(1.0 if queue is not None else 0.3, "filling a queue"))
        try:
            f.connect(lst.getsockname())
        except TimeoutError:  # the queue was already full: this SYN was the dropped one
            lab.close(f)
            break
        lab.record(f"{case.name} filler client", f)
        fillers += 1
        end = time.monotonic() + lab.deadline.timeout(0.5, "filling a queue")
        while True:
            queue = sockstate.accept_queue(lst)
            if queue is None or queue[0] >= fillers or time.monotonic() >= end:
                break
            time.sleep(0.0005)
    return lst, {"fillers": fillers, "queue": queue}


def prepare(lab: Lab, case: Case) -> Prepared:
    """Build the sockets for one case, in the state the call under test should meet."""
    op = case.op
    if op in ("connect-refused", "connect-full-queue"):
        info: dict[str, Any] = {}
        if op == "connect-refused":
            # A socket bound but not listening keeps the port ours (nobody else can
            # listen on it meanwhile) and a SYN to it is answered with RST.
            holder = lab.open_socket()
            holder.bind(lab.host.sockaddr(0))
            lab.record(f"{case.name} closed port (bound, not listening)", holder)
            target = holder.getsockname()
        else:
            lst, info = full_queue(lab, case)
            target = lst.getsockname()
        s = lab.open_socket()
        if case.call == "connect_ex":
            return Prepared(s, lambda: s.connect_ex(target), info)
        return Prepared(s, lambda: s.connect(target), info)
    if op == "accept":
        lst = lab.listener(backlog=1, role=f"{case.name} listener")

        def accept() -> tuple[str, str]:
            conn, _addr = lst.accept()
            lab.adopt(conn)  # nobody connects, but if someone did, the Lab closes it
            return ("connection", "")

        return Prepared(lst, accept)
    c, s = pair(lab, case.name, small=(op == "send-full"))
    if op == "send-full":
        fill(c, lab.deadline)
    elif op == "recv-after-fin":
        lab.close(s)  # close() with nothing unread sends FIN
        settle(c, ("CLOSE_WAIT",), lab.deadline, "the peer's FIN")
    elif op == "recv-after-rst":
        sockstate.abortive_linger(s)  # SO_LINGER {1, 0}: close() sends RST, not FIN
        lab.close(s)
        settle(c, ("CLOSE",), lab.deadline, "the peer's RST")
    elif op in ("send-after-close", "send-after-rst"):
        lab.close(s)
        settle(c, ("CLOSE_WAIT",), lab.deadline, "the peer's FIN")
        if op == "send-after-rst":
            c.settimeout(lab.deadline.timeout(1.0, "the first send"))
            c.send(PAYLOAD)  # accepted; the peer, fully closed, answers with RST
            settle(c, ("CLOSE",), lab.deadline, "the peer's RST")
    if op in ("send-full", "send-after-close", "send-after-rst"):
        return Prepared(c, lambda: c.send(PAYLOAD))
    return Prepared(c, lambda: c.recv(RECV_SIZE))


def apply_mode(sock: socket.socket, mode: str, t: float) -> None:
    if mode == "blocking":
        sock.settimeout(None)
    elif mode == "timeout":
        sock.settimeout(t)
    elif mode == "nonblocking":
        sock.setblocking(False)
    else:
        sock.settimeout(None)  # Python: blocking; the kernel enforces the timeouts
        sockstate.set_kernel_timeouts(sock, t, t)
