"""TIME_WAIT rules of the Linux kernel, as functions of the settings read from it.

Each function answers one question the reuseaddr and close probes print a sentence
about, from the sysctls of the network namespace the probe runs in, so that the sentence
follows the kernel's rule (interactions included) and a test can compare it with a
measurement made under the same settings:

- `tw_created(max_tw_buckets)`: is a TIME_WAIT socket created at all? inet_twsk_alloc()
  (net/ipv4/inet_timewait_sock.c) refuses one once the namespace holds
  tcp_max_tw_buckets of them; tcp_time_wait() (net/ipv4/tcp_minisocks.c) then closes the
  socket at once and counts TCPTimeWaitOverflow. With the setting at 0 none is created.
- `connect_reuse(...)`: does connect()'s own port choice (__inet_hash_connect ->
  __inet_check_established -> tcp_twsk_unique, net/ipv4/tcp_ipv4.c) take a TIME_WAIT
  4-tuple over? Only if the old connection used TCP timestamps (tw_ts_recent_stamp),
  tcp_tw_reuse allows it for this traffic (2 = loopback only) and, from Linux 6.14, the
  TIME_WAIT entered its state at least tcp_tw_reuse_delay ms ago (tw_entry_stamp).
- `bind_connect_takeover(...)`: after an explicit bind() of the port, connect() reaches
  the same tcp_twsk_unique() with no `twp`, and then only the timestamps matter:
  tcp_tw_reuse and its delay are not consulted.
- `rst_kills_timewait(rfc1337)`: an in-window RST ends a TIME_WAIT at once
  (tcp_timewait_state_process, "TIME_WAIT assassination"), unless tcp_rfc1337 is 1.

`drop_all(sock)` attaches a classic BPF filter that drops every segment arriving for a
socket (SO_ATTACH_FILTER, socket(7)): no privilege needed, and the peer's kernel sees
nothing but silence, which is how the close probes make two FINs cross on loopback.
"""

from __future__ import annotations

import ctypes
import os
import socket
import struct

#: include/uapi/asm-generic/socket.h
SO_ATTACH_FILTER = 26
SO_DETACH_FILTER = 27
#: One classic BPF instruction, `ret #0`: accept zero bytes, i.e. drop the packet.
_RET_0 = struct.pack("=HBBI", 0x06, 0, 0, 0)
#: TCP_TIMEWAIT_LEN (include/net/tcp.h): 60 s, compiled in.
TIMEWAIT_LEN_S = 60.0


def tw_created(max_tw_buckets: int | None) -> bool | None:
    """Whether a connection that ends here leaves a TIME_WAIT socket (None: unknown).

    Only the limit is known without counting the namespace's TIME_WAIT sockets; 0 is
    the one value that decides it for every connection."""
    if max_tw_buckets is None:
        return None
    return max_tw_buckets > 0


def no_tw_reason(max_tw_buckets: int | None) -> str:
    """Why no TIME_WAIT was created, named by its cause when the setting explains it."""
    if max_tw_buckets == 0:
        return "tcp_max_tw_buckets is 0: no TIME_WAIT is created"
    if max_tw_buckets is not None:
        return (
            f"no TIME_WAIT was created (this network namespace may hold its limit, "
            f"tcp_max_tw_buckets = {max_tw_buckets}, already)"
        )
    return "no TIME_WAIT was created"


def reuse_applies(reuse: int | None, loopback: bool) -> bool:
    """tcp_tw_reuse: 0 off, 1 on, 2 on for loopback traffic only (the default)."""
    return reuse == 1 or (reuse == 2 and loopback)


def connect_reuse(
    reuse: int | None,
    delay_ms: int | None,
    timestamps: bool,
    loopback: bool,
    age_ms: float,
) -> tuple[bool, str]:
    """(takes over, why) for connect() choosing its own port over a TIME_WAIT 4-tuple
    that entered TIME_WAIT `age_ms` ago and did (`timestamps`) or did not use TCP
    timestamps. Where tcp_tw_reuse_delay is absent (before 6.14) the kernel compared
    timestamps in whole seconds: at least 1 s."""
    if not timestamps:
        return False, "the old connection used no TCP timestamps, which tcp_tw_reuse needs"
    if not reuse_applies(reuse, loopback):
        if reuse == 2:
            return False, "tcp_tw_reuse is 2: TIME_WAIT 4-tuples are reused on loopback only"
        return False, f"tcp_tw_reuse is {reuse}: connect() does not reuse a TIME_WAIT 4-tuple"
    delay = 1000 if delay_ms is None else delay_ms
    if age_ms <= delay:
        return False, f"the TIME_WAIT is younger than tcp_tw_reuse_delay ({delay} ms)"
    return True, (
        f"tcp_tw_reuse is {reuse}, the old connection used TCP timestamps and its TIME_WAIT "
        f"is older than tcp_tw_reuse_delay ({delay} ms)"
    )


