"""UDP across a real path: the path MTU, fragmentation, and IP_PMTUDISC_DO.

Loopback's MTU is 65,536, so a datagram is never fragmented there. On a path of MTU M
an IPv4 datagram carries at most M - 20 (IP header) - 8 (UDP header) bytes of payload in
one packet: 1,472 B at M = 1,500. A larger one is
- fragmented by this host and reassembled by the receiver's, with the default
  IP_PMTUDISC_WANT (ip(7); ip_fragment() in net/ipv4/ip_output.c): sent whole, read
  whole;
- refused by send() with EMSGSIZE under IP_PMTUDISC_DO, which sets DF and forbids local
  fragmentation (ip_append_data() checks the size against the path MTU).
IP_MTU on a connected socket reads the path MTU the kernel knows (ip(7)).
"""

from __future__ import annotations

import socket
import time
from typing import Any, ClassVar

from sockprobe.lab import Lab
from sockprobe.peer.client import Peer
from sockprobe.peer.steps import Rule, ServerHalf, register
from sockprobe.report import CONTEXT, NA, Report, col
from sockprobe.status import oserror_name

# linux/in.h; the socket module does not export them.
IP_MTU_DISCOVER = 10
IP_PMTUDISC_WANT = 1
IP_PMTUDISC_DO = 2
IP_MTU = 14
IPV4_UDP_HEADERS = 28


@register
class UdpSink(ServerHalf):
    """Bind a UDP socket on the agent's address and record what arrives (from the
    controller's address only): the real size of each datagram (MSG_TRUNC, udp(7))."""

    name = "udp_sink"
    rules: ClassVar[dict[str, Rule]] = {
        "count": Rule(int, 1, 1000, 10),
        "seconds": Rule(float, 0.1, 30, 5),
    }

    def start(self) -> dict[str, Any]:
        self.sock = self.lab.open_socket(socket.SOCK_DGRAM)
        self.sock.bind(self.lab.host.sockaddr(0))
        self.sizes: list[int] = []
        self.worker = self.lab.thread(self._collect, name="sockprobe-serve-udp")
        return {"port": self.sock.getsockname()[1], "reasm_ok": _reasm_ok()}

    def _collect(self) -> None:
        buf = bytearray(65536)
        while len(self.sizes) < self.p["count"]:
            left = self.lab.deadline.remaining()
            if left <= 0 or self.stop_requested():
                return
            self.sock.settimeout(min(left, 0.1))
            try:
                n, addr = self.sock.recvfrom_into(buf, 0, socket.MSG_TRUNC)
            except TimeoutError:
                continue
            if addr[0] == self.controller:
                self.sizes.append(n)

    def stop_requested(self) -> bool:
        return getattr(self, "_stop", False)

    def finish(self) -> dict[str, Any]:
        # The controller has sent everything; give the last datagram a moment to arrive.
        end = time.monotonic() + 1.0
        while len(self.sizes) < self.p["count"] and time.monotonic() < end:
            time.sleep(0.01)
        self._stop = True
        self.worker.join(1.0)
        return {"sizes": list(self.sizes), "reasm_ok": _reasm_ok()}


def _reasm_ok() -> int | None:
    """Ip ReasmOKs of this network namespace (/proc/net/snmp): datagrams reassembled."""
    return _snmp_ip("ReasmOKs")


def _snmp_ip(name: str) -> int | None:
    try:
        with open("/proc/net/snmp") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    heads = [ln.split() for ln in lines if ln.startswith("Ip:")]
    if len(heads) < 2 or name not in heads[0]:
        return None
    return int(heads[1][heads[0].index(name)])


def _default_note() -> str:
    """Whether WANT is what a new socket here starts with: inet_create()
    (net/ipv4/af_inet.c) picks DONT when net.ipv4.ip_no_pmtu_disc is non-zero."""
    from sockprobe import kernel
    from sockprobe.probes.udp_truncate.mtu import default_pmtudisc

    v = kernel.sysctl_int("net.ipv4.ip_no_pmtu_disc")
    if v is None:
        return ""
    d = default_pmtudisc(v)
    return (
        " (a new socket's default here: net.ipv4.ip_no_pmtu_disc = 0)"
        if d == "WANT"
        else f" (set: a new socket here starts with {d}, net.ipv4.ip_no_pmtu_disc = {v})"
    )


