"""The benchmark's overlap part (non-blocking resume behind compute) on stand-ins for torch and the library.

What the worker records per cycle (the stand-in library restores a
non-blocking resume only when waited for, so a worker that read the tensors
too early would see a DATA MISMATCH), how the host backup's return is found
in RSS, the report's single shot and median against each target, the
markdown and JSON, the command line, and a whole run's exit status.
"""

import json

import pytest

from bench_fakes import MIB, RecordingRunner, install_fakes, run_worker
from torch_memory_saver.bench import cli, overlap, render_markdown, render_rows_text
from torch_memory_saver.bench.constants import EXIT_MISMATCH, EXIT_OK
from torch_memory_saver.bench.overlap_report import build_overlap, hidden_fraction
from torch_memory_saver.bench.plot_parts import render_overlap_plot
from torch_memory_saver.bench.records import (
    BenchConfig,
    GapWork,
    LayoutInfo,
    OverlapCycle,
    OverlapItems,
    Timing,
    WorkerResult,
    WorkerSpec,
    to_json,
)
from torch_memory_saver.bench.report import build_report
from torch_memory_saver.bench.runner import Preflight

GIB = 1 << 30
BASE_RSS = 3 * GIB


@pytest.fixture
def fakes(monkeypatch):
    torch, saver = install_fakes(monkeypatch)
    # The process's RSS: a base plus the host backups the stand-in library holds.
    monkeypatch.setattr(overlap, "statm_rss_bytes", lambda: BASE_RSS + saver.host_bytes())
    return torch, saver


def _run(torch, **fields):
    values = {"kind": "overlap", "name": "overlap", "device": 0, "total_bytes": 2 * MIB, "layout": 16, "cycles": 3,
              "repeats": 2, "overlap_compute_s": 0.001, "gap_matrix": 4, "rss_back_timeout_s": 2.0}
    values.update(fields)
    return run_worker(overlap.overlap, torch, WorkerSpec(**values))


def test_each_cycle_times_blocking_and_non_blocking_resumes_and_the_compute_step(fakes):
    torch, saver = fakes
    result = _run(torch)
    assert result.errors == {} and result.mismatches == [] and result.fatal is None
    items = result.items
    assert items.layout == LayoutInfo(count=16, bytes=2 * MIB, host_kind="pinned")
    assert items.d2h.bytes == items.h2d.bytes == 2 * MIB and len(items.d2h.all_seconds) == 2
    assert items.compute.matrix == 4 and items.compute.matmuls >= 1
    assert [c.index for c in items.cycles] == [1, 2, 3]
    for cycle in items.cycles:
        assert cycle.blocking_seconds > 0 and cycle.returned_seconds > 0 and cycle.restore_seconds > 0
        assert cycle.backup_bytes == 2 * MIB
        assert cycle.rss_before_resume == BASE_RSS + 2 * MIB  # paused: the backup is held
        assert cycle.rss_back == BASE_RSS and cycle.rss_back_timed_out is False
        assert cycle.returned_seconds <= cycle.rss_back_seconds
        assert cycle.compute_seconds > 0 and cycle.blocking_compute_seconds > 0
        assert cycle.overlapped_compute_seconds > 0
        assert cycle.contents_exact is True
    assert result.verified == 4 * 3  # every resume: blocking, non-blocking, and both with the compute step
    assert torch.matmuls == 2 + 5 + 3 * 3 * items.compute.matmuls  # warm-up, calibration, three steps a cycle
    # Each non-blocking resume is followed by a wait() that orders the stream (not a host wait).
    waits = [call for call in saver.calls if call[0] == "wait"]
    assert [call for call in saver.calls if call[0] == "resume"] == [
        ("resume", "bench_overlap", non_blocking) for non_blocking in (False, True, False, True) * 3]
    assert waits[:6] == [("wait", "bench_overlap", True)] * 6 and waits[6:] == [("wait", None, False)]
    assert saver.retain_cpu_backup is False and saver.host_bytes() == 0


