"""sockprobe reuseaddr on real loopback sockets: the Linux bind and TIME_WAIT rules it
demonstrates, read by table id and column key.

Expectations that depend on the kernel (tcp_tw_reuse, tcp_migrate_req, tcp_fin_timeout,
bindv6only, tcp_max_tw_buckets, tcp_rfc1337, tcp_timestamps) are read from it; the
network-namespace tests change them (root, `unshare -n`) and check that both the
measurement and the sentence describing it follow.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import time
from typing import Any

import pytest
from helpers import has_ipv6_loopback

from sockprobe import kernel
from sockprobe.cli import main
from sockprobe.kernel import timewait as twrules
from sockprobe.lab import Deadline, Lab, resolve_host
from sockprobe.probes import reuseaddr
from sockprobe.probes.reuseaddr import common, matrix, wait
from sockprobe.status import DeadlineExceeded, UsageError

linux_only = pytest.mark.skipif(not kernel.IS_LINUX, reason="TIME_WAIT is read from sock_diag")

Doc = dict[str, Any]
Row = dict[str, Any]


def table(doc: Doc, tid: str) -> dict[str, Any]:
    return next(t for t in doc["tables"] if t["id"] == tid)


def rows(doc: Doc, tid: str, **want: Any) -> list[Row]:
    return [r for r in table(doc, tid)["rows"] if all(r.get(k) == v for k, v in want.items())]


def one(doc: Doc, tid: str, **want: Any) -> Row:
    (r,) = rows(doc, tid, **want)
    return r


def _cli_json(*args: str) -> tuple[int, Doc, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(["reuseaddr", *args, "--json"], stdout=out, stderr=err)
    return code, json.loads(out.getvalue()) if code == 0 else {}, err.getvalue()


@pytest.fixture(scope="module")
def run() -> tuple[int, Doc, str]:
    """One run through the CLI, in-process: every test below reads its JSON."""
    return _cli_json()


@pytest.fixture(scope="module")
def doc(run: tuple[int, Doc, str]) -> Doc:
    code, d, err = run
    assert code == 0, err
    return d


SERVER_FIN = dict(closes_first="server", close="fin", reuseport=False, old_listener="closed")


def test_cli_json_schema_2_and_stable_keys(run: tuple[int, Doc, str]) -> None:
    code, d, err = run
    assert code == 0 and err == "", err
    assert d["probe"] == "reuseaddr" and d["schema"] == 2
    assert "progress" not in d["params"]
    assert d["summary"]
    ids = [t["id"] for t in d["tables"]]
    assert ids == [
        "matrix",
        "wildcard",
        "v6only",
        "timers",
        "time_wait",
        "tw_reuse",
        "reuseport_restart",
        "reuseport_user",
        "left_behind",
    ]
    for t in d["tables"]:
        keys = [c["key"] for c in t["columns"]]
        seen = {tuple(r[k] for k in t["keys"]) for r in t["rows"]}
        assert len(seen) == len(t["rows"]), t["id"]  # rows unique by their keys
        for r in t["rows"]:
            assert set(r) - {"na"} == set(keys)
            for k, reason in r.get("na", {}).items():
                assert r[k] is None and reason


@linux_only
def test_server_first_close_needs_reuseaddr_on_both_sockets(doc: Doc) -> None:
    if twrules.tw_created(kernel.sysctl_int("net.ipv4.tcp_max_tw_buckets")) is False:
        pytest.skip("tcp_max_tw_buckets is 0 here (the namespace test covers it)")
    expected = {(False, False): "EADDRINUSE", (False, True): "EADDRINUSE"}
    expected.update({(True, False): "EADDRINUSE", (True, True): "ok"})
    for (old, new), result in expected.items():
        row = one(doc, "matrix", **SERVER_FIN, old_reuseaddr=old, new_reuseaddr=new)
        assert row["bind"] == result, row
        # The server closed first, so the TIME_WAIT sits on the server's (listener's) port.
        assert row["tw_on_port"] == 1 and row["tw_on_client_port"] == 0, row
        assert 50.0 <= row["tw_left_s"] <= 60.5, row


@linux_only
def test_client_first_close_rebinds_without_any_option(doc: Doc) -> None:
    found = rows(doc, "matrix", closes_first="client", old_listener="closed")
    assert len(found) == 4
    for row in found:
        assert row["bind"] == "ok", row
        assert row["tw_on_port"] == 0 and row["tw_on_client_port"] == 1, row
        assert "client's port" in row["why"]


def test_open_listener_blocks_the_bind_whatever_reuseaddr(doc: Doc) -> None:
    found = rows(doc, "matrix", old_listener="open", reuseport=False)
    assert len(found) == 4
    assert {r["bind"] for r in found} == {"EADDRINUSE"}
    # SO_REUSEPORT on both sockets (same user) is the one way to share a listening port.
    assert one(doc, "matrix", old_listener="open", reuseport=True)["bind"] == "ok"


@linux_only
def test_abortive_closes_leave_no_time_wait(doc: Doc) -> None:
    for row in rows(doc, "matrix", close="rst"):
        assert row["tw_on_port"] == 0 and row["tw_on_client_port"] == 0, row
        assert row["tw_left_s"] is None and "reset" in row["na"]["tw_left_s"]
    row = one(doc, "matrix", close="rst", old_listener="closed")
    assert row["bind"] == "ok" and row["new_reuseaddr"] is False


@linux_only
def test_time_wait_rows_agree_with_ss(doc: Doc) -> None:
    """The probe counts with sock_diag; `ss` must see the same TIME_WAIT sockets for each
    row's connection (its 4-tuple from Endpoints)."""
    if shutil.which("ss") is None:
        pytest.skip("ss is not installed")
    conns: dict[int, tuple[int, int]] = {}
    for ep in doc["endpoints"]:
        if ep["role"].startswith("row ") and ep["role"].endswith(" client"):
            index = int(ep["role"].split()[1])
            conns[index] = (int(ep["remote"].rsplit(":", 1)[1]), int(ep["local"].rsplit(":", 1)[1]))
    by_row = {r["row"]: r for r in table(doc, "matrix")["rows"]}
    assert len(conns) == len(by_row)
    want = {i: (r["tw_on_port"], r["tw_on_client_port"]) for i, r in by_row.items()}
    for _ in range(3):  # a read that skipped a row under churn gets a second chance
        out = subprocess.run(
            ["ss", "-Htan", "state", "time-wait"], capture_output=True, text=True, timeout=10
        ).stdout
        tw = set()
        for line in out.splitlines():
            f = line.split()
            if len(f) >= 4:
                tw.add((int(f[2].rsplit(":", 1)[1]), int(f[3].rsplit(":", 1)[1])))
        got = {i: (int((p, c) in tw), int((c, p) in tw)) for i, (p, c) in conns.items()}
        if got == want:
            break
    assert got == want


