"""CPU tests of the Python package against the engine's simulated driver.

The engine is created once per process and reads its environment then, so
the driver and library are chosen here, before the package is imported.
Override the library with TMS_LIBRARY_PATH.
"""

import ctypes
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

os.environ["TMS_DRIVER"] = "sim"
os.environ.setdefault("TMS_LIBRARY_PATH", str(REPO / "build" / "libtorch_memory_saver.so"))
# Thread defaults and backup settings come from these variables; the tests expect the plain defaults.
for _name in [n for n in os.environ if n.startswith(("TMS_INIT_", "TMS_DISK_", "TMS_RETAIN_"))]:
    os.environ.pop(_name, None)
sys.path.insert(0, str(REPO / "python"))

from torch_memory_saver import _library, _settings, stats  # noqa: E402

SIM_CAPACITY = 1 << 30  # the simulated driver's default per device


@pytest.fixture
def lib():
    return _library.library()


@pytest.fixture(autouse=True)
def engine_left_clean():
    """Each test frees what it allocates and leaves the simulated device as it found it."""
    yield
    lib = _library.library()
    _library.check(lib.tms_sim_set_capacity(SIM_CAPACITY))
    _library.check(lib.set_memory_margin_bytes(0))
    leftovers = [s for s in stats() if s.allocations]
    assert not leftovers, f"test leaked engine allocations: {leftovers}"


@pytest.fixture
def allocate(lib):
    """allocate(size, tag=, cpu_backup=, disk_backup=) -> address; freed (active or paused) after the test."""
    made = []

    def _allocate(size, tag="test", cpu_backup=False, disk_backup=False):
        address = ctypes.c_void_p()
        with _settings.changed(tag=tag, cpu_backup=cpu_backup, disk_backup=disk_backup):
            _library.check(lib.tms_malloc(ctypes.byref(address), size, 0))
        made.append(address.value)
        return address.value

    yield _allocate
    for address in made:
        _library.check(lib.tms_free(address))
