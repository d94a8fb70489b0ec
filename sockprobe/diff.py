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

import dataclasses
import json
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sockprobe.fingerprint import FINGERPRINT_KIND
from sockprobe.probes import plural
from sockprobe.report import KINDS, SCHEMA_VERSION, Report, col, environment
from sockprobe.status import UsageError

#: A fingerprint is a few hundred KB; anything far larger is not one.
MAX_BYTES = 64 * 2**20
#: Fingerprints nest about six levels (document, probes, report, tables, rows, na). A
#: limit well above that but far below the interpreter's recursion limit means nothing
#: later (comparison with ==, json.dumps) can recurse out of its stack.
MAX_DEPTH = 32
#: Integers longer than this are refused while parsing: CPython converts decimal text
#: to int in time quadratic in its length (and 3.11+ refuses over 4300 digits anyway).
MAX_INT_DIGITS = 100

#: Volatile numbers are equal when within this factor of each other...
FACTOR = 3.0
#: ...or closer than this absolute floor, by unit. The floor is half the shortest kernel
#: timer a volatile column exists to show: the 40 ms minimum delayed ACK (TCP_DELACK_MIN
#: and TCP_ATO_MIN, HZ/25, include/net/tcp.h). Two values closer than 20 ms cannot be one
#: run with that timer and one without, while a loaded host's scheduling delays (a busy
#: CPU ran a woken thread 11 ms late: issue 13) stay under it.
FLOORS = {"ms": 20.0, "s": 0.02, "us": 20000.0}
#: Counts (segments, calls) without a unit: a few either way is noise under load.
DEFAULT_FLOOR = 3.0

ENV_KEYS = ("platform", "system", "kernel_release", "machine", "python")
SETTINGS = "settings"


# ---- reading untrusted files ---------------------------------------------------------


def _name(path: str) -> str:
    """The path as one printable line (a hostile name may hold a newline)."""
    return path if path.isprintable() else repr(path)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"an integer of {len(text)} digits")
    return int(text)