def test_a_restore_that_never_hands_the_backup_back_times_out_and_is_reported(fakes, monkeypatch):
    torch, _ = fakes
    monkeypatch.setattr(overlap, "statm_rss_bytes", lambda: BASE_RSS + 2 * MIB)  # never drops
    result = _run(torch, cycles=1, rss_back_timeout_s=0.02)
    (cycle,) = result.items.cycles
    assert cycle.rss_back_timed_out is True and cycle.rss_back_seconds >= 0.02
    report = build_overlap(result)
    metrics = {m.key: m for m in report.metrics}
    assert metrics["rss_back_ratio"].pass_first is False  # the lower bound misses, as the real time would
    assert "not back within 0.02 s in cycle(s) [1]: their times are lower bounds" in report.note


def test_a_broken_restore_is_a_data_mismatch(fakes):
    torch, saver = fakes
    saver.corrupt = True
    result = _run(torch, cycles=1)
    assert len(result.mismatches) == 4
    assert result.mismatches[1].startswith("overlap, cycle 1, after the non-blocking resume: tensor 15 of 16")
    assert result.items.cycles[0].contents_exact is False
    assert "DATA MISMATCH in cycle(s) [1]" in build_overlap(result).note


def test_the_rss_poll_finds_the_drop_gives_up_and_does_not_wait_for_an_unreadable_rss():
    now = [10.0]

    def clock():
        return now[0]

    def sleep(seconds):
        now[0] += seconds

    readings = iter([500, 480, 300, 100])
    seconds, value, late = overlap.wait_for_rss(lambda: next(readings), 320, 10.0, 5.0, 0.5, clock, sleep)
    assert (seconds, value, late) == (1.0, 300, False)  # the third reading, two polls after the start
    seconds, value, late = overlap.wait_for_rss(lambda: 500, 320, now[0], 1.0, 0.25, clock, sleep)
    assert (seconds, value, late) == (1.0, 500, True)
    assert overlap.wait_for_rss(lambda: None, 320, now[0], 1.0, 0.25, clock, sleep) == (None, None, False)


@pytest.mark.parametrize("alone, blocking, overlapped, hidden", [
    (0.3, 0.5, 0.3, 1.0),  # all of the restore's 200 ms hidden
    (0.3, 0.5, 0.34, 0.8),
    (0.3, 0.5, 0.5, 0.0),  # nothing hidden
    (0.3, 0.5, 0.55, -0.25),  # worse than blocking
    (0.3, 0.3, 0.3, None),  # no restore cost to hide
    (None, 0.5, 0.3, None),
])
def test_the_hidden_share_of_the_restore(alone, blocking, overlapped, hidden):
    value = hidden_fraction(alone, blocking, overlapped)
    assert value == hidden if hidden is None else round(value, 9) == hidden


def test_a_value_on_its_target_meets_it_and_an_unknown_one_is_not_judged():
    from torch_memory_saver.bench.metrics import met, metric, target

    at_most, at_least = target("<=", 1.0, "<= 1.00"), target(">=", 0.8, ">= 80 %")
    assert (met(1.0, at_most), met(1.01, at_most), met(0.8, at_least), met(0.79, at_least)) == (
        True, False, True, False)
    assert met(None, at_most) is None and met(float("nan"), at_least) is None and met(0.5, None) is None
    line = metric("k", "label", "x", 0.5, [None, 2.0, 0.9, 0.7], at_most)
    assert (line.first, line.median, line.values, line.pass_first, line.pass_median) == (0.5, 0.9, 3, True, True)
    assert metric("k", "label", "x", None, [], at_most).pass_median is None


# ---- the report ----------------------------------------------------------------------------------


