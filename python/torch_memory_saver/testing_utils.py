"""Helpers for tests of code that uses torch_memory_saver (the names the library this one replaces offers)."""

from __future__ import annotations

from typing import Any

from ._torch import require_torch
from .utils import is_xpu

__all__ = ["get_device", "empty_cache", "get_and_print_gpu_memory"]


def get_device() -> str:
    """Device type string for tests: ``"cuda"`` (``"xpu"`` on Intel GPUs, which this library does not serve)."""
    return "xpu" if is_xpu() else "cuda"


def empty_cache() -> None:
    """Give torch's cached, unused device memory back to the driver."""
    torch = require_torch("testing_utils.empty_cache()")
    if is_xpu():
        torch.xpu.empty_cache()
    else:
        torch.cuda.empty_cache()


def get_and_print_gpu_memory(message: Any, gpu_id: int = 0) -> int:
    """Device memory in use on `gpu_id` as the driver sees it (bytes); prints it with `message`."""
    torch = require_torch("testing_utils.get_and_print_gpu_memory()")
    if is_xpu():
        free, total = torch.xpu.mem_get_info(gpu_id)
    else:
        free, total = torch.cuda.mem_get_info(gpu_id)
    used = int(total - free)
    print(f"GPU {gpu_id} memory: {used / 1024**3:.2f} GB ({message})")
    return used
