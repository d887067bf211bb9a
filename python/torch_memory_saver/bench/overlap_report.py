"""The overlap part in the report: what a non-blocking resume costs the caller, and how much of it compute hides.

Every quantity is computed per cycle, then given as cycle 1 (the single shot
of a fresh process) and as the median over all cycles, against the floors the
worker measured itself. Pure data in and out (no torch, no GPU).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional

from .constants import gbps
from .metrics import JudgedPart, MetricTarget, over_cycles, ratio, target
from .records import GapWork, OverlapCycle, OverlapItems, WorkerResult
from .runner import first_error

TARGETS: Dict[str, MetricTarget] = {
    # The call gives the thread back long before the restore is done.
    "return_ratio": target("<=", 0.10, "<= 0.10"),
    # Nothing but the copies between the call and the restore done: near the link's rate.
    "restore_h2d": target(">=", 0.85, ">= 0.85"),
    # The host backup goes back no later than a blocking resume would have given it back.
    "rss_back_ratio": target("<=", 1.0, "<= 1.00"),
    # Most of what the restore costs a blocking caller disappears behind the compute step.
    "hidden": target(">=", 0.8, ">= 80 %"),
}


@dataclass
class OverlapReport(JudgedPart):
    cycles: int = 0
    compute: Optional[GapWork] = None


def hidden_fraction(alone: Optional[float], blocking: Optional[float],
                    overlapped: Optional[float]) -> Optional[float]:
    """The share of the restore's cost that the compute hid: (b - c) / (b - a), with (a) the compute step alone,
    (b) after a blocking resume and (c) behind a non-blocking one; None where unknown or where the blocking
    resume added nothing to hide."""
    if alone is None or blocking is None or overlapped is None or blocking <= alone:
        return None
    return (blocking - overlapped) / (blocking - alone)


def _notes(items: OverlapItems, cycles: List[OverlapCycle]) -> List[str]:
    notes = []
    compute = items.compute
    if compute is not None:
        notes.append(f"compute step: {compute.matmuls} bf16 matmuls {compute.matrix}x{compute.matrix}")
    late = [c.index for c in cycles if c.rss_back_timed_out]
    if late:
        notes.append(f"the host backup was not back within {items.rss_back_timeout_s or 0:g} s in cycle(s) {late}: "
                     f"their times are lower bounds")
    unread = [c.index for c in cycles if c.returned_seconds is not None and c.rss_back_seconds is None]
    if unread:
        notes.append(f"RSS could not be read in cycle(s) {unread}")
    wrong = [c.index for c in cycles if c.contents_exact is False]
    if wrong:
        notes.append(f"DATA MISMATCH in cycle(s) {wrong}")
    return notes


def build_overlap(worker: Optional[WorkerResult]) -> OverlapReport:
    """The overlap part's metrics from its worker's result (an error where it has none)."""
    items: Optional[OverlapItems] = worker.items if worker is not None and not worker.skipped else None
    cycles = items.cycles if items else []
    layout = items.layout if items else None
    payload = layout.bytes if layout else None
    report = OverlapReport(cycles=len(cycles), compute=items.compute if items else None,
                           bytes=payload, tensors=layout.count if layout else None)
    if items is not None:
        report.d2h_gbps = gbps(items.d2h.bytes, items.d2h.seconds) if items.d2h else None
        report.h2d_gbps = gbps(items.h2d.bytes, items.h2d.seconds) if items.h2d else None
        report.note = "; ".join(_notes(items, cycles))
    blocking = [c.blocking_seconds for c in cycles]
    returned = [c.returned_seconds for c in cycles]
    restore = [c.restore_seconds for c in cycles]
    rss_back = [c.rss_back_seconds for c in cycles]
    restore_rate = [gbps(payload, c.restore_seconds) for c in cycles]
    report.metrics = [
        over_cycles("blocking_resume", "blocking resume(tag), until it returned", "ms", blocking),
        over_cycles("nonblocking_return", "resume(tag, non_blocking=True), until it returned", "ms", returned),
        over_cycles("return_ratio", "non-blocking return / blocking resume", "x",
                    [ratio(r, b) for r, b in zip(returned, blocking)], TARGETS["return_ratio"]),
        over_cycles("restore", "non-blocking restore done (GPU events, call to wait(stream))", "ms", restore),
        over_cycles("restore_gbps", "non-blocking restore rate", "GB/s", restore_rate),
        over_cycles("restore_h2d", "non-blocking restore rate / pinned H2D", "x",
                    [ratio(r, report.h2d_gbps) for r in restore_rate], TARGETS["restore_h2d"]),
        over_cycles("rss_back", "host backup given back (RSS), from the call", "ms", rss_back),
        over_cycles("rss_back_ratio", "host backup given back / blocking resume", "x",
                    [ratio(r, b) for r, b in zip(rss_back, blocking)], TARGETS["rss_back_ratio"]),
        over_cycles("compute", "(a) compute step alone", "ms", [c.compute_seconds for c in cycles]),
        over_cycles("blocking_compute", "(b) blocking resume, then the compute step", "ms",
                    [c.blocking_compute_seconds for c in cycles]),
        over_cycles("overlapped_compute", "(c) non-blocking resume behind the compute step", "ms",
                    [c.overlapped_compute_seconds for c in cycles]),
        over_cycles("hidden", "share of the restore hidden: (b - c) / (b - a)", "%",
                    [hidden_fraction(c.compute_seconds, c.blocking_compute_seconds, c.overlapped_compute_seconds)
                     for c in cycles], TARGETS["hidden"]),
    ]
    report.judge()
    report.error = first_error(worker)
    if report.error is None and not cycles:
        report.error = "not measured"
    return report
