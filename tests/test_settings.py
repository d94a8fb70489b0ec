"""sockprobe kernel: the settings read from /proc/sys, what a new socket gets, and the
FIN_WAIT2 / TIME_WAIT timers measured on a real loopback connection."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import labelled

from sockprobe import kernel
from sockprobe.cli import main
from sockprobe.diff import compare
from sockprobe.probes import settings
from sockprobe.report import NA

#: Every setting the issue names (plus the allowed congestion controls).
ISSUE_SETTINGS = {
    "net.core.somaxconn",
    "net.ipv4.tcp_max_syn_backlog",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.tcp_abort_on_overflow",
    "net.ipv4.tcp_syn_retries",
    "net.ipv4.tcp_syn_linear_timeouts",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_tw_reuse",
    "net.ipv4.tcp_tw_reuse_delay",
    "net.ipv4.tcp_migrate_req",
    "net.ipv4.tcp_autocorking",
    "net.ipv4.tcp_congestion_control",
    "net.ipv4.tcp_available_congestion_control",
    "net.ipv4.tcp_rto_min_us",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv6.bindv6only",
    "net.core.rmem_default",
    "net.core.rmem_max",
    "net.core.wmem_default",
    "net.core.wmem_max",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
    "net.ipv4.udp_mem",
}
linux_only = pytest.mark.skipif(not kernel.IS_LINUX, reason="reads /proc/sys")


def _table(report, prefix):
    return next(t for t in report.tables if t.title.startswith(prefix))


def _rows(table):
    return {r[table.columns[0].label]: r for r in labelled(table)}


def _proc(name: str) -> str | None:
    try:
        return Path("/proc/sys", *name.split(".")).read_text().split("\n")[0]
    except OSError:
        return None


@pytest.fixture(scope="module")
def report():
    return settings.run(settings.Params())


def test_every_setting_of_the_issue_has_a_row_with_meaning_and_probe(report):
    rows = _rows(_table(report, "Kernel settings"))
    assert set(rows) >= ISSUE_SETTINGS
    for row in rows.values():
        assert row["what it changes"] and row["shown by"]


@linux_only
def test_values_match_proc_sys(report):
    rows = _rows(_table(report, "Kernel settings"))
    for name, row in rows.items():
        raw = _proc(name)
        if raw is None:
            assert isinstance(row["value"], NA)
            continue
        words = raw.split()
        if not words:
            assert row["value"] == "(empty)"
        elif len(words) == 1 and words[0].lstrip("-").isdigit():
            assert row["value"] == int(words[0]), name
        else:
            assert row["value"] == " ".join(words), name


def test_value_cells_are_the_fingerprint_and_never_volatile(report):
    t = _table(report, "Kernel settings")
    assert t.volatile == []
    sysctls = report.to_dict()["environment"]["sysctls"]
    assert set(sysctls) == set(settings.NAMES)


@linux_only
def test_new_sockets_get_what_the_settings_say(report):
    rows = _rows(_table(report, "What a new socket gets"))
    assert rows, "the new-socket checks ran"
    for what, row in rows.items():
        if row["agrees"] is not None:
            assert row["agrees"] is True, (what, row)
    rmem = [int(x) for x in _proc("net.ipv4.tcp_rmem").split()]
    assert rows["new TCP socket: SO_RCVBUF (tcp_rmem default)"]["measured"] == rmem[1]
    cap = int(_proc("net.core.rmem_max"))
    assert rows["SO_RCVBUF after asking for 2 x rmem_max"]["measured"] == 2 * cap


@linux_only
def test_fin_wait2_follows_fin_timeout_and_time_wait_lasts_60s(report):
    rows = _rows(_table(report, "Timers"))
    fw2 = rows["FIN_WAIT2 timer, orphaned socket (tcp_fin_timeout)"]
    tw = rows["TIME_WAIT timer after the peer closed (TCP_TIMEWAIT_LEN)"]
    fin = int(_proc("net.ipv4.tcp_fin_timeout"))
    if fin <= 60:
        assert abs(fw2["measured"] - fin) <= 1.5
    assert 58.0 <= tw["measured"] <= 60.5
    assert _table(report, "Timers").volatile == ["measured"]


def test_a_missing_setting_reads_na_and_the_rest_still_run(monkeypatch):
    ghost = settings.Setting("net.ipv4.tcp_no_such_setting", "", "nothing", "none", lambda v, _a: v)
    monkeypatch.setattr(settings, "SETTINGS", (*settings.SETTINGS, ghost))
    monkeypatch.setattr(settings, "NAMES", (*settings.NAMES, ghost.name))
    r = settings.run(settings.Params(measure=False))
    rows = _rows(_table(r, "Kernel settings"))
    assert isinstance(rows[ghost.name]["value"], NA)
    assert str(rows[ghost.name]["value"]) == "n/a"
    assert any("net.ipv4.tcp_no_such_setting" in f for f in r.findings)
    assert len(r.tables) == 1  # --no-measure: the settings alone


def test_two_runs_compare_equal_with_diff(report):
    again = settings.run(settings.Params())

    def doc(r):
        d = json.loads(json.dumps(r.to_dict()))
        return {"settings": d["environment"]["sysctls"], "probes": {"kernel": d}}

    diffs, (exact, _, _) = compare(doc(report), doc(again))
    assert diffs == [] and exact > len(settings.NAMES)


def test_reserved_port_list_counting():
    assert settings.reserved_ports("") == 0
    assert settings.reserved_ports("8080") == 1
    assert settings.reserved_ports("8080,9000-9009") == 11


def test_cli_json_and_table(capsys):
    assert main(["kernel", "--no-measure", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["probe"] == "kernel" and len(doc["tables"]) == 1
    assert main(["kernel"]) == 0
    out = capsys.readouterr().out
    assert "net.core.somaxconn" in out and "shown by" in out


def _unshare_ok() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    r = subprocess.run(["unshare", "-n", "true"], capture_output=True, timeout=10)
    return r.returncode == 0


@linux_only
@pytest.mark.skipif(not _unshare_ok(), reason="needs root and unshare -n")
def test_in_a_namespace_the_probe_follows_its_settings():
    # A namespace of our own with tcp_fin_timeout 5 and somaxconn 16: the probe reads
    # them, the FIN_WAIT2 timer follows tcp_fin_timeout, TIME_WAIT stays at 60 s.
    script = (
        "ip link set lo up && sysctl -qw net.ipv4.tcp_fin_timeout=5 "
        "&& sysctl -qw net.core.somaxconn=16 "
        f"&& exec {sys.executable} -m sockprobe kernel --json"
    )
    r = subprocess.run(
        ["unshare", "-n", "sh", "-c", script], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    sysctls = doc["environment"]["sysctls"]
    assert sysctls["net.ipv4.tcp_fin_timeout"] == 5
    assert sysctls["net.core.somaxconn"] == 16
    timers = next(t for t in doc["tables"] if t["title"].startswith("Timers"))
    rows = {row[0]: row for row in timers["rows"]}
    assert abs(rows["FIN_WAIT2 timer, orphaned socket (tcp_fin_timeout)"][1] - 5) <= 1.0
    assert 58.0 <= rows["TIME_WAIT timer after the peer closed (TCP_TIMEWAIT_LEN)"][1] <= 60.5
    assert any("so TIME_WAIT did not follow tcp_fin_timeout" in f for f in doc["findings"])


def test_deadline_bounds_the_measurements():
    from sockprobe.status import DeadlineExceeded

    with pytest.raises(DeadlineExceeded):
        settings.run(settings.Params(deadline=0.0001))


def test_params_are_a_frozen_dataclass():
    p = settings.Params()
    assert dataclasses.is_dataclass(p) and p.measure is True
