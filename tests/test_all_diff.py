"""`sockprobe all` (the fingerprint) and `sockprobe diff`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sockprobe.cli import main
from sockprobe.probes import PROBES


def _all_json(timeout: float = 90.0) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "sockprobe", "all", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two `all` runs at the same time, then a third after them."""
    d = tmp_path_factory.mktemp("fingerprints")
    out: dict[str, Path] = {}
    pair = {"a": _all_json(), "b": _all_json()}
    for name, proc in pair.items():
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, f"parallel run {name} failed: {stderr}"
        out[name] = d / f"{name}.json"
        out[name].write_text(stdout)
    proc = _all_json()
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    out["c"] = d / "c.json"
    out["c"].write_text(stdout)
    return out


def test_all_json_contains_every_probe_and_parses(runs):
    doc = json.loads(runs["a"].read_text())
    assert doc["schema"] == 2 and doc["kind"] == "sockprobe-fingerprint"
    assert set(doc["probes"]) == {p.name for p in PROBES}
    for name, rep in doc["probes"].items():
        assert rep["probe"] == name and rep["tables"], name
    assert doc["settings"], "the fingerprint carries the kernel settings the probes read"


def test_parallel_runs_both_succeed_and_back_to_back_runs_diff_equal(runs, capsys):
    # runs["a"] and runs["b"] ran at the same time (the fixture asserts both exited 0).
    code = main(["diff", str(runs["a"]), str(runs["c"])])
    out, _ = capsys.readouterr()
    assert code == 0, out


def test_diff_with_itself_is_equal(runs, capsys):
    assert main(["diff", str(runs["a"]), str(runs["a"])]) == 0
    assert "equal" in capsys.readouterr().out


def test_diff_names_the_one_setting_that_differs(runs, tmp_path, capsys):
    doc = json.loads(runs["a"].read_text())
    key = sorted(doc["settings"])[0]
    value = doc["settings"][key]
    doc["settings"][key] = f"{value}-changed"
    changed = tmp_path / "changed.json"
    changed.write_text(json.dumps(doc))
    code = main(["diff", str(runs["a"]), str(changed)])
    out, _ = capsys.readouterr()
    assert code == 1
    assert key in out and "setting" in out


def test_diff_flags_an_exact_measurement_but_tolerates_timing(runs, tmp_path, capsys):
    doc = json.loads(runs["a"].read_text())
    nagle = doc["probes"]["nagle"]
    table = nagle["tables"][0]
    table["rows"][0]["bytes"] += 1
    wwr = next(t for t in nagle["tables"] if t["title"].startswith("Write-write-read"))
    wwr["rows"][0]["median"] *= 1.5  # within tolerance
    changed = tmp_path / "measured.json"
    changed.write_text(json.dumps(doc))
    assert main(["diff", str(runs["a"]), str(changed)]) == 1
    out = capsys.readouterr().out
    assert "bytes" in out and "measured" in out and "median" not in out.split("Findings")[0]


def test_diff_of_truncated_or_missing_file_exits_2(runs, tmp_path, capsys):
    text = runs["a"].read_text()
    cut = tmp_path / "cut.json"
    cut.write_text(text[: len(text) // 2])
    assert main(["diff", str(runs["a"]), str(cut)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert main(["diff", str(runs["a"]), str(tmp_path / "missing.json")]) == 2


def test_all_summary_alone(capsys):
    code = main(["all", "--summary", "--host", "127.0.0.1"])
    out, err = capsys.readouterr()
    assert code in (0, 1), err
    assert "Summary" in out
    for p in PROBES:
        assert p.name in out


def test_a_probe_that_cannot_finish_is_its_row_and_the_rest_run():
    from sockprobe.fingerprint import run_all
    from sockprobe.status import ExitStatus

    # A 1 ms deadline cannot hold nagle's 20 write-write-read rounds of ~40 ms.
    fp = run_all(deadline=0.001, only=["nagle"])
    (outcome,) = fp.outcomes
    assert outcome.report is None and outcome.status == ExitStatus.FAILURE
    assert "deadline" in outcome.error
    summary = fp.summary_report()
    assert summary.tables[0].rows[0]["status"] == "exit 4"


def test_all_with_a_host_that_is_not_local_exits_2(capsys):
    assert main(["all", "--host", "192.0.2.1"]) == 2
    assert "not usable on this machine" in capsys.readouterr().err
