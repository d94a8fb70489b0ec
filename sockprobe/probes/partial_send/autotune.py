"""Autotuning: setting SO_RCVBUF turns receive-buffer autotuning off, measured.

Two bulk transfers of the same byte count over fresh loopback connections, the receiver
reading as fast as it can: one with default buffers, one with SO_RCVBUF set on the
listener before listen() (inherited by the accepted socket: the usual copy-paste).

- With default buffers, the kernel grows the receive buffer while the application keeps
  up (tcp_input.c tcp_rcv_space_adjust(), called from tcp_recvmsg: it measures what the
  application read per RTT, `tcpi_rcv_space`, and raises sk_rcvbuf up to tcp_rmem[2]),
  when net.ipv4.tcp_moderate_rcvbuf is 1.
- SO_RCVBUF sets SOCK_RCVBUF_LOCK (net/core/sock.c sk_setsockopt), and
  tcp_rcv_space_adjust() leaves a locked buffer alone: it stays at the doubled value
  getsockopt() reads back for the whole connection.
- The window scale is fixed in the handshake (tcp_output.c tcp_select_initial_window):
  from the largest buffer the socket may grow to, max(tcp_rmem[2], rmem_max), when the
  buffer is not locked, and at most from the locked buffer's space when it is; so a
  connection whose SO_RCVBUF was set before listen() can never advertise a large window,
  whatever is done to it later.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass

from sockprobe import kernel
from sockprobe.kernel import tcpwindow
from sockprobe.lab import Deadline, Lab, pair_or_unsupported
from sockprobe.probes.partial_send.params import Params
from sockprobe.report import CONTEXT, NA, VOLATILE, Cell, Report, col

SETTINGS = ("default", "so_rcvbuf_set")
CHUNK = 1 << 20
TCP_MAX_WSCALE = 14
NO_WINDOW = "TCP_INFO window fields are Linux-only"


@dataclass
class Transfer:
    setting: str
    requested: int | None
    rcvbuf_start: int = 0
    rcvbuf_end: int = 0
    rcvbuf_max: int = 0
    rcv_space_start: int | None = None
    rcv_space_end: int | None = None
    snd_wnd_max: int | None = None
    rcv_wscale: int | None = None
    #: The scale the sender saw in the SYN-ACK (its tcpi_snd_wscale).
    peer_wscale: int | None = None
    sent: int = 0
    received: int = 0
    seconds: float = 0.0

    @property
    def mb_per_s(self) -> float:
        return self.received / self.seconds / 1e6 if self.seconds > 0 else 0.0


def _rcvbuf(s: socket.socket) -> int:
    return s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)


def _receive(s: socket.socket, tr: Transfer, deadline: Deadline) -> float:
    """Read to end-of-file, following SO_RCVBUF; return when the last byte came."""
    while True:
        s.settimeout(deadline.timeout(5.0, f"receiving the {tr.setting} transfer"))
        chunk = s.recv(CHUNK)
        if not chunk:
            return time.perf_counter()
        tr.received += len(chunk)
        tr.rcvbuf_max = max(tr.rcvbuf_max, _rcvbuf(s))


def transfer(lab: Lab, setting: str, p: Params) -> Transfer:
    requested = p.autotune_rcvbuf if setting == "so_rcvbuf_set" else None

    def listener(s: socket.socket) -> None:
        if requested is not None:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, requested)

    name = f"autotune {setting}"
    c, s = pair_or_unsupported(lab, name, configure_listener=listener, name=name)
    lab.record(f"{name} receiver", s)
    tr = Transfer(setting, requested)
    tr.rcvbuf_start = tr.rcvbuf_max = _rcvbuf(s)
    w0 = tcpwindow.window(s)
    if w0 is not None:
        tr.rcv_space_start, tr.rcv_wscale = w0.rcv_space, w0.rcv_wscale
    wc = tcpwindow.window(c)
    if wc is not None:
        tr.peer_wscale = wc.snd_wscale
    reader = lab.thread(_receive, s, tr, lab.deadline, name=f"sockprobe-autotune-{setting}")
    data = memoryview(b"\0" * CHUNK)
    t0 = time.perf_counter()
    while tr.sent < p.autotune_bytes:
        c.settimeout(lab.deadline.timeout(5.0, f"sending the {setting} transfer"))
        n = min(CHUNK, p.autotune_bytes - tr.sent)
        c.sendall(data[:n])
        tr.sent += n
        wc = tcpwindow.window(c)
        if wc is not None and wc.snd_wnd is not None:
            tr.snd_wnd_max = max(tr.snd_wnd_max or 0, wc.snd_wnd)
    c.shutdown(socket.SHUT_WR)
    if not reader.join(lab.deadline.timeout(10.0, f"receiving the {setting} transfer")):
        lab.deadline.check(f"receiving the {setting} transfer")
        raise RuntimeError(f"the {setting} receiver did not finish within 10 s")
    if reader.error is not None:
        raise reader.error
    end = reader.result
    tr.seconds = (end if isinstance(end, float) else time.perf_counter()) - t0
    tr.rcvbuf_end = _rcvbuf(s)
    w1 = tcpwindow.window(s)
    if w1 is not None:
        tr.rcv_space_end = w1.rcv_space
    lab.close_abortively(c, s)
    return tr


# -- the kernel's rules ------------------------------------------------------------------
def default_wscale() -> int | None:
    """The window scale an unlocked receiver announces: ilog2(max(tcp_rmem[2],
    rmem_max)) - 15, clamped to 0..14 (tcp_select_initial_window); 0 without window
    scaling. None where the settings cannot be read."""
    rmem = kernel.sysctl("net.ipv4.tcp_rmem")
    rmem_max = kernel.sysctl_int("net.core.rmem_max")
    scaling = kernel.sysctl_int("net.ipv4.tcp_window_scaling")
    if rmem is None or rmem_max is None:
        return None
    if scaling == 0:
        return 0
    space = max(int(rmem.split()[2]), rmem_max)
    return max(0, min(space.bit_length() - 1 - 15, TCP_MAX_WSCALE))


def locked_wscale_ceiling(effective_rcvbuf: int) -> int:
    """The most a locked receiver can announce: from at most its whole buffer."""
    return max(0, min(effective_rcvbuf.bit_length() - 1 - 15, TCP_MAX_WSCALE))


def moderate_rcvbuf() -> int | None:
    return kernel.sysctl_int("net.ipv4.tcp_moderate_rcvbuf")


# -- table and findings ------------------------------------------------------------------
def table(report: Report, p: Params, rows: list[Transfer]) -> None:
    t = report.table(
        "autotune",
        f"Autotuning: {p.autotune_bytes:,} B bulk transfer, default receive buffer vs "
        "SO_RCVBUF set before listen()",
        [
            col("receive_buffer", "receive buffer"),
            col("so_rcvbuf_requested", "SO_RCVBUF requested", "B"),
            col("so_rcvbuf_start", "SO_RCVBUF at start", "B"),
            # How far an autotuned buffer grows follows how fast the reader keeps up (the
            # scheduler: 2.3 MB against 21.8 MB under load), so the sizes are context and
            # `grew` is the behaviour diff compares.
            col("grew", "SO_RCVBUF grew"),
            col("so_rcvbuf_max", "SO_RCVBUF largest", "B", CONTEXT),
            col("so_rcvbuf_end", "SO_RCVBUF at end", "B", CONTEXT),
            col("rcv_space_start", "tcpi_rcv_space at start", "B", VOLATILE),
            col("rcv_space_end", "tcpi_rcv_space at end", "B", CONTEXT),
            col("snd_wnd_max", "largest window seen by the sender (tcpi_snd_wnd)", "B", CONTEXT),
            col("rcv_wscale", "receiver's window scale (tcpi_rcv_wscale)"),
            col("peer_wscale", "sender's view of it (tcpi_snd_wscale)"),
            col("received", unit="B"),
            # On loopback a bulk transfer is bound by the CPUs: its time measures the
            # scheduler and the machine's load, so both are context (never compared).
            col("seconds", unit="s", kind=CONTEXT),
            col("throughput", unit="MB/s", kind=CONTEXT),
        ],
        keys=["receive_buffer"],
    )
    for tr in rows:
        t.add(
            tr.setting,
            NA("not set: kernel default") if tr.requested is None else tr.requested,
            tr.rcvbuf_start,
            tr.rcvbuf_max > tr.rcvbuf_start,
            tr.rcvbuf_max,
            tr.rcvbuf_end,
            _na(tr.rcv_space_start),
            _na(tr.rcv_space_end),
            NA("tcpi_snd_wnd needs Linux 5.19 or later")
            if tr.snd_wnd_max is None
            else tr.snd_wnd_max,
            _na(tr.rcv_wscale),
            _na(tr.peer_wscale),
            tr.received,
            round(tr.seconds, 4),
            round(tr.mb_per_s),
        )


def _na(v: int | None) -> Cell:
    return NA(NO_WINDOW) if v is None else v


def findings(rows: list[Transfer]) -> list[str]:
    by = {tr.setting: tr for tr in rows}
    d, s = by.get("default"), by.get("so_rcvbuf_set")
    out: list[str] = []
    for tr in rows:
        if tr.received != tr.sent:
            out.append(
                f"Autotuning ({tr.setting}): the receiver got {tr.received:,} of {tr.sent:,} "
                "B; no comparison is made from an incomplete transfer."
            )
    if d is None or s is None or any(tr.received != tr.sent for tr in rows):
        return out
    mod = moderate_rcvbuf()
    grew = d.rcvbuf_max > d.rcvbuf_start
    if mod == 0:
        dtext = (
            f"with default buffers the receive buffer stayed at {d.rcvbuf_start:,} B "
            f"(largest {d.rcvbuf_max:,} B): autotuning is off in this network namespace "
            "(net.ipv4.tcp_moderate_rcvbuf 0)"
        )
    elif grew:
        dtext = (
            f"with default buffers the kernel grew the receive buffer from "
            f"{d.rcvbuf_start:,} to {d.rcvbuf_max:,} B during the transfer (autotuning: "
            "tcp_rcv_space_adjust)"
        )
    else:
        dtext = (
            f"with default buffers the receive buffer stayed at {d.rcvbuf_start:,} B: "
            "autotuning is on (tcp_moderate_rcvbuf 1) but this transfer never needed more"
        )
    stayed = s.rcvbuf_max == s.rcvbuf_start == s.rcvbuf_end
    stext = (
        f"with SO_RCVBUF {s.requested:,} set before listen() it read back "
        f"{s.rcvbuf_start:,} B and "
        + (
            "stayed there to the end (the lock turns autotuning off)"
            if stayed
            else f"moved to {s.rcvbuf_end:,} B (largest {s.rcvbuf_max:,} B)"
        )
    )
    win = ""
    if d.snd_wnd_max is not None and s.snd_wnd_max is not None:
        win = f"; the largest window the sender saw was {d.snd_wnd_max:,} vs {s.snd_wnd_max:,} B"
    scale = ""
    if d.rcv_wscale is not None and s.rcv_wscale is not None:
        rule = default_wscale()
        scale = f"; the handshake announced window scale {d.rcv_wscale} vs {s.rcv_wscale}" + (
            f" (the kernel's rule: {rule} from max(tcp_rmem[2], rmem_max) for an "
            f"unlocked buffer, at most {locked_wscale_ceiling(s.rcvbuf_start)} from the "
            "locked one)"
            if rule is not None
            else ""
        )
    ratio = d.mb_per_s / s.mb_per_s if s.mb_per_s else 0.0
    thr = (
        f"; {d.received:,} B took {d.seconds * 1000:.1f} vs {s.seconds * 1000:.1f} ms "
        f"({d.mb_per_s:,.0f} vs {s.mb_per_s:,.0f} MB/s, {ratio:.1f}x)"
    )
    if s.snd_wnd_max:
        thr += (
            f". Off loopback a window of {s.snd_wnd_max:,} B caps one connection at window / "
            f"RTT: {s.snd_wnd_max / 0.05 / 1e6:.1f} MB/s on a 50 ms path"
        )
    out.append(f"Autotuning: {dtext}; {stext}{win}{scale}{thr}.")
    return out
