"""What the overlap worker measures: resume(non_blocking=True) behind the user's compute, next to blocking resume.

One worker, in a fresh process: `spec.layout` int64 tensors of total/n bytes in
``region(tag, enable_cpu_backup=True, cpu_backup_backend="pinned")`` with
retain_cpu_backup off, so that every pause makes fresh host backups and every
resume gives them back. First the pinned D2H and H2D floors of the same bytes,
then `spec.cycles` cycles of:

1. blocking: pause; ``resume(tag)``, host wall time until it returned (the
   restore copied and the host backup given back by then);
2. non-blocking: pause; ``resume(tag, non_blocking=True)``, time until it
   returned; ``wait(stream=current)`` between two CUDA events on the current
   stream (the restore on the GPU's clock); RSS polled every millisecond until
   the host backup is given back, timed from the call;
3. hidden: the compute step (bf16 matmuls of about `spec.overlap_compute_s`)
   (a) alone, (b) after a blocking resume, (c) queued behind a non-blocking
   resume with ``wait(stream=current)`` before the tensors are read; each from
   an idle device until it is idle again.

Every step ends with a read of a few elements of each tensor (the user's first
use of them, (a) included so that it cancels out). Before every pause the
tensors get a new non-periodic pattern; after every resume every element and
every data_ptr() is compared (a difference is a DATA MISMATCH).
"""

from __future__ import annotations

import time
from typing import Any, Callable, List, Optional, Tuple

from .constants import GiB
from .copies import pinned_copy_floor
from .machine import statm_rss_bytes
from .records import LayoutInfo, OverlapCycle, WorkerResult, WorkerSpec
from .torch_support import (
    GapWorkload,
    fill,
    layout_elements,
    library_setup,
    record_check,
    require_device_memory,
    tag_stats,
    timed,
    verify,
)
from .worker import Steps

HOST_KIND = "pinned"


def wait_for_rss(read: Callable[[], Optional[int]], limit: int, start: float, timeout_s: float, poll_s: float,
                 clock: Callable[[], float] = time.perf_counter,
                 sleep: Callable[[float], None] = time.sleep) -> Tuple[Optional[float], Optional[int], bool]:
    """Reads RSS every `poll_s` until it is at most `limit`.

    Returns (seconds from `start` to that reading, the reading, False); when
    `timeout_s` after `start` passed first, (seconds until then: a lower
    bound, the last reading, True); (None, None, False) where RSS cannot be
    read at all, rather than waiting for a reading that never comes.
    """
    while True:
        value = read()
        now = clock()
        if value is None:
            return None, None, False
        if value <= limit:
            return now - start, value, False
        if now - start >= timeout_s:
            return now - start, value, True
        sleep(poll_s)


def _read_some(tensors: List[Any]) -> None:
    """A small read of every tensor, as the user's first use after a resume: it must wait for the restore."""
    for tensor in tensors:
        tensor[-8:].sum()


