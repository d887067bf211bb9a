"""The benchmark's compress part (compressed vs plain cold pauses) on stand-ins for torch and the library.

The worker's order (the first pause of the process is the compressed tag's),
what it records per round, a broken restore as a DATA MISMATCH, and the
report's single shot and medians against each target, in markdown and JSON.
"""

import json

import pytest

from bench_fakes import MIB, install_fakes, run_worker
from torch_memory_saver.bench import compress, render_markdown, render_rows_text
from torch_memory_saver.bench.compress_report import build_compress
from torch_memory_saver.bench.plot_parts import render_compress_plot
from torch_memory_saver.bench.records import (
    BenchConfig,
    CompressItems,
    CompressRound,
    LayoutInfo,
    Timing,
    WorkerResult,
    WorkerSpec,
    to_json,
)
from torch_memory_saver.bench.report import build_report
from torch_memory_saver.bench.runner import Preflight

GIB = 1 << 30


@pytest.fixture
def fakes(monkeypatch):
    return install_fakes(monkeypatch)


def _run(torch, cycles=2):
    spec = WorkerSpec(kind="compress", name="compress", device=0, total_bytes=2 * MIB, layout=16, cycles=cycles,
                      repeats=2)
    return run_worker(compress.compress, torch, spec)


def test_the_first_pause_is_the_compressed_tags_then_rounds_of_both(fakes):
    torch, saver = fakes
    result = _run(torch)
    assert result.errors == {} and result.mismatches == [] and result.fatal is None
    items = result.items
    assert items.layout == LayoutInfo(count=16, bytes=2 * MIB)
    assert items.d2h.bytes == items.h2d.bytes == 2 * MIB
    assert saver.tags["bench_compress_z"]["compress"] is True
    assert saver.tags["bench_compress_plain"]["compress"] is False
    assert [call[:2] for call in saver.calls] == [
        ("pause", "bench_compress_z"), ("resume", "bench_compress_z"),
        *[(verb, f"bench_compress_{name}") for _ in range(2) for name in ("plain", "z")
          for verb in ("pause", "resume")]]
    first = items.first
    assert first.index == 0 and first.z_pause_seconds > 0 and first.z_resume_seconds > 0
    assert first.plain_pause_seconds is None and first.z_host_bytes == 2 * MIB * 7 // 10
    assert [r.index for r in items.rounds] == [1, 2]
    for round_ in items.rounds:
        assert round_.plain_pause_seconds > 0 and round_.z_pause_seconds > 0
        assert round_.plain_host_bytes == 2 * MIB and round_.z_host_bytes == 2 * MIB * 7 // 10
        assert round_.contents_exact is True
    assert result.verified == 1 + 2 * 2
    assert saver.retain_cpu_backup is False
    # Both tags hold the same weight-like values (not all zeros: the comparison has something to compare).
    z, plain = saver.tags["bench_compress_z"]["tensors"], saver.tags["bench_compress_plain"]["tensors"]
    assert [t.values for t in z] == [t.values for t in plain] and any(v for t in z for v in t.values)


def test_a_broken_restore_is_a_data_mismatch(fakes):
    torch, saver = fakes
    saver.corrupt = True
    result = _run(torch, cycles=1)
    assert len(result.mismatches) == 3
    assert result.mismatches[0].startswith("compress, z tag, first pause, after resume: tensor 15 of 16: 1 of")
    assert [r.contents_exact for r in (result.items.first, *result.items.rounds)] == [False, False]
    assert "DATA MISMATCH after round(s) [0, 1]" in build_compress(result).note


# ---- the report ----------------------------------------------------------------------------------


def _round(index, z_pause, z_resume, plain_pause=None, plain_resume=None, z_host=None, plain_host=None):
    return CompressRound(index=index, z_pause_seconds=z_pause, z_resume_seconds=z_resume,
                         plain_pause_seconds=plain_pause, plain_resume_seconds=plain_resume,
                         z_host_bytes=z_host, plain_host_bytes=plain_host, contents_exact=True)


def _worker(first, rounds):
    payload = 2 * GIB
    items = CompressItems(layout=LayoutInfo(count=16, bytes=payload), d2h=Timing(seconds=payload / 50e9, bytes=payload),
                          h2d=Timing(seconds=payload / 50e9, bytes=payload), first=first, rounds=rounds)
    return WorkerResult(kind="compress", name="compress", items=items, verified=1 + 2 * len(rounds))


def _config():
    return BenchConfig(total_bytes=8 * GIB, total_gib=8, layouts=[1], host_kinds=["pinned"], parts=["compress"],
                       cycles=3, compress_bytes=2 * GIB, compress_gib=2)


