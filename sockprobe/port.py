"""sockprobe port PORT|PATH: who holds this port or UNIX socket path, would a bind succeed
now, and what is the fix.

A diagnosis, not an experiment: it looks at the host as it is.

For a port (TCP and UDP, IPv4 and IPv6):

1. The sockets on the port, from sock_diag(7) with a kernel-side port filter
   (kernel.portdiag), including the two holders /proc/net/tcp and `ss` do not show: a TCP
   socket bound but not listening (the bound-inactive dump, state 7), and whether a `[::]`
   socket is dual-stack or IPV6_V6ONLY. Exact port match: the kernel compares numbers.
2. Trial binds on the port, without and with SO_REUSEADDR, on the wildcard addresses
   (0.0.0.0, `[::]` dual-stack, `[::]` V6ONLY) and on --host, with the real errno. Each is
   socket(), setsockopt(), bind(), close(): never listen(), so no client's connection can
   land on a trial socket.
3. The owner of each socket (kernel.owners): pid, name, command line, user, age, found by
   reading /proc/*/fd links only for these sockets' inodes, stopping when all are found.
4. A diagnosis and the fix, formatted from 1-3, plus the port's place among the kernel's
   port settings (privileged range, ephemeral range, reserved ports).

For a UNIX socket path: the /proc/net/unix rows bound to it and their owners, a trial
connect (non-blocking: ECONNREFUSED means nothing listens, the file is stale) and a trial
bind, which never creates, unlinks or otherwise touches an existing file.
"""

from __future__ import annotations

import errno
import os
import platform
import socket
import stat
import struct
import sys
from collections import Counter
from dataclasses import dataclass, field

from sockprobe import kernel
from sockprobe.kernel import portdiag
from sockprobe.kernel.owners import Owners, Process, find_owners, process_info, user_name
from sockprobe.lab import Deadline, Host, Lab, fmt_addr
from sockprobe.probes import ProbeParams, Stopwatch, require
from sockprobe.report import NA, Cell, Report, environment, legacy_table, params_dict
from sockprobe.status import Unsupported, oserror_text

SYSCTLS = (
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv6.bindv6only",
)
#: sun_path is 108 bytes and a filesystem name needs its terminating NUL (unix(7)).
UNIX_PATH_MAX = 107
CMDLINE_WIDTH = 100
TIME_WAIT = 6
TCP_CLOSE = 7  # what sock_diag reports for a bound-inactive TCP socket
TCP_LISTEN = 10
NEW_SYN_RECV = 12

HIDDEN = (
    "owner hidden: not root, and other users' /proc/PID/fd cannot be read; "
    "run as root (sudo) to see it"
)
UNFOUND = (
    "no process holds it in its fd table (a kernel socket, one in flight over a UNIX "
    "socket, or its process exited during the scan)"
)
ORPHAN = (
    "no process: its owner already closed it (inode 0, an orphan) and the kernel is "
    "finishing the close"
)


@dataclass(frozen=True)
class Params(ProbeParams):
    target: str = ""
    tcp: bool = False
    udp: bool = False
    #: Most connection rows shown (listeners, bound and UDP sockets are always shown);
    #: 0 shows every row.
    limit: int = 100

    def __post_init__(self) -> None:
        super().__post_init__()
        t = self.target
        require(t != "", "give a PORT (1..65535) or a UNIX socket PATH")
        require(self.limit >= 0, f"--limit must be 0 (no limit) or more, not {self.limit}")
        if t.isascii() and t.isdigit():
            n = int(t)
            require(
                n != 0,
                "port 0 is not a port anything holds: bind() to port 0 asks the kernel "
                "for any free port; give 1..65535",
            )
            require(n <= 65535, f"port {t} is out of range: ports are 1..65535")
            return
        require(
            "/" in t or t.startswith("@"),
            f"{t!r} is neither a port (1..65535) nor a UNIX socket path (one with a '/', "
            "or @name for the abstract namespace)",
        )
        require(not (self.tcp or self.udp), "--tcp and --udp apply to a port, not to a UNIX path")
        size = len(os.fsencode(t))
        require(
            size <= UNIX_PATH_MAX,
            f"{t!r} is {size} bytes; AF_UNIX addresses hold at most {UNIX_PATH_MAX} "
            "(unix(7)), so no socket can be bound there",
        )

    @property
    def is_port(self) -> bool:
        return self.target.isascii() and self.target.isdigit()

    @property
    def port(self) -> int:
        return int(self.target) if self.is_port else 0

    @property
    def protocols(self) -> tuple[str, ...]:
        if self.tcp == self.udp:
            return ("tcp", "udp")
        return ("tcp",) if self.tcp else ("udp",)


@dataclass
class PortResult:
    report: Report
    #: The `--check` answer: a plain bind (no SO_REUSEADDR) on the wildcard address of
    #: the --host family fails right now (for a UNIX path: a bind there would fail).
    bind_fails: bool


def run(params: Params) -> Report:
    return diagnose(params).report


def diagnose(params: Params) -> PortResult:
    watch = Stopwatch()
    if not kernel.IS_LINUX:
        raise Unsupported(
            f"sockprobe port reads /proc and sock_diag, which exist on Linux only "
            f"(this is {sys.platform}); use lsof -nP -i :PORT or netstat -anv there"
        )
    host, deadline = params.resolve()
    if params.is_port:
        result = _diagnose_port(params, host, deadline)
    else:
        result = _diagnose_unix(params, deadline)
    result.report.duration_s = watch()
    return result


