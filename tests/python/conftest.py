"""CPU tests of the Python package against the engine's simulated driver.

They test the ``torch_memory_saver`` that Python imports: the installed
package (``pip install .``, also editable), or the source tree with
``PYTHONPATH=python TMS_LIBRARY_PATH=build/libtorch_memory_saver.so`` (what
scripts/test.sh sets). The engine is created once per process and reads its
environment then, so the driver is chosen here, before the package is imported.
"""

import ctypes
import os
from pathlib import Path

import pytest

# The source tree the tests come from (for files such as tms.h), whichever
# package they test.
REPO = Path(__file__).resolve().parents[2]

os.environ["TMS_DRIVER"] = "sim"
# Thread defaults, backup settings and tuning come from these variables; the tests expect the plain defaults.
for _name in [n for n in os.environ if n.startswith(("TMS_INIT_", "TMS_DISK_", "TMS_RETAIN_", "TMS_CONF"))]:
    os.environ.pop(_name, None)

try:
    import torch_memory_saver
except ImportError as exc:  # pragma: no cover - a setup mistake, reported once and clearly
    raise pytest.UsageError(
        f"cannot import torch_memory_saver ({exc}): install it (`python3 -m pip install .`) or test "
        f"the source tree with PYTHONPATH=python TMS_LIBRARY_PATH=build/libtorch_memory_saver.so "
        f"(scripts/test.sh)"
    ) from exc
from torch_memory_saver import _library, _settings, stats  # noqa: E402
from torch_memory_saver._policy import BackupPolicy


def pytest_report_header(config):
    return (
        f"torch_memory_saver {torch_memory_saver.__version__} from "
        f"{os.path.dirname(torch_memory_saver.__file__)}, engine {_library.find_library_path()}"
    )


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
        with _settings.changed(tag=tag, policy=BackupPolicy.from_region(enable_cpu_backup=cpu_backup, enable_disk_backup=disk_backup)):
            _library.check(lib.tms_malloc(ctypes.byref(address), size, 0))
        made.append(address.value)
        return address.value

    yield _allocate
    for address in made:
        _library.check(lib.tms_free(address))
