"""What an installed package provides besides the API: its library where
launchers and editable installs look, the launcher-facing forwarder files,
the version and the command line."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

import torch_memory_saver
from torch_memory_saver import __main__ as cli
from torch_memory_saver import _library, utils

from simhelpers import PACKAGE_ROOT, assert_no_crash, run_python

# The names the previous torch_memory_saver shipped at the site-packages root,
# which launchers (slime, AReaL) put in LD_PRELOAD.
FORWARDERS = [
    f"torch_memory_saver_hook_mode_{mode}{cuda}.abi3.so"
    for mode in ("preload", "torch")
    for cuda in ("", "_cu12", "_cu13")
]


def forwarder_directory():
    """Where the forwarders of the library under test are: the site-packages
    root of an installed package, or the build directory of a source build."""
    library = _library.find_library_path()
    return library.parent.parent if library.parent.name == "torch_memory_saver" else library.parent


def test_packaged_library_is_found_in_every_package_directory(tmp_path, monkeypatch):
    # An editable install lists the source directory and the site-packages
    # directory holding the built library in the package's __path__.
    source, installed = tmp_path / "source", tmp_path / "site-packages"
    source.mkdir()
    installed.mkdir()
    (installed / _library.LIBRARY_FILE_NAME).write_bytes(b"")
    monkeypatch.setattr(torch_memory_saver, "__path__", [str(source), str(installed)])
    assert _library.packaged_library_path() == (installed / _library.LIBRARY_FILE_NAME).resolve()


def test_version_is_one_number_everywhere():
    version = torch_memory_saver.__version__
    assert version.count(".") == 2 and all(part.isdigit() for part in version.split("."))
    assert _library.library().tms_version().decode() == version
    try:
        from importlib.metadata import PackageNotFoundError, version as installed_version
    except ImportError:  # Python < 3.8 has no importlib.metadata; the package needs >= 3.9
        return
    try:
        assert installed_version("torch_memory_saver") == version
    except PackageNotFoundError:
        assert "site-packages" not in str(PACKAGE_ROOT)  # testing a source tree: nothing installed


def test_the_package_is_typed_and_its_metadata_names_its_license_and_extras():
    # py.typed: type checkers read the package's annotations (PEP 561).
    assert (Path(torch_memory_saver.__file__).parent / "py.typed").is_file()
    from importlib.metadata import PackageNotFoundError, metadata

    try:
        fields = metadata("torch_memory_saver")
    except PackageNotFoundError:
        assert "site-packages" not in str(PACKAGE_ROOT)  # testing a source tree: nothing installed
        return
    assert fields["License-Expression"] == "Apache-2.0"  # PEP 639
    assert "LICENSE" in fields.get_all("License-File")
    assert not [c for c in fields.get_all("Classifier") if c.startswith("License ::")]  # PEP 639 forbids both
    assert "bench" in fields.get_all("Provides-Extra")
    bench = sorted(r.split(";")[0].strip() for r in fields.get_all("Requires-Dist") if 'extra == "bench"' in r)
    assert bench == ["matplotlib", "transformers"], bench  # what python -m torch_memory_saver bench imports


@pytest.mark.parametrize("name", FORWARDERS)
def test_preloading_a_forwarder_gives_one_engine_seen_as_preloaded(name):
    forwarder = forwarder_directory() / name
    assert forwarder.is_file(), f"{forwarder} is missing"
    result = run_python(
        """
        import os
        from torch_memory_saver import _library, hooks, utils
        print(hooks.is_preloaded())
        print(_library._mapped_copy())
        print(_library.loaded_path())
        print(utils.get_binary_path_from_package("torch_memory_saver_hook_mode_preload"))
        maps = open("/proc/self/maps").read().split()
        print(len({p for p in maps if os.path.basename(p).startswith("libtorch_memory_saver")}))
        """,
        LD_PRELOAD=str(forwarder),
        TMS_LIBRARY_PATH=None,
    )
    assert_no_crash(result)
    assert result.returncode == 0, result.stdout + result.stderr
    preloaded, mapped, loaded, binary, copies = result.stdout.split()
    assert preloaded == "True"
    assert Path(mapped).name == _library.LIBRARY_FILE_NAME
    assert loaded == mapped == binary
    assert copies == "1"


def test_binary_path_names_the_real_library():
    for stem in ("torch_memory_saver_hook_mode_preload", "torch_memory_saver_hook_mode_torch"):
        assert utils.get_binary_path_from_package(stem).name == _library.LIBRARY_FILE_NAME


def test_version_option_and_program_name():
    result = subprocess.run(
        [sys.executable, "-m", "torch_memory_saver", "--version"],
        env=dict(os.environ, PYTHONPATH=str(PACKAGE_ROOT)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"torch_memory_saver {torch_memory_saver.__version__}"
    assert cli.program_name("/venv/bin/torch-memory-saver") == "torch-memory-saver"
    assert cli.program_name("/site-packages/torch_memory_saver/__main__.py") == "python -m torch_memory_saver"


def test_console_script_usage_names_itself():
    script = Path(sys.executable).parent / "torch-memory-saver"
    if not script.is_file():
        pytest.skip("the package is not installed in this interpreter's environment (source-tree run)")
    result = subprocess.run([str(script), "nonsense"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.startswith("usage: torch-memory-saver ")


def test_closed_pipe_ends_the_demo_quietly():
    # `demo | head -2`: the reader goes away after two lines.
    demo = subprocess.Popen(
        [sys.executable, "-m", "torch_memory_saver", "demo"],
        env=dict(os.environ, PYTHONPATH=str(PACKAGE_ROOT), TMS_DRIVER="sim"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    first_lines = [demo.stdout.readline(), demo.stdout.readline()]
    demo.stdout.close()
    stderr = demo.stderr.read()
    status = demo.wait(timeout=120)
    assert all(first_lines), first_lines
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr
    assert status == 141, (status, stderr)
