"""What each worker kind measures (runs inside a worker process; torch is handed in, None for CPU kinds).

floors      pinned copies, fresh pinned allocation, copies with registered THP memory, raw VMM loops
nobackup    pause/resume without backup per layout, next to the raw VMM loop in the same process
alloc       2048 x 2 MiB allocations, plain torch and inside a region
backup      three pause/resume cycles with CPU backup (cold, cold with retention, warm), one layout
disk_floor  write/read rates of the backup directory, several ways (no torch)
disk        pause/resume of a disk-backed tag, one layout
cycles      N cycles of pause -> gap -> resume -> gap with CPU backup, one layout (cycles.py)
overlap     blocking and non-blocking resume, and a non-blocking one behind compute (overlap.py)
compress    cold pauses of a compressed CPU backup and a plain one (compress.py)
"""

from __future__ import annotations

import gc
import os
import time
from typing import Any, Callable, Dict, List, Optional

from .. import _library
from .._disk_files import named_backup_files, open_backup_files
from . import vmm
from .compress import compress
from .constants import GiB, MiB, exc_text, gbps
from .copies import copy_times, registered_copy_floor
from .cycles import cycles
from .disk import disk_floor
from .machine import meminfo, rss_bytes
from .overlap import overlap
from .records import (
    EngineTagStats,
    LayoutInfo,
    NoBackupLayout,
    PinnedAlloc,
    RssTrace,
    SameProcessVmm,
    Timing,
    Transition,
    WorkerResult,
    WorkerSpec,
    best,
)
from .torch_support import (
    device_free,
    driver_version,
    fill,
    free_everything,
    host_empty_cache,
    layout_elements,
    library_setup,
    require_device_memory,
    tag_stats,
    timed,
    verify,
)
from .worker import Steps, item


def floors(torch: Any, spec: WorkerSpec, result: WorkerResult) -> None:
    device, total, repeats = int(spec.device or 0), spec.total_bytes, spec.repeats
    items = result.items
    torch.zeros(1, device=f"cuda:{device}")
    torch.cuda.synchronize()
    items.driver_version = driver_version(torch)
    host = None
    with item(result, "pinned_alloc"):
        start = time.perf_counter()
        host = torch.empty(total, dtype=torch.uint8, pin_memory=True)
        items.pinned_alloc = PinnedAlloc(seconds=time.perf_counter() - start, bytes=total,
                                         is_pinned=bool(host.is_pinned()),
                                         note="first pinned allocation of the process (torch caching host "
                                              "allocator, cudaHostAlloc underneath; rounds to a power of two)")
    with item(result, "copies"):
        if host is None:
            raise RuntimeError("no pinned buffer: the pinned allocation failed")
        require_device_memory(torch, device, total + 512 * MiB, "the copy floor")
        dev = torch.empty(total, dtype=torch.uint8, device=f"cuda:{device}")
        dev.fill_(0x5A)
        stream = torch.cuda.Stream(device)
        times = copy_times(torch, host, dev, stream, repeats)
        items.d2h = Timing(seconds=min(times["d2h"]), all_seconds=times["d2h"], bytes=total)
        items.h2d = Timing(seconds=min(times["h2d"]), all_seconds=times["h2d"], bytes=total)
        with item(result, "registered"):
            items.registered = registered_copy_floor(torch, dev, stream, repeats)
        del dev, stream
    host = None
    free_everything(torch)
    host_empty_cache(torch)

    for layout in spec.vmm_layouts:
        with item(result, f"vmm_{layout.label}"):
            loop = vmm.measure(layout.count, layout.size, repeats, device=device,
                               slow_round_s=spec.vmm_slow_round_s)
            items.vmm[layout.label] = loop
            items.granularity = loop.granularity


