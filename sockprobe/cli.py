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


@app.command("partial-send")
def partial_send_cmd(
    size: Annotated[int, typer.Option(help="Bytes offered to the sender in each mode.")] = 1048576,
    sndbuf: Annotated[int, typer.Option(help="SO_SNDBUF to request on the sender.")] = 16384,
    rcvbuf: Annotated[int, typer.Option(help="SO_RCVBUF to request on the receiver.")] = 16384,
    placement: Annotated[
        str,
        typer.Option(help="Where SO_RCVBUF is set: listener (before listen()), accepted, or both."),
    ] = "both",
    mode: Annotated[
        list[str] | None,
        typer.Option(help="nonblocking, timeout, sendall (repeatable; default: all three)."),
    ] = None,
    quiet_period: Annotated[
        float,
        typer.Option(
            "--quiet-period",
            help="Non-blocking mode: stop after this many seconds with nothing accepted.",
        ),
    ] = 0.2,
    op_timeout: Annotated[
        float,
        typer.Option("--op-timeout", help="Socket timeout for send() and sendall(), seconds."),
    ] = 0.2,
    host: HostOpt = "127.0.0.1",
    deadline: DeadlineOpt = 30.0,
    fmt: FormatOpt = Format.table,
    json_: JsonOpt = False,
    explain: ExplainOpt = False,
    debug: DebugOpt = False,
) -> None:
    """How much does one send() accept when buffers fill? Is anything lost?"""
    from sockprobe.probes.partial_send import MODES

    run_probe(
        "partial-send",
        dict(
            size=size,
            sndbuf=sndbuf,
            rcvbuf=rcvbuf,
            placement=placement,
            modes=tuple(mode) if mode else MODES,
            quiet_period=quiet_period,
            op_timeout=op_timeout,
            host=host,
            deadline=deadline,
        ),
        fmt,
        json_,
        explain,
    )


@app.command("udp-truncate")
def udp_truncate_cmd(
    size: Annotated[
        list[int] | None,
        typer.Option(
            "--size",
            help="Datagram size to send (repeatable; default 64 512 1024 1472 1500 8192 65507).",
        ),
    ] = None,
    bufsize: Annotated[int, typer.Option(help="Receive buffer passed to recvmsg().")] = 1024,
    burst: Annotated[int, typer.Option(help="Overflow: datagrams sent back to back.")] = 200,
    burst_size: Annotated[
        int, typer.Option("--burst-size", help="Overflow: bytes per datagram.")
    ] = 512,
    burst_rcvbuf: Annotated[
        int, typer.Option("--burst-rcvbuf", help="Overflow: SO_RCVBUF of the idle receiver.")
    ] = 4096,
    op_timeout: Annotated[
        float,
        typer.Option("--op-timeout", help="How long recv() waits for an ICMP error, in seconds."),
    ] = 0.2,
    host: HostOpt = "127.0.0.1",
    deadline: DeadlineOpt = 30.0,
    fmt: FormatOpt = Format.table,
    json_: JsonOpt = False,
    explain: ExplainOpt = False,
    debug: DebugOpt = False,
) -> None:
    """What happens to a datagram larger than the buffer, the largest one, a full queue?"""
    from sockprobe.probes.udp_truncate import DEFAULT_SIZES

    run_probe(
        "udp-truncate",
        dict(
            sizes=tuple(size) if size else DEFAULT_SIZES,
            bufsize=bufsize,
            burst=burst,
            burst_size=burst_size,
            burst_rcvbuf=burst_rcvbuf,
            op_timeout=op_timeout,
            host=host,
            deadline=deadline,
        ),
        fmt,
        json_,
        explain,
    )


