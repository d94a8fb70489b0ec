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


#: Busy loops, one per hog: the loaded host of issue 13 ("two CPU hogs").
HOGS = 2


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two `all` runs at the same time, then a third after them while HOGS processes
    keep the CPUs busy (a loaded host)."""
    d = tmp_path_factory.mktemp("fingerprints")
    out: dict[str, Path] = {}
    pair = {"a": _all_json(), "b": _all_json()}
    for name, proc in pair.items():
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, f"parallel run {name} failed: {stderr}"
        out[name] = d / f"{name}.json"
        out[name].write_text(stdout)
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(HOGS)]
    try:
        proc = _all_json()
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    assert proc.returncode == 0, stderr
    out["c"] = d / "c.json"
    out["c"].write_text(stdout)
    return out


def _validator():  # type: ignore[no-untyped-def]
    import jsonschema

    schema = json.loads((Path(__file__).parent.parent / "schema/sockprobe.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_fingerprint_and_every_report_in_it_match_the_json_schema(runs):
    v = _validator()
    doc = json.loads(runs["a"].read_text())
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in v.iter_errors(doc)]
    assert not errors, errors[:5]
    for rep in doc["probes"].values():
        assert not list(v.iter_errors(rep))
        for t in rep["tables"]:
            keys = {c["key"] for c in t["columns"]}
            for row in t["rows"]:
                assert set(row) - {"na"} <= keys
                # Rows are unique by their key columns: diff matches on them.
            ident = [tuple(r.get(k) for k in t["keys"]) for r in t["rows"]]
            assert len(ident) == len(set(ident)), (rep["probe"], t["id"])


def test_diff_json_matches_the_schema(runs, capsys):
    main(["diff", str(runs["a"]), str(runs["b"]), "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert not list(_validator().iter_errors(doc))


def test_all_json_contains_every_probe_and_parses(runs):
    doc = json.loads(runs["a"].read_text())
    assert doc["schema"] == 2 and doc["kind"] == "sockprobe-fingerprint"
    assert set(doc["probes"]) == {p.name for p in PROBES}
    for name, rep in doc["probes"].items():
        assert rep["probe"] == name and rep["tables"], name
    assert doc["settings"], "the fingerprint carries the kernel settings the probes read"


def test_parallel_runs_both_succeed_and_a_run_under_load_diffs_equal(runs, capsys):
    # runs["a"] and runs["b"] ran at the same time (the fixture asserts both exited 0);
    # runs["c"] ran alone under CPU hogs. One host, so the same behaviour: equal.
    for other in ("b", "c"):
        code = main(["diff", str(runs["a"]), str(runs[other])])
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
    wwr = next(t for t in nagle["tables"] if t["id"] == "wwr")
    wwr["rows"][0]["median_ms"] *= 1.5  # within tolerance
    changed = tmp_path / "measured.json"
    changed.write_text(json.dumps(doc))
    assert main(["diff", str(runs["a"]), str(changed)]) == 1
    out = capsys.readouterr().out
    assert "bytes" in out and "behaviour" in out and "median" not in out.split("Findings")[0]


def test_diff_of_truncated_or_missing_file_exits_2(runs, tmp_path, capsys):
    text = runs["a"].read_text()
    cut = tmp_path / "cut.json"
    cut.write_text(text[: len(text) // 2])
    assert main(["diff", str(runs["a"]), str(cut)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert main(["diff", str(runs["a"]), str(tmp_path / "missing.json")]) == 2


def test_all_prints_the_one_screen_summary_at_80_columns(capsys):
    code = main(["all", "--width", "80"])
    out, err = capsys.readouterr()
    assert code in (0, 1), err
    lines = out.splitlines()
    # Two screens of a 80x24 terminal at most, each probe's answer in it, and no table
    # of a single probe (that is --full).
    assert len(lines) <= 48 and max(len(x) for x in lines) <= 80, out
    for p in PROBES:
        assert any(x.startswith(f"{p.name} ") for x in lines), p.name
    assert not any(x.startswith("sockprobe nagle:") for x in lines)


def test_a_probe_that_cannot_finish_is_its_row_and_the_rest_run():
    from sockprobe.fingerprint import run_all
    from sockprobe.status import ExitStatus

    # A 10 ms deadline cannot hold nagle's 20 write-write-read rounds of ~40 ms.
    fp = run_all(deadline=0.01, only=["nagle"])
    (outcome,) = fp.outcomes
    assert outcome.report is None and outcome.status == ExitStatus.DEADLINE
    assert "deadline" in outcome.error
    summary = fp.summary_report()
    assert summary.tables[0].rows[0]["status"] == "exit 4"


def test_all_with_a_host_that_is_not_local_exits_2(capsys):
    assert main(["all", "--host", "192.0.2.1"]) == 2
    assert "not usable on this machine" in capsys.readouterr().err


@pytest.mark.parametrize("width", [80, 120])
def test_every_report_fits_the_terminal_width(runs, width):
    from sockprobe.render import RenderOptions, _cell, render_many
    from sockprobe.report import report_from_dict

    doc = json.loads(runs["a"].read_text())
    for name, rep in doc["probes"].items():
        report = report_from_dict(rep)
        text = render_many([report], RenderOptions(explain=True, width=width))
        widest = max(len(line) for line in text.splitlines())
        assert widest <= width, (name, widest)
        # In a pipe (no width) every table row stays on one line: no row is wrapped.
        piped = render_many([report], RenderOptions(explain=True)).splitlines()
        for t in report.tables:
            if t.rows and not t.detail:
                key = t.columns[0].key
                first = _cell(t.rows[0][key], key)
                assert any(line.lstrip().startswith(first) for line in piped), (name, t.id)
