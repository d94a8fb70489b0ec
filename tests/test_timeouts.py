"""sockprobe timeouts on real loopback sockets: which exception, errno and delay per case."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from helpers import has_ipv6_loopback, interrupt

from sockprobe import kernel
from sockprobe.cli import main
from sockprobe.kernel import sockstate
from sockprobe.kernel.synretry import describe
from sockprobe.lab import Deadline, Lab, resolve_host
from sockprobe.probes import timeouts
from sockprobe.probes.timeouts import setup
from sockprobe.status import DeadlineExceeded, UsageError

T = 0.2
WAKE = 0.3
linux_only = pytest.mark.skipif(not kernel.IS_LINUX, reason="errno values and TCP_INFO: Linux")

OP = {op: label for op, (label, _calls) in timeouts.OPS.items()}
MODE = timeouts.MODES

#: (operation, call, mode) -> (result, errno) as measured on Linux. Blocking-mode cases
#: that would hang are woken by shutdown(); their row is what the woken call gave.
EXPECTED: dict[tuple[str, str, str], tuple[str, str | None]] = {
    ("connect-refused", "connect", "blocking"): ("raised ConnectionRefusedError", "ECONNREFUSED"),
    ("connect-refused", "connect", "timeout"): ("raised ConnectionRefusedError", "ECONNREFUSED"),
    ("connect-refused", "connect", "nonblocking"): ("raised BlockingIOError", "EINPROGRESS"),
    ("connect-refused", "connect", "sockopt"): ("raised ConnectionRefusedError", "ECONNREFUSED"),
    ("connect-refused", "connect_ex", "blocking"): ("returned 111", "ECONNREFUSED"),
    ("connect-refused", "connect_ex", "timeout"): ("returned 111", "ECONNREFUSED"),
    ("connect-refused", "connect_ex", "nonblocking"): ("returned 115", "EINPROGRESS"),
    ("connect-refused", "connect_ex", "sockopt"): ("returned 111", "ECONNREFUSED"),
    ("connect-full-queue", "connect", "blocking"): ("raised ConnectionResetError", "ECONNRESET"),
    ("connect-full-queue", "connect", "timeout"): ("raised TimeoutError", None),
    ("connect-full-queue", "connect", "nonblocking"): ("raised BlockingIOError", "EINPROGRESS"),
    ("connect-full-queue", "connect", "sockopt"): ("raised BlockingIOError", "EINPROGRESS"),
    ("connect-full-queue", "connect_ex", "blocking"): ("returned 104", "ECONNRESET"),
    ("connect-full-queue", "connect_ex", "timeout"): ("returned 11", "EAGAIN"),
    ("connect-full-queue", "connect_ex", "nonblocking"): ("returned 115", "EINPROGRESS"),
    ("connect-full-queue", "connect_ex", "sockopt"): ("returned 115", "EINPROGRESS"),
    ("accept", "accept", "blocking"): ("raised OSError", "EINVAL"),
    ("accept", "accept", "timeout"): ("raised TimeoutError", None),
    ("accept", "accept", "nonblocking"): ("raised BlockingIOError", "EAGAIN"),
    ("accept", "accept", "sockopt"): ("raised BlockingIOError", "EAGAIN"),
    ("recv", "recv", "blocking"): ("returned b''", None),
    ("recv", "recv", "timeout"): ("raised TimeoutError", None),
    ("recv", "recv", "nonblocking"): ("raised BlockingIOError", "EAGAIN"),
    ("recv", "recv", "sockopt"): ("raised BlockingIOError", "EAGAIN"),
    ("send-full", "send", "blocking"): ("raised BrokenPipeError", "EPIPE"),
    ("send-full", "send", "timeout"): ("raised TimeoutError", None),
    ("send-full", "send", "nonblocking"): ("raised BlockingIOError", "EAGAIN"),
    ("send-full", "send", "sockopt"): ("raised BlockingIOError", "EAGAIN"),
    **{("recv-after-fin", "recv", m): ("returned b''", None) for m in MODE},
    **{("recv-after-rst", "recv", m): ("raised ConnectionResetError", "ECONNRESET") for m in MODE},
    **{("send-after-close", "send", m): ("returned 1024", None) for m in MODE},
    **{("send-after-rst", "send", m): ("raised BrokenPipeError", "EPIPE") for m in MODE},
}
#: The cases that wait: blocked until shutdown() in blocking mode, T otherwise.
BLOCKS = {"connect-full-queue", "accept", "recv", "send-full"}


def _matrix(report):
    return {(r["op"], r["call"], r["mode"]): r for r in report.get("matrix").rows}


def _facts(report):
    return {r["fact"]: r for r in report.get("facts").rows}


@pytest.fixture(scope="module")
def report():
    return timeouts.run(timeouts.Params(op_timeout=T, wake_after=WAKE))


@linux_only
def test_every_case_gives_the_linux_exception_errno_or_return_value(report):
    m = _matrix(report)
    assert set(m) == set(EXPECTED)
    wrong = {
        k: (m[k]["result"], m[k]["errno"])
        for k, v in EXPECTED.items()
        if (m[k]["result"], m[k]["errno"]) != v
    }
    assert not wrong, wrong


def test_timeouts_fire_within_their_bounds(report):
    m = _matrix(report)
    for op in BLOCKS:
        for call in timeouts.OPS[op][1]:
            for mode in ("timeout", "sockopt"):
                ms = m[(op, call, mode)]["elapsed_ms"]
                assert 0.9 * T * 1000 <= ms <= (T + 0.2) * 1000, (op, call, mode, ms)
                assert m[(op, call, mode)]["timeout_s"] == T


def test_blocking_calls_that_would_hang_are_woken_by_shutdown(report):
    m = _matrix(report)
    for (op, call, mode), row in m.items():
        if mode != "blocking":
            continue
        if op in BLOCKS:
            assert row["woken"] is True
            assert 0.9 * WAKE * 1000 <= row["elapsed_ms"] <= (WAKE + 1.0) * 1000
        else:
            assert row["woken"] is False, (op, call)
            assert row["elapsed_ms"] < 100, (op, call, row["elapsed_ms"])


def test_non_waiting_cases_return_at_once(report):
    for (op, _call, mode), row in _matrix(report).items():
        if op not in BLOCKS or mode == "nonblocking":
            assert row["elapsed_ms"] < 100, (op, mode, row["elapsed_ms"])


@linux_only
def test_full_queue_connect_times_out_rather_than_being_refused(report):
    m = _matrix(report)
    for call in ("connect", "connect_ex"):
        for mode in MODE:
            row = m[("connect-full-queue", call, mode)]
            assert "Refused" not in row["result"] and row["errno"] != "ECONNREFUSED"
    assert m[("connect-full-queue", "connect", "timeout")]["then"] == "state SYN_SENT"
    # SO_SNDTIMEO: connect gives up with EINPROGRESS, the handshake carries on.
    assert m[("connect-full-queue", "connect", "sockopt")]["then"] == "state SYN_SENT"
    assert m[("connect-full-queue", "connect", "blocking")]["then"] == "state CLOSE"


@linux_only
def test_non_blocking_connect_is_followed_through(report):
    m = _matrix(report)
    refused = m[("connect-refused", "connect", "nonblocking")]["then"]
    assert refused.startswith("poll: writable; SO_ERROR ECONNREFUSED")
    hole = m[("connect-full-queue", "connect_ex", "nonblocking")]["then"]
    assert hole == f"poll: not writable within {T:g} s; SO_ERROR 0; state SYN_SENT"


@linux_only
def test_black_hole_listener_is_full_per_tcp_info():
    # listen(0): the queue holds one connection (its length exceeds the limit of 0,
    # which is min(0, somaxconn)), and a further SYN is dropped: connect times out.
    with Lab(resolve_host("127.0.0.1"), Deadline(10)) as lab:
        case = timeouts.Case("connect-full-queue", "connect", "timeout")
        lst, info = setup.full_queue(lab, case)
        assert info["fillers"] == 1
        somaxconn = kernel.sysctl_int("net.core.somaxconn")
        assert info["queue"] == (1, min(0, somaxconn if somaxconn is not None else 0))
        assert sockstate.accept_queue(lst) == (1, 0)
        c = lab.open_socket()
        c.settimeout(0.1)
        with pytest.raises(TimeoutError):
            c.connect(lst.getsockname())
        assert sockstate.tcp_state(c) == "SYN_SENT"


@linux_only
def test_python_level_and_thread_facts(report):
    f = _facts(report)
    assert f["settimeout_zero"]["result"] == "False / 0.0"
    assert f["setblocking_false"]["result"] == "False / 0.0"
    assert f["recv_timeout_zero"]["result"] == "raised BlockingIOError (EAGAIN)"
    assert f["timeout_alias"]["result"] == "True"
    assert f["rcvtimeo_readback"]["result"] == f"None / {T:g} s"
    assert f["signal_in_thread"]["result"] == "raised ValueError"
    sel = f["select_rcvtimeo"]
    assert sel["check"] == f"select() for {T:g} s on a socket with SO_RCVTIMEO {T / 4:g} s"
    assert sel["result"] == "nothing readable at its own timeout"
    assert 0.9 * T * 1000 <= sel["elapsed_ms"] <= (T + 0.2) * 1000  # not cut to T/4
    sendall = f["sendall_budget"]
    assert sendall["result"] == "raised TimeoutError"
    assert 0.9 * T * 1000 <= sendall["elapsed_ms"] <= (T + 0.2) * 1000
    closed = f["close_from_thread"]
    assert closed["result"].startswith(f"still blocked after {WAKE:.2f} s")
    assert closed["result"].endswith("returned b''")
    drained = [x for x in report.findings if "drained" in x]
    assert drained and "drained 0 bytes" not in drained[0]


def test_findings_quote_measured_numbers(report):
    m = _matrix(report)
    ms = m[("recv", "recv", "timeout")]["elapsed_ms"]
    assert any(f"raised TimeoutError after {ms / 1000:.3f} s" in x for x in report.findings)
    # The headline says what the "black hole" is: a SYN dropped at a full accept queue.
    assert report.summary.startswith(
        "connect() with settimeout(0.2) to a full accept queue (SYN dropped, no answer): "
        "TimeoutError after"
    )
    assert all(ep["local"].startswith("127.0.0.1:") for ep in report.endpoints)


def test_non_volatile_cells_are_deterministic(report):
    again = timeouts.run(timeouts.Params(op_timeout=T, wake_after=WAKE))
    for t1, t2 in zip(report.tables, again.tables):
        keep = [c.key for c in t1.columns if c.kind == "exact"]
        assert [[r[k] for k in keep] for r in t1.rows] == [[r[k] for k in keep] for r in t2.rows]


def test_whole_run_stays_under_its_deadline():
    t0 = time.monotonic()
    r = timeouts.run(timeouts.Params(deadline=3.0))
    took = time.monotonic() - t0
    assert took < 3.0 and r.duration_s < 3.0


def test_short_deadline_stops_cleanly_and_soon():
    t0 = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        timeouts.run(timeouts.Params(deadline=0.15))
    assert time.monotonic() - t0 < 1.5


def test_ipv6_loopback_when_available():
    if not has_ipv6_loopback():
        pytest.skip("no IPv6 loopback here")
    r = timeouts.run(
        timeouts.Params(host="::1", ops=("connect-full-queue", "recv"), modes=("timeout",))
    )
    m = _matrix(r)
    assert m[("connect-full-queue", "connect", "timeout")]["result"] == "raised TimeoutError"
    assert all(ep["local"].startswith("[::1]:") for ep in r.endpoints)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(op_timeout=0),
        dict(op_timeout=-1),
        dict(wake_after=0),
        dict(ops=("teleport",)),
        dict(ops=()),
        dict(modes=("eager",)),
        dict(deadline=0),
    ],
)
def test_bad_params_are_usage_errors(kwargs):
    with pytest.raises(UsageError):
        timeouts.Params(**kwargs)


def test_cli_json_and_bad_input(capsys):
    code = main(["timeouts", "--op", "recv", "--mode", "timeout", "--op-timeout", "0.05", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    doc = json.loads(out)
    assert doc["probe"] == "timeouts" and doc["params"]["op_timeout"] == 0.05
    matrix = next(t for t in doc["tables"] if t["id"] == "matrix")
    kinds = {c["key"]: c["kind"] for c in matrix["columns"]}
    assert [k for k, v in kinds.items() if v != "exact"] == ["elapsed_ms"]
    assert matrix["keys"] == ["op", "call", "mode"]
    assert matrix["rows"][0]["result"] == "raised TimeoutError"
    code = main(["timeouts", "--op-timeout", "-1"])
    _, err = capsys.readouterr()
    assert code == 2 and len(err.strip().splitlines()) == 1


def test_ctrl_c_wakes_every_waiting_case_and_exits_130():

    # With T = 3 s the matrix would run for more than 3 s; SIGINT lands in the middle.
    code, err, took = interrupt(["timeouts", "--op-timeout", "3", "--wake-after", "3"], after=1.2)
    # Shutting down the cases' sockets wakes them: no waiting out the 3 s timeouts.
    assert took < 1.5
    assert code == 130, err
    assert "interrupted" in err and "Traceback" not in err


def test_one_thread_per_waiting_call_not_two() -> None:
    """The matrix needs one thread per call that waits (they wait at the same time), two
    lanes of facts (each with at most one helper a fact starts), and one waker: not a
    watchdog thread beside every blocked call (33 at once before)."""
    p = timeouts.Params(op_timeout=T, wake_after=WAKE)
    waiting = sum(timeouts.matrix.may_wait(c) for c in timeouts.matrix.cases_for(p))
    base = threading.active_count()
    peak = base
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.wait(0.002):
            peak = max(peak, threading.active_count())

    sampler = threading.Thread(target=sample, name="test-thread-sampler")
    sampler.start()
    try:
        timeouts.run(p)
    finally:
        stop.set()
        sampler.join()
    extra = peak - base - 1  # the sampler itself
    assert extra <= waiting + 2 + 2 + 1, (extra, waiting)
    assert waiting + 5 < 33


def _ns_run(netns: Any, **how: Any) -> Any:
    return netns.in_netns(
        "import json\n"
        "from sockprobe.probes.timeouts import Params, run\n"
        "r = run(Params(ops=('recv',), modes=('timeout',)))\n"
        "print(json.dumps(r.to_dict()))\n",
        **how,
    )


@pytest.mark.parametrize(("retries", "linear"), [(2, 4), (1, 0), (6, 4)])
def test_namespace_connect_note_follows_syn_settings(netns: Any, retries: int, linear: int) -> None:
    # The schedule itself is measured against the same rule in test_backlog's
    # test_namespace_syn_schedule_stated_matches_measured.
    proc = _ns_run(
        netns,
        sysctls={
            "net.ipv4.tcp_syn_retries": retries,
            "net.ipv4.tcp_syn_linear_timeouts": linear,
        },
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    note = next(n for n in doc["notes"] if n.startswith("Which blocking calls end"))
    assert describe(retries, linear) in note
    assert "connect() is the one blocking TCP call that always does" in note


def test_namespace_lo_down_is_unsupported(netns: Any) -> None:
    proc = netns.in_netns(args=["timeouts", "--json"], setup=["ip link set lo down"])
    assert proc.returncode == 3, proc.stderr
    assert "lo is down" in proc.stderr and proc.stdout.strip() == ""


@pytest.mark.parametrize("limit", [16, 40])
def test_low_rlimit_nofile_is_unsupported_naming_the_limit(limit: int) -> None:
    resource = pytest.importorskip("resource")
    import subprocess
    import sys

    def low() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    proc = subprocess.run(
        [sys.executable, "-m", "sockprobe", "timeouts"],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=low,
    )
    assert proc.returncode == 3, proc.stderr
    assert f"RLIMIT_NOFILE soft {limit}, hard {limit}" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stdout == ""


def test_namespace_small_port_range_is_unsupported_naming_it(netns: Any) -> None:
    """Ten ephemeral ports cannot hold 44 cases side by side: exit 3 naming the range,
    not an 'unexpected socket error'."""
    proc = netns.in_netns(
        args=["timeouts", "--json"], sysctls={"net.ipv4.ip_local_port_range": "40000 40009"}
    )
    assert proc.returncode == 3, proc.stderr
    assert "ephemeral port range 40000-40009" in proc.stderr and proc.stdout.strip() == ""
    assert len(proc.stderr.strip().splitlines()) == 1