@app.command("reuseaddr")
def reuseaddr_cmd(
    wait: Annotated[
        bool,
        typer.Option(
            "--wait",
            help="Then wait a TIME_WAIT out (about 60 s, progress on stderr) and bind plainly.",
        ),
    ] = False,
    wildcard_listen: Annotated[
        bool,
        typer.Option(
            "--wildcard-listen",
            help="Let the [::] socket of the IPV6_V6ONLY rows listen (reachable from other "
            "hosts for milliseconds); by default it is only bound.",
        ),
    ] = False,
    clients: Annotated[
        int, typer.Option(help="SO_REUSEPORT restart: clients queued on each listener.")
    ] = 4,
    host: HostOpt = "127.0.0.1",
    deadline: Annotated[
        float | None,
        typer.Option(
            "--deadline", help="Hard bound on the whole probe, in seconds (30; 120 with --wait)."
        ),
    ] = None,
    fmt: FormatOpt = Format.table,
    json_: JsonOpt = False,
    explain: ExplainOpt = False,
    debug: DebugOpt = False,
) -> None:
    """When does a restarted server get EADDRINUSE, and which socket options fix it?"""
    progress = None
    if wait:
        tty = sys.stderr.isatty()
        last = [-1e9]

        def progress(left: float, waited: float, done: bool) -> None:
            # On a terminal one line rewritten in place; elsewhere a line every 10 s.
            text = "gone" if done else f"{left:.1f} s left on the kernel's timer"
            if tty:
                end = "\n" if done else ""
                sys.stderr.write(f"\r\x1b[KTIME_WAIT: {text}, waited {waited:.1f} s{end}")
            elif done or waited - last[0] >= 10:
                last[0] = waited
                sys.stderr.write(f"TIME_WAIT: {text}, waited {waited:.0f} s\n")
            sys.stderr.flush()

    run_probe(
        "reuseaddr",
        dict(
            wait=wait,
            wildcard_listen=wildcard_listen,
            clients=clients,
            progress=progress,
            host=host,
            deadline=deadline if deadline is not None else (120.0 if wait else 30.0),
        ),
        fmt,
        json_,
        explain,
    )


