"""torch.cuda.MemPool bookkeeping: which pool a region uses, and routing a thread to it.

Two torch behaviours shape this module:

- Which of several pools routing a thread gets an allocation depends on the
  torch version: some give it to the pool that began routing first (the
  allocator's ``get_pool`` scans ``captures_underway`` in order), torch 2.11
  to the innermost ``use_mem_pool``. A thread is therefore routed to one pool
  at a time: entering a route suspends the thread's current one and
  reinstates it on exit. This is also how ``disable()`` reaches torch's
  default pool from inside a region, which ``use_mem_pool`` cannot express.
- Destroying a MemPool while any pool is routing allocations aborts the
  process (``captures_underway.empty()`` assert in the destructor's cache
  flush, seen on torch 2.11). Pools are therefore created once per key and
  kept for the life of the process, and beyond it: :func:`keep_forever`
  holds them (and the pluggable allocator they allocate with) in a list that
  is intentionally leaked, so that not even interpreter shutdown destroys
  them. Otherwise clearing the module globals at exit would destroy them
  while a daemon thread may still be inside a region (its route counts as a
  capture underway), and the abort would hit at exit. The memory itself is
  returned by the process exit; the engine removes disk backup files at exit.

``disable()`` needs the opposite: memory used and freed inside the block must
go back to the driver when it ends. It gets a pool id of its own
(:func:`scratch_pool`) with no MemPool object behind it, the way
``torch.cuda.graph`` uses private pools: routing to the id creates the pool,
ending the route hands its last reference back, and ``empty_cache`` then
releases its cached blocks (and forgets the pool once none is in use). That
path never destroys a MemPool and never synchronizes a pool while another
thread routes, so it cannot hit the assert above.

Only the scratch pool's blocks may go back: ``empty_cache`` would also
release the cached blocks of torch's default pool on every device where no
thread routes, and in trainer-wide mode (every cudaMalloc is engine memory)
those are paused or pauseable allocations that resume should bring back.
torch has no Python call that releases one pool without synchronizing it
(``torch.cuda.MemPool`` has no ``empty_cache``; its destructor's release
asserts that nothing routes). So :func:`release_unused_scratch_memory` routes
the calling thread to a fresh, empty guard pool on every device while it
calls ``empty_cache``: with a route underway on a device, torch leaves that
device's default pool alone and releases only pools nobody holds.
"""

from __future__ import annotations

import ctypes
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from ._policy import BackupPolicy
from ._torch import require_torch

# Objects that must outlive interpreter shutdown (see module doc). The list
# gets one extra reference that is never dropped, so clearing this module's
# globals at exit leaves it, and everything in it, alive.
_KEPT_FOREVER: List[Any] = []
try:
    ctypes.pythonapi.Py_IncRef(ctypes.py_object(_KEPT_FOREVER))
except (AttributeError, OSError):  # not CPython: the module-level reference is all we have
    pass


def keep_forever(obj: Any) -> Any:
    """Keep `obj` alive until the process ends, through interpreter shutdown; returns it."""
    _KEPT_FOREVER.append(obj)
    return obj


# What a pool is for; pools of different kinds never share cached blocks.
REGION = "region"  # tensors made inside region()
GRAPH = "graph"  # private memory of graphs captured by cuda_graph()


@dataclass(frozen=True)
class PoolKey:
    """Everything that must match for two allocations to share cached blocks."""

    kind: str  # REGION or GRAPH
    tag: str
    policy: BackupPolicy
    device: int


@dataclass
class _Slot:
    pool: Any  # torch.cuda.MemPool
    owner: Optional[int] = None  # thread ident while borrowed
    depth: int = 0  # nested borrows by the owner


