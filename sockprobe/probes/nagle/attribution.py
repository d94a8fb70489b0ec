"""Attribution: the coalescing writes again, with a TCP_INFO snapshot after every write
that says why that write's bytes were not sent at once (Nagle, a full congestion window,
cork, or something else). Snapshots cost a system call per write and change the timing,
so this pass never feeds the counts of the coalescing tables.
"""

from __future__ import annotations

import socket
from collections import Counter
from dataclasses import dataclass, field

from sockprobe import kernel
from sockprobe.lab import Lab
from sockprobe.probes.nagle import _wire as w
from sockprobe.probes.nagle.params import Params
from sockprobe.report import CONTEXT, NA, VOLATILE, Cell, Report, col

TCP_CONGESTION = getattr(socket, "TCP_CONGESTION", None)
#: (column key, label) per cause, in table order.
CAUSES = (
    ("sent_at_once", "sent at once"),
    ("held_by_nagle", "held by Nagle"),
    ("behind_full_cwnd", "behind full cwnd"),
    ("corked", "corked"),
    ("held_window_open", "held, window open"),
)


@dataclass
class Attribution:
    mode: str
    causes: Counter[str] = field(default_factory=Counter)
    segments: int | None = None
    #: The largest tcpi_unacked seen after a write, and tcpi_snd_cwnd in that snapshot
    #: (-1 until the first snapshot, so that cwnd is never a placeholder 0).
    max_unacked: int = -1
    cwnd_at_max: int = 0
    autocork_delta: int | None = None
    congestion: str = ""


def classify(mode: str, info: kernel.TcpInfo) -> str:
    """Why the bytes of the write just made are (or are not) on the wire yet.

    - nothing unsent: the write left at once;
    - unsent while tcpi_unacked >= tcpi_snd_cwnd: the congestion window is full;
    - corked: TCP_CORK holds partial segments (tcp(7));
    - Nagle: Linux runs Minshall's variant (tcp_output.c tcp_nagle_check and
      tcp_minshall_check): a sub-MSS segment waits while an earlier *sub-MSS* segment is
      unacknowledged, not, as RFC 896 has it, while any data is. Every write here is
      sub-MSS, so any unacknowledged segment is a small one;
    - otherwise something else held it with the window open (autocorking, TCP small
      queues or pacing); the TCPAutoCorking counter tells whether autocorking fired.
    """
    if not info.notsent_bytes:
        return "sent_at_once"
    if info.unacked >= info.snd_cwnd:
        return "behind_full_cwnd"
    if w.corks(mode):
        return "corked"
    if mode == "nagle" and info.unacked > 0:
        return "held_by_nagle"
    return "held_window_open"


def _autocorking() -> int | None:
    return kernel.netstat_counters().get("TcpExt", {}).get("TCPAutoCorking")


def congestion_of(s: socket.socket) -> str:
    """The congestion control this socket runs (TCP_CONGESTION, tcp(7)), or ''."""
    if TCP_CONGESTION is None:
        return ""
    try:
        return s.getsockopt(socket.IPPROTO_TCP, TCP_CONGESTION, 16).split(b"\0")[0].decode()
    except OSError:
        return ""


def measure(lab: Lab, mode: str, p: Params) -> Attribution | None:
    c, s = w.pair(lab, mode, f"attribution {mode}")
    att = Attribution(mode, congestion=congestion_of(c))
    payload = b"x" * p.size
    before = w.sent(c)
    ac0 = _autocorking()
    if w.corks(mode):
        w.cork(c, True)
    c.settimeout(lab.deadline.timeout(5.0, "writing"))
    for _ in range(p.writes):
        c.sendall(payload)
        info = kernel.tcp_info(c)
        if info is None:
            lab.close_abortively(c, s)
            return None
        att.causes[classify(mode, info)] += 1
        if info.unacked > att.max_unacked:
            att.max_unacked, att.cwnd_at_max = info.unacked, info.snd_cwnd
    if mode == "cork":
        w.cork(c, False)
    w.wait_drained(c, lab.deadline)
    after = w.sent(c)
    ac1 = _autocorking()
    att.segments, _ = w.delta(before, after)
    att.autocork_delta = None if ac0 is None or ac1 is None else ac1 - ac0
    w.recv_exact(s, p.writes * p.size, lab.deadline, "draining the attribution pass")
    lab.close_abortively(c, s)
    return att


def table(report: Report, rows: list[Attribution]) -> None:
    t = report.table(
        "attribution",
        "Why writes were not sent at once (separate pass, receiver idle, TCP_INFO after "
        "each write)",
        [
            col("mode"),
            col("congestion_control", "congestion control"),
            *[col(key, label, "writes", VOLATILE) for key, label in CAUSES],
            col("data_segments", "data segments (this pass)", "", VOLATILE),
            col("max_unacked", "max unacked", "segments", VOLATILE),
            col("cwnd_then", "cwnd then", "segments", VOLATILE),
            col("autocorking_delta", "TCPAutoCorking Δ (this network namespace)", "", CONTEXT),
        ],
        keys=["mode"],
    )
    for at in rows:
        ac: Cell = (
            NA("/proc/net/netstat has no TCPAutoCorking here")
            if at.autocork_delta is None
            else at.autocork_delta
        )
        t.add(
            at.mode,
            at.congestion or NA("TCP_CONGESTION cannot be read here"),
            *[at.causes.get(key, 0) for key, _ in CAUSES],
            NA(w.NO_TCP_INFO) if at.segments is None else at.segments,
            at.max_unacked,
            at.cwnd_at_max,
            ac,
        )


def _cause_text(cause: str, at: Attribution) -> str:
    if cause == "held_by_nagle":
        return "waited while a small segment was unacknowledged (Nagle's rule, Minshall's variant)"
    if cause == "behind_full_cwnd":
        return (
            f"queued behind a full congestion window ({at.congestion or 'congestion control'}: "
            f"unacked reached {at.max_unacked}, cwnd {at.cwnd_at_max})"
        )
    if cause == "corked":
        return "were held by TCP_CORK"
    return "were held with the congestion window open (autocorking, TCP small queues or pacing)"


def findings(p: Params, rows: list[Attribution], quick_budget: int | None) -> list[str]:
    """One sentence per mode. With Nagle, the count sent at once is tied to the
    receiver's quick-ACK budget only when the two measurements say so (budget + 1: the
    first write, and one after each immediate ACK)."""
    out: list[str] = []
    for at in rows:
        cap = "W" + w.LABELS[at.mode][1:]
        held = {k: v for k, v in at.causes.items() if k != "sent_at_once" and v}
        if not held:
            out.append(f"{cap}: every write was sent at once (no unsent bytes after any write).")
            continue
        why = "; ".join(
            f"{n} {_cause_text(k, at)}" for k, n in sorted(held.items(), key=lambda kv: -kv[1])
        )
        ac = (
            ""
            if at.autocork_delta is None
            else f" TCPAutoCorking moved by {at.autocork_delta} (this network namespace)."
        )
        sent = at.causes.get("sent_at_once", 0)
        rest = f"; {sent} were sent at once" if sent else ""
        if at.mode == "nagle" and quick_budget is not None and sent == quick_budget + 1:
            rest += (
                f" (the first, and one after each of the receiver's {quick_budget} immediate "
                "ACKs of its quick-ACK start; later ACKs were delayed)"
            )
        out.append(f"{cap}, of {p.writes} writes: {why}{rest}.{ac}")
    return out