# -- shared helpers -------------------------------------------------------------------------
def _n(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def _age_text(seconds: float | None) -> str:
    if seconds is None:
        return "for an unknown time"
    s = int(seconds)
    if s < 60:
        return f"{seconds:.1f} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def _short_cmd(proc: Process, width: int = 60) -> str:
    cmd = proc.cmdline or f"[{proc.name}]"
    return cmd if len(cmd) <= width else cmd[: width - 3] + "..."


def _who(proc: Process, fd: int | None = None) -> str:
    at = f", fd {fd}" if fd is not None else ""
    return (
        f"pid {proc.pid} `{_short_cmd(proc)}` (user {proc.user}, "
        f"running {_age_text(proc.age_s)}{at})"
    )


def _owner_cells(
    owner: tuple[Process, int] | None, missing: str, uid: int | None
) -> tuple[Cell, Cell, Cell, Cell, Cell]:
    """pid, process, user, running for, command line."""
    if owner is None:
        na = NA(missing)
        return na, na, (user_name(uid) if uid is not None else na), na, na
    proc, _fd = owner
    cmd = proc.cmdline or f"[{proc.name}]"
    if len(cmd) > CMDLINE_WIDTH:
        cmd = cmd[: CMDLINE_WIDTH - 3] + "..."
    age: Cell = None if proc.age_s is None else round(proc.age_s, 1)
    # The pid as text: a table would print 12102 as "12,102".
    return str(proc.pid), proc.name, proc.user, age, cmd


# -- ports: collecting the sockets ----------------------------------------------------------
_TCP_RANK = {TCP_LISTEN: 0, TCP_CLOSE: 1, TIME_WAIT: 5}


class Held:
    """A socket on the port. A plain class whose sort key and labels are computed once:
    a busy port has thousands of these."""

    __slots__ = ("is_tcp", "proto", "rank", "sock", "state")

    def __init__(self, sock: portdiag.PortSocket) -> None:
        self.sock = sock
        self.is_tcp = sock.protocol == socket.IPPROTO_TCP
        v6 = "6" if sock.family == socket.AF_INET6 else ""
        st = sock.state
        if self.is_tcp:
            self.proto = "tcp" + v6
            self.state = "BOUND-INACTIVE" if st == TCP_CLOSE else kernel.tcp_state_name(st)
            #: Listeners first, then other sockets that hold the port, then connections.
            self.rank = _TCP_RANK.get(st, 4)
        else:
            self.proto = "udp" + v6
            self.state = "UNCONN" if st == TCP_CLOSE else "ESTAB"
            self.rank = 2 if st == TCP_CLOSE else 3

    @property
    def is_connection(self) -> bool:
        return self.rank >= 3

    @property
    def kernel_only(self) -> bool:
        """TIME_WAIT and embryonic (NEW_SYN_RECV) sockets belong to no process."""
        return self.is_tcp and self.sock.state in (TIME_WAIT, NEW_SYN_RECV)

    @property
    def orphan(self) -> bool:
        """A TCP socket its process has closed while the kernel finishes the close
        (FIN_WAIT1/2, CLOSING, LAST_ACK): sock_diag reports inode 0 for it, since no
        file refers to it any more."""
        return self.is_tcp and self.sock.inode == 0 and not self.kernel_only

    @property
    def wildcard6(self) -> bool:
        return self.sock.family == socket.AF_INET6 and self.sock.local[0] == "::"

    @property
    def local(self) -> str:
        return fmt_addr(self.sock.local)

    @property
    def remote(self) -> str:
        ip, port = self.sock.remote
        if port == 0 and ip in ("0.0.0.0", "::"):
            return "*"
        return fmt_addr(self.sock.remote)

    def covers(self) -> Cell:
        """Which IP versions the socket's local address takes in."""
        if self.sock.family == socket.AF_INET:
            return "IPv4"
        if self.sock.local[0].startswith("::ffff:"):
            return "IPv4 (mapped)"
        if not self.wildcard6 or self.sock.state not in (TCP_LISTEN, TCP_CLOSE):
            return "IPv6"
        if self.sock.v6only is None:
            return NA(
                "IPV6_V6ONLY unknown: /proc/net/tcp6 and udp6 rows look the same either "
                "way and sock_diag was not available"
            )
        return "IPv6 only" if self.sock.v6only else "IPv4+IPv6"


_FAMILIES = ((socket.AF_INET, ""), (socket.AF_INET6, "6"))


def _collect(
    port: int, protocols: tuple[str, ...], deadline: Deadline
) -> tuple[list[Held], list[str]]:
    """The sockets on `port`; plus a note for each protocol sock_diag could not answer."""
    held: list[Held] = []
    problems: list[str] = []
    for proto in protocols:
        number = socket.IPPROTO_TCP if proto == "tcp" else socket.IPPROTO_UDP
        for family, suffix in _FAMILIES:
            try:
                rows = portdiag.diag_port(
                    family, number, port, timeout=deadline.timeout(2.0, "querying sock_diag")
                )
                held.extend(Held(r) for r in rows)
            except OSError as exc:
                problems.append(
                    f"sock_diag for {proto}{suffix} failed ({oserror_text(exc)}): read "
                    f"/proc/net/{proto}{suffix} instead"
                    + (
                        ", which lists no bound-but-not-listening TCP socket"
                        if proto == "tcp"
                        else ""
                    )
                )
                held.extend(Held(r) for r in portdiag.proc_port(proto + suffix, port))
    held.sort(key=lambda h: (h.rank, h.proto, h.sock.local, h.sock.remote))
    return held, problems


# -- ports: trial binds ---------------------------------------------------------------------
@dataclass
class Trial:
    proto: str
    family: int
    address: str
    v6only: bool | None
    #: This row answers --check: the plain wildcard bind of the --host family.
    for_check: bool = False
    plain: Cell = None
    reuse: Cell = None

    def text(self, port: int) -> str:
        where = fmt_addr((self.address, port))
        if self.v6only is None:
            return where
        return f"{where} {'IPV6_V6ONLY' if self.v6only else 'dual-stack'}"


def _trial_addresses(host: Host) -> list[tuple[int, str, bool | None, bool]]:
    """(family, address, IPV6_V6ONLY to set or None, answers --check) per trial bind:
    both wildcards (the IPv6 one dual-stack and V6ONLY), --host, and for a loopback
    --host the other family's loopback too."""
    v4, v6 = socket.AF_INET, socket.AF_INET6
    rows: list[tuple[int, str, bool | None, bool]] = [(v4, "0.0.0.0", None, not host.is_v6)]
    if not host.is_v6 and host.address != "0.0.0.0":
        rows.append((v4, host.address, None, False))
    if host.is_v6 and host.address == "::1":
        rows.append((v4, "127.0.0.1", None, False))
    rows.append((v6, "::", False, host.is_v6))
    rows.append((v6, "::", True, False))
    if host.is_v6 and host.address != "::":
        rows.append((v6, host.address, None, False))
    if not host.is_v6 and host.address.startswith("127."):
        rows.append((v6, "::1", None, False))
    return rows


def _bind_once(
    lab: Lab, proto: str, family: int, address: str, port: int, v6only: bool | None, reuse: bool
) -> Cell:
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    try:
        s = lab.open_socket(kind, family)
    except OSError as exc:
        return NA(f"cannot create this socket here: {oserror_text(exc)}")
    try:
        if reuse:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if v6only is not None:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(v6only))
        s.bind((address, port))
        return "ok"
    except OSError as exc:
        if exc.errno is None:
            return str(exc)
        return errno.errorcode.get(exc.errno, str(exc.errno))
    finally:
        lab.close(s)


