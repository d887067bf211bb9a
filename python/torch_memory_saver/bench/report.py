"""The report: worker results turned into floors, one row per (operation, layout, host kind), and a verdict.

Pure data in, a :class:`Report` out (no torch, no GPU), so it is tested on the CPU.
"""

from __future__ import annotations

import datetime
import platform
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from .compress_report import CompressReport, build_compress
from .constants import GiB, MiB, gbps
from .cycles_report import CycleFloors, CycleRow, CycleRss, build_cycles
from .machine import GitInfo, HostInfo, git_info, host_info
from .overlap_report import OverlapReport, build_overlap
from .records import (
    BenchConfig,
    DiskFloor,
    EngineTagStats,
    LibraryInfo,
    RssTrace,
    Timing,
    VmmLoop,
    WorkerResult,
)
from .runner import Preflight, first_error

# Targets: operation -> (comparison, factor, floor key, text).
# "rate" targets compare GB/s (library / floor >= factor);
# "time" targets compare seconds (library / floor <= factor).
TARGETS: Dict[str, Tuple[str, float, str, str]] = {
    "pause_cold": (">=", 0.5, "d2h", ">= 0.5x pinned D2H"),
    "pause_cold_retain": (">=", 0.5, "d2h", ">= 0.5x pinned D2H"),
    "pause_warm": (">=", 0.9, "d2h", ">= 0.9x pinned D2H"),
    "resume_cold": (">=", 0.9, "h2d", ">= 0.9x pinned H2D"),
    "resume_retain_first": (">=", 0.9, "h2d", ">= 0.9x pinned H2D"),
    "resume_warm": (">=", 0.9, "h2d", ">= 0.9x pinned H2D"),
    "pause_nobackup": ("<=", 1.1, "vmm_unmap", "<= 1.1x raw VMM unmap+release"),
    "resume_nobackup": ("<=", 1.1, "vmm_map", "<= 1.1x raw VMM create+map+access"),
    "region_alloc": ("<=", 1.05, "torch_alloc", "<= 1.05x plain torch alloc"),
    "pause_disk": (">=", 0.8, "disk_write", ">= 0.8x best direct disk write"),
    "resume_disk": (">=", 0.8, "disk_read", ">= 0.8x best direct disk read"),
}

OP_LABELS = {
    "pause_nobackup": "pause, no backup",
    "resume_nobackup": "resume, no backup",
    "pause_cold": "pause + backup, cold (retain off)",
    "resume_cold": "resume + restore (retain off)",
    "pause_cold_retain": "pause + backup, cold (retain on, 1st)",
    "resume_retain_first": "resume + restore (retain on, 1st)",
    "pause_warm": "pause + backup, warm (retain on)",
    "resume_warm": "resume + restore (retain on, warm)",
    "region_alloc": "alloc in region",
    "pause_disk": "pause + disk backup (write)",
    "resume_disk": "resume + disk restore (read)",
}

BACKUP_OPS = ("pause_cold", "resume_cold", "pause_cold_retain", "resume_retain_first", "pause_warm", "resume_warm")


@dataclass
class FloorRef:
    name: str
    seconds: Optional[float]
    bytes: Optional[int]
    gbps: Optional[float]


@dataclass
class Target:
    comparison: str
    factor: float
    text: str


@dataclass
class Row:
    """One line of the library-vs-floor table."""

    operation: str
    label: str
    host: Optional[str]
    layout: Optional[int]
    engine_allocations: Optional[int]
    seconds: Optional[float]
    bytes: Optional[int]
    gbps: Optional[float]
    floor: FloorRef
    ratio: Optional[float]
    ratio_meaning: str
    target: Target
    passed: Optional[bool] = field(default=None, metadata={"json": "pass"})
    note: str = ""
    error: Optional[str] = None


@dataclass
class RateFloor:
    """A copy or allocation floor with its rate."""

    seconds: Optional[float]
    bytes: Optional[int]
    gbps: Optional[float]
    all_seconds: Optional[List[float]] = None
    is_pinned: Optional[bool] = None
    note: Optional[str] = None