def test_wildcard_and_specific_share_until_one_listens(doc: Doc) -> None:
    for order in ("wildcard_first", "specific_first"):
        r = one(doc, "wildcard", order=order, reuseaddr=True)
        assert (r["bind_first"], r["bind_second"]) == ("ok", "ok"), r
        assert r["listen_specific"] == "ok" and r["listen_wildcard"] == "EADDRINUSE", r
        assert r["bind_third"] == "EADDRINUSE", r
    r = one(doc, "wildcard", order="wildcard_first", reuseaddr=False)
    assert r["bind_second"] == "EADDRINUSE" and r["listen_specific"] is None


def test_v6only_decides_whether_0_0_0_0_is_taken(doc: Doc) -> None:
    t = table(doc, "v6only")
    if any(r["bind_v4_wildcard"] is None for r in t["rows"]):
        pytest.skip("no IPv6 here")
    by = {r["v6only_set"]: r for r in t["rows"]}
    assert by["0"]["bind_v4_wildcard"] == "EADDRINUSE" and by["0"]["diag_v6only"] is False
    assert by["1"]["bind_v4_wildcard"] == "ok" and by["1"]["diag_v6only"] is True
    bindv6only = kernel.sysctl_int("net.ipv6.bindv6only")
    if bindv6only is not None:
        assert by["default"]["v6only"] == bindv6only
        assert by["default"]["bind_v4_wildcard"] == ("ok" if bindv6only else "EADDRINUSE")
        assert f"bindv6only = {bindv6only}" in by["default"]["why"]
    assert {r["socket"] for r in t["rows"]} == {"bound"}  # nothing listens on [::] by default


