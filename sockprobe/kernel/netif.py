"""Network interface flags and MTU through the classic ioctls (netdevice(7)).

SIOCGIFFLAGS/SIOCSIFFLAGS read and set an interface's flags (IFF_UP), SIOCGIFMTU/
SIOCSIFMTU its MTU, all on any socket with a `struct ifreq` (the name in 16 bytes, then a
union whose first member is a short for the flags or an int for the MTU). Setting needs
CAP_NET_ADMIN in the interface's network namespace: in a namespace made by
sockprobe.kernel.netns the probe has it; on the host, only root does. Reading needs
nothing. Chosen over running `ip link` so that a probe needs no iproute2 and no
subprocess. Linux only (the numbers are Linux's, include/uapi/linux/sockios.h).
"""

from __future__ import annotations

import fcntl
import socket
import struct

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
SIOCGIFMTU = 0x8921
SIOCSIFMTU = 0x8922
IFF_UP = 0x1

#: struct ifreq: char ifr_name[16]; then a 24-byte union (short flags / int mtu).
_FLAGS = struct.Struct("16sh22x")
_MTU = struct.Struct("16si20x")


def _name(iface: str) -> bytes:
    raw = iface.encode()
    if not 0 < len(raw) < 16:
        raise ValueError(f"interface name {iface!r} must be 1..15 bytes")
    return raw


def link_flags(iface: str) -> int:
    """The interface's flags (IFF_UP is bit 0). OSError (ENODEV) if there is none."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        out = fcntl.ioctl(s, SIOCGIFFLAGS, _FLAGS.pack(_name(iface), 0))
    return int(_FLAGS.unpack(out)[1]) & 0xFFFF


def link_is_up(iface: str) -> bool | None:
    """Whether the interface is administratively up; None if it cannot be read."""
    try:
        return bool(link_flags(iface) & IFF_UP)
    except OSError:
        return None


def link_mtu(iface: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        out = fcntl.ioctl(s, SIOCGIFMTU, _MTU.pack(_name(iface), 0))
    return int(_MTU.unpack(out)[1])


def set_link(iface: str, *, up: bool | None = None, mtu: int | None = None) -> None:
    """Set the interface up or down and/or its MTU (CAP_NET_ADMIN in its namespace)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        if mtu is not None:
            fcntl.ioctl(s, SIOCSIFMTU, _MTU.pack(_name(iface), mtu))
        if up is not None:
            out = fcntl.ioctl(s, SIOCGIFFLAGS, _FLAGS.pack(_name(iface), 0))
            flags = int(_FLAGS.unpack(out)[1]) & 0xFFFF
            flags = flags | IFF_UP if up else flags & ~IFF_UP
            # The union member is a signed short in struct ifreq.
            signed = flags - 0x10000 if flags & 0x8000 else flags
            fcntl.ioctl(s, SIOCSIFFLAGS, _FLAGS.pack(_name(iface), signed))


def loopback_down_reason(address: str) -> str | None:
    """Why `address` cannot carry an experiment here, if it is a loopback address and
    the loopback interface is down in this network namespace; None otherwise (or when it
    cannot tell). With `lo` down a fresh namespace has no 127.0.0.1 at all, and one whose
    `lo` was taken down keeps the address while a connect() to it returns EINPROGRESS and
    its SYN never arrives, so a probe would count clients that never reached a listener.
    """
    import ipaddress

    try:
        loop = ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return None
    if loop and link_is_up("lo") is False:
        return (
            f"the loopback interface lo is down in this network namespace, so nothing sent "
            f"to {address} arrives (ip link set lo up)"
        )
    return None