def _cycle(index, blocking, returned, restore, rss_back, alone, after_blocking, behind, late=False, exact=True):
    return OverlapCycle(index=index, blocking_seconds=blocking, returned_seconds=returned, restore_seconds=restore,
                        rss_back_seconds=rss_back, rss_back_timed_out=late, backup_bytes=8 * GIB,
                        compute_seconds=alone, blocking_compute_seconds=after_blocking,
                        overlapped_compute_seconds=behind, contents_exact=exact)


def _worker(cycles, mismatches=()):
    items = OverlapItems(layout=LayoutInfo(count=16, bytes=8 * GIB, host_kind="pinned"),
                         d2h=Timing(seconds=8 * GIB / 50e9, bytes=8 * GIB),
                         h2d=Timing(seconds=8 * GIB / 50e9, bytes=8 * GIB),
                         compute=GapWork(asked_seconds=0.3, matrix=8192, matmuls=187, matmul_seconds=0.0016),
                         rss_back_share=0.9, rss_back_timeout_s=10.0, cycles=cycles)
    return WorkerResult(kind="overlap", name="overlap", items=items, mismatches=list(mismatches), verified=4)


def _config(**fields):
    base = {"total_bytes": 8 * GIB, "total_gib": 8, "layouts": [1], "host_kinds": ["pinned"], "parts": ["overlap"],
            "cycles": 3, "overlap_compute_ms": 300}
    base.update(fields)
    return BenchConfig(**base)


def test_the_report_judges_cycle_1_and_the_median_against_each_target():
    restore = 8 * GIB / 45e9  # 0.9 of the 50 GB/s floor
    cycles = [
        # A first cycle that misses: slow return, slow restore, late host memory, little hidden.
        _cycle(1, 0.20, 0.04, 8 * GIB / 40e9, 0.25, 0.30, 0.50, 0.45),
        _cycle(2, 0.20, 0.01, restore, 0.18, 0.30, 0.50, 0.32),
        _cycle(3, 0.22, 0.01, restore, 0.19, 0.30, 0.52, 0.32),
    ]
    report = build_report(_config(), Preflight(), {"overlap": _worker(cycles)}, 1.0)
    part = report.overlap
    metrics = {m.key: m for m in part.metrics}
    assert (part.cycles, part.bytes, part.tensors, round(part.h2d_gbps, 6)) == (3, 8 * GIB, 16, 50.0)
    blocking = metrics["blocking_resume"]
    assert (blocking.first, blocking.median, blocking.values, blocking.target) == (0.20, 0.20, 3, None)
    ret = metrics["return_ratio"]
    assert (round(ret.first, 6), round(ret.median, 6)) == (0.2, 0.05)
    assert (ret.pass_first, ret.pass_median) == (False, True)
    rate = metrics["restore_h2d"]
    assert (round(rate.first, 6), round(rate.median, 6)) == (0.8, 0.9)
    assert (rate.pass_first, rate.pass_median) == (False, True)
    rss = metrics["rss_back_ratio"]
    assert rss.first == 1.25 and (rss.pass_first, rss.pass_median) == (False, True)
    hidden = metrics["hidden"]
    assert round(hidden.first, 6) == 0.25 and round(hidden.median, 6) == 0.9
    assert (hidden.pass_first, hidden.pass_median) == (False, True)
    assert (part.targets_judged, part.targets_met) == (8, 4)
    assert part.error is None and part.note == "compute step: 187 bf16 matmuls 8192x8192"

    markdown = render_markdown(report)
    assert "## Overlap: non-blocking resume behind compute" in markdown
    assert "| measurement | unit | cycle 1 | median (3 cycles) | target | verdict |" in markdown
    assert ("| non-blocking return / blocking resume | x | 0.20 | 0.05 | target <= 0.10 | 1st **miss**, median pass |"
            in markdown)
    assert "| non-blocking restore rate / pinned H2D | x | 0.80 | 0.90 | target >= 0.85 |" in markdown
    assert ("| share of the restore hidden: (b - c) / (b - a) | % | 25 | 90 | target >= 80 % | 1st **miss**, "
            "median pass |" in markdown)
    assert "| blocking resume(tag), until it returned | ms | 200.0 | 200.0 |  | - |" in markdown
    assert "Targets met: **4 of 8** judged values" in markdown
    assert "- overlap part: 8 GiB in 16 tensors" in markdown and "compute step of 300 ms" in markdown
    assert "target <= 0.10: 1st MISS, median pass" in render_rows_text(report)
    assert "## Compress" not in markdown and "## Cycles" not in markdown
    # Only parts with sections of their own ran: no empty floors or library tables, no "0 of 0" line.
    assert "## Floors" not in markdown and "## Library vs floor" not in markdown
    assert "judged rows" not in markdown and "(no plot:" not in markdown
    with_floors = render_markdown(build_report(_config(parts=["floors", "overlap"]), Preflight(),
                                               {"overlap": _worker(cycles)}, 1.0))
    assert "## Floors (same run)" in with_floors and "## Library vs floor" in with_floors
    data = json.loads(json.dumps(to_json(report), allow_nan=False))
    assert data["compress"] is None
    line = next(m for m in data["overlap"]["metrics"] if m["key"] == "hidden")
    assert set(line) == {"key", "label", "unit", "first", "median", "values", "target", "pass_first", "pass_median"}
    assert line["target"] == {"comparison": ">=", "value": 0.8, "text": ">= 80 %"}
    assert (data["overlap"]["targets_judged"], data["overlap"]["targets_met"]) == (8, 4)


