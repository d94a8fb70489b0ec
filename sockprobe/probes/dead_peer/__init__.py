"""sockprobe dead-peer: what notices a peer that vanished without a word, and when?

A crashed host, a dropped NAT entry or a pulled cable sends nothing, not even an RST. The
probe makes such a peer on loopback without root: the peer's own socket gets a classic
BPF filter that drops every packet (kernel/deadpeer.py), so its kernel never acknowledges
anything again. Against it, each case (on fresh sockets, all at once) makes one blocking
call and reports what ended it, after how long, against what the settings predict, with
the probes and retransmissions TCP_INFO counted:

- idle.py: a blocked recv() on an idle connection: no option, SO_KEEPALIVE, TCP_USER_TIMEOUT;
- unacked.py: data left unacknowledged: TCP_USER_TIMEOUT, and no option (tcp_retries2);
- zero_window.py: a live peer that stopped reading, the writer blocked in sendall();
- connect.py: connect() to a silent listener with TCP_USER_TIMEOUT.
"""

from __future__ import annotations

from sockprobe import kernel
from sockprobe.kernel import retries, rules
from sockprobe.lab import Lab, cannot_run
from sockprobe.probes import Stopwatch, plural
from sockprobe.probes.dead_peer import connect, idle, unacked, zero_window
from sockprobe.probes.dead_peer._case import BLOCKED, PAYLOAD, Outcome, run_all
from sockprobe.probes.dead_peer.params import Params
from sockprobe.report import Bars, Report, environment, params_dict

__all__ = ["Params", "run"]

SYSCTLS = (
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_retries2",
    "net.ipv4.tcp_rto_max_ms",
    "net.ipv4.tcp_syn_retries",
    "net.ipv4.tcp_syn_linear_timeouts",
)


def _rto_max_ms() -> int:
    """net.ipv4.tcp_rto_max_ms (Linux 6.15+), else the constant TCP_RTO_MAX."""
    v = kernel.sysctl_int("net.ipv4.tcp_rto_max_ms")
    return v if v else retries.TCP_RTO_MAX_MS


def run(params: Params) -> Report:
    watch = Stopwatch()
    host, deadline = params.resolve()
    report = Report(
        "dead-peer", params=params_dict(params), environment=environment(kernel.sysctls(SYSCTLS))
    )
    retries2 = kernel.sysctl_int("net.ipv4.tcp_retries2")
    rto_max = _rto_max_ms()
    all_cases = [
        *idle.cases(params),
        *unacked.cases(params, None, retries2),
        *zero_window.cases(params),
        *connect.cases(params),
    ]
    try:
        with Lab(host, deadline) as lab:
            out = run_all(lab, all_cases, params)
            report.endpoints = list(lab.endpoints)
    except OSError as exc:
        # A loopback that cannot connect (lo down, no descriptors) is not a result.
        reason = cannot_run(exc, host)
        if reason is None:
            raise
        raise reason from None
    # Both budgets on unacknowledged data count from the timer's first retransmission
    # (retrans_stamp): the predictions need when it left and the RTO it started from.
    none, uut = out["unacked_none"], out["unacked_user_timeout"]
    give = None
    if retries2 is not None and none.first_rto_ms and none.first_retrans_s is not None:
        give = retries.give_up(
            retries2, none.first_rto_ms, first_ms=none.first_retrans_s * 1000, rto_max_ms=rto_max
        )
        # The predicted column follows kernel/rules.py, with timers firing on time (the
        # findings state the range slack allows).
        sched = rules.retransmit_schedule(retries2, none.first_rto_ms / 1000, rto_max / 1000)
        none.predicted_s = none.first_retrans_s + sched.gives_up_s - sched.sends[0]
    if uut.first_retrans_s is not None:
        uut.predicted_s = uut.first_retrans_s + params.user_timeout / 1000
    # Against a zero window the clock starts at the first window probe (icsk_probes_tstamp
    # in tcp_probe_timer()), the first timer that raised tcpi_backoff.
    zut = out["zero_window_user_timeout"]
    if zut.first_backoff_s is not None:
        zut.predicted_s = zut.first_backoff_s + params.user_timeout / 1000
    idle.report_on(report, out, params)
    unacked.report_on(report, out, [c.id for c in unacked.cases(params, None, retries2)])
    zero_window.report_on(report, out, params)
    connect.report_on(report, out, params)
    _chart(report, [out[c.id] for c in all_cases])
    _findings(report, out, params, retries2, give, rto_max)
    _notes(report, rto_max)
    report.duration_s = watch()
    return report


