"""sockprobe ephemeral: client port exhaustion in private ranges of a few ports
(IP_LOCAL_PORT_RANGE), and the host table checked in a namespace with a small range."""

from __future__ import annotations

import json
import socket
import textwrap
from typing import Any

import pytest
from helpers import interrupt

from sockprobe.kernel import ephemeral
from sockprobe.probes.ephemeral import Params, run, time_wait
from sockprobe.report import Report
from sockprobe.status import UsageError

#: Even: bind(port 0) in an odd-sized per-socket range was measured to miss a port
#: at random on Linux 6.18 (3 ports: 2 binds in 30 of 30 tries), a kernel quirk the
#: probe reports rather than a rule these tests could state.
N = 4


def _narrowing_works() -> bool:
    with socket.socket() as s:
        try:
            ephemeral.narrow(s, 40000, 40001)
        except OSError:
            return False
    return True


pytestmark = pytest.mark.skipif(
    not _narrowing_works(), reason="IP_LOCAL_PORT_RANGE (Linux 6.3+) is not available"
)


@pytest.fixture(scope="module")
def report() -> Report:
    return run(Params(ports=N, samples=8))


def test_range_of_n_ports_admits_n_per_destination_with_connect(report: Report) -> None:
    t = report.get("exhaustion")
    first = t.find(method="connect", destination="first")
    second = t.find(method="connect", destination="second")
    assert first["connected"] == N and first["errno"] == "EADDRNOTAVAIL"
    assert first["in_block"] == N
    assert second["connected"] == N and second["errno"] == "EADDRNOTAVAIL"
    assert second["shared_ports"] == N  # the very same ports


def test_bind_port_0_admits_n_in_all(report: Report) -> None:
    t = report.get("exhaustion")
    first = t.find(method="bind0", destination="first")
    second = t.find(method="bind0", destination="second")
    assert first["connected"] + second["connected"] == N  # type: ignore[operator]
    assert first["connected"] == N
    assert (second["failed_call"], second["errno"]) == ("bind", "EADDRINUSE")


def test_bind_address_no_port_shares_ports_again(report: Report) -> None:
    t = report.get("exhaustion")
    first = t.find(method="bind_no_port", destination="first")
    second = t.find(method="bind_no_port", destination="second")
    assert first["connected"] == second["connected"] == N
    assert second["shared_ports"] == N


def test_time_wait_holds_the_4_tuple_and_what_takes_it(report: Report) -> None:
    t = report.get("time_wait")
    assert t.find(attempt="connect_same_now")["result"] == "EADDRNOTAVAIL"
    assert t.find(attempt="connect_other_now")["result"] == "ok"
    assert t.find(attempt="bind_plain_now")["result"] == "bind EADDRINUSE"
    taken = t.find(attempt="bind_reuseaddr_now")
    assert taken["result"] == "ok" and taken["took_time_wait"] is True
    late = t.find(attempt="connect_same_after_delay")
    from sockprobe import kernel

    want = time_wait.expected(
        kernel.sysctl_int("net.ipv4.tcp_tw_reuse"),
        kernel.sysctl_int("net.ipv4.tcp_timestamps"),
        loopback=True,
    )
    assert late["result"] == want
    assert isinstance(late["after_ms"], float) and late["after_ms"] >= time_wait.delay_ms()


def test_parity_split_connect_low_parity_bind_the_other(report: Report) -> None:
    lo = ephemeral.local_port_range()
    assert lo is not None
    low = "even" if lo[0] % 2 == 0 else "odd"
    other = "odd" if low == "even" else "even"
    t = report.get("parity")
    assert t.find(allocator="connect")["parity"] == low
    assert t.find(allocator="bind_no_port")["parity"] == low
    assert t.find(allocator="bind0")["parity"] == other


def test_summary_and_findings_come_from_the_run(report: Report) -> None:
    assert f"{N} ports: connect() {N} per destination, then EADDRNOTAVAIL" in report.summary
    assert any(f.startswith("Fixes, in order") for f in report.findings)
    assert any("tcp_tw_recycle" in f for f in report.findings)


@pytest.mark.parametrize("kwargs", [{"ports": 0}, {"ports": 65}, {"samples": 1}, {"top": 0}])
def test_bad_options_are_usage_errors(kwargs: dict[str, Any]) -> None:
    with pytest.raises(UsageError):
        Params(**kwargs)


_HOST = textwrap.dedent(
    """
    import json, os, socket, time
    from sockprobe.probes.ephemeral import Params, run
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(64)
    live, closed = [], []
    for i in range(8):
        c = socket.create_connection(lst.getsockname(), timeout=5)
        s, _ = lst.accept()
        (closed if i < 2 else live).append((c, s))
    for c, s in closed:  # client first: TIME_WAIT on the client's port
        c.close()
        s.recv(1)
        s.close()
    time.sleep(0.1)
    doc = run(Params()).to_dict()
    doc["me"] = os.getpid()
    doc["listener"] = "127.0.0.1:%d" % lst.getsockname()[1]
    print(json.dumps(doc))
    """
)


