"""Finding and loading the engine library."""

import re
import shutil

import pytest
import torch_memory_saver
from torch_memory_saver import _library, errors
from torch_memory_saver.utils import get_binary_path_from_package


def test_loads_the_engine_on_the_simulated_driver(lib):
    assert _library.decode(lib.tms_driver_name()) == "sim"
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", _library.decode(lib.tms_version()))
    assert _library.check(lib.tms_init()) is None


def test_every_function_of_the_c_abi_is_exported(lib):
    missing = [name for name in _library._SIGNATURES if not hasattr(lib, name)]
    assert not missing


def test_package_imports_without_torch_and_exports_the_api():
    for name in (
        "torch_memory_saver",
        "TorchMemorySaver",
        "configure_subprocess",
        "stats",
        "TorchMemorySaverError",
        "OutOfMemoryError",
        "InvalidArgumentError",
        "InvalidStateError",
    ):
        assert hasattr(torch_memory_saver, name), name
    assert isinstance(torch_memory_saver.torch_memory_saver, torch_memory_saver.TorchMemorySaver)


def test_missing_library_says_how_to_build_it(monkeypatch, tmp_path):
    monkeypatch.setattr(_library, "_mapped_copy", lambda: None)
    monkeypatch.setenv("TMS_LIBRARY_PATH", str(tmp_path / "nowhere.so"))
    with pytest.raises(errors.LibraryNotFoundError, match="cmake") as raised:
        _library.find_library_path()
    assert isinstance(raised.value, FileNotFoundError)
    assert "nowhere.so" in str(raised.value)


def test_a_different_library_than_the_loaded_one_is_refused(monkeypatch, tmp_path, lib):
    copy = tmp_path / "libtorch_memory_saver.so"
    shutil.copy(_library.loaded_path(), copy)
    monkeypatch.setenv("TMS_LIBRARY_PATH", str(copy))
    with pytest.raises(errors.ConfigError, match="already loaded"):
        _library.find_library_path()


def test_the_loaded_copy_is_found_first(lib):
    assert _library.find_library_path().samefile(_library.loaded_path())


@pytest.mark.parametrize(
    "stem", ["torch_memory_saver_hook_mode_preload", "torch_memory_saver_hook_mode_torch"]
)
def test_binary_path_for_both_hook_stems_is_the_one_library(stem, lib):
    path = get_binary_path_from_package(stem)
    assert path.samefile(_library.loaded_path())
    assert "torch_memory_saver" in path.name


def test_binary_path_rejects_unknown_stems():
    # RuntimeError is what launchers catch around this helper (the library this
    # one replaces raised it when no file matched).
    with pytest.raises(RuntimeError, match="stem"):
        get_binary_path_from_package("torch_memory_saver_cpp")
