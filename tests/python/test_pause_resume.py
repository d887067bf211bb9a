"""Pause and resume through the public API on simulated device memory."""

import ctypes
import os
import threading

import pytest
from simhelpers import MIB, backup_fds, device_free, pattern, run_python
from torch_memory_saver import TorchMemorySaver, _library, _settings, stats, torch_memory_saver
from torch_memory_saver._policy import BackupPolicy


def test_backup_restores_contents_at_the_same_address(lib, allocate):
    saver = TorchMemorySaver()
    address = allocate(8 * MIB, tag="kept", cpu_backup=True)
    ctypes.memmove(address, pattern(8 * MIB), 8 * MIB)
    free_active = device_free(lib)

    saver.pause("kept")
    assert device_free(lib) - free_active >= 8 * MIB
    saver.resume("kept")
    assert device_free(lib) == free_active
    assert lib.tms_owns(address)
    assert ctypes.string_at(address, 8 * MIB) == pattern(8 * MIB)


def test_without_backup_resumed_memory_is_fresh(allocate):
    saver = TorchMemorySaver()
    address = allocate(4 * MIB, tag="dropped")
    ctypes.memmove(address, pattern(4 * MIB), 4 * MIB)
    saver.pause("dropped")
    saver.resume("dropped")
    assert ctypes.string_at(address, 4 * MIB) == bytes(4 * MIB)


def test_tags_are_paused_and_resumed_selectively(lib, allocate):
    saver = TorchMemorySaver()
    a = allocate(4 * MIB, tag="a", cpu_backup=True)
    b = allocate(4 * MIB, tag="b", cpu_backup=True)
    ctypes.memmove(a, pattern(4 * MIB, 1), 4 * MIB)
    ctypes.memmove(b, pattern(4 * MIB, 2), 4 * MIB)
    free_active = device_free(lib)

    saver.pause("a")
    assert device_free(lib) - free_active == 4 * MIB
    assert ctypes.string_at(b, 4 * MIB) == pattern(4 * MIB, 2)  # b is still mapped
    saver.pause("b")
    saver.resume("a")  # resume in the same order as the pauses
    assert ctypes.string_at(a, 4 * MIB) == pattern(4 * MIB, 1)
    saver.resume("b")
    assert ctypes.string_at(b, 4 * MIB) == pattern(4 * MIB, 2)


def test_repeated_and_unknown_transitions_are_harmless(lib, allocate):
    saver = TorchMemorySaver()
    address = allocate(4 * MIB, tag="twice", cpu_backup=True)
    ctypes.memmove(address, pattern(4 * MIB), 4 * MIB)
    saver.resume("twice")  # nothing paused
    saver.pause("twice")
    saver.pause("twice")
    saver.pause("no-such-tag")
    saver.resume()
    saver.resume()
    assert ctypes.string_at(address, 4 * MIB) == pattern(4 * MIB)
    (entry,) = [s for s in stats() if s.tag == "twice"]
    assert (entry.pause_count, entry.resume_count) == (1, 1)


def test_pause_without_tag_pauses_every_tag(lib, allocate):
    saver = TorchMemorySaver()
    allocate(2 * MIB, tag="x")
    allocate(2 * MIB, tag="y")
    saver.pause()
    paused = {s.tag: s.paused_bytes for s in stats() if s.tag in ("x", "y")}
    assert paused == {"x": 2 * MIB, "y": 2 * MIB}
    saver.resume()


def test_freeing_paused_memory_gives_everything_back(lib):
    saver = TorchMemorySaver()
    free_before = device_free(lib)
    address = ctypes.c_void_p()
    lib.tms_set_current_tag(b"freed")
    try:
        assert lib.tms_malloc(ctypes.byref(address), 4 * MIB, 0) == 0
    finally:
        lib.tms_set_current_tag(b"default")
    saver.pause("freed")
    assert lib.tms_free(address) == 0
    assert not lib.tms_owns(address)
    assert device_free(lib) == free_before
    (entry,) = [s for s in stats() if s.tag == "freed"]
    assert (entry.allocations, entry.paused_bytes, entry.backup_bytes) == (0, 0, 0)


def test_retain_cpu_backup_round_trips():
    saver = TorchMemorySaver()
    assert saver.retain_cpu_backup is False
    saver.retain_cpu_backup = True
    try:
        assert saver.retain_cpu_backup is True
    finally:
        saver.retain_cpu_backup = False


def test_disk_backup_round_trips_through_a_file(lib, allocate, tmp_path):
    saver = TorchMemorySaver()
    saver.set_disk_backup_dir(tmp_path)
    address = allocate(6 * MIB, tag="disk", disk_backup=True)
    ctypes.memmove(address, pattern(6 * MIB), 6 * MIB)
    free_active = device_free(lib)

    saver.pause("disk")
    files = backup_fds(tmp_path)
    assert len(files) == 1 and os.fstat(files[0]).st_size >= 6 * MIB
    assert list(tmp_path.iterdir()) == [], "the backup file has no name"
    assert device_free(lib) - free_active >= 6 * MIB
    (entry,) = [s for s in stats() if s.tag == "disk"]
    assert (entry.paused_bytes, entry.disk_backup_bytes) == (6 * MIB, 6 * MIB)
    assert not lib.tms_get_cpu_backup_pointer(address, 6 * MIB)  # the backup is on disk, not in host memory

    saver.resume("disk")
    assert ctypes.string_at(address, 6 * MIB) == pattern(6 * MIB)
    assert backup_fds(tmp_path) == []


