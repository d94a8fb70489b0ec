"""Reading untrusted fingerprints: regular files only, size-capped, parsed with limits
(depth, integer digits, no NaN), then checked for the fingerprint's shape; each failure a
UsageError (exit 2) naming the file and what is wrong."""

from __future__ import annotations

import json
import os
import stat
from typing import Any

from sockprobe.fingerprint import FINGERPRINT_KIND
from sockprobe.report import KINDS, SCHEMA_VERSION
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
ENV_KEYS = ("platform", "system", "kernel_release", "machine", "python")
SETTINGS = "settings"

#: Volatile numbers are equal when within this factor of each other...

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
