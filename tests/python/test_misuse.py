"""Misuse and bad input on the simulated driver.

Each case gets its documented behaviour and a message that says what to do,
and none of them kills the process. Cases that need a GPU (pause during a
graph capture with real torch, get_cpu_backup of real tensors, freeing a
paused tensor through torch) are GPU scenarios in tests/gpu/scenarios.py.
"""

import ctypes
import os
import sys
import threading
import types

import pytest
from simhelpers import MIB, assert_no_crash, backup_fds, device_free, pattern, run_python
from torch_memory_saver import TorchMemorySaver, _captures, _library, _settings, errors, stats
from torch_memory_saver._policy import BackupPolicy


def entry(tag):
    (found,) = [s for s in stats() if s.tag == tag]
    return found


# ---- pause / resume arguments --------------------------------------------


def test_an_empty_tag_pauses_and_resumes_every_tag_as_none_does(allocate):
    """As in the library this one replaces: callers pass "" for "all"."""
    saver = TorchMemorySaver()
    addresses = {tag: allocate(2 * MIB, tag=tag, cpu_backup=True) for tag in ("empty-a", "empty-b")}
    for seed, address in enumerate(addresses.values()):
        ctypes.memmove(address, pattern(2 * MIB, seed), 2 * MIB)
    saver.pause("")
    assert [entry(tag).active_bytes for tag in addresses] == [0, 0]
    saver.resume("")
    assert [entry(tag).active_bytes for tag in addresses] == [2 * MIB, 2 * MIB]
    for seed, address in enumerate(addresses.values()):
        assert ctypes.string_at(address, 2 * MIB) == pattern(2 * MIB, seed)


@pytest.mark.parametrize("verb", ["pause", "resume"])
@pytest.mark.parametrize("tag", [5, b"bytes", ["list"]])
def test_a_tag_that_is_not_a_str_is_rejected(verb, tag, allocate):
    saver = TorchMemorySaver()
    allocate(2 * MIB, tag="arg-check")
    with pytest.raises(errors.InvalidArgumentError, match="tag") as raised:
        getattr(saver, verb)(tag)
    assert isinstance(raised.value, ValueError)
    assert (entry("arg-check").active_bytes, entry("arg-check").pause_count) == (2 * MIB, 0)


def test_double_pause_and_resume_with_disk_backup_write_and_read_once(lib, allocate, tmp_path):
    saver = TorchMemorySaver()
    saver.set_disk_backup_dir(tmp_path)
    address = allocate(4 * MIB, tag="twice-disk", disk_backup=True)
    ctypes.memmove(address, pattern(4 * MIB, 3), 4 * MIB)
    saver.pause("twice-disk")
    (first,) = backup_fds(tmp_path)
    written = os.fstat(first).st_mtime_ns
    saver.pause("twice-disk")  # already paused: no second file, the first one untouched
    assert backup_fds(tmp_path) == [first] and os.fstat(first).st_mtime_ns == written
    saver.resume("twice-disk")
    saver.resume("twice-disk")
    assert ctypes.string_at(address, 4 * MIB) == pattern(4 * MIB, 3)
    assert backup_fds(tmp_path) == [] and list(tmp_path.iterdir()) == []
    assert (entry("twice-disk").pause_count, entry("twice-disk").resume_count) == (1, 1)


# ---- resume out of memory, one tag among several ----------------------------


