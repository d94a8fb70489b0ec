"""What a reader got, compared with what was sent: intact, merged, split, truncated, lost.

Pure functions of the sent messages and the pieces the reader handed back (by byte
offsets on a stream, by prefix matching on datagrams), so they are tested on their own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sockprobe.probes.framing.params import STREAMS
from sockprobe.report import NA


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
