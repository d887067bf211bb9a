"""The surfaces integrations patch: ``_impl``, ``_impl_ctor_kwargs``, ``_ensure_initialized``,
``register_hook_mode``, the ``hook_mode`` setter, and what ``disable()`` gives back.

Each test plays one real caller on the simulated driver, with a stand-in for
torch (``FakeTorch``) that models what these paths use of torch's caching
allocator: pools routed to per thread, references to them, cached blocks, and
``empty_cache``, which releases pools nobody holds and, on a device where no
route is underway, the default pool's cached blocks.
"""

import contextlib
import sys
import types

import pytest
from torch_memory_saver import TorchMemorySaver, errors, hooks, register_hook_mode
from torch_memory_saver import entrypoint, utils
from torch_memory_saver.entrypoint import _TorchMemorySaverImpl


class FakeAllocator:
    """torch's caching allocator, as far as routing, pool references and empty_cache go."""

    def __init__(self, devices):
        self.routes = {d: [] for d in range(devices)}  # device -> pool ids routed to (captures underway)
        self.pools = {}  # (device, pool id) -> {"refs": n, "cached": bytes}
        self.default_cached = {d: 0 for d in range(devices)}
        self.released = []  # ("default" | pool id, device, bytes), in order

    def begin(self, device, pool_id):
        pool = self.pools.setdefault((device, tuple(pool_id)), {"refs": 0, "cached": 0})
        pool["refs"] += 1
        self.routes[device].append(tuple(pool_id))

    def end(self, device, pool_id):
        self.routes[device].remove(tuple(pool_id))

    def release_pool(self, device, pool_id):
        pool = self.pools[(device, tuple(pool_id))]
        assert pool["refs"] > 0, "released a pool nobody holds"
        pool["refs"] -= 1

    def empty_cache(self):
        for device, routes in self.routes.items():
            if not routes and self.default_cached[device]:
                self.released.append(("default", device, self.default_cached[device]))
                self.default_cached[device] = 0
        for (device, pool_id), pool in list(self.pools.items()):
            if pool["refs"] == 0:
                if pool["cached"]:
                    self.released.append((pool_id, device, pool["cached"]))
                del self.pools[(device, pool_id)]

    def use_and_free(self, device, size):
        """This thread allocates `size` bytes and frees them: they stay cached where they were allocated."""
        routes = self.routes[device]
        if routes:
            self.pools[(device, routes[-1])]["cached"] += size
        else:
            self.default_cached[device] += size


class FakeMemPool:
    def __init__(self, torch, allocator=None):
        self.id = torch.cuda.graph_pool_handle()
        torch.allocator.begin(torch.device_now, self.id)  # a MemPool holds one reference to its pool
        torch.allocator.end(torch.device_now, self.id)


class FakeTorch:
    def __init__(self, devices=1):
        self.allocator = FakeAllocator(devices)
        self.device_now = 0
        self.graphs = []
        self._handles = 0
        torch = self

        @contextlib.contextmanager
        def device(index):
            saved, torch.device_now = torch.device_now, index
            try:
                yield
            finally:
                torch.device_now = saved

        @contextlib.contextmanager
        def graph(cuda_graph, pool=None, stream=None, capture_error_mode="global"):
            torch.graphs.append((cuda_graph, pool))
            yield

        def graph_pool_handle():
            torch._handles += 1
            return (0, 1000 + torch._handles)

        self.cuda = types.SimpleNamespace(
            current_device=lambda: self.device_now,
            device_count=lambda: devices,
            device=device,
            graph=graph,
            graph_pool_handle=graph_pool_handle,
            MemPool=lambda allocator=None: FakeMemPool(torch, allocator),
            empty_cache=self.allocator.empty_cache,
            is_initialized=lambda: True,
            is_current_stream_capturing=lambda: False,
        )
        self._C = types.SimpleNamespace(
            _cuda_beginAllocateCurrentThreadToPool=self.allocator.begin,
            _cuda_endAllocateToPool=self.allocator.end,
            _cuda_releasePool=self.allocator.release_pool,
        )


@pytest.fixture
def fake_torch(monkeypatch):
    torch = FakeTorch(devices=2)
    monkeypatch.setitem(sys.modules, "torch", torch)
    # torch mode's pools use one pluggable allocator per process; the stand-in's is this test's.
    monkeypatch.setattr(hooks, "_allocator", types.SimpleNamespace(allocator=lambda: "engine allocator"))
    return torch


class Recording:
    """Wraps an implementation and records the calls the public methods send it."""

    def __init__(self, inner, calls):
        self.inner, self.calls = inner, calls

    def __getattr__(self, name):
        target = getattr(self.inner, name)
        if not callable(target):
            return target

        def call(*args, **kwargs):
            self.calls.append((name, kwargs))
            return target(*args, **kwargs)

        return call


