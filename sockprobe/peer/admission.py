"""backlog across a real path: what listen(n) on the peer admits from this host, and the
SYNs this host retransmits across the path for the clients the peer's queue turned away.

A listener that never accepts completes min(n, somaxconn) + 1 handshakes on Linux (the
queue is full only when sk_ack_backlog > sk_max_ack_backlog, sk_acceptq_is_full() in
include/net/sock.h); somaxconn is the peer's, read from its welcome. A SYN that meets the
full queue is dropped (tcp_conn_request() in net/ipv4/tcp_input.c), so the client
retransmits it after its initial RTO (1 s, TCP_TIMEOUT_INIT), then backs off.
Listeners report their accept queue in TCP_INFO: tcpi_unacked is its length and
tcpi_sacked its limit (tcp_get_info() in net/ipv4/tcp.c).
"""

from __future__ import annotations

import errno
import socket
import time
from typing import Any, ClassVar

from sockprobe import kernel
from sockprobe.lab import Lab
from sockprobe.peer.client import Peer
from sockprobe.peer.steps import STEP_CONNECTIONS, Rule, ServerHalf, register
from sockprobe.probes import plural
from sockprobe.report import VOLATILE, Report, col
from sockprobe.status import Unsupported

#: At most this many listeners per step (one per listen(n) tried), measured together so
#: that one settle period serves them all.
LISTENERS = 4


@register
class ListenHold(ServerHalf):
    """listen(n) on up to four listeners and never accept; report each queue at the end.
    Backlog parameters of -1 are unused slots."""

    name = "listen_hold"
    rules: ClassVar[dict[str, Rule]] = {
        **{f"backlog{i}": Rule(int, -1, STEP_CONNECTIONS, -1) for i in range(LISTENERS)},
        "seconds": Rule(float, 0.1, 30, 10),
    }

    def start(self) -> dict[str, Any]:
        self.lsts = [
            self.listener(backlog=self.p[f"backlog{i}"])
            for i in range(LISTENERS)
            if self.p[f"backlog{i}"] >= 0
        ]
        return {"ports": [s.getsockname()[1] for s in self.lsts]}

    def finish(self) -> dict[str, Any]:
        out = []
        for s in self.lsts:
            ti = kernel.tcp_info(s)
            out.append(ti.unacked if ti is not None else None)
        return {"queued": out}


def run(
    peer: Peer, lab: Lab, report: Report, backlogs: tuple[int, ...], settle: float = 1.5
) -> None:
    backlogs = backlogs[:LISTENERS]
    ready = peer.start("listen_hold", **{f"backlog{i}": n for i, n in enumerate(backlogs)})
    ports = [int(p) for p in ready["ports"]]
    somaxconn_text = (peer.host.get("sysctls") or {}).get("net.core.somaxconn")
    somaxconn = int(somaxconn_text) if somaxconn_text and str(somaxconn_text).isdigit() else None
    family = socket.AF_INET6 if ":" in peer.address else socket.AF_INET
    groups: list[list[socket.socket]] = []
    failed: list[str] = []
    for n, port in zip(backlogs, ports):
        group = []
        for _ in range(n + 4):
            s = lab.open_socket(family=family)
            s.setblocking(False)
            err = s.connect_ex((peer.address, port))
            if err not in (0, errno.EINPROGRESS):
                failed.append(errno.errorcode.get(err, str(err)))
            group.append(s)
        groups.append(group)
    if failed:
        raise Unsupported(
            f"connects to the peer failed here ({', '.join(sorted(set(failed)))}): no "
            "admission count to report"
        )
    # Long enough for the handshakes (a few RTTs) and for one SYN retransmission at
    # the initial RTO of 1 s (TCP_TIMEOUT_INIT).
    time.sleep(min(settle, lab.deadline.remaining()))
    counts = []
    for group in groups:
        infos = [kernel.tcp_info(s) for s in group]
        counts.append(
            (
                len(group),
                sum(1 for ti in infos if ti is not None and ti.state_name == "ESTABLISHED"),
                sum(1 for ti in infos if ti is not None and ti.state_name == "SYN_SENT"),
                sum(
                    ti.total_retrans
                    for ti in infos
                    if ti is not None and ti.state_name == "SYN_SENT"
                ),
            )
        )
    far = peer.finish("listen_hold")
    queued = list(far.get("queued") or [None] * len(backlogs))
    abort = (peer.host.get("sysctls") or {}).get("net.ipv4.tcp_abort_on_overflow")
    t = report.table(
        "path_admission",
        f"listen(n) on the peer {peer.name}, never accepting: n + 4 connects from here each",
        [
            col("backlog", "listen(n)"),
            col("connects"),
            col("expected", "min(n, peer somaxconn) + 1"),
            col("peer_queue", "peer accept queue"),
            col("established", "ESTABLISHED here", "", VOLATILE),
            col("syn_sent", "SYN_SENT here", "", VOLATILE),
            col("syn_retransmits", "SYNs retransmitted", "", VOLATILE),
        ],
        keys=["backlog"],
    )
    admitted, beyond = [], 0
    total_waiting = total_retrans = 0
    for n, (sent, est, waiting, retrans), q in zip(backlogs, counts, queued):
        expected = min(n, somaxconn) + 1 if somaxconn is not None else None
        t.add(n, sent, expected, q, est, waiting, retrans)
        admitted.append(f"listen({n}) {q if q is not None else 'n/a'}")
        if isinstance(q, int):
            beyond += max(0, est - q)
        total_waiting += waiting
        total_retrans += retrans
    as_rule = somaxconn is not None and all(r["peer_queue"] == r["expected"] for r in t.rows)
    sentence = (
        "Across the path the peer's accept queues held "
        + ", ".join(admitted)
        + (f" (min(n, its somaxconn {somaxconn}) + 1 each)" if as_rule else "")
        + "."
    )
    if beyond:
        sentence += (
            f" {plural(beyond, 'client')} here {'is' if beyond == 1 else 'are'} ESTABLISHED "
            "beyond those queues: their SYNs reached the peer before its queue filled, so it "
            "answered them, and the final ACKs then met a full queue"
            + (
                ", which with the peer's tcp_abort_on_overflow = 0 are dropped: the peer "
                "keeps the half-open request and resends its SYN-ACK later "
                "(tcp_check_req() in net/ipv4/tcp_minisocks.c), while the client believes it "
                "is connected."
                if str(abort) == "0"
                else "."
            )
        )
    if total_waiting:
        sentence += f" {plural(total_waiting, 'client')} stayed in SYN_SENT" + (
            f", and {plural(total_retrans, 'SYN was', 'SYNs were')} retransmitted across the "
            f"path within {settle:g} s."
            if total_retrans
            else f"; none had retransmitted its SYN within {settle:g} s."
        )
    report.findings.append(sentence)
    report.summary = (
        "peer accept queues: "
        + ", ".join(admitted)
        + (f"; {beyond} more ESTABLISHED on this side only" if beyond else "")
    )
