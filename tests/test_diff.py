"""`sockprobe diff`: rows matched by key, not-measured values, settings that explain
behaviours, the fleet view, and hostile input (each: exit 2, one line, no traceback).

The fingerprints here are built from real `Report` objects (the probes' own model) with
chosen values, so each comparison rule is checked against a known answer; the real
fingerprints of two runs are compared in test_all_diff.py."""

from __future__ import annotations

import copy
import json
import os
import random
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sockprobe import diff
from sockprobe.cli import main
from sockprobe.fingerprint import FINGERPRINT_KIND
from sockprobe.report import CONTEXT, NA, SCHEMA_VERSION, VOLATILE, Report, col, environment
from sockprobe.status import UsageError


def _backlog(somaxconn: int = 4096, admitted: tuple[int, int] = (6, 129)) -> dict[str, Any]:
    rep = Report("backlog", params={"backlogs": [5, 128]})
    rep.environment = environment({"net.core.somaxconn": somaxconn, "net.ipv4.tcp_syncookies": 1})
    t = rep.table(
        "admission",
        "What listen(n) admitted",
        [
            col("requested_backlog"),
            col("admitted"),
            col("settle_ms", "settle", "ms", VOLATILE),
            col("listen_overflows", kind=CONTEXT),
        ],
        keys=["requested_backlog"],
    )
    t.add(5, admitted[0], 1.5, 10)
    t.add(128, admitted[1], 2.5, 0)
    return rep.to_dict()


def _nagle(median_ms: float = 40.1, info: Any = 12) -> dict[str, Any]:
    rep = Report("nagle", params={"writes": 100})
    rep.environment = environment({"net.ipv4.tcp_autocorking": 1})
    t = rep.table(
        "wwr",
        "Write-write-read",
        [col("mode"), col("receiver"), col("median_ms", "median", "ms", VOLATILE), col("ato")],
        keys=["mode", "receiver"],
    )
    ato = NA("TCP_INFO lacks tcpi_ato here") if info is None else info
    t.add("nagle", "idle", median_ms, ato)
    t.add("nodelay", "idle", 0.1, ato)
    t.add("cork", "idle", 0.2, ato)
    return rep.to_dict()


def fingerprint(**probes: dict[str, Any]) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    for rep in probes.values():
        settings.update(rep.get("environment", {}).get("sysctls", {}))
    return {
        "schema": SCHEMA_VERSION,
        "kind": FINGERPRINT_KIND,
        "platform": "linux",
        "system": "Linux",
        "kernel_release": "6.1.0",
        "machine": "x86_64",
        "python": "3.11.7",
        "settings": dict(sorted(settings.items())),
        "probes": probes,
        "duration_s": 1.0,
    }


def write(tmp_path: Path, name: str, doc: Any) -> str:
    p = tmp_path / name
    p.write_text(json.dumps(doc))
    return str(p)


def base() -> dict[str, Any]:
    return fingerprint(nagle=_nagle(), backlog=_backlog())


def test_equal_with_itself_and_rows_reordered(tmp_path):
    a = base()
    b = copy.deepcopy(a)
    rows = b["probes"]["nagle"]["tables"][0]["rows"]
    rows.reverse()
    b["probes"]["backlog"]["tables"][0]["rows"].reverse()
    rep = diff.run([write(tmp_path, "a.json", a), write(tmp_path, "b.json", b)])
    assert not diff.differs(rep), rep.get("differences").rows
    assert rep.summary.startswith("equal")


def test_a_missing_row_is_one_difference_and_the_others_still_match(tmp_path):
    a = base()
    b = copy.deepcopy(a)
    rows = b["probes"]["nagle"]["tables"][0]["rows"]
    del rows[1]  # nodelay/idle
    rows.reverse()  # and the rest in another order
    rep = diff.run([write(tmp_path, "a.json", a), write(tmp_path, "b.json", b)])
    (d,) = rep.get("differences").rows
    assert (d["probe"], d["table"], d["row"], d["kind"]) == ("nagle", "wwr", "nodelay/idle", "row")
    assert (d["a"], d["b"]) == ("present", "absent")