class PoolCache:
    """MemPools by key, created on first use and never destroyed (see :func:`keep_forever`).

    torch refuses to route a thread to a pool that another thread is routing
    to, so a key holds one pool per thread using it at the same time; a
    released pool is reused by the next borrower of that key.
    """

    def __init__(self, factory: Callable[[PoolKey], Any]) -> None:
        self._factory = factory
        self._lock = threading.Lock()
        self._slots: Dict[PoolKey, List[_Slot]] = {}

    @contextmanager
    def borrow(self, key: PoolKey) -> Iterator[Any]:
        """A pool for `key` that no other thread is using, for the duration of the block."""
        me = threading.get_ident()
        with self._lock:
            slots = self._slots.setdefault(key, [])
            slot = next((s for s in slots if s.owner in (None, me)), None)
            if slot is None:
                slot = _Slot(pool=keep_forever(self._factory(key)))
                slots.append(slot)
            slot.owner = me
            slot.depth += 1
        try:
            yield slot.pool
        finally:
            with self._lock:
                slot.depth -= 1
                if slot.depth == 0:
                    slot.owner = None

    def owns_pool_id(self, pool_id: Tuple[int, int]) -> bool:
        """Whether `pool_id` is the id of one of this cache's pools."""
        with self._lock:
            return any(s.pool.id == pool_id for slots in self._slots.values() for s in slots)

    # A read-mostly mapping of key -> pools, where code written for the library
    # this one replaces reaches for ``_impl._mem_pools`` to drop pools.

    def keys(self) -> List[PoolKey]:
        with self._lock:
            return list(self._slots)

    def __iter__(self) -> Iterator[PoolKey]:
        return iter(self.keys())

    def __len__(self) -> int:
        with self._lock:
            return len(self._slots)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._slots

    def get(self, key: Any, default: Any = None) -> Any:
        """The pools of `key` (a list, one per thread that used it at once), or `default`."""
        with self._lock:
            slots = self._slots.get(key)
            return default if slots is None else [s.pool for s in slots]

    def pop(self, key: Any, *default: Any) -> Any:
        """Forget the pools of `key` that no thread is using and hand them back (see :meth:`clear`)."""
        with self._lock:
            if key not in self._slots:
                if default:
                    return default[0]
                raise KeyError(key)
            return self._drop(key)

    def clear(self) -> None:
        """Forget every pool no thread is using; their memory goes back as it is freed.

        A MemPool is never destroyed (see module doc): its own reference to
        the pool is handed back instead, which is what its destructor would
        do first. Its cached blocks then go back at the next ``empty_cache``,
        and blocks of live tensors when those are freed and ``empty_cache``
        runs again. A pool a thread is routing to right now is kept.
        """
        with self._lock:
            for key in list(self._slots):
                self._drop(key)

    def _drop(self, key: PoolKey) -> List[Any]:
        slots = self._slots[key]
        idle = [s for s in slots if s.owner is None]
        busy = [s for s in slots if s.owner is not None]
        if busy:
            self._slots[key] = busy
        else:
            del self._slots[key]
        for slot in idle:
            _hand_back(key.device, slot.pool)
        return [s.pool for s in idle]


def _hand_back(device: int, pool: Any) -> None:
    """Drop the MemPool object's own reference to its pool, leaving the object alive (kept forever)."""
    torch = require_torch("_mem_pools")
    torch._C._cuda_releasePool(device, pool.id)


def new_default_pool(device: int) -> Any:
    """A MemPool of torch's default allocator (cudaMalloc) on `device`."""
    torch = require_torch("region()")
    with torch.cuda.device(device):
        return torch.cuda.MemPool()


PoolId = Tuple[int, int]
_Route = Optional[Tuple[int, PoolId]]  # (device, pool id); None: torch's default pool


def _start(route: _Route) -> None:
    if route is not None:
        torch = require_torch("region()")
        torch._C._cuda_beginAllocateCurrentThreadToPool(*route)


def _stop(route: _Route) -> None:
    # The same two calls torch.cuda.use_mem_pool makes on exit: the route's
    # reference to the pool is handed back; whoever holds another keeps it.
    if route is not None:
        torch = require_torch("region()")
        torch._C._cuda_endAllocateToPool(*route)
        torch._C._cuda_releasePool(*route)


def scratch_pool() -> PoolId:
    """A new pool id nobody holds: the first route to it creates the pool (see module doc)."""
    torch = require_torch("disable()")
    return tuple(torch.cuda.graph_pool_handle())


def release_unused_scratch_memory() -> None:
    """Give the cached blocks of pools nobody holds any more back to the driver, and nothing else.

    ``empty_cache`` releases the blocks of every pool whose last reference was
    handed back, without synchronizing them, so it is safe while other
    threads route. It would also release torch's default pool's cached
    blocks on each device where no thread routes or captures; a guard route
    of this thread to a fresh pool on every device keeps those (see module
    doc). The guard pools allocate nothing and are forgotten by the next
    ``empty_cache``.
    """
    torch = require_torch("disable()")
    guards: List[Tuple[int, PoolId]] = []
    try:
        for device in range(torch.cuda.device_count()):
            guard = (device, tuple(torch.cuda.graph_pool_handle()))
            torch._C._cuda_beginAllocateCurrentThreadToPool(*guard)
            guards.append(guard)
        torch.cuda.empty_cache()
    finally:
        for guard in reversed(guards):
            _stop(guard)


class PoolRouter:
    """Routes each thread's new allocations to at most one pool at a time (see module doc)."""

    def __init__(self) -> None:
        self._local = threading.local()

    def _stack(self) -> List[_Route]:
        stack = getattr(self._local, "stack", None)
        if stack is None:
            stack = self._local.stack = []
        return stack

    @contextmanager
    def route(
        self, device: int, pool_id: Optional[PoolId], on_exit: Optional[Callable[[], None]] = None
    ) -> Iterator[None]:
        """Send the calling thread's allocations on `device` to pool `pool_id` (None: torch's default pool).

        `on_exit` runs after the route ends and before the thread's outer
        route starts again, i.e. while this thread routes nowhere.
        """
        stack = self._stack()
        outer = stack[-1] if stack else None
        mine: _Route = None if pool_id is None else (device, pool_id)
        _stop(outer)
        try:
            _start(mine)
        except BaseException:
            _start(outer)
            raise
        stack.append(mine)
        try:
            yield
        finally:
            stack.pop()
            try:
                _stop(mine)
                if on_exit is not None:
                    on_exit()
            finally:
                _start(outer)
