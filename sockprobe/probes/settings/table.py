"""The settings table: every setting read from /proc/sys, what it changes, and what it
does here, the last computed by the kernel's rule (sockprobe/kernel/rules.py) from the
values read, so a namespace with other values gets other sentences.

Most net.* settings are per network namespace (a container can differ from its host).
A few are kept once for the host (`scope` says which): in another namespace those are
read-only copies of the host's value or absent while still applying, and an absent one
is reported as such, not as missing from the kernel.
"""

from __future__ import annotations

from dataclasses import dataclass

from sockprobe import kernel
from sockprobe.kernel import rules
from sockprobe.report import NA, Cell, Report, col

NOT_LINUX = "no /proc/sys on this platform"
#: No probe shows these yet; tests/test_settings.py measures them in namespaces.
TESTS = "none yet (measured by tests/test_settings.py)"


@dataclass(frozen=True)
class Setting:
    name: str
    unit: str
    changes: str
    shown_by: str


S = Setting
SETTINGS: tuple[Setting, ...] = (
    S("net.core.somaxconn", "", "cap on every listen() backlog", "backlog"),
    S("net.ipv4.tcp_max_syn_backlog", "", "SYN drops before the backlog, cookies off", "backlog"),
    S("net.ipv4.tcp_syncookies", "", "SYN cookies when half-open requests fill up", "backlog"),
    S("net.ipv4.tcp_abort_on_overflow", "", "a final ACK at a full accept queue", "backlog"),
    S("net.ipv4.tcp_syn_retries", "", "how long connect() retries an unanswered SYN", "timeouts"),
    S("net.ipv4.tcp_syn_linear_timeouts", "", "SYN timeouts that do not double", "timeouts"),
    S("net.ipv4.tcp_synack_retries", "", "SYN-ACK resends of a half-open request", "backlog"),
    S("net.ipv4.tcp_retries1", "", "when retransmissions re-check the route", "none yet"),
    S(
        "net.ipv4.tcp_retries2",
        "",
        "how long unacknowledged data is retransmitted",
        "dead-peer",
    ),
    S("net.ipv4.tcp_orphan_retries", "", "the same for a closed (orphaned) socket", TESTS),
    S(
        "net.ipv4.tcp_keepalive_time",
        "s",
        "idle time before the first keepalive probe",
        "kernel (timers), dead-peer",
    ),
    S("net.ipv4.tcp_keepalive_intvl", "s", "time between keepalive probes", "dead-peer"),
    S("net.ipv4.tcp_keepalive_probes", "", "unanswered probes that end it", "dead-peer"),
    S("net.ipv4.tcp_rto_min_us", "µs", "floor on the retransmission timeout", "kernel (timers)"),
    S("net.ipv4.tcp_rto_max_ms", "ms", "cap on the retransmission timeout", TESTS),
    S(
        "net.ipv4.tcp_fin_timeout",
        "s",
        "life of an orphaned FIN_WAIT2 socket",
        "kernel (timers), close",
    ),
    S("net.ipv4.tcp_max_tw_buckets", "", "TIME_WAIT sockets kept at once", "kernel, close"),
    S("net.ipv4.tcp_max_orphans", "", "closed-but-unfinished sockets kept", "none yet"),
    S(
        "net.ipv4.tcp_tw_reuse",
        "",
        "connect() taking over a TIME_WAIT 4-tuple",
        "reuseaddr, ephemeral",
    ),
    S("net.ipv4.tcp_tw_reuse_delay", "ms", "TIME_WAIT age before reuse", "reuseaddr"),
    S("net.ipv4.tcp_rfc1337", "", "RSTs received in TIME_WAIT", "reuseaddr"),
    S("net.ipv4.tcp_migrate_req", "", "queued clients of a closed REUSEPORT listener", "reuseaddr"),
    S("net.ipv4.tcp_timestamps", "", "TCP timestamps option in the SYN", "kernel, reuseaddr"),
    S("net.ipv4.tcp_window_scaling", "", "window scale option in the SYN", "kernel"),
    S("net.ipv4.tcp_sack", "", "SACK option in the SYN", "kernel"),
    S("net.ipv4.tcp_adv_win_scale", "", "buffer share counted as overhead", "none"),
    S("net.ipv4.tcp_autocorking", "", "small writes held behind queued packets", "nagle"),
    S(
        "net.ipv4.tcp_notsent_lowat",
        "B",
        "unsent bytes allowed before poll() says full",
        "none yet",
    ),
    S("net.ipv4.tcp_slow_start_after_idle", "", "congestion window after idle", "none yet"),
    S("net.ipv4.tcp_moderate_rcvbuf", "", "receive buffer autotuning", "partial-send"),
    S("net.ipv4.tcp_congestion_control", "", "congestion control of new sockets", "kernel, nagle"),
    S("net.ipv4.tcp_available_congestion_control", "", "algorithms loaded", "nagle"),
    S(
        "net.ipv4.tcp_allowed_congestion_control",
        "",
        "algorithms unprivileged users may set",
        "nagle",
    ),
    S(
        "net.ipv4.ip_local_port_range",
        "",
        "ports for bind(port 0) and connect()",
        "ephemeral, port, kernel",
    ),
    S("net.ipv4.ip_local_reserved_ports", "", "ports kept out of automatic choice", "port"),
    S("net.ipv4.ip_unprivileged_port_start", "", "lowest port bind() allows users", "port"),
    S("net.ipv4.ip_nonlocal_bind", "", "bind() to an address not on this host", "kernel"),
    S("net.ipv6.bindv6only", "", "default IPV6_V6ONLY", "kernel, reuseaddr, port"),
    S("net.core.rmem_default", "B", "SO_RCVBUF of a new UDP/UNIX socket", "kernel, udp-truncate"),
    S("net.core.rmem_max", "B", "cap on setsockopt(SO_RCVBUF)", "kernel, udp-truncate"),
    S("net.core.wmem_default", "B", "SO_SNDBUF of a new UDP/UNIX socket", "kernel"),
    S("net.core.wmem_max", "B", "cap on setsockopt(SO_SNDBUF)", "kernel, partial-send"),
    S("net.ipv4.tcp_rmem", "B", "TCP receive buffer min, default, max", "kernel, partial-send"),
    S("net.ipv4.tcp_wmem", "B", "TCP send buffer min, default, max", "kernel, partial-send"),
    S("net.ipv4.udp_mem", "pages", "memory of all UDP sockets together", "none"),
    S("net.ipv4.udp_rmem_min", "B", "receive memory a UDP socket keeps under udp_mem", "none"),
    S("net.unix.max_dgram_qlen", "", "datagrams a UNIX socket queues", "kernel"),
)
del S

