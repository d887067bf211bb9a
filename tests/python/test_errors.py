"""Engine failures become typed Python exceptions, and failed transitions change nothing."""

import ctypes

import pytest
from simhelpers import MIB, pattern
from torch_memory_saver import TorchMemorySaver, _library, _settings, errors, stats
from torch_memory_saver._policy import BackupPolicy


@pytest.mark.parametrize(
    "name, cls, builtin",
    [
        ("TMS_ERROR_OUT_OF_MEMORY", errors.OutOfMemoryError, MemoryError),
        ("TMS_ERROR_INVALID_ARGUMENT", errors.InvalidArgumentError, ValueError),
        ("TMS_ERROR_INVALID_STATE", errors.InvalidStateError, RuntimeError),
        ("TMS_ERROR_DRIVER", errors.DriverError, RuntimeError),
        ("TMS_ERROR_DRIVER_UNAVAILABLE", errors.DriverUnavailableError, RuntimeError),
        ("TMS_ERROR_IO", errors.BackupIOError, OSError),
        ("TMS_ERROR_CONFIG", errors.ConfigError, ValueError),
        ("TMS_ERROR_INTERNAL", errors.InternalError, RuntimeError),
        ("TMS_ERROR_OF_A_NEWER_ENGINE", errors.InternalError, RuntimeError),
    ],
)
def test_status_names_map_to_typed_errors(name, cls, builtin):
    error = errors.error_from_status(42, "engine says no", name)
    assert type(error) is cls
    assert isinstance(error, errors.TorchMemorySaverError)
    assert isinstance(error, builtin)
    assert error.status == 42 and error.status_name == name
    assert "engine says no" in str(error)


def test_out_of_memory_on_allocation(lib, allocate):
    _library.check(lib.tms_sim_set_capacity(4 * MIB))
    with pytest.raises(errors.OutOfMemoryError) as raised:
        allocate(8 * MIB)
    assert isinstance(raised.value, MemoryError)
    assert raised.value.status_name == "TMS_ERROR_OUT_OF_MEMORY"
    assert str(raised.value)


def test_failed_resume_keeps_everything_paused_with_backup(lib, allocate):
    saver = TorchMemorySaver()
    address = allocate(16 * MIB, tag="oom", cpu_backup=True)
    ctypes.memmove(address, pattern(16 * MIB), 16 * MIB)
    saver.pause("oom")

    _library.check(lib.tms_sim_set_capacity(8 * MIB))
    with pytest.raises(errors.OutOfMemoryError, match=r"\d"):  # names the bytes needed and free
        saver.resume("oom")
    (entry,) = [s for s in stats() if s.tag == "oom"]
    assert entry.paused_bytes >= 16 * MIB and entry.active_bytes == 0

    _library.check(lib.tms_sim_set_capacity(1 << 30))
    saver.resume("oom")
    assert ctypes.string_at(address, 16 * MIB) == pattern(16 * MIB)


def test_driver_error_on_resume_is_all_or_nothing(lib, allocate):
    saver = TorchMemorySaver()
    first = allocate(4 * MIB, tag="drv", cpu_backup=True)
    second = allocate(4 * MIB, tag="drv", cpu_backup=True)
    ctypes.memmove(first, pattern(4 * MIB, 1), 4 * MIB)
    ctypes.memmove(second, pattern(4 * MIB, 2), 4 * MIB)
    saver.pause("drv")

    _library.check(lib.tms_sim_fail_call(b"map", 2, False))  # the second mapping fails
    with pytest.raises(errors.DriverError) as raised:
        saver.resume("drv")
    assert isinstance(raised.value, RuntimeError)
    assert [s.active_bytes for s in stats() if s.tag == "drv"] == [0]

    saver.resume("drv")
    assert ctypes.string_at(first, 4 * MIB) == pattern(4 * MIB, 1)
    assert ctypes.string_at(second, 4 * MIB) == pattern(4 * MIB, 2)


def test_failed_backup_leaves_memory_active(lib, allocate):
    saver = TorchMemorySaver()
    address = allocate(4 * MIB, tag="bk", cpu_backup=True)
    ctypes.memmove(address, pattern(4 * MIB), 4 * MIB)
    _library.check(lib.tms_sim_fail_call(b"copy_to_host", 1, False))
    with pytest.raises(errors.DriverError):
        saver.pause("bk")
    assert ctypes.string_at(address, 4 * MIB) == pattern(4 * MIB)  # still mapped and intact


def test_unknown_backup_backend_is_a_value_error():
    before = _settings.read()
    with pytest.raises(errors.InvalidArgumentError) as raised:
        with _settings.changed(tag="x", policy=BackupPolicy.from_region(cpu_backup_backend="floppy")):
            pass
    assert isinstance(raised.value, ValueError)
    assert _settings.read() == before


def test_unknown_sim_call_name_is_rejected(lib):
    with pytest.raises(errors.InvalidArgumentError):
        _library.check(lib.tms_sim_fail_call(b"teleport", 1, False))


def test_memory_margin_is_enforced_and_validated(allocate):
    saver = TorchMemorySaver()
    saver.memory_margin_bytes = 1020 * MIB  # of the 1 GiB simulated device
    assert saver.memory_margin_bytes == 1020 * MIB
    with pytest.raises(errors.OutOfMemoryError):
        allocate(8 * MIB)
    with pytest.raises(ValueError):
        saver.memory_margin_bytes = -1


def test_a_missing_disk_backup_dir_is_created_private_and_an_unusable_one_refused(tmp_path, monkeypatch):
    saver = TorchMemorySaver()
    monkeypatch.chdir(tmp_path)
    saver.set_disk_backup_dir("missing/below")  # relative: kept absolute
    assert saver.disk_backup_dir == str(tmp_path / "missing" / "below")
    assert (tmp_path / "missing" / "below").stat().st_mode & 0o777 == 0o700
    (tmp_path / "a-file").write_text("")
    with pytest.raises(errors.BackupIOError) as raised:
        saver.set_disk_backup_dir(tmp_path / "a-file")
    assert isinstance(raised.value, OSError)
    assert saver.disk_backup_dir == str(tmp_path / "missing" / "below"), "unchanged after a refusal"
