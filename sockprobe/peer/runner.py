"""A probe run with --peer: its experiments across the path to a `sockprobe serve` agent.

The Report merges both halves: this host's measurements, the agent's (TCP_INFO of its
sockets), both kernels' settings in `environment` (`peer` holds the agent's), and
endpoints naming both hosts.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sockprobe.lab import Host, Lab
from sockprobe.peer import PEER_PROBES
from sockprobe.peer.client import Peer
from sockprobe.report import Report, environment, params_dict
from sockprobe.status import Unsupported, oserror_text

#: probe name -> (sysctls read on this host, the experiment runner)
Experiment = Callable[[Peer, Lab, Report, object], None]


def _experiments() -> dict[str, tuple[tuple[str, ...], Experiment]]:
    from sockprobe.peer import admission, bulk, segments, udp_path, wwr

    def nagle(peer: Peer, lab: Lab, report: Report, p: object) -> None:
        wwr.run(peer, lab, report, int(getattr(p, "rounds", 20)), int(getattr(p, "size", 10)))

    def partial_send(peer: Peer, lab: Lab, report: Report, p: object) -> None:
        bulk.run(peer, lab, report, int(getattr(p, "size", 1 << 20)), int(getattr(p, "sndbuf", 0)))

    def udp(peer: Peer, lab: Lab, report: Report, p: object) -> None:
        udp_path.run(peer, lab, report)

    def backlog(peer: Peer, lab: Lab, report: Report, p: object) -> None:
        admission.run(peer, lab, report, tuple(int(n) for n in getattr(p, "backlogs", (8,))))

    def framing(peer: Peer, lab: Lab, report: Report, p: object) -> None:
        sizes = tuple(int(x) for x in getattr(p, "sizes", (100, 1000, 3000, 6000)))
        segments.run(peer, lab, report, sizes, int(getattr(p, "read_size", 4096)))

    tcp = ("net.ipv4.tcp_congestion_control", "net.ipv4.tcp_wmem", "net.ipv4.tcp_rmem")
    return {
        "nagle": ((*tcp, "net.ipv4.tcp_autocorking"), nagle),
        "partial-send": (tcp, partial_send),
        "udp-truncate": (("net.ipv4.ip_no_pmtu_disc",), udp),
        "backlog": (("net.core.somaxconn", "net.ipv4.tcp_syn_retries"), backlog),
        "framing": (tcp, framing),
    }


def run(
    probe: str, params: object, peer_address: str, token: str, deadline_seconds: float
) -> Report:
    """Run `probe`'s path experiments against the agent at `peer_address`. This host's
    side uses the address its control connection left from (the route to the peer)."""
    from sockprobe import kernel
    from sockprobe.lab import Deadline

    experiments = _experiments()
    assert tuple(experiments) == PEER_PROBES
    sysctl_names, experiment = experiments[probe]
    t0 = time.monotonic()
    report = Report(probe, params={**params_dict(params), "peer": peer_address})
    deadline = Deadline(deadline_seconds)
    with (
        Peer(peer_address, token, deadline) as peer,
        Lab(Host(peer.sock.family, peer.local), deadline) as lab,
    ):
        try:
            experiment(peer, lab, report, params)
        except (ConnectionError, TimeoutError) as exc:
            if deadline.expired():
                raise
            raise Unsupported(
                f"the path to the peer agent at {peer_address} failed during the "
                f"experiment: {oserror_text(exc)} (the agent or the path went away)"
            ) from None
        report.environment = environment(kernel.sysctls(list(sysctl_names)))
        report.environment["peer"] = peer.host
        report.endpoints = [{**ep, "host": "this host"} for ep in lab.endpoints] + [
            {
                "role": "agent control",
                "proto": "tcp",
                "local": peer.local,
                "remote": peer.name,
                "host": "peer",
            }
        ]
    report.notes.append(
        f"Run across the path to the agent at {peer_address}: this host ran the client "
        "halves, the agent the server halves (sockprobe serve); the agent's kernel "
        "settings are under environment.peer."
    )
    report.duration_s = time.monotonic() - t0
    return report
