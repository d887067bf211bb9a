"""How GPU test processes are started and judged (shared by test_gpu_scenarios.py, soak.py,
test_compress_gpu.py and distributed/dist_common.py; the CPU tests' simhelpers.py takes CRASH_MARKERS).

Each scenario runs as ``python scenarios.py NAME HOOK_MODE`` in a fresh
process on the package under test (the importable one, else this source
tree with build/) and the CUDA driver; preload mode
gets the engine library in LD_PRELOAD. Imports nothing but the standard library.
"""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCENARIOS = Path(__file__).resolve().parent / "scenarios.py"
LIBRARY_NAME = "libtorch_memory_saver.so"
HOOK_MODES = ("preload", "torch")

# What a process that died instead of exiting through Python leaves on stderr.
CRASH_MARKERS = ("Aborted", "Segmentation", "terminate called", "Fatal Python error", "core dumped")


def package_under_test():
    """(directory on sys.path holding torch_memory_saver, its engine library or None).

    The importable package (an installed wheel, or PYTHONPATH) when there is
    one, else this source tree with build/.
    """
    spec = importlib.util.find_spec("torch_memory_saver")
    if spec is None or not spec.origin:
        return REPO / "python", REPO / "build" / LIBRARY_NAME
    for directory in spec.submodule_search_locations or [Path(spec.origin).parent]:
        if (Path(directory) / LIBRARY_NAME).is_file():
            return Path(spec.origin).resolve().parents[1], Path(directory) / LIBRARY_NAME
    return Path(spec.origin).resolve().parents[1], REPO / "build" / LIBRARY_NAME


def engine_library():
    """TMS_LIBRARY_PATH, else the library of the package under test (see package_under_test)."""
    candidate = os.environ.get("TMS_LIBRARY_PATH") or package_under_test()[1]
    if not Path(candidate).is_file():
        raise FileNotFoundError(f"engine library not found at {candidate}; install the package or set TMS_LIBRARY_PATH")
    return Path(candidate).resolve()


def scenario_env(hook_mode, preload=True, **extra):
    """Environment of a scenario process: the package under test on the CUDA driver."""
    library = engine_library()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("TMS_")
        and k not in ("LD_PRELOAD", "PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF")
    }
    env.update(PYTHONPATH=str(package_under_test()[0]), TMS_LIBRARY_PATH=str(library))
    if hook_mode == "preload" and preload:
        env["LD_PRELOAD"] = str(library)
    env.update(extra)
    return env


def run_scenario_process(name, hook_mode, preload=True, timeout=300, capture=True, **extra_env):
    """Run one scenario in its own process; returns the CompletedProcess."""
    return subprocess.run(
        [sys.executable, str(SCENARIOS), name, hook_mode],
        env=scenario_env(hook_mode, preload, **extra_env),
        capture_output=capture,
        text=True,
        timeout=timeout,
    )
