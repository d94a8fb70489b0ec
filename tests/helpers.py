"""Helpers shared by the test modules (plain functions; fixtures live in conftest.py)."""

from __future__ import annotations

import atexit
import functools
import importlib.metadata
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def has_ipv6_loopback() -> bool:
    """Whether ::1 can be bound here (tried, not assumed: containers often lack IPv6)."""
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


def sigint_default() -> None:
    """In the child before exec: SIGINT back to its default disposition. A test run in the
    background of a non-interactive shell (or under nohup) inherits SIGINT ignored, and
    Python installs its KeyboardInterrupt handler only when SIGINT is not ignored at
    start-up (signal(7): ignored dispositions survive execve), so the signal would
    otherwise be lost and the probe would run to its end with exit 0."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def interrupt(args: Sequence[str], after: float) -> tuple[int, str, float]:
    """Run `python -m sockprobe ARGS`, send SIGINT after `after` seconds, and return its
    exit status, stderr, and how long it took to exit after the signal."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "sockprobe", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=sigint_default,
    )
    try:
        time.sleep(after)
        proc.send_signal(signal.SIGINT)
        t0 = time.monotonic()
        _, err = proc.communicate(timeout=10)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, err, took


def labelled(table: Any) -> list[dict[str, Any]]:
    """A table's rows keyed by column label, from a Table or its JSON form (schema 2).
    TRANSITIONAL: tests move to column keys as each probe gets stable ones."""
    if isinstance(table, dict):
        cols = [(c["key"], c["label"]) for c in table["columns"]]
        return [{label: r.get(key) for key, label in cols} for r in table["rows"]]
    return [{c.label: r.get(c.key) for c in table.columns} for r in table.rows]


#: Parts of the standard library an unprivileged `python -m sockprobe` never imports.
_STDLIB_SKIP = (
    "test",
    "tests",
    "idlelib",
    "tkinter",
    "turtledemo",
    "ensurepip",
    "lib2to3",
    "site-packages",
    "dist-packages",
    "__phello__",
    "*.opt-1.pyc",
    "*.opt-2.pyc",
)


def _as_user(uid: int, gid: int, python: str, code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            *("setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--inh-caps=-all"),
            *(python, "-c", code),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
        env={**os.environ, "HOME": "/", "PYTHONDONTWRITEBYTECODE": "1"},
    )


def _runtime_distributions() -> list[importlib.metadata.Distribution]:
    """The installed distributions sockprobe needs at run time on this platform (its
    requirements, recursively, with their markers evaluated; extras such as dev left out)."""
    from packaging.requirements import Requirement  # pytest depends on packaging

    out: list[importlib.metadata.Distribution] = []
    seen: set[str] = set()
    todo = list(importlib.metadata.requires("sockprobe") or [])
    while todo:
        req = Requirement(todo.pop())
        name = re.sub(r"[-_.]+", "-", req.name).lower()
        if name in seen or (req.marker is not None and not req.marker.evaluate({"extra": ""})):
            continue
        seen.add(name)
        dist = importlib.metadata.distribution(req.name)
        out.append(dist)
        todo.extend(dist.requires or [])
    return out


def _top_level(dist: importlib.metadata.Distribution) -> set[str]:
    names = set()
    for f in dist.files or []:
        top = f.parts[0]
        if top in ("..", "__pycache__") or top.endswith((".dist-info", ".pth")) or "-" in top:
            continue
        names.add(top.removesuffix(".py"))
    return {n for n in names if n.isidentifier()}


@functools.cache
def python_for_user(uid: int, gid: int | None = None) -> str | None:
    """A path to an interpreter that user `uid` can run, of this interpreter's exact
    version and with sockprobe's run-time dependencies importable (not sockprobe itself:
    callers put a readable copy of it on PYTHONPATH).

    sys.executable when that user can run it as it is. Otherwise, typically a pyenv build
    under a 0700 home (its libpython is found by an absolute RPATH into that home, and
    the loader cannot open it as another user), a world-readable copy of the base
    installation in a temporary directory: the binary, libpython, the standard library
    less its tests and GUI parts, and the dependencies' installed files in its
    site-packages, run through a small sh wrapper that points the loader at the copied
    libpython (LD_LIBRARY_PATH is searched when the RPATH directory cannot be read). The
    copy is removed when the test process exits. None when neither can run (no setpriv,
    an interpreter laid out differently): the caller skips with that reason.
    """
    gid = uid if gid is None else gid
    if shutil.which("setpriv") is None:
        return None
    dists = _runtime_distributions()
    modules = sorted({m for d in dists for m in _top_level(d)})
    probe = f"import sys; {''.join(f'import {m}; ' for m in modules)}print(sys.version)"
    r = _as_user(uid, gid, sys.executable, probe)
    if r.returncode == 0 and r.stdout.strip() == sys.version:
        return sys.executable
    # Otherwise the user cannot load it, or the loader fell back to another installation
    # of the same minor version (Debian's libpython3.11 and /usr/lib/python3.11, say).
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    base = Path(sys.base_prefix)
    binary = base / "bin" / f"python{version}"
    stdlib = Path(sysconfig.get_path("stdlib"))
    soname = (
        sysconfig.get_config_var("INSTSONAME")
        if sysconfig.get_config_var("Py_ENABLE_SHARED")
        else None
    )
    libdir = Path(str(sysconfig.get_config_var("LIBDIR") or base / "lib"))
    if not binary.is_file() or not (stdlib / "os.py").is_file():
        return None
    root = Path(tempfile.mkdtemp(prefix="sockprobe-python-"))
    atexit.register(shutil.rmtree, root, True)
    os.chmod(root, 0o755)
    (root / "bin").mkdir()
    (root / "lib").mkdir()
    shutil.copy2(binary, root / "bin" / f"python{version}")
    if soname:
        shutil.copy2(libdir / soname, root / "lib" / soname)
    lib = root / "lib" / f"python{version}"
    shutil.copytree(stdlib, lib, ignore=shutil.ignore_patterns(*_STDLIB_SKIP), symlinks=True)
    site = lib / "site-packages"
    site.mkdir()
    for dist in dists:
        for f in dist.files or []:
            src = Path(str(dist.locate_file(f)))
            if f.parts[0] == ".." or not src.is_file():
                continue  # console scripts live outside site-packages
            (site / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, site / f)
    wrapper = root / "bin" / "python"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'LD_LIBRARY_PATH="{root / "lib"}${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}" '
        f'exec "{root / "bin" / f"python{version}"}" "$@"\n'
    )
    for d, _, files in os.walk(root):
        os.chmod(d, 0o755)
        for name in files:
            p = os.path.join(d, name)
            if not os.path.islink(p):
                os.chmod(p, 0o755 if os.access(p, os.X_OK) else 0o644)
    os.chmod(wrapper, 0o755)
    r = _as_user(uid, gid, str(wrapper), probe)
    if r.returncode == 0 and r.stdout.strip() == sys.version:
        return str(wrapper)
    return None
