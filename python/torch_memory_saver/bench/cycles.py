"""What the cycles worker measures: the RL loop, N cycles of pause -> gap -> resume -> gap with CPU backup.

One worker per (host kind, layout), in a fresh process, so that cycle 1 is
the first pause of the process and cycles 2..N are the steady state. The
layout is `spec.layout` int64 tensors of total/n bytes, or one bf16 tensor
per parameter of the model `spec.model` (see models.py). The gap is GPU work
(GapWorkload), timed each time. Before each pause the tensors get a new
non-periodic pattern (seed = cycle number); after each resume every element
and every data_ptr() is compared (a difference is a DATA MISMATCH).

RssAnon (anonymous memory, where host backups live) is read before the first
pause, after each pause, right when each resume returns (inside the timed
window, its own time left out), and once more about `spec.rss_later_s` after
that resume returned, by a helper thread, so the loop is not held up. The
later reading is never taken after the next pause has begun: when the next
pause comes sooner, the reading is taken right before it, and its
``rss_anon_later_seconds`` says how long after the resume that was.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any, List, Optional, Tuple

from . import models
from .constants import GiB, gbps
from .machine import rss_anon_bytes
from .records import Cycle, CycleLayout, WorkerResult, WorkerSpec
from .torch_support import (
    GapWorkload,
    fill,
    int64_view,
    layout_elements,
    library_setup,
    require_device_memory,
    tag_stats,
    timed,
    timed_sampled,
    verify,
)
from .worker import Steps


class _LaterRss:
    """Reads RssAnon `delay` seconds after a resume returned, or right before the next pause if that comes first."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self._pending: Optional[Tuple[threading.Thread, threading.Event]] = None

    def schedule(self, cycle: Cycle, returned_at: float) -> None:
        self.before_pause()  # at most one reading in flight
        cut_short = threading.Event()

        def read() -> None:
            cut_short.wait(max(0.0, returned_at + self.delay - time.perf_counter()))
            cycle.rss_anon_later = rss_anon_bytes()
            cycle.rss_anon_later_seconds = time.perf_counter() - returned_at

        thread = threading.Thread(target=read, name="tms-bench-rss", daemon=True)
        thread.start()
        self._pending = (thread, cut_short)

    def before_pause(self) -> None:
        """The loop is about to pause: a reading not taken yet is taken now."""
        if self._pending is not None:
            thread, cut_short = self._pending
            cut_short.set()
            thread.join()
            self._pending = None

    def finish(self) -> None:
        """After the last cycle: let the last reading wait its full delay."""
        if self._pending is not None:
            self._pending[0].join()
            self._pending = None


def _layout(torch: Any, spec: WorkerSpec) -> Tuple[CycleLayout, List[List[int]], Any]:
    """The layout record, the tensor shapes and their dtype."""
    if spec.model:
        named = models.parameter_shapes(torch, spec.model)
        shapes = [shape for _, shape in named]
        parameters = sum(math.prod(shape) for shape in shapes)
        layout = CycleLayout(label=spec.model, tensors=len(shapes), bytes=2 * parameters, host_kind=spec.host_kind,
                             retain=spec.cycle_retain, model=spec.model, parameters=parameters, shapes=shapes)
        return layout, shapes, torch.bfloat16
    count = int(spec.layout or 1)
    elements = layout_elements(spec.total_bytes, count)
    layout = CycleLayout(label=str(count), tensors=count, bytes=elements * 8 * count, host_kind=spec.host_kind,
                         retain=spec.cycle_retain)
    return layout, [[elements]] * count, torch.int64