def test_engine_log_lines_name_the_rank_device_bytes_and_phases():
    # What a user of torchrun reads with TMS_LOG_LEVEL=info: many ranks write to one log.
    code = """
        import ctypes
        from torch_memory_saver import _library, _settings
        from torch_memory_saver._policy import BackupPolicy
        lib = _library.library()
        address = ctypes.c_void_p()
        with _settings.changed(tag="weights", policy=BackupPolicy.from_region(enable_cpu_backup=True, enable_disk_backup=False)):
            _library.check(lib.tms_malloc(ctypes.byref(address), 3 << 20, 0))
        _library.check(lib.tms_pause(b"weights"))
        _library.check(lib.tms_resume(b"weights"))
        _library.check(lib.tms_free(address.value))
    """
    result = run_python(code, RANK="2", TMS_LOG_LEVEL="info")
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    paused = [line for line in lines if "paused 1 allocations" in line]
    resumed = [line for line in lines if "resumed 1 allocations" in line]
    assert len(paused) == 1 and len(resumed) == 1, result.stderr
    assert paused[0].startswith(
        "[torch_memory_saver INFO rank 2] paused 1 allocations (4.0 MiB, 3.0 MiB to host) of tag 'weights' on device 0 in "
    ), paused[0]
    for phase in ("synchronize", "host backup", "unmap", "release"):
        assert f"{phase} " in paused[0], paused[0]
    for phase in ("create and map", "host restore", "commit", "host release"):
        assert f"{phase} " in resumed[0], resumed[0]
    assert "3.0 MiB from host" in resumed[0], resumed[0]


def _anonymous_rss():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no RssAnon in /proc/self/status")


@pytest.mark.parametrize("backend", ["pinned", "mmap"])
@pytest.mark.parametrize("count", [1, 40])
def test_resume_gives_host_backup_back_before_it_returns(lib, backend, count):
    """Read at once after resume, no sleep: the library's background releaser must not hold it.

    One large backup, and many small ones that share host blocks.
    """
    size, slack = 80 * MIB // count, 8 * MIB
    addresses = []
    try:
        with _settings.changed(tag="rss", policy=BackupPolicy.from_region(enable_cpu_backup=True, cpu_backup_backend=backend)):
            for _ in range(count):
                address = ctypes.c_void_p()
                _library.check(lib.tms_malloc(ctypes.byref(address), size, 0))
                addresses.append(address.value)
        for seed, address in enumerate(addresses):
            ctypes.memmove(address, pattern(size, seed), size)
        saver = TorchMemorySaver()
        for cycle in range(3):
            saver.pause("rss")
            paused = _anonymous_rss()
            saver.resume("rss")
            resumed = _anonymous_rss()
            assert resumed + count * size <= paused + slack, f"cycle {cycle}: RssAnon {paused} -> {resumed}"
            for seed, address in enumerate(addresses):
                assert ctypes.string_at(address, size) == pattern(size, seed)
    finally:
        for address in addresses:
            _library.check(lib.tms_free(address))


def test_pause_and_resume_through_python_are_logged_once_by_the_engine():
    # The Python layer forwards the transition: with Python logging at INFO
    # too, the engine's line is the only one per pause and per resume, and
    # it reaches Python's logging (the rank leads its message).
    code = """
        import ctypes
        import logging
        logging.basicConfig(level=logging.INFO)
        from torch_memory_saver import torch_memory_saver as saver, _library, _settings
        from torch_memory_saver._policy import BackupPolicy
        lib = _library.library()
        address = ctypes.c_void_p()
        with _settings.changed(tag="logged", policy=BackupPolicy.from_region(enable_cpu_backup=True, enable_disk_backup=False)):
            _library.check(lib.tms_malloc(ctypes.byref(address), 2 << 20, 0))
        saver.pause("logged")
        saver.resume("logged")
        _library.check(lib.tms_free(address.value))
    """
    result = run_python(code, RANK="5", TMS_LOG_LEVEL="info")
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if "logged" in line]
    assert len(lines) == 2, result.stderr
    assert lines[0].startswith(
        "INFO:torch_memory_saver:rank 5: paused 1 allocations (2.0 MiB, 2.0 MiB to host) of tag 'logged' on device 0 in "
    ), lines[0]
    assert lines[1].startswith(
        "INFO:torch_memory_saver:rank 5: resumed 1 allocations (2.0 MiB, 2.0 MiB from host) of tag 'logged' on device 0 in "
    ), lines[1]


def test_a_leased_backup_stays_readable_after_resume_and_goes_back_when_the_lease_ends(lib, allocate):
    """get_cpu_backup reads through a lease: the bytes outlive a resume (or free) on another thread."""
    address = allocate(2 * MIB, tag="leased", cpu_backup=True)
    ctypes.memmove(address, pattern(2 * MIB, seed=4), 2 * MIB)
    torch_memory_saver.pause("leased")
    lease, data = ctypes.c_uint64(), ctypes.c_void_p()
    _library.check(lib.tms_lease_cpu_backup(address + 4096, MIB, ctypes.byref(lease), ctypes.byref(data)))
    assert lease.value != 0 and data.value
    resumer = threading.Thread(target=torch_memory_saver.resume, args=("leased",))
    resumer.start()
    resumer.join(30)
    assert ctypes.string_at(data.value, MIB) == pattern(2 * MIB, seed=4)[4096 : 4096 + MIB]
    (leased,) = [s for s in stats() if s.tag == "leased"]
    assert leased.backup_bytes == 0, "the record let go of the backup; the lease holds its memory"
    _library.check(lib.tms_end_cpu_backup_lease(lease.value))
    _library.check(lib.tms_end_cpu_backup_lease(lease.value))  # twice: ignored
    none, nothing = ctypes.c_uint64(7), ctypes.c_void_p(1)
    _library.check(lib.tms_lease_cpu_backup(address, 16, ctypes.byref(none), ctypes.byref(nothing)))
    assert (none.value, nothing.value) == (0, None), "active and not retained: no backup to lease"
