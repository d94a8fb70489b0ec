"""Comparing two fingerprints: rows matched by key columns, cells by their column's kind
(exact, volatile within FACTOR or a floor, context never), settings one side did not
measure kept apart from differences, behaviour differences listed under the changed
settings that may explain them."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sockprobe.diff.read import ENV_KEYS, SETTINGS

FACTOR = 3.0
#: ...or closer than this absolute floor, by unit. The floor is half the shortest kernel
#: timer a volatile column exists to show: the 40 ms minimum delayed ACK (TCP_DELACK_MIN
#: and TCP_ATO_MIN, HZ/25, include/net/tcp.h). Two values closer than 20 ms cannot be one
#: run with that timer and one without, while a loaded host's scheduling delays (a busy
#: CPU ran a woken thread 11 ms late: issue 13) stay under it.
FLOORS = {"ms": 20.0, "s": 0.02, "us": 20000.0}
#: Counts (segments, calls) without a unit: a few either way is noise under load.
DEFAULT_FLOOR = 3.0


# ---- comparing two fingerprints --------------------------------------------------------


@dataclass(frozen=True)
class Difference:
    #: setting, probe, params, table, column, row, behaviour (an exact cell) or timing
    #: (a volatile cell beyond tolerance).
    kind: str
    probe: str
    table: str
    row: str
    column: str
    a: Any
    b: Any
    #: The changed settings that the probe of a behaviour difference read.
    explained_by: tuple[str, ...] = ()


@dataclass(frozen=True)
class NotMeasured:
    probe: str
    table: str
    row: str
    column: str
    #: "A", "B" or "A and B": which side has no measurement.
    side: str
    reason: str


@dataclass
class Comparison:
    differences: list[Difference] = field(default_factory=list)
    not_measured: list[NotMeasured] = field(default_factory=list)
    environment: list[tuple[str, Any, Any]] = field(default_factory=list)
    exact: int = 0
    tolerant: int = 0
    skipped: int = 0

    @property
    def equal(self) -> bool:
        return not self.differences


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v)


def within_tolerance(a: Any, b: Any, unit: str) -> bool:
    """Volatile cells: numbers within FACTOR of each other or within the unit's floor;
    text (a list of recv sizes, say) is not compared."""
    x, y = _number(a), _number(b)
    if x is None or y is None:
        return (x is None) == (y is None) or a is None or b is None
    if abs(x - y) <= FLOORS.get(unit, DEFAULT_FLOOR):
        return True
    lo, hi = sorted((abs(x), abs(y)))
    return (x >= 0) == (y >= 0) and lo > 0 and hi / lo <= FACTOR


def _same(a: Any, b: Any) -> bool:
    """Exact equality that keeps true apart from 1 and 1.0 apart from True."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return bool(a == b)


_KIND_ORDER = {"exact": 0, "volatile": 1, "context": 2}


def _weakest(ka: str, kb: str) -> str:
    """A column one side compares less strictly (a newer sockprobe made it context) is
    compared the less strict way."""
    return ka if _KIND_ORDER[ka] >= _KIND_ORDER[kb] else kb


