"""Hook modes: how torch's allocations inside a region reach the engine.

The submodules ``base``, ``mode_preload`` and ``mode_torch`` keep the module
layout of the library this one replaces (``HookUtilBase`` and friends), for
code that imports them; the objects the package itself uses live here.

``preload``: the process starts with the engine library in ``LD_PRELOAD``; its
``cudaMalloc``/``cudaFree`` interposers hand allocations of threads inside a
region to the engine. Regions still allocate through a MemPool of torch's
default allocator per (tag, backup policy, device), so cached blocks never
move between tags or back to non-region code.

``torch``: no preload; regions allocate through a MemPool built on a
``CUDAPluggableAllocator`` of the engine's ``tms_torch_malloc``/``tms_torch_free``.

Other names can be registered with :func:`register_hook_mode`: a factory that
builds the object ``TorchMemorySaver`` then sends ``region``, ``cuda_graph``,
``disable``, ``pause``, ``resume`` and ``get_cpu_backup`` to (its ``_impl``).
"""

from __future__ import annotations

import ctypes
import os
import threading
from dataclasses import dataclass
from typing import Any, Callable, Dict, Literal, Mapping, Optional

from .. import _library
from .._pools import keep_forever, new_default_pool
from .._torch import require_torch
from ..errors import ConfigError, InvalidArgumentError, InvalidStateError

HookMode = Literal["preload", "torch"]
HOOK_MODES = ("preload", "torch")

# torch reads its allocator settings from either name (PYTORCH_ALLOC_CONF is the newer one).
_ALLOC_CONF_VARS = ("PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF")


def is_preloaded() -> bool:
    """Whether ``cudaMalloc`` in this process resolves to the engine's interposer.

    True exactly when the library was in ``LD_PRELOAD`` at process start: a
    copy loaded later with ctypes is not in the global symbol scope.
    """
    lib = _library.library()
    try:
        process_symbol = ctypes.CDLL(None).cudaMalloc
        engine_symbol = lib.cudaMalloc
    except AttributeError:  # no cudaMalloc in the process at all, or none in the engine
        return False
    address = ctypes.cast(process_symbol, ctypes.c_void_p).value
    return address is not None and address == ctypes.cast(engine_symbol, ctypes.c_void_p).value


