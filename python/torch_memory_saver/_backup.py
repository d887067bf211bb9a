"""Reading a paused tensor's host backup as a CPU tensor."""

from __future__ import annotations

import ctypes
from typing import Any, Optional

from . import _library
from ._torch import require_torch
from .errors import InvalidArgumentError


def _byte_span(x: Any) -> int:
    """Bytes from x's first to its last element (x may be a strided view; torch strides are >= 0)."""
    last = sum((size - 1) * stride for size, stride in zip(x.shape, x.stride()))
    return (last + 1) * x.element_size()


def get_cpu_backup(x: Any, zero_copy: bool = False) -> Optional[Any]:
    """CPU tensor with x's dtype, shape and strides holding x's backup, or None (see TorchMemorySaver)."""
    # "no" must not hand out a view of memory a later resume gives back.
    zero_copy = _library.as_bool(zero_copy, "get_cpu_backup(zero_copy=...)")
    torch = require_torch("get_cpu_backup()")
    if not isinstance(x, torch.Tensor) or not x.is_cuda:
        raise InvalidArgumentError(
            f"get_cpu_backup() needs a CUDA tensor, got {type(x).__name__} on "
            f"{getattr(x, 'device', 'no device')}"
        )
    if x.numel() == 0:
        return None  # nothing was backed up
    span = _byte_span(x)
    lib = _library.library()
    address = lib.tms_get_cpu_backup_pointer(x.data_ptr(), span)
    if not address:
        _library.check_last_status()  # NULL is either "no backup" or an error
        return None
    host_bytes = (ctypes.c_uint8 * span).from_address(address)
    host = torch.frombuffer(host_bytes, dtype=torch.uint8).view(x.dtype).as_strided(x.shape, x.stride())
    return host if zero_copy else host.clone()
