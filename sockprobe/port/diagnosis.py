"""`sockprobe port PORT`: gather what the modules measure into one Scene, and the tables.

sockets.py (which sockets) -> processes.py (which processes hold them) -> managers.py
(who runs those) -> trial.py (would a bind succeed) -> advice.py (what to do). The tables
here show each question's answer; the JSON `free` and `holders` objects are built here
too (PortResult.data).
"""

from __future__ import annotations

import os
import socket
from typing import Any

from sockprobe import kernel
from sockprobe.lab import Deadline, resolve_host
from sockprobe.port import managers, processes, sockets, trial
from sockprobe.port.managers import Manager
from sockprobe.port.params import FALLBACK_ENV, Params
from sockprobe.port.processes import Holders, Proc
from sockprobe.port.sockets import Held
from sockprobe.report import CONTEXT, NA, VOLATILE, Cell, Report, col, environment, params_dict

SYSCTLS = (
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv6.bindv6only",
)
#: Widest command cell: the JSON keeps argv whole.
COMMAND_WIDTH = 60
UNFOUND = (
    "no process holds it in its fd table (a kernel socket, one in flight over a UNIX "
    "socket, or its process exited during the scan)"
)
ORPHAN = "no process: its owner closed it and the kernel is finishing the close (inode 0)"
QUEUED = (
    "no process yet: it waits in the listener's accept queue, and becomes the listener's "
    "process's at accept() (inode 0 until then)"
)


class Scene:
    """Everything measured about one port, for the tables, the findings and the actions
    (a plain class: see processes.Holders)."""

    def __init__(
        self,
        params: Params,
        held: list[Held],
        shown: list[Held],
        holders: Holders,
        managers: dict[int, Manager],
        trials: list[trial.Trial],
        facts: trial.PortFacts,
        problems: list[str],
        check: tuple[int, str],
        exhausted: str | None = None,
        fallback: bool = False,
        netns_errors: dict[str, str] | None = None,
        netns_count: int = 0,
    ) -> None:
        self.params = params
        self.held = held
        self.shown = shown
        self.holders = holders
        self.managers = managers
        self.trials = trials
        self.facts = facts
        self.problems = problems
        self.check = check
        #: The errno of a bind to port 0 when the ephemeral range is exhausted.
        self.exhausted = exhausted
        self.fallback = fallback
        #: Other namespaces' read errors (--all-netns).
        self.netns_errors = netns_errors or {}
        self.netns_count = netns_count

    @property
    def port(self) -> int:
        return self.params.port

    @property
    def here(self) -> list[Held]:
        return [h for h in self.held if not h.netns]

    @property
    def free(self) -> dict[str, bool]:
        return trial.free(self.trials)

    def procs(self, h: Held) -> list[tuple[Proc, int]]:
        return self.holders.of(h.sock.inode)

    def missing(self, h: Held) -> str:
        """Why a socket has no process row (never "no process" when one may be hidden)."""
        if h.orphan:
            return ORPHAN
        if h.queued:
            return QUEUED
        hidden = self.holders.hidden_reason(h.sock.uid if h.sock.uid >= 0 else None)
        if hidden is not None:
            return hidden
        return UNFOUND


def use_fallback(params: Params) -> bool:
    return params.fallback or not kernel.IS_LINUX or bool(os.environ.get(FALLBACK_ENV))