NAMES = tuple(s.name for s in SETTINGS)


def raw_settings() -> dict[str, str | None]:
    """Each setting's text as /proc/sys gives it (None where absent)."""
    return {n: kernel.sysctl(n) for n in NAMES}


def read_settings() -> dict[str, Cell]:
    """Every setting, as the fingerprint stores it (NA with the cause where absent)."""
    out: dict[str, Cell] = {}
    for name, v in kernel.sysctls(NAMES).items():
        out[name] = NA(_absent(name)) if isinstance(v, NA) else v
    return out


def _absent(name: str) -> str:
    return rules.absent_reason(name) if kernel.IS_LINUX else NOT_LINUX


def add(report: Report, values: dict[str, Cell], settings: rules.Settings) -> None:
    t = report.table(
        "settings",
        "Kernel settings (this network namespace, from /proc/sys)",
        [
            col("setting"),
            col("value"),
            col("unit"),
            col("scope", "applies to"),
            col("changes", "what it changes"),
            col("here", "what it does here"),
            col("shown_by", "shown by"),
        ],
        keys=["setting"],
    )
    for st in SETTINGS:
        v = values[st.name]
        where = "host" if rules.scope(st.name) == "host" else "this namespace"
        if isinstance(v, NA):
            t.add(st.name, v, st.unit, where, st.changes, NA(v.reason), st.shown_by)
            continue
        sentence = rules.here(st.name, settings)
        here: Cell = sentence if sentence is not None else NA(f"value {v!r} not understood")
        t.add(st.name, v if v != "" else "(empty)", st.unit, where, st.changes, here, st.shown_by)
