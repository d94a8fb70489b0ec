"""sockprobe reuseaddr: when does a restarted server get EADDRINUSE, and what fixes it?

One experiment per module, each on fresh sockets and a fresh ephemeral port:

- matrix.py: the restart matrix (who closes first, SO_REUSEADDR old/new, SO_REUSEPORT,
  abortive close, listener open or closed) and what bind(2) says;
- wildcard.py: a specific address and the wildcard on one port, SO_REUSEADDR on both;
- v6only.py: IPV6_V6ONLY and a 0.0.0.0 bind beside a [::] socket;
- timers.py: the orphaned FIN_WAIT2 timer (tcp_fin_timeout) beside TIME_WAIT's (60 s);
- timewait.py: simultaneous close, an RST ending a TIME_WAIT, a SYN reopening one;
- tw_reuse.py: connect() over a client TIME_WAIT, by the kernel's port choice
  (tcp_tw_reuse) and after an explicit bind();
- reuseport.py: a SO_REUSEPORT restart (tcp_migrate_req) and the same-user rule;
- wait.py: with --wait, a TIME_WAIT waited out and the port bound plainly.

The slow parts run concurrently with the rest: the tcp_tw_reuse retry must wait
tcp_tw_reuse_delay (1 s), and the simultaneous close waits one RTO for a retransmitted
FIN; both start first and are read last.
"""

from __future__ import annotations

from sockprobe import kernel
from sockprobe.kernel.timewait import TIMEWAIT_LEN_S, endpoint_ports
from sockprobe.lab import Lab, cannot_run
from sockprobe.probes import Stopwatch, plural
from sockprobe.probes.reuseaddr import (
    matrix,
    reuseport,
    timers,
    timewait,
    tw_reuse,
    v6only,
    wait,
    wildcard,
)
from sockprobe.probes.reuseaddr.common import SYSCTLS, TIME_WAIT, Ctx, Settings, Watch
from sockprobe.probes.reuseaddr.params import Params
from sockprobe.report import NA, Cell, Report, col, environment, params_dict

__all__ = ["Params", "run"]


def run(params: Params) -> Report:
    watch = Stopwatch()
    host, deadline = params.resolve()
    report = Report(
        "reuseaddr",
        params={k: v for k, v in params_dict(params).items() if k != "progress"},
        environment=environment(kernel.sysctls(SYSCTLS)),
    )
    settings = Settings.read(host)
    try:
        with Lab(host, deadline) as lab:
            proto = "tcp6" if host.is_v6 else "tcp"
            ctx = Ctx(lab, host, proto, Watch(host.family, proto), settings)
            # Started first: the tcp_tw_reuse retry waits tcp_tw_reuse_delay and the crossed
            # FINs wait one RTO; the rest of the probe runs in that time.
            tw = tw_reuse.start(ctx)
            sim = timewait.simultaneous_start(ctx)
            outcomes = [matrix.measure(ctx, i, sc) for i, sc in enumerate(matrix.MATRIX, 1)]
            wild = [wildcard.measure(ctx, order, True) for order in wildcard.ORDERS] + [
                wildcard.measure(ctx, "wildcard_first", False)
            ]
            v6 = [v6only.measure(ctx, s, params.wildcard_listen) for s in v6only.SETTINGS]
            timer_rows = timers.measure(ctx)
            cases = [timewait.rst_in_time_wait(ctx), timewait.syn_reopens(ctx)]
            group, group_na = reuseport.restart(ctx, params.clients)
            users = reuseport.same_user(ctx)
            cases.insert(0, timewait.simultaneous_finish(ctx, sim))
            tw_reuse.finish(ctx, tw)
            waited = None
            if params.wait:
                target = wait.target(outcomes)
                if target is not None:
                    waited = wait.wait_out(ctx, target, params.progress)
            left = _time_waits_left(ctx)
            report.endpoints = lab.endpoints
    except OSError as exc:
        # A loopback that cannot connect (lo down, no descriptors) is not a result.
        reason = cannot_run(exc, host)
        if reason is None:
            raise
        raise reason from None

    matrix.table(report, outcomes, settings, host.address)
    wildcard.table(report, wild)
    v6only.table(report, v6, settings)
    timers.table(report, timer_rows, settings)
    timewait.table(report, cases)
    tw_reuse.table(report, tw, settings)
    reuseport.restart_table(report, group, group_na, settings, params.clients)
    reuseport.user_table(report, users)
    if waited is not None:
        wait.table(report, waited)
    _left_table(report, left)

    headline = matrix.findings(report, outcomes, settings)
    wildcard.findings(report, wild, host.address, host.wildcard)
    v6only.findings(report, v6)
    timers.findings(report, timer_rows, settings)
    timewait.findings(report, cases)
    tw_reuse.findings(report, tw, settings)
    recycle = kernel.sysctl("net.ipv4.tcp_tw_recycle")
    report.findings.append(
        "net.ipv4.tcp_tw_recycle does not exist on this kernel (removed in Linux 4.12)."
        if recycle is None
        else f"net.ipv4.tcp_tw_recycle exists here and is {recycle} (pre-4.12 kernel)."
    )
    clause = reuseport.restart_findings(report, group, settings)
    if clause:
        headline = f"{headline}; {clause}" if headline else clause
    reuseport.user_findings(report, users)
    if waited is not None:
        wait.findings(report, waited)
    if isinstance(left, int):
        report.findings.append(
            f"This run leaves {plural(left, 'TIME_WAIT socket')} behind (the kernel's, on "
            f"the ports listed under Endpoints; gone within {TIMEWAIT_LEN_S:.0f} s); every "
            "connection whose TIME_WAIT was not the point of its row was reset instead."
        )
    report.summary = (headline[:1].upper() + headline[1:]) if headline else report.findings[0]
    _notes(report, params, settings)
    report.duration_s = watch()
    return report


