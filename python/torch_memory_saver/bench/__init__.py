"""``python -m torch_memory_saver bench``: pause/resume speed against the hardware floors, in one run.

What it measures (one GPU; sizes from ``--total-gib``, layouts from ``--layouts``):

floors (no torch_memory_saver involved)
    pinned D2H / H2D copy rate (torch, side stream, best of N), the same with
    page-locked THP memory (the engine's kind), fresh pinned host allocation
    rate (``torch.empty(pin_memory=True)``), the raw VMM loops for each layout
    (create+map+access and unmap+release of n handles of total/n, in C++ on the
    engine's Driver seam: see :mod:`.vmm`), and plain torch allocation of
    2048 x 2 MiB tensors on an empty cache; with ``--parts ...,disk``:
    write and read rates of the disk backup directory, O_DIRECT at 1, 16 and
    64 MiB blocks with 1 and 4 I/Os in flight and buffered with fsync (no
    torch, see :func:`.disk.disk_floor`); the best direct one is the floor.
library
    pause/resume without backup; pause with CPU backup cold (retain off) and
    warm (retain on); resume with backup; for the host kinds ``pinned`` and
    ``mmap``; process RSS along the way; allocation of 2048 x 2 MiB tensors
    inside a region; with ``disk`` in ``--parts``: pause/resume of an
    ``enable_disk_backup=True`` tag. Contents are filled with a non-periodic
    pattern before every backed-up pause and compared after every resume; a
    mismatch fails the run (exit 3).
cycles (the RL loop)
    N cycles of pause -> gap of GPU work -> resume -> gap with CPU backup, per
    host kind, for the tensor-count layouts and a model's weight layout
    (transformers config on the meta device, no download): per cycle pause
    and resume seconds and GB/s, RssAnon when resume returned and ~1 s
    later, contents compared; reported as cycle 1 apart from cycles 2..N
    (median, worst), as ratios to the same run's floors.
overlap (opt-in: ``--parts ...,overlap``)
    ``resume(tag, non_blocking=True)`` next to a blocking resume, per cycle:
    when the call returned, when the restore was done (CUDA events around
    ``wait(stream=...)``), when the host backup was given back (RSS), and how
    much of the restore a compute step of ``--overlap-compute-ms`` hides;
    cycle 1 and the median, each against its target.
compress (opt-in: ``--parts ...,compress``)
    cold pauses and resumes of a ``compress=True`` tag next to a plain one of
    the same bf16 weight-like contents: the process's first compressed pause,
    then rounds of both; rates of uncompressed bytes against the pinned floors
    of the same worker, host bytes held while paused; each against its target.

One job per module:

=============== ===========================================================
constants       units, defaults, exit statuses
records         the typed records (specs, measurements, results) and their JSON form
machine         host facts: RSS, memory, CPUs, THP, git checkout
disk            the disk floor and its variants (no torch)
copies          host<->device copy floors (torch)
vmm             the raw VMM floor (C++ library on the Driver seam, loaded with ctypes)
torch_support   what the GPU workers share: setup, timers, GPU work for gaps, content patterns, engine statistics
workloads       what each worker kind measures
cycles          what the cycles worker measures (the RL loop)
overlap         what the overlap worker measures (non-blocking resume behind compute)
compress        what the compress worker measures (compressed vs plain cold pauses)
models          model weight layouts for the cycles part (transformers configs, meta device)
worker          the worker protocol: spec file in, result file out, one process per group
runner          the parent: preflight, worker environments, worker processes
report          results to rows, ratios and verdicts
cycles_report   the cycles part's rows: first cycle vs steady state, host memory
metrics         the overlap and compress parts' judged values: single shot and median against a target
overlap_report  the overlap part's values: return, restore, host backup given back, share hidden
compress_report the compress part's values: first and later compressed pauses, against plain and the link
render, plot    results.md, the terminal table, rate_vs_layout.png, cycles.png
render_metrics  the overlap and compress parts in results.md and on the terminal
plot_parts      overlap.png, compress.png
cli             the command line and one run
=============== ===========================================================

Outputs under ``--out`` (default ./bench-results): results.json, results.md,
rate_vs_layout.png, cycles.png, overlap.png and compress.png (the parts that
ran, when matplotlib is importable), logs/ (one
log, spec and result per worker). Exit status: 0 all measured and contents exact; 1 some
measurement failed; 2 the benchmark cannot run here (no torch, no GPU, no
engine library); 3 contents differed after a resume (DATA MISMATCH). Missed
performance targets do not change the exit status. See bench/README.md.
"""

from .cli import build_parser, main
from .constants import BenchUnavailable
from .disk import disk_floor, filesystem_info
from .records import WorkerResult, WorkerSpec
from .render import render_markdown, render_rows_text
from .report import BACKUP_OPS, OP_LABELS, TARGETS, Report, build_report

__all__ = [
    "main",
    "build_parser",
    "BenchUnavailable",
    "disk_floor",
    "filesystem_info",
    "WorkerSpec",
    "WorkerResult",
    "build_report",
    "Report",
    "render_markdown",
    "render_rows_text",
    "BACKUP_OPS",
    "OP_LABELS",
    "TARGETS",
]
