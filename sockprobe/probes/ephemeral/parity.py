"""The parity split: connect() prefers ports of one parity, bind(port 0) the other.

__inet_hash_connect() starts its scan at an offset rounded to the parity of the range's
low end and steps by 2, trying the other parity only when the first is exhausted;
inet_csk_find_open_port() (bind with port 0) does the opposite (`offset |= 1`), so that
servers binding port 0 do not use up the ports that clients' connect() needs (Linux 4.6,
commit "tcp/dccp: try to not exhaust ip_local_port_range in connect()"). A socket with its
own IP_LOCAL_PORT_RANGE scans every port (step 1, Linux 6.8+), and an
IP_BIND_ADDRESS_NO_PORT bind leaves the choice to connect(). The probe opens `samples`
sockets per allocator, keeps them open so that each takes a new port, and counts parities.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from sockprobe.kernel import ephemeral
from sockprobe.lab import Lab
from sockprobe.probes.ephemeral._range import (
    Ports,
    abort_all,
    bind0,
    client,
    connect,
    out_of_descriptors,
)
from sockprobe.report import NA, VOLATILE, Report, col

ALLOCATORS = {
    "connect": "connect(), no bind()",
    "bind0": "bind((addr, 0))",
    "bind_no_port": "IP_BIND_ADDRESS_NO_PORT bind, then connect()",
    "connect_narrowed": "connect() with IP_LOCAL_PORT_RANGE",
    "bind0_narrowed": "bind((addr, 0)) with IP_LOCAL_PORT_RANGE",
}


@dataclass(frozen=True)
class Count:
    allocator: str
    sockets: int
    even: int
    odd: int
    na: NA | None = None

    @property
    def parity(self) -> str:
        if self.even and not self.odd:
            return "even"
        if self.odd and not self.even:
            return "odd"
        return "mixed"


def _one(
    lab: Lab, allocator: str, k: int, dest: socket.socket, block: tuple[int, int] | None
) -> Count:
    live: list[socket.socket] = []
    ports: list[int] = []
    try:
        for _ in range(k):
            s = client(lab, block)
            if allocator == "bind_no_port":
                ephemeral.bind_no_port(s)
            if allocator.startswith("bind"):
                r = bind0(lab, s)
                if r != "ok":
                    return Count(allocator, len(ports), 0, 0, NA(f"bind() failed: {r}"))
            if allocator != "bind0" and allocator != "bind0_narrowed":
                r = connect(lab, s, dest)
                if r != "ok":
                    return Count(allocator, len(ports), 0, 0, NA(f"connect() failed: {r}"))
            live.append(s)
            ports.append(int(s.getsockname()[1]))
    finally:
        abort_all(lab, live)
    even = sum(1 for p in ports if p % 2 == 0)
    return Count(allocator, len(ports), even, len(ports) - even)


def measure(lab: Lab, ports: Ports, k: int, dest: socket.socket) -> list[Count]:
    out = []
    for a in ALLOCATORS:
        block: tuple[int, int] | None = None
        if a.endswith("_narrowed"):
            b = ports.block(k)
            if isinstance(b, NA):
                out.append(Count(a, 0, 0, 0, b))
                continue
            block = b
        try:
            out.append(_one(lab, a, k, dest, block))
        except OSError as exc:
            out_of_descriptors(lab, exc)
            out.append(Count(a, 0, 0, 0, NA(f"{ALLOCATORS[a]}: {exc}")))
    return out


def report_on(report: Report, counts: list[Count], lo: int) -> None:
    low = "even" if lo % 2 == 0 else "odd"
    t = report.table(
        "parity",
        f"Port parity per allocator (ip_local_port_range starts at {low} {lo})",
        [
            col("allocator"),
            col("how"),
            col("sockets"),
            col("parity"),
            col("even", "even ports", "", VOLATILE),
            col("odd", "odd ports", "", VOLATILE),
        ],
        keys=["allocator"],
    )
    for c in counts:
        if c.na is not None:
            t.add(c.allocator, ALLOCATORS[c.allocator], c.na, c.na, c.na, c.na)
        else:
            t.add(c.allocator, ALLOCATORS[c.allocator], c.sockets, c.parity, c.even, c.odd)
    by = {c.allocator: c for c in counts if c.na is None}
    con, b0 = by.get("connect"), by.get("bind0")
    if con is not None and b0 is not None:
        report.findings.append(
            f"Parity split: {con.sockets} connect() calls got {con.parity} ports "
            f"({con.even} even, {con.odd} odd) and {b0.sockets} bind(port 0) calls {b0.parity} "
            f"ones ({b0.even} even, {b0.odd} odd); the range starts at {low} {lo}, the parity "
            "connect() tries first."
        )
    nc = by.get("connect_narrowed")
    if nc is not None:
        report.findings.append(
            f"With IP_LOCAL_PORT_RANGE the split is off: {nc.sockets} connect() calls got "
            f"{nc.even} even and {nc.odd} odd ports."
        )
