"""Threads at the Python level on the simulated driver.

Python threads call the engine through ctypes, which releases the GIL, so
these calls really run at the same time. Every wait has a timeout: a
deadlock fails the test instead of hanging it. On the simulated driver a
paused range is PROT_NONE, so a worker touching memory that is paused under
it would crash the process: workers only touch their own tags.
"""

import ctypes
import random
import threading
import time

from simhelpers import MIB, device_free, pattern
from torch_memory_saver import TorchMemorySaver, _library, _settings, stats
from torch_memory_saver._policy import BackupPolicy

DEADLINE_S = 60  # far above the few seconds these take; reaching it means a deadlock

_PATTERNS = {}


def cached_pattern(size, seed):
    key = (size, seed)
    if key not in _PATTERNS:
        _PATTERNS[key] = pattern(size, seed)
    return _PATTERNS[key]


def run_threads(targets):
    """Start daemon threads on `targets`, wait for all, re-raise the first failure."""
    failures = []

    def guarded(target):
        try:
            target()
        except BaseException as error:  # reported below
            failures.append(error)

    threads = [threading.Thread(target=guarded, args=(t,), daemon=True) for t in targets]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + DEADLINE_S
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    stuck = [t.name for t in threads if t.is_alive()]
    assert not stuck, f"threads still running after {DEADLINE_S} s (deadlock?): {stuck}"
    if failures:
        raise failures[0]


def malloc(lib, size, tag, **policy):
    address = ctypes.c_void_p()
    with _settings.changed(tag=tag, policy=BackupPolicy.from_region(**policy)):
        _library.check(lib.tms_malloc(ctypes.byref(address), size, 0))
    return address.value


def test_threads_allocate_and_free_while_another_thread_pauses_and_resumes_another_tag(lib, tmp_path):
    saver = TorchMemorySaver()
    saver.set_disk_backup_dir(tmp_path)
    free_before = device_free(lib)
    paused_side = {
        malloc(lib, 4 * MIB, "pausing", enable_cpu_backup=True): 101,
        malloc(lib, 3 * MIB, "pausing", enable_disk_backup=True): 102,
        malloc(lib, 2 * MIB, "pausing", enable_cpu_backup=True, cpu_backup_backend="mmap"): 103,
    }
    sizes = {address: size for address, size in zip(paused_side, (4 * MIB, 3 * MIB, 2 * MIB))}
    for address, seed in paused_side.items():
        ctypes.memmove(address, cached_pattern(sizes[address], seed), sizes[address])

    stop = threading.Event()
    cycles_done = []
    worker_rounds = []

    def pauser():
        try:
            for cycle in range(40):
                saver.pause("pausing")
                first = next(iter(paused_side))  # the CPU backup is readable while paused
                host = lib.tms_get_cpu_backup_pointer(first, sizes[first])
                assert host and ctypes.string_at(host, 4096) == cached_pattern(4096, 101)[:4096]
                saver.resume("pausing")
                for address, seed in paused_side.items():
                    assert ctypes.string_at(address, sizes[address]) == cached_pattern(sizes[address], seed), (
                        f"cycle {cycle}: contents of {address:#x} changed"
                    )
                cycles_done.append(cycle)
        finally:
            stop.set()

    def worker(index):
        rng = random.Random(index)
        live = []  # (address, size, seed) kept across rounds
        rounds = 0
        try:
            while not stop.is_set() or rounds < 20:
                size = rng.choice((1, 2, 3)) * MIB
                seed = rng.randrange(1, 250)
                policy = rng.choice(({}, {"enable_cpu_backup": True}, {"enable_disk_backup": True}))
                address = malloc(lib, size, f"worker-{index}", **policy)
                ctypes.memmove(address, cached_pattern(size, seed), size)
                live.append((address, size, seed))
                if len(live) > 3 or rng.random() < 0.5:
                    old, old_size, old_seed = live.pop(0)
                    assert ctypes.string_at(old, old_size) == cached_pattern(old_size, old_seed), (
                        f"worker {index}: data at {old:#x} corrupted"
                    )
                    _library.check(lib.tms_free(old))
                rounds += 1
        finally:
            for address, size, seed in live:
                assert ctypes.string_at(address, size) == cached_pattern(size, seed)
                _library.check(lib.tms_free(address))
            worker_rounds.append(rounds)

    run_threads([pauser] + [lambda i=i: worker(i) for i in range(6)])
    assert len(cycles_done) == 40
    assert len(worker_rounds) == 6 and min(worker_rounds) >= 20

    for address in paused_side:
        _library.check(lib.tms_free(address))
    assert not [s for s in stats() if s.allocations], "allocations leaked"
    assert device_free(lib) == free_before
    assert list(tmp_path.iterdir()) == []


