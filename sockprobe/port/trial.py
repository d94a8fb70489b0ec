"""Would a bind succeed now? Trial binds on the port, without and with SO_REUSEADDR.

Each trial is socket(), setsockopt(), bind(), close(), and never listen(), so no
client's connection can land on a trial socket; one that succeeds holds the port for
microseconds. The errno is the kernel's own answer (net/ipv4/inet_connection_sock.c
inet_csk_get_port -> inet_csk_bind_conflict), which no reading of the socket tables can
replace: whether a TIME_WAIT or a bound socket set SO_REUSEADDR is not in sock_diag.

"plain" always means what a plain bind() does on this host: for `[::]` the IPV6_V6ONLY
option is left alone, so the socket starts from net.ipv6.bindv6only (ipv6(7);
net/ipv6/af_inet6.c inet6_create copies it into sk_ipv6only), and the trial reads back
the value it actually had. Rows that set IPV6_V6ONLY explicitly follow.

No ephemeral port is needed (every bind names the port), so this runs when the
ephemeral range is exhausted; one bind to port 0 says whether it is
(inet_csk_find_open_port fails with EADDRINUSE when no port in the range is free).
"""

from __future__ import annotations

import errno
import socket
from typing import TYPE_CHECKING, NamedTuple

from sockprobe.lab import Deadline, fmt_addr

if TYPE_CHECKING:
    from sockprobe.report import Cell


class Trial:
    """One trial bind, plain and with SO_REUSEADDR (a plain class: see Holders)."""

    __slots__ = (
        "address",
        "family",
        "for_check",
        "plain",
        "proto",
        "reuse",
        "v6only",
        "v6only_set",
    )

    def __init__(
        self, proto: str, family: int, address: str, v6only_set: bool | None, for_check: bool
    ) -> None:
        self.proto = proto
        self.family = family
        self.address = address
        #: IPV6_V6ONLY as set by the trial: None = left alone (the plain bind).
        self.v6only_set = v6only_set
        #: This row answers --check: the target's address, or the --host family's wildcard.
        self.for_check = for_check
        #: IPV6_V6ONLY read back from the plain socket (AF_INET6 only).
        self.v6only: bool | None = None
        self.plain: Cell = None
        self.reuse: Cell = None

    @property
    def mode(self) -> str:
        if self.family != socket.AF_INET6:
            return ""
        if self.v6only_set is None:
            got = (
                "" if self.v6only is None else (" (IPv6-only)" if self.v6only else " (dual-stack)")
            )
            return "default" + got
        return "IPV6_V6ONLY=1" if self.v6only_set else "IPV6_V6ONLY=0"

    def text(self, port: int) -> str:
        where = fmt_addr((self.address, port))
        if self.family != socket.AF_INET6:
            return where
        if self.v6only_set is None:
            if self.v6only is None:
                return where
            return f"{where} {'IPv6-only' if self.v6only else 'dual-stack'}"
        return f"{where} IPV6_V6ONLY={int(self.v6only_set)}"

    def ok(self, reuse: bool) -> bool:
        return (self.reuse if reuse else self.plain) == "ok"


def check_address(target_address: str, host_v6: bool) -> tuple[int, str]:
    """(family, address) the --check trial binds."""
    if target_address:
        return (socket.AF_INET6 if ":" in target_address else socket.AF_INET), target_address
    return (socket.AF_INET6, "::") if host_v6 else (socket.AF_INET, "0.0.0.0")


def trial_addresses(
    check: tuple[int, str], host_address: str, every: bool = True
) -> list[tuple[int, str, bool | None, bool]]:
    """(family, address, IPV6_V6ONLY to set or None, answers --check) per trial: the
    check's address first, then (`every`) both wildcards (the IPv6 one plain, V6ONLY=1,
    V6ONLY=0), --host, and the other family's loopback."""
    v4, v6 = socket.AF_INET, socket.AF_INET6
    rows: list[tuple[int, str, bool | None, bool]] = [(check[0], check[1], None, True)]
    if every:
        for family, address, v6only in (
            (v4, "0.0.0.0", None),
            (v4, host_address if ":" not in host_address else "127.0.0.1", None),
            (v6, "::", None),
            (v6, "::", True),
            (v6, "::", False),
            (v6, host_address if ":" in host_address else "::1", None),
        ):
            row = (family, address, v6only, False)
            if (family, address, v6only) != (check[0], check[1], None) and row not in rows:
                rows.append(row)
    return rows


