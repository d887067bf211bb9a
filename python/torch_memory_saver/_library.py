"""Finding and loading the engine library, and declaring its C ABI for ctypes.

The contract is ``include/torch_memory_saver/tms.h``; every function it
declares gets its argtypes/restype here, so a mismatch shows up in one place.
"""

from __future__ import annotations

import ctypes
import operator
import os
import sys
import threading
from pathlib import Path
from typing import Optional, SupportsIndex, cast

from . import _log, errors

LIBRARY_FILE_NAME = "libtorch_memory_saver.so"
LIBRARY_PATH_ENV = "TMS_LIBRARY_PATH"

_c_bool = ctypes.c_bool
_c_int = ctypes.c_int
_c_char_p = ctypes.c_char_p
_c_void_p = ctypes.c_void_p
_c_size_t = ctypes.c_size_t
_c_uint64 = ctypes.c_uint64

class CBackupPolicy(ctypes.Structure):
    """tms.h's tms_backup_policy."""

    _fields_ = [("kind", ctypes.c_int32), ("host_memory", ctypes.c_int32)]


# name -> (restype, argtypes), in the order of tms.h.
_SIGNATURES = {
    # errors and identity
    "tms_last_error": (_c_char_p, []),
    "tms_last_status": (_c_int, []),
    "tms_status_name": (_c_char_p, [_c_int]),
    "tms_status_count": (_c_int, []),
    "tms_version": (_c_char_p, []),
    "tms_init": (_c_int, []),
    "tms_driver_name": (_c_char_p, []),
    # per-thread region settings
    "tms_set_interesting_region": (_c_int, [_c_bool]),
    "tms_get_interesting_region": (_c_bool, []),
    "tms_set_current_tag": (_c_int, [_c_char_p]),
    "tms_get_current_tag": (_c_char_p, []),
    "tms_set_backup_policy": (_c_int, [ctypes.POINTER(CBackupPolicy)]),
    "tms_get_backup_policy": (_c_int, [ctypes.POINTER(CBackupPolicy)]),
    "tms_set_enable_cpu_backup": (_c_int, [_c_bool]),
    "tms_get_enable_cpu_backup": (_c_bool, []),
    "tms_set_cpu_backup_backend": (_c_int, [_c_char_p]),
    "tms_get_cpu_backup_backend": (_c_char_p, []),
    "tms_set_enable_disk_backup": (_c_int, [_c_bool]),
    "tms_get_enable_disk_backup": (_c_bool, []),
    "tms_set_cpu_backup_compress": (_c_int, [_c_bool]),
    "tms_get_cpu_backup_compress": (_c_bool, []),
    # process-wide settings
    "tms_set_disk_backup_dir": (_c_int, [_c_char_p]),
    "tms_get_disk_backup_dir": (_c_int, [_c_char_p, _c_size_t, ctypes.POINTER(_c_size_t)]),
    "tms_remove_orphaned_backups": (_c_int, [_c_char_p, ctypes.POINTER(_c_uint64)]),
    "set_memory_margin_bytes": (_c_int, [_c_uint64]),
    "tms_get_memory_margin_bytes": (_c_uint64, []),
    "tms_set_retain_cpu_backup": (_c_int, [_c_bool]),
    "tms_get_retain_cpu_backup": (_c_bool, []),
    # allocation
    "tms_malloc": (_c_int, [ctypes.POINTER(_c_void_p), _c_size_t, _c_int]),
    "tms_free": (_c_int, [_c_void_p]),
    "tms_owns": (_c_bool, [_c_void_p]),
    "tms_torch_malloc": (_c_void_p, [ctypes.c_ssize_t, _c_int, _c_void_p]),
    "tms_torch_free": (None, [_c_void_p, ctypes.c_ssize_t, _c_int, _c_void_p]),
    # pause and resume
    "tms_pause": (_c_int, [_c_char_p]),
    "tms_resume": (_c_int, [_c_char_p]),
    "tms_resume_non_blocking": (_c_int, [_c_char_p]),
    "tms_wait_restores": (_c_int, [_c_char_p]),
    "tms_wait_restores_on_stream": (_c_int, [_c_char_p, _c_void_p]),
    "tms_discard_backup": (_c_int, [_c_void_p]),
    # uint8_t* is declared as void* so that ctypes hands back a plain int.
    "tms_lease_cpu_backup": (_c_int, [_c_void_p, _c_uint64, ctypes.POINTER(_c_uint64), ctypes.POINTER(_c_void_p)]),
    "tms_end_cpu_backup_lease": (_c_int, [_c_uint64]),
    "tms_get_cpu_backup_pointer": (_c_void_p, [_c_void_p, _c_uint64]),
    "tms_drain_host_releases": (_c_int, []),
    "tms_trim_host_memory": (_c_int, []),
    # observability
    "tms_stats_json": (_c_int, [_c_char_p, _c_size_t, ctypes.POINTER(_c_size_t)]),
    "tms_device_memory": (_c_int, [_c_int, ctypes.POINTER(_c_uint64), ctypes.POINTER(_c_uint64)]),
    # log lines
    "tms_set_log_callback": (_c_int, [_log.LogCallback]),
    "tms_flush_log": (_c_int, []),
    # testing controls (tms_testing.h)
    "tms_sim_fail_call": (_c_int, [_c_char_p, _c_int, _c_bool]),
    "tms_sim_set_capacity": (_c_int, [_c_uint64]),
    "tms_sim_defer_copies": (_c_int, [_c_bool]),
}

