"""sockprobe partial-send: how much one send() accepts when the buffers fill, whether
anything is lost, and what setting SO_RCVBUF costs.

Experiments, one module each:

- scenarios.py: per placement of SO_RCVBUF and per way of offering bytes
  (non-blocking send(), send() with a timeout, sendall()), a fresh small-buffered pair
  whose receiver does not read; then a byte-for-byte drain (table `scenarios`);
- timeline.py: every call of those scenarios (table `timeline`, chart
  `accepted_per_call`);
- buffers.py: the buffer sizes requested and read back (table `buffers`);
- autotune.py: a bulk transfer with default buffers vs SO_RCVBUF set (table
  `autotune`).

Where SO_RCVBUF is set is itself a variable (tcp(7): buffer sizes must be set before
listen() or connect() to take effect on a connection), so each mode runs twice: with
SO_RCVBUF on the listener before listen() (the accepted socket inherits it, and the
SYN-ACK already advertises a window sized for it) and on the accepted socket after the
handshake (the window advertised in the SYN-ACK came from the default buffer).

The scenarios run side by side, one thread each, on separate connections: each is bound
by its own timers (the peer's delayed ACK, the quiet period, the operation timeout), so
running them together changes none of the per-connection numbers. The autotuning
transfers run after them, one at a time, so that their throughputs are comparable.
"""

from __future__ import annotations

from sockprobe import kernel
from sockprobe.lab import Lab
from sockprobe.probes import Stopwatch
from sockprobe.probes.partial_send import autotune, buffers, scenarios, timeline
from sockprobe.probes.partial_send.params import MODES, PLACEMENT_CHOICES, PLACEMENTS, Params
from sockprobe.probes.partial_send.scenarios import Scenario, counter_pattern, drain, fill
from sockprobe.report import Report, environment, params_dict
from sockprobe.status import DeadlineExceeded, Unsupported

__all__ = [
    "MODES",
    "PLACEMENTS",
    "PLACEMENT_CHOICES",
    "Params",
    "counter_pattern",
    "drain",
    "fill",
    "run",
]

SYSCTLS = (
    "net.core.wmem_max",
    "net.core.rmem_max",
    "net.ipv4.tcp_wmem",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_moderate_rcvbuf",
    "net.ipv4.tcp_window_scaling",
)


def run(params: Params) -> Report:
    watch = Stopwatch()
    host, deadline = params.resolve()
    report = Report(
        "partial-send",
        params=params_dict(params),
        environment=environment(kernel.sysctls(SYSCTLS)),
    )
    placements = PLACEMENTS if params.placement == "both" else (params.placement,)
    modes = [m for m in MODES if m in params.modes]
    data = counter_pattern(params.size)
    with Lab(host, deadline) as lab:
        workers = [
            lab.thread(
                scenarios.scenario, lab, pl, m, params, data, name=f"sockprobe-partial-{pl}-{m}"
            )
            for pl in placements
            for m in modes
        ]
        results: list[Scenario] = []
        for w in workers:
            if not w.join(deadline.timeout(None, "waiting for the scenarios")):
                deadline.check("waiting for the scenarios")
                raise DeadlineExceeded(f"--deadline {deadline.seconds:g} s ran out")
            if w.error is not None:
                raise w.error
            results.append(w.result)
        transfers = (
            [autotune.transfer(lab, setting, params) for setting in autotune.SETTINGS]
            if params.autotune
            else []
        )
        # The scenarios ran side by side; list their endpoints in scenario order.
        order = [f"{pl}/{m}" for pl in placements for m in modes]
        report.endpoints = sorted(
            lab.endpoints,
            key=lambda ep: (
                order.index(r) if (r := str(ep["role"]).split(" ")[0]) in order else len(order)
            ),
        )
    # Preconditions (issue 13): bytes were offered and the sender's kernel took some.
    if not any(sc.calls for sc in results):
        raise Unsupported("no send() call was made: nothing to report")
    timeline.table(report, params, results)
    buffers.table(report, params, results)
    scenarios.table(report, params, results)
    if transfers:
        autotune.table(report, params, transfers)
    report.findings.append(buffers.finding(params, results))
    report.findings.extend(timeline.findings(params, results))
    report.findings.extend(scenarios.findings(params, results))
    report.findings.extend(autotune.findings(transfers))
    report.summary = scenarios.headline(params, results)
    _notes(report)
    report.duration_s = watch()
    return report


