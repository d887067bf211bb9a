"""The overlap and compress parts' figures (need matplotlib): overlap.png and compress.png.

Like plot.py's, each returns a one-line message and never raises (plot.render_figure).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional

from .constants import gbps
from .metrics import Metric
from .plot import _save, render_figure
from .report import Report

_NAN = float("nan")


def _ms(value: Optional[float]) -> float:
    return _NAN if value is None else value * 1e3


def _bars(axis: Any, metrics: Dict[str, Metric], keys: List[str], labels: List[str], title: str) -> None:
    """Horizontal bars of the medians (ms), cycle 1 as a marker on each."""
    rows = list(range(len(keys)))[::-1]  # the first key on top
    medians = [_ms(metrics[k].median) for k in keys]
    firsts = [_ms(metrics[k].first) for k in keys]
    axis.barh(rows, medians, color="tab:blue", alpha=0.7, label="median")
    axis.plot(firsts, rows, "kx", markersize=9, label="cycle 1")
    for row, value, first in zip(rows, medians, firsts):
        if value == value:  # not NaN; the text right of both the bar and the marker
            right = max(value, first) if first == first else value
            axis.annotate(f"  median {value:.1f} ms", (right, row), va="center", fontsize=8)
    axis.set_yticks(rows)
    axis.set_yticklabels(labels, fontsize=8)
    axis.set_xlabel("ms")
    axis.set_title(title)
    axis.grid(True, axis="x", alpha=0.3)
    axis.legend(fontsize=7, loc="lower right")


def render_overlap_plot(report: Report, path: Path) -> str:
    """Write overlap.png: the resume's milestones from the call, and the compute step three ways."""
    part = report.overlap
    metrics = {m.key: m for m in part.metrics} if part else {}
    if not any(m.median is not None for m in metrics.values()):
        return "overlap plot skipped: no overlap cycle was measured"

    def draw(plt: Any) -> None:
        fig, (resume, compute) = plt.subplots(1, 2, figsize=(16, 5))
        _bars(resume, metrics, ["blocking_resume", "nonblocking_return", "restore", "rss_back"],
              ["blocking resume returned", "non-blocking resume returned", "restore done (GPU events)",
               "host backup given back (RSS)"], "resume, from the call")
        hidden = metrics["hidden"].median
        _bars(compute, metrics, ["compute", "blocking_compute", "overlapped_compute"],
              ["(a) compute alone", "(b) blocking resume + compute", "(c) non-blocking resume + compute"],
              "the compute step" + ("" if hidden is None else f": {hidden:.0%} of the restore hidden (median)"))
        _save(plt, fig, path, f"torch_memory_saver non-blocking resume, {report.config.total_gib:g} GiB, on "
                              f"{report.device.device_name or 'GPU'} ({report.date[:10]})")

    return render_figure("overlap", path, draw)


def render_compress_plot(report: Report, path: Path) -> str:
    """Write compress.png: pause and resume rates per round, compressed and plain, against the link."""
    worker = report.workers.get("compress")
    items = worker.items if worker is not None and not worker.skipped else None
    if items is None or items.first is None or items.layout is None:
        return "compress plot skipped: no compressed pause was measured"
    payload, part = items.layout.bytes, report.compress
    rounds = [items.first, *items.rounds]  # round 0: the process's first pause, compressed only

    def draw(plt: Any) -> None:
        fig, (pause, resume) = plt.subplots(1, 2, figsize=(16, 5))
        for axis, op in ((pause, "pause"), (resume, "resume")):
            for name, label, color in (("z", "compressed", "tab:red"), ("plain", "plain", "tab:blue")):
                measured = [r for r in rounds if getattr(r, f"{name}_{op}_seconds") is not None]
                axis.plot([r.index for r in measured],
                          [gbps(payload, getattr(r, f"{name}_{op}_seconds")) for r in measured], marker="o",
                          color=color, label=label)
            floor = (part.d2h_gbps if op == "pause" else part.h2d_gbps) if part else None
            if floor:
                axis.axhline(floor, color="black", linestyle="--", linewidth=1,
                             label=f"pinned {'D2H' if op == 'pause' else 'H2D'} {floor:.1f} GB/s")
                if op == "pause":
                    axis.axhline(0.6 * floor, color="black", linestyle=":", linewidth=1,
                                 label="0.6x D2H (compressed target)")
            axis.set_xticks([r.index for r in rounds])
            axis.set_xticklabels(["1st"] + [str(r.index) for r in items.rounds])
            axis.set_xlabel("round (1st: the first pause of the process, compressed tag only)")
            axis.set_ylabel("GB/s of uncompressed bytes")
            axis.set_title(f"cold {op}")
            axis.set_ylim(bottom=0)
            axis.grid(True, alpha=0.3)
            axis.legend(fontsize=7, loc="best")
        _save(plt, fig, path, f"torch_memory_saver compressed vs plain CPU backup, {report.config.compress_gib:g} "
                              f"GiB bf16, on {report.device.device_name or 'GPU'} ({report.date[:10]})")

    return render_figure("compress", path, draw)
