"""sockprobe nagle on real loopback connections: the kernel truths it demonstrates."""

from __future__ import annotations

import json
import time

import pytest
from helpers import has_ipv6_loopback

from sockprobe import kernel
from sockprobe.probes import nagle
from sockprobe.probes.nagle import attribution, quickack_start, wwr
from sockprobe.status import DeadlineExceeded, UsageError

needs_tcp_info = pytest.mark.skipif(
    not kernel.IS_LINUX, reason="segment counts need TCP_INFO (Linux)"
)
needs_cork = pytest.mark.skipif(nagle.TCP_CORK is None, reason="TCP_CORK is Linux-only")


@pytest.fixture(scope="module")
def report():
    return nagle.run(nagle.Params(rounds=12))


@needs_tcp_info
@needs_cork
def test_cork_sends_fewer_segments_than_nodelay_and_all_bytes(report):
    for reader in ("idle", "concurrent"):
        t = report.get(f"coalescing_{reader}")
        cork, nodelay = t.find(mode="cork"), t.find(mode="nodelay")
        assert cork["data_segments"] < nodelay["data_segments"]
        # 100 writes of 10 B below the MSS: TCP_CORK sends them as one segment.
        assert cork["data_segments"] == 1
        for row in t.rows:
            assert row["bytes"] == 100 * 10
            assert 1 <= row["data_segments"] <= 100
            assert row["recv_calls"] >= 1


def test_write_write_read_nagle_stalls_on_delayed_ack_nodelay_does_not(report):
    t = report.get("wwr")
    # Linux's minimum delayed-ACK timeout is 40 ms; generous margins for noisy machines
    # (a loaded host delays the server thread by milliseconds, never by a delayed ACK).
    assert t.find(mode="nagle")["median_ms"] >= 20.0
    assert t.find(mode="nodelay")["median_ms"] < 10.0
    assert t.find(mode="cork")["median_ms"] < 10.0


@needs_tcp_info
@needs_cork
def test_cork_uncork_sends_one_segment_per_request_nodelay_two(report):
    # Retransmissions (a tail loss probe on a loaded host) are counted apart, so the
    # segments the requests became are exact.
    t = report.get("wwr")
    assert t.find(mode="cork")["data_segments_per_request"] == 1.0
    assert t.find(mode="nodelay")["data_segments_per_request"] == 2.0
    assert all(r["retransmitted"] >= 0 for r in t.rows)


@needs_tcp_info
def test_one_send_sendmsg_and_msg_more_are_one_segment_and_fast(report):
    """Issue 17: the whole request in one call, or MSG_MORE on the first piece, gives one
    data segment per request and no delayed-ACK stall (median under 5 ms, against the
    40 ms floor of a stall)."""
    t = report.get("wwr")
    for fix in ("one-send", "sendmsg", "msg-more"):
        row = t.find(mode=fix)
        assert row["data_segments_per_request"] == 1.0, row
        assert row["median_ms"] < 5.0, row


@needs_tcp_info
def test_quickack_is_not_sticky(report):
    """Set once, the server's first reply puts it back in delayed-ACK mode: the rounds
    after the first stall like Nagle's. Re-armed after every recv(), none stalls."""
    t = report.get("wwr")
    once, rearmed = t.find(mode="quickack-once"), t.find(mode="quickack-rearmed")
    assert once["stalled"] >= 12 - 2  # the first round or two can be fast
    assert once["median_ms"] >= 20.0
    assert rearmed["median_ms"] < 5.0
    # A delayed-ACK stall hits every round after the first; re-armed, it is gone: at most
    # a quarter of the rounds may be slow for other reasons (a loaded host's scheduler).
    assert rearmed["stalled"] <= 12 // 4
    text = next(f for f in report.findings if f.startswith("TCP_QUICKACK on the server"))
    assert f"{once['stalled']} of 12 rounds stalled" in text
    assert "not sticky" in text


@needs_tcp_info
def test_quickack_start_budget_matches_the_kernel_rule(report):
    """tcp_incr_quickack: min(rcv_wnd / (2 x rcv_mss), 16) immediate ACKs at first."""
    row = report.get("quickack_start").find(receiver="silent")
    if row["rcv_wnd"] is None:
        pytest.skip("tcpi_rcv_wnd needs Linux 6.7+")
    expected = quickack_start.budget(row["rcv_wnd"], row["rcv_mss"])
    assert row["budget"] == expected
    assert row["immediate_acks"] == expected
    assert row["delayed_acks"] == row["segments"] - expected
    assert row["first_delayed_ms"] >= 30.0
    text = next(f for f in report.findings if f.startswith("Quick-ACK start"))
    assert f"first {expected} one-byte segments at once" in text
    assert "as the kernel's rule predicts" in text


