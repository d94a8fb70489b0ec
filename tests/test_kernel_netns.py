"""sockprobe.kernel.netns: a function in a fresh network namespace, in a forked child."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from sockprobe.kernel import netif, netns


def _reason() -> str | None:
    try:
        netns.run_in_new_netns(lambda: None, timeout=10)
    except netns.NetnsUnavailable as exc:
        return str(exc)
    return None


REASON = _reason()
pytestmark = pytest.mark.skipif(REASON is not None, reason=str(REASON))


def _here() -> tuple[int, str, bool | None, int]:
    return (
        os.stat("/proc/self/ns/net").st_ino,
        Path("/proc/sys/net/ipv4/ip_local_port_range").read_text(),
        netif.link_is_up("lo"),
        netif.link_mtu("lo"),
    )


def test_the_function_runs_in_another_namespace_and_its_result_comes_back():
    mine = os.stat("/proc/self/ns/net").st_ino
    ino, _ports, up, mtu = netns.run_in_new_netns(_here, timeout=10)
    assert ino != mine
    assert up is True and mtu == 65536  # a fresh lo: up (we set it), the default MTU


def test_changes_inside_do_not_reach_the_host():
    def body() -> int:
        netif.set_link("lo", mtu=1500)
        return netif.link_mtu("lo")

    before = netif.link_mtu("lo")
    assert netns.run_in_new_netns(body, timeout=10) == 1500
    assert netif.link_mtu("lo") == before


def test_an_exception_is_re_raised_in_the_caller():
    def body() -> None:
        raise ValueError("from the child")

    with pytest.raises(ValueError, match="from the child"):
        netns.run_in_new_netns(body, timeout=10)


def test_the_timeout_kills_and_reaps_the_child():
    t0 = time.monotonic()
    with pytest.raises(netns.NetnsTimeout):
        netns.run_in_new_netns(lambda: time.sleep(30), timeout=0.3)
    assert time.monotonic() - t0 < 2.0  # no_leaks checks that no child is left


def test_no_time_left_is_a_timeout_without_a_fork():
    with pytest.raises(netns.NetnsTimeout):
        netns.run_in_new_netns(lambda: 1, timeout=0)


def test_ctrl_c_while_waiting_kills_and_reaps_the_child():
    import signal

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        t0 = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            netns.run_in_new_netns(lambda: time.sleep(30), timeout=10)
        assert time.monotonic() - t0 < 2.0  # no_leaks then checks the child is gone
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
