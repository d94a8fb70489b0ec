"""sockprobe backlog: how many connections listen(n) really admits, and where the rest wait.

The experiments, one module each:
- admission.py: N connects per listen(n), no accept(), counted from the clients and the
  listener (tables `admission`, `listener`; the `admission` chart);
- retries.py: `--retry-wait S`, the waiting clients' SYN retransmissions (`retries`);
- overflow.py: what a SYN, a half-open request's ACK and a cookie's ACK each meet at a
  full queue, stated by the kernel's rule and measured (`overflow`);
- synqueue.py: with tcp_syncookies 0, where half-open requests stop (`syn_queue`);
- cookies.py: a connection through a SYN cookie beside a normal one (`cookies`);
- defer.py: TCP_DEFER_ACCEPT holding a connection until its data (`defer_accept`);
- synack.py: `--synack-retries N`, SYN-ACK resends until a request is dropped (`synack`);
- give_up.py: `--syncnt N`, one client's SYN schedule until ETIMEDOUT (`syn_give_up`);
- settings.py: the settings and what each does here (`settings`).

Every client is closed with SO_LINGER {1, 0} (an RST), so a run with thousands of
clients leaves no TIME_WAIT behind. A backlog up to somaxconn with more connects than
that needs more descriptors than the usual soft RLIMIT_NOFILE of 1024: the soft limit is
raised toward the hard limit for the run and put back afterwards.
"""

from __future__ import annotations

from sockprobe import kernel
from sockprobe.kernel.backlog import FdLimit, open_fds, raise_nofile, restore_nofile
from sockprobe.kernel.netif import loopback_down_reason
from sockprobe.lab import Lab, resolve_host
from sockprobe.probes import Stopwatch
from sockprobe.probes.backlog import (
    admission,
    cookies,
    defer,
    give_up,
    overflow,
    retries,
    settings,
    synack,
    synqueue,
)
from sockprobe.probes.backlog.admission import Plan, Row
from sockprobe.probes.backlog.clients import require_ports
from sockprobe.probes.backlog.params import DEFAULT_BACKLOGS, EXTRA, SYSCTLS, Params
from sockprobe.report import Report, environment, params_dict
from sockprobe.status import Unsupported, oserror_text

__all__ = ["DEFAULT_BACKLOGS", "EXTRA", "SYSCTLS", "Params", "run"]

#: Descriptors kept free for everything else the process has open (netlink sockets,
#: the listener, files read from /proc).
FD_HEADROOM = 32


def _fit(plans: list[Plan], lim: FdLimit, in_use: int) -> list[Plan]:
    """Cut each row's connects to what the descriptor limit allows."""
    if lim.soft is None:
        return plans
    cap = lim.soft - in_use - FD_HEADROOM
    if cap < 1:
        raise Unsupported(
            f"RLIMIT_NOFILE {lim.soft} (hard {lim.hard or 'unlimited'}) leaves no "
            f"descriptor for a client ({in_use} open already)"
        )
    return [p if p.connects <= cap else Plan(p.backlog, p.effective, cap, p.asked) for p in plans]


def _fd_text(report: Report, lim: FdLimit, plans: list[Plan]) -> None:
    if lim.raised_from is not None:
        report.notes.append(
            f"RLIMIT_NOFILE: the soft limit was raised from {lim.raised_from} to {lim.soft} "
            f"for this run (hard limit {lim.hard or 'unlimited'}) and restored afterwards."
        )
    hard = lim.hard if lim.hard is not None else "unlimited"
    for p in plans:
        if p.connects >= p.asked:
            continue
        report.findings.append(
            f"RLIMIT_NOFILE is too low for listen({p.backlog}) with {p.asked} connects "
            f"(soft {lim.soft}, hard {hard}; every client is a descriptor): ran "
            f"{p.connects} connects instead"
            + (
                ", too few to fill its accept queue"
                if p.effective is not None and p.connects <= p.effective + 1
                else ""
            )
            + ". Raise the hard limit (ulimit -Hn, or LimitNOFILE= for a service) to "
            "run the full sweep."
        )
    if lim.error:
        report.notes.append(f"Raising RLIMIT_NOFILE failed: {lim.error}.")