_lock = threading.Lock()
_library: Optional[ctypes.CDLL] = None
_library_path: Optional[Path] = None


def _mapped_copy() -> Optional[Path]:
    """The engine library already mapped into this process (LD_PRELOAD or an earlier load), if any."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            for line in maps:
                fields = line.split(maxsplit=5)
                if len(fields) == 6:
                    path = fields[5].strip()
                    if os.path.basename(path).startswith("libtorch_memory_saver") and ".so" in path:
                        return Path(path)
    except OSError:  # not Linux, or /proc unavailable
        pass
    return None


def packaged_library_path() -> Path:
    """Where the library installed with this package is (whether or not it exists).

    Searches every directory of the package (``__path__``), not only the one
    holding this file: an editable install (``pip install -e .``) keeps the
    modules in the source tree and puts the built library in site-packages,
    and lists both directories there. The first directory that has the
    library wins; without any, the path in the first directory is returned.
    """
    package = sys.modules[__package__]
    directories = [Path(entry) for entry in getattr(package, "__path__", [])]
    directories.append(Path(__file__).resolve().parent)
    for directory in directories:
        candidate = directory / LIBRARY_FILE_NAME
        if candidate.is_file():
            return candidate.resolve()
    return directories[0] / LIBRARY_FILE_NAME


def find_library_path() -> Path:
    """Path of the engine library this process uses (or would use).

    Order: a copy already mapped into the process (so that Python talks to the
    same engine instance as the LD_PRELOAD interposers), then the
    ``TMS_LIBRARY_PATH`` environment variable, then ``libtorch_memory_saver.so``
    installed with this package (:func:`packaged_library_path`).

    Raises:
        LibraryNotFoundError: no library at the chosen path.
        ConfigError: TMS_LIBRARY_PATH names a different file than the copy
            already loaded (two engines in one process would not share state).
    """
    env_path = os.environ.get(LIBRARY_PATH_ENV)
    mapped = _mapped_copy()
    if mapped is not None:
        if env_path and os.path.exists(env_path) and not os.path.samefile(env_path, mapped):
            raise errors.ConfigError(
                f"{LIBRARY_PATH_ENV}={env_path} differs from the torch_memory_saver library "
                f"already loaded in this process ({mapped}, e.g. through LD_PRELOAD). "
                f"Point both at the same file."
            )
        return mapped
    path = Path(env_path) if env_path else packaged_library_path()
    if not path.is_file():
        origin = f"{LIBRARY_PATH_ENV}={env_path}" if env_path else "the package's directories"
        raise errors.LibraryNotFoundError(
            f"torch_memory_saver engine library not found at {path} (from {origin}). "
            f"Install the package with `pip install .`, or build it with "
            f"`cmake -S . -B build && cmake --build build` and set "
            f"{LIBRARY_PATH_ENV}=<repo>/build/{LIBRARY_FILE_NAME}."
        )
    return path


def _declare(lib: ctypes.CDLL) -> None:
    for name, (restype, argtypes) in _SIGNATURES.items():
        function = getattr(lib, name)
        function.restype = restype
        function.argtypes = argtypes


def library() -> ctypes.CDLL:
    """The loaded engine library with every tms.h signature declared (loaded once)."""
    global _library, _library_path
    with _lock:
        if _library is None:
            path = find_library_path()
            try:
                lib = ctypes.CDLL(str(path))
            except OSError as exc:
                raise errors.LibraryNotFoundError(f"cannot load {path}: {exc}") from exc
            try:
                _declare(lib)
            except AttributeError as exc:
                raise errors.LibraryNotFoundError(
                    f"{path} does not export the torch_memory_saver C ABI this package expects ({exc}); "
                    f"rebuild it from the same source tree"
                ) from exc
            _library, _library_path = lib, path
            _log.install(lib)
        return _library


def loaded_path() -> Path:
    """Path of the loaded library (loads it if needed)."""
    library()
    assert _library_path is not None
    return _library_path


def last_error() -> str:
    """Message of the calling thread's last failed engine call."""
    message = library().tms_last_error()
    return message.decode("utf-8", errors="replace") if message else ""


