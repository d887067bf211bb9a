"""The raw VMM floor: loops of the bare driver calls behind a pause and a resume without backup.

The loops are C++ (bench/vmm_floor.cpp, built as ``libtms_vmm_floor.so`` next
to the engine library) on the engine's own Driver seam, so no CUDA structure
or signature is declared in Python. The library is loaded into the calling
process: the benchmark compares the engine with these loops in the same
process, because the driver's own times drift between processes.
"""

from __future__ import annotations

import ctypes
import json
import threading
from pathlib import Path
from typing import Optional

from .records import VmmLoop, best

LIBRARY_FILE_NAME = "libtms_vmm_floor.so"

# Variants of the loops (option bits of tms_vmm_floor_measure).
BATCHED_MAP = 1  # create every handle first, then map + access each (the engine's resume order)
BATCHED_UNMAP = 2  # unmap every handle, then release every handle (the engine's pause order); parts timed apart
TOUCH = 4  # write all mapped memory before the unmap side (as a used tensor's)
SYNC_FIRST = 8  # the unmap side starts with a device synchronize (as a pause does)

_lock = threading.Lock()
_loaded: Optional[ctypes.CDLL] = None


def library_path() -> Path:
    """``libtms_vmm_floor.so`` next to the engine library this process would load."""
    from .. import _library

    return _library.find_library_path().resolve().parent / LIBRARY_FILE_NAME


def _library_handle() -> ctypes.CDLL:
    global _loaded
    with _lock:
        if _loaded is None:
            path = library_path()
            if not path.is_file():
                raise RuntimeError(f"the raw VMM floor library is not at {path}: build it next to the engine "
                                   f"(cmake --build build --target tms_vmm_floor) or reinstall the package")
            lib = ctypes.CDLL(str(path))
            lib.tms_vmm_floor_measure.restype = ctypes.c_int
            lib.tms_vmm_floor_measure.argtypes = [
                ctypes.c_char_p, ctypes.c_int, ctypes.c_uint64, ctypes.c_uint64, ctypes.c_int, ctypes.c_double,
                ctypes.c_uint, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t]
            _loaded = lib
        return _loaded


def measure(count: int, handle_bytes: int, repeats: int, device: int = 0, driver: str = "cuda",
            options: int = 0, slow_round_s: float = 0.5) -> VmmLoop:
    """Best-of timings of create+map+access and unmap+release for `count` handles of `handle_bytes`.

    One reservation holds all handles side by side, as the engine's
    allocations would sit; sizes round up to the driver's (recommended)
    granularity, as the engine's do. Further rounds are skipped once one
    round (both sides) takes longer than `slow_round_s`. `driver` is "cuda"
    or "sim" (the host simulation). Raises RuntimeError with the driver's
    message when a call fails; what a failed round holds is given back.
    """
    lib = _library_handle()
    capacity = 4096 + 64 * 5 * max(1, int(repeats))
    out = ctypes.create_string_buffer(capacity)
    error = ctypes.create_string_buffer(1024)
    status = lib.tms_vmm_floor_measure(driver.encode(), int(device), int(count), int(handle_bytes), int(repeats),
                                       float(slow_round_s), int(options), out, capacity, error, len(error))
    if status != 0:
        raise RuntimeError(f"raw VMM floor ({count} x {handle_bytes} bytes): "
                           f"{error.value.decode('utf-8', errors='replace')}")
    data = json.loads(out.value.decode("utf-8"))
    return VmmLoop(count=data["count"], handle_bytes=data["handle_bytes"],
                   mapped_bytes=data["count"] * data["handle_bytes"],
                   map_seconds=best(data["map_all_seconds"]), unmap_seconds=best(data["unmap_all_seconds"]),
                   map_all_seconds=data["map_all_seconds"], unmap_all_seconds=data["unmap_all_seconds"],
                   rounds=len(data["map_all_seconds"]), synchronize_all_seconds=data["synchronize_all_seconds"],
                   unmap_only_all_seconds=data["unmap_only_all_seconds"],
                   release_all_seconds=data["release_all_seconds"], driver=data["driver"],
                   granularity=data["granularity"])
