"""Buffers: the SO_SNDBUF / SO_RCVBUF requested and what getsockopt() read back (table
`buffers`), with the kernel's rule that turns one into the other (socket(7): the request
is capped at net.core.wmem_max / rmem_max and then doubled for bookkeeping overhead; tiny
requests are raised to a floor, sock_setsockopt in net/core/sock.c)."""

from __future__ import annotations

from sockprobe import kernel
from sockprobe.probes.partial_send.params import PLACEMENTS, Params
from sockprobe.probes.partial_send.scenarios import Scenario
from sockprobe.report import Report, col


def table(report: Report, p: Params, results: list[Scenario]) -> None:
    b = report.table(
        "buffers",
        "Buffers: requested, and what getsockopt() read back",
        [
            col("placement", "SO_RCVBUF set on"),
            col("sndbuf_requested", "SO_SNDBUF requested (sender)", "B"),
            col("sndbuf_effective", "SO_SNDBUF effective", "B"),
            col("rcvbuf_requested", "SO_RCVBUF requested (receiver)", "B"),
            col("rcvbuf_effective", "SO_RCVBUF effective", "B"),
        ],
        keys=["placement"],
    )
    for pl in PLACEMENTS:
        first = next((sc for sc in results if sc.placement == pl), None)
        if first is not None:
            b.add(pl, p.sndbuf, first.sndbuf, p.rcvbuf, first.rcvbuf)


def buffer_verb(requested: int, effective: int, cap_name: str) -> str:
    """How setsockopt's value became what getsockopt read back (module docstring)."""
    cap = kernel.sysctl_int(cap_name)
    if effective == 2 * requested:
        return "doubled"
    if cap is not None and requested > cap and effective == 2 * cap:
        return f"capped at {cap_name} ({cap:,}) and doubled"
    if effective > 2 * requested:
        return "raised to the kernel's floor"
    return "not doubled" if effective == requested else "changed"


def finding(p: Params, results: list[Scenario]) -> str:
    eff_snd = max(sc.sndbuf for sc in results)
    eff_rcv = max(sc.rcvbuf for sc in results)
    return (
        f"Read back with getsockopt after setsockopt: SO_SNDBUF {p.sndbuf:,} → "
        f"{eff_snd:,} B ({buffer_verb(p.sndbuf, eff_snd, 'net.core.wmem_max')}), "
        f"SO_RCVBUF {p.rcvbuf:,} → {eff_rcv:,} B "
        f"({buffer_verb(p.rcvbuf, eff_rcv, 'net.core.rmem_max')})."
    )
