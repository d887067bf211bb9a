"""Process exit on the simulated driver, without torch.

A process that ends with allocations active, paused, backed up on host and
on disk exits through Python with its own status, prints no crash report,
and leaves no backup file behind; nor does any other way a process can end
(signals, abort, os._exit, SIGKILL). The GPU version, in both hook modes and
with a thread still inside region(), is in tests/gpu.
"""

import gc
import os
import signal
import subprocess
import sys

import pytest
from simhelpers import PACKAGE_ROOT, assert_no_crash, run_python
from torch_memory_saver import _pools
from torch_memory_saver._policy import BackupPolicy

EXIT_SCRIPT = """
    import ctypes, os, sys, threading, time
    from torch_memory_saver import torch_memory_saver as t, _library, _settings
    from torch_memory_saver._policy import BackupPolicy
    from torch_memory_saver._disk_files import open_backup_files

    DIRECTORY, HOW = {directory!r}, {how!r}
    lib = _library.library()
    t.set_disk_backup_dir(DIRECTORY)

    def allocate(tag, size=4 << 20, **policy):
        address = ctypes.c_void_p()
        with _settings.changed(tag=tag, policy=BackupPolicy.from_region(**policy)):
            _library.check(lib.tms_malloc(ctypes.byref(address), size, 0))
        ctypes.memset(address.value, 0x33, size)
        return address.value

    allocate("exit-active")
    allocate("exit-active-backed", enable_cpu_backup=True)
    allocate("exit-plain")
    allocate("exit-pinned", enable_cpu_backup=True, cpu_backup_backend="pinned")
    allocate("exit-mmap", enable_cpu_backup=True, cpu_backup_backend="mmap")
    allocate("exit-disk", enable_disk_backup=True)
    allocate("exit-disk", size=6 << 20, enable_disk_backup=True)
    allocate("exit-retained", enable_cpu_backup=True)
    for _ in range(4):
        allocate("exit-busy", enable_disk_backup=True)

    t.retain_cpu_backup = True  # this one keeps its host buffer while active
    t.pause("exit-retained")
    t.resume("exit-retained")
    for tag in ("exit-plain", "exit-pinned", "exit-mmap", "exit-disk"):
        t.pause(tag)
    print("backup files while paused:", len(open_backup_files(DIRECTORY)), flush=True)

    # A thread that stays inside a region, and one still pausing and resuming, at exit.
    inside = threading.Event()

    def stays_in_region():
        with _settings.changed(interesting=True, tag="exit-thread", policy=BackupPolicy.from_region(enable_disk_backup=True)):
            allocate("exit-thread", enable_disk_backup=True)
            inside.set()
            threading.Event().wait()

    def keeps_pausing():
        while True:
            t.pause("exit-busy")
            t.resume("exit-busy")

    threading.Thread(target=stays_in_region, daemon=True).start()
    threading.Thread(target=keeps_pausing, daemon=True).start()
    assert inside.wait(30)
    time.sleep(0.05)
    print("exiting", flush=True)
    if HOW == "sys.exit inside a region":
        with _settings.changed(interesting=True, tag="exit-main", policy=BackupPolicy.from_region(enable_disk_backup=True)):
            sys.exit(0)
    elif HOW == "uncaught exception":
        raise RuntimeError("the user's program failed")
    # "end of script": falls off the end
"""


@pytest.mark.parametrize(
    "how, status", [("end of script", 0), ("sys.exit inside a region", 0), ("uncaught exception", 1)]
)
def test_exit_with_everything_alive_leaves_no_files_and_no_crash(tmp_path, how, status):
    result = run_python(EXIT_SCRIPT.format(directory=str(tmp_path), how=how))
    output = result.stdout + result.stderr
    assert_no_crash(result)
    assert "backup files while paused: 2" in result.stdout, output  # there was something to clean up
    assert "exiting" in result.stdout, output
    assert result.returncode == status, output
    if how == "uncaught exception":
        assert "RuntimeError: the user's program failed" in result.stderr
    else:
        assert result.stderr == "", output
    leftovers = sorted(p.name for p in tmp_path.iterdir())
    assert leftovers == [], f"backup files left behind after exit: {leftovers}"


def test_repeated_exits_during_transitions_leave_no_files(tmp_path):
    """Exit while a daemon thread is between pause and resume, at varied moments."""
    for run in range(4):
        directory = tmp_path / f"run{run}"
        directory.mkdir()
        script = EXIT_SCRIPT.format(directory=str(directory), how="end of script").replace(
            "time.sleep(0.05)", f"time.sleep({0.01 * run})"
        )
        result = run_python(script)
        assert_no_crash(result)
        assert result.returncode == 0, result.stdout + result.stderr
        assert list(directory.iterdir()) == [], f"run {run} left files"


# ---- every other way a process ends ----------------------------------------------------