def _chart(report: Report, outcomes: list[Outcome]) -> None:
    bars = Bars("time_to_notice", "When each call ended (or was woken at the bound)", "s")
    for o in outcomes:
        if o.na is not None:
            continue
        seg = "ended" if o.ended else "still blocked"
        bars.add(o.case.id, (seg, round(o.elapsed_s, 3)))
    report.charts.append(bars)


def _s(v: float) -> str:
    return f"{v:.2f} s"


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:g} s"


def _ended(o: Outcome) -> bool:
    return o.na is None and o.ended


def _blocked(o: Outcome) -> bool:
    return o.na is None and o.result == BLOCKED


def _findings(
    report: Report,
    out: dict[str, Outcome],
    p: Params,
    retries2: int | None,
    give: retries.GiveUp | None,
    rto_max: int,
) -> None:
    f = report.findings
    idle_, intvl, cnt = p.keepalive
    ut = f"TCP_USER_TIMEOUT {p.user_timeout} ms"
    none, ka, iut = out["idle_none"], out["idle_keepalive"], out["idle_user_timeout"]
    uut, unone = out["unacked_user_timeout"], out["unacked_none"]
    znone, zka, zut = (out[f"zero_window_{k}"] for k in ("none", "keepalive", "user_timeout"))
    con = out["connect_user_timeout"]
    # The abort time by the kernel's rule, with the timers' slack (kernel/rules.py).
    outcome = (
        rules.retransmit_outcome(retries2, unone.first_rto_ms / 1000, rto_max / 1000)
        if give is not None and retries2 is not None and unone.first_rto_ms
        else None
    )

    if _blocked(none):
        f.append(
            f"With no option, recv() on an idle connection whose peer vanished was still "
            f"blocked after {_s(none.elapsed_s)}: no timer runs on an idle connection, so it "
            "would wait forever."
        )
    if _ended(ka):
        f.append(
            f"SO_KEEPALIVE with TCP_KEEPIDLE {idle_} s, TCP_KEEPINTVL {intvl} s, TCP_KEEPCNT "
            f"{cnt} ended that recv() with {ka.result} after {_s(ka.elapsed_s)} (predicted "
            f"{idle_} + {intvl} x {cnt} = {p.keepalive_s:g} s), after "
            f"{plural(ka.probes or 0, 'unanswered probe')}."
        )
    if _blocked(iut):
        f.append(
            f"{ut} alone did not end it (still blocked after {_s(iut.elapsed_s)}): it bounds "
            "how long sent data may stay unacknowledged, and an idle connection sends nothing."
        )
    if _ended(uut):
        since = (
            f" ({p.user_timeout / 1000:g} s after the timer's first retransmission, seen at "
            f"{_s(uut.first_retrans_s)}: predicted {_s(uut.predicted_s)})"
            if uut.first_retrans_s is not None and uut.predicted_s is not None
            else ""
        )
        f.append(
            f"With {len(PAYLOAD)} B unacknowledged, {ut} ended recv() with {uut.result} after "
            f"{_s(uut.elapsed_s)}{since}, after "
            f"{plural(uut.total_retrans or 0, 'retransmission')}."
        )
    if unone.na is None:
        seen = (
            f"still blocked after {_s(unone.elapsed_s)}"
            if _blocked(unone)
            else f"{unone.result} after {_s(unone.elapsed_s)}"
        )
        text = (
            f"With no option the same send was {seen}, having retransmitted "
            f"{plural(unone.total_retrans or 0, 'time')} (tcpi_total_retrans; "
            f"{unone.retransmits} of them on the retransmission timer, tcpi_retransmits; "
            f"backoff {unone.backoff}, rto now {unone.rto_ms:g} ms)"
        )
        if give is not None and unone.first_rto_ms and unone.first_retrans_s is not None:
            expected = retries.retransmissions_by(
                unone.elapsed_s * 1000,
                retries2 if retries2 is not None else 15,
                unone.first_rto_ms,
                unone.first_retrans_s * 1000,
                rto_max,
            )
            text += (
                f"; from rto {unone.first_rto_ms:g} ms and the first timer retransmission at "
                f"{_s(unone.first_retrans_s)} the backoff schedule predicts {expected} by then. "
                f"By the kernel's rule tcp_retries2 {retries2} is a budget of "
                f"{give.budget_ms / 1000:g} s counted from that first retransmission, and the "
                f"abort comes at the first timer after it (computed, not waited for): "
                f"ETIMEDOUT {outcome}"
            )
        f.append(text + ".")
    if _blocked(znone) and zka.na is None:
        zk = (
            f"so was SO_KEEPALIVE {idle_}/{intvl}/{cnt} (keepalive stands aside while data "
            "waits to be sent)"
            if _blocked(zka)
            else f"SO_KEEPALIVE ended it with {zka.result} after {_s(zka.elapsed_s)}"
        )
        f.append(
            f"A peer that stopped reading kept the writer's sendall() blocked for "
            f"{_s(znone.elapsed_s)} with no option: its kernel answered the window probes "
            f"(unanswered probes never above {znone.probes}, backoff up to {znone.backoff}); "
            f"{zk}."
        )
    if _ended(zut):
        since = (
            f" ({p.user_timeout / 1000:g} s after the first window probe, seen at "
            f"{_s(zut.first_backoff_s)}: predicted {_s(zut.predicted_s)})"
            if zut.first_backoff_s is not None and zut.predicted_s is not None
            else ""
        )
        f.append(
            f"{ut} ended the zero-window writer with {zut.result} after "
            f"{_s(zut.elapsed_s)}{since}, although the peer answered every window probe."
        )
    syn_retries = kernel.sysctl_int("net.ipv4.tcp_syn_retries")
    linear = kernel.sysctl_int("net.ipv4.tcp_syn_linear_timeouts") or 0
    if _ended(con):
        tail = ""
        if syn_retries is not None:
            syn = retries.syn_give_up(syn_retries, linear, rto_max)
            tail = (
                f" instead of the {syn.abort_ms / 1000:g} s that tcp_syn_retries {syn_retries}"
                + (f" with tcp_syn_linear_timeouts {linear}" if linear else "")
                + " gives (computed)"
            )
        f.append(f"{ut} also bounded connect(): {con.result} after {_s(con.elapsed_s)}{tail}.")
    must = []
    if _ended(ka):
        must.append("SO_KEEPALIVE with short TCP_KEEPIDLE/INTVL/CNT for idle connections")
    if _ended(uut) or _ended(zut):
        must.append("TCP_USER_TIMEOUT for data in flight and for writers facing a zero window")
    if must and _blocked(none):
        f.append(
            "To notice a dead peer a program must set "
            + " and ".join(must)
            + ", or time out its own reads; TCP does not notice on its own."
        )
    kt = kernel.sysctl_int("net.ipv4.tcp_keepalive_time")
    ki = kernel.sysctl_int("net.ipv4.tcp_keepalive_intvl")
    kp = kernel.sysctl_int("net.ipv4.tcp_keepalive_probes")
    if kt is not None and ki is not None and kp is not None:
        total = retries.keepalive_abort_s(kt, ki, kp)
        f.append(
            f"The kernel defaults here: SO_KEEPALIVE without the per-socket options notices a "
            f"dead idle peer after tcp_keepalive_time {kt} + tcp_keepalive_intvl {ki} x "
            f"tcp_keepalive_probes {kp} = {total:g} s ({_minutes(total)})"
            + (
                f"; unacknowledged data (tcp_retries2 {retries2}) is given up {outcome}; both "
                "computed by the kernel's rules."
                if outcome is not None
                else "."
            )
        )
    if _ended(ka) and (_ended(uut) or _ended(zut)) and _blocked(none):
        report.summary = (
            f"A vanished peer went unnoticed with no option (recv() still blocked after "
            f"{_s(none.elapsed_s)}); SO_KEEPALIVE {idle_}/{intvl}/{cnt} noticed it after "
            f"{_s(ka.elapsed_s)} and {ut} after "
            f"{_s(uut.elapsed_s if _ended(uut) else zut.elapsed_s)}."
        )
    else:
        ended = [o.case.id for o in out.values() if _ended(o)]
        report.summary = (
            f"{plural(len(ended), 'case')} of {len(out)} ended on the kernel's own timers: "
            + (", ".join(ended) or "none")
            + "."
        )


