"""sockprobe close on real loopback connections: what each side observes, and what
close() leaves behind. Tables are read by id and column key."""

from __future__ import annotations

import io
import json
import signal
import time
from typing import Any

import pytest
from helpers import has_ipv6_loopback, interrupt

from sockprobe import kernel
from sockprobe.cli import main
from sockprobe.kernel import timewait as twrules
from sockprobe.probes import close
from sockprobe.probes.close import common, leftovers, lingering
from sockprobe.report import Report
from sockprobe.status import DeadlineExceeded

linux_only = pytest.mark.skipif(not kernel.IS_LINUX, reason="TCP_INFO states: Linux")

Step = tuple[str, str, str, str | None, Any]


def _scenario(report: Report, name: str) -> list[Step]:
    t = report.get("steps")
    return [
        (r["side"], r["call"], r["result"], r["errno"], r["state_after"])  # type: ignore[misc]
        for r in t.rows
        if r["scenario"] == name
    ]


def _closer(report: Report, name: str) -> dict[str, Any]:
    return report.get("closers").find(scenario=name)


@pytest.fixture(scope="module")
def report() -> Report:
    return close.run(close.Params())


@linux_only
def test_recv_after_peer_close_returns_empty_bytes_every_time(report: Report) -> None:
    rows = _scenario(report, "peer_close_recv")
    assert rows[0][:3] == ("server", "close()", "returned None")
    reads = rows[1:]
    assert len(reads) == 3
    assert all(r[2:] == ("returned b''", None, "CLOSE_WAIT") for r in reads)


@linux_only
def test_first_send_after_close_succeeds_second_raises_epipe(report: Report) -> None:
    rows = _scenario(report, "peer_close_send")
    n = len(common.REQUEST)
    assert rows[1] == ("client", f"send({n} B) #1", f"returned {n}", None, "CLOSE")  # RST back
    assert rows[2] == ("client", f"send({n} B) #2", "raised BrokenPipeError", "EPIPE", "CLOSE")
    # The FIN came before the RST, so a recv now is end-of-file, not an error.
    assert rows[3][2:4] == ("returned b''", None)


@linux_only
def test_local_shutdown_rd_gives_empty_bytes_with_nothing_received(report: Report) -> None:
    rows = _scenario(report, "local_shutdown_rd")
    assert rows[1][2:] == ("returned b''", None, "ESTABLISHED")
    # The peer sent nothing and was told nothing: its recv would block.
    assert rows[2][2:] == ("raised BlockingIOError", "EAGAIN", "ESTABLISHED")


@linux_only
def test_close_with_unread_data_resets_once_after_the_data(report: Report) -> None:
    client = [r for r in _scenario(report, "unread_data") if r[0] == "client"][1:]
    assert [(r[2], r[3]) for r in client] == [
        (f"returned {common.REPLY!r}", None),  # data that arrived before the RST comes first
        ("raised ConnectionResetError", "ECONNRESET"),  # the reset, reported once
        ("returned b''", None),
        ("raised BrokenPipeError", "EPIPE"),
    ]
    c = _closer(report, "unread_data")
    assert c["unread_b"] == len(common.REQUEST)
    # Every closer's unread count is read (SIOCINQ) at its close, not assumed.
    others = {r["scenario"]: r["unread_b"] for r in report.get("closers").rows if r is not c}
    assert others == {"peer_close_recv": 0, "peer_close_send": 0, "linger_zero": 0, "half_close": 0}
    assert c["peer_received"] == "RST (peer in CLOSE)"


@linux_only
def test_linger_zero_aborts_with_rst_and_leaves_no_time_wait(report: Report) -> None:
    rows = _scenario(report, "linger_zero")
    assert rows[1][2:] == ("raised ConnectionResetError", "ECONNRESET", "CLOSE")
    assert rows[2][2:4] == ("returned b''", None)
    c4, c1 = _closer(report, "linger_zero"), _closer(report, "peer_close_recv")
    assert c4["peer_received"] == "RST (peer in CLOSE)"
    if twrules.tw_created(kernel.sysctl_int("net.ipv4.tcp_max_tw_buckets")) is False:
        pytest.skip("tcp_max_tw_buckets is 0: no TIME_WAIT to compare with")
    assert c4["tw_closer"] == 0
    # ... whereas a plain close() leaves the closer in TIME_WAIT.
    assert c1["peer_received"] == "FIN (peer in CLOSE_WAIT)"
    assert (c1["tw_closer"], c1["tw_peer"]) == (1, 0)
    # The orphan that answered with RST (peer_close_send) is gone, no TIME_WAIT either.
    c2 = _closer(report, "peer_close_send")
    assert (c2["tw_closer"], c2["tw_peer"]) == (0, 0)


