"""``BinaryWrapper``: the engine library as a ``ctypes.CDLL``, for code that calls its C functions directly.

Some integrations reach the library through
``torch_memory_saver.torch_memory_saver._impl._binary_wrapper.cdll``, for
example to switch the calling thread's region off around a third-party
allocation (``cdll.tms_set_interesting_region(False)``). ``cdll`` is the
library the package itself uses, with every function of ``tms.h`` declared,
so such calls act on the same per-thread state as :meth:`TorchMemorySaver.region`.
"""

from __future__ import annotations

import ctypes
import os
from typing import Optional, Union

from . import _library, _policy
from ._library import as_bool, check, encode
from ._policy import BackupPolicy
from .errors import ConfigError

__all__ = ["BinaryWrapper"]


class BinaryWrapper:
    """The process's engine library (``cdll``) and a helper to set the calling thread's region."""

    def __init__(self, path_binary: Optional[Union[str, "os.PathLike[str]"]] = None) -> None:
        """`path_binary`, when given, must name the library this process uses: one process has one engine.

        Raises:
            ConfigError: `path_binary` is another file than the loaded library.
            LibraryNotFoundError: the library cannot be found or loaded.
        """
        self.cdll: ctypes.CDLL = _library.library()
        if path_binary is not None:
            loaded = _library.loaded_path()
            if not os.path.exists(path_binary) or not os.path.samefile(path_binary, loaded):
                raise ConfigError(
                    f"BinaryWrapper({os.fspath(path_binary)!r}): this process uses the "
                    f"torch_memory_saver library {loaded}; a second copy would be a second engine"
                )

    def set_config(
        self,
        *,
        tag: str,
        interesting_region: bool,
        enable_cpu_backup: bool,
        enable_disk_backup: bool = False,
        cpu_backup_backend: Optional[str] = None,
    ) -> None:
        """Set the calling thread's region settings in the engine (raises on a rejected value).

        Raises:
            InvalidArgumentError: a switch is not True/False (or 0/1), a bad tag or backend
                name, or CPU and disk backup together.
        """
        # Checked before anything is set, so a rejected value changes nothing.
        policy = BackupPolicy.from_region(
            enable_cpu_backup=enable_cpu_backup,
            enable_disk_backup=enable_disk_backup,
            cpu_backup_backend=cpu_backup_backend,
            inherited=_policy.current(),
        )
        interesting = as_bool(interesting_region, "interesting_region")
        check(self.cdll.tms_set_current_tag(encode(tag, "tag")))
        _policy.apply(policy)
        check(self.cdll.tms_set_interesting_region(interesting))
