"""ICMP port unreachable: who hears about a datagram sent to a port nobody receives on.

A connected socket, an unconnected one and an unconnected one with IP_RECVERR each send
to a port on which no socket receives from them, then try one recv(). The kernel's rule
(__udp4_lib_err() in net/ipv4/udp.c, __udp6_lib_err() in net/ipv6/udp.c): without
IP_RECVERR the error is set on the socket (sk_err, reported by its next call) only when
it is a hard error and the socket is connected; with IP_RECVERR it is also queued on the
error queue and set whatever the socket's state. Otherwise the kernel drops it.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass

from sockprobe.kernel import udp
from sockprobe.lab import Lab, fmt_addr
from sockprobe.probes.udp_truncate.common import (
    NO_COUNTERS,
    counter_group,
    timed_out,
    udp_counter,
    wait_for,
)
from sockprobe.probes.udp_truncate.params import Params
from sockprobe.report import CONTEXT, NA, Report, col
from sockprobe.status import oserror_name

#: (row key, label): the three sockets.
KINDS = (
    ("connected", "connected"),
    ("unconnected", "unconnected"),
    ("unconnected_recverr", "unconnected + IP_RECVERR"),
)


@dataclass
class Row:
    kind: str
    label: str
    recverr: bool | None
    send_outcome: str
    recv_outcome: str
    #: errno name of the recv() failure, "timeout" or "data".
    recv_result: str
    after_ms: float | None
    noports: int | None


def _unreachable_port(lab: Lab) -> socket.socket:
    """A UDP socket that holds a port but receives nothing from anyone else.

    Closing a port and hoping it stays free is a race (another program may bind it before
    the send). Instead the port stays bound, by a socket connected to its own address: the
    kernel's UDP lookup scores a connected socket only for datagrams from its peer
    (compute_score() in net/ipv4/udp.c rejects a mismatching source), so a datagram from
    another port finds no socket, is counted in Udp NoPorts, and draws an ICMP port
    unreachable, exactly as for a closed port. And no other socket can bind the port
    meanwhile (this one sets no SO_REUSEADDR/REUSEPORT).
    """
    holder = lab.open_socket(socket.SOCK_DGRAM)
    holder.bind(lab.host.sockaddr(0))
    holder.connect(holder.getsockname())
    lab.record("icmp port holder (connected to itself)", holder)
    return holder


def measure_one(lab: Lab, kind: str, label: str, p: Params) -> Row:
    holder = _unreachable_port(lab)
    dest = lab.host.sockaddr(holder.getsockname()[1])
    s = lab.open_socket(socket.SOCK_DGRAM)
    recverr: bool | None = None
    if kind == "unconnected_recverr":
        recverr = udp.enable_recverr(s)
    s.bind(lab.host.sockaddr(0))
    noports0 = udp_counter(lab.host.family, "NoPorts")
    if kind == "connected":
        s.connect(dest)
    lab.record(f"icmp {label}", s)
    # The closed port, so the ICMP port unreachable can be found in a capture.
    lab.endpoints[-1]["sent_to"] = fmt_addr(dest)
    try:
        if kind == "connected":
            s.send(b"probe")
        else:
            s.sendto(b"probe", dest)
        send_outcome = "ok"
    except OSError as exc:
        send_outcome = oserror_name(exc)
    doing = f"waiting for an ICMP error on the {label} socket"
    given = wait_for(lab, p.op_timeout, doing)
    s.settimeout(given)
    t0 = time.perf_counter()
    try:
        data = s.recv(1024)
        outcome, result = f"returned {len(data)} B", "data"
    except TimeoutError:
        timed_out(lab.deadline, p.op_timeout, given, doing)
        outcome, result = f"TimeoutError: nothing within {p.op_timeout:g} s", "timeout"
    except OSError as exc:
        outcome, result = f"{type(exc).__name__} {oserror_name(exc)}", oserror_name(exc)
    after_ms = (time.perf_counter() - t0) * 1000
    noports1 = udp_counter(lab.host.family, "NoPorts")
    lab.close(s)
    lab.close(holder)
    return Row(
        kind,
        label,
        recverr,
        send_outcome,
        outcome,
        result,
        after_ms,
        None if noports0 is None or noports1 is None else noports1 - noports0,
    )


def measure(lab: Lab, p: Params) -> list[Row]:
    return [measure_one(lab, kind, label, p) for kind, label in KINDS]


def add_table(report: Report, family: int, rows: list[Row]) -> None:
    group = counter_group(family)
    t = report.table(
        "icmp",
        "Sending to a closed port (ICMP port unreachable), then one recv()",
        [
            col("socket"),
            col("recverr", "IP_RECVERR set"),
            col("send_outcome", "send()"),
            col("recv_result", "next recv()"),
            # How long the error took to surface: the scheduler's time, not a kernel rule.
            col("after_ms", "after", "ms", CONTEXT),
            col("noports_delta", f"{group} NoPorts Δ (this network namespace)", "", CONTEXT),
        ],
        keys=["socket"],
    )
    for r in rows:
        # True only where the option was asked for and the kernel took it.
        t.add(
            r.kind,
            bool(r.recverr),
            r.send_outcome,
            r.recv_result,
            None if r.after_ms is None else round(r.after_ms, 3),
            NA(NO_COUNTERS) if r.noports is None else r.noports,
        )


def add_findings(report: Report, family: int, p: Params, rows: list[Row]) -> None:
    group = counter_group(family)
    parts = []
    for r in rows:
        when = f" after {r.after_ms:.2f} ms" if r.after_ms is not None else ""
        if r.recv_result == "timeout":
            parts.append(f"the {r.label} one saw nothing within {p.op_timeout:g} s")
        else:
            parts.append(f"the {r.label} one's next recv() raised {r.recv_outcome}{when}")
    noports = [r.noports for r in rows if r.noports is not None]
    np_text = (
        f" {group} NoPorts, which counts datagrams that found no receiving socket, rose by "
        f"{', '.join(str(x) for x in noports)} across the {len(noports)} sends (a counter "
        "of this network namespace: other traffic in it adds to it)."
        if noports
        else ""
    )
    report.findings.append("Sending to a closed port: " + "; ".join(parts) + "." + np_text)
