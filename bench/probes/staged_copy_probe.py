"""What would copies through a pinned staging ring give, instead of
registering the backup memory itself?

Registered backup memory must be unregistered before it goes back to the OS,
and cuMemHostUnregister waits for copies in flight (release_overlap_probe.py),
so a resume that gives its host memory back costs copy + unregister. With a
small pinned ring, the backup stays ordinary anonymous memory: CPU threads
memcpy between it and the ring, the copy engine moves ring slots, and each
backup chunk is munmapped as soon as it was read.

  restore  T threads: memcpy backup chunk -> free slot, H2D from the slot,
           munmap the chunk; N GiB
  save     T threads: D2H into a free slot, memcpy the slot -> fresh memory
           (faulted in by the memcpy); N GiB

  python bench/probes/staged_copy_probe.py [GiB=8]

Result on an H200 (8 GiB; docs/architecture.md, "Host memory lifecycle"):
restore + give back took 240 ms at 12 threads (0.65x of the 55 GB/s restore
copy rate, against ~330-360 ms for copy + unregister + munmap of registered
memory), but saving into fresh memory ran at 22 GB/s, slower than the
library's cold pause into registered THP memory. Not built; kept as the
measured alternative.
"""
import ctypes
import sys
import threading
import time

import torch
from host_probe import CHUNK, check, cu, libc, rss_anon_mib, thp_memory

SLOTS_PER_THREAD = 2


def main():
    gib = int(sys.argv[1]) if len(sys.argv) > 1 else 8
    total = gib << 30
    n = total // CHUNK
    dev = torch.empty(total, dtype=torch.uint8, device="cuda")
    torch.cuda.synchronize()
    base = dev.data_ptr()
    ctx = ctypes.c_void_p()
    check(cu.cuCtxGetCurrent(ctypes.byref(ctx)), "ctx")
    for threads in (4, 8, 12, 16):
        nslots = threads * SLOTS_PER_THREAD
        ring = ctypes.c_void_p()
        check(cu.cuMemHostAlloc(ctypes.byref(ring), ctypes.c_size_t(nslots * CHUNK), 1), "hostalloc")
        streams, events = [], []
        for _ in range(threads):
            s = ctypes.c_void_p(); check(cu.cuStreamCreate(ctypes.byref(s), 1), "stream"); streams.append(s)
        for _ in range(nslots):
            e = ctypes.c_void_p(); check(cu.cuEventCreate(ctypes.byref(e), 2), "event"); events.append(e)
        used = [False] * nslots

        def run(direction, backup):
            def worker(k):
                check(cu.cuCtxSetCurrent(ctx), "setctx")
                j = 0
                for i in range(k, n, threads):
                    slot = k * SLOTS_PER_THREAD + (j % SLOTS_PER_THREAD); j += 1
                    sp = ring.value + slot * CHUNK
                    if used[slot]:
                        check(cu.cuEventSynchronize(events[slot]), "evsync")
                    if direction == "restore":
                        libc.memcpy(sp, backup + i * CHUNK, CHUNK)
                        libc.munmap(backup + i * CHUNK, CHUNK)
                        check(cu.cuMemcpyHtoDAsync_v2(ctypes.c_uint64(base + i * CHUNK), ctypes.c_void_p(sp),
                                                      ctypes.c_size_t(CHUNK), streams[k]), "h2d")
                        check(cu.cuEventRecord(events[slot], streams[k]), "rec")
                        used[slot] = True
                    else:
                        check(cu.cuMemcpyDtoHAsync_v2(ctypes.c_void_p(sp), ctypes.c_uint64(base + i * CHUNK),
                                                      ctypes.c_size_t(CHUNK), streams[k]), "d2h")
                        check(cu.cuStreamSynchronize(streams[k]), "sync")
                        libc.memcpy(backup + i * CHUNK, sp, CHUNK)
                        used[slot] = False
                check(cu.cuStreamSynchronize(streams[k]), "sync")
            ts = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
            t = time.perf_counter()
            [x.start() for x in ts]; [x.join() for x in ts]
            return time.perf_counter() - t

        gb = total / 1e9
        for rnd in range(2):
            backup = thp_memory(total, fault=False)
            t_save = run("save", backup)
            rss_paused = rss_anon_mib()
            used[:] = [False] * nslots
            t_restore = run("restore", backup)
            used[:] = [False] * nslots
            print(f"threads {threads} round {rnd}: save into fresh {t_save*1e3:.0f} ms ({gb/t_save:.1f} GB/s), "
                  f"restore+give back {t_restore*1e3:.0f} ms ({gb/t_restore:.1f} GB/s), RssAnon paused "
                  f"{rss_paused} MiB, after restore {rss_anon_mib()} MiB", flush=True)
        for s in streams: cu.cuStreamDestroy_v2(s)
        for e in events: cu.cuEventDestroy_v2(e)
        cu.cuMemFreeHost(ring)


if __name__ == "__main__":
    main()
