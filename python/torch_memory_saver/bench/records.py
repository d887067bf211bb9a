"""Typed records of the benchmark, and their JSON form.

Every number a worker measures, every spec the parent hands a worker and
every row of the report is one of these dataclasses. They travel between
processes and into results.json as JSON objects whose keys are the field
names (a field may name its key with ``metadata={"json": ...}``), so the
files readers know keep their shape. :func:`to_json` and :func:`from_json`
are the only (de)serializers: one place decides how a record looks on disk.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Type, TypeVar, Union

T = TypeVar("T")


def _key(item: "dataclasses.Field[Any]") -> str:
    return item.metadata.get("json", item.name)


def to_json(value: Any) -> Any:
    """`value` as plain JSON data: records become objects, NaN/inf floats None, unknown objects strings."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {_key(f): to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return str(value)


def _decode(kind: Any, data: Any) -> Any:
    if data is None or kind is Any:
        return data
    origin = typing.get_origin(kind)
    if origin is Union:
        options = [a for a in typing.get_args(kind) if a is not type(None)]
        for option in options:  # the first that fits (records before plain values)
            try:
                return _decode(option, data)
            except (TypeError, ValueError):
                continue
        raise ValueError(f"{data!r} fits none of {options}")
    if origin in (list, List):
        (item,) = typing.get_args(kind)
        return [_decode(item, v) for v in data]
    if origin in (dict, Dict):
        _, item = typing.get_args(kind)
        return {k: _decode(item, v) for k, v in data.items()}
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        if not isinstance(data, dict):
            raise TypeError(f"{kind.__name__} wants an object, got {data!r}")
        return from_json(kind, data)
    if kind is float and isinstance(data, (int, float)) and not isinstance(data, bool):
        return float(data)
    if kind in (int, str, bool) and not isinstance(data, kind):
        raise TypeError(f"{kind.__name__} wanted, got {data!r}")
    return data


def from_json(cls: Type[T], data: Dict[str, Any]) -> T:
    """The record `cls` from its JSON object; unknown keys are ignored, missing ones take their defaults."""
    hints = typing.get_type_hints(cls)
    values = {}
    for item in dataclasses.fields(cls):  # type: ignore[arg-type]
        if _key(item) in data:
            values[item.name] = _decode(hints[item.name], data[_key(item)])
    return cls(**values)


def best(values: List[float]) -> Optional[float]:
    """The smallest of `values` (the best of N rounds); None when there are none."""
    return min(values) if values else None


# ---- what the parent hands a worker --------------------------------------------------------------


@dataclass
class VmmLayoutSpec:
    """One raw VMM loop to measure: `count` handles of `size` bytes."""

    label: str
    count: int
    size: int
    for_layout: Optional[int] = None  # set when the count is the engine's, not the tensor count


@dataclass
class DiskVariantSpec:
    """One way of writing and reading the disk floor's bytes."""

    block_bytes: int
    in_flight: int = 1  # files written (read) at once, one thread each
    direct: bool = True  # O_DIRECT; False: buffered, write + fsync, read after dropping the file's pages


@dataclass
class WorkerSpec:
    """One worker process's job (written to NAME.spec.json)."""

    kind: str
    name: str = ""
    result_path: str = ""
    device: Optional[int] = None
    total_bytes: int = 0
    repeats: int = 1
    hook_mode: str = "torch"
    layouts: List[int] = field(default_factory=list)
    vmm_layouts: List[VmmLayoutSpec] = field(default_factory=list)
    vmm_slow_round_s: float = 0.5
    alloc_count: int = 0
    alloc_bytes: int = 0
    host_kind: Optional[str] = None
    layout: Optional[int] = None
    disk_dir: Optional[str] = None
    disk_bytes: int = 0
    disk_variants: List["DiskVariantSpec"] = field(default_factory=list)  # empty: the default set
    disk_repeats: int = 1
    rss_settle_s: float = 1.0
    # The cycles part (kind "cycles"): `layout` tensors of total/n, or the weights of `model`.
    model: Optional[str] = None
    cycles: int = 0
    cycle_gap_s: float = 0.0
    cycle_retain: bool = False
    gap_matrix: int = 8192
    rss_later_s: float = 1.0
    # The overlap part (kind "overlap"; `layout` tensors, `cycles` cycles, matmuls of `gap_matrix`): the compute step
    # the restore hides behind, and how long to wait for the host backup to be given back.
    overlap_compute_s: float = 0.0
    rss_back_share: float = 0.9
    rss_back_poll_s: float = 0.001
    rss_back_timeout_s: float = 10.0


