"""The only place that turns Reports into text: table, json, jsonl, csv, markdown.

For people (the table format): the answer first (headline, findings), then the charts,
then the tables that prove them. On a terminal no line is wider than the terminal:
long cells wrap inside their column, and a table that still cannot fit becomes records
(one "label: value" line per cell). In a pipe (`width=None`) every row stays on one line
so that grep sees whole rows.

For scripts: json is the Report's schema 2 document, whole; csv is one rectangular table
(`--table ID`, or `--table all` for a long form with one header); markdown keeps notes
and n/a reasons outside its tables.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sockprobe.report import NA, Bars, Cell, Histogram, Report, Table
from sockprobe.status import UsageError

FORMATS = ("table", "json", "jsonl", "csv", "markdown")


@dataclass
class RenderOptions:
    fmt: str = "table"
    explain: bool = False
    #: Terminal columns to fit; None in a pipe (no wrapping).
    width: int | None = None
    charts: bool = True
    #: False when the output encoding is not UTF-8: charts and arrows in ASCII.
    unicode: bool = True
    #: csv: a table id ("wwr", or "nagle.wwr" across reports), or "all" (long form).
    table: str | None = None
    #: Top-level JSON members beside the report's own (port's `free` and `holders`).
    extra: dict[str, Any] | None = None


def render(report: Report, fmt: str = "table", explain: bool = False) -> str:
    return render_many([report], RenderOptions(fmt=fmt, explain=explain))


def render_many(reports: Sequence[Report], opts: RenderOptions | None = None) -> str:
    opts = opts or RenderOptions()
    if opts.fmt == "json":
        docs = [_doc(r, opts) for r in reports]
        return json.dumps(docs[0] if len(docs) == 1 else docs, indent=2) + "\n"
    if opts.fmt == "jsonl":
        return "".join(json.dumps(_doc(r, opts)) + "\n" for r in reports)
    if opts.fmt == "csv":
        return _csv(reports, opts.table)
    if opts.fmt in ("table", "markdown"):
        return "\n".join(_text(r, opts, markdown=opts.fmt == "markdown") for r in reports)
    raise ValueError(f"unknown format {opts.fmt!r}")


def _doc(report: Report, opts: RenderOptions) -> dict[str, Any]:
    doc = report.to_dict()
    if opts.extra:
        doc.update(opts.extra)
    return doc


# ---- cells ---------------------------------------------------------------------------------
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


#: Integer columns that name things rather than count them print without thousands
#: separators: a pid of 65534 is "65534", a port "8080".
_IDENT = re.compile(r"(^|_)(pid|ppid|uid|gid|port|lport|rport|inode|ino|fd|ifindex|netns)s?$")


def _cell(value: Cell, key: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and _IDENT.search(key):
        return str(value)
    return format_cell(value)


def _numeric(value: Cell) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _header(label: str, unit: str) -> str:
    return f"{label} ({unit})" if unit else label


# ---- text ----------------------------------------------------------------------------------
def _wrap(text: str, width: int | None, indent: str = "", first: str = "") -> list[str]:
    if width is None:
        return [first + text]
    w = max(20, width)
    return textwrap.wrap(
        text,
        w,
        initial_indent=first,
        subsequent_indent=indent,
        break_on_hyphens=False,
    ) or [first]


def _text(report: Report, opts: RenderOptions, markdown: bool) -> str:
    out: list[str] = []
    w = None if markdown else opts.width
    h = "## " if markdown else ""
    sub = "### " if markdown else ""
    head = f"{h}sockprobe {report.probe}" + (f": {report.summary}" if report.summary else "")
    out += _wrap(head, w, indent="  ")
    out.append("")
    if report.findings:
        out.append(f"{sub}Findings")
        for f in report.findings:
            out += _wrap(f, w, indent="  ", first="- ")
        out.append("")
    if opts.charts and not markdown and report.charts:
        for chart in report.charts:
            out += _chart(chart, opts)
            out.append("")
    for table in report.tables:
        out += _wrap(f"{sub}{table.title}", w, indent="  ")
        if not table.rows:
            out.append("(none)")
            out.append("")
            continue
        if table.detail and not opts.explain:
            out += _wrap(
                f"({len(table.rows)} rows of detail: shown with --explain, and in --json or "
                f"--format csv --table {table.id})",
                w,
                indent="  ",
            )
            out.append("")
            continue
        out += _markdown_table(table) if markdown else _fit_table(table, w)
        for reason in table.na_reasons():
            out += _wrap(f"n/a: {reason}", w, indent="  ")
        out.append("")
    if opts.explain:
        if report.notes:
            out.append(f"{sub}How it works")
            for n in report.notes:
                out += _wrap(n, w, indent="  ", first="- ")
            out.append("")
        if report.endpoints:
            out.append(f"{sub}Endpoints (check them with ss or tcpdump)")
            for ep in report.endpoints:
                out += _wrap(", ".join(f"{k}={v}" for k, v in ep.items()), w, "  ", "- ")
            out.append("")
        sysctls = report.environment.get("sysctls") or {}
        if sysctls:
            na = report.environment.get("sysctls_na") or {}
            out.append(f"{sub}Kernel settings read")
            for k, v in sysctls.items():
                shown = f"n/a ({na[k]})" if k in na else ("n/a" if v is None else str(v))
                out += _wrap(f"{k} = {shown}", w, "  ", "- ")
            out.append("")
    out.append(f"({report.duration_s:.2f} s)")
    out.append("")
    return "\n".join(out)


def _markdown_table(table: Table) -> list[str]:
    def esc(s: str) -> str:
        return s.replace("|", "\\|").replace("\n", " ")

    heads = [esc(_header(c.label, c.unit)) for c in table.columns]
    lines = ["| " + " | ".join(heads) + " |"]
    lines.append(
        "|"
        + "|".join(
            "---:" if any(_numeric(r.get(c.key)) for r in table.rows) else "---"
            for c in table.columns
        )
        + "|"
    )
    for r in table.rows:
        lines.append(
            "| " + " | ".join(esc(_cell(r.get(c.key), c.key)) for c in table.columns) + " |"
        )
    return lines


GAP = 2
#: Words up to this long are kept whole in a wrapped cell; longer ones may break.
WORD_MAX = 16


def _fit_table(table: Table, width: int | None) -> list[str]:
    """A plain table; on a terminal, wrapped to `width` or shown as records."""
    heads = [_header(c.label, c.unit) for c in table.columns]
    cells = [[_cell(r.get(c.key), c.key) for c in table.columns] for r in table.rows]
    right = [
        all(_numeric(r.get(c.key)) or r.get(c.key) is None for r in table.rows)
        and any(_numeric(r.get(c.key)) for r in table.rows)
        for c in table.columns
    ]
    natural = [max([len(h), *(len(row[i]) for row in cells)]) for i, h in enumerate(heads)]
    widths = list(natural)
    gap = GAP
    if width is not None:
        # Shrink the widest column a character at a time until the table fits; records
        # if even the tightest floors cannot fit.
        keys = {i for i, c in enumerate(table.columns) if c.key in table.keys}

        def floor(i: int, cap: int) -> int:
            # Never break a number or a key cell; keep words whole up to `cap` letters.
            values = [r[i] for r in cells]
            head = min(cap, max((len(x) for x in heads[i].split()), default=1))
            if right[i] or i in keys:
                return max(head, max(len(v) for v in values))
            word = min(cap, max((len(x) for v in values for x in v.split()), default=1))
            return min(natural[i], max(head, word))

        # Words are never broken: a table whose words cannot fit becomes records.
        floors = [floor(i, WORD_MAX) for i in range(len(widths))]
        gap = GAP if sum(floors) + GAP * (len(widths) - 1) <= width else 1
        budget = width - gap * (len(widths) - 1)
        if sum(floors) > budget:
            if table.line is not None:
                return [x for r in table.rows for x in _wrap(table.line(r), width, "    ")]
            return _records(table, heads, cells, width)
        while sum(widths) > budget:
            # A character from the widest column that can still give one.
            give = [j for j in range(len(widths)) if widths[j] > floors[j]]
            widths[max(give, key=lambda j: widths[j])] -= 1

    def block(texts: list[str]) -> list[str]:
        cols = [
            _cell_lines(t, widths[i]) if width is not None else [t] for i, t in enumerate(texts)
        ]
        height = max(len(c) for c in cols)
        lines = []
        for k in range(height):
            parts = []
            for i, c in enumerate(cols):
                piece = c[k] if k < len(c) else ""
                parts.append(piece.rjust(widths[i]) if right[i] else piece.ljust(widths[i]))
            lines.append((" " * gap).join(parts).rstrip())
        return lines

    out = block(heads)
    out.append((" " * gap).join("-" * w for w in widths))
    for row in cells:
        out += block(row)
    return out


def _cell_lines(text: str, width: int) -> list[str]:
    if len(text) <= width:
        return [text]
    return textwrap.wrap(text, width, break_on_hyphens=False, break_long_words=True) or [""]


def _records(table: Table, heads: list[str], cells: list[list[str]], width: int) -> list[str]:
    """One block per row: its key cells as a heading, then `label: value unit` pairs
    joined by semicolons and wrapped (compact: a few lines per row)."""
    keys = set(table.keys)
    out: list[str] = []
    for row in cells:
        ident = " / ".join(v for c, v in zip(table.columns, row) if c.key in keys)
        out += _wrap(f"* {ident}", width, indent="  ")
        pairs = [
            f"{c.label}: {v}" + (f" {c.unit}" if c.unit and v not in ("-", "n/a") else "")
            for c, v in zip(table.columns, row)
            if c.key not in keys and v != ""
        ]
        out += _wrap("; ".join(pairs), width, indent="    ", first="    ")
    return out


# ---- charts --------------------------------------------------------------------------------
BLOCKS_U = " ▁▂▃▄▅▆▇█"
BLOCKS_A = " .:-=+*#%@"
FILLS_U = "█▓░▒"
FILLS_A = "#=.+"


def _chart(chart: Bars | Histogram, opts: RenderOptions) -> list[str]:
    width = min(opts.width or 100, 100)
    if isinstance(chart, Bars):
        return _bars(chart, width, opts.unicode)
    return _histogram(chart, width, opts.unicode)


def _bars(chart: Bars, width: int, uni: bool) -> list[str]:
    fills = FILLS_U if uni else FILLS_A
    names: list[str] = []
    for _, segs in chart.bars:
        for n, _v in segs:
            if n not in names:
                names.append(n)
    label_w = min(max((len(lbl) for lbl, _ in chart.bars), default=1), 24, max(6, width // 4))
    totals = [sum(max(0.0, v) for _, v in segs) for _, segs in chart.bars]
    top = max(totals, default=0.0)
    values_w = max((len(", ".join(_num(v) for _, v in segs)) for _, segs in chart.bars), default=1)
    bar_w = max(4, width - label_w - values_w - 4)
    unit = f" ({chart.unit})" if chart.unit else ""
    legend = ", ".join(f"{fills[i % len(fills)]} {n}" for i, n in enumerate(names))
    lines = _wrap(f"{chart.title}{unit}" + (", log scale" if chart.log else ""), width, "  ")
    lines += _wrap(legend, width, "  ", "  ")

    def scale(v: float) -> float:
        if top <= 0:
            return 0.0
        if chart.log:
            return math.log10(1 + v) / math.log10(1 + top) * bar_w
        return v / top * bar_w

    for (label, segs), total in zip(chart.bars, totals):
        bar = ""
        drawn = 0.0
        acc = 0.0
        for n, v in segs:
            acc += max(0.0, v)
            end = scale(acc) if not chart.log else scale(total) * (acc / total if total else 0)
            k = round(end) - round(drawn)
            if v > 0 and k == 0 and len(bar) < bar_w:
                k = 1  # a non-zero segment is never invisible
            bar += fills[names.index(n) % len(fills)] * max(0, k)
            drawn = end
        values = ", ".join(_num(v) for _, v in segs)
        lines.append(f"  {label[:label_w]:<{label_w}} {bar:<{bar_w}} {values}".rstrip())
    return lines


def _num(v: float) -> str:
    return format_cell(int(v) if float(v).is_integer() else v)


def _histogram(chart: Histogram, width: int, uni: bool) -> list[str]:
    blocks = BLOCKS_U if uni else BLOCKS_A
    samples = [s for _, ss in chart.series for s in ss if s > 0 or not chart.log]
    if not samples:
        return [f"{chart.title}: no samples"]
    medians = [sorted(ss)[len(ss) // 2] for _, ss in chart.series if ss]
    tail = 9 + max((len(_num(m)) for m in medians), default=3)  # "| median " + the number
    # Labels give way first (down to 6 letters), then the bins (down to 8).
    label_w = min(max(len(lbl) for lbl, _ in chart.series), 16, max(6, width - 4 - tail - 8))
    bins = max(8, min(60, width - label_w - 4 - tail))
    lo, hi = min(samples), max(samples)
    a: float
    b: float
    if chart.log:
        a, b = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
        if b == a:
            b = a + 1

        def pos(x: float) -> int:
            return min(bins - 1, int((math.log10(x) - a) / (b - a) * bins))
    else:
        a, b = lo, hi if hi > lo else lo + 1

        def pos(x: float) -> int:
            return min(bins - 1, int((x - a) / (b - a) * bins))

    unit = f" ({chart.unit}" + (", log scale)" if chart.log else ")")
    lines = _wrap(f"{chart.title}{unit}", width, "  ")
    for label, ss in chart.series:
        counts = [0] * bins
        for s in ss:
            if s > 0 or not chart.log:
                counts[pos(s)] += 1
        top = max(counts) or 1
        strip = "".join(
            blocks[0] if c == 0 else blocks[max(1, round(c / top * (len(blocks) - 1)))]
            for c in counts
        )
        med = sorted(ss)[len(ss) // 2] if ss else float("nan")
        lines.append(f"  {label[:label_w]:<{label_w}} |{strip}| median {_num(med)}")
    # The axis: a tick label at each decade (log) or at both ends (linear).
    axis = [" "] * (bins + 2)
    ticks: list[tuple[int, str]] = []
    if chart.log:
        for d in range(int(a), int(b) + 1):
            ticks.append((round((d - a) / (b - a) * bins), _num(10.0**d)))
    else:
        ticks = [(0, _num(a)), (bins, _num(b))]
    for p, text in ticks:
        start = min(max(0, p - len(text) // 2), len(axis) - len(text))
        if all(ch == " " for ch in axis[max(0, start - 1) : start + len(text) + 1]):
            axis[start : start + len(text)] = list(text)
    lines.append(" " * (label_w + 3) + "".join(axis).rstrip())
    return lines


# ---- csv -----------------------------------------------------------------------------------
def _csv(reports: Sequence[Report], which: str | None) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    if which == "all":
        # Long form: every cell of every table, under one header.
        w.writerow(["report", "table", "row", "column", "value"])
        for report in reports:
            for t in report.tables:
                for i, row in enumerate(t.rows, 1):
                    for c in t.columns:
                        w.writerow([report.probe, t.id, i, c.key, _csv_cell(row.get(c.key))])
        return buf.getvalue()
    table = _pick_table(reports, which)
    if table is None:
        return ""
    w.writerow(table.column_keys)
    for row in table.rows:
        w.writerow([_csv_cell(row.get(k)) for k in table.column_keys])
    return buf.getvalue()


def _pick_table(reports: Sequence[Report], which: str | None) -> Table | None:
    found = [(r, t) for r in reports for t in r.tables]
    if not found:
        return None
    if which is None:
        return found[0][1]
    probe, _, tid = which.rpartition(".")
    for r, t in found:
        if t.id == tid and (not probe or r.probe == probe):
            return t
    choices = ", ".join(f"{r.probe}.{t.id}" if len(reports) > 1 else t.id for r, t in found)
    raise UsageError(f"--table {which!r}: no such table; choose from {choices}, or all")


def _csv_cell(value: Cell) -> str:
    if value is None or isinstance(value, NA):
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# ---- encodings -----------------------------------------------------------------------------
_ASCII = str.maketrans(
    {
        "›": ">",
        "→": "->",
        "←": "<-",
        "—": "-",
        "–": "-",
        "…": "...",
        "≥": ">=",
        "≤": "<=",
        "×": "x",
        "Δ": "d",
        "µ": "u",
        "·": ".",
        "‘": "'",
        "’": "'",
        "“": '"',
        "”": '"',
        "≈": "~",
        "±": "+/-",
        **{ch: "#" for ch in BLOCKS_U[1:] + FILLS_U},
    }
)


def to_ascii(text: str) -> str:
    """Text for an output that cannot encode UTF-8: known symbols transliterated (the
    rest is replaced by the encoder)."""
    return text.translate(_ASCII)
