"""Compressed CPU backups from Python (simulated driver: the CPU reference codec)."""

import ctypes
import random
import struct

import pytest
from simhelpers import MIB, assert_no_crash, run_python
from torch_memory_saver import InvalidArgumentError, InvalidStateError, _library, _settings, stats, torch_memory_saver
from torch_memory_saver._policy import BackupPolicy


def bf16_weights(count, std=0.02, seed=0):
    """`count` bf16 words of normal(0, std) weights (round to nearest even), as bytes."""
    rng = random.Random(seed)
    floats = struct.pack(f"<{count}f", *(rng.gauss(0.0, std) for _ in range(count)))
    bits = struct.unpack(f"<{count}I", floats)
    return struct.pack(f"<{count}H", *(((b + 0x7FFF + ((b >> 16) & 1)) >> 16) & 0xFFFF for b in bits))


def test_compress_is_a_thread_setting_restored_on_exit(lib):
    assert _settings.read().policy.kind == "none"
    with _settings.changed(policy=BackupPolicy.from_region(enable_cpu_backup=True, compress=True)) as inside:
        assert inside.policy.kind == "host_compressed" and lib.tms_get_cpu_backup_compress() is True
        with _settings.changed(policy=BackupPolicy.from_region(enable_cpu_backup=True)) as inner:
            assert inner.policy.kind == "host" and lib.tms_get_cpu_backup_compress() is False
        assert _settings.read().policy.kind == "host_compressed"
    assert lib.tms_get_cpu_backup_compress() is False


def test_weights_pause_into_less_host_memory_and_resume_exact(lib):
    size = 2 * MIB
    data = bf16_weights(size // 2)
    address = ctypes.c_void_p()
    with _settings.changed(tag="packed", policy=BackupPolicy.from_region(enable_cpu_backup=True, compress=True)):
        assert lib.tms_malloc(ctypes.byref(address), size, 0) == 0
    try:
        ctypes.memmove(address.value, data, size)
        for _ in range(2):
            torch_memory_saver.pause("packed")
            (entry,) = [s for s in stats() if s.tag == "packed"]
            assert 0 < entry.backup_bytes < 0.75 * size
            # A compressed backup has no bytes to read in place.
            assert not lib.tms_get_cpu_backup_pointer(address.value, 16)
            with pytest.raises(InvalidStateError, match="compressed"):
                _library.check_last_status()
            torch_memory_saver.resume("packed")
            assert ctypes.string_at(address.value, size) == data
    finally:
        lib.tms_free(address)


def test_region_refuses_compress_without_a_cpu_backup():
    with pytest.raises(InvalidArgumentError, match="enable_cpu_backup"):
        with torch_memory_saver.region(tag="x", compress=True):
            pass


def test_trainer_wide_compress_comes_from_the_environment():
    result = run_python(
        """
        from torch_memory_saver import _settings
        print(_settings.read().policy.kind == "host_compressed", _settings.read().policy.keeps_host_copy)
        """,
        TMS_DRIVER="sim",
        TMS_INIT_ENABLE_CPU_BACKUP="1",
        TMS_INIT_CPU_BACKUP_COMPRESS="1",
    )
    assert_no_crash(result)
    assert result.stdout.split() == ["True", "True"], result.stderr
