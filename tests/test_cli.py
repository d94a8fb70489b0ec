"""The CLI in-process (streams captured) plus one subprocess smoke test."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

import pytest
from helpers import interrupt

from sockprobe.cli import main

SCHEMA_KEYS = {
    "schema",
    "probe",
    "summary",
    "params",
    "environment",
    "endpoints",
    "tables",
    "findings",
    "notes",
    "duration_s",
}
QUICK = ["nagle", "--writes", "5", "--rounds", "2", "--mode", "nodelay", "--reader", "idle"]


def run(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_json_carries_schema_keys(capsys):
    code, out, err = run(capsys, *QUICK, "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc.keys() >= SCHEMA_KEYS
    assert doc["schema"] == 1 and doc["probe"] == "nagle"
    assert "net.ipv4.tcp_autocorking" in doc["environment"][
        "sysctls"
    ] or not sys.platform.startswith("linux")
    for t in doc["tables"]:
        assert len(t["columns"]) == len(t["units"])
        assert all(len(r) == len(t["columns"]) for r in t["rows"])


@pytest.mark.parametrize("fmt", ["table", "json", "csv", "markdown"])
def test_every_format_renders(capsys, fmt):
    code, out, err = run(capsys, *QUICK, "--format", fmt)
    assert code == 0, err
    if fmt == "json":
        json.loads(out)
    elif fmt == "csv":
        rows = list(csv.reader(io.StringIO(out)))
        assert rows[0][:2] == ["report", "table"]
        assert any(r[0] == "nagle" for r in rows[1:])
    elif fmt == "markdown":
        assert "| mode" in out and "|---" in out.replace(" ", "").replace(":", "")
    else:
        assert "Write-write-read" in out and "Findings" in out


def test_explain_adds_notes_and_endpoints(capsys):
    code, out, _ = run(capsys, *QUICK, "--explain")
    assert code == 0
    assert "How it works" in out and "Endpoints" in out and "127.0.0.1:" in out


@pytest.mark.parametrize(
    "args",
    [
        ["nagle", "--writes", "0"],
        ["nagle", "--size", "-1"],
        ["nagle", "--host", "not-an-address.invalid"],
        ["nagle", "--format", "xml"],
        ["nagle", "--deadline", "-1"],
        ["nagle", "--mode", "turbo"],
        ["nagle", "--no-such-option"],
        ["no-such-command"],
    ],
)
def test_bad_input_exits_2_with_one_line(capsys, args):
    code, _out, err = run(capsys, *args)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("sockprobe:")
    assert "Traceback" not in err


def test_version_and_help(capsys):
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.startswith("sockprobe ")
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "nagle" in out


def test_subprocess_smoke():
    v = subprocess.run(
        [sys.executable, "-m", "sockprobe", "--version"], capture_output=True, text=True, timeout=30
    )
    assert v.returncode == 0 and v.stdout.startswith("sockprobe ")
    r = subprocess.run(
        [sys.executable, "-m", "sockprobe", *QUICK, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["probe"] == "nagle"
    bad = subprocess.run(
        [sys.executable, "-m", "sockprobe", "nagle", "--writes", "0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_ctrl_c_exits_130_after_cleaning_up():
    # cork-held rounds take ~200 ms each: 100 of them are still running when SIGINT lands.
    code, err, took = interrupt(
        ["nagle", "--mode", "cork-held", "--rounds", "100", "--reader", "idle", "--writes", "5"],
        after=1.0,
    )
    assert took < 3.0
    assert code == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