def test_a_failed_resume_of_one_tag_leaves_every_tag_as_it_was(lib, allocate, tmp_path):
    """The simulated counterpart of the GPU scenario resume_oom_one_tag (CI, no GPU)."""
    saver = TorchMemorySaver()
    saver.set_disk_backup_dir(tmp_path)
    big = allocate(16 * MIB, tag="oom-big", cpu_backup=True)
    on_disk = allocate(8 * MIB, tag="oom-disk", disk_backup=True)
    bystander = allocate(4 * MIB, tag="oom-bystander")
    for address, size, seed in ((big, 16 * MIB, 21), (on_disk, 8 * MIB, 22), (bystander, 4 * MIB, 23)):
        ctypes.memmove(address, pattern(size, seed), size)
    saver.pause("oom-big")
    saver.pause("oom-disk")
    tags = ("oom-big", "oom-disk", "oom-bystander")
    states = {tag: entry(tag) for tag in tags}
    free, total = ctypes.c_uint64(), ctypes.c_uint64()
    _library.check(lib.tms_device_memory(0, ctypes.byref(free), ctypes.byref(total)))
    _library.check(lib.tms_sim_set_capacity(total.value - free.value + 12 * MIB))  # 8 MiB fits, 16 does not

    with pytest.raises(errors.OutOfMemoryError) as raised:
        saver.resume("oom-big")
    message = str(raised.value)
    assert f"needs {16 * MIB} bytes" in message and f"{12 * MIB} bytes (" in message and "free" in message
    assert {tag: entry(tag) for tag in tags} == states, "a failed resume changed some tag"
    assert device_free(lib) == 12 * MIB, "the failed resume kept device memory"
    assert ctypes.string_at(lib.tms_get_cpu_backup_pointer(big, 16 * MIB), 16 * MIB) == pattern(16 * MIB, 21)
    assert ctypes.string_at(bystander, 4 * MIB) == pattern(4 * MIB, 23)

    saver.resume("oom-disk")  # another tag still fits
    assert ctypes.string_at(on_disk, 8 * MIB) == pattern(8 * MIB, 22)
    assert entry("oom-big") == states["oom-big"]
    _library.check(lib.tms_sim_set_capacity(1 << 30))
    saver.resume("oom-big")
    assert ctypes.string_at(big, 16 * MIB) == pattern(16 * MIB, 21)
    assert list(tmp_path.iterdir()) == []


# ---- pause or resume during a CUDA graph capture ---------------------------


def fake_torch(capturing):
    """Just enough of torch for the capture check: CUDA initialised, capturing or not."""
    cuda = types.SimpleNamespace(is_initialized=lambda: True, is_current_stream_capturing=lambda: capturing)
    return types.SimpleNamespace(cuda=cuda)


@pytest.mark.parametrize("verb", ["pause", "resume"])
def test_transitions_during_a_graph_capture_are_refused_before_the_engine(verb, allocate, monkeypatch):
    saver = TorchMemorySaver()
    address = allocate(2 * MIB, tag="capturing", cpu_backup=True)
    ctypes.memmove(address, pattern(2 * MIB, 4), 2 * MIB)
    if verb == "resume":
        saver.pause("capturing")
    state_before = entry("capturing")

    monkeypatch.setitem(sys.modules, "torch", fake_torch(capturing=True))
    for tag in ("capturing", None):
        with pytest.raises(errors.InvalidStateError, match="outside the capture") as raised:
            getattr(saver, verb)(tag)
        assert "capturing a CUDA graph" in str(raised.value)
    assert entry("capturing") == state_before, "the engine was called during the capture"

    monkeypatch.setitem(sys.modules, "torch", fake_torch(capturing=False))
    getattr(saver, verb)("capturing")
    if verb == "pause":
        saver.resume("capturing")
    assert ctypes.string_at(address, 2 * MIB) == pattern(2 * MIB, 4)


@pytest.mark.parametrize("verb", ["pause", "resume"])
def test_transitions_while_another_thread_captures_through_cuda_graph_are_refused(verb, allocate):
    saver = TorchMemorySaver()
    address = allocate(2 * MIB, tag="other-thread", cpu_backup=True)
    ctypes.memmove(address, pattern(2 * MIB, 5), 2 * MIB)
    if verb == "resume":
        saver.pause("other-thread")
    state_before = entry("other-thread")
    started, finish = threading.Event(), threading.Event()

    def capture():  # what cuda_graph() does around torch.cuda.graph()
        with _captures.capturing():
            started.set()
            finish.wait(10)

    thread = threading.Thread(target=capture)
    thread.start()
    try:
        started.wait(10)
        with pytest.raises(errors.InvalidStateError, match="another thread captures"):
            getattr(saver, verb)("other-thread")
        assert entry("other-thread") == state_before, "the engine was called during the capture"
    finally:
        finish.set()
        thread.join()
    getattr(saver, verb)("other-thread")
    if verb == "pause":
        saver.resume("other-thread")
    assert ctypes.string_at(address, 2 * MIB) == pattern(2 * MIB, 5)