def test_host_table_in_a_namespace_with_a_small_range(netns: Any) -> None:
    """ip_local_port_range 40000-40063 (64 ports), a listener (its port in the range),
    6 established clients and 2 in TIME_WAIT: the host tables must say exactly that; and
    with tcp_tw_reuse 0 the late connect() into the TIME_WAITs must fail, as the rule says."""
    proc = netns.in_netns(
        _HOST,
        sysctls={"net.ipv4.ip_local_port_range": "40000 40063", "net.ipv4.tcp_tw_reuse": 0},
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    tables = {t["id"]: t for t in doc["tables"]}
    rng = tables["host_range"]["rows"][0]
    assert (rng["low"], rng["high"], rng["size"]) == (40000, 40063, 64)
    assert rng["client_sockets"] == 8 and rng["time_wait"] == 2
    assert rng["ports_in_use"] == 9  # 8 client ports and the listener's
    assert rng["listeners_in_range"] == 1
    dest = tables["host_destinations"]["rows"][0]
    assert dest["destination"] == doc["listener"]
    assert (dest["established"], dest["time_wait"], dest["total"]) == (6, 2, 8)
    assert dest["of_range_pct"] == 12.0
    proc_row = tables["host_processes"]["rows"][0]
    assert proc_row["pid"] == doc["me"] and proc_row["sockets"] == 6
    late = next(
        r for r in tables["time_wait"]["rows"] if r["attempt"] == "connect_same_after_delay"
    )
    assert late["result"] == "EADDRNOTAVAIL"
    assert any(
        "tcp_tw_reuse 0 (never)" in f and "as the rule predicts" in f for f in doc["findings"]
    )
    # The busiest destination's 2 TIME_WAITs count against it: the late connect() above
    # could not take one over, and the sentence says so from the same setting.
    busiest = next(f for f in doc["findings"] if f.startswith("The busiest destination"))
    assert "holds 8 ports (6 established, 2 TIME_WAIT)" in busiest
    assert "TIME_WAIT ones count unless connect() takes them over (tcp_tw_reuse 0: never)" in (
        busiest
    )
    taken = next(r for r in tables["time_wait"]["rows"] if r["attempt"] == "bind_reuseaddr_now")
    assert taken["result"] == "ok"


def test_cli_json_and_usage_errors() -> None:
    import io

    from sockprobe.cli import main

    out, err = io.StringIO(), io.StringIO()
    assert main(["ephemeral", "--ports", "2", "--samples", "4", "--json"], out, err) == 0
    doc = json.loads(out.getvalue())
    assert doc["schema"] == 2 and doc["probe"] == "ephemeral"
    ids = [t["id"] for t in doc["tables"]]
    assert ids == [
        "exhaustion",
        "time_wait",
        "parity",
        "host_range",
        "host_destinations",
        "host_processes",
    ]
    out, err = io.StringIO(), io.StringIO()
    assert main(["ephemeral", "--ports", "0"], out, err) == 2
    assert err.getvalue().count("\n") == 1


def test_ctrl_c_cleans_up_and_exits_130() -> None:
    """SIGINT while the cases wait: every socket and thread released, exit 130 at once."""
    code, err, took = interrupt(["ephemeral"], 0.5)
    assert code == 130, err
    assert "interrupted" in err
    assert took < 3.0


def test_netns_loopback_down_is_exit_3_naming_the_cause(netns: Any) -> None:
    """With `lo` down no connection is made (ENETUNREACH): the probe reports no counts
    and no timers (none of its events happened) and exits 3 with one line naming it."""
    code, d, err = netns.sockprobe_json("ephemeral", lo_up=False)
    assert code == 3 and d is None, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "ENETUNREACH" in lines[0] and "loopback" in lines[0]


def test_no_descriptor_left_is_exit_3_naming_the_cause() -> None:
    """RLIMIT_NOFILE 16: the experiments cannot open their sockets (EMFILE); the probe
    names that and exits 3 instead of reporting the host with every experiment n/a."""
    import resource
    import subprocess
    import sys

    def few_fds() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (16, 16))

    proc = subprocess.run(
        [sys.executable, "-m", "sockprobe", "ephemeral"],
        capture_output=True,
        text=True,
        timeout=30,
        preexec_fn=few_fds,
    )
    assert proc.returncode == 3, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "EMFILE" in lines[0] and "RLIMIT_NOFILE" in lines[0]