def test_a_failed_probe_is_one_line_and_its_settings_are_not_measured(tmp_path):
    a = base()
    b = fingerprint(
        nagle=_nagle(), backlog={"error": "cannot run here: loopback is down", "status": 3}
    )
    assert "net.core.somaxconn" not in b["settings"]
    rep = diff.run([write(tmp_path, "a.json", a), write(tmp_path, "b.json", b)])
    (d,) = rep.get("differences").rows
    assert (d["probe"], d["kind"], d["a"]) == ("backlog", "probe", "ran")
    assert "could not run (exit 3)" in d["b"]
    nm = {r["row"]: r for r in rep.get("not_measured").rows}
    assert set(nm) == {"net.core.somaxconn", "net.ipv4.tcp_syncookies"}
    assert nm["net.core.somaxconn"]["side"] == "B"
    assert "backlog" in nm["net.core.somaxconn"]["reason"]
    # The same failure on both sides (by exit status) is no difference at all.
    rep = diff.run([write(tmp_path, "b1.json", b), write(tmp_path, "b2.json", b)])
    assert not diff.differs(rep)


def test_a_setting_absent_although_its_probe_ran_is_a_difference(tmp_path):
    a = base()
    b = copy.deepcopy(a)
    del b["settings"]["net.ipv4.tcp_syncookies"]
    del b["probes"]["backlog"]["environment"]["sysctls"]["net.ipv4.tcp_syncookies"]
    rep = diff.run([write(tmp_path, "a.json", a), write(tmp_path, "b.json", b)])
    (d,) = rep.get("differences").rows
    assert (d["kind"], d["row"], d["a"], d["b"]) == (
        "setting",
        "net.ipv4.tcp_syncookies",
        1,
        "absent",
    )


def test_na_against_a_value_or_absent_is_not_measured(tmp_path):
    a = fingerprint(nagle=_nagle(info=12))
    b = fingerprint(nagle=_nagle(info=None))  # ato n/a on every row of B
    b["settings"]["net.ipv4.tcp_autocorking"] = None  # n/a on B
    a["settings"]["net.ipv4.tcp_thin"] = None  # n/a on A, absent on B
    rep = diff.run([write(tmp_path, "a.json", a), write(tmp_path, "b.json", b)])
    assert not diff.differs(rep), rep.get("differences").rows
    nm = rep.get("not_measured").rows
    cells = {(r["row"], r["column"], r["side"]) for r in nm}
    assert ("nagle/idle", "ato", "B") in cells and ("cork/idle", "ato", "B") in cells
    assert ("net.ipv4.tcp_autocorking", "value", "B") in cells
    assert ("net.ipv4.tcp_thin", "value", "A and B") in cells
    assert any(r["reason"] == "TCP_INFO lacks tcpi_ato here" for r in nm)


def test_a_changed_setting_comes_once_with_the_behaviours_it_explains(tmp_path):
    a = fingerprint(nagle=_nagle(), backlog=_backlog(somaxconn=4096, admitted=(6, 129)))
    b = fingerprint(nagle=_nagle(info=13), backlog=_backlog(somaxconn=64, admitted=(6, 65)))
    rep = diff.run([write(tmp_path, "a.json", a), write(tmp_path, "b.json", b)])
    rows = rep.get("differences").rows
    assert [r["kind"] for r in rows].count("setting") == 1
    assert (rows[0]["kind"], rows[0]["row"], rows[0]["a"], rows[0]["b"]) == (
        "setting",
        "net.core.somaxconn",
        4096,
        64,
    )
    # Right under it: backlog's admitted count for listen(128), which reads somaxconn.
    assert (rows[1]["probe"], rows[1]["row"], rows[1]["column"]) == ("backlog", "128", "admitted")
    assert rows[1]["explained_by"] == "net.core.somaxconn"
    # nagle does not read somaxconn: its differences come after, unexplained.
    assert {r["probe"] for r in rows[2:]} == {"nagle"}
    assert all(r["explained_by"] == "" for r in rows[2:]) and len(rows) == 5
    assert any("net.core.somaxconn is 4096 on A and 64 on B" in f for f in rep.findings)
    # One line per difference: the keys identify each row.
    assert len({(r["probe"], r["table"], r["row"], r["column"]) for r in rows}) == len(rows)
    text = diff.lines(rep)
    assert len(text) == len(rows)
    assert text[0] == "setting net.core.somaxconn: 4096 -> 64"
    assert text[1] == "  backlog > admission > 128 > admitted: 129 -> 65"
    assert text[2].startswith("nagle > wwr > ")


