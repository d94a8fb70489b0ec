"""sockprobe nagle on real loopback connections: the kernel truths it demonstrates."""

from __future__ import annotations

import pytest
from helpers import has_ipv6_loopback, labelled

from sockprobe import kernel
from sockprobe.probes import nagle

needs_tcp_info = pytest.mark.skipif(
    not kernel.IS_LINUX, reason="segment counts need TCP_INFO (Linux)"
)
needs_cork = pytest.mark.skipif(nagle.TCP_CORK is None, reason="TCP_CORK is Linux-only")


def _table(report, prefix):
    return next(t for t in report.tables if t.title.startswith(prefix))


def _coalescing_rows(report):
    return [r for t in report.tables if t.title.startswith("Coalescing") for r in _rows(t)]


def _rows(table):
    return labelled(table)


@pytest.fixture(scope="module")
def report():
    return nagle.run(nagle.Params(rounds=12))


@needs_tcp_info
@needs_cork
def test_cork_sends_fewer_segments_than_nodelay_and_all_bytes(report):
    rows = _coalescing_rows(report)
    for reader in ("idle", "concurrent"):
        by_mode = {r["mode"]: r for r in rows if r["receiver"] == reader}
        assert by_mode["cork"]["data segments"] < by_mode["nodelay"]["data segments"]
        # 100 writes of 10 B below the MSS: TCP_CORK sends them as one segment.
        assert by_mode["cork"]["data segments"] == 1
        for row in by_mode.values():
            assert row["bytes"] == 100 * 10
            assert 1 <= row["data segments"] <= 100


@needs_tcp_info
def test_idle_receiver_reads_everything_written(report):
    rows = _coalescing_rows(report)
    assert {r["receiver"] for r in rows} == {"idle", "concurrent"}
    for row in rows:
        assert row["bytes"] == 1000
        assert row["recv() calls"] >= 1


def test_write_write_read_nagle_stalls_on_delayed_ack_nodelay_does_not(report):
    rows = {r["mode"]: r for r in _rows(_table(report, "Write-write-read"))}
    # Linux's minimum delayed-ACK timeout is 40 ms; generous margins for noisy machines
    # (a loaded host delays the server thread by milliseconds, never by a delayed ACK).
    assert rows["nagle"]["median"] >= 20.0
    assert rows["nodelay"]["median"] < 10.0
    assert rows["cork"]["median"] < 10.0


@needs_tcp_info
@needs_cork
def test_cork_uncork_sends_one_segment_per_request_nodelay_two(report):
    # Retransmissions (a tail loss probe on a loaded host) are counted apart, so the
    # segments the requests became are exact.
    rows = {r["mode"]: r for r in _rows(_table(report, "Write-write-read"))}
    assert rows["cork"]["data segments/request"] == 1.0
    assert rows["nodelay"]["data segments/request"] == 2.0
    for row in rows.values():
        assert row["retransmitted"] >= 0


def test_write_write_read_finding_explains_only_stalls_it_measured(report):
    rows = {r["mode"]: r for r in _rows(_table(report, "Write-write-read"))}
    text = next(f for f in report.findings if f.startswith("Write-write-read"))
    stalled = rows["nagle"]["stalled >= 30 ms"]
    assert f"{stalled} of 12 Nagle rounds took >= 30 ms" in text
    assert "delayed-ACK timeout (tcpi_ato) read" in text
    assert "documented mechanism" in text


def test_a_single_round_claims_no_delayed_ack_stall_it_did_not_see():
    # The first request of a connection is acknowledged at once (quick-ACK mode), so
    # one round may or may not stall; the finding must follow the measurement either way.
    r = nagle.run(nagle.Params(rounds=1, writes=5, reader="idle", modes=("nagle", "nodelay")))
    row = {x["mode"]: x for x in _rows(_table(r, "Write-write-read"))}["nagle"]
    text = next(f for f in r.findings if f.startswith("Write-write-read"))
    if row["stalled >= 30 ms"] == 0:
        assert "no Nagle round took >= 30 ms" in text
        assert "documented mechanism" not in text
    else:
        assert "1 of 1 Nagle rounds took >= 30 ms" in text


@needs_tcp_info
def test_recv_call_counts_in_findings_match_the_tables(report):
    for reader, who in (("idle", "idle until"), ("concurrent", "reading concurrently")):
        calls = [r["recv() calls"] for r in _coalescing_rows(report) if r["receiver"] == reader]
        text = next(f for f in report.findings if f.startswith(f"With the receiver {who}"))
        lo, hi = min(calls), max(calls)
        expected = f"{lo} recv(65536) call" if lo == hi else f"{lo} to {hi} recv(65536) calls"
        assert expected in text, text


@needs_tcp_info
def test_attribution_accounts_for_every_write(report):
    table = _table(report, "Why writes")
    for row in _rows(table):
        total = sum(row[c] for c in nagle.CAUSES)
        assert total == 100, row
    rows = {r["mode"]: r for r in _rows(table)}
    # The congestion window is read from the snapshots, never left as a placeholder 0.
    assert all(r["cwnd then"] > 0 and r["max unacked"] >= 0 for r in rows.values())
    # With Nagle, small writes wait while a small segment is unacknowledged.
    assert rows["nagle"]["held by Nagle"] > 0
    # A corked socket holds every write.
    if nagle.TCP_CORK is not None:
        assert rows["cork"]["corked"] == 100


def test_findings_quote_measured_numbers(report):
    d = report.to_dict()
    rows = {r[0]: r for r in d["tables"][-1]["rows"]}
    median = rows["nagle"][1]
    assert any(f"{median:.1f} ms with Nagle" in f for f in d["findings"])
    assert d["endpoints"], "every connection's address must be in the report"
    assert all(ep["local"].startswith("127.0.0.1:") for ep in d["endpoints"])


def test_cork_held_hits_the_200ms_ceiling():
    if nagle.TCP_CORK is None:
        pytest.skip("TCP_CORK is Linux-only")
    r = nagle.run(nagle.Params(modes=("cork-held",), rounds=3, writes=5, reader="idle"))
    row = _rows(_table(r, "Write-write-read"))[0]
    assert 150.0 <= row["median"] <= 400.0


def test_ipv6_loopback_runs_when_available():

    if not has_ipv6_loopback():
        pytest.skip("no IPv6 loopback here")
    r = nagle.run(nagle.Params(host="::1", rounds=3, writes=10, reader="idle"))
    assert all(ep["local"].startswith("[::1]:") for ep in r.endpoints)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(writes=0),
        dict(size=-1),
        dict(rounds=0),
        dict(modes=("turbo",)),
        dict(reader="eager"),
        dict(deadline=-1),
    ],
)
def test_bad_params_are_usage_errors(kwargs):
    from sockprobe.status import UsageError

    with pytest.raises(UsageError):
        nagle.Params(**kwargs)


def test_deadline_bounds_the_probe():
    # 200 cork-held rounds need 40 s; a 0.5 s deadline must stop it cleanly and soon.
    import time

    from sockprobe.status import DeadlineExceeded

    if nagle.TCP_CORK is None:
        pytest.skip("TCP_CORK is Linux-only")
    t0 = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        nagle.run(nagle.Params(modes=("cork-held",), rounds=200, reader="idle", deadline=0.5))
    assert time.monotonic() - t0 < 2.0