# ---- floors --------------------------------------------------------------------------------------


@dataclass
class Timing:
    """A best-of-N timing of `bytes` (a copy direction, an allocation loop)."""

    seconds: Optional[float] = None
    all_seconds: List[float] = field(default_factory=list)
    bytes: Optional[int] = None
    count: Optional[int] = None
    engine: Optional[List["EngineTagStats"]] = None  # allocation in a region: the engine's view per round


@dataclass
class PinnedAlloc:
    seconds: float
    bytes: int
    is_pinned: bool
    note: str


@dataclass
class RegisteredCopies:
    """D2H/H2D with page-locked THP memory (the engine's kind of backup memory)."""

    bytes: int
    is_pinned: bool
    d2h_seconds: Optional[float] = None
    d2h_all_seconds: List[float] = field(default_factory=list)
    h2d_seconds: Optional[float] = None
    h2d_all_seconds: List[float] = field(default_factory=list)


@dataclass
class VmmLoop:
    """Rounds of the raw VMM loop (bench/vmm_floor.cpp) for `count` handles of `handle_bytes`."""

    count: int
    handle_bytes: int
    mapped_bytes: int = 0
    map_seconds: Optional[float] = None
    unmap_seconds: Optional[float] = None
    map_all_seconds: List[float] = field(default_factory=list)
    unmap_all_seconds: List[float] = field(default_factory=list)
    rounds: int = 0
    # Parts of the unmap side, per round (zeros where the variant does not split them).
    synchronize_all_seconds: List[float] = field(default_factory=list)
    unmap_only_all_seconds: List[float] = field(default_factory=list)
    release_all_seconds: List[float] = field(default_factory=list)
    driver: str = ""
    granularity: int = 0  # the driver's allocation granularity the handle size was rounded to


@dataclass
class FloorsItems:
    pinned_alloc: Optional[PinnedAlloc] = None
    d2h: Optional[Timing] = None
    h2d: Optional[Timing] = None
    registered: Optional[RegisteredCopies] = None
    granularity: Optional[int] = None
    driver_version: Optional[int] = None
    vmm: Dict[str, VmmLoop] = field(default_factory=dict)


@dataclass
class Filesystem:
    """Where a directory lives: /proc/mounts entry and statvfs sizes."""

    path: str
    block_size: Optional[int] = None
    fragment_size: Optional[int] = None
    total_bytes: Optional[int] = None
    free_bytes: Optional[int] = None
    statvfs_error: Optional[str] = None
    mounts_error: Optional[str] = None
    device: Optional[str] = None
    mount_point: Optional[str] = None
    fs_type: Optional[str] = None
    mount_options: Optional[str] = None


@dataclass
class DiskVariant:
    """Best-of-N write and read rates of one DiskVariantSpec."""

    label: str
    block_bytes: int
    in_flight: int
    direct_asked: bool
    fsync: bool  # writes end with fsync (buffered variant)
    direct_write: bool = False  # O_DIRECT was used (False also where the filesystem refused it)
    direct_read: bool = False
    write_seconds: Optional[float] = None
    read_seconds: Optional[float] = None
    write_all_seconds: List[float] = field(default_factory=list)
    read_all_seconds: List[float] = field(default_factory=list)
    write_gbps: Optional[float] = None
    read_gbps: Optional[float] = None
    notes: List[str] = field(default_factory=list)
    error: Optional[str] = None


@dataclass
class DiskFloor:
    """Write and read rates of the backup directory's filesystem, every variant; the floor is the best direct one."""

    directory: str
    bytes: int
    filesystem: Filesystem
    notes: List[str] = field(default_factory=list)
    file_removed: bool = False
    variants: List[DiskVariant] = field(default_factory=list)
    # The floor the library's disk rows are judged against: per direction, the best variant that used O_DIRECT
    # (the best of all where none could).
    write_variant: Optional[str] = None
    read_variant: Optional[str] = None
    direct_write: bool = False
    direct_read: bool = False
    write_seconds: Optional[float] = None
    read_seconds: Optional[float] = None
    write_gbps: Optional[float] = None
    read_gbps: Optional[float] = None


