"""sockprobe udp-truncate on real loopback sockets: the kernel truths it demonstrates."""

from __future__ import annotations

import json
import socket
import time

import pytest
from helpers import has_ipv6_loopback

from sockprobe import kernel
from sockprobe.cli import main
from sockprobe.kernel import netns, udp
from sockprobe.probes import udp_truncate
from sockprobe.probes.udp_truncate import mtu
from sockprobe.report import NA, Report
from sockprobe.status import DeadlineExceeded, Unsupported, UsageError

linux_only = pytest.mark.skipif(
    not kernel.IS_LINUX, reason="MSG_TRUNC input, /proc/net/udp and SO_RXQ_OVFL are Linux"
)


def _rows(report, table_id):
    return report.get(table_id).rows


def _netns_reason() -> str | None:
    try:
        netns.run_in_new_netns(lambda: None, timeout=10)
    except netns.NetnsUnavailable as exc:
        return str(exc)
    return None


NETNS_REASON = _netns_reason() if kernel.IS_LINUX else "network namespaces are Linux-only"
needs_netns = pytest.mark.skipif(NETNS_REASON is not None, reason=str(NETNS_REASON))


@pytest.fixture(scope="module")
def report():
    return udp_truncate.run(udp_truncate.Params())


@linux_only
def test_each_default_size_received_is_min_of_size_and_buffer_and_true_size_reported(report):
    rows = _rows(report, "truncation")
    assert [r["size"] for r in rows] == list(udp_truncate.DEFAULT_SIZES)
    for r in rows:
        size, buf = r["size"], r["bufsize"]
        assert buf == 1024
        assert r["outcome"] == "ok"
        assert r["received"] == min(size, buf), r
        assert r["msg_trunc"] is (size > buf), r
        assert r["true_size"] == size, r
        assert r["lost"] == size - min(size, buf)
        assert r["head_intact"] is True


@linux_only
def test_truncation_with_a_custom_buffer():
    r = udp_truncate.run(udp_truncate.Params(sizes=(0, 10, 100, 3000), bufsize=100, burst=5, mtu=0))
    t = r.get("truncation")
    assert t.find(size=0)["received"] == 0 and t.find(size=0)["msg_trunc"] is False
    assert t.find(size=10)["received"] == 10 and t.find(size=10)["lost"] == 0
    assert t.find(size=100)["received"] == 100 and t.find(size=100)["msg_trunc"] is False
    assert t.find(size=3000)["received"] == 100 and t.find(size=3000)["msg_trunc"] is True
    assert t.find(size=3000)["true_size"] == 3000


def test_largest_datagram_fits_and_one_more_is_emsgsize(report):
    t = report.get("largest")
    v4 = t.find(family="IPv4")
    # 65,535 minus the 20-byte IPv4 header and the 8-byte UDP header.
    assert v4["largest_send"] == 65507 == v4["arithmetic"]
    assert v4["read_back"] == 65507
    assert v4["one_more"] == "EMSGSIZE"
    v6 = t.find(family="IPv6")
    if has_ipv6_loopback():
        assert v6["largest_send"] == 65527
        assert v6["read_back"] == 65527
        assert v6["one_more"] == "EMSGSIZE"
    else:
        assert isinstance(v6["largest_send"], NA)


def test_a_size_beyond_the_limit_is_an_emsgsize_row_not_a_crash():
    r = udp_truncate.run(udp_truncate.Params(sizes=(65508,), burst=5, mtu=0))
    (row,) = _rows(r, "truncation")
    assert row["outcome"] == "EMSGSIZE" and isinstance(row["received"], NA)
    assert "EMSGSIZE" in row["received"].reason
    assert any("65,508 B with EMSGSIZE" in f for f in r.findings)


def test_three_datagrams_are_three_reads(report):
    rows = _rows(report, "boundaries")
    assert [r["returned"] for r in rows[:3]] == list(udp_truncate.BOUNDARY_SIZES)
    assert all(r["intact"] is True for r in rows[:3])
    assert rows[3]["outcome"].startswith("EAGAIN") and isinstance(rows[3]["returned"], NA)


