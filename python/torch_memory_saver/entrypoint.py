"""TorchMemorySaver: the drop-in Python API over the engine, and its process-wide singleton."""

from __future__ import annotations

import ctypes
import logging
import operator
import os
import sys
import threading
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional, Union

from . import _captures, _library, _nccl, _policy, _settings, hooks
from ._backup import get_cpu_backup
from ._library import as_bool, check, encode, encode_path
from ._policy import BackupPolicy
from ._pools import GRAPH, REGION, PoolCache, PoolKey, PoolRouter, release_unused_scratch_memory, scratch_pool
from ._stats import TagStats, stats
from ._torch import require_routing_torch, require_torch
from .binary_wrapper import BinaryWrapper
from .errors import ConfigError, InvalidArgumentError, InvalidStateError, TorchMemorySaverError
from .hooks import register_hook_mode  # noqa: F401 - also importable from here

logger = logging.getLogger("torch_memory_saver")

_TAG_DEFAULT = "default"


def _check_tag(tag: Any) -> str:
    if not isinstance(tag, str) or not tag:
        raise InvalidArgumentError(f"tag must be a non-empty str, got {tag!r}")
    encode(tag, "tag")  # no NUL, no lone surrogate: what the engine gets is the whole tag
    return tag


def _transition_tag(tag: Any) -> Optional[str]:
    """pause()/resume()'s tag: None or "" means every tag (as in the library this one replaces)."""
    if tag is None or (isinstance(tag, str) and tag == ""):
        return None
    return _check_tag(tag)


def _present(**arguments: Any) -> dict:
    """The arguments this library adds to the replaced library's methods, where the caller gave them.

    An implementation registered with ``register_hook_mode`` or put in
    ``_impl`` by a patch is called exactly as the replaced library called its
    own, unless the caller asked for more.
    """
    return {name: value for name, value in arguments.items() if value is not None and value is not False}


