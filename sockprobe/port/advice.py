"""What to do: the diagnosis and the fix, formatted from the Scene's measured values.

Every sentence comes from what was read or tried in this run: the sockets sock_diag
listed, the processes whose fd tables hold them, the managers their cgroups and argv
name, and the errno of the trial binds. The fix names every process that must go, since
a socket stays open until the last descriptor for it is closed (a forked worker keeps
the listener after the parent exits: fs/file_table.c fput releases the socket only when
the file's count drops to zero).
"""

from __future__ import annotations

import os
import socket
from collections import Counter

from sockprobe.port.diagnosis import Scene
from sockprobe.port.processes import Proc, age_text, relation
from sockprobe.port.sockets import TCP_CLOSE, TIME_WAIT, Held
from sockprobe.port.trial import Trial, covers_ipv4

TIME_WAIT_S = 60  # TCP_TIMEWAIT_LEN, include/net/tcp.h: fixed, not a sysctl


def _hidden_short() -> str:
    return "hidden: its fd table is unreadable" if os.geteuid() == 0 else "hidden: run as root"


def _n(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def _and(items: list[str]) -> str:
    if len(items) <= 2:
        return " and ".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _pid_list(pids: list[int]) -> str:
    return ("pid " if len(pids) == 1 else "pids ") + _and([str(p) for p in pids])


def who(sc: Scene, procs: list[Proc]) -> str:
    """ "pids 5871 and 5913 (5871: `cmd`, user u, running 3 s); 5913 is a child of 5871 that
    inherited the socket", with the manager of each managed one."""
    if not procs:
        return ""
    by_pid = {p.pid: p for p in procs}
    first = procs[0]
    # With several holders the details are the first one's: say so by its pid.
    text = (
        f"{_pid_list([p.pid for p in procs])} ("
        + (f"{first.pid}: " if len(procs) > 1 else "")
        + f"`{first.command(60)}`, user {first.user}, running {age_text(first.age_s)})"
    )
    rel = [f"{p.pid} is {relation(p, by_pid)}" for p in procs if relation(p, by_pid)]
    unrelated = [p for p in procs[1:] if not relation(p, by_pid)]
    if unrelated:
        rel += [
            f"{p.pid} (`{p.command(40)}`) holds it too (an inherited fd of another lineage, "
            "or one passed over a UNIX socket)"
            for p in unrelated
        ]
    if rel:
        text += "; " + "; ".join(rel)
    return text


def owner_text(sc: Scene, rows: list[Held]) -> str:
    procs = _procs(sc, rows)
    if procs:
        return "held by " + who(sc, procs)
    h = rows[0]
    missing = sc.missing(h)
    if missing.startswith("hidden"):
        return f"held by a process of uid {h.sock.uid} {missing}"
    return f"with {missing}"


def _procs(sc: Scene, rows: list[Held]) -> list[Proc]:
    seen: dict[int, Proc] = {}
    for h in rows:
        for p, _ in sc.procs(h):
            seen.setdefault(p.pid, p)
    return [seen[p] for p in sorted(seen)]


def _group(sc: Scene, rows: list[Held]) -> list[tuple[str, list[Held]]]:
    """Rows grouped by their holders, so one set of processes is named once."""
    groups: dict[str, list[Held]] = {}
    for h in rows:
        groups.setdefault(owner_text(sc, [h]), []).append(h)
    return list(groups.items())


def trial_for(sc: Scene, proto: str, address: str = "0.0.0.0") -> Trial | None:
    return next(
        (
            t
            for t in sc.trials
            if t.proto == proto and t.address == address and t.v6only_set is None
        ),
        None,
    )


def _addrs(sc: Scene, rows: list[Held]) -> str:
    parts = []
    for h in rows:
        cov = h.covers()
        extra = ""
        if h.wildcard6 and isinstance(cov, str) and cov != "IPv6":
            t4 = trial_for(sc, h.proto[:3])
            bind4 = ""
            if t4 is not None:
                got = "succeeds" if t4.plain == "ok" else f"gives {t4.plain}"
                bind4 = f"; a plain bind on 0.0.0.0 {got}"
            extra = (
                f" (dual-stack: it covers IPv4 too{bind4})"
                if cov == "IPv4+IPv6"
                else f" (IPV6_V6ONLY: IPv4 is not covered{bind4})"
            )
        parts.append(f"{h.proto} {h.local}{extra}")
    return ", ".join(parts)


def fix(sc: Scene, rows: list[Held]) -> str:
    """The way out for the processes holding `rows`: the manager's stop command for a
    managed one, else the pids to stop (every one of them)."""
    procs = _procs(sc, rows)
    if not procs:
        return ""
    managed = [(p, sc.managers[p.pid]) for p in procs if p.pid in sc.managers]
    plain = [p for p in procs if p.pid not in sc.managers]
    parts = []
    for p, m in managed:
        step = f"pid {p.pid} is run by {m.label}"
        if m.stop:
            step += f": stop it with `{m.stop}`"
        if m.warning:
            step += f" ({m.warning})"
        parts.append(step)
    if plain:
        pids = [p.pid for p in plain]
        every = (
            " (every one: the socket stays open until its last holder closes it)"
            if len(pids) > 1
            else ""
        )
        parts.append(
            f"stop {_pid_list(pids)}{every}: `kill {' '.join(map(str, pids))}`, or "
            f"`sockprobe port {sc.port} --kill`"
        )
    return "; ".join(parts)


def findings(sc: Scene) -> tuple[list[str], str]:
    """(findings, headline)."""
    port = sc.port
    here = sc.here
    listeners = [h for h in here if h.is_listener]
    bound = [h for h in here if h.is_tcp and h.sock.state == TCP_CLOSE]
    udp = [h for h in sc.shown if not h.is_tcp and not h.netns]
    tw = [h for h in here if h.is_tcp and h.sock.state == TIME_WAIT]
    conns = [h for h in here if h.is_tcp and h.rank == 4]
    f: list[str] = []
    headline = ""
    for owner, rows in _group(sc, listeners):
        way = fix(sc, rows)
        f.append(
            f"LISTEN on {_addrs(sc, rows)} {owner}. Fix: "
            + (way + ", " if way else "stop it ")
            + "or choose another port (SO_REUSEADDR does not help while a listener is open)."
        )
        procs = _procs(sc, rows)
        headline = headline or (
            f"LISTEN {_pid_list([p.pid for p in procs])}"
            + (
                f" ({sc.managers[procs[0].pid].label})"
                if procs and procs[0].pid in sc.managers
                else ""
            )
            if procs
            else "LISTEN (owner " + (_hidden_short() if "hidden" in owner else "not found") + ")"
        )
    t4 = trial_for(sc, "tcp")
    for owner, rows in _group(sc, bound):
        reuse_text = ""
        if t4 is not None and t4.reuse == "ok":
            reuse_text = (
                " A bind with SO_REUSEADDR succeeds now (measured: the holder set it too), "
                "but of two such sockets only the first to call listen() gets the port."
            )
        way = fix(sc, rows)
        f.append(
            f"A TCP socket bound but not listening holds the port: {_addrs(sc, rows)} {owner}. "
            "/proc/net/tcp and the default output of ss do not list it (sock_diag's "
            "bound-inactive dump found it, state 7), yet it makes binds fail. Fix: "
            + (way if way else "stop its process")
            + " (calling listen() on it would only turn it into a listener), or choose "
            "another port." + reuse_text
        )
        headline = headline or "a TCP socket bound but not listening"
    for owner, rows in _group(sc, udp):
        way = fix(sc, rows)
        f.append(
            f"UDP socket{'s' if len(rows) > 1 else ''} on {_addrs(sc, rows)} {owner}: UDP and "
            "TCP ports are separate, so it blocks UDP binds only. Fix: "
            + (way if way else "stop it")
            + ", or choose another port (two UDP sockets share a port only if both set "
            "SO_REUSEADDR or SO_REUSEPORT)."
        )
        procs = _procs(sc, rows)
        headline = headline or (f"UDP {_pid_list([p.pid for p in procs])}" if procs else "UDP")
    if conns:
        states = Counter(h.state for h in conns)
        mix = ", ".join(f"{n:,} {s}" for s, n in states.most_common())
        verb = "uses" if len(conns) == 1 else "use"
        if listeners:
            queued = sum(1 for h in conns if h.queued)
            waiting = (
                f" ({queued:,} not accept()ed yet: in the listener's accept queue)"
                if queued
                else ""
            )
            f.append(
                f"{_n(len(conns), 'TCP connection')} {verb} local port {port}: {mix}{waiting}."
            )
        else:
            shown_conns = [h for h in sc.shown if h.is_tcp and h.rank == 4 and not h.netns]
            owners = sorted({o for o, _ in _group(sc, shown_conns)})
            plain = "?" if t4 is None else t4.plain
            works = t4 is not None and t4.reuse == "ok"
            f.append(
                f"No listener, but {_n(len(conns), 'TCP connection')} still {verb} local "
                f"port {port} ({mix}), {'; '.join(owners[:3])}: connections a server accepted "
                f"before its listener closed, or outgoing connections that took {port} as "
                f"their source port. Measured now: a plain bind on 0.0.0.0 gives {plain}; "
                + (
                    "one with SO_REUSEADDR succeeds (they set it too), so a server that sets "
                    "SO_REUSEADDR starts now."
                    if works
                    else "one with SO_REUSEADDR fails too (they did not set it): wait until "
                    "they close, stop their processes, or choose another port."
                )
            )
            headline = headline or f"{_n(len(conns), 'TCP connection')} without a listener"
    if tw:
        left = max(h.sock.expires_ms for h in tw) / 1000
        plain = "?" if t4 is None else t4.plain
        reuse = "?" if t4 is None else t4.reuse
        if not (listeners or bound or conns):
            if reuse == "ok":
                verdict = (
                    f"a plain bind on 0.0.0.0 gives {plain}, one with SO_REUSEADDR succeeds "
                    "(the sockets that left them had set it): a server that sets SO_REUSEADDR "
                    "can start now (`--check --reuseaddr` exits 0)"
                )
            else:
                verdict = (
                    f"a plain bind on 0.0.0.0 gives {plain} and one with SO_REUSEADDR gives "
                    f"{reuse}, so the sockets that left them had not set it (a server that did "
                    f"not, or an outgoing connection that used {port} as its source port and "
                    f"closed first): wait about {left:.0f} s (`--wait`), and set SO_REUSEADDR "
                    "on the server so that the next restart works"
                )
            f.append(
                f"Only TIME_WAIT sockets remain on port {port} ({len(tw):,}), the last gone in "
                f"about {left:.0f} s (TIME_WAIT lasts {TIME_WAIT_S} s on Linux: "
                f"TCP_TIMEWAIT_LEN); measured now: {verdict}."
            )
            headline = headline or f"{_n(len(tw), 'TIME_WAIT')}, {left:.0f} s left"
        else:
            f.append(
                f"{_n(len(tw), 'TIME_WAIT socket')} on the port as well, the last gone in "
                f"about {left:.0f} s."
            )
    if here:
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
    elided = len(sc.held) - len(sc.shown)
    if elided:
        f.append(
            f"The tables show {len(sc.shown):,} of {len(sc.held):,} sockets (every listener, "
            f"bound and UDP socket, and the first {sc.params.limit} connections); "
            "--limit 0 shows all."
        )
    headline = _elsewhere(sc, f, headline)
    headline = _free_or_not(sc, f, headline)
    _settings(sc, f)
    hidden = {
        sc.missing(h) for h in sc.shown if not h.kernel_only and not sc.procs(h) and not h.orphan
    }
    for reason in sorted(r for r in hidden if r.startswith("hidden")):
        sudo = "" if os.geteuid() == 0 else f" (sudo sockprobe port {port})"
        f.append(f"Some holders are {reason}{sudo}.")
    if sc.fallback:
        from sockprobe.port.sockets import FALLBACK_LIMITS

        f.append(f"This run read {FALLBACK_LIMITS}.")
    for p in sc.problems:
        f.append(p[0].upper() + p[1:] + ".")
    return f, headline


def _elsewhere(sc: Scene, f: list[str], headline: str) -> str:
    """--all-netns: the sockets in other namespaces, and why they do not block a bind here."""
    if not sc.params.all_netns:
        return headline
    other = [h for h in sc.held if h.netns and h.pins]
    spaces = sorted({h.netns for h in other})
    if other:
        for name in spaces:
            rows = [h for h in other if h.netns == name]
            f.append(
                f"In network namespace {name}: {_addrs(sc, rows)} "
                f"({', '.join(sorted({h.state for h in rows}))}) "
                f"{owner_text(sc, rows)}. A socket in another network namespace does not block "
                "a bind here (each namespace has its own ports); what blocks one here is a "
                "socket in this namespace, such as the forwarder a container runtime runs on "
                "the host for a published port."
            )
        headline = headline or f"held only in other network namespaces ({', '.join(spaces)})"
    else:
        f.append(
            f"No listener or bound socket on port {sc.port} in the {sc.netns_count} other "
            "network namespaces read."
        )
    for name, err in sc.netns_errors.items():
        f.append(f"Network namespace {name} could not be read: {err}.")
    return headline


def _free_or_not(sc: Scene, f: list[str], headline: str) -> str:
    port = sc.port
    fx = sc.facts
    check = [t for t in sc.trials if t.for_check]
    fails = {t.proto: t.plain for t in check if t.plain != "ok"}
    label = check[0].text(port) if check else "?"
    eacces = fx.privileged and any(e == "EACCES" for e in fails.values())
    if not sc.here:
        if not fails:
            f.append(
                f"Port {port} is free ({' and '.join(p.upper() for p in sc.params.protocols)}): no "
                f"socket uses it in this network namespace and a plain bind on {label} "
                "succeeds now."
            )
            headline = headline or "free: no socket, a plain bind succeeds"
        elif eacces:
            headline = (
                f"privileged port: this process may not bind below ip_unprivileged_port_start "
                f"({fx.unprivileged_start})"
            )
        elif any(e == "EADDRNOTAVAIL" for e in fails.values()):
            f.append(
                f"A bind on {label} gives EADDRNOTAVAIL: that address is not configured on any "
                "interface in this network namespace."
            )
            headline = headline or f"{label} is not an address of this host"
        else:
            errs = ", ".join(f"{p} {e}" for p, e in fails.items())
            f.append(
                f"No socket uses port {port} here, yet a plain bind on {label} fails ({errs}): "
                "no socket listed by sock_diag explains it."
            )
            headline = headline or "no socket holds it, yet a plain bind fails"
    for t in check:
        if t.family == socket.AF_INET6 and t.v6only_set is None and t.v6only is not None:
            bv6 = sc.facts.bindv6only
            if not covers_ipv4(t.address):
                # net/ipv6/af_inet6.c __inet6_bind sets sk_ipv6only for such an address.
                f.append(
                    f"The plain [{t.address}] trial is IPv6-only whatever "
                    f"net.ipv6.bindv6only says ({bv6}): a bind to one IPv6 address sets "
                    f"IPV6_V6ONLY (read back from the socket): {t.proto} bind {t.plain}."
                )
                break
            f.append(
                f"The plain [{t.address}] trial left IPV6_V6ONLY alone, so it was "
                f"{'IPv6-only' if t.v6only else 'dual-stack'} (read back from the socket; "
                f"net.ipv6.bindv6only is {bv6}): {t.proto} bind {t.plain}."
            )
            break
    if sc.exhausted:
        f.append(
            f"The ephemeral port range is exhausted: a bind to port 0 gives {sc.exhausted} "
            f"(ip_local_port_range {fx.local_range[0] if fx.local_range else '?'}-"
            f"{fx.local_range[1] if fx.local_range else '?'}); outgoing connects fail now, "
            "while binds to a named port, as tried above, do not need the range."
        )
    return headline


def _settings(sc: Scene, f: list[str]) -> None:
    port = sc.port
    fx = sc.facts
    check = [t for t in sc.trials if t.for_check]
    fails = {t.proto: t.plain for t in check if t.plain != "ok"}
    if fx.privileged:
        if fx.can_bind_low:
            who_ = (
                "this process has it, so the trial binds above are what a privileged server "
                "gets; a server running without the capability gets EACCES"
            )
        else:
            errs = ", ".join(f"{p} {e}" for p, e in fails.items()) or "none"
            who_ = (
                f"this process lacks it (trial binds: {errs}). Run the server with that "
                "capability (setcap cap_net_bind_service=+ep on its binary, or systemd "
                "AmbientCapabilities=CAP_NET_BIND_SERVICE), lower "
                "net.ipv4.ip_unprivileged_port_start, or use a port at or above it"
            )
        f.append(
            f"Port {port} is below net.ipv4.ip_unprivileged_port_start ({fx.unprivileged_start}): "
            f"binding it needs CAP_NET_BIND_SERVICE (root has it); {who_}."
        )
    if fx.ephemeral and fx.local_range is not None:
        lo, hi = fx.local_range
        if fx.is_reserved:
            f.append(
                f"Port {port} is inside ip_local_port_range ({lo}-{hi}) but listed in "
                "ip_local_reserved_ports, so automatic allocation skips it."
            )
        else:
            f.append(
                f"Port {port} is inside ip_local_port_range ({lo}-{hi}), so outgoing "
                "connections may take it as their source port: choose a server port outside "
                "it, or add it to ip_local_reserved_ports."
            )


def summary(sc: Scene, headline: str) -> str:
    free = sc.free
    check = next((t for t in sc.trials if t.for_check), None)
    where = check.text(sc.port) if check else "?"
    verdicts = ", ".join(f"{t.proto} {t.plain}" for t in sc.trials if t.for_check)
    return (
        f"port {sc.port}: {headline or 'in use'}; a new listener on {where}: "
        f"plain bind {'ok' if free['plain'] else 'fails'} ({verdicts}), "
        f"with SO_REUSEADDR {'ok' if free['reuseaddr'] else 'fails'}"
    )


NOTES = [
    "Sockets come from sock_diag(7) netlink dumps with an in-kernel port filter (the query "
    "`ss 'sport = :P'` makes), for every TCP state plus the bound-inactive bit, so a TCP "
    "socket that is bound but not listening (absent from /proc/net/tcp and from ss's "
    "default output) is listed; INET_DIAG_SKV6ONLY tells a dual-stack [::] socket from an "
    "IPV6_V6ONLY one (ipv6(7)).",
    "Holders: every /proc/PID/fd link of every process is read, as ss -p, lsof and fuser "
    "do, so every process holding a socket is named: forked workers, descriptors inherited "
    "through exec, and descriptors passed over a UNIX socket (SCM_RIGHTS).",
    "Managers: /proc/PID/cgroup names the systemd unit or container scope a holder runs "
    "in; a listener held by pid 1 is socket activation; docker-proxy, rootlessport, "
    "rootlesskit, pasta and slirp4netns are named from their argv. Nothing else is guessed.",
    "Trial binds are socket(), setsockopt(), bind(), close() and never listen(), so no "
    "client connection can land on them; one that succeeds holds the port for "
    "microseconds. 'plain' leaves IPV6_V6ONLY alone, as a plain bind() does.",
    "Linux SO_REUSEADDR (socket(7); net/ipv4/inet_connection_sock.c "
    "inet_csk_bind_conflict): a bind succeeds beside sockets that are not listening "
    "(TIME_WAIT, connections, bound sockets) only if they set it too, and never beside a "
    "listener on an overlapping address.",
    "TIME_WAIT lasts 60 s (TCP_TIMEWAIT_LEN); net.ipv4.tcp_fin_timeout does not shorten it. "
    "It sits on the side that closed first.",
    "Only this network namespace's sockets can block a bind here; --all-netns lists the "
    "others (root: setns(2) needs CAP_SYS_ADMIN).",
    "Other systems (not measured here). macOS and Windows: sockprobe reads holders through "
    "psutil.net_connections(), which lists no bound-but-not-listening socket; macOS needs "
    "root for other users' sockets (lsof -nP -iTCP:PORT shows owners), Windows' netstat -ano "
    "shows pids. BSD's SO_REUSEADDR lets a specific address bind beside a wildcard "
    "listener; Windows' lets a second socket take a port in use (SO_EXCLUSIVEADDRUSE "
    "prevents it) (platform notes without a source checked here).",
]