@dataclass
class ReportFloors:
    pinned_d2h: Optional[RateFloor] = None
    pinned_h2d: Optional[RateFloor] = None
    pinned_alloc: Optional[RateFloor] = None
    vmm: Dict[str, VmmLoop] = field(default_factory=dict)
    # Same copies with page-locked THP memory (the engine's kind of backup memory); not a target.
    registered_d2h: Optional[RateFloor] = None
    registered_h2d: Optional[RateFloor] = None
    granularity: Optional[int] = None
    cuda_driver_version: Optional[int] = None
    torch_alloc: Optional[Timing] = None
    disk: Optional[DiskFloor] = None
    cold_serial_bound_gbps: Optional[float] = None


@dataclass
class Summary:
    targets_judged: int
    targets_met: int
    rows_without_result: int


@dataclass
class Failure:
    worker: str
    item: Optional[str]
    error: str


@dataclass
class RssEntry(RssTrace):
    host_kind: str = ""
    layout: int = 0
    bytes: Optional[int] = None


@dataclass
class DeviceCard:
    device_index: Optional[int] = None
    device_name: Optional[str] = None
    device_total_memory: Optional[int] = None
    capability: Optional[str] = None
    cuda_visible_devices: Optional[str] = None


@dataclass
class Versions:
    torch: Optional[str]
    torch_cuda: Optional[str]
    cuda_driver: Optional[int]
    torch_memory_saver: Optional[str]
    python: str


@dataclass
class Report:
    """Everything results.json holds."""

    schema: int
    tool: str
    date: str
    wall_seconds: float
    device: DeviceCard
    versions: Versions
    library: LibraryInfo
    git: GitInfo
    host: HostInfo
    config: BenchConfig
    floors: ReportFloors
    rows: List[Row]
    summary: Summary
    rss: Dict[str, RssEntry]
    mismatches: List[str]
    correct: bool
    verifications: int
    failures: List[Failure]
    workers: Dict[str, WorkerResult]
    plot: str = ""
    cycles: List[CycleRow] = field(default_factory=list)
    cycle_rss: List[CycleRss] = field(default_factory=list)
    cycles_plot: str = ""
    skipped: Dict[str, str] = field(default_factory=dict)  # worker -> why it measured nothing
    overlap: Optional[OverlapReport] = None  # the overlap part, where it ran
    overlap_plot: str = ""
    compress: Optional[CompressReport] = None  # the compress part, where it ran
    compress_plot: str = ""


def make_row(op: str, host: Optional[str], layout: Optional[int], seconds: Optional[float], nbytes: Optional[int],
             floor_name: str, floor_seconds: Optional[float], floor_bytes: Optional[int],
             engine_allocations: Optional[int] = None, note: str = "", error: Optional[str] = None) -> Row:
    """A row judged against its target: ratio, pass, and why it has none."""
    comparison, factor, _, text = TARGETS[op]
    rate = gbps(nbytes, seconds)
    floor_rate = gbps(floor_bytes, floor_seconds)
    ratio = None
    if comparison == ">=" and rate is not None and floor_rate:
        ratio = rate / floor_rate
    elif comparison == "<=" and seconds is not None and floor_seconds:
        ratio = seconds / floor_seconds
    passed = None
    if ratio is not None:
        passed = ratio >= factor if comparison == ">=" else ratio <= factor
    if error is None and seconds is None:
        error = "not measured"
    elif error is None and ratio is None:
        note = (note + "; " if note else "") + f"floor '{floor_name}' missing"
    return Row(operation=op, label=OP_LABELS.get(op, op), host=host, layout=layout,
               engine_allocations=engine_allocations, seconds=seconds, bytes=nbytes, gbps=rate,
               floor=FloorRef(name=floor_name, seconds=floor_seconds, bytes=floor_bytes, gbps=floor_rate),
               ratio=ratio, ratio_meaning="library GB/s / floor GB/s" if comparison == ">=" else "library s / floor s",
               target=Target(comparison=comparison, factor=factor, text=text), passed=passed, note=note, error=error)


