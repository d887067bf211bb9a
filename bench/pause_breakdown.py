#!/usr/bin/env python3
"""Where the time of a pause/resume without backup goes, next to raw VMM loops in the same process.

The main benchmark compares the library with a raw loop of create/map/access and
unmap/release measured in another process, on memory no kernel ever touched.
This diagnostic runs, in one process and on one device, for each layout:

- raw loops in several variants: the benchmark's (per handle unmap then
  release), the engine's order (unmap every handle, then release every
  handle), on memory a kernel wrote first or not, with a device synchronize
  first or not; the unmap and release calls timed apart;
- the library: ``pause``/``resume`` of a region tag holding the same layout,
  its tensors written before each pause or not; the time seen by Python and
  by the engine (``stats()``), and the engine's own phases (its INFO log line).

With ``--sections restore`` (also in the default): host-to-device copies from
page-locked THP memory (the engine's backup memory), whole and in the engine's
64 MiB chunks on two streams, into device memory copied to before and into
memory that ``resume()`` has just mapped, next to the library's own restore.

    PYTHONPATH=python TMS_LIBRARY_PATH=build/libtorch_memory_saver.so \\
        python bench/pause_breakdown.py --total-gib 8 --out breakdown.json

Needs a GPU; prints a table and writes JSON. Timings are best of --repeats.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import sys
import time
from typing import Any, Callable, Dict, List, Tuple

os.environ.setdefault("TMS_LOG_LEVEL", "info")  # the engine logs each transition's phases

GiB = 2**30


def bind_extra(lib: Any) -> None:
    lib.cuMemsetD8_v2.argtypes = [ctypes.c_uint64, ctypes.c_ubyte, ctypes.c_size_t]
    lib.cuMemsetD8_v2.restype = ctypes.c_int


class RawLoop:
    """create/map/access then unmap/release of `count` handles in one reservation, in variants."""

    def __init__(self, floor: Any, count: int, size: int) -> None:
        self.floor, self.lib = floor, floor.lib
        self.count = count
        self.size = -(-size // floor.granularity) * floor.granularity
        base = ctypes.c_uint64()
        floor._check(self.lib.cuMemAddressReserve(ctypes.byref(base), count * self.size, floor.granularity, 0, 0),
                     "cuMemAddressReserve")
        self.va = int(base.value)
        self.handles: List[int] = [0] * count

    def close(self) -> None:
        self.lib.cuMemAddressFree(self.va, self.count * self.size)

    def _address(self, i: int) -> int:
        return self.va + i * self.size

    def map_all(self, interleaved: bool = True) -> float:
        lib, handle = self.lib, ctypes.c_uint64()
        prop, access = ctypes.byref(self.floor.prop), ctypes.byref(self.floor.access)
        start = time.perf_counter()
        if interleaved:
            for i in range(self.count):
                self.floor._check(lib.cuMemCreate(ctypes.byref(handle), self.size, prop, 0), "cuMemCreate")
                self.handles[i] = handle.value
                self.floor._check(lib.cuMemMap(self._address(i), self.size, 0, handle.value, 0), "cuMemMap")
                self.floor._check(lib.cuMemSetAccess(self._address(i), self.size, access, 1), "cuMemSetAccess")
        else:  # the engine's resume: every handle first, then map + access each
            for i in range(self.count):
                self.floor._check(lib.cuMemCreate(ctypes.byref(handle), self.size, prop, 0), "cuMemCreate")
                self.handles[i] = handle.value
            for i in range(self.count):
                self.floor._check(lib.cuMemMap(self._address(i), self.size, 0, self.handles[i], 0), "cuMemMap")
                self.floor._check(lib.cuMemSetAccess(self._address(i), self.size, access, 1), "cuMemSetAccess")
        return time.perf_counter() - start

    def touch(self) -> None:
        self.floor._check(self.lib.cuMemsetD8_v2(self.va, 1, self.count * self.size), "cuMemsetD8")
        self.floor._check(self.lib.cuCtxSynchronize(), "cuCtxSynchronize")

    def unmap_all(self, interleaved: bool, synchronize_first: bool) -> Dict[str, float]:
        lib = self.lib
        start = time.perf_counter()
        if synchronize_first:
            self.floor._check(lib.cuCtxSynchronize(), "cuCtxSynchronize")
        synced = time.perf_counter()
        unmap_s = release_s = 0.0
        if interleaved:
            for i in range(self.count):
                self.floor._check(lib.cuMemUnmap(self._address(i), self.size), "cuMemUnmap")
                self.floor._check(lib.cuMemRelease(self.handles[i]), "cuMemRelease")
        else:
            for i in range(self.count):
                self.floor._check(lib.cuMemUnmap(self._address(i), self.size), "cuMemUnmap")
            unmap_s = time.perf_counter() - synced
            for i in range(self.count):
                self.floor._check(lib.cuMemRelease(self.handles[i]), "cuMemRelease")
            release_s = time.perf_counter() - synced - unmap_s
        end = time.perf_counter()
        self.handles = [0] * self.count
        return {"total": end - start, "synchronize": synced - start, "unmap": unmap_s, "release": release_s}


def best(rows: List[Dict[str, float]]) -> Dict[str, float]:
    chosen = min(rows, key=lambda r: r["total"])
    return {k: round(v * 1e3, 4) for k, v in chosen.items()}


def raw_variants(floor: Any, count: int, size: int, repeats: int) -> Dict[str, Any]:
    loop = RawLoop(floor, count, size)
    out: Dict[str, Any] = {}
    try:
        variants = {
            "bench floor (untouched, per-handle unmap+release)": (False, True, False, True),
            "touched, per-handle unmap+release": (True, True, False, True),
            "touched, engine order (unmap all, release all)": (True, False, False, True),
            "touched, engine order, synchronize first": (True, False, True, True),
            "touched, engine order, engine resume order": (True, False, False, False),
        }
        for name, (touch, interleaved, sync_first, map_interleaved) in variants.items():
            maps, unmaps = [], []
            for _ in range(repeats):
                floor._check(floor.lib.cuCtxSynchronize(), "cuCtxSynchronize")
                maps.append({"total": loop.map_all(map_interleaved)})
                if touch:
                    loop.touch()
                unmaps.append(loop.unmap_all(interleaved, sync_first))
            out[name] = {"map_ms": best(maps)["total"], "unmap": best(unmaps)}
    finally:
        loop.close()
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


def registered_host_tensor(torch: Any, nbytes: int) -> Tuple[Any, Any]:
    """(tensor, mmap) of page-locked anonymous THP memory, as the engine backs up into."""
    import mmap

    buffer = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    buffer.madvise(mmap.MADV_HUGEPAGE)
    host = torch.frombuffer(buffer, dtype=torch.uint8)
    host.fill_(7)
    code = torch.cuda.cudart().cudaHostRegister(host.data_ptr(), nbytes, 0)
    if int(getattr(code, "value", code)) != 0:
        raise RuntimeError(f"cudaHostRegister failed: {code}")
    return host, buffer


def restore_probe(torch: Any, tms: Any, total: int, repeats: int) -> Dict[str, Any]:
    """H2D from page-locked THP memory: whole vs 64 MiB chunks on two streams, into memory copied to
    before vs memory just mapped by resume(); and the library's own restore of the same size."""
    host, _buffer = registered_host_tensor(torch, total)
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
    report = {name: {"best_ms": round(min(v) * 1e3, 2), "gbps": round(total / min(v) / 1e9, 1),
                     "all_ms": [round(x * 1e3, 2) for x in v]} for name, v in out.items()}
    torch.cuda.cudart().cudaHostUnregister(host.data_ptr())
    return report


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
    from torch_memory_saver.bench import CudaDriverFloor

    tms.hook_mode = "torch"  # no LD_PRELOAD needed
    torch.cuda.init()
    torch.zeros(1, device="cuda")
    floor = CudaDriverFloor(torch.cuda.current_device())
    bind_extra(floor.lib)
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
            "raw": raw_variants(floor, count, total // count, args.repeats),
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
