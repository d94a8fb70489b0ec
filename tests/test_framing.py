"""sockprobe framing on real sockets: which transports keep message boundaries, and what a
length prefix, tiny reads and readline() make of them."""

from __future__ import annotations

import json
import socket
import time

import pytest
from helpers import has_ipv6_loopback, labelled

from sockprobe.diff import compare
from sockprobe.probes import framing
from sockprobe.status import DeadlineExceeded, UsageError

MSGS = framing.messages(framing.DEFAULT_SIZES)
K = len(MSGS)
LARGEST = max(len(m) for m in MSGS)


def _rows(report):
    t = report.tables[0]
    return {(r[t.columns[0].label], r[t.columns[1].label]): r for r in labelled(t)}


def _label(transport, reader, p=None):
    p = p or framing.Params()
    return framing.TRANSPORT_LABEL[transport], framing.reader_label(reader, p)


def _can_seqpacket() -> bool:
    try:
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    except (AttributeError, OSError):
        return False
    a.close()
    b.close()
    return True


needs_seqpacket = pytest.mark.skipif(not _can_seqpacket(), reason="no AF_UNIX SOCK_SEQPACKET")


@pytest.fixture(scope="module")
def report():
    return framing.run(framing.Params())


# -- byte streams -----------------------------------------------------------------------------
@pytest.mark.parametrize("transport", ["tcp", "tcp-nodelay", "unix-stream"])
def test_recv2_splits_every_longer_message_and_loses_nothing(report, transport):
    row = _rows(report)[_label(transport, "small-recv")]
    longer = sum(1 for m in MSGS if len(m) > 2)
    assert row["split"] == longer
    assert row["intact"] == 0
    assert row["truncated"] == 0 and row["lost"] == 0 and row["discarded"] == 0
    # Every byte came back, two at a time: with everything queued, each recv(2) got 2.
    assert row["recv() calls"] == -(-sum(len(m) for m in MSGS) // 2)


@pytest.mark.parametrize("transport", ["tcp", "tcp-nodelay", "unix-stream"])
def test_late_reader_sees_writes_merged_whatever_nagle_does(report, transport):
    # The receiver read after the sender closed with every byte queued: recv(4096) copies
    # across segments, so hello and world come back in one read, with or without Nagle.
    row = _rows(report)[_label(transport, "recv")]
    assert row["returned (first 3)"].startswith("b'hello…'(4,096)")
    assert row["intact"] == 0
    assert row["merged"] == K
    assert row["recv() calls"] == -(-sum(len(m) for m in MSGS) // 4096)
    assert row["lost"] == 0 and row["truncated"] == 0


@pytest.mark.parametrize(
    "transport", ["tcp", "tcp-nodelay", "udp", "unix-stream", "unix-seqpacket"]
)
def test_length_prefix_recovers_every_message(report, transport):
    row = _rows(report)[_label(transport, "prefix")]
    if transport == "unix-seqpacket" and not _can_seqpacket():
        pytest.skip("no AF_UNIX SOCK_SEQPACKET")
    assert row["intact"] == K
    assert (row["merged"], row["split"], row["truncated"], row["lost"]) == (0, 0, 0, 0)


@pytest.mark.parametrize("transport", ["tcp", "tcp-nodelay", "unix-stream"])
def test_readline_recovers_every_message_on_streams(report, transport):
    row = _rows(report)[_label(transport, "readline")]
    assert row["intact"] == K
    assert 1 <= row["recv() calls"] < K  # the buffer merged them; readline split them


def test_tcp_rows_count_the_segments_that_carried_the_messages(report):
    from sockprobe import kernel

    for (transport, _reader), row in _rows(report).items():
        if transport.startswith("TCP") and kernel.IS_LINUX:
            # At least one segment, at most one per byte; which number depends on timing.
            assert 1 <= row["TCP segments"] <= sum(len(m) + 5 for m in MSGS)
        elif not transport.startswith("TCP"):
            assert row["TCP segments"] is None


# -- datagrams --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "transport", ["udp", pytest.param("unix-seqpacket", marks=needs_seqpacket)]
)
def test_datagrams_truncate_reads_smaller_than_the_message(report, transport):
    rows = _rows(report)
    big = [m for m in MSGS if len(m) > 4096]
    row = rows[_label(transport, "recv")]
    assert row["truncated"] == len(big) >= 1
    assert row["discarded"] == sum(len(m) - 4096 for m in big)
    assert row["intact"] == K - len(big)
    assert (row["merged"], row["split"], row["lost"]) == (0, 0, 0)
    tiny = rows[_label(transport, "small-recv")]
    assert tiny["truncated"] == K and tiny["intact"] == 0
    assert tiny["returned (first 3)"].startswith("b'he', b'wo'")
    assert tiny["discarded"] == sum(len(m) - 2 for m in MSGS)


@pytest.mark.parametrize(
    "transport", ["udp", pytest.param("unix-seqpacket", marks=needs_seqpacket)]
)
def test_datagrams_keep_every_message_when_the_buffer_fits_the_largest(transport):
    p = framing.Params(read_size=LARGEST, transports=(transport,), readers=("recv",))
    row = _rows(framing.run(p))[_label(transport, "recv", p)]
    assert row["intact"] == K
    assert (row["merged"], row["split"], row["truncated"], row["lost"]) == (0, 0, 0, 0)
    assert row["recv() calls"] == K


def test_readline_is_na_on_datagram_transports(report):
    rows = _rows(report)
    for transport in ("udp", "unix-seqpacket"):
        row = rows[_label(transport, "readline")]
        assert str(row["intact"]) == "n/a"
        assert "byte stream" in row["intact"].reason


def test_udp_loss_is_counted_per_socket():
    # 30 datagrams of 60,000 B into a receiver that reads only after the sender is done:
    # the default receive buffer holds a few; /proc/net/udp's drops column for that one
    # socket accounts for every missing datagram.
    p = framing.Params(sizes=(60_000,) * 30, transports=("udp",), readers=("recv",))
    r = framing.run(p)
    row = _rows(r)[_label("udp", "recv", p)]
    assert row["lost"] > 0
    assert row["intact"] + row["truncated"] + row["lost"] == 32
    assert any(f"drop counter in /proc/net/udp: {row['lost']})" in f for f in r.findings)


# -- the report -------------------------------------------------------------------------------
def test_the_late_reader_began_after_the_last_send_on_every_default_case(report):
    began = [row["reading began"] for row in _rows(report).values()]
    assert set(began) == {"after last send", None}  # None: readline on datagrams, n/a
    assert not any("could not hold" in f for f in report.findings)


def test_when_the_buffers_cannot_hold_every_message_the_report_says_so():
    # 198 x 65,000 B (12.9 MB) on TCP is more than default buffers hold: the late receiver
    # has to start while the sender is still blocked, and the row and a finding say so.
    p = framing.Params(sizes=(65_000,) * 198, transports=("tcp",), readers=("prefix",))
    r = framing.run(p)
    row = _rows(r)[_label("tcp", "prefix", p)]
    assert row["reading began"] == "during sends"
    assert row["intact"] == 200  # the length prefix still recovers every message
    assert any("could not hold every message" in f for f in r.findings)


def test_volatile_columns_and_deterministic_counts(report):
    t = report.tables[0]
    assert {"recv() calls", "merged", "split"} <= set(t.volatile)
    assert not {"intact", "truncated", "discarded", "sent"} & set(t.volatile)


def test_two_runs_compare_equal_with_diff(report):
    again = framing.run(framing.Params())

    def doc(r):
        d = json.loads(json.dumps(r.to_dict()))
        return {"settings": {}, "probes": {"framing": d}}

    diffs, (exact, _, _) = compare(doc(report), doc(again))
    assert diffs == [] and exact > 0


def test_findings_and_summary_quote_measured_numbers(report):
    assert report.summary.startswith("TCP recv(4096) returned 0 of 6 messages intact")
    assert any("TCP_NODELAY did not keep the boundaries" in f for f in report.findings)
    assert any("'!I' length prefix recovered all 6" in f for f in report.findings)
    assert report.endpoints
    assert all(
        ep["local"].startswith(("127.0.0.1:", "socketpair inode")) for ep in report.endpoints
    )


def test_concurrent_receiver_still_loses_nothing_and_prefix_recovers_all():
    p = framing.Params(receiver="concurrent", transports=("tcp", "tcp-nodelay", "udp"))
    r = framing.run(p)
    rows = _rows(r)
    for t in ("tcp", "tcp-nodelay"):
        for reader in ("recv", "small-recv", "prefix", "readline"):
            assert rows[_label(t, reader, p)]["lost"] == 0
        assert rows[_label(t, "prefix", p)]["intact"] == K
    assert "intact" in r.tables[0].volatile


def test_ipv6_loopback_when_available():
    if not has_ipv6_loopback():
        pytest.skip("no IPv6 loopback here")
    p = framing.Params(host="::1", transports=("tcp", "udp"))
    r = framing.run(p)
    assert _rows(r)[_label("udp", "prefix", p)]["intact"] == K
    assert all(ep["local"].startswith("[::1]:") for ep in r.endpoints)


def test_tally_stream_counts_by_byte_offsets():
    m = [b"hello", b"world", b"abc"]
    t = framing.tally_stream(m, [b"hello", b"world", b"abc"])
    assert (t.intact, t.merged, t.split, t.lost) == (3, 0, 0, 0)
    t = framing.tally_stream(m, [b"helloworldabc"])
    assert (t.intact, t.merged, t.split) == (0, 3, 0)
    t = framing.tally_stream(m, [b"hel", b"lo", b"worldab", b"c"])
    assert (t.intact, t.merged, t.split) == (0, 2, 2)
    t = framing.tally_stream(m, [b"hello"])
    assert (t.intact, t.lost) == (1, 2)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(sizes=(0,)),
        dict(sizes=(70_000,)),
        dict(sizes=(10,) * 500),
        dict(read_size=0),
        dict(small_read=-1),
        dict(transports=("sctp",)),
        dict(transports=()),
        dict(readers=("json",)),
        dict(receiver="eager"),
        dict(deadline=0),
    ],
)
def test_bad_params_are_usage_errors(kwargs):
    with pytest.raises(UsageError):
        framing.Params(**kwargs)


def test_deadline_bounds_the_probe():
    t0 = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        framing.run(framing.Params(sizes=(60_000,) * 100, small_read=1, deadline=0.3))
    assert time.monotonic() - t0 < 2.0
