"""Can host backup memory be given back while the restore copies still run?

Measures on fresh THP host memory, registered in 64 MiB chunks (as the engine
does), for an N GiB host -> device restore:

  copy alone          H2D of every chunk on 2 streams, nothing else running
  unregister alone    cuMemHostUnregister of every chunk, one thread
  munmap alone        munmap of every (unregistered) chunk, one thread
  copy + release      the copies, while a second thread unregisters and
                      munmaps each chunk as soon as its copy's event completed

and RssAnon at the end of each. Prints one line per measurement.

  python bench/release_overlap_probe.py [GiB=8]
"""
import ctypes
import ctypes.util
import sys
import threading
import time

import torch

CHUNK = 64 << 20
MADV_HUGEPAGE = 14

libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
cu = ctypes.CDLL("libcuda.so.1")


def check(rc, what):
    if rc != 0:
        raise RuntimeError(f"{what} failed: CUresult {rc}")


def rss_anon_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) // 1024
    return -1


def fresh(total):
    ptr = libc.mmap(None, total, 3, 0x22, -1, 0)  # RW, PRIVATE|ANONYMOUS
    libc.madvise(ptr, total, MADV_HUGEPAGE)
    n = total // CHUNK
    # fault in on 8 threads (memset releases the GIL through ctypes)
    def touch(k):
        for i in range(k, n, 8):
            libc.memset(ptr + i * CHUNK, 1, CHUNK)
    ts = [threading.Thread(target=touch, args=(k,)) for k in range(8)]
    [t.start() for t in ts]
    [t.join() for t in ts]
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
