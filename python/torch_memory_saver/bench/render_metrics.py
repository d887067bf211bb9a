"""The overlap and compress parts as text: their lines in the heading, their sections of results.md, their lines
on the terminal. Each value stands next to its target and its verdict (pass or miss)."""

from __future__ import annotations

from typing import List, Optional

from .constants import COMPRESS_TENSORS, OVERLAP_RSS_BACK_SHARE, OVERLAP_TENSORS, GiB
from .metrics import JudgedPart, Metric
from .report import Report


def fmt_value(value: Optional[float], unit: str) -> str:
    """A metric's value in its unit (ms values are seconds, % values fractions)."""
    if value is None:
        return "-"
    if unit == "ms":
        ms = value * 1e3
        return f"{ms:.3f}" if ms < 10 else f"{ms:.1f}"
    if unit == "GB/s":
        return f"{value:.1f}"
    if unit == "%":
        return f"{value * 100:.0f}"
    return f"{value:.2f}"


def verdict(m: Metric, markdown: bool = True) -> str:
    """'1st pass, median miss' (only the values that were judged); '-' without a target."""
    if m.target is None:
        return "-"
    miss = "**miss**" if markdown else "MISS"
    said = [f"{name} {'pass' if passed else miss}" for name, passed in (("1st", m.pass_first),
                                                                         ("median", m.pass_median))
            if passed is not None]
    return ", ".join(said) or "not measured"


def heading_lines(report: Report) -> List[str]:
    """The configuration of the parts that ran, for the heading of results.md."""
    config, lines = report.config, []
    if "overlap" in config.parts:
        lines.append(f"- overlap part: {config.total_gib:g} GiB in {OVERLAP_TENSORS} tensors, pinned CPU backup, "
                     f"retain_cpu_backup=False, {config.cycles} cycles of blocking resume, non-blocking resume and "
                     f"a compute step of {config.overlap_compute_ms:g} ms (bf16 matmuls) three ways, one fresh "
                     f"process")
    if "compress" in config.parts:
        lines.append(f"- compress part: {config.compress_gib:g} GiB of bf16 weight-like values (normal, std 0.02) "
                     f"in {COMPRESS_TENSORS} tensors, in a compressed tag and a plain one; cold pauses "
                     f"(retain_cpu_backup=False); the first pause of the process, then {config.cycles} rounds; one "
                     f"fresh process")
    return lines


def _table(part: JudgedPart, first: str, median: str) -> List[str]:
    lines = [f"| measurement | unit | {first} | {median} | target | verdict |", "|---|---|---:|---:|---|---|"]
    for m in part.metrics:
        goal = f"target {m.target.text}" if m.target else ""
        lines.append(f"| {m.label} | {m.unit} | {fmt_value(m.first, m.unit)} | {fmt_value(m.median, m.unit)} | "
                     f"{goal} | {verdict(m)} |")
    return lines


def _trailer(part: JudgedPart, what: str) -> List[str]:
    lines = [f"Targets met: **{part.targets_met} of {part.targets_judged}** judged values (a miss does not change "
             f"the exit status)."]
    if part.note:
        lines.append(f"Notes: {part.note}.")
    if part.error:
        lines.append(f"ERROR ({what}): {part.error[:400]}")
    return [*lines, ""]


def _floors(part: JudgedPart) -> str:
    size = "-" if part.bytes is None else f"{part.bytes / GiB:.2f}"
    d2h = "-" if part.d2h_gbps is None else f"{part.d2h_gbps:.1f}"
    h2d = "-" if part.h2d_gbps is None else f"{part.h2d_gbps:.1f}"
    return f"pinned D2H {d2h} GB/s and H2D {h2d} GB/s of the same {size} GiB, measured in the same worker"


def _section(title: str, intro: str, part: JudgedPart, first: str, median: str, what: str) -> List[str]:
    return [title, "", intro, "", *_table(part, first, median), "", *_trailer(part, what)]


def overlap_section(report: Report) -> List[str]:
    part = report.overlap
    if part is None:
        return []
    intro = (f"Cycle 1 is the single shot of a fresh process; the median is over all {part.cycles} cycles, of each "
             f"cycle's own value (ratios included). Floors: {_floors(part)}. Resume times are host wall time from "
             f"the call; the restore is timed by CUDA events on the current stream, from before the call to "
             f"wait(stream=current); the host backup counts as given back when RSS (/proc/self/statm) is "
             f"{OVERLAP_RSS_BACK_SHARE:.0%} of its bytes below RSS before the resume. (a), (b) and (c) run from an "
             f"idle device until idle again and each ends with a small read of every tensor.")
    return _section("## Overlap: non-blocking resume behind compute", intro, part, "cycle 1",
                    f"median ({part.cycles} cycles)", "overlap")


def compress_section(report: Report) -> List[str]:
    part = report.compress
    if part is None:
        return []
    intro = (f"The single shot is the first pause of the process, of the compressed tag; the median is over "
             f"{part.rounds} rounds of pause and resume of the plain tag, then of the compressed one (each timed "
             f"from an idle device until idle again; retain_cpu_backup=False, so every pause is cold). Rates are of "
             f"uncompressed bytes. Floors: {_floors(part)}. Host bytes: the engine's backup bytes of the tag while "
             f"paused.")
    return _section("## Compress: compressed vs plain cold pauses", intro, part, "first pause",
                    f"median ({part.rounds} rounds)", "compress")


def metric_lines(report: Report) -> List[str]:
    """The two parts' values for the terminal, each with its target."""
    out: List[str] = []
    for title, part in (("overlap (cycle 1 / median)", report.overlap),
                        ("compress (first pause / median of rounds)", report.compress)):
        if part is None:
            continue
        out += ["", title]
        for m in part.metrics:
            tail = f"  target {m.target.text}: {verdict(m, markdown=False)}" if m.target else ""
            out.append(f"  {m.label[:62]:62} {fmt_value(m.first, m.unit):>10} {fmt_value(m.median, m.unit):>10} "
                       f"{m.unit:4}{tail}")
        if part.error:
            out.append(f"  ERROR {part.error[:100]}")
    return out
