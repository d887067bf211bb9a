#!/usr/bin/env python3
"""Where the time of a pause/resume without backup goes, next to raw VMM loops in the same process.

The main benchmark compares the library with the raw loop of create/map/access
and unmap/release (torch_memory_saver.bench.vmm) on memory nothing ever wrote.
This diagnostic runs, in one process and on one device, for each layout:

- the same raw loop in variants: the benchmark's (per handle unmap then
  release), the engine's order (unmap every handle, then release every
  handle), on memory written first or not, with a device synchronize first
  or not; the unmap and release calls timed apart;
- the library: ``pause``/``resume`` of a region tag holding the same layout,
  its tensors written before each pause or not; the time seen by Python and
  by the engine (``stats()``), and the engine's own phases (its INFO log line).

With ``--sections restore`` (also in the default): host-to-device copies from
page-locked THP memory (the engine's backup memory), whole and in the engine's
64 MiB chunks on two streams, into device memory copied to before and into
memory that ``resume()`` has just mapped, next to the library's own restore.

    PYTHONPATH=python TMS_LIBRARY_PATH=build/libtorch_memory_saver.so \\
        python bench/probes/pause_breakdown.py --total-gib 8 --out breakdown.json

Needs a GPU; prints a table and writes JSON. Timings are best of --repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

try:
    from torch_memory_saver.bench import vmm
    from torch_memory_saver.bench.constants import GiB
    from torch_memory_saver.bench.copies import registered_host_buffer
except ImportError:  # a source checkout without `pip install .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "python"))
    from torch_memory_saver.bench import vmm
    from torch_memory_saver.bench.constants import GiB
    from torch_memory_saver.bench.copies import registered_host_buffer

os.environ.setdefault("TMS_LOG_LEVEL", "info")  # the engine logs each transition's phases


# The raw loop variants: name -> option bits of the raw VMM floor (torch_memory_saver.bench.vmm).
RAW_VARIANTS = {
    "bench floor (untouched, per-handle unmap+release)": 0,
    "touched, per-handle unmap+release": vmm.TOUCH,
    "touched, engine order (unmap all, release all)": vmm.TOUCH | vmm.BATCHED_UNMAP,
    "touched, engine order, synchronize first": vmm.TOUCH | vmm.BATCHED_UNMAP | vmm.SYNC_FIRST,
    "touched, engine order, engine resume order": vmm.TOUCH | vmm.BATCHED_UNMAP | vmm.BATCHED_MAP,
}


def _ms(seconds: float) -> float:
    return round(seconds * 1e3, 4)


def raw_variants(device: int, count: int, size: int, repeats: int) -> Dict[str, Any]:
    """Best map and unmap times (ms) of each raw loop variant; unmap split into its parts where timed apart."""
    out: Dict[str, Any] = {}
    for name, options in RAW_VARIANTS.items():
        loop = vmm.measure(count, size, repeats, device=device, options=options, slow_round_s=float("inf"))
        index = loop.unmap_all_seconds.index(min(loop.unmap_all_seconds))
        unmap = {"total": _ms(loop.unmap_all_seconds[index]), "synchronize": _ms(loop.synchronize_all_seconds[index])}
        if loop.unmap_only_all_seconds:
            unmap["unmap"] = _ms(loop.unmap_only_all_seconds[index])
            unmap["release"] = _ms(loop.release_all_seconds[index])
        out[name] = {"map_ms": _ms(min(loop.map_all_seconds)), "unmap": unmap}
    return out


def library_runs(torch: Any, tms: Any, tms_stats: Callable, count: int, total: int, repeats: int,
                 touch: bool) -> Dict[str, Any]:
    tag = f"breakdown_{count}_{int(touch)}"
    elements = total // count // 8
    with tms.region(tag, enable_cpu_backup=False):
        tensors = [torch.empty(elements, dtype=torch.int64, device="cuda") for _ in range(count)]
    rows = []
    for _ in range(repeats):
        if touch:
            for t in tensors:
                t.fill_(1)
        torch.cuda.synchronize()
        start = time.perf_counter()
        tms.pause(tag)
        paused = time.perf_counter()
        tms.resume(tag)
        resumed = time.perf_counter()
        entry = next(s for s in tms_stats() if s.tag == tag)
        rows.append({
            "pause_python": paused - start,
            "pause_engine": entry.last_pause_seconds,
            "resume_python": resumed - paused,
            "resume_engine": entry.last_resume_seconds,
        })
    del tensors
    tms.pause(tag)  # hand the cached blocks' memory back
    torch.cuda.empty_cache()
    pick = min(rows, key=lambda r: r["pause_python"])
    pick_resume = min(rows, key=lambda r: r["resume_python"])
    return {
        "pause_ms": {k: round(v * 1e3, 4) for k, v in pick.items() if k.startswith("pause")},
        "resume_ms": {k: round(v * 1e3, 4) for k, v in pick_resume.items() if k.startswith("resume")},
        "all_ms": [{k: round(v * 1e3, 4) for k, v in r.items()} for r in rows],
    }


def restore_probe(torch: Any, tms: Any, total: int, repeats: int) -> Dict[str, Any]:
    """H2D from page-locked THP memory: whole vs 64 MiB chunks on two streams, into memory copied to
    before vs memory just mapped by resume(); and the library's own restore of the same size."""
    with registered_host_buffer(torch, total, fill=7) as host:
        return _restore_probe(torch, tms, host, total, repeats)


