"""sockprobe framing: do message boundaries survive TCP, UDP, UNIX sockets and a length prefix?

The tutorials call it "sticky packets": two quick send()s of b"hello" and b"world" come
back from one recv(), and they blame Nagle. The experiment, for every transport x reader:

- the sender makes one send() per message (a handful of messages of varied sizes: b"hello",
  b"world" and a few larger ones), back to back, then closes its socket, so that a stream
  reader ends on EOF;
- the receiver, by default, starts reading only after the sender's last send(): on the
  byte streams, once SIOCINQ shows every byte already sitting in its receive queue; on the
  datagram transports, once the sender has finished. That is the tutorials' setup, and it
  makes the outcome depend on the kernel's rules rather than on thread scheduling;
  `--receiver concurrent` reads while the sender writes instead;
- the reader is one of: one recv(4096) per message (what the tutorials do), tiny recv(2)
  reads, a length-prefixed protocol (a `struct` '!I' header, then exactly n bytes, each
  read in a loop), or `makefile('rb').readline()` with a newline after each message;
- every message the reader hands back is compared with what was sent: recovered intact,
  merged with another, split into pieces, truncated (the rest discarded by the kernel) or
  lost.

Transports: TCP (with and without TCP_NODELAY, to show that Nagle is not the cause), UDP,
AF_UNIX SOCK_STREAM and AF_UNIX SOCK_SEQPACKET (both from socketpair(), so nothing is left
in the filesystem).
"""

from __future__ import annotations

import os
import socket
import struct
import time
from dataclasses import dataclass, field

from sockprobe import kernel
from sockprobe.kernel import udp as udp_kernel
from sockprobe.lab import Deadline, Lab, Worker
from sockprobe.probes import ProbeParams, Stopwatch, require
from sockprobe.report import NA, Report, environment, legacy_table, params_dict
from sockprobe.status import SockprobeError

TRANSPORTS = ("tcp", "tcp-nodelay", "udp", "unix-stream", "unix-seqpacket")
STREAMS = frozenset({"tcp", "tcp-nodelay", "unix-stream"})
READERS = ("recv", "small-recv", "prefix", "readline")
RECEIVERS = ("late", "concurrent")
#: Sizes of the messages that follow b"hello" and b"world" by default: three fit a
#: 4096-byte read, the last does not, and together they span more than two such reads.
DEFAULT_SIZES = (100, 1000, 3000, 6000)
HEADER = struct.Struct("!I")  # network byte order, unsigned 32-bit: the same on every host
#: The largest UDP payload over IPv4 is 65,507 bytes; the prefix reader adds a 4-byte header.
MAX_SIZE = 65_507 - HEADER.size
MAX_MESSAGES = 200
SYSCTLS = (
    "net.ipv4.tcp_rmem",
    "net.core.rmem_default",
    "net.ipv4.tcp_autocorking",
    "net.ipv4.tcp_congestion_control",
)
#: Late receiver: how long the queues may stay unchanged before we conclude the sender is
#: blocked on full buffers and the receiver has to start reading while it writes.
STALL_S = 0.15
#: UDP has no EOF: once the expected datagrams stop coming for this long, the rest are lost.
UDP_IDLE_S = 0.25
NO_TCP_INFO = "TCP_INFO (tcpi_data_segs_out) is not available on this platform"
NO_READLINE = (
    "readline() needs a byte stream: on a datagram socket makefile()'s buffered reads take "
    "whole datagrams, so the datagrams, not the newlines, set the boundaries (and UDP has "
    "no EOF)"
)

TRANSPORT_LABEL = {
    "tcp": "TCP",
    "tcp-nodelay": "TCP_NODELAY",
    "udp": "UDP",
    "unix-stream": "UNIX stream",
    "unix-seqpacket": "UNIX seqpacket",
}


@dataclass(frozen=True)
class Params(ProbeParams):
    sizes: tuple[int, ...] = DEFAULT_SIZES
    read_size: int = 4096
    small_read: int = 2
    transports: tuple[str, ...] = TRANSPORTS
    readers: tuple[str, ...] = READERS
    receiver: str = "late"

    def __post_init__(self) -> None:
        super().__post_init__()
        require(
            len(self.sizes) + 2 <= MAX_MESSAGES,
            f"--size: at most {MAX_MESSAGES - 2} messages after 'hello' and 'world'",
        )
        for n in self.sizes:
            require(1 <= n <= MAX_SIZE, f"--size must be 1..{MAX_SIZE} bytes, not {n}")
        require(
            1 <= self.read_size <= 1 << 20, f"--read-size must be 1..1048576, not {self.read_size}"
        )
        require(
            1 <= self.small_read <= 1 << 20,
            f"--small-read must be 1..1048576, not {self.small_read}",
        )
        require(len(self.transports) > 0, "--transport: give at least one transport")
        for t in self.transports:
            require(t in TRANSPORTS, f"--transport {t!r}: choose from {', '.join(TRANSPORTS)}")
        require(len(self.readers) > 0, "--reader: give at least one reader")
        for r in self.readers:
            require(r in READERS, f"--reader {r!r}: choose from {', '.join(READERS)}")
        require(
            self.receiver in RECEIVERS,
            f"--receiver {self.receiver!r}: choose from {', '.join(RECEIVERS)}",
        )


