"""Two processes sharing one GPU: ``python colocated_worker.py holder|borrower --sync-dir DIR ...``.

holder (process A, uses torch_memory_saver): fills most of the GPU's free
memory with region tensors (tag ``weights`` with CPU backup, tag ``kv_cache``
without), records checksums and addresses, pauses both tags, and tells the
borrower. When the borrower is done it resumes and checks that the weights
are bit-exact and every address is unchanged.

borrower (process B, plain torch, started separately by the test): once the
holder has paused, allocates more than was free before the pause (possible
only with the memory the holder released), computes with it, frees it, and
exits.

They talk through JSON files in --sync-dir:
  borrower_ready.json  B has its CUDA context (so A's measurements include it)
  paused.json          A paused; how much was free before and how much it released
  borrower_done.json   B allocated, computed and freed; its numbers
  holder_result.json   A's final result
Each process prints "<ROLE> OK" and exits 0 on success.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from pathlib import Path

import torch

from worker_common import GIB, MIB, Checks, free_bytes, int_checksum, tag_stats, wait_for_json, write_json

ALIGN = 2 * MIB
CHUNK_BYTES = 1 * GIB  # one region tensor per GiB, so each tag has many allocations


def _align(n: int) -> int:
    return max(ALIGN, n // ALIGN * ALIGN)


def _chunks(total: int):
    sizes = []
    while total > 0:
        size = min(CHUNK_BYTES, total)
        sizes.append(size)
        total -= size
    return sizes


def holder(args: argparse.Namespace) -> int:
    from torch_memory_saver import torch_memory_saver as tms

    sync = Path(args.sync_dir)
    checks = Checks(strict=True)
    tms.hook_mode = args.hook_mode
    torch.cuda.set_device(0)
    torch.zeros(1, device="cuda")  # the CUDA context exists before anything is measured
    wait_for_json(sync / "borrower_ready.json", args.timeout)

    free0, total = torch.cuda.mem_get_info()
    target = int(free0 * args.fraction)
    weights_bytes = _align(int(target * args.weights_share))
    kv_bytes = _align(target - weights_bytes)
    print(
        f"holder: hook_mode={args.hook_mode} total {total / GIB:.1f} GiB, free {free0 / GIB:.1f} GiB; "
        f"weights {weights_bytes / GIB:.2f} GiB (CPU backup), kv_cache {kv_bytes / GIB:.2f} GiB",
        flush=True,
    )

    generator = torch.Generator(device="cuda").manual_seed(args.seed)
    with tms.region("weights", enable_cpu_backup=True):
        weights = [
            torch.randint(
                -(2**31), 2**31 - 1, (size // 4,), dtype=torch.int32, device="cuda", generator=generator
            )
            for size in _chunks(weights_bytes)
        ]
    with tms.region("kv_cache"):
        kv_cache = [torch.full((size,), 0x5A, dtype=torch.uint8, device="cuda") for size in _chunks(kv_bytes)]

    pointers = [t.data_ptr() for t in weights + kv_cache]
    sums = [int_checksum(w) for w in weights]
    samples = [w[: 1 << 20].cpu() for w in weights]  # first 4 MiB of each, compared exactly
    torch.cuda.synchronize()
    torch.cuda.empty_cache()  # checksum temporaries go back, so the borrower can have them

    before = tag_stats(["weights", "kv_cache"])
    expected = sum(s["active_bytes"] for s in before.values() if s)
    checks.check("regions hold the planned bytes", expected >= weights_bytes + kv_bytes, before)

    free_before = free_bytes()
    start = time.perf_counter()
    tms.pause("kv_cache")
    tms.pause("weights")
    pause_seconds = time.perf_counter() - start
    free_paused = free_bytes()
    released = free_paused - free_before
    print(
        f"holder: paused in {pause_seconds:.3f} s; free {free_before / GIB:.2f} -> {free_paused / GIB:.2f} GiB "
        f"(released {released / GIB:.2f} GiB of {expected / GIB:.2f} GiB in regions)",
        flush=True,
    )
    checks.check(
        "pause released >= 90% of the region bytes", released >= 0.9 * expected, (released, expected)
    )
    paused_stats = tag_stats(["weights", "kv_cache"])
    for tag, s in paused_stats.items():
        checks.check(f"stats[{tag}] all paused", s is not None and s["active_bytes"] == 0, s)
        checks.check(
            f"stats[{tag}] paused_bytes == active before",
            s is not None and s["paused_bytes"] == before[tag]["active_bytes"],
            (s, before[tag]),
        )
    checks.check(
        "stats[weights] has a backup",
        paused_stats["weights"]["backup_bytes"] >= 0.99 * weights_bytes,
        paused_stats["weights"],
    )
    checks.check("stats[kv_cache] has no backup", paused_stats["kv_cache"]["backup_bytes"] == 0)

    write_json(
        sync / "paused.json",
        {
            "free_before_pause": free_before,
            "released": released,
            "region_bytes": expected,
            "pid": os.getpid(),
        },
    )
    done = wait_for_json(sync / "borrower_done.json", args.timeout)
    checks.check("borrower succeeded", bool(done.get("ok")), done)

    start = time.perf_counter()
    tms.resume("weights")
    tms.resume("kv_cache")
    resume_seconds = time.perf_counter() - start
    free_resumed = free_bytes()
    print(
        f"holder: resumed in {resume_seconds:.3f} s; free {free_resumed / GIB:.2f} GiB",
        flush=True,
    )
    checks.check(
        "addresses unchanged", [t.data_ptr() for t in weights + kv_cache] == pointers, "data_ptr changed"
    )
    after_sums = [int_checksum(w) for w in weights]
    checks.check("weights bit-exact (checksums)", after_sums == sums, {"before": sums, "after": after_sums})
    exact = all(torch.equal(w[: 1 << 20].cpu(), s) for w, s in zip(weights, samples))
    checks.check("weights bit-exact (samples)", exact)
    for t in kv_cache:  # the resumed KV cache is usable memory again
        t.fill_(7)
    torch.cuda.synchronize()
    checks.check("kv_cache writable after resume", all(int(t[-1]) == 7 for t in kv_cache))
    resumed_stats = tag_stats(["weights", "kv_cache"])
    for tag, s in resumed_stats.items():
        checks.check(
            f"stats[{tag}] active again",
            s["paused_bytes"] == 0 and s["active_bytes"] == before[tag]["active_bytes"],
            s,
        )
        checks.check(
            f"stats[{tag}] counted one pause and one resume",
            s["pause_count"] == 1 and s["resume_count"] == 1,
            s,
        )

    write_json(
        sync / "holder_result.json",
        {
            "hook_mode": args.hook_mode,
            "weights_bytes": weights_bytes,
            "kv_bytes": kv_bytes,
            "free_before_pause": free_before,
            "released": released,
            "pause_seconds": pause_seconds,
            "resume_seconds": resume_seconds,
            "borrower": done,
            "stats_paused": paused_stats,
            "stats_resumed": resumed_stats,
            "checks": checks.items,
        },
    )
    print("HOLDER OK", flush=True)
    return 0


def borrower(args: argparse.Namespace) -> int:
    sync = Path(args.sync_dir)
    torch.cuda.set_device(0)
    torch.zeros(1, device="cuda")
    write_json(sync / "borrower_ready.json", {"pid": os.getpid()})
    info = wait_for_json(sync / "paused.json", args.timeout)

    free_now = free_bytes()
    # More than was free before the holder paused: only possible with the memory it released.
    need = info["free_before_pause"] + info["released"] // 2
    limit = free_now - GIB  # leave room for cuBLAS workspaces and the like
    result = {"free_now": free_now, "need": need, "limit": limit, "ok": False}
    print(
        f"borrower: free {free_now / GIB:.2f} GiB; allocating {need / GIB:.2f} GiB "
        f"(free before the holder's pause: {info['free_before_pause'] / GIB:.2f} GiB)",
        flush=True,
    )
    if need > limit:
        result["error"] = "the holder's pause did not make enough memory free"
        write_json(sync / "borrower_done.json", result)
        print(f"borrower: {result['error']}", flush=True)
        return 1
    start = time.perf_counter()
    block = torch.empty(need, dtype=torch.uint8, device="cuda")
    block.fill_(0xAB)
    side = 8192
    matrix = block[: side * side * 2].view(torch.bfloat16).view(side, side)
    matrix.normal_()
    product = matrix @ matrix
    finite = bool(torch.isfinite(product).all())
    tail_ok = int(block[-1]) == 0xAB and int(block[need // 2]) == 0xAB
    del product, matrix, block
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    result.update(
        ok=finite and tail_ok, finite=finite, pattern_ok=tail_ok, seconds=time.perf_counter() - start
    )
    write_json(sync / "borrower_done.json", result)
    print(f"borrower: done {result}", flush=True)
    if not result["ok"]:
        return 1
    print("BORROWER OK", flush=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("role", choices=("holder", "borrower"))
    parser.add_argument("--sync-dir", required=True)
    parser.add_argument("--hook-mode", default="torch", choices=("preload", "torch"))
    parser.add_argument("--fraction", type=float, default=0.7, help="share of free memory the holder takes")
    parser.add_argument("--weights-share", type=float, default=0.25, help="share of that with CPU backup")
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--timeout", type=float, default=240.0, help="seconds to wait for the other process")
    args = parser.parse_args()
    try:
        return holder(args) if args.role == "holder" else borrower(args)
    except BaseException:  # the test reads the traceback from the log
        traceback.print_exc()
        return 1


if __name__ == "__main__":
    sys.exit(main())