@linux_only
def test_overflow_burst_drops_and_both_per_socket_counts_agree(report):
    t = report.get("overflow")
    assert t.values("rcvbuf_requested") == list(udp_truncate.params.DEFAULT_RCVBUFS)
    for row in t.rows:
        proc, ovfl = row["dropped_proc"], row["dropped_rxq_ovfl"]
        assert row["rcvbuf_effective"] >= row["rcvbuf_requested"]
        assert row["delivered"] >= 1
        assert proc > 0, "a 200-datagram burst into an idle receiver must drop some"
        assert proc == ovfl
        assert row["delivered"] + proc == row["sent"] == 200 - row["send_errors"]
        # Namespace counters only ever grow, and every one of our drops is in the delta.
        assert row["rcvbuf_errors_delta"] >= proc
        assert row["queued_bytes"] > 0
    small, big = t.rows
    assert big["delivered"] > small["delivered"], "a larger SO_RCVBUF queues more"
    # The chart carries the table's numbers, one bar per case.
    (chart,) = [c for c in report.charts if c.id == "overflow"]
    assert [dict(segs) for _label, segs in chart.bars] == [
        {"delivered": r["delivered"], "dropped": r["dropped_proc"]} for r in t.rows
    ]


@linux_only
def test_so_rxq_ovfl_cmsg_decoding_on_a_raw_socket_pair():
    """The helper alone: no drops means no control message; drops mean the count."""
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx,
    ):
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)  # clamped to the minimum
        assert udp.enable_rxq_ovfl(rx)
        rx.bind(("127.0.0.1", 0))
        tx.connect(rx.getsockname())
        tx.send(b"first")
        rx.settimeout(2.0)
        _d, anc, _f, _a = rx.recvmsg(64, udp.rxq_ovfl_space())
        assert udp.rxq_ovfl_drops(anc) is None
        for _ in range(50):
            tx.send(bytes(1000))
        rx.setblocking(False)
        read = 0
        while True:
            try:
                rx.recvmsg(2000, udp.rxq_ovfl_space())
                read += 1
            except BlockingIOError:
                break
        rx.settimeout(2.0)
        tx.send(b"marker")
        _d, anc, _f, _a = rx.recvmsg(64, udp.rxq_ovfl_space())
        dropped = udp.rxq_ovfl_drops(anc)
        assert dropped is not None and dropped == 50 - read
        proc = udp.proc_row(rx)
        assert proc is not None and proc.drops == dropped


def test_icmp_port_unreachable_reaches_connected_and_recverr_sockets_only(report):
    t = report.get("icmp")
    assert t.find(socket="connected")["recv_result"] == "ECONNREFUSED"
    assert t.find(socket="unconnected")["recv_result"] == "timeout"
    if kernel.IS_LINUX:
        assert t.find(socket="unconnected_recverr")["recv_result"] == "ECONNREFUSED"
        assert t.find(socket="unconnected_recverr")["recverr"] is True


def test_the_unreachable_port_is_held_for_the_whole_experiment(report):
    """No closed-port race: each destination port belongs to a socket connected to itself,
    which takes datagrams from nobody else (so ours drew the port unreachable) and keeps
    any other program from binding the port meanwhile."""
    holders = [ep for ep in report.endpoints if ep["role"].startswith("icmp port holder")]
    senders = [ep for ep in report.endpoints if "sent_to" in ep]
    assert len(holders) == len(senders) == 3
    for holder, sender in zip(holders, senders):
        assert holder["remote"] == holder["local"] == sender["sent_to"]


def test_a_self_connected_socket_holds_its_port_and_receives_from_nobody_else():
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx,
    ):
        holder.bind(("127.0.0.1", 0))
        holder.connect(holder.getsockname())
        with pytest.raises(OSError):
            other.bind(holder.getsockname())
        tx.connect(holder.getsockname())
        tx.send(b"x")
        tx.settimeout(2.0)
        with pytest.raises(ConnectionRefusedError):
            tx.recv(16)
        holder.setblocking(False)
        with pytest.raises(BlockingIOError):
            holder.recv(16)


