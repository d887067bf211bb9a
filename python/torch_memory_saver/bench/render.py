"""The report as text: results.md (markdown) and the compact table printed on the terminal."""

from __future__ import annotations

from typing import List, Optional

from .constants import GiB, MiB
from .cycles_report import Spread
from .records import DiskFloor
from .render_metrics import compress_section, heading_lines, metric_lines, overlap_section
from .report import RateFloor, Report

# Parts whose results have a section of their own and nothing in the floors or library-vs-floor tables.
OWN_SECTION_PARTS = ("overlap", "compress")


def fmt_ms(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    ms = seconds * 1e3
    if ms < 10:
        return f"{ms:.3f}"
    if ms < 1000:
        return f"{ms:.1f}"
    return f"{ms:.0f}"


def fmt(value: Optional[float], digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def fmt_gib(value: Optional[int]) -> str:
    return "-" if value is None else f"{value / GiB:.2f}"


def md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _heading(report: Report) -> List[str]:
    device, config, versions, git, host = report.device, report.config, report.versions, report.git, report.host
    name = device.device_name or "unknown GPU"
    lines = [f"# torch_memory_saver pause/resume benchmark on {name}", ""]
    commit_text = f"{git.commit[:12]}{' (dirty)' if git.dirty else ''}" if git.commit else "not a git checkout"
    lines.append(f"- date: {report.date}; commit: {commit_text}; run took {report.wall_seconds:.0f} s")
    lines.append(f"- GPU {device.device_index}: {name}, {fmt_gib(device.device_total_memory)} GiB, "
                 f"compute capability {device.capability}")
    lines.append(f"- torch {versions.torch} (CUDA {versions.torch_cuda}), CUDA driver API "
                 f"{versions.cuda_driver}, torch_memory_saver {versions.torch_memory_saver}, "
                 f"Python {versions.python}")
    lines.append(f"- host: {host.cpu_count} CPUs, {fmt_gib(host.mem_total_bytes)} GiB RAM, THP "
                 f"`{host.transparent_hugepage}`")
    if _main_table_ran(report):
        lines.append(f"- payload {config.total_gib:g} GiB per layout, layouts {config.layouts} tensors, hook mode "
                     f"`{config.hook_mode}`, best of {config.repeats} for floors and no-backup runs; backup "
                     f"pauses/resumes are single shots in a fresh process")
    if "disk" in config.parts:
        lines.append(f"- disk part: {config.disk_gib:g} GiB, layouts {config.disk_layouts} tensors, in a "
                     f"temporary directory under `{config.disk_dir}`; floor variants best of "
                     f"{config.disk_repeats}, library pause/resume single shots in a fresh process; "
                     + ", ".join(f"{name}={config.environment.get(name) or f'unset ({default})'}"
                                 for name, default in (("TMS_DISK_BACKUP_CHUNK_MB", 16),
                                                       ("TMS_CONF", "defaults"))))
    if "cycles" in config.parts:
        lines.append(f"- cycles part: {config.cycles} cycles of pause -> gap -> resume -> gap, gap "
                     f"{config.cycle_gap_ms:g} ms of GPU work, CPU backup with retain_cpu_backup="
                     f"{config.cycle_retain}, layouts {config.cycle_labels()}, one fresh process per host kind "
                     f"and layout")
    lines += heading_lines(report)
    summary = report.summary
    if _main_table_ran(report):
        lines.append(f"- targets met: **{summary.targets_met} of {summary.targets_judged}** judged rows"
                     + (f"; {summary.rows_without_result} rows without a result" if summary.rows_without_result
                        else ""))
    if report.mismatches:
        contents = "**DATA MISMATCH** (see below)"
    elif report.verifications:
        contents = f"exact ({report.verifications} full comparisons after resume)"
    else:
        contents = "not checked (no backed-up pause/resume completed)"
    lines.append(f"- contents after resume: {contents}")
    lines.append("")
    return lines


def _main_table_ran(report: Report) -> bool:
    """Whether a part that fills the floors and library-vs-floor tables ran (overlap and compress have their own)."""
    return any(part not in OWN_SECTION_PARTS for part in report.config.parts)


def _rate_line(label: str, floor: Optional[RateFloor]) -> str:
    floor = floor or RateFloor(seconds=None, bytes=None, gbps=None)
    return f"| {label} | {fmt_gib(floor.bytes)} GiB | {fmt_ms(floor.seconds)} | {fmt(floor.gbps, 1)} |"


def _floors_table(report: Report) -> List[str]:
    floors, config = report.floors, report.config
    lines = ["## Floors (same run)", "", "| floor | size / layout | time (ms) | GB/s |", "|---|---|---:|---:|"]
    lines.append(_rate_line("pinned D2H copy", floors.pinned_d2h))
    lines.append(_rate_line("pinned H2D copy", floors.pinned_h2d))
    lines.append(_rate_line("fresh pinned host allocation (torch.empty pin_memory)", floors.pinned_alloc))
    for direction, floor in (("D2H", floors.registered_d2h), ("H2D", floors.registered_h2d)):
        if floor:
            lines.append(_rate_line(f"{direction} copy, page-locked THP memory (cudaHostRegister; the engine's kind)",
                                    floor))
    if floors.cold_serial_bound_gbps:
        lines.append(f"| fresh pinned alloc then D2H, one after the other (derived) | | | "
                     f"{floors.cold_serial_bound_gbps:.1f} |")
    for label, v in sorted(floors.vmm.items(), key=lambda kv: (kv[1].count, kv[0])):
        which = " (engine handle count)" if label.startswith("engine-") else ""
        lines.append(f"| raw VMM create+map+access, {v.count} x {v.handle_bytes / MiB:g} MiB{which} | {label} | "
                     f"{fmt_ms(v.map_seconds)} | |")
        lines.append(f"| raw VMM unmap+release, {v.count} x {v.handle_bytes / MiB:g} MiB{which} | {label} | "
                     f"{fmt_ms(v.unmap_seconds)} | |")
    disk = floors.disk
    if disk:
        for key in ("write", "read"):
            how = getattr(disk, f"{key}_variant") or "no variant measured"
            lines.append(f"| disk {key}, the best direct variant: {md_escape(how)} | {fmt_gib(disk.bytes)} GiB | "
                         f"{fmt_ms(getattr(disk, f'{key}_seconds'))} | {fmt(getattr(disk, f'{key}_gbps'), 2)} |")
    plain = floors.torch_alloc
    if plain:
        lines.append(f"| plain torch alloc, {plain.count} x {config.alloc_bytes / MiB:g} MiB, empty cache | "
                     f"{plain.count} | {fmt_ms(plain.seconds)} | |")
    if disk:
        lines += ["", *_disk_variants_table(disk)]
    lines.append("")
    return lines


def _disk_variants_table(disk: DiskFloor) -> List[str]:
    """Every way the disk floor wrote and read the payload; the library's disk rows are judged by the best direct."""
    fs = disk.filesystem
    lines = [f"Disk floor variants, {fmt_gib(disk.bytes)} GiB in `{md_escape(disk.directory)}` ({fs.fs_type or '?'} on "
             f"{fs.device or '?'}, mounted at {fs.mount_point or '?'}); **floor**: the best O_DIRECT variant per "
             f"direction, which the library's disk rows are judged against.", "",
             "| variant | write (ms) | write GB/s | read (ms) | read GB/s | notes |", "|---|---:|---:|---:|---:|---|"]
    for v in disk.variants:
        cells = []
        for key in ("write", "read"):
            rate = fmt(getattr(v, f"{key}_gbps"), 2)
            if getattr(disk, f"{key}_variant") == v.label:
                rate = f"**{rate}**"
            cells += [fmt_ms(getattr(v, f"{key}_seconds")), rate]
        notes = "; ".join(v.notes + ([f"FAILED: {v.error}"] if v.error else []))
        lines.append(f"| {md_escape(v.label)} | {' | '.join(cells)} | {md_escape(notes)} |")
    if disk.notes:
        lines += ["", "Disk floor: " + md_escape("; ".join(disk.notes))]
    return lines


def _rows_table(report: Report) -> List[str]:
    lines = ["## Library vs floor", "",
             "Ratio: library GB/s / floor GB/s for backup rows (higher is better); library time / floor time "
             "for no-backup and allocation rows (lower is better). Times include a device synchronize after "
             "the call returns.", "",
             "| operation | host | tensors | engine allocs | time (ms) | GB/s | floor | ratio | target | pass "
             "| notes |",
             "|---|---|---:|---:|---:|---:|---|---:|---|---|---|"]
    for r in report.rows:
        passed = "-" if r.passed is None else ("yes" if r.passed else "**no**")
        notes = r.note
        if r.error:
            notes = (notes + "; " if notes else "") + "ERROR: " + r.error[:200]
        floor_text = r.floor.name
        if r.floor.gbps is not None and r.target.comparison == ">=":
            floor_text += f" {r.floor.gbps:.1f} GB/s"
        elif r.floor.seconds is not None:
            floor_text += f" {fmt_ms(r.floor.seconds)} ms"
        lines.append(f"| {r.label} | {r.host or '-'} | {r.layout if r.layout is not None else '-'} | "
                     f"{r.engine_allocations if r.engine_allocations is not None else '-'} | "
                     f"{fmt_ms(r.seconds)} | {fmt(r.gbps, 1)} | {md_escape(floor_text)} | "
                     f"{fmt(r.ratio, 2)} | {r.target.text} | {passed} | {md_escape(notes)} |")
    lines.append("")
    return lines


def _rss_table(report: Report) -> List[str]:
    if not report.rss:
        return []
    lines = ["## Process RSS (GiB)", "",
             "| host | tensors | payload | before pause | after cold pause | after resume | resume + settle "
             "| after resume (retain on) | after warm pause | after warm resume |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for _, v in sorted(report.rss.items(), key=lambda kv: (kv[1].host_kind, kv[1].layout)):
        settle = f" ({v.settle_seconds:.2f} s)" if v.settle_seconds is not None else ""
        lines.append(f"| {v.host_kind} | {v.layout} | {fmt_gib(v.bytes)} | {fmt_gib(v.before_pause)} | "
                     f"{fmt_gib(v.after_pause_cold)} | {fmt_gib(v.after_resume_cold)} | "
                     f"{fmt_gib(v.after_resume_cold_settled)}{settle} | {fmt_gib(v.after_resume_retained)} | "
                     f"{fmt_gib(v.after_pause_warm)} | {fmt_gib(v.after_resume_warm)} |")
    lines.append("")
    return lines


def _triple(values: Spread, digits: int = 2, scale: float = 1.0) -> str:
    """cycle 1 / steady median / steady worst."""
    values_in_order = (values.first, values.median, values.worst)
    return " / ".join(fmt(None if v is None else v / scale, digits) for v in values_in_order)


def _cycles_tables(report: Report) -> List[str]:
    config = report.config
    if "cycles" not in config.parts:
        return []
    lines = [f"## Cycles: pause -> gap -> resume -> gap, {config.cycles} cycles", "",
             "Cycle 1 is the first pause and resume of a fresh process; steady is cycles 2..N: their median and "
             "worst (the slowest). Ratio: library GB/s / floor GB/s of the same run (pause: pinned D2H, resume: "
             "pinned H2D); pauses also against the cold-host floor (fresh pinned allocation then D2H, derived). "
             f"The gap is {config.cycle_gap_ms:g} ms of GPU work (bf16 matmuls), measured; CPU backup, "
             f"retain_cpu_backup={config.cycle_retain}.", "",
             "| operation | host | layout | tensors | engine allocs | GB/s: 1st / median / worst | floor | "
             "ratio: 1st / median / worst | cold-host ratio: 1st / median / worst | gap ms (median) | notes |",
             "|---|---|---|---:|---:|---|---|---|---|---:|---|"]
    for r in report.cycles:
        notes = r.note
        if r.error:
            notes = (notes + "; " if notes else "") + (r.error if r.error.startswith("skipped") else
                                                         "ERROR: " + r.error[:200])
        floor = f"{r.floor} {fmt(r.floor_gbps, 1)} GB/s" if r.floor_gbps else f"{r.floor} missing"
        cold = _triple(r.cold_ratio) if r.cold_floor_gbps else "-"
        lines.append(f"| {r.operation} | {r.host} | {r.layout} | {r.tensors if r.tensors is not None else '-'} | "
                     f"{r.engine_allocations if r.engine_allocations is not None else '-'} | "
                     f"{_triple(r.gbps, 1)} | {floor} | {_triple(r.ratio)} | {cold} | "
                     f"{fmt_ms(r.gap_seconds.median)} | {md_escape(notes)} |")
    lines.append("")
    if report.cycle_rss:
        lines += ["### Host memory over the cycles", "",
                  "RssAnon minus RssAnon before the first pause, MiB: right when resume returned, and about 1 s "
                  "later (never after the next pause began); 1st / median / worst (the largest) of cycles 2..N.", "",
                  "| host | layout | payload GiB | retain | before 1st pause GiB | at resume return | ~1 s later | "
                  "later reading after (s, soonest) | notes |", "|---|---|---:|---|---:|---|---|---:|---|"]
        for v in report.cycle_rss:
            lines.append(f"| {v.host} | {v.layout} | {fmt_gib(v.bytes)} | {'on' if v.retain else 'off'} | "
                         f"{fmt_gib(v.before_first_pause)} | {_triple(v.at_return, 0, MiB)} | "
                         f"{_triple(v.later, 0, MiB)} | {fmt(v.later_seconds.worst, 2)} | {md_escape(v.note)} |")
        lines.append("")
    per_cycle = []
    for kind in config.host_kinds:
        for label in config.cycle_labels():
            worker = report.workers.get(f"cycles_{kind}_{label}")
            cycles = worker.items.cycles if worker is not None and not worker.skipped else []
            for op in ("pause", "resume"):
                if cycles:
                    rates = " | ".join(fmt(getattr(c, f"{op}_gbps"), 1) for c in cycles)
                    per_cycle.append(f"| {kind} | {label} | {op} | {rates} |")
    if per_cycle:
        width = max(line.count("|") for line in per_cycle) - 4
        lines += ["### GB/s per cycle", "",
                  "| host | layout | operation | " + " | ".join(str(i) for i in range(1, width + 1)) + " |",
                  "|---|---|---|" + "---:|" * width, *per_cycle, ""]
    return lines


def render_markdown(report: Report) -> str:
    """results.md: the card, the floors, the library-vs-floor table, RSS, the cycles, overlap and compress parts,
    mismatches and failures."""
    main = _floors_table(report) + _rows_table(report) if _main_table_ran(report) else []
    lines = (_heading(report) + main + _rss_table(report) + _cycles_tables(report) + overlap_section(report)
             + compress_section(report))
    if report.skipped:
        lines += ["## Skipped", ""] + [f"- `{name}`: {md_escape(why)}" for name, why in report.skipped.items()] + [""]
    if report.mismatches:
        lines += ["## DATA MISMATCH", ""] + [f"- {md_escape(m)}" for m in report.mismatches] + [""]
    if report.failures:
        lines += ["## Failed measurements", ""]
        for f in report.failures:
            first = f.error.splitlines()[0] if f.error else ""
            lines.append(f"- `{f.worker}`{' / ' + f.item if f.item else ''}: {md_escape(first[:400])}")
        lines.append("")
    if report.plot.startswith("wrote"):
        lines.append("![rate vs layout](rate_vs_layout.png)")
    elif _main_table_ran(report):
        lines.append(f"(no plot: {report.plot})")
    for part, message, image, alt in (("cycles", report.cycles_plot, "cycles.png", "rates per cycle"),
                                      ("overlap", report.overlap_plot, "overlap.png", "non-blocking resume"),
                                      ("compress", report.compress_plot, "compress.png", "compressed pauses")):
        if message.startswith("wrote"):
            lines += ["", f"![{alt}]({image})"]
        elif message:
            lines += ["", f"(no {part} plot: {message})"]
    lines.append("")
    return "\n".join(lines)


def render_rows_text(report: Report) -> str:
    """A compact plain-text version of the main table for the terminal."""
    out = [f"{'operation':40} {'host':6} {'n':>5} {'ms':>10} {'GB/s':>7} {'ratio':>6}  target"]
    for r in report.rows:
        verdict = "" if r.passed is None else ("ok" if r.passed else "MISS")
        tail = r.target.text + (f"  {verdict}" if verdict else "") + (f"  ERROR {r.error[:60]}" if r.error else "")
        out.append(f"{r.label[:40]:40} {(r.host or '-'):6} {(r.layout or '-')!s:>5} "
                   f"{fmt_ms(r.seconds):>10} {fmt(r.gbps, 1):>7} {fmt(r.ratio, 2):>6}  {tail}")
    if report.cycles:
        out.append("")
        out.append(f"{'cycles (GB/s and x floor: 1st / median / worst)':48} {'host':6} {'layout':>8}")
        for c in report.cycles:
            tail = f"  {c.error[:60]}" if c.error else ""
            out.append(f"{c.operation + ', ' + _triple(c.gbps, 1) + ' GB/s':48} {c.host:6} {c.layout:>8}  "
                       f"{_triple(c.ratio)} x {c.floor}{tail}")
    out += metric_lines(report)
    return "\n".join(out)
