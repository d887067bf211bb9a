"""Helpers shared by the multi-process GPU tests (the pytest side; imports no torch).

Every child process these tests start gets the environment built by
:func:`child_env`: the package under test and its engine library, found as
the other GPU tests find them (``tests/gpu/gpu_env.py``: the importable
package, an installed wheel or PYTHONPATH, with its own library, else this
source tree with build/; ``TMS_LIBRARY_PATH`` names another library), and
NVLink multicast switched off
(``NCCL_NVLS_ENABLE=0``, ``TORCH_SYMM_MEM_DISABLE_MULTICAST=1``,
``NVSHMEM_DISABLE_NVLS=1``) because the GPU machines these run on require it.

Set ``TMS_TEST_LOG_DIR`` to keep every child's output and result files there
(one sub-directory per test); otherwise a temporary directory is used and
removed.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
sys.path.insert(0, str(HERE.parent))  # tests/gpu, for gpu_env: one rule for finding the package under test
import gpu_env  # noqa: E402

HOOK_MODES = gpu_env.HOOK_MODES

# NVLink multicast must stay off on the shared GPU hosts: never let a child run without these.
NO_MULTICAST_ENV = {
    "NCCL_NVLS_ENABLE": "0",
    "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
    "NVSHMEM_DISABLE_NVLS": "1",
}

# Variables the parent may have that would change what a child does.
_DROPPED_PREFIXES = ("TMS_",)
_DROPPED = ("LD_PRELOAD", "PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF", "NCCL_GRAPH_REGISTER")


def engine_library() -> Optional[Path]:
    """The engine library under test (gpu_env.engine_library), or None where there is none."""
    try:
        return gpu_env.engine_library()
    except FileNotFoundError:
        return None


def package_under_test() -> Path:
    """The torch_memory_saver package directory the children import."""
    return gpu_env.package_under_test()[0] / "torch_memory_saver"


def child_env(hook_mode: str = "torch", preload: bool = True, **extra: str) -> Dict[str, str]:
    """Environment of a child process: the package under test, its engine library, multicast off.

    In preload mode the library is put in ``LD_PRELOAD`` (as
    ``torch_memory_saver.configure_subprocess()`` would) unless `preload` is False.
    `extra` is applied last, except that the no-multicast variables always win.
    """
    library = engine_library()
    if library is None:
        raise FileNotFoundError(
            "engine library not found: build it (cmake -S . -B build && cmake --build build) "
            "or set TMS_LIBRARY_PATH"
        )
    env = {k: v for k, v in os.environ.items() if not k.startswith(_DROPPED_PREFIXES) and k not in _DROPPED}
    python_path = [str(gpu_env.package_under_test()[0]), str(HERE)]
    if env.get("PYTHONPATH"):
        python_path.append(env["PYTHONPATH"])
    env.update(
        PYTHONPATH=os.pathsep.join(python_path),
        TMS_LIBRARY_PATH=str(library),
        PYTHONUNBUFFERED="1",
    )
    if hook_mode == "preload" and preload:
        env["LD_PRELOAD"] = str(library)
    env.update({k: str(v) for k, v in extra.items()})
    env.update(NO_MULTICAST_ENV)
    return env


def log_dir(name: str, tmp_path: Path) -> Path:
    """Directory for one test's child logs: $TMS_TEST_LOG_DIR/<name>, else tmp_path/<name>."""
    root = os.environ.get("TMS_TEST_LOG_DIR")
    base = Path(root) if root else tmp_path
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
    path = base / safe
    path.mkdir(parents=True, exist_ok=True)
    return path


def kill_group(process: subprocess.Popen) -> None:
    """End a child started with start_new_session=True, and every process it started."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(10)


_LIVE: "set[Child]" = set()
_HANDLER_INSTALLED = False


def _end_children_on_sigterm() -> None:
    """On SIGTERM (e.g. `timeout` ending pytest) end the children first: they run in their own sessions."""
    global _HANDLER_INSTALLED
    if _HANDLER_INSTALLED:
        return
    previous = signal.getsignal(signal.SIGTERM)

    def handler(signum, frame):  # noqa: ARG001
        for child in list(_LIVE):
            child.kill()
        if callable(previous):
            previous(signum, frame)
        os._exit(128 + signum)

    try:
        signal.signal(signal.SIGTERM, handler)
        _HANDLER_INSTALLED = True
    except ValueError:  # not the main thread: children are still ended by the test's own timeouts
        pass


class Child:
    """A child process whose stdout+stderr go to a log file; killed with its group on timeout."""

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str], logs: Path) -> None:
        _end_children_on_sigterm()
        self.name = name
        self.log_path = logs / f"{name}.log"
        self._log = open(self.log_path, "w", encoding="utf-8")
        self._log.write("$ " + " ".join(argv) + "\n")
        self._log.flush()
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            list(argv),
            env=dict(env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # so that a timeout can end torchrun and its workers together
            cwd=str(REPO),
        )
        _LIVE.add(self)
        self.timed_out = False

    def wait(self, timeout: float) -> int:
        remaining = max(1.0, timeout - (time.monotonic() - self.started))
        try:
            code = self.process.wait(remaining)
        except subprocess.TimeoutExpired:
            self.timed_out = True
            kill_group(self.process)
            code = self.process.returncode if self.process.returncode is not None else -9
        self._log.close()
        _LIVE.discard(self)
        return code

    def kill(self) -> None:
        kill_group(self.process)
        if not self._log.closed:
            self._log.close()
        _LIVE.discard(self)

    def output(self, tail: Optional[int] = 12000) -> str:
        """The child's output so far: the last `tail` characters, or all of it for None."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return text if tail is None else text[-tail:]


def run_child(name: str, argv: Sequence[str], env: Mapping[str, str], logs: Path, timeout: float):
    """Run one child to completion; returns (exit code, timed_out, its whole output)."""
    child = Child(name, argv, env, logs)
    code = child.wait(timeout)
    return code, child.timed_out, child.output(tail=None)


def tail(text: str, size: int = 12000) -> str:
    return text[-size:]


def torchrun_argv(nproc: int, script: Path, *args: str) -> List[str]:
    """``python -m torch.distributed.run --standalone --nproc-per-node N script args``."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "--max-restarts=0",
        str(script),
        *args,
    ]


def read_json(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def report(title: str, payload: object) -> None:
    """Print a result block that stays readable in a pytest -s log."""
    print(f"\n==== {title} ====")
    print(json.dumps(payload, indent=2, sort_keys=True, default=str))
