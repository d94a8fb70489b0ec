"""sockprobe reuseaddr on real loopback sockets: the Linux bind rules it demonstrates.

Expectations that depend on the kernel (tcp_tw_reuse, tcp_migrate_req, tcp_fin_timeout,
bindv6only) are read from it; the network-namespace test changes them where the process
may (root, `unshare -n`) and checks that the probe's answers follow.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import time
from typing import Any

import pytest
from helpers import has_ipv6_loopback, labelled

from sockprobe import kernel
from sockprobe.cli import main
from sockprobe.lab import Deadline, Lab, resolve_host
from sockprobe.probes import reuseaddr
from sockprobe.status import DeadlineExceeded, UsageError

linux_only = pytest.mark.skipif(not kernel.IS_LINUX, reason="TIME_WAIT is read from /proc")

Row = dict[str, Any]


def _rows(doc: dict[str, Any], prefix: str) -> list[Row]:
    table = next(t for t in doc["tables"] if t["title"].startswith(prefix))
    return labelled(table)


def _matrix(doc: dict[str, Any], **want: Any) -> list[Row]:
    return [r for r in _rows(doc, "Restart matrix") if all(r[k] == v for k, v in want.items())]


def _cli_json(*args: str) -> tuple[int, dict[str, Any], str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["reuseaddr", *args, "--json"])
    return code, json.loads(out.getvalue()) if code == 0 else {}, err.getvalue()


@pytest.fixture(scope="module")
def run() -> tuple[int, dict[str, Any], str]:
    """One run through the CLI, in-process: every test below reads its JSON."""
    return _cli_json()


@pytest.fixture(scope="module")
def doc(run: tuple[int, dict[str, Any], str]) -> dict[str, Any]:
    code, d, err = run
    assert code == 0, err
    return d


def test_cli_json_schema_and_no_progress_without_wait(run: tuple[int, dict[str, Any], str]) -> None:
    code, d, err = run
    assert code == 0 and err == "", err
    assert d["probe"] == "reuseaddr" and d["schema"] == 1
    assert "progress" not in d["params"]
    assert d["summary"]
    for t in d["tables"]:
        assert all(len(r) == len(t["columns"]) for r in t["rows"])


@linux_only
def test_server_first_close_needs_reuseaddr_on_both_sockets(doc: dict[str, Any]) -> None:
    base = dict(
        {"closes first": "server", "old listener": "closed", "SO_REUSEPORT both": "no"},
        close="FIN",
    )
    expected = {("no", "no"): "EADDRINUSE", ("no", "yes"): "EADDRINUSE"}
    expected.update({("yes", "no"): "EADDRINUSE", ("yes", "yes"): "ok"})
    for (old, new), result in expected.items():
        (row,) = _matrix(doc, **base, **{"SO_REUSEADDR old": old, "SO_REUSEADDR new": new})
        assert row["bind"] == result, row
        # The server closed first, so the TIME_WAIT sits on the server's (listener's) port.
        assert row["TIME_WAIT on port"] == 1, row
        assert row["TIME_WAIT on client port"] == 0, row
        assert 50.0 <= row["TIME_WAIT left"] <= 60.5, row


@linux_only
def test_client_first_close_rebinds_without_any_option(doc: dict[str, Any]) -> None:
    rows = _matrix(doc, **{"closes first": "client", "old listener": "closed"})
    assert len(rows) == 4
    for row in rows:
        assert row["bind"] == "ok", row
        assert row["TIME_WAIT on port"] == 0 and row["TIME_WAIT on client port"] == 1, row


def test_open_listener_blocks_the_bind_whatever_reuseaddr(doc: dict[str, Any]) -> None:
    rows = _matrix(doc, **{"old listener": "open", "SO_REUSEPORT both": "no"})
    assert len(rows) == 4
    assert {r["bind"] for r in rows} == {"EADDRINUSE"}
    # SO_REUSEPORT on both sockets (same user) is the one way to share a listening port.
    (rp,) = _matrix(doc, **{"old listener": "open", "SO_REUSEPORT both": "yes"})
    assert rp["bind"] == "ok"


@linux_only
def test_abortive_close_leaves_no_time_wait(doc: dict[str, Any]) -> None:
    (row,) = [r for r in _rows(doc, "Restart matrix") if r["close"].startswith("RST")]
    assert row["TIME_WAIT on port"] == 0 and row["TIME_WAIT on client port"] == 0
    assert row["bind"] == "ok" and row["SO_REUSEADDR new"] == "no"


@linux_only
def test_time_wait_rows_agree_with_proc_and_ss(doc: dict[str, Any]) -> None:
    """The probe counts with sock_diag; /proc/net/tcp and `ss` must see the same TIME_WAIT
    sockets for each row's connection (its 4-tuple from Endpoints). Only that connection
    is compared: once the probe is done, another process may reuse a freed port."""
    conns: dict[int, tuple[int, int]] = {}
    for ep in doc["endpoints"]:
        if ep["role"].startswith("row ") and ep["role"].endswith(" client"):
            index = int(ep["role"].split()[1])
            cport = int(ep["local"].rsplit(":", 1)[1])
            conns[index] = (int(ep["remote"].rsplit(":", 1)[1]), cport)
    rows = {r["#"]: r for r in _rows(doc, "Restart matrix")}
    assert len(conns) == len(rows)

    def expected(index: int) -> tuple[int, int]:
        r = rows[index]
        return r["TIME_WAIT on port"], r["TIME_WAIT on client port"]

    def counts(pairs: set[tuple[int, int]]) -> dict[int, tuple[int, int]]:
        return {
            i: (int((port, cport) in pairs), int((cport, port) in pairs))
            for i, (port, cport) in conns.items()
        }

    def from_proc() -> dict[int, tuple[int, int]]:
        # A set, because /proc/net/tcp is read in pieces while other processes churn
        # sockets, and one socket can then appear twice.
        tw = {(p.local[1], p.remote[1]) for p in kernel.proc_net_sockets("tcp") if p.state == 6}
        return counts(tw)

    def from_ss() -> dict[int, tuple[int, int]]:
        out = subprocess.run(
            ["ss", "-Htan", "state", "time-wait"], capture_output=True, text=True, timeout=10
        ).stdout
        tw = set()
        for line in out.splitlines():
            f = line.split()
            if len(f) >= 4:
                tw.add((int(f[2].rsplit(":", 1)[1]), int(f[3].rsplit(":", 1)[1])))
        return counts(tw)

    want = {i: expected(i) for i in rows}
    readers = [from_proc] + ([from_ss] if shutil.which("ss") else [])
    for read in readers:
        for _ in range(3):  # a read that skipped a row under churn gets a second chance
            got = read()
            if got == want:
                break
        assert got == want, read.__name__
    for p in kernel.proc_net_sockets("tcp"):
        if p.state == 6 and any((p.local[1], p.remote[1]) == c for c in conns.values()):
            assert 45.0 <= p.timer_s <= 60.5  # USER_HZ ticks converted to seconds


def test_v6only_decides_whether_0_0_0_0_is_taken(doc: dict[str, Any]) -> None:
    rows = _rows(doc, "IPV6_V6ONLY")
    if any(isinstance(r["bind 0.0.0.0"], dict) for r in rows):
        pytest.skip("no IPv6 here")
    by_set = {r["IPV6_V6ONLY set"]: r for r in rows}
    assert by_set["0"]["bind 0.0.0.0"] == "EADDRINUSE"
    assert by_set["1"]["bind 0.0.0.0"] == "ok"
    assert by_set["0"]["v6only (sock_diag)"] is False
    assert by_set["1"]["v6only (sock_diag)"] is True
    default = next(r for k, r in by_set.items() if k.startswith("default"))
    bindv6only = kernel.sysctl_int("net.ipv6.bindv6only")
    if bindv6only is not None:
        assert default["IPV6_V6ONLY (getsockopt)"] == bindv6only
        assert default["bind 0.0.0.0"] == ("ok" if bindv6only else "EADDRINUSE")
    assert {r["[::] socket"] for r in rows} == {"bound"}  # nothing listens on [::] by default


@linux_only
def test_time_wait_timer_is_not_tcp_fin_timeout_but_fin_wait2_is(doc: dict[str, Any]) -> None:
    rows = {r["state"]: r for r in _rows(doc, "Timers")}
    tw, fw2 = rows["TIME_WAIT"], rows["FIN_WAIT2"]
    # TCP_TIMEWAIT_LEN is 60 s; read just after the state was entered.
    assert 55.0 <= tw["timer left (/proc)"] <= 60.5
    assert abs(tw["timer left (/proc)"] - tw["timer left (sock_diag)"]) < 1.0
    fin = kernel.sysctl_int("net.ipv4.tcp_fin_timeout")
    if fin is not None and fin <= 60:
        assert abs(fw2["timer left (/proc)"] - fin) <= 1.5


@linux_only
def test_tcp_tw_reuse_applies_to_connect_after_the_delay(doc: dict[str, Any]) -> None:
    rows = _rows(doc, "tcp_tw_reuse")
    if isinstance(rows[0]["result"], dict):
        pytest.skip(rows[0]["result"]["n/a"])
    at_once, later = rows
    assert at_once["result"] == "EADDRNOTAVAIL"
    if kernel.sysctl_int("net.ipv4.tcp_tw_reuse") == 0:
        assert later["result"] == "EADDRNOTAVAIL"
    else:
        assert later["result"] == "ok" and later["got that port"] is True
        delay = (kernel.sysctl_int("net.ipv4.tcp_tw_reuse_delay") or 1000) / 1000
        assert later["after TIME_WAIT began"] >= delay


@linux_only
def test_reuseport_restart_resets_exactly_the_closed_listeners_queue(doc: dict[str, Any]) -> None:
    rows = {r["listener"]: r for r in _rows(doc, "SO_REUSEPORT restart")}
    if isinstance(rows.get("-", {}).get("reset (ECONNRESET)"), dict):
        pytest.skip(rows["-"]["reset (ECONNRESET)"]["n/a"])
    closed, kept = rows["closed"], rows["kept"]
    n = doc["params"]["clients"]
    assert closed["accept queue before close"] == n and kept["accept queue before close"] == n
    assert kept["reset (ECONNRESET)"] == 0 and kept["no answer or EOF"] == 0
    if kernel.sysctl_int("net.ipv4.tcp_migrate_req") == 1:
        assert closed["reset (ECONNRESET)"] == 0
        assert closed["served by the kept listener"] == n
    else:
        assert closed["reset (ECONNRESET)"] == n
        assert closed["served by the kept listener"] == 0
    assert kept["served by the kept listener"] == n


@linux_only
@pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback here")
def test_ipv6_host_and_wildcard_listen() -> None:
    r = reuseaddr.run(reuseaddr.Params(host="::1", wildcard_listen=True))
    d = r.to_dict()
    assert all(ep["local"].startswith("[") for ep in d["endpoints"])
    rows = {
        (x["SO_REUSEADDR old"], x["SO_REUSEADDR new"]): x
        for x in _matrix(
            d,
            **{"closes first": "server", "old listener": "closed", "SO_REUSEPORT both": "no"},
            close="FIN",
        )
    }
    assert rows[("no", "yes")]["bind"] == "EADDRINUSE" and rows[("yes", "yes")]["bind"] == "ok"
    v6 = _rows(d, "IPV6_V6ONLY")
    assert {x["[::] socket"] for x in v6} == {"listening"}
    by_set = {x["IPV6_V6ONLY set"]: x["bind 0.0.0.0"] for x in v6}
    assert by_set["0"] == "EADDRINUSE" and by_set["1"] == "ok"


def test_wait_reports_progress_and_binds_when_no_time_wait_is_left() -> None:
    """The waiting loop itself (60 s for a real TIME_WAIT is too long for a test): a port
    with nothing on it is free at once, and the callback still hears the end."""
    calls: list[tuple[float, float, bool]] = []
    host = resolve_host("127.0.0.1")
    with Lab(host, Deadline(5.0)) as lab:
        ctx = reuseaddr.Ctx(lab, host, "tcp", reuseaddr.Watch(host.family, "tcp"))
        probe = lab.open_socket()
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        lab.close(probe)
        sc = reuseaddr.MATRIX[0]
        o = reuseaddr.Outcome(1, sc, port, 0, 0, None, [], "EADDRINUSE")
        w = reuseaddr._wait_out(ctx, o, lambda *args: calls.append(args))
    assert w.bind == "ok" and w.tw_after == 0
    assert calls and calls[-1][2] is True


def test_wait_with_a_short_deadline_fails_early_and_says_so() -> None:
    t0 = time.monotonic()
    with pytest.raises(DeadlineExceeded, match="--deadline"):
        reuseaddr.run(reuseaddr.Params(wait=True, deadline=4.0))
    assert time.monotonic() - t0 < 4.5


def test_deadline_bounds_the_probe() -> None:
    t0 = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        reuseaddr.run(reuseaddr.Params(deadline=0.3))
    assert time.monotonic() - t0 < 1.5


@pytest.mark.parametrize("kwargs", [dict(clients=0), dict(clients=65), dict(deadline=-1)])
def test_bad_params_are_usage_errors(kwargs: dict[str, Any]) -> None:
    with pytest.raises(UsageError):
        reuseaddr.Params(**kwargs)


@pytest.mark.parametrize("args", [["--clients", "0"], ["--deadline", "-1"], ["--wait", "x"]])
def test_cli_bad_input_exits_2_with_one_line(args: list[str]) -> None:
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = main(["reuseaddr", *args])
    assert code == 2
    assert len(err.getvalue().strip().splitlines()) == 1 and "Traceback" not in err.getvalue()


def _netns_ok() -> bool:
    if not kernel.IS_LINUX or os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, timeout=10)
    return probe.returncode == 0


@pytest.mark.skipif(not _netns_ok(), reason="needs root and unshare -n")
def test_in_a_netns_the_sysctls_change_the_answers() -> None:
    """In a fresh network namespace (its own sysctls): tcp_migrate_req=1 moves the closed
    listener's queue to the kept one, tcp_fin_timeout=5 shortens FIN_WAIT2 but not
    TIME_WAIT, tcp_tw_reuse=0 stops connect() from taking over a TIME_WAIT."""
    script = (
        "ip link set lo up && "
        "echo 1 > /proc/sys/net/ipv4/tcp_migrate_req && "
        "echo 5 > /proc/sys/net/ipv4/tcp_fin_timeout && "
        "echo 0 > /proc/sys/net/ipv4/tcp_tw_reuse && "
        f"exec {sys.executable} -m sockprobe reuseaddr --json"
    )
    p = subprocess.run(
        ["unshare", "-n", "sh", "-c", script], capture_output=True, text=True, timeout=60
    )
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert d["environment"]["sysctls"]["net.ipv4.tcp_migrate_req"] == 1
    n = d["params"]["clients"]
    group = {r["listener"]: r for r in _rows(d, "SO_REUSEPORT restart")}
    assert group["closed"]["reset (ECONNRESET)"] == 0
    assert group["closed"]["served by the kept listener"] == n
    assert group["kept"]["served by the kept listener"] == n
    timers = {r["state"]: r for r in _rows(d, "Timers")}
    assert abs(timers["FIN_WAIT2"]["timer left (/proc)"] - 5) <= 1.0
    assert timers["TIME_WAIT"]["timer left (/proc)"] >= 55.0
    tw = _rows(d, "tcp_tw_reuse")
    assert [r["result"] for r in tw] == ["EADDRNOTAVAIL", "EADDRNOTAVAIL"]
    # The restart rule itself does not depend on any of these settings.
    (row,) = _matrix(
        d,
        **{"closes first": "server", "old listener": "closed", "SO_REUSEPORT both": "no"},
        close="FIN",
        **{"SO_REUSEADDR old": "no", "SO_REUSEADDR new": "yes"},
    )
    assert row["bind"] == "EADDRINUSE"
