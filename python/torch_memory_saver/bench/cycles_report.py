"""The cycles part in the report: first cycle apart from the steady state, as ratios to the same run's floors.

For each (host kind, layout) worker: pause and resume rows with cycle 1,
and the median and the worst of cycles 2..N, in GB/s and as a ratio to the
pinned D2H (pause) or H2D (resume) floor, pauses also to the cold-host floor
(fresh pinned allocation then D2H, one after the other); and a host memory
row: RssAnon when each resume returned, and about a second later, minus
RssAnon before the first pause. Pure data in and out (no torch, no GPU).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

from .records import BenchConfig, Cycle, CyclesItems, WorkerResult
from .runner import first_error

CYCLE_OPS = ("pause", "resume")


@dataclass
class CycleFloors:
    """The floors of the same run the cycles are compared with, GB/s."""

    d2h_gbps: Optional[float] = None
    h2d_gbps: Optional[float] = None
    cold_host_gbps: Optional[float] = None  # fresh pinned allocation then D2H (derived)


@dataclass
class Spread:
    """One quantity over a worker's cycles: cycle 1, and the median and the worst of cycles 2..N."""

    first: Optional[float] = None
    median: Optional[float] = None
    worst: Optional[float] = None
    steady_cycles: int = 0


def spread(values: List[Optional[float]], worst: Callable[[List[float]], float]) -> Spread:
    """The Spread of per-cycle `values` (cycle 1 first); `worst` picks the worst of the steady ones (min or max)."""
    steady = [v for v in values[1:] if v is not None]
    return Spread(first=values[0] if values else None, median=statistics.median(steady) if steady else None,
                  worst=worst(steady) if steady else None, steady_cycles=len(steady))


def _scaled(values: Spread, floor: Optional[float]) -> Spread:
    """`values` / `floor` (None where either is unknown)."""
    if not floor:
        return Spread(steady_cycles=values.steady_cycles)
    first, median, worst = (None if v is None else v / floor for v in (values.first, values.median, values.worst))
    return Spread(first=first, median=median, worst=worst, steady_cycles=values.steady_cycles)


@dataclass
class CycleRow:
    """Pause or resume of one (host kind, layout) over its cycles."""

    operation: str  # "pause" or "resume"
    host: str
    layout: str  # the tensor count, or the model's name
    tensors: Optional[int] = None
    engine_allocations: Optional[int] = None
    bytes: Optional[int] = None
    cycles: int = 0  # cycles with this operation measured
    seconds: Spread = field(default_factory=Spread)  # worst: the slowest
    gbps: Spread = field(default_factory=Spread)  # worst: the lowest
    floor: str = ""
    floor_gbps: Optional[float] = None
    ratio: Spread = field(default_factory=Spread)  # library GB/s / floor GB/s
    cold_floor_gbps: Optional[float] = None  # pauses: the cold-host floor
    cold_ratio: Spread = field(default_factory=Spread)
    gap_seconds: Spread = field(default_factory=Spread)  # the measured gap after this operation
    note: str = ""
    error: Optional[str] = None


@dataclass
class CycleRss:
    """RssAnon of one cycles worker, minus RssAnon before its first pause (bytes; worst: the largest)."""

    host: str
    layout: str
    bytes: Optional[int] = None
    retain: bool = False
    before_first_pause: Optional[int] = None
    at_return: Spread = field(default_factory=Spread)  # right when resume returned
    later: Spread = field(default_factory=Spread)  # about rss_later_s after, never after the next pause began
    later_seconds: Spread = field(default_factory=Spread)  # when the later reading was taken; worst: the soonest
    note: str = ""


def _values(cycles: List[Cycle], name: str) -> List[Optional[float]]:
    return [getattr(c, name) for c in cycles]


def _delta(cycles: List[Cycle], name: str, before: Optional[int]) -> List[Optional[float]]:
    return [None if before is None or getattr(c, name) is None else float(getattr(c, name) - before)
            for c in cycles]


