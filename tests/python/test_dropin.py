"""Names and behaviours that code written for the library this one replaces relies on.

Each test stands for a real caller: launchers that build LD_PRELOAD, patches
that reach into ``_impl._binary_wrapper.cdll``, forks' tests that import the
``hooks`` submodules, and the documented retained-backup semantics. Simulated
driver, no torch.
"""

import ctypes
import importlib
import os

import pytest
from simhelpers import MIB, pattern, run_python
from torch_memory_saver import TorchMemorySaver, _library, _settings, errors
from torch_memory_saver import torch_memory_saver as singleton
from torch_memory_saver._policy import BackupPolicy
from torch_memory_saver.errors import InvalidArgumentError


def test_hooks_submodules_import_with_their_names():
    base = importlib.import_module("torch_memory_saver.hooks.base")
    preload = importlib.import_module("torch_memory_saver.hooks.mode_preload")
    torch_mode = importlib.import_module("torch_memory_saver.hooks.mode_torch")
    assert set(base.HookMode.__args__) == {"preload", "torch"}
    assert issubclass(preload.HookUtilModePreload, base.HookUtilBase)
    assert issubclass(torch_mode.HookUtilModeTorch, base.HookUtilBase)
    assert isinstance(base.HookUtilBase.create("preload"), preload.HookUtilModePreload)
    with pytest.raises(ValueError, match="hook_mode"):
        base.HookUtilBase.create("magic")
    # configure_subprocess is importable from where the old layout had it.
    from torch_memory_saver import configure_subprocess

    assert preload.configure_subprocess is configure_subprocess


def test_preload_hook_util_refuses_a_process_without_ld_preload():
    from torch_memory_saver.hooks.mode_preload import HookUtilModePreload

    with pytest.raises(RuntimeError, match="LD_PRELOAD"):
        HookUtilModePreload().get_path_binary()


def test_impl_is_none_until_initialised_then_exposes_the_engine():
    saver = TorchMemorySaver()
    saver.hook_mode = "torch"
    assert saver._impl is None  # patches test this before touching the engine
    saver._ensure_initialized()
    cdll = saver._impl._binary_wrapper.cdll
    assert cdll is _library.library(), "one engine per process"
    assert saver._impl._hook_mode == "torch"


def test_impl_cdll_switches_the_threads_real_region_state(lib):
    """slime's DeepEP patch turns the region off around a buffer it must keep resident."""
    saver = TorchMemorySaver()
    saver.hook_mode = "torch"
    saver._ensure_initialized()
    cdll = saver._impl._binary_wrapper.cdll
    with _settings.changed(interesting=True, tag="patched", policy=BackupPolicy.from_region(enable_cpu_backup=True)):
        assert cdll.tms_get_interesting_region() is True
        assert cdll.tms_set_interesting_region(False) == 0
        # The engine itself sees the change: cudaMalloc's interposer reads this flag.
        assert bool(lib.tms_get_interesting_region()) is False
        assert _settings.read().interesting is False
        cdll.tms_set_interesting_region(True)
        assert _settings.read().interesting is True


def test_module_singleton_has_the_integration_entry_points():
    assert callable(singleton._ensure_initialized)
    assert singleton._impl is None or singleton._impl._binary_wrapper.cdll is _library.library()


def test_binary_wrapper_refuses_a_second_copy_of_the_library(tmp_path):
    from torch_memory_saver.binary_wrapper import BinaryWrapper

    assert BinaryWrapper(_library.loaded_path()).cdll is _library.library()
    other = tmp_path / "libtorch_memory_saver_copy.so"
    other.write_bytes(_library.loaded_path().read_bytes())
    with pytest.raises(errors.ConfigError, match="second engine"):
        BinaryWrapper(other)


def test_binary_wrapper_set_config_sets_the_calling_threads_region(lib):
    from torch_memory_saver.binary_wrapper import BinaryWrapper

    saved = _settings.read()
    try:
        BinaryWrapper().set_config(tag="cfg", interesting_region=True, enable_cpu_backup=True)
        now = _settings.read()
        assert (now.interesting, now.tag, now.policy.kind) == (True, "cfg", "host")
        with pytest.raises(InvalidArgumentError, match="together are refused"):
            BinaryWrapper().set_config(
                tag="both", interesting_region=True, enable_cpu_backup=True, enable_disk_backup=True
            )
        assert _settings.read() == now, "a refused configuration changes nothing"
    finally:
        _settings._restore(saved)