def bind_connect_takeover(timestamps: bool) -> tuple[bool, str]:
    """(takes over, why) for bind() to the port, then connect() to the same peer."""
    if timestamps:
        return True, (
            "the port was bound explicitly, so tcp_twsk_unique() checks only that the old "
            "connection used TCP timestamps (tcp_tw_reuse is not consulted)"
        )
    return False, "the old connection used no TCP timestamps: the 4-tuple stays in TIME_WAIT"


def orphan_fin_wait2_timer(fin_timeout: int | None, rto_s: float | None) -> float | None:
    """The timer an orphaned FIN_WAIT2 socket starts with, in seconds (None: unknown).

    tcp_fin_time() (include/net/tcp.h) raises tcp_fin_timeout to at least 3.5 x RTO.
    tcp_rcv_state_process() then keeps the socket on its keepalive timer for
    (timeout - 60 s) when the timeout exceeds TCP_TIMEWAIT_LEN, and as a FIN_WAIT2
    timewait mini-socket for the rest (or the whole timeout when it is 60 s or less)."""
    if fin_timeout is None:
        return None
    tmo = float(fin_timeout)
    if rto_s is not None:
        tmo = max(tmo, 3.5 * rto_s)
    return tmo - TIMEWAIT_LEN_S if tmo > TIMEWAIT_LEN_S else tmo


def rst_kills_timewait(rfc1337: int | None) -> bool | None:
    if rfc1337 is None:
        return None
    return rfc1337 == 0


#: tcpi_options bit (include/uapi/linux/tcp.h): the connection negotiated timestamps.
TCPI_OPT_TIMESTAMPS = 1


def uses_timestamps(sock: socket.socket) -> bool | None:
    """Whether this connection negotiated TCP timestamps (TCP_INFO tcpi_options, the
    sixth byte of struct tcp_info); None where TCP_INFO is not available."""
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, getattr(socket, "TCP_INFO", 11), 8)
    except OSError:
        return None
    if len(raw) < 6:
        return None
    return bool(raw[5] & TCPI_OPT_TIMESTAMPS)


def count_time_waits(family: int, ports: set[int]) -> int:
    """TIME_WAIT sockets whose local and remote ports are both in `ports` (sock_diag, the
    kernel filtering by state). Raises OSError where sock_diag is unavailable."""
    from sockprobe.kernel import sockdiag

    found = sockdiag.dump(family, states=1 << 6, meminfo=False)
    return len({(d.local, d.remote) for d in found if d.local[1] in ports and d.remote[1] in ports})


def endpoint_ports(endpoints: list[dict[str, object]]) -> set[int]:
    """The ports of a report's endpoints ("127.0.0.1:80", "[::1]:80")."""
    ports: set[int] = set()
    for ep in endpoints:
        for key in ("local", "remote"):
            if key in ep:
                ports.add(int(str(ep[key]).rsplit(":", 1)[1]))
    return ports


def missing_sysctl_reason(name: str) -> str:
    """Why a sysctl could not be read: a net.* setting that is absent in a network
    namespace other than the initial one may exist only there (tcp_max_orphans does),
    which is not the same as "absent on this kernel"."""
    if name.startswith("net.") and not in_initial_netns():
        return (
            f"{name} is not visible in this network namespace (the kernel may keep it in "
            "the initial namespace only)"
        )
    return f"{name} does not exist on this kernel"


def in_initial_netns() -> bool:
    """Whether this process shares pid 1's network namespace (True where unknown)."""
    try:
        return os.stat("/proc/self/ns/net").st_ino == os.stat("/proc/1/ns/net").st_ino
    except OSError:
        return True


class DropFilter:
    """`ret #0` attached to one socket until detach(): every segment for it is dropped
    before TCP sees it (sk_filter in tcp_v4_rcv), so its peer retransmits on its RTO."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        # The kernel copies the program at attach time; the buffer need not outlive it,
        # but it must exist while setsockopt reads it.
        self._insn = ctypes.create_string_buffer(_RET_0, len(_RET_0))
        # struct sock_fprog {unsigned short len; struct sock_filter *filter}: native layout.
        fprog = struct.pack("@HP", 1, ctypes.addressof(self._insn))
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)

    def detach(self) -> None:
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, SO_DETACH_FILTER, 0)
        except OSError:
            pass  # the socket is already closed: nothing left to filter
