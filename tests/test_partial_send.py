"""sockprobe partial-send on real loopback connections: the kernel truths it demonstrates."""

from __future__ import annotations

import json
import time
from array import array

import pytest

from sockprobe import kernel
from sockprobe.cli import main
from sockprobe.lab import Deadline, Lab, resolve_host
from sockprobe.probes import partial_send
from sockprobe.probes.partial_send import autotune, buffers, scenarios
from sockprobe.report import NA
from sockprobe.status import DeadlineExceeded, UsageError

linux_only = pytest.mark.skipif(not kernel.IS_LINUX, reason="SIOCOUTQ/SIOCINQ are Linux ioctls")


@pytest.fixture(scope="module")
def report():
    return partial_send.run(partial_send.Params())


def _timeline(report, placement, mode):
    return [
        r for r in report.get("timeline").rows if r["placement"] == placement and r["mode"] == mode
    ]


@pytest.mark.parametrize("placement", partial_send.PLACEMENTS)
def test_first_nonblocking_send_accepts_fewer_bytes_than_offered(report, placement):
    calls = _timeline(report, placement, "nonblocking")
    first = calls[0]
    assert first["requested"] == 1024 * 1024
    assert 0 < first["accepted"] < first["requested"]
    # Then EAGAIN, and the run ends on a run of EAGAINs that lasted the quiet period.
    assert any(c["outcome"] == "BlockingIOError EAGAIN" for c in calls)
    assert calls[-1]["outcome"] == "BlockingIOError EAGAIN"
    cumulative = [c["cumulative"] for c in calls]
    assert cumulative == sorted(cumulative)


@pytest.mark.parametrize("placement", partial_send.PLACEMENTS)
def test_timeout_send_returns_partial_counts_then_times_out(report, placement):
    calls = _timeline(report, placement, "timeout")
    assert calls[0]["accepted"] < calls[0]["requested"]
    assert calls[-1]["outcome"] == "TimeoutError"
    assert calls[-1]["accepted"] == 0


@pytest.mark.parametrize("placement", partial_send.PLACEMENTS)
def test_sendall_raises_without_a_count(report, placement):
    (call,) = _timeline(report, placement, "sendall")
    assert call["outcome"] == "TimeoutError"
    assert isinstance(call["accepted"], NA)


def test_drained_count_and_content_equal_the_accepted_total(report):
    rows = report.get("scenarios").rows
    assert len(rows) == 6
    for r in rows:
        assert r["drained_equals_accepted"] is True, r
        assert r["intact"] is True, r
        assert 0 < r["drained"] < r["offered"]
        if isinstance(r["accepted"], int):
            assert r["drained"] == r["accepted"]
        if kernel.IS_LINUX:
            # The sender's own exact count of what its kernel took is what was drained,
            # for sendall() too, which reports nothing.
            assert r["taken"] == r["drained"]
            # The two queues, read by ioctl and by sock_diag (what ss reads), hold at
            # least that: bytes queued at the receiver and not yet acknowledged would
            # be in both (after the quiet period they are equal in practice).
            assert r["ioctl_queued"] >= r["drained"]
            assert r["diag_queued"] >= r["drained"]
    assert any("Nothing was lost" in f for f in report.findings)


@linux_only
def test_buffers_are_doubled_as_the_kernel_says():
    """socket(7): the kernel doubles the value set, within wmem_max / rmem_max."""
    r = partial_send.run(
        partial_send.Params(size=200_000, modes=("nonblocking",), quiet_period=0.05, autotune=False)
    )
    wmax = kernel.sysctl_int("net.core.wmem_max") or 0
    rmax = kernel.sysctl_int("net.core.rmem_max") or 0
    for row in r.get("buffers").rows:
        assert row["sndbuf_effective"] == 2 * min(16384, wmax)
        assert row["rcvbuf_effective"] == 2 * min(16384, rmax)


