"""The benchmark's report from worker results (no GPU): floors, ratios and notes as a reader sees them."""

import json

from torch_memory_saver import bench
from torch_memory_saver.bench.records import (
    BackupItems,
    BenchConfig,
    EngineTagStats,
    FloorsItems,
    NoBackupLayout,
    RegisteredCopies,
    SameProcessVmm,
    Timing,
    Transition,
    VmmLoop,
    WorkerResult,
    to_json,
)
from torch_memory_saver.bench.runner import Preflight

GIB = 2**30


def _config(layouts, parts, host_kinds=()):
    return BenchConfig(total_bytes=8 * GIB, total_gib=8, layouts=list(layouts), host_kinds=list(host_kinds),
                       parts=list(parts))


def _report(registered=True):
    total = 8 * GIB
    floors = FloorsItems(d2h=Timing(seconds=total / 55e9, bytes=total), h2d=Timing(seconds=total / 55e9, bytes=total))
    if registered:
        floors.registered = RegisteredCopies(bytes=total, is_pinned=True, d2h_seconds=total / 55e9,
                                             h2d_seconds=total / 50e9)
    backup = BackupItems(**{op: Transition(seconds=total / 49e9, returned_seconds=total / 49e9, bytes=total,
                                           device_free_delta=0, engine=EngineTagStats(allocations=1))
                            for op in bench.BACKUP_OPS})
    workers = {
        "floors": WorkerResult(kind="floors", items=floors),
        "backup_pinned_1": WorkerResult(kind="backup", items=backup,
                                        engine_after_alloc=EngineTagStats(allocations=1)),
    }
    return bench.build_report(_config([1], ["floors", "backup"], ["pinned"]), Preflight(), workers, 1.0)


def test_registered_memory_floor_is_listed_and_compared():
    report = _report()
    assert round(report.floors.registered_h2d.gbps) == 50
    markdown = bench.render_markdown(report)
    assert "| H2D copy, page-locked THP memory (cudaHostRegister; the engine's kind) | 8.00 GiB |" in markdown
    resume = next(r for r in report.rows if r.operation == "resume_cold")
    # Judged against the cudaHostAlloc floor (the target), noted against the registered one.
    assert resume.passed is False
    assert "0.98x registered-memory H2D (50.0 GB/s)" in resume.note


def test_report_without_the_registered_floor_still_renders():
    report = _report(registered=False)
    assert report.floors.registered_h2d is None
    resume = next(r for r in report.rows if r.operation == "resume_cold")
    assert "registered-memory" not in resume.note
    assert "pinned H2D copy" in bench.render_markdown(report)


def _nobackup_workers(count, handle_bytes, layout_fields, same, floor_map, floor_unmap):
    layout = NoBackupLayout(count=count, bytes=8 * GIB,
                            engine=EngineTagStats(allocations=count, active_bytes=8 * GIB),
                            raw_same_process=same, **layout_fields)
    floors = FloorsItems(vmm={str(count): VmmLoop(count=count, handle_bytes=handle_bytes, map_seconds=floor_map,
                                                  unmap_seconds=floor_unmap)})
    return {"floors": WorkerResult(kind="floors", items=floors),
            "nobackup": WorkerResult(kind="nobackup", items={f"n{count}": layout})}


def test_no_backup_rows_are_judged_against_the_same_process_loop():
    same = SameProcessVmm(count=16, handle_bytes=512 << 20, map_seconds=0.0010, unmap_seconds=0.0029)
    workers = _nobackup_workers(16, 512 << 20, {"pause_seconds": 0.0030, "resume_seconds": 0.0011}, same,
                                0.0020, 0.0050)
    report = bench.build_report(_config([16], ["nobackup"]), Preflight(), workers, 1.0)
    rows = {r.operation: r for r in report.rows}
    pause = rows["pause_nobackup"]
    assert pause.floor.name == "raw VMM 16 x 512 MiB, same process"
    assert round(pause.ratio, 3) == round(0.0030 / 0.0029, 3) and pause.passed is True
    assert "vs raw VMM 16 handles, floors process: 0.60x" in pause.note
    resume = rows["resume_nobackup"]
    assert round(resume.ratio, 2) == 1.1 and resume.passed is True


def test_no_backup_rows_fall_back_to_the_floors_process():
    same = SameProcessVmm(count=1, handle_bytes=8 * GIB, error="RuntimeError: no driver")
    workers = _nobackup_workers(1, 8 * GIB, {"pause_seconds": 0.004, "resume_seconds": 0.0005}, same,
                                0.0004, 0.002)
    report = bench.build_report(_config([1], ["nobackup"]), Preflight(), workers, 1.0)
    pause = next(r for r in report.rows if r.operation == "pause_nobackup")
    assert pause.floor.name == "raw VMM 1 handles"
    assert pause.ratio == 2.0 and pause.passed is False
    assert "same-process floor failed: RuntimeError: no driver" in pause.note


def test_missing_workers_give_rows_with_errors_not_exceptions():
    config = _config([1, 16], ["nobackup", "backup", "alloc"], ["pinned"])
    failed = WorkerResult(kind="backup", fatal="RuntimeError: out of memory\ntrace")
    report = bench.build_report(config, Preflight(), {"backup_pinned_1": failed}, 1.0)
    assert report.summary.targets_judged == 0
    assert report.summary.rows_without_result == len(report.rows) == 2 * 2 + 2 * 6 + 1
    errors = {r.error for r in report.rows if r.host == "pinned" and r.layout == 1}
    assert errors == {"worker failed: RuntimeError: out of memory"}
    assert [(f.worker, f.item) for f in report.failures] == [("backup_pinned_1", None)]
    assert "## Failed measurements" in bench.render_markdown(report)


def test_results_json_keeps_the_keys_readers_use():
    data = json.loads(json.dumps(to_json(_report()), allow_nan=False))
    assert set(data) >= {"schema", "device", "versions", "config", "floors", "rows", "summary", "rss",
                         "mismatches", "correct", "verifications", "failures", "workers"}
    row = next(r for r in data["rows"] if r["operation"] == "pause_cold")
    assert set(row) == {"operation", "label", "host", "layout", "engine_allocations", "seconds", "bytes", "gbps",
                        "floor", "ratio", "ratio_meaning", "target", "pass", "note", "error"}
    assert row["pass"] is True and row["target"]["text"] == ">= 0.5x pinned D2H"
    assert data["workers"]["backup_pinned_1"]["items"]["pause_cold"]["bytes"] == 8 * GIB
    assert data["floors"]["registered_h2d"]["gbps"] == 50.0
