"""GPU suite: every scenario of scenarios.py in both hook modes, each in a fresh process.

Needs torch with CUDA (skips otherwise) and the engine library: TMS_LIBRARY_PATH,
else build/libtorch_memory_saver.so, else the one installed with the package.
"""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("CUDA is not available", allow_module_level=True)

REPO = Path(__file__).resolve().parents[2]
SCENARIOS = Path(__file__).resolve().parent / "scenarios.py"
LIBRARY_NAME = "libtorch_memory_saver.so"
HOOK_MODES = ("preload", "torch")


def engine_library():
    candidates = [os.environ.get("TMS_LIBRARY_PATH"), REPO / "build" / LIBRARY_NAME]
    spec = importlib.util.find_spec("torch_memory_saver")
    if spec is not None and spec.origin:
        candidates.append(Path(spec.origin).parent / LIBRARY_NAME)
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate).resolve()
    pytest.fail(f"engine library not found (tried {candidates}); build it or set TMS_LIBRARY_PATH")


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


def run_scenario(name, hook_mode, preload=True, **extra_env):
    result = subprocess.run(
        [sys.executable, str(SCENARIOS), name, hook_mode],
        env=scenario_env(hook_mode, preload, **extra_env),
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "SCENARIO OK" in result.stdout, (
        f"{name} [{hook_mode}] failed:\n{output}"
    )


BOTH_MODES = [
    "release_1gb",
    "tags_selective",
    "cpu_backup_exact",
    "get_cpu_backup",
    "disk_backup",
    "cuda_graph",
    "rl_loop",
    "disable_in_region",
    "nested_regions",
    "threads_share_a_tag",
    "freed_outside_region",
    "misuse",
]


@pytest.mark.parametrize("hook_mode", HOOK_MODES)
@pytest.mark.parametrize("name", BOTH_MODES)
def test_scenario(name, hook_mode):
    run_scenario(name, hook_mode)


@pytest.mark.parametrize("hook_mode", HOOK_MODES)
def test_two_devices(hook_mode):
    if torch.cuda.device_count() < 2:
        pytest.skip("needs 2 GPUs")
    run_scenario("two_devices", hook_mode)


def test_trainer_wide_mode_with_disable():
    # Trainer-wide mode is preload by definition: no region() anywhere.
    run_scenario("trainer_wide", "preload", TMS_INIT_ENABLE="1", TMS_INIT_ENABLE_CPU_BACKUP="1")


@pytest.mark.parametrize("hook_mode", HOOK_MODES)
def test_expandable_segments(hook_mode):
    run_scenario("expandable_segments", hook_mode, PYTORCH_CUDA_ALLOC_CONF="expandable_segments:True")


@pytest.mark.parametrize("hook_mode", HOOK_MODES)
def test_without_ld_preload(hook_mode):
    run_scenario("without_ld_preload", hook_mode, preload=False)


@pytest.mark.parametrize("hook_mode", HOOK_MODES)
def test_demo_command(hook_mode):
    result = subprocess.run(
        [sys.executable, "-m", "torch_memory_saver", "demo", "--hook-mode", hook_mode],
        env=scenario_env(hook_mode),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "contents exact after resume: yes" in result.stdout
    assert "SIMULATED" not in result.stdout
