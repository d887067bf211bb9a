"""GPU suite of compressed CPU backups: compress_scenarios.py in both hook modes, each in a fresh process.

Needs torch with CUDA (skips otherwise) and the engine library (see gpu_env.py).
"""

import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("CUDA is not available", allow_module_level=True)

from gpu_env import HOOK_MODES, scenario_env  # noqa: E402

SCENARIOS = Path(__file__).resolve().parent / "compress_scenarios.py"


@pytest.mark.parametrize("hook_mode", HOOK_MODES)
@pytest.mark.parametrize(
    "name", ["cycles_exact", "same_sizes_as_the_cpu_codec", "resume_oom_keeps_the_compressed_backup"]
)
def test_compressed_backup(name, hook_mode):
    result = subprocess.run(
        [sys.executable, str(SCENARIOS), name, hook_mode],
        env=scenario_env(hook_mode),
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "SCENARIO OK" in result.stdout, f"{name} [{hook_mode}]:\n{output}"
    print(output)
