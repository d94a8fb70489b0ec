"""The settings table: each setting this probe depends on, its value here, and what that
value makes the kernel do, computed by the kernel's rule (kernel/overflow.py,
kernel/synretry.py), never restated documentation."""

from __future__ import annotations

from sockprobe.kernel import overflow as rule
from sockprobe.kernel import synretry
from sockprobe.kernel.ephemeral import local_port_range
from sockprobe.probes.backlog.params import SYSCTLS
from sockprobe.report import Cell, Report, col


def _int(settings: dict[str, Cell], name: str) -> int | None:
    v = settings.get(name)
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def effect(name: str, settings: dict[str, Cell]) -> str:
    """What setting `name` does here, given every setting of SYSCTLS."""
    v = _int(settings, name)
    cookies = _int(settings, "net.ipv4.tcp_syncookies")
    retries = _int(settings, "net.ipv4.tcp_syn_retries")
    linear = _int(settings, "net.ipv4.tcp_syn_linear_timeouts")
    if name == "net.ipv4.ip_local_port_range":
        rng = local_port_range()
        if rng is None:
            return "not readable here"
        return (
            f"every client connect() and every bind(port 0) takes a local port from these "
            f"{rng[1] - rng[0] + 1} ports; with none free connect() fails with EADDRNOTAVAIL "
            "(this probe then stops and says how many are in use)"
        )
    if v is None:
        return "not present or not readable here"
    if name == "net.core.somaxconn":
        return (
            f"listen(n) stores min(n, {v}) as the accept queue's limit, without an error; "
            "the queue then holds one more than that"
        )
    if name == "net.ipv4.tcp_max_syn_backlog":
        floor = rule.max_syn_backlog_floor(v)
        text = (
            "the listen backlog, not this, bounds half-open requests; this only makes the "
            "kernel drop SYNs from peers it has no TCP metrics history for once a listener "
            f"holds more than {floor} half-open requests (3/4 of {v}), and only with "
            "tcp_syncookies 0"
        )
        if cookies not in (0, None):
            text += f": no effect here (tcp_syncookies is {cookies})"
        return text
    if name == "net.ipv4.tcp_syncookies":
        return {
            0: "no cookies: once half-open requests exceed a listener's backlog, further "
            "SYNs are dropped",
            1: "once half-open requests exceed a listener's backlog, SYNs are answered with "
            "cookies and nothing is kept for them",
            2: "every SYN is answered with a cookie; no half-open request is ever kept",
        }.get(v, f"{v}: not a value this probe knows")
    if name == "net.ipv4.tcp_abort_on_overflow":
        fates = ", ".join(
            f"{label} is {rule.at_full_queue(p, v)}"
            for p, label in (
                (rule.SYN, "a SYN"),
                (rule.REQUEST_ACK, "a half-open request's final ACK"),
                (rule.COOKIE_ACK, "a cookie's final ACK"),
            )
        )
        return f"at a full accept queue {fates}" + (
            " (tcp_syncookies 2 keeps no request, so nothing is reset)" if cookies == 2 else ""
        )
    if name == "net.ipv4.tcp_syn_retries":
        return synretry.describe(v, linear)
    if name == "net.ipv4.tcp_synack_retries":
        sent, drop = synretry.synack_schedule(v)
        return (
            f"a half-open request whose final ACK never comes gets its SYN-ACK resent "
            f"{len(sent)} times (at {', '.join(f'{t:g}' for t in sent) or '-'} s) and is "
            f"dropped after {drop:g} s without telling the client (a listener's TCP_SYNCNT "
            "overrides it)"
        )
    if name == "net.ipv4.tcp_timestamps":
        from sockprobe.kernel.syncookie import keeps_options

        return (
            "SYN cookies keep window scaling and SACK"
            if keeps_options(bool(v))
            else "SYN-cookie connections lose window scaling and SACK (they ride only in "
            "the timestamp)"
        ) + " (see the cookies table)"
    if name == "net.ipv4.tcp_syn_linear_timeouts":
        text = f"the initial SYN timeout and the {v} after it stay at 1 s, later ones double"
        if retries is not None:
            n = len(synretry.syn_schedule(retries, v))
            n0 = len(synretry.syn_schedule(retries, 0))
            give = synretry.connect_gives_up_after(retries, v)
            give0 = synretry.connect_gives_up_after(retries, 0)
            text += (
                f": with tcp_syn_retries {retries}, {n} retransmissions and ETIMEDOUT after "
                f"{give:g} s (without linear timeouts: {n0} and {give0:g} s)"
            )
        return text
    return ""


def table(report: Report, settings: dict[str, Cell]) -> None:
    t = report.table(
        "settings",
        "Kernel settings (this network namespace) and what they do here",
        [col("setting"), col("value"), col("effect", "what it does here")],
        keys=["setting"],
    )
    for name in SYSCTLS:
        value = settings.get(name)
        if isinstance(value, str):
            value = " ".join(value.split())
        t.add(name, value, effect(name, settings))
