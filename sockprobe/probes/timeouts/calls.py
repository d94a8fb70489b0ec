"""Plumbing shared by the timeouts experiments: a call that may block, woken on time.

A call that would wait forever is made in the thread that set its case up (each waiting
case has one), and registered with a `Waker` first. The waker (the probe's main thread)
calls shutdown(SHUT_RDWR) on the socket once `wake_after` has passed, after checking
that the thread really sits in a system call on that socket (/proc/self/task/<tid>/
syscall), so "blocked" never describes a call that had not begun.

shutdown() is the one reliable way to wake a call blocked in another thread on Linux:
it changes the socket's state and wakes every waiter (recv returns b'', accept fails
with EINVAL, send with EPIPE, a connect in SYN_SENT with ECONNRESET). close() only drops
the descriptor-table reference and leaves the call asleep; SIGALRM is delivered to the
main thread only. One waker for every case, instead of a watchdog thread per call, keeps
the probe at one thread per waiting call.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sockprobe.kernel import sockstate
from sockprobe.lab import Deadline
from sockprobe.probes._outcome import Attempt, attempt
from sockprobe.status import DeadlineExceeded


@dataclass
class Ticket:
    sock: socket.socket
    thread_id: int | None
    due: float
    wake_after: float
    doing: str
    done: bool = False
    woken: bool = False
    #: The deadline ran out before `due`: the call was woken early.
    cut: bool = False


@dataclass
class Waker:
    """Wakes registered calls that are still blocked when they fall due."""

    deadline: Deadline
    tickets: list[Ticket] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    changed: threading.Event = field(default_factory=threading.Event)
    #: Set on Ctrl-C or an error: calls not yet started are not started at all.
    stopping: threading.Event = field(default_factory=threading.Event)

    def check(self, doing: str) -> None:
        """Stop a case or fact that had not begun its call when the probe was stopped
        (otherwise it would start a fresh wait after every socket was shut down)."""
        if self.stopping.is_set():
            raise RuntimeError(f"stopped before {doing}")

    def call(
        self, sock: socket.socket, fn: Callable[[], Any], wake_after: float, doing: str
    ) -> Attempt:
        """Make the call in this thread; the waker wakes it after `wake_after` s."""
        self.check(doing)
        wait = self.deadline.timeout(wake_after, doing)
        t = Ticket(sock, threading.get_native_id(), time.monotonic() + wait, wake_after, doing)
        t.cut = wait < wake_after
        with self.lock:
            self.tickets.append(t)
        self.changed.set()
        a = attempt(fn)
        with self.lock:
            t.done = True
            woken = t.woken
        self.changed.set()
        if woken and t.cut:
            raise DeadlineExceeded(f"--deadline {self.deadline.seconds:g} s ran out while {doing}")
        if woken:
            a.woken_after = wake_after
        return a

    def serve(self, busy: Callable[[], bool]) -> None:
        """Wake due calls until `busy()` turns false (every case thread has ended)."""
        while busy() and not self.stopping.is_set():
            now = time.monotonic()
            with self.lock:
                due = [t for t in self.tickets if not t.done and not t.woken and t.due <= now]
                later = [t.due for t in self.tickets if not t.done and not t.woken and t.due > now]
            for t in due:
                self._wake(t)
            self.changed.clear()
            timeout = min([0.05, *[d - time.monotonic() for d in later]])
            self.changed.wait(max(0.0, timeout))

    def _wake(self, t: Ticket) -> None:
        # The thread should be inside the call on this socket by now; give it a moment
        # if it is still starting up (a loaded host), then wake it.
        sockstate.blocked_on_fd(t.thread_id, t.sock.fileno(), 1.0)
        with self.lock:
            if t.done:
                return
            t.woken = True
            try:
                t.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # ENOTCONN on an unconnected socket: the state change still wakes it


def need(deadline: Deadline, seconds: float, doing: str) -> None:
    """Refuse to start a timed wait the deadline cannot cover: a wait cut short would be
    reported as a shorter timeout than the one requested."""
    deadline.check(doing)
    if deadline.remaining() < seconds:
        raise DeadlineExceeded(
            f"--deadline {deadline.seconds:g} s leaves too little time for {doing} "
            f"({seconds:.2f} s needed)"
        )


def wait_writable(sock: socket.socket, timeout: float) -> bool:
    """poll() (or select() where poll is missing) for writability: how a non-blocking
    connect reports that the handshake finished, successfully or not (connect(2))."""
    if hasattr(select, "poll"):
        p = select.poll()
        p.register(sock, select.POLLOUT)
        return bool(p.poll(timeout * 1000))
    _, w, _ = select.select([], [sock], [], timeout)
    return bool(w)
