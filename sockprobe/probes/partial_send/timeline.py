"""The timeline of calls each scenario made (table `timeline`, chart `accepted_per_call`)
and what the calls said: how much each send() took, when EAGAIN and timeouts came.

The `t` column is when the call returned, measured from the scenario's first call: it
measures the scheduler and the peer's delayed-ACK timer as much as the socket layer, so
it is context, never compared between runs.
"""

from __future__ import annotations

from sockprobe.probes.partial_send.params import PLACEMENTS, Params
from sockprobe.probes.partial_send.scenarios import NO_COUNT, PLACEMENT_TEXT, Scenario
from sockprobe.probes.partial_send.scenarios import na_ioctl as _na
from sockprobe.probes.partial_send.scenarios import thousands as _n
from sockprobe.report import CONTEXT, NA, VOLATILE, Bars, Report, col


def _kib(v: int) -> str:
    return f"{v / 1024:g} KiB" if v % 1024 == 0 else f"{v:,} B"


def table(report: Report, p: Params, results: list[Scenario]) -> None:
    t = report.table(
        "timeline",
        f"Timeline: {p.size:,} B offered, receiver not reading (one row per call; a run of "
        "EAGAINs is one row)",
        [
            col("placement", "SO_RCVBUF set on"),
            col("mode"),
            col("call"),
            col("t_ms", "t", "ms", CONTEXT),
            col("requested", unit="B", kind=VOLATILE),
            col("accepted", unit="B", kind=VOLATILE),
            col("cumulative", unit="B", kind=VOLATILE),
            col("sender_outq", "sender SIOCOUTQ", "B", VOLATILE),
            col("receiver_inq", "receiver SIOCINQ", "B", VOLATILE),
            col("outcome", kind=VOLATILE),
            col("calls_in_row", "calls in row", "", VOLATILE),
        ],
        keys=["placement", "mode", "call"],
    )
    bars = Bars("accepted_per_call", "Bytes accepted per call (the timeline's accepted)", "B")
    for sc in results:
        for i, c in enumerate(sc.calls, 1):
            t.add(
                sc.placement,
                sc.mode,
                i,
                round(c.t_ms, 3),
                c.requested,
                NA(NO_COUNT) if c.accepted is None else c.accepted,
                NA(NO_COUNT) if c.cumulative is None else c.cumulative,
                _na(c.outq),
                _na(c.inq),
                c.outcome,
                c.retries,
            )
            if c.accepted is not None:
                bars.add(f"{sc.placement}/{sc.mode} #{i}", ("accepted", c.accepted))
    if bars.bars:
        report.charts.append(bars)


def nonblocking_story(sc: Scenario) -> str:
    """'32,768 + 8,192 B, then EAGAIN; 16,384 B more at +42 ms': the calls that accepted
    bytes, grouped into bursts separated by runs of EAGAIN."""
    bursts: list[tuple[float, list[int]]] = []
    after_eagain = True
    for c in sc.calls:
        if c.accepted:
            if after_eagain:
                bursts.append((c.t_ms, []))
            bursts[-1][1].append(c.accepted)
            after_eagain = False
        else:
            after_eagain = True
    parts: list[str] = []
    for i, (t_ms, sizes) in enumerate(bursts):
        amount = " + ".join(_n(x) for x in sizes) + " B"
        parts.append(amount if i == 0 else f"{amount} more at +{t_ms:.0f} ms")
    return ", then EAGAIN; ".join(parts)


def findings(p: Params, results: list[Scenario]) -> list[str]:
    out: list[str] = []
    by = {(sc.placement, sc.mode): sc for sc in results}
    for pl in PLACEMENTS:
        where = PLACEMENT_TEXT[pl]
        nb = by.get((pl, "nonblocking"))
        if nb is not None and nb.accepted is not None:
            accepting = [c for c in nb.calls if c.accepted]
            if nb.accepted >= p.size:
                out.append(
                    f"{where}: non-blocking send() accepted all {_n(p.size)} B in "
                    f"{len(accepting)} call(s); the buffers were big enough."
                )
            else:
                out.append(
                    f"{where}: non-blocking send() accepted {_n(nb.accepted)} of {_n(p.size)} "
                    f"bytes in {len(accepting)} call(s) before the buffers (sndbuf "
                    f"{_kib(nb.sndbuf)} + rcvbuf {_kib(nb.rcvbuf)} effective) were full: "
                    f"{nonblocking_story(nb)}, then EAGAIN and nothing more for "
                    f"{p.quiet_period:g} s."
                )
        to = by.get((pl, "timeout"))
        if to is not None and to.calls:
            returned = [_n(c.accepted) for c in to.calls if c.accepted]
            last = to.calls[-1]
            end = (
                f"then raised TimeoutError after {last.waited_s:.2f} s"
                if last.outcome == "TimeoutError" and last.waited_s is not None
                else "and that was everything"
            )
            out.append(
                f"{where}: send() with a {p.op_timeout:g} s timeout returned "
                + (", then ".join(returned) if returned else "nothing")
                + f", {end}."
            )
    return out
