"""`sockprobe diff A.json B.json`: what differs between two hosts' fingerprints.

Settings, limits, errno names, bind results, admitted connections and truncation sizes
are exact: they must match between two runs on one host. Columns a probe marks
*volatile* (durations, segment and drop counts, timers) depend on timing and load, so
they are compared with a stated tolerance, and reported as timing differences. Columns
marked *context* (host-wide counter deltas, counts that depend on thread scheduling) are
not compared at all.
A single probe's report (`sockprobe nagle --json`) can be compared too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sockprobe.fingerprint import FINGERPRINT_KIND
from sockprobe.report import SCHEMA_VERSION, Report, col
from sockprobe.status import UsageError

#: Volatile numbers are equal when within this factor of each other...
FACTOR = 3.0
#: ...or closer than this absolute floor, by unit. Loopback timings of microseconds jump
#: by large factors when the machine is busy (a 0.14 ms maximum became 3.4 ms under load),
#: while the behaviours worth flagging differ by tens of milliseconds (a 40 ms delayed
#: ACK against none); a count of a few segments moves by a few.
FLOORS = {"ms": 10.0, "s": 0.1, "us": 10000.0}
DEFAULT_FLOOR = 3.0

ENV_KEYS = ("platform", "system", "kernel_release", "machine", "python")


@dataclass(frozen=True)
class Difference:
    kind: str  # environment, setting, probe, params, table, measured, timing
    where: str
    a: Any
    b: Any


def load(path: str) -> dict[str, Any]:
    """Read a fingerprint (or one probe's report, wrapped as a fingerprint)."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path} is not valid JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA_VERSION:
        raise UsageError(f"{path} is not a sockprobe schema 2 document")
    if doc.get("kind") == FINGERPRINT_KIND and isinstance(doc.get("probes"), dict):
        return doc
    if isinstance(doc.get("probe"), str) and isinstance(doc.get("tables"), list):
        env = doc.get("environment") or {}
        return {
            "kind": FINGERPRINT_KIND,
            **{k: env.get(k) for k in ENV_KEYS},
            "settings": env.get("sysctls") or {},
            "probes": {doc["probe"]: doc},
        }
    raise UsageError(f"{path} is neither a fingerprint (sockprobe all --json) nor a report")


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v)


def within_tolerance(a: Any, b: Any, unit: str) -> bool:
    """Volatile cells: numbers within FACTOR of each other or within the unit's floor;
    text (such as a list of recv sizes) is not compared."""
    x, y = _number(a), _number(b)
    if x is None or y is None:
        return (x is None) == (y is None) or a is None or b is None
    if abs(x - y) <= FLOORS.get(unit, DEFAULT_FLOOR):
        return True
    lo, hi = sorted((abs(x), abs(y)))
    return (x >= 0) == (y >= 0) and lo > 0 and hi / lo <= FACTOR


def _row_key(table: dict[str, Any], row: dict[str, Any]) -> str:
    """The row's identity: the values of the table's key columns ("nagle/idle")."""
    return "/".join(str(row.get(k)) for k in table.get("keys") or [])


def _compare_tables(
    probe: str, ta: dict[str, Any], tb: dict[str, Any], out: list[Difference], counts: list[int]
) -> None:
    """Rows are matched by their key columns, never by position; a row on one side only
    is reported once as such."""
    where = f"{probe} › {ta['id']}"
    cols_a = {c["key"]: c for c in ta["columns"]}
    cols_b = {c["key"]: c for c in tb["columns"]}
    if list(cols_a) != list(cols_b) or ta.get("keys") != tb.get("keys"):
        out.append(Difference("table", f"{where} (columns)", list(cols_a), list(cols_b)))
        return
    rows_b: dict[str, dict[str, Any]] = {}
    for rb in tb["rows"]:
        rows_b.setdefault(_row_key(tb, rb), rb)
    seen: set[str] = set()
    for ra in ta["rows"]:
        key = _row_key(ta, ra)
        if key in seen:
            continue
        seen.add(key)
        rb = rows_b.get(key)
        if rb is None:
            out.append(Difference("row", f"{where} › {key}", "present", "absent"))
            continue
        for ckey, c in cols_a.items():
            a, b = ra.get(ckey), rb.get(ckey)
            if c["kind"] == "context":
                counts[2] += 1
            elif c["kind"] == "volatile":
                counts[1] += 1
                if not within_tolerance(a, b, c.get("unit", "")):
                    out.append(Difference("timing", f"{where} › {key} › {ckey}", a, b))
            else:
                counts[0] += 1
                if a != b:
                    out.append(Difference("measured", f"{where} › {key} › {ckey}", a, b))
    for key in rows_b:
        if key not in seen:
            out.append(Difference("row", f"{where} › {key}", "absent", "present"))


