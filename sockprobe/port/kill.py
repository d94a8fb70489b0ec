"""`--kill`: signal the processes that block a bind on the port, and say what happened.

Who is signalled: every process holding a listener, a bound TCP socket or a UDP socket
whose *local* port is this one (the sock_diag filter matches the local port, so a client
whose remote port this is, is never picked); never sockprobe itself, its parent (the
shell or script that ran it) or pid 1 (init: killing it panics the kernel, and a
listener it holds is socket activation). A holder managed by systemd, a container
runtime or a forwarder is not signalled, since its manager would start it again; its
stop command is given instead, unless --force.

After the signal it polls sock_diag for up to --grace seconds until the sockets are
gone, then tries the bind again: free, still held (by whom), or TIME_WAIT left (the
connections the holders had accepted, closed by the kernel on exit; --wait waits them
out). It never escalates to SIGKILL by itself: --signal KILL asks for that.
"""

from __future__ import annotations

import os
import signal as signals
import time
from dataclasses import dataclass, field

from sockprobe.kernel import portdiag
from sockprobe.lab import Deadline
from sockprobe.port import sockets, trial
from sockprobe.port.diagnosis import Scene
from sockprobe.port.processes import Proc


@dataclass
class Step:
    proc: Proc
    #: "signal", "stop" (the manager's command, not signalled) or "skip".
    action: str
    reason: str = ""
    stop: str = ""
    result: str = ""


@dataclass
class Plan:
    signal: int
    steps: list[Step] = field(default_factory=list)
    inodes: set[int] = field(default_factory=set)

    @property
    def to_signal(self) -> list[Step]:
        return [s for s in self.steps if s.action == "signal"]

    def text(self, port: int) -> str:
        """What --kill will do, for the prompt."""
        name = signals.Signals(self.signal).name
        lines = []
        for s in self.steps:
            what = f"pid {s.proc.pid} ({s.proc.command(50)}, user {s.proc.user})"
            if s.action == "signal":
                lines.append(f"send {name} to {what}")
            elif s.action == "stop":
                lines.append(
                    f"not signal {what}: {s.reason}; instead run `{s.stop}`"
                    if s.stop
                    else f"not signal {what}: {s.reason}"
                )
            else:
                lines.append(f"not signal {what}: {s.reason}")
        if not lines:
            return f"port {port}: no process to signal"
        return f"port {port}: " + "; ".join(lines)


def signal_number(name: str) -> int:
    return int(getattr(signals, "SIG" + name.upper().removeprefix("SIG")))


def plan(sc: Scene) -> Plan:
    p = Plan(signal_number(sc.params.signal))
    me, parent = os.getpid(), os.getppid()
    seen: set[int] = set()
    for h in sc.here:
        if not h.pins:
            continue
        p.inodes.add(h.sock.inode)
        for proc, _fd in sc.procs(h):
            if proc.pid in seen:
                continue
            seen.add(proc.pid)
            m = sc.managers.get(proc.pid)
            if proc.pid == me:
                p.steps.append(Step(proc, "skip", "it is this sockprobe process"))
            elif proc.pid == parent:
                p.steps.append(Step(proc, "skip", "it is sockprobe's parent process"))
            elif proc.pid == 1:
                p.steps.append(
                    Step(proc, "skip", "pid 1 is never signalled", stop=m.stop if m else "")
                )
            elif m is not None and not sc.params.force:
                p.steps.append(
                    Step(
                        proc,
                        "stop",
                        f"run by {m.label}, which would start it again (--force signals it anyway)",
                        stop=m.stop,
                    )
                )
            else:
                p.steps.append(Step(proc, "signal"))
    return p


def execute(p: Plan, sc: Scene, deadline: Deadline) -> float:
    """Send the signal, then wait up to --grace for the sockets to go; the seconds waited."""
    for s in p.to_signal:
        try:
            os.kill(s.proc.pid, p.signal)
            s.result = "signalled"
        except ProcessLookupError:
            s.result = "already gone"
        except PermissionError:
            s.result = "EPERM: not this user's process (run as root)"
    t0 = time.monotonic()
    end = t0 + min(sc.params.grace, deadline.remaining())
    while p.to_signal:
        rows, _ = sockets.diag(
            sc.port, sc.params.protocols, lambda: max(0.05, min(1.0, deadline.remaining()))
        )
        # Done when the holders' sockets are gone and so are the closes the kernel
        # finishes for them (FIN_WAIT1, CLOSING, LAST_ACK: milliseconds on loopback).
        if not any(r.inode in p.inodes or r.state in _CLOSING for r in rows):
            break
        if time.monotonic() >= end:
            break
        time.sleep(0.02)
    waited = time.monotonic() - t0
    for s in p.to_signal:
        if s.result == "signalled":
            s.result = "exited" if not _alive(s.proc.pid) else "still running"
    return waited


_CLOSING = (4, 9, 11)  # FIN_WAIT1, LAST_ACK, CLOSING


def _alive(pid: int) -> bool:
    """Whether pid still runs (a zombie, exited but not yet reaped by its parent, does not)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return False
    return data[data.rindex(b")") + 2 : data.rindex(b")") + 3] != b"Z"


def remaining(
    sc: Scene, p: Plan, deadline: Deadline
) -> tuple[list[portdiag.PortSocket], dict[str, bool]]:
    """After the kill: the sockets on the port and the check's answers."""
    rows, _ = sockets.diag(
        sc.port, sc.params.protocols, lambda: max(0.05, min(1.0, deadline.remaining()))
    )
    from sockprobe.lab import resolve_host

    trials = trial.run_trials(
        sc.port,
        sc.params.protocols,
        sc.check,
        resolve_host(sc.params.host).address,
        deadline,
        every=False,
    )
    return rows, trial.free(trials)
