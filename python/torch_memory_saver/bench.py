"""``python -m torch_memory_saver bench``: pause/resume speed against the hardware floors, in one run.

What it measures (one GPU; sizes from ``--total-gib``, layouts from ``--layouts``):

floors (no torch_memory_saver involved)
    pinned D2H / H2D copy rate (torch, side stream, best of N), fresh pinned
    host allocation rate (``torch.empty(pin_memory=True)``), the raw CUDA VMM
    calls for each layout (ctypes on libcuda.so.1: cuMemCreate+cuMemMap+
    cuMemSetAccess and cuMemUnmap+cuMemRelease, n handles of total/n), and
    plain torch allocation of 2048 x 2 MiB tensors on an empty cache;
    with ``--parts ...,disk``: sequential write and read rates of the disk
    backup directory (64 MiB O_DIRECT blocks from a page-aligned buffer,
    no torch, see :func:`disk_floor`).
library
    pause/resume without backup; pause with CPU backup cold (retain off) and
    warm (retain on, after a pause/resume that primed the retained memory);
    resume with backup; for the host kinds ``pinned`` and ``mmap``; process
    RSS along the way; allocation of 2048 x 2 MiB tensors inside a region;
    with ``disk`` in ``--parts``: pause/resume of an ``enable_disk_backup=True``
    tag (files written and read back), contents verified, files gone after resume.
    Contents are filled with a non-periodic pattern before every backed-up
    pause and compared after every resume; a mismatch fails the run (exit 3).

Every GPU measurement runs in a fresh worker process (this module, started
with ``sys.executable``). This keeps runs from disturbing each other: the
library keeps one torch MemPool per (tag, backup policy) for the life of a
process, and freed tensors of a region stay in that pool as engine
allocations (torch.cuda.empty_cache() cannot release a live MemPool), so a
second layout in the same process would reuse the first one's segments. It
also makes "cold" really cold, makes RSS figures per host kind meaningful,
and turns a crash of one measurement into one failed item instead of a lost
run. The parent process never creates a CUDA context.

Outputs under ``--out`` (default ./bench-results): results.json (all raw
numbers, per worker), results.md (tables, card in the heading),
rate_vs_layout.png (when matplotlib is importable), logs/ (one log per worker).

Exit status: 0 all measured and contents exact; 1 some measurement failed
(reported in the outputs); 2 the benchmark cannot run here (no torch, no GPU,
no engine library); 3 contents differed after a resume (DATA MISMATCH).
Missed performance targets do not change the exit status.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import errno
import gc
import json
import math
import os
import mmap
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from ._disk_files import named_backup_files, open_backup_files

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30

DEFAULT_LAYOUTS = (1, 16, 256, 4096)
QUICK_LAYOUTS = (1, 16)
HOST_KINDS = ("pinned", "mmap")
PARTS = ("floors", "nobackup", "backup", "alloc", "disk")
# "disk" writes and reads a few GiB in the backup directory: opt-in (--parts floors,nobackup,backup,alloc,disk).
DEFAULT_PARTS = ("floors", "nobackup", "backup", "alloc")
DEFAULT_DISK_LAYOUTS = (1, 16)
MAX_DISK_LAYOUTS = 4
DEFAULT_DISK_GIB_CAP = 4.0
DISK_BLOCK_BYTES = 64 * MiB
DISK_IO_ALIGNMENT = 4096

EXIT_OK = 0
EXIT_MEASUREMENT_FAILED = 1
EXIT_UNAVAILABLE = 2
EXIT_MISMATCH = 3

# Environment that would change what the library does behind the benchmark's back.
_STRIPPED_ENV = (
    "TMS_DRIVER",
    "TMS_INIT_ENABLE",
    "TMS_INIT_ENABLE_CPU_BACKUP",
    "TMS_INIT_ENABLE_DISK_BACKUP",
    "TMS_INIT_CPU_BACKUP_BACKEND",
    "TMS_RETAIN_CPU_BACKUP",
)

# Issue 4 targets: operation -> (comparison, factor, floor key, text).
# "rate" targets compare GB/s (library / floor >= factor);
# "time" targets compare seconds (library / floor <= factor).
TARGETS: Dict[str, Tuple[str, float, str, str]] = {
    "pause_cold": (">=", 0.5, "d2h", ">= 0.5x pinned D2H"),
    "pause_cold_retain": (">=", 0.5, "d2h", ">= 0.5x pinned D2H"),
    "pause_warm": (">=", 0.9, "d2h", ">= 0.9x pinned D2H"),
    "resume_cold": (">=", 0.9, "h2d", ">= 0.9x pinned H2D"),
    "resume_retain_first": (">=", 0.9, "h2d", ">= 0.9x pinned H2D"),
    "resume_warm": (">=", 0.9, "h2d", ">= 0.9x pinned H2D"),
    "pause_nobackup": ("<=", 1.1, "vmm_unmap", "<= 1.1x raw VMM unmap+release"),
    "resume_nobackup": ("<=", 1.1, "vmm_map", "<= 1.1x raw VMM create+map+access"),
    "region_alloc": ("<=", 1.05, "torch_alloc", "<= 1.05x plain torch alloc"),
    "pause_disk": (">=", 0.8, "disk_write", ">= 0.8x disk write"),
    "resume_disk": (">=", 0.8, "disk_read", ">= 0.8x disk read"),
}

OP_LABELS = {
    "pause_nobackup": "pause, no backup",
    "resume_nobackup": "resume, no backup",
    "pause_cold": "pause + backup, cold (retain off)",
    "resume_cold": "resume + restore (retain off)",
    "pause_cold_retain": "pause + backup, cold (retain on, 1st)",
    "resume_retain_first": "resume + restore (retain on, 1st)",
    "pause_warm": "pause + backup, warm (retain on)",
    "resume_warm": "resume + restore (retain on, warm)",
    "region_alloc": "alloc in region",
    "pause_disk": "pause + disk backup (write)",
    "resume_disk": "resume + disk restore (read)",
}

BACKUP_OPS = ("pause_cold", "resume_cold", "pause_cold_retain", "resume_retain_first", "pause_warm", "resume_warm")


class BenchUnavailable(Exception):
    """The benchmark cannot run in this environment (no torch, no GPU, no engine library)."""


# =============================================================================
# small helpers (no torch)
# =============================================================================


def _exc_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _exc_with_trace(exc: BaseException) -> str:
    return _exc_text(exc) + "\n" + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))[-4000:]


def rss_bytes() -> Optional[int]:
    """VmRSS of this process from /proc/self/status, in bytes (None where unavailable)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * KiB
    except (OSError, ValueError, IndexError):
        pass
    return None


def _meminfo() -> Dict[str, int]:
    info: Dict[str, int] = {}
    try:
        with open("/proc/meminfo", encoding="ascii", errors="replace") as meminfo:
            for line in meminfo:
                key, _, rest = line.partition(":")
                fields = rest.split()
                if key in ("MemTotal", "MemAvailable", "HugePages_Total", "Hugepagesize") and fields:
                    info[key] = int(fields[0]) * (KiB if len(fields) > 1 and fields[1] == "kB" else 1)
    except (OSError, ValueError):
        pass
    return info


def _read_text(path: str) -> Optional[str]:
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            return handle.read().strip()
    except OSError:
        return None