def _rate(timing: Optional[Timing]) -> Optional[RateFloor]:
    if timing is None:
        return None
    return RateFloor(seconds=timing.seconds, bytes=timing.bytes, gbps=gbps(timing.bytes, timing.seconds),
                     all_seconds=timing.all_seconds)


def _floors(workers: Dict[str, WorkerResult]) -> ReportFloors:
    floors_w = workers.get("floors")
    items = floors_w.items if floors_w else None
    floors = ReportFloors()
    if items is not None:
        floors.pinned_d2h, floors.pinned_h2d = _rate(items.d2h), _rate(items.h2d)
        if items.pinned_alloc is not None:
            a = items.pinned_alloc
            floors.pinned_alloc = RateFloor(seconds=a.seconds, bytes=a.bytes, gbps=gbps(a.bytes, a.seconds),
                                            is_pinned=a.is_pinned, note=a.note)
        registered = items.registered
        for direction in ("d2h", "h2d"):
            seconds = getattr(registered, f"{direction}_seconds") if registered else None
            if seconds:
                setattr(floors, f"registered_{direction}",
                        RateFloor(seconds=seconds, bytes=registered.bytes, gbps=gbps(registered.bytes, seconds),
                                  is_pinned=registered.is_pinned))
        floors.vmm, floors.granularity, floors.cuda_driver_version = items.vmm, items.granularity, items.driver_version
    alloc = workers.get("alloc")
    floors.torch_alloc = alloc.items.torch_alloc if alloc else None
    disk_floor = workers.get("disk_floor")
    floors.disk = disk_floor.items.disk if disk_floor else None
    if floors.pinned_d2h and floors.pinned_alloc and floors.pinned_alloc.gbps and floors.pinned_d2h.gbps:
        floors.cold_serial_bound_gbps = 1.0 / (1.0 / floors.pinned_alloc.gbps + 1.0 / floors.pinned_d2h.gbps)
    return floors


def _nobackup_rows(config: BenchConfig, floors: ReportFloors, nobackup: Optional[WorkerResult]) -> List[Row]:
    rows: List[Row] = []
    for count in config.layouts:
        layout = nobackup.items.get(f"n{count}") if nobackup else None
        engine = layout.engine if layout else EngineTagStats()
        floor = floors.vmm.get(str(count))
        matched = floors.vmm.get(f"engine-{count}")
        error = None if layout else first_error(nobackup, f"n{count}")
        same = layout.raw_same_process if layout else None
        for op, floor_key in (("pause_nobackup", "unmap_seconds"), ("resume_nobackup", "map_seconds")):
            seconds = (layout.pause_seconds if op == "pause_nobackup" else layout.resume_seconds) if layout else None
            same_seconds = getattr(same, floor_key) if same else None
            notes = []
            if engine.allocations is not None:
                notes.append(f"engine: {engine.allocations} allocations")
            # The floors process's loops, for comparison; the row's floor is the first one measured of:
            # same process, then the floors process with the tensor count.
            references = [(matched, "raw VMM with the engine's handle count, floors process")]
            if same_seconds:
                references.insert(0, (floor, f"raw VMM {count} handles, floors process"))
            for reference, what in references:
                reference_seconds = getattr(reference, floor_key) if reference else None
                if seconds is not None and reference_seconds:
                    notes.append(f"vs {what}: {seconds / reference_seconds:.2f}x")
            if same is not None and same_seconds:  # judged against the same-process loop
                floor_name = f"raw VMM {same.count} x {same.handle_bytes / MiB:g} MiB, same process"
                floor_seconds: Optional[float] = same_seconds
            else:
                floor_name, floor_seconds = f"raw VMM {count} handles", getattr(floor, floor_key) if floor else None
                if same is not None and same.error:
                    notes.append(f"same-process floor failed: {same.error}")
            nbytes = layout.bytes if layout else None
            rows.append(make_row(op, None, count, seconds, nbytes, floor_name, floor_seconds, nbytes,
                                 engine.allocations, "; ".join(notes), error))
    return rows


