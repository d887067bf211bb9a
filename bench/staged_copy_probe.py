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

  python bench/staged_copy_probe.py [GiB=8]
"""
import ctypes
import ctypes.util
import sys
import threading
import time

import torch

CHUNK = 64 << 20
SLOTS_PER_THREAD = 2
libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
libc.memcpy.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
libc.memcpy.restype = ctypes.c_void_p
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
cu = ctypes.CDLL("libcuda.so.1")


def check(rc, what):
    if rc != 0:
        raise RuntimeError(f"{what}: CUresult {rc}")


def rss_anon_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) // 1024


def anon(total, fault):
    ptr = libc.mmap(None, total, 3, 0x22, -1, 0)
    libc.madvise(ptr, total, 14)
    if fault:
        n = total // CHUNK
        def touch(k):
            for i in range(k, n, 8):
                libc.memset(ptr + i * CHUNK, 1, CHUNK)
        ts = [threading.Thread(target=touch, args=(k,)) for k in range(8)]
        [t.start() for t in ts]; [t.join() for t in ts]
    return ptr


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
            backup = anon(total, fault=False)
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
