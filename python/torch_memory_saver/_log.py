"""The engine's log lines as records of the ``torch_memory_saver`` logger.

When the engine library is loaded, a callback is installed with
``tms_set_log_callback``. The engine calls it on its own log thread, one line
at a time and never while it holds a lock (its threads only queue lines), so
taking the GIL there cannot deadlock against a Python thread that holds the
GIL and waits for an engine lock (an allocation through torch's allocator).

A line becomes a record when logging is set up for the logger (it or an
ancestor has a handler, e.g. after ``logging.basicConfig()``, or under
pytest); otherwise the engine writes it to stderr as it does without Python
(``[torch_memory_saver LEVEL rank N] message``), so ``TMS_LOG_LEVEL=info``
shows lines in a program that never configured logging. ``TMS_LOG_LEVEL``
decides which lines the engine makes (default: warnings and errors); the
logger's level and handlers decide which of those are shown.

Records of one Python call are delivered before the call returns
(:func:`flush`, from ``_library.check``); lines of the engine's background
threads arrive shortly after they are logged. At interpreter exit the
callback is removed (lines logged after that go to stderr), and a ``fork()``ed
child installs it again (the engine starts a child without it).
"""

from __future__ import annotations

import atexit
import ctypes
import logging
import os
from typing import Optional

logger = logging.getLogger("torch_memory_saver")

# tms.h's tms_log_level -> logging's levels.
LEVELS = {0: logging.ERROR, 1: logging.WARNING, 2: logging.INFO, 3: logging.DEBUG}

# tms.h's tms_log_callback: int (*)(int level, const char* message).
LogCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_char_p)


def _emit(level: int, message: Optional[bytes]) -> int:
    """The callback: 1 when the line became a record, 0 to have the engine write it to stderr."""
    try:
        if not logger.hasHandlers():
            return 0
        text = message.decode("utf-8", errors="replace") if message else ""
        logger.log(LEVELS.get(level, logging.ERROR), text)
        return 1
    except Exception:  # noqa: BLE001 - a failing handler must not lose the line: stderr takes it
        return 0


# Kept for the life of the process: the engine holds the address of its code.
_CALLBACK = LogCallback(_emit)
_library: Optional[ctypes.CDLL] = None


def install(lib: ctypes.CDLL) -> None:
    """Send the engine's lines of `lib` to the logger (at library load; again in a fork()ed child)."""
    global _library
    if lib.tms_set_log_callback(_CALLBACK) != 0:
        message = lib.tms_last_error()
        logger.warning(
            "torch_memory_saver engine log lines stay on stderr: %s",
            message.decode("utf-8", errors="replace") if message else "unknown error",
        )
        return
    if _library is None:
        atexit.register(_uninstall)
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=_install_in_child)
    _library = lib


def installed() -> bool:
    return _library is not None


def flush() -> None:
    """Return once every line the engine logged so far has been handed to the logger (or stderr)."""
    if _library is not None:
        _library.tms_flush_log()


def _install_in_child() -> None:
    if _library is not None:
        install(_library)


def _uninstall() -> None:
    """At exit: deliver what is queued, then back to stderr before the interpreter goes away."""
    global _library
    lib, _library = _library, None
    if lib is not None:
        lib.tms_flush_log()
        lib.tms_set_log_callback(LogCallback())  # NULL: stderr again
