"""Locating the engine library for other processes (LD_PRELOAD)."""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from . import _library
from .errors import InvalidArgumentError

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
        InvalidArgumentError: unknown stem.
        LibraryNotFoundError: the library is not installed or built.
    """
    if stem not in _BINARY_STEMS:
        raise InvalidArgumentError(
            f"unknown torch_memory_saver binary stem {stem!r}; expected one of {_BINARY_STEMS}"
        )
    return _library.find_library_path()


@contextmanager
def configure_subprocess() -> Iterator[None]:
    """Put the engine library first in ``LD_PRELOAD`` for processes started inside the block.

    Entries already in ``LD_PRELOAD`` are kept after it. The variable is put
    back as it was (or removed) on exit. Needed for ``hook_mode="preload"``.
    """
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
