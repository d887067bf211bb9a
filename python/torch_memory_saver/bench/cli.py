"""``python -m torch_memory_saver bench``: the command line, and one run from arguments to outputs."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from . import models
from .constants import (
    COMPRESS_TENSORS,
    CYCLE_RSS_LATER_S,
    DEFAULT_COMPRESS_GIB,
    DEFAULT_CYCLE_GAP_MS,
    DEFAULT_CYCLES,
    DEFAULT_DISK_GIB_CAP,
    DEFAULT_DISK_LAYOUTS,
    DEFAULT_LAYOUTS,
    DEFAULT_OVERLAP_COMPUTE_MS,
    DEFAULT_PARTS,
    DISK_IO_ALIGNMENT,
    EXIT_MEASUREMENT_FAILED,
    EXIT_MISMATCH,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    GAP_MATRIX,
    HOST_KINDS,
    MAX_DISK_LAYOUTS,
    OVERLAP_RSS_BACK_SHARE,
    OVERLAP_RSS_POLL_S,
    OVERLAP_RSS_TIMEOUT_S,
    OVERLAP_TENSORS,
    PARTS,
    QUICK_CYCLES,
    QUICK_LAYOUTS,
    QUICK_PARTS,
    RECORDED_ENV,
    STRIPPED_ENV,
    BenchUnavailable,
    GiB,
    MiB,
    exc_text,
)
from .disk import default_variants
from .plot import render_cycles_plot, render_plot
from .plot_parts import render_compress_plot, render_overlap_plot
from .records import BenchConfig, VmmLayoutSpec, WorkerResult, WorkerSpec, to_json
from .render import render_markdown, render_rows_text
from .report import Report, build_report
from .runner import Runner, base_env, engine_vmm_layouts, library_env, preflight, run_disk_part


def _parse_layouts(text: str) -> List[int]:
    try:
        layouts = sorted({int(part) for part in text.replace(" ", "").split(",") if part})
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--layouts wants integers like 1,16,256,4096: {exc}") from exc
    if not layouts or layouts[0] <= 0:
        raise argparse.ArgumentTypeError("--layouts wants positive integers")
    return layouts


def _parse_list(allowed: Tuple[str, ...], option: str) -> Callable[[str], List[str]]:
    def parse(text: str) -> List[str]:
        values = [part for part in text.replace(" ", "").split(",") if part]
        unknown = [v for v in values if v not in allowed]
        if unknown or not values:
            raise argparse.ArgumentTypeError(f"{option} takes a comma list of {', '.join(allowed)}")
        return values

    return parse


def _parse_models(text: str) -> List[str]:
    if text.strip() == "none":
        return []
    return _parse_list(tuple(models.MODELS), "--cycle-models")(text)


def build_parser(prog: str = "python -m torch_memory_saver bench") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Measure pause/resume of torch_memory_saver against the hardware floors "
                    "(pinned copies, raw CUDA VMM calls, plain torch allocation) in one run.")
    parser.add_argument("--total-gib", type=float, default=None,
                        help="bytes in the paused tag, GiB (default 8; 1 with --quick)")
    parser.add_argument("--layouts", type=_parse_layouts, default=None,
                        help="tensor counts, comma separated (default 1,16,256,4096; 1,16 with --quick)")
    parser.add_argument("--host-kinds", type=_parse_list(HOST_KINDS, "--host-kinds"), default=list(HOST_KINDS),
                        help="CPU backup backends to measure (default pinned,mmap)")
    parser.add_argument("--parts", type=_parse_list(PARTS, "--parts"), default=None,
                        help=f"what to run, from {','.join(PARTS)} (default {','.join(DEFAULT_PARTS)}; with "
                             f"--quick {','.join(QUICK_PARTS)}; disk, overlap and compress are opt-in)")
    parser.add_argument("--cycles", type=int, default=None,
                        help=f"cycles of pause -> gap -> resume -> gap in the cycles part, and the overlap part's "
                             f"cycles and the compress part's rounds (default {DEFAULT_CYCLES}; {QUICK_CYCLES} with "
                             f"--quick)")
    parser.add_argument("--cycle-gap-ms", type=float, default=DEFAULT_CYCLE_GAP_MS,
                        help=f"GPU work (bf16 matmuls) between the steps of a cycle, ms (default "
                             f"{DEFAULT_CYCLE_GAP_MS:g}; 0: back to back)")
    parser.add_argument("--cycle-retain", action="store_true",
                        help="keep host backups between cycles (retain_cpu_backup=True; default off)")
    parser.add_argument("--cycle-models", type=_parse_models, default=list(models.MODELS),
                        help=f"model weight layouts of the cycles part besides --layouts, from "
                             f"{','.join(models.MODELS)}, or none (default {','.join(models.MODELS)}; needs "
                             f"transformers, skipped without it)")
    parser.add_argument("--overlap-compute-ms", type=float, default=DEFAULT_OVERLAP_COMPUTE_MS,
                        help=f"the overlap part's compute step (bf16 matmuls) that a non-blocking resume hides "
                             f"behind, ms (default {DEFAULT_OVERLAP_COMPUTE_MS:g})")
    parser.add_argument("--compress-gib", type=float, default=DEFAULT_COMPRESS_GIB,
                        help=f"bf16 payload of each of the compress part's two tags (compressed, plain), GiB "
                             f"(default {DEFAULT_COMPRESS_GIB:g})")
    parser.add_argument("--disk-dir", default=None,
                        help="directory for the disk part (floor file and the library's backup files); a "
                             "private subdirectory is made in it and removed afterwards (default: the temp "
                             "directory, $TMPDIR or /tmp)")
    parser.add_argument("--disk-gib", type=float, default=None,
                        help=f"payload of the disk part, GiB (default min(--total-gib, {DEFAULT_DISK_GIB_CAP:g}))")
    parser.add_argument("--disk-layouts", type=_parse_layouts, default=None,
                        help=f"tensor counts for the disk part (default 1,16; at most {MAX_DISK_LAYOUTS})")
    parser.add_argument("--disk-repeats", type=int, default=1,
                        help="best of N rounds for the disk floor (default 1; each round writes and reads "
                             "--disk-gib)")
    parser.add_argument("--quick", action="store_true",
                        help=f"small smoke run: 1 GiB, layouts 1,16, 2 repeats, parts {','.join(QUICK_PARTS)} "
                             f"(the cycles part only when --parts names it: {QUICK_CYCLES} cycles)")
    parser.add_argument("--hook-mode", choices=("torch", "preload"), default="torch",
                        help="library hook mode (default torch; preload starts the library workers with "
                             "the engine in LD_PRELOAD)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="best of N for copies, raw VMM, no-backup pause/resume and allocation (default 3)")
    parser.add_argument("--device", type=int, default=None, help="CUDA device index (default: current device)")
    parser.add_argument("--alloc-count", type=int, default=2048, help="tensors in the allocation benchmark")
    parser.add_argument("--alloc-mib", type=float, default=2.0, help="MiB per tensor in the allocation benchmark")
    parser.add_argument("--worker-timeout", type=float, default=300.0,
                        help="seconds before a worker process is killed and its item reported failed")
    parser.add_argument("--out", default="bench-results", help="output directory (default ./bench-results)")
    parser.add_argument("--no-plot", action="store_true",
                        help="do not write rate_vs_layout.png, cycles.png, overlap.png and compress.png")
    return parser


def _config(parser: argparse.ArgumentParser, args: argparse.Namespace, argv: Optional[List[str]]) -> BenchConfig:
    """The run's configuration from the arguments; parser.error() on values that cannot work."""
    total_gib = args.total_gib if args.total_gib is not None else (1.0 if args.quick else 8.0)
    layouts = args.layouts if args.layouts is not None else list(QUICK_LAYOUTS if args.quick else DEFAULT_LAYOUTS)
    repeats = args.repeats if args.repeats is not None else (2 if args.quick else 3)
    parts = args.parts if args.parts is not None else list(QUICK_PARTS if args.quick else DEFAULT_PARTS)
    cycles = args.cycles if args.cycles is not None else (QUICK_CYCLES if args.quick else DEFAULT_CYCLES)
    total_bytes = int(total_gib * GiB)
    if total_bytes <= 0 or repeats <= 0 or args.alloc_count <= 0 or args.alloc_mib <= 0 or cycles <= 0:
        parser.error("--total-gib, --repeats, --alloc-count, --alloc-mib and --cycles must be positive")
    if not 0 <= args.cycle_gap_ms < float("inf"):
        parser.error("--cycle-gap-ms must be 0 or more")
    if total_bytes // layouts[-1] < 8:
        parser.error(f"--total-gib {total_gib} is too small for {layouts[-1]} tensors")
    if not 0 < args.overlap_compute_ms < float("inf"):
        parser.error("--overlap-compute-ms must be positive (the compute step the restore hides behind)")
    if "overlap" in parts and total_bytes // OVERLAP_TENSORS < 8:
        parser.error(f"--total-gib {total_gib} is too small for the overlap part's {OVERLAP_TENSORS} tensors")
    compress_bytes = int(args.compress_gib * GiB) if 0 < args.compress_gib < float("inf") else 0
    if compress_bytes // COMPRESS_TENSORS < 8:
        parser.error(f"--compress-gib must be positive and leave at least 8 bytes to each of the compress part's "
                     f"{COMPRESS_TENSORS} tensors")
    disk_gib = args.disk_gib if args.disk_gib is not None else min(total_gib, DEFAULT_DISK_GIB_CAP)
    disk_bytes = int(disk_gib * GiB)
    disk_layouts = list(args.disk_layouts if args.disk_layouts is not None else DEFAULT_DISK_LAYOUTS)
    if len(disk_layouts) > MAX_DISK_LAYOUTS:
        print(f"--disk-layouts: keeping the first {MAX_DISK_LAYOUTS} of {disk_layouts} to keep the disk part "
              f"quick", file=sys.stderr)
        disk_layouts = disk_layouts[:MAX_DISK_LAYOUTS]
    if "disk" in parts:
        if disk_bytes < DISK_IO_ALIGNMENT or args.disk_repeats <= 0:
            parser.error("--disk-gib and --disk-repeats must be positive")
        if disk_bytes // disk_layouts[-1] < DISK_IO_ALIGNMENT:
            parser.error(f"--disk-gib {disk_gib} is too small for {disk_layouts[-1]} tensors")
        if args.disk_dir is not None and not os.path.isdir(args.disk_dir):
            parser.error(f"--disk-dir {args.disk_dir!r} is not a directory")
    disk_dir = None
    if "disk" in parts:
        disk_dir = os.path.realpath(args.disk_dir) if args.disk_dir else tempfile.gettempdir()
    return BenchConfig(
        total_bytes=total_bytes, total_gib=total_gib, layouts=layouts, host_kinds=args.host_kinds,
        parts=parts, hook_mode=args.hook_mode, repeats=repeats, device=args.device,
        alloc_count=args.alloc_count, alloc_bytes=int(args.alloc_mib * MiB), quick=args.quick,
        disk_bytes=disk_bytes, disk_gib=disk_gib, disk_layouts=disk_layouts, disk_dir=disk_dir,
        disk_repeats=args.disk_repeats, cycles=cycles, cycle_gap_ms=args.cycle_gap_ms,
        cycle_retain=args.cycle_retain, cycle_models=args.cycle_models,
        overlap_compute_ms=args.overlap_compute_ms, compress_bytes=compress_bytes, compress_gib=args.compress_gib,
        argv=sys.argv if argv is None else ["bench", *argv],
        environment={name: os.environ.get(name) for name in RECORDED_ENV},
        stripped_from_workers=list(STRIPPED_ENV))


