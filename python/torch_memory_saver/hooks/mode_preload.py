"""Hook mode "preload" under the names of the library this one replaces."""

from __future__ import annotations

import os

from .. import _library
from ..errors import ConfigError
from ..utils import configure_subprocess
from . import is_preloaded
from .base import HookUtilBase

__all__ = ["HookUtilModePreload", "configure_subprocess"]


class HookUtilModePreload(HookUtilBase):
    """Preload mode: the engine comes in through ``LD_PRELOAD``; pools use torch's default allocator."""

    def get_path_binary(self) -> str:
        """The preloaded engine library of this process.

        Raises:
            ConfigError (also a RuntimeError): the process was not started with
                the library in ``LD_PRELOAD``.
        """
        if not is_preloaded():
            raise ConfigError(
                "torch_memory_saver hook_mode='preload' needs the process to be started with the "
                "library in LD_PRELOAD (use configure_subprocess() to start it). "
                f"(LD_PRELOAD={os.environ.get('LD_PRELOAD', '')!r}, pid={os.getpid()})"
            )
        return str(_library.loaded_path())
