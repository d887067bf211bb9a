"""Helpers shared by the CPU tests (simulated driver)."""

import ctypes

from torch_memory_saver import _library

MIB = 2**20


def pattern(size, seed=1):
    """Deterministic non-zero bytes, different per seed."""
    period = bytes((seed * 31 + 7 * i) % 255 + 1 for i in range(256))
    return period * (size // 256)


def device_free(lib, device=0):
    free, total = ctypes.c_uint64(), ctypes.c_uint64()
    _library.check(lib.tms_device_memory(device, ctypes.byref(free), ctypes.byref(total)))
    return free.value
