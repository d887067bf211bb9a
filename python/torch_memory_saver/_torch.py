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