def test_quickack_budget_rule():
    assert quickack_start.budget(65483, 536) == 16
    assert quickack_start.budget(4000, 536) == 3
    assert quickack_start.budget(500, 536) == 2  # 0 becomes 2


def test_write_write_read_finding_explains_only_stalls_it_measured(report):
    row = report.get("wwr").find(mode="nagle")
    text = next(f for f in report.findings if f.startswith("Write-write-read"))
    assert f"{row['stalled']} of 12 Nagle rounds took >= 30 ms" in text
    assert f"tcpi_ato) read {row['server_ato_ms']:g} ms" in text
    # On loopback the smoothed RTT is far below 40 ms: the timer is at its floor.
    assert "at its floor, TCP_ATO_MIN (40 ms)" in text


def test_delayed_ack_timer_rule():
    assert wwr.delack_timeout_ms(40.0, 0.05) == 40.0
    assert wwr.delack_timeout_ms(120.0, 0.05) == 40.0  # bounded by max(srtt, 40 ms)
    assert wwr.delack_timeout_ms(120.0, 90.0) == 90.0  # follows the RTT
    assert wwr.delack_timeout_ms(400.0, 300.0) == 200.0  # TCP_DELACK_MAX
    assert wwr.cork_flush_ms(204.0) == 204.0
    assert wwr.cork_flush_ms(20.0) == 200.0


def test_a_single_round_claims_no_delayed_ack_stall_it_did_not_see():
    # The first request of a connection is acknowledged at once (quick-ACK start), so
    # one round may or may not stall; the finding must follow the measurement either way.
    r = nagle.run(
        nagle.Params(rounds=1, writes=5, reader="idle", modes=("nagle", "nodelay"), fixes=("none",))
    )
    row = r.get("wwr").find(mode="nagle")
    text = next(f for f in r.findings if f.startswith("Write-write-read"))
    if row["stalled"] == 0:
        assert "the one Nagle round took under 30 ms" in text
        assert "delays that ACK" not in text
    else:
        assert "1 of 1 Nagle rounds took >= 30 ms" in text


@needs_tcp_info
def test_recv_call_counts_in_findings_match_the_tables(report):
    for reader, who in (("idle", "idle until"), ("concurrent", "reading concurrently")):
        calls = report.get(f"coalescing_{reader}").values("recv_calls")
        text = next(f for f in report.findings if f.startswith(f"With the receiver {who}"))
        lo, hi = min(calls), max(calls)
        expected = f"{lo} recv(65536) call" if lo == hi else f"{lo} to {hi} recv(65536) calls"
        assert expected in text, text


@needs_tcp_info
def test_attribution_accounts_for_every_write(report):
    t = report.get("attribution")
    for row in t.rows:
        assert sum(row[key] for key, _ in attribution.CAUSES) == 100, row
        # The congestion window is read from the snapshots, never left as a placeholder 0.
        assert row["cwnd_then"] > 0 and row["max_unacked"] >= 0
    # With Nagle, small writes wait while a small segment is unacknowledged.
    assert t.find(mode="nagle")["held_by_nagle"] > 0
    if nagle.TCP_CORK is not None:
        assert t.find(mode="cork")["corked"] == 100


def test_histogram_samples_are_the_rounds_table(report):
    (hist,) = [c for c in report.charts if c.id == "wwr_rtt"]
    rounds = report.get("wwr_rounds")
    for label, samples in hist.series:
        assert samples == [r["rtt_ms"] for r in rounds.rows if r["mode"] == label]
        assert len(samples) == 12
    assert hist.log


def test_findings_quote_measured_numbers(report):
    d = report.to_dict()
    t = next(t for t in d["tables"] if t["id"] == "wwr")
    median = next(r for r in t["rows"] if r["mode"] == "nagle")["median_ms"]
    assert any(f"{median:.1f} ms with Nagle" in f for f in d["findings"])
    assert d["endpoints"], "every connection's address must be in the report"
    assert all(ep["local"].startswith("127.0.0.1:") for ep in d["endpoints"])
    json.dumps(d)