def _rows_by_key(table: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Rows by the values of the table's key columns ("nagle/idle"); rows that share a
    key (they should not) are told apart by their order among those rows ("x#2")."""
    keys = table.get("keys") or []
    out: dict[str, dict[str, Any]] = {}
    seen: dict[str, int] = {}
    for row in table["rows"]:
        key = "/".join(str(row.get(k)) for k in keys)
        n = seen.get(key, 0) + 1
        seen[key] = n
        out[key if n == 1 else f"{key}#{n}"] = row
    return out


def _sysctls(rep: dict[str, Any] | None) -> set[str]:
    if not rep or "error" in rep:
        return set()
    return set((rep.get("environment") or {}).get("sysctls") or {})


def _ran(rep: dict[str, Any] | None) -> bool:
    return rep is not None and "error" not in rep


def _outcome(rep: dict[str, Any] | None) -> str:
    if rep is None:
        return "absent"
    if "error" in rep:
        return f"could not run (exit {rep.get('status')}): {rep['error']}"
    return "ran"


def compare(a: dict[str, Any], b: dict[str, Any]) -> Comparison:
    out = Comparison()
    for k in ENV_KEYS:
        if a.get(k) != b.get(k):
            out.environment.append((k, a.get(k), b.get(k)))
    pa: dict[str, Any] = a["probes"]
    pb: dict[str, Any] = b["probes"]
    changed = _compare_settings(a, b, pa, pb, out)
    for name in [*pa, *[n for n in pb if n not in pa]]:
        ra, rb = pa.get(name), pb.get(name)
        if ra is not None and rb is not None and _ran(ra) and _ran(rb):
            explained = tuple(s for s in changed if s in _sysctls(ra) | _sysctls(rb))
            _compare_probe(name, ra, rb, explained, out)
        elif not (ra is not None and rb is not None and ra.get("status") == rb.get("status")):
            # Ran on one side only, or failed differently (by exit status: the messages
            # carry run values). Its tables are not compared cell by cell.
            out.differences.append(
                Difference("probe", name, "", "", "", _outcome(ra), _outcome(rb))
            )
    # A row that is itself a setting (the kernel probe's table has one per setting) is
    # explained only by that setting changing, not by another one its probe also read.
    names = set(a.get(SETTINGS) or {}) | set(b.get(SETTINGS) or {})
    out.differences = [
        dataclasses.replace(d, explained_by=(d.row,) if d.row in changed else ())
        if d.explained_by and d.row in names
        else d
        for d in out.differences
    ]
    return out


def _na_reason(probes: dict[str, Any], setting: str) -> str:
    for rep in probes.values():
        if _ran(rep):
            reason = ((rep.get("environment") or {}).get("sysctls_na") or {}).get(setting)
            if reason:
                return f"n/a: {reason}"
    return "n/a: it could not be read there"


def _compare_settings(
    a: dict[str, Any], b: dict[str, Any], pa: dict[str, Any], pb: dict[str, Any], out: Comparison
) -> list[str]:
    """The settings the probes read; returns the names of those that differ. A value is
    measured when present and not null (null: the kernel would not let it be read)."""
    sa: dict[str, Any] = a.get(SETTINGS) or {}
    sb: dict[str, Any] = b.get(SETTINGS) or {}
    changed: list[str] = []
    for k in sorted(set(sa) | set(sb)):
        out.exact += 1
        in_a, in_b = k in sa, k in sb
        va, vb = sa.get(k), sb.get(k)
        ma, mb = in_a and va is not None, in_b and vb is not None
        if ma and mb:
            if not _same(va, vb):
                changed.append(k)
                out.differences.append(Difference("setting", "", SETTINGS, k, "value", va, vb))
            continue
        if not ma and not mb:
            if in_a != in_b:
                out.not_measured.append(
                    NotMeasured(
                        "", SETTINGS, k, "value", "A and B", "n/a on one, absent on the other"
                    )
                )
            continue
        missing = "A" if not ma else "B"
        mine, theirs = (pa, pb) if missing == "A" else (pb, pa)
        if in_a if missing == "A" else in_b:  # there, but null: n/a
            out.not_measured.append(
                NotMeasured("", SETTINGS, k, "value", missing, _na_reason(mine, k))
            )
            continue
        # Absent on one side: not measured when every probe that reads it (on the side
        # that has it) did not run on this one; otherwise that kernel lacks it.
        readers = [n for n, r in theirs.items() if k in _sysctls(r)]
        failed = [n for n in readers if not _ran(mine.get(n))]
        if readers and len(failed) == len(readers):
            out.not_measured.append(
                NotMeasured(
                    "",
                    SETTINGS,
                    k,
                    "value",
                    missing,
                    f"read by {', '.join(failed)}, which did not run on {missing}",
                )
            )
            continue
        changed.append(k)
        out.differences.append(
            Difference(
                "setting",
                "",
                SETTINGS,
                k,
                "value",
                va if in_a else "absent",
                vb if in_b else "absent",
            )
        )
    return changed


def _compare_probe(
    name: str, ra: dict[str, Any], rb: dict[str, Any], explained: tuple[str, ...], out: Comparison
) -> None:
    params_a, params_b = ra.get("params") or {}, rb.get("params") or {}
    if params_a != params_b:
        names = sorted(
            k for k in set(params_a) | set(params_b) if params_a.get(k) != params_b.get(k)
        )
        out.differences.append(
            Difference(
                "params",
                name,
                "",
                "",
                ",".join(names),
                {k: params_a.get(k) for k in names},
                {k: params_b.get(k) for k in names},
            )
        )
    tables_b = {t["id"]: t for t in rb["tables"]}
    ids_a = {t["id"] for t in ra["tables"]}
    for ta in ra["tables"]:
        tb = tables_b.get(ta["id"])
        if tb is None:
            out.differences.append(Difference("table", name, ta["id"], "", "", "present", "absent"))
        else:
            _compare_table(name, ta, tb, explained, out)
    for tid in tables_b:
        if tid not in ids_a:
            out.differences.append(Difference("table", name, tid, "", "", "absent", "present"))


def _compare_table(
    probe: str, ta: dict[str, Any], tb: dict[str, Any], explained: tuple[str, ...], out: Comparison
) -> None:
    """Rows are matched by their key columns, never by position; a row or column on one
    side only is reported once as such."""
    tid = ta["id"]
    if (ta.get("keys") or []) != (tb.get("keys") or []):
        out.differences.append(
            Difference("table", probe, tid, "", "(keys)", ta.get("keys"), tb.get("keys"))
        )
        return
    cols_a = {c["key"]: c for c in ta["columns"]}
    cols_b = {c["key"]: c for c in tb["columns"]}
    keys = ta.get("keys") or []
    if keys and all(
        cols_a.get(k, {}).get("kind") == "context" or cols_b.get(k, {}).get("kind") == "context"
        for k in keys
    ):
        # Rows identified by context values (a host's current destinations, its
        # processes) are a snapshot of the host, not a behaviour: never compared.
        out.skipped += len(ta["rows"]) * len(ta["columns"])
        return
    for k in cols_a:
        if k not in cols_b:
            out.differences.append(Difference("column", probe, tid, "", k, "present", "absent"))
    for k in cols_b:
        if k not in cols_a:
            out.differences.append(Difference("column", probe, tid, "", k, "absent", "present"))
    common = [(k, c, cols_b[k]) for k, c in cols_a.items() if k in cols_b]
    rows_a, rows_b = _rows_by_key(ta), _rows_by_key(tb)
    for key, row_a in rows_a.items():
        row_b = rows_b.get(key)
        if row_b is None:
            out.differences.append(Difference("row", probe, tid, key, "", "present", "absent"))
            continue
        na_a, na_b = row_a.get("na") or {}, row_b.get("na") or {}
        for ckey, ca, cb in common:
            kind = _weakest(ca["kind"], cb["kind"])
            if kind == "context":
                out.skipped += 1
                continue
            if ckey in na_a or ckey in na_b:
                if not (ckey in na_a and ckey in na_b):
                    side, reason = ("A", na_a[ckey]) if ckey in na_a else ("B", na_b[ckey])
                    out.not_measured.append(NotMeasured(probe, tid, key, ckey, side, str(reason)))
                continue
            va, vb = row_a.get(ckey), row_b.get(ckey)
            if kind == "volatile":
                out.tolerant += 1
                if not within_tolerance(va, vb, ca.get("unit", "")):
                    out.differences.append(
                        Difference("timing", probe, tid, key, ckey, va, vb, explained)
                    )
            else:
                out.exact += 1
                if not _same(va, vb):
                    out.differences.append(
                        Difference("behaviour", probe, tid, key, ckey, va, vb, explained)
                    )
    for key in rows_b:
        if key not in rows_a:
            out.differences.append(Difference("row", probe, tid, key, "", "absent", "present"))


def ordered(diffs: Sequence[Difference]) -> list[Difference]:
    """Settings first, each followed by the differences it may explain (listed under the
    first changed setting their probe read); then the rest, grouped by probe in the
    fingerprint's order."""
    settings = [d for d in diffs if d.kind == "setting"]
    rest = [d for d in diffs if d.kind != "setting"]
    out: list[Difference] = []
    for s in settings:
        out.append(s)
        out.extend(d for d in rest if d.explained_by[:1] == (s.row,))
    probes = list(dict.fromkeys(d.probe for d in rest))
    for p in probes:
        out.extend(d for d in rest if d.probe == p and not d.explained_by)
    return out