@linux_only
def test_time_wait_timer_is_not_tcp_fin_timeout_but_fin_wait2_is(doc: Doc) -> None:
    tw, fw2 = one(doc, "timers", step="time_wait"), one(doc, "timers", step="orphan_fin_wait2")
    if tw["state"] is None:
        pytest.skip(tw["na"]["state"])
    assert 55.0 <= tw["proc_left_s"] <= 60.5  # TCP_TIMEWAIT_LEN, read just after entry
    assert abs(tw["proc_left_s"] - tw["diag_left_s"]) < 1.0
    assert abs(fw2["proc_left_s"] - fw2["rule_s"]) <= 1.0


@linux_only
def test_time_wait_cases_follow_the_kernel(doc: Doc) -> None:
    sim = one(doc, "time_wait", case="simultaneous_close")
    if sim["rule"] == "both":
        assert (sim["tw_server"], sim["tw_client"]) == (1, 1), sim
        assert "CLOSING" in sim["result"]
    rst = one(doc, "time_wait", case="rst_in_time_wait")
    if rst["tw_before"]:
        rfc1337 = kernel.sysctl_int("net.ipv4.tcp_rfc1337")
        assert rst["tw_server"] == (1 if rfc1337 == 1 else 0), rst
        assert rst["rule"] == ("kept" if rfc1337 == 1 else "ended")
    syn = one(doc, "time_wait", case="syn_reopens")
    if syn["tw_before"]:
        assert syn["result"] == "ok" and syn["tw_server"] == 0, syn


@linux_only
def test_tw_reuse_rows_match_the_kernel_rule(doc: Doc) -> None:
    t = table(doc, "tw_reuse")
    if rows(doc, "tw_reuse", attempt="-"):
        pytest.skip(one(doc, "tw_reuse", attempt="-")["why"])
    for r in t["rows"]:
        if r["tw_before"] == 0:
            assert r["rule"] is None and "no TIME_WAIT" in r["why"]
            continue
        # The measured result agrees with the rule computed from the settings.
        assert (r["result"] == "ok") == (r["rule"] == "takes over"), r
    at_once = one(doc, "tw_reuse", attempt="at_once", method="pinned_range")
    assert at_once["result"] == "EADDRNOTAVAIL"
    bound = one(doc, "tw_reuse", attempt="at_once", method="bind_connect")
    if bound["tw_before"] and bound["timestamps"]:
        assert bound["result"] == "ok" and bound["tw_after"] == 0 and bound["got_port"] is True


@linux_only
def test_reuseport_restart_resets_exactly_the_closed_listeners_queue(doc: Doc) -> None:
    closed = one(doc, "reuseport_restart", listener="closed")
    kept = one(doc, "reuseport_restart", listener="kept")
    n = doc["params"]["clients"]
    assert closed["queued"] == n and kept["queued"] == n
    assert kept["reset"] == 0 and kept["no_answer"] == 0
    if kernel.sysctl_int("net.ipv4.tcp_migrate_req") == 1:
        assert closed["reset"] == 0 and closed["served"] == n
    else:
        assert closed["reset"] == n and closed["served"] == 0
    assert kept["served"] == n