ABNORMAL_EXIT_SCRIPT = """
    import ctypes, os, signal, sys
    from torch_memory_saver import torch_memory_saver as t, _library, _settings
    from torch_memory_saver._policy import BackupPolicy

    DIRECTORY, HOW = {directory!r}, {how!r}
    lib = _library.library()
    t.set_disk_backup_dir(os.path.relpath(DIRECTORY))  # relative on purpose: chdir below
    for size in (4 << 20, 6 << 20):
        address = ctypes.c_void_p()
        with _settings.changed(tag="exit-disk", policy=BackupPolicy.from_region(enable_disk_backup=True)):
            _library.check(lib.tms_malloc(ctypes.byref(address), size, 0))
        ctypes.memset(address.value, 0x44, size)
    os.chdir("/")
    t.pause("exit-disk")
    print("disk bytes while paused:", t.stats()[0].disk_backup_bytes, flush=True)
    if HOW == "Ctrl-C":
        raise KeyboardInterrupt  # unhandled: Python re-raises SIGINT after finalizing
    elif HOW == "abort":
        os.abort()
    elif HOW == "os._exit":
        os._exit(7)
    else:
        number = getattr(signal, HOW)
        if number != signal.SIGKILL:
            signal.signal(number, signal.SIG_DFL)  # its default action, even under nohup
        os.kill(os.getpid(), number)
        signal.pause()
"""


@pytest.mark.parametrize(
    "how, status",
    [
        ("Ctrl-C", -signal.SIGINT),
        ("SIGTERM", -signal.SIGTERM),
        ("SIGHUP", -signal.SIGHUP),
        ("abort", -signal.SIGABRT),
        ("os._exit", 7),
        ("SIGKILL", -signal.SIGKILL),
    ],
)
def test_no_backup_file_survives_any_exit(tmp_path, how, status):
    directory = tmp_path / "backups"
    result = run_python(ABNORMAL_EXIT_SCRIPT.format(directory=str(directory), how=how))
    assert "disk bytes while paused: 10485760" in result.stdout, result.stdout + result.stderr
    assert result.returncode == status, result.stdout + result.stderr
    leftovers = sorted(p.name for p in directory.iterdir())
    assert leftovers == [], f"{how} left backup files behind: {leftovers}"


def test_clean_backups_removes_files_of_dead_processes_only(tmp_path):
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(child.stdout)
    orphan = tmp_path / f"tms-backup-{dead_pid}-4242-00000000deadbeef.tmp"
    orphan.write_bytes(b"x" * 4096)
    with open(f"/proc/{os.getpid()}/stat") as stat:
        start = stat.read().rsplit(")", 1)[1].split()[19]
    alive = tmp_path / f"tms-backup-{os.getpid()}-{start}-0123456789abcdef.tmp"
    alive.write_bytes(b"")
    env = dict(os.environ, PYTHONPATH=str(PACKAGE_ROOT))
    result = subprocess.run(
        [sys.executable, "-m", "torch_memory_saver", "clean-backups", str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "removed 1 orphaned backup file(s)" in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == [alive.name]


# ---- pools are never destroyed (what makes a thread inside a region safe at exit) ----


class Recorded:
    """Stands in for a MemPool: records its destruction."""

    destroyed = []

    def __init__(self, name):
        self.name = name

    def __del__(self):
        Recorded.destroyed.append(self.name)


def test_pools_outlive_their_cache():
    Recorded.destroyed.clear()
    cache = _pools.PoolCache(lambda key: Recorded(key.tag))
    key = _pools.PoolKey(_pools.REGION, "kept", BackupPolicy(), 0)
    with cache.borrow(key):
        pass
    del cache
    gc.collect()
    assert Recorded.destroyed == [], "a pool was destroyed (torch aborts if a route is active then)"
    assert any(isinstance(o, Recorded) and o.name == "kept" for o in _pools._KEPT_FOREVER)


KEEP_SCRIPT = r'''
from torch_memory_saver import _pools

POOL = (
    "class Pool:\n"
    "    def __init__(self, name):\n"
    "        self.name = name\n"
    "    def __del__(self, write=__import__('os').write):\n"  # print() may be gone at shutdown
    "        write(1, ('destroyed ' + self.name + '\\n').encode())\n"
)
# Each object gets a class of its own namespace, so that the kept one
# (through its class's globals) does not keep the control alive.
kept_space, plain_space = {}, {}
exec(POOL, kept_space)
exec(POOL, plain_space)
KEPT = _pools.keep_forever(kept_space["Pool"]("kept"))
PLAIN = plain_space["Pool"]("plain")  # the control: destroyed at shutdown
del kept_space, plain_space
'''


def test_kept_objects_survive_interpreter_shutdown():
    result = run_python(KEEP_SCRIPT)
    assert_no_crash(result)
    assert result.returncode == 0, result.stderr
    assert "destroyed plain" in result.stdout, "the control object was not destroyed: the test proves nothing"
    assert "destroyed kept" not in result.stdout