def test_cork_held_waits_for_the_probe_timer_max_rto_200ms():
    """TCP_CORK has no 200 ms timer: the corked tail leaves when the zero-window-probe
    timer fires, max(RTO, 200 ms) after the last ACK (tcp_probe0_base)."""
    if nagle.TCP_CORK is None:
        pytest.skip("TCP_CORK is Linux-only")
    r = nagle.run(
        nagle.Params(modes=("cork-held",), rounds=3, writes=5, reader="idle", fixes=("none",))
    )
    row = r.get("wwr").find(mode="cork-held")
    expect = wwr.cork_flush_ms(row["client_rto_ms"])
    # The timer fires in jiffies, and a loaded host wakes the reader late: never early.
    assert 0.95 * expect <= row["median_ms"] <= expect + 100.0
    text = next(f for f in r.findings if f.startswith("A cork never released"))
    assert f"max(RTO {row['client_rto_ms']:g} ms, 200 ms) = {expect:g} ms" in text


def test_cork_held_follows_a_route_rto_min_in_a_namespace(netns):
    """With rto_min 700ms on the loopback route the RTO is about 704 ms, and the corked
    tail waits that long, not 200 ms: the sentence's expectation follows the RTO."""
    code = (
        "import json\n"
        "from sockprobe.probes import nagle\n"
        "r = nagle.run(nagle.Params(modes=('cork-held',), rounds=2, writes=5, "
        "reader='idle', fixes=('none',), quickack_probes=0))\n"
        "print(json.dumps(r.to_dict()))\n"
    )
    proc = netns.in_netns(
        code,
        setup=[
            "ip route change local 127.0.0.1 dev lo table local proto kernel scope host "
            "src 127.0.0.1 rto_min 700ms"
        ],
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    row = next(r for t in doc["tables"] if t["id"] == "wwr" for r in t["rows"])
    assert row["client_rto_ms"] >= 700.0
    expect = wwr.cork_flush_ms(row["client_rto_ms"])
    assert 0.95 * expect <= row["median_ms"] <= expect + 150.0
    assert any(f"= {expect:g} ms" in f for f in doc["findings"])


def test_attribution_under_reno_in_a_namespace(netns):
    """Congestion control changes how many small segments fit in flight; under reno the
    attribution table names reno, every write is accounted for, and a write held behind
    the congestion window is explained with the window reno had then."""
    code = (
        "import json\n"
        "from sockprobe.probes import nagle\n"
        "r = nagle.run(nagle.Params(modes=('nagle', 'nodelay'), rounds=2, reader='idle', "
        "fixes=('none',), quickack_probes=0))\n"
        "print(json.dumps(r.to_dict()))\n"
    )
    proc = netns.in_netns(code, sysctls={"net.ipv4.tcp_congestion_control": "reno"})
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["environment"]["sysctls"]["net.ipv4.tcp_congestion_control"] == "reno"
    t = next(t for t in doc["tables"] if t["id"] == "attribution")
    rows = {r["mode"]: r for r in t["rows"]}
    assert {r["congestion_control"] for r in rows.values()} == {"reno"}
    for row in rows.values():
        assert sum(row[key] for key, _ in attribution.CAUSES) == 100
    nd = rows["nodelay"]
    text = next(f for f in doc["findings"] if f.startswith("With TCP_NODELAY, of 100"))
    if nd["behind_full_cwnd"]:
        # The reason names the window that was full: unacked had reached cwnd.
        assert nd["max_unacked"] >= nd["cwnd_then"]
        assert f"reno: unacked reached {nd['max_unacked']}, cwnd {nd['cwnd_then']}" in text
    else:
        assert "behind a full congestion window" not in text
    # Nagle's hold does not depend on the congestion control.
    assert rows["nagle"]["held_by_nagle"] > 0


def test_lo_down_is_unsupported_naming_the_cause(netns):
    """Issue 13: no loopback, no result: exit 3 with the errno, never a table of zeros."""
    code = (
        "from sockprobe.probes import nagle\n"
        "from sockprobe.status import Unsupported\n"
        "try:\n"
        "    nagle.run(nagle.Params(rounds=2, deadline=10))\n"
        "except Unsupported as exc:\n"
        "    print('UNSUPPORTED', exc)\n"
    )
    proc = netns.in_netns(code, lo_up=False)
    assert "UNSUPPORTED cannot run on 127.0.0.1" in proc.stdout, proc.stdout + proc.stderr
    assert "ENETUNREACH" in proc.stdout or "timed out" in proc.stdout


def test_ipv6_loopback_runs_when_available():
    if not has_ipv6_loopback():
        pytest.skip("no IPv6 loopback here")
    r = nagle.run(nagle.Params(host="::1", rounds=3, writes=10, reader="idle", fixes=("one-send",)))
    assert all(ep["local"].startswith("[::1]:") for ep in r.endpoints)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(writes=0),
        dict(size=-1),
        dict(rounds=0),
        dict(modes=("turbo",)),
        dict(fixes=("magic",)),
        dict(reader="eager"),
        dict(quickack_probes=-1),
        dict(deadline=-1),
    ],
)
def test_bad_params_are_usage_errors(kwargs):
    with pytest.raises(UsageError):
        nagle.Params(**kwargs)