class TorchMemorySaver:
    """Makes GPU memory of chosen tensors releasable and restorable at the same addresses.

    Tensors created inside :meth:`region` (and graphs captured with
    :meth:`cuda_graph`) can be paused, which hands their physical memory back
    to the driver, and resumed, which maps fresh memory under the same
    pointers (contents restored when the region asked for a backup).

    Use the module-level singleton ``torch_memory_saver.torch_memory_saver``:
    the engine is process-wide, so several instances would share it.

    The work is done by :attr:`_impl`, built at first use from
    :attr:`_impl_ctor_kwargs` (see :meth:`_ensure_initialized`); integrations
    may replace either, as they did with the library this one replaces.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        # What the implementation is built from; removed once it is built (as
        # in the library this one replaces, whose integrations test for it).
        self._impl_ctor_kwargs: Dict[str, Any] = {}
        # The implementation, built by _ensure_initialized(); assignable.
        self._impl: Optional[Any] = None
        self._hook_mode: str = "preload"  # the mode last selected, then the one _impl was built for

    # ---- hook mode and setup ------------------------------------------------

    @property
    def hook_mode(self) -> str:
        """How region allocations reach the engine: ``"preload"`` (default), ``"torch"``, or a registered name.

        Set it before the first :meth:`region`, :meth:`cuda_graph` or
        :meth:`disable`; changing it afterwards raises InvalidStateError.
        A name that is neither built in nor registered with
        :func:`~torch_memory_saver.register_hook_mode` is kept (a patched
        :meth:`_ensure_initialized` may handle it) and refused at first use.
        """
        kwargs = getattr(self, "_impl_ctor_kwargs", None)
        if kwargs is not None and self._impl is None:
            return str(kwargs.get("hook_mode", "preload"))
        return self._hook_mode

    @hook_mode.setter
    def hook_mode(self, mode: str) -> None:
        if not isinstance(mode, str) or not mode:
            raise InvalidArgumentError(
                f"hook_mode must be a non-empty str (one of {hooks.HOOK_MODES} or a registered name), got {mode!r}"
            )
        with self._lock:
            kwargs = getattr(self, "_impl_ctor_kwargs", None)
            if self._impl is not None or kwargs is None:
                if mode == self.hook_mode:
                    return
                raise InvalidStateError(
                    f"hook_mode is already {self.hook_mode!r} and in use; set it before the first "
                    f"region(), cuda_graph() or disable()"
                )
            kwargs["hook_mode"] = mode
            self._hook_mode = mode

    @property
    def enabled(self) -> bool:
        """Whether :meth:`region` can work in this process with the current hook mode.

        True when the engine library loads and, in preload mode, the process
        was started with it in LD_PRELOAD (without expandable segments); True
        for a registered hook mode (its implementation is not built to check).
        Checking does not initialise CUDA.
        """
        if self._impl is not None:
            return True
        mode = self.hook_mode
        if hooks.registration(mode) is not None:
            return True
        try:
            hooks.create(mode).validate()
        except TorchMemorySaverError:
            return False
        return True

    def _ensure_initialized(self) -> None:
        """Build :attr:`_impl` now, if there is none (what the first :meth:`region` does).

        The hook mode in :attr:`_impl_ctor_kwargs` picks it: a mode registered
        with :func:`~torch_memory_saver.register_hook_mode` is built by its
        factory; ``"preload"`` and ``"torch"`` by
        ``_TorchMemorySaverImpl(**_impl_ctor_kwargs)``, which loads the engine
        and checks that the mode can work in this process. Then
        :attr:`_impl_ctor_kwargs` is removed and :attr:`hook_mode` is fixed.
        A failure leaves both as they were.

        Raises:
            ConfigError: the hook mode is not built in and not registered in
                this process, or it cannot work here (e.g. preload mode
                without the library in ``LD_PRELOAD``), or a ``TMS_*``
                environment variable has a bad value.
            InvalidStateError: used in a ``fork()``ed child of a process that
                had used the library.
        """
        if self._impl is not None:
            return
        with self._lock:
            if self._impl is not None:
                return
            kwargs = dict(getattr(self, "_impl_ctor_kwargs", None) or {})
            mode = str(kwargs.get("hook_mode", "preload"))
            registered = hooks.registration(mode)
            if registered is not None:
                impl = registered.factory()
            elif mode in hooks.HOOK_MODES:
                impl = _TorchMemorySaverImpl(**kwargs)
            else:
                raise ConfigError(
                    f"torch_memory_saver hook_mode={mode!r} is neither built in {hooks.HOOK_MODES} nor "
                    f"registered in this process (pid={os.getpid()}): call "
                    f"torch_memory_saver.register_hook_mode({mode!r}, factory) in this process before the "
                    f"first region(), e.g. again in a process started with spawn"
                )
            self._hook_mode = mode
            self._impl = impl
            if hasattr(self, "_impl_ctor_kwargs"):
                del self._impl_ctor_kwargs
            logger.debug("hook_mode=%s, implementation %s", mode, type(impl).__name__)

    def _active_hooks(self) -> Any:
        """Initialise (:meth:`_ensure_initialized`), then check the engine can work in this process.

        What :meth:`region`, :meth:`cuda_graph` and :meth:`disable` of the
        built-in modes do first: a bad ``TMS_*`` environment value (ConfigError
        naming the variable) or use in a ``fork()``ed child of a process that
        used the library (InvalidStateError) is reported at region entry,
        rather than as an allocation failure inside the block.
        """
        self._ensure_initialized()
        impl = self._impl
        if isinstance(impl, _TorchMemorySaverImpl):
            impl._check_engine()
            return impl._hooks
        return impl

    def _initialized_for_call(self) -> Optional[Any]:
        """:attr:`_impl` for pause/resume/get_cpu_backup, built first where only it can serve them.

        The built-in modes pause and resume through the engine without being
        set up (no LD_PRELOAD check), as before; a registered or unknown mode,
        or a patched :meth:`_ensure_initialized`, gets the call it expects.
        """
        if self._impl is None:
            patched = getattr(type(self), "_ensure_initialized", None) is not TorchMemorySaver._ensure_initialized
            if patched or self.hook_mode not in hooks.HOOK_MODES:
                self._ensure_initialized()
        return self._impl

    def _initialized_impl(self) -> Any:
        """:attr:`_impl` after :meth:`_ensure_initialized` (which a patch may replace) set it."""
        self._ensure_initialized()
        if self._impl is None:
            raise InvalidStateError("_ensure_initialized() left no implementation in _impl")
        return self._impl

    # ---- regions --------------------------------------------------------------

    @contextmanager
    def region(
        self,
        tag: str = _TAG_DEFAULT,
        enable_cpu_backup: bool = False,
        enable_disk_backup: bool = False,
        cpu_backup_backend: Optional[str] = None,
        compress: bool = False,
    ) -> Iterator[None]:
        """Make CUDA tensors allocated by this thread inside the block pauseable under `tag`.

        Args:
            tag: name used by :meth:`pause`/:meth:`resume` to select memory.
            enable_cpu_backup: copy contents to host memory on pause and
                restore them on resume; otherwise resumed memory is undefined.
            enable_disk_backup: write contents to a file on pause and read
                them back on resume (not together with `enable_cpu_backup`:
                a paused tensor keeps one backup).
                The directory comes from :meth:`set_disk_backup_dir` or
                ``TMS_DISK_BACKUP_DIR``, else ``$TMPDIR``, else ``/tmp``.
            cpu_backup_backend: host memory for backups, ``"pinned"`` or
                ``"mmap"``; None keeps the thread's current one
                (``TMS_INIT_CPU_BACKUP_BACKEND``, default pinned).
            compress: keep the CPU backup compressed (lossless, on the GPU):
                bf16/fp16 weights take ~0.7 of their size in host memory;
                KV cache and random data gain nothing. Needs
                `enable_cpu_backup`; such backups are never retained and
                :meth:`get_cpu_backup` cannot read them (docs/compression.md).

        Regions nest; the inner one's settings apply inside it and the outer
        one's are back on exit. Allocations go to a pool of (tag, backup
        policy, device) for the device current at entry, so cached blocks never
        cross tags; for tensors on several devices, enter one region per device
        (``with torch.cuda.device(d), torch_memory_saver.region(tag): ...``).

        Settings are per thread: only the thread that entered the region
        allocates into it. Other threads, including threads started inside
        the block, keep their own settings (a new thread starts with the
        ``TMS_INIT_*`` defaults), so their tensors are not paused with the
        region's tag; a worker thread that should allocate pauseable memory
        enters its own ``region()``. Exit the block on the thread that entered it.

        Raises:
            TorchNotAvailableError: torch is not installed.
            ConfigError: the hook mode cannot work in this process, or a
                ``TMS_*`` environment variable has a bad value (named in the message).
            InvalidStateError: used in a ``fork()``ed child of a process that
                had already used the library.
            InvalidArgumentError: an unknown backend name, a switch that is
                not True/False, or a combination that means nothing: CPU and
                disk backup together, `compress` or `cpu_backup_backend`
                without `enable_cpu_backup`.
        """
        _check_tag(tag)
        BackupPolicy.from_region(  # refuses bad arguments before anything is set up
            enable_cpu_backup=enable_cpu_backup,
            enable_disk_backup=enable_disk_backup,
            cpu_backup_backend=cpu_backup_backend,
            compress=compress,
            inherited=_policy.current(),
        )
        require_torch("region()")
        with self._initialized_impl().region(
            tag=tag,
            enable_cpu_backup=enable_cpu_backup,
            **_present(enable_disk_backup=enable_disk_backup, cpu_backup_backend=cpu_backup_backend, compress=compress),
        ):
            yield

    @contextmanager
    def cuda_graph(
        self,
        cuda_graph: Any,
        pool: Optional[Any] = None,
        stream: Optional[Any] = None,
        capture_error_mode: str = "global",
        tag: str = _TAG_DEFAULT,
        enable_cpu_backup: bool = False,
        cpu_backup_backend: Optional[str] = None,
    ) -> Iterator[None]:
        """Capture `cuda_graph` like ``torch.cuda.graph`` with its private memory pauseable under `tag`.

        Arguments are those of ``torch.cuda.graph``, plus `tag`,
        `enable_cpu_backup` and `cpu_backup_backend` as for :meth:`region`
        (the tag defaults to ``"default"``, as in the library this one
        replaces; pass e.g. ``tag="cuda_graph"`` to pause graphs on their own).
        Graphs captured here with
        the same tag and backup policy on a device share one private pool (as
        if one pool handle were passed to each capture), so replay them in
        capture order, not concurrently, as with any shared pool.

        `pool` is used as given in preload mode (its cudaMalloc calls reach the
        engine). In torch mode only pools on the engine's allocator are
        pauseable, so a `pool` that is not one of this library's graph pools
        (e.g. ``torch.cuda.graph_pool_handle()``) is replaced by the shared
        pool of the tag; ``graph.pool()`` of a graph captured here is honoured.
        After the graph's tag is resumed, replay recomputes its intermediates.

        Warns (NcclGraphRegistrationWarning) when torch.distributed uses NCCL and
        NCCL_GRAPH_REGISTER is not 0: NCCL may keep registrations of captured
        buffers that pause() gives new physical memory (docs/distributed.md).
        """
        _check_tag(tag)
        BackupPolicy.from_region(
            enable_cpu_backup=enable_cpu_backup, cpu_backup_backend=cpu_backup_backend, inherited=_policy.current()
        )
        require_torch("cuda_graph()")
        with self._initialized_impl().cuda_graph(
            cuda_graph=cuda_graph,
            pool=pool,
            stream=stream,
            capture_error_mode=capture_error_mode,
            tag=tag,
            enable_cpu_backup=enable_cpu_backup,
            **_present(cpu_backup_backend=cpu_backup_backend),
        ):
            yield

    @contextmanager
    def disable(self) -> Iterator[None]:
        """Allocations by this thread inside the block stay resident (are never paused).

        Works inside a :meth:`region` and in trainer-wide mode (preload with
        ``TMS_INIT_ENABLE=1``, where every allocation is otherwise pauseable).
        The block allocates from a pool of its own, so no cached block of a
        pauseable pool is handed out inside it. When it ends, the memory that
        was freed inside goes back to the driver, and only that: cached blocks
        of other pools (torch's default pool included, whose blocks are engine
        memory in trainer-wide mode) stay, so what was paused comes back in
        full at resume. Tensors still alive stay valid; their memory goes back
        at a later ``torch.cuda.empty_cache`` after they are freed.
        """
        require_torch("disable()")
        with self._initialized_impl().disable():
            yield

    # ---- pause and resume ----------------------------------------------------

    def pause(self, tag: Optional[str] = None) -> None:
        """Release the physical memory of every active allocation of `tag` (None or "": of every tag).

        Waits for the devices' outstanding work first. Backed-up allocations
        are copied to host memory before release. Already paused allocations
        and unknown tags are left alone, so repeating it is harmless. All or
        nothing: on failure every allocation stays active.

        Raises:
            OutOfMemoryError: no host memory for a backup.
            DriverError: a driver call failed.
            BackupIOError: a disk backup could not be written.
            InvalidStateError: called while the current CUDA stream is
                capturing a graph (pause outside the capture), while another
                thread captures through :meth:`cuda_graph` or on a blocking
                stream, while an allocation of `tag` is unusable after a
                failed pause, or in a ``fork()``ed child of a process that
                had used the library.
            InvalidArgumentError: `tag` is neither None nor a str.
        """
        tag = _transition_tag(tag)
        impl = self._initialized_for_call()
        if impl is None:
            _transition("pause", tag)
        else:
            impl.pause(tag=tag)

    def resume(self, tag: Optional[str] = None, *, non_blocking: bool = False) -> None:
        """Map memory again under every paused allocation of `tag` (None or "": of every tag).

        Addresses are unchanged; backed-up contents are restored. Active
        allocations and unknown tags are left alone. All or nothing: if the
        memory is not all available, everything stays paused with its backup
        and a later resume can succeed. When it returns, the host memory of
        the CPU backups it restored is back with the OS, unless
        ``retain_cpu_backup`` keeps them.

        With ``non_blocking=True`` it returns once the memory is mapped, while
        the CPU backups are still being copied back, as a
        ``tensor.to(device, non_blocking=True)`` copy does: do not touch the
        tensors until :meth:`wait` (on the host, or ordering a stream). Their
        host memory goes back once the copies are done. Compressed and disk
        backups are restored before it returns either way.

        Raises:
            OutOfMemoryError: not enough free device memory (the message says
                how much was needed and free); also a ``torch.OutOfMemoryError``.
            InvalidStateError: called during a graph capture, with an unusable
                allocation of `tag`, in a ``fork()``ed child (see :meth:`pause`),
                or while a non-blocking restore of `tag` has failed (see :meth:`wait`).
        """
        tag = _transition_tag(tag)
        if not isinstance(non_blocking, bool):
            raise InvalidArgumentError(f"non_blocking must be True or False, got {non_blocking!r}")
        impl = self._initialized_for_call()
        if impl is None:
            _transition("resume", tag, non_blocking=non_blocking)
        elif non_blocking:
            impl.resume(tag=tag, non_blocking=True)
        else:
            impl.resume(tag=tag)  # also what an implementation without non_blocking accepts

    def wait(self, tag: Optional[str] = None, stream: Any = None) -> None:
        """Wait for the restores that ``resume(non_blocking=True)`` of `tag` (None or "": all) left running.

        Without `stream`, blocks until they are done (their host memory is back
        with the OS then). With a ``torch.cuda.Stream``, returns at once and
        makes the work queued on that stream from now on wait for them, like
        ``stream.wait_event(...)``. Nothing to wait for: returns at once. Wait
        before capturing a CUDA graph, not on the capturing stream: the
        restore is not part of the graph.

        Raises:
            DriverError: a restore failed after ``resume`` returned. Nothing is
                lost: the tensors keep their CPU backups, and the next ``wait()``
                copies them back again; ``discard_backup`` or freeing the
                tensors gives up. With a stream, only a failure already known
                is raised (the next ``wait()``, ``pause`` or ``resume`` raises
                one found later).
            InvalidArgumentError: `stream` is not a CUDA stream.
        """
        tag = _transition_tag(tag)
        impl = self._initialized_for_call()
        if impl is not None and hasattr(impl, "wait"):
            impl.wait(tag=tag, stream=stream)
        else:
            _wait(tag, stream)

    # ---- settings --------------------------------------------------------------

    @property
    def memory_margin_bytes(self) -> int:
        """Allocations and resumes fail rather than leave less than this many bytes free on a device."""
        return int(_library.library().tms_get_memory_margin_bytes())

    @memory_margin_bytes.setter
    def memory_margin_bytes(self, value: int) -> None:
        # bool is an int, and ctypes would keep only the low 64 bits of a larger one.
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**64:
            raise InvalidArgumentError(
                f"memory_margin_bytes must be an int from 0 to 2**64 - 1, got {value!r}"
            )
        check(_library.library().set_memory_margin_bytes(value))

    @property
    def retain_cpu_backup(self) -> bool:
        """Keep host backup memory after resume for the next pause (default: TMS_RETAIN_CPU_BACKUP).

        Retained backups stay readable with :meth:`get_cpu_backup`. Turning it
        off frees nothing at once: each retained backup is given back by its
        allocation's next resume, or when the allocation is freed.
        """
        return bool(_library.library().tms_get_retain_cpu_backup())

    @retain_cpu_backup.setter
    def retain_cpu_backup(self, retain: bool) -> None:
        check(_library.library().tms_set_retain_cpu_backup(as_bool(retain, "retain_cpu_backup")))

    def set_disk_backup_dir(self, path: Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]) -> None:
        """Directory for disk backup files written from now on.

        A missing directory is created (mode 0700, parents too). A relative
        path is taken against the current directory now and kept absolute
        (see :attr:`disk_backup_dir`), so a later ``os.chdir`` changes nothing.

        Raises:
            BackupIOError: the directory cannot be created, is not a writable
                directory, or is not safe: owned by another user, or writable
                by other users without the sticky bit.
            InvalidArgumentError: `path` is not a str, bytes or os.PathLike, or holds a NUL.
        """
        check(_library.library().tms_set_disk_backup_dir(encode_path(path, "disk backup directory")))

    @property
    def disk_backup_dir(self) -> Optional[str]:
        """The absolute disk backup directory; while none is set, the default (``$TMPDIR``, else ``/tmp``)."""
        lib = _library.library()
        required = ctypes.c_size_t(0)
        lib.tms_get_disk_backup_dir(None, 0, ctypes.byref(required))  # asks for the size
        buffer = ctypes.create_string_buffer(max(required.value, 1))
        check(lib.tms_get_disk_backup_dir(buffer, len(buffer), ctypes.byref(required)))
        return buffer.value.decode("utf-8", errors="surrogateescape") or None

    def discard_backup(self, tensor_or_ptr: Any) -> None:
        """Drop the backup of the paused allocation holding `tensor_or_ptr` (a tensor or an address).

        For a backup that cannot be restored: when :meth:`resume` raises
        BackupIOError naming an allocation (e.g. its disk backup was damaged),
        discard that allocation's backup and resume again. Its contents are
        LOST: the resume maps it with undefined contents and logs a warning.
        The whole allocation is affected, including other tensors that share
        it. No effect on an allocation without a backup.

        Raises:
            InvalidStateError: the allocation is active.
            InvalidArgumentError: not memory of this library, or neither a
                tensor nor an int address.
        """
        check(_library.library().tms_discard_backup(_address_of(tensor_or_ptr, "discard_backup()")))

    def remove_orphaned_backups(
        self, directory: Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]", None] = None
    ) -> int:
        """Remove backup files that processes no longer running left in `directory` (None: :attr:`disk_backup_dir`).

        Backup files are unnamed and vanish with the process on any exit;
        only where the filesystem cannot make unnamed files is a named file
        briefly created, and a SIGKILL at that instant leaves it behind. Files
        of running processes are left alone. Returns how many were removed.
        Also ``python -m torch_memory_saver clean-backups DIR``.

        Raises:
            InvalidArgumentError: `directory` is not None, a str, bytes or
                os.PathLike, or holds a NUL.
        """
        removed = ctypes.c_uint64(0)
        path = None if directory is None else encode_path(directory, "backup directory")
        check(_library.library().tms_remove_orphaned_backups(path, ctypes.byref(removed)))
        return int(removed.value)

    # ---- inspection ----------------------------------------------------------

    def get_cpu_backup(self, x: Any, zero_copy: bool = False) -> Optional[Any]:
        """Host backup of `x`, as a CPU tensor of x's dtype and shape.

        There is one while `x` is paused with a CPU backup, and after resume
        while :attr:`retain_cpu_backup` keeps it: then it holds what the last
        pause saved, at the same host address in every later cycle.

        Returns None when `x` has no host backup: never paused (or the backup
        was given back by a resume without retention), its region had no CPU
        backup (disk backups have no host copy), or it is not engine memory.

        Args:
            zero_copy: return a tensor over the backup's host memory itself
                (no copy), valid until that backup is given back (a resume
                without retention, or freeing `x`). Otherwise the result is
                an independent copy.

        Raises:
            InvalidArgumentError: `x` is not a CUDA tensor, or the engine rejects the range.
            InvalidStateError: `x`'s backup is compressed (``region(compress=True)``).
        """
        impl = self._initialized_for_call()
        if impl is None:
            return get_cpu_backup(x, zero_copy=zero_copy)
        return impl.get_cpu_backup(x, **_present(zero_copy=zero_copy))

    def stats(self) -> List[TagStats]:
        """Per-(tag, device) statistics from the engine (see :class:`TagStats`)."""
        return stats()


class _TorchMemorySaverImpl:
    """The implementation of the built-in hook modes: what ``TorchMemorySaver._impl`` is by default.

    ``_binary_wrapper.cdll`` is the engine library with every ``tms.h``
    function declared (``cdll.tms_set_interesting_region(False)`` suspends
    the calling thread's region, as the library this one replaces allowed);
    ``_mem_pools`` holds the region and graph pools (see
    :class:`~torch_memory_saver._pools.PoolCache`; ``clear()`` hands idle
    pools back). Wrap it, or subclass it, to observe or change what the
    public methods do.
    """

    def __init__(self, hook_mode: str = "preload") -> None:
        active = hooks.create(hook_mode)
        self._check_engine()
        active.validate()
        self._hook_mode = hook_mode
        self._hooks = active
        self._binary_wrapper = BinaryWrapper()
        self._mem_pools = PoolCache(lambda key: active.new_pool(key.device))
        self._router = PoolRouter()
        logger.debug("hook_mode=%s, library %s", hook_mode, _library.loaded_path())

    @staticmethod
    def _check_engine() -> None:
        # A bad TMS_* value or a fork()ed child is reported here, at region
        # entry, not as an allocation failure inside the block.
        check(_library.library().tms_init())

    @contextmanager
    def region(
        self,
        tag: str = _TAG_DEFAULT,
        enable_cpu_backup: bool = False,
        enable_disk_backup: bool = False,
        cpu_backup_backend: Optional[str] = None,
        compress: bool = False,
    ) -> Iterator[None]:
        """See :meth:`TorchMemorySaver.region`."""
        _check_tag(tag)
        policy = BackupPolicy.from_region(
            enable_cpu_backup=enable_cpu_backup,
            enable_disk_backup=enable_disk_backup,
            cpu_backup_backend=cpu_backup_backend,
            compress=compress,
            inherited=_policy.current(),
        )
        torch = require_routing_torch("region()")
        self._check_engine()
        device = torch.cuda.current_device()
        with (
            _settings.changed(interesting=True, tag=tag, policy=policy),
            self._routed_to(PoolKey(REGION, tag, policy, device)),
        ):
            yield

    @contextmanager
    def cuda_graph(
        self,
        cuda_graph: Any,
        pool: Optional[Any] = None,
        stream: Optional[Any] = None,
        capture_error_mode: str = "global",
        tag: str = _TAG_DEFAULT,
        enable_cpu_backup: bool = False,
        cpu_backup_backend: Optional[str] = None,
    ) -> Iterator[None]:
        """See :meth:`TorchMemorySaver.cuda_graph`."""
        _check_tag(tag)
        torch = require_routing_torch("cuda_graph()")
        _nccl.check_graph_register(torch)
        self._check_engine()
        device = torch.cuda.current_device()
        policy = BackupPolicy.from_region(
            enable_cpu_backup=enable_cpu_backup, cpu_backup_backend=cpu_backup_backend, inherited=_policy.current()
        )
        with _settings.changed(interesting=True, tag=tag, policy=policy):
            key = PoolKey(GRAPH, tag, policy, device)
            with self._mem_pools.borrow(key) as own_pool, self._router.route(device, None):
                # Suspend this thread's region pool so that the capture's
                # allocations can only go to the graph pool (see _pools).
                if pool is not None and (self._hooks.accepts_any_graph_pool or self._mem_pools.owns_pool_id(pool)):
                    graph_pool = pool
                else:
                    if pool is not None:
                        logger.debug(
                            "cuda_graph: pool %s is not pauseable in torch mode; using %s", pool, own_pool.id
                        )
                    graph_pool = own_pool.id
                with _captures.capturing(), torch.cuda.graph(
                    cuda_graph, pool=graph_pool, stream=stream, capture_error_mode=capture_error_mode
                ):
                    yield

    @contextmanager
    def disable(self) -> Iterator[None]:
        """See :meth:`TorchMemorySaver.disable`."""
        torch = require_routing_torch("disable()")
        self._check_engine()
        device = torch.cuda.current_device()
        with (
            _settings.changed(interesting=False),
            self._router.route(device, scratch_pool(), on_exit=release_unused_scratch_memory),
        ):
            yield

    @contextmanager
    def _with_region_config(
        self,
        tag: str = _TAG_DEFAULT,
        enable_cpu_backup: bool = False,
        enable_disk_backup: bool = False,
        cpu_backup_backend: Optional[str] = None,
    ) -> Iterator[None]:
        """The calling thread's region settings inside the block, without a pool (the replaced library's name)."""
        policy = BackupPolicy.from_region(
            enable_cpu_backup=enable_cpu_backup,
            enable_disk_backup=enable_disk_backup,
            cpu_backup_backend=cpu_backup_backend,
            inherited=_policy.current(),
        )
        with _settings.changed(interesting=True, tag=_check_tag(tag), policy=policy):
            yield

    @contextmanager
    def _routed_to(self, key: PoolKey) -> Iterator[None]:
        with self._mem_pools.borrow(key) as pool, self._router.route(key.device, pool.id):
            yield

    def pause(self, tag: Optional[str] = None) -> None:
        _transition("pause", _transition_tag(tag))

    def resume(self, tag: Optional[str] = None, non_blocking: bool = False) -> None:
        _transition("resume", _transition_tag(tag), non_blocking=non_blocking)

    def wait(self, tag: Optional[str] = None, stream: Any = None) -> None:
        _wait(_transition_tag(tag), stream)

    def get_cpu_backup(self, x: Any, zero_copy: bool = False) -> Optional[Any]:
        return get_cpu_backup(x, zero_copy=zero_copy)


def _transition(verb: str, tag: Optional[str], non_blocking: bool = False) -> None:
    _refuse_during_capture(verb)
    lib = _library.library()
    calls = {"pause": lib.tms_pause, "resume": lib.tms_resume_non_blocking if non_blocking else lib.tms_resume}
    call = calls[verb]
    # The engine logs the transition (TMS_LOG_LEVEL=info: one line with
    # devices, bytes, backups and the time of each phase), so this layer
    # only forwards the call.
    check(call(None if tag is None else encode(tag, "tag")))


def _wait(tag: Optional[str], stream: Any) -> None:
    lib = _library.library()
    encoded = None if tag is None else encode(tag, "tag")
    if stream is None:
        check(lib.tms_wait_restores(encoded))
        return
    handle = getattr(stream, "cuda_stream", None)
    device = getattr(stream, "device", None)
    if not isinstance(handle, int) or isinstance(handle, bool) or device is None:
        raise InvalidArgumentError(f"wait(stream=...) needs a torch.cuda.Stream, got {stream!r}")
    torch = sys.modules["torch"]  # a torch stream exists, so torch is imported
    # The stream's device current: handle 0 is that device's default stream.
    with torch.cuda.device(device):
        check(lib.tms_wait_restores_on_stream(encoded, handle))


def _address_of(tensor_or_ptr: Any, what: str) -> int:
    """The address a tensor starts at, or an int address as given (checked: ctypes would wrap it)."""
    data_ptr = getattr(tensor_or_ptr, "data_ptr", None)
    if callable(data_ptr):
        return int(data_ptr())
    if not isinstance(tensor_or_ptr, bool):  # True is an int, but surely not an address
        try:
            address = operator.index(tensor_or_ptr)
        except TypeError:
            pass
        else:
            if 0 <= address < 2**64:
                return address
    raise InvalidArgumentError(
        f"{what} needs a tensor or an int address from 0 to 2**64 - 1, got {tensor_or_ptr!r}"
    )


def _refuse_during_capture(verb: str) -> None:
    """Raise InvalidStateError if a CUDA graph capture that `verb` would break is under way.

    Pause and resume synchronize the device and map or unmap memory, which a
    stream capture cannot record: in the default ("global") capture mode the
    driver would reject the call and invalidate the capture. Checked here,
    before the engine is called, so the capture stays intact and can go on:
    this thread's current stream, and captures other threads run through
    :meth:`TorchMemorySaver.cuda_graph`. (The engine also asks the driver,
    which sees captures on blocking streams of any thread.) Never
    initialises CUDA (no capture can be underway before CUDA is).
    """
    if _captures.on_other_threads():
        raise InvalidStateError(
            f"torch_memory_saver.{verb}() was called while another thread captures a CUDA graph "
            f"through torch_memory_saver.cuda_graph(); {verb} synchronizes the device and "
            f"maps/unmaps memory, which would invalidate that capture. Call {verb}() after the "
            f"capture ends. The capture is unaffected."
        )
    torch = sys.modules.get("torch")
    if torch is None:
        return
    try:
        capturing = bool(torch.cuda.is_initialized() and torch.cuda.is_current_stream_capturing())
    except Exception:  # noqa: BLE001 - a torch without CUDA support: nothing can be capturing
        return
    if capturing:
        raise InvalidStateError(
            f"torch_memory_saver.{verb}() was called while the current CUDA stream is capturing a "
            f"CUDA graph; {verb} synchronizes the device and maps/unmaps memory, which cannot be "
            f"part of a graph. Call {verb}() outside the capture: before entering or after leaving "
            f"torch.cuda.graph() / torch_memory_saver.cuda_graph(). The capture is unaffected."
        )


torch_memory_saver = TorchMemorySaver()
"""The process-wide instance used by ``from torch_memory_saver import torch_memory_saver``."""