@linux_only
def test_reuseport_needs_the_same_user(doc: Doc) -> None:
    assert one(doc, "reuseport_user", second="same_user")["bind"] == "ok"
    other = one(doc, "reuseport_user", second="other_user")
    if os.geteuid() != 0:
        assert other["bind"] is None and "root" in other["na"]["bind"]
    else:
        assert other["bind"] == "EADDRINUSE" and other["uid"] == 65534


@linux_only
def test_time_waits_left_behind_are_counted(doc: Doc) -> None:
    left = one(doc, "left_behind", what="time_wait_sockets")["count"]
    # Matrix rows 1-8 and 13, the timers row, the crossed FINs (2) and the pinned
    # TIME_WAIT when tcp_tw_reuse did not take it over: at most 14, at least the 12.
    assert 12 <= left <= 14, left
    assert any(f"leaves {left} TIME_WAIT" in f for f in doc["findings"])


@linux_only
@pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback here")
def test_ipv6_host_and_wildcard_listen() -> None:
    d = reuseaddr.run(reuseaddr.Params(host="::1", wildcard_listen=True)).to_dict()
    assert all(ep["local"].startswith("[") for ep in d["endpoints"])
    no, yes = (
        one(d, "matrix", **SERVER_FIN, old_reuseaddr=b, new_reuseaddr=True) for b in (False, True)
    )
    assert no["bind"] == "EADDRINUSE" and yes["bind"] == "ok"
    assert {x["socket"] for x in table(d, "v6only")["rows"]} == {"listening"}
    assert one(d, "v6only", v6only_set="0")["bind_v4_wildcard"] == "EADDRINUSE"


def test_wait_reports_progress_and_binds_when_no_time_wait_is_left() -> None:
    """The waiting loop itself (60 s for a real TIME_WAIT is too long for a test): a port
    with nothing on it is free at once, and the callback still hears the end."""
    calls: list[str] = []
    host = resolve_host("127.0.0.1")
    with Lab(host, Deadline(5.0)) as lab:
        ctx = common.Ctx(
            lab, host, "tcp", common.Watch(host.family, "tcp"), common.Settings.read(host)
        )
        probe = lab.open_socket()
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        lab.close(probe)
        o = matrix.Outcome(1, matrix.MATRIX[0], port, 0, 0, None, [], "EADDRINUSE")
        w = wait.wait_out(ctx, o, calls.append)
    assert w.bind == "ok" and w.tw_after == 0
    assert calls and "gone" in calls[-1]


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
    out, err = io.StringIO(), io.StringIO()
    code = main(["reuseaddr", *args], stdout=out, stderr=err)
    assert code == 2
    assert len(err.getvalue().strip().splitlines()) == 1 and "Traceback" not in err.getvalue()


# ---- network namespaces: each setting changed, output and sentence checked ----------------
@pytest.fixture(scope="module")
def ns_runs() -> dict[str, Doc]:
    """The namespace runs, made concurrently (each takes about 1.5 s), once per module."""
    import netns as runner

    reason = runner.netns_skip_reason()
    if reason is not None:
        pytest.skip(reason)
    settings = {
        "tw_reuse_0": {"net.ipv4.tcp_tw_reuse": 0, "net.ipv4.tcp_fin_timeout": 5},
        "max_tw_0": {"net.ipv4.tcp_max_tw_buckets": 0},
        "bindv6only_1": {"net.ipv6.bindv6only": 1},
        "migrate_1": {"net.ipv4.tcp_migrate_req": 1, "net.ipv4.tcp_rfc1337": 1},
        "timestamps_0": {"net.ipv4.tcp_timestamps": 0},
    }
    from concurrent.futures import ThreadPoolExecutor

    def one_run(item: tuple[str, dict[str, Any]]) -> tuple[str, Doc]:
        name, values = item
        code, d, err = runner.sockprobe_json("reuseaddr", sysctls=values, timeout=60)
        assert code == 0 and d is not None, f"{name}: {err}"
        return name, d

    with ThreadPoolExecutor(len(settings)) as pool:
        return dict(pool.map(one_run, settings.items()))