def test_deadline_bounds_the_probe():
    # 200 cork-held rounds need 40 s; a 0.5 s deadline must stop it cleanly and soon.
    if nagle.TCP_CORK is None:
        pytest.skip("TCP_CORK is Linux-only")
    t0 = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        nagle.run(nagle.Params(modes=("cork-held",), rounds=200, reader="idle", deadline=0.5))
    assert time.monotonic() - t0 < 2.0


def test_cli_with_lo_down_exits_3_with_one_line(netns):
    code, doc, err = netns.sockprobe_json("nagle", "--rounds", "2", lo_up=False)
    assert code == 3 and doc is None, err
    assert len(err.strip().splitlines()) == 1 and "cannot run on" in err


def test_a_quickack_route_removes_the_stall_and_the_sentences_say_why(netns):
    """With `quickack 1` on the loopback route (RTAX_QUICKACK) the receiver never delays
    an ACK: no Nagle round stalls, the quick-ACK start outlasts the kernel's budget, and
    neither sentence blames the connection-start budget."""
    code = (
        "import json\n"
        "from sockprobe.probes import nagle\n"
        "r = nagle.run(nagle.Params(modes=('nagle', 'nodelay'), rounds=6, writes=20, "
        "reader='idle', fixes=('none',)))\n"
        "print(json.dumps(r.to_dict()))\n"
    )
    proc = netns.in_netns(
        code,
        setup=[
            "ip route change local 127.0.0.1 dev lo table local proto kernel scope host "
            "src 127.0.0.1 quickack 1"
        ],
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    tables = {t["id"]: t for t in doc["tables"]}
    nagle_row = next(r for r in tables["wwr"]["rows"] if r["mode"] == "nagle")
    assert nagle_row["stalled"] == 0 and nagle_row["median_ms"] < 5.0
    qs = tables["quickack_start"]["rows"][0]
    assert qs["immediate_acks"] == qs["segments"] == 24 > qs["budget"]
    wwr_text = next(f for f in doc["findings"] if f.startswith("Write-write-read"))
    assert "delayed ACKs are off on this path" in wwr_text
    assert "quick-ACK start" not in wwr_text
    qs_text = next(f for f in doc["findings"] if f.startswith("Quick-ACK start"))
    assert f"more than the kernel's quick-ACK budget of {qs['budget']}" in qs_text


def test_leaves_no_time_wait_behind(netns):
    """Issue 13: connections whose experiment is over are closed abortively
    (SO_LINGER {1, 0}), so the probe leaves no TIME_WAIT in the kernel."""
    code = (
        "from pathlib import Path\n"
        "from sockprobe.probes import nagle\n"
        "nagle.run(nagle.Params())\n"
        "rows = Path('/proc/net/tcp').read_text().splitlines()[1:]\n"
        "print(sum(1 for r in rows if r.split()[3] == '06'))\n"
    )
    proc = netns.in_netns(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "0"


@pytest.mark.parametrize("probe", ["nagle", "partial-send"])
def test_exhausted_port_range_exits_3_naming_the_range(netns, probe):
    """Issue 13: the probes' own connections exhaust a 4-port range mid-run; the cause is
    the host's, named with the range, exit 3, not a usage error."""
    code, doc, err = netns.sockprobe_json(
        probe, sysctls={"net.ipv4.ip_local_port_range": "40000 40003"}
    )
    assert code == 3 and doc is None, err
    assert len(err.strip().splitlines()) == 1
    assert (
        "the ephemeral port range 40000-40003 (net.ipv4.ip_local_port_range, 4 ports)" in err
        or "EADDRNOTAVAIL" in err
    )