def _depth(doc: Any) -> int:
    """The deepest nesting of lists and objects, found without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        node, d = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        deepest = max(deepest, d)
        if deepest > MAX_DEPTH:
            return deepest
        stack.extend((c, d + 1) for c in children)
    return deepest


def read_json(path: str) -> Any:
    """The parsed JSON of a regular file of at most MAX_BYTES, or a UsageError."""
    name = _name(path)
    try:
        st = os.stat(path)
    except OSError as exc:
        raise UsageError(f"cannot read {name}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        what = (
            "a directory"
            if stat.S_ISDIR(st.st_mode)
            else "a FIFO"
            if stat.S_ISFIFO(st.st_mode)
            else "a device"
            if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
            else "a socket"
            if stat.S_ISSOCK(st.st_mode)
            else "not a regular file"
        )
        raise UsageError(f"{name} is {what}; diff reads fingerprint files only")
    if st.st_size > MAX_BYTES:
        raise UsageError(f"{name} is {st.st_size:,} bytes; a fingerprint is at most 64 MiB")
    try:
        # O_NONBLOCK: if the path was swapped for a FIFO since the stat, opening it does
        # not wait for a writer; the fstat below then refuses it.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise UsageError(f"cannot read {name}: {exc.strerror or exc}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UsageError(f"{name} is not a regular file; diff reads fingerprint files only")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"cannot read {name}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_BYTES:
        raise UsageError(f"{name} is over 64 MiB; a fingerprint is at most 64 MiB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(
            f"{name} is not UTF-8 text (byte {exc.start}): not a fingerprint"
        ) from None
    if "\x00" in text:
        raise UsageError(f"{name} holds NUL bytes: binary data, not a fingerprint")
    try:
        doc = json.loads(text, parse_constant=_reject_constant, parse_int=_parse_int)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{name} is not valid JSON (line {exc.lineno}: {exc.msg})") from None
    except RecursionError:
        raise UsageError(f"{name} nests too deeply to be a fingerprint") from None
    except ValueError as exc:  # parse_int, parse_constant
        raise UsageError(f"{name} is not a fingerprint's JSON: {exc}") from None
    if _depth(doc) > MAX_DEPTH:
        raise UsageError(f"{name} nests more than {MAX_DEPTH} levels: not a fingerprint")
    return doc


# ---- the fingerprint's shape -----------------------------------------------------------

_SCALAR = (str, int, float, bool, type(None))


class _Shape:
    """Checks one document and names the first thing that is wrong, with its place."""

    def __init__(self, path: str) -> None:
        self.name = _name(path)

    def fail(self, where: str, what: str) -> UsageError:
        where = where if where.isprintable() else repr(where)  # names from the file
        what = what if what.isprintable() else repr(what)
        return UsageError(f"{self.name}: {where}: {what}" if where else f"{self.name}: {what}")

    def obj(self, value: Any, where: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(where, f"expected an object, found {_type(value)}")
        return value

    def arr(self, value: Any, where: str) -> list[Any]:
        if not isinstance(value, list):
            raise self.fail(where, f"expected a list, found {_type(value)}")
        return value

    def text(self, value: Any, where: str) -> str:
        if not isinstance(value, str):
            raise self.fail(where, f"expected text, found {_type(value)}")
        return value


def _type(value: Any) -> str:
    if value is None:
        return "null"
    return {
        dict: "an object",
        list: "a list",
        str: "text",
        bool: "a boolean",
        int: "a number",
        float: "a number",
    }.get(type(value), type(value).__name__)


def check_fingerprint(doc: Any, path: str) -> dict[str, Any]:
    """`doc` if it has a fingerprint's shape (schema 2), else a UsageError naming the
    first thing that is wrong and where."""
    s = _Shape(path)
    if not isinstance(doc, dict):
        raise s.fail("", f"the document is {_type(doc)}, not a fingerprint object")
    if doc.get("schema") != SCHEMA_VERSION:
        found = doc.get("schema")
        raise s.fail("", f"schema {found!r}; this sockprobe reads schema {SCHEMA_VERSION}")
    if doc.get("kind") != FINGERPRINT_KIND:
        if "probe" in doc and "tables" in doc:
            raise s.fail(
                "",
                f"one probe's report ({doc.get('probe')!r}), not a fingerprint: "
                "make one with `sockprobe all --json`",
            )
        raise s.fail("kind", f"expected {FINGERPRINT_KIND!r}: not a fingerprint")
    for k in ENV_KEYS:
        if not isinstance(doc.get(k), (str, type(None))):
            raise s.fail(k, f"expected text, found {_type(doc.get(k))}")
    settings = s.obj(doc.get(SETTINGS, {}), SETTINGS)
    for k, v in settings.items():
        if not isinstance(v, _SCALAR):
            raise s.fail(f"{SETTINGS}.{k}", f"expected a value, found {_type(v)}")
    probes = s.obj(doc.get("probes"), "probes")
    for pname, rep in probes.items():
        _check_report(s, s.obj(rep, f"probes.{pname}"), f"probes.{pname}")
    return doc


def _check_report(s: _Shape, rep: dict[str, Any], where: str) -> None:
    if "error" in rep:  # a probe that could not run: {"error": ..., "status": ...}
        s.text(rep["error"], f"{where}.error")
        if not isinstance(rep.get("status"), int) or isinstance(rep.get("status"), bool):
            raise s.fail(
                f"{where}.status", f"expected an exit status, found {_type(rep.get('status'))}"
            )
        return
    s.obj(rep.get("params", {}), f"{where}.params")
    env = s.obj(rep.get("environment", {}), f"{where}.environment")
    s.obj(env.get("sysctls", {}), f"{where}.environment.sysctls")
    s.obj(env.get("sysctls_na", {}), f"{where}.environment.sysctls_na")
    tables = s.arr(rep.get("tables"), f"{where}.tables")
    for i, t in enumerate(tables):
        tw = f"{where}.tables[{i}]"
        t = s.obj(t, tw)
        s.text(t.get("id"), f"{tw}.id")
        columns = s.arr(t.get("columns"), f"{tw}.columns")
        keys = set()
        for j, c in enumerate(columns):
            c = s.obj(c, f"{tw}.columns[{j}]")
            keys.add(s.text(c.get("key"), f"{tw}.columns[{j}].key"))
            if c.get("kind") not in KINDS:
                raise s.fail(
                    f"{tw}.columns[{j}].kind", f"{c.get('kind')!r} is not one of {', '.join(KINDS)}"
                )
            if not isinstance(c.get("unit", ""), str):
                raise s.fail(
                    f"{tw}.columns[{j}].unit", f"expected text, found {_type(c.get('unit'))}"
                )
        for k in s.arr(t.get("keys", []), f"{tw}.keys"):
            if s.text(k, f"{tw}.keys") not in keys:
                raise s.fail(f"{tw}.keys", f"key column {k!r} is not one of the columns")
        key_cols = list(t.get("keys", []))
        seen: set[tuple[Any, ...]] = set()
        for r, row in enumerate(s.arr(t.get("rows"), f"{tw}.rows")):
            row = s.obj(row, f"{tw}.rows[{r}]")
            s.obj(row.get("na", {}), f"{tw}.rows[{r}].na")
            for k, v in row.items():
                if k != "na" and isinstance(v, (dict, list)):
                    raise s.fail(f"{tw}.rows[{r}].{k}", f"a cell must be a value, found {_type(v)}")
            ident = tuple(row.get(k) for k in key_cols)
            if key_cols and ident in seen:
                raise s.fail(f"{tw}.rows[{r}]", f"a second row with the keys {ident}")
            seen.add(ident)


def load(path: str) -> dict[str, Any]:
    """Read and check one fingerprint (`sockprobe all --json`)."""
    return check_fingerprint(read_json(path), path)


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
