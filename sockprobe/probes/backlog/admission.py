"""How many connections listen(n) admits, and where the others wait.

For each requested backlog, on a fresh listener that does not call accept() while it is
being measured:

1. Fire N non-blocking connects from this process (default: the effective backlog + 8).
   On loopback the whole handshake usually runs inside connect() itself, so the queue
   fills one client at a time.
2. Settle: poll until every client is accounted for: ESTABLISHED, refused, or still in
   SYN_SENT with its SYN counted in the listener's own drop counter (sock_diag
   SK_MEMINFO_DROPS). That is exact, so the settle ends as soon as it is true; it is
   capped (`--settle`, below 1 s) so that no SYN has been retransmitted yet when the
   counters are read.
3. Read the listener as the kernel reports it: the accept-queue length and limit from
   sock_diag (what `ss -ltn` prints as Recv-Q and Send-Q), the LISTEN row's rx_queue in
   /proc/net/tcp[6], half-open requests, the listener's drops, and the TcpExt
   ListenOverflows and ListenDrops deltas of this network namespace (context: other
   traffic moves them).
4. accept() until the queue is empty and count what comes out (each accepted socket is
   closed at once with an RST: it has been counted, and keeping it would double the
   descriptors).

Preconditions (a count is reported only if the connects it counts happened): a connect()
that fails outright for a reason of this host (no local port, no route, no descriptor)
stops the probe with the cause (Unsupported, exit 3); so does a run in which no SYN
reached the listener at all (nothing queued, nothing dropped: `lo` down, a firewall).
"""

from __future__ import annotations

import errno
import socket
import time
from collections import Counter
from dataclasses import dataclass

from sockprobe import kernel
from sockprobe.kernel.backlog import ListenerView, listener_view
from sockprobe.kernel.netif import loopback_down_reason
from sockprobe.kernel.sockstate import abortive_linger
from sockprobe.lab import Address, Deadline, Lab, fmt_addr
from sockprobe.probes import plural
from sockprobe.probes.backlog.clients import (
    RESET_NAMES,
    Client,
    connect_all,
    no_descriptor,
    tally,
)
from sockprobe.probes.backlog.params import FIRST_RETRANSMIT_S, Params
from sockprobe.report import CONTEXT, NA, VOLATILE, Bars, Cell, Report, col
from sockprobe.status import Unsupported

POLL_S = 0.005
#: Without sock_diag's drop counter, counts unchanged this long are taken as final.
STABLE_S = 0.05


@dataclass
class Plan:
    backlog: int
    effective: int | None
    connects: int
    asked: int


@dataclass
class Row:
    plan: Plan
    counts: Counter[str]
    details: Counter[str]
    view: ListenerView
    overflows: int | None
    listen_drops: int | None
    settle_s: float
    settled: bool
    accepted: int
    #: Of `accepted`, clients that were still in SYN_SENT when counted: their
    #: retransmitted SYN arrived while accept() was draining the queue.
    accepted_late: int
    #: SYN retransmissions the waiting clients had made when the counters were read.
    early_retrans: int
    #: From the first waiting client's connect() to the end of the drain (or its start).
    drain_s: float
    clients: list[Client]

    @property
    def backlog(self) -> int:
        return self.plan.backlog

    @property
    def effective(self) -> int | None:
        """The kernel's stored queue limit where sock_diag shows it, else computed."""
        return self.view.limit if self.view.limit is not None else self.plan.effective

    @property
    def queue(self) -> int | None:
        return self.view.queue if self.view.queue is not None else self.view.proc_queue


def listen_counters() -> tuple[int | None, int | None]:
    tcpext = kernel.netstat_counters().get("TcpExt", {})
    return tcpext.get("ListenOverflows"), tcpext.get("ListenDrops")


def delta(a: int | None, b: int | None) -> int | None:
    return None if a is None or b is None else b - a


def _complete(counts: Counter[str], view: ListenerView, stable_s: float) -> bool:
    """True once every client is accounted for: each one still in SYN_SENT has had its
    SYN dropped by the listener (its drop counter says so), and the accept queue holds
    every established client or is full. Without the drop counter (no sock_diag), the
    best available sign is that nothing has changed for STABLE_S."""
    queue = view.queue if view.queue is not None else view.proc_queue
    if view.drops is None:
        settled_clients = counts["connecting"] == 0 or stable_s >= STABLE_S
    else:
        settled_clients = counts["connecting"] <= view.drops
    queue_ok = (
        queue is None
        or queue >= counts["established"]
        or (view.limit is not None and queue > view.limit)
    )
    return settled_clients and queue_ok