def covers_ipv4(address: str) -> bool:
    """Whether IPV6_V6ONLY decides if an AF_INET6 socket bound here takes IPv4 too: only
    for the wildcard and v4-mapped addresses; any other IPv6 address is IPv6-only by its
    nature, and bind() sets the flag to say so (net/ipv6/af_inet6.c __inet6_bind)."""
    return address == "::" or address.lower().startswith("::ffff:")


def bind_once(
    proto: str, family: int, address: str, port: int, v6only: bool | None, reuse: bool
) -> tuple[Cell, bool | None]:
    """(result: "ok" or the errno name, IPV6_V6ONLY the socket had)."""
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    try:
        s = socket.socket(family, kind)
    except OSError as exc:
        from sockprobe.report import NA
        from sockprobe.status import oserror_text

        return NA(f"cannot create this socket here: {oserror_text(exc)}"), None
    with s:
        got: bool | None = None
        try:
            if reuse:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                if v6only is not None:
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(v6only))
                got = bool(s.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY))
            s.bind((address, port))
            if family == socket.AF_INET6:
                # Read again: a bind to one IPv6 address (not :: and not ::ffff:a.b.c.d)
                # sets sk_ipv6only whatever it was (net/ipv6/af_inet6.c __inet6_bind).
                got = bool(s.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY))
            return "ok", got
        except OSError as exc:
            if family == socket.AF_INET6 and not covers_ipv4(address):
                got = None  # the failed bind never reached the line that sets it
            if exc.errno is None:
                return str(exc), got
            return errno.errorcode.get(exc.errno, str(exc.errno)), got


def run_trials(
    port: int,
    protocols: tuple[str, ...],
    check: tuple[int, str],
    host_address: str,
    deadline: Deadline,
    every: bool = True,
) -> list[Trial]:
    out = []
    for proto in protocols:
        for family, address, v6only, for_check in trial_addresses(check, host_address, every):
            deadline.check("trying binds")
            t = Trial(proto, family, address, v6only, for_check)
            t.plain, t.v6only = bind_once(proto, family, address, port, v6only, reuse=False)
            t.reuse, _ = bind_once(proto, family, address, port, v6only, reuse=True)
            out.append(t)
    return out


def free(trials: list[Trial]) -> dict[str, bool]:
    """The --check answers: could a new listener start now, with a plain bind and with
    SO_REUSEADDR (on every protocol asked)."""
    mine = [t for t in trials if t.for_check]
    return {
        "plain": bool(mine) and all(t.ok(False) for t in mine),
        "reuseaddr": bool(mine) and all(t.ok(True) for t in mine),
    }


def ephemeral_exhausted(family: int) -> str | None:
    """The errno of a TCP bind to port 0 on loopback when it fails (EADDRINUSE: the
    ephemeral range is exhausted), None when it succeeds."""
    address = "::1" if family == socket.AF_INET6 else "127.0.0.1"
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind((address, 0))
    except OSError as exc:
        return errno.errorcode.get(exc.errno or 0, str(exc))
    return None


# -- the port's place among the kernel's port settings --------------------------------------
class PortFacts(NamedTuple):
    port: int
    unprivileged_start: int | None
    local_range: tuple[int, int] | None
    reserved: str
    bindv6only: int | None
    can_bind_low: bool

    @property
    def privileged(self) -> bool:
        return self.unprivileged_start is not None and self.port < self.unprivileged_start

    @property
    def ephemeral(self) -> bool:
        return self.local_range is not None and (
            self.local_range[0] <= self.port <= self.local_range[1]
        )

    @property
    def is_reserved(self) -> bool:
        from sockprobe.kernel import portdiag

        return portdiag.in_port_list(self.reserved, self.port)


def facts(port: int) -> PortFacts:
    import os

    from sockprobe import kernel
    from sockprobe.kernel import portdiag

    rng = kernel.sysctl("net.ipv4.ip_local_port_range")
    local_range = None
    if rng:
        try:
            lo, hi = (int(x) for x in rng.split()[:2])
            local_range = (lo, hi)
        except ValueError:
            pass
    # The capability decides, not the uid: root in a container may lack it
    # (net/ipv4/af_inet.c __inet_bind: inet_port_requires_bind_service).
    cap = portdiag.has_capability(portdiag.CAP_NET_BIND_SERVICE)
    return PortFacts(
        port=port,
        unprivileged_start=kernel.sysctl_int("net.ipv4.ip_unprivileged_port_start"),
        local_range=local_range,
        reserved=kernel.sysctl("net.ipv4.ip_local_reserved_ports") or "",
        bindv6only=kernel.sysctl_int("net.ipv6.bindv6only"),
        can_bind_low=cap if cap is not None else os.geteuid() == 0,
    )
