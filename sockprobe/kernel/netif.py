"""Is the loopback interface up? (Linux: SIOCGIFFLAGS, netdevice(7), IFF_UP.)

The ioctl answers for the caller's network namespace; /sys/class/net would not, since
`unshare -n` keeps the host's sysfs mount.

With `lo` down a fresh network namespace has no 127.0.0.1 at all (bind fails with
EADDRNOTAVAIL), and a namespace whose `lo` was taken down keeps the address but loses
the local routes' interface: a connect() to 127.0.0.1 then returns EINPROGRESS and its
SYN never arrives, so a probe would count clients that never reached the listener.
"""

from __future__ import annotations

import fcntl
import ipaddress
import socket
import struct

IFF_UP = 0x1
SIOCGIFFLAGS = 0x8913


def interface_up(name: str) -> bool | None:
    """True/False from the interface's flags (struct ifreq: the name, then a short);
    None where they cannot be read (no such interface, not Linux)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            req = struct.pack("16sh", name.encode()[:15], 0)
            flags = struct.unpack_from("16sh", fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, req))[1]
    except (OSError, ValueError):
        return None
    return bool(flags & IFF_UP)


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