def cycles(torch: Any, spec: WorkerSpec, result: WorkerResult) -> None:
    device, kind = int(spec.device or 0), spec.host_kind
    items = result.items
    label = spec.model or str(int(spec.layout or 1))
    what = f"cycles {kind} {label}"
    if spec.model:
        reason = models.unavailable(spec.model)
        if reason is not None:
            result.skipped = reason
            print(f"[{what}] skipped: {reason}", flush=True)
            return
    tms = library_setup(spec, result)
    tag = f"bench_cycles_{kind}_{label}"
    later = _LaterRss(spec.rss_later_s)
    items.rss_later_s = spec.rss_later_s
    with Steps(result, what) as step:
        try:
            step.now = "layout"
            layout, shapes, dtype = _layout(torch, spec)
            items.layout = layout
            payload = layout.bytes
            gap_bytes = 3 * spec.gap_matrix * spec.gap_matrix * 2 if spec.cycle_gap_s > 0 else 0
            require_device_memory(torch, device, payload + gap_bytes + 1 * GiB, what)
            step.now = "gap calibration"
            gap = GapWorkload(torch, device, spec.cycle_gap_s, spec.gap_matrix)
            items.gap = gap.record
            step.now = "allocate"
            with tms.region(tag, enable_cpu_backup=True, cpu_backup_backend=kind):
                tensors = [torch.empty(shape, dtype=dtype, device=f"cuda:{device}") for shape in shapes]
            words = [int64_view(torch, t) for t in tensors]
            pointers = [t.data_ptr() for t in tensors]
            result.engine_after_alloc = tag_stats(tms, tag)
            tms.retain_cpu_backup = spec.cycle_retain

            for index in range(1, spec.cycles + 1):
                cycle = Cycle(index=index)
                items.cycles.append(cycle)
                step.now = f"cycle {index}: fill"
                fill(torch, words, index)
                torch.cuda.synchronize()
                later.before_pause()
                if index == 1:
                    items.rss_anon_before_first_pause = rss_anon_bytes()
                step.now = f"cycle {index}: pause"
                cycle.pause_returned_seconds, cycle.pause_seconds = timed(torch, lambda: tms.pause(tag))
                cycle.pause_gbps = gbps(payload, cycle.pause_seconds)
                cycle.rss_anon_after_pause = rss_anon_bytes()
                cycle.engine_pause_seconds = tag_stats(tms, tag).last_pause_seconds
                step.now = f"cycle {index}: gap after pause"
                cycle.gap_after_pause_seconds = gap.run()
                step.now = f"cycle {index}: resume"
                returned, synced, (returned_at, rss) = timed_sampled(
                    torch, lambda: tms.resume(tag), lambda: (time.perf_counter(), rss_anon_bytes()))
                later.schedule(cycle, returned_at)
                cycle.resume_returned_seconds, cycle.resume_seconds = returned, synced
                cycle.resume_gbps = gbps(payload, synced)
                cycle.rss_anon_at_resume_return = rss
                cycle.engine_resume_seconds = tag_stats(tms, tag).last_resume_seconds
                step.now = f"cycle {index}: check"
                problem = verify(torch, words, index)
                if [t.data_ptr() for t in tensors] != pointers:
                    problem = (problem + "; " if problem else "") + "data_ptr changed"
                result.verified += 1
                cycle.contents_exact = problem is None
                if problem is not None:
                    result.mismatches.append(f"cycles {kind} layout {label}, after resume {index}: {problem}")
                    print(f"DATA MISMATCH ({what}, cycle {index}): {problem}", flush=True)
                step.now = f"cycle {index}: gap after resume"
                cycle.gap_after_resume_seconds = gap.run()
                print(f"[{what}] cycle {index}: pause {cycle.pause_seconds * 1e3:.1f} ms "
                      f"({cycle.pause_gbps or 0:.2f} GB/s), resume {synced * 1e3:.1f} ms "
                      f"({cycle.resume_gbps or 0:.2f} GB/s), gaps {cycle.gap_after_pause_seconds * 1e3:.0f} / "
                      f"{cycle.gap_after_resume_seconds * 1e3:.0f} ms", flush=True)
            step.now = "done"
        finally:
            later.finish()
            try:
                tms.retain_cpu_backup = False
            except Exception:  # noqa: BLE001 - the worker ends anyway
                pass