@dataclass
class DiskFloorItems:
    disk: Optional[DiskFloor] = None


# ---- the library ---------------------------------------------------------------------------------


@dataclass
class EngineTagStats:
    """The engine's statistics of one tag, summed over devices."""

    allocations: Optional[int] = None
    active_bytes: Optional[int] = None
    paused_bytes: Optional[int] = None
    backup_bytes: Optional[int] = None
    last_pause_seconds: Optional[float] = None
    last_resume_seconds: Optional[float] = None
    error: Optional[str] = None


@dataclass
class SameProcessVmm:
    """The raw VMM loop measured in a library worker, alternating with the library's cycles."""

    count: int
    handle_bytes: int
    map_seconds: Optional[float] = None
    unmap_seconds: Optional[float] = None
    map_all_seconds: List[float] = field(default_factory=list)
    unmap_all_seconds: List[float] = field(default_factory=list)
    error: Optional[str] = None


@dataclass
class NoBackupLayout:
    count: int
    bytes: int
    engine: EngineTagStats
    raw_same_process: SameProcessVmm
    pause_seconds: float
    resume_seconds: float
    pause_returned_seconds: List[float] = field(default_factory=list)
    pause_synced_seconds: List[float] = field(default_factory=list)
    resume_returned_seconds: List[float] = field(default_factory=list)
    resume_synced_seconds: List[float] = field(default_factory=list)
    device_bytes_released_on_pause: List[int] = field(default_factory=list)
    device_bytes_taken_on_resume: List[int] = field(default_factory=list)


@dataclass
class AllocItems:
    torch_alloc: Optional[Timing] = None
    region_alloc: Optional[Timing] = None


@dataclass
class Transition:
    """One timed pause or resume of a backed-up tag."""

    seconds: float
    returned_seconds: float
    bytes: int
    device_free_delta: int
    engine: EngineTagStats
    rss: Optional[int] = None
    files: Optional[int] = None  # disk backup: backup files the worker holds open after the call (after a
    # resume: those still waiting for the closing thread)
    file_bytes: Optional[int] = None
    files_left: Optional[List[str]] = None  # backup files still open or named after resume
    # disk resume: seconds from just after its files were counted (a few ms after it returned) until the files it
    # gave back were all closed by the library's closing thread
    closed_seconds: Optional[float] = None


@dataclass
class LayoutInfo:
    count: int
    bytes: int
    host_kind: Optional[str] = None
    directory: Optional[str] = None
    chunk_mb_env: Optional[str] = None


@dataclass
class BackupItems:
    pause_cold: Optional[Transition] = None
    resume_cold: Optional[Transition] = None
    pause_cold_retain: Optional[Transition] = None
    resume_retain_first: Optional[Transition] = None
    pause_warm: Optional[Transition] = None
    resume_warm: Optional[Transition] = None
    layout: Optional[LayoutInfo] = None


@dataclass
class DiskItems:
    pause_disk: Optional[Transition] = None
    resume_disk: Optional[Transition] = None
    layout: Optional[LayoutInfo] = None


@dataclass
class RssTrace:
    """VmRSS of a backup worker along its cycles, bytes."""

    before_pause: Optional[int] = None
    after_pause_cold: Optional[int] = None
    after_resume_cold: Optional[int] = None
    after_resume_cold_settled: Optional[int] = None
    settle_seconds: Optional[float] = None
    after_resume_retained: Optional[int] = None
    after_pause_warm: Optional[int] = None
    after_resume_warm: Optional[int] = None


@dataclass
class CycleLayout:
    """What a cycles worker pauses: `tensors` tensors of `bytes` in all, uniform or a model's weights."""

    label: str  # the tensor count, or the model's name
    tensors: int
    bytes: int
    host_kind: Optional[str] = None
    retain: bool = False
    model: Optional[str] = None
    parameters: Optional[int] = None  # model elements (bf16)
    shapes: List[List[int]] = field(default_factory=list)  # the model's parameter shapes, in allocation order


