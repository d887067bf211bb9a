"""Colocated processes on one GPU.

Process A (colocated_worker.py holder, torch_memory_saver in either hook
mode) holds ~70 % of the GPU's free memory in regions, pauses; process B
(colocated_worker.py borrower, plain torch, started separately by this test)
allocates more than was free before the pause, computes, frees and exits; A
resumes with bit-exact weights at unchanged addresses.

Needs torch with CUDA (skips otherwise) and the engine library
(TMS_LIBRARY_PATH, else the installed package's, else build/: see
tests/gpu/gpu_env.py). TMS_TEST_LOG_DIR keeps
both processes' logs and the result files.
"""

import shutil
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("CUDA is not available", allow_module_level=True)

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dist_common  # noqa: E402  (after the skips: the module needs nothing, but keeps CI quiet)

WORKER = dist_common.HERE / "colocated_worker.py"
TIMEOUT = 200


@pytest.fixture(autouse=True)
def _library_present():
    if dist_common.engine_library() is None:
        pytest.fail("engine library not found; build it or set TMS_LIBRARY_PATH")


@pytest.mark.parametrize("hook_mode", dist_common.HOOK_MODES)
def test_colocated_processes_share_released_memory(hook_mode, tmp_path):
    logs = dist_common.log_dir(f"colocated-{hook_mode}", tmp_path)
    sync = logs / "sync"
    shutil.rmtree(sync, ignore_errors=True)
    sync.mkdir()

    python = sys.executable
    holder = dist_common.Child(
        "holder",
        [python, str(WORKER), "holder", "--hook-mode", hook_mode, "--sync-dir", str(sync)],
        dist_common.child_env(hook_mode),
        logs,
    )
    # B is an unrelated job: plain torch, no LD_PRELOAD, no torch_memory_saver.
    borrower = dist_common.Child(
        "borrower",
        [python, str(WORKER), "borrower", "--sync-dir", str(sync)],
        dist_common.child_env("torch", preload=False),
        logs,
    )
    try:
        holder_code = holder.wait(TIMEOUT)
        borrower_code = borrower.wait(30 if holder_code != 0 else TIMEOUT)
    finally:
        holder.kill()
        borrower.kill()

    result = dist_common.read_json(sync / "holder_result.json")
    dist_common.report(
        f"colocated [{hook_mode}]",
        {
            "holder_exit": holder_code,
            "borrower_exit": borrower_code,
            "result": {k: v for k, v in (result or {}).items() if k != "checks"},
            "failed_checks": [c for c in (result or {}).get("checks", []) if not c["ok"]],
        },
    )
    detail = f"\n--- holder ---\n{holder.output()}\n--- borrower ---\n{borrower.output()}"
    assert not holder.timed_out and not borrower.timed_out, "timed out" + detail
    assert holder_code == 0 and "HOLDER OK" in holder.output(), "holder failed" + detail
    assert borrower_code == 0 and "BORROWER OK" in borrower.output(), "borrower failed" + detail
    assert result is not None and result["borrower"]["need"] > result["free_before_pause"], detail
