"""sockprobe framing on real sockets: which transports keep message boundaries, and what a
length prefix, tiny reads and readline() make of them."""

from __future__ import annotations

import json
import socket
import time

import pytest
from helpers import has_ipv6_loopback

from sockprobe.diff import compare
from sockprobe.probes import framing
from sockprobe.report import CONTEXT, EXACT, NA, VOLATILE
from sockprobe.status import DeadlineExceeded, UsageError

MSGS = framing.messages(framing.DEFAULT_SIZES)
K = len(MSGS)
LARGEST = max(len(m) for m in MSGS)


def _rows(report):
    return {(r["transport"], r["reader"]): r for r in report.get("boundaries").rows}


def _label(transport, reader, p=None):
    return transport, reader


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
    assert row["recv_calls"] == -(-sum(len(m) for m in MSGS) // 2)


@pytest.mark.parametrize("transport", ["tcp", "tcp-nodelay", "unix-stream"])
def test_late_reader_sees_writes_merged_whatever_nagle_does(report, transport):
    # The receiver read after the sender closed with every byte queued: recv(4096) copies
    # across segments, so hello and world come back in one read, with or without Nagle.
    row = _rows(report)[_label(transport, "recv")]
    assert row["returned"].startswith("b'hello…'(4,096)")
    assert row["intact"] == 0
    assert row["merged"] == K
    assert row["recv_calls"] == -(-sum(len(m) for m in MSGS) // 4096)
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
    assert 1 <= row["recv_calls"] < K  # the buffer merged them; readline split them


def test_tcp_rows_count_the_segments_that_carried_the_messages(report):
    from sockprobe import kernel

    for (transport, _reader), row in _rows(report).items():
        if transport.startswith("tcp") and kernel.IS_LINUX:
            # At least one segment, at most one per byte; which number depends on timing.
            assert 1 <= row["tcp_segments"] <= sum(len(m) + 5 for m in MSGS)
        elif not transport.startswith("tcp"):
            assert isinstance(row["tcp_segments"], NA)


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
    assert tiny["returned"].startswith("b'he', b'wo'")
    assert tiny["discarded"] == sum(len(m) - 2 for m in MSGS)


@pytest.mark.parametrize(
    "transport", ["udp", pytest.param("unix-seqpacket", marks=needs_seqpacket)]
)
def test_datagrams_keep_every_message_when_the_buffer_fits_the_largest(transport):
    p = framing.Params(read_size=LARGEST, transports=(transport,), readers=("recv",))
    row = _rows(framing.run(p))[_label(transport, "recv", p)]
    assert row["intact"] == K
    assert (row["merged"], row["split"], row["truncated"], row["lost"]) == (0, 0, 0, 0)
    assert row["recv_calls"] == K


def test_readline_is_na_on_datagram_transports(report):
    rows = _rows(report)
    for transport in ("udp", "unix-seqpacket"):
        row = rows[_label(transport, "readline")]
        assert isinstance(row["intact"], NA)
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
    began = [row["reading_began"] for row in _rows(report).values()]
    assert {b for b in began if not isinstance(b, NA)} == {"after last send"}
    # n/a only where the case cannot run: readline on the datagram transports.
    assert {k for k, r in _rows(report).items() if isinstance(r["reading_began"], NA)} == {
        ("udp", "readline"),
        ("unix-seqpacket", "readline"),
    }
    assert not any("could not hold" in f for f in report.findings)


def test_when_the_buffers_cannot_hold_every_message_the_report_says_so():
    # 198 x 65,000 B (12.9 MB) on TCP is more than default buffers hold: the late receiver
    # has to start while the sender is still blocked, and the row and a finding say so.
    p = framing.Params(sizes=(65_000,) * 198, transports=("tcp",), readers=("prefix",))
    r = framing.run(p)
    row = _rows(r)[_label("tcp", "prefix", p)]
    assert row["reading_began"] == "during sends"
    assert row["intact"] == 200  # the length prefix still recovers every message
    assert any("could not hold every message" in f for f in r.findings)


def test_volatile_columns_and_deterministic_counts(report):
    t = report.get("boundaries")
    kinds = {c.key: c.kind for c in t.columns}
    assert {k for k in ("recv_calls", "merged", "split") if kinds[k] == VOLATILE} == {
        "recv_calls",
        "merged",
        "split",
    }
    assert all(kinds[k] == EXACT for k in ("intact", "truncated", "discarded", "sent", "lost"))
    # What measures the scheduler is context: when reading began, the segment count.
    assert kinds["reading_began"] == CONTEXT and kinds["tcp_segments"] == CONTEXT


def test_two_runs_compare_equal_with_diff(report):
    again = framing.run(framing.Params())

    def doc(r):
        d = json.loads(json.dumps(r.to_dict()))
        return {"settings": {}, "probes": {"framing": d}}

    c = compare(doc(report), doc(again))
    assert c.differences == [] and c.exact > 0


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
    kinds = {c.key: c.kind for c in r.get("boundaries").columns}
    # A racing receiver's counts measure the scheduler: never compared.
    assert kinds["intact"] == kinds["merged"] == CONTEXT


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
        dict(offload_segments=1),
        dict(offload_segments=65),
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


# -- where one send() is not one read ------------------------------------------------------
def _offload(report):
    return report.get("offload")


def test_default_udp_is_one_send_one_read(report):
    row = _offload(report).find(case="default")
    n = framing.Params().offload_segments
    assert (row["send_calls"], row["reads"], row["one_send_one_read"]) == (n, n, True)


@pytest.mark.parametrize("case", ["msg_more", "udp_cork"])
def test_msg_more_and_udp_cork_join_sends_into_one_datagram(report, case):
    row = _offload(report).find(case=case)
    n = framing.Params().offload_segments
    assert row["send_calls"] == n and row["reads"] == 1
    assert row["read_sizes"] == f"{n * 1000:,}"
    assert row["one_send_one_read"] is False


def test_udp_segment_splits_one_send_into_gso_sized_datagrams(report):
    row = _offload(report).find(case="udp_segment")
    n = framing.Params().offload_segments
    assert row["send_calls"] == 1 and row["reads"] == n
    assert row["read_sizes"] == f"1,000 x{n - 1}, 900"  # the last segment is shorter
    assert row["datagrams_per_read"] == 1


def test_udp_gro_coalesces_the_segments_into_one_read_with_the_gso_size(report):
    row = _offload(report).find(case="udp_segment_gro")
    n = framing.Params().offload_segments
    assert row["reads"] == 1 and row["read_sizes"] == f"{n * 1000 - 100:,}"
    assert row["gro_size"] == 1000  # the SOL_UDP/UDP_GRO control message
    assert row["datagrams_per_read"] == n  # one read, n datagrams: the rule broken
    # Separate sends are not glued on loopback (no GRO on lo), and carry no cmsg.
    sep = _offload(report).find(case="gro_separate")
    assert sep["reads"] == n and isinstance(sep["gro_size"], NA)


@needs_seqpacket
def test_seqpacket_ignores_msg_more(report):
    row = _offload(report).find(case="seqpacket_msg_more")
    assert row["reads"] == row["send_calls"] and row["one_send_one_read"] is True


def test_more_segments_follow_the_option():
    p = framing.Params(transports=("udp",), readers=("recv",), offload_segments=10)
    t = framing.run(p).get("offload")
    assert t.find(case="udp_segment")["reads"] == 10
    assert t.find(case="udp_segment_gro")["reads"] == 1
    assert t.find(case="msg_more")["reads"] == 1


def test_the_offload_finding_says_when_the_rule_holds(report):
    f = next(x for x in report.findings if x.startswith("One send() is one read only"))
    assert "UDP_GRO control message" in f and "MSG_MORE" in f


def test_lo_down_is_unsupported_with_the_cause():
    from sockprobe.kernel import netif, netns

    try:
        netns.run_in_new_netns(lambda: None, timeout=10)
    except netns.NetnsUnavailable as exc:
        pytest.skip(str(exc))

    def body() -> str:
        from sockprobe.status import Unsupported

        netif.set_link("lo", up=False)
        try:
            framing.run(framing.Params())
        except Unsupported as exc:
            return f"Unsupported: {exc}"
        return "ran"

    out = netns.run_in_new_netns(body, timeout=10)
    assert out.startswith("Unsupported:") and "lo is down" in out, out