def gather(params: Params, deadline: Deadline, quick: bool = False) -> Scene:
    """Measure: the sockets (here, and with --all-netns elsewhere), their holders and
    managers, the trial binds. `quick` (--check -q): the trial binds only."""
    port = params.port
    target = params.parsed
    host = resolve_host(params.host)
    check = trial.check_address(target.address, host.is_v6)
    trials = trial.run_trials(
        port, params.protocols, check, host.address, deadline, every=not quick
    )
    fx = trial.facts(port)
    if quick:
        return Scene(params, [], [], Holders(), {}, trials, fx, [], check)
    fallback = use_fallback(params)
    if fallback:
        held, holders, problems = sockets.collect_psutil(port, params.protocols)
    else:
        held, problems = sockets.collect(port, params.protocols, deadline)
        holders = Holders()
    nserrors: dict[str, str] = {}
    nscount = 0
    if params.all_netns:
        from sockprobe.port import netns

        spaces = netns.namespaces()
        nscount = len(spaces)
        found, nserrors = netns.query(spaces, port, params.protocols, deadline)
        for name, rows in found.items():
            held.extend(Held(r, netns=name) for r in rows)
        held.sort(key=Held.sort_key)
    pinned = [h for h in held if not h.is_connection]
    conns = [h for h in held if h.is_connection]
    shown = pinned + (conns if params.limit == 0 else conns[: params.limit])
    if not fallback:
        inodes = {h.sock.inode for h in shown if h.sock.inode and not h.kernel_only}
        holders = processes.find_holders(inodes, check=lambda: deadline.check("reading /proc/*/fd"))
    listening = {p for h in held if h.is_listener for p in holders.pids(h.sock.inode)}
    first = managers.pid1_name()
    mgr: dict[int, Manager] = {}
    for pid, proc in holders.procs.items():
        m = managers.manager_of(proc, pid in listening, port, first)
        if m is not None:
            mgr[pid] = m
    exhausted = trial.ephemeral_exhausted(check[0])
    return Scene(
        params,
        held,
        shown,
        holders,
        mgr,
        trials,
        fx,
        problems,
        check,
        exhausted,
        fallback,
        nserrors,
        nscount,
    )


# -- the report -----------------------------------------------------------------------------
def new_report(params: Params) -> Report:
    return Report(
        "port", params=params_dict(params), environment=environment(kernel.sysctls(SYSCTLS))
    )


