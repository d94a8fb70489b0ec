"""What loopback's 64 KiB MTU hides: fragmentation, IP_PMTUDISC_DO and the path MTU.

The host's `lo` has an MTU of 65,536, larger than any IPv4 datagram (65,535), so on
loopback nothing is ever fragmented and IP_PMTUDISC_DO never refuses a send. Real paths
are 1,500 B. This experiment makes one, without touching the host: in a private network
namespace (sockprobe.kernel.netns, a forked child) whose `lo` gets `--mtu` (1,500),
UDP datagrams are sent over 127.0.0.1 and the namespace's own IP counters
(/proc/net/snmp Ip: FragCreates, FragOKs, ReasmOKs) are read before and after each
case. Nothing else runs in that namespace, so those deltas are exact: every fragment
counted is ours.

The kernel's rules measured here (net/ipv4/ip_output.c, __ip_append_data()):
- The largest unfragmented UDP payload is the MTU less the 20-byte IP header and the
  8-byte UDP header (1,472 B at MTU 1,500).
- With IP_PMTUDISC_WANT (what a new socket gets: inet_create() picks WANT unless
  net.ipv4.ip_no_pmtu_disc is set) or DONT, a larger datagram is cut into fragments whose
  IP payloads are (MTU - 20) rounded down to a multiple of 8 bytes (maxfraglen), sent,
  and reassembled by the receiving IP layer into one datagram: one send, one read, and
  FragCreates counts the pieces.
- WANT also sets DF on every packet that fits unless the route's MTU is locked
  (ip_dont_fragment() in include/net/ip.h), so a smaller hop on the way can answer
  "fragmentation needed"; the fragments of a larger one leave without DF. DONT never
  sets DF.
- With IP_PMTUDISC_DO the bound is the path MTU itself: a larger send() fails with
  EMSGSIZE at once, nothing is sent.
- IP_MTU (getsockopt on a connected socket, ip(7)) reads the path MTU the kernel uses.
- UDP_SEGMENT (udp_send_skb() in net/ipv4/udp.c) makes one send a GSO packet that is
  cut into datagrams of gso_size bytes, which are whole datagrams, not fragments. On
  loopback the GSO packet crosses lo whole (lo takes GSO packets as they are) and is cut
  at the receiving socket (udp_rcv_segment()); a NIC or the stack cuts it before the wire.
  A gso_size whose datagram would not fit the path MTU is refused (EMSGSIZE on recent
  kernels, EINVAL on older ones: the errno is measured).
"""

from __future__ import annotations

import errno
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from sockprobe.kernel import netif, udp
from sockprobe.kernel.netns import NetnsTimeout, NetnsUnavailable, run_in_new_netns
from sockprobe.lab import Lab
from sockprobe.probes import plural
from sockprobe.probes.udp_truncate.common import n
from sockprobe.probes.udp_truncate.params import Params
from sockprobe.report import NA, Cell, Report, col
from sockprobe.status import oserror_name

# Linux values (kernel/udp.py); this module runs only where namespaces exist (Linux).
IP_MTU_DISCOVER = udp.IP_MTU_DISCOVER or 10
IP_MTU = udp.IP_MTU or 14
IPV6_MTU_DISCOVER = udp.IPV6_MTU_DISCOVER or 23
IPV6_MTU = udp.IPV6_MTU or 24
PMTUDISC = udp.PMTUDISC_NAMES
IP_PMTUDISC_DO = udp.IP_PMTUDISC_DO
UDP_SEGMENT = udp.UDP_SEGMENT or 103
IP_HEADER = udp.IPV4_HEADER
UDP_HEADER = udp.UDP_HEADER
#: How long the child waits for one datagram on its own loopback (delivery is inside
#: send(); reassembly too).
ARRIVAL_S = 1.0
#: The child's own budget; the parent also bounds it by the probe's deadline.
CHILD_CAP_S = 5.0
IP_COUNTERS = ("FragCreates", "FragOKs", "ReasmOKs")


NO_PMTU_DISC = Path("/proc/sys/net/ipv4/ip_no_pmtu_disc")


def default_pmtudisc(ip_no_pmtu_disc: int) -> str:
    """The IP_MTU_DISCOVER a new IPv4 socket starts with, by inet_create()'s rule
    (net/ipv4/af_inet.c): DONT when net.ipv4.ip_no_pmtu_disc is non-zero, else WANT."""
    return "DONT" if ip_no_pmtu_disc else "WANT"