def test_netns_tcp_tw_reuse_0(ns_runs: dict[str, Doc]) -> None:
    """tcp_tw_reuse 0: the pinned connect never takes the TIME_WAIT over, the sentence
    says tcp_tw_reuse is 0, and bind() + connect() still takes one over at once.
    tcp_fin_timeout 5 (same run): FIN_WAIT2 follows it, TIME_WAIT does not."""
    d = ns_runs["tw_reuse_0"]
    assert d["environment"]["sysctls"]["net.ipv4.tcp_tw_reuse"] == 0
    for attempt in ("at_once", "after_delay"):
        r = one(d, "tw_reuse", attempt=attempt, method="pinned_range")
        assert r["result"] == "EADDRNOTAVAIL" and r["tw_after"] == 1, r
        assert r["rule"] == "refused"
    assert (
        "tcp_tw_reuse is 0"
        in one(d, "tw_reuse", attempt="after_delay", method="pinned_range")["why"]
    )
    bound = one(d, "tw_reuse", attempt="at_once", method="bind_connect")
    assert bound["result"] == "ok" and bound["tw_after"] == 0 and bound["rule"] == "takes over"
    assert "tcp_tw_reuse is not consulted" in bound["why"]
    fw2 = one(d, "timers", step="orphan_fin_wait2")
    assert abs(fw2["proc_left_s"] - 5) <= 1.0 and fw2["rule_s"] == pytest.approx(5, abs=0.01)
    assert one(d, "timers", step="time_wait")["proc_left_s"] >= 55.0
    assert any("tcp_fin_timeout = 5 (as the kernel's rule gives" in f for f in d["findings"])
    # The restart rule itself does not depend on any of these settings.
    row = one(d, "matrix", **SERVER_FIN, old_reuseaddr=False, new_reuseaddr=True)
    assert row["bind"] == "EADDRINUSE"


def test_netns_tcp_max_tw_buckets_0(ns_runs: dict[str, Doc]) -> None:
    """No TIME_WAIT is created: every count is 0, no why-sentence claims one, the
    tw_reuse rows say the port was free, n/a reasons name the setting."""
    d = ns_runs["max_tw_0"]
    cause = "tcp_max_tw_buckets is 0: no TIME_WAIT is created"
    for r in table(d, "matrix")["rows"]:
        assert r["tw_on_port"] == 0 and r["tw_on_client_port"] == 0, r
        if r["close"] == "fin":
            assert r["na"]["tw_left_s"] == cause
            assert "client's port" not in r["why"] and "TIME_WAIT socket holds" not in r["why"]
    # With no TIME_WAIT the server-first rebind works with no option at all.
    assert one(d, "matrix", **SERVER_FIN, old_reuseaddr=False, new_reuseaddr=False)["bind"] == "ok"
    assert (
        cause
        in one(
            d,
            "matrix",
            closes_first="client",
            old_reuseaddr=False,
            new_reuseaddr=False,
            reuseport=False,
            old_listener="closed",
        )["why"]
    )
    for r in table(d, "tw_reuse")["rows"]:
        assert r["tw_before"] == 0 and r["rule"] is None, r
        assert cause in r["why"] and "took" not in r["why"]
    assert not any("took over" in f or "took the TIME_WAIT" in f for f in d["findings"])
    assert any("could not be shown" in f and cause in f for f in d["findings"])
    sim = one(d, "time_wait", case="simultaneous_close")
    assert (sim["tw_server"], sim["tw_client"], sim["rule"]) == (0, 0, "none")
    for case in ("rst_in_time_wait", "syn_reopens"):
        r = one(d, "time_wait", case=case)
        assert r["tw_before"] == 0 and cause in r["na"]["rule"]
    tw = one(d, "timers", step="time_wait")
    assert tw["state"] is None and tw["na"]["state"] == cause
    assert one(d, "left_behind", what="time_wait_sockets")["count"] == 0


