"""Specific-address and wildcard binds on one port, SO_REUSEADDR on both.

Linux's bind rule (inet_bind_conflict(), net/ipv4/inet_connection_sock.c) treats a
wildcard as overlapping every address, and lets two overlapping sockets share a port
only when both set SO_REUSEADDR and the one already there is not listening. So
127.0.0.1:P and 0.0.0.0:P both bind while neither listens; then the first listen()
succeeds (the check looks at the other socket's state, and it is not listening) and
from then on the other socket's listen(), and any further bind, is refused.

To keep the probe off the network, the specific-address socket is the one that
listens; the wildcard socket's listen() is only tried after it, when it is refused, so
nothing ever listens on the wildcard.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass

from sockprobe.probes.reuseaddr.common import Ctx, bind_any_port
from sockprobe.report import NA, Cell, Report, col
from sockprobe.status import oserror_name

ORDERS = ("wildcard_first", "specific_first")


@dataclass
class WildRow:
    order: str
    reuseaddr: bool
    bind_first: Cell
    bind_second: Cell
    listen_specific: Cell
    listen_wildcard: Cell
    bind_third: Cell


def _try(fn: Callable[[], None]) -> str:
    try:
        fn()
    except OSError as exc:
        return oserror_name(exc)
    return "ok"


def _free_port(ctx: Ctx) -> int:
    """A port free on the wildcard (so on every address of the family)."""
    s = ctx.lab.open_socket()
    try:
        bind_any_port(s, (ctx.host.wildcard, 0), ctx.host)
        return int(s.getsockname()[1])
    finally:
        ctx.lab.close(s)


def measure(ctx: Ctx, order: str, reuseaddr: bool) -> WildRow:
    lab = ctx.lab
    port = _free_port(ctx)
    wild, spec = lab.open_socket(), lab.open_socket()
    for s in (wild, spec):
        if reuseaddr:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    w_addr, s_addr = (ctx.host.wildcard, port), ctx.host.sockaddr(port)
    pairs = [(wild, w_addr), (spec, s_addr)]
    if order == "specific_first":
        pairs.reverse()
    first = _try(lambda: pairs[0][0].bind(pairs[0][1]))
    second = _try(lambda: pairs[1][0].bind(pairs[1][1]))
    na = NA("the two sockets did not both bind")
    listen_s: Cell = na
    listen_w: Cell = na
    third: Cell = na
    if first == "ok" and second == "ok":
        listen_s = _try(lambda: spec.listen(1))
        if listen_s == "ok":
            lab.record(f"specific listener ({order})", spec)
        listen_w = _try(lambda: wild.listen(1))
        extra = lab.open_socket()
        if reuseaddr:
            extra.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        third = _try(lambda: extra.bind(s_addr))
        lab.close(extra)
    lab.close(wild)
    lab.close(spec)
    return WildRow(order, reuseaddr, first, second, listen_s, listen_w, third)


def table(report: Report, rows: list[WildRow]) -> None:
    t = report.table(
        "wildcard",
        "A wildcard and a specific address on one port: bind both, then listen",
        [
            col("order"),
            col("reuseaddr", "SO_REUSEADDR both"),
            col("bind_first", "first bind"),
            col("bind_second", "second bind"),
            col("listen_specific", "listen() specific"),
            col("listen_wildcard", "then listen() wildcard"),
            col("bind_third", "then a 3rd socket binds specific"),
        ],
        keys=["order", "reuseaddr"],
    )
    for r in rows:
        t.add(
            r.order,
            r.reuseaddr,
            r.bind_first,
            r.bind_second,
            r.listen_specific,
            r.listen_wildcard,
            r.bind_third,
        )


def findings(report: Report, rows: list[WildRow], address: str, wildcard: str) -> None:
    both = [r for r in rows if r.reuseaddr]
    plain = [r for r in rows if not r.reuseaddr]
    if both:
        binds = sorted({f"{r.bind_first}/{r.bind_second}" for r in both})
        listens = sorted({f"{r.listen_specific}, then {r.listen_wildcard}" for r in both})
        thirds = sorted({str(r.bind_third) for r in both})
        report.findings.append(
            f"{address} and {wildcard} on one port, SO_REUSEADDR on both: the two binds gave "
            f"{' and '.join(binds)} in either order; listen() on {address} then on "
            f"{wildcard} gave {' and '.join(listens)}; a third socket's bind to {address} "
            f"(SO_REUSEADDR set) then gave {'/'.join(thirds)}"
            # inet_bind_conflict(): SO_REUSEADDR on both never shares with a TCP_LISTEN
            # socket; the wildcard one, bound but refused listen(), is no conflict.
            + (
                f", refused by the {address} listener."
                if thirds == ["EADDRINUSE"] and listens == ["ok, then EADDRINUSE"]
                else "."
            )
        )
    for r in plain:
        report.findings.append(
            f"Without SO_REUSEADDR the second of the two binds gave {r.bind_second}."
        )
