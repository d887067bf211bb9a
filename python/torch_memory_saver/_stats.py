"""The engine's statistics (tms_stats_json) as Python objects."""

from __future__ import annotations

import ctypes
import json
from dataclasses import dataclass, fields
from typing import Any, Dict, List

from . import _library
from .errors import InternalError


@dataclass(frozen=True)
class TagStats:
    """Statistics of one (tag, device) pair, as the engine reports them.

    ``broken_bytes``: allocations a failed pause could not map back (see
    docs/guarantees.md); later calls map them back, freeing them gives their
    memory back.
    """

    tag: str
    device: int
    allocations: int
    active_bytes: int
    paused_bytes: int
    broken_bytes: int
    backup_bytes: int
    disk_backup_bytes: int
    pause_count: int
    resume_count: int
    last_pause_seconds: float
    last_resume_seconds: float
    last_pause_unix: float
    last_resume_unix: float


def stats_json() -> Dict[str, Any]:
    """The engine's statistics document, parsed (``{"driver": ..., "entries": [...]}``)."""
    lib = _library.library()
    capacity = 4096
    while True:
        buffer = ctypes.create_string_buffer(capacity)
        required = ctypes.c_size_t(0)
        status = lib.tms_stats_json(buffer, capacity, ctypes.byref(required))
        if required.value > capacity and _library.status_name(status) == "TMS_ERROR_INVALID_ARGUMENT":
            capacity = required.value  # the document grew; ask again with its size
            continue
        _library.check(status)
        return json.loads(buffer.value.decode("utf-8"))


def stats() -> List[TagStats]:
    """Per-(tag, device) statistics of every allocation the engine knows about."""
    entries = stats_json().get("entries", [])
    names = [f.name for f in fields(TagStats)]
    try:
        return [TagStats(**{name: entry[name] for name in names}) for entry in entries]
    except KeyError as exc:
        raise InternalError(f"engine statistics lack the field {exc}: {entries!r}") from exc
