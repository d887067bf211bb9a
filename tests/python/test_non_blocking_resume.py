"""resume(non_blocking=True) and wait() through the public API, on simulated device memory.

The simulated driver defers copies here (tms_sim_defer_copies), as a GPU runs
them behind the caller: until something waits, the restored memory still
reads as the fresh pages a resume maps.
"""

import ctypes

import pytest
from simhelpers import MIB, pattern
from torch_memory_saver import DriverError, InvalidArgumentError, InvalidStateError, _library, stats
from torch_memory_saver import torch_memory_saver as saver


@pytest.fixture
def deferred(lib):
    _library.check(lib.tms_sim_defer_copies(True))
    yield
    _library.check(lib.tms_sim_defer_copies(False))
    saver.wait()


def backup_bytes(tag):
    return sum(s.backup_bytes for s in stats() if s.tag == tag)


def test_returns_before_the_restore_and_wait_finishes_it(allocate, deferred):
    a = allocate(4 * MIB, tag="opt", cpu_backup=True)
    b = allocate(3 * MIB, tag="opt", cpu_backup=True)
    ctypes.memmove(a, pattern(4 * MIB, 1), 4 * MIB)
    ctypes.memmove(b, pattern(3 * MIB, 2), 3 * MIB)
    saver.pause("opt")
    saver.resume("opt", non_blocking=True)
    assert [s.active_bytes for s in stats() if s.tag == "opt"] == [8 * MIB], "mapped when it returns"
    saver.wait("opt")
    assert ctypes.string_at(a, 4 * MIB) == pattern(4 * MIB, 1)
    assert ctypes.string_at(b, 3 * MIB) == pattern(3 * MIB, 2)
    assert backup_bytes("opt") == 0, "the host backups go back once the restore is done"


def test_wait_for_every_tag_and_with_nothing_in_flight(allocate, deferred):
    saver.wait()  # nothing to wait for
    saver.wait("never-used")
    a = allocate(2 * MIB, tag="p", cpu_backup=True)
    ctypes.memmove(a, pattern(2 * MIB, 3), 2 * MIB)
    saver.pause()
    saver.resume(non_blocking=True)
    saver.wait("")  # "" means every tag, as for pause and resume
    assert ctypes.string_at(a, 2 * MIB) == pattern(2 * MIB, 3)


def test_a_pause_waits_for_the_restore_in_flight(allocate, deferred):
    a = allocate(4 * MIB, tag="cycle", cpu_backup=True)
    ctypes.memmove(a, pattern(4 * MIB, 4), 4 * MIB)
    for _ in range(3):
        saver.pause("cycle")
        saver.resume("cycle", non_blocking=True)
    saver.wait("cycle")
    assert ctypes.string_at(a, 4 * MIB) == pattern(4 * MIB, 4), "a pause saved the memory under its restore"


def test_a_failed_restore_is_raised_by_wait_and_the_next_wait_restores(lib, allocate):
    a = allocate(4 * MIB, tag="flaky", cpu_backup=True)
    ctypes.memmove(a, pattern(4 * MIB, 5), 4 * MIB)
    saver.pause("flaky")
    _library.check(lib.tms_sim_fail_call(b"synchronize_event", 1, False))
    saver.resume("flaky", non_blocking=True)
    with pytest.raises(DriverError, match="backups are kept"):
        saver.wait("flaky")
    assert backup_bytes("flaky") > 0, "nothing is given back before a restore is good"
    with pytest.raises(InvalidStateError, match="wait\\(\\) copies them back again"):
        saver.pause("flaky")
    saver.wait("flaky")
    assert ctypes.string_at(a, 4 * MIB) == pattern(4 * MIB, 5)
    assert backup_bytes("flaky") == 0


def test_bad_arguments_are_refused(allocate):
    with pytest.raises(InvalidArgumentError, match="non_blocking"):
        saver.resume("x", non_blocking="yes")
    with pytest.raises(InvalidArgumentError, match="torch.cuda.Stream"):
        saver.wait("x", stream=7)
    with pytest.raises(InvalidArgumentError):
        saver.wait(3)