def _restore_probe(torch: Any, tms: Any, host: Any, total: int, repeats: int) -> Dict[str, Any]:
    streams = [torch.cuda.Stream(), torch.cuda.Stream()]
    chunk = 64 << 20

    def whole(dev: Any) -> None:
        dev.copy_(host, non_blocking=True)

    def chunked(dev: Any) -> None:
        for index, offset in enumerate(range(0, total, chunk)):
            with torch.cuda.stream(streams[index % 2]):
                dev[offset:offset + chunk].copy_(host[offset:offset + chunk], non_blocking=True)

    def timed(action: Callable[[], None]) -> float:
        torch.cuda.synchronize()
        start = time.perf_counter()
        action()
        torch.cuda.synchronize()
        return time.perf_counter() - start

    warm = torch.empty(total, dtype=torch.uint8, device="cuda")
    warm.fill_(1)
    with tms.region("restore_probe_fresh", enable_cpu_backup=False):
        fresh = torch.empty(total, dtype=torch.uint8, device="cuda")
    with tms.region("restore_probe_library", enable_cpu_backup=True):
        backed = torch.empty(total, dtype=torch.uint8, device="cuda")
    backed.fill_(3)
    out: Dict[str, List[float]] = {}
    for name, copy in (("whole", whole), ("chunked 64 MiB x 2 streams", chunked)):
        out[f"{name}, into warm memory"] = [timed(lambda: copy(warm)) for _ in range(repeats)]
        rounds = []
        for _ in range(repeats):
            tms.pause("restore_probe_fresh")
            tms.resume("restore_probe_fresh")  # new physical memory under the same address
            rounds.append(timed(lambda: copy(fresh)))
        out[f"{name}, into memory just mapped by resume()"] = rounds
    library = []
    for _ in range(repeats):
        tms.pause("restore_probe_library")
        library.append(timed(lambda: tms.resume("restore_probe_library")))
    out["library resume(), restore from its backup"] = library
    return {name: {"best_ms": round(min(v) * 1e3, 2), "gbps": round(total / min(v) / 1e9, 1),
                   "all_ms": [round(x * 1e3, 2) for x in v]} for name, v in out.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--total-gib", type=float, default=8.0)
    parser.add_argument("--layouts", default="1,16,256")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="pause_breakdown.json")
    parser.add_argument("--sections", default="vmm,restore",
                        help="vmm: no-backup pause/resume next to raw VMM loops; restore: H2D floors vs restore")
    args = parser.parse_args()

    import torch

    from torch_memory_saver import stats as tms_stats
    from torch_memory_saver import torch_memory_saver as tms

    tms.hook_mode = "torch"  # no LD_PRELOAD needed
    torch.cuda.init()
    torch.zeros(1, device="cuda")
    device = torch.cuda.current_device()
    total = int(args.total_gib * GiB)
    report: Dict[str, Any] = {"device": torch.cuda.get_device_name(), "total_bytes": total, "layouts": {}}
    sections = args.sections.split(",")
    if "restore" in sections:
        report["restore"] = restore_probe(torch, tms, total, args.repeats)
        for name, values in report["restore"].items():
            print(f"restore probe: {name}: best {values['best_ms']} ms ({values['gbps']} GB/s), "
                  f"all {values['all_ms']}", flush=True)
    for count in [int(x) for x in args.layouts.split(",")] if "vmm" in sections else []:
        print(f"--- layout {count} x {total // count / 2**20:.0f} MiB", flush=True)
        entry = {
            "raw": raw_variants(device, count, total // count, args.repeats),
            "library_untouched": library_runs(torch, tms, tms_stats, count, total, args.repeats, touch=False),
            "library_touched": library_runs(torch, tms, tms_stats, count, total, args.repeats, touch=True),
        }
        report["layouts"][str(count)] = entry
        for name, values in entry["raw"].items():
            print(f"raw {name}: map {values['map_ms']:.3f} ms, unmap {values['unmap']}", flush=True)
        for name in ("library_untouched", "library_touched"):
            print(f"{name}: pause {entry[name]['pause_ms']}, resume {entry[name]['resume_ms']}", flush=True)
    with open(args.out, "w", encoding="utf-8") as out:
        json.dump(report, out, indent=2)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