def status_name(status: int) -> str:
    name = library().tms_status_name(status)
    return name.decode() if name else f"tms_status {status}"


def check(status: int) -> None:
    """Raise the typed exception for a failed call's status (call right after it, on the same thread).

    Also delivers the engine's log lines of the call (as records of the
    ``torch_memory_saver`` logger) before returning or raising.
    """
    if status != 0:
        error = errors.error_from_status(status, last_error(), status_name(status))
        _log.flush()  # after reading the message: every call resets it
        raise error
    _log.flush()


def check_last_status() -> None:
    """Raise if the calling thread's last call failed (for functions that return a value, not a status)."""
    check(library().tms_last_status())


def encode(text: str, what: str = "text") -> bytes:
    """`text` as the engine's C string: UTF-8, with no NUL (C would cut the string there).

    Raises:
        InvalidArgumentError: `text` holds a NUL or a lone surrogate (not encodable as UTF-8).
    """
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise errors.InvalidArgumentError(f"{what} must be valid Unicode text, got {text!r} ({exc.reason})") from None
    if b"\0" in raw:
        raise errors.InvalidArgumentError(f"{what} must not contain a NUL character, got {text!r}")
    return raw


def encode_path(path: "os.PathLike[str] | os.PathLike[bytes] | str | bytes", what: str = "path") -> bytes:
    """A str, bytes or os.PathLike path as the engine's C string (os.fsencode), with no NUL.

    Raises:
        InvalidArgumentError: not a path, or it holds a NUL.
    """
    try:
        raw = os.fsencode(path)
    except TypeError:
        raise errors.InvalidArgumentError(
            f"{what} must be a str, bytes or os.PathLike, got {type(path).__name__}"
        ) from None
    if b"\0" in raw:
        raise errors.InvalidArgumentError(f"{what} must not contain a NUL character, got {path!r}")
    return raw


def as_bool(value: object, what: str) -> bool:
    """`value` as a switch: True/False, 0/1 (also numpy's bools and ints), nothing else.

    ``bool(value)`` would turn ``"no"``, ``"false"`` or ``"0"`` into True: a
    setting the caller meant to switch off would silently be on.

    Raises:
        InvalidArgumentError: any other value, named in the message.
    """
    if isinstance(value, bool):
        return value
    kind = type(value)
    if kind.__module__ == "numpy" and kind.__name__ in ("bool_", "bool"):
        return bool(value)
    try:
        number = operator.index(cast(SupportsIndex, value))  # int and numpy ints; float and str raise
    except TypeError:
        number = None
    if number in (0, 1):
        return bool(number)
    raise errors.InvalidArgumentError(f"{what} must be True or False, got {value!r}")


def decode(raw: Optional[bytes]) -> str:
    return raw.decode("utf-8") if raw is not None else ""