def _settle(
    lst: socket.socket, clients: list[Client], cap: float, deadline: Deadline
) -> tuple[Counter[str], Counter[str], ListenerView, float, bool]:
    t0 = time.monotonic()
    end = t0 + deadline.timeout(cap, "waiting for the handshakes to finish")
    last: object = None
    since = t0
    while True:
        counts, details = tally(clients)
        view = listener_view(lst, proc=False)
        if view.drops is None:
            view = listener_view(lst)  # no sock_diag: /proc is all there is
        now = time.monotonic()
        key = (sorted(counts.items()), view.queue, view.proc_queue)
        if key != last:
            last, since = key, now
        done = _complete(counts, view, now - since)
        if done or now >= end:
            # /proc is slow to read on a busy host, so it is read once, at the end.
            return counts, details, listener_view(lst), now - t0, done
        deadline.check("waiting for the handshakes to finish")
        time.sleep(min(POLL_S, max(0.0, end - now)))


def drain(lab: Lab, lst: socket.socket) -> list[Address]:
    """accept() on the non-blocking listener until its queue is empty; return the peer
    address of each connection. Each accepted socket is closed at once with an RST: it
    has been counted, and keeping it would double the descriptors a large row needs."""
    peers: list[Address] = []
    while True:
        try:
            conn, addr = lst.accept()
        except (BlockingIOError, InterruptedError):
            return peers
        except ConnectionAbortedError:
            continue  # reset while queued; accept(2) lists ECONNABORTED
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE):
                raise Unsupported(no_descriptor(exc)) from None
            raise
        try:
            abortive_linger(conn)
        finally:
            conn.close()
        peers.append(tuple(addr[:2]))
        lab.deadline.check("accepting the queued connections")


def _nothing_arrived(r: Row, address: str) -> str | None:
    """The cause, when no SYN of this row reached the listener (nothing established,
    refused, queued or dropped): then the row measured nothing about the backlog."""
    if r.counts["established"] or r.counts["refused"] or r.counts["other"]:
        return None
    if r.view.drops is None or r.view.drops > 0 or (r.queue or 0) > 0:
        return None
    why = loopback_down_reason(address) or (
        "nothing answered or dropped them: a firewall, or an address that does not route "
        "to this listener"
    )
    return (
        f"none of the {r.plan.connects} connects to listen({r.backlog}) reached the listener "
        f"within {r.settle_s * 1000:.0f} ms: {why}"
    )


def measure(lab: Lab, plan: Plan, p: Params) -> Row:
    lst = lab.listener(backlog=plan.backlog, role=f"listener, listen({plan.backlog})")
    addr = lst.getsockname()
    lab.endpoints.append(
        {
            "role": f"{plan.connects} clients of listen({plan.backlog})",
            "local": f"{lab.host.address} (ephemeral ports)",
            "remote": fmt_addr(addr),
            "proto": "tcp",
        }
    )
    before = listen_counters()
    clients = connect_all(lab, addr, plan.connects)
    counts, details, view, settle_s, settled = _settle(lst, clients, p.settle, lab.deadline)
    after = listen_counters()
    # SYN retransmissions made before the counters were read (a slow connect loop or
    # settle on a loaded host): the drop counters then include them.
    early = sum(c.retrans for c in clients if c.cls == "connecting")
    lst.setblocking(False)
    by_addr = {c.sock.getsockname()[:2]: c for c in clients}
    t_accept = time.monotonic()
    peers = drain(lab, lst)
    # accept() pops queued connections, but a waiting client whose retransmitted SYN
    # arrives while the queue is being drained gets in too: tell them apart by address.
    late = 0
    for peer in peers:
        c = by_addr.get(peer)
        if c is not None and c.cls == "connecting":
            late += 1
            c.accepted_s = time.monotonic() - c.t0
            c.accepted_retrans = c.retrans
    first_drop = min((c.t0 for c in clients if c.cls == "connecting"), default=t_accept)
    row = Row(
        plan=plan,
        counts=counts,
        details=details,
        view=view,
        overflows=delta(before[0], after[0]),
        listen_drops=delta(before[1], after[1]),
        settle_s=settle_s,
        settled=settled,
        accepted=len(peers),
        accepted_late=late,
        early_retrans=early,
        drain_s=time.monotonic() - first_drop if late else t_accept - first_drop,
        clients=clients,
    )
    cause = _nothing_arrived(row, lab.host.address)
    if cause is not None:
        raise Unsupported(cause)
    return row


# -- tables ---------------------------------------------------------------------------------
def na_none(value: int | None, reason: str) -> Cell:
    return NA(reason) if value is None else value