def messages(sizes: tuple[int, ...]) -> list[bytes]:
    """b"hello", b"world", then one message per size: b"#3:abcdef..." cut to that size.

    No message contains b"\\n", so newline framing is valid, and messages of 4 bytes or
    more are all distinct (each starts with its own number).
    """
    out = [b"hello", b"world"]
    alphabet = b"abcdefghijklmnopqrstuvwxyz"
    for i, n in enumerate(sizes, start=len(out) + 1):
        label = f"#{i}:".encode()
        body = (alphabet * (n // len(alphabet) + 1))[: max(0, n - len(label))]
        out.append((label + body)[:n])
    return out


def reader_label(reader: str, p: Params) -> str:
    return {
        "recv": f"recv({p.read_size})",
        "small-recv": f"recv({p.small_read})",
        "prefix": "'!I' length prefix",
        "readline": "makefile().readline()",
    }[reader]


# -- what the reader got --------------------------------------------------------------------
@dataclass
class Outcome:
    transport: str
    reader: str
    #: What the reader handed to the application, one entry per message as it sees them.
    units: list[bytes] = field(default_factory=list)
    #: recv()-family calls that returned data (the final EOF read is not counted).
    calls: int = 0
    #: Datagram reads that came back with MSG_TRUNC in msg_flags.
    msg_trunc: int = 0
    #: The receiver started after the sender's last send() (streams: every byte queued).
    settled: bool = True
    #: UDP only: the receiving socket's own drop counter (/proc/net/udp "drops").
    drops: int | None = None
    #: TCP only: data segments the sender sent (TCP_INFO), or NA where unavailable.
    segments: int | NA | None = None
    na: NA | None = None


@dataclass
class Tally:
    intact: int = 0
    merged: int = 0
    split: int = 0
    truncated: int = 0
    discarded: int = 0  # bytes the kernel threw away (datagram tails)
    lost: int = 0  # messages never delivered at all


def tally_stream(sent: list[bytes], units: list[bytes]) -> Tally:
    """Compare a byte stream's pieces with the messages, by byte offsets.

    Message i occupies [a, b) of the stream, piece j occupies [c, d) of what the reader
    returned. A message is intact when one piece covers exactly [a, b); split when more than
    one piece overlaps it; merged when a piece overlapping it also overlaps another message;
    lost when it was not (completely) delivered. Nothing is ever truncated on a stream.

    >>> t = tally_stream([b"hello", b"world"], [b"hellowor", b"ld"])
    >>> (t.intact, t.merged, t.split)
    (0, 2, 1)
    """
    t = Tally()
    msg_end: list[int] = []
    pos = 0
    for m in sent:
        pos += len(m)
        msg_end.append(pos)
    piece_end: list[int] = []
    pos = 0
    for u in units:
        pos += len(u)
        piece_end.append(pos)
    received = pos
    j = 0  # first piece that may overlap the current message
    start = 0
    for i, end in enumerate(msg_end):
        if end == start:  # an empty message cannot be observed on a stream
            start = end
            continue
        if end > received:
            t.lost += 1
            start = end
            continue
        while j < len(piece_end) and piece_end[j] <= start:
            j += 1
        k = j
        overlapping: list[int] = []
        while k < len(piece_end):
            p_start = piece_end[k - 1] if k > 0 else 0
            if p_start >= end:
                break
            overlapping.append(k)
            k += 1
        if len(overlapping) > 1:
            t.split += 1
        first_start = piece_end[overlapping[0] - 1] if overlapping[0] > 0 else 0
        last_end = piece_end[overlapping[-1]]
        prev_msg_end = msg_end[i - 1] if i > 0 else 0
        if first_start < prev_msg_end or last_end > end:
            t.merged += 1
        elif len(overlapping) == 1:
            t.intact += 1
        start = end
    return t


def tally_datagrams(sent: list[bytes], units: list[bytes]) -> Tally:
    """Compare datagrams with the messages.

    Each datagram is matched to the next message, in sending order, that it equals or is
    a prefix of (loopback keeps the order; a datagram dropped on a full receive buffer
    is skipped over). Equal is intact; a proper prefix is truncated (the kernel discarded
    the rest); a message nothing matched is lost.

    >>> t = tally_datagrams([b"hello", b"world", b"again"], [b"he", b"again"])
    >>> (t.intact, t.truncated, t.discarded, t.lost)
    (1, 1, 3, 1)
    """
    t = Tally()
    i = 0
    for u in units:
        j = i
        while j < len(sent) and not sent[j].startswith(u):
            j += 1
        if j == len(sent):
            continue  # matches no remaining message: not ours, ignore it
        t.lost += j - i
        if sent[j] == u:
            t.intact += 1
        else:
            t.truncated += 1
            t.discarded += len(sent[j]) - len(u)
        i = j + 1
    t.lost += len(sent) - i
    return t


def tally(o: Outcome, sent: list[bytes]) -> Tally:
    if o.transport in STREAMS:
        return tally_stream(sent, o.units)
    return tally_datagrams(sent, o.units)


# -- socket pairs ---------------------------------------------------------------------------
def _pair(lab: Lab, transport: str, tag: str) -> tuple[socket.socket, socket.socket]:
    """(sender, receiver), fresh for every case."""
    if transport in ("tcp", "tcp-nodelay"):

        def configure(s: socket.socket) -> None:
            if transport == "tcp-nodelay":
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        return lab.tcp_pair(configure_client=configure, name=f"framing {tag}")
    if transport == "udp":
        tx, rx = lab.udp_pair()
        for ep in lab.endpoints[-2:]:
            ep["role"] = f"framing {tag} {ep['role'].removeprefix('udp ')}"
        return tx, rx
    # AF_UNIX from socketpair(): connected, unnamed, nothing to unlink afterwards. `ss -x`
    # lists them by inode, so the inodes go into the endpoints.
    kind = socket.SOCK_STREAM if transport == "unix-stream" else socket.SOCK_SEQPACKET
    a, b = socket.socketpair(socket.AF_UNIX, kind)
    lab.adopt(a)
    lab.adopt(b)
    lab.endpoints.append(
        {
            "role": f"framing {tag}",
            "local": f"socketpair inode {os.fstat(a.fileno()).st_ino}",
            "remote": f"inode {os.fstat(b.fileno()).st_ino}",
            "proto": "unix",
        }
    )
    return a, b


def _unix_unsupported(transport: str) -> NA | None:
    """Capability check by trying (macOS has no AF_UNIX SOCK_SEQPACKET; Windows' AF_UNIX
    is stream-only)."""
    family = getattr(socket, "AF_UNIX", None)
    kind = (
        socket.SOCK_STREAM
        if transport == "unix-stream"
        else getattr(socket, "SOCK_SEQPACKET", None)
    )
    if family is None or kind is None:
        return NA(f"{TRANSPORT_LABEL[transport]} sockets do not exist on this platform")
    try:
        a, b = socket.socketpair(family, kind)
    except OSError as exc:
        return NA(f"{TRANSPORT_LABEL[transport]}: socketpair() failed here ({exc})")
    a.close()
    b.close()
    return None


# -- the sender -----------------------------------------------------------------------------
def _frames(reader: str, msgs: list[bytes]) -> list[bytes]:
    """What goes into each send(): the message, with its header or its newline."""
    if reader == "prefix":
        return [HEADER.pack(len(m)) + m for m in msgs]
    if reader == "readline":
        return [m + b"\n" for m in msgs]
    return list(msgs)


def _send(
    lab: Lab, sock: socket.socket, frames: list[bytes], progress: list[int], tcp: bool
) -> int | None:
    """One send() per message, back to back, then close: a stream reader then sees EOF.

    For TCP, returns how many data segments carried the messages: the delta of TCP_INFO
    tcpi_data_segs_out (tcp(7)), read once everything is sent and acknowledged, so that
    what went on the wire can be set beside what the reader's recv() calls returned."""
    before = _data_segs(sock) if tcp else None
    sock.settimeout(lab.deadline.timeout(10.0, "sending the messages"))
    for f in frames:
        # sendall: a stream send() may accept part of a large frame (partial-send); for a
        # datagram socket it is a single send() of the whole datagram.
        sock.sendall(f)
        progress[0] += 1
    segments = None
    if before is not None:
        end = time.monotonic() + lab.deadline.timeout(2.0, "waiting for the sender to drain")
        while time.monotonic() < end:
            info = kernel.tcp_info(sock)
            if info is None or (not info.notsent_bytes and info.unacked == 0):
                break
            if info.state_name != "ESTABLISHED":
                break  # shut down under us (Ctrl-C or an error: the Lab is cleaning up)
            time.sleep(0.0005)
        after = _data_segs(sock)
        segments = None if after is None else after - before
    lab.close(sock)
    return segments


def _data_segs(sock: socket.socket) -> int | None:
    info = kernel.tcp_info(sock)
    return None if info is None else info.data_segs_out


def _settle(
    sender: Worker, rx: socket.socket, stream: bool, total: int, progress: list[int], d: Deadline
) -> bool:
    """Late receiver: wait until every byte is queued at the receiver (a byte stream where
    SIOCINQ can be read) or the sender has finished (datagrams, or no SIOCINQ). Either way
    the sender's last send() has returned, so what the reads return follows from the
    kernel's rules alone.

    Returns False when the sender and the queue stopped making progress first: the buffers
    are full, the receiver must read while the sender writes, and the outcome then depends
    on timing. A sender that has not begun (its thread not yet scheduled, on a loaded
    machine) is not a stall: that waits for the overall cap instead."""
    end = time.monotonic() + d.timeout(5.0, "waiting for the sender to finish")
    last: tuple[int, int | None] = (-1, None)
    changed = time.monotonic()
    while True:
        now = time.monotonic()
        queued = kernel.inq(rx) if stream else None
        if queued is not None:
            if queued >= total:
                return True
        elif not sender.thread.is_alive():
            return True
        state = (progress[0], queued)
        began = progress[0] > 0 or bool(queued)
        if state != last:
            last, changed = state, now
        elif (began and now - changed > STALL_S) or now > end:
            return False
        time.sleep(0.0005)


# -- the readers ----------------------------------------------------------------------------


def _read_stream(sock: socket.socket, size: int, deadline: Deadline) -> Outcome:
    """recv(size) until EOF; every returned chunk is what a naive reader takes for a message."""
    o = Outcome("", "")
    sock.settimeout(deadline.timeout(5.0, "reading the stream"))
    while True:
        deadline.check("reading the stream")
        chunk = sock.recv(size)
        if not chunk:
            return o
        o.units.append(chunk)
        o.calls += 1


def _recv_datagram(
    sock: socket.socket, size: int, o: Outcome, deadline: Deadline, udp: bool
) -> bytes | None:
    """One datagram via recvmsg (the same read as recv(size), plus msg_flags), or None at
    the end: EOF for SEQPACKET, no datagram within UDP_IDLE_S for UDP."""
    sock.settimeout(deadline.timeout(UDP_IDLE_S if udp else 5.0, "reading datagrams"))
    try:
        data, _anc, flags, _addr = sock.recvmsg(size)
    except TimeoutError:
        if udp and not deadline.expired():
            return None
        raise
    if not data and not udp:
        return None  # SEQPACKET: the peer closed (every message here is at least 1 byte)
    o.calls += 1
    if flags & socket.MSG_TRUNC:
        o.msg_trunc += 1
    return data


def _read_datagrams(
    sock: socket.socket, size: int, expected: int, deadline: Deadline, udp: bool
) -> Outcome:
    o = Outcome("", "")
    while not udp or len(o.units) < expected:
        data = _recv_datagram(sock, size, o, deadline, udp)
        if data is None:
            break
        o.units.append(data)
    return o


def _recv_exactly(sock: socket.socket, n: int, o: Outcome, deadline: Deadline) -> bytes:
    """Exactly n bytes from a stream, in a loop: recv(n) may return fewer, and that holds
    for a 4-byte header too. Returns fewer than n only at EOF."""
    buf = bytearray()
    while len(buf) < n:
        deadline.check("reading a length-prefixed message")
        chunk = sock.recv(n - len(buf))
        if not chunk:
            break
        o.calls += 1
        buf += chunk
    return bytes(buf)


def _read_prefix_stream(sock: socket.socket, deadline: Deadline) -> Outcome:
    o = Outcome("", "")
    sock.settimeout(deadline.timeout(5.0, "reading length-prefixed messages"))
    while True:
        head = _recv_exactly(sock, HEADER.size, o, deadline)
        if len(head) < HEADER.size:
            if head:  # EOF inside a header: a broken frame, reported as such
                o.units.append(b"")
            return o
        (n,) = HEADER.unpack(head)
        body = _recv_exactly(sock, n, o, deadline)
        o.units.append(body)
        if len(body) < n:
            return o


def _read_prefix_datagrams(
    sock: socket.socket, expected: int, deadline: Deadline, udp: bool
) -> Outcome:
    """A datagram read in pieces loses its rest, so the header is peeked (MSG_PEEK leaves
    the datagram queued) and header + payload are read in one call of the right size."""
    o = Outcome("", "")
    while not udp or len(o.units) < expected:
        sock.settimeout(deadline.timeout(UDP_IDLE_S if udp else 5.0, "reading datagrams"))
        try:
            head = sock.recv(HEADER.size, socket.MSG_PEEK)
        except TimeoutError:
            if udp and not deadline.expired():
                break
            raise
        if not head:
            break
        o.calls += 1
        # A datagram cannot exceed 64 KiB: never size a read from a bogus header.
        n = min(HEADER.unpack(head)[0], 65_535) if len(head) == HEADER.size else 0
        data = _recv_datagram(sock, HEADER.size + n, o, deadline, udp)
        if data is None:
            break
        o.units.append(data[HEADER.size :])
    return o


def _read_lines(sock: socket.socket, deadline: Deadline) -> Outcome:
    """makefile('rb').readline() until EOF. The file's raw reads are counted by wrapping
    its readinto() (BufferedReader looks the method up on the instance)."""
    o = Outcome("", "")
    sock.settimeout(deadline.timeout(5.0, "reading lines"))
    f = sock.makefile("rb")
    raw = f.raw
    inner = raw.readinto

    def counting(b: memoryview) -> int | None:
        n = inner(b)
        if n:
            o.calls += 1
        return n

    setattr(raw, "readinto", counting)  # noqa: B010 - assigning a method needs setattr for mypy
    try:
        while True:
            deadline.check("reading lines")
            line = f.readline()
            if not line:
                return o
            o.units.append(line[:-1] if line.endswith(b"\n") else line)
    finally:
        f.close()


# -- one case -------------------------------------------------------------------------------
def _case(lab: Lab, transport: str, reader: str, msgs: list[bytes], p: Params) -> Outcome:
    stream = transport in STREAMS
    if reader == "readline" and not stream:
        return Outcome(transport, reader, na=NA(NO_READLINE))
    tag = f"{transport}/{reader}"
    tx, rx = _pair(lab, transport, tag)
    frames = _frames(reader, msgs)
    progress = [0]
    tcp = transport in ("tcp", "tcp-nodelay")
    sender = lab.thread(_send, lab, tx, frames, progress, tcp, name="sockprobe-framing-sender")
    settled = True
    if p.receiver == "late":
        total = sum(len(f) for f in frames)
        settled = _settle(sender, rx, stream, total, progress, lab.deadline)
    udp = transport == "udp"
    d = lab.deadline
    if reader in ("recv", "small-recv"):
        size = p.read_size if reader == "recv" else p.small_read
        o = _read_stream(rx, size, d) if stream else _read_datagrams(rx, size, len(msgs), d, udp)
    elif reader == "prefix":
        o = _read_prefix_stream(rx, d) if stream else _read_prefix_datagrams(rx, len(msgs), d, udp)
    else:
        o = _read_lines(rx, d)
    if not sender.join(d.timeout(5.0, "waiting for the sender")):
        d.check("waiting for the sender")
        raise SockprobeError(f"framing {tag}: the sender did not finish within 5 s")
    if sender.error is not None:
        raise sender.error
    if udp:
        # The socket's own drop count (receive buffer full), from its /proc/net/udp row,
        # matched by inode: per socket, unlike the host-wide Udp RcvbufErrors counter.
        row = udp_kernel.proc_row(rx)
        o.drops = None if row is None else row.drops
    if tcp:
        o.segments = sender.result if sender.result is not None else NA(NO_TCP_INFO)
    lab.close(rx)
    o.transport, o.reader, o.settled = transport, reader, settled
    return o


# -- the probe ------------------------------------------------------------------------------
def run(params: Params) -> Report:
    watch = Stopwatch()
    host, deadline = params.resolve()
    report = Report(
        "framing", params=params_dict(params), environment=environment(kernel.sysctls(SYSCTLS))
    )
    msgs = messages(params.sizes)
    transports = [t for t in TRANSPORTS if t in params.transports]
    readers = [r for r in READERS if r in params.readers]
    outcomes: list[Outcome] = []
    with Lab(host, deadline) as lab:
        for t in transports:
            missing = _unix_unsupported(t) if t.startswith("unix") else None
            for r in readers:
                if missing is not None:
                    outcomes.append(Outcome(t, r, na=missing))
                else:
                    outcomes.append(_case(lab, t, r, msgs, params))
        report.endpoints = lab.endpoints
    _table(report, params, msgs, outcomes)
    _findings(report, params, msgs, outcomes)
    _notes(report, params, outcomes)
    report.duration_s = watch()
    return report


def _preview(units: list[bytes], n: int = 3) -> str:
    """The first n things the reader returned: b'he', b'wo' or b'hello…'(4,096)."""
    if not units:
        return "-"
    parts = []
    for u in units[:n]:
        parts.append(repr(u) if len(u) <= 8 else f"{repr(u[:5])[:-1]}…'({len(u):,})")
    if len(units) > n:
        parts.append("…")
    return ", ".join(parts)


def sizes_text(sizes: list[int]) -> str:
    """Runs of equal sizes collapsed: [5, 5, 100] -> '5 x2, 100'."""
    runs: list[list[int]] = []
    for n in sizes:
        if runs and runs[-1][0] == n:
            runs[-1][1] += 1
        else:
            runs.append([n, 1])
    return ", ".join(f"{n:,} x{c}" if c > 1 else f"{n:,}" for n, c in runs)


def _table(report: Report, p: Params, msgs: list[bytes], outcomes: list[Outcome]) -> None:
    when = (
        "the receiver read after the last send() (streams: with every byte queued)"
        if p.receiver == "late"
        else "the receiver read while the sender wrote"
    )
    sizes = sizes_text([len(m) for m in msgs])
    volatile = ["TCP segments", "recv() calls", "merged", "split", "lost", "returned (first 3)"]
    if p.receiver == "concurrent":
        volatile.append("intact")  # which reads a racing receiver gets is up to the scheduler
    t = legacy_table(
        report,
        f"Message boundaries: {len(msgs)} messages of {sizes} B, one send() each; {when}",
        [
            "transport",
            "reader",
            "reading began",
            "sent",
            "TCP segments",
            "recv() calls",
            "intact",
            "merged",
            "split",
            "truncated",
            "discarded",
            "lost",
            "returned (first 3)",
        ],
        ["", "", "", "", "", "", "", "", "", "", "B", "", ""],
        volatile=volatile,
    )
    for o in outcomes:
        label, rlabel = TRANSPORT_LABEL[o.transport], reader_label(o.reader, p)
        if o.na is not None:
            t.add(label, rlabel, None, len(msgs), None, *([o.na] * 7), "-")
            continue
        c = tally(o, msgs)
        t.add(
            label,
            rlabel,
            _began(o, p),
            len(msgs),
            o.segments,
            o.calls,
            c.intact,
            c.merged,
            c.split,
            c.truncated,
            c.discarded,
            c.lost,
            _preview(o.units),
        )


def _began(o: Outcome, p: Params) -> str:
    """When the reader started: after the sender's last send() (the late receiver), or
    while the sender was still writing (concurrent, or late but the buffers could not
    hold every message)."""
    return "after last send" if p.receiver == "late" and o.settled else "during sends"


def _when(o: Outcome, p: Params) -> str:
    if p.receiver == "concurrent":
        return "read concurrently"
    if o.settled:
        return "read after the last send()"
    return "read while the sender was still writing (the buffers could not hold it all)"


def _find(outcomes: list[Outcome], transport: str, reader: str) -> Outcome | None:
    for o in outcomes:
        if o.transport == transport and o.reader == reader and o.na is None:
            return o
    return None


def _read_sizes(units: list[bytes]) -> str:
    shown = ", ".join(f"{len(u):,}" for u in units[:4])
    return shown + (f" … ({len(units)} reads)" if len(units) > 4 else "")


def _grouped(
    outcomes: list[Outcome], transports: tuple[str, ...], reader: str, msgs: list[bytes]
) -> list[tuple[list[str], Outcome, Tally]]:
    """Transports whose reader got the same pieces share one finding."""
    groups: list[tuple[list[str], Outcome, Tally]] = []
    for t in transports:
        o = _find(outcomes, t, reader)
        if o is None:
            continue
        c = tally(o, msgs)
        sizes = [len(u) for u in o.units]
        for names, first, tal in groups:
            same_start = first.settled == o.settled
            if tal == c and same_start and [len(u) for u in first.units] == sizes:
                names.append(t)
                break
        else:
            groups.append(([t], o, c))
    return groups


def _lost_text(c: Tally, o: Outcome) -> str:
    if o.drops is None or (c.lost == 0 and o.drops == 0):
        return f"{c.lost} lost"
    return f"{c.lost} lost (the receiving socket's drop counter in /proc/net/udp: {o.drops})"


def _names(transports: list[str]) -> str:
    labels = [TRANSPORT_LABEL[t] for t in transports]
    return labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + " and " + labels[-1]


def _findings(report: Report, p: Params, msgs: list[bytes], outcomes: list[Outcome]) -> None:
    k = len(msgs)
    total = sum(len(m) for m in msgs)
    f = report.findings
    streams = ("tcp", "tcp-nodelay", "unix-stream")
    # 1. Byte streams with one recv(read_size) per message.
    for names, o, c in _grouped(outcomes, streams, "recv", msgs):
        got = sum(len(u) for u in o.units)
        f.append(
            f"{_names(names)}, recv({p.read_size}) {_when(o, p)}: {k} messages ({total:,} B) came "
            f"back as {len(o.units)} reads of {_read_sizes(o.units)} B: {c.intact} intact, "
            f"{c.merged} merged, {c.split} split; {got:,} of {total:,} bytes arrived, in order."
        )
    # What went on the wire, beside what the reads returned.
    wire: list[tuple[list[str], int, int, int]] = []
    for t in ("tcp", "tcp-nodelay"):
        found = _find(outcomes, t, "recv")
        if found is None or not isinstance(found.segments, int):
            continue
        key = (found.segments, len(found.units), tally(found, msgs).intact)
        same = next((w for w in wire if w[1:] == key), None)
        if same is not None:
            same[0].append(t)
        else:
            wire.append(([t], *key))
    for names, segs, reads, intact in wire:
        head = (
            f"{_names(names)}: the sender's {k} send() calls left as {segs} data segments "
            f"(TCP_INFO tcpi_data_segs_out{', each' if len(names) > 1 else ''})"
        )
        if intact < k:
            f.append(
                f"{head}, yet recv({p.read_size}) returned {reads} reads with {intact} "
                "message(s) intact: recv() copies bytes across segment boundaries, so "
                "segments are not messages either."
            )
        else:
            f.append(
                f"{head}, and recv({p.read_size}) returned all {k} intact in {reads} reads: "
                "the reader kept pace this time, which TCP does not promise."
            )
    tcp, nd = _find(outcomes, "tcp", "recv"), _find(outcomes, "tcp-nodelay", "recv")
    if tcp is not None and nd is not None:
        a, b = tally(tcp, msgs), tally(nd, msgs)
        verdict = "did not keep the boundaries" if b.intact < k else "kept every boundary"
        f.append(
            f"TCP_NODELAY {verdict}: {b.intact} of {k} intact with it, {a.intact} of {k} "
            "without it. Nagle decides when segments leave, not what one recv() returns."
        )
    # 2. Tiny reads on byte streams.
    longer = sum(1 for m in msgs if len(m) > p.small_read)
    for names, o, c in _grouped(outcomes, streams, "small-recv", msgs):
        f.append(
            f"{_names(names)}, recv({p.small_read}): {c.split} of {k} messages split over "
            f"{o.calls:,} reads ({longer} are longer than {p.small_read} B), {c.merged} merged "
            f"(a read spanning two messages); {c.lost} lost, nothing truncated."
        )
    # 3. Datagram transports read with buffers of read_size and small_read bytes.
    largest = max(len(m) for m in msgs)
    for reader, size in (("recv", p.read_size), ("small-recv", p.small_read)):
        for names, o, c in _grouped(outcomes, ("udp", "unix-seqpacket"), reader, msgs):
            head = f"{_names(names)}, recv({size})"
            if c.truncated == 0:
                f.append(
                    f"{head}: every boundary kept, {c.intact} of {k} messages whole in "
                    f"{o.calls} reads (the largest, {largest:,} B, fits the buffer); "
                    f"{c.merged} merged, {c.split} split, {_lost_text(c, o)}."
                )
                continue
            returned = f" (returned {_preview(o.units)})" if c.intact == 0 else ""
            f.append(
                f"{head}: every boundary kept ({c.merged} merged, {c.split} split), but "
                f"{c.truncated} of {k} messages came back cut to the {size:,} B buffer"
                f"{returned}; the kernel discarded the other {c.discarded:,} B "
                f"and set MSG_TRUNC on {o.msg_trunc} read(s); {c.intact} intact, "
                f"{_lost_text(c, o)}."
            )
    # 4. The length prefix.
    pre = [o for o in outcomes if o.reader == "prefix" and o.na is None]
    if pre:
        counts = {o.transport: tally(o, msgs).intact for o in pre}
        if all(v == k for v in counts.values()):
            f.append(
                f"The '!I' length prefix recovered all {k} messages on every transport tried "
                f"({', '.join(TRANSPORT_LABEL[t] for t in counts)})."
            )
        else:
            lost = {o.transport: tally(o, msgs).lost for o in pre}
            f.append(
                "The '!I' length prefix recovered "
                + ", ".join(
                    f"{n} of {k} on {TRANSPORT_LABEL[t]}"
                    + (f" ({lost[t]} never arrived)" if lost[t] else "")
                    for t, n in counts.items()
                )
                + "."
            )
    # 5. Newline framing.
    lines = [o for o in outcomes if o.reader == "readline" and o.na is None]
    if lines:
        f.append(
            "makefile().readline() recovered "
            + ", ".join(
                f"{tally(o, msgs).intact} of {k} on {TRANSPORT_LABEL[o.transport]} "
                f"from {o.calls} buffered reads"
                for o in lines
            )
            + "; its buffer merges, readline() splits at the newlines."
        )
    unsettled = [o for o in outcomes if o.na is None and not o.settled]
    if unsettled and p.receiver == "late":
        f.append(
            f"In {len(unsettled)} case(s) the buffers could not hold every message, so the "
            "receiver began reading while the sender was still writing; their counts depend "
            "on timing."
        )
    report.summary = _headline(p, msgs, outcomes)


def _headline(p: Params, msgs: list[bytes], outcomes: list[Outcome]) -> str:
    k = len(msgs)
    parts = []
    tcp = _find(outcomes, "tcp", "recv")
    if tcp is not None:
        c = tally(tcp, msgs)
        parts.append(
            f"TCP recv({p.read_size}) returned {c.intact} of {k} messages intact "
            f"({c.merged} merged, {c.split} split)"
        )
    pre = [tally(o, msgs).intact for o in outcomes if o.reader == "prefix" and o.na is None]
    if pre:
        if min(pre) == k:
            parts.append(f"the '!I' prefix recovered all {k} on every transport")
        else:
            parts.append(f"the '!I' prefix recovered as few as {min(pre)} of {k}")
    for t in ("udp", "unix-seqpacket"):
        o = _find(outcomes, t, "recv")
        if o is not None:
            c = tally(o, msgs)
            if c.truncated:
                parts.append(
                    f"{TRANSPORT_LABEL[t]} kept boundaries but truncated {c.truncated} of {k} "
                    f"at {p.read_size:,} B"
                )
            else:
                parts.append(
                    f"{TRANSPORT_LABEL[t]} kept every boundary: {c.intact} of {k} intact "
                    f"with recv({p.read_size})"
                )
            break
    if not parts:
        rows = [o for o in outcomes if o.na is None]
        if not rows:
            return "no transport could run here"
        o = rows[0]
        c = tally(o, msgs)
        parts.append(
            f"{TRANSPORT_LABEL[o.transport]} {reader_label(o.reader, p)}: "
            f"{c.intact} of {k} messages intact, {c.merged} merged, {c.split} split, "
            f"{c.truncated} truncated"
        )
    return "; ".join(parts)


def _notes(report: Report, p: Params, outcomes: list[Outcome]) -> None:
    report.notes.extend(
        [
            "TCP and AF_UNIX SOCK_STREAM are byte streams (tcp(7), unix(7)): the kernel keeps "
            "the bytes and their order, not the send() calls. A recv(n) returns whatever is "
            "queued, up to n bytes, copying across segments, so a receiver that reads late gets "
            "writes merged and cut at n, whatever Nagle did. TCP_NODELAY only changes when "
            "segments leave (sockprobe nagle).",
            "UDP (udp(7)) and SOCK_SEQPACKET (unix(7)) keep message boundaries: one send() is "
            "one read. A buffer smaller than the datagram returns its first bytes and the "
            "kernel discards the rest; recvmsg() reports it with MSG_TRUNC in msg_flags "
            "(recv(2)). Windows (documented, not measured here) fails such a read with "
            "WSAEMSGSIZE instead of returning the head quietly.",
            "Length prefix: struct '!I' is network byte order and unsigned, identical on every "
            "host (the tutorials' struct.pack('i', n) is native order and signed). On a stream "
            "both the 4-byte header and the payload are read in loops, because recv(4) may "
            "return fewer bytes too. On a datagram transport the reader peeks at the header "
            "(MSG_PEEK leaves the datagram queued) and reads header + payload in one call, "
            "since a datagram read in pieces loses its rest.",
            "makefile('rb') puts a BufferedReader over the socket (reads of "
            "io.DEFAULT_BUFFER_SIZE bytes) and readline() splits at b'\\n'. The payload must "
            "not contain the delimiter; a length prefix has no such restriction.",
            "recv() calls count the reads that returned data (the final EOF read is not "
            "counted); for the length prefix on datagrams they include the MSG_PEEK reads. "
            "Merged/split/recv() counts depend on timing in general and are compared with a "
            "tolerance; with the late receiver, intact and truncated counts follow from the "
            "kernel's rules alone.",
            "UNIX sockets come from socketpair() (no path to unlink; `ss -x` shows them by the "
            "inodes under Endpoints). TCP and UDP use ephemeral loopback ports: check with "
            "tcpdump -i lo -nn 'port <port>' (one packet per datagram, and TCP segments that "
            "do not match the reads).",
            "Other platforms (documented, not measured here): macOS has no AF_UNIX "
            "SOCK_SEQPACKET (socketpair() fails, and those rows show n/a); Windows' AF_UNIX "
            "is SOCK_STREAM only.",
        ]
    )
    if p.receiver == "late":
        report.notes.append(
            "Receiver 'late': on a byte stream, reading starts once SIOCINQ (tcp(7), "
            "unix(7)) shows every byte queued at the receiver; on a datagram transport, once "
            "the sender has finished. If the buffers stop filling for "
            f"{STALL_S:g} s first, the receiver starts anyway: the 'reading began' column "
            "says 'during sends' and a finding says so."
        )
