"""sockprobe partial-send on real loopback connections: the kernel truths it demonstrates."""

from __future__ import annotations

import json
import time
from array import array

import pytest
from helpers import labelled

from sockprobe import kernel
from sockprobe.cli import main
from sockprobe.lab import Deadline, Lab, resolve_host
from sockprobe.probes import partial_send
from sockprobe.report import NA
from sockprobe.status import DeadlineExceeded, UsageError

linux_only = pytest.mark.skipif(not kernel.IS_LINUX, reason="SIOCOUTQ/SIOCINQ are Linux ioctls")


def _table(report, prefix):
    return next(t for t in report.tables if t.title.startswith(prefix))


def _rows(table):
    return labelled(table)


@pytest.fixture(scope="module")
def report():
    return partial_send.run(partial_send.Params())


def _timeline(report, placement, mode):
    return [
        r
        for r in _rows(_table(report, "Timeline"))
        if r["SO_RCVBUF set on"] == placement and r["mode"] == mode
    ]


@pytest.mark.parametrize("placement", partial_send.PLACEMENTS)
def test_first_nonblocking_send_accepts_fewer_bytes_than_offered(report, placement):
    calls = _timeline(report, placement, "nonblocking")
    first = calls[0]
    assert first["requested"] == 1024 * 1024
    assert 0 < first["accepted"] < first["requested"]
    # Then EAGAIN, and the run ends on a run of EAGAINs that lasted the quiet period.
    assert any(c["outcome"] == "BlockingIOError EAGAIN" for c in calls)
    assert calls[-1]["outcome"] == "BlockingIOError EAGAIN"
    cumulative = [c["cumulative"] for c in calls]
    assert cumulative == sorted(cumulative)


@pytest.mark.parametrize("placement", partial_send.PLACEMENTS)
def test_timeout_send_returns_partial_counts_then_times_out(report, placement):
    calls = _timeline(report, placement, "timeout")
    assert calls[0]["accepted"] < calls[0]["requested"]
    assert calls[-1]["outcome"].startswith("TimeoutError")
    assert calls[-1]["accepted"] == 0


@pytest.mark.parametrize("placement", partial_send.PLACEMENTS)
def test_sendall_raises_without_a_count(report, placement):
    (call,) = _timeline(report, placement, "sendall")
    assert call["outcome"].startswith("TimeoutError")
    assert isinstance(call["accepted"], NA)


def test_drained_count_and_content_equal_the_accepted_total(report):
    rows = _rows(_table(report, "Per scenario"))
    assert len(rows) == 6
    for r in rows:
        assert r["drained = accepted"] is True, r
        assert r["content intact"] is True, r
        assert 0 < r["drained"] < r["offered"]
        if isinstance(r["accepted (API)"], int):
            assert r["drained"] == r["accepted (API)"]
        if kernel.IS_LINUX:
            # The sender's own exact count of what its kernel took is what was drained,
            # for sendall() too, which reports nothing.
            assert r["taken (tcpi_bytes_acked − 1 + SIOCOUTQ)"] == r["drained"]
            # The two queues, read by ioctl and by sock_diag (what ss reads), hold at
            # least that: bytes queued at the receiver and not yet acknowledged would
            # be in both (after the quiet period they are equal in practice).
            assert r["SIOCOUTQ + SIOCINQ"] >= r["drained"]
            assert r["ss Send-Q + Recv-Q (sock_diag)"] >= r["drained"]
    assert any("Nothing was lost" in f for f in report.findings)


@linux_only
def test_buffers_are_doubled_as_the_kernel_says():
    """socket(7): the kernel doubles the value set, within wmem_max / rmem_max."""
    r = partial_send.run(
        partial_send.Params(size=200_000, modes=("nonblocking",), quiet_period=0.05)
    )
    wmax = kernel.sysctl_int("net.core.wmem_max") or 0
    rmax = kernel.sysctl_int("net.core.rmem_max") or 0
    for row in _rows(_table(r, "Buffers")):
        assert row["SO_SNDBUF effective"] == 2 * min(16384, wmax)
        assert row["SO_RCVBUF effective"] == 2 * min(16384, rmax)


@linux_only
def test_rcvbuf_placement_changes_the_first_window(report):
    """On the listener before listen() the handshake advertises a window sized for the
    small buffer, so the first send cannot put everything in the receiver's queue; on the
    accepted socket the first send lands whole in the receiver's queue (SIOCOUTQ 0)."""
    listener = _timeline(report, "listener", "nonblocking")[0]
    accepted = _timeline(report, "accepted", "nonblocking")[0]
    assert accepted["sender SIOCOUTQ"] == 0
    assert accepted["receiver SIOCINQ"] == accepted["accepted"]
    assert listener["receiver SIOCINQ"] < listener["accepted"]


