"""The request queue with syncookies off: where tcp_max_syn_backlog's quarter rule and
the listen backlog stop new half-open requests (kernel/overflow.py, half_open_held()).

Runs only where net.ipv4.tcp_syncookies is 0 (in a network namespace: `sysctl -w
net.ipv4.tcp_syncookies=0`): with cookies on, a SYN beyond the backlog gets a cookie and
tcp_max_syn_backlog has no effect. Clients connect one at a time to a listen(B) whose
socket filter holds back every client's final ACK (kernel/synfilter.py), so each answered
SYN stays a half-open request; a SYN that is not answered (the client stays in SYN_SENT
and the listener's drop counter rises) marks the limit. The kernel applies the quarter
rule only to peers it has no TCP metrics history for (`tcp_peer_is_proven()`); loopback
connections closed with an RST leave none, so 127.0.0.1 counts as unproven here.
"""

from __future__ import annotations

from dataclasses import dataclass

from sockprobe.kernel import overflow as rule
from sockprobe.kernel.backlog import listener_view
from sockprobe.kernel.synfilter import holding_acks
from sockprobe.lab import Lab
from sockprobe.probes.backlog.clients import TCP_ESTABLISHED, open_client, tcp_state, until
from sockprobe.report import NA, Report, col

#: A classic BPF program holds at most 4096 instructions, one per held port and a few.
MAX_HELD = 4000


@dataclass
class SynQueue:
    backlog: int
    max_syn_backlog: int
    stated: int
    #: Requests the listener kept (SYN answered) before the first unanswered SYN.
    held: int
    #: Whether a later SYN was dropped at all.
    dropped: bool
    half_open: int | None


def measure(lab: Lab, backlog: int, max_syn_backlog: int) -> SynQueue | None:
    stated = rule.half_open_held(backlog, max_syn_backlog, 0)
    if stated is None or stated + 2 > MAX_HELD:
        return None
    lst = lab.listener(backlog=backlog, role=f"syn queue: listen({backlog})")
    clients = [open_client(lab, bind=True) for _ in range(stated + 2)]
    ports = [c.getsockname()[1] for c in clients]
    with holding_acks(lst, ports):
        # Loopback runs each handshake inside connect(), in order, so the clients that
        # got a SYN-ACK are the first ones; the rest had their SYNs dropped (the
        # listener's drop counter says so).
        d0 = listener_view(lst, proc=False).drops or 0
        for c in clients:
            c.connect_ex(lst.getsockname())

        def settled() -> bool:
            answered = sum(tcp_state(c) == TCP_ESTABLISHED for c in clients)
            drops = (listener_view(lst, proc=False).drops or 0) - d0
            return answered + drops >= len(clients)

        until(lab, settled, "the SYNs to the request queue", cap=1.0)
        states = [tcp_state(c) == TCP_ESTABLISHED for c in clients]
        held = states.index(False) if False in states else len(states)
        dropped = False in states
        half = listener_view(lst, proc=False).half_open
    return SynQueue(backlog, max_syn_backlog, stated, held, dropped, half)


def table(report: Report, q: SynQueue) -> None:
    t = report.table(
        "syn_queue",
        f"Half-open requests with tcp_syncookies 0: listen({q.backlog}), "
        f"tcp_max_syn_backlog {q.max_syn_backlog}",
        [
            col("backlog", "listen backlog"),
            col("max_syn_backlog", "tcp_max_syn_backlog"),
            col("stated", "requests kept (rule)"),
            col("held", "requests kept (measured)"),
            col("dropped", "later SYN dropped"),
            col("half_open", "server half-open (SYN_RECV)"),
        ],
        keys=["backlog"],
    )
    t.add(
        q.backlog,
        q.max_syn_backlog,
        q.stated,
        q.held,
        q.dropped,
        NA("sock_diag did not report it") if q.half_open is None else q.half_open,
    )


def finding(q: SynQueue) -> str:
    floor = rule.max_syn_backlog_floor(q.max_syn_backlog)
    which = (
        f"the quarter rule of tcp_max_syn_backlog {q.max_syn_backlog} (more than {floor} "
        "requests leave less than a quarter free)"
        if floor < q.backlog
        else f"the listen backlog {q.backlog} (requests may not exceed it)"
    )
    verdict = "as stated" if q.held == q.stated and q.dropped else "NOT as stated"
    return (
        f"With tcp_syncookies 0, listen({q.backlog}) kept {q.held} half-open requests and "
        f"then {'dropped' if q.dropped else 'still answered'} the next SYN; the rule states "
        f"{q.stated}, set by {which}: {verdict}."
    )