def test_timing_within_tolerance_and_a_delayed_ack_beyond_it(tmp_path):
    a = fingerprint(nagle=_nagle(median_ms=40.1))
    # The same 40 ms stall measured late on a loaded host: within FACTOR.
    loaded = fingerprint(nagle=_nagle(median_ms=70.0))
    none = fingerprint(nagle=_nagle(median_ms=0.3))  # no 40 ms delayed ACK at all
    pa, pl, pn = (
        write(tmp_path, f"{n}.json", d) for n, d in [("a", a), ("l", loaded), ("n", none)]
    )
    assert not diff.differs(diff.run([pa, pl]))
    rows = diff.run([pa, pn]).get("differences").rows
    assert [(r["kind"], r["row"], r["column"]) for r in rows] == [
        ("timing", "nagle/idle", "median_ms")
    ]
    assert diff.within_tolerance(0.3, 15.0, "ms")  # scheduling noise under the floor
    assert not diff.within_tolerance(0.3, 40.0, "ms")  # the delayed ACK
    assert diff.within_tolerance(30.0, 85.0, "ms") and not diff.within_tolerance(30.0, 95.0, "ms")


def test_exact_cells_keep_booleans_apart_from_numbers(tmp_path):
    a = fingerprint(backlog=_backlog())
    b = copy.deepcopy(a)
    b["probes"]["backlog"]["tables"][0]["rows"][0]["admitted"] = 6.0  # same number
    assert not diff.differs(diff.run([write(tmp_path, "a.json", a), write(tmp_path, "b.json", b)]))
    a["probes"]["backlog"]["tables"][0]["rows"][0]["admitted"] = 1
    b["probes"]["backlog"]["tables"][0]["rows"][0]["admitted"] = True
    assert diff.differs(diff.run([write(tmp_path, "a.json", a), write(tmp_path, "b.json", b)]))


def test_context_columns_are_never_compared(tmp_path):
    a = base()
    b = copy.deepcopy(a)
    b["probes"]["backlog"]["tables"][0]["rows"][0]["listen_overflows"] = 99999
    assert not diff.differs(diff.run([write(tmp_path, "a.json", a), write(tmp_path, "b.json", b)]))


def test_four_fingerprints_in_two_behaviour_groups(tmp_path):
    a = base()
    a2 = copy.deepcopy(a)
    a2["probes"]["nagle"]["tables"][0]["rows"][0]["median_ms"] = 45.0  # within tolerance
    a2["probes"]["backlog"]["tables"][0]["rows"][0]["listen_overflows"] = 7  # context
    a2["python"] = "3.12.1"  # environment, not behaviour
    b = fingerprint(nagle=_nagle(), backlog=_backlog(somaxconn=64, admitted=(6, 65)))
    a3 = copy.deepcopy(a)
    a3["probes"]["backlog"]["tables"][0]["rows"][1]["settle_ms"] = 14.0  # within the floor
    # The odd one out is listed first: the reference is the largest group, not the first.
    files = [
        write(tmp_path, "h1.json", b),
        write(tmp_path, "h2.json", a),
        write(tmp_path, "h3.json", a2),
        write(tmp_path, "h4.json", a3),
    ]
    rep = diff.run(files)
    assert diff.differs(rep) and rep.exit_status == 1
    groups = rep.get("groups").rows
    assert [(g["group"], g["hosts"], g["reference"]) for g in groups] == [
        (1, 3, True),
        (2, 1, False),
    ]
    assert groups[0]["files"] == ", ".join(files[1:])
    assert groups[1]["files"] == files[0]
    rows = rep.get("differences").rows
    # Group 2's differences from group 1, once (not once per host).
    assert [(r["group"], r["kind"], r["row"]) for r in rows] == [
        (2, "setting", "net.core.somaxconn"),
        (2, "behaviour", "128"),
    ]
    assert (rows[0]["a"], rows[0]["b"]) == (4096, 64)
    assert "2 behaviour groups" in rep.summary
    # Four alike: one group, equal.
    same = diff.run([files[1], files[2], files[3], files[1]])
    assert not diff.differs(same) and same.exit_status == 0
    assert same.summary.startswith("equal")
    assert [g["hosts"] for g in same.get("groups").rows] == [4]