def overlap(torch: Any, spec: WorkerSpec, result: WorkerResult) -> None:
    device, count = int(spec.device or 0), int(spec.layout or 1)
    items = result.items
    what = "overlap"
    tms = library_setup(spec, result)
    tag = "bench_overlap"
    elements = layout_elements(spec.total_bytes, count)
    payload = elements * 8 * count
    items.layout = LayoutInfo(count=count, bytes=payload, host_kind=HOST_KIND)
    items.rss_back_share, items.rss_back_timeout_s = spec.rss_back_share, spec.rss_back_timeout_s
    seed = 0
    with Steps(result, what) as step:
        try:
            step.now = "floors"
            require_device_memory(torch, device, payload + 1 * GiB, what)
            items.d2h, items.h2d = pinned_copy_floor(torch, device, payload, spec.repeats)
            step.now = "compute calibration"
            compute_bytes = 3 * spec.gap_matrix * spec.gap_matrix * 2
            require_device_memory(torch, device, payload + compute_bytes + 1 * GiB, what)
            compute = GapWorkload(torch, device, spec.overlap_compute_s, spec.gap_matrix)
            items.compute = compute.record
            step.now = "allocate"
            with tms.region(tag, enable_cpu_backup=True, cpu_backup_backend=HOST_KIND):
                tensors = [torch.empty(elements, dtype=torch.int64, device=f"cuda:{device}") for _ in range(count)]
            pointers = [t.data_ptr() for t in tensors]
            result.engine_after_alloc = tag_stats(tms, tag)
            tms.retain_cpu_backup = False

            def pause(cycle: OverlapCycle, label: str) -> None:
                """A new pattern, then the pause (not timed)."""
                nonlocal seed
                seed += 1
                step.now = f"cycle {cycle.index}: {label}: pause"
                fill(torch, tensors, seed)
                torch.cuda.synchronize()
                tms.pause(tag)
                torch.cuda.synchronize()

            def check(cycle: OverlapCycle, label: str) -> None:
                step.now = f"cycle {cycle.index}: {label}: check"
                exact = record_check(result, verify(torch, tensors, seed), [t.data_ptr() for t in tensors] != pointers,
                                     f"overlap, cycle {cycle.index}, after the {label} resume")
                cycle.contents_exact = exact and cycle.contents_exact is not False

            def compute_step(resume: Callable[[], None], order: Callable[[], None]) -> float:
                """Seconds from an idle device to idle again: resume, the compute step, order, a read of the tensors."""
                torch.cuda.synchronize()
                start = time.perf_counter()
                resume()
                compute.queue()
                order()
                _read_some(tensors)
                torch.cuda.synchronize()
                return time.perf_counter() - start

            def stream_after_restore() -> None:
                tms.wait(tag, stream=torch.cuda.current_stream())

            for index in range(1, spec.cycles + 1):
                cycle = OverlapCycle(index=index)
                items.cycles.append(cycle)

                pause(cycle, "blocking")
                step.now = f"cycle {index}: blocking resume"
                cycle.blocking_seconds, _ = timed(torch, lambda: tms.resume(tag))
                check(cycle, "blocking")

                pause(cycle, "non-blocking")
                cycle.backup_bytes = tag_stats(tms, tag).backup_bytes or payload
                step.now = f"cycle {index}: non-blocking resume"
                stream = torch.cuda.current_stream()
                begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                cycle.rss_before_resume = statm_rss_bytes()
                begin.record(stream)
                start = time.perf_counter()
                tms.resume(tag, non_blocking=True)
                cycle.returned_seconds = time.perf_counter() - start
                tms.wait(tag, stream=stream)
                end.record(stream)
                if cycle.rss_before_resume is not None:
                    limit = cycle.rss_before_resume - int(spec.rss_back_share * cycle.backup_bytes)
                    cycle.rss_back_seconds, cycle.rss_back, cycle.rss_back_timed_out = wait_for_rss(
                        statm_rss_bytes, limit, start, spec.rss_back_timeout_s, spec.rss_back_poll_s)
                end.synchronize()
                cycle.restore_seconds = begin.elapsed_time(end) / 1e3
                check(cycle, "non-blocking")

                step.now = f"cycle {index}: compute alone"
                cycle.compute_seconds = compute_step(lambda: None, lambda: None)
                pause(cycle, "blocking + compute")
                step.now = f"cycle {index}: blocking resume + compute"
                cycle.blocking_compute_seconds = compute_step(lambda: tms.resume(tag), lambda: None)
                check(cycle, "blocking + compute")
                pause(cycle, "non-blocking + compute")
                step.now = f"cycle {index}: non-blocking resume + compute"
                cycle.overlapped_compute_seconds = compute_step(lambda: tms.resume(tag, non_blocking=True),
                                                                stream_after_restore)
                check(cycle, "non-blocking + compute")

                rss_back = "not read" if cycle.rss_back_seconds is None else (
                    f"{cycle.rss_back_seconds * 1e3:.1f} ms" + (" (timed out)" if cycle.rss_back_timed_out else ""))
                print(f"[{what}] cycle {index}: blocking resume {cycle.blocking_seconds * 1e3:.1f} ms; non-blocking "
                      f"returned {cycle.returned_seconds * 1e3:.2f} ms, restored {cycle.restore_seconds * 1e3:.1f} "
                      f"ms, host backup back {rss_back}; compute {cycle.compute_seconds * 1e3:.0f} / blocking "
                      f"{cycle.blocking_compute_seconds * 1e3:.0f} / non-blocking "
                      f"{cycle.overlapped_compute_seconds * 1e3:.0f} ms", flush=True)
            step.now = "done"
        finally:
            try:
                tms.wait()  # nothing left in flight behind the result
            except Exception:  # noqa: BLE001 - the worker ends anyway
                pass
