"""sockprobe ephemeral: when does connect() run out of local ports ("Cannot assign
requested address"), and how close is this host?

The experiments never touch the host's range: each narrows its client sockets to a
private block of a few free ports with IP_LOCAL_PORT_RANGE (Linux 6.3+), so exhaustion
takes milliseconds and no other program is ever short of a port:

- exhaust.py: N ports admit N connections per destination with connect(), N in all with
  bind(port 0) first, and N per destination again with IP_BIND_ADDRESS_NO_PORT;
- time_wait.py: client-side TIME_WAIT keeps the ports busy toward one server; another
  server, an explicit bind() with SO_REUSEADDR, and tcp_tw_reuse after its delay;
- parity.py: connect() and bind(port 0) take ports of opposite parities;
- host.py: this host now, from sock_diag: the range in use per destination and state,
  and the processes holding most of it.
"""

from __future__ import annotations

import ipaddress

from sockprobe import kernel
from sockprobe.kernel import ephemeral
from sockprobe.lab import Lab, cannot_run
from sockprobe.probes import Stopwatch
from sockprobe.probes.ephemeral import exhaust, host, parity, time_wait
from sockprobe.probes.ephemeral._range import Ports
from sockprobe.probes.ephemeral.params import Params
from sockprobe.report import NA, Bars, Report, environment, params_dict
from sockprobe.status import Unsupported, UsageError, oserror_name

__all__ = ["Params", "run"]

SYSCTLS = (
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_tw_reuse",
    "net.ipv4.tcp_tw_reuse_delay",
    "net.ipv4.tcp_timestamps",
    "net.ipv4.tcp_tw_recycle",
)
#: Destinations' accept queues hold every connection the experiments leave unaccepted.
BACKLOG = 1024


def _narrowing(lab: Lab) -> NA | None:
    """Whether IP_LOCAL_PORT_RANGE is accepted here (tried, not assumed)."""
    s = lab.open_socket()
    try:
        ephemeral.narrow(s, 40000, 40001)
    except OSError as exc:
        return NA(f"IP_LOCAL_PORT_RANGE (Linux 6.3+) unavailable: {oserror_name(exc)}")
    finally:
        lab.close(s)
    return None


def run(params: Params) -> Report:
    watch = Stopwatch()
    h, deadline = params.resolve()
    report = Report(
        "ephemeral", params=params_dict(params), environment=environment(kernel.sysctls(SYSCTLS))
    )
    rng = ephemeral.local_port_range()
    if rng is None:
        raise Unsupported("net.ipv4.ip_local_port_range is unreadable here (not Linux?)")
    lo, hi = rng
    reserved = ephemeral.reserved_ports()
    loopback = ipaddress.ip_address(h.address).is_loopback
    with Lab(h, deadline) as lab:
        # The destinations first, so that the snapshot below sees their ports.
        try:
            first = lab.listener(BACKLOG, role="first destination")
            second = lab.listener(BACKLOG, role="second destination")
            tw_server = lab.listener(BACKLOG, role="TIME_WAIT server")
        except UsageError as exc:
            # bind(port 0) failed: the range itself is exhausted, which is the host's
            # state, not bad input.
            raise Unsupported(
                f"no free port in ip_local_port_range {lo}-{hi} for the probe's listeners ({exc})"
            ) from None
        # One loopback connection first: if none can be made (lo down: ENETUNREACH; no
        # descriptor: EMFILE), every count below would be 0 for a reason that is not
        # the port range, and the probe names that cause instead (exit 3).
        try:
            lab.close_abortively(*lab.tcp_pair(name="preflight"))
        except OSError as exc:
            reason = cannot_run(exc, h)
            if reason is None:
                raise
            raise reason from None
        try:
            snapshot = ephemeral.all_tcp()
        except OSError as exc:
            raise Unsupported(f"sock_diag is unavailable here: {oserror_name(exc)}") from None
        mine = {int(s.getsockname()[1]) for s in (first, second, tw_server)}
        ports = Ports(lo, hi, {d.local[1] for d in snapshot}, reserved, na=_narrowing(lab))
        tw = time_wait.start(lab, ports, params.ports, tw_server, second)
        fills = exhaust.measure(lab, ports, params.ports, first, second)
        counts = parity.measure(lab, ports, params.samples, first)
        time_wait.finish(lab, tw)
        report.endpoints = list(lab.endpoints)
    # The host table describes the host as it was before the probe: drop the probe's own
    # three listeners from the snapshot.
    usage = host.measure(
        [d for d in snapshot if not (d.state == host.LISTEN and d.local[1] in mine)],
        lo,
        hi,
        reserved,
        check=lambda: deadline.check("finding the processes that hold the range"),
    )
    exhaust.report_on(report, params.ports, fills)
    exhaust.findings(report, params.ports, fills)
    time_wait.report_on(report, tw, loopback)
    parity.report_on(report, counts, lo)
    host.report_on(report, usage, params.top)
    _chart(report, fills, usage, params.top)
    _summary(report, params.ports, fills, usage)
    _fixes(report, tw, loopback)
    _notes(report)
    report.duration_s = watch()
    return report