def _trials(lab: Lab, port: int, protocols: tuple[str, ...]) -> list[Trial]:
    out = []
    for proto in protocols:
        for family, address, v6only, for_check in _trial_addresses(lab.host):
            lab.deadline.check("trying binds")
            t = Trial(proto, family, address, v6only, for_check)
            t.plain = _bind_once(lab, proto, family, address, port, v6only, reuse=False)
            t.reuse = _bind_once(lab, proto, family, address, port, v6only, reuse=True)
            out.append(t)
    return out


def _has_bound_inactive_dump() -> bool:
    """Linux 6.9 added the bound-inactive state to sock_diag (TCP_BOUND_INACTIVE)."""
    try:
        major, minor = (int(x) for x in platform.release().split(".")[:2])
    except ValueError:
        return True  # unknown: do not claim it is missing
    return (major, minor) >= (6, 9)


# -- ports: the diagnosis -------------------------------------------------------------------
@dataclass
class PortFacts:
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
        return portdiag.in_port_list(self.reserved, self.port)


def _facts(port: int) -> PortFacts:
    rng = kernel.sysctl("net.ipv4.ip_local_port_range")
    local_range = None
    if rng:
        try:
            lo, hi = (int(x) for x in rng.split()[:2])
            local_range = (lo, hi)
        except ValueError:
            pass
    # The capability decides, not the uid: root in a container may lack it.
    cap = portdiag.has_capability(portdiag.CAP_NET_BIND_SERVICE)
    return PortFacts(
        port=port,
        unprivileged_start=kernel.sysctl_int("net.ipv4.ip_unprivileged_port_start"),
        local_range=local_range,
        reserved=kernel.sysctl("net.ipv4.ip_local_reserved_ports") or "",
        bindv6only=kernel.sysctl_int("net.ipv6.bindv6only"),
        can_bind_low=cap if cap is not None else os.geteuid() == 0,
    )


@dataclass
class Scene:
    """Everything measured about one port, for the tables and the findings."""

    params: Params
    held: list[Held]
    shown: list[Held]
    owners: Owners
    trials: list[Trial]
    facts: PortFacts
    problems: list[str]
    root: bool = field(default_factory=lambda: os.geteuid() == 0)

    def owner(self, h: Held) -> tuple[Process, int] | None:
        return self.owners.owner(h.sock.inode)

    def missing(self, h: Held) -> str:
        """Why a socket has no owner row."""
        if h.orphan:
            return ORPHAN
        if not self.root and self.owners.denied and h.sock.uid != os.geteuid():
            return HIDDEN
        return UNFOUND


def _diagnose_port(params: Params, host: Host, deadline: Deadline) -> PortResult:
    port = params.port
    report = Report(
        "port", params=params_dict(params), environment=environment(kernel.sysctls(SYSCTLS))
    )
    held, problems = _collect(port, params.protocols, deadline)
    pinned = [h for h in held if not h.is_connection]
    conns = [h for h in held if h.is_connection]
    shown = pinned + (conns if params.limit == 0 else conns[: params.limit])
    with Lab(host, deadline) as lab:
        trials = _trials(lab, port, params.protocols)
    inodes = {h.sock.inode for h in shown if h.sock.inode and not h.kernel_only}
    owners = find_owners(inodes, check=lambda: deadline.check("reading /proc/*/fd"))
    scene = Scene(params, held, shown, owners, trials, _facts(port), problems)
    # Endpoints: each socket shown, with the inode and fd to check against
    # /proc/PID/fd, ss -e or lsof; then the trial binds.
    for h in shown:
        ep: dict[str, object] = {
            "role": h.state,
            "proto": h.proto,
            "local": h.local,
            "remote": h.remote,
            "inode": h.sock.inode,
        }
        owner = scene.owner(h)
        if owner is not None:
            ep["pid"], ep["fd"] = owner[0].pid, owner[1]
        report.endpoints.append(ep)
    for t in trials:
        report.endpoints.append({"role": "trial bind", "local": t.text(port), "proto": t.proto})
    _port_tables(report, scene)
    _port_findings(report, scene)
    _port_notes(report, scene)
    fails = any(t.plain != "ok" for t in trials if t.for_check)
    return PortResult(report, fails)