def _notes(report: Report) -> None:
    # SIOCOUTQ is write_seq - snd_una and SIOCINQ is rcv_nxt - copied_seq (net/ipv4/tcp.c
    # tcp_ioctl, tcp_inq): a byte the receiver has queued but not yet acknowledged is in
    # both, which is why the sum only equals what the kernels hold once the ACKs are out.
    report.notes.extend(
        [
            "send(2) returns the number of bytes the kernel accepted into the socket's send "
            "buffer; on a non-blocking socket with no room it fails with EAGAIN "
            "(BlockingIOError), and the caller must offer the rest later. Accepted means "
            "queued, not delivered: the bytes survive EAGAIN and a receiver that drops "
            "segments (TCP retransmits them), and they are lost without any notice to the "
            "sender's application on a reset, a retransmission timeout or an abortive close. "
            "Only an application-level acknowledgement says the peer got them.",
            "Python's socket timeouts: the socket is non-blocking underneath and each call "
            "waits for writability up to the timeout; send() returns a partial count, "
            "sendall() keeps calling send() and, on timeout, raises without saying how much "
            "went (the Python docs say so). SIOCOUTQ (sender: bytes not yet acknowledged, "
            "sent or not) + SIOCINQ (receiver: bytes queued, unread), tcp(7), add up to what "
            "the two kernels hold once the receiver has acknowledged what it queued; until "
            "its (delayed) ACK leaves, those bytes count in both, so a timeline row's sum can "
            "exceed the bytes accepted.",
            "socket(7): the kernel caps a SO_SNDBUF / SO_RCVBUF request at "
            "net.core.wmem_max / rmem_max and then doubles it for bookkeeping overhead "
            "(tiny requests are raised to a floor). tcp(7): set buffer sizes before listen() "
            "(inherited by accepted sockets) or connect(); set later, as in the 'accepted' "
            "rows, the handshake has already advertised a window sized for the default "
            "buffer (tcp_rmem[1]) and a window scale sized for the largest one (tcp_rmem[2], "
            "rmem_max): compare the SYN-ACKs in a capture of the endpoints below.",
            "Setting SO_RCVBUF (or SO_SNDBUF) locks that buffer (SOCK_RCVBUF_LOCK, "
            "net/core/sock.c), and autotuning (tcp_input.c tcp_rcv_space_adjust, on when "
            "net.ipv4.tcp_moderate_rcvbuf is 1) never grows a locked buffer: the autotune "
            "table shows the cost. Off loopback a connection's throughput is at most its "
            "window divided by the RTT.",
            "Accepted is not the same as delivered at once: the receiver's window counts "
            "payload, its buffer counts each segment's whole allocation, so a segment inside "
            "the advertised window can still find the buffer full. The receiving kernel drops "
            "it (the socket's drop count, ss's skmem d; TcpExt TCPRcvQDrop and RcvPruned in "
            "this network namespace) and the sender resends it later.",
            "EAGAIN is a moment, not the end: the receiver acknowledges data and reopens the "
            "window (on loopback often with its delayed ACK, tens of ms later), so a "
            "non-blocking writer should wait for writability (select/poll) and retry.",
            "Check by hand while the receiver is idle: `ss -tmi` shows Send-Q/Recv-Q and the "
            "skmem buffers for the endpoints listed below; the per-scenario table shows the "
            "same Send-Q/Recv-Q read through sock_diag, the interface ss uses.",
            "Other platforms (documented, not measured here): Windows: non-blocking send() "
            "fails with WSAEWOULDBLOCK (10035), SO_SNDBUF/SO_RCVBUF read back as set (not "
            "doubled), and there is no SIOCOUTQ. macOS: buffers are not doubled; there is no "
            "SIOCOUTQ, but SO_NWRITE reads the bytes still in the send buffer (sent or not, "
            "until acknowledged) and FIONREAD the unread bytes in the receive buffer.",
        ]
    )