@dataclass
class GapWork:
    """The GPU work between the steps of a cycle: `matmuls` bf16 matmuls of `matrix` x `matrix`."""

    asked_seconds: float
    matrix: int
    matmuls: int = 0
    matmul_seconds: Optional[float] = None  # one matmul, measured before the cycles


@dataclass
class Cycle:
    """One pause -> gap -> resume -> gap of a cycles worker."""

    index: int  # 1 for the first cycle of the process
    pause_seconds: Optional[float] = None  # until the call returned and the device was idle
    pause_returned_seconds: Optional[float] = None
    pause_gbps: Optional[float] = None
    resume_seconds: Optional[float] = None
    resume_returned_seconds: Optional[float] = None
    resume_gbps: Optional[float] = None
    gap_after_pause_seconds: Optional[float] = None
    gap_after_resume_seconds: Optional[float] = None
    rss_anon_after_pause: Optional[int] = None
    rss_anon_at_resume_return: Optional[int] = None  # read right when resume returned
    # Read rss_later_s after resume returned, or right before the next pause where that began sooner.
    rss_anon_later: Optional[int] = None
    rss_anon_later_seconds: Optional[float] = None  # when, exactly, after resume returned
    contents_exact: Optional[bool] = None
    engine_pause_seconds: Optional[float] = None
    engine_resume_seconds: Optional[float] = None


@dataclass
class CyclesItems:
    layout: Optional[CycleLayout] = None
    gap: Optional[GapWork] = None
    rss_anon_before_first_pause: Optional[int] = None
    rss_later_s: Optional[float] = None
    cycles: List[Cycle] = field(default_factory=list)


@dataclass
class OverlapCycle:
    """One cycle of the overlap worker: blocking resume, non-blocking resume, and the compute step three ways."""

    index: int  # 1 for the first cycle of the process
    blocking_seconds: Optional[float] = None  # resume(tag) until it returned (host wall; restored, backup given back)
    returned_seconds: Optional[float] = None  # resume(tag, non_blocking=True) until it returned
    # GPU events on the current stream: recorded before the call, and after wait(stream=current) ordered the stream
    # after the restore.
    restore_seconds: Optional[float] = None
    # From the non-blocking call until RSS dropped by rss_back_share of the backup bytes (the host backup given
    # back); when rss_back_timed_out, when polling gave up (a lower bound).
    rss_back_seconds: Optional[float] = None
    rss_back_timed_out: bool = False
    rss_before_resume: Optional[int] = None
    rss_back: Optional[int] = None  # the poll's last reading
    backup_bytes: Optional[int] = None  # the engine's host backup bytes of the tag while paused
    # The compute step, each from an idle device until idle again: (a) alone, (b) after a blocking resume,
    # (c) queued behind a non-blocking resume.
    compute_seconds: Optional[float] = None
    blocking_compute_seconds: Optional[float] = None
    overlapped_compute_seconds: Optional[float] = None
    contents_exact: Optional[bool] = None  # every resume of the cycle restored the contents exactly


@dataclass
class OverlapItems:
    layout: Optional[LayoutInfo] = None
    d2h: Optional[Timing] = None  # pinned copies of the payload's bytes, in the same worker
    h2d: Optional[Timing] = None
    compute: Optional[GapWork] = None
    rss_back_share: Optional[float] = None
    rss_back_timeout_s: Optional[float] = None
    cycles: List[OverlapCycle] = field(default_factory=list)


@dataclass
class CompressRound:
    """Cold pauses and resumes of the compressed tag and the plain one (seconds until the device was idle)."""

    index: int  # 0: the first pause of the process, of the compressed tag alone; 1..N: the rounds
    plain_pause_seconds: Optional[float] = None
    plain_resume_seconds: Optional[float] = None
    z_pause_seconds: Optional[float] = None
    z_resume_seconds: Optional[float] = None
    plain_host_bytes: Optional[int] = None  # the engine's backup bytes of the tag while paused
    z_host_bytes: Optional[int] = None
    contents_exact: Optional[bool] = None


