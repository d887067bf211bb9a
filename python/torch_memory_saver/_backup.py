"""Reading a paused tensor's host backup as a CPU tensor.

The engine hands out host backups under a lease (tms_lease_cpu_backup): the
bytes stay valid until the lease ends, even if another thread resumes or
frees the tensor meanwhile. A copy holds the lease while it copies; a
zero-copy view holds it for as long as the view's storage lives.
"""

from __future__ import annotations

import ctypes
import weakref
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
    lease = ctypes.c_uint64(0)
    address = ctypes.c_void_p(None)
    _library.check(lib.tms_lease_cpu_backup(x.data_ptr(), span, ctypes.byref(lease), ctypes.byref(address)))
    if not address.value:
        return None
    host_bytes = (ctypes.c_uint8 * span).from_address(address.value)
    if zero_copy:
        # The view's storage keeps host_bytes alive; the lease ends with it.
        # Not at interpreter exit: a view still read during shutdown must not
        # see its memory go, and the process gives everything back anyway.
        weakref.finalize(host_bytes, _end_lease, lease.value).atexit = False
    try:
        host = torch.frombuffer(host_bytes, dtype=torch.uint8).view(x.dtype).as_strided(x.shape, x.stride())
        return host if zero_copy else host.clone()
    finally:
        if not zero_copy:
            _end_lease(lease.value)


def _end_lease(lease: int) -> None:
    # Never raises: it may run from a finalizer, at interpreter exit too.
    try:
        _library.library().tms_end_cpu_backup_lease(lease)
    except Exception:  # noqa: BLE001
        pass