def _port_tables(report: Report, sc: Scene) -> None:
    port = sc.params.port
    protos = " and ".join(p.upper() for p in sc.params.protocols)
    t = legacy_table(
        report,
        f"Sockets on port {port} ({protos}, this network namespace; listeners first)",
        [
            "proto",
            "local",
            "remote",
            "state",
            "covers",
            "pid",
            "process",
            "user",
            "running for",
            "command line",
        ],
        ["", "", "", "", "", "", "", "", "s", ""],
        volatile=["remote", "pid", "running for"],
    )
    for h in sc.shown:
        if h.kernel_only:
            cells: tuple[Cell, ...] = (None, "(kernel)", None, None, None)
        else:
            cells = _owner_cells(sc.owner(h), sc.missing(h), h.sock.uid)
        t.add(h.proto, h.local, h.remote, h.state, h.covers(), *cells)

    b = legacy_table(
        report,
        f"Trial binds on port {port} now (bind, then close; never listen)",
        ["proto", "address", "plain bind", "with SO_REUSEADDR"],
    )
    for tr in sc.trials:
        b.add(tr.proto, tr.text(port), tr.plain, tr.reuse)

    f = sc.facts
    s = legacy_table(
        report,
        f"Port {port} in the kernel's port settings",
        ["setting", "value", f"port {port}"],
    )
    s.add(
        "net.ipv4.ip_unprivileged_port_start",
        None if f.unprivileged_start is None else str(f.unprivileged_start),
        None
        if f.unprivileged_start is None
        else "below: needs CAP_NET_BIND_SERVICE (root has it)"
        if f.privileged
        else "at or above: any user may bind it",
    )
    s.add(
        "net.ipv4.ip_local_port_range",
        None if f.local_range is None else f"{f.local_range[0]}-{f.local_range[1]}",
        None
        if f.local_range is None
        else "inside: connect() may pick it as a source port"
        if f.ephemeral
        else "outside: never picked automatically",
    )
    s.add(
        "net.ipv4.ip_local_reserved_ports",
        f.reserved or "(none)",
        "reserved: skipped by automatic allocation" if f.is_reserved else "not reserved",
    )
    s.add(
        "net.ipv6.bindv6only",
        None if f.bindv6only is None else str(f.bindv6only),
        None
        if f.bindv6only is None
        else "a plain [::] bind is IPv6-only"
        if f.bindv6only
        else "a plain [::] bind is dual-stack (covers IPv4)",
    )


def _trial(sc: Scene, proto: str, address: str = "0.0.0.0") -> Trial | None:
    """The trial on `address` (for [::], the dual-stack one)."""
    return next(
        (t for t in sc.trials if t.proto == proto and t.address == address and not t.v6only),
        None,
    )


def _owner_text(sc: Scene, h: Held) -> str:
    owner = sc.owner(h)
    if owner is not None:
        return "held by " + _who(*owner)
    missing = sc.missing(h)
    if missing == HIDDEN:
        return (
            f"held by a process of uid {h.sock.uid} ({user_name(h.sock.uid)}) that this user "
            f"cannot see (other users' /proc/PID/fd needs root; sudo sockprobe port "
            f"{sc.params.port} names it)"
        )
    if missing == ORPHAN:
        return "held by no process (closed by its owner; the kernel is finishing the close)"
    return "with no process holding it (" + UNFOUND.split(" (")[1]


def _short_owner(owner: str) -> str:
    """The owner text of a finding, shortened for the summary line."""
    if owner.startswith("held by pid "):
        return owner.removeprefix("held by ").split(" (user ")[0]
    if owner.startswith("held by a process of uid"):
        return "(owner hidden: run as root)"
    return "(no process)"


def _group(sc: Scene, rows: list[Held]) -> list[tuple[str, list[Held]]]:
    """Rows grouped by owner text, so one process with several sockets is named once."""
    groups: dict[str, list[Held]] = {}
    for h in rows:
        groups.setdefault(_owner_text(sc, h), []).append(h)
    return list(groups.items())


def _addrs(sc: Scene, rows: list[Held]) -> str:
    """The sockets' addresses; a `[::]` one says whether it covers IPv4, with the
    measured plain bind on 0.0.0.0 as evidence."""
    parts = []
    for h in rows:
        cov = h.covers()
        extra = ""
        if h.wildcard6 and isinstance(cov, str) and cov != "IPv6":
            t4 = _trial(sc, h.proto[:3])
            bind4 = ""
            if t4 is not None:
                got = "succeeds" if t4.plain == "ok" else f"gives {t4.plain}"
                bind4 = f"; a plain bind on 0.0.0.0 {got}"
            if cov == "IPv4+IPv6":
                extra = f" (dual-stack: it covers IPv4 too{bind4})"
            else:
                extra = f" (IPV6_V6ONLY: IPv4 is not covered{bind4})"
        parts.append(f"{h.proto} {h.local}{extra}")
    return ", ".join(parts)


