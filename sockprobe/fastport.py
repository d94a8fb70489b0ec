"""`sockprobe port ...` without typer, for the command people run in a loop while a
server will not start, and that scripts run (`--check`) before starting one.

The typer command in cli.py defines the options; this parser accepts exactly its plain
forms and hands anything else (help, unknown options, malformed values) back to typer by
returning None, so errors and help text come from one place. Start-up: Python plus
typer cost more than the whole /proc walk on a host with 10,000 sockets (see
bench/bench_port.py); tests check that both paths give the same output and exit codes.
"""

from __future__ import annotations

import sys

from sockprobe.port import Params, diagnose
from sockprobe.render import FORMATS

_FLAGS = ("--tcp", "--udp", "--check", "--json", "--explain", "--debug")
_VALUED = {"--limit": "limit", "--host": "host", "--deadline": "deadline", "--format": "format"}
#: The same defaults as the typer command in cli.py (tests compare the two).
DEFAULT_LIMIT = 100
DEFAULT_DEADLINE = 30.0


def _parse_fast(argv: list[str]) -> dict[str, str | bool] | None:
    """`PORT|PATH [--tcp] [--udp] [--check] [--limit N] [--host H] [--deadline S]
    [--format F|-f F] [--json] [--explain] [--debug]`, or None for anything else."""
    opts: dict[str, str | bool] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg in _FLAGS:
            opts[arg[2:]] = True
            continue
        name, eq, value = arg.partition("=")
        if name == "-f":
            if eq:
                return None  # click reads `-f=json` as the value "=json": typer's to reject
            name = "--format"
        if name in _VALUED:
            if not eq:
                if i >= len(argv):
                    return None
                value = argv[i]
                i += 1
            opts[_VALUED[name]] = value
            continue
        if arg.startswith("-") or "target" in opts:
            return None  # --help, an unknown option, a second argument: typer's to say
        opts["target"] = arg
    return opts if "target" in opts else None


def fast_main(argv: list[str]) -> int | None:
    """`sockprobe port ...` without typer: the exit status, or None when the arguments
    are not plain ones this parser handles (help, unknown options, malformed values),
    which the typer command in cli.py then parses and reports as usual.

    Why: importing typer and building the command costs ~30 ms on top of Python's own
    start-up (measured: 0.08 s through this path, 0.11 s through typer, for a free port),
    which is a third of the budget the bench gives `port` against `ss`.
    Options, defaults, output and exit codes are the typer command's (tests check it).
    """
    opts = _parse_fast(argv)
    if opts is None:
        return None
    try:
        limit = int(str(opts.get("limit", DEFAULT_LIMIT)))
        deadline = float(str(opts.get("deadline", DEFAULT_DEADLINE)))
    except ValueError:
        return None
    fmt = str(opts.get("format", "table"))
    if fmt not in FORMATS:
        return None
    from sockprobe.status import classify

    debug = bool(opts.get("debug"))
    try:
        params = Params(
            target=str(opts["target"]),
            tcp=bool(opts.get("tcp")),
            udp=bool(opts.get("udp")),
            limit=limit,
            host=str(opts.get("host", "127.0.0.1")),
            deadline=deadline,
        )
        result = diagnose(params)
        from sockprobe.render import render

        out = render(
            result.report, "json" if opts.get("json") else fmt, explain=bool(opts.get("explain"))
        )
        sys.stdout.write(out)
        sys.stdout.flush()
    except Exception as exc:  # the same one-line mapping as cli.main
        status, message = classify(exc)
        if debug:
            import traceback

            traceback.print_exc()
        sys.stderr.write(f"sockprobe: {message}\n")
        return int(status)
    except KeyboardInterrupt as exc:
        status, message = classify(exc)
        sys.stderr.write(f"sockprobe: {message}\n")
        return int(status)
    return 1 if opts.get("check") and result.bind_fails else 0