@app.command()
def port(
    target: Annotated[
        str,
        typer.Argument(
            metavar="PORT|PATH",
            help="A port (1..65535), a UNIX socket path (with a '/'), or @name (abstract).",
        ),
    ],
    tcp: Annotated[bool, typer.Option("--tcp", help="TCP only.")] = False,
    udp: Annotated[bool, typer.Option("--udp", help="UDP only.")] = False,
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Exit 1 if a plain bind (no SO_REUSEADDR) on the wildcard address fails "
            "now, 0 if it succeeds.",
        ),
    ] = False,
    limit: Annotated[
        int, typer.Option(help="Most connection rows to show (0: all); listeners always.")
    ] = 100,
    host: HostOpt = "127.0.0.1",
    deadline: DeadlineOpt = 30.0,
    fmt: FormatOpt = Format.table,
    json_: JsonOpt = False,
    explain: ExplainOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Who holds this port (or UNIX socket path), would a bind succeed now, and the fix?"""
    from sockprobe.port import Params, diagnose
    from sockprobe.render import render

    params = Params(target=target, tcp=tcp, udp=udp, limit=limit, host=host, deadline=deadline)
    result = diagnose(params)
    _emit(render(result.report, "json" if json_ else fmt.value, explain=explain))
    if check and result.bind_fails:
        raise typer.Exit(int(ExitStatus.FAILURE))


@app.command("backlog")
def backlog_cmd(
    backlog: Annotated[
        list[int] | None,
        typer.Option(
            "--backlog", help="listen() backlog to try (repeatable; default 0, 1, 8, 128)."
        ),
    ] = None,
    connects: Annotated[
        int | None,
        typer.Option(help="Connects per backlog (default: the effective backlog + 8)."),
    ] = None,
    retry_wait: Annotated[
        float,
        typer.Option(
            "--retry-wait",
            help="After accepting, keep accepting this many seconds and watch the waiting "
            "clients retransmit their SYNs (0: off).",
        ),
    ] = 0.0,
    settle: Annotated[
        float,
        typer.Option(help="Most seconds to wait for the handshakes before counting (< 1)."),
    ] = 0.5,
    host: HostOpt = "127.0.0.1",
    deadline: DeadlineOpt = 30.0,
    fmt: FormatOpt = Format.table,
    json_: JsonOpt = False,
    explain: ExplainOpt = False,
    debug: DebugOpt = False,
) -> None:
    """How many connections does listen(n) really admit, and where do the others wait?"""
    from sockprobe.probes.backlog import DEFAULT_BACKLOGS

    run_probe(
        "backlog",
        dict(
            backlogs=tuple(backlog) if backlog else DEFAULT_BACKLOGS,
            connects=connects,
            retry_wait=retry_wait,
            settle=settle,
            host=host,
            deadline=deadline,
        ),
        fmt,
        json_,
        explain,
    )


@app.command("timeouts")
def timeouts_cmd(
    op_timeout: Annotated[
        float,
        typer.Option("--op-timeout", help="T for settimeout(T) and SO_RCVTIMEO/SO_SNDTIMEO (s)."),
    ] = 0.2,
    wake_after: Annotated[
        float,
        typer.Option(
            "--wake-after", help="Wake a blocked call with shutdown() after this long (s)."
        ),
    ] = 0.3,
    op: Annotated[
        list[str] | None,
        typer.Option(
            "--op",
            help="connect-refused, connect-full-queue, accept, recv, send-full, "
            "recv-after-fin, recv-after-rst, send-after-close, send-after-rst "
            "(repeatable; default all).",
        ),
    ] = None,
    mode: Annotated[
        list[str] | None,
        typer.Option(
            "--mode", help="blocking, timeout, nonblocking, sockopt (repeatable; default all)."
        ),
    ] = None,
    host: HostOpt = "127.0.0.1",
    deadline: DeadlineOpt = 30.0,
    fmt: FormatOpt = Format.table,
    json_: JsonOpt = False,
    explain: ExplainOpt = False,
    debug: DebugOpt = False,
) -> None:
    """What does each operation do when blocking, with a timeout, non-blocking?"""
    from sockprobe.probes.timeouts import MODES, OPS

    run_probe(
        "timeouts",
        dict(
            op_timeout=op_timeout,
            wake_after=wake_after,
            ops=tuple(op) if op else tuple(OPS),
            modes=tuple(mode) if mode else tuple(MODES),
            host=host,
            deadline=deadline,
        ),
        fmt,
        json_,
        explain,
    )


@app.command("close")
def close_cmd(
    host: HostOpt = "127.0.0.1",
    deadline: DeadlineOpt = 30.0,
    fmt: FormatOpt = Format.table,
    json_: JsonOpt = False,
    explain: ExplainOpt = False,
    debug: DebugOpt = False,
) -> None:
    """What does the peer see after close, close with unread data, abort, half-close?"""
    run_probe("close", dict(host=host, deadline=deadline), fmt, json_, explain)


@app.command("framing")
def framing_cmd(
    size: Annotated[
        list[int] | None,
        typer.Option(
            "--size",
            help="Size of a message sent after 'hello' and 'world' (repeatable; "
            "default 100, 1000, 3000, 6000).",
        ),
    ] = None,
    read_size: Annotated[
        int, typer.Option("--read-size", help="Buffer of the one-recv-per-message reader.")
    ] = 4096,
    small_read: Annotated[
        int, typer.Option("--small-read", help="Buffer of the tiny-reads reader.")
    ] = 2,
    transport: Annotated[
        list[str] | None,
        typer.Option(
            help="tcp, tcp-nodelay, udp, unix-stream, unix-seqpacket (repeatable; default all)."
        ),
    ] = None,
    reader: Annotated[
        list[str] | None,
        typer.Option(help="recv, small-recv, prefix, readline (repeatable; default all)."),
    ] = None,
    receiver: Annotated[
        str,
        typer.Option(
            help="late: read after the sender closed (default); concurrent: while it writes."
        ),
    ] = "late",
    host: HostOpt = "127.0.0.1",
    deadline: DeadlineOpt = 30.0,
    fmt: FormatOpt = Format.table,
    json_: JsonOpt = False,
    explain: ExplainOpt = False,
    debug: DebugOpt = False,
) -> None:
    """How do message boundaries survive TCP, UDP, SEQPACKET, and a length prefix?"""
    from sockprobe.probes.framing import DEFAULT_SIZES, READERS, TRANSPORTS

    run_probe(
        "framing",
        dict(
            sizes=tuple(size) if size else DEFAULT_SIZES,
            read_size=read_size,
            small_read=small_read,
            transports=tuple(transport) if transport else TRANSPORTS,
            readers=tuple(reader) if reader else READERS,
            receiver=receiver,
            host=host,
            deadline=deadline,
        ),
        fmt,
        json_,
        explain,
    )


@app.command("kernel")
def kernel_cmd(
    measure: Annotated[
        bool,
        typer.Option(
            "--measure/--no-measure",
            help="Also check new sockets and the FIN_WAIT2/TIME_WAIT timers against the "
            "settings (leaves one TIME_WAIT socket for 60 s).",
        ),
    ] = True,
    host: HostOpt = "127.0.0.1",
    deadline: DeadlineOpt = 30.0,
    fmt: FormatOpt = Format.table,
    json_: JsonOpt = False,
    explain: ExplainOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Which kernel settings shape these behaviours here, and what does each change?"""
    run_probe("kernel", dict(measure=measure, host=host, deadline=deadline), fmt, json_, explain)


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
    try:
        command = typer.main.get_command(app)
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