def test_findings_quote_measured_numbers_and_summary(report):
    row = report.get("overflow").rows[0]
    dropped = row["dropped_proc"]
    if isinstance(dropped, int):
        assert any(f"{dropped:,} dropped by that socket" in f for f in report.findings)
        assert f"{dropped:,} dropped" in report.summary
    assert "65,507 B" in report.summary
    assert not any("host-wide" in x.lower() for x in [*report.findings, *report.notes])
    assert any("this network namespace" in f for f in report.findings)
    d = report.to_dict()
    assert d["probe"] == "udp-truncate" and d["endpoints"]
    assert all(ep["proto"] == "udp" for ep in d["endpoints"])


@pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback here")
def test_ipv6_host():
    r = udp_truncate.run(udp_truncate.Params(host="::1", sizes=(2000,), burst=50, mtu=0))
    (row,) = _rows(r, "truncation")
    assert row["received"] == 1024
    assert r.get("largest").find(family="IPv6")["largest_send"] == 65527
    assert r.tables[0].rows and any("[::1]:" in ep["local"] for ep in r.endpoints)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(sizes=()),
        dict(sizes=(-1,)),
        dict(sizes=(70000,)),
        dict(bufsize=0),
        dict(burst=0),
        dict(burst_size=3),
        dict(burst_rcvbuf=(0,)),
        dict(burst_rcvbuf=()),
        dict(burst_rcvbuf=(4096, 4096)),
        dict(sizes=(10, 10)),
        dict(mtu=67),
        dict(mtu=70000),
        dict(mtu=32769),
        dict(op_timeout=0),
        dict(deadline=0),
    ],
)
def test_bad_params_are_usage_errors(kwargs):
    with pytest.raises(UsageError):
        udp_truncate.Params(**kwargs)


def test_deadline_bounds_the_probe():
    # The unconnected-socket wait alone is 5 s; a 0.3 s deadline must stop it cleanly.
    t0 = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        udp_truncate.run(udp_truncate.Params(op_timeout=5.0, deadline=0.3))
    assert time.monotonic() - t0 < 2.0


