"""Route metrics the TCP timers read, through rtnetlink (rtnetlink(7)).

One RTM_GETROUTE request for a destination returns the route the kernel would use, with
its metrics nested in RTA_METRICS (what `ip route get ADDRESS` prints after `cache`).
TCP takes RTAX_RTO_MIN from the route only when it is locked (tcp_rto_min() in
include/net/tcp.h tests dst_metric_locked()); `ip route ... rto_min 10ms` sets the lock.
Chosen over running `ip route get` so that a probe needs no iproute2 and no subprocess.
Linux only (the numbers are Linux's, include/uapi/linux/rtnetlink.h).
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct

NETLINK_ROUTE = 0
RTM_NEWROUTE = 24
RTM_GETROUTE = 26
NLM_F_REQUEST = 1
NLMSG_ERROR = 2
RTA_DST = 1
RTA_METRICS = 8
RTAX_LOCK = 1
RTAX_RTO_MIN = 13

_NLMSG = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_RTMSG = struct.Struct(
    "=BBBBBBBBI"
)  # family, dst_len, src_len, tos, table, proto, scope, type, flags
_RTA = struct.Struct("=HH")  # len, type


def _align(n: int) -> int:
    return (n + 3) & ~3


def _attrs(buf: bytes) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    off = 0
    while off + _RTA.size <= len(buf):
        length, kind = _RTA.unpack_from(buf, off)
        if length < _RTA.size:
            break
        out[kind & 0x7FFF] = buf[off + _RTA.size : off + length]
        off += _align(length)
    return out


def metrics(address: str, timeout: float = 1.0) -> dict[int, int]:
    """The RTAX_* metrics of the route to `address` (only those the route sets), from
    one RTM_GETROUTE. Raises OSError when the kernel refuses (no route: ENETUNREACH)."""
    ip = ipaddress.ip_address(address.split("%")[0])
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    raw = ip.packed
    rta = _RTA.pack(_RTA.size + len(raw), RTA_DST) + raw
    body = _RTMSG.pack(family, 8 * len(raw), 0, 0, 0, 0, 0, 0, 0) + rta
    msg = _NLMSG.pack(_NLMSG.size + len(body), RTM_GETROUTE, NLM_F_REQUEST, 1, 0) + body
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE) as nl:
        nl.settimeout(timeout)
        nl.send(msg)
        reply = nl.recv(65536)
    off = 0
    while off + _NLMSG.size <= len(reply):
        length, kind, _flags, _seq, _pid = _NLMSG.unpack_from(reply, off)
        if length < _NLMSG.size:
            break
        payload = reply[off + _NLMSG.size : off + length]
        if kind == NLMSG_ERROR:
            (err,) = struct.unpack_from("=i", payload)
            if err:
                name = errno.errorcode.get(-err, str(-err))
                raise OSError(-err, f"RTM_GETROUTE {address}: {name}")
        elif kind == RTM_NEWROUTE:
            nested = _attrs(payload[_RTMSG.size :]).get(RTA_METRICS, b"")
            return {
                k: struct.unpack_from("=I", v)[0] for k, v in _attrs(nested).items() if len(v) >= 4
            }
        off += _align(length)
    return {}


def rto_min_ms(address: str) -> float | None:
    """The locked rto_min (ms) of the route to `address`, which TCP uses instead of its
    own floor (tcp_rto_min()); None when the route sets none or does not lock it."""
    m = metrics(address)
    if RTAX_RTO_MIN not in m or not m.get(RTAX_LOCK, 0) & (1 << RTAX_RTO_MIN):
        return None
    return float(m[RTAX_RTO_MIN])