def _run_workers(config: BenchConfig, runner: Runner, base: Dict[str, str],
                 library: Dict[str, str]) -> Dict[str, WorkerResult]:
    """Every worker the configured parts need, one after another."""
    common = WorkerSpec(kind="", device=config.device, total_bytes=config.total_bytes, repeats=config.repeats,
                        hook_mode=config.hook_mode)

    def spec(kind: str, **fields: object) -> WorkerSpec:
        return WorkerSpec(**dict(vars(common), kind=kind, **fields))

    workers: Dict[str, WorkerResult] = {}
    if "nobackup" in config.parts:
        workers["nobackup"] = runner.run("nobackup", spec("nobackup", layouts=config.layouts), library)
    if "floors" in config.parts:
        vmm_layouts = [VmmLayoutSpec(label=str(n), count=n, size=config.total_bytes // n) for n in config.layouts]
        vmm_layouts += engine_vmm_layouts(workers.get("nobackup"), config.layouts)
        workers["floors"] = runner.run("floors", spec("floors", vmm_layouts=vmm_layouts), base)
    if "alloc" in config.parts:
        workers["alloc"] = runner.run("alloc", spec("alloc", alloc_count=config.alloc_count,
                                                    alloc_bytes=config.alloc_bytes), library)
    if "backup" in config.parts:
        for kind in config.host_kinds:
            for count in config.layouts:
                name = f"backup_{kind}_{count}"
                workers[name] = runner.run(name, spec("backup", host_kind=kind, layout=count), library)
    if "cycles" in config.parts:
        for kind in config.host_kinds:
            for label in config.cycle_labels():
                name = f"cycles_{kind}_{label}"
                model = label if label in config.cycle_models else None
                reason = models.unavailable(model) if model else None
                if reason is not None:  # no process for a layout that cannot be built here
                    print(f"-- {name}: skipped: {reason}", flush=True)
                    workers[name] = WorkerResult(kind="cycles", name=name, skipped=reason)
                    continue
                workers[name] = runner.run(name, spec(
                    "cycles", host_kind=kind, layout=None if model else int(label), model=model,
                    cycles=config.cycles, cycle_gap_s=config.cycle_gap_ms / 1e3, cycle_retain=config.cycle_retain,
                    gap_matrix=GAP_MATRIX, rss_later_s=CYCLE_RSS_LATER_S), library)
    if "disk" in config.parts:
        workers.update(run_disk_part(runner, common, str(config.disk_dir), config.disk_layouts, config.disk_bytes,
                                     default_variants(), config.disk_repeats, base, library))
    if "overlap" in config.parts:
        workers["overlap"] = runner.run("overlap", spec(
            "overlap", layout=OVERLAP_TENSORS, cycles=config.cycles, overlap_compute_s=config.overlap_compute_ms / 1e3,
            gap_matrix=GAP_MATRIX, rss_back_share=OVERLAP_RSS_BACK_SHARE, rss_back_poll_s=OVERLAP_RSS_POLL_S,
            rss_back_timeout_s=OVERLAP_RSS_TIMEOUT_S), library)
    if "compress" in config.parts:
        workers["compress"] = runner.run("compress", spec(
            "compress", total_bytes=config.compress_bytes, layout=COMPRESS_TENSORS, cycles=config.cycles), library)
    return workers


def _part_plot(report: Report, out: Path, no_plot: bool, part: str, file_name: str,
               render: Callable[[Report, Path], str]) -> str:
    """The figure of `part` in `out` (an older run's removed first); its message, "" when the part did not run."""
    path = out / file_name
    if path.exists():
        path.unlink()  # never leave an older run's figure next to these results
    if part not in report.config.parts:
        return ""
    message = f"{part} plot skipped: --no-plot" if no_plot else render(report, path)
    print(message)
    return message


def main(argv: Optional[List[str]] = None, prog: str = "python -m torch_memory_saver bench") -> int:
    """Run the benchmark; returns the exit status (see the package doc). `prog`: how the user started it."""
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    config = _config(parser, args, argv)
    try:
        pre = preflight()
    except BenchUnavailable as exc:
        print(f"torch_memory_saver bench: cannot run: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"torch_memory_saver bench: {config.total_gib:g} GiB, layouts {config.layouts}, host kinds "
          f"{config.host_kinds}, hook mode {config.hook_mode}, torch {pre.torch} (CUDA {pre.torch_cuda}), "
          f"library {pre.library_version} at {pre.library_path}; output in {out}", flush=True)
    base = base_env(str(pre.library_path))
    try:
        library = library_env(base, config.hook_mode)
    except Exception as exc:  # noqa: BLE001
        print(f"torch_memory_saver bench: cannot prepare hook mode {config.hook_mode!r}: {exc_text(exc)}",
              file=sys.stderr)
        return EXIT_UNAVAILABLE
    started = time.perf_counter()
    workers = _run_workers(config, Runner(out, args.worker_timeout), base, library)

    report = build_report(config, pre, workers, time.perf_counter() - started)
    plot_path = out / "rate_vs_layout.png"
    if plot_path.exists():
        plot_path.unlink()  # never leave an older run's figure next to these results
    report.plot = "plot skipped: --no-plot" if args.no_plot else render_plot(report, plot_path)
    print(report.plot)
    report.cycles_plot = _part_plot(report, out, args.no_plot, "cycles", "cycles.png", render_cycles_plot)
    report.overlap_plot = _part_plot(report, out, args.no_plot, "overlap", "overlap.png", render_overlap_plot)
    report.compress_plot = _part_plot(report, out, args.no_plot, "compress", "compress.png", render_compress_plot)
    json_path = out / "results.json"
    json_path.write_text(json.dumps(to_json(report), indent=1, allow_nan=False), encoding="utf-8")
    md_path = out / "results.md"
    md_path.write_text(render_markdown(report), encoding="utf-8")
    print(f"wrote {json_path} and {md_path}")
    print()
    print(render_rows_text(report))
    if report.mismatches:
        banner = "!" * 72
        print(f"\n{banner}\nDATA MISMATCH after resume: backed-up contents were not restored exactly\n"
              + "\n".join(report.mismatches) + f"\n{banner}", file=sys.stderr)
        return EXIT_MISMATCH
    if report.failures:
        print(f"\n{len(report.failures)} measurement(s) failed; see results.md and logs/", file=sys.stderr)
        return EXIT_MEASUREMENT_FAILED
    return EXIT_OK
