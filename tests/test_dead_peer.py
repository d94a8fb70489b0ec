"""sockprobe dead-peer: a peer that vanished without a word, made with a drop-all socket
filter on loopback. The cases wait on kernel timers, so the probe runs them all at once
and these tests share one run where they can."""

from __future__ import annotations

import json
import textwrap
from typing import Any

import pytest
from helpers import interrupt

from sockprobe import kernel
from sockprobe.kernel import retries, rules
from sockprobe.probes.dead_peer import Params, run
from sockprobe.probes.dead_peer._case import SAMPLE_S
from sockprobe.probes.dead_peer.params import SLACK_S
from sockprobe.report import NA, Report
from sockprobe.status import UsageError

#: A timer fires at or after its time; a loaded 2-core machine delays the wake-up of the
#: thread that reports it, so measured times get this much room above a prediction.
LATE_S = 2.0


@pytest.fixture(scope="module")
def report() -> Report:
    return run(Params())


def test_keepalive_ends_recv_with_etimedout_after_idle_plus_intvl_times_cnt(
    report: Report,
) -> None:
    row = report.get("idle").find(case="idle_keepalive")
    predicted = retries.keepalive_abort_s(1, 1, 2)
    assert row["predicted_s"] == predicted
    assert row["result"] == "ETIMEDOUT"
    assert row["exception"] == "TimeoutError"
    assert isinstance(row["elapsed_s"], float)
    assert predicted <= row["elapsed_s"] <= predicted + LATE_S
    assert row["probes"] == 2  # TCP_KEEPCNT probes went out unanswered


def test_idle_recv_without_options_is_still_blocked_at_the_bound(report: Report) -> None:
    p = Params()
    for case in ("idle_none", "idle_user_timeout"):
        row = report.get("idle").find(case=case)
        assert row["result"] == "still blocked", row
        assert isinstance(row["elapsed_s"], float)
        assert row["elapsed_s"] >= p.bound_s - 0.01
        assert isinstance(row["predicted_s"], NA)


def test_user_timeout_ends_unacked_data_zero_window_and_connect(report: Report) -> None:
    ut = Params().user_timeout / 1000
    rows = [
        report.get("unacked").find(case="unacked_user_timeout"),
        report.get("zero_window").find(case="zero_window_user_timeout"),
        report.get("connect").find(case="connect_user_timeout"),
    ]
    for row in rows:
        assert row["result"] == "ETIMEDOUT", row
        assert isinstance(row["elapsed_s"], float)
        assert ut <= row["elapsed_s"] <= ut + LATE_S, row
    # The unacknowledged-data budget counts from the timer's first retransmission, which
    # the probe samples every SAMPLE_S: the abort is at most that much before the
    # prediction made from the sample.
    # The zero-window budget counts from the first window probe, sampled the same way.
    for row in rows[:2]:
        predicted, elapsed = row["predicted_s"], row["elapsed_s"]
        assert isinstance(predicted, float) and isinstance(elapsed, float)
        assert predicted - SAMPLE_S - 0.01 <= elapsed <= predicted + LATE_S, row
    assert rows[0]["retransmissions"]


def test_zero_window_writer_is_not_ended_by_keepalive_or_by_default(report: Report) -> None:
    t = report.get("zero_window")
    for case in ("zero_window_none", "zero_window_keepalive"):
        assert t.find(case=case)["result"] == "still blocked"


def test_unacked_data_without_options_retransmits_on_the_backoff_schedule(
    report: Report,
) -> None:
    row = report.get("unacked").find(case="unacked_none")
    assert row["result"] == "still blocked"
    assert isinstance(row["retransmissions"], int) and row["retransmissions"] >= 3
    assert isinstance(row["backoff"], int) and row["backoff"] >= 3
    assert "computed" in str(row["basis"])
    text = " ".join(report.findings)
    assert f"tcp_retries2 {kernel.sysctl_int('net.ipv4.tcp_retries2')} is a budget" in text
    assert "computed, not waited for" in text


def test_findings_and_summary_come_from_the_run(report: Report) -> None:
    ka = report.get("idle").find(case="idle_keepalive")
    assert f"{ka['elapsed_s']:.2f} s" in report.summary
    assert any("must set" in f for f in report.findings)
    assert report.duration_s < Params().bound_s + 4.0  # margin for a loaded machine


