"""Every worker kind of the benchmark, run in this process on stand-ins for torch and the library.

What a GPU run would show, minus the GPU: each workload fills its typed
record, a broken restore is a DATA MISMATCH, and the report and the markdown
are built from what the workloads wrote (through their JSON form, as the
parent reads them). The raw VMM loops run on the simulated driver.
"""

import json

import pytest

from bench_fakes import MIB, install_fakes
from torch_memory_saver.bench import render_markdown, render_rows_text, workloads
from torch_memory_saver.bench.records import (
    BenchConfig,
    DiskVariantSpec,
    VmmLayoutSpec,
    WorkerResult,
    WorkerSpec,
    to_json,
)
from torch_memory_saver.bench.runner import Preflight
from torch_memory_saver.bench.report import build_report
from torch_memory_saver.bench.torch_support import torch_env

TOTAL = 2 * MIB


@pytest.fixture
def fakes(monkeypatch):
    return install_fakes(monkeypatch)


def _run(torch, spec):
    result = WorkerResult(kind=spec.kind, name=spec.name)
    if torch is not None:  # as the worker process does before a GPU workload
        result.env = torch_env(torch, 0)
    workloads.BY_KIND[spec.kind](torch, spec, result)
    # What the parent reads back from the worker's result file.
    return WorkerResult.from_json_data(json.loads(json.dumps(to_json(result))))


def _spec(kind, **fields):
    return WorkerSpec(kind=kind, name=kind, device=0, total_bytes=TOTAL, repeats=2, **fields)


