"""The command line: parse options, build probe params, run, render, map errors to exits.

Thin by design: probes know nothing of the CLI and never print; rendering lives in
render.py; exit codes and the exception mapping live in status.py.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Sequence
from enum import Enum
from typing import IO, TYPE_CHECKING, Annotated, Any

import typer

from sockprobe import __version__
from sockprobe.status import ExitStatus, classify

if TYPE_CHECKING:
    from sockprobe.report import Report

app = typer.Typer(
    name="sockprobe",
    help="Run small, real experiments against this kernel's socket layer and report what "
    "happened: every number is measured in this run.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


class Format(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"
    markdown = "markdown"


# Options every probe command shares.
FormatOpt = Annotated[Format, typer.Option("--format", "-f", help="Output format.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Shorthand for --format json.")]
HostOpt = Annotated[str, typer.Option("--host", help="Local address to run on (::1 selects IPv6).")]
DeadlineOpt = Annotated[
    float, typer.Option("--deadline", help="Hard bound on the whole probe, in seconds.")
]
ExplainOpt = Annotated[
    bool,
    typer.Option(
        "--explain", help="Print the mechanism notes, endpoints and settings under the tables."
    ),
]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")]


def _emit(text: str, out: IO[str] | None = None) -> None:
    (out or sys.stdout).write(text)


def run_probe(
    name: str, params_kwargs: dict[str, Any], fmt: Format, json_: bool, explain: bool
) -> Report:
    """Build the probe's Params (validation raises UsageError), run it, render it.

    Returns the Report so that a command can derive its exit code from it
    (`raise typer.Exit(code)`)."""
    from sockprobe.probes import load
    from sockprobe.render import render

    module = load(name)
    params = module.Params(**params_kwargs)
    report: Report = module.run(params)
    _emit(render(report, "json" if json_ else fmt.value, explain=explain))
    return report


@app.callback(invoke_without_command=True)
def main_callback(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    if version:
        _emit(f"sockprobe {__version__}\n")
        raise typer.Exit(0)


@app.command()
def nagle(
    writes: Annotated[int, typer.Option(help="Back-to-back writes per mode.")] = 100,
    size: Annotated[int, typer.Option(help="Bytes per write (and per request piece).")] = 10,
    rounds: Annotated[int, typer.Option(help="Write-write-read rounds per mode.")] = 20,
    mode: Annotated[
        list[str] | None,
        typer.Option(
            help="nagle, nodelay, cork, cork-held (repeatable; default: the first three)."
        ),
    ] = None,
    reader: Annotated[
        str, typer.Option(help="Receiver during coalescing: idle, concurrent or both.")
    ] = "both",
    host: HostOpt = "127.0.0.1",
    deadline: DeadlineOpt = 30.0,
    fmt: FormatOpt = Format.table,
    json_: JsonOpt = False,
    explain: ExplainOpt = False,
    debug: DebugOpt = False,
) -> None:
    """How many segments do small writes become? What does write-write-read cost?"""
    from sockprobe.probes.nagle import MODES

    run_probe(
        "nagle",
        dict(
            writes=writes,
            size=size,
            rounds=rounds,
            modes=tuple(mode) if mode else MODES,
            reader=reader,
            host=host,
            deadline=deadline,
        ),
        fmt,
        json_,
        explain,
    )


@app.command("all")
def all_(
    summary: Annotated[
        bool, typer.Option("--summary", help="Print the summary table alone.")
    ] = False,
    host: HostOpt = "127.0.0.1",
    deadline: Annotated[
        float, typer.Option("--deadline", help="Hard bound on each probe, in seconds.")
    ] = 30.0,
    fmt: FormatOpt = Format.table,
    json_: JsonOpt = False,
    explain: ExplainOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Every probe, one summary: the host's socket-behaviour fingerprint (--json)."""
    from sockprobe.fingerprint import run_all
    from sockprobe.probes import ProbeParams
    from sockprobe.render import render_many

    ProbeParams(host=host, deadline=deadline).resolve()  # bad input: exit 2 before running
    progress = None
    if sys.stderr.isatty():

        def progress(i: int, n: int, name: str) -> None:
            sys.stderr.write(f"\r\x1b[K[{i}/{n}] {name}...")
            sys.stderr.flush()

    try:
        fp = run_all(host=host, deadline=deadline, progress=progress)
    finally:
        if progress is not None:
            sys.stderr.write("\r\x1b[K")
    out_fmt = "json" if json_ else fmt.value
    head = fp.summary_report()
    reports = [head] if summary else [head, *fp.reports]
    _emit(render_many(reports, out_fmt, explain=explain, document=fp.to_dict()))
    if fp.failed:
        raise typer.Exit(int(ExitStatus.FAILURE))


@app.command()
def diff(
    a: Annotated[str, typer.Argument(help="First fingerprint (sockprobe all --json > A.json).")],
    b: Annotated[str, typer.Argument(help="Second fingerprint.")],
    fmt: FormatOpt = Format.table,
    json_: JsonOpt = False,
    explain: ExplainOpt = False,
    debug: DebugOpt = False,
) -> None:
    """What differs between two hosts' fingerprints? Exit 0 equal, 1 different."""
    from sockprobe.diff import run
    from sockprobe.render import render

    report = run(a, b)
    _emit(render(report, "json" if json_ else fmt.value, explain=explain))
    if report.tables[0].rows:
        raise typer.Exit(int(ExitStatus.FAILURE))


# ---- probe commands above this line (one function per command, in DESIGN.md order) ----


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: run the app and turn every outcome into an exit status.

    Click's own usage errors, our UsageError/Unsupported, Ctrl-C and unexpected errors
    all end as one line on stderr (a traceback only with --debug).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    command = typer.main.get_command(app)
    try:
        rv = command.main(args=args, prog_name="sockprobe", standalone_mode=False)
    except typer.Exit as exc:
        return int(exc.exit_code)
    except typer.Abort:  # Ctrl-C in typer versions that abort instead of exiting 130
        sys.stderr.write(f"sockprobe: {classify(KeyboardInterrupt())[1]}\n")
        return int(ExitStatus.INTERRUPTED)
    except typer.TyperException as exc:  # click usage errors: bad option, bad value
        sys.stderr.write(f"sockprobe: error: {exc.format_message()}\n")
        return int(getattr(exc, "exit_code", ExitStatus.USAGE))
    except BaseException as exc:
        if isinstance(exc, SystemExit):
            return int(exc.code or 0) if isinstance(exc.code, int) else 1
        status, message = classify(exc)
        if debug:
            traceback.print_exc()
        sys.stderr.write(f"sockprobe: {message}\n")
        return int(status)
    code = int(rv) if isinstance(rv, int) else 0
    if code == ExitStatus.INTERRUPTED:
        # typer turns Ctrl-C into exit status 130 itself; the probe's Lab has cleaned up
        # by the time the KeyboardInterrupt reached it.
        sys.stderr.write(f"sockprobe: {classify(KeyboardInterrupt())[1]}\n")
    return code