def test_netns_bindv6only_1(ns_runs: dict[str, Doc]) -> None:
    d = ns_runs["bindv6only_1"]
    r = one(d, "v6only", v6only_set="default")
    if r["bind_v4_wildcard"] is None:
        pytest.skip("no IPv6 in the namespace")
    assert r["bindv6only"] == 1 and r["v6only"] == 1 and r["bind_v4_wildcard"] == "ok"
    assert "bindv6only = 1" in r["why"] and "IPv6 only" in r["why"]


def test_netns_tcp_migrate_req_1_and_rfc1337_1(ns_runs: dict[str, Doc]) -> None:
    d = ns_runs["migrate_1"]
    n = d["params"]["clients"]
    closed = one(d, "reuseport_restart", listener="closed")
    assert closed["reset"] == 0 and closed["served"] == n and closed["tcp_migrate_req"] == 1
    assert one(d, "reuseport_restart", listener="kept")["served"] == n
    assert any("tcp_migrate_req = 1 moves" in f for f in d["findings"])
    # tcp_rfc1337 = 1 (same run): the RST no longer ends the TIME_WAIT.
    rst = one(d, "time_wait", case="rst_in_time_wait")
    assert rst["tw_before"] == 1 and rst["tw_server"] == 1 and rst["rule"] == "kept", rst
    assert "tcp_rfc1337 = 1" in rst["why"]
    said = next(f for f in d["findings"] if f.startswith("An RST in the window"))
    assert (
        f"connect() {'was' if rst['result'].startswith('still') else 'gave'} " + str(rst["result"])
        in said
    )
    assert any("here tcp_rfc1337 is 1" in n for n in d["notes"])


def test_netns_tcp_timestamps_0(ns_runs: dict[str, Doc]) -> None:
    """Without timestamps neither path takes a TIME_WAIT over, whatever tcp_tw_reuse."""
    d = ns_runs["timestamps_0"]
    for r in table(d, "tw_reuse")["rows"]:
        assert r["timestamps"] is False and r["tw_before"] == 1, r
        assert r["result"] != "ok" and r["rule"] == "refused", r
        assert "no TCP timestamps" in r["why"]
    # The finding names that cause for the refused bind() + connect(), and does not claim
    # what only a takeover shows (that tcp_tw_reuse does not gate a bound port).
    bound = next(f for f in d["findings"] if f.startswith("bind() + connect() from a port"))
    assert "the old connection used no TCP timestamps" in bound
    assert "does not gate" not in bound
    rst = next(f for f in d["findings"] if f.startswith("An RST in the window"))
    assert "connect() gave" in rst or "connect() was still" in rst
    # A new SYN still reopens the server-side TIME_WAIT: its sequence number is later.
    syn = one(d, "time_wait", case="syn_reopens")
    assert syn["result"] == "ok" and syn["tw_server"] == 0 and "sequence number" in syn["why"]


def test_netns_no_free_ephemeral_port_is_exit_3_naming_the_range(netns: Any) -> None:
    """A 4-port ip_local_port_range runs out during the probe: bind(port 0) fails with
    EADDRINUSE, which is the host's state: exit 3 naming the range, not exit 1."""
    code, d, err = netns.sockprobe_json(
        "reuseaddr", sysctls={"net.ipv4.ip_local_port_range": "40000 40003"}
    )
    assert code == 3 and d is None, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "no free ephemeral port" in lines[0]
    assert "40000-40003" in lines[0] and "ip_local_port_range" in lines[0]


def test_netns_loopback_down_is_exit_3_naming_the_cause(netns: Any) -> None:
    """With `lo` down the connects fail (ENETUNREACH): no result, exit 3, one line."""
    code, d, err = netns.sockprobe_json("reuseaddr", lo_up=False)
    assert code == 3 and d is None, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "ENETUNREACH" in lines[0] and "loopback" in lines[0]
