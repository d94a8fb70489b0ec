"""How many connections a range of N ports admits, per destination and per way of
choosing the local port.

connect() with no bind() picks the port in __inet_hash_connect(): a port may serve many
connections as long as each 4-tuple is unique (__inet_check_established()), so N ports
carry N connections to *each* destination, and the (N+1)th to the same one fails with
EADDRNOTAVAIL. bind((addr, 0)) picks the port in inet_csk_get_port() before the
destination is known, and a port so bound belongs to that socket alone: N binds exhaust
the range for every destination at once (the next bind() fails, EADDRINUSE). With
IP_BIND_ADDRESS_NO_PORT the bind() takes only the address and connect() picks the port
as if there had been no bind, so ports are shared across destinations again.
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
    in_block,
    out_of_descriptors,
)
from sockprobe.report import NA, Cell, Report, col

METHODS = {
    "connect": "connect(), no bind()",
    "bind0": "bind((addr, 0)), then connect()",
    "bind_no_port": "IP_BIND_ADDRESS_NO_PORT, bind((addr, 0)), then connect()",
}


@dataclass
class Fill:
    method: str
    destination: str
    attempts: int = 0
    connected: int = 0
    #: Of the connected sockets, how many got a port inside the block (all, unless the
    #: kernel ignored the per-socket range).
    in_block: int = 0
    #: Ports also used by the same method toward the first destination.
    shared: int = 0
    failed_call: str | None = None
    failure: str | None = None


def _fill(
    lab: Lab,
    method: str,
    block: tuple[int, int],
    dest: socket.socket,
    name: str,
    n: int,
    first_ports: set[int],
    live: list[socket.socket],
) -> tuple[Fill, set[int]]:
    """Connect up to n + 1 times; stop at the first failure."""
    f = Fill(method, name)
    ports: set[int] = set()
    for _ in range(n + 1):
        s = client(lab, block)
        f.attempts += 1
        if method == "bind_no_port":
            ephemeral.bind_no_port(s)
        if method in ("bind0", "bind_no_port"):
            r = bind0(lab, s)
            if r != "ok":
                f.failed_call, f.failure = "bind", r
                break
        r = connect(lab, s, dest)
        if r != "ok":
            f.failed_call, f.failure = "connect", r
            break
        live.append(s)
        f.connected += 1
        f.in_block += in_block(s, block)
        ports.add(int(s.getsockname()[1]))
    f.shared = len(ports & first_ports)
    return f, ports


def measure(
    lab: Lab, ports: Ports, n: int, first: socket.socket, second: socket.socket
) -> list[Fill] | NA:
    out: list[Fill] = []
    for method in METHODS:
        block = ports.block(n)
        if isinstance(block, NA):
            return block
        live: list[socket.socket] = []
        try:
            f1, used = _fill(lab, method, block, first, "first", n, set(), live)
            f2, _ = _fill(lab, method, block, second, "second", n, used, live)
        except OSError as exc:
            abort_all(lab, live)
            out_of_descriptors(lab, exc)
            return NA(f"{METHODS[method]}: {exc}")
        abort_all(lab, live)
        out += [f1, f2]
    return out


def report_on(report: Report, n: int, fills: list[Fill] | NA) -> None:
    t = report.table(
        "exhaustion",
        f"A private range of {n} ports, two destinations: what each way of connecting admits",
        [
            col("method"),
            col("destination"),
            col("how", "local port chosen by"),
            col("connected", "connected"),
            col("shared_ports", "ports shared with first"),
            col("failed_call", "then failed"),
            col("errno"),
            col("in_block", "ports inside the range"),
        ],
        keys=["method", "destination"],
    )
    if isinstance(fills, NA):
        for m in METHODS:
            for d in ("first", "second"):
                t.add(m, d, METHODS[m], fills, fills, fills, fills, fills)
        return
    for f in fills:
        failure: Cell = f.failure if f.failure else NA("every attempt connected")
        call: Cell = f.failed_call if f.failed_call else NA("every attempt connected")
        t.add(
            f.method,
            f.destination,
            METHODS[f.method],
            f.connected,
            f.shared,
            call,
            failure,
            f.in_block,
        )


def findings(report: Report, n: int, fills: list[Fill] | NA) -> None:
    if isinstance(fills, NA):
        return
    by = {(f.method, f.destination): f for f in fills}
    c1, c2 = by[("connect", "first")], by[("connect", "second")]
    if c1.failure:
        report.findings.append(
            f"With {n} ports, connect() admitted {c1.connected} connections to one "
            f"destination; the next failed with {c1.failure}. The same ports then carried "
            f"{c2.connected} more to a second destination ({c2.shared} of them shared): a "
            "port is exhausted per destination (each 4-tuple must be unique), not per host."
        )
    b1, b2 = by[("bind0", "first")], by[("bind0", "second")]
    if b1.failed_call == "bind" and b1.connected < n:
        report.findings.append(
            f"bind(port 0) found only {b1.connected} of the {n} free ports of its range before "
            f"{b1.failure}: the kernel's scan skipped a port (seen here with odd-sized "
            "per-socket ranges)."
        )
    if b1.failure:
        report.findings.append(
            f"bind((addr, 0)) before connect() admitted {b1.connected + b2.connected} in all: "
            f"{b1.connected} to the first destination, {b2.connected} to the second "
            f"({b2.failed_call or 'no call'} failed with {b2.failure or 'nothing'}), because a "
            "port taken by bind() is not shared."
        )
    n1, n2 = by[("bind_no_port", "first")], by[("bind_no_port", "second")]
    if n1.connected + n2.connected > b1.connected + b2.connected:
        report.findings.append(
            f"With IP_BIND_ADDRESS_NO_PORT the same bind-then-connect client got "
            f"{n1.connected} + {n2.connected} connections: connect() chose the ports, "
            "sharing them between destinations."
        )