def _port_findings(report: Report, sc: Scene) -> None:
    port = sc.params.port
    held = sc.held
    listeners = [h for h in held if h.is_tcp and h.sock.state == TCP_LISTEN]
    bound = [h for h in held if h.is_tcp and h.sock.state == TCP_CLOSE]
    udp = [h for h in sc.shown if not h.is_tcp]  # owners were looked up for these
    tw = [h for h in held if h.is_tcp and h.sock.state == TIME_WAIT]
    conns = [h for h in held if h.is_tcp and h.rank == 4]
    plain_fail = {t.proto: t.plain for t in sc.trials if t.for_check and t.plain != "ok"}
    wild = next((t for t in sc.trials if t.for_check), None)
    wild_label = "0.0.0.0" if wild is None or wild.family == socket.AF_INET else "[::]"
    f = report.findings
    headline = ""

    for owner, rows in _group(sc, listeners):
        f.append(
            f"LISTEN on {_addrs(sc, rows)} {owner}: stop it or choose another port "
            "(SO_REUSEADDR does not help while a listener is open)."
        )
        headline = headline or f"LISTEN {_short_owner(owner)}"
    t4b = _trial(sc, "tcp")
    for owner, rows in _group(sc, bound):
        reuse_text = ""
        if t4b is not None and t4b.reuse == "ok":
            reuse_text = (
                " A bind with SO_REUSEADDR succeeds now (measured: the holder set it too), "
                "but of two such sockets only the first to call listen() gets the port."
            )
        f.append(
            f"A TCP socket bound but not listening holds the port: {_addrs(sc, rows)} {owner}. "
            "/proc/net/tcp and the default output of ss do not list it (sock_diag's "
            "bound-inactive dump found it, state 7), yet it makes binds fail. Stop that "
            "process or have it close the socket (calling listen() on it would only turn it "
            "into a listener that keeps the port), or choose another port." + reuse_text
        )
        headline = headline or "a TCP socket bound but not listening"
    for owner, rows in _group(sc, udp):
        f.append(
            f"UDP socket{'s' if len(rows) > 1 else ''} on {_addrs(sc, rows)} {owner}: "
            "UDP and TCP ports are separate, so it blocks UDP binds only; stop it or "
            "choose another port (two UDP sockets share a port only if both set "
            "SO_REUSEADDR or SO_REUSEPORT)."
        )
        headline = headline or f"UDP {_short_owner(owner)}"
    if conns:
        states = Counter(h.state for h in conns)
        mix = ", ".join(f"{n:,} {s}" for s, n in states.most_common())
        if listeners:
            verb = "uses" if len(conns) == 1 else "use"
            f.append(f"{_n(len(conns), 'TCP connection')} {verb} local port {port}: {mix}.")
        else:
            # Owners of the connections shown (the others were not looked up).
            shown_conns = [h for h in sc.shown if h.is_tcp and h.rank == 4]
            owners = sorted({o for o, _ in _group(sc, shown_conns)})
            t4c = _trial(sc, "tcp")
            plain_c: Cell = "?" if t4c is None else t4c.plain
            works = t4c is not None and t4c.reuse == "ok"
            verb = "uses" if len(conns) == 1 else "use"
            f.append(
                f"No listener, but {_n(len(conns), 'TCP connection')} still {verb} local "
                f"port {port} ({mix}), {'; '.join(owners[:3])}: connections a server "
                "accepted before its listener closed, or outgoing connections that took "
                f"{port} as their source port. Measured now: a plain bind on 0.0.0.0 gives "
                f"{plain_c}; "
                + (
                    "one with SO_REUSEADDR succeeds (they set it too), so set SO_REUSEADDR "
                    "on the server socket."
                    if works
                    else "one with SO_REUSEADDR fails too (they did not set it): wait until "
                    "they close (a side that closes first then leaves TIME_WAIT for 60 s), "
                    "stop their process, or choose another port."
                )
            )
            headline = headline or f"{_n(len(conns), 'TCP connection')} without a listener"
    if tw:
        left = max(h.sock.expires_ms for h in tw) / 1000
        t4 = _trial(sc, "tcp")
        plain: Cell = "?" if t4 is None else t4.plain
        reuse: Cell = "?" if t4 is None else t4.reuse
        if not (listeners or bound or conns):
            fix = (
                "set SO_REUSEADDR on the server socket, old and new (Linux lets a bind "
                "beside TIME_WAIT only when both set it)"
            )
            if reuse == "ok":
                verdict = (
                    f"measured now: a plain bind on 0.0.0.0 gives {plain}, one with "
                    "SO_REUSEADDR succeeds, so the sockets that left them had set it"
                )
            else:
                verdict = (
                    f"measured now: a plain bind on 0.0.0.0 gives {plain} and one with "
                    f"SO_REUSEADDR gives {reuse}, so the sockets that left them had not "
                    f"set it (a server that did not, or an outgoing connection that used "
                    f"{port} as its source port and closed first): wait about {left:.0f} s, "
                    "or fix the server so the next restart works"
                )
            f.append(
                f"Only TIME_WAIT sockets remain on port {port} ({len(tw):,}), the last "
                f"gone in about {left:.0f} s (TIME_WAIT lasts 60 s on Linux): {fix}; "
                f"{verdict}."
            )
            headline = headline or (
                f"only {_n(len(tw), 'TIME_WAIT socket')}, gone in about {left:.0f} s"
            )
        else:
            f.append(
                f"{_n(len(tw), 'TIME_WAIT socket')} on the port as well, the last gone "
                f"in about {left:.0f} s."
            )
    if held:
        parts = []
        for proto in sc.params.protocols:
            mine = [t for t in sc.trials if t.proto == proto]
            ok = [t.text(port) for t in mine if t.plain == "ok"]
            if ok and len(ok) == len(mine):
                parts.append(f"every {proto.upper()} address tried")
            elif ok:
                parts.append(f"{proto} " + ", ".join(ok))
        if parts:
            f.append(
                "A plain bind still succeeds now on "
                + "; ".join(parts)
                + " (trial binds): the holders' addresses do not overlap these."
            )
    elided = len(held) - len(sc.shown)
    if elided:
        f.append(
            f"The table shows {len(sc.shown):,} of {len(held):,} sockets (every listener, "
            f"bound and UDP socket, and the first {sc.params.limit} connections); "
            "--limit 0 shows all."
        )

    fx = sc.facts
    eacces = fx.privileged and any(e == "EACCES" for e in plain_fail.values())
    if not held:
        if not plain_fail:
            f.append(
                f"Port {port} is free ({' and '.join(p.upper() for p in sc.params.protocols)}):"
                f" no socket uses it in this network namespace and a plain bind on "
                f"{wild_label} succeeds now."
            )
            headline = "free: no socket, a plain bind succeeds"
        elif eacces:
            headline = (
                f"privileged port: this process may not bind below "
                f"ip_unprivileged_port_start ({fx.unprivileged_start})"
            )
        else:
            errs = ", ".join(f"{p} {e}" for p, e in plain_fail.items())
            f.append(
                f"No socket uses port {port} here, yet a plain bind on {wild_label} fails "
                f"({errs}): no socket listed by sock_diag explains it"
                + (
                    " (this kernel is older than 6.9, whose sock_diag cannot list a TCP "
                    "socket that is bound but not listening)"
                    if not _has_bound_inactive_dump()
                    else ""
                )
                + "."
            )
            headline = "no socket holds it, yet a plain bind fails"

    if fx.privileged:
        if fx.can_bind_low:
            who = (
                "this process has it, so the trial binds above are what a privileged server "
                "gets; a server running without the capability gets EACCES"
            )
        else:
            errs = ", ".join(f"{p} {e}" for p, e in plain_fail.items()) or "none"
            who = (
                f"this process lacks it (trial binds on {wild_label}: {errs}). Run the "
                "server with that capability (setcap cap_net_bind_service=+ep on its "
                "binary, or systemd AmbientCapabilities=CAP_NET_BIND_SERVICE), lower "
                "net.ipv4.ip_unprivileged_port_start, or use a port at or above it"
            )
        f.append(
            f"Port {port} is below net.ipv4.ip_unprivileged_port_start "
            f"({fx.unprivileged_start}): binding it needs CAP_NET_BIND_SERVICE (root has "
            f"it); {who}."
        )
    if fx.ephemeral and fx.local_range is not None:
        if fx.is_reserved:
            f.append(
                f"Port {port} is inside ip_local_port_range ({fx.local_range[0]}-"
                f"{fx.local_range[1]}) but listed in ip_local_reserved_ports, so automatic "
                "allocation skips it (an explicit bind still works)."
            )
        else:
            f.append(
                f"Port {port} is inside ip_local_port_range ({fx.local_range[0]}-"
                f"{fx.local_range[1]}), so outgoing connections may take it as their "
                "source port: choose a server port outside it, or add it to "
                "ip_local_reserved_ports (which keeps automatic allocation away; it does "
                "not block an explicit bind)."
            )
    if any(sc.missing(h) == HIDDEN for h in sc.shown if not h.kernel_only and not sc.owner(h)):
        f.append(
            "Some owners are hidden: without root, /proc/PID/fd of other users' processes "
            f"cannot be read. Run as root (sudo sockprobe port {port}) to see them."
        )
    for p in sc.problems:
        f.append(p[0].upper() + p[1:] + ".")

    verdicts = []
    for proto in sc.params.protocols:
        t = next((x for x in sc.trials if x.proto == proto and x.for_check), None)
        if t is not None:
            verdicts.append(f"{proto} {'ok' if t.plain == 'ok' else t.plain}")
    report.summary = (
        f"port {port}: {headline or 'in use'}; plain bind on {wild_label}: " + ", ".join(verdicts)
    )


