"""Platform-neutral records and helpers shared by the kernel back ends."""

from __future__ import annotations

from dataclasses import dataclass

from sockprobe.report import NA, Cell

#: TCP states as numbered in the Linux kernel (include/net/tcp_states.h); /proc/net/tcp,
#: TCP_INFO's tcpi_state and sock_diag all use these numbers.
TCP_STATES = {
    1: "ESTABLISHED",
    2: "SYN_SENT",
    3: "SYN_RECV",
    4: "FIN_WAIT1",
    5: "FIN_WAIT2",
    6: "TIME_WAIT",
    7: "CLOSE",
    8: "CLOSE_WAIT",
    9: "LAST_ACK",
    10: "LISTEN",
    11: "CLOSING",
    12: "NEW_SYN_RECV",
}


def tcp_state_name(state: int) -> str:
    return TCP_STATES.get(state, f"state {state}")


@dataclass(frozen=True)
class TcpInfo:
    """The fields of Linux `struct tcp_info` (include/uapi/linux/tcp.h) sockprobe reads.

    Counters that a short kernel reply does not include are None, never 0.
    """

    state: int
    ca_state: int
    rto_us: int
    ato_us: int
    snd_mss: int
    rcv_mss: int
    unacked: int
    retrans: int
    rtt_us: int
    snd_cwnd: int
    total_retrans: int
    segs_out: int | None
    segs_in: int | None
    notsent_bytes: int | None
    data_segs_in: int | None
    data_segs_out: int | None
    bytes_sent: int | None

    @property
    def state_name(self) -> str:
        return tcp_state_name(self.state)


def sysctl_int(name: str) -> int | None:
    """An integer sysctl (`net.core.somaxconn`), or None where it does not exist."""
    from sockprobe.kernel import sysctl

    raw = sysctl(name)
    if raw is None:
        return None
    try:
        return int(raw.split()[0])
    except (ValueError, IndexError):
        return None


def sysctls(names: list[str] | tuple[str, ...]) -> dict[str, Cell]:
    """Several sysctls for a report's environment; a missing one is NA with the reason."""
    from sockprobe.kernel import sysctl

    out: dict[str, Cell] = {}
    for name in names:
        raw = sysctl(name)
        if raw is None:
            from sockprobe.kernel.timewait import missing_sysctl_reason

            out[name] = NA(missing_sysctl_reason(name))
        else:
            out[name] = int(raw) if raw.lstrip("-").isdigit() else raw
    return out