def test_the_capture_check_never_initialises_cuda(allocate, monkeypatch):
    asked = []
    cuda = types.SimpleNamespace(
        is_initialized=lambda: False, is_current_stream_capturing=lambda: asked.append(1) or True
    )
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=cuda))
    allocate(2 * MIB, tag="no-cuda-yet")
    TorchMemorySaver().pause("no-cuda-yet")
    TorchMemorySaver().resume("no-cuda-yet")
    assert asked == [], "asked for the capture status (initialises CUDA) before CUDA was initialised"


# ---- backups of what has none ---------------------------------------------


def test_backup_pointer_is_null_without_error_for_foreign_active_and_unbacked_memory(lib, allocate):
    foreign = ctypes.create_string_buffer(4096)
    backed = allocate(2 * MIB, tag="bp-backed", cpu_backup=True)
    unbacked = allocate(2 * MIB, tag="bp-unbacked")
    cases = {"host memory": ctypes.addressof(foreign), "active": backed}
    TorchMemorySaver().pause("bp-unbacked")
    cases["paused without backup"] = unbacked
    for what, address in cases.items():
        assert not lib.tms_get_cpu_backup_pointer(address, 1024), what
        _library.check_last_status()  # NULL means "no backup" here, not an error


def test_backup_range_past_the_allocation_is_an_error(lib, allocate):
    address = allocate(2 * MIB, tag="bp-range", cpu_backup=True)
    TorchMemorySaver().pause("bp-range")
    assert lib.tms_get_cpu_backup_pointer(address, 2 * MIB)
    assert not lib.tms_get_cpu_backup_pointer(address, 2 * MIB + 1)
    with pytest.raises(errors.InvalidArgumentError):
        _library.check_last_status()
    TorchMemorySaver().resume("bp-range")


# ---- freeing paused memory --------------------------------------------------


def test_freeing_paused_memory_drops_host_and_disk_backups(lib, tmp_path):
    saver = TorchMemorySaver()
    saver.set_disk_backup_dir(tmp_path)
    free_before = device_free(lib)
    addresses = []
    for policy in ({"enable_cpu_backup": True}, {"enable_disk_backup": True}, {}):
        address = ctypes.c_void_p()
        with _settings.changed(tag="freed-paused", policy=BackupPolicy.from_region(**policy)):
            _library.check(lib.tms_malloc(ctypes.byref(address), 4 * MIB, 0))
        ctypes.memmove(address.value, pattern(4 * MIB), 4 * MIB)
        addresses.append(address.value)
    saver.pause("freed-paused")
    paused = entry("freed-paused")
    assert (paused.paused_bytes, paused.backup_bytes, paused.disk_backup_bytes) == (12 * MIB, 4 * MIB, 4 * MIB)
    assert len(backup_fds(tmp_path)) == 1

    for address in addresses:
        _library.check(lib.tms_free(address))
        assert not lib.tms_owns(address)
    freed = entry("freed-paused")
    assert (freed.allocations, freed.paused_bytes, freed.backup_bytes) == (0, 0, 0)
    assert backup_fds(tmp_path) == [], "freeing a paused allocation left its backup file"
    assert device_free(lib) == free_before
    saver.resume("freed-paused")  # nothing left to resume: harmless


def test_freeing_twice_or_an_interior_pointer_is_an_error_not_a_crash(lib):
    address = ctypes.c_void_p()
    with _settings.changed(tag="double-free"):
        _library.check(lib.tms_malloc(ctypes.byref(address), 4 * MIB, 0))
    with pytest.raises(errors.InvalidArgumentError, match="interior"):
        _library.check(lib.tms_free(address.value + MIB))
    _library.check(lib.tms_free(address.value))
    with pytest.raises(errors.InvalidArgumentError):
        _library.check(lib.tms_free(address.value))


# ---- the disk backup directory ----------------------------------------------


