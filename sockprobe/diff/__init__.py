"""`sockprobe diff A.json B.json [C.json ...]`: what differs between hosts' fingerprints.

Two fingerprints: every difference once, in the order a reader needs them. A kernel
setting that differs comes first, with the behaviour differences it may explain listed
after it (those in probes whose report lists that setting among the sysctls it read);
the behaviour differences no changed setting explains follow, grouped by probe. Three or
more (the fleet view): the fingerprints are grouped by identical behaviour, and each
group's differences from the largest group are listed once.

How cells compare is the column's `kind` (report.py): `exact` columns must be equal;
`volatile` ones (timers, durations, segment counts) are equal within a tolerance;
`context` ones (namespace-wide counter deltas, scheduler-dependent values) are never
compared. A value one side did not measure (its probe could not run there, the platform
lacks it: `null` with a reason in the row's `na`) is "not measured on A", never a
difference, and so is a value n/a on one side and absent on the other.

Input is untrusted: only regular files of at most MAX_BYTES are read (a FIFO or a device
would block or never end), through a size-capped read, then parsed and checked for the
fingerprint's shape, each failure a UsageError (exit 2) naming the file and what is wrong.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sockprobe.diff.compare import (
    DEFAULT_FLOOR,
    FACTOR,
    FLOORS,
    Comparison,
    Difference,
    NotMeasured,
    ordered,
)
from sockprobe.diff.compare import compare as compare
from sockprobe.diff.compare import within_tolerance as within_tolerance
from sockprobe.diff.read import MAX_BYTES as MAX_BYTES
from sockprobe.diff.read import _name
from sockprobe.diff.read import load as load
from sockprobe.probes import plural
from sockprobe.report import Report, col, environment
from sockprobe.status import UsageError

# ---- the Report --------------------------------------------------------------------------


def _show(v: Any) -> str | int | float | bool | None:
    """A cell for the differences table: scalars as they are, structures as short JSON."""
    if isinstance(v, (dict, list)):
        text = json.dumps(v, sort_keys=True)
        return text if len(text) <= 60 else text[:57] + "..."
    if isinstance(v, str) and len(v) > 60:
        return v[:57] + "..."
    return v  # type: ignore[no-any-return]


@dataclass
class DiffReport(Report):
    """The diff's Report, with the command's exit status: 0 equal, 1 different."""

    exit_status: int = 0


_DIFF_COLUMNS = [
    col("probe"),
    col("table"),
    col("row"),
    col("column"),
    col("kind"),
    col("a", "A"),
    col("b", "B"),
    col("explained_by", "explained by"),
]
_NM_COLUMNS = [col("probe"), col("table"), col("row"), col("column"), col("side"), col("reason")]
_KEYS = ["probe", "table", "row", "column"]


def _tolerance_finding(c: Comparison) -> str:
    return (
        f"Compared {c.exact} values exactly and {c.tolerant} timing-dependent values within a "
        f"factor of {FACTOR:g} or an absolute floor ("
        + ", ".join(f"{v:g} {u}" for u, v in FLOORS.items())
        + f", {DEFAULT_FLOOR:g} for counts); {c.skipped} context values (namespace-wide "
        "counters, scheduling-dependent values) were not compared."
    )


def _difference_findings(c: Comparison, side_a: str, side_b: str) -> list[str]:
    out = []
    for d in c.differences:
        if d.kind != "setting":
            continue
        n = sum(1 for e in c.differences if d.row in e.explained_by)
        probes = sorted({e.probe for e in c.differences if d.row in e.explained_by})
        tail = (
            f"; the probes that read it ({', '.join(probes)}) differ in {plural(n, 'value')}, "
            "listed under it"
            if n
            else "; no behaviour the probes measured differs with it"
        )
        out.append(f"{d.row} is {d.a} on {side_a} and {d.b} on {side_b}{tail}.")
    unexplained: dict[str, int] = {}
    for d in c.differences:
        if d.kind != "setting" and not d.explained_by:
            unexplained[d.probe] = unexplained.get(d.probe, 0) + 1
    for probe, n in unexplained.items():
        out.append(f"{probe}: {plural(n, 'difference')} that no changed setting explains.")
    for k, va, vb in c.environment:
        out.append(f"{k}: {va} on {side_a}, {vb} on {side_b} (not counted as a difference).")
    if c.not_measured:
        out.append(
            f"{plural(len(c.not_measured), 'value')} measured on one side only (listed as "
            "not measured, not as differences)."
        )
    return out


def _summary(c: Comparison) -> str:
    if c.equal:
        return "equal: no behaviour, setting or timing differs beyond tolerance"
    kinds: dict[str, int] = {}
    for d in c.differences:
        kinds[d.kind] = kinds.get(d.kind, 0) + 1
    parts = ", ".join(f"{n} {k}" for k, n in kinds.items())
    return f"{plural(len(c.differences), 'difference')}: {parts}"


def _add_differences(table: Any, diffs: Sequence[Difference], group: int | None = None) -> None:
    for d in ordered(diffs):
        cells = dict(
            probe=d.probe,
            table=d.table,
            row=d.row,
            column=d.column,
            kind=d.kind,
            a=_show(d.a),
            b=_show(d.b),
            explained_by=", ".join(d.explained_by),
        )
        table.add(**({"group": group} if group is not None else {}), **cells)


def _add_not_measured(table: Any, items: Sequence[NotMeasured], group: int | None = None) -> None:
    for m in items:
        cells = dict(
            probe=m.probe,
            table=m.table,
            row=m.row,
            column=m.column,
            side=m.side,
            reason=m.reason,
        )
        table.add(**({"group": group} if group is not None else {}), **cells)


_NOTE = (
    "Exact columns (settings, limits, errno names, bind results, admitted connections) "
    "must be equal; volatile columns (timers, durations, segment counts) are equal within "
    "the stated tolerance; context columns (namespace-wide counter deltas, values that "
    "measure the scheduler) are never compared. A value one side could not measure is "
    "listed as not measured, never as a difference."
)


def _pair(paths: Sequence[str], docs: Sequence[dict[str, Any]]) -> DiffReport:
    c = compare(docs[0], docs[1])
    rep = DiffReport("diff", params={"files": list(paths)}, exit_status=0 if c.equal else 1)
    _add_differences(
        rep.table("differences", "Differences (A, B)", _DIFF_COLUMNS, _KEYS), c.differences
    )
    _add_not_measured(
        rep.table("not_measured", "Measured on one side only", _NM_COLUMNS, _KEYS), c.not_measured
    )
    rep.summary = _summary(c)
    rep.findings = [
        f"A is {_name(paths[0])}, B is {_name(paths[1])}.",
        *_difference_findings(c, "A", "B"),
        _tolerance_finding(c),
    ]
    rep.notes.append(_NOTE)
    return rep


def _fleet(paths: Sequence[str], docs: Sequence[dict[str, Any]]) -> DiffReport:
    """Group by identical behaviour (equal to the group's first member), then compare
    each group's first member with the largest group's."""
    groups: list[list[int]] = []
    for i, doc in enumerate(docs):
        for g in groups:
            if compare(docs[g[0]], doc).equal:
                g.append(i)
                break
        else:
            groups.append([i])
    groups.sort(key=lambda g: (-len(g), g[0]))
    ref = groups[0]
    rep = DiffReport("diff", params={"files": list(paths)}, exit_status=int(len(groups) > 1))
    diff_t = rep.table(
        "differences",
        "Each group's differences from group 1 (the largest)",
        [
            col("group"),
            *_DIFF_COLUMNS[:5],
            col("a", "group 1"),
            col("b", "this group"),
            _DIFF_COLUMNS[7],
        ],
        ["group", *_KEYS],
    )
    groups_t = rep.table(
        "groups",
        "Fingerprints grouped by identical behaviour",
        [col("group"), col("hosts"), col("reference"), col("files")],
        ["group"],
    )
    nm_t = rep.table(
        "not_measured", "Measured on one side only", [col("group"), *_NM_COLUMNS], ["group", *_KEYS]
    )
    findings: list[str] = []
    for n, g in enumerate(groups, 1):
        groups_t.add(
            group=n, hosts=len(g), reference=(n == 1), files=", ".join(_name(paths[i]) for i in g)
        )
        if n == 1:
            continue
        c = compare(docs[ref[0]], docs[g[0]])
        _add_differences(diff_t, c.differences, n)
        _add_not_measured(nm_t, c.not_measured, n)
        findings.append(f"Group {n} ({len(g)} of {len(docs)}): {_summary(c)}.")
        findings.extend(f"Group {n}: {f}" for f in _difference_findings(c, "group 1", f"group {n}"))
    if len(groups) == 1:
        rep.summary = f"equal: all {len(docs)} fingerprints behave identically"
    else:
        rep.summary = (
            f"{len(docs)} fingerprints in {len(groups)} behaviour groups; the largest, group 1, "
            f"holds {len(ref)}"
        )
    rep.findings = findings
    rep.notes.append(_NOTE)
    return rep


def run(paths: Sequence[str]) -> DiffReport:
    """Compare two fingerprints (pairwise report) or more (fleet report). Both reports'
    first table is `differences`; `exit_status` is 0 when equal, 1 when they differ."""
    files = list(paths)
    if len(files) < 2:
        raise UsageError("diff needs at least two fingerprints (sockprobe all --json > A.json)")
    docs = [load(p) for p in files]
    try:
        rep = _pair(files, docs) if len(files) == 2 else _fleet(files, docs)
    except RecursionError:  # cannot happen below MAX_DEPTH; kept as a one-line refusal
        raise UsageError("a fingerprint nests too deeply to compare") from None
    rep.environment = environment()
    rep.get("differences").line = _line
    return rep


def lines(report: Report) -> list[str]:
    """One line per difference, in the differences table's order (a changed setting, then
    indented under it the behaviours it may explain; then the rest by probe), for a
    renderer that fits them to the terminal: `setting net.core.somaxconn: 4096 -> 64`,
    `  backlog > admission > 128 > admitted: 129 -> 65`. Fleet rows start `group N:`.
    Text only, built from the table's cells; printing stays in render.py."""
    return [_line(r) for r in report.get("differences").rows]


def _line(r: dict[str, Any]) -> str:
    where = " > ".join(str(r[k]) for k in ("probe", "table", "row", "column") if r.get(k))
    if r.get("kind") == "setting":
        where = f"setting {r['row']}"
    indent = "  " if r.get("explained_by") else ""
    group = f"group {r['group']}: " if "group" in r else ""
    return f"{group}{indent}{where}: {_text(r.get('a'))} -> {_text(r.get('b'))}"


def _text(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def differs(report: Report) -> bool:
    """Whether the fingerprints differ (exit 1) or are equal (exit 0)."""
    return bool(report.get("differences").rows)
