"""sockprobe udp-truncate: what happens to a datagram that does not fit.

One experiment per module, each on fresh UDP sockets on the lab host:

- truncation.py: a datagram larger than the read buffer (MSG_TRUNC, the true size);
- largest.py: the largest datagram per address family, and one byte more;
- boundaries.py: back-to-back datagrams are separate reads (on a default socket);
- overflow.py: a burst into a receiver that does not read, drops counted per socket;
- icmp.py: sending to a closed port, who hears the ICMP port unreachable;
- mtu.py: what loopback's 64 KiB MTU hides, on an MTU-1500 `lo` in a private network
  namespace (fragments, IP_PMTUDISC_DO, IP_MTU, UDP_SEGMENT).

Precondition: a datagram sent on the lab host must arrive (lab.require_udp_delivery),
else the probe stops with Unsupported naming the cause (lo down, ENETUNREACH, ...).
"""

from __future__ import annotations

from sockprobe import kernel
from sockprobe.lab import Lab, require_udp_delivery
from sockprobe.probes import Stopwatch
from sockprobe.probes.udp_truncate import (
    boundaries,
    icmp,
    largest,
    mtu,
    overflow,
    truncation,
)
from sockprobe.probes.udp_truncate.boundaries import BOUNDARY_SIZES
from sockprobe.probes.udp_truncate.common import pattern
from sockprobe.probes.udp_truncate.params import DEFAULT_SIZES, MAX_SIZE, Params
from sockprobe.report import Report, environment, params_dict

__all__ = ["BOUNDARY_SIZES", "DEFAULT_SIZES", "MAX_SIZE", "Params", "pattern", "run"]

SYSCTLS = (
    "net.core.rmem_default",
    "net.core.rmem_max",
    "net.core.wmem_default",
    "net.ipv4.udp_mem",
    "net.ipv4.udp_rmem_min",
    "net.ipv4.ip_no_pmtu_disc",
)


def run(params: Params) -> Report:
    watch = Stopwatch()
    host, deadline = params.resolve()
    report = Report(
        "udp-truncate",
        params=params_dict(params),
        environment=environment(kernel.sysctls(SYSCTLS)),
    )
    with Lab(host, deadline) as lab:
        require_udp_delivery(lab)
        sweep = truncation.measure(lab, params)
        limits = largest.measure(lab)
        bounds = boundaries.measure(lab)
        cases = overflow.measure(lab, params)
        unreachable = icmp.measure(lab, params)
        path = mtu.measure(lab, params)
        report.endpoints = lab.endpoints
    fam = host.family
    truncation.add_table(report, params, sweep)
    largest.add_table(report, limits)
    boundaries.add_table(report, bounds)
    overflow.add_table(report, params, fam, cases)
    icmp.add_table(report, fam, unreachable)
    mtu.add_table(report, params, path)
    heads = truncation.add_findings(report, params, sweep)
    heads += largest.add_findings(report, limits)
    boundaries.add_findings(report, bounds)
    heads += overflow.add_findings(report, params, fam, cases)
    icmp.add_findings(report, fam, params, unreachable)
    heads += mtu.add_findings(report, params, path)
    report.summary = "; ".join(heads)
    _notes(report)
    report.duration_s = watch()
    return report


def _notes(report: Report) -> None:
    report.notes.extend(
        [
            "udp(7): on a socket without UDP_GRO a receive returns at most one datagram; "
            "when it is bigger than the buffer the rest is discarded and recvmsg() sets "
            "MSG_TRUNC in msg_flags. "
            "recv(2): MSG_TRUNC passed as a flag makes Linux return the datagram's real "
            "length. Pass it only to recv_into()/recvmsg_into(): Python's recv() would size "
            "its result by that length and return bytes the kernel never wrote.",
            "One send() is one read only for a default socket: UDP_CORK or MSG_MORE join "
            "several sends into one datagram, UDP_SEGMENT splits one send into many "
            "datagrams, and UDP_GRO hands several datagrams to one read (sockprobe framing, "
            "table offload, measures each).",
            "The largest UDP payload comes from the 16-bit length fields: IPv4's total "
            "length counts the 20-byte IP header, IPv6's payload length does not, and both "
            "count the 8-byte UDP header (65,507 vs 65,527 B). Larger sends fail with "
            "EMSGSIZE. Loopback's MTU (65,536) is above all of them, so nothing is "
            "fragmented there; the mtu table shows a 1,500 B path (ip(7), IP_MTU_DISCOVER).",
            "A full receive queue drops whole datagrams at arrival; the sender is not told. "
            "Per-socket counts: the drops column of /proc/net/udp (match the inode), `ss "
            "-uamn` (the d field of skmem), and SO_RXQ_OVFL (socket(7)), which stamps the "
            "cumulative count on each datagram queued after a drop. Udp RcvbufErrors in "
            "/proc/net/snmp (Udp6 in /proc/net/snmp6) counts for this network namespace "
            "(in a container: the container's), every socket in it included.",
            "SO_RCVBUF (socket(7)): the kernel caps the value at net.core.rmem_max and "
            "doubles it, for bookkeeping (SO_RCVBUFFORCE, with CAP_NET_ADMIN, skips the "
            "cap), and each queued datagram is charged its whole buffer (truesize), not only its "
            "payload, so far fewer datagrams fit than SO_RCVBUF / size suggests.",
            "ICMP errors: a connected UDP socket gets ECONNREFUSED on its next call after a "
            "port unreachable; an unconnected one only with IP_RECVERR (ip(7); the error "
            "also goes to the error queue, MSG_ERRQUEUE). udp(7)'s error-handling paragraph "
            "reads as if unconnected sockets always got the error; this run shows what "
            "this kernel did.",
            "The 'closed' port is held by a socket connected to its own address, so no other "
            "program can take it during the run; the kernel delivers a datagram to a "
            "connected UDP socket only from its peer, so ours found no socket, as at a "
            "closed port (the holder is listed under Endpoints).",
            "The MTU-1500 path is `lo` in a private network namespace made by a forked child "
            "(unshare(CLONE_NEWNET): root, or an unprivileged user namespace where the kernel "
            "allows one; the mtu rows say n/a with the reason otherwise). Its Ip counters "
            "count nothing but the experiment, so the fragment deltas are exact.",
            "Other platforms (documented, not measured here): Windows fills the buffer with "
            "the head of a too-large datagram but fails the receive with WSAEMSGSIZE (10040) "
            "instead of returning quietly, and an ICMP port unreachable makes even an "
            "unconnected socket's next recvfrom() fail with WSAECONNRESET (10054) unless "
            "SIO_UDP_CONNRESET is turned off. macOS sets MSG_TRUNC in the flags but does not "
            "take it as an input flag, and has no SO_RXQ_OVFL and no /proc (`netstat -s -p "
            "udp` shows system-wide full-buffer drops); there a datagram larger than the "
            "socket's send buffer fails with EMSGSIZE, and that buffer defaults to the sysctl "
            "net.inet.udp.maxdgram (9,216 B on many releases): raise SO_SNDBUF to send more. "
            "Network namespaces, UDP_SEGMENT and UDP_GRO are Linux-only.",
        ]
    )