@linux_only
def test_half_close_peer_reads_eof_and_can_still_reply(report: Report) -> None:
    rows = _scenario(report, "half_close")
    assert rows[0] == ("client", "shutdown(SHUT_WR)", "returned None", None, "FIN_WAIT2")
    assert rows[1] == ("server", "recv(1024)", "returned b''", None, "CLOSE_WAIT")
    assert rows[2][:3] == ("server", f"send({common.REPLY!r})", f"returned {len(common.REPLY)}")
    assert rows[3][2] == f"returned {common.REPLY!r}"
    assert rows[4][2:4] == ("raised BrokenPipeError", "EPIPE")
    c = _closer(report, "half_close")
    assert c["closer"] == "client" and c["peer_received"] == "FIN (peer in CLOSE_WAIT)"
    assert c["tw_closer"] == 1


@linux_only
def test_half_closed_fin_wait2_has_no_timer_but_the_orphan_has(report: Report) -> None:
    t = report.get("fin_wait2")
    half, orphan = t.find(case="half_closed"), t.find(case="orphan")
    assert half["state"] == "FIN_WAIT2" and half["timer"] == "none" and half["left_s"] == 0
    assert orphan["state"] == "FIN_WAIT2" and orphan["timer"] != "none"
    assert isinstance(orphan["rule_s"], float)
    assert abs(orphan["left_s"] - orphan["rule_s"]) <= 1.0  # tcp_fin_timeout, by the rule


@linux_only
def test_close_with_unsent_data_continues_in_the_background(report: Report) -> None:
    r = report.get("leftovers").find(case="orphan_unsent")
    assert r["unsent_b"] > 0 and r["close_ms"] < 100  # close() does not wait for the data
    assert r["state_after"] == "FIN_WAIT1"  # the orphan is still sending
    assert r["peer_read_b"] == r["queued_b"] and r["peer_end"] == "EOF"  # nothing lost


@linux_only
def test_positive_linger_blocks_until_acked_or_the_timeout(report: Report) -> None:
    t = report.get("leftovers")
    acked, stalled = t.find(case="linger_acked"), t.find(case="linger_stalled")
    assert acked["close_ms"] < leftovers.LINGER_S * 1000 / 2 and acked["state_after"] != "FIN_WAIT1"
    # Blocked for the linger time (a little more on a loaded host, never less), returned
    # without an error, and the data still arrived afterwards.
    assert (
        (leftovers.LINGER_S - 0.01) * 1000
        <= stalled["close_ms"]
        <= (leftovers.LINGER_S + 0.5) * 1000
    )
    assert stalled["close_result"] == "returned None" and stalled["state_after"] == "FIN_WAIT1"
    assert stalled["peer_read_b"] == stalled["queued_b"] and stalled["peer_end"] == "EOF"


@linux_only
def test_close_of_a_shared_descriptor_sends_nothing(report: Report) -> None:
    for case in ("dup", "fork_child"):
        r = report.get("shared_fd").find(case=case)
        assert r["peer_after_first"].startswith("EAGAIN") and r["peer_state_first"] == "ESTABLISHED"
        assert r["peer_after_second"].startswith("b''") and r["peer_state_second"] == "CLOSE_WAIT"


@linux_only
def test_lingering_close_keeps_the_response_from_the_reset(report: Report) -> None:
    t = report.get("lingering_close")
    plain, linger = t.find(case="close_unread"), t.find(case="shutdown_drain_close")
    assert plain["unread_b"] == len(lingering.PIPELINED) and plain["client_end"] == "ECONNRESET"
    assert plain["client_read_b"] < plain["response_b"]  # the rest died with the RST
    assert linger["unread_b"] == 0 and linger["client_end"] == "EOF"
    assert linger["client_read_b"] == linger["response_b"]


@linux_only
def test_time_waits_left_behind(report: Report) -> None:
    left = report.get("left_behind").find(what="time_wait_sockets")["count"]
    expected = 3 if twrules.tw_created(kernel.sysctl_int("net.ipv4.tcp_max_tw_buckets")) else 0
    assert left == expected


def test_sigpipe_is_ignored_here_and_kills_a_default_child(report: Report) -> None:
    if not hasattr(signal, "SIGPIPE"):
        pytest.skip("no SIGPIPE on this platform")
    t = report.get("sigpipe")
    assert t.find(process="this_process")["result"] == "SIG_IGN"
    if kernel.IS_LINUX:
        expected = f"killed by signal {int(signal.SIGPIPE)} (SIGPIPE)"
        assert t.find(process="child_sig_dfl")["result"] == expected


def test_findings_and_summary_come_from_the_rows(report: Report) -> None:
    assert report.summary.startswith("recv after close: returned b''")
    assert any("SO_LINGER {1, 0}" in f for f in report.findings)
    assert all(ep["local"].startswith("127.0.0.1:") for ep in report.endpoints)


