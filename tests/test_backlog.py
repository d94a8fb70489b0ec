"""sockprobe backlog on real loopback listeners: what listen(n) admits, measured.

Expectations come from the kernel's own settings (net.core.somaxconn is read, never
assumed). Timing-dependent values (host-wide counters, retransmission times) are asserted
with wide margins or only as lower bounds, since other tests run on this host at once.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from typing import Any

import pytest
from helpers import has_ipv6_loopback, labelled

from sockprobe import kernel
from sockprobe.cli import main
from sockprobe.probes import backlog
from sockprobe.status import DeadlineExceeded, UsageError

linux_only = pytest.mark.skipif(
    not kernel.IS_LINUX, reason="TCP_INFO, sock_diag and somaxconn are Linux's"
)
BACKLOGS = (0, 1, 5, 64)


def _rows(report: Any, prefix: str) -> list[dict[str, Any]]:
    table = next(t for t in report.tables if t.title.startswith(prefix))
    return labelled(table)


def _somaxconn() -> int:
    value = kernel.sysctl_int("net.core.somaxconn")
    assert value is not None
    return value


@pytest.fixture(scope="module")
def report() -> Any:
    return backlog.run(backlog.Params(backlogs=BACKLOGS))


@linux_only
def test_established_is_min_backlog_somaxconn_plus_one(report: Any) -> None:
    somaxconn = _somaxconn()
    rows = _rows(report, "What listen(n) admitted")
    assert [r["requested backlog"] for r in rows] == list(BACKLOGS)
    for r in rows:
        b = r["requested backlog"]
        expected = min(b, somaxconn) + 1
        assert r["effective backlog"] == min(b, somaxconn)
        assert r["connects"] == min(b, somaxconn) + backlog.EXTRA
        assert r["established"] == expected, r
        # Nobody accepted, so the rest are all still waiting on a dropped SYN.
        assert r["connecting (SYN_SENT)"] == r["connects"] - expected, r
        assert r["other"] == 0
        assert r["accepted later"] == expected


@linux_only
def test_listener_queue_as_the_kernel_reports_it(report: Any) -> None:
    admitted = {r["requested backlog"]: r["established"] for r in _rows(report, "What")}
    for r in _rows(report, "The listener"):
        b = r["requested backlog"]
        assert r["accept queue (sock_diag Recv-Q)"] == admitted[b]
        assert r["rx_queue (/proc/net/tcp)"] == admitted[b]
        assert r["queue limit (sock_diag Send-Q)"] == min(b, _somaxconn())
        # The listener's own drop counter: one per dropped SYN, none retransmitted yet,
        # unless a very slow host took over a second, which the probe must then say.
        late = any(
            f.startswith(f"listen({b}): the waiting clients had already retransmitted")
            for f in report.findings
        )
        if late:
            assert r["listener drops (sk_drops)"] > backlog.EXTRA - 1
        else:
            assert r["listener drops (sk_drops)"] == backlog.EXTRA - 1
        # Host-wide counters only grow; other traffic may add to them.
        assert r["ListenOverflows Δ (host-wide)"] >= backlog.EXTRA - 1
        assert r["ListenDrops Δ (host-wide)"] >= backlog.EXTRA - 1
        assert 0 <= r["settle"] < 1000


@linux_only
def test_no_refusal_without_abort_on_overflow(report: Any) -> None:
    if kernel.sysctl_int("net.ipv4.tcp_abort_on_overflow") != 0:
        pytest.skip("tcp_abort_on_overflow is set on this host")
    assert all(r["refused (RST)"] == 0 for r in _rows(report, "What"))


@linux_only
def test_findings_and_summary_quote_the_measured_numbers(report: Any) -> None:
    assert any(f.startswith("listen(5) admitted 6 of 13 connects") for f in report.findings)
    assert any("the other 7 SYNs were dropped" in f for f in report.findings)
    assert report.summary.startswith("listen(0) admitted 1, listen(1) 2, listen(5) 6")
    d = report.to_dict()
    settings = d["environment"]["sysctls"]
    for name in backlog.SYSCTLS[:4]:  # the two tcp_syn_* may be absent on old kernels
        assert name in settings
    assert any(ep["role"].startswith("listener") for ep in d["endpoints"])


@linux_only
def test_nothing_is_left_in_the_kernel_afterwards() -> None:
    """No listener, client or TIME_WAIT entry on the listener addresses a run used,
    checked at once (a freed port may be reused by anyone later)."""
    from sockprobe.kernel import sockdiag

    t0 = time.monotonic()
    r = backlog.run(backlog.Params(backlogs=(0, 3)))
    dump = sockdiag.dump(socket.AF_INET, socket.IPPROTO_TCP, meminfo=False)
    # TIME_WAIT lasts 60 s; an entry with less left than that minus this run's age was
    # left by an earlier user of the same port number (other tests run in parallel).
    oldest_ours_ms = 60_000 - (time.monotonic() - t0 + 1.0) * 1000
    dump = [s for s in dump if not (s.state == 6 and s.expires_ms < oldest_ours_ms)]
    addrs = {
        ("127.0.0.1", int(ep["local"].rsplit(":", 1)[1]))
        for ep in r.endpoints
        if ep["role"].startswith("listener")
    }
    assert len(addrs) == 2
    left = [s for s in dump if s.local in addrs or s.remote in addrs]
    assert left == []


@linux_only
def test_backlog_above_somaxconn_is_clamped() -> None:
    somaxconn = _somaxconn()
    r = backlog.run(backlog.Params(backlogs=(somaxconn + 1,), connects=3))
    row = _rows(r, "What")[0]
    assert row["effective backlog"] == somaxconn
    assert row["clamped"] is True
    assert row["established"] == 3  # fewer connects than the queue holds
    assert any("was clamped without an error" in f for f in r.findings)


@linux_only
def test_retry_wait_lets_waiting_clients_in_by_syn_retransmission() -> None:
    r = backlog.run(backlog.Params(backlogs=(1,), retry_wait=1.4))
    row = _rows(r, "After accept()")[0]
    assert row["left in SYN_SENT"] == 7
    accounted = (
        row["got in (accepted)"]
        + row["ESTABLISHED on client side only"]
        + row["refused (RST)"]
        + row["timed out"]
        + row["still SYN_SENT"]
    )
    assert accounted == 7
    # The first SYN retransmission comes about 1 s after connect(): nobody gets in before.
    assert row["got in (accepted)"] >= 1
    first = float(row["accepted at"].split(",")[0].split()[0])
    assert 0.8 <= first <= 1.4
    seen = float(row["SYN retransmissions seen at (median)"].split(",")[0])
    assert 0.8 <= seen <= 1.4


@linux_only
def test_soft_fd_limit_is_raised_for_the_run_and_restored() -> None:
    resource = pytest.importorskip("resource")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1024:
        pytest.skip("hard RLIMIT_NOFILE below 1024")
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    try:
        r = backlog.run(backlog.Params(backlogs=(300,)))
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (256, hard)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    row = _rows(r, "What")[0]
    assert row["connects"] == 308 and row["established"] == 301
    assert any("soft limit was raised from 256" in n for n in r.notes)


@linux_only
def test_too_low_hard_limit_is_reported_and_the_largest_sweep_runs() -> None:
    resource = pytest.importorskip("resource")

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (200, 200))

    proc = subprocess.run(
        [sys.executable, "-m", "sockprobe", "backlog", "--backlog", "1024", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=low_limit,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    row = labelled(doc["tables"][0])[0]
    assert 1 <= row["connects"] < 200
    assert row["established"] == row["connects"]
    assert any("RLIMIT_NOFILE is too low" in f and "hard 200" in f for f in doc["findings"])


@linux_only
def test_ipv6_loopback_when_available() -> None:
    if not has_ipv6_loopback():
        pytest.skip("no IPv6 loopback here")
    r = backlog.run(backlog.Params(host="::1", backlogs=(2,)))
    row = _rows(r, "What")[0]
    assert row["established"] == 3
    assert all(
        ep["remote" if "clients" in ep["role"] else "local"].startswith("[::1]:")
        for ep in r.endpoints
    )


def test_deadline_bounds_a_huge_run() -> None:
    resource = pytest.importorskip("resource")
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    t0 = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        backlog.run(backlog.Params(backlogs=(4096,), connects=15_000, deadline=0.15))
    assert time.monotonic() - t0 < 3.0
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == before


@linux_only
def test_a_retry_wait_cut_short_by_the_deadline_is_an_error_not_a_shorter_wait() -> None:
    # Two rows of 1.5 s fit in 3.01 s only without the connects and settles around them,
    # so the second row's watch is cut; listen(1) leaves 7 clients waiting and at most 2
    # get in at the 1 s retransmission, so clients are still pending when it is cut.
    t0 = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        backlog.run(backlog.Params(backlogs=(1, 1), retry_wait=1.5, deadline=3.01))
    assert time.monotonic() - t0 < 5.0


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(backlogs=()),
        dict(backlogs=(-1,)),
        dict(backlogs=(2**31,)),
        dict(connects=0),
        dict(retry_wait=-1.0),
        dict(retry_wait=float("nan")),
        dict(settle=1.0),
        dict(settle=0.0),
        dict(retry_wait=10.0, deadline=30.0),  # 4 rows x 10 s cannot fit in 30 s
    ],
)
def test_bad_params_are_usage_errors(kwargs: dict[str, Any]) -> None:
    with pytest.raises(UsageError):
        backlog.Params(**kwargs)


@pytest.mark.parametrize(
    "args",
    [
        ["backlog", "--backlog", "-1"],
        ["backlog", "--connects", "0"],
        ["backlog", "--settle", "2"],
        ["backlog", "--retry-wait", "100"],
        ["backlog", "--backlog", "many"],
    ],
)
def test_cli_bad_input_exits_2_with_one_line(
    capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    code = main(args)
    _out, err = capsys.readouterr()
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("sockprobe:")


@linux_only
def test_cli_json(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["backlog", "--backlog", "2", "--backlog", "3", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    doc = json.loads(out)
    assert doc["probe"] == "backlog"
    admitted = doc["tables"][0]
    col = admitted["columns"].index("established")
    assert [row[col] for row in admitted["rows"]] == [3, 4]


# -- in a network namespace of its own (root only) -----------------------------------------------
def _netns(script: str) -> subprocess.CompletedProcess[str]:
    if not kernel.IS_LINUX or os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1)")
    probe = subprocess.run(
        ["unshare", "-n", "sh", "-c", "ip link set lo up"], capture_output=True, timeout=10
    )
    if probe.returncode != 0:
        pytest.skip(f"unshare -n failed here: {probe.stderr.decode().strip()}")
    return subprocess.run(
        ["unshare", "-n", "sh", "-c", script], capture_output=True, text=True, timeout=60
    )


def test_namespace_somaxconn_16_admits_17() -> None:
    proc = _netns(
        "ip link set lo up && sysctl -qw net.core.somaxconn=16 && "
        f"exec {sys.executable} -m sockprobe backlog --backlog 128 --json"
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["environment"]["sysctls"]["net.core.somaxconn"] == 16
    row = labelled(doc["tables"][0])[0]
    assert row["requested backlog"] == 128
    assert row["effective backlog"] == 16
    assert row["clamped"] is True
    assert row["established"] == 17
    assert row["connects"] == 16 + backlog.EXTRA
    assert row["connecting (SYN_SENT)"] == backlog.EXTRA - 1
    assert any("listen(128) admitted 17" in f for f in doc["findings"])


def test_namespace_abort_on_overflow_still_leaves_clients_hanging() -> None:
    proc = _netns(
        "ip link set lo up && sysctl -qw net.ipv4.tcp_abort_on_overflow=1 && "
        f"exec {sys.executable} -m sockprobe backlog --backlog 3 --json"
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["environment"]["sysctls"]["net.ipv4.tcp_abort_on_overflow"] == 1
    row = labelled(doc["tables"][0])[0]
    assert row["established"] == 4
    # Whatever happened is accounted for, and at least some SYNs were simply dropped:
    # the RST of abort_on_overflow never answers a SYN.
    assert row["connecting (SYN_SENT)"] + row["refused (RST)"] == row["connects"] - 4
    assert row["connecting (SYN_SENT)"] >= 1
    assert any("tcp_abort_on_overflow is 1 here" in f for f in doc["findings"])