def _host_info() -> Dict[str, Any]:
    mem = _meminfo()
    return {
        "hostname": platform.node(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "mem_total_bytes": mem.get("MemTotal"),
        "mem_available_bytes": mem.get("MemAvailable"),
        "transparent_hugepage": _read_text("/sys/kernel/mm/transparent_hugepage/enabled"),
    }


def _git_info() -> Dict[str, Any]:
    for where in (Path(__file__).resolve().parent, Path.cwd()):
        try:
            head = subprocess.run(["git", "-C", str(where), "rev-parse", "HEAD"],
                                  capture_output=True, text=True, timeout=10)
            if head.returncode != 0:
                continue
            dirty = subprocess.run(["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=20)
            return {"commit": head.stdout.strip(), "dirty": bool(dirty.stdout.strip()) if dirty.returncode == 0
                    else None, "repo_dir": str(where)}
        except (OSError, subprocess.SubprocessError):
            continue
    return {"commit": None, "dirty": None, "repo_dir": None}


def _gbps(nbytes: Optional[float], seconds: Optional[float]) -> Optional[float]:
    if nbytes is None or seconds is None or seconds <= 0:
        return None
    return nbytes / seconds / 1e9


def _best(values: List[float]) -> Optional[float]:
    return min(values) if values else None


def _round_up(value: int, multiple: int) -> int:
    return (value + multiple - 1) // multiple * multiple


def _layout_elements(total_bytes: int, count: int) -> int:
    """int64 elements per tensor for `count` tensors of total/count bytes each."""
    return (total_bytes // count) // 8


# =============================================================================
# disk floor (no torch, no GPU: runs anywhere)
# =============================================================================


def filesystem_info(path: str) -> Dict[str, Any]:
    """Mount point, filesystem type, device and options of `path` (from /proc/mounts) and its statvfs sizes."""
    info: Dict[str, Any] = {"path": os.path.realpath(path)}
    try:
        st = os.statvfs(path)
        info.update({"block_size": st.f_bsize, "fragment_size": st.f_frsize,
                     "total_bytes": st.f_blocks * st.f_frsize, "free_bytes": st.f_bavail * st.f_frsize})
    except OSError as exc:
        info["statvfs_error"] = _exc_text(exc)
    best: Optional[List[str]] = None
    try:
        with open("/proc/mounts", encoding="utf-8", errors="replace") as mounts:
            for line in mounts:
                fields = line.split()
                if len(fields) < 4:
                    continue
                # /proc/mounts escapes space, tab, newline and backslash as octal.
                mount_point = (fields[1].replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n")
                               .replace("\\134", "\\"))
                inside = info["path"] == mount_point or info["path"].startswith(mount_point.rstrip("/") + "/")
                if inside and (best is None or len(mount_point) >= len(best[1])):  # later mounts shadow earlier
                    best = [fields[0], mount_point, fields[2], fields[3]]
    except OSError as exc:
        info["mounts_error"] = _exc_text(exc)
    if best is not None:
        info.update({"device": best[0], "mount_point": best[1], "fs_type": best[2], "mount_options": best[3]})
    return info


def _open_maybe_direct(path: str, flags: int, direct: bool) -> Tuple[int, bool, Optional[str]]:
    """(fd, direct I/O in use, note); falls back to buffered I/O only when O_DIRECT is refused (EINVAL)."""
    o_direct = getattr(os, "O_DIRECT", 0)
    if direct and o_direct:
        try:
            return os.open(path, flags | o_direct, 0o600), True, None
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            note = f"O_DIRECT refused by the filesystem ({exc.strerror})"
    elif direct:
        note = "O_DIRECT not available on this platform"
    else:
        note = "O_DIRECT not asked for"
    return os.open(path, flags, 0o600), False, note


def _write_file(path: str, size: int, buffer: "mmap.mmap", block: int, direct: bool) -> Tuple[float, bool, Optional[str]]:
    """Write `size` bytes of `buffer`'s contents block by block to a new file; (seconds open..close, direct, note)."""
    view = memoryview(buffer)
    try:
        start = time.perf_counter()
        fd, used_direct, note = _open_maybe_direct(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(
            os, "O_CLOEXEC", 0), direct)
        try:
            done = 0
            while done < size:
                length = min(block, size - done)
                written = 0
                while written < length:
                    try:
                        count = os.write(fd, view[written:length])
                    except OSError as exc:
                        if exc.errno == errno.EINTR:
                            continue
                        if exc.errno == errno.EINVAL and used_direct and done == 0 and written == 0:
                            # open() took O_DIRECT but the first write is refused: start over, buffered.
                            os.close(fd)
                            fd = -1
                            seconds, _, _ = _write_file(path, size, buffer, block, False)
                            return seconds, False, f"O_DIRECT writes refused by the filesystem ({exc.strerror})"
                        raise
                    if count <= 0:
                        raise OSError(errno.ENOSPC, f"write returned {count} at byte {done + written}")
                    written += count
                done += length
        finally:
            if fd >= 0:
                os.close(fd)
        return time.perf_counter() - start, used_direct, note
    finally:
        view.release()


def _read_file(path: str, size: int, buffer: "mmap.mmap", block: int, direct: bool) -> Tuple[float, bool, Optional[str]]:
    """Read `size` bytes of `path` block by block into `buffer`; (seconds open..close, direct, note)."""
    view = memoryview(buffer)
    try:
        start = time.perf_counter()
        fd, used_direct, note = _open_maybe_direct(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0), direct)
        try:
            done = 0
            while done < size:
                length = min(block, size - done)
                got = 0
                while got < length:
                    try:
                        count = os.preadv(fd, [view[got:length]], done + got)
                    except OSError as exc:
                        if exc.errno == errno.EINTR:
                            continue
                        raise
                    if count <= 0:
                        raise OSError(errno.EIO, f"{path} ends at byte {done + got}, expected {size}")
                    got += count
                done += length
        finally:
            os.close(fd)
        return time.perf_counter() - start, used_direct, note
    finally:
        view.release()


def disk_floor(directory: str, total_bytes: int, block_bytes: int = DISK_BLOCK_BYTES, repeats: int = 1,
               direct: bool = True) -> Dict[str, Any]:
    """Sequential write and read rate of `directory`'s filesystem, the floor of the disk backup.

    Each round writes a new file of `total_bytes` (rounded down to 4 KiB) in
    blocks of `block_bytes` from a page-aligned anonymous mmap buffer filled
    with random bytes (nothing for a compressing filesystem to gain), opened
    with O_DIRECT|O_WRONLY|O_CREAT, then reads it back with O_DIRECT into a
    second page-aligned buffer, checks the last block read, and removes it.
    O_DIRECT keeps the page cache out of both numbers; where the filesystem
    refuses it (EINVAL, e.g. tmpfs) the round goes through the page cache
    instead, without fsync, and `notes` says so: the rates are then memory
    rates, not the disk's. No fsync either way (the engine does none).
    Times are open..close. Best of `repeats` rounds. Needs no torch and no GPU.
    """
    block = _round_up(max(int(block_bytes), DISK_IO_ALIGNMENT), DISK_IO_ALIGNMENT)
    size = int(total_bytes) // DISK_IO_ALIGNMENT * DISK_IO_ALIGNMENT
    if size <= 0:
        raise ValueError(f"the disk floor needs at least {DISK_IO_ALIGNMENT} bytes, got {total_bytes}")
    fs = filesystem_info(directory)
    if fs.get("free_bytes") is not None and fs["free_bytes"] < size + 64 * MiB:
        raise RuntimeError(f"the disk floor needs {size / GiB:.2f} GiB in {directory} ({fs.get('fs_type')}), only "
                           f"{fs['free_bytes'] / GiB:.2f} GiB are free; lower --disk-gib or choose --disk-dir")
    block = min(block, _round_up(size, DISK_IO_ALIGNMENT))
    path = os.path.join(directory, f"tms-bench-floor-{os.getpid()}.bin")
    result: Dict[str, Any] = {"directory": os.path.realpath(directory), "bytes": size, "block_bytes": block,
                              "filesystem": fs, "direct_asked": bool(direct), "notes": []}
    write_times: List[float] = []
    read_times: List[float] = []
    direct_write: List[bool] = []
    direct_read: List[bool] = []
    wbuf = mmap.mmap(-1, block)  # anonymous mmap: page-aligned, as O_DIRECT wants
    rbuf = mmap.mmap(-1, block)
    try:
        wbuf[:] = os.urandom(block)
        for _ in range(max(1, int(repeats))):
            try:
                seconds, used, note = _write_file(path, size, wbuf, block, direct)
                write_times.append(seconds)
                direct_write.append(used)
                if note and f"write: {note}" not in result["notes"]:
                    result["notes"].append(f"write: {note}")
                seconds, used, note = _read_file(path, size, rbuf, block, direct)
                read_times.append(seconds)
                direct_read.append(used)
                if note and f"read: {note}" not in result["notes"]:
                    result["notes"].append(f"read: {note}")
                last = size - (size - 1) // block * block  # bytes of the last block read
                if rbuf[:last] != wbuf[:last]:
                    raise RuntimeError(f"the disk floor read back other bytes than it wrote ({path})")
            finally:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
    finally:
        wbuf.close()
        rbuf.close()
    result["file_removed"] = not os.path.exists(path)
    if fs.get("fs_type") in ("tmpfs", "ramfs"):
        result["notes"].append(f"the directory is on {fs['fs_type']} (memory): the rates are memory rates, "
                               f"not a disk's; choose --disk-dir on the disk meant for backups")
    result["direct_write"] = all(direct_write)
    result["direct_read"] = all(direct_read)
    if not (result["direct_write"] and result["direct_read"]):
        result["notes"].append("buffered I/O without fsync: the rates are page-cache (memory) rates, "
                               "not the disk's")
    result["write_seconds"] = _best(write_times)
    result["read_seconds"] = _best(read_times)
    result["write_all_seconds"] = write_times
    result["read_all_seconds"] = read_times
    result["write_gbps"] = _gbps(size, result["write_seconds"])
    result["read_gbps"] = _gbps(size, result["read_seconds"])
    return result


# =============================================================================
# the CUDA driver through ctypes (raw VMM floor)
# =============================================================================

CU_MEM_ALLOCATION_TYPE_PINNED = 1
CU_MEM_LOCATION_TYPE_DEVICE = 1
CU_MEM_ACCESS_FLAGS_PROT_READWRITE = 3
CU_MEM_ALLOC_GRANULARITY_MINIMUM = 0
CU_MEM_ALLOC_GRANULARITY_RECOMMENDED = 1


class CUmemLocation(ctypes.Structure):
    """cuda.h CUmemLocation_v1: {CUmemLocationType type; int id;}."""

    _fields_ = [("type", ctypes.c_int), ("id", ctypes.c_int)]


class _CUmemAllocFlags(ctypes.Structure):
    """The anonymous allocFlags struct inside CUmemAllocationProp_v1."""

    _fields_ = [
        ("compressionType", ctypes.c_ubyte),
        ("gpuDirectRDMACapable", ctypes.c_ubyte),
        ("usage", ctypes.c_ushort),
        ("reserved", ctypes.c_ubyte * 4),
    ]


class CUmemAllocationProp(ctypes.Structure):
    """cuda.h CUmemAllocationProp_v1 (32 bytes on 64-bit Linux)."""

    _fields_ = [
        ("type", ctypes.c_int),  # CUmemAllocationType
        ("requestedHandleTypes", ctypes.c_int),  # CUmemAllocationHandleType
        ("location", CUmemLocation),
        ("win32HandleMetaData", ctypes.c_void_p),
        ("allocFlags", _CUmemAllocFlags),
    ]


class CUmemAccessDesc(ctypes.Structure):
    """cuda.h CUmemAccessDesc_v1: {CUmemLocation location; CUmemAccess_flags flags;}."""

    _fields_ = [("location", CUmemLocation), ("flags", ctypes.c_int)]


assert ctypes.sizeof(CUmemLocation) == 8
assert ctypes.sizeof(CUmemAllocationProp) == 32
assert ctypes.sizeof(CUmemAccessDesc) == 12

_CUdeviceptr = ctypes.c_uint64
_CUhandle = ctypes.c_uint64  # CUmemGenericAllocationHandle
_CUresult = ctypes.c_int

# name -> argtypes; none of these has a _v2 #define in cuda.h (CUDA 12/13).
_CU_SIGNATURES: Dict[str, List[Any]] = {
    "cuInit": [ctypes.c_uint],
    "cuDriverGetVersion": [ctypes.POINTER(ctypes.c_int)],
    "cuGetErrorName": [_CUresult, ctypes.POINTER(ctypes.c_char_p)],
    "cuDeviceGet": [ctypes.POINTER(ctypes.c_int), ctypes.c_int],
    "cuCtxGetCurrent": [ctypes.POINTER(ctypes.c_void_p)],
    "cuCtxSetCurrent": [ctypes.c_void_p],
    "cuCtxSynchronize": [],
    "cuDevicePrimaryCtxRetain": [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int],
    "cuMemGetAllocationGranularity": [ctypes.POINTER(ctypes.c_size_t), ctypes.POINTER(CUmemAllocationProp),
                                      ctypes.c_int],
    "cuMemAddressReserve": [ctypes.POINTER(_CUdeviceptr), ctypes.c_size_t, ctypes.c_size_t, _CUdeviceptr,
                            ctypes.c_ulonglong],
    "cuMemAddressFree": [_CUdeviceptr, ctypes.c_size_t],
    "cuMemCreate": [ctypes.POINTER(_CUhandle), ctypes.c_size_t, ctypes.POINTER(CUmemAllocationProp),
                    ctypes.c_ulonglong],
    "cuMemRelease": [_CUhandle],
    "cuMemMap": [_CUdeviceptr, ctypes.c_size_t, ctypes.c_size_t, _CUhandle, ctypes.c_ulonglong],
    "cuMemUnmap": [_CUdeviceptr, ctypes.c_size_t],
    "cuMemSetAccess": [_CUdeviceptr, ctypes.c_size_t, ctypes.POINTER(CUmemAccessDesc), ctypes.c_size_t],
}


class CudaDriverFloor:
    """The few driver calls of the raw VMM floor, bound with ctypes to libcuda.so.1.

    Uses the context current on the calling thread (torch's primary context
    after torch has touched the device); retains the primary context itself
    only when none is current.
    """

    def __init__(self, device: int) -> None:
        try:
            self.lib = ctypes.CDLL("libcuda.so.1")
        except OSError as exc:
            raise RuntimeError(f"cannot load libcuda.so.1: {exc}") from exc
        for name, argtypes in _CU_SIGNATURES.items():
            function = getattr(self.lib, name)
            function.argtypes = argtypes
            function.restype = _CUresult
        self.device = device
        self._check(self.lib.cuInit(0), "cuInit")
        cu_device = ctypes.c_int()
        self._check(self.lib.cuDeviceGet(ctypes.byref(cu_device), device), "cuDeviceGet")
        self.cu_device = cu_device.value
        context = ctypes.c_void_p()
        self._check(self.lib.cuCtxGetCurrent(ctypes.byref(context)), "cuCtxGetCurrent")
        self.context_was_current = bool(context.value)
        if not context.value:
            self._check(self.lib.cuDevicePrimaryCtxRetain(ctypes.byref(context), self.cu_device),
                        "cuDevicePrimaryCtxRetain")
            self._check(self.lib.cuCtxSetCurrent(context), "cuCtxSetCurrent")
        self.prop = CUmemAllocationProp()
        ctypes.memset(ctypes.byref(self.prop), 0, ctypes.sizeof(self.prop))
        self.prop.type = CU_MEM_ALLOCATION_TYPE_PINNED
        self.prop.requestedHandleTypes = 0
        self.prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE
        self.prop.location.id = self.cu_device
        self.prop.win32HandleMetaData = None
        self.access = CUmemAccessDesc()
        self.access.location.type = CU_MEM_LOCATION_TYPE_DEVICE
        self.access.location.id = self.cu_device
        self.access.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE
        self.granularity_minimum = self._granularity(CU_MEM_ALLOC_GRANULARITY_MINIMUM)
        try:
            self.granularity = self._granularity(CU_MEM_ALLOC_GRANULARITY_RECOMMENDED)  # what the engine uses
        except RuntimeError:
            self.granularity = self.granularity_minimum

    def _error_name(self, result: int) -> str:
        name = ctypes.c_char_p()
        if self.lib.cuGetErrorName(result, ctypes.byref(name)) == 0 and name.value:
            return name.value.decode()
        return f"CUresult {result}"

    def _check(self, result: int, call: str) -> None:
        if result != 0:
            raise RuntimeError(f"{call} failed: {self._error_name(result)} ({result})")

    def _granularity(self, option: int) -> int:
        value = ctypes.c_size_t()
        self._check(self.lib.cuMemGetAllocationGranularity(ctypes.byref(value), ctypes.byref(self.prop), option),
                    "cuMemGetAllocationGranularity")
        return int(value.value)

    def driver_version(self) -> Optional[int]:
        version = ctypes.c_int()
        return int(version.value) if self.lib.cuDriverGetVersion(ctypes.byref(version)) == 0 else None

    def measure(self, count: int, size: int, repeats: int, slow_round_s: float = 0.5) -> Dict[str, Any]:
        """Best-of timings of create+map+setaccess and unmap+release for `count` handles of `size` bytes.

        One VA reservation holds all handles side by side, as the engine's
        allocations would sit. Further rounds are skipped once one round
        (both phases) takes longer than `slow_round_s`.
        """
        lib = self.lib
        size = _round_up(max(int(size), 1), self.granularity)
        span = count * size
        base = _CUdeviceptr()
        self._check(lib.cuMemAddressReserve(ctypes.byref(base), span, self.granularity, 0, 0),
                    f"cuMemAddressReserve({span} bytes)")
        va = int(base.value)
        handles = (_CUhandle * count)()  # 0 = no live handle in that slot
        handle = _CUhandle()
        handle_ref = ctypes.byref(handle)
        dirty = False
        create, mem_map, set_access = lib.cuMemCreate, lib.cuMemMap, lib.cuMemSetAccess
        unmap, release = lib.cuMemUnmap, lib.cuMemRelease
        prop, access = ctypes.byref(self.prop), ctypes.byref(self.access)
        map_times: List[float] = []
        unmap_times: List[float] = []
        try:
            for _ in range(max(1, repeats)):
                self._check(lib.cuCtxSynchronize(), "cuCtxSynchronize")
                dirty = True
                start = time.perf_counter()
                for i in range(count):
                    address = va + i * size
                    result = create(handle_ref, size, prop, 0)
                    if result != 0:
                        self._check(result, f"cuMemCreate(#{i} of {count}, {size} bytes)")
                    handles[i] = handle.value
                    result = mem_map(address, size, 0, handle.value, 0)
                    if result != 0:
                        self._check(result, f"cuMemMap(#{i})")
                    result = set_access(address, size, access, 1)
                    if result != 0:
                        self._check(result, f"cuMemSetAccess(#{i})")
                middle = time.perf_counter()
                for i in range(count):
                    result = unmap(va + i * size, size)
                    if result != 0:
                        self._check(result, f"cuMemUnmap(#{i})")
                    result = release(handles[i])
                    if result != 0:
                        self._check(result, f"cuMemRelease(#{i})")
                    handles[i] = 0
                end = time.perf_counter()
                dirty = False
                map_times.append(middle - start)
                unmap_times.append(end - middle)
                if end - start > slow_round_s:
                    break
        finally:
            # Unwind whatever a failure left behind (in order: unmap, release, free the VA).
            if dirty:
                for i in range(count):
                    if handles[i]:
                        lib.cuMemUnmap(va + i * size, size)  # fails harmlessly where nothing is mapped
                        lib.cuMemRelease(handles[i])
                        handles[i] = 0
            lib.cuMemAddressFree(va, span)
        return {
            "count": count,
            "handle_bytes": size,
            "mapped_bytes": span,
            "map_seconds": _best(map_times),
            "unmap_seconds": _best(unmap_times),
            "map_all_seconds": map_times,
            "unmap_all_seconds": unmap_times,
            "rounds": len(map_times),
        }


# =============================================================================
# worker side (runs in a fresh process per measurement group)
# =============================================================================


def _import_torch_cuda() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise BenchUnavailable(f"PyTorch is not installed ({exc})") from exc
    if not torch.cuda.is_available():
        raise BenchUnavailable(f"torch {torch.__version__} sees no CUDA device")
    return torch


def _torch_env(torch: Any, device: int) -> Dict[str, Any]:
    props = torch.cuda.get_device_properties(device)
    return {
        "device_index": device,
        "device_name": torch.cuda.get_device_name(device),
        "device_total_memory": int(props.total_memory),
        "capability": f"{props.major}.{props.minor}",
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }


def _timed(torch: Any, action: Callable[[], None]) -> Tuple[float, float]:
    """(seconds until `action` returned, seconds until the device was idle after it); device idle at start."""
    torch.cuda.synchronize()
    start = time.perf_counter()
    action()
    returned = time.perf_counter() - start
    torch.cuda.synchronize()
    return returned, time.perf_counter() - start


def _device_free(torch: Any, device: int) -> int:
    return int(torch.cuda.mem_get_info(device)[0])


def _require_device_memory(torch: Any, device: int, needed: int, what: str) -> None:
    free, total = torch.cuda.mem_get_info(device)
    if free < needed:
        raise RuntimeError(f"{what} needs about {needed / GiB:.2f} GiB of free GPU memory, only "
                           f"{free / GiB:.2f} of {total / GiB:.2f} GiB are free; lower --total-gib")


def _host_empty_cache(torch: Any) -> None:
    """Return torch's cached pinned host blocks to the driver (torch keeps them after tensors die)."""
    for name in ("_host_emptyCache", "_cuda_hostEmptyCache"):
        function = getattr(torch._C, name, None)
        if function is not None:
            try:
                function()
            except Exception:  # noqa: BLE001 - best effort
                pass
            return


def _free_everything(torch: Any) -> None:
    gc.collect()
    torch.cuda.synchronize()
    torch.cuda.empty_cache()


def _fill(torch: Any, tensors: List[Any], seed: int) -> None:
    """Non-periodic pattern: element k of the concatenation holds seed * 2**40 + k (int64)."""
    offset = seed << 40
    for tensor in tensors:
        n = tensor.numel()
        torch.arange(offset, offset + n, out=tensor)
        offset += n


def _verify(torch: Any, tensors: List[Any], seed: int, chunk: int = 1 << 26) -> Optional[str]:
    """None when every element holds its _fill value, else a description of the first difference."""
    offset = seed << 40
    for index, tensor in enumerate(tensors):
        n = tensor.numel()
        for start in range(0, n, chunk):
            end = min(n, start + chunk)
            expected = torch.arange(offset + start, offset + end, dtype=torch.int64, device=tensor.device)
            got = tensor[start:end]
            if not torch.equal(got, expected):
                wrong = (got != expected).nonzero().flatten()
                first = int(wrong[0]) + start
                return (f"tensor {index} of {len(tensors)} ({n} int64 elements): {wrong.numel()} of "
                        f"{end - start} elements differ in [{start}, {end}); first at element {first}: got "
                        f"{int(tensor[first])}, expected {offset + first} (pattern seed {seed})")
        offset += n
    return None


def _library_setup(spec: Dict[str, Any], result: Dict[str, Any]) -> Any:
    """The torch_memory_saver singleton, in the hook mode asked for, on the CUDA driver."""
    from . import _library
    from .entrypoint import torch_memory_saver

    torch_memory_saver.hook_mode = spec["hook_mode"]
    lib = _library.library()
    result["library"] = {
        "path": str(_library.loaded_path()),
        "version": _library.decode(lib.tms_version()),
        "hook_mode": spec["hook_mode"],
        "ld_preload": os.environ.get("LD_PRELOAD"),
    }
    driver = lib.tms_driver_name()
    driver_name = _library.decode(driver) if driver else ""
    result["library"]["driver"] = driver_name
    if driver_name != "cuda":
        raise RuntimeError(f"the engine runs on the {driver_name or 'unknown'!r} driver ({_library.last_error()}); "
                           f"the benchmark needs the CUDA driver (unset TMS_DRIVER)")
    torch_memory_saver.retain_cpu_backup = False
    return torch_memory_saver


def _tag_stats(tms: Any, tag: str) -> Dict[str, Any]:
    try:
        entries = [s for s in tms.stats() if s.tag == tag]
    except Exception as exc:  # noqa: BLE001 - statistics are informative only
        return {"error": _exc_text(exc)}
    return {
        "allocations": sum(int(s.allocations) for s in entries),
        "active_bytes": sum(int(s.active_bytes) for s in entries),
        "paused_bytes": sum(int(s.paused_bytes) for s in entries),
        "backup_bytes": sum(int(s.backup_bytes) for s in entries),
        "last_pause_seconds": max((float(s.last_pause_seconds) for s in entries), default=None),
        "last_resume_seconds": max((float(s.last_resume_seconds) for s in entries), default=None),
    }


@contextmanager
def _item(result: Dict[str, Any], name: str) -> Iterator[None]:
    """Record a failure of one independent measurement under result['errors'][name] and carry on."""
    print(f"[{result['kind']}] {name} ...", flush=True)
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - reported, the run goes on
        result["errors"][name] = _exc_with_trace(exc)
        print(f"[{result['kind']}] {name} FAILED: {_exc_text(exc)}", flush=True)


def _w_floors(torch: Any, spec: Dict[str, Any], result: Dict[str, Any]) -> None:
    device, total, repeats = spec["device"], spec["total_bytes"], spec["repeats"]
    items = result["items"]
    torch.zeros(1, device=f"cuda:{device}")
    torch.cuda.synchronize()
    host = None
    with _item(result, "pinned_alloc"):
        start = time.perf_counter()
        host = torch.empty(total, dtype=torch.uint8, pin_memory=True)
        seconds = time.perf_counter() - start
        items["pinned_alloc"] = {"seconds": seconds, "bytes": total, "is_pinned": bool(host.is_pinned()),
                                 "note": "first pinned allocation of the process (torch caching host "
                                         "allocator, cudaHostAlloc underneath; rounds to a power of two)"}
    with _item(result, "copies"):
        if host is None:
            raise RuntimeError("no pinned buffer: the pinned allocation failed")
        _require_device_memory(torch, device, total + 512 * MiB, "the copy floor")
        dev = torch.empty(total, dtype=torch.uint8, device=f"cuda:{device}")
        dev.fill_(0x5A)
        stream = torch.cuda.Stream(device)
        for direction, times in _copy_times(torch, host, dev, stream, repeats).items():
            items[direction] = {"seconds": min(times), "all_seconds": times, "bytes": total}
        with _item(result, "registered"):
            items["registered"] = _registered_copy_floor(torch, dev, stream, repeats)
        del dev, stream
    host = None
    _free_everything(torch)
    _host_empty_cache(torch)

    driver: Optional[CudaDriverFloor] = None
    with _item(result, "vmm_setup"):
        driver = CudaDriverFloor(device)
        items["granularity"] = driver.granularity
        items["granularity_minimum"] = driver.granularity_minimum
        items["driver_version"] = driver.driver_version()
        items["context_was_current"] = driver.context_was_current
    vmm: Dict[str, Any] = {}
    items["vmm"] = vmm
    if driver is not None:
        for layout in spec["vmm_layouts"]:
            with _item(result, f"vmm_{layout['label']}"):
                vmm[layout["label"]] = driver.measure(int(layout["count"]), int(layout["size"]), repeats,
                                                      spec.get("vmm_slow_round_s", 0.5))


def _copy_times(torch: Any, host: Any, dev: Any, stream: Any, repeats: int) -> Dict[str, List[float]]:
    """Seconds of each of `repeats` whole-buffer copies on `stream`, per direction ("d2h", "h2d")."""
    out: Dict[str, List[float]] = {}
    for direction in ("d2h", "h2d"):
        times = []
        for _ in range(repeats):
            torch.cuda.synchronize()
            start = time.perf_counter()
            with torch.cuda.stream(stream):
                if direction == "d2h":
                    host.copy_(dev, non_blocking=True)
                else:
                    dev.copy_(host, non_blocking=True)
            stream.synchronize()
            times.append(time.perf_counter() - start)
        out[direction] = times
    return out


def _registered_copy_floor(torch: Any, dev: Any, stream: Any, repeats: int) -> Dict[str, Any]:
    """D2H/H2D rates with host memory of the kind the engine backs up into.

    Anonymous THP memory, faulted in and page-locked with cudaHostRegister
    (what HostMemory does with mmap + cuMemHostRegister), instead of
    cudaHostAlloc memory: the copy engine may not move data at the same
    rate to and from the two.
    """
    total = dev.numel()
    buffer = mmap.mmap(-1, total, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    cudart = torch.cuda.cudart()
    registered = False
    host = None
    try:
        if hasattr(buffer, "madvise") and hasattr(mmap, "MADV_HUGEPAGE"):
            buffer.madvise(mmap.MADV_HUGEPAGE)
        host = torch.frombuffer(buffer, dtype=torch.uint8)
        host.fill_(1)  # fault in (torch fills with several threads)
        pointer = host.data_ptr()
        code = cudart.cudaHostRegister(pointer, total, 0)
        if int(getattr(code, "value", code)) != 0:
            raise RuntimeError(f"cudaHostRegister failed: {code}")
        registered = True
        out: Dict[str, Any] = {"bytes": total, "is_pinned": bool(host.is_pinned())}
        for direction, times in _copy_times(torch, host, dev, stream, repeats).items():
            out[f"{direction}_seconds"] = min(times)
            out[f"{direction}_all_seconds"] = times
        return out
    finally:
        torch.cuda.synchronize()
        if registered:
            cudart.cudaHostUnregister(host.data_ptr())
        del host
        gc.collect()
        try:
            buffer.close()
        except BufferError:  # a view is still alive somewhere: the OS reclaims it at exit
            pass


class _SameProcessVmm:
    """Rounds of the raw VMM loop with the engine's handle count and size, in the worker's process."""

    def __init__(self, device: int, engine_stats: Dict[str, Any]) -> None:
        allocations = int(engine_stats.get("allocations") or 0)
        active = int(engine_stats.get("active_bytes") or 0)
        self.driver: Optional[CudaDriverFloor] = None
        self.error: Optional[str] = None
        self.count, self.size = allocations, (active // allocations if allocations else 0)
        self.rounds: List[Dict[str, Any]] = []
        if not allocations:
            self.error = "no engine statistics for the layout"
            return
        try:
            self.driver = CudaDriverFloor(device)
        except Exception as exc:  # noqa: BLE001 - the separate floors worker still gives a floor
            self.error = _exc_text(exc)

    def measure_once(self) -> None:
        if self.driver is None:
            return
        try:
            self.rounds.append(self.driver.measure(self.count, self.size, 1))
        except Exception as exc:  # noqa: BLE001
            self.error = _exc_text(exc)
            self.driver = None

    def result(self) -> Dict[str, Any]:
        maps = [r["map_seconds"] for r in self.rounds if r.get("map_seconds")]
        unmaps = [r["unmap_seconds"] for r in self.rounds if r.get("unmap_seconds")]
        return {"count": self.count, "handle_bytes": self.size, "map_seconds": _best(maps),
                "unmap_seconds": _best(unmaps), "map_all_seconds": maps, "unmap_all_seconds": unmaps,
                "error": self.error}


def _w_nobackup(torch: Any, spec: Dict[str, Any], result: Dict[str, Any]) -> None:
    device, total, repeats = spec["device"], spec["total_bytes"], spec["repeats"]
    tms = _library_setup(spec, result)
    items = result["items"]
    for count in spec["layouts"]:
        name = f"n{count}"
        tag = f"bench_nobackup_{count}"
        tensors: Optional[List[Any]] = None
        with _item(result, name):
            elements = _layout_elements(total, count)
            payload = elements * 8 * count
            # Room for the tensors and, next to them, the raw loop of the same size.
            _require_device_memory(torch, device, 2 * payload + 1 * GiB, f"layout {count}")
            with tms.region(tag, enable_cpu_backup=False):
                tensors = [torch.empty(elements, dtype=torch.int64, device=f"cuda:{device}") for _ in range(count)]
            torch.cuda.synchronize()
            first_ptr, last_ptr = tensors[0].data_ptr(), tensors[-1].data_ptr()
            stats = _tag_stats(tms, tag)
            # The driver's own unmap/release and create/map times drift by 2x between processes and
            # minutes (cuMemRelease of 8 GiB took 2.2 to 4.9 ms on one H200), so the fair floor is the
            # raw loop for the engine's handle layout measured here, alternating with the library.
            raw = _SameProcessVmm(device, stats)
            pause_ret, pause_sync, resume_ret, resume_sync, released, taken = [], [], [], [], [], []
            for _ in range(repeats):
                raw.measure_once()
                free0 = _device_free(torch, device)
                returned, synced = _timed(torch, lambda: tms.pause(tag))
                pause_ret.append(returned)
                pause_sync.append(synced)
                free1 = _device_free(torch, device)
                returned, synced = _timed(torch, lambda: tms.resume(tag))
                resume_ret.append(returned)
                resume_sync.append(synced)
                free2 = _device_free(torch, device)
                released.append(free1 - free0)
                taken.append(free1 - free2)
            # Resumed memory must be usable (contents are undefined without a backup).
            tensors[0].fill_(1)
            tensors[-1].fill_(2)
            torch.cuda.synchronize()
            if tensors[0].data_ptr() != first_ptr or tensors[-1].data_ptr() != last_ptr:
                result["mismatches"].append(f"no-backup layout {count}: data_ptr changed across pause/resume")
            items[name] = {
                "count": count,
                "bytes": payload,
                "engine": stats,
                "raw_same_process": raw.result(),
                "pause_seconds": min(pause_sync),
                "resume_seconds": min(resume_sync),
                "pause_returned_seconds": pause_ret,
                "pause_synced_seconds": pause_sync,
                "resume_returned_seconds": resume_ret,
                "resume_synced_seconds": resume_sync,
                "device_bytes_released_on_pause": released,
                "device_bytes_taken_on_resume": taken,
            }
        # Drop the tensors; their blocks stay cached in the tag's pool as engine
        # allocations, so pause the tag to hand the physical memory back.
        tensors = None
        gc.collect()
        try:
            tms.pause(tag)
        except Exception as exc:  # noqa: BLE001
            result["errors"][f"{name}_cleanup"] = _exc_text(exc)
        torch.cuda.empty_cache()


def _w_alloc(torch: Any, spec: Dict[str, Any], result: Dict[str, Any]) -> None:
    device, repeats = spec["device"], spec["repeats"]
    count, nbytes = spec["alloc_count"], spec["alloc_bytes"]
    tms = _library_setup(spec, result)
    items = result["items"]
    where = f"cuda:{device}"
    _require_device_memory(torch, device, count * nbytes + 2 * GiB, "the allocation benchmark")

    def allocate() -> List[Any]:
        return [torch.empty(nbytes, dtype=torch.uint8, device=where) for _ in range(count)]

    # Warm up both paths once (driver, torch allocator, pluggable allocator, engine).
    warm = torch.empty(nbytes, dtype=torch.uint8, device=where)
    del warm
    _free_everything(torch)
    with tms.region("bench_alloc_warmup", enable_cpu_backup=False):
        warm = torch.empty(nbytes, dtype=torch.uint8, device=where)
    del warm
    gc.collect()
    tms.pause("bench_alloc_warmup")
    _free_everything(torch)

    plain: List[float] = []
    region: List[float] = []
    engine: List[Dict[str, Any]] = []
    for round_index in range(repeats):
        with _item(result, f"torch_alloc_{round_index}"):
            _free_everything(torch)
            torch.cuda.synchronize()
            start = time.perf_counter()
            tensors = allocate()
            torch.cuda.synchronize()
            plain.append(time.perf_counter() - start)
            del tensors
            _free_everything(torch)
        with _item(result, f"region_alloc_{round_index}"):
            tag = f"bench_alloc_{round_index}"  # a fresh pool each round, as empty as torch's cache
            _free_everything(torch)
            with tms.region(tag, enable_cpu_backup=False):
                torch.cuda.synchronize()
                start = time.perf_counter()
                tensors = allocate()
                torch.cuda.synchronize()
                region.append(time.perf_counter() - start)
            engine.append(_tag_stats(tms, tag))
            del tensors
            gc.collect()
            tms.pause(tag)  # hand the pool's cached memory back
            _free_everything(torch)
    items["torch_alloc"] = {"seconds": _best(plain), "all_seconds": plain, "count": count, "bytes": count * nbytes}
    items["region_alloc"] = {"seconds": _best(region), "all_seconds": region, "count": count,
                             "bytes": count * nbytes, "engine": engine}


def _w_backup(torch: Any, spec: Dict[str, Any], result: Dict[str, Any]) -> None:
    device, total, count, kind = spec["device"], spec["total_bytes"], spec["layout"], spec["host_kind"]
    tms = _library_setup(spec, result)
    items = result["items"]
    rss: Dict[str, Any] = {}
    result["rss"] = rss
    tag = f"bench_{kind}_{count}"
    elements = _layout_elements(total, count)
    payload = elements * 8 * count
    step = "setup"
    mem = _meminfo()
    if mem.get("MemAvailable") and mem["MemAvailable"] < 2 * payload:
        result["warnings"].append(f"only {mem['MemAvailable'] / GiB:.1f} GiB host memory available for "
                                  f"{payload / GiB:.1f} GiB backups")
    try:
        _require_device_memory(torch, device, payload + 1 * GiB, f"layout {count}")
        step = "allocate"
        with tms.region(tag, enable_cpu_backup=True, cpu_backup_backend=kind):
            tensors = [torch.empty(elements, dtype=torch.int64, device=f"cuda:{device}") for _ in range(count)]
        pointers = [t.data_ptr() for t in tensors]
        result["engine_after_alloc"] = _tag_stats(tms, tag)

        def check(seed: int, when: str) -> None:
            if [t.data_ptr() for t in tensors] != pointers:
                result["mismatches"].append(f"{kind} layout {count}: data_ptr changed ({when})")
            problem = _verify(torch, tensors, seed)
            result["verified"] = result.get("verified", 0) + 1
            if problem is not None:
                result["mismatches"].append(f"{kind} layout {count}, {when}: {problem}")
                print(f"DATA MISMATCH ({kind}, {count} tensors, {when}): {problem}", flush=True)

        def measure(op: str) -> None:
            nonlocal step
            step = op
            verb = tms.pause if op.startswith("pause") else tms.resume
            free0 = _device_free(torch, device)
            returned, synced = _timed(torch, lambda: verb(tag))
            free1 = _device_free(torch, device)
            items[op] = {"seconds": synced, "returned_seconds": returned, "bytes": payload,
                         "device_free_delta": free1 - free0, "engine": _tag_stats(tms, tag), "rss": rss_bytes()}
            print(f"[backup {kind} n={count}] {op}: {synced * 1e3:.1f} ms "
                  f"({(_gbps(payload, synced) or 0):.2f} GB/s)", flush=True)

        # Cycle A, retention off: the first pause is cold, the resume gives host memory back.
        tms.retain_cpu_backup = False
        step = "fill 1"
        _fill(torch, tensors, 1)
        torch.cuda.synchronize()
        rss["before_pause"] = rss_bytes()
        measure("pause_cold")
        rss["after_pause_cold"] = rss_bytes()
        measure("resume_cold")
        rss["after_resume_cold"] = rss_bytes()
        settle_start = time.perf_counter()
        limit = (rss["before_pause"] or 0) + payload // 4
        while (rss_bytes() or 0) > limit and time.perf_counter() - settle_start < spec.get("rss_settle_s", 1.0):
            time.sleep(0.05)
        rss["after_resume_cold_settled"] = rss_bytes()
        rss["settle_seconds"] = time.perf_counter() - settle_start
        step = "verify 1"
        check(1, "after resume (retain off)")

        # Cycle B, retention on: cold again (nothing retained yet); the resume keeps host memory.
        tms.retain_cpu_backup = True
        step = "fill 2"
        _fill(torch, tensors, 2)
        measure("pause_cold_retain")
        measure("resume_retain_first")
        rss["after_resume_retained"] = rss_bytes()
        step = "verify 2"
        check(2, "after resume (retain on, first)")

        # Cycle C: warm pause into the retained host memory, new contents.
        step = "fill 3"
        _fill(torch, tensors, 3)
        measure("pause_warm")
        rss["after_pause_warm"] = rss_bytes()
        measure("resume_warm")
        rss["after_resume_warm"] = rss_bytes()
        step = "verify 3"
        check(3, "after warm resume (retain on)")
        tensors[0].add_(1)  # usable after resume
        torch.cuda.synchronize()
        step = "done"
    except Exception as exc:  # noqa: BLE001 - later steps depend on this one; stop here
        result["errors"][step] = _exc_with_trace(exc)
        print(f"[backup {kind} n={count}] FAILED at {step}: {_exc_text(exc)}", flush=True)
    finally:
        try:
            tms.retain_cpu_backup = False
        except Exception:  # noqa: BLE001
            pass
    items["layout"] = {"count": count, "bytes": payload, "host_kind": kind}


def _w_disk_floor(torch: Any, spec: Dict[str, Any], result: Dict[str, Any]) -> None:
    """The disk floor in the backup directory (no torch: `torch` is None here)."""
    with _item(result, "disk_floor"):
        result["items"]["disk"] = disk_floor(spec["disk_dir"], int(spec["disk_bytes"]),
                                             int(spec.get("disk_block_bytes", DISK_BLOCK_BYTES)),
                                             int(spec.get("disk_repeats", 1)))
        floor = result["items"]["disk"]
        print(f"[disk_floor] {floor['bytes'] / GiB:.2f} GiB in {floor['directory']} "
              f"({floor['filesystem'].get('fs_type')}): write {floor['write_gbps']:.2f} GB/s, read "
              f"{floor['read_gbps']:.2f} GB/s{'; ' + '; '.join(floor['notes']) if floor['notes'] else ''}",
              flush=True)


def _w_disk(torch: Any, spec: Dict[str, Any], result: Dict[str, Any]) -> None:
    """Pause (files written) and resume (read back) of one enable_disk_backup=True tag, one layout."""
    device, count, directory = spec["device"], spec["layout"], spec["disk_dir"]
    total = int(spec["disk_bytes"])
    tms = _library_setup(spec, result)
    items = result["items"]
    tag = f"bench_disk_{count}"
    elements = _layout_elements(total, count)
    payload = elements * 8 * count
    items["layout"] = {"count": count, "bytes": payload, "directory": directory,
                       "chunk_mb_env": os.environ.get("TMS_DISK_BACKUP_CHUNK_MB")}
    step = "setup"
    try:
        _require_device_memory(torch, device, payload + 1 * GiB, f"disk layout {count}")
        step = "set_disk_backup_dir"
        tms.set_disk_backup_dir(directory)
        step = "allocate"
        with tms.region(tag, enable_disk_backup=True):
            tensors = [torch.empty(elements, dtype=torch.int64, device=f"cuda:{device}") for _ in range(count)]
        pointers = [t.data_ptr() for t in tensors]
        result["engine_after_alloc"] = _tag_stats(tms, tag)
        step = "fill"
        _fill(torch, tensors, 1)
        torch.cuda.synchronize()
        before = open_backup_files(directory)
        if before:
            result["warnings"].append(f"{len(before)} backup file(s) of this process before the pause: {before[:4]}")

        for op, verb in (("pause_disk", tms.pause), ("resume_disk", tms.resume)):
            step = op
            free0 = _device_free(torch, device)
            returned, synced = _timed(torch, lambda: verb(tag))
            free1 = _device_free(torch, device)
            files = open_backup_files(directory)
            on_disk = 0
            for path in files:
                try:
                    on_disk += os.stat(path).st_size
                except OSError:
                    pass
            items[op] = {"seconds": synced, "returned_seconds": returned, "bytes": payload,
                         "device_free_delta": free1 - free0, "engine": _tag_stats(tms, tag), "rss": rss_bytes(),
                         "files": len(files), "file_bytes": on_disk}
            print(f"[disk n={count}] {op}: {synced * 1e3:.1f} ms ({(_gbps(payload, synced) or 0):.2f} GB/s), "
                  f"{len(files)} backup file(s) of {on_disk / GiB:.2f} GiB in {directory}", flush=True)
        files_after_pause = items["pause_disk"]["files"]
        if files_after_pause == 0:
            result["warnings"].append("no backup file was open after the pause: was the disk backup used?")
        left = open_backup_files(directory) + named_backup_files(directory)
        items["resume_disk"]["files_left"] = left
        if left:
            result["errors"]["files_left_after_resume"] = (
                f"{len(left)} disk backup file(s) still in {directory} after resume: {', '.join(left[:8])}")

        step = "verify"
        if [t.data_ptr() for t in tensors] != pointers:
            result["mismatches"].append(f"disk layout {count}: data_ptr changed across pause/resume")
        problem = _verify(torch, tensors, 1)
        result["verified"] = result.get("verified", 0) + 1
        if problem is not None:
            result["mismatches"].append(f"disk layout {count}, after resume: {problem}")
            print(f"DATA MISMATCH (disk, {count} tensors): {problem}", flush=True)
        tensors[0].add_(1)  # usable after resume
        torch.cuda.synchronize()
        step = "done"
    except Exception as exc:  # noqa: BLE001 - later steps depend on this one; stop here
        result["errors"][step] = _exc_with_trace(exc)
        print(f"[disk n={count}] FAILED at {step}: {_exc_text(exc)}", flush=True)


_WORKERS: Dict[str, Callable[[Any, Dict[str, Any], Dict[str, Any]], None]] = {
    "floors": _w_floors,
    "nobackup": _w_nobackup,
    "alloc": _w_alloc,
    "backup": _w_backup,
    "disk_floor": _w_disk_floor,
    "disk": _w_disk,
}
# Workers that need neither torch nor a GPU.
_CPU_WORKERS = ("disk_floor",)


def worker_main(spec_path: str) -> None:
    """Entry of a worker process: run one measurement group, write its result JSON, exit without teardown."""
    code = 0
    result: Dict[str, Any] = {"kind": "?", "items": {}, "errors": {}, "mismatches": [], "warnings": [],
                              "pid": os.getpid(), "started_unix": time.time()}
    result_path = None
    try:
        with open(spec_path, encoding="utf-8") as handle:
            spec = json.load(handle)
        result_path = spec["result_path"]
        result["kind"] = spec["kind"]
        result["name"] = spec.get("name")
        if spec["kind"] in _CPU_WORKERS:
            _WORKERS[spec["kind"]](None, spec, result)
            return
        torch = _import_torch_cuda()
        device = spec.get("device")
        if device is None:
            device = torch.cuda.current_device()
        spec["device"] = int(device)
        torch.cuda.set_device(spec["device"])
        result["env"] = _torch_env(torch, spec["device"])
        _WORKERS[spec["kind"]](torch, spec, result)
    except BaseException as exc:  # noqa: BLE001 - everything goes into the result
        result["fatal"] = _exc_with_trace(exc)
        print(f"worker failed: {_exc_text(exc)}", flush=True)
        code = 1
    finally:
        result["finished_unix"] = time.time()
        if result_path:
            try:
                temporary = result_path + ".tmp"
                with open(temporary, "w", encoding="utf-8") as handle:
                    json.dump(result, handle, indent=1, default=str)
                os.replace(temporary, result_path)
            except Exception as exc:  # noqa: BLE001
                print(f"cannot write {result_path}: {exc}", file=sys.stderr, flush=True)
                code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        # Skip interpreter teardown: MemPool destructors at exit are not what is measured,
        # and the driver reclaims everything of the process anyway.
        os._exit(code)


# =============================================================================
# parent side: orchestration
# =============================================================================

_WORKER_BOOT = "import sys; from torch_memory_saver.bench import worker_main; worker_main(sys.argv[1])"


def _preflight() -> Dict[str, Any]:
    """Versions and checks that need no CUDA context; raises BenchUnavailable with a clear reason."""
    if os.environ.get("TMS_DRIVER", "") == "sim":
        raise BenchUnavailable("TMS_DRIVER=sim selects the simulated driver; the benchmark measures the GPU "
                               "(unset TMS_DRIVER)")
    try:
        import torch
    except ImportError as exc:
        raise BenchUnavailable(f"PyTorch is not installed ({exc}). The benchmark needs torch with CUDA and an "
                               f"NVIDIA GPU; `python -m torch_memory_saver demo --simulated` runs without them.")
    try:
        available = torch.cuda.is_available()
        count = torch.cuda.device_count() if available else 0
    except Exception as exc:  # noqa: BLE001
        raise BenchUnavailable(f"torch cannot query CUDA devices: {_exc_text(exc)}") from exc
    if not available or count == 0:
        raise BenchUnavailable(f"no CUDA GPU visible to torch {torch.__version__} (CUDA build "
                               f"{torch.version.cuda}, CUDA_VISIBLE_DEVICES="
                               f"{os.environ.get('CUDA_VISIBLE_DEVICES')!r}). The benchmark needs a GPU.")
    from . import _library
    from .errors import TorchMemorySaverError

    try:
        lib = _library.library()
        version = _library.decode(lib.tms_version())
        path = str(_library.loaded_path())
    except TorchMemorySaverError as exc:
        raise BenchUnavailable(f"the torch_memory_saver engine library cannot be loaded: {exc}") from exc
    return {"torch": torch.__version__, "torch_cuda": torch.version.cuda, "device_count": count,
            "library_version": version, "library_path": path}


def _base_env(library_path: str) -> Dict[str, str]:
    env = dict(os.environ)
    for name in _STRIPPED_ENV:
        env.pop(name, None)
    preload = [e for e in env.get("LD_PRELOAD", "").replace(" ", ":").split(":")
               if e and "torch_memory_saver" not in os.path.basename(e)]
    if preload:
        env["LD_PRELOAD"] = ":".join(preload)
    else:
        env.pop("LD_PRELOAD", None)
    package_parent = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([package_parent] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["TMS_LIBRARY_PATH"] = library_path  # the same engine file in every worker
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _library_env(base: Dict[str, str], hook_mode: str) -> Dict[str, str]:
    env = dict(base)
    if hook_mode == "preload":
        from .utils import configure_subprocess

        saved = os.environ.get("LD_PRELOAD")
        if "LD_PRELOAD" in base:
            os.environ["LD_PRELOAD"] = base["LD_PRELOAD"]
        else:
            os.environ.pop("LD_PRELOAD", None)
        try:
            with configure_subprocess():
                env["LD_PRELOAD"] = os.environ["LD_PRELOAD"]
        finally:
            if saved is None:
                os.environ.pop("LD_PRELOAD", None)
            else:
                os.environ["LD_PRELOAD"] = saved
    return env


class Runner:
    """Starts worker processes one after another and collects their results."""

    def __init__(self, out: Path, timeout_s: float) -> None:
        self.logs = out / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.timeout_s = timeout_s

    def run(self, name: str, spec: Dict[str, Any], env: Dict[str, str]) -> Dict[str, Any]:
        spec = dict(spec, name=name)
        spec_path = self.logs / f"{name}.spec.json"
        result_path = self.logs / f"{name}.result.json"
        log_path = self.logs / f"{name}.log"
        spec["result_path"] = str(result_path)
        spec_path.write_text(json.dumps(spec, indent=1), encoding="utf-8")
        if result_path.exists():
            result_path.unlink()
        print(f"-- {name} ...", flush=True)
        start = time.perf_counter()
        exit_code: Any
        with open(log_path, "w", encoding="utf-8") as log:
            try:
                process = subprocess.run([sys.executable, "-c", _WORKER_BOOT, str(spec_path)], stdout=log,
                                         stderr=subprocess.STDOUT, env=env, timeout=self.timeout_s)
                exit_code = process.returncode
            except subprocess.TimeoutExpired:
                exit_code = f"timeout after {self.timeout_s:.0f} s"
            except OSError as exc:
                exit_code = f"could not start: {exc}"
        wall = time.perf_counter() - start
        try:
            result = json.loads(result_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            tail = ""
            try:
                tail = log_path.read_text(encoding="utf-8", errors="replace")[-1500:]
            except OSError:
                pass
            result = {"kind": spec["kind"], "items": {}, "errors": {}, "mismatches": [], "warnings": [],
                      "fatal": f"worker gave no result (exit {exit_code}); log {log_path}:\n{tail}"}
        result["exit_code"] = exit_code
        result["wall_seconds"] = wall
        result["log"] = str(log_path)
        if exit_code != 0 and not result.get("fatal"):
            result["fatal"] = f"worker exited with {exit_code} (log {log_path})"
        status = "ok"
        if result.get("fatal"):
            status = "FAILED: " + result["fatal"].splitlines()[0]
        elif result.get("errors"):
            status = f"{len(result['errors'])} item(s) failed: " + ", ".join(result["errors"])
        if result.get("mismatches"):
            status += f"; {len(result['mismatches'])} DATA MISMATCH(ES)"
        print(f"   {name}: {wall:.1f} s, {status}", flush=True)
        return result


def _parse_layouts(text: str) -> List[int]:
    try:
        layouts = sorted({int(part) for part in text.replace(" ", "").split(",") if part})
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--layouts wants integers like 1,16,256,4096: {exc}") from exc
    if not layouts or layouts[0] <= 0:
        raise argparse.ArgumentTypeError("--layouts wants positive integers")
    return layouts


def _parse_list(allowed: Tuple[str, ...], option: str) -> Callable[[str], List[str]]:
    def parse(text: str) -> List[str]:
        values = [part for part in text.replace(" ", "").split(",") if part]
        unknown = [v for v in values if v not in allowed]
        if unknown or not values:
            raise argparse.ArgumentTypeError(f"{option} takes a comma list of {', '.join(allowed)}")
        return values

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m torch_memory_saver bench",
        description="Measure pause/resume of torch_memory_saver against the hardware floors "
                    "(pinned copies, raw CUDA VMM calls, plain torch allocation) in one run.")
    parser.add_argument("--total-gib", type=float, default=None,
                        help="bytes in the paused tag, GiB (default 8; 1 with --quick)")
    parser.add_argument("--layouts", type=_parse_layouts, default=None,
                        help="tensor counts, comma separated (default 1,16,256,4096; 1,16 with --quick)")
    parser.add_argument("--host-kinds", type=_parse_list(HOST_KINDS, "--host-kinds"), default=list(HOST_KINDS),
                        help="CPU backup backends to measure (default pinned,mmap)")
    parser.add_argument("--parts", type=_parse_list(PARTS, "--parts"), default=list(DEFAULT_PARTS),
                        help="what to run, from floors,nobackup,backup,alloc,disk (default "
                             "floors,nobackup,backup,alloc; disk is opt-in)")
    parser.add_argument("--disk-dir", default=None,
                        help="directory for the disk part (floor file and the library's backup files); a "
                             "private subdirectory is made in it and removed afterwards (default: the temp "
                             "directory, $TMPDIR or /tmp)")
    parser.add_argument("--disk-gib", type=float, default=None,
                        help=f"payload of the disk part, GiB (default min(--total-gib, {DEFAULT_DISK_GIB_CAP:g}))")
    parser.add_argument("--disk-layouts", type=_parse_layouts, default=None,
                        help=f"tensor counts for the disk part (default 1,16; at most {MAX_DISK_LAYOUTS})")
    parser.add_argument("--disk-repeats", type=int, default=1,
                        help="best of N rounds for the disk floor (default 1; each round writes and reads "
                             "--disk-gib)")
    parser.add_argument("--quick", action="store_true", help="small smoke run: 1 GiB, layouts 1,16, 2 repeats")
    parser.add_argument("--hook-mode", choices=("torch", "preload"), default="torch",
                        help="library hook mode (default torch; preload starts the library workers with "
                             "the engine in LD_PRELOAD)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="best of N for copies, raw VMM, no-backup pause/resume and allocation (default 3)")
    parser.add_argument("--device", type=int, default=None, help="CUDA device index (default: current device)")
    parser.add_argument("--alloc-count", type=int, default=2048, help="tensors in the allocation benchmark")
    parser.add_argument("--alloc-mib", type=float, default=2.0, help="MiB per tensor in the allocation benchmark")
    parser.add_argument("--worker-timeout", type=float, default=300.0,
                        help="seconds before a worker process is killed and its item reported failed")
    parser.add_argument("--out", default="bench-results", help="output directory (default ./bench-results)")
    parser.add_argument("--no-plot", action="store_true", help="do not write rate_vs_layout.png")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Run the benchmark; returns the exit status (see the module doc)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    total_gib = args.total_gib if args.total_gib is not None else (1.0 if args.quick else 8.0)
    layouts = args.layouts if args.layouts is not None else list(QUICK_LAYOUTS if args.quick else DEFAULT_LAYOUTS)
    repeats = args.repeats if args.repeats is not None else (2 if args.quick else 3)
    total_bytes = int(total_gib * GiB)
    if total_bytes <= 0 or repeats <= 0 or args.alloc_count <= 0 or args.alloc_mib <= 0:
        parser.error("--total-gib, --repeats, --alloc-count and --alloc-mib must be positive")
    if total_bytes // layouts[-1] < 8:
        parser.error(f"--total-gib {total_gib} is too small for {layouts[-1]} tensors")
    disk_gib = args.disk_gib if args.disk_gib is not None else min(total_gib, DEFAULT_DISK_GIB_CAP)
    disk_bytes = int(disk_gib * GiB)
    disk_layouts = list(args.disk_layouts if args.disk_layouts is not None else DEFAULT_DISK_LAYOUTS)
    if len(disk_layouts) > MAX_DISK_LAYOUTS:
        print(f"--disk-layouts: keeping the first {MAX_DISK_LAYOUTS} of {disk_layouts} to keep the disk part "
              f"quick", file=sys.stderr)
        disk_layouts = disk_layouts[:MAX_DISK_LAYOUTS]
    if "disk" in args.parts:
        if disk_bytes < DISK_IO_ALIGNMENT or args.disk_repeats <= 0:
            parser.error("--disk-gib and --disk-repeats must be positive")
        if disk_bytes // disk_layouts[-1] < DISK_IO_ALIGNMENT:
            parser.error(f"--disk-gib {disk_gib} is too small for {disk_layouts[-1]} tensors")
        if args.disk_dir is not None and not os.path.isdir(args.disk_dir):
            parser.error(f"--disk-dir {args.disk_dir!r} is not a directory")

    try:
        pre = _preflight()
    except BenchUnavailable as exc:
        print(f"torch_memory_saver bench: cannot run: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    config = {
        "total_bytes": total_bytes,
        "total_gib": total_gib,
        "layouts": layouts,
        "host_kinds": args.host_kinds,
        "parts": args.parts,
        "hook_mode": args.hook_mode,
        "repeats": repeats,
        "device": args.device,
        "alloc_count": args.alloc_count,
        "alloc_bytes": int(args.alloc_mib * MiB),
        "quick": args.quick,
        "disk_bytes": disk_bytes,
        "disk_gib": disk_gib,
        "disk_layouts": disk_layouts,
        "disk_dir": (os.path.realpath(args.disk_dir) if args.disk_dir else tempfile.gettempdir())
        if "disk" in args.parts else None,
        "disk_repeats": args.disk_repeats,
        "argv": sys.argv if argv is None else ["bench", *argv],
        # Settings that change what torch or the engine do underneath the numbers.
        "environment": {name: os.environ.get(name) for name in (
            "PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF", "CUDA_VISIBLE_DEVICES", "LD_PRELOAD",
            "TMS_DISK_BACKUP_DIR", "TMS_DISK_BACKUP_CHUNK_MB", "TMS_HOST_PREPARE_THREADS",
            "TMS_HOST_REGISTER_CHUNK_MB", "TMS_HOST_SMALL_REQUEST_MB", "TMS_COPY_CHUNK_MB", "TMS_COPY_STREAMS", *_STRIPPED_ENV)},
        "stripped_from_workers": list(_STRIPPED_ENV),
    }
    print(f"torch_memory_saver bench: {total_gib:g} GiB, layouts {layouts}, host kinds {args.host_kinds}, "
          f"hook mode {args.hook_mode}, torch {pre['torch']} (CUDA {pre['torch_cuda']}), "
          f"library {pre['library_version']} at {pre['library_path']}; output in {out}", flush=True)

    base_env = _base_env(pre["library_path"])
    try:
        library_env = _library_env(base_env, args.hook_mode)
    except Exception as exc:  # noqa: BLE001
        print(f"torch_memory_saver bench: cannot prepare hook mode {args.hook_mode!r}: {_exc_text(exc)}",
              file=sys.stderr)
        return EXIT_UNAVAILABLE
    runner = Runner(out, args.worker_timeout)
    common = {"device": args.device, "total_bytes": total_bytes, "repeats": repeats, "hook_mode": args.hook_mode}
    workers: Dict[str, Dict[str, Any]] = {}
    started = time.perf_counter()

    if "nobackup" in args.parts:
        workers["nobackup"] = runner.run("nobackup", dict(common, kind="nobackup", layouts=layouts), library_env)
    if "floors" in args.parts:
        vmm_layouts = [{"label": str(n), "count": n, "size": total_bytes // n} for n in layouts]
        vmm_layouts += _engine_vmm_layouts(workers.get("nobackup"), layouts)
        workers["floors"] = runner.run("floors", dict(common, kind="floors", vmm_layouts=vmm_layouts), base_env)
    if "alloc" in args.parts:
        workers["alloc"] = runner.run("alloc", dict(common, kind="alloc", alloc_count=args.alloc_count,
                                                    alloc_bytes=int(args.alloc_mib * MiB)), library_env)
    if "backup" in args.parts:
        for kind in args.host_kinds:
            for count in layouts:
                name = f"backup_{kind}_{count}"
                workers[name] = runner.run(name, dict(common, kind="backup", host_kind=kind, layout=count),
                                           library_env)
    if "disk" in args.parts:
        workers.update(_run_disk_part(runner, common, config, base_env, library_env))

    report = build_report(config, pre, workers, time.perf_counter() - started)
    plot_path = out / "rate_vs_layout.png"
    if plot_path.exists():
        plot_path.unlink()  # never leave an older run's figure next to these results
    report["plot"] = "plot skipped: --no-plot" if args.no_plot else render_plot(report, plot_path)
    print(report["plot"])
    json_path = out / "results.json"
    json_path.write_text(json.dumps(_json_safe(report), indent=1, allow_nan=False), encoding="utf-8")
    md_path = out / "results.md"
    md_path.write_text(render_markdown(report), encoding="utf-8")
    print(f"wrote {json_path} and {md_path}")
    print()
    print(render_rows_text(report))
    if report["mismatches"]:
        banner = "!" * 72
        print(f"\n{banner}\nDATA MISMATCH after resume: backed-up contents were not restored exactly\n"
              + "\n".join(report["mismatches"]) + f"\n{banner}", file=sys.stderr)
        return EXIT_MISMATCH
    if report["failures"]:
        print(f"\n{len(report['failures'])} measurement(s) failed; see results.md and logs/", file=sys.stderr)
        return EXIT_MEASUREMENT_FAILED
    return EXIT_OK


def _run_disk_part(runner: "Runner", common: Dict[str, Any], config: Dict[str, Any], base_env: Dict[str, str],
                   library_env: Dict[str, str]) -> Dict[str, Dict[str, Any]]:
    """The disk floor worker, then one library worker per disk layout, in a private directory removed after."""
    workers: Dict[str, Dict[str, Any]] = {}
    try:
        run_dir = tempfile.mkdtemp(prefix="tms-bench-disk-", dir=config["disk_dir"])
    except OSError as exc:
        workers["disk_floor"] = {"kind": "disk_floor", "items": {}, "errors": {}, "mismatches": [], "warnings": [],
                                 "fatal": f"cannot make a directory in --disk-dir {config['disk_dir']}: "
                                          f"{_exc_text(exc)}"}
        return workers
    disk = dict(common, disk_dir=run_dir, disk_bytes=config["disk_bytes"])
    try:
        workers["disk_floor"] = runner.run("disk_floor", dict(disk, kind="disk_floor",
                                                              disk_block_bytes=DISK_BLOCK_BYTES,
                                                              disk_repeats=config["disk_repeats"]), base_env)
        for count in config["disk_layouts"]:
            name = f"disk_{count}"
            workers[name] = runner.run(name, dict(disk, kind="disk", layout=count), library_env)
            stale = named_backup_files(run_dir)  # only a worker killed while creating a file leaves one
            if stale:
                workers[name].setdefault("warnings", []).append(
                    f"{len(stale)} tms-backup file(s) left in {run_dir} after the worker exited; removed")
                for file_name in stale:
                    try:
                        os.unlink(os.path.join(run_dir, file_name))
                    except OSError:
                        pass
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    return workers


def _engine_vmm_layouts(nobackup: Optional[Dict[str, Any]], layouts: List[int]) -> List[Dict[str, Any]]:
    """Raw VMM layouts with the engine's own handle count, where torch's segmentation changed it.

    torch's caching allocator packs tensors of 1-10 MiB into 20 MiB segments
    (and rounds others), so the engine may see fewer, bigger allocations than
    there are tensors; the matching floor is then m handles of bytes/m.
    """
    extra: List[Dict[str, Any]] = []
    if not nobackup:
        return extra
    for count in layouts:
        item = nobackup.get("items", {}).get(f"n{count}") or {}
        engine = item.get("engine") or {}
        allocations, active = engine.get("allocations"), engine.get("active_bytes")
        if allocations and active and allocations != count:
            extra.append({"label": f"engine-{count}", "count": int(allocations),
                          "size": int(active) // int(allocations), "for_layout": count})
    return extra


# =============================================================================
# report
# =============================================================================


def _row(op: str, host: Optional[str], layout: Optional[int], seconds: Optional[float], nbytes: Optional[int],
         floor_name: str, floor_seconds: Optional[float], floor_bytes: Optional[int],
         engine_allocations: Optional[int] = None, note: str = "", error: Optional[str] = None,
         target_key: Optional[str] = None) -> Dict[str, Any]:
    comparison, factor, _, text = TARGETS[target_key or op]
    gbps = _gbps(nbytes, seconds)
    floor_gbps = _gbps(floor_bytes, floor_seconds)
    ratio = None
    if comparison == ">=" and gbps is not None and floor_gbps:
        ratio = gbps / floor_gbps
    elif comparison == "<=" and seconds is not None and floor_seconds:
        ratio = seconds / floor_seconds
    passed = None
    if ratio is not None:
        passed = ratio >= factor if comparison == ">=" else ratio <= factor
    if error is None and seconds is None:
        error = "not measured"
    elif error is None and ratio is None:
        note = (note + "; " if note else "") + f"floor '{floor_name}' missing"
    return {
        "operation": op,
        "label": OP_LABELS.get(op, op),
        "host": host,
        "layout": layout,
        "engine_allocations": engine_allocations,
        "seconds": seconds,
        "bytes": nbytes,
        "gbps": gbps,
        "floor": {"name": floor_name, "seconds": floor_seconds, "bytes": floor_bytes, "gbps": floor_gbps},
        "ratio": ratio,
        "ratio_meaning": "library GB/s / floor GB/s" if comparison == ">=" else "library s / floor s",
        "target": {"comparison": comparison, "factor": factor, "text": text},
        "pass": passed,
        "note": note,
        "error": error,
    }


def _first_error(result: Optional[Dict[str, Any]], *names: str) -> Optional[str]:
    if not result:
        return "not run"
    if result.get("fatal"):
        return "worker failed: " + result["fatal"].splitlines()[0]
    errors = result.get("errors", {})
    for name in names:
        if name in errors:
            return errors[name].splitlines()[0]
    if errors:
        name = next(iter(errors))
        return f"{name}: " + errors[name].splitlines()[0]
    return None


def _registered_floor(floor_items: Dict[str, Any], direction: str) -> Optional[Dict[str, Any]]:
    registered = floor_items.get("registered") or {}
    seconds = registered.get(f"{direction}_seconds")
    if not seconds:
        return None
    return {"seconds": seconds, "bytes": registered.get("bytes"), "gbps": _gbps(registered.get("bytes"), seconds),
            "is_pinned": registered.get("is_pinned")}


def build_report(config: Dict[str, Any], pre: Dict[str, Any], workers: Dict[str, Dict[str, Any]],
                 wall_seconds: float) -> Dict[str, Any]:
    floors_w = workers.get("floors")
    floor_items = (floors_w or {}).get("items", {})
    d2h, h2d = floor_items.get("d2h") or {}, floor_items.get("h2d") or {}
    pinned_alloc = floor_items.get("pinned_alloc") or {}
    vmm = floor_items.get("vmm") or {}
    layouts: List[int] = config["layouts"]
    env = next((w.get("env") for w in workers.values() if w.get("env")), {}) or {}
    library = next((w.get("library") for w in workers.values() if w.get("library")), {}) or {}

    floors: Dict[str, Any] = {
        "pinned_d2h": dict(d2h, gbps=_gbps(d2h.get("bytes"), d2h.get("seconds"))) if d2h else None,
        "pinned_h2d": dict(h2d, gbps=_gbps(h2d.get("bytes"), h2d.get("seconds"))) if h2d else None,
        "pinned_alloc": dict(pinned_alloc, gbps=_gbps(pinned_alloc.get("bytes"), pinned_alloc.get("seconds")))
        if pinned_alloc else None,
        "vmm": vmm,
        # Same copies with page-locked THP memory (the engine's kind of backup memory); not a target.
        "registered_d2h": _registered_floor(floor_items, "d2h"),
        "registered_h2d": _registered_floor(floor_items, "h2d"),
        "granularity": floor_items.get("granularity"),
        "cuda_driver_version": floor_items.get("driver_version"),
    }
    alloc_items = (workers.get("alloc") or {}).get("items", {})
    floors["torch_alloc"] = alloc_items.get("torch_alloc")
    disk_floor_item = ((workers.get("disk_floor") or {}).get("items") or {}).get("disk")
    floors["disk"] = disk_floor_item
    if floors["pinned_d2h"] and floors["pinned_alloc"]:
        a, d = floors["pinned_alloc"]["gbps"], floors["pinned_d2h"]["gbps"]
        if a and d:
            floors["cold_serial_bound_gbps"] = 1.0 / (1.0 / a + 1.0 / d)

    rows: List[Dict[str, Any]] = []
    nobackup = workers.get("nobackup")
    for count in (layouts if "nobackup" in config["parts"] else []):
        item = ((nobackup or {}).get("items") or {}).get(f"n{count}")
        engine = (item or {}).get("engine") or {}
        floor = vmm.get(str(count)) or {}
        error = None if item else _first_error(nobackup, f"n{count}")
        same = (item or {}).get("raw_same_process") or {}
        for op, seconds_key, floor_key in (("pause_nobackup", "pause_seconds", "unmap_seconds"),
                                            ("resume_nobackup", "resume_seconds", "map_seconds")):
            matched = vmm.get(f"engine-{count}") or {}
            notes = []
            if engine.get("allocations") is not None:
                notes.append(f"engine: {engine['allocations']} allocations")
            # The floors process's loops, for comparison; the row's floor is the first one measured of:
            # same process, then the floors process with the tensor count.
            references = [(matched, "raw VMM with the engine's handle count, floors process")]
            if same.get(floor_key):
                references.insert(0, (floor, f"raw VMM {count} handles, floors process"))
            for reference, what in references:
                if item and reference.get(floor_key):
                    notes.append(f"vs {what}: {item[seconds_key] / reference[floor_key]:.2f}x")
            if same.get(floor_key):
                # Judged against the same-process loop (see _SameProcessVmm).
                floor_name = (f"raw VMM {same['count']} x {same['handle_bytes'] / MiB:g} MiB, same process")
                floor_seconds = same[floor_key]
            else:
                floor_name, floor_seconds = f"raw VMM {count} handles", floor.get(floor_key)
                if same.get("error"):
                    notes.append(f"same-process floor failed: {same['error']}")
            rows.append(_row(op, None, count, (item or {}).get(seconds_key), (item or {}).get("bytes"),
                             floor_name, floor_seconds, (item or {}).get("bytes"),
                             engine.get("allocations"), "; ".join(notes), error))

    for kind in (config["host_kinds"] if "backup" in config["parts"] else []):
        for count in layouts:
            worker = workers.get(f"backup_{kind}_{count}")
            items = (worker or {}).get("items", {})
            engine_allocations = ((worker or {}).get("engine_after_alloc") or {}).get("allocations")
            for op in BACKUP_OPS:
                item = items.get(op)
                floor = d2h if TARGETS[op][2] == "d2h" else h2d
                floor_name = "pinned D2H" if TARGETS[op][2] == "d2h" else "pinned H2D"
                notes = []
                if item and item.get("returned_seconds") is not None and item.get("seconds"):
                    lag = item["seconds"] - item["returned_seconds"]
                    if lag > 0.001:
                        notes.append(f"returned {lag * 1e3:.1f} ms before the device was idle")
                registered = floors.get(f"registered_{TARGETS[op][2]}") or {}
                if item and item.get("seconds") and registered.get("gbps"):
                    rate = _gbps(item.get("bytes"), item["seconds"]) or 0.0
                    notes.append(f"{rate / registered['gbps']:.2f}x registered-memory "
                                 f"{TARGETS[op][2].upper()} ({registered['gbps']:.1f} GB/s)")
                note = "; ".join(notes)
                error = None if item else _first_error(worker, op)
                rows.append(_row(op, kind, count, (item or {}).get("seconds"), (item or {}).get("bytes"),
                                 floor_name, floor.get("seconds"), floor.get("bytes"), engine_allocations, note,
                                 error))

    if "disk" in config.get("parts", ()):
        disk = disk_floor_item or {}
        floor_note = "; ".join(disk.get("notes") or [])
        floor_error = None if disk else _first_error(workers.get("disk_floor"), "disk_floor")
        for count in config.get("disk_layouts") or []:
            worker = workers.get(f"disk_{count}")
            items = (worker or {}).get("items", {})
            engine_allocations = ((worker or {}).get("engine_after_alloc") or {}).get("allocations")
            for op, key, floor_name in (("pause_disk", "write", "disk write"), ("resume_disk", "read", "disk read")):
                item = items.get(op)
                notes = []
                if item:
                    notes.append(f"{item.get('files')} file(s) of {item.get('file_bytes', 0) / GiB:.2f} GiB on disk"
                                 if op == "pause_disk" else
                                 ("no backup file left" if not item.get("files_left") else
                                  f"{len(item['files_left'])} backup file(s) LEFT"))
                    lag = (item.get("seconds") or 0) - (item.get("returned_seconds") or 0)
                    if lag > 0.001:
                        notes.append(f"returned {lag * 1e3:.1f} ms before the device was idle")
                if floor_note:
                    notes.append(f"floor: {floor_note}")
                if not disk and floor_error:
                    notes.append(f"floor failed: {floor_error}")
                error = None if item else _first_error(worker, op)
                rows.append(_row(op, "disk", count, (item or {}).get("seconds"), (item or {}).get("bytes"),
                                 floor_name, disk.get(f"{key}_seconds"), disk.get("bytes"), engine_allocations,
                                 "; ".join(notes), error))

    if "alloc" in config["parts"]:
        alloc_w = workers.get("alloc")
        region = alloc_items.get("region_alloc") or {}
        torch_alloc = alloc_items.get("torch_alloc") or {}
        label_layout = config["alloc_count"]
        engine_allocs = None
        if region.get("engine"):
            engine_allocs = max((e.get("allocations") or 0) for e in region["engine"]) or None
        error = None if region.get("seconds") is not None else _first_error(alloc_w, "region_alloc_0")
        rows.append(_row("region_alloc", None, label_layout, region.get("seconds"), region.get("bytes"),
                         f"torch alloc {config['alloc_count']} x {config['alloc_bytes'] / MiB:g} MiB",
                         torch_alloc.get("seconds"), torch_alloc.get("bytes"), engine_allocs,
                         f"{config['alloc_count']} x {config['alloc_bytes'] / MiB:g} MiB tensors", error))

    mismatches = [m for w in workers.values() for m in w.get("mismatches", [])]
    failures = []
    for name, worker in workers.items():
        if worker.get("fatal"):
            failures.append({"worker": name, "item": None, "error": worker["fatal"]})
        for item, error in (worker.get("errors") or {}).items():
            failures.append({"worker": name, "item": item, "error": error})
    rss = {name: {"host_kind": name.split("_")[1], "layout": int(name.split("_")[2]), **(w.get("rss") or {}),
                  "bytes": (w.get("items", {}).get("layout") or {}).get("bytes")}
           for name, w in workers.items() if name.startswith("backup_") and w.get("rss")}
    judged = [r for r in rows if r["pass"] is not None]
    return {
        "schema": 1,
        "tool": "python -m torch_memory_saver bench",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "wall_seconds": wall_seconds,
        "device": {k: env.get(k) for k in ("device_index", "device_name", "device_total_memory", "capability",
                                           "cuda_visible_devices")},
        "versions": {"torch": env.get("torch") or pre.get("torch"), "torch_cuda": env.get("torch_cuda")
                     or pre.get("torch_cuda"), "cuda_driver": floors.get("cuda_driver_version"),
                     "torch_memory_saver": library.get("version") or pre.get("library_version"),
                     "python": platform.python_version()},
        "library": library or {"path": pre.get("library_path")},
        "git": _git_info(),
        "host": _host_info(),
        "config": config,
        "floors": floors,
        "rows": rows,
        "summary": {"targets_judged": len(judged), "targets_met": sum(1 for r in judged if r["pass"]),
                    "rows_without_result": sum(1 for r in rows if r["seconds"] is None)},
        "rss": rss,
        "mismatches": mismatches,
        "correct": not mismatches,
        "verifications": sum(int(w.get("verified", 0)) for w in workers.values()),
        "failures": failures,
        "workers": workers,
    }


def _json_safe(value: Any) -> Any:
    """`value` with NaN/inf floats as None and unknown objects as strings (strict JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return str(value)


def _fmt_ms(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    ms = seconds * 1e3
    if ms < 10:
        return f"{ms:.3f}"
    if ms < 1000:
        return f"{ms:.1f}"
    return f"{ms:.0f}"


def _fmt(value: Optional[float], digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _fmt_gib(value: Optional[int]) -> str:
    return "-" if value is None else f"{value / GiB:.2f}"


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(report: Dict[str, Any]) -> str:
    device = report["device"]
    config = report["config"]
    floors = report["floors"]
    versions = report["versions"]
    git = report["git"]
    lines: List[str] = []
    name = device.get("device_name") or "unknown GPU"
    lines.append(f"# torch_memory_saver pause/resume benchmark on {name}")
    lines.append("")
    commit = git.get("commit")
    commit_text = f"{commit[:12]}{' (dirty)' if git.get('dirty') else ''}" if commit else "not a git checkout"
    lines.append(f"- date: {report['date']}; commit: {commit_text}; run took {report['wall_seconds']:.0f} s")
    lines.append(f"- GPU {device.get('device_index')}: {name}, {_fmt_gib(device.get('device_total_memory'))} GiB, "
                 f"compute capability {device.get('capability')}")
    lines.append(f"- torch {versions.get('torch')} (CUDA {versions.get('torch_cuda')}), CUDA driver API "
                 f"{versions.get('cuda_driver')}, torch_memory_saver {versions.get('torch_memory_saver')}, "
                 f"Python {versions.get('python')}")
    host = report["host"]
    lines.append(f"- host: {host.get('cpu_count')} CPUs, {_fmt_gib(host.get('mem_total_bytes'))} GiB RAM, THP "
                 f"`{host.get('transparent_hugepage')}`")
    lines.append(f"- payload {config['total_gib']:g} GiB per layout, layouts {config['layouts']} tensors, hook mode "
                 f"`{config['hook_mode']}`, best of {config['repeats']} for floors and no-backup runs; backup "
                 f"pauses/resumes are single shots in a fresh process")
    if "disk" in config.get("parts", ()):
        lines.append(f"- disk part: {config['disk_gib']:g} GiB, layouts {config['disk_layouts']} tensors, in a "
                     f"temporary directory under `{config.get('disk_dir')}`; floor best of "
                     f"{config.get('disk_repeats', 1)}, library pause/resume single shots in a fresh process; "
                     f"TMS_DISK_BACKUP_CHUNK_MB="
                     f"{(config.get('environment') or {}).get('TMS_DISK_BACKUP_CHUNK_MB') or 'unset (64)'}")
    summary = report["summary"]
    lines.append(f"- targets met: **{summary['targets_met']} of {summary['targets_judged']}** judged rows"
                 + (f"; {summary['rows_without_result']} rows without a result" if summary["rows_without_result"]
                    else ""))
    if report["mismatches"]:
        contents = "**DATA MISMATCH** (see below)"
    elif report.get("verifications"):
        contents = f"exact ({report['verifications']} full comparisons after resume)"
    else:
        contents = "not checked (no backed-up pause/resume completed)"
    lines.append(f"- contents after resume: {contents}")
    lines.append("")

    lines.append("## Floors (same run)")
    lines.append("")
    lines.append("| floor | size / layout | time (ms) | GB/s |")
    lines.append("|---|---|---:|---:|")
    for key, label in (("pinned_d2h", "pinned D2H copy"), ("pinned_h2d", "pinned H2D copy"),
                       ("pinned_alloc", "fresh pinned host allocation (torch.empty pin_memory)")):
        f = floors.get(key) or {}
        lines.append(f"| {label} | {_fmt_gib(f.get('bytes'))} GiB | {_fmt_ms(f.get('seconds'))} | "
                     f"{_fmt(f.get('gbps'), 1)} |")
    for key, label in (("registered_d2h", "D2H copy, page-locked THP memory (cudaHostRegister; the engine's kind)"),
                       ("registered_h2d", "H2D copy, page-locked THP memory (cudaHostRegister; the engine's kind)")):
        f = floors.get(key) or {}
        if f:
            lines.append(f"| {label} | {_fmt_gib(f.get('bytes'))} GiB | {_fmt_ms(f.get('seconds'))} | "
                         f"{_fmt(f.get('gbps'), 1)} |")
    if floors.get("cold_serial_bound_gbps"):
        lines.append(f"| fresh pinned alloc then D2H, one after the other (derived) | | | "
                     f"{floors['cold_serial_bound_gbps']:.1f} |")
    for label, v in sorted((floors.get("vmm") or {}).items(), key=lambda kv: (kv[1].get("count", 0), kv[0])):
        lines.append(f"| raw VMM create+map+access, {v['count']} x {v['handle_bytes'] / MiB:g} MiB"
                     f"{' (engine handle count)' if label.startswith('engine-') else ''} | {label} | "
                     f"{_fmt_ms(v.get('map_seconds'))} | |")
        lines.append(f"| raw VMM unmap+release, {v['count']} x {v['handle_bytes'] / MiB:g} MiB"
                     f"{' (engine handle count)' if label.startswith('engine-') else ''} | {label} | "
                     f"{_fmt_ms(v.get('unmap_seconds'))} | |")
    disk = floors.get("disk") or {}
    if disk:
        fs = disk.get("filesystem") or {}
        where = (f"`{disk.get('directory')}` ({fs.get('fs_type', '?')} on {fs.get('device', '?')}, "
                 f"mounted at {fs.get('mount_point', '?')})")
        for key, verb in (("write", "write"), ("read", "read")):
            direct = disk.get(f"direct_{key}")
            how = "O_DIRECT" if direct else "buffered, page cache (O_DIRECT refused)"
            lines.append(f"| disk sequential {verb}, {disk.get('block_bytes', 0) / MiB:g} MiB blocks, {how}, in "
                         f"{_md_escape(where)} | {_fmt_gib(disk.get('bytes'))} GiB | "
                         f"{_fmt_ms(disk.get(f'{key}_seconds'))} | {_fmt(disk.get(f'{key}_gbps'), 2)} |")
    ta = floors.get("torch_alloc") or {}
    if ta:
        lines.append(f"| plain torch alloc, {ta.get('count')} x {config['alloc_bytes'] / MiB:g} MiB, empty cache | "
                     f"{ta.get('count')} | {_fmt_ms(ta.get('seconds'))} | |")
    if disk.get("notes"):
        lines.append("")
        lines.append("Disk floor: " + _md_escape("; ".join(disk["notes"])))
    lines.append("")

    lines.append("## Library vs floor")
    lines.append("")
    lines.append("Ratio: library GB/s / floor GB/s for backup rows (higher is better); library time / floor time "
                 "for no-backup and allocation rows (lower is better). Times include a device synchronize after "
                 "the call returns.")
    lines.append("")
    lines.append("| operation | host | tensors | engine allocs | time (ms) | GB/s | floor | ratio | target | pass "
                 "| notes |")
    lines.append("|---|---|---:|---:|---:|---:|---|---:|---|---|---|")
    for r in report["rows"]:
        passed = "-" if r["pass"] is None else ("yes" if r["pass"] else "**no**")
        notes = r["note"]
        if r["error"]:
            notes = (notes + "; " if notes else "") + "ERROR: " + r["error"][:200]
        floor = r["floor"]
        floor_text = floor["name"]
        if floor.get("gbps") is not None and r["target"]["comparison"] == ">=":
            floor_text += f" {floor['gbps']:.1f} GB/s"
        elif floor.get("seconds") is not None:
            floor_text += f" {_fmt_ms(floor['seconds'])} ms"
        lines.append(f"| {r['label']} | {r['host'] or '-'} | {r['layout'] if r['layout'] is not None else '-'} | "
                     f"{r['engine_allocations'] if r['engine_allocations'] is not None else '-'} | "
                     f"{_fmt_ms(r['seconds'])} | {_fmt(r['gbps'], 1)} | {_md_escape(floor_text)} | "
                     f"{_fmt(r['ratio'], 2)} | {r['target']['text']} | {passed} | {_md_escape(notes)} |")
    lines.append("")

    if report["rss"]:
        lines.append("## Process RSS (GiB)")
        lines.append("")
        lines.append("| host | tensors | payload | before pause | after cold pause | after resume | resume + settle "
                     "| after resume (retain on) | after warm pause | after warm resume |")
        lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for _, v in sorted(report["rss"].items(), key=lambda kv: (kv[1]["host_kind"], kv[1]["layout"])):
            settle = v.get("settle_seconds")
            lines.append(f"| {v['host_kind']} | {v['layout']} | {_fmt_gib(v.get('bytes'))} | "
                         f"{_fmt_gib(v.get('before_pause'))} | {_fmt_gib(v.get('after_pause_cold'))} | "
                         f"{_fmt_gib(v.get('after_resume_cold'))} | {_fmt_gib(v.get('after_resume_cold_settled'))}"
                         f"{f' ({settle:.2f} s)' if settle is not None else ''} | "
                         f"{_fmt_gib(v.get('after_resume_retained'))} | {_fmt_gib(v.get('after_pause_warm'))} | "
                         f"{_fmt_gib(v.get('after_resume_warm'))} |")
        lines.append("")

    if report["mismatches"]:
        lines.append("## DATA MISMATCH")
        lines.append("")
        for m in report["mismatches"]:
            lines.append(f"- {_md_escape(m)}")
        lines.append("")
    if report["failures"]:
        lines.append("## Failed measurements")
        lines.append("")
        for f in report["failures"]:
            first = f["error"].splitlines()[0] if f["error"] else ""
            lines.append(f"- `{f['worker']}`{' / ' + f['item'] if f['item'] else ''}: {_md_escape(first[:400])}")
        lines.append("")
    if str(report.get("plot", "")).startswith("wrote"):
        lines.append("![rate vs layout](rate_vs_layout.png)")
    else:
        lines.append(f"(no plot: {report.get('plot')})")
    lines.append("")
    return "\n".join(lines)


def render_rows_text(report: Dict[str, Any]) -> str:
    """A compact plain-text version of the main table for the terminal."""
    out = [f"{'operation':40} {'host':6} {'n':>5} {'ms':>10} {'GB/s':>7} {'ratio':>6}  target"]
    for r in report["rows"]:
        verdict = "" if r["pass"] is None else ("ok" if r["pass"] else "MISS")
        tail = r["target"]["text"] + (f"  {verdict}" if verdict else "") + (f"  ERROR {r['error'][:60]}"
                                                                              if r["error"] else "")
        out.append(f"{r['label'][:40]:40} {(r['host'] or '-'):6} {str(r['layout'] or '-'):>5} "
                   f"{_fmt_ms(r['seconds']):>10} {_fmt(r['gbps'], 1):>7} {_fmt(r['ratio'], 2):>6}  {tail}")
    return "\n".join(out)


def render_plot(report: Dict[str, Any], path: Path) -> str:
    """Write the rate-vs-layout figure; returns a one-line message (also when matplotlib is missing)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as exc:  # noqa: BLE001 - optional
        return f"plot skipped: matplotlib not importable ({exc})"
    try:
        layouts = report["config"]["layouts"]
        rows = report["rows"]
        floors = report["floors"]

        def series(op: str, host: Optional[str], field: str, xs: Optional[List[int]] = None) -> List[float]:
            values = []
            for n in (layouts if xs is None else xs):
                row = next((r for r in rows if r["operation"] == op and r["host"] == host and r["layout"] == n), None)
                value = row.get(field) if row else None
                values.append(float("nan") if value is None else value)
            return values

        disk_layouts = [n for n in (report["config"].get("disk_layouts") or [])
                        if any(r["operation"] in ("pause_disk", "resume_disk") and r["layout"] == n and
                               r["seconds"] is not None for r in rows)]
        if disk_layouts:
            fig, (left, right, third) = plt.subplots(1, 3, figsize=(20, 5.5))
        else:
            fig, (left, right) = plt.subplots(1, 2, figsize=(14, 5.5))
            third = None
        styles = {"pause_cold": ("o", "-"), "pause_warm": ("s", "-"), "resume_cold": ("^", "--"),
                  "resume_warm": ("v", "--")}
        colors = {"pinned": ("tab:blue", "tab:cyan"), "mmap": ("tab:red", "tab:orange")}
        for host in report["config"]["host_kinds"]:
            for op, (marker, line) in styles.items():
                color = colors.get(host, ("k", "grey"))[0 if op.startswith("pause") else 1]
                left.plot(layouts, series(op, host, "gbps"), marker=marker, linestyle=line, color=color,
                          label=f"{OP_LABELS[op]} [{host}]")
        d2h = (floors.get("pinned_d2h") or {}).get("gbps")
        h2d = (floors.get("pinned_h2d") or {}).get("gbps")
        alloc = (floors.get("pinned_alloc") or {}).get("gbps")
        if d2h:
            left.axhline(d2h, color="black", linestyle="--", linewidth=1, label=f"pinned D2H floor {d2h:.1f} GB/s")
            left.axhline(0.5 * d2h, color="black", linestyle=":", linewidth=1, label="0.5x D2H (cold target)")
        if h2d:
            left.axhline(h2d, color="dimgray", linestyle="-.", linewidth=1, label=f"pinned H2D floor {h2d:.1f} GB/s")
        if alloc:
            left.axhline(alloc, color="green", linestyle=":", linewidth=1,
                         label=f"fresh pinned alloc {alloc:.1f} GB/s")
        _log_x(left, layouts)
        left.set_xlabel("tensors in the tag (log scale)")
        left.set_ylabel("GB/s (payload / time)")
        left.set_title("with CPU backup")
        left.set_ylim(bottom=0)
        left.grid(True, alpha=0.3)
        left.legend(fontsize=7, loc="best")

        for op, color in (("pause_nobackup", "tab:purple"), ("resume_nobackup", "tab:green")):
            ms = [v * 1e3 for v in series(op, None, "seconds")]
            right.plot(layouts, ms, marker="o", color=color, label=f"library {OP_LABELS[op]}")
        vmm = floors.get("vmm") or {}
        for key, color, label in (("unmap_seconds", "tab:purple", "raw VMM unmap+release"),
                                  ("map_seconds", "tab:green", "raw VMM create+map+access")):
            ys = [(vmm.get(str(n)) or {}).get(key) for n in layouts]
            right.plot(layouts, [float("nan") if y is None else y * 1e3 for y in ys], linestyle="--", color=color,
                       label=f"{label} (n handles)")
            ys = [(vmm.get(f"engine-{n}") or vmm.get(str(n)) or {}).get(key) for n in layouts]
            if any(f"engine-{n}" in vmm for n in layouts):
                right.plot(layouts, [float("nan") if y is None else y * 1e3 for y in ys], linestyle=":",
                           color=color, label=f"{label} (engine handle count)")
        _log_x(right, layouts)
        if any(math.isfinite(y) and y > 0 for line in right.get_lines() for y in line.get_ydata()):
            right.set_yscale("log")  # (log of no data at all raises: e.g. --parts without nobackup)
        right.set_xlabel("tensors in the tag (log scale)")
        right.set_ylabel("ms")
        right.set_title("without backup (time, lower is better)")
        right.grid(True, alpha=0.3, which="both")
        right.legend(fontsize=7, loc="best")

        if third is not None:
            for op, color, marker in (("pause_disk", "tab:brown", "o"), ("resume_disk", "tab:olive", "^")):
                third.plot(disk_layouts, series(op, "disk", "gbps", disk_layouts), marker=marker, color=color,
                           label=f"library {OP_LABELS[op]}")
            disk = floors.get("disk") or {}
            for key, color, style in (("write", "tab:brown", "--"), ("read", "tab:olive", "-.")):
                rate = disk.get(f"{key}_gbps")
                if rate:
                    third.axhline(rate, color=color, linestyle=style, linewidth=1,
                                  label=f"disk {key} floor {rate:.2f} GB/s"
                                        + ("" if disk.get(f"direct_{key}") else " (page cache)"))
                    third.axhline(0.8 * rate, color=color, linestyle=":", linewidth=1, label=f"0.8x disk {key}")
            _log_x(third, disk_layouts)
            fs_type = (disk.get("filesystem") or {}).get("fs_type")
            third.set_xlabel("tensors in the tag (log scale)")
            third.set_ylabel("GB/s (payload / time)")
            third.set_title(f"disk backup, {report['config'].get('disk_gib', 0):g} GiB"
                            + (f" ({fs_type})" if fs_type else ""))
            third.set_ylim(bottom=0)
            third.grid(True, alpha=0.3)
            third.legend(fontsize=7, loc="best")

        device = report["device"].get("device_name") or "GPU"
        fig.suptitle(f"torch_memory_saver pause/resume vs floors on {device}, "
                     f"{report['config']['total_gib']:g} GiB ({report['date'][:10]})")
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
    except Exception as exc:  # noqa: BLE001 - a broken plot must not lose the results
        return f"plot failed: {_exc_text(exc)}"
    return f"wrote {path}"


def _log_x(axis: Any, layouts: List[int]) -> None:
    try:
        axis.set_xscale("log", base=2)
    except TypeError:  # matplotlib < 3.3
        axis.set_xscale("log", basex=2)
    axis.set_xticks(layouts)
    axis.set_xticklabels([str(n) for n in layouts])
    if len(layouts) == 1:
        axis.set_xlim(layouts[0] / 2, layouts[0] * 2)


if __name__ == "__main__":
    sys.exit(main())