def expandable_segments_requested(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether torch's allocator settings in `environ` turn on expandable segments."""
    for var in _ALLOC_CONF_VARS:
        for item in environ.get(var, "").split(","):
            key, _, value = item.partition(":")
            if key.strip() == "expandable_segments" and value.strip().lower() == "true":
                return True
    return False


class PreloadHooks:
    """Hook mode "preload" (see module doc)."""

    mode: HookMode = "preload"
    # A graph pool the caller passes is fed by cudaMalloc, which the
    # interposer sends to the engine: it is pauseable as it is.
    accepts_any_graph_pool = True

    def validate(self) -> None:
        """Raise ConfigError unless this process can use preload mode."""
        if expandable_segments_requested():
            raise ConfigError(
                "torch_memory_saver hook_mode='preload' cannot work with expandable_segments:True "
                "in PYTORCH_CUDA_ALLOC_CONF: expandable segments map memory with cuMemMap and never "
                "call cudaMalloc, so the preloaded hooks never see region allocations. Remove "
                "expandable_segments:True, or set torch_memory_saver.hook_mode = 'torch' before the "
                "first region()."
            )
        if not is_preloaded():
            path = _library.loaded_path()
            raise ConfigError(
                "torch_memory_saver hook_mode='preload' needs the process to be started with the "
                f"library in LD_PRELOAD. Start it as `LD_PRELOAD={path} python ...`, or spawn it "
                "inside `with torch_memory_saver.configure_subprocess():`, or set "
                "torch_memory_saver.hook_mode = 'torch' before the first region(). "
                f"(LD_PRELOAD={os.environ.get('LD_PRELOAD', '')!r}, pid={os.getpid()})"
            )

    def new_pool(self, device: int) -> Any:
        return new_default_pool(device)


class TorchHooks:
    """Hook mode "torch" (see module doc)."""

    mode: HookMode = "torch"
    # Only pools on the engine's allocator make graph memory pauseable.
    accepts_any_graph_pool = False

    def validate(self) -> None:
        """Nothing to check: a MemPool on a pluggable allocator gets every region
        allocation even with expandable segments on (seen on torch 2.11)."""

    def new_pool(self, device: int) -> Any:
        torch = require_torch("region()")
        with torch.cuda.device(device):
            return torch.cuda.MemPool(pluggable_allocator().allocator())


_allocator_lock = threading.Lock()
_allocator: Optional[Any] = None


def pluggable_allocator() -> Any:
    """The process's one ``CUDAPluggableAllocator`` over the engine (made on first use).

    Pools keep a raw pointer to it, so it lives as long as the process.
    """
    global _allocator
    with _allocator_lock:
        if _allocator is None:
            torch = require_torch("hook_mode='torch'")
            _allocator = keep_forever(
                torch.cuda.memory.CUDAPluggableAllocator(
                    str(_library.loaded_path()), "tms_torch_malloc", "tms_torch_free"
                )
            )
        return _allocator


@dataclass(frozen=True)
class Registration:
    """A hook mode registered with :func:`register_hook_mode`."""

    factory: Callable[[], Any]
    uses_preload: bool


_registry_lock = threading.Lock()
_registry: Dict[str, Registration] = {}


def register_hook_mode(name: str, factory: Callable[[], Any], *, uses_preload: bool = True) -> None:
    """Make `name` a hook mode whose implementation `factory()` builds.

    Select it with ``torch_memory_saver.hook_mode = name`` before first use.
    The first ``region()``, ``cuda_graph()`` or ``disable()`` (or
    ``_ensure_initialized()``) calls ``factory()`` once, with no arguments, and
    keeps what it returns as ``torch_memory_saver._impl``; from then on
    ``region``, ``cuda_graph``, ``disable``, ``pause``, ``resume`` and
    ``get_cpu_backup`` are sent to it, with the arguments of the library this
    one replaces (``region(tag=, enable_cpu_backup=)``, ``pause(tag=)``...;
    this library's other arguments only when the caller passes them).
    ``uses_preload`` says whether processes of this mode need the engine in
    ``LD_PRELOAD``: ``configure_subprocess()`` leaves ``LD_PRELOAD`` alone
    when the selected mode's is False.

    Registrations belong to the process: a process started with ``spawn``
    registers again before its first use.

    Raises:
        InvalidArgumentError: `name` is not a non-empty str, is "preload" or
            "torch", `factory` is not callable, or `uses_preload` is not a bool.
        InvalidStateError: `name` is already registered with another factory
            or flag (registering the same pair again changes nothing).
    """
    if not isinstance(name, str) or not name:
        raise InvalidArgumentError(f"hook mode name must be a non-empty str, got {name!r}")
    if name in HOOK_MODES:
        raise InvalidArgumentError(f"hook mode {name!r} is built in and cannot be registered")
    if not callable(factory):
        raise InvalidArgumentError(f"register_hook_mode({name!r}): factory must be callable, got {factory!r}")
    if not isinstance(uses_preload, bool):
        raise InvalidArgumentError(f"register_hook_mode({name!r}): uses_preload must be True or False")
    entry = Registration(factory, uses_preload)
    with _registry_lock:
        existing = _registry.get(name)
        if existing is not None and existing != entry:
            raise InvalidStateError(f"hook mode {name!r} is already registered (with {existing.factory!r})")
        _registry[name] = entry


def registration(mode: str) -> Optional[Registration]:
    """What :func:`register_hook_mode` registered for `mode`, or None."""
    with _registry_lock:
        return _registry.get(mode)


def uses_preload(mode: str) -> bool:
    """Whether processes of `mode` need the engine in ``LD_PRELOAD`` (built-in and unknown modes: True)."""
    entry = registration(mode)
    return True if entry is None else entry.uses_preload


def create(mode: str) -> Any:
    """The hooks object for `mode` ("preload" or "torch")."""
    if mode == "preload":
        return PreloadHooks()
    if mode == "torch":
        return TorchHooks()
    raise InvalidArgumentError(f"hook_mode must be one of {HOOK_MODES}, got {mode!r}")
