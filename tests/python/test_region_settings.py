"""Per-thread region settings: nesting, restoring, and isolation between threads.

region() applies its settings through _settings.changed() (it needs torch
for the pools, which CI lacks), so these tests drive that layer and read the
result back with the engine's own getters.
"""

import ctypes
import threading

import pytest
from simhelpers import MIB
from torch_memory_saver import _settings, stats
from torch_memory_saver._settings import ThreadSettings

DEFAULTS = ThreadSettings(
    interesting=False, tag="default", cpu_backup=False, cpu_backup_backend="pinned", disk_backup=False
)


def test_a_thread_starts_with_the_defaults():
    assert _settings.read() == DEFAULTS


def test_nested_settings_restore_the_outer_ones(lib):
    with _settings.changed(interesting=True, tag="outer", cpu_backup=True) as outer:
        assert outer == ThreadSettings(True, "outer", True, "pinned", False)
        with _settings.changed(tag="inner", cpu_backup=False, cpu_backup_backend="mmap") as inner:
            assert inner == ThreadSettings(True, "inner", False, "mmap", False)
            assert lib.tms_get_current_tag() == b"inner"
        assert _settings.read() == outer
        assert lib.tms_get_current_tag() == b"outer"
        assert lib.tms_get_enable_cpu_backup() is True
    assert _settings.read() == DEFAULTS
    assert lib.tms_get_interesting_region() is False


def test_settings_are_restored_when_the_block_raises():
    with pytest.raises(KeyError), _settings.changed(interesting=True, tag="boom"):
        raise KeyError("boom")
    assert _settings.read() == DEFAULTS


def test_a_rejected_setting_undoes_the_ones_before_it():
    with pytest.raises(ValueError):
        with _settings.changed(tag="partial", cpu_backup=True, cpu_backup_backend="tape"):
            pass
    assert _settings.read() == DEFAULTS


def test_settings_of_one_thread_are_invisible_to_another():
    entered, checked = threading.Event(), threading.Event()
    seen = {}

    def in_region():
        with _settings.changed(interesting=True, tag="worker", cpu_backup=True):
            seen["worker"] = _settings.read()
            entered.set()
            checked.wait(10)

    worker = threading.Thread(target=in_region)
    worker.start()
    assert entered.wait(10)
    seen["main"] = _settings.read()
    checked.set()
    worker.join(10)

    assert seen["worker"].tag == "worker" and seen["worker"].interesting
    assert seen["main"] == DEFAULTS


def test_allocations_take_the_thread_tag_and_policy(lib):
    address = ctypes.c_void_p()
    with _settings.changed(tag="tagged", cpu_backup=True):
        assert lib.tms_malloc(ctypes.byref(address), 2 * MIB, 0) == 0
    try:
        lib.tms_pause(b"tagged")
        (entry,) = [s for s in stats() if s.tag == "tagged"]
        assert entry.backup_bytes == 2 * MIB
    finally:
        lib.tms_free(address)