def test_big_buffers_accept_everything():
    r = partial_send.run(
        partial_send.Params(
            size=20_000, sndbuf=1 << 20, rcvbuf=1 << 20, placement="listener", quiet_period=0.05
        )
    )
    rows = {row["mode"]: row for row in _rows(_table(r, "Per scenario"))}
    assert rows["nonblocking"]["accepted (API)"] == 20_000
    assert rows["sendall"]["accepted (API)"] == 20_000
    assert all(row["drained"] == 20_000 and row["content intact"] for row in rows.values())
    assert any("accepted all 20,000 B" in f for f in r.findings)
    # Nothing was held back, so nothing may claim that the buffers filled up.
    assert r.summary.startswith("the sender's kernel took all 20,000 B;"), r.summary
    assert "before the buffers were full" not in r.summary
    assert not any("took less than offered" in f for f in r.findings)


def test_span_and_buffer_wording():
    assert partial_send._span([1, 2, 1, 3]) == "1 to 3"
    assert partial_send._span([2, 2]) == "2"
    assert partial_send._buffer_verb(16384, 32768, "net.core.wmem_max") == "doubled"
    assert partial_send._buffer_verb(1, 4608, "net.core.wmem_max") == "raised to the kernel's floor"
    assert partial_send._buffer_verb(1000, 1000, "net.core.wmem_max") == "not doubled"
    if kernel.IS_LINUX:
        cap = kernel.sysctl_int("net.core.wmem_max")
        assert cap is not None
        assert partial_send._buffer_verb(cap + 1, 2 * cap, "net.core.wmem_max").startswith(
            "capped at net.core.wmem_max"
        )


def test_counter_pattern_never_repeats_a_word():
    data = partial_send.counter_pattern(1 << 20)
    words = array("I", data)
    assert len(set(words)) == len(words) == (1 << 20) // 4
    assert partial_send.counter_pattern(6) == bytes(6)
    assert partial_send.counter_pattern(8)[4:] == b"\0\0\0\x01"


def test_the_drain_check_catches_a_wrong_byte():
    """The content check can fail: drain against a pattern that differs at one offset."""
    p = partial_send.Params(size=50_000, sndbuf=1 << 20, rcvbuf=1 << 20)
    data = partial_send.counter_pattern(p.size)
    with Lab(resolve_host("127.0.0.1"), Deadline(10.0)) as lab:
        sc, pair = partial_send.fill(lab, "listener", "timeout", p, data)
        assert sc.accepted == p.size
        wrong = bytearray(data)
        wrong[12_345] ^= 0xFF
        partial_send.drain(lab, sc, pair, bytes(wrong))
    assert sc.drained == p.size
    assert sc.first_mismatch == 12_345
    assert not sc.intact


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(size=0),
        dict(size=-1),
        dict(sndbuf=0),
        dict(rcvbuf=-5),
        dict(placement="socket"),
        dict(modes=()),
        dict(modes=("blocking",)),
        dict(quiet_period=0),
        dict(op_timeout=100),
        dict(deadline=-1),
    ],
)
def test_bad_params_are_usage_errors(kwargs):
    with pytest.raises(UsageError):
        partial_send.Params(**kwargs)


def test_deadline_bounds_the_probe():
    # A 5 s quiet period and op-timeout; a 0.3 s deadline must stop every scenario soon.
    t0 = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        partial_send.run(partial_send.Params(quiet_period=5.0, op_timeout=5.0, deadline=0.3))
    assert time.monotonic() - t0 < 2.5


def test_cli(capsys):
    code = main(
        [
            "partial-send",
            "--size",
            "100000",
            "--mode",
            "timeout",
            "--placement",
            "accepted",
            "--json",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    doc = json.loads(out)
    assert doc["probe"] == "partial-send"
    assert doc["params"]["modes"] == ["timeout"] and doc["params"]["placement"] == "accepted"
    assert {ep["role"].split(" ")[0] for ep in doc["endpoints"]} == {"accepted/timeout"}
    code = main(["partial-send", "--placement", "nowhere"])
    _out, err = capsys.readouterr()
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--placement" in err


@linux_only
def test_bytes_taken_counts_every_byte_written_whether_acked_or_queued():
    from sockprobe.kernel import sendqueue

    with Lab(resolve_host("127.0.0.1"), Deadline(10.0)) as lab:
        c, s = lab.tcp_pair()
        assert sendqueue.bytes_taken(c) == 0
        c.sendall(b"x" * 1000)
        end = time.monotonic() + 2.0
        while kernel.outq(c) and time.monotonic() < end:  # wait for the ACK
            time.sleep(0.005)
        assert kernel.outq(c) == 0
        assert sendqueue.bytes_taken(c) == 1000  # all acknowledged: bytes_acked - 1
        assert kernel.inq(s) == 1000