def exercise(saver, fake):
    """What an inference engine does: a weights region, a graph capture, pause and resume."""
    with saver.region(tag="weights", enable_cpu_backup=True):
        fake.allocator.use_and_free(0, 4096)
    with saver.cuda_graph("graph", tag="graph"):
        pass
    saver.pause("weights")
    saver.resume("weights")
    saver.pause()
    saver.resume()


EXPECTED_CALLS = [
    ("region", {"tag": "weights", "enable_cpu_backup": True}),
    ("cuda_graph", {"cuda_graph": "graph", "pool": None, "stream": None, "capture_error_mode": "global",
                    "tag": "graph", "enable_cpu_backup": False}),
    ("pause", {"tag": "weights"}),
    ("resume", {"tag": "weights"}),
    ("pause", {"tag": None}),
    ("resume", {"tag": None}),
]


def test_a_dynamo_style_patch_of_ensure_initialized_receives_every_call(fake_torch, monkeypatch):
    """NVIDIA Dynamo's GPU memory service patches _ensure_initialized to put its own _impl in place,
    built from _impl_ctor_kwargs, and relies on every public call going to it."""
    calls, seen_kwargs = [], []

    def patched_ensure_initialized(self):
        if self._impl is not None:
            return
        hook_mode = self._impl_ctor_kwargs.get("hook_mode")
        seen_kwargs.append(dict(self._impl_ctor_kwargs))
        self._impl = Recording(_TorchMemorySaverImpl(**self._impl_ctor_kwargs), calls)
        del self._impl_ctor_kwargs
        assert hook_mode == "torch"

    monkeypatch.setattr(TorchMemorySaver, "_ensure_initialized", patched_ensure_initialized)
    saver = TorchMemorySaver()
    assert saver._impl is None and saver._impl_ctor_kwargs == {}, "before first use, as the patch reads them"
    assert saver._impl_ctor_kwargs.get("hook_mode") is None, "an unset mode reads as None (the patch's default)"
    saver.hook_mode = "torch"
    exercise(saver, fake_torch)
    assert seen_kwargs == [{"hook_mode": "torch"}]
    assert calls == EXPECTED_CALLS
    assert not hasattr(saver, "_impl_ctor_kwargs")
    with saver.disable():
        pass
    assert calls[-1] == ("disable", {})


def test_a_registered_hook_mode_receives_every_call(fake_torch, monkeypatch):
    monkeypatch.setattr(hooks, "_registry", {})
    calls, built = [], []

    def factory():
        built.append(1)
        return Recording(_TorchMemorySaverImpl(hook_mode="torch"), calls)

    register_hook_mode("recorded", factory, uses_preload=False)
    register_hook_mode("recorded", factory, uses_preload=False)  # loading a plugin twice is harmless
    saver = TorchMemorySaver()
    saver.hook_mode = "recorded"
    assert built == [], "built at first use, not when selected"
    exercise(saver, fake_torch)
    assert built == [1] and calls == EXPECTED_CALLS
    assert saver.hook_mode == "recorded"
    with pytest.raises(errors.InvalidStateError, match="in use"):
        saver.hook_mode = "torch"


def test_register_hook_mode_refuses_what_it_cannot_honour(monkeypatch):
    monkeypatch.setattr(hooks, "_registry", {})
    with pytest.raises(errors.InvalidArgumentError, match="built in"):
        register_hook_mode("preload", object)
    with pytest.raises(errors.InvalidArgumentError, match="callable"):
        register_hook_mode("x", "not callable")
    with pytest.raises(errors.InvalidArgumentError, match="uses_preload"):
        register_hook_mode("x", object, uses_preload="no")
    register_hook_mode("x", object)
    with pytest.raises(errors.InvalidStateError, match="already registered"):
        register_hook_mode("x", dict)


def test_pause_before_first_use_builds_a_registered_mode(monkeypatch):
    """A registered implementation gets pause() even when no region came first."""
    monkeypatch.setattr(hooks, "_registry", {})
    calls = []
    register_hook_mode("early", lambda: Recording(types.SimpleNamespace(pause=lambda tag: None), calls))
    saver = TorchMemorySaver()
    saver.hook_mode = "early"
    saver.pause("")
    assert calls == [("pause", {"tag": None})]


