"""``HookUtilBase`` and ``HookMode``, where code written for the library this one replaces imports them.

A hook utility answers two questions for one hook mode: which library file
serves it (``get_path_binary``) and which torch allocator region pools use
(``get_allocator``; None for torch's own). The package itself works with
the objects in :mod:`torch_memory_saver.hooks`; these are thin views of them.
"""

from __future__ import annotations

from typing import Any, Optional

from ..errors import InvalidArgumentError
from . import HOOK_MODES, HookMode

__all__ = ["HookMode", "HookUtilBase"]


class HookUtilBase:
    """The library file and allocator of one hook mode."""

    @staticmethod
    def create(hook_mode: HookMode = "preload") -> "HookUtilBase":
        """The utility of `hook_mode` ("preload" or "torch")."""
        if hook_mode == "preload":
            from .mode_preload import HookUtilModePreload

            return HookUtilModePreload()
        if hook_mode == "torch":
            from .mode_torch import HookUtilModeTorch

            return HookUtilModeTorch()
        raise InvalidArgumentError(f"hook_mode must be one of {HOOK_MODES}, got {hook_mode!r}")

    def get_path_binary(self) -> str:
        raise NotImplementedError

    def get_allocator(self) -> Optional[Any]:
        """The torch allocator region pools are built on; None: torch's default allocator."""
        return None