@dataclass
class CompressItems:
    layout: Optional[LayoutInfo] = None  # per tag; bytes uncompressed
    d2h: Optional[Timing] = None  # pinned copies of the same (uncompressed) bytes, in the same worker
    h2d: Optional[Timing] = None
    first: Optional[CompressRound] = None
    rounds: List[CompressRound] = field(default_factory=list)


# ---- a worker's result ---------------------------------------------------------------------------


@dataclass
class DeviceEnv:
    device_index: int
    device_name: str
    device_total_memory: int
    capability: str
    torch: str
    torch_cuda: Optional[str]
    cuda_visible_devices: Optional[str]


@dataclass
class LibraryInfo:
    path: Optional[str] = None
    version: Optional[str] = None
    hook_mode: Optional[str] = None
    ld_preload: Optional[str] = None
    driver: Optional[str] = None


# The items record of each worker kind (the workers' "items" object).
ITEMS_BY_KIND: Dict[str, Any] = {
    "floors": FloorsItems,
    "nobackup": Dict[str, NoBackupLayout],  # "n<count>" -> layout
    "alloc": AllocItems,
    "backup": BackupItems,
    "disk_floor": DiskFloorItems,
    "disk": DiskItems,
    "cycles": CyclesItems,
    "overlap": OverlapItems,
    "compress": CompressItems,
}


def empty_items(kind: str) -> Any:
    items = ITEMS_BY_KIND.get(kind)
    return items() if isinstance(items, type) and dataclasses.is_dataclass(items) else {}


@dataclass
class WorkerResult:
    """What one worker process measured (NAME.result.json), plus what the parent saw of it."""

    kind: str
    name: Optional[str] = None
    items: Any = None  # the ITEMS_BY_KIND record of `kind`
    errors: Dict[str, str] = field(default_factory=dict)  # item -> message and trace
    mismatches: List[str] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)
    pid: Optional[int] = None
    started_unix: Optional[float] = None
    finished_unix: Optional[float] = None
    fatal: Optional[str] = None
    skipped: Optional[str] = None  # why nothing was measured, where that is no failure (a missing optional package)
    env: Optional[DeviceEnv] = None
    library: Optional[LibraryInfo] = None
    verified: int = 0  # full comparisons of contents after a resume
    engine_after_alloc: Optional[EngineTagStats] = None
    rss: Optional[RssTrace] = None
    # Filled in by the parent:
    exit_code: Union[int, str, None] = None
    wall_seconds: Optional[float] = None
    log: Optional[str] = None

    def __post_init__(self) -> None:
        if self.items is None:
            self.items = empty_items(self.kind)

    @classmethod
    def from_json_data(cls, data: Dict[str, Any]) -> "WorkerResult":
        """Decodes a result, its items as the record of its kind."""
        result = from_json(cls, data)
        kind = ITEMS_BY_KIND.get(result.kind)
        result.items = _decode(kind, data.get("items") or {}) if kind is not None else {}
        return result


# ---- the run -------------------------------------------------------------------------------------


@dataclass
class BenchConfig:
    """What the command line asked for (results.json "config")."""

    total_bytes: int
    total_gib: float
    layouts: List[int]
    host_kinds: List[str]
    parts: List[str]
    hook_mode: str = "torch"
    repeats: int = 3
    device: Optional[int] = None
    alloc_count: int = 2048
    alloc_bytes: int = 2 << 20
    quick: bool = False
    disk_bytes: int = 0
    disk_gib: float = 0.0
    disk_layouts: List[int] = field(default_factory=list)
    disk_dir: Optional[str] = None
    disk_repeats: int = 1
    cycles: int = 0
    cycle_gap_ms: float = 0.0
    cycle_retain: bool = False
    cycle_models: List[str] = field(default_factory=list)
    overlap_compute_ms: float = 0.0
    compress_bytes: int = 0
    compress_gib: float = 0.0
    argv: List[str] = field(default_factory=list)
    environment: Dict[str, Optional[str]] = field(default_factory=dict)
    stripped_from_workers: List[str] = field(default_factory=list)

    def cycle_labels(self) -> List[str]:
        """The cycles part's layouts: the tensor counts, then the models (worker cycles_<host kind>_<label>)."""
        return [str(n) for n in self.layouts] + list(self.cycle_models)
