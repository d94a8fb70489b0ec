"""Is the loopback interface up? (Linux: /sys/class/net/<if>/flags, IFF_UP.)

With `lo` down a fresh network namespace has no 127.0.0.1 at all (bind fails with
EADDRNOTAVAIL), and a namespace whose `lo` was taken down keeps the address but loses
the local routes' interface: a connect() to 127.0.0.1 then returns EINPROGRESS and its
SYN never arrives, so a probe would count clients that never reached the listener.
"""

from __future__ import annotations

import ipaddress

IFF_UP = 0x1


def interface_up(name: str) -> bool | None:
    """True/False from the interface's flags; None where they cannot be read."""
    try:
        with open(f"/sys/class/net/{name}/flags") as f:
            return bool(int(f.read().strip(), 16) & IFF_UP)
    except (OSError, ValueError):
        return None


def loopback_down_reason(address: str) -> str | None:
    """Why `address` cannot carry an experiment here, if it is a loopback address and
    the loopback interface is down; None otherwise (or when it cannot tell)."""
    try:
        loop = ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return None
    if loop and interface_up("lo") is False:
        return (
            f"the loopback interface lo is down in this network namespace, so nothing sent "
            f"to {address} arrives (ip link set lo up)"
        )
    return None