def test_a_failed_or_missing_overlap_worker_gives_an_error_not_an_exception():
    failed = WorkerResult(kind="overlap", fatal="RuntimeError: out of memory\ntrace")
    report = build_report(_config(), Preflight(), {"overlap": failed}, 1.0)
    assert report.overlap.error == "worker failed: RuntimeError: out of memory"
    assert all(m.first is None and m.median is None for m in report.overlap.metrics)
    assert report.overlap.targets_judged == 0
    assert "ERROR (overlap): worker failed: RuntimeError: out of memory" in render_markdown(report)
    assert build_overlap(None).error == "not run"
    assert render_overlap_plot(report, None) == "overlap plot skipped: no overlap cycle was measured"


def test_the_overlap_plot_is_written_or_its_failure_reported_never_raised(tmp_path, monkeypatch):
    from torch_memory_saver.bench import plot

    cycle = _cycle(1, 0.2, 0.01, 0.19, 0.18, 0.3, 0.5, 0.32)
    report = build_report(_config(), Preflight(), {"overlap": _worker([cycle])}, 1.0)
    monkeypatch.setattr(plot, "_pyplot", lambda: 1 / 0)
    assert render_overlap_plot(report, tmp_path / "o.png").startswith("overlap plot skipped: matplotlib not")
    broken = type("Broken", (), {"subplots": staticmethod(lambda *a, **k: (_ for _ in ()).throw(OSError("no")))})
    monkeypatch.setattr(plot, "_pyplot", lambda: broken)
    assert render_overlap_plot(report, tmp_path / "o.png") == "overlap plot failed: OSError: no"
    monkeypatch.undo()
    pytest.importorskip("matplotlib")
    assert render_overlap_plot(report, tmp_path / "o.png") == f"wrote {tmp_path / 'o.png'}"
    assert (tmp_path / "o.png").stat().st_size > 0


# ---- the command line ----------------------------------------------------------------------------


def _parse(*argv):
    parser = cli.build_parser()
    return cli._config(parser, parser.parse_args(list(argv)), list(argv))


