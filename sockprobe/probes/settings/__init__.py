"""sockprobe kernel: the kernel settings that shape the other probes' results, here.

Each setting is read from /proc/sys (the network namespace this process runs in: most
net.* settings are per namespace) and shown with its value, where it applies, what it
changes, what it does here, and the probe that shows it. "What it does here" is computed
by the kernel's rule from the values read (sockprobe/kernel/rules.py), interactions and
floors included: tcp_syn_retries is a time budget shaped by tcp_syn_linear_timeouts,
tcp_fin_timeout above 60 s is spent partly on the keepalive timer, and so on.

The package is not called `kernel` so it is never confused with `sockprobe.kernel`; the
command and registry name are `kernel`. Experiments, one module each:

- table.py       the settings table (reading only);
- new_socket.py  what fresh sockets get from the settings (getsockopt, exact);
- timers.py      FIN_WAIT2, TIME_WAIT and keepalive timers of a loopback connection.

Skip the two measurements with --no-measure.
"""

from __future__ import annotations

from sockprobe import kernel
from sockprobe.kernel import rules
from sockprobe.lab import Deadline, Lab
from sockprobe.probes import Stopwatch
from sockprobe.probes.settings import new_socket, table, timers
from sockprobe.probes.settings.params import Params
from sockprobe.probes.settings.table import NAMES, SETTINGS, Setting, raw_settings, read_settings
from sockprobe.report import NA, Cell, Report, environment, params_dict
from sockprobe.status import Unsupported

reserved_ports = rules.reserved_ports

__all__ = [
    "NAMES",
    "SETTINGS",
    "Params",
    "Setting",
    "read_settings",
    "reserved_ports",
    "run",
]


def run(params: Params) -> Report:
    watch = Stopwatch()
    # Reading settings binds nothing, so --no-measure runs even when the ephemeral port
    # range is exhausted (resolve() would exit 3 then).
    host, deadline = (
        params.resolve() if params.measure else (params.check_host(), Deadline(params.deadline))
    )
    values = read_settings()
    report = Report("kernel", params=params_dict(params), environment=environment(values))
    # The table's sentences use the RTO floor, not the RTO measured below, so that they
    # are the same in every run on this host (`sockprobe diff` compares them exactly).
    settings = rules.Settings(raw_settings())
    table.add(report, values, settings)
    checks: list[new_socket.Check] = []
    tms: list[timers.Timer] = []
    rto: float | None = None
    if params.measure:
        try:
            with Lab(host, deadline) as lab:
                checks = new_socket.measure(lab, settings)
                if kernel.IS_LINUX:
                    tms, rto = timers.measure(lab, settings, params.follow)
                report.endpoints = lab.endpoints
        except Unsupported as exc:
            # The settings need no connection: say how to read them anyway.
            raise Unsupported(f"{exc}; --no-measure reads the settings only") from None
        new_socket.add(report, checks)
        if tms:
            timers.add(report, tms)
    _findings(report, values)
    new_socket.findings(report, checks)
    timers.findings(report, settings, tms, rto)
    _ports(report, settings)
    report.summary = _headline(values, tms)
    _notes(report)
    report.duration_s = watch()
    return report


def _findings(report: Report, values: dict[str, Cell]) -> None:
    missing = [n for n, v in values.items() if isinstance(v, NA)]
    host_only = [n for n in missing if n in rules.INITIAL_NETNS_ONLY]
    absent = [n for n in missing if n not in rules.INITIAL_NETNS_ONLY]
    s = f"{len(values) - len(missing)} of {len(values)} settings read from /proc/sys"
    if host_only:
        s += (
            f"; {', '.join(host_only)} exist only in the initial network namespace, and this "
            "process runs in another (the host's values apply here)"
        )
    if absent:
        s += f"; not on this kernel: {', '.join(absent)}"
    report.findings.append(s + ".")


def _ports(report: Report, st: rules.Settings) -> None:
    lohi = st.ints("net.ipv4.ip_local_port_range")
    if len(lohi) == 2:
        res = rules.reserved_ports(st.text("net.ipv4.ip_local_reserved_ports") or "")
        report.findings.append(
            f"Ephemeral ports: {lohi[1] - lohi[0] + 1:,} ({lohi[0]}-{lohi[1]}), {res:,} "
            "reserved; bind(port 0) and a connect() without bind() pick their local port "
            "here (connect() may share one local port among different destinations)."
        )


def _headline(values: dict[str, Cell], tms: list[timers.Timer]) -> str:
    read = sum(1 for v in values.values() if not isinstance(v, NA))
    parts = [f"{read} of {len(values)} settings read"]
    for name, label, unit in (
        ("net.core.somaxconn", "somaxconn", ""),
        ("net.ipv4.tcp_congestion_control", "congestion control", ""),
        ("net.ipv4.tcp_fin_timeout", "tcp_fin_timeout", " s"),
    ):
        v = values.get(name)
        if v is not None and not isinstance(v, NA):
            parts.append(f"{label} {v:,}{unit}" if isinstance(v, int) else f"{label} {v}{unit}")
    tw = next((t for t in tms if t.id == "time_wait_timer"), None)
    if tw is not None and isinstance(tw.measured, float):
        parts.append(f"TIME_WAIT timer {tw.measured:.0f} s")
    return ", ".join(parts)


def _notes(report: Report) -> None:
    report.notes.extend(
        [
            "Values come from /proc/sys of the network namespace this process runs in. Most "
            "net.* settings are per namespace; the `host` ones (net.core.rmem_*/wmem_*, "
            "udp_mem, tcp_max_orphans, the congestion control lists) have one value for the "
            "whole host: other namespaces see a read-only copy or nothing.",
            "`what it does here` is computed by the kernel's rule from the values read "
            "(sockprobe/kernel/rules.py, one function per setting, each citing the kernel "
            "function it follows); where a rule depends on the RTO, the table assumes the "
            "RTO at its tcp_rto_min_us floor, as on loopback, and the timers table uses the "
            "RTO it measured. Only the two 'measured now' tables are measurements.",
            "New-socket values are read with getsockopt() on fresh sockets; the timers from "
            "/proc/net/tcp (USER_HZ ticks, read a moment after each state change); the RTO "
            "from TCP_INFO tcpi_rto (tcp(7)).",
            "tcp_fin_timeout does not shorten TIME_WAIT: TIME_WAIT lasts TCP_TIMEWAIT_LEN "
            "(60 s, compiled in). What helps a restarting server is SO_REUSEADDR on the old "
            "and the new socket (sockprobe reuseaddr); tcp_tw_reuse only affects connect().",
            "The timer check leaves one TIME_WAIT socket on an ephemeral loopback port for "
            "60 s (its port is under Endpoints: `ss -tan state time-wait`).",
            "Other platforms (documented, not measured here): macOS has sysctl "
            "kern.ipc.somaxconn, net.inet.ip.portrange.first/last and net.inet.tcp.msl (in "
            "ms; TIME_WAIT lasts 2 x MSL); Windows has `netsh int ipv4 show dynamicport tcp` "
            "and the TcpTimedWaitDelay registry value. sockprobe reads neither yet, so every "
            "value there is n/a.",
        ]
    )
