"""sockprobe close: what each side of a TCP connection observes when the other one
closes, and what close() leaves behind.

Every scenario runs on a fresh loopback connection (client = the side that connected,
server = the accepted side), because what the peer sees depends on everything that
happened before: a reset is reported once, a FIN already received turns a later reset
into end-of-file, the first send after the peer's close succeeds. One module per group:

- eof.py: recv and send after the peer's close(); the b'' of a local shutdown(SHUT_RD);
- reset.py: close() with unread data and SO_LINGER {1, 0}, both RST;
- half_close.py: shutdown(SHUT_WR), and FIN_WAIT2 with the fd open vs orphaned;
- leftovers.py: close() with unsent data (the orphan keeps sending), SO_LINGER {1, 1 s};
- shared.py: close() of one of two descriptors (dup, a child process) sends nothing;
- lingering.py: the lingering close that keeps an RST from destroying a response;
- sigpipe.py: SIGPIPE here and in a child with the default disposition.

The TCP state after each step comes from TCP_INFO, so "the peer answered with RST" is
read from the socket (state CLOSE), not assumed; TIME_WAIT entries and orphans, which
belong to no fd, are read with sock_diag (what `ss` uses). The one slow case (a
lingering close() that blocks 1 s) runs in a worker thread beside the others.
"""

from __future__ import annotations

import socket

from sockprobe import kernel
from sockprobe.kernel.timewait import count_time_waits, endpoint_ports
from sockprobe.lab import Lab, cannot_run
from sockprobe.probes import Stopwatch, plural
from sockprobe.probes.close import (
    eof,
    half_close,
    leftovers,
    lingering,
    reset,
    shared,
    sigpipe,
)
from sockprobe.probes.close.common import Closer, Step, closers_table, steps_table
from sockprobe.probes.close.params import Params
from sockprobe.report import NA, Cell, Report, col, environment, params_dict
from sockprobe.status import oserror_name

__all__ = ["Params", "run"]

SYSCTLS = (
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_max_tw_buckets",
    "net.ipv4.tcp_orphan_retries",
    "net.ipv4.tcp_rfc1337",
)


def run(params: Params) -> Report:
    watch = Stopwatch()
    host, deadline = params.resolve()
    report = Report(
        "close", params=params_dict(params), environment=environment(kernel.sysctls(SYSCTLS))
    )
    steps: list[Step] = []
    closers: list[Closer] = []
    try:
        with Lab(host, deadline) as lab:
            stalled = leftovers.start(lab)
            try:
                eof.measure(lab, steps, closers)
                reset.measure(lab, steps, closers)
                half_close.measure(lab, steps, closers)
                fw2 = half_close.fin_wait2(lab)
                shared_rows = [shared.dup(lab), shared.fork_child(lab)]
                linger_rows = [
                    lingering.measure(lab, c) for c in ("close_unread", "shutdown_drain_close")
                ]
                in_here = sigpipe.here()
                in_child = sigpipe.child(lab)
                left = leftovers.measure(lab, stalled)
            except BaseException:
                # Deadline, Ctrl-C or error: end the lingering close() now (see abandon()).
                leftovers.abandon(lab, stalled)
                raise
            report.endpoints = lab.endpoints
    except OSError as exc:
        # A loopback that cannot connect (lo down, no descriptors) is not a result.
        reason = cannot_run(exc, host)
        if reason is None:
            raise
        raise reason from None
    tw_left = _time_waits_left(report)

    steps_table(report, steps)
    closers_table(report, closers)
    half_close.fin_wait2_table(report, fw2)
    leftovers.table(report, left)
    shared.table(report, shared_rows)
    lingering.table(report, linger_rows)
    sigpipe.table(report, in_here, in_child)
    t = report.table(
        "left_behind",
        "What this run leaves in the kernel",
        [col("what"), col("count")],
        keys=["what"],
    )
    t.add("time_wait_sockets", tw_left)

    head1 = eof.findings(report, steps)
    head2 = reset.findings(report, steps, closers)
    half_close.findings(report, steps, fw2)
    leftovers.findings(report, left)
    shared.findings(report, shared_rows)
    lingering.findings(report, linger_rows)
    sigpipe.findings(report, in_here, in_child)
    if isinstance(tw_left, int):
        report.findings.append(
            f"This run leaves {plural(tw_left, 'TIME_WAIT socket')} behind, from the "
            "scenarios whose point is a graceful close; the others end with RST."
        )
    report.summary = f"{head1}; {head2}"
    _notes(report)
    report.duration_s = watch()
    return report


