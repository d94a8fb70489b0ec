"""The Report a probe returns: tables of measured values, findings, notes.

`Report.to_dict()` is JSON schema 1 (documented in the README). Probes build Reports and
never print; `render.py` is the only place that turns one into text.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import sys
from dataclasses import dataclass, field
from typing import Any

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class NA:
    """A value this platform or run could not measure, with the reason.

    Rendered as `n/a` in tables (the reason goes to the notes) and as
    `{"n/a": reason}` in JSON, so a reader never mistakes it for a zero.
    """

    reason: str

    def __str__(self) -> str:
        return "n/a"


Cell = str | int | float | bool | None | NA


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[Cell]] = field(default_factory=list)
    #: Unit per column ("" where none), same length as columns.
    units: list[str] = field(default_factory=list)
    #: Columns whose values depend on timing or load (durations, segment and drop counts):
    #: `sockprobe diff` compares them with a tolerance; all others must match exactly.
    volatile: list[str] = field(default_factory=list)
    #: Columns that are context, never compared by `sockprobe diff`: host-wide counter
    #: deltas (other traffic moves them) and counts that depend on thread scheduling.
    context: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.units:
            self.units = [""] * len(self.columns)
        unknown = (set(self.volatile) | set(self.context)) - set(self.columns)
        if unknown:
            raise ValueError(f"table {self.title!r}: columns {unknown} not in columns")
        if len(self.units) != len(self.columns):
            raise ValueError(
                f"table {self.title!r}: {len(self.units)} units for {len(self.columns)} columns"
            )

    def add(self, *cells: Cell) -> None:
        if len(cells) != len(self.columns):
            raise ValueError(
                f"table {self.title!r}: row of {len(cells)} cells for {len(self.columns)} columns"
            )
        self.rows.append(list(cells))

    def na_reasons(self) -> list[str]:
        return sorted({c.reason for row in self.rows for c in row if isinstance(c, NA)})

    def to_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "columns": list(self.columns),
            "units": list(self.units),
            "volatile": list(self.volatile),
            "context": list(self.context),
            "rows": [[_cell_json(c) for c in row] for row in self.rows],
        }


@dataclass
class Report:
    probe: str
    summary: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    endpoints: list[dict[str, Any]] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    duration_s: float = 0.0

    def table(
        self,
        title: str,
        columns: list[str],
        units: list[str] | None = None,
        volatile: list[str] | None = None,
        context: list[str] | None = None,
    ) -> Table:
        t = Table(
            title,
            columns,
            units=list(units or []),
            volatile=list(volatile or []),
            context=list(context or []),
        )
        self.tables.append(t)
        return t

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA_VERSION,
            "probe": self.probe,
            "summary": self.summary,
            "params": {k: _cell_json(v) for k, v in self.params.items()},
            "environment": self.environment,
            "endpoints": self.endpoints,
            "tables": [t.to_dict() for t in self.tables],
            "findings": list(self.findings),
            "notes": list(self.notes),
            "duration_s": round(self.duration_s, 4),
        }


def _cell_json(value: Any) -> Any:
    if isinstance(value, NA):
        return {"n/a": value.reason}
    if isinstance(value, (list, tuple)):
        return [_cell_json(v) for v in value]
    return value


def params_dict(params: object) -> dict[str, Any]:
    """A dataclass of probe parameters as a plain dict for the report."""
    if dataclasses.is_dataclass(params) and not isinstance(params, type):
        return {f.name: getattr(params, f.name) for f in dataclasses.fields(params)}
    raise TypeError(f"params must be a dataclass instance, not {type(params).__name__}")


def environment(sysctls: dict[str, Cell] | None = None) -> dict[str, Any]:
    """Platform facts every report carries, plus the kernel settings the probe depends on."""
    return {
        "platform": sys.platform,
        "system": platform.system(),
        "kernel_release": platform.release(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "sysctls": {k: _cell_json(v) for k, v in (sysctls or {}).items()},
    }