def test_configure_subprocess_leaves_ld_preload_alone_for_a_mode_without_preload(monkeypatch):
    monkeypatch.setattr(hooks, "_registry", {})
    monkeypatch.setattr(entrypoint, "torch_memory_saver", TorchMemorySaver())
    monkeypatch.setenv("LD_PRELOAD", "/other.so")
    register_hook_mode("no-preload", object, uses_preload=False)
    entrypoint.torch_memory_saver.hook_mode = "no-preload"
    with utils.configure_subprocess():
        import os

        assert os.environ["LD_PRELOAD"] == "/other.so"
    entrypoint.torch_memory_saver.hook_mode = "torch"
    with utils.configure_subprocess():
        assert os.environ["LD_PRELOAD"].split(":")[1:] == ["/other.so"]


def test_areal_setter_wrapper_sets_the_mode_before_first_use_and_ignores_a_late_one(fake_torch, monkeypatch):
    """AReaL wraps the hook_mode setter: it sets only while the instance has _impl_ctor_kwargs."""
    prop = TorchMemorySaver.hook_mode

    def safe_setter(self, value):
        if not hasattr(self, "_impl_ctor_kwargs"):
            return
        prop.fset(self, value)

    monkeypatch.setattr(TorchMemorySaver, "hook_mode", property(prop.fget, safe_setter))
    saver = TorchMemorySaver()
    saver.hook_mode = "torch"
    assert saver.hook_mode == "torch" and saver._impl_ctor_kwargs == {"hook_mode": "torch"}
    with saver.region("areal"):
        pass
    assert isinstance(saver._impl, _TorchMemorySaverImpl) and saver._impl._hook_mode == "torch"
    saver.hook_mode = "preload"  # after initialisation: a no-op, not an error
    assert saver.hook_mode == "torch"


def test_impl_is_assignable_and_mem_pools_can_be_cleared(fake_torch):
    saver = TorchMemorySaver()
    saver.hook_mode = "torch"
    with saver.region("cleared", enable_cpu_backup=True):
        pass
    pools = saver._impl._mem_pools
    assert len(pools) == 1
    (pool,) = pools.get(next(iter(pools)))
    assert fake_torch.allocator.pools[(0, pool.id)]["refs"] == 1
    pools.clear()
    assert len(pools) == 0
    assert fake_torch.allocator.pools[(0, pool.id)]["refs"] == 0, "the pool's own reference is handed back"
    assert pools.pop(("cleared", True), None) is None  # keys of the replaced library: nothing to pop
    replacement = Recording(types.SimpleNamespace(pause=lambda tag: None), [])
    saver._impl = replacement
    saver.pause("x")
    assert replacement.calls == [("pause", {"tag": "x"})]


def test_non_blocking_resume_and_wait_go_through_the_impl_and_a_foreign_impl_keeps_working(fake_torch):
    saver = TorchMemorySaver()
    saver.hook_mode = "torch"
    calls = []
    saver._impl = Recording(_TorchMemorySaverImpl(hook_mode="torch"), calls)
    saver.resume("w", non_blocking=True)
    saver.resume("w")
    saver.wait("w")
    assert calls == [
        ("resume", {"tag": "w", "non_blocking": True}),
        ("resume", {"tag": "w"}),  # the blocking call as an implementation without the option takes it
        ("wait", {"tag": "w", "stream": None}),
    ]
    # An implementation of the incumbent's shape has no wait(): nothing of
    # ours can be in flight then, and wait() still returns.
    saver._impl = types.SimpleNamespace(resume=lambda tag: None)
    saver.resume("w")
    saver.wait("w")


def test_disable_gives_back_only_the_memory_used_inside_it(fake_torch):
    """Trainer-wide mode: torch's default pool caches engine memory; disable() must leave it, on every device."""
    alloc = fake_torch.allocator
    alloc.use_and_free(0, 1 << 20)
    alloc.use_and_free(1, 2 << 20)
    saver = TorchMemorySaver()
    saver.hook_mode = "torch"
    with saver.disable():
        alloc.use_and_free(0, 4096)
    released = [(where, device, size) for where, device, size in alloc.released if size]
    assert [entry for entry in released if entry[0] == "default"] == [], "the default pool's cache was emptied"
    assert [(device, size) for _, device, size in released] == [(0, 4096)], "the scratch memory went back"
    assert alloc.default_cached == {0: 1 << 20, 1: 2 << 20}
    assert all(not routes for routes in alloc.routes.values()), "a route was left underway"
    # Inside a region too: the region's pool is routed again afterwards.
    with saver.region("outer"):
        with saver.disable():
            alloc.use_and_free(0, 8192)
        assert len(alloc.routes[0]) == 1
    assert alloc.default_cached == {0: 1 << 20, 1: 2 << 20}


def test_detect_cuda_major_reads_torchs_cuda_version(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(version=types.SimpleNamespace(cuda="12.8")))
    assert utils._detect_cuda_major() == 12
