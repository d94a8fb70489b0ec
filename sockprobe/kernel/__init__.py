"""What the operating system knows about sockets, behind one facade.

The platform is chosen once, at import (as psutil does with _pslinux): on Linux the
functions read TCP_INFO, /proc and /proc/sys; elsewhere they answer "unsupported" with a
reason (`NA`) so that probes show `n/a` for that measurement and still run the rest.
"""

from __future__ import annotations

import sys

from sockprobe.kernel.common import TcpInfo, sysctl_int, sysctls, tcp_state_name

IS_LINUX = sys.platform.startswith("linux")

if IS_LINUX:
    from sockprobe.kernel.linux import (
        inq,
        netstat_counters,
        outq,
        proc_net_sockets,
        sysctl,
        tcp_info,
    )
else:  # pragma: no cover - exercised only off Linux
    from sockprobe.kernel.other import (
        inq,
        netstat_counters,
        outq,
        proc_net_sockets,
        sysctl,
        tcp_info,
    )

__all__ = [
    "IS_LINUX",
    "TcpInfo",
    "inq",
    "netstat_counters",
    "outq",
    "proc_net_sockets",
    "sysctl",
    "sysctl_int",
    "sysctls",
    "tcp_info",
    "tcp_state_name",
]
