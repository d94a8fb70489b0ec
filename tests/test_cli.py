"""The CLI in-process (streams injected, as httpie's tests do) and as a real process:
formats, terminal widths, exit codes, bad input, signals and broken output channels."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import interrupt

from sockprobe.cli import main
from sockprobe.probes import PROBES

QUICK = ["nagle", "--writes", "5", "--rounds", "2", "--mode", "nodelay", "--reader", "idle"]
ROOT = Path(__file__).resolve().parent.parent


class Tty(io.StringIO):
    """A stdout that says it is a terminal (the width comes from --width)."""

    encoding = "utf-8"

    def isatty(self) -> bool:
        return True


def run(*args: str, stdout: io.StringIO | None = None) -> tuple[int, str, str]:
    out = stdout if stdout is not None else io.StringIO()
    err = io.StringIO()
    code = main(list(args), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def sub(*args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sockprobe", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(ROOT),
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module")
def quick_json() -> dict[str, object]:
    code, out, err = run(*QUICK, "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert isinstance(doc, dict)
    return doc


def test_json_is_schema_2_with_keyed_rows(quick_json):
    doc = quick_json
    assert doc["schema"] == 2 and doc["probe"] == "nagle"
    for t in doc["tables"]:
        keys = [c["key"] for c in t["columns"]]
        assert set(t["keys"]) <= set(keys) and t["id"]
        for r in t["rows"]:
            assert set(r) - {"na"} == set(keys)
            for k, reason in r.get("na", {}).items():
                assert r[k] is None and reason


def test_jsonl_is_one_document_per_line():
    code, out, _ = run(*QUICK, "--format", "jsonl")
    assert code == 0
    (line,) = out.splitlines()
    assert json.loads(line)["probe"] == "nagle"


def test_csv_is_one_rectangular_table_that_csv_reads():
    code, out, _ = run(*QUICK, "--format", "csv")
    assert code == 0
    rows = list(csv.reader(io.StringIO(out)))
    assert len(rows) >= 2 and len({len(r) for r in rows}) == 1
    assert all(h.isidentifier() and h.islower() for h in rows[0])
    # Every table in a long form with one header.
    code, out, _ = run(*QUICK, "--format", "csv", "--table", "all")
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0] == ["report", "table", "row", "column", "value"]
    assert all(len(r) == 5 for r in rows) and len(rows) > 5


def test_csv_table_choice_and_unknown_table(quick_json):
    last = quick_json["tables"][-1]["id"]  # type: ignore[index]
    code, out, _ = run(*QUICK, "--format", "csv", "--table", last)
    assert code == 0 and out.splitlines()[0].split(",")[0] == "mode"
    code, out, err = run(*QUICK, "--format", "csv", "--table", "nope")
    assert code == 2 and out == "" and "choose from" in err and len(err.splitlines()) == 1


def test_markdown_keeps_na_reasons_and_notes_outside_tables():
    code, out, _ = run(*QUICK, "--format", "markdown", "--explain")
    assert code == 0
    for line in out.splitlines():
        if line.startswith("|"):
            assert "n/a:" not in line and "How it works" not in line


@pytest.mark.parametrize("width", [80, 120])
def test_no_line_wider_than_the_terminal(width):
    code, out, _ = run(*QUICK, "--explain", stdout=Tty())
    assert code == 0
    code, out, _ = run(*QUICK, "--explain", "--width", str(width), stdout=Tty())
    assert code == 0
    assert max(len(line) for line in out.splitlines()) <= width


def test_piped_output_keeps_each_row_on_one_line():
    code, out, _ = run(*QUICK)
    assert code == 0
    lines = out.splitlines()
    # The write-write-read table's nodelay row is whole on one line in a pipe.
    assert any(line.startswith("nodelay") and len(line.split()) >= 5 for line in lines)


def test_answer_first_headline_and_findings_before_tables():
    _code, out, _ = run(*QUICK)
    lines = out.splitlines()
    assert lines[0].startswith("sockprobe nagle: ")
    assert lines.index("Findings") < min(i for i, x in enumerate(lines) if x.startswith("---"))


def test_no_arguments_prints_usage_and_exits_0():
    code, out, err = run()
    assert code == 0 and err == "" and out.startswith("usage: sockprobe COMMAND")
    for p in PROBES:
        assert f"  {p.name} " in out


def test_help_of_each_command_names_metavars_and_examples():
    for p in PROBES:
        code, out, _ = run(p.name, "--help")
        assert code == 0 and out.startswith(f"usage: sockprobe {p.name}"), p.name
        assert "--deadline SECONDS" in out
    code, out, _ = run("all", "--help")
    assert code == 0 and "examples:" in out


def test_version():
    code, out, _ = run("--version")
    assert code == 0 and out.startswith("sockprobe ")


def test_completion_script_lists_commands_and_flags():
    code, out, _ = run("completion", "bash")
    assert code == 0
    assert "complete -o default -F _sockprobe sockprobe" in out
    assert "--deadline" in out and " nagle " in f" {out} "
    bash = subprocess.run(["bash", "-n"], input=out, text=True, capture_output=True)
    assert bash.returncode == 0, bash.stderr


# ---- bad input: one line, exit 2, nothing on stdout ------------------------------------------
LONG = "9" * 5000
COMMON_BAD = [
    ["--deadline", "0"],
    ["--deadline", "-1"],
    ["--deadline", "1e-300"],
    ["--deadline", "nan"],
    ["--deadline", "inf"],
    ["--deadline", "1e10"],
    ["--deadline", "soon"],
    ["--host", "0.0.0.0"],
    ["--host", "::"],
    ["--host", "224.0.0.1"],
    ["--host", "255.255.255.255"],
    ["--host", "ff02::1"],
    ["--host", "no-such-host.invalid"],
    ["--format", "xml"],
    ["--width", "wide"],
    ["--no-such-option"],
]
BAD: list[list[str]] = [
    ["no-such-command"],
    [LONG],
    ["nagle", "--writes", "0"],
    ["nagle", "--writes", LONG],
    ["nagle", "--size", "-1"],
    ["nagle", "--mode", "fast"],
    ["nagle", "--deadline"],
    ["partial-send", "--size", "-1"],
    ["udp-truncate", "--size", "70000"],
    ["backlog", "--backlog", "-1"],
    ["port"],
    ["port", "70000"],
    ["port", LONG],
    ["port", "0"],
    ["port", "not a port"],
    ["diff"],
    ["diff", "/nonexistent/a.json", "/nonexistent/b.json"],
    ["diff", "/dev/zero", "/dev/zero"],
    ["docs", "no-such-topic"],
    ["completion", "fish"],
    ["all", "--only", "nope"],
    ["all", "--host", "192.0.2.1"],
    *[[p.name, *bad] for p in PROBES for bad in COMMON_BAD[:8]],
    *[["nagle", *bad] for bad in COMMON_BAD[8:]],
    *[["all", *bad] for bad in COMMON_BAD[:8]],
]


def test_there_are_at_least_60_bad_invocations():
    assert len(BAD) >= 60 and len({tuple(b) for b in BAD}) == len(BAD)


@pytest.mark.parametrize("args", BAD, ids=lambda a: " ".join(a)[:60])
def test_bad_input_exits_2_with_one_line(args):
    code, out, err = run(*args, "--json") if args[0] not in ("docs", "completion") else run(*args)
    assert code == 2, (code, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sockprobe: "), err
    assert "Traceback" not in err and len(lines[0]) < 400
    assert out == "" or json.loads(out)


def test_diff_refuses_a_fifo_without_blocking(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    t0 = time.monotonic()
    code, _out, err = run("diff", str(fifo), str(fifo))
    assert code == 2 and time.monotonic() - t0 < 5
    assert len(err.strip().splitlines()) == 1


# ---- real processes: output channels, encodings, signals ----------------------------------
def test_subprocess_smoke():
    r = sub(*QUICK, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["probe"] == "nagle"


def test_closed_stdout_is_one_line_not_a_traceback():
    r = subprocess.run(
        [sys.executable, "-m", "sockprobe", "--version"],
        stdout=None,
        stderr=subprocess.PIPE,
        text=True,
        timeout=30,
        cwd=str(ROOT),
        pass_fds=(),
        preexec_fn=lambda: os.close(1),
    )
    assert "Traceback" not in r.stderr
    assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full here")
def test_full_disk_is_one_line():
    with open("/dev/full", "w") as full:
        r = subprocess.run(
            [sys.executable, "-m", "sockprobe", "--version"],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=30,
            cwd=str(ROOT),
        )
    assert "Traceback" not in r.stderr
    assert r.returncode == 1 and "ENOSPC" in r.stderr and len(r.stderr.splitlines()) == 1


def test_closed_pipe_ends_silently():
    p = subprocess.Popen(
        [sys.executable, "-m", "sockprobe", "completion", "bash"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=str(ROOT),
    )
    assert p.stdout is not None and p.stderr is not None
    p.stdout.close()  # the reader is gone before the first write
    err = p.stderr.read().decode()
    p.stderr.close()
    p.wait(timeout=30)
    assert err == "" and p.returncode == 141


def test_ascii_stdout_still_gets_the_output():
    env = {**os.environ, "PYTHONIOENCODING": "ascii"}
    r = sub(*QUICK, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("sockprobe nagle") and r.stdout.isascii()


def test_deadline_that_runs_out_exits_4_naming_the_step():
    code, _out, err = run("nagle", "--rounds", "50", "--deadline", "0.05", "--mode", "nagle")
    assert code == 4, err
    assert "--deadline" in err and len(err.strip().splitlines()) == 1


def test_ctrl_c_exits_130_after_cleaning_up():
    code, err, took = interrupt(["nagle", "--rounds", "200", "--mode", "nagle"], after=1.0)
    assert code == 130, err
    assert err.strip().splitlines() == [
        "sockprobe: interrupted; every socket, thread and child process was cleaned up"
    ]
    assert took < 3.0


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_sigterm_and_sighup_end_like_ctrl_c(sig, code):
    proc = subprocess.Popen(
        [sys.executable, "-m", "sockprobe", "nagle", "--rounds", "200", "--mode", "nagle"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=str(ROOT),
    )
    try:
        time.sleep(1.0)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and signal.Signals(sig).name in lines[0] and "cleaned up" in lines[0]


def test_port_wait_streams_one_event_per_change_then_the_report():
    import socket
    import threading

    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen()
    port = lst.getsockname()[1]
    timer = threading.Timer(0.8, lst.close)
    timer.start()
    try:
        r = sub("port", str(port), "--wait", "5", "--format", "jsonl")
    finally:
        timer.join()
        lst.close()
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert lines[0]["event"] == "wait" and "LISTEN" in lines[0]["text"]
    assert lines[-1]["probe"] == "port" and lines[-1]["free"]["plain"] is True


def test_all_jsonl_streams_one_report_per_probe():
    r = sub("all", "--only", "kernel,framing", "--format", "jsonl")
    assert r.returncode == 0, r.stderr
    probes = [json.loads(x)["probe"] for x in r.stdout.splitlines()]
    assert sorted(probes) == ["framing", "kernel"]


@pytest.mark.parametrize(
    "args",
    [
        ["nagle", "--json", "--format", "csv"],
        ["nagle", "--width", "0"],
        ["nagle", "--width", "5"],
        ["nagle", "--width", "100000"],
        ["nagle", "--table", "wwr", "--format", "json"],
        ["nagle", "--mode", "nagle,,cork"],
        ["all", "--only", ""],
        ["all", "--summary", "--full"],
        ["nagle", "--host", "127.255.255.255"],
        ["nagle", "--host", "::ffff:224.0.0.1"],
        ["nagle", "--peer", "[::1", "--token", "abcdefgh"],
        ["nagle", "--token", "abcdefgh"],
        ["nagle", "--peer", "127.0.0.1:7380"],
    ],
    ids=lambda a: " ".join(a),
)
def test_contradictions_and_malformed_values_are_usage_errors(args):
    env_token = os.environ.pop("SOCKPROBE_TOKEN", None)
    try:
        code, out, err = run(*args)
    finally:
        if env_token is not None:
            os.environ["SOCKPROBE_TOKEN"] = env_token
    assert code == 2, (code, err)
    assert out == "" and len(err.strip().splitlines()) == 1


def test_out_of_descriptors_is_exit_3_naming_the_limit():
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            "import resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, (6, 6));"
            "from sockprobe.cli import main; sys.exit(main(['udp-truncate']))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(ROOT),
    )
    assert r.returncode == 3, r.stderr
    assert "RLIMIT_NOFILE" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_kernel_follow_needs_measure():
    code, out, err = run("kernel", "--no-measure", "--follow-fin-wait2")
    assert code == 2 and out == "" and "--no-measure" in err