def test_rule_matches_the_numbers_the_kernel_is_known_for() -> None:
    # tcp_retries2 15 from TCP_RTO_MIN: 924.6 s; tcp_syn_retries 6 with 4 linear
    # timeouts: SYNs at 1, 2, 3, 4, 5, 7, 11, 19, 35, 67 s and ETIMEDOUT at 131 s.
    assert retries.model_timeout_ms(15) == 924_600
    syn = retries.syn_give_up(6, 4)
    assert (syn.abort_ms, syn.retransmissions) == (131_000, 10)
    syn = retries.syn_give_up(2, 4)
    assert (syn.abort_ms, syn.retransmissions) == (7_000, 5)
    # A capture in a namespace with tcp_retries2 3: data at 0, loss probe at 0.207 s,
    # timer retransmissions at 0.415, 0.851, 1.683, 3.347 s, the abort at 6.68 s.
    got = retries.give_up(3, 208, first_ms=415)
    assert got.retransmissions == 4
    assert got.abort_ms == pytest.approx(6_675, abs=40)
    assert retries.retransmissions_by(4500, 15, 200, 400) == 4
    # One model: retries.py expresses kernel/rules.py's schedules in ms. A budget that
    # ends first stops the count (tcp_retries2 1 is 0.6 s from the first retransmission
    # at 0.4 s; the firing at 1.6 s aborts, leaving 2 sent).
    assert retries.retransmissions_by(4500, 1, 200, 400) == 2
    assert retries.give_up(1, 200, first_ms=400).abort_ms == 1_600
    for n, lin in ((6, 4), (2, 4), (1, 0), (3, 10)):
        sch = rules.syn_schedule(n, lin)
        syn = retries.syn_give_up(n, lin)
        assert (syn.abort_ms / 1000, syn.retransmissions) == (sch.gives_up_s, len(sch.sends))


@pytest.mark.parametrize(
    "kwargs",
    [{"keepalive": (1, 1)}, {"keepalive": (0, 1, 1)}, {"user_timeout": 0}],
)
def test_bad_options_are_usage_errors(kwargs: dict[str, Any]) -> None:
    with pytest.raises(UsageError):
        Params(**kwargs)


# -- the kernel's rules against a namespace with the settings changed -------------------
_RUN = textwrap.dedent(
    """
    import json
    from sockprobe.probes.dead_peer import Params, run
    print(json.dumps(run(Params()).to_dict()))
    """
)


def test_tcp_retries2_give_up_matches_the_rule_in_a_namespace(netns: Any) -> None:
    """tcp_retries2 2: a budget of 200 x (2^3 - 1) = 1.4 s from the first timer
    retransmission; the abort comes with the timer after it (about 3.3 s on loopback),
    within the probe's bound, and at the time the rule computes."""
    proc = netns.in_netns(_RUN, sysctls={"net.ipv4.tcp_retries2": 2})
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    t = next(t for t in doc["tables"] if t["id"] == "unacked")
    row = next(r for r in t["rows"] if r["case"] == "unacked_none")
    assert row["result"] == "ETIMEDOUT", row
    computed = row["predicted_s"]
    assert isinstance(computed, float)
    # The prediction starts from a sampled first retransmission (up to SAMPLE_S late)
    # and the RTO before it (later RTOs may grow by a few ms each on a loaded host).
    assert computed - SAMPLE_S - 0.05 <= row["elapsed_s"] <= computed + SLACK_S
    assert any("tcp_retries2 2 is a budget of 1.4 s" in f for f in doc["findings"])


_KEEPALIVE_DEFAULTS = textwrap.dedent(
    """
    import json, time
    from sockprobe import kernel
    from sockprobe.kernel import deadpeer, retries
    from sockprobe.lab import Deadline, Lab, resolve_host
    with Lab(resolve_host("127.0.0.1"), Deadline(20)) as lab:
        live, dead = lab.tcp_pair()
        deadpeer.drop_everything(dead)
        t0 = time.perf_counter()
        live.setsockopt(__import__("socket").SOL_SOCKET, __import__("socket").SO_KEEPALIVE, 1)
        live.settimeout(10)
        try:
            live.recv(1)
            got = "returned"
        except OSError as exc:
            got = type(exc).__name__ + " " + str(exc.errno)
        took = time.perf_counter() - t0
    sysctl = kernel.sysctl_int
    predicted = retries.keepalive_abort_s(
        sysctl("net.ipv4.tcp_keepalive_time"),
        sysctl("net.ipv4.tcp_keepalive_intvl"),
        sysctl("net.ipv4.tcp_keepalive_probes"),
    )
    print(json.dumps({"got": got, "took": took, "predicted": predicted}))
    """
)