@linux_only
def test_rcvbuf_placement_changes_the_first_window(report):
    """On the listener before listen() the handshake advertises a window sized for the
    small buffer, so the first send cannot put everything in the receiver's queue; on the
    accepted socket the first send lands whole in the receiver's queue (SIOCOUTQ 0)."""
    listener = _timeline(report, "listener", "nonblocking")[0]
    accepted = _timeline(report, "accepted", "nonblocking")[0]
    assert accepted["sender_outq"] == 0
    assert accepted["receiver_inq"] == accepted["accepted"]
    assert listener["receiver_inq"] < listener["accepted"]


def test_big_buffers_accept_everything():
    r = partial_send.run(
        partial_send.Params(
            size=20_000,
            sndbuf=1 << 20,
            rcvbuf=1 << 20,
            placement="listener",
            quiet_period=0.05,
            autotune=False,
        )
    )
    t = r.get("scenarios")
    assert t.find(placement="listener", mode="nonblocking")["accepted"] == 20_000
    assert t.find(placement="listener", mode="sendall")["accepted"] == 20_000
    assert all(row["drained"] == 20_000 and row["intact"] for row in t.rows)
    assert any("accepted all 20,000 B" in f for f in r.findings)
    # Nothing was held back, so nothing may claim that the buffers filled up.
    assert r.summary.startswith("the sender's kernel took all 20,000 B;"), r.summary
    assert "before the buffers were full" not in r.summary
    assert not any("took less than offered" in f for f in r.findings)


def test_span_and_buffer_wording():
    assert scenarios.span([1, 2, 1, 3]) == "1 to 3"
    assert scenarios.span([2, 2]) == "2"
    assert buffers.buffer_verb(16384, 32768, "net.core.wmem_max") == "doubled"
    assert buffers.buffer_verb(1, 4608, "net.core.wmem_max") == "raised to the kernel's floor"
    assert buffers.buffer_verb(1000, 1000, "net.core.wmem_max") == "not doubled"
    if kernel.IS_LINUX:
        cap = kernel.sysctl_int("net.core.wmem_max")
        assert cap is not None
        assert buffers.buffer_verb(cap + 1, 2 * cap, "net.core.wmem_max").startswith(
            "capped at net.core.wmem_max"
        )


def test_counter_pattern_never_repeats_a_word():
    data = partial_send.counter_pattern(1 << 20)
    words = array("I", data)
    assert len(set(words)) == len(words) == (1 << 20) // 4
    assert partial_send.counter_pattern(6) == bytes(6)
    assert partial_send.counter_pattern(8)[4:] == b"\0\0\0\x01"


def test_the_drain_check_catches_a_wrong_byte():
    """The content check can fail: drain against a pattern that differs at one offset."""
    p = partial_send.Params(size=50_000, sndbuf=1 << 20, rcvbuf=1 << 20)
    data = partial_send.counter_pattern(p.size)
    with Lab(resolve_host("127.0.0.1"), Deadline(10.0)) as lab:
        sc, pair = partial_send.fill(lab, "listener", "timeout", p, data)
        assert sc.accepted == p.size
        wrong = bytearray(data)
        wrong[12_345] ^= 0xFF
        partial_send.drain(lab, sc, pair, bytes(wrong))
    assert sc.drained == p.size
    assert sc.first_mismatch == 12_345
    assert not sc.intact


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(size=0),
        dict(size=-1),
        dict(sndbuf=0),
        dict(rcvbuf=-5),
        dict(placement="socket"),
        dict(modes=()),
        dict(modes=("blocking",)),
        dict(quiet_period=0),
        dict(op_timeout=100),
        dict(deadline=-1),
    ],
)
def test_bad_params_are_usage_errors(kwargs):
    with pytest.raises(UsageError):
        partial_send.Params(**kwargs)


def test_deadline_bounds_the_probe():
    # A 5 s quiet period and op-timeout; a 0.3 s deadline must stop every scenario soon.
    t0 = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        partial_send.run(partial_send.Params(quiet_period=5.0, op_timeout=5.0, deadline=0.3))
    assert time.monotonic() - t0 < 2.5