def test_frees_and_allocations_race_with_transitions_of_their_own_tag(lib, tmp_path):
    """Workers allocate and free (never touch) memory of the tag being paused and resumed."""
    saver = TorchMemorySaver()
    saver.set_disk_backup_dir(tmp_path)
    free_before = device_free(lib)
    workers = 6
    finished = threading.Semaphore(0)
    cycles = []

    def pauser():
        # Until every worker is done, and at least 40 cycles.
        done = 0
        while done < workers or len(cycles) < 40:
            saver.pause("churn")
            saver.resume("churn")
            cycles.append(1)
            while done < workers and finished.acquire(blocking=False):
                done += 1

    def worker(index):
        rng = random.Random(100 + index)
        live = []
        try:
            for _ in range(150):
                policy = rng.choice(({}, {"enable_cpu_backup": True}, {"enable_disk_backup": True}))
                live.append(malloc(lib, rng.choice((1, 2)) * MIB, "churn", **policy))
                if len(live) > 4 or rng.random() < 0.5:
                    _library.check(lib.tms_free(live.pop(rng.randrange(len(live)))))  # active or paused
            for address in live:
                _library.check(lib.tms_free(address))
        finally:
            finished.release()

    run_threads([pauser] + [lambda i=i: worker(i) for i in range(workers)])
    (churn,) = [s for s in stats() if s.tag == "churn"]
    assert churn.pause_count > 0, "no pause ever found an allocation: the threads did not overlap"
    assert (churn.allocations, churn.paused_bytes, churn.backup_bytes) == (0, 0, 0)
    assert device_free(lib) == free_before, "device memory leaked"
    assert list(tmp_path.iterdir()) == [], "backup files leaked"


def test_concurrent_pauses_and_resumes_of_one_tag_lose_nothing(lib, tmp_path):
    saver = TorchMemorySaver()
    saver.set_disk_backup_dir(tmp_path)
    free_before = device_free(lib)
    contents = {
        malloc(lib, 4 * MIB, "racing", enable_cpu_backup=True): (4 * MIB, 11),
        malloc(lib, 2 * MIB, "racing", enable_disk_backup=True): (2 * MIB, 12),
        malloc(lib, 2 * MIB, "racing", enable_cpu_backup=True, cpu_backup_backend="mmap"): (2 * MIB, 13),
    }
    for address, (size, seed) in contents.items():
        ctypes.memmove(address, cached_pattern(size, seed), size)

    def flipper(index):
        rng = random.Random(200 + index)
        for _ in range(40):
            getattr(saver, rng.choice(("pause", "resume")))(rng.choice(("racing", None)))

    try:
        run_threads([lambda i=i: flipper(i) for i in range(4)])
        saver.resume("racing")
        for address, (size, seed) in contents.items():
            assert ctypes.string_at(address, size) == cached_pattern(size, seed), f"{address:#x} lost its data"
        (entry,) = [s for s in stats() if s.tag == "racing"]
        assert (entry.active_bytes, entry.paused_bytes) == (8 * MIB, 0)
        assert entry.pause_count == entry.resume_count
        assert list(tmp_path.iterdir()) == []
    finally:
        for address in contents:
            lib.tms_free(address)
    assert device_free(lib) == free_before