def test_a_bad_disk_backup_dir_is_refused_and_the_previous_one_kept(lib, allocate, tmp_path):
    saver = TorchMemorySaver()
    good = tmp_path / "good"
    good.mkdir()
    saver.set_disk_backup_dir(good)
    address = allocate(4 * MIB, tag="dir-kept", disk_backup=True)
    ctypes.memmove(address, pattern(4 * MIB, 5), 4 * MIB)
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory")

    open_to_all = tmp_path / "open-to-all"
    open_to_all.mkdir()
    open_to_all.chmod(0o777)
    for bad, error, reason in [
        (a_file, errors.BackupIOError, "(?i)not a directory"),
        (a_file / "below", errors.BackupIOError, "(?i)not a directory"),
        (open_to_all, errors.BackupIOError, "sticky bit"),
        ("", errors.InvalidArgumentError, "empty"),
    ]:
        with pytest.raises(error, match=reason) as raised:
            saver.set_disk_backup_dir(bad)
        if error is errors.BackupIOError:
            assert str(bad) in str(raised.value) and "choose another" in str(raised.value)
            assert isinstance(raised.value, OSError)
    assert saver.disk_backup_dir == str(good)

    saver.pause("dir-kept")
    assert len(backup_fds(good)) == 1, "the backup did not go to the directory set before"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "good", "open-to-all"]
    saver.resume("dir-kept")
    assert ctypes.string_at(address, 4 * MIB) == pattern(4 * MIB, 5)
    assert backup_fds(good) == []


def test_a_disk_backup_dir_removed_before_pause_fails_the_pause_and_loses_nothing(lib, allocate, tmp_path):
    saver = TorchMemorySaver()
    directory = tmp_path / "vanishing"
    directory.mkdir()
    saver.set_disk_backup_dir(directory)
    on_disk = allocate(4 * MIB, tag="dir-gone", disk_backup=True)
    on_host = allocate(4 * MIB, tag="dir-gone", cpu_backup=True)
    ctypes.memmove(on_disk, pattern(4 * MIB, 6), 4 * MIB)
    ctypes.memmove(on_host, pattern(4 * MIB, 7), 4 * MIB)
    free_active = device_free(lib)
    directory.rmdir()

    with pytest.raises(errors.BackupIOError, match="vanishing"):
        saver.pause("dir-gone")
    state = entry("dir-gone")
    assert (state.active_bytes, state.paused_bytes, state.backup_bytes) == (8 * MIB, 0, 0)
    assert device_free(lib) == free_active
    assert ctypes.string_at(on_disk, 4 * MIB) == pattern(4 * MIB, 6)  # still mapped and intact
    assert ctypes.string_at(on_host, 4 * MIB) == pattern(4 * MIB, 7)

    directory.mkdir()
    saver.pause("dir-gone")
    saver.resume("dir-gone")
    assert ctypes.string_at(on_disk, 4 * MIB) == pattern(4 * MIB, 6)
    assert ctypes.string_at(on_host, 4 * MIB) == pattern(4 * MIB, 7)
    assert list(directory.iterdir()) == []


def test_a_damaged_backup_fails_the_resume_naming_it_and_discard_backup_goes_on(lib, allocate, tmp_path):
    saver = TorchMemorySaver()
    saver.set_disk_backup_dir(tmp_path)
    damaged = allocate(4 * MIB, tag="file-damaged", disk_backup=True)
    kept = allocate(2 * MIB, tag="file-damaged", disk_backup=True)
    ctypes.memmove(kept, pattern(2 * MIB, 4), 2 * MIB)
    saver.pause("file-damaged")
    assert list(tmp_path.iterdir()) == [], "nothing in the directory to delete or replace"
    (big,) = [fd for fd in backup_fds(tmp_path) if os.fstat(fd).st_size == 4 * MIB]
    os.truncate(f"/proc/self/fd/{big}", MIB)  # as damage (or root) could
    free_paused = device_free(lib)
    for _ in range(2):
        with pytest.raises(errors.BackupIOError, match=f"0x{damaged:x}.*discard_backup") as raised:
            saver.resume("file-damaged")
        assert "tag 'file-damaged'" in str(raised.value)
        assert (entry("file-damaged").active_bytes, entry("file-damaged").paused_bytes) == (0, 6 * MIB)
        assert device_free(lib) == free_paused, "the failed resume kept device memory"
    with pytest.raises(errors.InvalidArgumentError):
        saver.discard_backup(12345)
    saver.discard_backup(damaged)
    saver.resume("file-damaged")
    assert ctypes.string_at(kept, 2 * MIB) == pattern(2 * MIB, 4)
    with pytest.raises(errors.InvalidStateError, match="active"):
        saver.discard_backup(damaged)