def _time_waits_left(report: Report) -> Cell:
    if not kernel.IS_LINUX:
        return NA("TIME_WAIT sockets are counted with sock_diag (Linux)")
    family = (
        socket.AF_INET6
        if report.endpoints and report.endpoints[0]["local"].startswith("[")
        else socket.AF_INET
    )
    try:
        return count_time_waits(family, endpoint_ports(report.endpoints))
    except OSError as exc:
        return NA(f"sock_diag unavailable: {oserror_name(exc)}")


def _notes(report: Report) -> None:
    report.notes.extend(
        [
            "recv() returning b'' means no more data will come for this reader: after the "
            "peer's FIN (shutdown(SHUT_WR) or close()), but also after a reset that was "
            "already reported once, and after a local shutdown(SHUT_RD). Only the first b'' "
            "with no error and no local shutdown before it is an orderly close by the peer; "
            "every later recv returns b'' too.",
            "A send after the peer's close() succeeds: the bytes are only queued, and the "
            "kernel learns that nobody will read them when the peer's RST comes back. The "
            "next send fails with EPIPE (send(2)); a recv after that still returns b'' when "
            "a FIN came first.",
            "close() with unread data in the receive queue sends RST instead of FIN "
            "(tcp_close() in net/ipv4/tcp.c; RFC 2525 2.17, RFC 1122 4.2.2.13) and discards "
            "both queues; the peer's next recv fails with ECONNRESET once, after any data "
            "that arrived before the reset.",
            "SO_LINGER {1, 0} makes close() abort the connection with RST: tcp_close() calls "
            "tcp_disconnect() when the linger time is zero (kernel behaviour; socket(7) "
            "describes SO_LINGER without it). No FIN handshake and no TIME_WAIT, at the price "
            "of unsent data and of the peer seeing an error. A socket still in SYN_SENT sends "
            "nothing on such a close (tcp_need_reset() covers synchronised states only).",
            "SO_LINGER with a positive time makes close() wait until the peer's TCP has "
            "acknowledged everything including the FIN, or the time runs out; on Linux it "
            "returns 0 either way and the orphan goes on sending. It never tells whether "
            "the peer application read the data: only an application-level reply can.",
            "close() drops one reference to the open file: with a dup()ed or inherited "
            "descriptor still open, nothing is sent. shutdown() acts on the connection for "
            "every holder (shutdown(2)).",
            "shutdown(SHUT_WR) sends FIN but keeps the socket open for reading: the peer reads "
            "EOF and can still send its reply (shutdown(2)). Writing on the half-closed side "
            "fails with EPIPE. The half-closed end waits in FIN_WAIT2 without a timer for as "
            "long as its fd is open; only an orphaned FIN_WAIT2 is bounded by tcp_fin_timeout.",
            "Who keeps a TIME_WAIT: the end that sent its FIN first and then received the "
            "other's, or both ends after a simultaneous close (sockprobe reuseaddr shows it); "
            "TCP_TIMEWAIT_LEN, 60 s, unless an RST or a new SYN ends it early, and none at "
            "all past tcp_max_tw_buckets. Counted here with sock_diag, as `ss -tan state "
            "time-wait` would.",
            "CPython sets SIGPIPE to SIG_IGN at start-up, so a write to a reset connection "
            "raises BrokenPipeError; a C program (or a Python child that restores SIG_DFL) is "
            "killed by SIGPIPE unless it ignores the signal or passes MSG_NOSIGNAL (send(2)).",
            "Other systems (documented, not measured here). Windows: recv() returns 0 (b'') "
            "after a graceful close, as on Linux (Winsock recv documentation); "
            "ConnectionResetError (WSAECONNRESET, 10054) comes from a reset: the peer process "
            "died, closed with unread data or with SO_LINGER {1, 0}. There is no SIGPIPE. "
            "macOS and FreeBSD offer the SO_NOSIGPIPE socket option, and in their TCP code "
            "(4.4BSD's tcp_disconnect) close() with unread data discards it and sends FIN, "
            "not RST as in unread_data; a reset then comes only if more data arrives.",
        ]
    )