def _rows(kind: str, label: str, worker: Optional[WorkerResult], floors: CycleFloors) -> List[CycleRow]:
    items: Optional[CyclesItems] = worker.items if worker is not None and not worker.skipped else None
    cycles = items.cycles if items else []
    layout = items.layout if items else None
    engine = worker.engine_after_alloc if worker else None
    gap = items.gap if items else None
    rows = []
    for op in CYCLE_OPS:
        measured = [c for c in cycles if getattr(c, f"{op}_seconds") is not None]
        floor_name, floor = ("pinned D2H", floors.d2h_gbps) if op == "pause" else ("pinned H2D", floors.h2d_gbps)
        rates = spread(_values(measured, f"{op}_gbps"), min)
        notes = []
        if gap is not None:
            notes.append(f"gap: {gap.matmuls} bf16 matmuls {gap.matrix}x{gap.matrix}" if gap.matmuls else "no gap")
        wrong = [c.index for c in cycles if c.contents_exact is False]
        if wrong:
            notes.append(f"DATA MISMATCH after cycle(s) {wrong}")
        lagging = [c.index for c in measured
                   if (getattr(c, f"{op}_seconds") or 0) - (getattr(c, f"{op}_returned_seconds") or 0) > 0.001]
        if lagging:
            notes.append(f"returned over 1 ms before the device was idle in cycle(s) {lagging}")
        error = first_error(worker)  # the step where the loop stopped, if it did
        if error is None and not measured:
            error = "not measured"
        rows.append(CycleRow(
            operation=op, host=kind, layout=label, tensors=layout.tensors if layout else None,
            engine_allocations=engine.allocations if engine else None, bytes=layout.bytes if layout else None,
            cycles=len(measured), seconds=spread(_values(measured, f"{op}_seconds"), max), gbps=rates,
            floor=floor_name, floor_gbps=floor, ratio=_scaled(rates, floor),
            cold_floor_gbps=floors.cold_host_gbps if op == "pause" else None,
            cold_ratio=_scaled(rates, floors.cold_host_gbps if op == "pause" else None),
            gap_seconds=spread(_values(measured, f"gap_after_{op}_seconds"), max),
            note="; ".join(notes), error=error))
    return rows


def _rss(kind: str, label: str, worker: Optional[WorkerResult]) -> Optional[CycleRss]:
    items: Optional[CyclesItems] = worker.items if worker is not None and not worker.skipped else None
    if items is None or not items.cycles:
        return None
    cycles, before = items.cycles, items.rss_anon_before_first_pause
    layout = items.layout
    entry = CycleRss(host=kind, layout=label, bytes=layout.bytes if layout else None,
                     retain=bool(layout and layout.retain), before_first_pause=before,
                     at_return=spread(_delta(cycles, "rss_anon_at_resume_return", before), max),
                     later=spread(_delta(cycles, "rss_anon_later", before), max),
                     later_seconds=spread(_values(cycles, "rss_anon_later_seconds"), min))
    if items.rss_later_s:
        early = [c.index for c in cycles if c.rss_anon_later_seconds is not None
                 and c.rss_anon_later_seconds < items.rss_later_s - 0.01]
        if early:
            entry.note = (f"the later reading came before {items.rss_later_s:g} s in cycle(s) {early}: the next "
                          f"pause began sooner")
    return entry


def build_cycles(config: BenchConfig, floors: CycleFloors,
                 workers: Dict[str, WorkerResult]) -> Tuple[List[CycleRow], List[CycleRss]]:
    """The cycles rows and host memory rows of every (host kind, layout) of the configuration."""
    rows: List[CycleRow] = []
    rss: List[CycleRss] = []
    for kind in config.host_kinds:
        for label in config.cycle_labels():
            worker = workers.get(f"cycles_{kind}_{label}")
            rows += _rows(kind, label, worker, floors)
            entry = _rss(kind, label, worker)
            if entry is not None:
                rss.append(entry)
    return rows, rss
