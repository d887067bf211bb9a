"""Exceptions raised by torch_memory_saver.

Every failure of the engine arrives as a ``tms_status`` code plus a message
(see ``include/torch_memory_saver/tms.h``); :func:`error_from_status` turns the
pair into one of the classes below. Each class also derives from the builtin
exception a caller would naturally catch (``ValueError`` for bad arguments,
``RuntimeError`` for misuse, ``MemoryError``/``torch.OutOfMemoryError`` for
out-of-memory), so existing ``except`` clauses keep working.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict, Optional, Type

try:
    # Out-of-memory must be catchable as torch.OutOfMemoryError (what torch's
    # caching allocator raises), so torch is imported here when installed.
    import torch as _torch
except ImportError:  # the package also works without torch (C ABI, demo, CI)
    _TorchOutOfMemoryError = None
else:  # torch < 2.5 has it only as torch.cuda.OutOfMemoryError (the same class later)
    _TorchOutOfMemoryError = getattr(_torch, "OutOfMemoryError", None) or _torch.cuda.OutOfMemoryError


class TorchMemorySaverError(Exception):
    """Base class of every error raised by torch_memory_saver.

    Attributes:
        status: the engine's ``tms_status`` code (0 for errors raised by the
            Python layer itself).
        status_name: symbolic name of ``status``, e.g. ``"TMS_ERROR_DRIVER"``.
    """

    def __init__(self, message: str, status: int = 0, status_name: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.status_name = status_name


if TYPE_CHECKING:  # one class for type checkers; torch's base is chosen at import

    class OutOfMemoryError(TorchMemorySaverError, MemoryError):
        """Device or host memory ran out (e.g. resume could not get its memory back)."""

elif _TorchOutOfMemoryError is not None:

    class OutOfMemoryError(TorchMemorySaverError, _TorchOutOfMemoryError, MemoryError):
        """Device or host memory ran out (e.g. resume could not get its memory back)."""

else:

    class OutOfMemoryError(TorchMemorySaverError, MemoryError):  # type: ignore[no-redef]
        """Device or host memory ran out (e.g. resume could not get its memory back)."""


class InvalidArgumentError(TorchMemorySaverError, ValueError):
    """An argument was rejected (unknown backend name, null tag, foreign pointer...)."""


class InvalidStateError(TorchMemorySaverError, RuntimeError):
    """The call is not allowed now (e.g. changing hook_mode after first use)."""


class DriverError(TorchMemorySaverError, RuntimeError):
    """A CUDA driver call failed; the message names the call and its CUresult."""


class DriverUnavailableError(TorchMemorySaverError, RuntimeError):
    """libcuda.so.1 could not be loaded or is too old."""


class BackupIOError(TorchMemorySaverError, OSError):
    """Host I/O for a backup (disk file, mmap) failed."""


class ConfigError(TorchMemorySaverError, ValueError, RuntimeError):
    """A setting or environment variable is not usable (e.g. expandable_segments in preload mode).

    Also a RuntimeError: the library this one replaces raised RuntimeError for
    these, and callers catch that.
    """


class InternalError(TorchMemorySaverError, RuntimeError):
    """A bug in torch_memory_saver: please report it with the message."""


class LibraryNotFoundError(TorchMemorySaverError, FileNotFoundError, RuntimeError):
    """The engine's shared library (libtorch_memory_saver.so) could not be found.

    Also a RuntimeError, which is what callers of ``get_binary_path_from_package``
    catch (the library this one replaces raised it).
    """


class TorchNotAvailableError(TorchMemorySaverError, ImportError):
    """The operation needs PyTorch, which is not installed."""


# Each failure status of tms.h by its name. The numbers are the engine's: the
# name of a status code is read through the C ABI (tms_status_name), so no
# integer is copied here; a status this table lacks becomes InternalError.
_CLASS_BY_STATUS_NAME: Dict[str, Type[TorchMemorySaverError]] = {
    "TMS_ERROR_OUT_OF_MEMORY": OutOfMemoryError,
    "TMS_ERROR_INVALID_ARGUMENT": InvalidArgumentError,
    "TMS_ERROR_INVALID_STATE": InvalidStateError,
    "TMS_ERROR_DRIVER": DriverError,
    "TMS_ERROR_DRIVER_UNAVAILABLE": DriverUnavailableError,
    "TMS_ERROR_IO": BackupIOError,
    "TMS_ERROR_CONFIG": ConfigError,
    "TMS_ERROR_INTERNAL": InternalError,
}


def error_from_status(status: int, message: str, status_name: Optional[str] = None) -> TorchMemorySaverError:
    """Build the exception for a failed engine call.

    `status_name` is the engine's name of `status` (tms_status_name). Unknown
    names (a newer engine than this package) become InternalError so that they
    are never silently ignored.
    """
    name = status_name or f"tms_status {status}"
    cls = _CLASS_BY_STATUS_NAME.get(name, InternalError)
    text = message or name
    if name not in text:
        text = f"{text} [{name}]"
    return cls(text, status=status, status_name=name)