def test_two_runs_agree_on_every_exact_column(report: Report) -> None:
    again = close.run(close.Params())
    for t in report.tables:
        exact = [c.key for c in t.columns if c.kind == "exact"]
        a = [{k: r[k] for k in exact} for r in t.rows]
        b = [{k: r[k] for k in exact} for r in again.get(t.id).rows]
        assert a == b, t.id


@pytest.mark.parametrize("deadline", [0.05, 0.3])
def test_short_deadline_stops_cleanly_and_soon(deadline: float) -> None:
    """The project's bound: exit within 0.25 s of --deadline. At 0.3 s the SO_LINGER
    {1, 1 s} close() is still blocked in its worker; the probe resets its peer so that
    close() returns now, instead of the cleanup waiting out the linger time (1.1 s)."""
    t0 = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        close.run(close.Params(deadline=deadline))
    assert time.monotonic() - t0 < deadline + 0.25


@pytest.mark.parametrize("after", [0.3, 0.6])
def test_ctrl_c_during_the_lingering_close_exits_130_at_once(after: float) -> None:
    """SIGINT while the SO_LINGER {1, 1 s} close() blocks in its worker: exit 130 within
    a fraction of a second, not after the linger time."""
    code, err, took = interrupt(["close"], after)
    assert code == 130, err
    assert "interrupted" in err
    assert took < 0.5


def test_ipv6_loopback_when_available() -> None:
    if not has_ipv6_loopback():
        pytest.skip("no IPv6 loopback here")
    r = close.run(close.Params(host="::1"))
    assert all(ep["local"].startswith("[::1]:") for ep in r.endpoints)
    recv2 = r.get("steps").find(scenario="unread_data", step=5)
    assert recv2["call"] == "recv(1024) #2"
    if kernel.IS_LINUX:
        assert (recv2["result"], recv2["errno"]) == ("raised ConnectionResetError", "ECONNRESET")


def test_cli_json() -> None:
    out, err = io.StringIO(), io.StringIO()
    code = main(["close", "--json"], stdout=out, stderr=err)
    assert code == 0, err.getvalue()
    doc = json.loads(out.getvalue())
    assert doc["probe"] == "close" and doc["schema"] == 2
    assert [t["id"] for t in doc["tables"]] == [
        "steps",
        "closers",
        "fin_wait2",
        "leftovers",
        "shared_fd",
        "lingering_close",
        "sigpipe",
        "left_behind",
    ]
    err = io.StringIO()
    code = main(["close", "--deadline", "0"], stdout=io.StringIO(), stderr=err)
    assert code == 2 and len(err.getvalue().strip().splitlines()) == 1


def test_netns_tcp_fin_timeout_5_sets_the_orphan_timer_only(netns: Any) -> None:
    """In a namespace with tcp_fin_timeout 5: the orphaned FIN_WAIT2 follows it (by the
    kernel's rule, which the table states), the half-closed one still has no timer."""
    code, d, err = netns.sockprobe_json("close", sysctls={"net.ipv4.tcp_fin_timeout": 5})
    assert code == 0 and d is not None, err
    rows = {r["case"]: r for r in next(t for t in d["tables"] if t["id"] == "fin_wait2")["rows"]}
    assert rows["orphan"]["rule_s"] == 5.0 and abs(rows["orphan"]["left_s"] - 5.0) <= 1.0
    assert rows["half_closed"]["timer"] == "none"
    assert any("tcp_fin_timeout = 5: 5.0 s)" in f for f in d["findings"])


def test_netns_tcp_fin_timeout_90_keeps_the_orphan_on_a_keepalive_timer_first(netns: Any) -> None:
    """Above 60 s the orphan's first timer is a keepalive for (timeout - 60 s), as the
    rule states; the rest is spent as a FIN_WAIT2 timewait socket."""
    code, d, err = netns.sockprobe_json("close", sysctls={"net.ipv4.tcp_fin_timeout": 90})
    assert code == 0 and d is not None, err
    rows = {r["case"]: r for r in next(t for t in d["tables"] if t["id"] == "fin_wait2")["rows"]}
    orphan = rows["orphan"]
    assert orphan["timer"] == "keepalive" and orphan["rule_s"] == 30.0
    assert abs(orphan["left_s"] - 30.0) <= 1.0
    assert any("= 90: 30.0 s, then 60 s as a FIN_WAIT2 timewait socket" in f for f in d["findings"])


def test_netns_loopback_down_is_exit_3_naming_the_cause(netns: Any) -> None:
    """With `lo` down the connects fail (ENETUNREACH): no result, exit 3, one line."""
    code, d, err = netns.sockprobe_json("close", lo_up=False)
    assert code == 3 and d is None, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "ENETUNREACH" in lines[0] and "loopback" in lines[0]
