"""Why is the first cold pause of a fresh process slower than the next ones?

Per round, on N GiB of fresh anonymous memory with MADV_HUGEPAGE: fault-in
time (one store per 2 MiB huge page; the stores run under Python's GIL, so
this is the one-thread rate), cuMemHostRegister time of the
64 MiB chunks, then unregister + munmap; and the /proc/vmstat counters that
move meanwhile (compaction stalls, THP faults and fallbacks). Run it twice in
a row as two processes: a cost that the second process does not pay belongs
to the machine's memory state (free huge pages), one it pays again belongs to
per-process setup.

  python bench/probes/first_touch_probe.py [GiB=8] [rounds=3]
"""
import ctypes
import ctypes.util
import sys
import threading
import time

CHUNK = 64 << 20
libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
COUNTERS = ("compact_stall", "compact_success", "compact_fail", "thp_fault_alloc", "thp_fault_fallback",
            "pgalloc_normal")


def vmstat():
    out = {}
    with open("/proc/vmstat") as f:
        for line in f:
            k, v = line.split()
            if k in COUNTERS:
                out[k] = int(v)
    return out


def meminfo(*keys):
    out = {}
    with open("/proc/meminfo") as f:
        for line in f:
            k, v = line.split(":")
            if k in keys:
                out[k] = int(v.split()[0]) // 1024
    return out


def main():
    gib = int(sys.argv[1]) if len(sys.argv) > 1 else 8
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    total = gib << 30
    n = total // CHUNK
    cu = ctypes.CDLL("libcuda.so.1")
    assert cu.cuInit(0) == 0
    dev = ctypes.c_int()
    assert cu.cuDeviceGet(ctypes.byref(dev), 0) == 0
    ctx = ctypes.c_void_p()
    assert cu.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), dev) == 0
    assert cu.cuCtxSetCurrent(ctx) == 0
    print("meminfo before:", meminfo("MemFree", "MemAvailable", "Cached"), flush=True)
    for rnd in range(rounds):
        ptr = libc.mmap(None, total, 3, 0x22, -1, 0)
        libc.madvise(ptr, total, 14)
        before = vmstat()

        def touch(k):
            p = ctypes.cast(ptr, ctypes.POINTER(ctypes.c_char))
            for i in range(k, n, 8):
                for off in range(0, CHUNK, 2 << 20):  # one store per huge page is enough with THP
                    p[i * CHUNK + off] = b"\x01"
        t = time.perf_counter()
        ts = [threading.Thread(target=touch, args=(k,)) for k in range(8)]
        [x.start() for x in ts]; [x.join() for x in ts]
        t_fault = time.perf_counter() - t
        t = time.perf_counter()
        for i in range(n):
            assert cu.cuMemHostRegister_v2(ctypes.c_void_p(ptr + i * CHUNK), ctypes.c_size_t(CHUNK), 1) == 0
        t_reg = time.perf_counter() - t
        after = vmstat()
        t = time.perf_counter()
        for i in range(n):
            assert cu.cuMemHostUnregister(ctypes.c_void_p(ptr + i * CHUNK)) == 0
        t_unreg = time.perf_counter() - t
        libc.munmap(ptr, total)
        delta = {k: after[k] - before[k] for k in COUNTERS}
        gb = total / 1e9
        print(f"round {rnd}: fault-in {t_fault*1e3:.0f} ms ({gb/t_fault:.1f} GB/s), register {t_reg*1e3:.0f} ms "
              f"({gb/t_reg:.1f} GB/s), unregister {t_unreg*1e3:.0f} ms; vmstat delta {delta}", flush=True)


if __name__ == "__main__":
    main()
