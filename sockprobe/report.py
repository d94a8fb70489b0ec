"""The Report a probe returns: tables of measured values, findings, notes, charts.

`Report.to_dict()` is JSON schema 2 (`schema/sockprobe.schema.json` describes it; the
README documents each table's keys). Probes build Reports and never print; `render.py`
is the only place that turns one into text.

A table is identified by a stable `id` (`admission`, `matrix`), its columns by snake_case
keys that never embed a run's values (`port`, not `port 18401`), and its rows are keyed
by column key. A value that could not be measured is an `NA` cell: `null` in JSON with
the reason in the row's `na` object, `n/a` in a table with the reason under it.

Each column has a `kind` that tells `sockprobe diff` how to compare it:
- `exact`: behaviour (errno names, admitted counts, settings): must match;
- `volatile`: timing and load (durations, segment counts): compared with a tolerance;
- `context`: namespace-wide counter deltas, values that measure the scheduler: never
  compared. A table whose key columns are context (this host's current destinations,
  its processes) is a snapshot of the host, and diff skips it whole.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

SCHEMA_VERSION = 2

Kind = Literal["exact", "volatile", "context"]
EXACT: Kind = "exact"
VOLATILE: Kind = "volatile"
CONTEXT: Kind = "context"
KINDS: tuple[Kind, ...] = (EXACT, VOLATILE, CONTEXT)

_KEY = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class NA:
    """A value this platform or run could not measure, with the reason.

    Rendered as `n/a` in tables (the reason is printed under the table) and as `null`
    in JSON with the reason in the row's `na` object, so a reader never mistakes it for
    a zero and `jq add` still works on the column.
    """

    reason: str

    def __str__(self) -> str:
        return "n/a"


Cell = str | int | float | bool | None | NA


@dataclass(frozen=True)
class Column:
    """One column: `key` (snake_case, stable across runs), the `label` people read,
    its `unit` ("" where none) and its `kind` for `sockprobe diff`."""

    key: str
    label: str = ""
    unit: str = ""
    kind: Kind = EXACT

    def __post_init__(self) -> None:
        if not _KEY.match(self.key):
            raise ValueError(f"column key {self.key!r} is not snake_case")
        if self.kind not in KINDS:
            raise ValueError(f"column {self.key!r}: kind {self.kind!r} is not one of {KINDS}")
        if not self.label:
            object.__setattr__(self, "label", self.key.replace("_", " "))

    def to_dict(self) -> dict[str, str]:
        return {"key": self.key, "label": self.label, "unit": self.unit, "kind": self.kind}


def col(key: str, label: str = "", unit: str = "", kind: Kind = EXACT) -> Column:
    """Shorthand for Column: `col("rtt_ms", "round trip", "ms", VOLATILE)`."""
    return Column(key, label, unit, kind)


Row = dict[str, Cell]


@dataclass
class Table:
    """A table of measured values. `keys` name the columns that identify a row (by
    default the first column); `sockprobe diff` matches rows by them."""

    id: str
    title: str
    columns: list[Column]
    keys: list[str] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)
    #: A table of per-event detail (one row per round, per call): always in JSON and
    #: CSV, in the table format only with --explain, so the first screen stays short.
    detail: bool = False
    #: One line per row for a terminal too narrow for the columns (diff: "setting
    #: net.core.somaxconn: 4096 -> 64"); None: the row becomes a record instead.
    line: Callable[[Row], str] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not _KEY.match(self.id):
            raise ValueError(f"table id {self.id!r} is not snake_case")
        names = [c.key for c in self.columns]
        if len(set(names)) != len(names):
            raise ValueError(f"table {self.id!r}: duplicate column keys in {names}")
        if not self.keys and self.columns:
            self.keys = [self.columns[0].key]
        unknown = set(self.keys) - set(names)
        if unknown:
            raise ValueError(f"table {self.id!r}: key columns {sorted(unknown)} not in columns")

    @property
    def column_keys(self) -> list[str]:
        return [c.key for c in self.columns]

    def column(self, key: str) -> Column:
        for c in self.columns:
            if c.key == key:
                return c
        raise KeyError(f"table {self.id!r} has no column {key!r}")

    def add(self, *cells: Cell, **named: Cell) -> Row:
        """Append a row: cells in column order, or by key (missing keys are None)."""
        if cells and named:
            raise ValueError(f"table {self.id!r}: give cells by position or by key, not both")
        if cells:
            if len(cells) != len(self.columns):
                raise ValueError(
                    f"table {self.id!r}: row of {len(cells)} cells for {len(self.columns)} columns"
                )
            row: Row = dict(zip(self.column_keys, cells))
        else:
            unknown = set(named) - set(self.column_keys)
            if unknown:
                raise ValueError(f"table {self.id!r}: no columns {sorted(unknown)}")
            row = {k: named.get(k) for k in self.column_keys}
        self.rows.append(row)
        return row

    def find(self, **match: Cell) -> Row:
        """The one row whose cells equal `match` (KeyError if none or several)."""
        found = [r for r in self.rows if all(r.get(k) == v for k, v in match.items())]
        if len(found) != 1:
            raise KeyError(f"table {self.id!r}: {len(found)} rows match {match}")
        return found[0]

    def values(self, key: str) -> list[Cell]:
        self.column(key)
        return [r.get(key) for r in self.rows]

    def na_reasons(self) -> list[str]:
        return sorted({c.reason for row in self.rows for c in row.values() if isinstance(c, NA)})

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "columns": [c.to_dict() for c in self.columns],
            "keys": list(self.keys),
            "rows": [_row_json(r) for r in self.rows],
        }


def _row_json(row: Row) -> dict[str, Any]:
    out: dict[str, Any] = {}
    na: dict[str, str] = {}
    for k, v in row.items():
        if isinstance(v, NA):
            out[k] = None
            na[k] = v.reason
        else:
            out[k] = v
    if na:
        out["na"] = na
    return out


@dataclass
class Bars:
    """A bar chart: one bar per label, each made of named segments drawn side by side
    in the bar (stacked), e.g. admitted / waiting / dropped per listen(n). Drawn in the
    table format only, never in JSON or CSV: the tables carry the same numbers."""

    id: str
    title: str
    unit: str
    #: (label, [(segment name, value), ...]) per bar.
    bars: list[tuple[str, list[tuple[str, float]]]] = field(default_factory=list)
    log: bool = False

    def add(self, label: str, *segments: tuple[str, float]) -> None:
        self.bars.append((label, list(segments)))


@dataclass
class Histogram:
    """Samples per series binned on a shared axis (log by default: microseconds beside a
    40 ms cluster), drawn in the table format only."""

    id: str
    title: str
    unit: str
    series: list[tuple[str, list[float]]] = field(default_factory=list)
    log: bool = True

    def add(self, label: str, samples: Iterable[float]) -> None:
        self.series.append((label, [float(s) for s in samples]))


Chart = Bars | Histogram


@dataclass
class Report:
    probe: str
    #: The headline: one sentence that answers the command's question.
    summary: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    endpoints: list[dict[str, Any]] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    charts: list[Chart] = field(default_factory=list)
    duration_s: float = 0.0

    def table(
        self,
        id: str,
        title: str,
        columns: Sequence[Column],
        keys: Sequence[str] = (),
        detail: bool = False,
    ) -> Table:
        if any(t.id == id for t in self.tables):
            raise ValueError(f"report {self.probe!r}: a second table with id {id!r}")
        t = Table(id, title, list(columns), keys=list(keys), detail=detail)
        self.tables.append(t)
        return t

    def get(self, table_id: str) -> Table:
        for t in self.tables:
            if t.id == table_id:
                return t
        raise KeyError(f"report {self.probe!r} has no table {table_id!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA_VERSION,
            "probe": self.probe,
            "summary": self.summary,
            "params": {k: _json_value(v) for k, v in self.params.items()},
            "environment": self.environment,
            "endpoints": self.endpoints,
            "tables": [t.to_dict() for t in self.tables],
            "findings": list(self.findings),
            "notes": list(self.notes),
            "duration_s": round(self.duration_s, 4),
        }


def report_from_dict(doc: dict[str, Any]) -> Report:
    """The Report a schema-2 document describes (what `sockprobe PROBE --json` printed);
    charts are not in JSON and come back empty."""
    rep = Report(
        str(doc["probe"]),
        summary=str(doc.get("summary", "")),
        params=dict(doc.get("params") or {}),
        environment=dict(doc.get("environment") or {}),
        endpoints=list(doc.get("endpoints") or []),
        findings=list(doc.get("findings") or []),
        notes=list(doc.get("notes") or []),
        duration_s=float(doc.get("duration_s") or 0.0),
    )
    for t in doc.get("tables") or []:
        cols = [Column(c["key"], c["label"], c.get("unit", ""), c["kind"]) for c in t["columns"]]
        table = rep.table(t["id"], t["title"], cols, t.get("keys") or ())
        for r in t["rows"]:
            na = r.get("na") or {}
            table.rows.append({c.key: NA(na[c.key]) if c.key in na else r.get(c.key) for c in cols})
    return rep


def _json_value(value: Any) -> Any:
    if isinstance(value, NA):
        return None
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if callable(value):
        return None
    return value


def params_dict(params: object) -> dict[str, Any]:
    """A dataclass of probe parameters as a plain dict for the report (callables and
    fields kept off the command line, such as a progress hook, are left out)."""
    from sockprobe.options import spec_of

    if dataclasses.is_dataclass(params) and not isinstance(params, type):
        return {
            f.name: getattr(params, f.name)
            for f in dataclasses.fields(params)
            if not callable(getattr(params, f.name))
            and not ((spec := spec_of(f)) is not None and not spec.cli)
        }
    raise TypeError(f"params must be a dataclass instance, not {type(params).__name__}")


def environment(sysctls: dict[str, Cell] | None = None) -> dict[str, Any]:
    """Platform facts every report carries, plus the kernel settings the probe depends on.
    A setting that could not be read is `null`, its reason under `sysctls_na`."""
    values = sysctls or {}
    env: dict[str, Any] = {
        "platform": sys.platform,
        "system": platform.system(),
        "kernel_release": platform.release(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "sysctls": {k: (None if isinstance(v, NA) else v) for k, v in values.items()},
    }
    na = {k: v.reason for k, v in values.items() if isinstance(v, NA)}
    if na:
        env["sysctls_na"] = na
    return env
