"""The figures (need matplotlib): rate_vs_layout.png, library rates and times against the floors per layout;
cycles.png, pause and resume rates and host memory per cycle of the cycles part."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, List, Optional

from .constants import MiB, exc_text
from .records import VmmLoop
from .report import OP_LABELS, Report


def _pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend; raises ImportError (or what matplotlib raises) without it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def render_plot(report: Report, path: Path) -> str:
    """Write the rate-vs-layout figure; returns a one-line message (also when matplotlib is missing)."""
    if not any(r.seconds is not None for r in report.rows):
        # e.g. --parts floors,cycles: nothing per layout to draw (cycles.png has the cycles)
        return "rate plot skipped: no pause/resume rows in this run"
    try:
        plt = _pyplot()
    except Exception as exc:  # noqa: BLE001 - optional
        return f"plot skipped: matplotlib not importable ({exc})"
    try:
        layouts = report.config.layouts
        rows = report.rows
        floors = report.floors

        def series(op: str, host: Optional[str], field: str, xs: Optional[List[int]] = None) -> List[float]:
            values = []
            for n in (layouts if xs is None else xs):
                row = next((r for r in rows if r.operation == op and r.host == host and r.layout == n), None)
                value = getattr(row, field) if row else None
                values.append(float("nan") if value is None else value)
            return values

        disk_layouts = [n for n in report.config.disk_layouts
                        if any(r.operation in ("pause_disk", "resume_disk") and r.layout == n and
                               r.seconds is not None for r in rows)]
        if disk_layouts:
            fig, (left, right, third) = plt.subplots(1, 3, figsize=(20, 5.5))
        else:
            fig, (left, right) = plt.subplots(1, 2, figsize=(14, 5.5))
            third = None
        styles = {"pause_cold": ("o", "-"), "pause_warm": ("s", "-"), "resume_cold": ("^", "--"),
                  "resume_warm": ("v", "--")}
        colors = {"pinned": ("tab:blue", "tab:cyan"), "mmap": ("tab:red", "tab:orange")}
        for host in report.config.host_kinds:
            for op, (marker, line) in styles.items():
                color = colors.get(host, ("k", "grey"))[0 if op.startswith("pause") else 1]
                left.plot(layouts, series(op, host, "gbps"), marker=marker, linestyle=line, color=color,
                          label=f"{OP_LABELS[op]} [{host}]")
        d2h = floors.pinned_d2h.gbps if floors.pinned_d2h else None
        h2d = floors.pinned_h2d.gbps if floors.pinned_h2d else None
        alloc = floors.pinned_alloc.gbps if floors.pinned_alloc else None
        if d2h:
            left.axhline(d2h, color="black", linestyle="--", linewidth=1, label=f"pinned D2H floor {d2h:.1f} GB/s")
            left.axhline(0.5 * d2h, color="black", linestyle=":", linewidth=1, label="0.5x D2H (cold target)")
        if h2d:
            left.axhline(h2d, color="dimgray", linestyle="-.", linewidth=1, label=f"pinned H2D floor {h2d:.1f} GB/s")
        if alloc:
            left.axhline(alloc, color="green", linestyle=":", linewidth=1,
                         label=f"fresh pinned alloc {alloc:.1f} GB/s")
        _log_x(left, layouts)
        left.set_xlabel("tensors in the tag (log scale)")
        left.set_ylabel("GB/s (payload / time)")
        left.set_title("with CPU backup")
        left.set_ylim(bottom=0)
        left.grid(True, alpha=0.3)
        left.legend(fontsize=7, loc="best")

        for op, color in (("pause_nobackup", "tab:purple"), ("resume_nobackup", "tab:green")):
            ms = [v * 1e3 for v in series(op, None, "seconds")]
            right.plot(layouts, ms, marker="o", color=color, label=f"library {OP_LABELS[op]}")
        vmm = floors.vmm
        for key, color, label in (("unmap_seconds", "tab:purple", "raw VMM unmap+release"),
                                  ("map_seconds", "tab:green", "raw VMM create+map+access")):
            ys = [_loop_value(vmm.get(str(n)), key) for n in layouts]
            right.plot(layouts, [float("nan") if y is None else y * 1e3 for y in ys], linestyle="--", color=color,
                       label=f"{label} (n handles)")
            ys = [_loop_value(vmm.get(f"engine-{n}") or vmm.get(str(n)), key) for n in layouts]
            if any(f"engine-{n}" in vmm for n in layouts):
                right.plot(layouts, [float("nan") if y is None else y * 1e3 for y in ys], linestyle=":",
                           color=color, label=f"{label} (engine handle count)")
        _log_x(right, layouts)
        if any(math.isfinite(y) and y > 0 for line in right.get_lines() for y in line.get_ydata()):
            right.set_yscale("log")  # (log of no data at all raises: e.g. --parts without nobackup)
        right.set_xlabel("tensors in the tag (log scale)")
        right.set_ylabel("ms")
        right.set_title("without backup (time, lower is better)")
        right.grid(True, alpha=0.3, which="both")
        right.legend(fontsize=7, loc="best")

        if third is not None:
            for op, color, marker in (("pause_disk", "tab:brown", "o"), ("resume_disk", "tab:olive", "^")):
                third.plot(disk_layouts, series(op, "disk", "gbps", disk_layouts), marker=marker, color=color,
                           label=f"library {OP_LABELS[op]}")
            disk = floors.disk
            for key, color, style in (("write", "tab:brown", "--"), ("read", "tab:olive", "-.")):
                rate = getattr(disk, f"{key}_gbps") if disk else None
                if rate:
                    third.axhline(rate, color=color, linestyle=style, linewidth=1,
                                  label=f"best direct disk {key} {rate:.2f} GB/s"
                                        + ("" if getattr(disk, f"direct_{key}") else " (page cache)"))
                    third.axhline(0.8 * rate, color=color, linestyle=":", linewidth=1, label=f"0.8x disk {key}")
            _log_x(third, disk_layouts)
            fs_type = disk.filesystem.fs_type if disk else None
            third.set_xlabel("tensors in the tag (log scale)")
            third.set_ylabel("GB/s (payload / time)")
            third.set_title(f"disk backup, {report.config.disk_gib:g} GiB"
                            + (f" ({fs_type})" if fs_type else ""))
            third.set_ylim(bottom=0)
            third.grid(True, alpha=0.3)
            third.legend(fontsize=7, loc="best")

        device = report.device.device_name or "GPU"
        _save(plt, fig, path, f"torch_memory_saver pause/resume vs floors on {device}, "
                              f"{report.config.total_gib:g} GiB ({report.date[:10]})")
    except Exception as exc:  # noqa: BLE001 - a broken plot must not lose the results
        return f"plot failed: {exc_text(exc)}"
    return f"wrote {path}"


def render_cycles_plot(report: Report, path: Path) -> str:
    """Write cycles.png (per cycle: pause GB/s, resume GB/s, RssAnon at resume return); a one-line message."""
    series = []  # (host, layout, cycles)
    for kind in report.config.host_kinds:
        for label in report.config.cycle_labels():
            worker = report.workers.get(f"cycles_{kind}_{label}")
            if worker is not None and not worker.skipped and worker.items.cycles:
                series.append((kind, label, worker.items))
    if not series:
        return "cycles plot skipped: no cycle was measured"
    try:
        plt = _pyplot()
    except Exception as exc:  # noqa: BLE001 - optional
        return f"cycles plot skipped: matplotlib not importable ({exc})"
    try:
        floors = report.floors
        fig, (pause, resume, memory) = plt.subplots(1, 3, figsize=(20, 5.5))
        styles = {"pinned": "-", "mmap": "--"}
        for kind, label, items in series:
            xs = [c.index for c in items.cycles]
            name = f"{label} [{kind}]"
            style = styles.get(kind, ":")
            for axis, op in ((pause, "pause"), (resume, "resume")):
                ys = [getattr(c, f"{op}_gbps") for c in items.cycles]
                axis.plot(xs, [float("nan") if y is None else y for y in ys], marker="o", linestyle=style,
                          label=name)
            before = items.rss_anon_before_first_pause
            ys = [float("nan") if before is None or c.rss_anon_at_resume_return is None
                  else (c.rss_anon_at_resume_return - before) / MiB for c in items.cycles]
            memory.plot(xs, ys, marker="o", linestyle=style, label=name)
        for axis, floor, what in ((pause, floors.pinned_d2h, "pinned D2H"), (resume, floors.pinned_h2d, "pinned H2D")):
            if floor and floor.gbps:
                axis.axhline(floor.gbps, color="black", linestyle="--", linewidth=1,
                             label=f"{what} floor {floor.gbps:.1f} GB/s")
        if floors.cold_serial_bound_gbps:
            pause.axhline(floors.cold_serial_bound_gbps, color="green", linestyle=":", linewidth=1,
                          label=f"cold host: fresh pinned alloc then D2H {floors.cold_serial_bound_gbps:.1f} GB/s")
        titles = ((pause, "pause + CPU backup", "GB/s (payload / time)"),
                  (resume, "resume + restore", "GB/s (payload / time)"),
                  (memory, "RssAnon at resume return minus before the 1st pause", "MiB"))
        for axis, title, unit in titles:
            axis.set_title(title)
            axis.set_xlabel("cycle")
            axis.set_ylabel(unit)
            axis.set_xticks(range(1, max(len(items.cycles) for _, _, items in series) + 1))
            axis.grid(True, alpha=0.3)
            axis.legend(fontsize=7, loc="best")
        pause.set_ylim(bottom=0)
        resume.set_ylim(bottom=0)
        gap = report.config.cycle_gap_ms
        _save(plt, fig, path, f"torch_memory_saver pause -> {gap:g} ms GPU work -> resume -> {gap:g} ms, per "
                              f"cycle, on {report.device.device_name or 'GPU'} ({report.date[:10]})")
    except Exception as exc:  # noqa: BLE001 - a broken plot must not lose the results
        return f"cycles plot failed: {exc_text(exc)}"
    return f"wrote {path}"


def render_figure(what: str, path: Path, draw: Callable[[Any], None]) -> str:
    """`draw(pyplot)` writes the figure of `what` to `path`; a one-line message, never an exception (a missing
    matplotlib or a broken figure must not lose the results)."""
    try:
        plt = _pyplot()
    except Exception as exc:  # noqa: BLE001 - optional
        return f"{what} plot skipped: matplotlib not importable ({exc})"
    try:
        draw(plt)
    except Exception as exc:  # noqa: BLE001 - a broken plot must not lose the results
        return f"{what} plot failed: {exc_text(exc)}"
    return f"wrote {path}"


def _save(plt: Any, fig: Any, path: Path, title: str) -> None:
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _loop_value(loop: Optional[VmmLoop], key: str) -> Optional[float]:
    return getattr(loop, key) if loop else None


def _log_x(axis: Any, layouts: List[int]) -> None:
    try:
        axis.set_xscale("log", base=2)
    except TypeError:  # matplotlib < 3.3
        axis.set_xscale("log", basex=2)
    axis.set_xticks(layouts)
    axis.set_xticklabels([str(n) for n in layouts])
    if len(layouts) == 1:
        axis.set_xlim(layouts[0] / 2, layouts[0] * 2)
