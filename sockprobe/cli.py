"""The command line: parse options, build params, run, render, map errors to exit codes.

Thin by design. Each probe declares its options on its `Params` dataclass
(`sockprobe.options.option`), so this module builds every command's parser from the
registry and the fields; probes know nothing of the CLI and never print; rendering lives
in render.py; exit codes and the exception mapping live in status.py.

argparse (the standard library) rather than typer or click: `sockprobe --version` and
`sockprobe port P --check -q` are run in loops by scripts, and typer's import alone cost
more than the work (numbers in pyproject.toml). Only the parser of the command being run
is built, so `sockprobe --help` imports no probe.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import re
import signal
import sys
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import IO, Any

from sockprobe import __version__
from sockprobe.argparams import (
    HelpShown,
    Parser,
    UsageText,
    add_params,
    append_action,
    converter,
)
from sockprobe.output import Output, StdoutGone, ask, event_stream, progress_line
from sockprobe.status import ExitStatus, Terminated, UsageError, classify

PROG = "sockprobe"
FORMATS = ("table", "json", "jsonl", "csv", "markdown")


# ---- the commands ------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Command:
    name: str
    question: str
    #: Module whose `Params` declares the options (None: the command has its own parser).
    params_module: str | None
    examples: tuple[str, ...] = ()


def _commands() -> list[Command]:
    from sockprobe.probes import PROBES

    out: list[Command] = []
    for p in PROBES:
        out.append(Command(p.name, p.question, p.module, p.examples))
        if p.name == "reuseaddr":
            out.append(
                Command(
                    "port",
                    "Who holds this port (or UNIX socket path), would a bind succeed now, "
                    "and what is the fix?",
                    "sockprobe.port",
                    ("sockprobe port 8080", "sockprobe port :8080 --check --reuseaddr -q"),
                )
            )
    out += [
        Command(
            "all",
            "Every probe, one summary: the host's socket-behaviour fingerprint.",
            None,
            ("sockprobe all", "sockprobe all --json > $(hostname).json"),
        ),
        Command(
            "diff",
            "What differs between hosts' fingerprints (a fleet: grouped by behaviour)?",
            None,
            ("sockprobe diff a.json b.json", "sockprobe diff hosts/*.json"),
        ),
        Command(
            "serve",
            "Run the server halves of experiments for a probe on another host (--peer).",
            None,
            ("sockprobe serve --bind 192.0.2.10", "sockprobe serve --once --token SECRET"),
        ),
        Command("docs", "The documents, from the installed tool.", None, ("sockprobe docs nagle",)),
        Command(
            "completion",
            "Print a shell completion script (bash or zsh).",
            None,
            ('eval "$(sockprobe completion bash)"',),
        ),
    ]
    return out


def _find(name: str) -> Command | None:
    return next((c for c in _commands() if c.name == name), None)


def _usage_text() -> str:
    lines = [
        f"usage: {PROG} COMMAND [OPTIONS]   ({PROG} COMMAND --help for one command's options)",
        "",
        "Run small, real experiments against this kernel's socket layer and report what",
        "happened: every number in the tables and findings is measured in this run.",
        "",
        "commands:",
    ]
    cmds = _commands()
    width = max(len(c.name) for c in cmds)
    lines += [f"  {c.name:<{width}}  {c.question}" for c in cmds]
    lines += [
        "",
        "options: -h/--help, --version",
        "exit codes: 0 ran, 1 found what --check/diff/all report as failure, 2 bad usage,",
        "  3 cannot run here, 4 --deadline ran out, 130 interrupted (128+n for signal n)",
        "",
    ]
    return "\n".join(lines)


def _output_options(parser: argparse.ArgumentParser, *, tables: bool = True) -> None:
    out = parser.add_argument_group("output")
    out.add_argument(
        "-f", "--format", choices=FORMATS, default="table", help="Output format (default: table)."
    )
    out.add_argument("--json", action="store_true", help="Shorthand for --format json.")
    out.add_argument(
        "--explain",
        action="store_true",
        help="Also print the mechanism notes, endpoints and settings read.",
    )
    out.add_argument(
        "--width",
        type=converter(int, "--width"),
        metavar="COLUMNS",
        help="Fit tables to this many columns (default: the terminal's; unlimited in a pipe).",
    )
    out.add_argument(
        "--no-chart", action="store_true", help="Leave out the charts in the table format."
    )
    if tables:
        out.add_argument(
            "--table",
            metavar="ID",
            help="CSV: which table (default: the first; 'all' for a long form).",
        )
    out.add_argument("--debug", action="store_true", help="Show tracebacks on errors.")


def _params_class(module_name: str) -> type:
    try:
        mod = importlib.import_module(module_name + ".params")
    except ModuleNotFoundError as exc:
        if exc.name != module_name + ".params":
            raise
        mod = importlib.import_module(module_name)
    cls = mod.Params
    assert isinstance(cls, type)
    return cls


def build_parser(cmd: Command) -> tuple[argparse.ArgumentParser, type | None, list[str]]:
    epilog = "examples:\n" + "\n".join(f"  {e}" for e in cmd.examples) if cmd.examples else None
    parser = Parser(
        prog=f"{PROG} {cmd.name}",
        description=cmd.question,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        # No abbreviations: a script's `--back` must not change meaning when an option
        # that shares the prefix is added.
        allow_abbrev=False,
    )
    params_cls: type | None = None
    names: list[str] = []
    if cmd.params_module is not None:
        params_cls = _params_class(cmd.params_module)
        names = add_params(parser, params_cls)
        from sockprobe.peer.runner import peer_probes

        if cmd.name in peer_probes():
            two = parser.add_argument_group("two hosts")
            two.add_argument(
                "--peer",
                metavar="HOST:PORT",
                help="Run the experiments across the path to a `sockprobe serve` agent there.",
            )
            two.add_argument(
                "--token",
                metavar="TOKEN",
                help="The agent's token (default: $SOCKPROBE_TOKEN).",
            )
    elif cmd.name == "all":
        parser.add_argument(
            "--host",
            default="127.0.0.1",
            metavar="ADDRESS",
            help="Local address to run on; ::1 selects IPv6 (default: 127.0.0.1).",
        )
        parser.add_argument(
            "--deadline",
            type=converter(float, "--deadline"),
            default=30.0,
            metavar="SECONDS",
            help="Hard bound on each probe (default: 30).",
        )
        parser.add_argument("--summary", action="store_true", help="Print the summary table alone.")
        parser.add_argument(
            "--full", action="store_true", help="Print every probe's tables, not only findings."
        )
        parser.add_argument(
            "--only",
            action=append_action(str, None),
            default=None,
            metavar="PROBE",
            help="Run only these probes. Repeatable, or a comma list.",
        )
    elif cmd.name == "diff":
        parser.add_argument("paths", nargs="+", metavar="FILE", help="Fingerprints or reports.")
    elif cmd.name == "serve":
        from sockprobe.peer.protocol import DEFAULT_PORT

        parser.add_argument(
            "--bind",
            default="127.0.0.1",
            metavar="ADDRESS",
            help="Local address to listen on (default: 127.0.0.1; a wildcard needs "
            "--allow-wildcard).",
        )
        parser.add_argument(
            "--port",
            type=converter(int, "--port"),
            default=DEFAULT_PORT,
            metavar="PORT",
            help=f"Control port (default: {DEFAULT_PORT}; 0 takes any free port, named in "
            "the first line printed).",
        )
        parser.add_argument(
            "--token", metavar="TOKEN", help="The controllers' token (default: a random one)."
        )
        parser.add_argument("--once", action="store_true", help="Exit after one controller.")
        parser.add_argument(
            "--idle-timeout",
            type=converter(float, "--idle-timeout"),
            default=600.0,
            metavar="SECONDS",
            help="Exit after this long without a controller (default: 600).",
        )
        parser.add_argument(
            "--allow-wildcard",
            action="store_true",
            help="Allow --bind 0.0.0.0 or :: (every interface).",
        )
        parser.add_argument("--debug", action="store_true", help="Show tracebacks on errors.")
    elif cmd.name == "docs":
        parser.add_argument("topic", nargs="?", help="A document (default: list them).")
    elif cmd.name == "completion":
        parser.add_argument("shell", choices=("bash", "zsh"), help="The shell.")
    if cmd.name not in ("docs", "completion", "serve"):
        _output_options(parser)
    return parser, params_cls, names


def _render(report: Any, ns: argparse.Namespace, io: Output, **kw: Any) -> str:
    from sockprobe.render import RenderOptions, render_many

    reports = report if isinstance(report, list) else [report]
    opts = RenderOptions(
        fmt="json" if ns.json else ns.format,
        explain=ns.explain,
        width=io.width(ns.width),
        charts=not ns.no_chart,
        unicode=io.unicode,
        table=getattr(ns, "table", None),
        **kw,
    )
    return render_many(reports, opts)


# ---- running -------------------------------------------------------------------------------
def _run_probe(
    cmd: Command, ns: argparse.Namespace, params_cls: type, names: list[str], io: Output
) -> int:
    from sockprobe.probes import load

    if getattr(ns, "token", None) and not getattr(ns, "peer", None):
        raise UsageError("--token goes with --peer")
    kwargs = {n: getattr(ns, n) for n in names}
    if "progress" in {f.name for f in dataclasses.fields(params_cls)} and io.progress_ok():
        kwargs["progress"] = progress_line(io)
    params = params_cls(**kwargs)
    if getattr(ns, "peer", None):
        from sockprobe.peer import runner

        token = ns.token or os.environ.get("SOCKPROBE_TOKEN")
        if not token:
            raise UsageError("--peer needs the agent's token: --token T or $SOCKPROBE_TOKEN")
        report = runner.run(cmd.name, params, ns.peer, token, float(params.deadline))
    else:
        report = load(cmd.name).run(params)
    io.write(_render(report, ns, io))
    return int(getattr(report, "exit_status", 0) or 0)


def _run_all(ns: argparse.Namespace, io: Output) -> int:
    from sockprobe.fingerprint import run_all
    from sockprobe.probes import PROBES, ProbeParams

    ProbeParams(host=ns.host, deadline=ns.deadline).check_host()  # bad input: exit 2 first
    only = list(ns.only) if ns.only else None
    if only:
        unknown = sorted(set(only) - {p.name for p in PROBES})
        if unknown:
            raise UsageError(
                f"--only {','.join(unknown)}: choose from {', '.join(p.name for p in PROBES)}"
            )
    fmt = "json" if ns.json else ns.format
    show = progress_line(io) if io.progress_ok() else None

    def progress(i: int, n: int, name: str) -> None:
        if show is not None:
            show(f"[{i}/{n}] {name}...")

    def each(outcome: Any) -> None:
        if fmt == "jsonl":
            import json

            io.write(json.dumps(outcome.to_dict()) + "\n")

    try:
        fp = run_all(
            host=ns.host, deadline=ns.deadline, only=only, progress=progress, on_outcome=each
        )
    finally:
        if show is not None:
            show("")
    if fmt == "jsonl":
        return int(ExitStatus.FAILURE) if fp.failed else 0
    if fmt == "json":
        import json

        io.write(json.dumps(fp.to_dict(), indent=2) + "\n")
    else:
        head = fp.summary_report()
        # The one-screen answer by default: the summary, whose answer column is each
        # probe's headline; --full adds every probe's findings and tables.
        reports = [head, *fp.reports] if ns.full else [head]
        io.write(_render(reports, ns, io))
    return int(ExitStatus.FAILURE) if fp.failed else 0


def _run_diff(ns: argparse.Namespace, io: Output) -> int:
    from sockprobe import diff

    report = diff.run(list(ns.paths))
    io.write(_render(report, ns, io))
    return int(getattr(report, "exit_status", 0) or 0)


def _run_serve(ns: argparse.Namespace, io: Output) -> int:
    from sockprobe.peer.agent import ServeParams, serve

    if not (0 <= ns.port <= 65535):
        raise UsageError(f"--port must be 1..65535 (0: any free port), not {ns.port}")
    if not (0 < ns.idle_timeout <= 86_400):
        raise UsageError("--idle-timeout must be 0 to 86400 seconds")
    if ns.token is not None and not (8 <= len(ns.token) <= 256 and ns.token.isprintable()):
        raise UsageError("--token must be 8 to 256 printable characters")
    p = ServeParams(
        bind=ns.bind,
        port=ns.port,
        token=ns.token,
        once=ns.once,
        idle_timeout=ns.idle_timeout,
        allow_wildcard=ns.allow_wildcard,
    )

    def log(line: str) -> None:
        if io.err is not None:
            io.err.write(f"sockprobe serve: {line}\n")
            io.err.flush()

    return serve(p, log, io.write)


def _run_docs(ns: argparse.Namespace, io: Output) -> int:
    from sockprobe import docs

    if ns.topic is None:
        io.write("documents (sockprobe docs TOPIC):\n" + "".join(f"  {t}\n" for t in docs.topics()))
    else:
        io.write(docs.read(ns.topic))
    return 0


def _run_port(ns: argparse.Namespace, params_cls: type, names: list[str], io: Output) -> int:
    from sockprobe import port

    kwargs = {n: getattr(ns, n) for n in names}
    quiet = bool(getattr(ns, "quiet", False))
    fmt = "json" if ns.json else ns.format
    show = progress_line(io) if io.progress_mode() and not quiet else None
    if fmt == "jsonl" and getattr(ns, "wait", None) is not None and not quiet:
        # `--wait --format jsonl`: one event per change of what holds the port, then
        # the report, each a line of its own, for a script that follows along.
        show = event_stream(io, "wait")
    if show is not None:
        kwargs["progress"] = show
    if io.interactive():
        kwargs["confirm"] = ask(io)
    try:
        result = port.run(params_cls(**kwargs))
    finally:
        if show is not None:
            show("")  # clear the progress line, on Ctrl-C too
    if not quiet:
        extra = {**result.data, **({"actions": result.actions} if result.actions else {})}
        io.write(_render(result.report, ns, io, extra=extra))
    return int(result.exit_code)


def completion_script(shell: str) -> str:
    """A bash completion function over the commands and each command's flags (zsh loads
    it through bashcompinit)."""
    cmds = _commands()
    cases = []
    for c in cmds:
        if c.name == "completion":
            continue
        parser, _, _ = build_parser(c)
        flags = sorted({s for a in parser._actions for s in a.option_strings})
        words = " ".join(flags)
        if c.name == "docs":
            from sockprobe import docs

            words += " " + " ".join(docs.topics())
        cases.append(f'    {c.name}) words="{words}" ;;')
    names = " ".join(c.name for c in cmds)
    body = "\n".join(cases)
    script = f"""# sockprobe completion for {shell} (generated by `sockprobe completion {shell}`)