def _time_waits_left(ctx: Ctx) -> Cell:
    """TIME_WAIT sockets between two of this run's ports, counted at its end."""
    if not kernel.IS_LINUX:
        return NA("TIME_WAIT sockets are counted with sock_diag or /proc (Linux)")
    ports = endpoint_ports(ctx.lab.endpoints)
    rows = ctx.watch.rows(ports, whole=True)
    return len({r for r in rows if r.state == TIME_WAIT and r.lport in ports and r.rport in ports})


def _left_table(report: Report, left: Cell) -> None:
    t = report.table(
        "left_behind",
        "What this run leaves in the kernel",
        [col("what"), col("count")],
        keys=["what"],
    )
    t.add("time_wait_sockets", left)


def _notes(report: Report, params: Params, s: Settings) -> None:
    report.notes.extend(
        [
            "Linux bind rule (socket(7) SO_REUSEADDR; inet_bind_conflict() in "
            "net/ipv4/inet_connection_sock.c): on the same or an overlapping address (a "
            "wildcard overlaps every address), a socket may share a port with non-listening "
            "sockets (TIME_WAIT included) only if both it and each of them set SO_REUSEADDR; "
            "a TIME_WAIT socket carries the flag of the socket it came from, and an accepted "
            "socket inherits it from its listener. A listening socket blocks the port "
            "whatever SO_REUSEADDR says; only SO_REUSEPORT on both shares it.",
            "SO_REUSEPORT (socket(7), Linux 3.9+) lets sockets of the same effective user "
            "share a port, listeners included, when every one of them set it before bind(); "
            "the kernel spreads new connections over the listeners. A TIME_WAIT socket that "
            "kept SO_REUSEPORT never blocks a new SO_REUSEPORT bind, whoever owned it.",
            "Who holds a TIME_WAIT: the end that sent its FIN first and then received the "
            "other's (tcp_rcv_state_process, FIN_WAIT2 -> TIME_WAIT), or both ends after a "
            "simultaneous close (CLOSING -> TIME_WAIT). It lasts TCP_TIMEWAIT_LEN, 60 s, fixed "
            "at compile time (net.ipv4.tcp_fin_timeout is the orphaned FIN_WAIT2 timer), "
            "unless it ends early: an in-window RST ends it "
            + (
                "(here tcp_rfc1337 is 1, so it is ignored)"
                if s.rfc1337 == 1
                else f"(tcp_rfc1337 = {s.rfc1337} here; 1 ignores it)"
            )
            + ", a new SYN from the same peer port to a listening port reopens a server-side "
            "one, and connect() can take a client-side one over (the tw_reuse rows). None "
            "is created once the network namespace holds tcp_max_tw_buckets of them "
            f"({s.max_tw_buckets} here; the socket is then closed at once and "
            "TCPTimeWaitOverflow counts it).",
            "tcp_tw_reuse (0 off, 1 on, 2 loopback only; tcp_twsk_unique() in "
            "net/ipv4/tcp_ipv4.c) is consulted only when connect() picks its own port: it "
            "may then take over a TIME_WAIT 4-tuple if the old connection used TCP "
            "timestamps and, from Linux 6.14, the TIME_WAIT entered its state at least "
            "tcp_tw_reuse_delay ms ago (tw_entry_stamp). After an explicit bind() of the "
            "port, connect() to the same peer takes a timestamped TIME_WAIT over at once "
            "whatever tcp_tw_reuse says. It never affects bind(). tcp_tw_recycle was removed "
            "in Linux 4.12 (it broke clients behind NAT).",
            "The pinned tw_reuse rows narrow the connecting socket's ephemeral range to one "
            "port with IP_LOCAL_PORT_RANGE (Linux 6.3+), so the kernel's own port selection "
            "has to face the TIME_WAIT.",
            "SO_LINGER {1, 0} sends RST instead of FIN and so leaves no TIME_WAIT: tcp_close() "
            "(net/ipv4/tcp.c) calls tcp_disconnect() when the linger time is zero, which "
            "resets a synchronised connection and discards unsent data; the peer sees "
            "ECONNRESET. A socket still in SYN_SENT sends nothing on that close.",
            "SO_REUSEPORT restart: the two listeners' accept queues are separate. Closing one "
            "resets the connections still queued on it unless net.ipv4.tcp_migrate_req = 1 "
            "(Linux 5.14+), which moves them to another listener of the group. The probe "
            "steers clients with a classic BPF program (SO_ATTACH_REUSEPORT_CBPF) reading one "
            "DSCP bit of the SYN (set with IP_TOS / IPV6_TCLASS), so the split is fixed.",
            "IPV6_V6ONLY (ipv6(7)): a [::] socket with V6ONLY 0 also accepts IPv4 "
            "(v4-mapped) and owns the port on every IPv4 address; net.ipv6.bindv6only is the "
            "default for new sockets. /proc/net/tcp6 cannot tell the two apart; sock_diag "
            "can (INET_DIAG_SKV6ONLY)."
            + (
                ""
                if params.wildcard_listen
                else " Here the [::] socket is only bound, not listening, to keep the probe "
                "off the network; the bind conflict is the same (--wildcard-listen to listen)."
            ),
            "Cross-check the TIME_WAIT rows with `ss -tan state time-wait` or "
            "`grep ' 06 ' /proc/net/tcp` using the ports under Endpoints; the TIME_WAIT sockets "
            "belong to the kernel, not to this process, and outlive the probe.",
            "Other systems (documented, not measured here): on BSD and macOS the option that "
            "matters is the one on the socket being bound, SO_REUSEADDR also lets a specific "
            "address bind beside a wildcard listener on the same port, SO_REUSEPORT allows "
            "duplicate bindings without spreading connections (FreeBSD adds SO_REUSEPORT_LB "
            "for that), and TIME_WAIT is twice the MSL (macOS: net.inet.tcp.msl). Windows "
            "differs more: SO_REUSEADDR lets a socket take over a port another socket is "
            "actively using, SO_EXCLUSIVEADDRUSE is the option that forbids that, there is no "
            "SO_REUSEPORT, and the TIME_WAIT length is the TcpTimedWaitDelay setting.",
        ]
    )
