"""CUDA graph captures under way through ``cuda_graph()``, per thread.

A pause or resume on one thread while another thread captures would
synchronize the device and map or unmap memory in the middle of that
capture, which invalidates it. The driver reports only captures on blocking
streams (the engine asks it); torch captures on non-blocking streams, so the
captures this library starts itself are counted here, and pause/resume on
another thread refuse while any is under way.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Dict, Iterator

_lock = threading.Lock()
_depth_by_thread: Dict[int, int] = {}


@contextmanager
def capturing() -> Iterator[None]:
    """Count the calling thread as capturing for the block."""
    me = threading.get_ident()
    with _lock:
        _depth_by_thread[me] = _depth_by_thread.get(me, 0) + 1
    try:
        yield
    finally:
        with _lock:
            _depth_by_thread[me] -= 1
            if not _depth_by_thread[me]:
                del _depth_by_thread[me]


def on_other_threads() -> bool:
    """Whether a thread other than the caller is inside :func:`capturing`."""
    me = threading.get_ident()
    with _lock:
        return any(thread != me for thread in _depth_by_thread)