def _port_notes(report: Report, sc: Scene) -> None:
    report.notes.extend(
        [
            "Sockets come from sock_diag(7) netlink dumps with an in-kernel port filter (the "
            "query `ss 'sport = :P'` makes), for every TCP state plus the bound-inactive "
            "bit, so a TCP socket that is bound but not listening (absent from "
            "/proc/net/tcp and from ss's default output) is listed, as state 7; "
            "INET_DIAG_SKV6ONLY tells a dual-stack [::] socket from an IPV6_V6ONLY one "
            "(ipv6(7)).",
            "Only this network namespace is searched, which is the right scope: a socket in "
            "another namespace (a container) never makes a bind here fail.",
            "Owners: every /proc/PID/fd link is read until each socket's inode "
            "(`socket:[INODE]`) is found, as ss -p and lsof do; a socket shared by several "
            "processes (fork, SCM_RIGHTS) is attributed to the first in pid order.",
            "Trial binds are socket(), setsockopt(), bind(), close() and never listen(), so "
            "no client connection can land on them; one that succeeds holds the port for "
            "microseconds. A UDP trial that succeeds beside another UDP socket with "
            "SO_REUSEADDR could, in that instant, be handed a unicast datagram meant for it.",
            "Linux SO_REUSEADDR (socket(7)): a bind succeeds beside sockets that are not "
            "listening (TIME_WAIT, connections, bound sockets) only if they set it too, and "
            "never beside a listener on an overlapping address. A listener on 127.0.0.1 "
            "does not conflict with 127.0.0.2, but does with 0.0.0.0 and with a dual-stack "
            "[::]. SO_REUSEPORT (not tried here) lets sockets of one user share a port.",
            "TIME_WAIT lasts 60 s (TCP_TIMEWAIT_LEN); net.ipv4.tcp_fin_timeout does not "
            "shorten it. It sits on the side that closed first: when the server closed "
            "first it holds the server's port; when an outgoing connection closed first it "
            "holds that connection's source port, which blocks a server's bind there too.",
            "Other systems (not measured here). macOS: no sock_diag; lsof -nP -iTCP:PORT "
            "shows owners, and BSD's SO_REUSEADDR lets a specific address bind beside a "
            "wildcard listener. Windows: netstat -ano; "
            "SO_REUSEADDR there lets a second socket take a port in use (SO_EXCLUSIVEADDRUSE "
            "prevents it).",
        ]
    )


