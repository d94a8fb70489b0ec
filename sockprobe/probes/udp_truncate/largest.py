"""The largest datagram: found by bisection over send() sizes, read back, one more refused.

The 16-bit IP length field caps a UDP payload: IPv4's total length counts its own
20-byte header, IPv6's payload length does not; both count the 8-byte UDP header, so
65,507 B over IPv4 and 65,527 B over IPv6. The refusal is EMSGSIZE from
__ip_append_data() (net/ipv4/ip_output.c): with the default IP_PMTUDISC_WANT the socket
may fragment, so the bound is IP_MAX_MTU (65,535) less the IP header, not the path MTU
(the mtu experiment shows the other branch). Both address families are tried: the lab
host's, then the other family's loopback.
"""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass

from sockprobe.kernel import udp
from sockprobe.lab import Host, Lab
from sockprobe.probes.udp_truncate.common import ARRIVAL_CAP, n, pattern, wait_for
from sockprobe.report import NA, Report, col
from sockprobe.status import oserror_name, oserror_text

#: Above any UDP limit: the bisection's upper bound, which never fits.
SEARCH_TOP = 1 << 17


@dataclass
class Row:
    family: str
    address: str
    limit: int | None = None
    arithmetic: int = 0
    received_at_limit: int | None = None
    over_error: str | None = None
    unavailable: str | None = None


def family_hosts(host: Host) -> list[Host]:
    other = Host(socket.AF_INET, "127.0.0.1") if host.is_v6 else Host(socket.AF_INET6, "::1")
    return [host, other]


def measure_one(lab: Lab, host: Host) -> Row:
    fam = "IPv6" if host.is_v6 else "IPv4"
    row = Row(fam, host.address, arithmetic=udp.udp_payload_limit(host.family))
    opened: list[socket.socket] = []
    try:
        # socket() itself fails (EAFNOSUPPORT) where the family is compiled out or
        # disabled; bind() fails (EADDRNOTAVAIL) where the loopback address is missing.
        opened.append(lab.open_socket(socket.SOCK_DGRAM, family=host.family))
        opened.append(lab.open_socket(socket.SOCK_DGRAM, family=host.family))
        rx, tx = opened
        rx.bind(host.sockaddr(0))
        tx.connect(rx.getsockname())
    except OSError as exc:
        row.unavailable = f"{fam} {host.address} unavailable here: {oserror_text(exc)}"
        for s in opened:
            lab.close(s)
        return row
    lab.record(f"{fam} limit receiver", rx)
    lab.record(f"{fam} limit sender", tx)
    buf = bytearray(SEARCH_TOP)

    def fits(size: int) -> bool:
        try:
            tx.send(bytes(size))
        except OSError as exc:
            if exc.errno == errno.EMSGSIZE:
                return False
            raise
        # Consume it, so the receive queue never fills during the search.
        rx.settimeout(wait_for(lab, ARRIVAL_CAP, "reading a limit-search datagram"))
        rx.recv_into(buf)
        return True

    # Bisection for the largest size send() accepts: lo always fits, hi never does.
    lo, hi = 0, SEARCH_TOP
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid
    row.limit = lo
    tx.send(pattern(lo))
    rx.settimeout(wait_for(lab, ARRIVAL_CAP, "reading the largest datagram"))
    got = rx.recv_into(buf)
    row.received_at_limit = got if buf[:got] == pattern(lo) else None
    try:
        tx.send(bytes(lo + 1))
    except OSError as exc:
        row.over_error = oserror_name(exc)
    lab.close(tx)
    lab.close(rx)
    return row


def measure(lab: Lab) -> list[Row]:
    return [measure_one(lab, h) for h in family_hosts(lab.host)]


def add_table(report: Report, rows: list[Row]) -> None:
    t = report.table(
        "largest",
        "The largest datagram (found by bisection over send() sizes)",
        [
            col("family"),
            col("address"),
            col("largest_send", "largest send()", "B"),
            col("read_back", "read back", "B"),
            col("one_more", "one byte more"),
            col("arithmetic", "header arithmetic", "B"),
        ],
        keys=["family"],
    )
    for r in rows:
        if r.unavailable is not None:
            na = NA(r.unavailable)
            t.add(r.family, r.address, na, na, na, r.arithmetic)
            continue
        back = (
            r.received_at_limit
            if r.received_at_limit is not None
            else NA("the largest datagram did not come back intact")
        )
        t.add(r.family, r.address, r.limit, back, r.over_error or "accepted", r.arithmetic)


def _arith_text(family: str) -> str:
    if family == "IPv4":
        return f"65,535 − {udp.IPV4_HEADER} IPv4 header − {udp.UDP_HEADER} UDP header bytes"
    return f"65,535 − {udp.UDP_HEADER} UDP header bytes; IPv6's length excludes its own header"


def add_findings(report: Report, rows: list[Row]) -> list[str]:
    for r in rows:
        if r.limit is None:
            continue
        arith = (
            f" ({_arith_text(r.family)})"
            if r.limit == r.arithmetic
            else f" (the header arithmetic gives {n(r.arithmetic)})"
        )
        back = (
            "it was read back whole"
            if r.received_at_limit == r.limit
            else "it did not come back whole"
        )
        report.findings.append(
            f"{r.family} ({r.address}): the largest datagram send() accepted was "
            f"{n(r.limit)} B{arith} and {back}; {n(r.limit + 1)} B raised "
            f"{r.over_error or 'nothing'}."
        )
    first = next((r for r in rows if r.limit is not None), None)
    return [] if first is None else [f"largest datagram {n(first.limit or 0)} B ({first.family})"]