def tables(report: Report, rows: list[Row], v6: bool) -> None:
    no_diag = next((r.view.diag_error for r in rows if r.view.diag_error), None)
    diag_reason = no_diag or "sock_diag did not report it"
    proto = "tcp6" if v6 else "tcp"
    t = report.table(
        "admission",
        "What listen(n) admitted: non-blocking connects, no accept() until counted",
        [
            col("backlog", "requested backlog"),
            col("effective", "effective backlog"),
            col("clamped"),
            col("connects"),
            col("established"),
            col("waiting", "waiting (SYN_SENT)"),
            col("refused", "refused (RST)"),
            col("other"),
            # Includes waiting clients whose retransmitted SYN came in during the drain,
            # which a slow host makes more likely.
            col("accepted", "accepted later", kind=VOLATILE),
        ],
        keys=["backlog"],
    )
    chart = Bars("admission", "Clients per listen(n), before accept()", "clients")
    for r in rows:
        eff = r.effective
        t.add(
            r.backlog,
            na_none(eff, "net.core.somaxconn is not readable here"),
            NA("net.core.somaxconn is not readable here") if eff is None else eff < r.backlog,
            r.plan.connects,
            r.counts["established"],
            r.counts["connecting"],
            r.counts["refused"],
            r.counts["other"],
            r.accepted,
        )
        chart.add(
            f"listen({r.backlog})",
            ("admitted", r.counts["established"]),
            ("waiting", r.counts["connecting"]),
            ("refused", r.counts["refused"]),
        )
    report.charts.append(chart)
    lt = report.table(
        "listener",
        "The listener as the kernel reported it, within the settle window (before accept)",
        [
            col("backlog", "requested backlog"),
            col("queue", "accept queue (sock_diag Recv-Q)"),
            col("limit", "queue limit (sock_diag Send-Q)"),
            col("proc_queue", f"rx_queue (/proc/net/{proto})"),
            col("half_open", "half-open (SYN_RECV)", kind=VOLATILE),
            col("drops", "listener drops (sk_drops)", kind=VOLATILE),
            # Namespace-wide: other traffic and parallel runs move them.
            col("listen_overflows", "ListenOverflows Δ (this netns)", kind=CONTEXT),
            col("listen_drops", "ListenDrops Δ (this netns)", kind=CONTEXT),
            # How long the kernel and the scheduler took to let every client settle:
            # on a loaded host it measures the load, not the socket layer.
            col("settle_ms", "settle", "ms", CONTEXT),
        ],
        keys=["backlog"],
    )
    no_counter = "/proc/net/netstat TcpExt is not readable here"
    for r in rows:
        lt.add(
            r.backlog,
            na_none(r.view.queue, diag_reason),
            na_none(r.view.limit, diag_reason),
            na_none(r.view.proc_queue, f"no LISTEN row in /proc/net/{proto}"),
            na_none(r.view.half_open, diag_reason),
            na_none(r.view.drops, diag_reason),
            na_none(r.overflows, no_counter),
            na_none(r.listen_drops, no_counter),
            round(r.settle_s * 1000, 1),
        )


# -- findings -------------------------------------------------------------------------------
def _admitted(r: Row, somaxconn: int | None) -> str:
    est = r.counts["established"]
    text = f"listen({r.backlog}) admitted {est} of {plural(r.plan.connects, 'connect')}"
    eff = r.effective
    if eff is not None and est == eff + 1:
        if eff < r.backlog:
            text += f" (somaxconn {somaxconn if somaxconn is not None else eff} + 1)"
        else:
            text += " (backlog + 1)"
    parts = []
    waiting = r.counts["connecting"]
    if waiting:
        drops = (
            f" ({plural(r.view.drops, 'drop')} counted on the listener)"
            if r.view.drops is not None
            else ""
        )
        were = "was" if waiting == 1 else "were"
        them = "that client sat" if waiting == 1 else "those clients sat"
        parts.append(
            f"the other {plural(waiting, 'SYN')} {were} dropped{drops}: {them} in SYN_SENT, "
            f"due to retransmit {FIRST_RETRANSMIT_S:g} s after connect()"
        )
    if r.counts["refused"]:
        why = ", ".join(f"{k} x{v}" for k, v in r.details.items() if k in RESET_NAMES)
        parts.append(f"{r.counts['refused']} refused ({why})")
    if r.counts["other"]:
        why = ", ".join(f"{k} x{v}" for k, v in r.details.items() if k not in RESET_NAMES)
        parts.append(f"{r.counts['other']} ended otherwise ({why})")
    if not r.settled:
        parts.append(
            f"(not every client was accounted for after the {r.settle_s * 1000:.0f} ms settle)"
        )
    return text + ("; " + "; ".join(parts) if parts else "") + "."


def _q(v: int | None) -> str:
    return "n/a" if v is None else str(v)


def _queue_sources(r: Row, proto: str) -> str:
    src = []
    if r.view.queue is not None:
        src.append("sock_diag Recv-Q")
    if r.view.proc_queue is not None:
        src.append(f"/proc/net/{proto} rx_queue")
    return " and ".join(src) or "n/a"