def payload_limit(mtu: int, v6: bool = False) -> int:
    """The largest UDP payload that leaves in one packet: MTU - 20 - 8 over IPv4,
    MTU - 40 - 8 over IPv6."""
    return mtu - (udp.IPV6_HEADER if v6 else IP_HEADER) - UDP_HEADER


def expected_fragments(payload: int, mtu: int, v6: bool = False) -> int:
    """Fragments the sender makes of one datagram, 1 if it fits. IPv4
    (__ip_append_data()): every fragment but the last carries (MTU - 20) & ~7 bytes of the
    UDP datagram (its header included). IPv6 (__ip6_append_data()): each fragment also
    carries an 8-byte fragment header, so (MTU - 40 - 8) & ~7."""
    datagram = payload + UDP_HEADER
    if datagram <= payload_limit(mtu, v6) + UDP_HEADER:
        return 1
    headers = udp.IPV6_HEADER + udp.IPV6_FRAG_HEADER if v6 else IP_HEADER
    per = (mtu - headers) & ~7
    return -(-datagram // per)


@dataclass
class Case:
    key: str
    payload: int
    pmtudisc: str
    gso_size: int | None = None
    send_outcome: str = ""
    reads: int = 0
    received: int = 0
    ip_mtu: int | None = None
    counters: dict[str, int] = field(default_factory=dict)
    family: str = "IPv4"
    #: Why the case could not run (IPv6 missing in the namespace), or None.
    unavailable: str | None = None


@dataclass
class Result:
    mtu: int
    #: net.ipv4.ip_no_pmtu_disc in the namespace where the cases ran (None: unreadable).
    no_pmtu_disc: int | None
    cases: list[Case]


def _ip_counters(v6: bool = False) -> dict[str, int]:
    """The IP counters of the current network namespace, keyed as in IP_COUNTERS: Ip in
    /proc/net/snmp (a header line and a value line), or Ip6 in /proc/net/snmp6 (one
    `Ip6FragCreates  46` pair per line)."""
    if v6:
        out: dict[str, int] = {}
        for line in Path("/proc/net/snmp6").read_text().splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0].startswith("Ip6") and parts[1].isdigit():
                out[parts[0].removeprefix("Ip6")] = int(parts[1])
        return out
    lines = Path("/proc/net/snmp").read_text().splitlines()
    ip = [line.split()[1:] for line in lines if line.startswith("Ip:")]
    if len(ip) < 2:
        return {}
    return {k: int(v) for k, v in zip(ip[0], ip[1]) if v.lstrip("-").isdigit()}


def _case(
    key: str,
    payload: int,
    mtu: int,
    *,
    do: bool = False,
    gso: int | None = None,
    v6: bool = False,
) -> Case:
    """One send on a fresh pair over 127.0.0.1 (or ::1), everything read back, the
    namespace's counters diffed."""
    family, address = (socket.AF_INET6, "::1") if v6 else (socket.AF_INET, "127.0.0.1")
    level = socket.IPPROTO_IPV6 if v6 else socket.IPPROTO_IP
    discover, mtu_opt = (IPV6_MTU_DISCOVER, IPV6_MTU) if v6 else (IP_MTU_DISCOVER, IP_MTU)
    with (
        socket.socket(family, socket.SOCK_DGRAM) as rx,
        socket.socket(family, socket.SOCK_DGRAM) as tx,
    ):
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        rx.bind((address, 0))
        tx.connect(rx.getsockname())
        if do:
            # IPV6_PMTUDISC_DO has the same value as IP_PMTUDISC_DO (2).
            tx.setsockopt(level, discover, IP_PMTUDISC_DO)
        if gso is not None:
            tx.setsockopt(socket.IPPROTO_UDP, UDP_SEGMENT, gso)
        c = Case(key, payload, PMTUDISC.get(tx.getsockopt(level, discover), "?"), gso)
        c.family = "IPv6" if v6 else "IPv4"
        c.ip_mtu = tx.getsockopt(level, mtu_opt)
        before = _ip_counters(v6)
        try:
            tx.send(bytes(payload))
            c.send_outcome = "ok"
        except OSError as exc:
            c.send_outcome = oserror_name(exc)
        if c.send_outcome == "ok":
            # Every byte sent is awaited, within ARRIVAL_S in all: under load the receive
            # softirq (and reassembly) may run after send() returned.
            buf = bytearray(65536)
            end = time.monotonic() + ARRIVAL_S
            while c.received < payload and time.monotonic() < end:
                rx.settimeout(max(0.001, end - time.monotonic()))
                try:
                    got = rx.recv_into(buf)
                except TimeoutError:
                    break
                c.reads += 1
                c.received += got
        after = _ip_counters(v6)
        c.counters = {k: after.get(k, 0) - before.get(k, 0) for k in IP_COUNTERS}
    return c