def test_every_worker_kind_fills_its_record_and_the_report_judges_it(fakes, tmp_path):
    torch, _ = fakes
    workers = {
        "nobackup": _run(torch, _spec("nobackup", layouts=[1, 4])),
        "floors": _run(torch, _spec("floors", vmm_layouts=[VmmLayoutSpec(label="1", count=1, size=TOTAL),
                                                           VmmLayoutSpec(label="4", count=4, size=TOTAL // 4)])),
        "alloc": _run(torch, _spec("alloc", alloc_count=8, alloc_bytes=4096)),
        "disk_floor": _run(None, _spec("disk_floor", disk_dir=str(tmp_path), disk_bytes=MIB,
                                       disk_variants=[DiskVariantSpec(block_bytes=MIB)])),
        "disk_1": _run(torch, _spec("disk", disk_dir=str(tmp_path), disk_bytes=MIB, layout=1)),
    }
    for count in (1, 4):
        workers[f"backup_pinned_{count}"] = _run(torch, _spec("backup", host_kind="pinned", layout=count,
                                                              rss_settle_s=0.0))
        workers[f"cycles_pinned_{count}"] = _run(torch, _spec("cycles", host_kind="pinned", layout=count, cycles=2,
                                                              rss_later_s=0.0))
    for name, worker in workers.items():
        assert worker.errors == {} and worker.fatal is None and worker.mismatches == [], name

    assert workers["nobackup"].items["n4"].raw_same_process.count == 4
    assert workers["nobackup"].items["n4"].raw_same_process.error is None
    assert workers["floors"].items.vmm["4"].granularity == 2 * MIB
    assert workers["backup_pinned_4"].verified == 3
    assert workers["disk_1"].items.resume_disk.files_left == []
    assert workers["disk_1"].items.pause_disk.files == 1
    assert workers["disk_1"].items.pause_disk.file_bytes == 4096

    config = BenchConfig(total_bytes=TOTAL, total_gib=TOTAL / (1 << 30), layouts=[1, 4], host_kinds=["pinned"],
                         parts=["floors", "nobackup", "backup", "alloc", "disk", "cycles"], disk_layouts=[1],
                         disk_gib=1 / 1024, cycles=2)
    report = build_report(config, Preflight(), workers, 1.0)
    assert report.summary.rows_without_result == 0
    assert len(report.rows) == 2 * 2 + 2 * 6 + 2 + 1
    assert report.correct and report.verifications == 3 + 3 + 1 + 2 + 2
    assert [(c.operation, c.layout, c.cycles, c.error) for c in report.cycles] == [
        ("pause", "1", 2, None), ("resume", "1", 2, None), ("pause", "4", 2, None), ("resume", "4", 2, None)]
    assert [(v.layout, v.at_return.steady_cycles) for v in report.cycle_rss] == [("1", 1), ("4", 1)]
    assert set(report.rss) == {"backup_pinned_1", "backup_pinned_4"}
    markdown = render_markdown(report)
    assert "# torch_memory_saver pause/resume benchmark on Fake GPU" in markdown
    assert "| raw VMM unmap+release, 4 x 2 MiB | 4 |" in markdown
    assert "pause + backup, warm (retain on)" in render_rows_text(report)
    assert "## Cycles: pause -> gap -> resume -> gap, 2 cycles" in markdown
    json.dumps(to_json(report), allow_nan=False)


def test_a_broken_restore_is_a_data_mismatch(fakes):
    torch, saver = fakes
    saver.corrupt = True
    result = _run(torch, _spec("backup", host_kind="mmap", layout=2, rss_settle_s=0.0))
    assert result.errors == {}
    assert len(result.mismatches) == 3
    assert "mmap layout 2, after resume (retain off): tensor 1 of 2" in result.mismatches[0]
    assert "differ" in result.mismatches[0]


def test_a_failing_step_ends_the_sequence_and_names_the_step(fakes):
    torch, saver = fakes

    def refuse(tag):
        raise RuntimeError("resume refused")

    saver.resume = refuse
    result = _run(torch, _spec("backup", host_kind="pinned", layout=1, rss_settle_s=0.0))
    assert list(result.errors) == ["resume_cold"]
    assert result.errors["resume_cold"].startswith("RuntimeError: resume refused")
    assert result.items.pause_cold is not None and result.items.resume_cold is None
    assert saver.retain_cpu_backup is False


class _RecordingRunner:
    """Stands in for the process runner: records the specs and answers with results of the right kind."""

    def __init__(self, answers):
        self.answers, self.specs = answers, []

    def run(self, name, spec, env):
        self.specs.append((name, spec, env["which"]))
        return self.answers.get(name) or WorkerResult(kind=spec.kind, name=name)


def test_the_command_line_starts_the_workers_of_each_part(tmp_path):
    from torch_memory_saver.bench import cli
    from torch_memory_saver.bench.records import EngineTagStats, NoBackupLayout, SameProcessVmm

    parser = cli.build_parser()
    argv = ["--total-gib", "1", "--layouts", "1,4096", "--host-kinds", "mmap", "--parts",
            "floors,nobackup,backup,alloc,disk", "--disk-dir", str(tmp_path), "--disk-gib", "0.01"]
    config = cli._config(parser, parser.parse_args(argv), argv)
    # torch packed the 4096 tensors into 410 engine allocations: the floors worker also measures that layout.
    nobackup = WorkerResult(kind="nobackup", items={"n4096": NoBackupLayout(
        count=4096, bytes=1 << 30, engine=EngineTagStats(allocations=410, active_bytes=410 * 20 * MIB),
        raw_same_process=SameProcessVmm(count=410, handle_bytes=20 * MIB), pause_seconds=1.0, resume_seconds=1.0)})
    runner = _RecordingRunner({"nobackup": nobackup})
    workers = cli._run_workers(config, runner, {"which": "base"}, {"which": "library"})
    names = [name for name, _, _ in runner.specs]
    assert names == ["nobackup", "floors", "alloc", "backup_mmap_1", "backup_mmap_4096", "disk_floor", "disk_1",
                     "disk_16"]
    disk_floor = next(spec for name, spec, _ in runner.specs if name == "disk_floor")
    assert len(disk_floor.disk_variants) == 10  # the default set: 3 blocks x 3 in flight, direct, and buffered
    assert list(workers) == names
    envs = {name: env for name, _, env in runner.specs}
    assert envs["floors"] == envs["disk_floor"] == "base" and envs["backup_mmap_1"] == "library"
    floors = next(spec for name, spec, _ in runner.specs if name == "floors")
    assert [(v.label, v.count, v.size) for v in floors.vmm_layouts] == [
        ("1", 1, 1 << 30), ("4096", 4096, (1 << 30) // 4096), ("engine-4096", 410, 20 * MIB)]
    assert list(tmp_path.iterdir()) == []  # the disk part's private directory is gone
