"""Per-socket options and state that the `timeouts` and `close` probes set or read.

Everything here has a binary layout or a source that differs per platform, which is why
it lives under kernel/ and not in the probes:

- SO_RCVTIMEO / SO_SNDTIMEO take a `struct timeval` on Linux and the BSDs (socket(7)),
  a DWORD of milliseconds on Windows;
- SO_LINGER takes a `struct linger` of two ints (socket(7)); Windows uses two u_shorts;
- a listener's accept queue: Linux's TCP_INFO on a LISTEN socket reports the current
  accept-queue length in `tcpi_unacked` and its limit in `tcpi_sacked` (what `ss -lt`
  prints as Recv-Q and Send-Q);
- TCP states come from TCP_INFO, and those of sockets without an fd (TIME_WAIT, orphans)
  from a sock_diag(7) lookup of the exact 4-tuple;
- whether a thread sits in a system call on a given fd: /proc/self/task/<tid>/syscall
  (proc(5)), whose first field is the syscall number and second the first argument.

Every reader returns None where the platform cannot answer, so probes show `n/a`.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import sys
import time

from sockprobe import kernel

IS_WINDOWS = sys.platform.startswith("win")
if IS_WINDOWS:  # pragma: no cover - Windows only
    _TIMEVAL = struct.Struct("<I")  # a DWORD of milliseconds
    _LINGER = struct.Struct("<HH")
elif sys.platform == "darwin":  # pragma: no cover - macOS only
    # time_t (long) then suseconds_t (int32), padded to 16 bytes.
    _TIMEVAL = struct.Struct("@li0l")
    _LINGER = struct.Struct("@ii")
else:
    _TIMEVAL = struct.Struct("@ll")  # Linux: time_t, suseconds_t (both long)
    _LINGER = struct.Struct("@ii")


def timeval(seconds: float) -> bytes:
    """The option value for SO_RCVTIMEO/SO_SNDTIMEO meaning `seconds`."""
    if IS_WINDOWS:  # pragma: no cover
        return _TIMEVAL.pack(round(seconds * 1000))
    whole = int(seconds)
    return _TIMEVAL.pack(whole, round((seconds - whole) * 1_000_000))


def set_kernel_timeouts(sock: socket.socket, rcv: float | None, snd: float | None) -> None:
    """Set the kernel's own receive/send timeouts (socket(7) SO_RCVTIMEO, SO_SNDTIMEO).

    Python does not know about them: gettimeout() stays None and a call that runs out of
    time fails with the kernel's EAGAIN (or EINPROGRESS for connect), not TimeoutError.
    """
    if rcv is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval(rcv))
    if snd is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval(snd))


def rcvtimeo(sock: socket.socket) -> float | None:
    """SO_RCVTIMEO as the kernel stores it (it keeps jiffies, so it may round), in s."""
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _TIMEVAL.size)
    except OSError:
        return None
    if IS_WINDOWS:  # pragma: no cover
        return int(_TIMEVAL.unpack(raw)[0]) / 1000
    sec, usec = _TIMEVAL.unpack(raw[: _TIMEVAL.size])
    return float(sec) + float(usec) / 1_000_000


def abortive_linger(sock: socket.socket) -> None:
    """SO_LINGER {l_onoff=1, l_linger=0}: close() discards unsent data and sends RST
    instead of FIN, so the closing side skips TIME_WAIT (socket(7))."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER.pack(1, 0))


def tcp_state(sock: socket.socket) -> str | None:
    """The TCP state name of a socket (TCP_INFO tcpi_state), or None if unknown."""
    info = kernel.tcp_info(sock)
    return None if info is None else info.state_name


def wait_for_state(sock: socket.socket, states: tuple[str, ...], timeout: float) -> str | None:
    """Poll TCP_INFO until the socket is in one of `states` or `timeout` passes.

    Returns the last state seen (so the caller can tell a timeout from success), or None
    where TCP_INFO does not exist. Polling every 0.5 ms is cheap (one getsockopt) and
    reacts to a FIN or RST on loopback within a millisecond.
    """
    end = time.monotonic() + timeout
    while True:
        state = tcp_state(sock)
        if state is None or state in states or time.monotonic() >= end:
            return state
        time.sleep(0.0005)


def accept_queue(listener: socket.socket) -> tuple[int, int] | None:
    """(connections waiting in the accept queue, the queue's limit) of a listener.

    Linux's tcp_get_info() puts sk_ack_backlog in tcpi_unacked and sk_max_ack_backlog
    (listen()'s backlog clamped to net.core.somaxconn) in tcpi_sacked for a LISTEN
    socket. The queue counts as full once its length exceeds the limit, which is why
    listen(n) admits n + 1 connections.
    """
    try:
        raw = listener.getsockopt(socket.IPPROTO_TCP, getattr(socket, "TCP_INFO", 11), 32)
    except OSError:
        return None
    if len(raw) < 32 or raw[0] != 10:  # 10 = TCP_LISTEN
        return None
    unacked, sacked = struct.unpack_from("=II", raw, 24)
    return int(unacked), int(sacked)