def test_the_new_parts_are_opt_in_and_their_options_have_defaults():
    default = _parse()
    assert "overlap" not in default.parts and "compress" not in default.parts
    assert "overlap" not in _parse("--quick").parts
    assert (default.overlap_compute_ms, default.compress_gib, default.compress_bytes) == (300.0, 2.0, 2 * GIB)
    asked = _parse("--parts", "floors,overlap,compress", "--overlap-compute-ms", "50", "--compress-gib", "0.5",
                   "--cycles", "4")
    assert asked.parts == ["floors", "overlap", "compress"] and asked.cycles == 4
    assert (asked.overlap_compute_ms, asked.compress_gib, asked.compress_bytes) == (50.0, 0.5, GIB // 2)
    assert "disk, overlap and compress are opt-in" in " ".join(cli.build_parser().format_help().split())


@pytest.mark.parametrize("argv", [
    ["--overlap-compute-ms", "0"], ["--overlap-compute-ms", "-5"], ["--overlap-compute-ms", "nan"],
    ["--overlap-compute-ms", "inf"], ["--overlap-compute-ms", "fast"], ["--compress-gib", "0"],
    ["--compress-gib", "-1"], ["--compress-gib", "nan"], ["--compress-gib", "inf"], ["--compress-gib", "1e-9"],
    ["--parts", "overlap", "--total-gib", "1e-7", "--layouts", "1"], ["--parts", "floors,overlaps"],
])
def test_bad_values_of_the_new_options_are_refused(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _parse(*argv)
    assert exit_info.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_the_command_line_starts_one_worker_per_new_part():
    config = _parse("--parts", "floors,overlap,compress", "--total-gib", "4", "--overlap-compute-ms", "120",
                    "--compress-gib", "1", "--cycles", "5")
    runner = RecordingRunner()
    cli._run_workers(config, runner, {}, {})
    specs = dict(runner.specs)
    assert list(specs) == ["floors", "overlap", "compress"]
    ov = specs["overlap"]
    assert (ov.kind, ov.total_bytes, ov.layout, ov.cycles, ov.overlap_compute_s, ov.gap_matrix) == (
        "overlap", 4 * GIB, 16, 5, 0.12, 8192)
    assert (ov.rss_back_share, ov.rss_back_poll_s, ov.rss_back_timeout_s) == (0.9, 0.001, 10.0)
    co = specs["compress"]
    assert (co.kind, co.total_bytes, co.layout, co.cycles) == ("compress", GIB, 16, 5)


@pytest.mark.parametrize("mismatch, status", [(False, EXIT_OK), (True, EXIT_MISMATCH)])
def test_a_run_of_the_overlap_part_writes_its_outputs_and_a_mismatch_is_exit_3(tmp_path, monkeypatch, capsys,
                                                                             mismatch, status):
    cycle = _cycle(1, 0.2, 0.01, 0.19, 0.18, 0.3, 0.5, 0.32, exact=not mismatch)
    worker = _worker([cycle], ["overlap, cycle 1, after the blocking resume: tensor 3 of 16 differs"] * mismatch)
    monkeypatch.setattr(cli, "preflight", lambda: Preflight(torch="2.9", library_path="/x/libtms.so"))
    monkeypatch.setattr(cli, "base_env", lambda path: {})
    monkeypatch.setattr(cli, "library_env", lambda base, mode: {})
    monkeypatch.setattr(cli, "Runner", lambda out, timeout: RecordingRunner({"overlap": worker}))
    out = tmp_path / "out"
    out.mkdir()
    (out / "overlap.png").write_bytes(b"an older run's figure")
    assert cli.main(["--parts", "overlap", "--out", str(out), "--no-plot"]) == status
    assert not (out / "overlap.png").exists()
    markdown = (out / "results.md").read_text()
    assert "## Overlap: non-blocking resume behind compute" in markdown
    assert "(no overlap plot: overlap plot skipped: --no-plot)" in markdown
    assert "cycles plot" not in markdown and "compress plot" not in markdown
    data = json.loads((out / "results.json").read_text())
    assert data["overlap"]["metrics"][0]["key"] == "blocking_resume" and data["overlap_plot"].endswith("--no-plot")
    assert data["correct"] is not mismatch
    err = capsys.readouterr().err
    assert ("DATA MISMATCH after resume" in err) is mismatch
    if mismatch:
        assert "## DATA MISMATCH" in markdown
