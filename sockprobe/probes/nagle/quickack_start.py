"""Quick-ACK start: how many segments a new connection's receiver acknowledges at once
before it starts delaying ACKs, measured, against the kernel's rule.

On the first data segment of a connection tcp_event_data_recv() (tcp_input.c) gives the
receiver a quick-ACK budget, tcp_incr_quickack(sk, TCP_MAX_QUICKACKS):
rcv_wnd / (2 x rcv_mss) ACKs (2 if that is 0), at most TCP_MAX_QUICKACKS = 16
(include/net/tcp.h). While the budget lasts and the connection is not interactive
(pingpong), every segment is acknowledged at once (tcp_in_quickack_mode); each ACK sent
uses one. A receiver that replies with data within its ACK timeout becomes interactive
(tcp_output.c tcp_event_data_sent), which ends the quick ACKs early: that is why only
the first write-write-read round of a Nagle connection is fast.

The experiment: a TCP_NODELAY client sends one byte at a time to a receiver that never
reads and never replies, and waits for each byte's ACK (tcpi_unacked back to 0). Each
ACK's delay is timed by the kernel (tcpi_last_data_sent - tcpi_last_ack_recv, jiffies
resolution: 0 for an immediate ACK, about 40 ms for a delayed one, less where a route's
rto_min caps the timer), so a loaded host that
wakes the polling thread late cannot turn a quick ACK into a slow one; the wall-clock
wait stands in only where those fields are missing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sockprobe import kernel
from sockprobe.kernel import tcpwindow
from sockprobe.lab import Lab
from sockprobe.probes.nagle import _wire as w
from sockprobe.report import NA, VOLATILE, Cell, Report, col

TCP_MAX_QUICKACKS = 16


@dataclass
class QuickStart:
    ack_ms: list[float]
    #: The receiver's rcv_wnd (tcpi_rcv_wnd, Linux 6.7+) and rcv_mss before the first
    #: data segment: the inputs of tcp_incr_quickack.
    rcv_wnd: int | None
    rcv_mss: int | None
    #: The locked rto_min of the receiver's route back to the sender: it caps the
    #: delayed-ACK timer of a pushed segment (see _wire.delack_max_ms).
    route_rto_min_ms: float | None = None

    @property
    def stall_ms(self) -> float:
        return w.stall_ms(self.route_rto_min_ms)

    @property
    def immediate(self) -> int:
        """ACKs that came back at once before the first delayed one."""
        stall = self.stall_ms
        return next((i for i, t in enumerate(self.ack_ms) if t >= stall), len(self.ack_ms))

    @property
    def delayed(self) -> int:
        return sum(1 for t in self.ack_ms if t >= self.stall_ms)

    @property
    def first_delayed_ms(self) -> float | None:
        return next((t for t in self.ack_ms if t >= self.stall_ms), None)


def budget(rcv_wnd: int, rcv_mss: int) -> int:
    """tcp_incr_quickack()'s budget for a first data segment (tcp_input.c)."""
    quick = rcv_wnd // (2 * rcv_mss) if rcv_mss else 0
    return min(quick or 2, TCP_MAX_QUICKACKS)


def measure(lab: Lab, probes: int) -> QuickStart | None:
    """None where TCP_INFO cannot say when a byte is acknowledged."""
    c, s = w.pair(lab, "nodelay", "quick-ACK start")
    info = kernel.tcp_info(s)
    win = tcpwindow.window(s)
    if info is None or kernel.tcp_info(c) is None:
        lab.close_abortively(c, s)
        return None
    rto_min = w.route_rto_min_ms(c.getsockname()[0])
    qs = QuickStart([], None if win is None else win.rcv_wnd, info.rcv_mss, rto_min)
    for i in range(probes):
        t0 = time.perf_counter()
        c.settimeout(lab.deadline.timeout(5.0, "sending a quick-ACK probe"))
        c.send(b"a")
        end = t0 + lab.deadline.timeout(1.0, "waiting for a quick-ACK probe's ACK")
        while True:
            now = kernel.tcp_info(c)
            if now is None or now.unacked == 0:
                break
            if time.perf_counter() > end:
                lab.deadline.check("waiting for a quick-ACK probe's ACK")
                raise RuntimeError(f"quick-ACK probe {i + 1}: no ACK within 1 s")
            time.sleep(0.0002)
        kernel_ms = tcpwindow.ack_delay_ms(c)
        wall_ms = (time.perf_counter() - t0) * 1000
        qs.ack_ms.append(wall_ms if kernel_ms is None else float(kernel_ms))
    lab.close_abortively(c, s)
    return qs


def table(report: Report, qs: QuickStart) -> None:
    t = report.table(
        "quickack_start",
        "Quick-ACK start: one-byte segments to a silent receiver, each waiting for its ACK",
        [
            col("receiver"),
            col("segments"),
            col("immediate_acks", "ACKed at once before the first delay", "", VOLATILE),
            col("delayed_acks", f"ACKed after >= {qs.stall_ms:g} ms", "", VOLATILE),
            col("first_delayed_ms", "first delayed ACK after", "ms", VOLATILE),
            col("rcv_wnd", "receiver rcv_wnd (tcpi_rcv_wnd)", "B"),
            col("rcv_mss", "receiver rcv_mss (tcpi_rcv_mss)", "B"),
            col("budget", "kernel rule: min(rcv_wnd / (2 x rcv_mss), 16)"),
        ],
        keys=["receiver"],
    )
    no_wnd = NA("tcpi_rcv_wnd needs Linux 6.7 or later")
    rule: Cell = budget(qs.rcv_wnd, qs.rcv_mss) if qs.rcv_wnd is not None and qs.rcv_mss else no_wnd
    first = qs.first_delayed_ms
    t.add(
        "silent",
        len(qs.ack_ms),
        qs.immediate,
        qs.delayed,
        NA("no ACK was delayed") if first is None else round(first, 2),
        no_wnd if qs.rcv_wnd is None else qs.rcv_wnd,
        qs.rcv_mss,
        rule,
    )


def finding(qs: QuickStart) -> str:
    n = len(qs.ack_ms)
    rule = budget(qs.rcv_wnd, qs.rcv_mss) if qs.rcv_wnd is not None and qs.rcv_mss else None
    if qs.immediate == n:
        if rule is not None and n > rule:
            return (
                f"Quick-ACK start: all {n} one-byte segments to a silent receiver were "
                f"acknowledged at once, more than the kernel's quick-ACK budget of {rule} "
                f"(min({qs.rcv_wnd:,} / (2 x {qs.rcv_mss}), {TCP_MAX_QUICKACKS})): delayed ACKs "
                "are off on this path (a route with quickack 1, RTAX_QUICKACK, does that)."
            )
        return (
            f"Quick-ACK start: all {n} one-byte segments to a silent receiver were "
            "acknowledged at once (the budget outlasted them; more --quickack-probes show "
            "where it ends)."
        )
    text = (
        f"Quick-ACK start: a new connection's silent receiver acknowledged the first "
        f"{qs.immediate} one-byte segments at once, then delayed the ACK of the next "
        f"({qs.first_delayed_ms or 0:.1f} ms)"
    )
    if rule is not None:
        verdict = "as" if rule == qs.immediate else "NOT as"
        text += (
            f", {verdict} the kernel's rule predicts: min({qs.rcv_wnd:,} / (2 x "
            f"{qs.rcv_mss}), {TCP_MAX_QUICKACKS}) = {rule} (tcp_input.c tcp_incr_quickack, "
            "TCP_MAX_QUICKACKS)"
        )
    return text + "."
