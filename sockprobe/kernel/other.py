"""Fallback back end for platforms without Linux's /proc and TCP_INFO layout.

Every function answers "unknown" so probes print `n/a` with a reason. macOS has
TCP_CONNECTION_INFO and sysctl(3) names such as kern.ipc.somaxconn; Windows has
SIO_TCP_INFO. Neither is implemented yet.
"""

from __future__ import annotations

import socket
from typing import Any

from sockprobe.kernel.common import TcpInfo

REASON = "not implemented on this platform (Linux only for now)"


def tcp_info(sock: socket.socket) -> TcpInfo | None:
    return None


def inq(sock: socket.socket) -> int | None:
    return None


def outq(sock: socket.socket) -> int | None:
    return None


def sysctl(name: str) -> str | None:
    return None


def netstat_counters() -> dict[str, dict[str, int]]:
    return {}


def proc_net_sockets(proto: str, port: int | None = None) -> list[Any]:
    return []