def findings(report: Report, rows: list[Row], somaxconn: int | None, proto: str) -> None:
    for r in rows:
        report.findings.append(_admitted(r, somaxconn))
    for r in rows:
        eff = r.effective
        if eff is not None and eff < r.backlog:
            report.findings.append(
                f"listen({r.backlog}) was clamped without an error: net.core.somaxconn is "
                f"{somaxconn}, and the kernel stored a queue limit of {eff}."
            )
        if (
            r.plan.effective is not None
            and r.view.limit is not None
            and r.plan.effective != r.view.limit
        ):
            report.findings.append(
                f"listen({r.backlog}): sock_diag shows a queue limit of {r.view.limit}, "
                f"not min(backlog, somaxconn) = {r.plan.effective}."
            )
    agree = [
        r.queue == r.counts["established"] == r.accepted
        and (r.view.proc_queue is None or r.view.proc_queue == r.queue)
        for r in rows
    ]
    if rows and all(agree):
        report.findings.append(
            "In every row the listener's accept queue as the kernel reported it "
            "(" + _queue_sources(rows[0], proto) + ") equalled the number of established "
            "clients, and accept() then returned exactly that many: "
            + ", ".join(f"{r.queue} for listen({r.backlog})" for r in rows)
            + "."
        )
    else:
        for r, ok in zip(rows, agree):
            if ok:
                continue
            queued = r.accepted - r.accepted_late
            if r.accepted_late and r.queue == r.counts["established"] == queued:
                report.findings.append(
                    f"listen({r.backlog}): accept() returned {r.accepted}: the {queued} "
                    f"queued connections (what the kernel reported) and "
                    f"{plural(r.accepted_late, 'waiting client')} whose retransmitted SYN "
                    f"arrived while accept() was draining the queue, {r.drain_s:.1f} s "
                    "after the first waiting client's connect()."
                )
                continue
            report.findings.append(
                f"listen({r.backlog}): {r.counts['established']} clients established, the "
                f"kernel reported an accept queue of {_q(r.view.queue)} (sock_diag) and "
                f"{_q(r.view.proc_queue)} (/proc), and accept() returned {r.accepted}."
            )
    if (
        rows
        and all(r.view.half_open == 0 for r in rows)
        and any(r.counts["connecting"] for r in rows)
    ):
        report.findings.append(
            "The server held no half-open (SYN_RECV) request for any waiting client: a "
            "dropped SYN leaves no state on the server, only the drop counters."
        )
    for r in rows:
        if r.early_retrans:
            report.findings.append(
                f"listen({r.backlog}): the waiting clients had already retransmitted "
                f"{plural(r.early_retrans, 'SYN')} when the counters were read (the "
                f"connects and the settle took over {FIRST_RETRANSMIT_S:g} s on this "
                "host), so its drop counters count those again."
            )
    ov = [r.overflows for r in rows]
    dr = [r.listen_drops for r in rows]
    own = [r.view.drops for r in rows]
    if all(v is not None for v in ov + dr):
        own_text = (
            f"; this run's listeners counted {sum(v for v in own if v is not None)} drops "
            "themselves"
            if all(v is not None for v in own)
            else ""
        )
        report.findings.append(
            "In this network namespace, TcpExt ListenOverflows rose by "
            f"{sum(v for v in ov if v is not None)} and ListenDrops by "
            f"{sum(v for v in dr if v is not None)} over the settle "
            f"window{'s' if len(rows) > 1 else ''} of {plural(len(rows), 'row')}{own_text} "
            "(other traffic in the namespace moves those counters too, and each "
            "retransmitted SYN counts again)."
        )


def summary(rows: list[Row]) -> str:
    """The headline: the admitted count per listen(n), from the rows (each of which
    passed the preconditions in measure())."""
    est = [r.counts["established"] for r in rows]
    head = ", ".join(
        f"listen({r.backlog}) admitted {e}" if i == 0 else f"listen({r.backlog}) {e}"
        for i, (r, e) in enumerate(zip(rows, est))
    )
    plus_one = all(r.effective is not None and e == r.effective + 1 for r, e in zip(rows, est))
    waiting = sum(r.counts["connecting"] for r in rows)
    refused = sum(r.counts["refused"] for r in rows)
    other = sum(r.counts["other"] for r in rows)
    tail = (
        f"; {plural(waiting, 'other client')} waited in SYN_SENT (SYN dropped)"
        if waiting
        else "; no client was left waiting"
    )
    tail += f", {refused} refused" + (f", {other} ended otherwise" if other else "")
    each = " each" if len(rows) > 1 else ""
    return head + (f" (backlog + 1{each})" if plus_one else "") + tail
