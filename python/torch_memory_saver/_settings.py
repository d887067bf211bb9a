"""The calling thread's region settings in the engine, saved and restored around a block.

The engine keeps these per thread (tms.h): whether the thread's allocations
go to the engine ("interesting"), their tag and their backup policy. Regions
nest, so every change is undone on exit, even when the block raises.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Optional

from . import _library
from ._library import check, decode, encode


@dataclass(frozen=True)
class ThreadSettings:
    """Snapshot of one thread's region settings."""

    interesting: bool
    tag: str
    cpu_backup: bool
    cpu_backup_backend: str
    disk_backup: bool
    compress: bool = False


def read() -> ThreadSettings:
    """The calling thread's current settings."""
    lib = _library.library()
    return ThreadSettings(
        interesting=bool(lib.tms_get_interesting_region()),
        tag=decode(lib.tms_get_current_tag()),
        cpu_backup=bool(lib.tms_get_enable_cpu_backup()),
        cpu_backup_backend=decode(lib.tms_get_cpu_backup_backend()),
        disk_backup=bool(lib.tms_get_enable_disk_backup()),
        compress=bool(lib.tms_get_cpu_backup_compress()),
    )


def _apply(
    *,
    interesting: Optional[bool] = None,
    tag: Optional[str] = None,
    cpu_backup: Optional[bool] = None,
    cpu_backup_backend: Optional[str] = None,
    disk_backup: Optional[bool] = None,
    compress: Optional[bool] = None,
) -> None:
    """Set the given settings (None = leave as is); raises on the first rejected one."""
    lib = _library.library()
    if tag is not None:
        check(lib.tms_set_current_tag(encode(tag, "tag")))
    if cpu_backup is not None:
        check(lib.tms_set_enable_cpu_backup(cpu_backup))
    if cpu_backup_backend is not None:
        check(lib.tms_set_cpu_backup_backend(encode(cpu_backup_backend, "cpu_backup_backend")))
    if disk_backup is not None:
        check(lib.tms_set_enable_disk_backup(disk_backup))
    if compress is not None:
        check(lib.tms_set_cpu_backup_compress(compress))
    if interesting is not None:
        check(lib.tms_set_interesting_region(interesting))


def _restore(saved: ThreadSettings) -> None:
    _apply(
        interesting=saved.interesting,
        tag=saved.tag,
        cpu_backup=saved.cpu_backup,
        cpu_backup_backend=saved.cpu_backup_backend,
        disk_backup=saved.disk_backup,
        compress=saved.compress,
    )


@contextmanager
def changed(
    *,
    interesting: Optional[bool] = None,
    tag: Optional[str] = None,
    cpu_backup: Optional[bool] = None,
    cpu_backup_backend: Optional[str] = None,
    disk_backup: Optional[bool] = None,
    compress: Optional[bool] = None,
) -> Iterator[ThreadSettings]:
    """Change the calling thread's settings for the block; yields the settings in effect.

    Arguments left as None keep the thread's current value. If a setting is
    rejected, the ones already changed are put back before the error propagates.
    """
    saved = read()
    try:
        _apply(
            interesting=interesting,
            tag=tag,
            cpu_backup=cpu_backup,
            cpu_backup_backend=cpu_backup_backend,
            disk_backup=disk_backup,
            compress=compress,
        )
        yield read()
    finally:
        _restore(saved)
