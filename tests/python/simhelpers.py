"""Helpers shared by the CPU tests (simulated driver)."""

import ctypes
import os
import subprocess
import sys
import textwrap
from pathlib import Path

# One list of crash markers for the CPU and the GPU tests (gpu_env imports
# only the standard library).
sys.path.append(str(Path(__file__).resolve().parents[1] / "gpu"))
from gpu_env import CRASH_MARKERS  # noqa: E402

import torch_memory_saver
from torch_memory_saver import _library
from torch_memory_saver._disk_files import open_backup_files

MIB = 2**20


def pattern(size, seed=1):
    """Deterministic non-zero bytes, different per seed."""
    period = bytes((seed * 31 + 7 * i) % 255 + 1 for i in range(256))
    return period * (size // 256)


def backup_fds(directory):
    """Descriptors this process holds on backup files in `directory` (they have no name there), once the
    closes handed to the library's closing thread (after resume, free, discard) are done."""
    _library.check(_library.library().tms_drain_host_releases())
    return [int(os.path.basename(path)) for path in open_backup_files(str(directory))]


def device_free(lib, device=0):
    free, total = ctypes.c_uint64(), ctypes.c_uint64()
    _library.check(lib.tms_device_memory(device, ctypes.byref(free), ctypes.byref(total)))
    return free.value


# The directory holding the package under test (installed or source tree):
# child processes import the same one.
PACKAGE_ROOT = Path(torch_memory_saver.__file__).resolve().parents[1]

# Makes `import torch` fail in a child: these scripts need no torch, and
# importing it (the package does when it is installed) would cost seconds each.
_WITHOUT_TORCH = "import sys; sys.modules['torch'] = None\n"


def run_python(code, timeout=60, without_torch=True, **env_changes):
    """Run `code` in a fresh interpreter on the package under test (simulated driver).

    With `without_torch`, importing torch fails in it, as on a CI machine.
    Keyword arguments set (or, with None, remove) environment variables.
    """
    env = dict(os.environ, PYTHONPATH=str(PACKAGE_ROOT))
    for name, value in env_changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    script = (_WITHOUT_TORCH if without_torch else "") + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=timeout)


def assert_no_crash(result):
    """The process ended through Python (exit status >= 0), with no crash report on stderr."""
    output = result.stdout + result.stderr
    assert result.returncode >= 0, f"killed by signal {-result.returncode}:\n{output}"
    for marker in CRASH_MARKERS:
        assert marker not in output, f"{marker!r} in the output:\n{output}"
