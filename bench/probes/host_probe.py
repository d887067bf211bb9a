"""What the host-memory probes share: libc and libcuda through ctypes, fresh
THP memory faulted in on 8 threads, and this process's RssAnon.

Imported by release_overlap_probe.py and staged_copy_probe.py (run them as
scripts from anywhere: Python puts bench/probes/ on the path).
"""
import ctypes
import ctypes.util
import threading

CHUNK = 64 << 20  # the engine's default register and copy chunk
MADV_HUGEPAGE = 14

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
        raise RuntimeError(f"{what} failed: CUresult {rc}")


def rss_anon_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) // 1024
    return -1


def thp_memory(total, fault=True):
    """Anonymous memory with MADV_HUGEPAGE, faulted in on 8 threads (memset releases the GIL)."""
    ptr = libc.mmap(None, total, 3, 0x22, -1, 0)  # RW, PRIVATE|ANONYMOUS
    libc.madvise(ptr, total, MADV_HUGEPAGE)
    if fault:
        n = total // CHUNK

        def touch(k):
            for i in range(k, n, 8):
                libc.memset(ptr + i * CHUNK, 1, CHUNK)

        threads = [threading.Thread(target=touch, args=(k,)) for k in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    return ptr
