"""The benchmark's report from worker results (no GPU): floors, ratios and notes as a reader sees them."""

from torch_memory_saver import bench

GIB = 2**30


def _report(registered=True):
    total = 8 * GIB
    floor_items = {
        "d2h": {"seconds": total / 55e9, "bytes": total},
        "h2d": {"seconds": total / 55e9, "bytes": total},
        "vmm": {},
    }
    if registered:
        floor_items["registered"] = {"bytes": total, "is_pinned": True,
                                     "d2h_seconds": total / 55e9, "h2d_seconds": total / 50e9}
    backup_items = {op: {"seconds": total / 49e9, "returned_seconds": total / 49e9, "bytes": total}
                    for op in bench.BACKUP_OPS}
    workers = {
        "floors": {"items": floor_items},
        "backup_pinned_1": {"items": backup_items, "engine_after_alloc": {"allocations": 1}},
    }
    config = {"layouts": [1], "parts": ["floors", "backup"], "host_kinds": ["pinned"], "total_gib": 8,
              "hook_mode": "torch", "repeats": 3, "alloc_count": 2048, "alloc_bytes": 2 << 20}
    return bench.build_report(config, {}, workers, 1.0)


def test_registered_memory_floor_is_listed_and_compared():
    report = _report()
    assert round(report["floors"]["registered_h2d"]["gbps"]) == 50
    markdown = bench.render_markdown(report)
    assert "| H2D copy, page-locked THP memory (cudaHostRegister; the engine's kind) | 8.00 GiB |" in markdown
    resume = next(r for r in report["rows"] if r["operation"] == "resume_cold")
    # Judged against the cudaHostAlloc floor (the target), noted against the registered one.
    assert resume["pass"] is False
    assert "0.98x registered-memory H2D (50.0 GB/s)" in resume["note"]


def test_report_without_the_registered_floor_still_renders():
    report = _report(registered=False)
    assert report["floors"]["registered_h2d"] is None
    resume = next(r for r in report["rows"] if r["operation"] == "resume_cold")
    assert "registered-memory" not in resume["note"]
    assert "pinned H2D copy" in bench.render_markdown(report)


def test_no_backup_rows_are_judged_against_the_same_process_loop():
    item = {"count": 16, "bytes": 8 * GIB, "engine": {"allocations": 16, "active_bytes": 8 * GIB},
            "pause_seconds": 0.0030, "resume_seconds": 0.0011,
            "raw_same_process": {"count": 16, "handle_bytes": 512 << 20, "map_seconds": 0.0010,
                                 "unmap_seconds": 0.0029, "error": None}}
    workers = {"floors": {"items": {"vmm": {"16": {"count": 16, "handle_bytes": 512 << 20,
                                                    "map_seconds": 0.0020, "unmap_seconds": 0.0050}}}},
               "nobackup": {"items": {"n16": item}}}
    config = {"layouts": [16], "parts": ["nobackup"], "host_kinds": [], "total_gib": 8,
              "hook_mode": "torch", "repeats": 3, "alloc_count": 2048, "alloc_bytes": 2 << 20}
    rows = {r["operation"]: r for r in bench.build_report(config, {}, workers, 1.0)["rows"]}
    pause = rows["pause_nobackup"]
    assert pause["floor"]["name"] == "raw VMM 16 x 512 MiB, same process"
    assert round(pause["ratio"], 3) == round(0.0030 / 0.0029, 3) and pause["pass"] is True
    assert "vs raw VMM 16 handles, floors process: 0.60x" in pause["note"]
    resume = rows["resume_nobackup"]
    assert round(resume["ratio"], 2) == 1.1 and resume["pass"] is True


def test_no_backup_rows_fall_back_to_the_floors_process():
    item = {"count": 1, "bytes": 8 * GIB, "engine": {"allocations": 1, "active_bytes": 8 * GIB},
            "pause_seconds": 0.004, "resume_seconds": 0.0005,
            "raw_same_process": {"count": 1, "handle_bytes": 8 * GIB, "map_seconds": None,
                                 "unmap_seconds": None, "error": "RuntimeError: no driver"}}
    workers = {"floors": {"items": {"vmm": {"1": {"count": 1, "handle_bytes": 8 * GIB,
                                                   "map_seconds": 0.0004, "unmap_seconds": 0.002}}}},
               "nobackup": {"items": {"n1": item}}}
    config = {"layouts": [1], "parts": ["nobackup"], "host_kinds": [], "total_gib": 8,
              "hook_mode": "torch", "repeats": 3, "alloc_count": 2048, "alloc_bytes": 2 << 20}
    pause = next(r for r in bench.build_report(config, {}, workers, 1.0)["rows"] if r["operation"] == "pause_nobackup")
    assert pause["floor"]["name"] == "raw VMM 1 handles"
    assert pause["ratio"] == 2.0 and pause["pass"] is False
    assert "same-process floor failed: RuntimeError: no driver" in pause["note"]
