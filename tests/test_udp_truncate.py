"""sockprobe udp-truncate on real loopback sockets: the kernel truths it demonstrates."""

from __future__ import annotations

import json
import socket
import time

import pytest
from helpers import labelled

from sockprobe import kernel
from sockprobe.cli import main
from sockprobe.kernel import udp
from sockprobe.probes import udp_truncate
from sockprobe.report import NA
from sockprobe.status import DeadlineExceeded, UsageError

linux_only = pytest.mark.skipif(
    not kernel.IS_LINUX, reason="MSG_TRUNC input, /proc/net/udp and SO_RXQ_OVFL are Linux"
)


def _table(report, prefix):
    return next(t for t in report.tables if t.title.startswith(prefix))


def _rows(table):
    return labelled(table)


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.fixture(scope="module")
def report():
    return udp_truncate.run(udp_truncate.Params())


@linux_only
def test_each_default_size_received_is_min_of_size_and_buffer_and_true_size_reported(report):
    rows = _rows(_table(report, "Truncation"))
    assert [r["sent"] for r in rows] == list(udp_truncate.DEFAULT_SIZES)
    for r in rows:
        size, buf = r["sent"], r["buffer"]
        assert buf == 1024
        assert r["send()"] == "ok"
        assert r["received"] == min(size, buf), r
        assert r["MSG_TRUNC flag"] is (size > buf), r
        assert r["true size (MSG_TRUNC input)"] == size, r
        assert r["lost"] == size - min(size, buf)
        assert r["head intact"] is True


@linux_only
def test_truncation_with_a_custom_buffer():
    r = udp_truncate.run(udp_truncate.Params(sizes=(0, 10, 100, 3000), bufsize=100, burst=5))
    rows = {row["sent"]: row for row in _rows(_table(r, "Truncation"))}
    assert rows[0]["received"] == 0 and rows[0]["MSG_TRUNC flag"] is False
    assert rows[10]["received"] == 10 and rows[10]["lost"] == 0
    assert rows[100]["received"] == 100 and rows[100]["MSG_TRUNC flag"] is False
    assert rows[3000]["received"] == 100 and rows[3000]["MSG_TRUNC flag"] is True
    assert rows[3000]["true size (MSG_TRUNC input)"] == 3000


def test_largest_datagram_fits_and_one_more_is_emsgsize(report):
    rows = {r["family"]: r for r in _rows(_table(report, "The largest datagram"))}
    v4 = rows["IPv4"]
    # 65,535 minus the 20-byte IPv4 header and the 8-byte UDP header.
    assert v4["largest send()"] == 65507 == v4["header arithmetic"]
    assert v4["read back"] == 65507
    assert v4["one byte more"] == "EMSGSIZE"
    if _ipv6_loopback():
        v6 = rows["IPv6"]
        assert v6["largest send()"] == 65527
        assert v6["read back"] == 65527
        assert v6["one byte more"] == "EMSGSIZE"
    else:
        assert isinstance(rows["IPv6"]["largest send()"], NA)


def test_a_size_beyond_the_limit_is_an_emsgsize_row_not_a_crash():
    r = udp_truncate.run(udp_truncate.Params(sizes=(65508,), burst=5))
    (row,) = _rows(_table(r, "Truncation"))
    assert row["send()"] == "EMSGSIZE" and row["received"] is None
    assert any("65,508 B with EMSGSIZE" in f for f in r.findings)


def test_three_datagrams_are_three_reads(report):
    rows = _rows(_table(report, "Boundaries"))
    assert [r["returned"] for r in rows[:3]] == list(udp_truncate.BOUNDARY_SIZES)
    assert all(r["content intact"] is True for r in rows[:3])
    assert "EAGAIN" in rows[3]["returned"]


@linux_only
def test_overflow_burst_drops_and_both_per_socket_counts_agree(report):
    (row,) = _rows(_table(report, "Receive-queue overflow"))
    proc = row["dropped (/proc/net/udp, this socket)"]
    ovfl = row["dropped (SO_RXQ_OVFL, this socket)"]
    assert row["SO_RCVBUF effective"] >= 4096
    assert row["delivered"] >= 1
    assert proc > 0, "a 200-datagram burst into an idle 4 KiB receiver must drop some"
    assert proc == ovfl
    assert row["delivered"] + proc == row["sent"] == 200 - row["send() errors"]
    # Host-wide counters only ever grow, and every one of our drops is in the delta.
    assert row["Udp RcvbufErrors Δ (host-wide)"] >= proc
    assert row["queued (/proc rx_queue)"] > 0


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
    rows = {r["socket"]: r for r in _rows(_table(report, "Sending to a closed port"))}
    assert rows["connected"]["next recv()"].startswith("ConnectionRefusedError")
    assert rows["unconnected"]["next recv()"].startswith("TimeoutError")
    if kernel.IS_LINUX:
        assert rows["unconnected + IP_RECVERR"]["next recv()"].startswith("ConnectionRefusedError")


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
    (row,) = _rows(_table(report, "Receive-queue overflow"))
    dropped = row["dropped (/proc/net/udp, this socket)"]
    if isinstance(dropped, int):
        assert any(f"{dropped:,} dropped by that socket" in f for f in report.findings)
        assert f"{dropped:,} dropped" in report.summary
    assert "65,507 B" in report.summary
    d = report.to_dict()
    assert d["probe"] == "udp-truncate" and d["endpoints"]
    assert all(ep["proto"] == "udp" for ep in d["endpoints"])


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback here")
def test_ipv6_host():
    r = udp_truncate.run(udp_truncate.Params(host="::1", sizes=(2000,), burst=50))
    (row,) = _rows(_table(r, "Truncation"))
    assert row["received"] == 1024
    limits = {x["family"]: x for x in _rows(_table(r, "The largest datagram"))}
    assert limits["IPv6"]["largest send()"] == 65527
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
        dict(burst_rcvbuf=0),
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