def measure_here(mtu: int) -> list[Case]:
    """The cases, in the current network namespace, whose `lo` must have MTU `mtu` and
    carry no other traffic (its counters are read as the experiment's own)."""
    fit = payload_limit(mtu)
    cases = [
        _case("fits", fit, mtu),
        _case("over", fit + 1, mtu),
        _case("largest", udp.udp_payload_limit(socket.AF_INET), mtu),
        _case("over_do", fit + 1, mtu, do=True),
        _case("fits_do", fit, mtu, do=True),
        # Up to 4 segments, as many as one send of at most 65,507 B can hold.
        _case("gso_fits", min(4, udp.udp_payload_limit(socket.AF_INET) // fit) * fit, mtu, gso=fit),
        _case("gso_over", 2 * (fit + 1), mtu, gso=fit + 1),
    ]
    fit6 = payload_limit(mtu, v6=True)
    v6_cases = (
        ("v6_fits", fit6, False),
        ("v6_over", fit6 + 1, False),
        ("v6_largest", udp.udp_payload_limit(socket.AF_INET6), False),
        ("v6_over_do", fit6 + 1, True),
    )
    missing = _no_ipv6(mtu)
    for key, payload, do in v6_cases:
        if missing is not None:
            cases.append(Case(key, payload, "?", family="IPv6", unavailable=missing))
        else:
            cases.append(_case(key, payload, mtu, do=do, v6=True))
    return cases


def _no_ipv6(mtu: int) -> str | None:
    """Why the IPv6 cases cannot run here, or None. Tried, not assumed: ::1 must be
    bindable on lo. Below an MTU of 1,280 (IPv6's minimum, RFC 8200) the kernel takes
    IPv6 off the link (addrconf_notify() on NETDEV_CHANGEMTU), so the bind fails."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError as exc:
        floor = f"; IPv6 needs an MTU of at least 1,280 B and lo has {mtu:,}" if mtu < 1280 else ""
        return f"no IPv6 loopback in the namespace (bind ::1: {oserror_name(exc)}){floor}"
    return None


def _read_no_pmtu_disc() -> int | None:
    try:
        return int(NO_PMTU_DISC.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def in_namespace(mtu: int, no_pmtu_disc: int | None = None) -> Result:
    """Run in a fresh namespace: lo gets `mtu` (and ip_no_pmtu_disc a value, if given;
    it is per network namespace), then the cases."""
    netif.set_link("lo", mtu=mtu)
    if no_pmtu_disc is not None:
        NO_PMTU_DISC.write_text(f"{no_pmtu_disc}\n")
    return Result(mtu, _read_no_pmtu_disc(), measure_here(mtu))


def _host_ip_mtu(lab: Lab) -> int | None:
    """IP_MTU of a UDP socket connected over the host's IPv4 loopback (the experiment is
    IPv4 whatever --host is); None where that cannot be read."""
    s = lab.open_socket(socket.SOCK_DGRAM, family=socket.AF_INET)
    try:
        s.connect(("127.0.0.1", 9))  # connect() on UDP sends nothing; it picks a route
        return int(s.getsockopt(socket.IPPROTO_IP, IP_MTU))
    except OSError:
        return None
    finally:
        lab.close(s)


@dataclass
class Outcome:
    result: Result | None
    unavailable: str | None
    host_ip_mtu: int | None
    lo_mtu: int | None = None


def measure(lab: Lab, p: Params) -> Outcome | None:
    if p.mtu == 0:
        return None
    host_mtu = _host_ip_mtu(lab)
    try:
        lo_mtu: int | None = netif.link_mtu("lo")
    except OSError:
        lo_mtu = None
    t0 = time.monotonic()
    try:
        res = run_in_new_netns(
            lambda: in_namespace(p.mtu),
            timeout=lab.deadline.timeout(CHILD_CAP_S, "running the path-MTU namespace"),
        )
    except NetnsUnavailable as exc:
        return Outcome(None, f"no private network namespace: {exc}", host_mtu, lo_mtu)
    except NetnsTimeout:
        lab.deadline.check("running the path-MTU namespace")
        return Outcome(
            None,
            f"the namespace child did not finish within {time.monotonic() - t0:.1f} s",
            host_mtu,
            lo_mtu,
        )
    except OSError as exc:
        if exc.errno in (errno.EINVAL, errno.EPERM):
            return Outcome(
                None, f"cannot set lo's MTU to {p.mtu}: {oserror_name(exc)}", host_mtu, lo_mtu
            )
        raise
    return Outcome(res, None, host_mtu, lo_mtu)


LABELS = {
    "fits": "MTU - 28, default",
    "over": "one byte more",
    "largest": "largest datagram",
    "over_do": "one more, DO",
    "fits_do": "MTU - 28, DO",
    "gso_fits": "gso_size fits",
    "gso_over": "gso_size 1 over",
    "v6_fits": "MTU - 48, default",
    "v6_over": "one byte more",
    "v6_largest": "largest datagram",
    "v6_over_do": "one more, DO",
}


def add_table(report: Report, p: Params, out: Outcome | None) -> None:
    if out is None:
        return
    t = report.table(
        "mtu",
        f"A path with MTU {p.mtu:,} (lo in a private network namespace; Ip counters of "
        "that namespace): fragments, IP_PMTUDISC_DO, UDP_SEGMENT",
        [
            col("case"),
            col("family"),
            col("what"),
            col("payload", "payload", "B"),
            col("pmtudisc", "PMTU disc."),
            col("gso_size", "UDP_SEGMENT", "B"),
            col("send_outcome", "send()"),
            col("reads", "reads"),
            col("received", "received", "B"),
            col("ip_mtu", "IP_MTU / IPV6_MTU", "B"),
            # Exact: the namespace is private, nothing but this case moves them.
            col("frag_creates", "FragCreates Δ"),
            col("frag_oks", "FragOKs Δ"),
            col("reasm_oks", "ReasmOKs Δ"),
        ],
        keys=["case"],
    )
    if out.result is None:
        na = NA(out.unavailable or "not measured")
        for key, what in LABELS.items():
            fam = "IPv6" if key.startswith("v6_") else "IPv4"
            t.add(key, fam, what, na, na, na, na, na, na, na, na, na, na)
        return
    for c in out.result.cases:
        if c.unavailable is not None:
            na = NA(c.unavailable)
            t.add(c.key, c.family, LABELS[c.key], c.payload, na, na, na, na, na, na, na, na, na)
            continue
        gso: Cell = c.gso_size if c.gso_size is not None else NA("UDP_SEGMENT not set")
        t.add(
            c.key,
            c.family,
            LABELS[c.key],
            c.payload,
            c.pmtudisc,
            gso,
            c.send_outcome,
            c.reads,
            c.received,
            c.ip_mtu,
            c.counters.get("FragCreates", 0),
            c.counters.get("FragOKs", 0),
            c.counters.get("ReasmOKs", 0),
        )


def _default_text(no_pmtu_disc: int | None, seen: str) -> str:
    """Where the socket's mode came from: inet_create()'s rule applied to the namespace's
    ip_no_pmtu_disc, checked against what getsockopt() read."""
    if no_pmtu_disc is None:
        return "a new socket's default; net.ipv4.ip_no_pmtu_disc could not be read"
    rule = default_pmtudisc(no_pmtu_disc)
    agree = "" if rule == seen else f", yet the socket read {seen}"
    return f"a new socket's default, {rule} with net.ipv4.ip_no_pmtu_disc = {no_pmtu_disc}{agree}"


def _how_sent(c: Case) -> str:
    frags = c.counters.get("FragCreates", 0)
    if c.send_outcome != "ok":
        return f"was refused ({c.send_outcome})"
    if frags == 0:
        return "left unfragmented (FragCreates +0)"
    return f"was sent as {frags} fragments (FragCreates +{frags})"


def add_findings(report: Report, p: Params, out: Outcome | None) -> list[str]:
    if out is None:
        return []
    host = ""
    if out.host_ip_mtu is not None:
        lo = f" (lo MTU {n(out.lo_mtu)})" if out.lo_mtu is not None else ""
        host = (
            f"On this host's loopback{lo}, IP_MTU reads {n(out.host_ip_mtu)} B (ipv4_mtu() in "
            "net/ipv4/route.c caps a route's MTU at IP_MAX_MTU): "
            + (
                "every IPv4 datagram (at most 65,535 B with its header) fits, so nothing "
                "is ever fragmented there; that is what loopback hides."
                if out.host_ip_mtu >= 0xFFFF
                else "datagrams above it are fragmented there too."
            )
        )
    if out.result is None:
        report.findings.append(
            (host + " " if host else "") + f"The MTU-{n(p.mtu)} path was not measured: "
            f"{out.unavailable}."
        )
        return []
    c = {x.key: x for x in out.result.cases}
    fit, over, big, do, fdo = c["fits"], c["over"], c["largest"], c["over_do"], c["fits_do"]
    f = report.findings
    if host:
        f.append(host)
    f.append(
        f"On an IPv4 path with MTU {n(p.mtu)} (IP_MTU read {n(fit.ip_mtu or 0)} B): "
        f"{n(fit.payload)} B "
        f"{_how_sent(fit)}; {n(over.payload)} B with IP_MTU_DISCOVER {over.pmtudisc} "
        f"({_default_text(out.result.no_pmtu_disc, over.pmtudisc)}) {_how_sent(over)} "
        f"(the kernel's rule gives "
        f"{expected_fragments(over.payload, p.mtu)}), reassembled (ReasmOKs "
        f"+{over.counters['ReasmOKs']}) and read as {plural(over.reads, 'datagram')} of "
        f"{n(over.received)} B; {n(big.payload)} B {_how_sent(big)} (rule: "
        f"{expected_fragments(big.payload, p.mtu)})"
        + (
            f" and was read as {plural(big.reads, 'datagram')} of {n(big.received)} B: one "
            "send, one read, however many fragments."
            if big.send_outcome == "ok"
            else "."
        )
    )
    f.append(
        f"With IP_PMTUDISC_DO, {n(do.payload)} B raised {do.send_outcome} at send() and "
        f"nothing left (FragCreates +{do.counters['FragCreates']}), while {n(fdo.payload)} B "
        f"went through ({fdo.send_outcome}, {fdo.reads} read): DO caps a datagram at the path "
        f"MTU less 28 B of headers, the default fragments instead."
    )
    v6 = [c[k] for k in ("v6_fits", "v6_over", "v6_largest", "v6_over_do")]
    if v6[0].unavailable is None:
        f6, o6, b6, d6 = v6
        f.append(
            f"Over IPv6 on the same path (IPV6_MTU {n(f6.ip_mtu or 0)} B): {n(f6.payload)} B "
            f"{_how_sent(f6)}; {n(o6.payload)} B with IPV6_MTU_DISCOVER {o6.pmtudisc} "
            f"{_how_sent(o6)} (rule: {expected_fragments(o6.payload, p.mtu, v6=True)}, each "
            f"fragment also carrying an 8-byte fragment header), read as "
            f"{plural(o6.reads, 'datagram')} of {n(o6.received)} B; {n(b6.payload)} B "
            f"{_how_sent(b6)} (rule: {expected_fragments(b6.payload, p.mtu, v6=True)}); with "
            f"IPV6_PMTUDISC_DO, {n(d6.payload)} B raised {d6.send_outcome}. Only the sender "
            "fragments IPv6 (RFC 8200): a router drops what does not fit and answers "
            "Packet Too Big."
        )
    else:
        f.append(f"The IPv6 cases did not run: {v6[0].unavailable}.")
    g, go = c["gso_fits"], c["gso_over"]
    f.append(
        f"UDP_SEGMENT {n(g.gso_size or 0)}: one send() of {n(g.payload)} B arrived as "
        f"{g.reads} datagrams ({n(g.received)} B) with FragCreates +{g.counters['FragCreates']}"
        f" (segments are whole datagrams, not fragments); gso_size {n(go.gso_size or 0)}, "
        f"one byte over the path's limit, was refused with {go.send_outcome}."
    )
    return [
        f"MTU {n(p.mtu)}: {n(over.payload)} B went as {over.counters['FragCreates']} "
        f"fragments, IP_PMTUDISC_DO gave {do.send_outcome}"
    ]
