"""GPU scenarios, each run in its own process: ``python scenarios.py NAME HOOK_MODE``.

A fresh process per scenario gives each one a clean engine and caching
allocator, and lets preload mode start with the library in LD_PRELOAD
(test_gpu_scenarios.py builds the environment). A scenario passes when it
returns; the runner then prints SCENARIO OK and exits 0.
"""

import ctypes
import os
import re
import sys
import tempfile
import threading
import time
import traceback

import torch
import torch_memory_saver as tms_package
from torch_memory_saver import _library, _settings
from torch_memory_saver._disk_files import open_backup_files
from torch_memory_saver import torch_memory_saver as tms

GIB = 2**30
MIB = 2**20


def free_bytes(device=None):
    torch.cuda.synchronize(device)
    return torch.cuda.mem_get_info(device)[0]


def owned(tensor):
    return bool(_library.library().tms_owns(tensor.data_ptr()))


def expect_raises(error_type, action, text=""):
    try:
        action()
    except error_type as error:
        assert text in str(error), f"{error_type.__name__} without {text!r}: {error}"
        return error
    raise AssertionError(f"expected {error_type.__name__}")


def release_1gb():
    """A 1 GB region tensor frees >= 0.9 GiB as the driver sees it and comes back at the same address."""
    with tms.region("big"):
        x = torch.full((GIB,), 7, dtype=torch.uint8, device="cuda")
    pointer = x.data_ptr()
    active = free_bytes()
    tms.pause("big")
    paused = free_bytes()
    assert paused - active >= 0.9 * GIB, f"pause released {(paused - active) / GIB:.3f} GiB"
    tms.resume("big")
    assert paused - free_bytes() >= 0.9 * GIB, "resume did not take the memory back"
    assert x.data_ptr() == pointer
    x.fill_(3)
    assert int(x[-1]) == 3 and int(x.sum(dtype=torch.int64)) == 3 * GIB


def tags_selective():
    """Tags pause and resume independently, in any order."""
    size = 64 * MIB  # float32 elements: 256 MiB per tensor
    with tms.region("a", enable_cpu_backup=True):
        a = torch.full((size,), 1.0, device="cuda")
    with tms.region("b", enable_cpu_backup=True):
        b = torch.full((size,), 2.0, device="cuda")
    pointers = (a.data_ptr(), b.data_ptr())

    active = free_bytes()
    tms.pause("a")
    assert free_bytes() - active >= 0.9 * 256 * MIB
    assert bool((b == 2.0).all()), "pausing a touched b"
    tms.pause("b")
    tms.resume("a")
    assert bool((a == 1.0).all())
    tms.resume("b")

    tms.pause("b")
    tms.pause("a")
    tms.resume("b")
    assert bool((b == 2.0).all())
    tms.resume("a")
    assert bool((a == 1.0).all())

    tms.pause()
    tms.resume()
    assert bool((a == 1.0).all()) and bool((b == 2.0).all())
    assert (a.data_ptr(), b.data_ptr()) == pointers


def cpu_backup_exact():
    """Backed-up float and integer tensors come back bit-exact; the others do not keep their data."""
    generator = torch.Generator(device="cuda").manual_seed(0)
    with tms.region("kept", enable_cpu_backup=True):
        floats = torch.randn(32 * MIB, device="cuda", generator=generator)
        floats[::1000] = float("nan")
        integers = torch.randint(
            -(2**62), 2**62, (16 * MIB,), dtype=torch.int64, device="cuda", generator=generator
        )
    with tms.region("lost"):
        lost = torch.full((32 * MIB,), 12345, dtype=torch.int32, device="cuda")
    float_bits, integer_copy = floats.view(torch.int32).cpu(), integers.cpu()

    tms.pause()
    # Write over the physical memory just released, so unbacked data cannot survive by luck.
    scribble = torch.full((512 * MIB,), 0xAB, dtype=torch.uint8, device="cuda")
    del scribble
    torch.cuda.empty_cache()
    tms.resume()

    assert torch.equal(floats.view(torch.int32).cpu(), float_bits), "float backup not bit-exact"
    assert torch.equal(integers.cpu(), integer_copy), "int64 backup not exact"
    assert not bool((lost == 12345).all()), "a tensor without backup kept its contents"


def disk_backup():
    """A disk-backed region comes back exact after its memory was reused; it has no CPU backup."""
    with tempfile.TemporaryDirectory() as directory:
        tms.set_disk_backup_dir(directory)
        with tms.region("disk", enable_disk_backup=True):
            data = torch.randint(0, 2**31 - 1, (64 * MIB,), dtype=torch.int32, device="cuda")
        expected = data.cpu()
        active = free_bytes()
        tms.pause("disk")
        assert free_bytes() - active >= 0.9 * 256 * MIB
        assert len(open_backup_files(directory)) == 1, "pause wrote no backup file"
        assert os.listdir(directory) == [], "backup files have no name"
        assert tms.get_cpu_backup(data) is None
        scribble = torch.full((256 * MIB,), 0xCD, dtype=torch.uint8, device="cuda")
        del scribble
        torch.cuda.empty_cache()
        tms.resume("disk")
        assert torch.equal(data.cpu(), expected), "disk backup not exact"
        _library.check(_library.library().tms_drain_host_releases())  # files close in the background
        assert open_backup_files(directory) == [], "resume left the backup file open"
        assert os.listdir(directory) == []


def get_cpu_backup():
    """get_cpu_backup() returns the paused data as CPU tensors (copy and zero-copy); None without a backup."""
    expected = torch.arange(1024 * 1024, dtype=torch.float32).reshape(1024, 1024)
    with tms.region("w", enable_cpu_backup=True):
        weights = expected.cuda()
    with tms.region("nb"):
        unbacked = torch.ones(1024, device="cuda")
    assert tms.get_cpu_backup(weights) is None, "an active tensor has no backup"

    tms.pause()
    copied = tms.get_cpu_backup(weights)
    shared = tms.get_cpu_backup(weights, zero_copy=True)
    strided = tms.get_cpu_backup(weights[:, ::2])
    for host in (copied, shared):
        assert host.device.type == "cpu" and host.dtype == torch.float32 and host.shape == (1024, 1024)
        assert torch.equal(host, expected)
    assert torch.equal(strided, expected[:, ::2])
    assert tms.get_cpu_backup(unbacked) is None
    assert copied.data_ptr() != shared.data_ptr()
    tms.resume()

    assert torch.equal(copied, expected), "the copy must outlive the backup"
    assert torch.equal(weights.cpu(), expected)


def get_cpu_backup_while_resumed():
    """A backup read on one thread stays valid while another resumes or frees its tensor (leases)."""
    expected = torch.arange(4 * MIB, dtype=torch.float32)
    for round_ in range(50):
        with tms.region("leased", enable_cpu_backup=True):
            weights = expected.cuda()
        tms.pause("leased")
        view = tms.get_cpu_backup(weights, zero_copy=True)
        copies = []
        reader = threading.Thread(target=lambda w=weights: copies.append(tms.get_cpu_backup(w)))
        reader.start()
        if round_ % 2:
            tms.resume("leased")
            assert torch.equal(weights.cpu(), expected)
        del weights  # freed while paused, or after its resume
        torch.cuda.empty_cache()
        reader.join(60)
        assert torch.equal(view, expected), "the zero-copy view outlives the resume and the free"
        assert not copies or copies[0] is None or torch.equal(copies[0], expected)
        tms.resume("leased")
        del view
    expect_raises(
        tms_package.InvalidArgumentError,
        lambda: tms.region("both", enable_cpu_backup=True, enable_disk_backup=True).__enter__(),
        "together are refused",
    )
    expect_raises(
        tms_package.InvalidArgumentError, lambda: tms.region("be", cpu_backup_backend="mmap").__enter__(), "enable_cpu_backup"
    )