def _notes(report: Report, rto_max: int) -> None:
    report.notes.extend(
        [
            "The silent peer is a real socket whose kernel drops every packet for it: a "
            "classic BPF filter `ret #0` attached with SO_ATTACH_FILTER (socket(7)), run by "
            "tcp_filter() in tcp_v4_rcv() before any TCP processing, so nothing is "
            "acknowledged and no RST is sent. No privilege is needed.",
            "Keepalive (tcp_keepalive_timer(), net/ipv4/tcp_timer.c) probes after TCP_KEEPIDLE "
            "of silence, then every TCP_KEEPINTVL, and aborts when TCP_KEEPCNT probes went "
            "unanswered; it does nothing while data is in flight or queued.",
            # tcp_timer.c retransmits_timed_out(): start_ts = tp->retrans_stamp, which
            # tcp_retransmit_skb() sets when the first timer retransmission leaves (the
            # netns runs with tcp_retries2 2 and 3 abort where that start predicts).
            "tcp_retries2 is a time budget, not a count: retransmits_timed_out() compares the "
            "time since the timer's first retransmission (retrans_stamp) with "
            "tcp_model_timeout(tcp_retries2, TCP_RTO_MIN 200 ms), exponential backoff capped "
            f"at the maximum RTO ({rto_max / 1000:g} s here"
            + (
                ", net.ipv4.tcp_rto_max_ms"
                if kernel.sysctl_int("net.ipv4.tcp_rto_max_ms")
                else ", TCP_RTO_MAX: no tcp_rto_max_ms on this kernel"
            )
            + "), whatever this connection's own RTO is. TCP_USER_TIMEOUT replaces that "
            "budget (tcp(7)).",
            "A zero-window peer that answers window probes is kept forever by RFC 1122 "
            "4.2.2.17 unless TCP_USER_TIMEOUT is set (tcp_probe_timer() checks it from the "
            "first probe) or the socket is orphaned.",
            "Each case closes its sockets with SO_LINGER {1, 0} (RST): an orderly close would "
            "leave an orphan retransmitting its FIN to the silent peer for minutes.",
            "macOS (documented, not measured here): TCP_KEEPALIVE, not TCP_KEEPIDLE, sets "
            "the idle time; TCP_KEEPINTVL and TCP_KEEPCNT exist; there is no TCP_USER_TIMEOUT "
            "(TCP_CONNECTIONTIMEOUT and TCP_RXT_CONNDROPTIME come nearest); SO_ATTACH_FILTER "
            "is Linux-only, so the silent peer cannot be built this way there. Windows "
            "(documented, not measured here): SIO_KEEPALIVE_VALS, or TCP_KEEPIDLE, "
            "TCP_KEEPINTVL and TCP_KEEPCNT on recent Windows 10 builds, and TCP_MAXRT for "
            "the retransmission bound.",
        ]
    )