def test_the_report_sets_the_first_compressed_pause_apart_and_judges_each_target():
    payload = 2 * GIB
    s = payload / 1e9  # seconds at 1 GB/s
    first = _round(0, s / 20, s / 40, z_host=int(0.7 * payload))  # 20 GB/s: 0.4x D2H, 1.5x slower than later
    rounds = [_round(1, s / 30, s / 45, s / 25, s / 48, int(0.69 * payload), payload),
              _round(2, s / 32, s / 46, s / 26, s / 47, int(0.7 * payload), payload),
              _round(3, s / 31, s / 44, s / 33, s / 49, int(0.71 * payload), payload)]
    report = build_report(_config(), Preflight(), {"compress": _worker(first, rounds)}, 1.0)
    part = report.compress
    metrics = {m.key: m for m in part.metrics}
    assert (part.rounds, part.bytes, round(part.d2h_gbps, 6)) == (3, payload, 50.0)
    z_pause = metrics["z_pause"]
    assert (z_pause.first, z_pause.median, z_pause.values) == (s / 20, s / 31, 3)
    later = metrics["z_first_vs_later"]
    assert round(later.first, 6) == 1.55 and later.median is None
    assert (later.pass_first, later.pass_median) == (False, None)
    link = metrics["z_pause_d2h"]
    assert (round(link.first, 6), round(link.median, 6)) == (0.4, 0.62)
    assert (link.pass_first, link.pass_median) == (False, True)
    versus = metrics["z_vs_plain"]  # per round: 30/25, 32/26 and 31/33 GB/s
    assert versus.first is None and round(versus.median, 6) == 1.2 and versus.pass_median is True
    assert metrics["plain_pause"].first is None and metrics["plain_pause"].median == s / 26
    assert round(metrics["z_resume_h2d"].first, 6) == 0.8 and round(metrics["z_resume_h2d"].median, 6) == 0.9
    assert round(metrics["z_host"].first, 3) == 0.7 and round(metrics["z_host"].median, 3) == 0.7
    assert metrics["plain_host"].median == 1.0
    assert (part.targets_judged, part.targets_met) == (4, 2)
    assert part.error is None and part.note == ""

    markdown = render_markdown(report)
    assert "## Compress: compressed vs plain cold pauses" in markdown
    assert "| measurement | unit | first pause | median (3 rounds) | target | verdict |" in markdown
    assert ("| compressed pause: the process's first / median of the rounds | x | 1.55 | - | target <= 1.2 | "
            "1st **miss** |") in markdown
    assert ("| compressed pause rate / pinned D2H | x | 0.40 | 0.62 | target >= 0.6 | 1st **miss**, median pass |"
            in markdown)
    assert "| compressed / plain pause rate, same round | x | - | 1.20 | target >= 1.0 | median pass |" in markdown
    assert "| plain pause (cold) | ms | - | 82.6 |  | - |" in markdown
    assert "Targets met: **2 of 4** judged values" in markdown
    assert "- compress part: 2 GiB of bf16 weight-like values" in markdown
    assert "## Overlap" not in markdown
    assert "target <= 1.2: 1st MISS" in render_rows_text(report)
    data = json.loads(json.dumps(to_json(report), allow_nan=False))
    assert data["overlap"] is None and data["compress"]["rounds"] == 3
    line = next(m for m in data["compress"]["metrics"] if m["key"] == "z_pause_d2h")
    assert (line["pass_first"], line["pass_median"], line["target"]["text"]) == (False, True, ">= 0.6")


def test_a_compress_worker_that_stopped_gives_its_error_and_what_it_measured():
    stopped = _worker(_round(0, 0.1, 0.05, z_host=GIB), [])
    stopped.errors["round 1: pause plain"] = "RuntimeError: out of host memory\ntrace"
    report = build_report(_config(), Preflight(), {"compress": stopped}, 1.0)
    part = report.compress
    assert part.error == "round 1: pause plain: RuntimeError: out of host memory"
    metrics = {m.key: m for m in part.metrics}
    assert metrics["z_pause"].first == 0.1 and metrics["z_pause"].median is None
    assert metrics["z_first_vs_later"].first is None  # nothing later to compare with
    assert [(f.worker, f.item) for f in report.failures] == [("compress", "round 1: pause plain")]
    assert build_compress(None).error == "not run"
    assert build_compress(WorkerResult(kind="compress")).error == "not measured"


def test_the_compress_plot_never_raises(tmp_path, monkeypatch):
    from torch_memory_saver.bench import plot

    report = build_report(_config(), Preflight(), {"compress": _worker(None, [])}, 1.0)
    assert render_compress_plot(report, tmp_path / "c.png") == "compress plot skipped: no compressed pause was measured"
    worker = _worker(_round(0, 0.1, 0.05), [_round(1, 0.08, 0.05, 0.1, 0.05)])
    report = build_report(_config(), Preflight(), {"compress": worker}, 1.0)
    monkeypatch.setattr(plot, "_pyplot", lambda: 1 / 0)
    assert render_compress_plot(report, tmp_path / "c.png").startswith("compress plot skipped: matplotlib not")
    monkeypatch.undo()
    pytest.importorskip("matplotlib")
    assert render_compress_plot(report, tmp_path / "c.png") == f"wrote {tmp_path / 'c.png'}"