_sockprobe() {{
  local cur=${{COMP_WORDS[COMP_CWORD]}} words
  if [ "$COMP_CWORD" -eq 1 ]; then
    COMPREPLY=($(compgen -W "{names} --help --version" -- "$cur")); return
  fi
  case "${{COMP_WORDS[1]}}" in
{body}
    *) words="" ;;
  esac
  COMPREPLY=($(compgen -W "$words" -- "$cur"))
}}
"""
    if shell == "zsh":
        script += "autoload -U +X bashcompinit && bashcompinit\n"
    return script + "complete -o default -F _sockprobe sockprobe\n"


@contextmanager
def _signals_as_interrupts() -> Iterator[None]:
    """SIGTERM and SIGHUP raise Terminated in the main thread, so a probe cleans up on
    them exactly as on Ctrl-C (every Lab closes its sockets and reaps its children)."""

    def handler(signum: int, _frame: object) -> None:
        raise Terminated(signum)

    old: dict[signal.Signals, Any] = {}
    try:
        for sig in (signal.SIGTERM, signal.SIGHUP):
            old[sig] = signal.signal(sig, handler)
    except (ValueError, AttributeError, OSError):  # not the main thread, or no SIGHUP
        pass
    try:
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


def _dispatch(argv: list[str], io: Output) -> int:
    if not argv:
        io.write(_usage_text())
        return 0
    first = argv[0]
    if first in ("-h", "--help", "help"):
        if first == "help" and len(argv) > 1:
            return _dispatch([argv[1], "--help"], io)
        io.write(_usage_text())
        return 0
    if first == "--version":
        io.write(f"{PROG} {__version__}\n")
        return 0
    cmd = _find(first)
    if cmd is None:
        shown = first if len(first) <= 40 else first[:37] + "..."
        raise UsageText(f"unknown command {shown!r} (see {PROG} --help)")
    parser, params_cls, names = build_parser(cmd)
    try:
        ns = parser.parse_args(argv[1:])
    except HelpShown as shown_help:
        io.write(parser.format_help())
        return shown_help.status
    if cmd.name == "completion":
        io.write(completion_script(ns.shell))
        return 0
    if cmd.name == "docs":
        return _run_docs(ns, io)
    if cmd.name == "serve":
        return _run_serve(ns, io)
    if cmd.name == "all":
        return _run_all(ns, io)
    if cmd.name == "diff":
        return _run_diff(ns, io)
    assert params_cls is not None
    if cmd.name == "port":
        return _run_port(ns, params_cls, names, io)
    return _run_probe(cmd, ns, params_cls, names, io)


def main(
    argv: Sequence[str] | None = None,
    stdout: IO[str] | None = None,
    stderr: IO[str] | None = None,
) -> int:
    """Entry point: run one command and turn every outcome into an exit status.

    Usage errors, UsageError/Unsupported/DeadlineExceeded, Ctrl-C, SIGTERM/SIGHUP and
    unexpected errors all end as one line on stderr (a traceback only with --debug).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    io = Output(sys.stdout if stdout is None else stdout, sys.stderr if stderr is None else stderr)
    debug = "--debug" in args

    def say(message: str) -> None:
        # One line, and a readable one: a 5,000-digit argument is shown by its start.
        message = re.sub(r"\S{60,}", lambda m: m.group(0)[:40] + "...", message.replace("\n", " "))
        if io.err is not None:
            try:
                io.err.write(f"{PROG}: {message}\n")
                io.err.flush()
            except (OSError, ValueError):
                pass

    status: int
    try:
        with _signals_as_interrupts():
            status = _dispatch(args, io)

    except UsageText as exc:
        say(f"error: {str(exc).removeprefix(PROG + ': ')}")
        return int(ExitStatus.USAGE)
    except StdoutGone:
        # The reader went away (`sockprobe all | head`): nothing left to say to it. Point
        # stdout at /dev/null so the interpreter's final flush does not fail again.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):
            pass
        return 128 + int(signal.SIGPIPE)
    except BaseException as exc:
        if isinstance(exc, SystemExit):
            return int(exc.code) if isinstance(exc.code, int) else 1
        code, message = classify(exc)
        if debug:
            traceback.print_exc()
        say(message)
        return int(code)
    return status
