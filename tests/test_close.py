"""sockprobe close on real loopback connections: what each side observes."""

from __future__ import annotations

import json
import signal
import time

import pytest
from helpers import has_ipv6_loopback

from sockprobe import kernel
from sockprobe.cli import main
from sockprobe.probes import close
from sockprobe.report import NA
from sockprobe.status import DeadlineExceeded

linux_only = pytest.mark.skipif(not kernel.IS_LINUX, reason="TCP_INFO states: Linux")


def _steps(report):
    t = report.tables[0]
    return [dict(zip(t.columns, row)) for row in t.rows]


def _scenario(report, prefix):
    return [
        (r["side"], r["call"], r["result"], r["errno"], r["TCP state after"])
        for r in _steps(report)
        if r["scenario"].startswith(prefix)
    ]


def _closers(report):
    t = report.tables[1]
    return {row[0][:2]: dict(zip(t.columns, row)) for row in t.rows}


@pytest.fixture(scope="module")
def report():
    return close.run(close.Params())


@linux_only
def test_recv_after_peer_close_returns_empty_bytes_every_time(report):
    rows = _scenario(report, "1.")
    assert rows[0][:3] == ("server", "close()", "returned None")
    reads = rows[1:]
    assert len(reads) == 3
    assert all(r[2:] == ("returned b''", None, "CLOSE_WAIT") for r in reads)


@linux_only
def test_first_send_after_close_succeeds_second_raises_epipe(report):
    rows = _scenario(report, "2.")
    n = len(close.REQUEST)
    assert rows[1] == ("client", f"send({n} B) #1", f"returned {n}", None, "CLOSE")  # RST back
    assert rows[2] == ("client", f"send({n} B) #2", "raised BrokenPipeError", "EPIPE", "CLOSE")
    # The FIN came before the RST, so a recv now is end-of-file, not an error.
    assert rows[3][2:4] == ("returned b''", None)


@linux_only
def test_close_with_unread_data_resets_once_after_the_data(report):
    rows = _scenario(report, "3.")
    client = [r for r in rows if r[0] == "client"][1:]
    assert [(r[2], r[3]) for r in client] == [
        (f"returned {close.REPLY!r}", None),  # data that arrived before the RST comes first
        ("raised ConnectionResetError", "ECONNRESET"),  # the reset, reported once
        ("returned b''", None),
        ("raised BrokenPipeError", "EPIPE"),
    ]
    c = _closers(report)["3."]
    assert c["unread at close"] == len(close.REQUEST)
    # Every closer's unread count is read (SIOCINQ) at its close, not assumed.
    others = {k: v["unread at close"] for k, v in _closers(report).items() if k != "3."}
    assert others == {"1.": 0, "2.": 0, "4.": 0, "5.": 0}
    assert c["peer received"] == "RST (peer in CLOSE)"


@linux_only
def test_linger_zero_aborts_with_rst_and_leaves_no_time_wait(report):
    rows = _scenario(report, "4.")
    assert rows[1][2:] == ("raised ConnectionResetError", "ECONNRESET", "CLOSE")
    assert rows[2][2:4] == ("returned b''", None)
    c = _closers(report)
    assert c["4."]["peer received"] == "RST (peer in CLOSE)"
    if isinstance(c["4."]["TIME_WAIT (closer)"], NA):
        pytest.skip("sock_diag unavailable")
    assert c["4."]["TIME_WAIT (closer)"] == 0
    # ... whereas a plain close() leaves the closer in TIME_WAIT.
    assert c["1."]["peer received"] == "FIN (peer in CLOSE_WAIT)"
    assert c["1."]["TIME_WAIT (closer)"] == 1
    assert c["1."]["TIME_WAIT (peer)"] == 0
    # The orphan that answered with RST (scenario 2) is gone, no TIME_WAIT either.
    assert (c["2."]["TIME_WAIT (closer)"], c["2."]["TIME_WAIT (peer)"]) == (0, 0)


@linux_only
def test_half_close_peer_reads_eof_and_can_still_reply(report):
    rows = _scenario(report, "5.")
    assert rows[0] == ("client", "shutdown(SHUT_WR)", "returned None", None, "FIN_WAIT2")
    assert rows[1] == ("server", "recv(1024)", "returned b''", None, "CLOSE_WAIT")
    assert rows[2][:3] == ("server", f"send({close.REPLY!r})", f"returned {len(close.REPLY)}")
    assert rows[3][2] == f"returned {close.REPLY!r}"
    assert rows[4][2:4] == ("raised BrokenPipeError", "EPIPE")
    c = _closers(report)["5."]
    assert c["closer"] == "client" and c["peer received"] == "FIN (peer in CLOSE_WAIT)"
    if not isinstance(c["TIME_WAIT (closer)"], NA):
        assert c["TIME_WAIT (closer)"] == 1


def test_sigpipe_is_ignored_here_and_kills_a_default_child(report):
    if not hasattr(signal, "SIGPIPE"):
        pytest.skip("no SIGPIPE on this platform")
    rows = _scenario(report, "6.")
    assert rows[0][2] == "SIG_IGN"
    if kernel.IS_LINUX:
        assert rows[1][2] == f"killed by signal {int(signal.SIGPIPE)} (SIGPIPE)"


def test_findings_and_summary_come_from_the_rows(report):
    assert report.summary.startswith("recv after close: returned b''")
    assert any("SO_LINGER {1, 0}" in f for f in report.findings)
    assert all(ep["local"].startswith("127.0.0.1:") for ep in report.endpoints)
    assert not any(t.volatile for t in report.tables)  # every cell is deterministic


def test_two_runs_give_identical_tables(report):
    again = close.run(close.Params())
    assert [t.rows for t in again.tables] == [t.rows for t in report.tables]


def test_short_deadline_stops_cleanly_and_soon():
    t0 = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        close.run(close.Params(deadline=0.001))
    assert time.monotonic() - t0 < 1.0


def test_ipv6_loopback_when_available():
    if not has_ipv6_loopback():
        pytest.skip("no IPv6 loopback here")
    r = close.run(close.Params(host="::1"))
    assert all(ep["local"].startswith("[::1]:") for ep in r.endpoints)
    recv2 = _scenario(r, "3.")[4]
    assert recv2[1] == "recv(1024) #2"
    if kernel.IS_LINUX:
        assert recv2[2:4] == ("raised ConnectionResetError", "ECONNRESET")


def test_cli_json(capsys):
    code = main(["close", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    doc = json.loads(out)
    assert doc["probe"] == "close" and len(doc["tables"]) == 2
    code = main(["close", "--deadline", "0"])
    _, err = capsys.readouterr()
    assert code == 2 and len(err.strip().splitlines()) == 1
