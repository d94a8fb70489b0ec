"""`--syncnt N`: when a client whose SYN is dropped retransmits it, and when connect()
gives up, against the schedule the kernel's rule gives (kernel/synretry.py).

One client with TCP_SYNCNT N (tcp(7): the per-socket tcp_syn_retries) connects to a
listen(0) whose accept queue is full, so every SYN it sends is dropped. Its
tcpi_total_retrans is polled every few milliseconds to time each retransmission, and
SO_ERROR for the ETIMEDOUT that ends it. tcp_syn_linear_timeouts is the namespace's.
Slow by nature (2^(N+1)-1 s or more), so only when asked.
"""

from __future__ import annotations

import errno
import socket
import time
from dataclasses import dataclass

from sockprobe import kernel
from sockprobe.kernel.backlog import listener_view, so_error
from sockprobe.kernel.synretry import connect_gives_up_after, syn_schedule
from sockprobe.lab import Lab
from sockprobe.probes import plural
from sockprobe.probes.backlog.clients import errno_text, open_client
from sockprobe.report import NA, VOLATILE, Cell, Report, col
from sockprobe.status import DeadlineExceeded, Unsupported

POLL_S = 0.002
#: Past the stated give-up time, how long to keep waiting before calling it missing.
GRACE_S = 1.5


@dataclass
class GiveUp:
    syncnt: int
    linear: int
    stated: list[float]
    stated_give_up: float
    measured: list[float]
    gave_up_s: float | None
    error: int


def measure(lab: Lab, syncnt: int, linear: int | None) -> GiveUp:
    lin = 0 if linear is None else linear
    stated = syn_schedule(syncnt, lin)
    give_up = connect_gives_up_after(syncnt, lin)
    if lab.deadline.remaining() < give_up + GRACE_S:
        raise DeadlineExceeded(
            f"--deadline {lab.deadline.seconds:g} s leaves too little time to watch "
            f"TCP_SYNCNT {syncnt} give up ({give_up:g} s needed)"
        )
    lst = lab.listener(backlog=0, role="give-up: full listen(0)")
    filler = open_client(lab)
    filler.connect_ex(lst.getsockname())
    end = time.monotonic() + lab.deadline.timeout(1.0, "filling the accept queue")
    while (listener_view(lst, proc=False).queue or 0) < 1:
        if time.monotonic() >= end:
            raise Unsupported("the give-up experiment could not fill listen(0)'s queue")
        time.sleep(0.001)
    c = open_client(lab)
    try:
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_SYNCNT, syncnt)
    except (OSError, AttributeError) as exc:
        raise Unsupported(f"TCP_SYNCNT is not available here ({exc})") from None
    t0 = time.monotonic()
    c.connect_ex(lst.getsockname())
    seen = 0
    measured: list[float] = []
    err = 0
    limit = t0 + give_up + GRACE_S
    while time.monotonic() < limit:
        lab.deadline.check("watching the SYN retransmissions")
        now = time.monotonic()
        info = kernel.tcp_info(c)
        if info is not None:
            while seen < info.total_retrans:
                seen += 1
                measured.append(now - t0)
        err = so_error(c)
        if err:
            break
        time.sleep(POLL_S)
    gave_up = time.monotonic() - t0 if err else None
    return GiveUp(syncnt, lin, stated, give_up, measured, gave_up, err)


def table(report: Report, g: GiveUp) -> None:
    t = report.table(
        "syn_give_up",
        f"A client with TCP_SYNCNT {g.syncnt} at a full accept queue "
        f"(tcp_syn_linear_timeouts {g.linear}): stated and measured",
        [
            col("event"),
            col("stated_s", "stated", "s after connect"),
            col("measured_s", "measured", "s after connect", VOLATILE),
        ],
        keys=["event"],
    )
    n = max(len(g.stated), len(g.measured))
    for i in range(n):
        st: Cell = round(g.stated[i], 3) if i < len(g.stated) else NA("the rule states none")
        me: Cell = round(g.measured[i], 3) if i < len(g.measured) else NA("none was seen")
        t.add(f"SYN retransmission {i + 1}", st, me)
    t.add(
        "connect() fails (ETIMEDOUT)",
        g.stated_give_up,
        NA(f"still waiting after {g.stated_give_up + GRACE_S:g} s")
        if g.gave_up_s is None
        else round(g.gave_up_s, 3),
    )


def finding(g: GiveUp) -> str:
    how = (
        f"failed with {errno_text(g.error)} after {g.gave_up_s:.2f} s"
        if g.gave_up_s is not None
        else "had not failed"
    )
    agree = len(g.measured) == len(g.stated) and g.error == errno.ETIMEDOUT
    return (
        f"TCP_SYNCNT {g.syncnt} with tcp_syn_linear_timeouts {g.linear}: the rule states "
        f"{plural(len(g.stated), 'retransmission')} and ETIMEDOUT at {g.stated_give_up:g} s; "
        f"the client retransmitted {len(g.measured)} time{'s' if len(g.measured) != 1 else ''}"
        + (f" (at {', '.join(f'{t:.2f}' for t in g.measured)} s)" if g.measured else "")
        + f" and {how}"
        + (", as stated." if agree else ", which differs from the rule.")
    )
