"""Can host backup memory be given back while the restore copies still run?

Measures on fresh THP host memory, registered in 64 MiB chunks (as the engine
does), for an N GiB host -> device restore:

  copy alone          H2D of every chunk on 2 streams, nothing else running
  unregister alone    cuMemHostUnregister of every chunk, one thread
  munmap alone        munmap of every (unregistered) chunk, one thread
  copy + release      the copies, while a second thread unregisters and
                      munmaps each chunk as soon as its copy's event completed

and RssAnon at the end of each. Prints one line per measurement.

  python bench/probes/release_overlap_probe.py [GiB=8]

Result on an H200 (8 GiB, 128 chunks; docs/architecture.md, "Host memory
lifecycle"): copy alone 155 ms (55 GB/s); cuMemHostUnregister of the 128
chunks alone 150-173 ms (~50-57 GB/s); munmap of the unregistered THP memory
25-34 ms (250-340 GB/s). Copy + release overlapped finished at 311-330 ms:
copy and unregister serialized, because cuMemHostUnregister waits for the
copies in flight. Giving registered memory back while later restore copies
run therefore cannot make a resume faster; its floor is copy + unregister
(+ the part of munmap that does not overlap the unregistering).
"""
import ctypes
import sys
import threading
import time

import torch
from host_probe import CHUNK, check, cu, libc, rss_anon_mib, thp_memory


def fresh(total):
    """Fresh THP memory, faulted in and registered in CHUNK pieces, as the engine's blocks."""
    ptr = thp_memory(total)
    n = total // CHUNK
    for i in range(n):
        check(cu.cuMemHostRegister_v2(ctypes.c_void_p(ptr + i * CHUNK), ctypes.c_size_t(CHUNK), 1), "register")
    return ptr, n


def main():
    gib = int(sys.argv[1]) if len(sys.argv) > 1 else 8
    total = gib << 30
    dev = torch.empty(total, dtype=torch.uint8, device="cuda")
    torch.cuda.synchronize()
    ctx = ctypes.c_void_p()
    check(cu.cuCtxGetCurrent(ctypes.byref(ctx)), "ctx")
    streams = [ctypes.c_void_p() for _ in range(2)]
    for s in streams:
        check(cu.cuStreamCreate(ctypes.byref(s), 1), "stream")
    base = dev.data_ptr()

    def copy_all(ptr, n, events=None):
        for i in range(n):
            s = streams[i % 2]
            check(cu.cuMemcpyHtoDAsync_v2(ctypes.c_uint64(base + i * CHUNK), ctypes.c_void_p(ptr + i * CHUNK),
                                          ctypes.c_size_t(CHUNK), s), "copy")
            if events is not None:
                check(cu.cuEventRecord(events[i], s), "record")

    def sync():
        for s in streams:
            check(cu.cuStreamSynchronize(s), "sync")

    for rnd in range(3):
        ptr, n = fresh(total)
        copy_all(ptr, n); sync()  # warm
        t = time.perf_counter(); copy_all(ptr, n); sync(); t_copy = time.perf_counter() - t
        t = time.perf_counter()
        for i in range(n):
            check(cu.cuMemHostUnregister(ctypes.c_void_p(ptr + i * CHUNK)), "unregister")
        t_unreg = time.perf_counter() - t
        t = time.perf_counter()
        for i in range(n):
            libc.munmap(ptr + i * CHUNK, CHUNK)
        t_unmap = time.perf_counter() - t
        rss_alone = rss_anon_mib()

        ptr, n = fresh(total)
        events = [ctypes.c_void_p() for _ in range(n)]
        for e in events:
            check(cu.cuEventCreate(ctypes.byref(e), 2), "event")  # DISABLE_TIMING
        done = {}

        def releaser():
            check(cu.cuCtxSetCurrent(ctx), "setctx")
            t0 = time.perf_counter()
            for i in range(n):
                check(cu.cuEventSynchronize(events[i]), "evsync")
                check(cu.cuMemHostUnregister(ctypes.c_void_p(ptr + i * CHUNK)), "unregister")
                libc.munmap(ptr + i * CHUNK, CHUNK)
            done["t"] = time.perf_counter() - t0

        t = time.perf_counter()
        th = threading.Thread(target=releaser)
        th.start()
        copy_all(ptr, n, events)
        sync()
        t_copies_done = time.perf_counter() - t
        th.join()
        t_all = time.perf_counter() - t
        rss_overlap = rss_anon_mib()
        for e in events:
            cu.cuEventDestroy_v2(e)
        gb = total / 1e9
        print(f"round {rnd}: copy alone {t_copy*1e3:.1f} ms ({gb/t_copy:.1f} GB/s); unregister alone "
              f"{t_unreg*1e3:.1f} ms ({gb/t_unreg:.1f} GB/s); munmap alone {t_unmap*1e3:.1f} ms "
              f"({gb/t_unmap:.1f} GB/s); RssAnon after {rss_alone} MiB | overlapped: copies done "
              f"{t_copies_done*1e3:.1f} ms ({gb/t_copies_done:.1f} GB/s), all released {t_all*1e3:.1f} ms "
              f"({gb/t_all:.1f} GB/s), RssAnon {rss_overlap} MiB", flush=True)


if __name__ == "__main__":
    main()