class _SameProcessVmm:
    """Rounds of the raw VMM loop with the engine's handle count and size, in the worker's own process.

    The driver's own unmap/release and create/map times drift by 2x between
    processes and minutes (cuMemRelease of 8 GiB took 2.2 to 4.9 ms on one
    H200), so the fair floor is the raw loop for the engine's handle layout
    measured here, alternating with the library.
    """

    def __init__(self, device: int, engine: EngineTagStats) -> None:
        allocations = int(engine.allocations or 0)
        self.device = device
        self.record = SameProcessVmm(count=allocations,
                                     handle_bytes=int(engine.active_bytes or 0) // allocations if allocations else 0)
        if not allocations:
            self.record.error = "no engine statistics for the layout"

    def measure_once(self) -> None:
        if self.record.error is not None:
            return
        try:
            loop = vmm.measure(self.record.count, self.record.handle_bytes, 1, device=self.device)
        except Exception as exc:  # noqa: BLE001 - the floors worker still gives a floor
            self.record.error = exc_text(exc)
            return
        self.record.map_all_seconds.extend(loop.map_all_seconds)
        self.record.unmap_all_seconds.extend(loop.unmap_all_seconds)
        self.record.map_seconds = best(self.record.map_all_seconds)
        self.record.unmap_seconds = best(self.record.unmap_all_seconds)


def nobackup(torch: Any, spec: WorkerSpec, result: WorkerResult) -> None:
    device, total, repeats = int(spec.device or 0), spec.total_bytes, spec.repeats
    tms = library_setup(spec, result)
    for count in spec.layouts:
        name = f"n{count}"
        tag = f"bench_nobackup_{count}"
        tensors: Optional[List[Any]] = None
        with item(result, name):
            elements = layout_elements(total, count)
            payload = elements * 8 * count
            # Room for the tensors and, next to them, the raw loop of the same size.
            require_device_memory(torch, device, 2 * payload + 1 * GiB, f"layout {count}")
            with tms.region(tag, enable_cpu_backup=False):
                tensors = [torch.empty(elements, dtype=torch.int64, device=f"cuda:{device}") for _ in range(count)]
            torch.cuda.synchronize()
            first_ptr, last_ptr = tensors[0].data_ptr(), tensors[-1].data_ptr()
            stats = tag_stats(tms, tag)
            raw = _SameProcessVmm(device, stats)
            pause_ret, pause_sync, resume_ret, resume_sync, released, taken = [], [], [], [], [], []
            for _ in range(repeats):
                raw.measure_once()
                free0 = device_free(torch, device)
                returned, synced = timed(torch, lambda: tms.pause(tag))  # noqa: B023 - called at once
                pause_ret.append(returned)
                pause_sync.append(synced)
                free1 = device_free(torch, device)
                returned, synced = timed(torch, lambda: tms.resume(tag))  # noqa: B023 - called at once
                resume_ret.append(returned)
                resume_sync.append(synced)
                free2 = device_free(torch, device)
                released.append(free1 - free0)
                taken.append(free1 - free2)
            # Resumed memory must be usable (contents are undefined without a backup).
            tensors[0].fill_(1)
            tensors[-1].fill_(2)
            torch.cuda.synchronize()
            if tensors[0].data_ptr() != first_ptr or tensors[-1].data_ptr() != last_ptr:
                result.mismatches.append(f"no-backup layout {count}: data_ptr changed across pause/resume")
            result.items[name] = NoBackupLayout(
                count=count, bytes=payload, engine=stats, raw_same_process=raw.record,
                pause_seconds=min(pause_sync), resume_seconds=min(resume_sync),
                pause_returned_seconds=pause_ret, pause_synced_seconds=pause_sync,
                resume_returned_seconds=resume_ret, resume_synced_seconds=resume_sync,
                device_bytes_released_on_pause=released, device_bytes_taken_on_resume=taken)
        # Drop the tensors; their blocks stay cached in the tag's pool as engine
        # allocations, so pause the tag to hand the physical memory back.
        tensors = None
        gc.collect()
        try:
            tms.pause(tag)
        except Exception as exc:  # noqa: BLE001
            result.errors[f"{name}_cleanup"] = exc_text(exc)
        torch.cuda.empty_cache()


def alloc(torch: Any, spec: WorkerSpec, result: WorkerResult) -> None:
    device, repeats, count, nbytes = int(spec.device or 0), spec.repeats, spec.alloc_count, spec.alloc_bytes
    tms = library_setup(spec, result)
    where = f"cuda:{device}"
    require_device_memory(torch, device, count * nbytes + 2 * GiB, "the allocation benchmark")

    def allocate() -> List[Any]:
        return [torch.empty(nbytes, dtype=torch.uint8, device=where) for _ in range(count)]

    # Warm up both paths once (driver, torch allocator, pluggable allocator, engine).
    warm = torch.empty(nbytes, dtype=torch.uint8, device=where)
    del warm
    free_everything(torch)
    with tms.region("bench_alloc_warmup", enable_cpu_backup=False):
        warm = torch.empty(nbytes, dtype=torch.uint8, device=where)
    del warm
    gc.collect()
    tms.pause("bench_alloc_warmup")
    free_everything(torch)

    plain = Timing(count=count, bytes=count * nbytes)
    region_engine: List[EngineTagStats] = []
    region = Timing(count=count, bytes=count * nbytes, engine=region_engine)
    for round_index in range(repeats):
        with item(result, f"torch_alloc_{round_index}"):
            free_everything(torch)
            torch.cuda.synchronize()
            start = time.perf_counter()
            tensors = allocate()
            torch.cuda.synchronize()
            plain.all_seconds.append(time.perf_counter() - start)
            del tensors
            free_everything(torch)
        with item(result, f"region_alloc_{round_index}"):
            tag = f"bench_alloc_{round_index}"  # a fresh pool each round, as empty as torch's cache
            free_everything(torch)
            with tms.region(tag, enable_cpu_backup=False):
                torch.cuda.synchronize()
                start = time.perf_counter()
                tensors = allocate()
                torch.cuda.synchronize()
                region.all_seconds.append(time.perf_counter() - start)
            region_engine.append(tag_stats(tms, tag))
            del tensors
            gc.collect()
            tms.pause(tag)  # hand the pool's cached memory back
            free_everything(torch)
    plain.seconds, region.seconds = best(plain.all_seconds), best(region.all_seconds)
    result.items.torch_alloc, result.items.region_alloc = plain, region


class _Transitions:
    """Timed pauses and resumes of one backed-up tag, with the checks of contents after each resume."""

    def __init__(self, torch: Any, tms: Any, result: WorkerResult, tag: str, device: int, payload: int,
                 what: str) -> None:
        self.torch, self.tms, self.result, self.tag = torch, tms, result, tag
        self.device, self.payload, self.what = device, payload, what
        self.tensors: List[Any] = []
        self.pointers: List[int] = []

    def allocate(self, region: Any, elements: int, count: int) -> None:
        with region:
            self.tensors = [self.torch.empty(elements, dtype=self.torch.int64, device=f"cuda:{self.device}")
                            for _ in range(count)]
        self.pointers = [t.data_ptr() for t in self.tensors]
        self.result.engine_after_alloc = tag_stats(self.tms, self.tag)

    def measure(self, op: str) -> Transition:
        verb = self.tms.pause if op.startswith("pause") else self.tms.resume
        free0 = device_free(self.torch, self.device)
        returned, synced = timed(self.torch, lambda: verb(self.tag))
        free1 = device_free(self.torch, self.device)
        return Transition(seconds=synced, returned_seconds=returned, bytes=self.payload,
                          device_free_delta=free1 - free0, engine=tag_stats(self.tms, self.tag), rss=rss_bytes())

    def check(self, seed: int, when: str) -> None:
        if [t.data_ptr() for t in self.tensors] != self.pointers:
            self.result.mismatches.append(f"{self.what}: data_ptr changed ({when})")
        problem = verify(self.torch, self.tensors, seed)
        self.result.verified += 1
        if problem is not None:
            self.result.mismatches.append(f"{self.what}, {when}: {problem}")
            print(f"DATA MISMATCH ({self.what}, {when}): {problem}", flush=True)

    def use(self) -> None:
        """Resumed memory must be usable."""
        self.tensors[0].add_(1)
        self.torch.cuda.synchronize()


def backup(torch: Any, spec: WorkerSpec, result: WorkerResult) -> None:
    device, total, count, kind = int(spec.device or 0), spec.total_bytes, int(spec.layout or 1), spec.host_kind
    tms = library_setup(spec, result)
    items = result.items
    rss = result.rss = RssTrace()
    tag = f"bench_{kind}_{count}"
    elements = layout_elements(total, count)
    payload = elements * 8 * count
    items.layout = LayoutInfo(count=count, bytes=payload, host_kind=kind)
    cycle = _Transitions(torch, tms, result, tag, device, payload, f"{kind} layout {count}")
    mem = meminfo()
    if mem.get("MemAvailable") and mem["MemAvailable"] < 2 * payload:
        result.warnings.append(f"only {mem['MemAvailable'] / GiB:.1f} GiB host memory available for "
                               f"{payload / GiB:.1f} GiB backups")

    with Steps(result, f"backup {kind} n={count}") as step:

        def measure(op: str) -> None:
            step.now = op
            setattr(items, op, cycle.measure(op))
            seconds = getattr(items, op).seconds
            print(f"[backup {kind} n={count}] {op}: {seconds * 1e3:.1f} ms "
                  f"({(gbps(payload, seconds) or 0):.2f} GB/s)", flush=True)

        try:
            require_device_memory(torch, device, payload + 1 * GiB, f"layout {count}")
            step.now = "allocate"
            cycle.allocate(tms.region(tag, enable_cpu_backup=True, cpu_backup_backend=kind), elements, count)

            # Cycle A, retention off: the first pause is cold, the resume gives host memory back.
            tms.retain_cpu_backup = False
            step.now = "fill 1"
            fill(torch, cycle.tensors, 1)
            torch.cuda.synchronize()
            rss.before_pause = rss_bytes()
            measure("pause_cold")
            rss.after_pause_cold = rss_bytes()
            measure("resume_cold")
            rss.after_resume_cold = rss_bytes()
            settle_start = time.perf_counter()
            limit = (rss.before_pause or 0) + payload // 4
            while (rss_bytes() or 0) > limit and time.perf_counter() - settle_start < spec.rss_settle_s:
                time.sleep(0.05)
            rss.after_resume_cold_settled = rss_bytes()
            rss.settle_seconds = time.perf_counter() - settle_start
            step.now = "verify 1"
            cycle.check(1, "after resume (retain off)")

            # Cycle B, retention on: cold again (nothing retained yet); the resume keeps host memory.
            tms.retain_cpu_backup = True
            step.now = "fill 2"
            fill(torch, cycle.tensors, 2)
            measure("pause_cold_retain")
            measure("resume_retain_first")
            rss.after_resume_retained = rss_bytes()
            step.now = "verify 2"
            cycle.check(2, "after resume (retain on, first)")

            # Cycle C: warm pause into the retained host memory, new contents.
            step.now = "fill 3"
            fill(torch, cycle.tensors, 3)
            measure("pause_warm")
            rss.after_pause_warm = rss_bytes()
            measure("resume_warm")
            rss.after_resume_warm = rss_bytes()
            step.now = "verify 3"
            cycle.check(3, "after warm resume (retain on)")
            cycle.use()
            step.now = "done"
        finally:
            try:
                tms.retain_cpu_backup = False
            except Exception:  # noqa: BLE001
                pass


def disk_floor_worker(torch: Any, spec: WorkerSpec, result: WorkerResult) -> None:
    """The disk floor in the backup directory, every variant (no torch: `torch` is None here)."""
    with item(result, "disk_floor"):
        floor = disk_floor(str(spec.disk_dir), spec.disk_bytes, spec.disk_variants or None, spec.disk_repeats)
        result.items.disk = floor
        for variant in floor.variants:
            rates = (f"write {variant.write_gbps or 0:.2f} GB/s, read {variant.read_gbps or 0:.2f} GB/s"
                     if variant.error is None else f"FAILED: {variant.error}")
            print(f"[disk_floor] {variant.label}: {rates}", flush=True)
        notes = "; ".join(floor.notes)
        print(f"[disk_floor] {floor.bytes / GiB:.2f} GiB in {floor.directory} ({floor.filesystem.fs_type}): floor "
              f"write {floor.write_gbps or 0:.2f} GB/s ({floor.write_variant}), read {floor.read_gbps or 0:.2f} "
              f"GB/s ({floor.read_variant}){'; ' + notes if notes else ''}", flush=True)


def _bytes_of(paths: List[str]) -> int:
    total = 0
    for path in paths:
        try:
            total += os.stat(path).st_size
        except OSError:  # closed meanwhile
            pass
    return total


def disk(torch: Any, spec: WorkerSpec, result: WorkerResult) -> None:
    """Pause (files written) and resume (read back) of one enable_disk_backup=True tag, one layout."""
    device, count, directory = int(spec.device or 0), int(spec.layout or 1), str(spec.disk_dir)
    tms = library_setup(spec, result)
    items = result.items
    tag = f"bench_disk_{count}"
    elements = layout_elements(spec.disk_bytes, count)
    payload = elements * 8 * count
    items.layout = LayoutInfo(count=count, bytes=payload, directory=directory,
                              chunk_mb_env=os.environ.get("TMS_DISK_BACKUP_CHUNK_MB"))
    cycle = _Transitions(torch, tms, result, tag, device, payload, f"disk layout {count}")
    with Steps(result, f"disk n={count}") as step:
        require_device_memory(torch, device, payload + 1 * GiB, f"disk layout {count}")
        step.now = "set_disk_backup_dir"
        tms.set_disk_backup_dir(directory)
        step.now = "allocate"
        cycle.allocate(tms.region(tag, enable_disk_backup=True), elements, count)
        step.now = "fill"
        fill(torch, cycle.tensors, 1)
        torch.cuda.synchronize()
        before = open_backup_files(directory)
        if before:
            result.warnings.append(f"{len(before)} backup file(s) of this process before the pause: {before[:4]}")
        for op in ("pause_disk", "resume_disk"):
            step.now = op
            transition = cycle.measure(op)
            files = open_backup_files(directory)  # unnamed files: found through /proc/self/fd
            transition.files, transition.file_bytes = len(files), _bytes_of(files)
            setattr(items, op, transition)
            print(f"[disk n={count}] {op}: {transition.seconds * 1e3:.1f} ms "
                  f"({(gbps(payload, transition.seconds) or 0):.2f} GB/s), {len(files)} backup file(s) of "
                  f"{transition.file_bytes / GiB:.2f} GiB in {directory}", flush=True)
        if not items.pause_disk.files:
            result.warnings.append("no backup file was open after the pause: was the disk backup used?")
        # Resume hands the restored files to a closing thread (the filesystem frees their blocks
        # then): wait for it, and say how long after the return they were all closed.
        start = time.perf_counter()
        _library.check(_library.library().tms_drain_host_releases())
        items.resume_disk.closed_seconds = time.perf_counter() - start
        left = open_backup_files(directory) + named_backup_files(directory)
        items.resume_disk.files_left = left
        if left:
            result.errors["files_left_after_resume"] = (
                f"{len(left)} disk backup file(s) still in {directory} after resume: {', '.join(left[:8])}")
        step.now = "verify"
        cycle.check(1, "after resume")
        cycle.use()
        step.now = "done"


BY_KIND: Dict[str, Callable[[Any, WorkerSpec, WorkerResult], None]] = {
    "floors": floors,
    "nobackup": nobackup,
    "alloc": alloc,
    "backup": backup,
    "disk_floor": disk_floor_worker,
    "disk": disk,
    "cycles": cycles,
    "overlap": overlap,
    "compress": compress,
}
# Kinds that need neither torch nor a GPU.
CPU_KINDS = ("disk_floor",)
