"""sockprobe framing: do message boundaries survive TCP, UDP, UNIX sockets and a length prefix?

The tutorials call it "sticky packets": two quick send()s of b"hello" and b"world" come
back from one recv(), and they blame Nagle. Two experiments, one module each:

- boundaries.py: every transport (TCP with and without TCP_NODELAY, UDP, AF_UNIX
  SOCK_STREAM and SOCK_SEQPACKET) x reader (one recv() per message, tiny recv(2) reads, a
  '!I' length prefix, makefile().readline()); what the reader got is compared with what
  was sent (tally.py); the sockets and the sender are in transports.py, the readers in
  readers.py;
- offload.py: where "one send() is one read" stops holding on datagram sockets (UDP_CORK,
  MSG_MORE, UDP_SEGMENT, UDP_GRO).

Precondition: a UDP datagram sent on the lab host must arrive (lab.require_udp_delivery;
the offload experiment always runs UDP), else the probe stops with Unsupported naming the
cause (lo down, ENETUNREACH, ...).
"""

from __future__ import annotations

from sockprobe import kernel
from sockprobe.lab import Lab, require_udp_delivery
from sockprobe.probes import Stopwatch
from sockprobe.probes.framing import boundaries, offload
from sockprobe.probes.framing.params import (
    DEFAULT_SIZES,
    READERS,
    STREAMS,
    TRANSPORT_LABEL,
    TRANSPORTS,
    Params,
    reader_label,
)
from sockprobe.probes.framing.tally import Outcome, messages, tally_datagrams, tally_stream
from sockprobe.probes.framing.transports import STALL_S
from sockprobe.report import Report, environment, params_dict

__all__ = [
    "DEFAULT_SIZES",
    "READERS",
    "STREAMS",
    "TRANSPORTS",
    "TRANSPORT_LABEL",
    "Params",
    "messages",
    "reader_label",
    "run",
    "tally_datagrams",
    "tally_stream",
]

SYSCTLS = (
    "net.ipv4.tcp_rmem",
    "net.core.rmem_default",
    "net.ipv4.tcp_autocorking",
    "net.ipv4.tcp_congestion_control",
)


def run(params: Params) -> Report:
    watch = Stopwatch()
    host, deadline = params.resolve()
    report = Report(
        "framing", params=params_dict(params), environment=environment(kernel.sysctls(SYSCTLS))
    )
    msgs = messages(params.sizes)
    with Lab(host, deadline) as lab:
        require_udp_delivery(lab)
        outcomes = boundaries.measure(lab, params, msgs)
        off = offload.measure(lab, params)
        report.endpoints = lab.endpoints
    boundaries.add_table(report, params, msgs, outcomes)
    offload.add_table(report, params, off)
    boundaries.add_findings(report, params, msgs, outcomes)
    offload.add_findings(report, params, off)
    # The boundaries answer the command's question; the offload cases are findings.
    report.summary = boundaries.headline(params, msgs, outcomes) or offload.headline(off) or ""
    _notes(report, params, outcomes)
    report.duration_s = watch()
    return report


def _notes(report: Report, p: Params, outcomes: list[Outcome]) -> None:
    report.notes.extend(
        [
            "TCP and AF_UNIX SOCK_STREAM are byte streams (tcp(7), unix(7)): the kernel keeps "
            "the bytes and their order, not the send() calls. A recv(n) returns whatever is "
            "queued, up to n bytes, copying across segments, so a receiver that reads late gets "
            "writes merged and cut at n, whatever Nagle did. TCP_NODELAY only changes when "
            "segments leave (sockprobe nagle).",
            "UDP (udp(7)) and SOCK_SEQPACKET (unix(7)) keep message boundaries: on a default "
            "socket one send() is one read. UDP_CORK and MSG_MORE join several UDP sends into "
            "one datagram, UDP_SEGMENT splits one send into many datagrams and UDP_GRO hands "
            "several to one read (the offload table measures each; SOCK_SEQPACKET ignores "
            "MSG_MORE). A buffer smaller than the datagram returns its first bytes and the "
            "kernel discards the rest; recvmsg() reports it with MSG_TRUNC in msg_flags "
            "(recv(2)). Windows (documented, not measured here) fails such a read with "
            "WSAEMSGSIZE instead of returning the head quietly.",
            "Length prefix: struct '!I' is network byte order and unsigned, identical on every "
            "host (the tutorials' struct.pack('i', n) is native order and signed). On a stream "
            "both the 4-byte header and the payload are read in loops, because recv(4) may "
            "return fewer bytes too. On a datagram transport the reader peeks at the header "
            "(MSG_PEEK leaves the datagram queued) and reads header + payload in one call, "
            "since a datagram read in pieces loses its rest.",
            "makefile('rb') puts a BufferedReader over the socket (reads of "
            "io.DEFAULT_BUFFER_SIZE bytes) and readline() splits at b'\\n'. The payload must "
            "not contain the delimiter; a length prefix has no such restriction.",
            "recv() calls count the reads that returned data (the final EOF read is not "
            "counted); for the length prefix on datagrams they include the MSG_PEEK reads. "
            "Merged/split/recv() counts depend on timing in general and are compared with a "
            "tolerance; with the late receiver, intact and truncated counts follow from the "
            "kernel's rules alone. With --receiver concurrent every count measures the "
            "scheduler (which bytes had arrived when the reader ran) and is context.",
            "UNIX sockets come from socketpair() (no path to unlink; `ss -x` shows them by the "
            "inodes under Endpoints). TCP and UDP use ephemeral loopback ports: check with "
            "tcpdump -i lo -nn 'port <port>' (one packet per datagram, and TCP segments that "
            "do not match the reads).",
            "Other platforms (documented, not measured here): macOS has no AF_UNIX "
            "SOCK_SEQPACKET (socketpair() fails, and those rows show n/a); Windows' AF_UNIX "
            "is SOCK_STREAM only. UDP_CORK, UDP_SEGMENT and UDP_GRO are Linux-only (MSG_MORE "
            "too: the offload rows say n/a elsewhere).",
        ]
    )
    if p.receiver == "late":
        report.notes.append(
            "Receiver 'late': on a byte stream, reading starts once SIOCINQ (tcp(7), "
            "unix(7)) shows every byte queued at the receiver; on a datagram transport, once "
            "the sender has finished. If the buffers stop filling for "
            f"{STALL_S:g} s first, the receiver starts anyway: the 'reading began' column "
            "says 'during sends' and a finding says so."
        )
