"""The benchmark's cycles part (pause -> gap -> resume -> gap) on stand-ins for torch and the library.

What the worker records per cycle, how the report sets cycle 1 apart from the
steady state as ratios to the run's floors, host memory against the first
pause, a model layout (and its skip without transformers), and the command
line that asks for all of it.
"""

import json
import sys

import pytest

from bench_fakes import MIB, RecordingRunner, install_fakes
from torch_memory_saver.bench import cli, cycles, models, render_markdown, render_rows_text
from torch_memory_saver.bench.records import (
    BenchConfig,
    Cycle,
    CycleLayout,
    CyclesItems,
    EngineTagStats,
    FloorsItems,
    PinnedAlloc,
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


def _run(torch, **fields):
    spec = WorkerSpec(kind="cycles", name="cycles", device=0, total_bytes=2 * MIB, host_kind="pinned",
                      gap_matrix=4, **fields)
    result = WorkerResult(kind="cycles", name="cycles")
    cycles.cycles(torch, spec, result)
    return WorkerResult.from_json_data(json.loads(json.dumps(to_json(result))))  # as the parent reads it


def test_each_cycle_records_its_rates_host_memory_gaps_and_contents(fakes):
    torch, saver = fakes
    result = _run(torch, layout=4, cycles=3, cycle_gap_s=0.001, rss_later_s=0.01)
    assert result.errors == {} and result.mismatches == [] and result.skipped is None
    items = result.items
    assert items.layout == CycleLayout(label="4", tensors=4, bytes=2 * MIB, host_kind="pinned", retain=False)
    assert items.gap.matrix == 4 and items.gap.matmuls >= 1 and items.gap.matmul_seconds > 0
    assert items.rss_anon_before_first_pause > 0
    assert [c.index for c in items.cycles] == [1, 2, 3]
    for cycle in items.cycles:
        assert cycle.pause_gbps == 2 * MIB / cycle.pause_seconds / 1e9
        assert cycle.resume_gbps == 2 * MIB / cycle.resume_seconds / 1e9
        assert cycle.resume_returned_seconds <= cycle.resume_seconds
        assert cycle.gap_after_pause_seconds > 0 and cycle.gap_after_resume_seconds > 0
        assert cycle.rss_anon_after_pause > 0 and cycle.rss_anon_at_resume_return > 0
        assert cycle.rss_anon_later > 0 and cycle.rss_anon_later_seconds > 0
        assert cycle.contents_exact is True
        assert cycle.engine_pause_seconds == cycle.engine_resume_seconds == 0.001
    assert result.verified == 3
    assert torch.matmuls == 2 + 5 + 2 * 3 * items.gap.matmuls  # warm-up, calibration, two gaps per cycle
    assert saver.retain_cpu_backup is False  # set back after the loop


def test_a_later_reading_is_taken_before_the_next_pause_and_the_last_waits_its_delay(fakes, monkeypatch):
    torch, saver = fakes
    log = []
    real_pause = saver.pause
    monkeypatch.setattr(saver, "pause", lambda tag: (log.append("pause"), real_pause(tag)))
    monkeypatch.setattr(cycles, "rss_anon_bytes", lambda: log.append("rss") or 1 << 30)
    result = _run(torch, layout=1, cycles=2, rss_later_s=0.3)
    # Cycle 1: before the pause; after the pause; at resume return; its later reading; then the second pause.
    assert log == ["rss", "pause", "rss", "rss", "rss", "pause", "rss", "rss", "rss"]
    first, last = result.items.cycles
    assert last.rss_anon_later_seconds >= 0.3  # nothing came after the last resume: it waited its full delay
    assert first.rss_anon_later_seconds <= last.rss_anon_later_seconds


def test_retained_cycles_and_a_broken_restore(fakes):
    torch, saver = fakes
    saver.corrupt = True
    result = _run(torch, layout=2, cycles=2, cycle_retain=True, rss_later_s=0.0)
    assert result.items.layout.retain is True
    assert [c.contents_exact for c in result.items.cycles] == [False, False]
    assert len(result.mismatches) == 2
    assert result.mismatches[0].startswith("cycles pinned layout 2, after resume 1: tensor 1 of 2")
    assert saver.retain_cpu_backup is False


def test_a_model_layout_allocates_its_parameter_shapes_in_bf16(fakes, monkeypatch):
    torch, saver = fakes
    shapes = [("embed.weight", [64, 16]), ("layers.0.mlp.weight", [16, 32]), ("norm.weight", [16])]
    monkeypatch.setattr(models, "unavailable", lambda name: None)
    monkeypatch.setattr(models, "parameter_shapes", lambda torch, name: shapes)
    result = _run(torch, model="llama-1b", cycles=2, rss_later_s=0.0)
    assert result.errors == {} and result.mismatches == []
    layout = result.items.layout
    assert (layout.label, layout.model, layout.tensors) == ("llama-1b", "llama-1b", 3)
    assert layout.parameters == 64 * 16 + 16 * 32 + 16 and layout.bytes == 2 * layout.parameters
    assert layout.shapes == [shape for _, shape in shapes]
    region = saver.tags["bench_cycles_pinned_llama-1b"]["tensors"]
    assert [t.numel() * t.element_size() for t in region] == [2 * 64 * 16, 2 * 16 * 32, 2 * 16]
    assert result.verified == 2


def test_a_model_layout_without_transformers_is_skipped_not_failed(fakes, monkeypatch):
    torch, saver = fakes
    monkeypatch.setitem(sys.modules, "transformers", None)  # import and find_spec both fail
    assert models.unavailable("llama-1b") == "transformers is not installed (pip install transformers)"
    result = _run(torch, model="llama-1b", cycles=2)
    assert result.skipped == "transformers is not installed (pip install transformers)"
    assert result.errors == {} and result.fatal is None and result.items.cycles == []
    assert saver.tags == {}


# ---- the report ----------------------------------------------------------------------------------


def _cycle(index, pause, resume, at_return, later, later_after=1.0, exact=True):
    payload = 8 * GIB
    return Cycle(index=index, pause_seconds=pause, pause_returned_seconds=pause, pause_gbps=payload / pause / 1e9,
                 resume_seconds=resume, resume_returned_seconds=resume, resume_gbps=payload / resume / 1e9,
                 gap_after_pause_seconds=0.2, gap_after_resume_seconds=0.21, rss_anon_at_resume_return=at_return,
                 rss_anon_later=later, rss_anon_later_seconds=later_after, contents_exact=exact)


def _cycles_worker(cycle_list, retain=False):
    items = CyclesItems(layout=CycleLayout(label="16", tensors=16, bytes=8 * GIB, host_kind="pinned", retain=retain),
                        rss_anon_before_first_pause=2 * GIB, rss_later_s=1.0, cycles=cycle_list)
    return WorkerResult(kind="cycles", items=items, engine_after_alloc=EngineTagStats(allocations=16))


def _config(**fields):
    base = dict(total_bytes=8 * GIB, total_gib=8, layouts=[16], host_kinds=["pinned"], parts=["floors", "cycles"],
                cycles=4, cycle_gap_ms=200, cycle_models=["llama-1b"])
    base.update(fields)
    return BenchConfig(**base)


def _floors():
    total = 8 * GIB
    # D2H and H2D at 50 GB/s; fresh pinned allocation at 10 GB/s, so the cold host floor is 1/(1/10+1/50) GB/s.
    items = FloorsItems(d2h=Timing(seconds=total / 50e9, bytes=total), h2d=Timing(seconds=total / 50e9, bytes=total),
                        pinned_alloc=PinnedAlloc(seconds=total / 10e9, bytes=total, is_pinned=True, note=""))
    return WorkerResult(kind="floors", items=items)


def test_the_report_sets_the_first_cycle_apart_from_the_steady_state():
    payload = 8 * GIB
    # Pauses: 8 GiB in 0.5 s, then 0.2, 0.25, 0.16 s; resumes 0.2, then 0.18, 0.2, 0.19 s.
    cycle_list = [_cycle(1, 0.5, 0.2, 2 * GIB + MIB, 2 * GIB),
                  _cycle(2, 0.2, 0.18, 2 * GIB, 2 * GIB, later_after=0.6),
                  _cycle(3, 0.25, 0.2, 2 * GIB + 3 * MIB, 2 * GIB, exact=False),
                  _cycle(4, 0.16, 0.19, 2 * GIB + 2 * MIB, 2 * GIB - MIB)]
    workers = {"floors": _floors(), "cycles_pinned_16": _cycles_worker(cycle_list),
               "cycles_pinned_llama-1b": WorkerResult(kind="cycles", skipped="transformers is not installed")}
    report = build_report(_config(), Preflight(), workers, 1.0)

    pause, resume, model_pause, model_resume = report.cycles
    assert (pause.operation, pause.host, pause.layout, pause.tensors, pause.engine_allocations, pause.cycles) == (
        "pause", "pinned", "16", 16, 16, 4)
    rate = lambda seconds: payload / seconds / 1e9  # noqa: E731
    assert pause.gbps.first == rate(0.5)
    assert pause.gbps.median == rate(0.2) and pause.gbps.worst == rate(0.25) and pause.gbps.steady_cycles == 3
    assert pause.seconds.first == 0.5 and pause.seconds.median == 0.2 and pause.seconds.worst == 0.25
    assert pause.floor == "pinned D2H" and round(pause.floor_gbps, 6) == 50.0
    assert round(pause.ratio.first, 6) == round(rate(0.5) / 50, 6)
    assert round(pause.ratio.worst, 6) == round(rate(0.25) / 50, 6)
    cold = 1 / (1 / 10 + 1 / 50)
    assert round(pause.cold_floor_gbps, 6) == round(cold, 6)
    assert round(pause.cold_ratio.median, 6) == round(rate(0.2) / cold, 6)
    assert pause.gap_seconds.median == 0.2
    assert "DATA MISMATCH after cycle(s) [3]" in pause.note
    assert resume.floor == "pinned H2D" and resume.cold_floor_gbps is None and resume.cold_ratio.first is None
    assert resume.gbps.median == rate(0.19) and resume.gbps.worst == rate(0.2)
    assert resume.gap_seconds.median == 0.21
    assert model_pause.layout == "llama-1b" and model_pause.cycles == 0
    assert model_pause.error == "skipped: transformers is not installed"

    (memory,) = report.cycle_rss
    assert (memory.host, memory.layout, memory.bytes, memory.retain) == ("pinned", "16", payload, False)
    assert memory.before_first_pause == 2 * GIB
    assert (memory.at_return.first, memory.at_return.median, memory.at_return.worst) == (MIB, 2 * MIB, 3 * MIB)
    assert (memory.later.first, memory.later.median, memory.later.worst) == (0, 0, 0)
    assert memory.later_seconds.worst == 0.6
    assert memory.note == "the later reading came before 1 s in cycle(s) [2]: the next pause began sooner"

    assert report.skipped == {"cycles_pinned_llama-1b": "transformers is not installed"}
    assert report.failures == []  # a skip is no failure
    markdown = render_markdown(report)
    assert "## Cycles: pause -> gap -> resume -> gap, 4 cycles" in markdown
    assert ("| pause | pinned | 16 | 16 | 16 | 17.2 / 42.9 / 34.4 | pinned D2H 50.0 GB/s | 0.34 / 0.86 / 0.69 |"
            in markdown)
    assert "| pinned | 16 | 8.00 | off | 2.00 | 1 / 2 / 3 | 0 / 0 / 0 | 0.60 |" in markdown
    assert "| pinned | 16 | pause | 17.2 | 42.9 | 34.4 | 53.7 |" in markdown
    assert "- `cycles_pinned_llama-1b`: transformers is not installed" in markdown
    assert "skipped: transformers is not installed" in render_rows_text(report)
    data = json.loads(json.dumps(to_json(report), allow_nan=False))
    assert set(data["cycles"][0]) == {"operation", "host", "layout", "tensors", "engine_allocations", "bytes",
                                      "cycles", "seconds", "gbps", "floor", "floor_gbps", "ratio", "cold_floor_gbps",
                                      "cold_ratio", "gap_seconds", "note", "error"}
    assert set(data["cycles"][0]["gbps"]) == {"first", "median", "worst", "steady_cycles"}
    assert data["cycle_rss"][0]["at_return"]["worst"] == 3 * MIB


def test_one_cycle_has_no_steady_state_and_missing_floors_leave_ratios_empty():
    workers = {"cycles_pinned_16": _cycles_worker([_cycle(1, 0.5, 0.2, 2 * GIB, 2 * GIB)], retain=True)}
    report = build_report(_config(cycles=1, cycle_models=[]), Preflight(), workers, 1.0)
    pause = report.cycles[0]
    assert pause.gbps.first is not None and pause.gbps.median is None and pause.gbps.steady_cycles == 0
    assert pause.floor_gbps is None and pause.ratio.first is None and pause.cold_ratio.first is None
    assert report.cycle_rss[0].retain is True
    assert "pinned D2H missing" in render_markdown(report)


def test_a_failed_cycles_worker_gives_rows_with_its_error():
    failed = WorkerResult(kind="cycles", fatal="RuntimeError: out of memory\ntrace")
    stopped = _cycles_worker([_cycle(1, 0.5, 0.2, 2 * GIB, 2 * GIB)])
    stopped.errors["cycle 2: resume"] = "RuntimeError: resume refused\ntrace"
    config = _config(layouts=[1, 16], cycle_models=[])
    report = build_report(config, Preflight(), {"cycles_pinned_1": failed, "cycles_pinned_16": stopped}, 1.0)
    assert [(r.layout, r.operation, r.cycles, r.error) for r in report.cycles] == [
        ("1", "pause", 0, "worker failed: RuntimeError: out of memory"),
        ("1", "resume", 0, "worker failed: RuntimeError: out of memory"),
        ("16", "pause", 1, "cycle 2: resume: RuntimeError: resume refused"),
        ("16", "resume", 1, "cycle 2: resume: RuntimeError: resume refused")]
    assert [(f.worker, f.item) for f in report.failures] == [("cycles_pinned_1", None),
                                                            ("cycles_pinned_16", "cycle 2: resume")]


# ---- the command line ----------------------------------------------------------------------------


def _parse(*argv):
    parser = cli.build_parser()
    return cli._config(parser, parser.parse_args(list(argv)), list(argv))


def test_cycles_options_and_their_defaults():
    full = _parse()
    assert "cycles" in full.parts and full.cycles == 8 and full.cycle_gap_ms == 200
    assert full.cycle_retain is False and full.cycle_models == ["llama-1b"]
    assert full.cycle_labels() == ["1", "16", "256", "4096", "llama-1b"]
    quick = _parse("--quick")
    assert "cycles" not in quick.parts  # the smoke run stays a smoke run
    asked = _parse("--quick", "--parts", "floors,cycles")
    assert asked.parts == ["floors", "cycles"] and asked.cycles == 3 and asked.total_gib == 1
    assert asked.cycle_labels() == ["1", "16", "llama-1b"]
    chosen = _parse("--cycles", "5", "--cycle-gap-ms", "0", "--cycle-retain", "--cycle-models", "none")
    assert (chosen.cycles, chosen.cycle_gap_ms, chosen.cycle_retain, chosen.cycle_models) == (5, 0.0, True, [])


@pytest.mark.parametrize("argv", [["--cycles", "0"], ["--cycle-gap-ms", "-1"], ["--cycle-gap-ms", "nan"],
                                  ["--cycle-models", "gpt-5"], ["--parts", "floors,loops"]])
def test_bad_cycles_options_are_refused(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _parse(*argv)
    assert exit_info.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_the_command_line_starts_one_cycles_worker_per_host_kind_and_layout(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    config = _parse("--parts", "backup,cycles", "--layouts", "1,16", "--cycle-gap-ms", "50")
    runner = RecordingRunner()
    workers = cli._run_workers(config, runner, {}, {})
    started = [name for name, _ in runner.specs]
    assert started == ["backup_pinned_1", "backup_pinned_16", "backup_mmap_1", "backup_mmap_16", "cycles_pinned_1",
                       "cycles_pinned_16", "cycles_mmap_1", "cycles_mmap_16"]
    # No process for the model layout without transformers: a skipped result in its place.
    for kind in ("pinned", "mmap"):
        assert workers[f"cycles_{kind}_llama-1b"].skipped == "transformers is not installed (pip install transformers)"
    spec = dict(runner.specs)["cycles_mmap_16"]
    assert (spec.kind, spec.host_kind, spec.layout, spec.model, spec.cycles, spec.cycle_gap_s, spec.cycle_retain) == (
        "cycles", "mmap", 16, None, 8, 0.05, False)
    assert spec.gap_matrix == 8192 and spec.rss_later_s == 1.0


def test_usage_lines_name_the_command_the_user_typed(monkeypatch, capsys):
    from torch_memory_saver.__main__ import main

    monkeypatch.setattr(sys, "argv", ["/usr/local/bin/torch-memory-saver", "bench", "--help"])
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    assert capsys.readouterr().out.startswith("usage: torch-memory-saver bench ")
    monkeypatch.setattr(sys, "argv", ["-m", "bench", "--help"])
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    assert capsys.readouterr().out.startswith("usage: python -m torch_memory_saver bench ")


def test_a_run_of_floors_and_cycles_only_skips_the_rate_plot_without_failing(tmp_path):
    from torch_memory_saver.bench.plot import render_plot

    workers = {"floors": _floors(), "cycles_pinned_16": _cycles_worker([_cycle(1, 0.5, 0.2, 2 * GIB, 2 * GIB)])}
    report = build_report(_config(cycle_models=[]), Preflight(), workers, 1.0)
    message = render_plot(report, tmp_path / "rate_vs_layout.png")
    assert message == "rate plot skipped: no pause/resume rows in this run"
    assert not (tmp_path / "rate_vs_layout.png").exists()