def test_diff_json_is_schema_2_with_keyed_tables(tmp_path):
    a = base()
    b = fingerprint(nagle=_nagle(median_ms=0.2), backlog=_backlog(somaxconn=64))
    d = diff.run([write(tmp_path, "a.json", a), write(tmp_path, "b.json", b)]).to_dict()
    assert d["schema"] == 2 and d["probe"] == "diff"
    t = {x["id"]: x for x in d["tables"]}
    assert t["differences"]["keys"] == ["probe", "table", "row", "column"]
    json.dumps(d)  # serialisable as is


# ---- hostile input ---------------------------------------------------------------------


def _deep(n: int) -> str:
    return "[" * n + "]" * n


def _hostile(tmp_path: Path) -> dict[str, str]:
    """Name -> path of a file diff must refuse."""
    good = base()
    cases: dict[str, Any] = {
        "empty": b"",
        "binary": random.Random(1).randbytes(4096),
        "nul": b'{"schema": 2\x00}',
        "utf16": json.dumps(good).encode("utf-16"),
        "truncated": json.dumps(good)[:500].encode(),
        "array": b"[]",
        "string": b'"fingerprint"',
        "number": b"2",
        "deep": _deep(200000).encode(),
        "deep_inside": json.dumps({**good, "settings": {"x": json.loads(_deep(40))}}).encode(),
        "nan": json.dumps({**good, "duration_s": float("nan")}).encode(),
        "huge_int": ('{"schema": ' + "9" * 5000 + "}").encode(),
        "report": json.dumps(good["probes"]["nagle"]).encode(),
        "schema1": json.dumps({**good, "schema": 1}).encode(),
        "probes_list": json.dumps({**good, "probes": []}).encode(),
        "rows_object": _mutate(good, lambda t: t.__setitem__("rows", {})),
        "row_list": _mutate(good, lambda t: t.__setitem__("rows", [[1, 2]])),
        "bad_kind": _mutate(good, lambda t: t["columns"][0].__setitem__("kind", "fuzzy")),
        "bad_key": _mutate(good, lambda t: t.__setitem__("keys", ["nope"])),
        "no_tables": json.dumps(
            {**good, "probes": {"nagle": {"schema": 2, "probe": "nagle"}}}
        ).encode(),
        "setting_object": json.dumps({**good, "settings": {"net.x": {"a": 1}}}).encode(),
        "bad_status": json.dumps({**good, "probes": {"x": {"error": "e", "status": "3"}}}).encode(),
    }
    out = {}
    for name, data in cases.items():
        p = tmp_path / f"{name}.json"
        p.write_bytes(data)
        out[name] = str(p)
    out["missing"] = str(tmp_path / "missing.json")
    out["newline_name"] = str(tmp_path / "two\nlines.json")  # missing, with a newline
    out["directory"] = str(tmp_path)
    big = tmp_path / "big.json"
    with open(big, "wb") as f:
        f.truncate(diff.MAX_BYTES + 1)  # sparse: nothing is written or read
    out["too_big"] = str(big)
    out["dev_null"] = "/dev/null"
    return out