def test_utils_change_env_sets_and_restores(monkeypatch):
    from torch_memory_saver.utils import change_env

    monkeypatch.setenv("TMS_DROPIN_SET", "before")
    monkeypatch.delenv("TMS_DROPIN_UNSET", raising=False)
    with change_env("TMS_DROPIN_SET", "inside"), change_env("TMS_DROPIN_UNSET", "new"):
        assert os.environ["TMS_DROPIN_SET"] == "inside"
        assert os.environ["TMS_DROPIN_UNSET"] == "new"
    assert os.environ["TMS_DROPIN_SET"] == "before"
    assert "TMS_DROPIN_UNSET" not in os.environ


def test_utils_is_xpu_and_testing_utils_without_torch():
    result = run_python(
        """
        from torch_memory_saver.utils import is_xpu
        from torch_memory_saver import testing_utils
        assert is_xpu() is False
        assert testing_utils.get_device() == "cuda"
        try:
            testing_utils.empty_cache()
        except ImportError as error:
            print("needs torch:", error)
        """
    )
    assert result.returncode == 0, result.stderr
    assert "needs torch" in result.stdout


def test_missing_library_is_a_runtime_error(tmp_path):
    result = run_python(
        """
        from torch_memory_saver.utils import get_binary_path_from_package
        try:
            get_binary_path_from_package("torch_memory_saver_hook_mode_preload")
        except RuntimeError as error:
            print("caught:", type(error).__name__)
        """,
        TMS_LIBRARY_PATH=str(tmp_path / "missing.so"),
    )
    assert result.returncode == 0, result.stderr
    assert "caught: LibraryNotFoundError" in result.stdout


def test_config_errors_are_runtime_errors_too():
    assert issubclass(errors.ConfigError, RuntimeError)
    assert issubclass(errors.ConfigError, ValueError)


def _host_copy(lib, address, size):
    pointer = lib.tms_get_cpu_backup_pointer(address, size)
    return None if not pointer else ctypes.string_at(pointer, size), pointer


def test_retained_backup_stays_readable_at_one_address_until_a_non_retaining_resume(lib, allocate):
    saver = TorchMemorySaver()
    size = 2 * MIB
    address = allocate(size, tag="kept", cpu_backup=True)
    saver.retain_cpu_backup = True
    try:
        first = pattern(size, seed=3)
        ctypes.memmove(address, first, size)
        saver.pause("kept")
        saver.resume("kept")
        copy, pointer = _host_copy(lib, address, size)
        assert copy == first, "after resume the retained copy is what the pause saved"
        for seed in (4, 5):
            ctypes.memmove(address, pattern(size, seed=seed), size)
            saver.pause("kept")
            saver.resume("kept")
            copy, again = _host_copy(lib, address, size)
            assert again == pointer, "the same host address every cycle"
            assert copy == pattern(size, seed=seed)
        saver.retain_cpu_backup = False
        assert _host_copy(lib, address, size)[1] == pointer, "turning retention off frees nothing at once"
        saver.pause("kept")
        saver.resume("kept")
        assert _host_copy(lib, address, size) == (None, None), "the next non-retaining resume gives it back"
    finally:
        saver.retain_cpu_backup = False


def test_demo_says_the_hook_mode_is_ignored_without_a_gpu():
    result = run_python(
        """
        import sys
        from torch_memory_saver.__main__ import main
        sys.exit(main(["demo", "--hook-mode", "preload", "--size-mb", "8"]))
        """,
        TMS_DRIVER="sim",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "--hook-mode preload is ignored on the simulated driver" in result.stdout
    assert "demo passed" in result.stdout


def test_preload_demo_restarts_itself_with_the_library_preloaded():
    """On a GPU machine without LD_PRELOAD the demo starts again preloaded (here the child
    has no GPU, so it reports its LD_PRELOAD and runs the simulated demo)."""
    result = run_python(
        """
        import os, sys
        from torch_memory_saver import _library, demo
        demo.cuda_available = lambda: True  # this process plays a GPU machine started without LD_PRELOAD
        os.environ.pop("TMS_DRIVER", None)
        os.environ["TMS_LIBRARY_PATH"] = str(_library.find_library_path())
        sys.exit(0 if demo.run(8, False, "preload") else 1)
        """,
        TMS_DRIVER=None,
        LD_PRELOAD=None,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "starting the demo again with the library in LD_PRELOAD" in output
    # The child had no GPU: it ran the simulated demo and passed.
    assert "SIMULATED driver" in output and "demo passed" in output