def cuda_graph():
    """Pausing a graph's tag frees its >= 3 GiB of intermediates; replay after resume is right."""
    n = GIB // 4  # float32 elements: 1 GiB per tensor
    static_x = torch.ones(n, device="cuda")
    graph = torch.cuda.CUDAGraph()
    with tms.cuda_graph(graph, tag="graph"):
        a = static_x * 2
        b = a + 1
        c = b * a
        d = c - b  # a, b, c, d: 4 GiB of intermediates held by the graph's pool
        static_out = d[:1024].clone()
    del a, b, c, d
    graph.replay()
    assert bool((static_out == 3.0).all())

    active = free_bytes()
    tms.pause("graph")
    released = free_bytes() - active
    assert released >= 3 * GIB, f"pausing the graph released only {released / GIB:.2f} GiB"
    tms.resume("graph")
    static_x.fill_(2.0)
    graph.replay()
    assert bool((static_out == 15.0).all()), "replay after resume computed the wrong values"


def rl_loop():
    """Weights with backup, KV cache without, a graph; the trainer uses the freed memory in between."""
    generator = torch.Generator(device="cuda").manual_seed(1)
    with tms.region("weights", enable_cpu_backup=True):
        weights = torch.randn(4096, 4096, device="cuda", generator=generator)
    with tms.region("kv_cache"):
        kv_cache = torch.zeros(GIB // 4, device="cuda")
    static_in = torch.randn(16, 4096, device="cuda", generator=generator)
    torch.relu(static_in @ weights)  # warm up cuBLAS outside the capture
    graph = torch.cuda.CUDAGraph()
    with tms.cuda_graph(graph, tag="cuda_graph"):
        static_out = torch.relu(static_in @ weights)
    expected_weights = weights.cpu()

    for step in range(3):
        before_pause = free_bytes()
        for tag in ("kv_cache", "weights", "cuda_graph"):  # SGLang's order
            tms.pause(tag)
        released = free_bytes() - before_pause
        assert released >= 0.9 * GIB
        # The trainer takes more than was free before the pause: only possible if pause really freed memory.
        trainer = torch.empty(before_pause + released // 2, dtype=torch.uint8, device="cuda")
        trainer.fill_(step)
        del trainer
        torch.cuda.empty_cache()
        for tag in ("cuda_graph", "weights", "kv_cache"):
            tms.resume(tag)

        assert torch.equal(weights.cpu(), expected_weights), f"weights changed in step {step}"
        weights.add_(1.0)  # in-place update, as after a training step
        expected_weights += 1.0
        kv_cache.fill_(float(step))
        graph.replay()
        torch.testing.assert_close(static_out, torch.relu(static_in @ weights))


def disable_in_region():
    """disable() inside a region keeps its allocations resident through a pause of the region's tag."""
    with tms.region("model"):
        before = torch.ones(64 * MIB, device="cuda")
        with tms.disable():
            assert not _settings.read().interesting
            resident = torch.full((64 * MIB,), 5.0, device="cuda")
        after = torch.ones(64 * MIB, device="cuda")
    assert owned(before) and owned(after), "the region stopped after disable()"
    assert not owned(resident), "disable() allocation went to the engine"
    assert _settings.read().interesting is False

    tms.pause("model")
    assert bool((resident == 5.0).all()), "resident tensor unreadable while the region is paused"
    tms.resume("model")
    after.fill_(2.0)
    assert float(after.sum()) == 2.0 * 64 * MIB


def trainer_wide():
    """Preload + TMS_INIT_ENABLE=1: every allocation is pauseable, disable() carves out resident ones."""
    x = torch.full((GIB // 4,), 3.0, device="cuda")
    with tms.disable():
        keep = torch.full((16 * MIB,), 9.0, device="cuda")
    assert owned(x), "TMS_INIT_ENABLE=1 did not make a plain allocation pauseable"
    assert not owned(keep)

    torch.cuda.empty_cache()  # cached free blocks of the default pool would be paused too
    active = free_bytes()
    tms.pause()
    assert free_bytes() - active >= 0.9 * GIB
    with tms.disable():  # work while paused must not touch paused memory
        assert bool((keep == 9.0).all())
    tms.resume()
    assert bool((x == 3.0).all()), "TMS_INIT_ENABLE_CPU_BACKUP=1 did not back x up"


def used_bytes(device=None):
    torch.cuda.synchronize(device)
    free, total = torch.cuda.mem_get_info(device)
    return total - free


# What may stay taken around disable() besides tensors still alive (driver
# bookkeeping, a kernel's first launch); the library this one replaces
# kept gigabytes there.
DISABLE_SLACK = 16 * MIB


def _disable_round(label):
    """2 GiB used and freed inside disable() go back to the driver; a live tensor stays valid."""
    baseline = used_bytes()
    with tms.disable():
        scratch = torch.empty(2 * GIB, dtype=torch.uint8, device="cuda")
        scratch.fill_(1)
        kept = torch.full((16 * MIB,), 4.0, device="cuda")  # 64 MiB, still alive after the block
        del scratch
    grown = used_bytes() - baseline
    print(f"{label}: device memory after disable() {grown / MIB:+.1f} MiB (64 MiB still alive)")
    assert grown <= 64 * MIB + DISABLE_SLACK, f"{label}: disable() kept {grown / MIB:.0f} MiB"
    assert not owned(kept), f"{label}: a disable() allocation went to the engine"
    assert bool((kept == 4.0).all()), f"{label}: the tensor alive after disable() changed"
    del kept
    torch.cuda.empty_cache()
    assert used_bytes() - baseline <= DISABLE_SLACK, f"{label}: freed tensor's memory never came back"


def disable_gives_memory_back():
    """Memory freed inside disable() is back with the driver when the block ends: in a region and bare."""
    torch.ones(MIB, device="cuda")  # first kernel launch and context setup outside the measurement
    with tms.region("model"):
        before = torch.ones(MIB, device="cuda")
        _disable_round("inside a region")
        after = torch.ones(MIB, device="cuda")
    assert owned(before) and owned(after), "the region stopped working after disable()"
    # Bare: plain process, or trainer-wide mode when started with TMS_INIT_ENABLE=1.
    _disable_round("trainer-wide" if _settings.read().interesting else "outside a region")
    tms.pause("model")
    tms.resume("model")
    after.fill_(2.0)
    assert float(after.sum()) == 2.0 * MIB


def retained_cpu_backup():
    """With retain_cpu_backup, get_cpu_backup after resume reads the retained copy at one host address."""
    tms.retain_cpu_backup = True
    expected = torch.arange(1024 * 1024, dtype=torch.float32)
    with tms.region("w", enable_cpu_backup=True):
        weights = expected.cuda()
    assert tms.get_cpu_backup(weights) is None, "never paused: nothing retained yet"
    address = None
    for step in range(3):
        tms.pause("w")
        tms.resume("w")
        shared = tms.get_cpu_backup(weights, zero_copy=True)
        assert shared is not None, f"step {step}: no retained backup after resume"
        address = address or shared.data_ptr()
        assert shared.data_ptr() == address, "the retained copy moved"
        assert torch.equal(shared, expected) and torch.equal(tms.get_cpu_backup(weights), expected)
        del shared
        weights.add_(1.0)  # a weight update between cycles
        expected += 1.0
    tms.retain_cpu_backup = False
    assert tms.get_cpu_backup(weights) is not None, "turning retention off must not free at once"
    tms.pause("w")
    tms.resume("w")
    assert tms.get_cpu_backup(weights) is None, "a non-retaining resume gives the backup back"
    assert torch.equal(weights.cpu(), expected)


def cuda_graph_default_tag():
    """cuda_graph() without a tag pauses with "default" (as the library this one replaces did)."""
    static_x = torch.ones(GIB // 8, device="cuda")
    graph = torch.cuda.CUDAGraph()
    with tms.cuda_graph(graph, cpu_backup_backend=None):
        doubled = static_x * 2
        static_out = (doubled + 1)[:1024].clone()
    del doubled
    graph.replay()
    tags = {s.tag for s in tms.stats() if s.active_bytes}
    assert tags == {"default"}, f"graph memory under tags {tags}"
    active = free_bytes()
    tms.pause("default")
    assert free_bytes() - active >= 0.4 * GIB, "pausing 'default' did not free the graph's memory"
    tms.resume("default")
    static_x.fill_(2.0)
    graph.replay()
    assert bool((static_out == 5.0).all())


def integration_names():
    """What patches reach into: _impl._binary_wrapper.cdll switches interception; hooks submodules work."""
    from torch_memory_saver.hooks.base import HookUtilBase
    from torch_memory_saver.testing_utils import get_and_print_gpu_memory, get_device

    assert tms._impl is None
    tms._ensure_initialized()
    cdll = tms._impl._binary_wrapper.cdll
    with tms.region("r"):
        cdll.tms_set_interesting_region(False)  # slime's DeepEP patch
        try:
            outside = torch.ones(64 * MIB, device="cuda")
        finally:
            cdll.tms_set_interesting_region(True)
        inside = torch.ones(64 * MIB, device="cuda")
    assert owned(inside)
    if tms.hook_mode == "preload":
        assert not owned(outside), "turning the region off through cdll did not suspend interception"
    util = HookUtilBase.create(tms.hook_mode)
    assert os.path.samefile(util.get_path_binary(), _library.loaded_path())
    if tms.hook_mode == "torch":
        pool = torch.cuda.MemPool(util.get_allocator())
        with torch.cuda.use_mem_pool(pool):
            pooled = torch.ones(MIB, device="cuda")
        assert owned(pooled), "HookUtilModeTorch's allocator is not the engine's"
    assert get_device() == "cuda"
    assert get_and_print_gpu_memory("integration_names") > 0


def trainer_wide_cdll_switch():
    """Trainer-wide mode: turning the region off through cdll keeps an allocation resident (DeepEP buffers)."""
    tms._ensure_initialized()
    cdll = tms._impl._binary_wrapper.cdll
    assert cdll.tms_get_interesting_region(), "TMS_INIT_ENABLE=1 should start threads inside a region"
    cdll.tms_set_interesting_region(False)
    try:
        buffer = torch.empty(64 * MIB, dtype=torch.uint8, device="cuda")
    finally:
        cdll.tms_set_interesting_region(True)
    plain = torch.empty(64 * MIB, dtype=torch.uint8, device="cuda")
    assert not owned(buffer) and owned(plain)


def two_devices():
    """One tag spanning two devices pauses and resumes on each device."""
    tensors = {}
    for device in (0, 1):
        with torch.cuda.device(device), tms.region("multi", enable_cpu_backup=True):
            tensors[device] = torch.full((GIB // 4,), float(device + 1), device="cuda")
    pointers = {d: t.data_ptr() for d, t in tensors.items()}
    active = {d: free_bytes(d) for d in tensors}
    tms.pause("multi")
    for device in tensors:
        assert free_bytes(device) - active[device] >= 0.9 * GIB, f"device {device} kept its memory"
    tms.resume("multi")
    for device, tensor in tensors.items():
        assert tensor.data_ptr() == pointers[device]
        assert bool((tensor == float(device + 1)).all()), f"device {device} lost its data"
    devices = {s.device for s in tms_package.stats() if s.tag == "multi" and s.allocations}
    assert devices == {0, 1}


def freed_outside_region():
    """A region tensor freed later (outside the region, after empty_cache) stays in its region's pool."""
    size = 256 * MIB
    with tms.region("scratch"):
        x = torch.empty(size, dtype=torch.uint8, device="cuda")
    pointer = x.data_ptr()
    del x
    torch.cuda.empty_cache()
    outside = torch.empty(size, dtype=torch.uint8, device="cuda")
    assert not owned(outside), "a region's cached block was handed to code outside any region"
    with tms.region("scratch"):
        again = torch.empty(size, dtype=torch.uint8, device="cuda")
    assert owned(again) and again.data_ptr() == pointer, "the region did not reuse its own cached block"

    tms.pause("scratch")
    outside.fill_(1)  # unaffected by the pause
    assert int(outside.sum(dtype=torch.int64)) == size
    del again  # freed while paused
    torch.cuda.empty_cache()
    tms.resume("scratch")


def active_bytes(tag):
    return sum(s.active_bytes for s in tms_package.stats() if s.tag == tag)


def nested_regions():
    """An inner region (or graph capture) takes the allocations; the outer one gets them back after."""
    size = 64 * MIB  # float32 elements: 256 MiB
    with tms.region("outer"):
        first = torch.ones(size, device="cuda")
        with tms.region("inner", enable_cpu_backup=True):
            inner = torch.full((size,), 4.0, device="cuda")
            scratch = torch.empty(size, device="cuda")
            del scratch  # cached in the inner pool: the outer region must not get it back
        graph = torch.cuda.CUDAGraph()
        with tms.cuda_graph(graph, tag="nested_graph"):  # torch empties the cache here: must not assert
            doubled = first * 2
        second = torch.ones(size, device="cuda")
    assert owned(first) and owned(inner) and owned(second) and owned(doubled)
    assert active_bytes("inner") >= 256 * MIB and active_bytes("nested_graph") >= 256 * MIB
    assert active_bytes("outer") >= 512 * MIB, "allocations after the inner region left the outer tag"

    tms.pause("inner")
    tms.pause("nested_graph")
    assert float(first.sum()) == size and float(second.sum()) == size, "outer tensors were paused"
    tms.resume("nested_graph")
    tms.resume("inner")
    assert bool((inner == 4.0).all())
    graph.replay()
    assert bool((doubled == 2.0).all())


def threads_share_a_tag():
    """Threads inside regions of the same tag at the same time each allocate pauseable memory."""
    both_inside = threading.Barrier(2)
    made, failures = {}, []

    def worker(index):
        try:
            with tms.region("threads", enable_cpu_backup=True):
                both_inside.wait(30)
                made[index] = torch.full((16 * MIB,), float(index + 1), device="cuda")
                both_inside.wait(30)
        except BaseException as error:  # reported by the main thread
            failures.append(error)
            both_inside.abort()

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert not failures, failures
    assert all(owned(t) for t in made.values())
    tms.pause("threads")
    tms.resume("threads")
    for index, tensor in made.items():
        assert bool((tensor == float(index + 1)).all())


def misuse():
    """Double pause, resume of nothing, unknown tags and a resume without memory never kill the process."""
    tms.pause("never-used")
    tms.resume("never-used")
    tms.resume()
    with tms.region("m", enable_cpu_backup=True):
        x = torch.full((GIB,), 7, dtype=torch.uint8, device="cuda")
    tms.pause("m")
    tms.pause("m")

    other = "torch" if tms.hook_mode == "preload" else "preload"
    expect_raises(tms_package.InvalidStateError, lambda: setattr(tms, "hook_mode", other))
    expect_raises(tms_package.InvalidArgumentError, lambda: tms.get_cpu_backup(torch.zeros(3)))
    expect_raises(ValueError, lambda: tms.region("m", cpu_backup_backend="tape").__enter__())

    hog = torch.empty(free_bytes() - 512 * MIB, dtype=torch.uint8, device="cuda")
    error = expect_raises(tms_package.OutOfMemoryError, lambda: tms.resume("m"))
    assert isinstance(error, torch.OutOfMemoryError)
    del hog
    torch.cuda.empty_cache()
    tms.resume("m")
    tms.resume("m")
    assert bool((x == 7).all()), "contents lost after a failed resume"


def expandable_segments():
    """With expandable_segments:True torch mode still routes every region allocation; preload refuses."""
    if tms.hook_mode == "preload":
        expect_raises(tms_package.ConfigError, lambda: tms.region("exp").__enter__(), "expandable_segments")
        return
    with tms.region("exp"):
        small = torch.ones(1000, device="cuda")
        medium = torch.ones(3 * MIB, device="cuda")
        large = torch.ones(128 * MIB, device="cuda")
    outside = torch.ones(128 * MIB, device="cuda")
    assert all(owned(t) for t in (small, medium, large)), "a region allocation bypassed the pool"
    assert not owned(outside)
    active = free_bytes()
    tms.pause("exp")
    assert free_bytes() - active >= 0.9 * 512 * MIB
    tms.resume("exp")
    large.fill_(2.0)
    assert float(large[-1]) == 2.0


def without_ld_preload():
    """Preload mode without LD_PRELOAD says what to do; torch mode needs no preload."""
    if tms.hook_mode == "preload":
        assert tms.enabled is False
        expect_raises(tms_package.ConfigError, lambda: tms.region("x").__enter__(), "configure_subprocess")
        return
    assert tms.enabled
    with tms.region("x"):
        x = torch.ones(1024, device="cuda")
    assert owned(x)


# ---- reliability: out-of-memory, misuse, exit ------------------------------------


def tag_state(tag):
    """(active_bytes, paused_bytes, backup_bytes) of `tag` over all devices."""
    entries = [s for s in tms_package.stats() if s.tag == tag]
    return (
        sum(s.active_bytes for s in entries),
        sum(s.paused_bytes for s in entries),
        sum(s.backup_bytes for s in entries),
    )


def blocker_leaving(free_target):
    """A tensor outside any region that leaves about `free_target` bytes of the device free."""
    torch.cuda.empty_cache()
    size = free_bytes() - free_target
    assert size > 0, f"only {free_bytes() / GIB:.2f} GiB free"
    blocker = torch.empty(size, dtype=torch.uint8, device="cuda")
    assert not owned(blocker)
    return blocker


NO_LEAK_TOLERANCE = 64 * MIB  # driver bookkeeping; a leaked allocation here is >= 256 MiB


def expect_resume_oom(tag, expected_free, needed_at_least):
    """resume(tag) raises out-of-memory naming bytes needed and free, and takes no device memory."""
    error = expect_raises(tms_package.OutOfMemoryError, lambda: tms.resume(tag))
    assert isinstance(error, torch.OutOfMemoryError), "not a torch.OutOfMemoryError"
    assert isinstance(error, MemoryError)
    message = str(error)
    needed = re.search(r"needs (\d+) bytes", message)
    free = re.search(r"(\d+) bytes \([0-9.]+ GiB\) free", message)
    assert needed and free, f"the message does not name bytes needed and free: {message}"
    assert int(needed.group(1)) >= needed_at_least, message
    assert abs(int(free.group(1)) - expected_free) <= 256 * MIB, f"free {expected_free} measured: {message}"
    assert "stays paused" in message, message
    after = free_bytes()
    assert abs(after - expected_free) <= NO_LEAK_TOLERANCE, (
        f"the failed resume changed free memory by {(after - expected_free) / MIB:.0f} MiB"
    )
    return message


def resume_oom():
    """Resume without memory: typed error naming the bytes, all stays paused and backed up, no leak."""
    generator = torch.Generator(device="cuda").manual_seed(5)
    with tms.region("oom_backed", enable_cpu_backup=True):
        backed = torch.randint(0, 2**31 - 1, (GIB // 4,), dtype=torch.int32, device="cuda", generator=generator)
        small = torch.randn(16 * MIB, device="cuda", generator=generator)  # 64 MiB, float bits
    with tms.region("oom_plain"):
        plain = torch.full((GIB,), 9, dtype=torch.uint8, device="cuda")
    pointers = [t.data_ptr() for t in (backed, small, plain)]
    expected_backed, expected_small_bits = backed.cpu(), small.view(torch.int32).cpu()
    # Blocks torch cached for temporaries (outside any region) would be given
    # back by the empty_cache() below and look like a difference.
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    active_free = free_bytes()

    tms.pause()
    states = {tag: tag_state(tag) for tag in ("oom_backed", "oom_plain")}
    paused_total = sum(state[1] for state in states.values())
    assert paused_total >= GIB * 2 + 64 * MIB and all(state[0] == 0 for state in states.values())
    assert states["oom_backed"][2] >= GIB + 60 * MIB and states["oom_plain"][2] == 0

    # Room for one 1 GiB allocation but not for all: resume takes some memory, then must give it back.
    blocker = blocker_leaving(GIB + GIB // 2)
    blocked_free = free_bytes()
    for attempt in range(2):
        message = expect_resume_oom(None, blocked_free, paused_total)
        assert {tag: tag_state(tag) for tag in states} == states, f"attempt {attempt} changed the state"
        copy = tms.get_cpu_backup(backed)
        assert copy is not None and torch.equal(copy, expected_backed), "the backup changed"
        assert torch.equal(tms.get_cpu_backup(small).view(torch.int32), expected_small_bits)
        assert tms.get_cpu_backup(plain) is None
    print("resume_oom message:", message)

    del blocker
    torch.cuda.empty_cache()
    tms.resume()
    assert [t.data_ptr() for t in (backed, small, plain)] == pointers
    assert torch.equal(backed.cpu(), expected_backed), "backed-up int32 contents not exact"
    assert torch.equal(small.view(torch.int32).cpu(), expected_small_bits), "backed-up float bits not exact"
    plain.fill_(4)
    assert int(plain.sum(dtype=torch.int64)) == 4 * GIB
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    drift = free_bytes() - active_free
    assert abs(drift) <= NO_LEAK_TOLERANCE, f"free memory after the resume differs by {drift / MIB:.0f} MiB"
    assert tag_state("oom_backed")[1] == 0 and tag_state("oom_plain")[1] == 0


def resume_oom_one_tag():
    """A failed resume of one tag leaves it and every other tag as they were; another tag can still resume."""
    generator = torch.Generator(device="cuda").manual_seed(6)
    with tms.region("big", enable_cpu_backup=True):
        big = torch.randint(0, 2**31 - 1, (GIB // 4,), dtype=torch.int32, device="cuda", generator=generator)
    with tms.region("fits", enable_cpu_backup=True):
        fits = torch.randint(0, 2**31 - 1, (64 * MIB,), dtype=torch.int32, device="cuda", generator=generator)
    with tms.region("bystander"):
        bystander = torch.full((64 * MIB,), 7, dtype=torch.int32, device="cuda")
    expected_big, expected_fits = big.cpu(), fits.cpu()
    big_pointer = big.data_ptr()

    tms.pause("big")
    tms.pause("fits")
    states = {tag: tag_state(tag) for tag in ("big", "fits", "bystander")}
    blocker = blocker_leaving(GIB // 2)  # "fits" (256 MiB) can come back, "big" (1 GiB) cannot
    blocked_free = free_bytes()

    expect_resume_oom("big", blocked_free, GIB)
    assert {tag: tag_state(tag) for tag in states} == states, "a failed resume of one tag changed some tag"
    assert torch.equal(tms.get_cpu_backup(big), expected_big)
    assert torch.equal(tms.get_cpu_backup(fits), expected_fits)
    assert bool((bystander == 7).all()), "the active bystander tag was disturbed"

    tms.resume("fits")  # fits next to the blocker
    assert torch.equal(fits.cpu(), expected_fits)
    assert tag_state("big") == states["big"], "resuming another tag touched the failed one"

    del blocker
    torch.cuda.empty_cache()
    tms.resume("big")
    assert big.data_ptr() == big_pointer
    assert torch.equal(big.cpu(), expected_big), "contents not exact after the failed resume"
    assert bool((bystander == 7).all())


def expect_transitions_refused(active_tag, paused_tag, text):
    """Pausing `active_tag` or everything, resuming `paused_tag` or everything: InvalidStateError saying `text`."""
    for action in (
        lambda: tms.pause(active_tag),
        lambda: tms.pause(),
        lambda: tms.resume(paused_tag),
        lambda: tms.resume(),
    ):
        error = expect_raises(tms_package.InvalidStateError, action, text)
        assert isinstance(error, RuntimeError)


def active_and_paused(prefix):
    """Tags PREFIX_active (16 Mi floats of 3.0) and PREFIX_paused (of 4.0, paused), backed up; and their states."""
    with tms.region(f"{prefix}_active", enable_cpu_backup=True):
        active = torch.full((16 * MIB,), 3.0, device="cuda")
    with tms.region(f"{prefix}_paused", enable_cpu_backup=True):
        paused = torch.full((16 * MIB,), 4.0, device="cuda")
    tms.pause(f"{prefix}_paused")
    return active, paused, {tag: tag_state(tag) for tag in (f"{prefix}_active", f"{prefix}_paused")}


def capture_misuse():
    """pause()/resume() while capturing a graph raise InvalidStateError; the capture goes on intact."""
    active, paused, states = active_and_paused("cap")
    static_in = torch.ones(MIB, device="cuda")

    def misuse_inside_capture():
        expect_transitions_refused("cap_active", "cap_paused", "outside the capture")

    graphs = []
    for capture in ("torch_memory_saver.cuda_graph", "torch.cuda.graph"):
        graph = torch.cuda.CUDAGraph()
        context = (
            tms.cuda_graph(graph, tag="cap_graph") if capture.startswith("torch_memory_saver")
            else torch.cuda.graph(graph)
        )
        with context:
            doubled = static_in * 2
            misuse_inside_capture()
            out = doubled + active[: static_in.numel()]  # reads a region tensor inside the graph
        graphs.append((capture, graph, out))

    assert {tag: tag_state(tag) for tag in states} == states, "a transition ran during the capture"
    static_in.fill_(5.0)
    for capture, graph, out in graphs:
        graph.replay()
        assert bool((out == 13.0).all()), f"graph captured with {capture} computes the wrong values"
    tms.resume("cap_paused")
    assert bool((paused == 4.0).all())
    tms.pause("cap_graph")
    tms.resume("cap_graph")
    static_in.fill_(1.0)
    graphs[0][1].replay()
    assert bool((graphs[0][2] == 5.0).all())


def blocking_stream():
    """A stream made with the driver's default flags (blocking), which torch never creates itself."""
    cuda = ctypes.CDLL("libcuda.so.1")
    handle = ctypes.c_void_p()
    torch.cuda.init()
    assert cuda.cuStreamCreate(ctypes.byref(handle), 0) == 0, "cuStreamCreate failed"  # CU_STREAM_DEFAULT
    return torch.cuda.ExternalStream(handle.value)


def capture_on_other_thread():
    """pause()/resume() while another thread captures a graph in global mode: InvalidStateError, capture intact.

    Three captures: torch.cuda.graph on a blocking stream (the engine sees it
    through the driver's legacy stream), torch_memory_saver.cuda_graph on
    torch's own non-blocking stream (the package counts it), and
    torch_memory_saver.cuda_graph on a blocking stream (both).
    """
    active, paused, states = active_and_paused("oth")
    static_in = torch.ones(MIB, device="cuda")
    torch.relu(static_in)  # warm up outside any capture
    torch.cuda.synchronize()

    cases = [
        ("torch.cuda.graph, blocking stream", lambda g, s: torch.cuda.graph(g, stream=s), blocking_stream()),
        ("tms.cuda_graph, torch stream", lambda g, s: tms.cuda_graph(g, tag="oth_graph"), None),
        ("tms.cuda_graph, blocking stream", lambda g, s: tms.cuda_graph(g, stream=s, tag="oth_graph"),
         blocking_stream()),
    ]
    graphs = []
    for name, make_context, stream in cases:
        graph = torch.cuda.CUDAGraph()
        started, finish = threading.Event(), threading.Event()
        result, failure = {}, []

        def capture():
            try:
                torch.cuda.set_device(0)
                with make_context(graph, stream):
                    doubled = static_in * 2
                    started.set()
                    assert finish.wait(60), "the main thread never let the capture finish"
                    result["out"] = doubled + active[: static_in.numel()]
            except BaseException as error:  # noqa: BLE001 - reported by the main thread
                failure.append(error)
                started.set()

        thread = threading.Thread(target=capture)
        thread.start()
        assert started.wait(60), f"{name}: the capture never started"
        try:
            expect_transitions_refused("oth_active", "oth_paused", "capture")
        finally:
            finish.set()
            thread.join()
        assert not failure, f"{name}: the capture failed: {failure[0]!r}"
        graphs.append((name, graph, result["out"]))

    assert {tag: tag_state(tag) for tag in states} == states, "a transition ran during a capture"
    static_in.fill_(5.0)
    for name, graph, out in graphs:
        graph.replay()
        torch.cuda.synchronize()
        assert bool((out == 13.0).all()), f"graph captured with {name} computes the wrong values"
    tms.resume("oth_paused")
    assert bool((paused == 4.0).all())
    tms.pause("oth_graph")
    tms.resume("oth_graph")


def get_cpu_backup_misuse():
    """get_cpu_backup: None outside regions and without backup; InvalidArgumentError for non-CUDA input."""
    plain = torch.arange(MIB, dtype=torch.float32, device="cuda")  # not in any region
    with tms.region("gcb_none"):
        unbacked = torch.ones(MIB, device="cuda")
    with tms.region("gcb_backed", enable_cpu_backup=True):
        backed = torch.arange(MIB, dtype=torch.float32, device="cuda")
    assert tms.get_cpu_backup(plain) is None
    assert tms.get_cpu_backup(backed) is None, "an active tensor has no backup"

    tms.pause("gcb_none")
    tms.pause("gcb_backed")
    for zero_copy in (False, True):
        assert tms.get_cpu_backup(plain, zero_copy=zero_copy) is None, "memory outside regions"
        assert tms.get_cpu_backup(unbacked, zero_copy=zero_copy) is None, "paused without backup"
    assert tms.get_cpu_backup(backed[:0]) is None, "an empty view has no bytes to back up"
    assert torch.equal(tms.get_cpu_backup(backed[10:20]), torch.arange(10, 20, dtype=torch.float32))
    for bad in (torch.zeros(4), [1.0, 2.0], None, 3):
        error = expect_raises(tms_package.InvalidArgumentError, lambda: tms.get_cpu_backup(bad), "CUDA tensor")
        assert isinstance(error, ValueError)
    tms.resume()
    assert float(unbacked.fill_(2.0).sum()) == 2.0 * MIB
    assert torch.equal(backed.cpu(), torch.arange(MIB, dtype=torch.float32))


def free_while_paused():
    """del of a paused tensor works; resume works; its memory is reused, nothing grows."""
    size = 256 * MIB
    with tms.region("fwp", enable_cpu_backup=True):
        doomed = torch.full((size,), 1, dtype=torch.uint8, device="cuda")
        kept = torch.full((64 * MIB,), 2, dtype=torch.uint8, device="cuda")
    engine_bytes = sum(tag_state("fwp")[:2])
    allocated = torch.cuda.memory_allocated()

    tms.pause("fwp")
    del doomed
    assert torch.cuda.memory_allocated() <= allocated - size, "freeing the paused tensor was not accounted"
    torch.cuda.empty_cache()  # whatever torch does with the freed paused block, it must not crash
    tms.resume("fwp")
    assert bool((kept == 2).all()), "the tensor that stayed lost its backup"
    assert sum(tag_state("fwp")[:2]) <= engine_bytes

    with tms.region("fwp", enable_cpu_backup=True):
        again = torch.full((size,), 5, dtype=torch.uint8, device="cuda")
    assert owned(again)
    assert sum(tag_state("fwp")[:2]) <= engine_bytes, "the freed paused memory was not reused"
    tms.pause("fwp")
    tms.resume("fwp")
    assert bool((again == 5).all()) and bool((kept == 2).all())


def fork_child():
    """A fork()ed child gets InvalidStateError naming fork from the library; the parent goes on."""
    with tms.region("forked", enable_cpu_backup=True):
        x = torch.full((64 * MIB,), 6.0, device="cuda")
    tms.pause("forked")
    tms.resume("forked")
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: no CUDA here; report through the exit status
        problems = []
        for name, action in [
            ("pause", lambda: tms.pause("forked")),
            ("resume", lambda: tms.resume()),
            ("stats", tms.stats),
            ("region", lambda: tms.region("forked").__enter__()),
        ]:
            try:
                action()
                problems.append(f"{name}: no error")
            except tms_package.InvalidStateError as error:
                if "fork" not in str(error):
                    problems.append(f"{name}: {error}")
            except BaseException as error:  # noqa: BLE001 - reported through the exit status
                problems.append(f"{name}: {type(error).__name__}: {error}")
        if problems:
            sys.stderr.write(f"child problems: {problems}\n")
            sys.stderr.flush()
        os._exit(1 if problems else 0)  # a child of a CUDA process must not run CUDA teardown
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status), f"the child was killed by signal {os.WTERMSIG(status)}"
    assert os.WEXITSTATUS(status) == 0, "the child did not get InvalidStateError naming fork"
    tms.pause("forked")
    tms.resume("forked")
    assert bool((x == 6.0).all()), "the parent lost data"


def thread_region_isolation():
    """A region applies to the thread that entered it only, both ways."""
    made = {}

    def outside_worker():
        made["settings"] = _settings.read()
        made["outside"] = torch.full((16 * MIB,), 2.0, device="cuda")

    with tms.region("iso"):
        mine = torch.ones(16 * MIB, device="cuda")
        worker = threading.Thread(target=outside_worker)
        worker.start()
        worker.join(60)
    assert not worker.is_alive()
    assert owned(mine)
    assert not owned(made["outside"]), "a thread started inside a region allocated into it"
    assert not made["settings"].interesting and made["settings"].tag == "default"

    inside, release = threading.Event(), threading.Event()

    def inside_worker():
        with tms.region("iso_worker"):
            made["inside"] = torch.full((16 * MIB,), 3.0, device="cuda")
            inside.set()
            release.wait(60)

    worker = threading.Thread(target=inside_worker)
    worker.start()
    assert inside.wait(60)
    made["main"] = torch.full((16 * MIB,), 4.0, device="cuda")  # while the worker is inside its region
    release.set()
    worker.join(60)
    assert owned(made["inside"]) and not owned(made["main"])
    assert _settings.read().interesting is False

    tms.pause("iso")
    tms.pause("iso_worker")
    assert bool((made["outside"] == 2.0).all()) and bool((made["main"] == 4.0).all())
    tms.resume()


def threads_alloc_while_pausing():
    """Eight threads allocate, check and free tensors in regions while the main thread pauses another tag."""
    generator = torch.Generator(device="cuda").manual_seed(8)
    with tms.region("paused_by_main", enable_cpu_backup=True):
        other = torch.randint(0, 2**31 - 1, (64 * MIB,), dtype=torch.int32, device="cuda", generator=generator)
    expected = other.clone()  # outside any region
    stop = threading.Event()
    running = threading.Semaphore(0)  # released once by each worker after its first tensor
    failures, rounds = [], {}

    def worker(index):
        done = 0
        try:
            with tms.region(f"worker{index}", enable_cpu_backup=index % 2 == 0):
                live = []
                while not stop.is_set() or done < 10:
                    value = index * 100_000 + done
                    tensor = torch.full(((1 + done % 4) * 4 * MIB,), value, dtype=torch.int32, device="cuda")
                    live.append((tensor, value))
                    if done == 0:
                        running.release()
                    if len(live) > 3:
                        old, old_value = live.pop(0)
                        assert bool((old == old_value).all()), f"worker {index}: tensor {old_value} corrupted"
                        del old
                    done += 1
                for tensor, value in live:
                    assert bool((tensor == value).all()), f"worker {index}: tensor {value} corrupted"
        except BaseException as error:  # reported by the main thread
            failures.append(error)
        finally:
            rounds[index] = done

    workers = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(8)]
    for w in workers:
        w.start()
    try:
        for _ in workers:  # the pauses below overlap every worker's allocations
            assert running.acquire(timeout=60) or failures, "a worker did not start"
            assert not failures, failures
        for cycle in range(30):
            tms.pause("paused_by_main")
            if cycle % 10 == 0:
                assert torch.equal(tms.get_cpu_backup(other), expected.cpu()), f"backup wrong in cycle {cycle}"
            tms.resume("paused_by_main")
            assert torch.equal(other, expected), f"contents wrong after resume in cycle {cycle}"
            assert not failures, failures
    finally:
        stop.set()
        deadline = time.monotonic() + 120
        for w in workers:
            w.join(max(0.0, deadline - time.monotonic()))
    assert not [w.name for w in workers if w.is_alive()], "worker threads stuck (deadlock?)"
    assert not failures, failures
    assert min(rounds.values()) >= 10, rounds
    for index in range(8):  # every worker's memory is pauseable under its own tag
        tms.pause(f"worker{index}")
        tms.resume(f"worker{index}")
    print("threads_alloc_while_pausing rounds per worker:", sorted(rounds.values()))


def bad_env():
    """TMS_INIT_CPU_BACKUP_BACKEND=bogus: region()/pause()/resume() raise ConfigError naming it."""
    variable = "TMS_INIT_CPU_BACKUP_BACKEND"
    assert os.environ.get(variable) == "bogus", "run this scenario with TMS_INIT_CPU_BACKUP_BACKEND=bogus"
    for action in (lambda: tms.region("bad").__enter__(), tms.pause, tms.resume, tms.stats):
        error = expect_raises(tms_package.ConfigError, action, variable)
        assert "pinned, mmap" in str(error), str(error)
    plain = torch.ones(MIB, device="cuda")  # the rest of the process is unaffected
    assert float(plain.sum()) == MIB and not _settings.read().interesting


# Alive until interpreter shutdown: the exit scenarios end the process with these allocated.
_KEPT_UNTIL_EXIT = []


def exit_with_everything():
    """Ends the process with memory active, paused, on host (pinned, mmap, retained) and on disk, and a graph."""
    directory = os.environ["SCENARIO_DISK_DIR"]
    tms.set_disk_backup_dir(directory)
    size = 16 * MIB  # float32: 64 MiB per tensor
    tensors = {}
    for tag, kwargs in [
        ("exit_active", {}),
        ("exit_retained", {"enable_cpu_backup": True}),
        ("exit_plain", {}),
        ("exit_pinned", {"enable_cpu_backup": True, "cpu_backup_backend": "pinned"}),
        ("exit_mmap", {"enable_cpu_backup": True, "cpu_backup_backend": "mmap"}),
        ("exit_disk", {"enable_disk_backup": True}),
    ]:
        with tms.region(tag, **kwargs):
            tensors[tag] = torch.full((size,), 1.5, device="cuda")
    static_in = torch.ones(size, device="cuda")
    graph = torch.cuda.CUDAGraph()
    with tms.cuda_graph(graph, tag="exit_graph"):
        graph_out = static_in * 2
    graph.replay()
    outside = torch.ones(size, device="cuda")

    tms.retain_cpu_backup = True  # exit_retained keeps its host buffer while active
    tms.pause("exit_retained")
    tms.resume("exit_retained")
    for tag in ("exit_plain", "exit_pinned", "exit_mmap", "exit_disk", "exit_graph"):
        tms.pause(tag)
    # Backup files have no name: count this process's descriptors on files in the directory.
    print("backup files while paused:", len(open_backup_files(directory)), flush=True)
    _KEPT_UNTIL_EXIT.extend([tensors, static_in, graph, graph_out, outside])


def exit_thread_in_region():
    """Like exit_with_everything, with a daemon thread blocked inside region() (its tag paused) at exit."""
    exit_with_everything()
    inside = threading.Event()

    def stays_inside():
        with tms.region("exit_thread", enable_cpu_backup=True):
            _KEPT_UNTIL_EXIT.append(torch.full((16 * MIB,), 2.5, device="cuda"))
            inside.set()
            threading.Event().wait()  # never returns: the thread is inside the region at exit

    threading.Thread(target=stays_inside, daemon=True).start()
    assert inside.wait(60), "the thread did not enter its region"
    tms.pause("exit_thread")
    if os.environ.get("SCENARIO_UNDO_KEEP_FOREVER") == "1":
        # Control run: the package as it was before keep_forever(). The pools
        # stay referenced by the singleton, so they die when interpreter
        # shutdown clears the module globals, with this thread's route active.
        from torch_memory_saver import _pools

        _pools._KEPT_FOREVER.clear()


def rss_bytes():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def anonymous_rss():
    """RssAnon of this process in bytes: host backups are anonymous memory."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no RssAnon in /proc/self/status")


def host_released_at_resume():
    """When a non-retaining resume returns, the host backups it restored are back with the OS.

    RssAnon is read the moment resume returns (no sleep, no drain): a release
    left to a background thread would still hold the memory. Both host
    memory kinds, one large tensor and many small ones (they share host
    blocks), 3 cycles each, contents exact. A resume of one tag gives back
    that tag's backups even when another tag paused with it keeps its own;
    a retained backup stays.
    """
    slack = 64 * MIB  # torch, the driver and the allocator move a little
    size = 2 * GIB
    layouts = {"large": [size], "small": [8 * MIB] * (size // (8 * MIB))}
    generator = torch.Generator(device="cuda").manual_seed(5)
    for backend in ("pinned", "mmap"):
        for layout, sizes in layouts.items():
            tag = f"w_{backend}_{layout}"
            with tms.region(tag, enable_cpu_backup=True, cpu_backup_backend=backend):
                tensors = [
                    torch.randint(-(2**31), 2**31 - 1, (n // 4,), dtype=torch.int32, device="cuda", generator=generator)
                    for n in sizes
                ]
            references = [t.clone() for t in tensors]  # outside any region
            for cycle in range(3):
                tms.pause(tag)
                paused = anonymous_rss()
                start = time.perf_counter()
                tms.resume(tag)
                seconds = time.perf_counter() - start
                resumed = anonymous_rss()
                print(
                    f"{backend} {layout} cycle {cycle}: resume {seconds * 1e3:.1f} ms, RssAnon paused "
                    f"{paused / MIB:.0f} MiB, at resume return {resumed / MIB:.0f} MiB",
                    flush=True,
                )
                assert resumed + size <= paused + slack, (
                    f"{backend} {layout} cycle {cycle}: RssAnon {paused / MIB:.0f} -> {resumed / MIB:.0f} MiB at "
                    f"the return of resume; expected down by {size / MIB:.0f} MiB"
                )
                for tensor, reference in zip(tensors, references):
                    assert torch.equal(tensor, reference), f"{backend} {layout} cycle {cycle}: contents changed"
            del tensors, references
            torch.cuda.empty_cache()

    # Two tags paused together (one acquire of host memory): resuming one
    # gives back all of its backups, the other's stay.
    with tms.region("first", enable_cpu_backup=True):
        first = [torch.ones(2 * MIB, dtype=torch.int32, device="cuda") for _ in range(64)]  # 8 MiB each
    with tms.region("second", enable_cpu_backup=True):
        second = [torch.full((2 * MIB,), 7, dtype=torch.int32, device="cuda") for _ in range(64)]
    before = anonymous_rss()
    tms.pause()
    paused = anonymous_rss()
    tms.resume("first")
    resumed = anonymous_rss()
    print(f"two tags: RssAnon {before / MIB:.0f} MiB, paused {paused / MIB:.0f}, first resumed {resumed / MIB:.0f}")
    assert resumed + 512 * MIB <= paused + slack, f"RssAnon {paused / MIB:.0f} -> {resumed / MIB:.0f} MiB"
    assert resumed + slack >= before + 512 * MIB, "the other tag's backups were given back too"
    tms.resume()  # the second tag (and any cached block of the tags above)
    assert all(int(t.sum()) == 2 * MIB for t in first) and all(int(t.sum()) == 14 * MIB for t in second)
    del first, second
    torch.cuda.empty_cache()

    # A retained backup is unchanged by this: it stays after resume.
    tms.retain_cpu_backup = True
    with tms.region("kept", enable_cpu_backup=True):
        kept = torch.ones(GIB // 4, dtype=torch.int32, device="cuda")
    tms.pause("kept")
    paused = anonymous_rss()
    tms.resume("kept")
    assert anonymous_rss() + slack >= paused, "a retained backup was given back"
    assert tms.get_cpu_backup(kept) is not None, "a retained backup was given back"
    tms.retain_cpu_backup = False
    tms.pause("kept")
    tms.resume("kept")
    assert int(kept.sum()) == GIB // 4


def soak():
    """SOAK_CYCLES (default 200) pause/resume cycles of weights (CPU backup), KV cache and a graph.

    Between cycles: a trainer overwrites the freed memory, weights change in
    place on even cycles, the graph is replayed. Every cycle checks contents
    exactly and records device free memory after pause and after resume and
    host RSS; the levels must stay flat. Prints one SOAK line with the figures.
    """
    cycles = int(os.environ.get("SOAK_CYCLES", "200"))
    warmup = min(2, cycles - 1)
    generator = torch.Generator(device="cuda").manual_seed(9)
    with tms.region("weights", enable_cpu_backup=True):
        weights = torch.randint(-(2**30), 2**30, (128 * MIB,), dtype=torch.int32, device="cuda", generator=generator)
    with tms.region("kv_cache"):
        kv_cache = torch.empty(GIB, dtype=torch.uint8, device="cuda")
    reference = weights.clone()  # outside any region
    n = 16 * MIB  # the graph's intermediates: two int64 tensors of 128 MiB
    static_in = torch.arange(n, dtype=torch.int64, device="cuda")

    def compute(w):
        return (w[:n].to(torch.int64) * 3 + static_in).sum()

    compute(weights)
    graph = torch.cuda.CUDAGraph()
    with tms.cuda_graph(graph, tag="cuda_graph"):
        static_out = compute(weights)
    pointers = (weights.data_ptr(), kv_cache.data_ptr(), static_out.data_ptr())

    def settled_free():
        torch.cuda.empty_cache()  # torch's own cache is not what is measured
        return free_bytes()

    baseline = settled_free()
    paused_free, resumed_free, rss, pause_s, resume_s, rss_paused = [], [], [], [], [], []
    trainer_bytes = GIB
    started = time.perf_counter()
    for cycle in range(cycles):
        t0 = time.perf_counter()
        for tag in ("kv_cache", "weights", "cuda_graph"):  # SGLang's order
            tms.pause(tag)
        pause_s.append(time.perf_counter() - t0)
        paused_free.append(settled_free())
        rss_paused.append(rss_bytes())
        trainer = torch.empty(trainer_bytes, dtype=torch.uint8, device="cuda")
        trainer.fill_(cycle % 256)  # overwrite the memory just released
        del trainer
        torch.cuda.empty_cache()
        t0 = time.perf_counter()
        for tag in ("cuda_graph", "weights", "kv_cache"):
            tms.resume(tag)
        resume_s.append(time.perf_counter() - t0)
        # No drain: resume gives the host backups back before it returns.
        resumed_free.append(settled_free())
        rss.append(rss_bytes())

        assert (weights.data_ptr(), kv_cache.data_ptr(), static_out.data_ptr()) == pointers
        assert torch.equal(weights, reference), f"weights not exact after resume in cycle {cycle}"
        value = cycle % 251
        kv_cache.fill_(value)
        assert int(kv_cache.sum(dtype=torch.int64)) == value * GIB, f"KV cache unusable in cycle {cycle}"
        graph.replay()
        assert int(static_out) == int(compute(reference)), f"graph output wrong in cycle {cycle}"
        if cycle % 2 == 0:  # a training step changed the weights in place
            weights.add_(1)
            reference.add_(1)
        if (cycle + 1) % 100 == 0:
            print(
                f"soak cycle {cycle + 1}/{cycles}: {time.perf_counter() - started:.1f} s, free after pause "
                f"{paused_free[-1] / GIB:.3f} GiB, after resume {resumed_free[-1] / GIB:.3f} GiB, "
                f"rss {rss[-1] / MIB:.0f} MiB",
                flush=True,
            )
    seconds = time.perf_counter() - started

    def spread(values):
        return max(values[warmup:]) - min(values[warmup:])

    released = min(p - r for p, r in zip(paused_free, resumed_free))  # weights + KV cache + graph pool
    print(
        f"SOAK hook_mode={tms.hook_mode} cycles={cycles} seconds={seconds:.1f} "
        f"free_after_pause_GiB min={min(paused_free) / GIB:.3f} max={max(paused_free) / GIB:.3f} "
        f"free_after_resume_GiB min={min(resumed_free) / GIB:.3f} max={max(resumed_free) / GIB:.3f} "
        f"baseline_free_GiB={baseline / GIB:.3f} released_min_GiB={released / GIB:.3f} "
        f"spread_after_warmup_MiB pause={spread(paused_free) / MIB:.1f} resume={spread(resumed_free) / MIB:.1f} "
        f"rss_MiB first={rss[warmup] / MIB:.0f} last={rss[-1] / MIB:.0f} max={max(rss) / MIB:.0f} "
        f"rss_paused_max_MiB={max(rss_paused) / MIB:.0f} "
        f"pause_ms median={sorted(pause_s)[len(pause_s) // 2] * 1e3:.1f} max={max(pause_s) * 1e3:.1f} "
        f"resume_ms median={sorted(resume_s)[len(resume_s) // 2] * 1e3:.1f} max={max(resume_s) * 1e3:.1f}",
        flush=True,
    )
    assert released >= 1.5 * GIB, f"a pause released only {released / GIB:.2f} GiB"
    assert spread(paused_free) <= NO_LEAK_TOLERANCE, "device memory after pause drifts between cycles"
    assert spread(resumed_free) <= NO_LEAK_TOLERANCE, "device memory after resume drifts between cycles"
    assert abs(resumed_free[-1] - baseline) <= NO_LEAK_TOLERANCE, "device memory after resume left its baseline"
    assert rss[-1] - rss[warmup] <= 128 * MIB, f"host RSS grew by {(rss[-1] - rss[warmup]) / MIB:.0f} MiB"


def non_blocking_resume():
    """resume(non_blocking=True) returns mapped; wait() on the host or on a stream orders every use after
    the restore; the host memory is back when wait() returns; a pause in flight waits; contents exact."""
    slack = 64 * MIB
    generator = torch.Generator(device="cuda").manual_seed(11)
    with tms.region("nb_params", enable_cpu_backup=True):
        params = torch.randn(GIB // 4, device="cuda", generator=generator)
    with tms.region("nb_opt", enable_cpu_backup=True):
        opt = [torch.randn(8 * MIB, device="cuda", generator=generator) for _ in range(64)]  # 2 GiB
    params_ref = params.clone()
    opt_ref = [t.clone() for t in opt]
    side = torch.cuda.Stream()
    for cycle, how in enumerate(["host", "current_stream", "side_stream", "pause_in_flight"]):
        tms.pause("nb_params")
        tms.pause("nb_opt")
        tms.resume("nb_params")
        paused_rss = anonymous_rss()
        start = time.perf_counter()
        tms.resume("nb_opt", non_blocking=True)
        returned = time.perf_counter() - start
        if how == "host":
            tms.wait("nb_opt")
            waited = time.perf_counter() - start
            rss = anonymous_rss()
            print(f"cycle {cycle}: returned in {returned * 1e3:.1f} ms, restored in {waited * 1e3:.1f} ms", flush=True)
            assert rss + 2 * GIB <= paused_rss + slack, (
                f"RssAnon {paused_rss / MIB:.0f} -> {rss / MIB:.0f} MiB when wait() returned"
            )
            same = all(torch.equal(t, r) for t, r in zip(opt, opt_ref))
        elif how == "current_stream":
            tms.wait("nb_opt", stream=torch.cuda.current_stream())
            same = all(torch.equal(t, r) for t, r in zip(opt, opt_ref))  # queued behind the restore
        elif how == "side_stream":
            with torch.cuda.stream(side):
                tms.wait("nb_opt", stream=side)
                sums = torch.stack([t.sum() for t in opt])
            side.synchronize()
            same = torch.equal(sums, torch.stack([r.sum() for r in opt_ref]))
        else:
            tms.pause("nb_opt")  # waits for the restore under it, then saves the restored data
            tms.resume("nb_opt")
            same = all(torch.equal(t, r) for t, r in zip(opt, opt_ref))
        assert same, f"cycle {cycle} ({how}): contents differ after the restore"
        assert torch.equal(params, params_ref), f"cycle {cycle}: params changed"
    tms.wait()
    assert sum(s.backup_bytes for s in tms_package.stats() if s.tag == "nb_opt") == 0


def main(name, hook_mode):
    tms.hook_mode = hook_mode
    scenario = globals()[name]
    try:
        scenario()
    except BaseException:
        traceback.print_exc()
        return 1
    print("SCENARIO OK")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