def _backup_rows(config: BenchConfig, floors: ReportFloors, workers: Dict[str, WorkerResult]) -> List[Row]:
    rows: List[Row] = []
    for kind in config.host_kinds:
        for count in config.layouts:
            worker = workers.get(f"backup_{kind}_{count}")
            engine_allocations = worker.engine_after_alloc.allocations if worker and worker.engine_after_alloc \
                else None
            for op in BACKUP_OPS:
                transition = getattr(worker.items, op) if worker else None
                direction = TARGETS[op][2]
                floor = floors.pinned_d2h if direction == "d2h" else floors.pinned_h2d
                notes = []
                if transition is not None:
                    lag = transition.seconds - transition.returned_seconds
                    if lag > 0.001:
                        notes.append(f"returned {lag * 1e3:.1f} ms before the device was idle")
                registered = getattr(floors, f"registered_{direction}")
                if transition is not None and transition.seconds and registered and registered.gbps:
                    rate = gbps(transition.bytes, transition.seconds) or 0.0
                    notes.append(f"{rate / registered.gbps:.2f}x registered-memory {direction.upper()} "
                                 f"({registered.gbps:.1f} GB/s)")
                error = None if transition else first_error(worker, op)
                rows.append(make_row(op, kind, count, transition.seconds if transition else None,
                                     transition.bytes if transition else None,
                                     "pinned D2H" if direction == "d2h" else "pinned H2D",
                                     floor.seconds if floor else None, floor.bytes if floor else None,
                                     engine_allocations, "; ".join(notes), error))
    return rows


def _disk_rows(config: BenchConfig, floors: ReportFloors, workers: Dict[str, WorkerResult]) -> List[Row]:
    rows: List[Row] = []
    disk = floors.disk
    floor_note = "; ".join(disk.notes) if disk else ""
    floor_error = None if disk else first_error(workers.get("disk_floor"), "disk_floor")
    for count in config.disk_layouts:
        worker = workers.get(f"disk_{count}")
        engine_allocations = worker.engine_after_alloc.allocations if worker and worker.engine_after_alloc else None
        for op, key in (("pause_disk", "write"), ("resume_disk", "read")):
            variant = getattr(disk, f"{key}_variant") if disk else None
            floor_name = f"best direct disk {key}" + (f" ({variant})" if variant else "")
            transition = getattr(worker.items, op) if worker else None
            notes = []
            if transition is not None:
                if op == "pause_disk":
                    notes.append(f"{transition.files} file(s) of {(transition.file_bytes or 0) / GiB:.2f} GiB on disk")
                else:
                    notes.append("no backup file left" if not transition.files_left else
                                 f"{len(transition.files_left)} backup file(s) LEFT")
                    if transition.closed_seconds is not None:
                        notes.append(f"files closed {transition.closed_seconds * 1e3:.0f} ms after the return")
                lag = transition.seconds - transition.returned_seconds
                if lag > 0.001:
                    notes.append(f"returned {lag * 1e3:.1f} ms before the device was idle")
            if floor_note:
                notes.append(f"floor: {floor_note}")
            if not disk and floor_error:
                notes.append(f"floor failed: {floor_error}")
            error = None if transition else first_error(worker, op)
            rows.append(make_row(op, "disk", count, transition.seconds if transition else None,
                                 transition.bytes if transition else None, floor_name,
                                 getattr(disk, f"{key}_seconds") if disk else None, disk.bytes if disk else None,
                                 engine_allocations, "; ".join(notes), error))
    return rows