def test_keepalive_sysctls_give_the_time_the_defaults_sentence_computes(netns: Any) -> None:
    """The defaults finding turns tcp_keepalive_time/intvl/probes into a time with
    keepalive_abort_s(); with them set small in a namespace, SO_KEEPALIVE alone must end
    a recv() on a dead peer at that time."""
    proc = netns.in_netns(
        _KEEPALIVE_DEFAULTS,
        sysctls={
            "net.ipv4.tcp_keepalive_time": 1,
            "net.ipv4.tcp_keepalive_intvl": 1,
            "net.ipv4.tcp_keepalive_probes": 1,
        },
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["predicted"] == 2.0
    assert doc["got"] == "TimeoutError 110"
    assert doc["predicted"] <= doc["took"] <= doc["predicted"] + LATE_S


def test_a_deadline_shorter_than_the_waits_is_refused_before_any_socket() -> None:
    from sockprobe.status import DeadlineExceeded

    with pytest.raises(DeadlineExceeded, match="too short"):
        run(Params(deadline=2.0))


@pytest.mark.parametrize(
    "argv", [["--keepalive", "1,1"], ["--keepalive", "1,x,2"], ["--user-timeout", "0"]]
)
def test_cli_bad_options_exit_2_with_one_line(argv: list[str]) -> None:
    import io

    from sockprobe.cli import main

    out, err = io.StringIO(), io.StringIO()
    assert main(["dead-peer", *argv], out, err) == 2
    assert out.getvalue() == "" and err.getvalue().count("\n") == 1


def test_ctrl_c_cleans_up_and_exits_130() -> None:
    """SIGINT while the cases wait: every socket and thread released, exit 130 at once."""
    code, err, took = interrupt(["dead-peer"], 1.2)
    assert code == 130, err
    assert "interrupted" in err
    # Below Lab.cleanup()'s 2 s join bound, which a call left blocked would reach: its
    # shutdown() loop once skipped sockets that woken cases were closing (2.0 s here).
    assert took < 1.0


_SYN_GIVE_UP = textwrap.dedent(
    """
    import json, socket, time
    from sockprobe import kernel
    from sockprobe.kernel import deadpeer, retries
    from sockprobe.lab import Deadline, Lab, resolve_host
    with Lab(resolve_host("127.0.0.1"), Deadline(20)) as lab:
        hole = lab.listener(backlog=1)
        deadpeer.drop_everything(hole)
        c = lab.open_socket()
        c.settimeout(10)
        t0 = time.perf_counter()
        try:
            c.connect(hole.getsockname())
            got = "connected"
        except OSError as exc:
            got = type(exc).__name__ + " " + str(exc.errno)
        took = time.perf_counter() - t0
    syn = retries.syn_give_up(
        kernel.sysctl_int("net.ipv4.tcp_syn_retries"),
        kernel.sysctl_int("net.ipv4.tcp_syn_linear_timeouts") or 0,
        kernel.sysctl_int("net.ipv4.tcp_rto_max_ms") or retries.TCP_RTO_MAX_MS,
    )
    print(json.dumps({"got": got, "took": took, "computed": syn.abort_ms / 1000}))
    """
)


def test_syn_give_up_sentence_matches_connect_in_a_namespace(netns: Any) -> None:
    """The connect finding quotes syn_give_up() for tcp_syn_retries; with 1 retry and no
    linear timeouts it computes 3 s (SYN at 0, retry at 1 s, budget (2^2 - 1) x 1 s), and
    a plain connect() to the silent listener must fail at that time."""
    proc = netns.in_netns(
        _SYN_GIVE_UP,
        sysctls={"net.ipv4.tcp_syn_retries": 1, "net.ipv4.tcp_syn_linear_timeouts": 0},
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["computed"] == 3.0
    assert doc["got"] == "TimeoutError 110"
    assert doc["computed"] <= doc["took"] <= doc["computed"] + LATE_S


def test_syn_give_up_follows_tcp_rto_max_ms_in_a_namespace(netns: Any) -> None:
    """tcp_rto_max_ms (6.15+) caps the SYN backoff and the tcp_syn_retries budget too:
    3 retries, 1 linear timeout, a 2 s cap: SYNs at 1, 2, 4, 6 s and ETIMEDOUT at 8 s
    (with the 120 s cap the same settings give 16 s). The sentence quotes this value."""
    if kernel.sysctl_int("net.ipv4.tcp_rto_max_ms") is None:
        pytest.skip("net.ipv4.tcp_rto_max_ms needs Linux 6.15+")
    proc = netns.in_netns(
        _SYN_GIVE_UP,
        sysctls={
            "net.ipv4.tcp_syn_retries": 3,
            "net.ipv4.tcp_syn_linear_timeouts": 1,
            "net.ipv4.tcp_rto_max_ms": 2000,
        },
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["computed"] == 8.0
    assert doc["got"] == "TimeoutError 110"
    assert doc["computed"] <= doc["took"] <= doc["computed"] + LATE_S


def test_netns_loopback_down_is_exit_3_naming_the_cause(netns: Any) -> None:
    """With `lo` down no connection is made (ENETUNREACH): the probe reports no counts
    and no timers (none of its events happened) and exits 3 with one line naming it."""
    code, d, err = netns.sockprobe_json("dead-peer", lo_up=False)
    assert code == 3 and d is None, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "ENETUNREACH" in lines[0] and "loopback" in lines[0]
