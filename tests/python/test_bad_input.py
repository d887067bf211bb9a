"""Bad input is refused with the library's InvalidArgumentError, never silently changed.

C strings end at a NUL, ctypes keeps only the low 64 bits of an int, and
lone surrogates cannot be encoded: each would otherwise reach the engine as
a different value than the caller passed (a different tag paused, a margin
of 5 bytes instead of 2**64 + 5).
"""

import ctypes
import os
from pathlib import Path

import pytest
from simhelpers import MIB, assert_no_crash, backup_fds, run_python
from torch_memory_saver import TorchMemorySaver, _library, _settings, errors, stats
from torch_memory_saver._policy import BackupPolicy


def entry(tag):
    (found,) = [s for s in stats() if s.tag == tag]
    return found


@pytest.mark.parametrize("verb", ["pause", "resume"])
@pytest.mark.parametrize("tag", ["victim\0suffix", "bad\udcffsurrogate", "\ud800"])
def test_a_tag_with_a_nul_or_a_lone_surrogate_is_refused_not_truncated(verb, tag, allocate):
    saver = TorchMemorySaver()
    allocate(2 * MIB, tag="victim")
    with pytest.raises(errors.InvalidArgumentError, match="tag"):
        getattr(saver, verb)(tag)
    assert (entry("victim").active_bytes, entry("victim").pause_count) == (2 * MIB, 0)


@pytest.mark.parametrize("tag", ["a\0b", "\udcff"])
def test_region_settings_refuse_a_tag_the_engine_would_not_get_whole(tag):
    before = _settings.read()
    with pytest.raises(errors.InvalidArgumentError, match="tag"):
        with _settings.changed(tag=tag):
            pass
    assert _settings.read() == before


def test_a_backend_name_with_a_nul_is_refused_not_truncated():
    with pytest.raises(errors.InvalidArgumentError, match="cpu_backup_backend"):
        with _settings.changed(policy=BackupPolicy.from_region(cpu_backup_backend="mmap\0junk")):
            pass


def test_the_engine_refuses_a_tag_that_is_not_utf8(lib):
    with pytest.raises(errors.InvalidArgumentError, match="UTF-8"):
        _library.check(lib.tms_set_current_tag(b"\xff\xfe"))
    with pytest.raises(errors.InvalidArgumentError, match="UTF-8"):
        _library.check(lib.tms_pause(b"\xc3("))
    assert _settings.read().tag == "default"  # so reading it back always decodes


@pytest.mark.parametrize("value", [2**64 + 5, 2**64, True, False, -1, 1.5, "5"])
def test_memory_margin_out_of_range_or_not_an_int_is_refused(value):
    saver = TorchMemorySaver()
    saver.memory_margin_bytes = 7
    with pytest.raises(errors.InvalidArgumentError, match="memory_margin_bytes"):
        saver.memory_margin_bytes = value
    assert saver.memory_margin_bytes == 7
    saver.memory_margin_bytes = 2**64 - 1
    assert saver.memory_margin_bytes == 2**64 - 1
    saver.memory_margin_bytes = 0


@pytest.mark.parametrize("kind", [str, bytes, Path])
def test_the_disk_backup_dir_may_be_str_bytes_or_pathlike(kind, lib, tmp_path):
    saver = TorchMemorySaver()
    saver.set_disk_backup_dir(kind(os.fsencode(tmp_path)) if kind is bytes else kind(tmp_path))
    address = ctypes.c_void_p()
    with _settings.changed(tag="dir-kind", policy=BackupPolicy.from_region(enable_disk_backup=True)):
        _library.check(lib.tms_malloc(ctypes.byref(address), MIB, 0))
    try:
        saver.pause("dir-kind")
        assert saver.disk_backup_dir == str(tmp_path)
        assert len(backup_fds(tmp_path)) == 1, "the backup went to the directory given"
        saver.resume("dir-kind")
    finally:
        _library.check(lib.tms_free(address))


@pytest.mark.parametrize("path", ["/tmp\0/elsewhere", b"/tmp\0x", 42, None])
def test_a_disk_backup_dir_with_a_nul_or_of_another_type_is_refused(path):
    with pytest.raises(errors.InvalidArgumentError, match="disk backup directory"):
        TorchMemorySaver().set_disk_backup_dir(path)


def test_devices_below_minus_one_are_refused(lib):
    address = ctypes.c_void_p()
    with pytest.raises(errors.InvalidArgumentError, match="device -2"):
        _library.check(lib.tms_malloc(ctypes.byref(address), MIB, -2))
    free, total = ctypes.c_uint64(), ctypes.c_uint64()
    for device in (-7, 99):
        with pytest.raises(errors.InvalidArgumentError, match=f"device {device}"):
            _library.check(lib.tms_device_memory(device, ctypes.byref(free), ctypes.byref(total)))