def compare(a: dict[str, Any], b: dict[str, Any]) -> tuple[list[Difference], list[int]]:
    """All differences, and how many cells were compared exactly, with tolerance, and
    not at all (context)."""
    out: list[Difference] = []
    counts = [0, 0, 0]
    for k in ENV_KEYS:
        if a.get(k) != b.get(k):
            out.append(Difference("environment", k, a.get(k), b.get(k)))
    sa, sb = a.get("settings") or {}, b.get("settings") or {}
    for k in sorted(set(sa) | set(sb)):
        counts[0] += 1
        if sa.get(k) != sb.get(k):
            out.append(Difference("setting", k, sa.get(k, "absent"), sb.get(k, "absent")))
    pa, pb = a["probes"], b["probes"]
    for name in [*pa, *[n for n in pb if n not in pa]]:
        ra, rb = pa.get(name), pb.get(name)
        if ra is None or rb is None:
            out.append(
                Difference("probe", name, "ran" if ra else "absent", "ran" if rb else "absent")
            )
            continue
        if "error" in ra or "error" in rb:
            if ra.get("error") != rb.get("error"):
                out.append(
                    Difference("probe", name, ra.get("error", "ran"), rb.get("error", "ran"))
                )
            continue
        if ra.get("params") != rb.get("params"):
            out.append(Difference("params", name, ra.get("params"), rb.get("params")))
        tables_b = {t["id"]: t for t in rb.get("tables", [])}
        for ta in ra.get("tables", []):
            tb = tables_b.pop(ta["id"], None)
            if tb is None:
                out.append(Difference("table", f"{name} › {ta['id']}", "present", "absent"))
            else:
                _compare_tables(name, ta, tb, out, counts)
        for title in tables_b:
            out.append(Difference("table", f"{name} › {title}", "absent", "present"))
    return out, counts


def run(path_a: str, path_b: str) -> Report:
    a, b = load(path_a), load(path_b)
    diffs, (exact, tolerant, skipped) = compare(a, b)
    rep = Report("diff", params={"a": path_a, "b": path_b})
    t = rep.table(
        "differences",
        "Differences",
        [col("kind"), col("where"), col("a", "A"), col("b", "B")],
        keys=["kind", "where"],
    )
    for d in diffs:
        t.add(d.kind, d.where, _show(d.a), _show(d.b))
    n_timing = sum(1 for d in diffs if d.kind == "timing")
    if diffs:
        rep.summary = (
            f"{len(diffs)} difference(s): {len(diffs) - n_timing} exact, "
            f"{n_timing} timing beyond tolerance"
        )
    else:
        rep.summary = "equal"
    rep.findings.append(
        f"Compared {exact} values exactly and {tolerant} timing-dependent values within a "
        f"factor of {FACTOR:g} (or an absolute floor: "
        + ", ".join(f"{v:g} {u}" for u, v in FLOORS.items())
        + f", {DEFAULT_FLOOR:g} for counts); {skipped} context values (host-wide counters, "
        "scheduling-dependent counts) were not compared."
    )
    for key in ("kernel_release", "platform"):
        if a.get(key) != b.get(key):
            rep.findings.append(f"{key}: {a.get(key)} vs {b.get(key)}.")
    rep.notes.append(
        "Exact: settings, limits, errno names, bind results, admitted connections, truncation "
        "sizes. With tolerance: columns each probe marks as timing-dependent (durations, "
        "segment and drop counts, timers); their text values are not compared. Not compared: "
        "columns marked as context (host-wide counter deltas, counts that depend on thread "
        "scheduling)."
    )
    return rep


def _show(v: Any) -> str:
    if isinstance(v, (dict, list)):
        text = json.dumps(v, sort_keys=True)
        return text if len(text) <= 80 else text[:77] + "..."
    return str(v)
