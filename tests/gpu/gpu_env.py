"""How GPU scenario processes are started (shared by test_gpu_scenarios.py and soak.py).

Each scenario runs as ``python scenarios.py NAME HOOK_MODE`` in a fresh
process on this source tree's package and the CUDA driver; preload mode
gets the engine library in LD_PRELOAD.
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


def engine_library():
    """TMS_LIBRARY_PATH, else build/libtorch_memory_saver.so, else the one installed with the package."""
    candidates = [os.environ.get("TMS_LIBRARY_PATH"), REPO / "build" / LIBRARY_NAME]
    spec = importlib.util.find_spec("torch_memory_saver")
    if spec is not None and spec.origin:
        candidates.append(Path(spec.origin).parent / LIBRARY_NAME)
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate).resolve()
    raise FileNotFoundError(f"engine library not found (tried {candidates}); build it or set TMS_LIBRARY_PATH")


def scenario_env(hook_mode, preload=True, **extra):
    """Environment of a scenario process: this source tree's package on the CUDA driver."""
    library = engine_library()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("TMS_")
        and k not in ("LD_PRELOAD", "PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF")
    }
    env.update(PYTHONPATH=str(REPO / "python"), TMS_LIBRARY_PATH=str(library))
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
