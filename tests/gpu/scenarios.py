"""GPU scenarios, each run in its own process: ``python scenarios.py NAME HOOK_MODE``.

A fresh process per scenario gives each one a clean engine and caching
allocator, and lets preload mode start with the library in LD_PRELOAD
(test_gpu_scenarios.py builds the environment). A scenario passes when it
returns; the runner then prints SCENARIO OK and exits 0.
"""

import os
import sys
import tempfile
import threading
import traceback

import torch
import torch_memory_saver as tms_package
from torch_memory_saver import _library, _settings
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
        assert len(os.listdir(directory)) == 1, "pause wrote no backup file"
        assert tms.get_cpu_backup(data) is None
        scribble = torch.full((256 * MIB,), 0xCD, dtype=torch.uint8, device="cuda")
        del scribble
        torch.cuda.empty_cache()
        tms.resume("disk")
        assert torch.equal(data.cpu(), expected), "disk backup not exact"
        assert os.listdir(directory) == [], "resume left the backup file behind"


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
