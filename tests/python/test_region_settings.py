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
from torch_memory_saver._policy import BackupPolicy
from torch_memory_saver.errors import InvalidArgumentError

DEFAULTS = ThreadSettings(interesting=False, tag="default", policy=BackupPolicy())
HOST = BackupPolicy("host", "pinned")


def test_a_thread_starts_with_the_defaults():
    assert _settings.read() == DEFAULTS


def test_nested_settings_restore_the_outer_ones(lib):
    with _settings.changed(interesting=True, tag="outer", policy=HOST) as outer:
        assert outer == ThreadSettings(True, "outer", HOST)
        inner_policy = BackupPolicy("host_compressed", "mmap")
        with _settings.changed(tag="inner", policy=inner_policy) as inner:
            assert inner == ThreadSettings(True, "inner", inner_policy)
            assert _settings.read() == inner, "what the engine holds is what was set"
            assert lib.tms_get_current_tag() == b"inner"
            assert lib.tms_get_cpu_backup_backend() == b"mmap"
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
    # The tag is set before the policy, which the engine refuses.
    bad = BackupPolicy.__new__(BackupPolicy)
    object.__setattr__(bad, "kind", "disk")
    object.__setattr__(bad, "host_memory", "mmap")
    with pytest.raises(InvalidArgumentError, match="keeps no host copy"):
        with _settings.changed(tag="partial", policy=bad):
            pass
    assert _settings.read() == DEFAULTS


def test_a_region_backend_of_none_keeps_the_outer_host_memory():
    outer = BackupPolicy("host", "mmap")
    assert BackupPolicy.from_region(enable_cpu_backup=True, inherited=outer) == outer
    assert BackupPolicy.from_region(enable_cpu_backup=True, compress=True, inherited=outer) == BackupPolicy(
        "host_compressed", "mmap"
    )
    assert BackupPolicy.from_region(enable_cpu_backup=True, cpu_backup_backend="PINNED") == HOST
    assert BackupPolicy.from_region(enable_cpu_backup=True) == BackupPolicy("host")
    assert BackupPolicy.from_region(enable_disk_backup=True, inherited=outer) == BackupPolicy("disk")


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"enable_cpu_backup": True, "enable_disk_backup": True}, "together are refused"),
        ({"compress": True}, "pass enable_cpu_backup=True"),
        ({"cpu_backup_backend": "mmap"}, "needs enable_cpu_backup=True"),
        ({"enable_disk_backup": True, "cpu_backup_backend": "pinned"}, "needs enable_cpu_backup=True"),
        ({"enable_cpu_backup": True, "cpu_backup_backend": "tape"}, "accepted: pinned, mmap"),
        ({"enable_cpu_backup": "no"}, "must be True or False"),
        ({"enable_disk_backup": "yes"}, "must be True or False"),
        ({"enable_cpu_backup": True, "compress": "off"}, "must be True or False"),
    ],
)
def test_region_arguments_that_mean_nothing_are_refused(arguments, message):
    with pytest.raises(InvalidArgumentError, match=message):
        BackupPolicy.from_region(**arguments)


def test_the_policy_is_a_value_and_refuses_what_means_nothing():
    assert BackupPolicy("host", "mmap") == BackupPolicy("host", "mmap")
    assert len({BackupPolicy("host", "mmap"), BackupPolicy("host", "mmap"), BackupPolicy()}) == 2
    for kind, memory in (("none", "pinned"), ("disk", "mmap"), ("tape", None), ("host", "floppy")):
        with pytest.raises(InvalidArgumentError):
            BackupPolicy(kind, memory)


def test_settings_of_one_thread_are_invisible_to_another():
    entered, checked = threading.Event(), threading.Event()
    seen = {}

    def in_region():
        with _settings.changed(interesting=True, tag="worker", policy=BackupPolicy.from_region(enable_cpu_backup=True)):
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
    with _settings.changed(tag="tagged", policy=BackupPolicy.from_region(enable_cpu_backup=True)):
        assert lib.tms_malloc(ctypes.byref(address), 2 * MIB, 0) == 0
    try:
        lib.tms_pause(b"tagged")
        (entry,) = [s for s in stats() if s.tag == "tagged"]
        assert entry.backup_bytes == 2 * MIB
    finally:
        lib.tms_free(address)