def send_window(sock: socket.socket) -> int | None:
    """The peer's advertised receive window as this sender sees it (TCP_INFO
    tcpi_snd_wnd, Linux >= 5.4), in bytes; None where the kernel does not report it.

    0 with nothing in flight means nothing can leave until the peer reads: a send
    buffer that is full then stays full.
    """
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, getattr(socket, "TCP_INFO", 11), 256)
    except OSError:
        return None
    if len(raw) < _SND_WND_OFFSET + 4:
        return None
    return int(struct.unpack_from("=I", raw, _SND_WND_OFFSET)[0])


#: Offset of tcpi_snd_wnd in struct tcp_info (include/uapi/linux/tcp.h): after
#: tcpi_rcv_ooopack at 224.
_SND_WND_OFFSET = 228


def blocked_on_fd(thread_id: int | None, fd: int, timeout: float) -> bool | None:
    """Wait until thread `thread_id` sits in a system call whose first argument is `fd`.

    /proc/self/task/<tid>/syscall (proc(5)) reads "<nr> <arg0> ..." while the thread is
    blocked in a call, "running" otherwise. A thread waiting for the GIL is in futex()
    on an address, so arg0 == fd means it really is inside recv()/accept()/send() on
    that socket. Returns None where the file cannot be read (not Linux, no permission).
    """
    if thread_id is None:
        return None
    path = f"/proc/self/task/{thread_id}/syscall"
    end = time.monotonic() + timeout
    while True:
        try:
            with open(path) as f:
                fields = f.read().split()
        except OSError:
            return None
        if len(fields) >= 2 and fields[0].isdigit():
            try:
                if int(fields[1], 16) == fd:
                    return True
            except ValueError:
                return None
        if time.monotonic() >= end:
            return False
        time.sleep(0.001)


# sock_diag(7) exact lookup (no NLM_F_DUMP): the kernel finds the one socket with this
# 4-tuple in its established hash, which also holds TIME_WAIT and orphaned sockets, so
# the cost does not grow with the number of sockets on the host (a dump of a busy host
# has to parse tens of thousands). Layouts from include/uapi/linux/{netlink,inet_diag}.h.
_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_DIAG_REQ = struct.Struct("=BBBBI")  # family, protocol, ext, pad, states
_DIAG_ID = struct.Struct(">HH16s16s")  # sport, dport (network order), src, dst
_DIAG_TAIL = struct.Struct("=III")  # ifindex, cookie[2]
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST = 0x1
_NLMSG_ERROR = 2
_INET_DIAG_NOCOOKIE = 0xFFFFFFFF
_NETLINK_SOCK_DIAG = 4


def lookup_state(
    family: int, local: tuple[str, int], remote: tuple[str, int], timeout: float = 1.0
) -> str | None:
    """The TCP state of the socket with exactly this local and remote address, including
    kernel-only ones no fd refers to (FIN_WAIT2 orphans, TIME_WAIT); None if there is no
    such socket. Raises OSError where sock_diag is unavailable (not Linux, sandboxes)."""
    if not hasattr(socket, "AF_NETLINK"):
        raise OSError(errno.EAFNOSUPPORT, "sock_diag needs Linux netlink")
    src = socket.inet_pton(family, local[0]).ljust(16, b"\0")
    dst = socket.inet_pton(family, remote[0]).ljust(16, b"\0")
    body = (
        _DIAG_REQ.pack(family, socket.IPPROTO_TCP, 0, 0, 0xFFFFFFFF)
        + _DIAG_ID.pack(local[1], remote[1], src, dst)
        + _DIAG_TAIL.pack(0, _INET_DIAG_NOCOOKIE, _INET_DIAG_NOCOOKIE)
    )
    hdr = _NLMSGHDR.pack(_NLMSGHDR.size + len(body), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST, 1, 0)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_SOCK_DIAG) as nl:
        nl.settimeout(timeout)
        nl.sendto(hdr + body, (0, 0))
        data = nl.recv(65536)
    if len(data) < _NLMSGHDR.size + 4:
        raise OSError(errno.EIO, "sock_diag: short reply")
    _len, mtype, _flags, _seq, _pid = _NLMSGHDR.unpack_from(data, 0)
    if mtype == _NLMSG_ERROR:
        (code,) = struct.unpack_from("=i", data, _NLMSGHDR.size)
        if code == -errno.ENOENT:
            return None  # no socket with this 4-tuple
        raise OSError(-code, f"sock_diag: {os.strerror(-code)}")
    # struct inet_diag_msg starts with family, state, timer, retrans (one byte each).
    return kernel.tcp_state_name(data[_NLMSGHDR.size + 1])