def run(params: Params) -> Report:
    watch = Stopwatch()
    checked = resolve_host(params.host)
    down = loopback_down_reason(checked.address)
    if down is not None:
        raise Unsupported(down)
    require_ports(checked)
    host, deadline = params.resolve()
    values = kernel.sysctls(SYSCTLS)
    report = Report("backlog", params=params_dict(params), environment=environment(values))
    somaxconn = kernel.sysctl_int("net.core.somaxconn")
    abort = kernel.sysctl_int("net.ipv4.tcp_abort_on_overflow")
    syncookies = kernel.sysctl_int("net.ipv4.tcp_syncookies")
    plans = []
    for b in params.backlogs:
        eff = None if somaxconn is None else min(b, somaxconn)
        n = params.connects if params.connects is not None else (b if eff is None else eff) + EXTRA
        plans.append(Plan(b, eff, n, n))
    in_use = open_fds()
    lim = raise_nofile(in_use + max(p.connects + FD_HEADROOM for p in plans))
    rows: list[Row] = []
    waits: list[retries.Retry] = []
    refused: list[tuple[str, OSError]] = []
    paths: list[overflow.PathResult] = []
    gave: give_up.GiveUp | None = None
    conns: list[cookies.Connection] = []
    deferred: list[defer.Deferred] = []
    synq: synqueue.SynQueue | None = None
    resent: synack.SynAck | None = None
    timestamps = kernel.sysctl_int("net.ipv4.tcp_timestamps")
    try:
        plans = _fit(plans, lim, in_use)
        for plan in plans:
            with Lab(host, deadline) as lab:
                row = admission.measure(lab, plan, params)
                rows.append(row)
                if params.retry_wait > 0:
                    if params.progress is not None:
                        params.progress(
                            f"backlog: listen({row.backlog}): watching the waiting clients' "
                            f"SYNs for {params.retry_wait:g} s"
                        )
                    lst = next(s for s in lab.sockets if s.type == row.clients[0].sock.type)
                    waits.append(retries.watch(lab, lst, row, params.retry_wait))
                report.endpoints.extend(lab.endpoints)
        if params.overflow and kernel.IS_LINUX:
            with Lab(host, deadline) as lab:
                paths = overflow.measure(lab, abort or 0, 1 if syncookies is None else syncookies)
                report.endpoints.extend(lab.endpoints)
        max_syn = kernel.sysctl_int("net.ipv4.tcp_max_syn_backlog")
        if params.overflow and kernel.IS_LINUX and syncookies == 0 and max_syn is not None:
            with Lab(host, deadline) as lab:
                synq = synqueue.measure(lab, min(somaxconn or 128, 4096), max_syn)
                report.endpoints.extend(lab.endpoints)
        # The experiments below hold packets back with a socket filter (kernel/
        # synfilter.py); a kernel that refuses it for this user (EPERM, seen as an
        # unprivileged user) skips that experiment, named, and the rest runs.
        if params.cookies and kernel.IS_LINUX:
            try:
                with Lab(host, deadline) as lab:
                    conns = cookies.measure(lab, 1 if syncookies is None else syncookies)
                    report.endpoints.extend(lab.endpoints)
            except PermissionError as exc:
                refused.append(("the SYN cookie comparison", exc))
        if params.defer and kernel.IS_LINUX:
            try:
                with Lab(host, deadline) as lab:
                    deferred = defer.measure(lab, params.defer_wait)
                    report.endpoints.extend(lab.endpoints)
            except PermissionError as exc:
                refused.append(("TCP_DEFER_ACCEPT", exc))
        if params.synack_retries and kernel.IS_LINUX:
            try:
                with Lab(host, deadline) as lab:
                    resent = synack.measure(lab, params.synack_retries)
                    report.endpoints.extend(lab.endpoints)
            except PermissionError as exc:
                refused.append(("the SYN-ACK resends", exc))
        if params.syncnt:
            with Lab(host, deadline) as lab:
                linear = kernel.sysctl_int("net.ipv4.tcp_syn_linear_timeouts")
                gave = give_up.measure(lab, params.syncnt, linear)
                report.endpoints.extend(lab.endpoints)
    finally:
        restore_nofile(lim)
    proto = "tcp6" if host.is_v6 else "tcp"
    admission.tables(report, rows, host.is_v6)
    if waits:
        reason = next((r.view.diag_error for r in rows if r.view.diag_error), None)
        retries.table(report, params.retry_wait, waits, reason or "sock_diag did not report it")
    if paths:
        overflow.table(report, paths)
    if synq is not None:
        synqueue.table(report, synq)
    if conns:
        cookies.table(report, conns, timestamps, host.is_v6)
    if deferred:
        defer.table(report, deferred)
    if resent is not None:
        synack.table(report, resent)
    if gave is not None:
        give_up.table(report, gave)
    settings.table(report, values)
    admission.findings(report, rows, somaxconn, proto)
    for w in waits:
        report.findings.append(retries.finding(w))
    if paths:
        overflow.findings(report, paths, abort, syncookies)
    if synq is not None:
        report.findings.append(synqueue.finding(synq))
    if conns:
        cookies.findings(report, conns, timestamps, host.is_v6)
    if deferred:
        defer.findings(report, deferred)
    if resent is not None:
        report.findings.append(synack.finding(resent))
    if gave is not None:
        report.findings.append(give_up.finding(gave))
    for what, err in refused:
        report.findings.append(
            f"{what[:1].upper()}{what[1:]} could not be measured here: the kernel refused the "
            f"socket filter it needs for this user ({oserror_text(err)})."
        )
    _fd_text(report, lim, plans)
    report.summary = admission.summary(rows)
    _notes(report)
    report.duration_s = watch()
    return report


