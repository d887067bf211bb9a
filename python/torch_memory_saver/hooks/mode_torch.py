"""Hook mode "torch" under the names of the library this one replaces."""

from __future__ import annotations

from typing import Any

from .. import _library
from . import pluggable_allocator
from .base import HookUtilBase

__all__ = ["HookUtilModeTorch"]


class HookUtilModeTorch(HookUtilBase):
    """Torch mode: region pools allocate through a ``CUDAPluggableAllocator`` of the engine."""

    def __init__(self) -> None:
        # The process-wide allocator: every pool of the package uses the same one.
        self.allocator = pluggable_allocator()

    def get_path_binary(self) -> str:
        return str(_library.loaded_path())

    def get_allocator(self) -> Any:
        return self.allocator.allocator()
