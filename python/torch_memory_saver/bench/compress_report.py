"""The compress part in the report: compressed cold pauses next to plain ones and the link, and the host bytes saved.

The single shot is the process's first pause, of the compressed tag (the
plain tag has none: its lines give only the median); medians are over the
rounds that follow. Rates are of uncompressed bytes, against the floors the
worker measured itself. Pure data in and out (no torch, no GPU).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional

from .constants import gbps
from .metrics import JudgedPart, MetricTarget, metric, ratio, target
from .metrics import median as median_of
from .records import CompressItems, CompressRound, WorkerResult
from .runner import first_error

TARGETS: Dict[str, MetricTarget] = {
    # The codec's first use in a process costs little more than its later ones.
    "z_first_vs_later": target("<=", 1.2, "<= 1.2"),
    # Compressing on the GPU keeps a cold pause near the link's rate.
    "z_pause_d2h": target(">=", 0.6, ">= 0.6"),
    # Fewer bytes to copy and to fault in: a compressed cold pause is no slower than a plain one.
    "z_vs_plain": target(">=", 1.0, ">= 1.0"),
}


@dataclass
class CompressReport(JudgedPart):
    rounds: int = 0


def _notes(rounds: List[CompressRound], first: Optional[CompressRound]) -> List[str]:
    wrong = [r.index for r in ([first] if first else []) + rounds if r.contents_exact is False]
    return [f"DATA MISMATCH after round(s) {wrong} (0: the first pause)"] if wrong else []


def build_compress(worker: Optional[WorkerResult]) -> CompressReport:
    """The compress part's metrics from its worker's result (an error where it has none)."""
    items: Optional[CompressItems] = worker.items if worker is not None and not worker.skipped else None
    rounds = items.rounds if items else []
    first = items.first if items else None
    layout = items.layout if items else None
    payload = layout.bytes if layout else None
    report = CompressReport(rounds=len(rounds), bytes=payload, tensors=layout.count if layout else None)
    if items is not None:
        report.d2h_gbps = gbps(items.d2h.bytes, items.d2h.seconds) if items.d2h else None
        report.h2d_gbps = gbps(items.h2d.bytes, items.h2d.seconds) if items.h2d else None
        report.note = "; ".join(_notes(rounds, first))

    def rate(seconds: Optional[float]) -> Optional[float]:
        return gbps(payload, seconds)

    def host(held: Optional[int]) -> Optional[float]:
        return ratio(None if held is None else float(held), payload)

    z_pause = [r.z_pause_seconds for r in rounds]
    plain_pause = [r.plain_pause_seconds for r in rounds]
    z_first = first.z_pause_seconds if first else None
    first_resume = first.z_resume_seconds if first else None
    d2h, h2d = report.d2h_gbps, report.h2d_gbps
    report.metrics = [
        metric("z_pause", "compressed pause (cold)", "ms", z_first, z_pause),
        metric("z_first_vs_later", "compressed pause: the process's first / median of the rounds", "x",
               ratio(z_first, median_of(z_pause)), [], TARGETS["z_first_vs_later"]),
        metric("z_pause_gbps", "compressed pause rate, uncompressed bytes", "GB/s", rate(z_first),
               [rate(s) for s in z_pause]),
        metric("z_pause_d2h", "compressed pause rate / pinned D2H", "x", ratio(rate(z_first), d2h),
               [ratio(rate(s), d2h) for s in z_pause], TARGETS["z_pause_d2h"]),
        metric("plain_pause", "plain pause (cold)", "ms", None, plain_pause),
        metric("plain_pause_gbps", "plain pause rate", "GB/s", None, [rate(s) for s in plain_pause]),
        metric("z_vs_plain", "compressed / plain pause rate, same round", "x", None,
               [ratio(p, z) for p, z in zip(plain_pause, z_pause)], TARGETS["z_vs_plain"]),
        metric("z_resume_gbps", "compressed resume rate", "GB/s", rate(first_resume),
               [rate(r.z_resume_seconds) for r in rounds]),
        metric("z_resume_h2d", "compressed resume rate / pinned H2D", "x", ratio(rate(first_resume), h2d),
               [ratio(rate(r.z_resume_seconds), h2d) for r in rounds]),
        metric("plain_resume_gbps", "plain resume rate", "GB/s", None, [rate(r.plain_resume_seconds) for r in rounds]),
        metric("plain_resume_h2d", "plain resume rate / pinned H2D", "x", None,
               [ratio(rate(r.plain_resume_seconds), h2d) for r in rounds]),
        metric("z_host", "host bytes held while paused / uncompressed, compressed", "x",
               host(first.z_host_bytes if first else None), [host(r.z_host_bytes) for r in rounds]),
        metric("plain_host", "host bytes held while paused / uncompressed, plain", "x", None,
               [host(r.plain_host_bytes) for r in rounds]),
    ]
    report.judge()
    report.error = first_error(worker)
    if report.error is None and first is None:
        report.error = "not measured"
    return report