def _alloc_row(config: BenchConfig, alloc: Optional[WorkerResult]) -> Row:
    region = alloc.items.region_alloc if alloc else None
    plain = alloc.items.torch_alloc if alloc else None
    engine_allocs = None
    if region is not None and region.engine:
        engine_allocs = max((e.allocations or 0) for e in region.engine) or None
    seconds = region.seconds if region else None
    error = None if seconds is not None else first_error(alloc, "region_alloc_0")
    size = f"{config.alloc_count} x {config.alloc_bytes / MiB:g} MiB"
    return make_row("region_alloc", None, config.alloc_count, seconds, region.bytes if region else None,
                    f"torch alloc {size}", plain.seconds if plain else None, plain.bytes if plain else None,
                    engine_allocs, f"{size} tensors", error)


def build_report(config: BenchConfig, pre: Preflight, workers: Dict[str, WorkerResult],
                 wall_seconds: float) -> Report:
    """The report of a run from its workers' results (no torch, no GPU)."""
    floors = _floors(workers)
    env = next((w.env for w in workers.values() if w.env), None)
    library = next((w.library for w in workers.values() if w.library), None)

    rows: List[Row] = []
    if "nobackup" in config.parts:
        rows += _nobackup_rows(config, floors, workers.get("nobackup"))
    if "backup" in config.parts:
        rows += _backup_rows(config, floors, workers)
    if "disk" in config.parts:
        rows += _disk_rows(config, floors, workers)
    if "alloc" in config.parts:
        rows.append(_alloc_row(config, workers.get("alloc")))
    cycle_rows: List[CycleRow] = []
    cycle_rss: List[CycleRss] = []
    if "cycles" in config.parts:
        cycle_floors = CycleFloors(d2h_gbps=floors.pinned_d2h.gbps if floors.pinned_d2h else None,
                                   h2d_gbps=floors.pinned_h2d.gbps if floors.pinned_h2d else None,
                                   cold_host_gbps=floors.cold_serial_bound_gbps)
        cycle_rows, cycle_rss = build_cycles(config, cycle_floors, workers)

    mismatches = [m for w in workers.values() for m in w.mismatches]
    failures = []
    for name, worker in workers.items():
        if worker.fatal:
            failures.append(Failure(worker=name, item=None, error=worker.fatal))
        for item, error in worker.errors.items():
            failures.append(Failure(worker=name, item=item, error=error))
    rss = {}
    for name, worker in workers.items():
        if name.startswith("backup_") and worker.rss is not None:
            layout = worker.items.layout
            rss[name] = RssEntry(**vars(worker.rss), host_kind=name.split("_")[1], layout=int(name.split("_")[2]),
                                 bytes=layout.bytes if layout else None)
    judged = [r for r in rows if r.passed is not None]
    return Report(
        schema=1,
        tool="python -m torch_memory_saver bench",
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        wall_seconds=wall_seconds,
        device=DeviceCard(**{k: getattr(env, k) for k in ("device_index", "device_name", "device_total_memory",
                                                          "capability", "cuda_visible_devices")}) if env
        else DeviceCard(),
        versions=Versions(torch=(env.torch if env else None) or pre.torch,
                          torch_cuda=(env.torch_cuda if env else None) or pre.torch_cuda,
                          cuda_driver=floors.cuda_driver_version,
                          torch_memory_saver=(library.version if library else None) or pre.library_version,
                          python=platform.python_version()),
        library=library or LibraryInfo(path=pre.library_path),
        git=git_info(),
        host=host_info(),
        config=config,
        floors=floors,
        rows=rows,
        summary=Summary(targets_judged=len(judged), targets_met=sum(1 for r in judged if r.passed),
                        rows_without_result=sum(1 for r in rows if r.seconds is None)),
        rss=rss,
        mismatches=mismatches,
        correct=not mismatches,
        verifications=sum(w.verified for w in workers.values()),
        failures=failures,
        workers=workers,
        cycles=cycle_rows,
        cycle_rss=cycle_rss,
        skipped={name: worker.skipped for name, worker in workers.items() if worker.skipped},
        overlap=build_overlap(workers.get("overlap")) if "overlap" in config.parts else None,
        compress=build_compress(workers.get("compress")) if "compress" in config.parts else None,
    )