@pytest.mark.parametrize("size", [2**64 - 1, 2**64 - 5, 2**64 - 2**21 + 1])
def test_sizes_near_the_top_of_size_t_are_out_of_memory_not_a_wrapped_size(lib, size):
    address = ctypes.c_void_p()
    with pytest.raises(errors.OutOfMemoryError, match=str(size)):
        _library.check(lib.tms_malloc(ctypes.byref(address), size, 0))
    assert address.value is None


@pytest.mark.parametrize("size", [2**47, 2**60, 2**64 - 2**21])
def test_a_size_beyond_the_address_space_is_out_of_memory_not_a_driver_error(lib, size):
    address = ctypes.c_void_p()
    with pytest.raises(errors.OutOfMemoryError, match=str(size)) as raised:
        _library.check(lib.tms_malloc(ctypes.byref(address), size, 0))
    assert address.value is None
    if size >= 2**60:  # 2**47 may fit a 48-bit address space and fail on memory instead
        assert "address space" in str(raised.value)


def test_newlines_in_a_tag_cannot_forge_engine_log_lines():
    result = run_python(
        """
        import ctypes
        from torch_memory_saver import torch_memory_saver as t, _library, _settings
        lib = _library.library()
        tag = "x\\n[torch_memory_saver ERROR] forged"
        address = ctypes.c_void_p()
        with _settings.changed(tag=tag):
            _library.check(lib.tms_malloc(ctypes.byref(address), 1 << 20, 0))
        t.pause(tag)
        t.resume(tag)
        _library.check(lib.tms_free(address))
        """,
        TMS_LOG_LEVEL="info",
    )
    assert_no_crash(result)
    assert result.returncode == 0, result.stderr
    assert "paused 1 allocations" in result.stderr, result.stderr
    assert "x\\n[torch_memory_saver ERROR] forged" in result.stderr, result.stderr
    assert not any(line.startswith("[torch_memory_saver ERROR] forged") for line in result.stderr.splitlines())


DEFAULT_DIR_SCRIPT = """
    import ctypes, os
    from torch_memory_saver import TorchMemorySaver, _library, _settings, stats
    from torch_memory_saver._policy import BackupPolicy
    saver = TorchMemorySaver()
    print("dir:", saver.disk_backup_dir)
    lib = _library.library()
    address = ctypes.c_void_p()
    with _settings.changed(tag="d", policy=BackupPolicy.from_region(enable_disk_backup=True)):
        _library.check(lib.tms_malloc(ctypes.byref(address), 4 << 20, 0))
    ctypes.memset(address.value, 0x5A, 4 << 20)
    saver.pause("d")
    print("paused bytes on disk:", [s.disk_backup_bytes for s in stats() if s.tag == "d"])
    saver.resume("d")
    assert ctypes.string_at(address.value, 4 << 20) == b"Z" * (4 << 20)
    _library.check(lib.tms_free(address))
    print("dir:", saver.disk_backup_dir)
"""


@pytest.mark.parametrize("tmpdir_set", [True, False])
def test_disk_backup_without_a_directory_uses_tmpdir_else_tmp(tmp_path, tmpdir_set):
    """As in the library this one replaces, disk backup needs no directory setting."""
    result = run_python(
        DEFAULT_DIR_SCRIPT,
        TMS_INIT_ENABLE_DISK_BACKUP="1",  # refused at start before
        TMS_DISK_BACKUP_DIR=None,
        TMPDIR=str(tmp_path) if tmpdir_set else None,
    )
    assert_no_crash(result)
    assert result.returncode == 0, result.stdout + result.stderr
    expected = str(tmp_path) if tmpdir_set else "/tmp"
    assert result.stdout.count(f"dir: {expected}\n") == 2, result.stdout
    assert "paused bytes on disk: [4194304]" in result.stdout, result.stdout


def _cuda_driver_installed():
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


@pytest.mark.skipif(_cuda_driver_installed(), reason="needs a machine without the CUDA driver")
def test_init_without_a_cuda_driver_is_driver_unavailable():
    result = run_python(
        """
        from torch_memory_saver import _library, errors
        try:
            _library.check(_library.library().tms_init())
            print("init succeeded")
        except errors.DriverUnavailableError as error:
            print("driver unavailable:", error)
        """,
        TMS_DRIVER=None,
    )
    assert_no_crash(result)
    assert "driver unavailable:" in result.stdout and "libcuda" in result.stdout, result.stdout + result.stderr


