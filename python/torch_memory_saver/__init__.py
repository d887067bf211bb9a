"""torch_memory_saver: release GPU memory of chosen tensors and take it back at the same addresses.

Typical use::

    from torch_memory_saver import torch_memory_saver

    with torch_memory_saver.region(tag="weights", enable_cpu_backup=True):
        weights = torch.empty(n, device="cuda")
    torch_memory_saver.pause("weights")   # physical memory handed back to the driver
    torch_memory_saver.resume("weights")  # same data_ptr(), contents restored

The package imports without PyTorch; only tensor features need it.
"""

from ._nccl import NcclGraphRegistrationWarning
from ._stats import TagStats, stats
from ._version import __version__
from .entrypoint import TorchMemorySaver, torch_memory_saver
from .errors import (
    BackupIOError,
    ConfigError,
    DriverError,
    DriverUnavailableError,
    InternalError,
    InvalidArgumentError,
    InvalidStateError,
    LibraryNotFoundError,
    OutOfMemoryError,
    TorchMemorySaverError,
    TorchNotAvailableError,
)
from .hooks import register_hook_mode
from .utils import configure_subprocess

__all__ = [
    "__version__",
    "torch_memory_saver",
    "TorchMemorySaver",
    "configure_subprocess",
    "register_hook_mode",
    "stats",
    "TagStats",
    "NcclGraphRegistrationWarning",
    "TorchMemorySaverError",
    "OutOfMemoryError",
    "InvalidArgumentError",
    "InvalidStateError",
    "DriverError",
    "DriverUnavailableError",
    "BackupIOError",
    "ConfigError",
    "InternalError",
    "LibraryNotFoundError",
    "TorchNotAvailableError",
]