def _mutate(doc: dict[str, Any], change: Any) -> bytes:
    d = copy.deepcopy(doc)
    change(d["probes"]["nagle"]["tables"][0])
    return json.dumps(d).encode()


HOSTILE = [
    "empty",
    "binary",
    "nul",
    "utf16",
    "truncated",
    "array",
    "string",
    "number",
    "deep",
    "deep_inside",
    "nan",
    "huge_int",
    "report",
    "schema1",
    "probes_list",
    "rows_object",
    "row_list",
    "bad_kind",
    "bad_key",
    "no_tables",
    "setting_object",
    "bad_status",
    "missing",
    "newline_name",
    "directory",
    "too_big",
    "dev_null",
]


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_input_exits_2_with_one_line(case, tmp_path, capsys):
    good = write(tmp_path, "good.json", base())
    bad = _hostile(tmp_path)[case]
    for args in ([good, bad], [bad, good]):
        code = main(["diff", *args])
        out, err = capsys.readouterr()
        assert code == 2, (case, out, err)
        assert out == "" and "Traceback" not in err
        assert len(err.splitlines()) == 1, err


@pytest.mark.parametrize("case", ["report", "deep", "too_big", "binary", "nan"])
def test_hostile_messages_say_what_is_wrong(case, tmp_path):
    expected = {
        "report": "one probe's report",
        "deep": "nests too deeply",
        "too_big": "at most 64 MiB",
        "binary": "not UTF-8",
        "nan": "NaN",
    }[case]
    with pytest.raises(UsageError, match=expected):
        diff.load(_hostile(tmp_path)[case])


def test_fewer_than_two_files_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="at least two"):
        diff.run([write(tmp_path, "a.json", base())])


def _run_bounded(args: list[str]) -> subprocess.CompletedProcess[str]:
    """In a child with a timeout: a regression that reads a FIFO or /dev/zero would hang
    or eat memory, and must fail the test instead of the suite."""
    return subprocess.run(
        [sys.executable, "-m", "sockprobe", "diff", *args],
        capture_output=True,
        text=True,
        timeout=20,
    )


def test_a_fifo_a_socket_and_dev_zero_are_refused_without_reading(tmp_path):
    good = write(tmp_path, "good.json", base())
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    sock_path = tmp_path / "sock.json"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(str(sock_path))
        for bad, what in [
            (str(fifo), "a FIFO"),
            ("/dev/zero", "a device"),
            (str(sock_path), "a socket"),
        ]:
            r = _run_bounded([good, bad])
            assert r.returncode == 2, r.stderr
            assert r.stdout == "" and len(r.stderr.splitlines()) == 1 and what in r.stderr


def _kernel(somaxconn: int, udp_here: str) -> dict[str, Any]:
    rep = Report("kernel")
    rep.environment = environment({"net.core.somaxconn": somaxconn, "net.ipv4.udp_mem": "1 2 3"})
    t = rep.table("settings", "Settings", [col("setting"), col("value"), col("here")])
    t.add("net.core.somaxconn", somaxconn, f"listen(n) is clamped to {somaxconn}")
    t.add("net.ipv4.udp_mem", "1 2 3", udp_here)
    return rep.to_dict()


def test_a_row_that_is_a_setting_is_explained_only_by_that_setting(tmp_path):
    a = fingerprint(kernel=_kernel(4096, "pressure at 2 pages"))
    b = fingerprint(kernel=_kernel(64, "pressure at 3 pages"))
    rep = diff.run([write(tmp_path, "a.json", a), write(tmp_path, "b.json", b)])
    by_row: dict[str, list[str]] = {}
    for r in rep.get("differences").rows:
        by_row.setdefault(r["row"], []).append(r["explained_by"])
    # somaxconn's own row (value and text) is under the setting; udp_mem's is not.
    assert by_row["net.core.somaxconn"] == ["", "net.core.somaxconn", "net.core.somaxconn"]
    assert by_row["net.ipv4.udp_mem"] == [""]
    assert diff.lines(rep)[-1].startswith("kernel > settings > net.ipv4.udp_mem > here")
