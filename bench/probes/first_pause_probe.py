"""Pause -> resume cycles in a fresh process: what the first pause costs over
the later ones, and what a resume costs now that it gives its host backup
back before it returns.

Runs PAUSES pause -> resume cycles of one tensor (SIZE_GIB, default 8) with
CPU backup (CPU_BACKUP_BACKEND pinned or mmap, default pinned) and prints,
per cycle, the pause and resume seconds, RssAnon and AnonHugePages when
paused and at the return of resume, and the host's THP settings. With
TMS_LOG_LEVEL=info the engine logs each transition's phases on stderr
(resume: create and map, host restore, commit, host release).

    TMS_LOG_LEVEL=info python bench/probes/first_pause_probe.py [preload|torch]

In preload mode start it as the GPU tests do (LD_PRELOAD of the library).
"""

import os
import sys
import time

import torch
from torch_memory_saver import torch_memory_saver as tms

GIB = 2**30


def status_kib(key, path="/proc/self/status"):
    with open(path) as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return -1


def memory():
    rss = status_kib("RssAnon") / 2**20
    huge = status_kib("AnonHugePages", "/proc/self/smaps_rollup") / 2**20
    return f"RssAnon {rss:.2f} GiB AnonHugePages {huge:.2f} GiB"


def main():
    tms.hook_mode = sys.argv[1] if len(sys.argv) > 1 else "preload"
    size = int(float(os.environ.get("SIZE_GIB", "8")) * GIB)
    pauses = int(os.environ.get("PAUSES", "3"))
    for name in ("enabled", "defrag"):
        with open(f"/sys/kernel/mm/transparent_hugepage/{name}") as setting:
            print(f"thp {name}: {setting.read().strip()}")
    backend = os.environ.get("CPU_BACKUP_BACKEND", "pinned")
    with tms.region("w", enable_cpu_backup=True, cpu_backup_backend=backend):
        weights = torch.ones(size // 2, dtype=torch.bfloat16, device="cuda")
    torch.cuda.synchronize()
    for cycle in range(pauses):
        start = time.perf_counter()
        tms.pause("w")
        paused_s = time.perf_counter() - start
        paused_memory = memory()
        start = time.perf_counter()
        tms.resume("w")
        resumed_s = time.perf_counter() - start
        print(
            f"cycle {cycle}: pause {paused_s:.3f} s ({size / paused_s / 1e9:.1f} GB/s) [{paused_memory}] "
            f"resume {resumed_s:.3f} s ({size / resumed_s / 1e9:.1f} GB/s) [{memory()}]",
            flush=True,
        )
    del weights


if __name__ == "__main__":
    main()
