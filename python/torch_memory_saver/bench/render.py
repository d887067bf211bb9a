"""The report as text: results.md (markdown) and the compact table printed on the terminal."""

from __future__ import annotations

from typing import List, Optional

from .constants import GiB, MiB
from .report import RateFloor, Report


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
    lines.append(f"- payload {config.total_gib:g} GiB per layout, layouts {config.layouts} tensors, hook mode "
                 f"`{config.hook_mode}`, best of {config.repeats} for floors and no-backup runs; backup "
                 f"pauses/resumes are single shots in a fresh process")
    if "disk" in config.parts:
        lines.append(f"- disk part: {config.disk_gib:g} GiB, layouts {config.disk_layouts} tensors, in a "
                     f"temporary directory under `{config.disk_dir}`; floor best of "
                     f"{config.disk_repeats}, library pause/resume single shots in a fresh process; "
                     f"TMS_DISK_BACKUP_CHUNK_MB="
                     f"{config.environment.get('TMS_DISK_BACKUP_CHUNK_MB') or 'unset (64)'}")
    summary = report.summary
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
        fs = disk.filesystem
        where = (f"`{disk.directory}` ({fs.fs_type or '?'} on {fs.device or '?'}, "
                 f"mounted at {fs.mount_point or '?'})")
        for key in ("write", "read"):
            how = "O_DIRECT" if getattr(disk, f"direct_{key}") else "buffered, page cache (O_DIRECT refused)"
            lines.append(f"| disk sequential {key}, {disk.block_bytes / MiB:g} MiB blocks, {how}, in "
                         f"{md_escape(where)} | {fmt_gib(disk.bytes)} GiB | "
                         f"{fmt_ms(getattr(disk, f'{key}_seconds'))} | {fmt(getattr(disk, f'{key}_gbps'), 2)} |")
    plain = floors.torch_alloc
    if plain:
        lines.append(f"| plain torch alloc, {plain.count} x {config.alloc_bytes / MiB:g} MiB, empty cache | "
                     f"{plain.count} | {fmt_ms(plain.seconds)} | |")
    if disk and disk.notes:
        lines.append("")
        lines.append("Disk floor: " + md_escape("; ".join(disk.notes)))
    lines.append("")
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


def render_markdown(report: Report) -> str:
    """results.md: the card, the floors, the library-vs-floor table, RSS, mismatches and failures."""
    lines = _heading(report) + _floors_table(report) + _rows_table(report) + _rss_table(report)
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
    else:
        lines.append(f"(no plot: {report.plot})")
    lines.append("")
    return "\n".join(lines)


def render_rows_text(report: Report) -> str:
    """A compact plain-text version of the main table for the terminal."""
    out = [f"{'operation':40} {'host':6} {'n':>5} {'ms':>10} {'GB/s':>7} {'ratio':>6}  target"]
    for r in report.rows:
        verdict = "" if r.passed is None else ("ok" if r.passed else "MISS")
        tail = r.target.text + (f"  {verdict}" if verdict else "") + (f"  ERROR {r.error[:60]}" if r.error else "")
        out.append(f"{r.label[:40]:40} {(r.host or '-'):6} {str(r.layout or '-'):>5} "
                   f"{fmt_ms(r.seconds):>10} {fmt(r.gbps, 1):>7} {fmt(r.ratio, 2):>6}  {tail}")
    return "\n".join(out)