# -- UNIX socket paths ----------------------------------------------------------------------
def _trial_connect(address: str | bytes) -> tuple[Cell, str | None, tuple[int, int, int] | None]:
    """Connect to `address` without blocking; (result cell, socket type that answered,
    SO_PEERCRED of the listener). A stream connect to a datagram socket fails with
    EPROTOTYPE, so the other types are tried in turn; ECONNREFUSED means nothing is
    bound there (or it is bound but not listening) whatever the type."""
    last: Cell = None
    for kind, name in (
        (socket.SOCK_STREAM, "stream"),
        (socket.SOCK_SEQPACKET, "seqpacket"),
        (socket.SOCK_DGRAM, "dgram"),
    ):
        with socket.socket(socket.AF_UNIX, kind) as s:
            # Non-blocking: connect() to a listener whose accept queue is full would
            # otherwise block; here it fails at once with EAGAIN (unix(7)).
            s.setblocking(False)
            code = s.connect_ex(address)
            if code == errno.EPROTOTYPE:
                last = "EPROTOTYPE"
                continue
            if code == 0:
                cred = None
                if kind != socket.SOCK_DGRAM:
                    try:
                        raw = s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
                        pid, uid, gid = struct.unpack("=iII", raw)
                        cred = (pid, uid, gid)
                    except OSError:
                        pass
                return "ok", name, cred
            return errno.errorcode.get(code, str(code)), name, None
    return last, None, None


