"""Run sockprobe inside a fresh network namespace with chosen sysctls.

Most of the settings sockprobe's sentences depend on are per network namespace
(net.ipv4.tcp_*, net.core.somaxconn, ip_local_port_range, ...): a namespace made with
unshare(2) starts from the kernel's defaults, takes its own values, and vanishes with
its last process, so a test can change a setting without touching the host.

`in_netns(...)` runs a Python snippet or `python -m sockprobe ARGS` in a new namespace
whose `lo` is up (or down, when asked), after writing the sysctls; the namespace dies with
the child. Root is needed (or an unprivileged user namespace where the kernel allows one:
`unshare -rn`); `netns_skip_reason()` says why not, for pytest.skip.

Sysctls that are not per namespace (net.core.rmem_max, net.ipv4.udp_mem, ...) cannot be
varied here: writing one inside a namespace either fails (EACCES/ENOENT, the file is
absent outside the initial namespace) or would change the host. `in_netns` refuses
those names rather than change the host (HOST_WIDE).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

#: Settings that are global to the host (not per network namespace) on current kernels.
HOST_WIDE = frozenset(
    {
        "net.core.rmem_max",
        "net.core.wmem_max",
        "net.core.rmem_default",
        "net.core.wmem_default",
        "net.core.optmem_max",
        "net.ipv4.tcp_mem",
        "net.ipv4.udp_mem",
        "net.ipv4.tcp_max_orphans",
    }
)

ROOT = Path(__file__).resolve().parent.parent


@functools.lru_cache(maxsize=1)
def _unshare_argv() -> tuple[str, ...] | None:
    if not sys.platform.startswith("linux") or shutil.which("unshare") is None:
        return None
    for argv in (("unshare", "-n"), ("unshare", "-rn")):
        if argv == ("unshare", "-n") and os.geteuid() != 0:
            continue
        try:
            ok = subprocess.run([*argv, "true"], capture_output=True, timeout=10).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            ok = False
        if ok:
            return argv
    return None


def netns_skip_reason() -> str | None:
    """None when a namespace can be made here, else why not (for pytest.skip)."""
    if not sys.platform.startswith("linux"):
        return "network namespaces are Linux only"
    if shutil.which("unshare") is None:
        return "unshare(1) is not installed"
    if _unshare_argv() is None:
        return "cannot create a network namespace (needs root or unprivileged user namespaces)"
    return None


_PRELUDE = r"""
import os, subprocess, sys
from pathlib import Path
def _sysctl(name, value):
    Path("/proc/sys", *name.split(".")).write_text(f"{{value}}\n")
if {lo_up!r}:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
for _n, _v in {sysctls!r}.items():
    _sysctl(_n, _v)
for _cmd in {setup!r}:
    subprocess.run(_cmd, shell=True, check=True)
"""


def in_netns(
    code: str | None = None,
    *,
    args: Sequence[str] | None = None,
    sysctls: Mapping[str, Any] | None = None,
    setup: Sequence[str] = (),
    lo_up: bool = True,
    timeout: float = 120.0,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `code` (Python) or `python -m sockprobe *args` in a new network namespace.

    `sysctls` are written after `lo` is brought up; `setup` shell commands run after
    them (`ip route change ...`). Returns the completed process (text mode)."""
    argv = _unshare_argv()
    if argv is None:
        raise RuntimeError(netns_skip_reason() or "no network namespace")
    values = {
        k: (" ".join(map(str, v)) if isinstance(v, (list, tuple)) else v)
        for k, v in (sysctls or {}).items()
    }
    wide = sorted(set(values) & HOST_WIDE)
    if wide:
        raise ValueError(f"not per network namespace, would change the host: {wide}")
    if (code is None) == (args is None):
        raise ValueError("give code or args")
    if args is not None:
        code = f"import sys\nfrom sockprobe.cli import main\nsys.exit(main({list(args)!r}))\n"
    script = _PRELUDE.format(lo_up=lo_up, sysctls=values, setup=list(setup)) + (code or "")
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [*argv, sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        cwd=str(ROOT),
    )


def sockprobe_json(
    *args: str,
    sysctls: Mapping[str, Any] | None = None,
    setup: Sequence[str] = (),
    lo_up: bool = True,
    timeout: float = 120.0,
) -> tuple[int, dict[str, Any] | None, str]:
    """`sockprobe ARGS --json` in a namespace: (exit code, parsed JSON or None, stderr)."""
    proc = in_netns(
        args=[*args, "--json"], sysctls=sysctls, setup=setup, lo_up=lo_up, timeout=timeout
    )
    try:
        doc = json.loads(proc.stdout) if proc.stdout.strip() else None
    except json.JSONDecodeError:
        doc = None
    return proc.returncode, doc, proc.stderr