def _chart(report: Report, fills: list[exhaust.Fill] | NA, u: host.Usage, top: int) -> None:
    if u.dests:
        bars = Bars("host_destinations", "This host now: ports held per destination", "ports")
        for d in u.dests[:top]:
            bars.add(
                d.remote,
                ("established", d.established),
                ("time_wait", d.time_wait),
                ("other", d.other),
            )
        report.charts.append(bars)


def _summary(report: Report, n: int, fills: list[exhaust.Fill] | NA, u: host.Usage) -> None:
    busiest = (
        f"; busiest destination here: {u.dests[0].total} of {u.size:,} ports"
        if u.dests
        else f"; here no client holds a port of the {u.size}"
    )
    if isinstance(fills, NA):
        report.summary = f"The exhaustion experiments could not run ({fills.reason}){busiest}."
        return
    c1 = next(f for f in fills if f.method == "connect" and f.destination == "first")
    b = [f for f in fills if f.method == "bind0"]
    report.summary = (
        f"{n} ports: connect() {c1.connected} per destination, then "
        f"{c1.failure or 'no error'}; bind(port 0) {sum(f.connected for f in b)} in all"
        f"{busiest}"
    )


def _fixes(report: Report, tw: time_wait.Run, loopback: bool) -> None:
    reuse = kernel.sysctl_int("net.ipv4.tcp_tw_reuse")
    recycle = kernel.sysctl("net.ipv4.tcp_tw_recycle")
    ts = kernel.sysctl_int("net.ipv4.tcp_timestamps")
    reuse_here = time_wait.expected(reuse, ts, loopback)
    does = "reuses" if reuse_here == "ok" else "does not reuse"
    report.findings.append(
        "Fixes, in order: reuse connections (a pool, HTTP keep-alive) instead of opening one "
        "per request; keep the range away from listening ports (ip_local_reserved_ports, or "
        "a range that excludes them); bind with IP_BIND_ADDRESS_NO_PORT when a source "
        "address must be chosen; tcp_tw_reuse for TIME_WAIT-heavy clients (here "
        f"{reuse}: connect() {does} TIME_WAIT on this address); "
        "never tcp_tw_recycle, which broke clients behind NAT and was removed in Linux 4.12 "
        + ("(absent on this kernel)." if recycle is None else f"(present here: {recycle}).")
    )


def _notes(report: Report) -> None:
    report.notes.extend(
        [
            "Each experiment narrows its sockets to a private block of free ports with "
            "IP_LOCAL_PORT_RANGE (include/uapi/linux/in.h, Linux 6.3+); "
            "inet_sk_get_local_port_range() keeps each bound that lies inside "
            "ip_local_port_range, so the block is chosen inside it, away from every port a "
            "TCP socket holds and from ip_local_reserved_ports.",
            "connect() without bind() shares a port between connections whose 4-tuples "
            "differ (__inet_hash_connect(), __inet_check_established() in "
            "net/ipv4/inet_hashtables.c); bind(port 0) owns the port outright "
            "(inet_csk_get_port() in net/ipv4/inet_connection_sock.c).",
            "EADDRNOTAVAIL from connect() means no local port gives a unique 4-tuple; "
            "EADDRINUSE from bind(port 0) means no port is free at all.",
            "The host tables count this network namespace only (sock_diag answers for the "
            "caller's namespace); in a container they describe the container.",
            "macOS and the BSDs choose ephemeral ports from net.inet.ip.portrange.first/last "
            "(49152-65535) and have no per-socket range or IP_BIND_ADDRESS_NO_PORT; Windows "
            "uses 49152-65535 (netsh int ipv4 show dynamicport tcp) and offers "
            "SO_REUSE_UNICASTPORT for the same purpose as IP_BIND_ADDRESS_NO_PORT "
            "(documented; not measured here).",
        ]
    )
