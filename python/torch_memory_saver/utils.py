"""Locating the engine library for other processes (LD_PRELOAD), and small helpers
that code written for the library this one replaces imports from here."""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

from . import _library
from .errors import LibraryNotFoundError

logger = logging.getLogger("torch_memory_saver")

# The peer library shipped one binary per hook mode under these stems and
# integrations (e.g. slime) ask for them by name; here one library serves both.
_BINARY_STEMS = (
    "torch_memory_saver_hook_mode_preload",
    "torch_memory_saver_hook_mode_torch",
)


def get_binary_path_from_package(stem: str) -> Path:
    """Path of the engine library for `stem` (both known stems name the same library).

    Raises:
        LibraryNotFoundError (also a RuntimeError): unknown stem, or the
            library is not installed or built.
    """
    if stem not in _BINARY_STEMS:
        raise LibraryNotFoundError(
            f"no torch_memory_saver library for stem {stem!r}; known stems: {_BINARY_STEMS}"
        )
    return _library.find_library_path()


@contextmanager
def configure_subprocess() -> Iterator[None]:
    """Put the engine library first in ``LD_PRELOAD`` for processes started inside the block.

    Entries already in ``LD_PRELOAD`` are kept after it. The variable is put
    back as it was (or removed) on exit. Needed for ``hook_mode="preload"``.
    When the hook mode selected on ``torch_memory_saver.torch_memory_saver``
    was registered with ``uses_preload=False``, ``LD_PRELOAD`` is left alone.
    """
    from . import hooks
    from .entrypoint import torch_memory_saver

    if not hooks.uses_preload(torch_memory_saver.hook_mode):
        logger.debug("configure_subprocess: hook mode %r does not use LD_PRELOAD", torch_memory_saver.hook_mode)
        yield
        return
    library = str(get_binary_path_from_package("torch_memory_saver_hook_mode_preload"))
    previous = os.environ.get("LD_PRELOAD")
    entries = [e for e in (previous or "").replace(" ", ":").split(":") if e and e != library]
    os.environ["LD_PRELOAD"] = ":".join([library, *entries])
    logger.debug("configure_subprocess: LD_PRELOAD=%s", os.environ["LD_PRELOAD"])
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("LD_PRELOAD", None)
        else:
            os.environ["LD_PRELOAD"] = previous


_SUPPORTED_CUDA_MAJORS = (13, 12)


def _detect_cuda_major() -> int:
    """The CUDA major version the process's torch was built for, else the newest libcudart that loads.

    The library this one replaces picked one of its per-CUDA binaries with
    it; here one library serves every CUDA version (it loads the driver at
    run time), so this only answers callers that ask.

    Raises:
        LibraryNotFoundError (also a RuntimeError): neither tells.
    """
    try:
        import torch
    except ImportError:
        torch = None
    version = getattr(getattr(torch, "version", None), "cuda", None) if torch is not None else None
    if isinstance(version, str) and version:
        try:
            return int(version.split(".", 1)[0])
        except ValueError:
            logger.debug("torch.version.cuda=%r is not a version; probing libcudart", version)
    import ctypes

    for major in _SUPPORTED_CUDA_MAJORS:
        try:
            ctypes.CDLL(f"libcudart.so.{major}")
        except OSError:
            continue
        return major
    raise LibraryNotFoundError(
        "torch_memory_saver: no CUDA version found: torch.version.cuda is unset and no "
        f"libcudart.so.{{{','.join(map(str, _SUPPORTED_CUDA_MAJORS))}}} loads"
    )


@contextmanager
def change_env(key: str, value: str) -> Iterator[None]:
    """Set environment variable `key` to `value` inside the block; put it back (or remove it) after."""
    previous: Optional[str] = os.environ.get(key)
    os.environ[key] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = previous


def is_xpu() -> bool:
    """Whether torch runs on an Intel XPU here. This library serves CUDA only, so its tests use it to skip."""
    try:
        import torch
    except ImportError:
        return False
    xpu = getattr(torch, "xpu", None)
    return bool(xpu is not None and xpu.is_available())