# ---- switches: only True/False (or 0/1) mean on/off; bool("no") would be True ----

NOT_A_SWITCH = ["no", "false", "0", "off", "", None, 2, -1, 0.0, 1.0, [], [False]]


@pytest.mark.parametrize("value", NOT_A_SWITCH)
def test_retain_cpu_backup_refuses_what_is_not_a_bool_and_keeps_its_value(value):
    saver = TorchMemorySaver()
    assert saver.retain_cpu_backup is False
    with pytest.raises(errors.InvalidArgumentError, match="retain_cpu_backup") as raised:
        saver.retain_cpu_backup = value
    assert repr(value) in str(raised.value)
    assert saver.retain_cpu_backup is False, f"{value!r} switched retention on"


@pytest.mark.parametrize("on, off", [(True, False), (1, 0)])
def test_retain_cpu_backup_takes_bools_and_0_or_1(on, off):
    saver = TorchMemorySaver()
    saver.retain_cpu_backup = on
    try:
        assert saver.retain_cpu_backup is True
    finally:
        saver.retain_cpu_backup = off
    assert saver.retain_cpu_backup is False


@pytest.mark.parametrize("switch", ["enable_cpu_backup", "enable_disk_backup", "interesting_region"])
@pytest.mark.parametrize("value", ["no", "False", None, 2])
def test_binary_wrapper_set_config_refuses_a_switch_that_is_not_a_bool_and_changes_nothing(switch, value):
    from torch_memory_saver.binary_wrapper import BinaryWrapper

    settings = dict(tag="wrapped", interesting_region=False, enable_cpu_backup=False, enable_disk_backup=False)
    settings[switch] = value
    before = _settings.read()
    with pytest.raises(errors.InvalidArgumentError, match=switch):
        BinaryWrapper().set_config(**settings)
    assert _settings.read() == before


@pytest.mark.parametrize("value", ["no", None, 2])
def test_get_cpu_backup_refuses_a_zero_copy_that_is_not_a_bool(value):
    # zero_copy="no" would otherwise hand out a view of host memory that a
    # later resume gives back, where the caller asked for a copy.
    with pytest.raises(errors.InvalidArgumentError, match="zero_copy"):
        TorchMemorySaver().get_cpu_backup(object(), zero_copy=value)


# ---- paths and addresses of the backup functions ----


def _orphan_in(directory):
    """A backup file named for a process that has exited, as a SIGKILL could leave one."""
    child = run_python("import os; print(os.getpid())")
    orphan = Path(directory) / f"tms-backup-{int(child.stdout)}-4242-00000000deadbeef.tmp"
    orphan.write_bytes(b"x" * 4096)
    return orphan


@pytest.mark.parametrize("kind", [str, bytes, Path])
def test_remove_orphaned_backups_takes_str_bytes_or_pathlike(kind, tmp_path):
    orphan = _orphan_in(tmp_path)
    directory = os.fsencode(tmp_path) if kind is bytes else kind(tmp_path)
    assert TorchMemorySaver().remove_orphaned_backups(directory) == 1
    assert not orphan.exists()


def test_remove_orphaned_backups_takes_a_directory_name_that_is_not_utf8(tmp_path):
    directory = os.fsencode(tmp_path) + b"/\xff\xfe"
    os.mkdir(directory)
    orphan = _orphan_in(os.fsdecode(directory))
    assert TorchMemorySaver().remove_orphaned_backups(directory) == 1
    assert not orphan.exists()


@pytest.mark.parametrize("directory", [5, 1.5, ["/tmp"], "/tmp\0/elsewhere", b"/tmp\0x"])
def test_remove_orphaned_backups_refuses_what_is_not_a_path(directory):
    with pytest.raises(errors.InvalidArgumentError, match="backup directory"):
        TorchMemorySaver().remove_orphaned_backups(directory)


@pytest.mark.parametrize("target", ["x", None, 1.5, True, -1, 2**64, b"\x00"])
def test_discard_backup_refuses_what_is_neither_a_tensor_nor_an_address(target):
    with pytest.raises(errors.InvalidArgumentError, match=r"discard_backup\(\) needs a tensor or an int address"):
        TorchMemorySaver().discard_backup(target)


def test_discard_backup_takes_an_address_inside_a_paused_allocation(allocate):
    saver = TorchMemorySaver()
    address = allocate(2 * MIB, tag="discard-me", cpu_backup=True)
    saver.pause("discard-me")
    saver.discard_backup(address + MIB)
    assert entry("discard-me").backup_bytes == 0
    saver.resume("discard-me")