def test_cli(capsys):
    code = main(["udp-truncate", "--size", "2000", "--burst", "20", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    doc = json.loads(out)
    assert doc["probe"] == "udp-truncate"
    assert doc["params"]["sizes"] == [2000]
    assert "net.core.rmem_default" in doc["environment"]["sysctls"] or not kernel.IS_LINUX
    code = main(["udp-truncate", "--size", "-5"])
    _out, err = capsys.readouterr()
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--size" in err


# -- what loopback's MTU hides: an MTU-1500 lo in a private network namespace -----------------
@pytest.fixture(scope="module")
def mtu_table(report):
    if NETNS_REASON is not None:
        pytest.skip(NETNS_REASON)
    return report.get("mtu")


def test_expected_fragments_follow_the_kernels_rule():
    # 1,480 B of IP payload per fragment at MTU 1500 ((1500 - 20) & ~7).
    assert mtu.payload_limit(1500) == 1472
    assert mtu.expected_fragments(1472, 1500) == 1
    assert mtu.expected_fragments(1473, 1500) == 2
    assert mtu.expected_fragments(65507, 1500) == 45
    assert mtu.expected_fragments(100, 100) == 2  # (100 - 20) & ~7 = 80 per fragment


@needs_netns
def test_pmtudisc_do_above_the_path_limit_raises_emsgsize(mtu_table):
    over = mtu_table.find(case="over_do")
    assert over["payload"] == 1473 and over["pmtudisc"] == "DO"
    assert over["send_outcome"] == "EMSGSIZE"
    assert over["frag_creates"] == 0 and over["reads"] == 0
    fits = mtu_table.find(case="fits_do")
    assert fits["payload"] == 1472 and fits["send_outcome"] == "ok" and fits["reads"] == 1


@needs_netns
def test_default_pmtudisc_fragments_and_reassembles(mtu_table):
    for case, payload in (("fits", 1472), ("over", 1473), ("largest", 65507)):
        row = mtu_table.find(case=case)
        assert row["ip_mtu"] == 1500
        assert row["pmtudisc"] == "WANT"  # a new socket's default with ip_no_pmtu_disc 0
        assert row["send_outcome"] == "ok"
        # One send, one read, whole: the receiving IP layer reassembled the fragments.
        assert (row["reads"], row["received"]) == (1, payload)
        # Exact: nothing else runs in the namespace.
        frags = mtu.expected_fragments(payload, 1500)
        assert row["frag_creates"] == (0 if frags == 1 else frags), row
        assert row["reasm_oks"] == (0 if frags == 1 else 1)


@needs_netns
def test_udp_segment_makes_datagrams_not_fragments(mtu_table):
    g = mtu_table.find(case="gso_fits")
    assert (g["gso_size"], g["send_outcome"], g["reads"], g["frag_creates"]) == (1472, "ok", 4, 0)
    over = mtu_table.find(case="gso_over")
    assert over["send_outcome"] in ("EMSGSIZE", "EINVAL")  # EINVAL before Linux 6.14


def test_loopback_hides_it(report):
    host = next(f for f in report.findings if f.startswith("On this host's loopback"))
    assert "nothing is ever fragmented" in host


@needs_netns
def test_another_mtu_changes_the_limits():
    r = udp_truncate.run(udp_truncate.Params(sizes=(10,), burst=5, mtu=1280))
    t = r.get("mtu")
    assert t.find(case="fits")["payload"] == 1252 and t.find(case="fits")["ip_mtu"] == 1280
    assert t.find(case="over_do")["send_outcome"] == "EMSGSIZE"
    assert t.find(case="largest")["frag_creates"] == mtu.expected_fragments(65507, 1280)


def test_without_a_namespace_the_mtu_rows_say_why():
    # The same probe, as if no namespace could be made: every cell n/a with the cause.
    out = mtu.Outcome(None, "no private network namespace: for the test", 65535, 65536)
    from sockprobe.report import Report

    rep = Report("udp-truncate")
    mtu.add_table(rep, udp_truncate.Params(), out)
    mtu.add_findings(rep, udp_truncate.Params(), out)
    row = rep.get("mtu").find(case="over_do")
    assert row["send_outcome"].reason == "no private network namespace: for the test"
    assert any("was not measured" in f for f in rep.findings)


# -- preconditions ------------------------------------------------------------------------------
@needs_netns
def test_lo_down_is_unsupported_with_the_cause():
    """With lo down, a loopback send() still succeeds and the datagram vanishes: the probe
    must stop (Unsupported) and say lo is down, not report a truncation it never saw."""
    from sockprobe.kernel import netif

    def body() -> str:
        netif.set_link("lo", up=False)
        try:
            udp_truncate.run(udp_truncate.Params(mtu=0))
        except Unsupported as exc:
            return f"Unsupported: {exc}"
        return "ran"

    out = netns.run_in_new_netns(body, timeout=10)
    assert out.startswith("Unsupported:") and "lo is down" in out, out


@needs_netns
@pytest.mark.parametrize("no_pmtu_disc", [0, 1])
def test_the_default_mode_follows_ip_no_pmtu_disc(no_pmtu_disc):
    """The stated default (inet_create()'s rule of the namespace's ip_no_pmtu_disc) is
    what a new socket reads, and either default fragments a datagram above the limit."""
    res = netns.run_in_new_netns(lambda: mtu.in_namespace(1500, no_pmtu_disc), timeout=10)
    assert res.no_pmtu_disc == no_pmtu_disc
    over = next(c for c in res.cases if c.key == "over")
    assert (
        over.pmtudisc == mtu.default_pmtudisc(no_pmtu_disc) == ("DONT" if no_pmtu_disc else "WANT")
    )
    assert over.send_outcome == "ok" and over.counters["FragCreates"] == 2
    do = next(c for c in res.cases if c.key == "over_do")
    assert do.send_outcome == "EMSGSIZE"  # DO is per socket: the sysctl does not matter
    rep = Report("udp-truncate")
    mtu.add_findings(rep, udp_truncate.Params(), mtu.Outcome(res, None, 65535, 65536))
    assert any(
        f"{over.pmtudisc} (a new socket's default, {over.pmtudisc} with "
        f"net.ipv4.ip_no_pmtu_disc = {no_pmtu_disc})" in f
        for f in rep.findings
    ), rep.findings


@linux_only
def test_effective_rcvbuf_follows_the_kernels_rule_including_the_rmem_max_cap():
    """The stated rule (min(requested, rmem_max) x 2) against getsockopt, below and above
    net.core.rmem_max (host-wide, so the cap is tested by asking for more than it)."""
    from sockprobe.probes.udp_truncate import overflow

    rmem_max = kernel.sysctl_int("net.core.rmem_max")
    assert rmem_max is not None
    asks = (8192, rmem_max + 4096)
    r = udp_truncate.run(udp_truncate.Params(sizes=(10,), burst=20, burst_rcvbuf=asks, mtu=0))
    t = r.get("overflow")
    for ask in asks:
        row = t.find(rcvbuf_requested=ask)
        assert row["rcvbuf_effective"] == overflow.expected_rcvbuf(ask, rmem_max)
    assert t.find(rcvbuf_requested=asks[1])["rcvbuf_effective"] == 2 * rmem_max
    assert any(f"rmem_max {rmem_max:,}) x 2 gives" in f for f in r.findings)


@needs_netns
def test_ipv6_fragments_with_its_own_rule_and_do_refuses(mtu_table):
    if isinstance(mtu_table.find(case="v6_fits")["send_outcome"], NA):
        pytest.skip(mtu_table.find(case="v6_fits")["send_outcome"].reason)
    assert mtu.payload_limit(1500, v6=True) == 1452
    for case, payload in (("v6_fits", 1452), ("v6_over", 1453), ("v6_largest", 65527)):
        row = mtu_table.find(case=case)
        assert row["family"] == "IPv6" and row["ip_mtu"] == 1500
        assert (row["send_outcome"], row["reads"], row["received"]) == ("ok", 1, payload)
        frags = mtu.expected_fragments(payload, 1500, v6=True)
        assert row["frag_creates"] == (0 if frags == 1 else frags), row
    assert mtu_table.find(case="v6_largest")["frag_creates"] == 46  # 1,448 B per fragment
    assert mtu_table.find(case="v6_over_do")["send_outcome"] == "EMSGSIZE"


@needs_netns
def test_below_ipv6s_minimum_mtu_the_ipv6_rows_say_why():
    r = udp_truncate.run(udp_truncate.Params(sizes=(10,), burst=5, mtu=1000))
    row = r.get("mtu").find(case="v6_over")
    assert isinstance(row["send_outcome"], NA) and "1,280" in row["send_outcome"].reason
    assert r.get("mtu").find(case="over_do")["send_outcome"] == "EMSGSIZE"  # IPv4 still ran


@linux_only
def test_a_request_below_the_floor_reads_back_sock_min_rcvbuf_and_the_sentence_says_so():
    """__sock_set_rcvbuf() raises max(2 x min(requested, rmem_max), SOCK_MIN_RCVBUF): a
    1,000 B request reads back the floor (2048 + sizeof(struct sk_buff), build-dependent,
    so it is read with SO_RCVBUF 0), not 2,000 B; the finding names the floor."""
    from sockprobe.probes.udp_truncate import overflow

    rmem_max = kernel.sysctl_int("net.core.rmem_max")
    r = udp_truncate.run(udp_truncate.Params(sizes=(10,), burst=20, burst_rcvbuf=(1000,), mtu=0))
    row = r.get("overflow").find(rcvbuf_requested=1000)
    assert row["rcvbuf_effective"] > 2000  # the floor, not the doubled request
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 0)
        floor = s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    assert row["rcvbuf_effective"] == floor == overflow.expected_rcvbuf(1000, rmem_max, floor)
    text = next(f for f in r.findings if "SO_RCVBUF 1,000 requested" in f)
    assert "the kernel's floor SOCK_MIN_RCVBUF" in text and "2,000 is below it" in text
