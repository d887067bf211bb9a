"""The engine's log lines reach Python's ``logging`` as records of the
``torch_memory_saver`` logger, and stderr where logging is not set up."""

import logging

from torch_memory_saver import torch_memory_saver

from simhelpers import MIB, assert_no_crash, run_python


def engine_records(caplog):
    return [r for r in caplog.records if r.name == "torch_memory_saver"]


def test_a_discarded_backup_is_an_error_record_and_the_resume_without_it_a_warning(allocate, caplog):
    caplog.set_level(logging.DEBUG, logger="torch_memory_saver")
    address = allocate(MIB, tag="logged", cpu_backup=True)
    torch_memory_saver.pause("logged")
    torch_memory_saver.discard_backup(address)
    # Delivered before the call returns: no wait, no flush by the caller.
    (discarded,) = engine_records(caplog)
    assert discarded.levelno == logging.ERROR
    assert discarded.getMessage().startswith(f"discarded the backup of allocation {address:#x} of 1048576 bytes")
    assert "contents are LOST" in discarded.getMessage()
    torch_memory_saver.resume("logged")
    resumed = engine_records(caplog)[1:]
    assert [r.levelno for r in resumed] == [logging.WARNING], resumed
    assert "WITHOUT its contents" in resumed[0].getMessage()


def test_the_engines_level_still_decides_which_lines_are_made(allocate, caplog):
    # TMS_LOG_LEVEL is unset (warning): a pause's info line is never made,
    # whatever the logger lets through.
    caplog.set_level(logging.DEBUG, logger="torch_memory_saver")
    allocate(MIB, tag="quiet")
    torch_memory_saver.pause("quiet")
    torch_memory_saver.resume("quiet")
    assert engine_records(caplog) == []


def test_with_logging_set_up_the_info_lines_go_through_it_not_to_stderr():
    result = run_python(
        """
        import logging
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        from torch_memory_saver import torch_memory_saver as saver, _library, _settings
        import ctypes
        lib = _library.library()
        address = ctypes.c_void_p()
        with _settings.changed(tag="through-logging"):
            _library.check(lib.tms_malloc(ctypes.byref(address), 1 << 20, 0))
        saver.pause("through-logging")
        saver.resume("through-logging")
        _library.check(lib.tms_free(address))
        """,
        TMS_LOG_LEVEL="info",
    )
    assert_no_crash(result)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if "through-logging" in line]
    assert len(lines) == 2, result.stderr
    assert lines[0].startswith("INFO torch_memory_saver: paused 1 allocations"), lines[0]
    assert lines[1].startswith("INFO torch_memory_saver: resumed 1 allocations"), lines[1]
    assert "[torch_memory_saver" not in result.stderr, result.stderr


def test_lines_after_the_interpreter_began_to_exit_go_to_stderr():
    # An exit handler registered before the package's own runs after it, when
    # the callback is gone: its engine lines must not call into Python.
    result = run_python(
        """
        import atexit, ctypes, logging

        def at_exit():
            lib = _library.library()
            _library.check(lib.tms_pause(b"exiting"))
            _library.check(lib.tms_discard_backup(address.value))
            _library.check(lib.tms_resume(b"exiting"))
            _library.check(lib.tms_free(address.value))
            print("exit handler done", flush=True)

        atexit.register(at_exit)
        logging.basicConfig(level=logging.INFO)
        from torch_memory_saver import _library, _settings
        from torch_memory_saver._policy import BackupPolicy
        address = ctypes.c_void_p()
        with _settings.changed(tag="exiting", policy=BackupPolicy.from_region(enable_cpu_backup=True)):
            _library.check(_library.library().tms_malloc(ctypes.byref(address), 1 << 20, 0))
        """
    )
    assert_no_crash(result)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "exit handler done\n", result.stdout + result.stderr
    assert "[torch_memory_saver ERROR] discarded the backup of allocation" in result.stderr, result.stderr
    assert "[torch_memory_saver WARNING] resumed allocation" in result.stderr, result.stderr
    assert "Exception ignored" not in result.stderr, result.stderr


def test_a_forked_child_logs_through_its_own_logging():
    result = run_python(
        """
        import ctypes, logging, os
        logging.basicConfig(level=logging.INFO, format="%(process)d %(levelname)s %(name)s: %(message)s")
        from torch_memory_saver import torch_memory_saver as saver, _library, _settings
        from torch_memory_saver._policy import BackupPolicy
        _library.library()  # loaded in the parent, the engine not yet created
        pid = os.fork()
        if pid == 0:
            lib = _library.library()
            address = ctypes.c_void_p()
            with _settings.changed(tag="child", policy=BackupPolicy.from_region(enable_cpu_backup=True)):
                _library.check(lib.tms_malloc(ctypes.byref(address), 1 << 20, 0))
            saver.pause("child")
            saver.discard_backup(address.value)
            saver.resume("child")
            _library.check(lib.tms_free(address.value))
            print(os.getpid(), flush=True)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        assert status == 0, status
        """
    )
    assert_no_crash(result)
    assert result.returncode == 0, result.stderr
    child = result.stdout.strip()
    assert f"{child} ERROR torch_memory_saver: discarded the backup of allocation" in result.stderr, result.stderr
    assert f"{child} WARNING torch_memory_saver: resumed allocation" in result.stderr, result.stderr