def run(peer: Peer, lab: Lab, report: Report) -> None:
    if ":" in peer.address:
        report.notes.append("The UDP path experiment is IPv4 only (IP_MTU_DISCOVER).")
        return
    # The path MTU, from a connected socket (no datagram needed: the route's MTU).
    probe = lab.open_socket(socket.SOCK_DGRAM, family=socket.AF_INET)
    probe.connect((peer.address, 9))
    mtu = probe.getsockopt(socket.IPPROTO_IP, IP_MTU)
    lab.close(probe)
    fits = mtu - IPV4_UDP_HEADERS
    sizes = [fits, fits + 1, 4 * fits]
    cases = [("want", IP_PMTUDISC_WANT, s) for s in sizes] + [
        ("do", IP_PMTUDISC_DO, s) for s in sizes
    ]
    ready = peer.start("udp_sink", count=len(cases))
    frag0 = _snmp_ip("FragCreates")
    tx = lab.open_socket(socket.SOCK_DGRAM, family=socket.AF_INET)
    tx.connect((peer.address, int(ready["port"])))
    lab.record("udp path sender", tx)
    outcomes: list[tuple[str, int, str]] = []
    for label, mode, size in cases:
        tx.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, mode)
        try:
            tx.send(b"u" * size)
            outcomes.append((label, size, "sent"))
        except OSError as exc:
            outcomes.append((label, size, oserror_name(exc)))
        time.sleep(0.002)  # keep the order on the agent's side
    frag1 = _snmp_ip("FragCreates")
    far = peer.finish("udp_sink")
    got = list(far.get("sizes") or [])
    t = report.table(
        "path_udp",
        f"UDP across the path to {peer.name}: path MTU {mtu} B, {fits} B of payload per packet",
        [
            col("pmtudisc", "IP_MTU_DISCOVER"),
            col("size", "size", "B"),
            col("send", "send()"),
            col("delivered", "delivered whole"),
            col("fragmented", "over the path MTU"),
        ],
        keys=["pmtudisc", "size"],
    )
    pending = list(got)
    whole = 0
    for label, size, result in outcomes:
        delivered: Any
        if result != "sent":
            delivered = False
        elif size in pending:
            pending.remove(size)
            delivered = True
        else:
            delivered = False
        t.add(f"IP_PMTUDISC_{label.upper()}", size, result, delivered, size > fits)
        whole += int(label == "want" and size > fits and delivered is True)
    frag = NA("/proc/net/snmp not readable") if frag0 is None or frag1 is None else frag1 - frag0
    c = report.table(
        "path_udp_counters",
        "Fragments this host created during the sends (Ip FragCreates, this network namespace)",
        [col("fragments_created", "fragments", "", CONTEXT)],
    )
    c.add(frag)
    want_big = [o for o in outcomes if o[0] == "want" and o[1] > fits]
    do_big = [o for o in outcomes if o[0] == "do" and o[1] > fits]
    refused = sorted({o[2] for o in do_big if o[2] != "sent"})
    report.summary = (
        f"path MTU {mtu} B: {whole} of {len(want_big)} datagrams over {fits} B fragmented and "
        "delivered whole; IP_PMTUDISC_DO: " + (", ".join(refused) if refused else "sent")
    )
    report.findings.append(
        f"The path MTU read with IP_MTU is {mtu} B, so one packet carries at most {fits} B "
        f"of UDP payload. With IP_PMTUDISC_WANT{_default_note()}, {whole} of {len(want_big)} "
        f"larger datagrams were fragmented here and delivered whole"
        + (f" ({frag} fragments created)" if isinstance(frag, int) else "")
        + "; with IP_PMTUDISC_DO "
        + (
            f"send() refused them with {', '.join(refused)}."
            if refused
            else "they were sent all the same."
        )
    )