def tables(report: Report, sc: Scene) -> None:
    port = sc.port
    protos = " and ".join(p.upper() for p in sc.params.protocols)
    where = "every network namespace" if sc.params.all_netns else "this network namespace"
    if sc.fallback:
        where += "; from psutil, which lists no bound-only TCP socket"
    cols = [
        col("proto"),
        col("local"),
        col("remote", kind=VOLATILE),
        col("state"),
        col("covers"),
        col("inode", kind=VOLATILE),
        col("pids", "processes"),
        col("pid", kind=VOLATILE),
        col("user"),
    ]
    keys = ["proto", "local", "remote", "state", "inode"]
    if sc.params.all_netns:
        cols.insert(0, col("netns", "network namespace"))
        keys.insert(0, "netns")
    t = report.table(
        "sockets",
        f"Sockets on port {port} ({protos}, {where}; listeners first)",
        cols,
        keys=keys,
    )
    for h in sc.shown:
        held = sc.procs(h)
        if h.kernel_only:
            n: Cell = 0
            pid: Cell = NA("a TIME_WAIT or embryonic socket belongs to the kernel, not a process")
        elif held:
            n, pid = len(held), held[0][0].pid
        else:
            n, pid = 0, NA(sc.missing(h))
        uid = h.sock.uid
        row: dict[str, Cell] = {
            "proto": h.proto,
            "local": h.local,
            "remote": h.remote,
            "state": h.state,
            "covers": h.covers(),
            "inode": h.sock.inode
            if h.sock.inode > 0
            else NA("psutil gives no inode")
            if h.sock.inode < 0
            else 0,
            "pids": n,
            "pid": pid,
            "user": processes.user_name(uid) if uid >= 0 else NA("not given by psutil"),
        }
        if sc.params.all_netns:
            row["netns"] = h.netns or "this"
        t.add(**row)

    p = report.table(
        "processes",
        "Processes holding them (every process with the socket in its fd table)",
        [
            col("pid", kind=VOLATILE),
            col("ppid", "parent", kind=VOLATILE),
            col("user"),
            col("age_s", "age", "s", CONTEXT),
            col("fds", "fds"),
            col("sockets"),
            col("managed_by", "manager"),
            col("command", "command line"),
        ],
        keys=["pid"],
    )
    per: dict[int, list[tuple[Held, int]]] = {}
    for h in sc.shown:
        for proc, fd in sc.procs(h):
            per.setdefault(proc.pid, []).append((h, fd))
    for pid in sorted(per):
        proc = sc.holders.procs[pid]
        m = sc.managers.get(pid)
        p.add(
            pid=pid,
            ppid=proc.ppid,
            user=proc.user,
            age_s=None if proc.age_s is None else round(proc.age_s, 1),
            fds=", ".join(str(fd) for _, fd in per[pid]),
            sockets=len(per[pid]),
            managed_by=m.label if m else "",
            command=proc.command(COMMAND_WIDTH),
        )

    b = report.table(
        "trials",
        f"Trial binds on port {port} now (bind, then close; never listen)",
        [
            col("proto"),
            col("address"),
            col("ipv6_only", "IPV6_V6ONLY"),
            col("plain", "plain bind"),
            col("reuseaddr", "with SO_REUSEADDR"),
            col("check", "answers --check"),
        ],
        keys=["proto", "address", "ipv6_only"],
    )
    for tr in sc.trials:
        b.add(
            tr.proto,
            tr.text(port).split(" ")[0],
            tr.mode,
            tr.plain,
            tr.reuse,
            tr.for_check,
        )

    f = sc.facts
    s = report.table(
        "settings",
        f"Port {port} in the kernel's port settings",
        [col("setting"), col("value"), col("effect", f"port {port}")],
        keys=["setting"],
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


def endpoints(report: Report, sc: Scene) -> None:
    for h in sc.shown:
        ep: dict[str, Any] = {
            "role": h.state,
            "proto": h.proto,
            "local": h.local,
            "remote": h.remote,
            "inode": h.sock.inode,
            "pids": [p.pid for p, _ in sc.procs(h)],
        }
        if h.netns:
            ep["netns"] = h.netns
        report.endpoints.append(ep)
    for t in sc.trials:
        report.endpoints.append({"role": "trial bind", "local": t.text(sc.port), "proto": t.proto})


def holders_json(sc: Scene) -> list[dict[str, Any]]:
    """The JSON `holders`: one object per socket a process holds (kernel-only TIME_WAIT
    and embryonic sockets are not held by anyone and are left out)."""
    out = []
    for h in sc.shown:
        if h.kernel_only:
            continue
        held = sc.procs(h)
        ms = [sc.managers.get(p.pid) for p, _ in held]
        units = sorted({m.unit for m in ms if m and m.unit})
        conts = sorted({m.container for m in ms if m and m.container})
        users = sorted({p.user for p, _ in held}) or (
            [processes.user_name(h.sock.uid)] if h.sock.uid >= 0 else []
        )
        obj: dict[str, Any] = {
            "proto": h.proto,
            "local": h.local,
            "remote": h.remote,
            "state": h.state,
            "inode": h.sock.inode if h.sock.inode > 0 else None,
            "pids": [p.pid for p, _ in held],
            "ppids": [p.ppid for p, _ in held],
            "argv": [list(p.argv) for p, _ in held],
            "user": users[0] if len(users) == 1 else users or None,
            "unit": units[0] if len(units) == 1 else units or None,
            "container": conts[0] if len(conts) == 1 else conts or None,
            "managers": [m.label if m else None for m in ms],
            "stop": [m.stop if m and m.stop else None for m in ms],
            "netns": h.netns or None,
        }
        if not held:
            obj["hidden"] = sc.missing(h)
        out.append(obj)
    return out


def socket_family(h: Held) -> int:
    return socket.AF_INET6 if h.proto.endswith("6") else socket.AF_INET