def _trial_unix_bind(address: str | bytes, reuse: bool, created_ok: bool) -> Cell:
    """bind() a fresh AF_UNIX socket to `address`. For a filesystem path this is done
    only when the file exists: bind() then fails with EADDRINUSE without touching it.
    Should the file vanish between the check and the bind, the bind creates a new file
    that is ours alone, which is removed at once (`created_ok` is False then)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        if reuse:
            # Accepted and ignored for AF_UNIX: it exists to show that it does not help.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(address)
        except OSError as exc:
            return errno.errorcode.get(exc.errno or 0, str(exc))
        if isinstance(address, str) and not created_ok:
            try:
                os.unlink(address)
            except OSError:
                pass
        return "ok"


def _diagnose_unix(params: Params, deadline: Deadline) -> PortResult:
    target = params.target
    abstract = target.startswith("@")
    address: str | bytes = b"\0" + os.fsencode(target[1:]) if abstract else target
    names = {target}
    if not abstract:
        names |= {os.path.abspath(target), os.path.realpath(target)}
    report = Report("port", params=params_dict(params), environment=environment({}))
    rows = portdiag.unix_sockets(names)
    rows.sort(key=lambda r: (not r.listening, r.state, r.type))
    deadline.check("reading /proc/net/unix")

    # What is at the path.
    st: os.stat_result | None = None
    st_error: OSError | None = None
    if not abstract:
        try:
            st = os.lstat(target)
        except OSError as exc:
            st_error = exc
    exists = st is not None
    is_sock = st is not None and stat.S_ISSOCK(st.st_mode)

    # Trial connect: only where something could answer.
    conn: Cell = None
    conn_type: str | None = None
    cred: tuple[int, int, int] | None = None
    if (abstract and rows) or is_sock:
        conn, conn_type, cred = _trial_connect(address)
    deadline.check("trying a connect")

    # Trial binds: only where the name is taken, so that a bind cannot create anything.
    plain: Cell = None
    reuse: Cell = None
    if exists or (abstract and rows):
        plain = _trial_unix_bind(address, reuse=False, created_ok=abstract)
        reuse = _trial_unix_bind(address, reuse=True, created_ok=abstract)

    parent = os.path.dirname(os.path.abspath(target)) if not abstract else ""
    parent_ok = bool(parent) and os.path.isdir(parent) and os.access(parent, os.W_OK | os.X_OK)

    shown = [r for r in rows if r.listening or r.state != 3]
    shown += [r for r in rows if not r.listening and r.state == 3][: params.limit or None]
    owners = find_owners(
        {r.inode for r in shown}, check=lambda: deadline.check("reading /proc/*/fd")
    )
    peer: Process | None = process_info(cred[0]) if cred and cred[0] > 0 else None
    root = os.geteuid() == 0

    t = legacy_table(
        report,
        f"Sockets bound to {target} (/proc/net/unix; listeners first)",
        ["type", "state", "pid", "process", "user", "running for", "command line"],
        ["", "", "", "", "", "s", ""],
        volatile=["pid", "running for"],
    )
    missing = HIDDEN if not root and owners.denied else UNFOUND
    for r in shown:
        t.add(r.type_name, r.state_name, *_owner_cells(owners.owner(r.inode), missing, None))

    o = legacy_table(
        report,
        f"Trials on {target} now",
        ["operation", "result"],
    )
    if not abstract:
        if st is not None:
            o.add(
                "lstat",
                f"{_file_kind(st.st_mode)}, mode {stat.filemode(st.st_mode)}, "
                f"owner {user_name(st.st_uid)}",
            )
        else:
            o.add("lstat", oserror_text(st_error) if st_error else "?")
    if conn is not None:
        o.add(f"connect ({conn_type or 'stream'}, non-blocking)", conn)
    if cred is not None:
        o.add("SO_PEERCRED of the listener", f"pid {cred[0]}, uid {cred[1]}")
    o.add("bind", plain if plain is not None else NA(_no_bind_reason(abstract, exists)))
    o.add(
        "bind with SO_REUSEADDR",
        reuse if reuse is not None else NA(_no_bind_reason(abstract, exists)),
    )

    f = report.findings
    listeners = [r for r in rows if r.listening]
    if conn == "ok" and conn_type == "dgram":
        # A datagram socket never listens: the bound socket itself is what answered.
        listeners = [r for r in rows if r.type == socket.SOCK_DGRAM] or listeners
    live_owner = ""
    if listeners:
        own = owners.owner(listeners[0].inode)
        if own is not None:
            live_owner = _who(*own)
        elif peer is not None:
            live_owner = _who(peer) + " (from SO_PEERCRED)"
    elif peer is not None:
        live_owner = _who(peer) + " (from SO_PEERCRED)"
    if not live_owner and listeners and not root and owners.denied:
        live_owner = "an owner hidden from this user (run as root to see it)"
    bind_fails: bool
    if conn in ("ok", "EAGAIN"):
        full = " (its accept queue is full)" if conn == "EAGAIN" else ""
        what = (
            f"A datagram socket is bound to {target} and receives"
            if conn_type == "dgram"
            else f"A process listens on {target}{full}"
        )
        f.append(
            f"{what}: {live_owner or 'owner not found'}; the trial connect "
            f"({conn_type}) was {conn}. Stop it or choose another "
            + (
                "name."
                if abstract
                else "path; do not unlink a live socket's file (new clients could no "
                "longer reach it)."
            )
        )
        kind = "dgram socket" if conn_type == "dgram" else f"{conn_type} listener"
        summary = f"{target}: live, {kind} {live_owner.split(' (')[0]}".rstrip()
        bind_fails = True
    elif abstract:
        if rows:
            f.append(
                f"The abstract name {target} is bound by {_n(len(rows), 'socket')} that do not "
                f"accept connections (trial connect: {conn}); a bind gives {plain}."
            )
            summary = f"{target}: bound, not accepting (connect {conn})"
            bind_fails = plain != "ok"
        else:
            f.append(
                f"No socket is bound to the abstract name {target}: a bind would succeed "
                "(abstract names vanish with their last socket, so they never go stale)."
            )
            summary = f"{target}: free (abstract name, no socket bound)"
            bind_fails = False
    elif not exists:
        if parent_ok:
            f.append(
                f"No file at {target}: the path is free, and a bind would create the socket "
                f"file there ({parent} exists and is writable; not tried, because a trial "
                "bind would create the file)."
            )
            summary = f"{target}: free (no file; directory writable)"
            bind_fails = False
        else:
            missing_dir = not os.path.isdir(parent)
            problem, err = (
                ("does not exist", "ENOENT")
                if missing_dir
                else ("is not writable by this user", "EACCES")
            )
            f.append(
                f"No file at {target}, but {parent} {problem}, so a bind "
                f"there would fail ({err}; not tried): "
                + ("create the directory" if missing_dir else "fix its permissions")
                + " or choose another path."
            )
            summary = f"{target}: no file, but its directory {problem}"
            bind_fails = True
    elif not is_sock:
        f.append(
            f"{target} exists and is not a socket: a bind gives {plain}. Something else "
            "owns that name; choose another path unless you know the file can go."
        )
        summary = f"{target}: exists and is not a socket (bind {plain})"
        bind_fails = True
    elif conn == "ECONNREFUSED" and [r for r in rows if not r.listening]:
        own = owners.owner(rows[0].inode)
        who = _who(*own) if own else "an unknown process"
        f.append(
            f"A socket is bound to {target} but not listening: connect gives ECONNREFUSED, "
            f"bind gives {plain}; bound by {who}. It will accept once that process calls "
            "listen(); otherwise stop it."
        )
        summary = f"{target}: bound by a live socket that does not listen yet"
        bind_fails = True
    elif conn == "ECONNREFUSED":
        f.append(
            f"{target} is stale: the socket file is left over from a socket that was "
            f"closed (or whose process exited) without unlinking it. Nothing listens "
            f"(connect: ECONNREFUSED), yet bind gives "
            f"{plain} even with SO_REUSEADDR ({reuse}). Fix: remove it (rm {target}), have the "
            "server unlink() the path before bind() once a trial connect is refused, or use "
            "an abstract-namespace address (@name, Linux), which vanishes with its socket."
        )
        summary = f"{target}: stale socket file (connect ECONNREFUSED, bind {plain})"
        bind_fails = True
    else:
        f.append(
            f"{target} is a socket file; the trial connect gave {conn} and a bind {plain}."
            + (" Permission to write the file is needed to connect." if conn == "EACCES" else "")
        )
        summary = f"{target}: connect {conn}, bind {plain}"
        bind_fails = plain not in (None, "ok")
    if not root and owners.denied and shown and not any(owners.owner(r.inode) for r in shown):
        f.append(
            "Owners may be hidden: without root, /proc/PID/fd of other users' processes "
            f"cannot be read. Run as root (sudo sockprobe port {target}) to see them."
        )
    report.summary = summary
    report.notes.extend(
        [
            "/proc/net/unix lists every AF_UNIX socket of this network namespace with the "
            "name it was bound to (as given, possibly relative), its type, state and "
            "whether it listens (flag __SO_ACCEPTCON); owners come from /proc/PID/fd links.",
            "The trial connect is non-blocking: ok means a listener accepted the connection "
            "(it sees a client that closes at once), EAGAIN a listener with a full accept "
            "queue, ECONNREFUSED that no socket listens on the file (unix(7)).",
            "bind() on a path that exists fails with EADDRINUSE whatever the file is, and "
            "SO_REUSEADDR changes nothing for AF_UNIX; close() never removes the file. The "
            "trial bind runs only where the name is taken, so it cannot create, unlink or "
            "change anything.",
            "The fix for a stale file is unlink() before bind(), after a connect has been "
            "refused (so a live server is never cut off), or the Linux abstract namespace "
            "(sun_path starting with a NUL byte), whose names disappear with their socket.",
            "macOS and the BSDs have no abstract namespace and no /proc/net/unix (lsof -U); "
            "Windows supports AF_UNIX stream sockets (since Windows 10 1803) with the same "
            "left-over file problem.",
        ]
    )
    return PortResult(report, bind_fails)


def _file_kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISREG, "regular file"),
        (stat.S_ISDIR, "directory"),
        (stat.S_ISLNK, "symbolic link"),
        (stat.S_ISFIFO, "FIFO"),
    ):
        if test(mode):
            return name
    return "special file"


def _no_bind_reason(abstract: bool, exists: bool) -> str:
    if abstract:
        return "not tried: no socket holds this abstract name, and a trial bind would take it"
    return "not tried: no file at the path, and a trial bind would create one"
