"""The benchmark's records survive their JSON form (what travels between worker and parent, and into results.json)."""

import json
import math

from torch_memory_saver.bench.records import (
    BackupItems,
    CompressItems,
    CompressRound,
    Cycle,
    CycleLayout,
    CyclesItems,
    DiskFloor,
    DiskFloorItems,
    DiskVariant,
    DiskVariantSpec,
    EngineTagStats,
    Filesystem,
    FloorsItems,
    GapWork,
    LayoutInfo,
    NoBackupLayout,
    OverlapCycle,
    OverlapItems,
    RssTrace,
    SameProcessVmm,
    Timing,
    Transition,
    VmmLayoutSpec,
    VmmLoop,
    WorkerResult,
    WorkerSpec,
    from_json,
    to_json,
)


def _through_json(value):
    return json.loads(json.dumps(to_json(value), allow_nan=False))


def test_spec_round_trip():
    spec = WorkerSpec(kind="floors", name="floors", device=1, total_bytes=8 << 30, repeats=3,
                      vmm_layouts=[VmmLayoutSpec(label="engine-4096", count=410, size=20 << 20, for_layout=4096)],
                      disk_variants=[DiskVariantSpec(block_bytes=1 << 20, in_flight=4, direct=False)],
                      model="llama-1b", cycles=8, cycle_gap_s=0.2, cycle_retain=True, overlap_compute_s=0.3,
                      rss_back_timeout_s=5.0)
    assert from_json(WorkerSpec, _through_json(spec)) == spec


def test_result_items_decode_as_the_record_of_their_kind():
    engine = EngineTagStats(allocations=16, active_bytes=1 << 30, last_pause_seconds=0.25)
    results = [
        WorkerResult(kind="floors", items=FloorsItems(d2h=Timing(seconds=0.1, all_seconds=[0.2, 0.1], bytes=5),
                                                      vmm={"16": VmmLoop(count=16, handle_bytes=2 << 20,
                                                                         map_all_seconds=[1e-3])})),
        WorkerResult(kind="nobackup", items={"n16": NoBackupLayout(
            count=16, bytes=1 << 30, engine=engine, raw_same_process=SameProcessVmm(count=16, handle_bytes=64 << 20),
            pause_seconds=0.003, resume_seconds=0.001, device_bytes_released_on_pause=[1 << 30])}),
        WorkerResult(kind="backup", items=BackupItems(
            pause_cold=Transition(seconds=0.5, returned_seconds=0.4, bytes=1 << 30, device_free_delta=1 << 30,
                                  engine=engine, rss=123),
            layout=LayoutInfo(count=16, bytes=1 << 30, host_kind="pinned")),
            rss=RssTrace(before_pause=1, settle_seconds=0.5), engine_after_alloc=engine, verified=3,
            mismatches=["pinned layout 16: x"], errors={"verify 2": "boom"}, exit_code="timeout after 300 s"),
        WorkerResult(kind="disk_floor", items=DiskFloorItems(disk=DiskFloor(
            directory="/tmp/x", bytes=4096, filesystem=Filesystem(path="/tmp", fs_type="ext4"), notes=["n"],
            variants=[DiskVariant(label="O_DIRECT", block_bytes=4096, in_flight=4, direct_asked=True, fsync=False,
                                  write_all_seconds=[0.5], notes=["v"])], write_variant="O_DIRECT"))),
        WorkerResult(kind="cycles", items=CyclesItems(
            layout=CycleLayout(label="llama-1b", tensors=2, bytes=64, host_kind="mmap", model="llama-1b",
                               parameters=32, shapes=[[2, 8], [16]]),
            gap=GapWork(asked_seconds=0.2, matrix=8192, matmuls=125, matmul_seconds=0.0016),
            rss_anon_before_first_pause=1 << 30, rss_later_s=1.0,
            cycles=[Cycle(index=1, pause_seconds=0.5, resume_seconds=0.2, rss_anon_at_resume_return=1 << 30,
                          rss_anon_later=1 << 29, rss_anon_later_seconds=1.0, contents_exact=True)])),
        WorkerResult(kind="cycles", skipped="transformers is not installed"),
        WorkerResult(kind="overlap", items=OverlapItems(
            layout=LayoutInfo(count=16, bytes=1 << 30, host_kind="pinned"), d2h=Timing(seconds=0.02, bytes=1 << 30),
            compute=GapWork(asked_seconds=0.3, matrix=8192, matmuls=187), rss_back_share=0.9, rss_back_timeout_s=10.0,
            cycles=[OverlapCycle(index=1, blocking_seconds=0.03, returned_seconds=0.001, restore_seconds=0.025,
                                 rss_back_seconds=10.0, rss_back_timed_out=True, backup_bytes=1 << 30,
                                 overlapped_compute_seconds=0.31, contents_exact=False)])),
        WorkerResult(kind="compress", items=CompressItems(
            layout=LayoutInfo(count=16, bytes=1 << 30), h2d=Timing(seconds=0.02, bytes=1 << 30),
            first=CompressRound(index=0, z_pause_seconds=0.05, z_host_bytes=3 << 28),
            rounds=[CompressRound(index=1, plain_pause_seconds=0.04, z_resume_seconds=0.02, plain_host_bytes=1 << 30,
                                  contents_exact=True)])),
    ]
    for result in results:
        assert WorkerResult.from_json_data(_through_json(result)) == result


def test_non_finite_floats_become_null_and_unknown_keys_are_ignored():
    timing = Timing(seconds=math.nan, all_seconds=[math.inf, 1.0])
    data = _through_json(timing)
    assert data["seconds"] is None and data["all_seconds"] == [None, 1.0]
    data["added_by_a_newer_version"] = 1
    assert from_json(Timing, data) == Timing(seconds=None, all_seconds=[None, 1.0])


def test_an_empty_result_of_each_kind_has_its_record():
    assert isinstance(WorkerResult(kind="backup").items, BackupItems)
    assert WorkerResult(kind="nobackup").items == {}
    assert WorkerResult.from_json_data({"kind": "floors"}).items == FloorsItems()
    assert WorkerResult(kind="cycles").items == CyclesItems()
    assert WorkerResult(kind="overlap").items == OverlapItems()
    assert WorkerResult.from_json_data({"kind": "compress"}).items == CompressItems()
