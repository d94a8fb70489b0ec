"""Two-host mode: the agent against hostile controllers (on loopback, no root), and the
five peer-capable probes across a real path with a delay line (root: namespaces, TUN)."""

from __future__ import annotations

import json
import os
import re
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pathlab
import pytest

from sockprobe.peer.protocol import VERSION, recv_frame, send_frame

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "test-token-0123"


class Agent:
    """`sockprobe serve` as a child process on 127.0.0.1, any free port."""

    def __init__(self, *extra: str) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sockprobe",
                "serve",
                "--port",
                "0",
                "--token",
                TOKEN,
                "--idle-timeout",
                "60",
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=str(ROOT),
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        m = re.search(r"listening on ([\d.]+):(\d+); token (\S+)", line)
        assert m, line + (self.proc.stderr.read() if self.proc.stderr else "")
        self.address = (m.group(1), int(m.group(2)))

    def control(self) -> socket.socket:
        return socket.create_connection(self.address, timeout=5)

    def hello(self, sock: socket.socket, **over: object) -> dict[str, object]:
        send_frame(sock, {"type": "hello", "version": VERSION, "token": TOKEN, **over})
        return recv_frame(sock, 5)

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def threads(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/task"))

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
        _, err = self.proc.communicate(timeout=10)
        if self.proc.stdout:
            self.proc.stdout.close()
        return err


@pytest.fixture
def agent() -> Iterator[Agent]:
    a = Agent()
    try:
        yield a
    finally:
        a.stop()


def _settle(a: Agent, fds: int, threads: int) -> None:
    """The agent is back to its idle descriptors and threads (everything a session or
    a step opened is closed)."""
    end = time.monotonic() + 5
    while time.monotonic() < end and (a.fds() != fds or a.threads() != threads):
        time.sleep(0.05)
    assert (a.fds(), a.threads()) == (fds, threads)


def test_wrong_token_and_wrong_version_are_refused_with_a_reply(agent):
    fds, threads = agent.fds(), agent.threads()
    with agent.control() as s:
        assert agent.hello(s, token="nope")["error"] == "wrong token"
    with agent.control() as s:
        reply = agent.hello(s, version=99)
        assert reply["type"] == "error" and f"speaks {VERSION}" in str(reply["error"])
    with agent.control() as s:
        assert agent.hello(s)["type"] == "welcome"  # still serving
    _settle(agent, fds, threads)


def test_oversized_frame_and_bad_json_get_a_reply(agent):
    with agent.control() as s:
        s.sendall(struct.pack("!I", 1 << 30))  # a 1 GiB header, and nothing behind it
        reply = recv_frame(s, 5)
        assert "over the" in str(reply["error"])
    with agent.control() as s:
        s.sendall(struct.pack("!I", 5) + b"{nope")
        assert "not JSON" in str(recv_frame(s, 5)["error"])
    with agent.control() as s:
        s.sendall(struct.pack("!I", 2) + b"[]")
        assert "object" in str(recv_frame(s, 5)["error"])


def test_unknown_steps_and_bad_parameters_are_refused_and_the_session_goes_on(agent):
    with agent.control() as s:
        agent.hello(s)
        cases = [
            {"type": "step", "step": "rm -rf /", "params": {}},
            {"type": "step", "step": "tcp_echo", "params": {"rounds": 10**9}},
            {"type": "step", "step": "tcp_echo", "params": {"rounds": "ten"}},
            {"type": "step", "step": "tcp_echo", "params": {"address": "8.8.8.8"}},
            {"type": "step", "step": "tcp_echo", "params": []},
            {"type": "finish"},
            {"type": "launch"},
        ]
        for req in cases:
            send_frame(s, req)
            reply = recv_frame(s, 5)
            assert reply["type"] == "error", (req, reply)
        send_frame(s, {"type": "step", "step": "tcp_echo", "params": {"rounds": 1}})
        assert recv_frame(s, 5)["type"] == "ready"


def test_a_second_controller_is_told_busy(agent):
    with agent.control() as first:
        agent.hello(first)
        with agent.control() as second:
            reply = agent.hello(second)
            assert reply["type"] == "error" and "busy" in str(reply["error"])


def test_a_controller_that_vanishes_mid_step_is_cleaned_up(agent):
    fds, threads = agent.fds(), agent.threads()
    s = agent.control()
    agent.hello(s)
    send_frame(s, {"type": "step", "step": "tcp_echo", "params": {"rounds": 5}})
    port = int(recv_frame(s, 5)["port"])
    data = socket.create_connection((agent.address[0], port), timeout=5)
    data.sendall(b"x" * 20)
    # Gone without a word: an abortive close of both connections.
    for sock in (data, s):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    _settle(agent, fds, threads)
    with agent.control() as again:
        assert agent.hello(again)["type"] == "welcome"


def test_once_exits_after_one_controller():
    a = Agent("--once")
    try:
        with a.control() as s:
            a.hello(s)
            send_frame(s, {"type": "bye"})
        a.proc.wait(timeout=10)
        assert a.proc.returncode == 0
    finally:
        err = a.stop()
    assert "session ended" in err


def test_serve_refuses_a_wildcard_and_a_taken_port():
    r = subprocess.run(
        [sys.executable, "-m", "sockprobe", "serve", "--bind", "0.0.0.0"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=str(ROOT),
    )
    assert r.returncode == 2 and "wildcard" in r.stderr
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = subprocess.run(
            [sys.executable, "-m", "sockprobe", "serve", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=str(ROOT),
        )
    assert r.returncode == 3 and f"sockprobe port {port}" in r.stderr


def test_probe_against_a_wrong_token_or_no_agent_says_why(agent):
    from sockprobe.cli import main

    host, port = agent.address
    import io

    err = io.StringIO()
    code = main(
        ["nagle", "--peer", f"{host}:{port}", "--token", "wrong-token"],
        stdout=io.StringIO(),
        stderr=err,
    )
    assert code == 2 and "wrong token" in err.getvalue()
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        free = unused.getsockname()[1]
    err = io.StringIO()
    code = main(
        ["nagle", "--peer", f"127.0.0.1:{free}", "--token", TOKEN], stdout=io.StringIO(), stderr=err
    )
    assert code == 3 and "cannot reach the peer agent" in err.getvalue()


def test_nagle_against_a_loopback_agent_runs_and_the_agent_keeps_nothing(agent):
    import io

    from sockprobe.cli import main

    fds, threads = agent.fds(), agent.threads()
    out = io.StringIO()
    host, port = agent.address
    code = main(
        ["nagle", "--peer", f"{host}:{port}", "--token", TOKEN, "--rounds", "5", "--json"],
        stdout=out,
        stderr=io.StringIO(),
    )
    assert code == 0
    doc = json.loads(out.getvalue())
    assert doc["environment"]["peer"]["kernel_release"]
    assert {r["mode"] for r in doc["tables"][0]["rows"]} == {"nagle", "nodelay"}
    _settle(agent, fds, threads)


def test_an_agent_killed_mid_probe_ends_the_probe_with_the_cause(agent):
    host, port = agent.address
    probe = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sockprobe",
            "nagle",
            "--peer",
            f"{host}:{port}",
            "--token",
            TOKEN,
            "--rounds",
            "2000",
            "--deadline",
            "20",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=str(ROOT),
    )
    time.sleep(1.5)
    agent.proc.kill()
    t0 = time.monotonic()
    _, err = probe.communicate(timeout=30)
    assert time.monotonic() - t0 < 10
    assert probe.returncode == 3, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


# ---- across a real path ---------------------------------------------------------------
needs_path = pytest.mark.skipif(
    pathlab.skip_reason() is not None, reason=pathlab.skip_reason() or ""
)
DELAY_MS = 10.0


@pytest.fixture(scope="module")
def path() -> Iterator[tuple[pathlab.Path2, subprocess.Popen[str]]]:
    with pathlab.Path2(delay_ms=DELAY_MS) as p:
        agent = p.popen_b(
            "serve", "--bind", pathlab.B_ADDR, "--token", TOKEN, "--idle-timeout", "120"
        )
        assert agent.stdout is not None
        assert "listening on" in agent.stdout.readline()
        yield p, agent


def _probe(path: tuple[pathlab.Path2, subprocess.Popen[str]], *args: str) -> dict[str, object]:
    p, _ = path
    r = p.run_a(*args, "--peer", f"{pathlab.B_ADDR}:7380", "--token", TOKEN, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert isinstance(doc, dict)
    return doc


def _table(doc: dict[str, object], tid: str) -> dict[str, object]:
    return next(t for t in doc["tables"] if t["id"] == tid)  # type: ignore[union-attr,index]


@needs_path
def test_path_rtt_and_write_write_read_follow_the_delay_line(path):
    doc = _probe(path, "nagle", "--rounds", "12")
    rows = {r["mode"]: r for r in _table(doc, "path_wwr")["rows"]}
    rtt = 2 * DELAY_MS
    # TCP_NODELAY: about one round trip (within 10 % of twice the one-way delay).
    assert abs(rows["nodelay"]["min_ms"] - rtt) <= 0.1 * rtt
    assert rows["nodelay"]["median_ms"] < 1.5 * rtt
    # Nagle: a stalled round costs about 2 RTT + the peer's delayed-ACK timeout.
    ato = rows["nagle"]["peer_ato_ms"]
    assert ato is not None and ato >= 40
    assert rows["nagle"]["stalled_rounds"] >= 6
    assert 2 * rtt + 0.5 * ato <= rows["nagle"]["median_ms"] <= 2 * rtt + ato + 25
    finding = doc["findings"][0]
    assert "predicted 2 RTT + ato" in finding


@needs_path
def test_path_mss_and_udp_fragmentation(path):
    doc = _probe(path, "udp-truncate")
    rows = {(r["pmtudisc"], r["size"]): r for r in _table(doc, "path_udp")["rows"]}
    assert rows[("IP_PMTUDISC_WANT", 1473)]["delivered"] is True
    assert rows[("IP_PMTUDISC_DO", 1473)]["send"] == "EMSGSIZE"
    assert rows[("IP_PMTUDISC_DO", 1472)]["delivered"] is True
    doc = _probe(path, "framing")
    (row,) = _table(doc, "path_framing")["rows"]
    assert row["mss"] == 1448  # 1500 - 20 (IP) - 20 (TCP) - 12 (timestamps)


@needs_path
def test_path_backlog_admits_by_the_peers_queue(path):
    doc = _probe(path, "backlog", "--backlog", "0,8")
    for r in _table(doc, "path_admission")["rows"]:
        assert r["peer_queue"] == r["expected"] == r["backlog"] + 1
        # Every SYN crossed before the queue filled: all handshakes completed here.
        assert r["established"] + r["syn_sent"] == r["connects"]


@needs_path
def test_path_partial_send_delivers_every_byte(path):
    doc = _probe(path, "partial-send", "--size", "300000")
    (row,) = _table(doc, "path_bulk")["rows"]
    assert row["received_b"] == 300000
    assert 0 < row["held_b"] < 300000
    assert abs(row["rtt_ms"] - 2 * DELAY_MS) <= 0.25 * 2 * DELAY_MS


@needs_path
def test_a_plain_veth_path_has_the_mtu_and_mss_loopback_lacks():
    with pathlab.Path2(veth=True) as p:
        agent = p.popen_b("serve", "--bind", pathlab.B_ADDR, "--token", TOKEN, "--once")
        assert agent.stdout is not None
        assert "listening on" in agent.stdout.readline()
        doc = _probe((p, agent), "udp-truncate")
        rows = {(r["pmtudisc"], r["size"]): r for r in _table(doc, "path_udp")["rows"]}
        assert rows[("IP_PMTUDISC_DO", 1473)]["send"] == "EMSGSIZE"
        assert rows[("IP_PMTUDISC_WANT", 5888)]["delivered"] is True