def _notes(report: Report) -> None:
    report.notes.extend(
        [
            "Two queues (listen(2), tcp(7)): a SYN creates a half-open request (SYN_RECV); "
            "the final ACK turns it into a complete connection in the accept queue, which "
            "accept() pops. The backlog is the accept queue's limit, clamped to "
            "net.core.somaxconn; Linux declares the queue full only when it holds more than "
            "the limit (sk_acceptq_is_full(), include/net/sock.h), so it admits backlog + 1.",
            "Why extra clients hang instead of being refused: a SYN that meets a full accept "
            "queue is dropped without an answer in tcp_conn_request() (net/ipv4/tcp_input.c; "
            "counted in the listener's sk_drops and in TcpExt ListenOverflows and "
            "ListenDrops). The client cannot tell a drop from loss, so it retransmits on the "
            "schedule the settings table states, until connect() gives up with ETIMEDOUT. "
            "Every retransmitted SYN that is dropped again counts again, so the counters keep "
            "growing while the per-client states do not: the client states are the result.",
            "Half-open requests are bounded by the listen backlog too: with tcp_syncookies 1 "
            "a SYN that finds more half-open requests than the backlog gets a cookie, with 0 "
            "it is dropped. On loopback the handshake completes inside connect(), so "
            "half-open requests hardly ever accumulate; the overflow experiment holds final "
            "ACKs back with a socket filter on the listener to make them.",
            "A cookie client (or one whose final ACK was dropped) is ESTABLISHED on its side "
            "only, and learns nothing until it sends: its first data segment carries the ACK "
            "again and gets it in once the queue has room. --retry-wait shows such clients "
            "as 'ESTABLISHED on client side only'. A server-speaks-first protocol never "
            "sends, so such a client waits for a greeting that never comes.",
            "Client states come from TCP_INFO tcpi_state (tcp(7)) and SO_ERROR (socket(7)); "
            "the listener's queue and limit from sock_diag (sock_diag(7), the idiag_rqueue "
            "and idiag_wqueue that `ss -ltn` prints as Recv-Q and Send-Q) and from the "
            "rx_queue of its LISTEN row in /proc/net/tcp[6]; its drops from "
            "SK_MEMINFO_DROPS (`ss -ltnm` shows them as d<n>). /proc/net/netstat counters "
            "are per network namespace. Clients are closed with SO_LINGER {1, 0}, an RST, "
            "so nothing is left in TIME_WAIT.",
            "Check it yourself while a run is held: ss -ltn 'sport = :PORT' (the listener "
            "ports are under Endpoints), ss -ltnm for the drops, "
            "nstat -az TcpExtListenOverflows TcpExtListenDrops, and tcpdump -i lo -nn "
            "'tcp port PORT and tcp[tcpflags] & tcp-syn != 0' to see the retransmitted SYNs.",
            "The settings are per network namespace: `unshare -n` or `ip netns` give a "
            "namespace with its own somaxconn, tcp_syncookies and tcp_abort_on_overflow.",
            "macOS: kern.ipc.somaxconn (128 by default) caps the backlog, BSD stacks count "
            "the queue limit differently (a fudge factor of 3/2 in sonewconn), and with a "
            "full queue the stack may drop an older half-open connection to make room "
            "(tcp_dropdropablreq) or answer with a SYN cookie; measure the admitted number "
            "there. Windows: listen(SOMAXCONN) lets the stack pick a large limit, and when "
            "the queue is full the client gets WSAECONNREFUSED (10061) instead of hanging "
            "(documented for Winsock listen(); not measured here).",
        ]
    )
