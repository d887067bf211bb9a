"""The calling thread's region settings in the engine, saved and restored around a block.

The engine keeps these per thread (tms.h): whether the thread's allocations
go to the engine ("interesting"), their tag and their backup policy. Regions
nest, so every change is undone on exit, even when the block raises.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Optional

from . import _library, _policy
from ._library import check, decode, encode
from ._policy import BackupPolicy


@dataclass(frozen=True)
class ThreadSettings:
    """Snapshot of one thread's region settings."""

    interesting: bool
    tag: str
    policy: BackupPolicy = BackupPolicy()


def read() -> ThreadSettings:
    """The calling thread's current settings."""
    lib = _library.library()
    return ThreadSettings(
        interesting=bool(lib.tms_get_interesting_region()),
        tag=decode(lib.tms_get_current_tag()),
        policy=_policy.current(),
    )


def _apply(
    *, interesting: Optional[bool] = None, tag: Optional[str] = None, policy: Optional[BackupPolicy] = None
) -> None:
    """Set the given settings (None = leave as is); raises on the first rejected one."""
    lib = _library.library()
    if tag is not None:
        check(lib.tms_set_current_tag(encode(tag, "tag")))
    if policy is not None:
        _policy.apply(policy)
    if interesting is not None:
        check(lib.tms_set_interesting_region(interesting))


def _restore(saved: ThreadSettings) -> None:
    """Put back settings read earlier with :func:`read`."""
    _apply(interesting=saved.interesting, tag=saved.tag, policy=saved.policy)


@contextmanager
def changed(
    *, interesting: Optional[bool] = None, tag: Optional[str] = None, policy: Optional[BackupPolicy] = None
) -> Iterator[ThreadSettings]:
    """Change the calling thread's settings for the block; yields the settings in effect.

    Arguments left as None keep the thread's current value. If a setting is
    rejected, the ones already changed are put back before the error propagates.
    """
    saved = read()
    try:
        _apply(interesting=interesting, tag=tag, policy=policy)
        yield ThreadSettings(
            interesting=saved.interesting if interesting is None else interesting,
            tag=saved.tag if tag is None else tag,
            policy=saved.policy if policy is None else policy,
        )
    finally:
        _restore(saved)