def test_cli(capsys):
    code = main(
        [
            "partial-send",
            "--size",
            "100000",
            "--mode",
            "timeout",
            "--placement",
            "accepted",
            "--json",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    doc = json.loads(out)
    assert doc["probe"] == "partial-send"
    assert doc["params"]["modes"] == ["timeout"] and doc["params"]["placement"] == "accepted"
    roles = {ep["role"].split(" ")[0] for ep in doc["endpoints"]}
    assert roles == {"accepted/timeout", "autotune"}
    code = main(["partial-send", "--placement", "nowhere"])
    _out, err = capsys.readouterr()
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--placement" in err


@linux_only
def test_bytes_taken_counts_every_byte_written_whether_acked_or_queued():
    from sockprobe.kernel import sendqueue

    with Lab(resolve_host("127.0.0.1"), Deadline(10.0)) as lab:
        c, s = lab.tcp_pair()
        assert sendqueue.bytes_taken(c) == 0
        c.sendall(b"x" * 1000)
        end = time.monotonic() + 2.0
        while kernel.outq(c) and time.monotonic() < end:  # wait for the ACK
            time.sleep(0.005)
        assert kernel.outq(c) == 0
        assert sendqueue.bytes_taken(c) == 1000  # all acknowledged: bytes_acked - 1
        assert kernel.inq(s) == 1000


def test_timeline_t_is_context_and_the_bars_are_the_accepted_column(report):
    """Issue 13: `t` measures the scheduler and the peer's timers: context, never
    compared. The chart's numbers are the timeline's."""
    t = report.get("timeline")
    assert t.column("t_ms").kind == "context"
    (bars,) = [c for c in report.charts if c.id == "accepted_per_call"]
    counted = [r for r in t.rows if isinstance(r["accepted"], int)]
    assert [seg[0][1] for _, seg in bars.bars] == [r["accepted"] for r in counted]
    assert [label for label, _ in bars.bars] == [
        f"{r['placement']}/{r['mode']} #{r['call']}" for r in counted
    ]


def test_notes_say_accepted_means_queued_not_delivered(report):
    text = " ".join(report.notes)
    assert "nothing is dropped" not in text
    assert "Accepted means queued, not delivered" in text
    assert "reset" in text and "abortive close" in text


@linux_only
def test_so_rcvbuf_set_turns_autotuning_off(report):
    """Issue 17: the default receive buffer grows during a bulk transfer; one whose
    SO_RCVBUF was set stays at the doubled value it read back, and its window scale,
    fixed in the handshake, is sized from the locked buffer."""
    if kernel.sysctl_int("net.ipv4.tcp_moderate_rcvbuf") != 1:
        pytest.skip("autotuning is off on this host (tcp_moderate_rcvbuf)")
    t = report.get("autotune")
    d, s = t.find(receive_buffer="default"), t.find(receive_buffer="so_rcvbuf_set")
    rmax = kernel.sysctl_int("net.core.rmem_max") or 0
    assert s["so_rcvbuf_start"] == 2 * min(65536, rmax)
    assert s["so_rcvbuf_max"] == s["so_rcvbuf_end"] == s["so_rcvbuf_start"]
    # Growth is the kernel's choice from what the reader kept up with: at least one
    # doubling over 16 MiB on loopback, where the reader is never the bottleneck.
    assert d["so_rcvbuf_max"] >= 2 * d["so_rcvbuf_start"]
    assert d["rcv_space_end"] > d["rcv_space_start"]
    assert d["received"] == s["received"] == 16 * 1024 * 1024
    rule = autotune.default_wscale()
    assert d["rcv_wscale"] == d["peer_wscale"] == rule
    assert s["rcv_wscale"] == s["peer_wscale"]
    assert s["rcv_wscale"] <= autotune.locked_wscale_ceiling(s["so_rcvbuf_start"])
    if s["snd_wnd_max"] is not None:
        # The locked window can never exceed the locked buffer.
        assert s["snd_wnd_max"] <= s["so_rcvbuf_start"] < d["snd_wnd_max"]
    text = next(f for f in report.findings if f.startswith("Autotuning"))
    assert f"from {d['so_rcvbuf_start']:,} to {d['so_rcvbuf_max']:,} B" in text
    assert "stayed there to the end" in text
    assert f"window scale {d['rcv_wscale']} vs {s['rcv_wscale']}" in text


def test_autotuning_off_in_a_namespace_leaves_the_default_buffer_alone(netns):
    """tcp_moderate_rcvbuf 0 (per network namespace): the default buffer no longer grows,
    and the sentence says why instead of claiming growth."""
    code = (
        "import json\n"
        "from sockprobe.probes import partial_send as ps\n"
        "r = ps.run(ps.Params(size=100_000, modes=('timeout',), placement='listener', "
        "autotune_bytes=4 << 20))\n"
        "print(json.dumps(r.to_dict()))\n"
    )
    proc = netns.in_netns(code, sysctls={"net.ipv4.tcp_moderate_rcvbuf": 0})
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    t = next(t for t in doc["tables"] if t["id"] == "autotune")
    d = next(r for r in t["rows"] if r["receive_buffer"] == "default")
    assert d["so_rcvbuf_max"] == d["so_rcvbuf_start"]
    text = next(f for f in doc["findings"] if f.startswith("Autotuning"))
    assert "autotuning is off in this network namespace (net.ipv4.tcp_moderate_rcvbuf 0)" in text


def test_lo_down_is_unsupported_naming_the_cause(netns):
    code = (
        "from sockprobe.probes import partial_send as ps\n"
        "from sockprobe.status import Unsupported\n"
        "try:\n"
        "    ps.run(ps.Params(deadline=10))\n"
        "except Unsupported as exc:\n"
        "    print('UNSUPPORTED', exc)\n"
    )
    proc = netns.in_netns(code, lo_up=False)
    assert "UNSUPPORTED cannot run on 127.0.0.1" in proc.stdout, proc.stdout + proc.stderr


def test_bad_autotune_params_are_usage_errors():
    for kwargs in (dict(autotune_bytes=10), dict(autotune_rcvbuf=0)):
        with pytest.raises(UsageError):
            partial_send.Params(**kwargs)


def test_cli_with_lo_down_exits_3_with_one_line(netns):
    code, doc, err = netns.sockprobe_json("partial-send", lo_up=False)
    assert code == 3 and doc is None, err
    assert len(err.strip().splitlines()) == 1 and "cannot run on" in err


def test_leaves_no_time_wait_behind(netns):
    """Issue 13: connections whose experiment is over are closed abortively
    (SO_LINGER {1, 0}), so the probe leaves no TIME_WAIT in the kernel."""
    code = (
        "from pathlib import Path\n"
        "from sockprobe.probes import partial_send\n"
        "partial_send.run(partial_send.Params())\n"
        "rows = Path('/proc/net/tcp').read_text().splitlines()[1:]\n"
        "print(sum(1 for r in rows if r.split()[3] == '06'))\n"
    )
    proc = netns.in_netns(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "0"


def test_timeline_queues_count_received_unacked_bytes_twice(report):
    """SIOCOUTQ (write_seq - snd_una) and SIOCINQ (rcv_nxt - copied_seq, tcp_ioctl): the
    receiver reads nothing, so every accepted byte is in the sender's queue, the
    receiver's, or both (received, ACK not yet back): the sum never falls short of the
    cumulative count, and SIOCOUTQ never exceeds it. The note must not call the sum what
    the kernel holds without that condition."""
    rows = [
        r
        for r in report.get("timeline").rows
        if isinstance(r["cumulative"], int) and isinstance(r["sender_outq"], int)
    ]
    assert rows
    for r in rows:
        assert r["sender_outq"] <= r["cumulative"], r
        assert r["sender_outq"] + r["receiver_inq"] >= r["cumulative"], r
    text = " ".join(report.notes)
    assert "tell how much the kernel holds" not in text
    assert "once the receiver has acknowledged what it queued" in text
