"""The only place that turns a Report into text: table, json, csv, markdown."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from typing import Any

from sockprobe.report import NA, Cell, Report, Table

FORMATS = ("table", "json", "csv", "markdown")


def render(report: Report, fmt: str = "table", explain: bool = False) -> str:
    return render_many([report], fmt, explain)


def render_many(
    reports: Sequence[Report],
    fmt: str = "table",
    explain: bool = False,
    document: dict[str, Any] | None = None,
) -> str:
    """Render one or more reports. For json, `document` (if given) is emitted as-is."""
    if fmt == "json":
        if document is not None:
            return json.dumps(document, indent=2) + "\n"
        if len(reports) == 1:
            return json.dumps(reports[0].to_dict(), indent=2) + "\n"
        return json.dumps([r.to_dict() for r in reports], indent=2) + "\n"
    if fmt == "csv":
        return _csv(reports)
    if fmt in ("table", "markdown"):
        return "\n".join(_text(r, markdown=(fmt == "markdown"), explain=explain) for r in reports)
    raise ValueError(f"unknown format {fmt!r}")


def format_cell(value: Cell) -> str:
    """Human formatting: thousands separators, a few significant digits, yes/no."""
    if value is None:
        return "-"
    if isinstance(value, NA):
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value == 0:
            return "0"
        a = abs(value)
        if a >= 1000:
            return f"{value:,.0f}"
        if a >= 100:
            return f"{value:.1f}"
        if a >= 1:
            # Two decimals at most, without trailing zeros: 55.6, 44.03, 40 (not 40.00).
            return f"{value:.2f}".rstrip("0").rstrip(".")
        return f"{value:.3g}"
    return str(value)


def _headers(table: Table) -> list[str]:
    return [f"{c.label} ({c.unit})" if c.unit else c.label for c in table.columns]


def _text(report: Report, markdown: bool, explain: bool) -> str:
    from tabulate import tabulate  # imported here: keeps `sockprobe --help` fast

    out: list[str] = []
    h = "## " if markdown else ""
    out.append(f"{h}sockprobe {report.probe}: {report.summary}".rstrip(": "))
    out.append("")
    for table in report.tables:
        out.append(f"### {table.title}" if markdown else f"{table.title}")
        if not table.rows:
            out.append("(none)")
            out.append("")
            continue
        rows = [[format_cell(row.get(k)) for k in table.column_keys] for row in table.rows]
        out.append(
            tabulate(
                rows,
                headers=_headers(table),
                tablefmt="github" if markdown else "simple",
                disable_numparse=True,
            )
        )
        for reason in table.na_reasons():
            out.append(f"n/a: {reason}")
        out.append("")
    if report.findings:
        out.append("### Findings" if markdown else "Findings")
        out.extend(f"- {f}" for f in report.findings)
        out.append("")
    if explain:
        if report.notes:
            out.append("### How it works" if markdown else "How it works")
            out.extend(f"- {n}" for n in report.notes)
            out.append("")
        if report.endpoints:
            out.append("### Endpoints" if markdown else "Endpoints (check them with ss or tcpdump)")
            for ep in report.endpoints:
                out.append("- " + ", ".join(f"{k}={v}" for k, v in ep.items()))
            out.append("")
        sysctls = report.environment.get("sysctls") or {}
        if sysctls:
            out.append("### Kernel settings read" if markdown else "Kernel settings read")
            out.extend(f"- {k} = {_plain(v)}" for k, v in sysctls.items())
            out.append("")
    out.append(f"({report.duration_s:.2f} s)")
    out.append("")
    return "\n".join(out)


def _plain(v: Any) -> str:
    return "n/a" if v is None else str(v)


def _csv(reports: Sequence[Report]) -> str:
    """One CSV stream: every row carries its report (the probe) and table title, so tables
    can be told apart (a column of the summary is itself called "probe")."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    for report in reports:
        for table in report.tables:
            w.writerow(["report", "table", *table.column_keys])
            for row in table.rows:
                w.writerow(
                    [report.probe, table.id, *[_csv_cell(row.get(k)) for k in table.column_keys]]
                )
    return buf.getvalue()


def _csv_cell(value: Cell) -> str:
    if value is None:
        return ""
    if isinstance(value, NA):
        return "n/a"
    return str(value)