# ---- invalid environment values ---------------------------------------------

BAD_ENV_SCRIPT = """
    import sys
    from torch_memory_saver import torch_memory_saver as t, ConfigError

    VAR = {var!r}
    calls = {{
        "pause": lambda: t.pause(),
        "resume": lambda: t.resume("weights"),
        "stats": t.stats,
        "memory_margin_bytes": lambda: setattr(t, "memory_margin_bytes", 0),
        "region entry": t._active_hooks,  # what region()/cuda_graph()/disable() call first
    }}
    t.hook_mode = "torch"  # no LD_PRELOAD needed to reach the environment check
    for name, call in calls.items():
        try:
            call()
        except ConfigError as error:
            assert VAR in str(error), (name, str(error))
            print("caught", name)
        else:
            print("no error from", name)
            sys.exit(3)
    t.pause()  # uncaught: the process ends through Python's exception handling
"""


@pytest.mark.parametrize(
    "var, value",
    [
        ("TMS_INIT_CPU_BACKUP_BACKEND", "bogus"),
        ("TMS_INIT_ENABLE", "maybe"),
        ("TMS_INIT_ENABLE_CPU_BACKUP", "2"),
        ("TMS_RETAIN_CPU_BACKUP", "yes please"),
        ("TMS_DISK_BACKUP_CHUNK_MB", "65537"),
        ("TMS_DISK_BACKUP_DIR", "/dev/null/below"),
        ("TMS_DRIVER", "tpu"),
        ("TMS_LOG_LEVEL", "loud"),
    ],
)
def test_a_bad_environment_value_is_a_config_error_naming_the_variable(var, value):
    result = run_python(BAD_ENV_SCRIPT.format(var=var), **{var: value})
    assert_no_crash(result)
    assert result.stdout.split("\n")[:5] == [
        "caught pause",
        "caught resume",
        "caught stats",
        "caught memory_margin_bytes",
        "caught region entry",
    ], result.stdout + result.stderr
    assert result.returncode == 1, result.stdout + result.stderr  # the uncaught ConfigError, not a crash
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("torch_memory_saver.errors.ConfigError: environment variable")
    assert f"{var}='{value}'" in last_line and "accepted values" in last_line


@pytest.mark.parametrize(
    "var, value, named",
    [
        ("TMS_CONF", "copy_streams=17", "TMS_CONF: copy_streams='17'"),
        ("TMS_CONF", "copy_streams=2,turbo=1", "unknown key 'turbo'"),
        ("TMS_CONF", "copy_streams", "entry 'copy_streams' has no '='"),
        # A variable whose knob moved into TMS_CONF is refused, with its new spelling.
        ("TMS_COPY_STREAMS", "4", "set TMS_CONF=copy_streams=4 instead"),
        ("TMS_SIM_CAPACITY_MB", "-5", "set TMS_CONF=sim_capacity_mb=-5 instead"),
    ],
)
def test_a_bad_tuning_setting_is_a_config_error_naming_the_key(var, value, named):
    result = run_python(BAD_ENV_SCRIPT.format(var=var), **{var: value})
    assert_no_crash(result)
    assert result.stdout.startswith("caught pause\ncaught resume\n"), result.stdout + result.stderr
    assert result.returncode == 1, result.stdout + result.stderr
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("torch_memory_saver.errors.ConfigError: environment variable")
    assert named in last_line, last_line


TUNED_SCRIPT = """
    import ctypes
    from torch_memory_saver import _library

    lib = _library.library()
    free, total = ctypes.c_uint64(), ctypes.c_uint64()
    _library.check(lib.tms_device_memory(1, ctypes.byref(free), ctypes.byref(total)))
    print(total.value >> 20)
"""


def test_tuning_reaches_the_engine():
    result = run_python(TUNED_SCRIPT, TMS_CONF="sim_devices=2, sim_capacity_mb=96,copy_streams=3")
    assert_no_crash(result)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.split() == ["96"], "a second device of the configured size"


# ---- fork() ------------------------------------------------------------------

