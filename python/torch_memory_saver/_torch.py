"""Lazy access to PyTorch: the package imports without it; only tensor features need it."""

from __future__ import annotations

from types import ModuleType

from .errors import TorchNotAvailableError


def require_torch(feature: str) -> ModuleType:
    """Import torch, or raise TorchNotAvailableError naming the feature that needs it."""
    try:
        import torch
    except ImportError as exc:
        raise TorchNotAvailableError(
            f"torch_memory_saver.{feature} needs PyTorch, which is not installed. "
            f"Install torch, or use the C ABI directly (see `python -m torch_memory_saver demo`)."
        ) from exc
    return torch


# The oldest torch whose caching allocator routes one thread's allocations to a
# pool (torch._C._cuda_beginAllocateCurrentThreadToPool). Older versions route
# by stream, which would send other threads' allocations on the same stream
# into a region's pool, so regions refuse them instead of pausing the wrong
# memory.
MIN_TORCH = "2.8"


def require_routing_torch(feature: str) -> ModuleType:
    """:func:`require_torch`, also refusing a torch too old to route one thread's allocations to a pool."""
    torch = require_torch(feature)
    if not hasattr(torch._C, "_cuda_beginAllocateCurrentThreadToPool"):
        raise TorchNotAvailableError(
            f"torch_memory_saver.{feature} needs torch >= {MIN_TORCH} (it routes the calling thread's "
            f"allocations to a pool with torch._C._cuda_beginAllocateCurrentThreadToPool); this process "
            f"has torch {getattr(torch, '__version__', 'of unknown version')}. Upgrade torch."
        )
    return torch
