"""This host now: how much of ip_local_port_range is in use, toward which destinations,
in which states, held by which processes. What an SRE runs when a service logs
EADDRNOTAVAIL ("Cannot assign requested address").

The sockets come from one sock_diag dump of this network namespace taken before the
probe opened anything (both families, every state: TIME_WAIT has no fd and no process,
but holds its 4-tuple). A socket counts as a client's when its local port lies in the
range and is not a listening port (an accepted connection shares its listener's port).
connect() can give a destination at most one connection per usable port, so a
destination's share of the range is how close it is to EADDRNOTAVAIL; ports held by
bind() (listeners among them) are unusable for every destination.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from sockprobe import kernel
from sockprobe.kernel import owners as owners_mod
from sockprobe.kernel.sockdiag import DiagSocket
from sockprobe.lab import fmt_addr
from sockprobe.probes import plural
from sockprobe.report import CONTEXT, NA, Report, col

ESTABLISHED, TIME_WAIT, LISTEN = 1, 6, 10


@dataclass
class Dest:
    remote: str
    established: int = 0
    time_wait: int = 0
    other: int = 0

    @property
    def total(self) -> int:
        return self.established + self.time_wait + self.other


@dataclass
class Holder:
    pid: int
    name: str
    sockets: int
    destinations: int


@dataclass
class Usage:
    lo: int
    hi: int
    reserved: int
    ports_in_use: int
    listeners_in_range: int
    client_sockets: int
    time_wait: int
    dests: list[Dest]
    holders: list[Holder] = field(default_factory=list)
    #: Processes whose sockets could not be attributed (another user's, without root).
    denied: int = 0

    @property
    def size(self) -> int:
        return self.hi - self.lo + 1

    def share_pct(self, n: int) -> float:
        """n as a percentage of the range, to two significant digits (4 of 28,232 ports
        is 0.014%, not 0%)."""
        if self.size <= 0:
            return 0.0
        return float(f"{100.0 * n / self.size:.2g}")


def measure(
    socks: list[DiagSocket],
    lo: int,
    hi: int,
    reserved: set[int],
    check: Callable[[], None] | None = None,
    find_owners: bool = True,
) -> Usage:
    listening = {d.local[1] for d in socks if d.state == LISTEN}
    in_range = [d for d in socks if lo <= d.local[1] <= hi]
    clients = [
        d
        for d in in_range
        if d.state != LISTEN and d.local[1] not in listening and d.remote[1] != 0
    ]
    dests: dict[str, Dest] = {}
    for d in clients:
        key = fmt_addr(d.remote)
        e = dests.setdefault(key, Dest(key))
        if d.state == ESTABLISHED:
            e.established += 1
        elif d.state == TIME_WAIT:
            e.time_wait += 1
        else:
            e.other += 1
    usage = Usage(
        lo=lo,
        hi=hi,
        reserved=len({p for p in reserved if lo <= p <= hi}),
        ports_in_use=len({d.local[1] for d in in_range}),
        listeners_in_range=len({p for p in listening if lo <= p <= hi}),
        client_sockets=len(clients),
        time_wait=sum(1 for d in clients if d.state == TIME_WAIT),
        dests=sorted(dests.values(), key=lambda e: (-e.total, e.remote)),
    )
    if find_owners:
        inodes = {d.inode: fmt_addr(d.remote) for d in clients if d.inode}
        found = owners_mod.find_owners(inodes, check=check)
        usage.denied = found.denied
        per_pid: Counter[int] = Counter()
        dest_of: dict[int, set[str]] = {}
        for inode, remote in inodes.items():
            held = found.holders.get(inode)
            if held is None:
                continue
            per_pid[held[0]] += 1
            dest_of.setdefault(held[0], set()).add(remote)
        for pid, n in per_pid.most_common():
            proc = found.processes.get(pid)
            usage.holders.append(
                Holder(pid, proc.name if proc else "?", n, len(dest_of.get(pid, ())))
            )
    return usage


def report_on(report: Report, u: Usage | NA, top: int) -> None:
    rng = report.table(
        "host_range",
        "This host now: ip_local_port_range in use (sock_diag, this network namespace)",
        [
            col("low", kind=CONTEXT),  # a context key: the table is a snapshot of the host
            col("high", kind=CONTEXT),
            col("size", "ports", "", CONTEXT),
            col("reserved", "reserved", "", CONTEXT),
            col("ports_in_use", "in use", "", CONTEXT),
            col("in_use_pct", "in use", "%", CONTEXT),
            col("listeners_in_range", "listening ports in range", "", CONTEXT),
            col("client_sockets", "client sockets", "", CONTEXT),
            col("time_wait", "of them TIME_WAIT", "", CONTEXT),
            col("destinations", "destinations", "", CONTEXT),
        ],
        keys=["low"],
    )
    dst = report.table(
        "host_destinations",
        f"This host now: the {top} destinations holding most of the range",
        [
            # Context keys: the rows are this moment's destinations, which diff skips.
            col("destination", "remote address", "", CONTEXT),
            col("established", kind=CONTEXT),
            col("time_wait", kind=CONTEXT),
            col("other", "other states", "", CONTEXT),
            col("total", kind=CONTEXT),
            col("of_range_pct", "of the range", "%", CONTEXT),
        ],
        keys=["destination"],
    )
    procs = report.table(
        "host_processes",
        f"This host now: the {top} processes holding most client ports",
        [
            col("pid", kind=CONTEXT),
            col("process", kind=CONTEXT),
            col("sockets", "client sockets", "", CONTEXT),
            col("destinations", kind=CONTEXT),
        ],
        keys=["pid"],
    )
    if isinstance(u, NA):
        rng.add(u, u, u, u, u, u, u, u, u, u)
        return
    rng.add(
        u.lo,
        u.hi,
        u.size,
        u.reserved,
        u.ports_in_use,
        u.share_pct(u.ports_in_use),
        u.listeners_in_range,
        u.client_sockets,
        u.time_wait,
        len(u.dests),
    )
    for d in u.dests[:top]:
        dst.add(d.remote, d.established, d.time_wait, d.other, d.total, u.share_pct(d.total))
    for h in u.holders[:top]:
        procs.add(h.pid, h.name, h.sockets, h.destinations)
    f = report.findings
    f.append(
        f"This host now: {u.ports_in_use} of the {u.size} ports of ip_local_port_range "
        f"{u.lo}-{u.hi} are in use ({u.share_pct(u.ports_in_use):g}%), by "
        f"{plural(u.client_sockets, 'client socket')} ({u.time_wait} in TIME_WAIT) toward "
        f"{plural(len(u.dests), 'destination')}."
    )
    if u.dests:
        d = u.dests[0]
        f.append(
            f"The busiest destination, {d.remote}, holds {plural(d.total, 'port')} "
            f"({d.established} established, {d.time_wait} TIME_WAIT), "
            f"{u.share_pct(d.total):g}% of the range: connect() to it fails with "
            "EADDRNOTAVAIL once it holds every port the range has left after bound ports"
            + (_tw_counts(kernel.sysctl_int("net.ipv4.tcp_tw_reuse")) if d.time_wait else "")
            + "."
        )
    if u.listeners_in_range:
        f.append(
            f"{plural(u.listeners_in_range, 'listening port')} inside the range: connect() "
            "can use none of them for any destination."
        )
    if u.holders:
        h = u.holders[0]
        f.append(
            f"The process holding most client ports is {h.name} (pid {h.pid}) with "
            f"{plural(h.sockets, 'socket')} toward {plural(h.destinations, 'destination')}"
            + (f"; {u.denied} processes could not be inspected (not root)." if u.denied else ".")
        )


def _tw_counts(reuse: int | None) -> str:
    """Whether the destination's TIME_WAIT 4-tuples count against it: connect()'s port
    search (__inet_hash_connect() -> __inet_check_established()) may take one over only
    when tcp_twsk_unique() (net/ipv4/tcp_ipv4.c) allows it: tcp_tw_reuse 1, or 2 with
    loopback addresses, the old connection timestamped, older than tcp_tw_reuse_delay."""
    aged = "timestamped ones older than tcp_tw_reuse_delay"
    if reuse == 1:
        how = aged
    elif reuse == 2:
        how = f"{aged}, on loopback only"
    elif reuse == 0:
        how = "never"
    else:
        return ""
    return f"; TIME_WAIT ones count unless connect() takes them over (tcp_tw_reuse {reuse}: {how})"
