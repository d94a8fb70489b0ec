"""`--wait [SECONDS]`: wait until a new listener could start on the port.

Polls sock_diag with the in-kernel port filter (sockets.diag: a few hundred bytes per
poll, whatever the host's socket count), not a bind loop: the trial bind, which is the
only thing that knows whether the remaining sockets set SO_REUSEADDR, runs once at the
start and again only when the set of sockets on the port changes. What still holds the
port is reported through `progress` (the CLI draws it on stderr, on a terminal only):
"1 TIME_WAIT, 41 s left", "LISTEN pid 812".
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from sockprobe.kernel import portdiag
from sockprobe.lab import Deadline
from sockprobe.port import processes, sockets, trial
from sockprobe.port.params import WAIT_UNTIL_DEADLINE, Params

POLL_S = 0.1


@dataclass
class WaitResult:
    free: bool
    waited_s: float
    #: (seconds since the start, what held the port) at each change.
    timeline: list[tuple[float, str]] = field(default_factory=list)
    polls: int = 0
    #: What held the port at the last poll (TIME_WAIT seconds counted down).
    last: str = ""


#: A bare --wait stops this long (or this share of --deadline, if less) before the
#: deadline, for the diagnosis: one sock_diag dump, the /proc fd scan and the trial binds
#: (tens of ms on a quiet host, some hundreds with 10,000 sockets: bench/bench_port.py).
REPORT_RESERVE_S = 1.0
REPORT_RESERVE_SHARE = 0.25


def describe(rows: list[portdiag.PortSocket], holders: processes.Holders) -> str:
    """What holds the port: "LISTEN pid 812; 1 TIME_WAIT, 41 s left"."""
    parts = []
    pinned = [sockets.Held(r) for r in rows]
    for h in pinned:
        if h.pins:
            pids = holders.pids(h.sock.inode)
            who = (
                ("pid " + ", ".join(map(str, pids)))
                if pids
                else ("owner hidden" if holders.hidden_reason(h.sock.uid) else "no process")
            )
            parts.append(f"{h.state} {who}")
    states = Counter(h.state for h in pinned if h.is_connection and not h.kernel_only)
    parts += [f"{n} {s}" for s, n in sorted(states.items())]
    tw = [h for h in pinned if h.sock.state == sockets.TIME_WAIT]
    if tw:
        left = max(h.sock.expires_ms for h in tw) / 1000
        parts.append(f"{len(tw)} TIME_WAIT, {left:.0f} s left")
    syn = [h for h in pinned if h.sock.state == sockets.NEW_SYN_RECV]
    if syn:
        parts.append(f"{len(syn)} SYN_RECV")
    return "; ".join(dict.fromkeys(parts)) or "no socket on the port, yet a bind fails"


def wait_free(
    params: Params,
    check: tuple[int, str],
    host_address: str,
    deadline: Deadline,
    progress: Callable[[str], None] | None,
) -> WaitResult:
    port, protos = params.port, params.protocols
    if params.wait == WAIT_UNTIL_DEADLINE:
        # Keep a part of --deadline for the diagnosis that follows the wait, or a port
        # still held at the end would give exit 4 instead of --wait's answer (exit 1).
        remaining = deadline.remaining()
        limit = remaining - min(REPORT_RESERVE_S, REPORT_RESERVE_SHARE * remaining)
    else:
        limit = params.wait or 0.0
    t0 = time.monotonic()
    end = t0 + min(limit, deadline.remaining())
    result = WaitResult(False, 0.0)
    last: frozenset[tuple[int, int, int, tuple[str, int], tuple[str, int], int]] | None = None
    holders = processes.Holders()
    mode = "reuseaddr" if params.reuseaddr else "plain"
    while True:
        rows, _problems = sockets.diag(
            port, protos, lambda: max(0.05, min(1.0, deadline.remaining()))
        )
        result.polls += 1
        sig = frozenset((r.family, r.protocol, r.state, r.local, r.remote, r.inode) for r in rows)
        if sig != last:
            trials = trial.run_trials(port, protos, check, host_address, deadline, every=False)
            if trial.free(trials)[mode]:
                result.free = True
                result.waited_s = time.monotonic() - t0
                result.timeline.append((result.waited_s, "free"))
                return result
            last = sig
            inodes = {r.inode for r in rows if r.inode}
            holders = processes.find_holders(inodes) if inodes else processes.Holders()
            status = describe(rows, holders)
            result.timeline.append((time.monotonic() - t0, status))
        else:
            status = describe(rows, holders)
        result.last = status
        if progress is not None:
            progress(f"port {port}: {status}")
        now = time.monotonic()
        if now >= end:
            result.waited_s = now - t0
            return result
        time.sleep(min(POLL_S, end - now))