FORK_SCRIPT = """
    import ctypes, os, sys
    from torch_memory_saver import torch_memory_saver as t, _library, _settings, InvalidStateError
    from torch_memory_saver._policy import BackupPolicy

    lib = _library.library()
    t.set_disk_backup_dir(sys.argv[1])
    address = ctypes.c_void_p()
    with _settings.changed(tag="forked", policy=BackupPolicy.from_region(enable_disk_backup=True)):
        _library.check(lib.tms_malloc(ctypes.byref(address), 4 << 20, 0))
    ctypes.memset(address.value, 0x5A, 4 << 20)
    t.pause("forked")  # its backup file exists when the child starts and ends

    pid = os.fork()
    if pid == 0:
        problems = []
        t.hook_mode = "torch"
        for name, call in [("pause", t.pause), ("resume", t.resume), ("stats", t.stats),
                           ("region entry", t._active_hooks)]:
            try:
                call()
                problems.append(name + " did not raise")
            except InvalidStateError as error:
                if "fork" not in str(error) or "spawn" not in str(error):
                    problems.append(name + ": " + str(error))
        pointer = ctypes.c_void_p()
        if lib.tms_malloc(ctypes.byref(pointer), 1 << 20, 0) != 3:  # TMS_ERROR_INVALID_STATE
            problems.append("tms_malloc in the child did not fail with INVALID_STATE")
        print("child:", problems or "ok", flush=True)
        sys.exit(1 if problems else 0)  # a normal interpreter exit, atexit handlers included

    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status), f"child killed by signal {os.WTERMSIG(status)}"
    assert os.WEXITSTATUS(status) == 0, f"child exit status {os.WEXITSTATUS(status)}"
    assert t.stats()[0].disk_backup_bytes == 4 << 20, "the child's exit took the parent's backup"
    t.resume("forked")
    assert ctypes.string_at(address.value, 4 << 20) == b"\\x5a" * (4 << 20)
    t.pause("forked")
    t.resume("forked")
    lib.tms_free(address)
    print("parent: ok")
"""


def test_the_library_in_a_forked_child_raises_invalid_state_and_the_parent_goes_on(tmp_path):
    script = FORK_SCRIPT.replace("sys.argv[1]", repr(str(tmp_path)))
    result = run_python(script, PYTHONWARNINGS="ignore")
    assert_no_crash(result)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "child: ok" in result.stdout and "parent: ok" in result.stdout, result.stdout + result.stderr
    assert list(tmp_path.iterdir()) == []


# ---- threads -------------------------------------------------------------------


def test_a_thread_started_inside_a_region_does_not_inherit_it(lib):
    """Settings are per thread: a worker started inside a region allocates with its own (default) ones."""
    made = {}

    def worker():
        made["settings"] = _settings.read()
        address = ctypes.c_void_p()
        made["status"] = lib.tms_malloc(ctypes.byref(address), 2 * MIB, 0)
        made["address"] = address.value

    with _settings.changed(interesting=True, tag="parent-region", policy=BackupPolicy.from_region(enable_cpu_backup=True)):
        mine = ctypes.c_void_p()
        _library.check(lib.tms_malloc(ctypes.byref(mine), 2 * MIB, 0))
        thread = threading.Thread(target=worker)
        thread.start()
        thread.join(30)
    try:
        assert made["status"] == 0
        assert made["settings"].tag == "default" and not made["settings"].interesting
        assert made["settings"].policy == BackupPolicy()
        by_tag = {s.tag: s for s in stats() if s.allocations}
        assert by_tag["parent-region"].allocations == 1, "the worker's allocation joined the parent's tag"
        assert by_tag["default"].allocations == 1

        TorchMemorySaver().pause("parent-region")  # the worker's memory stays usable
        ctypes.memmove(made["address"], pattern(2 * MIB), 2 * MIB)
        assert ctypes.string_at(made["address"], 2 * MIB) == pattern(2 * MIB)
        TorchMemorySaver().resume("parent-region")
    finally:
        lib.tms_free(mine)
        lib.tms_free(made.get("address"))


def test_changes_on_a_worker_thread_do_not_leak_into_the_main_thread():
    before = _settings.read()
    thread = threading.Thread(target=lambda: _settings._apply(interesting=True, tag="leaky", policy=BackupPolicy.from_region(enable_disk_backup=True)))
    thread.start()
    thread.join(30)
    assert _settings.read() == before

