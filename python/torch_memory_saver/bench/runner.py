"""The parent's side: checks before starting, worker environments, and the worker processes one after another.

The parent never creates a CUDA context: every GPU measurement runs in a fresh
worker (see worker.py for the protocol and bench/README.md for why).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

from .._disk_files import named_backup_files
from .constants import STRIPPED_ENV, BenchUnavailable, exc_text
from .records import DiskVariantSpec, VmmLayoutSpec, WorkerResult, WorkerSpec
from .worker import WORKER_BOOT, read_result, write_spec


@dataclass
class Preflight:
    """Versions found before any worker starts."""

    torch: Optional[str] = None
    torch_cuda: Optional[str] = None
    device_count: int = 0
    library_version: Optional[str] = None
    library_path: Optional[str] = None


def preflight() -> Preflight:
    """Versions and checks that need no CUDA context; raises BenchUnavailable with a clear reason."""
    if os.environ.get("TMS_DRIVER", "") == "sim":
        raise BenchUnavailable("TMS_DRIVER=sim selects the simulated driver; the benchmark measures the GPU "
                               "(unset TMS_DRIVER)")
    try:
        import torch
    except ImportError as exc:
        raise BenchUnavailable(f"PyTorch is not installed ({exc}). The benchmark needs torch with CUDA and an "
                               f"NVIDIA GPU; `python -m torch_memory_saver demo --simulated` runs without "
                               f"them.") from None
    try:
        available = torch.cuda.is_available()
        count = torch.cuda.device_count() if available else 0
    except Exception as exc:
        raise BenchUnavailable(f"torch cannot query CUDA devices: {exc_text(exc)}") from exc
    if not available or count == 0:
        raise BenchUnavailable(f"no CUDA GPU visible to torch {torch.__version__} (CUDA build "
                               f"{torch.version.cuda}, CUDA_VISIBLE_DEVICES="
                               f"{os.environ.get('CUDA_VISIBLE_DEVICES')!r}). The benchmark needs a GPU.")
    from .. import _library
    from ..errors import TorchMemorySaverError

    try:
        lib = _library.library()
        version = _library.decode(lib.tms_version())
        path = str(_library.loaded_path())
    except TorchMemorySaverError as exc:
        raise BenchUnavailable(f"the torch_memory_saver engine library cannot be loaded: {exc}") from exc
    return Preflight(torch=torch.__version__, torch_cuda=torch.version.cuda, device_count=count,
                     library_version=version, library_path=path)


def base_env(library_path: str) -> Dict[str, str]:
    """The workers' environment: this package, the same engine file, no TMS_* that would change the library."""
    env = dict(os.environ)
    for name in STRIPPED_ENV:
        env.pop(name, None)
    preload = [e for e in env.get("LD_PRELOAD", "").replace(" ", ":").split(":")
               if e and "torch_memory_saver" not in os.path.basename(e)]
    if preload:
        env["LD_PRELOAD"] = ":".join(preload)
    else:
        env.pop("LD_PRELOAD", None)
    package_parent = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([package_parent] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["TMS_LIBRARY_PATH"] = library_path  # the same engine file in every worker
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def library_env(base: Dict[str, str], hook_mode: str) -> Dict[str, str]:
    """`base` plus what `hook_mode` needs (preload: the engine in LD_PRELOAD, as configure_subprocess() does)."""
    env = dict(base)
    if hook_mode == "preload":
        from ..utils import configure_subprocess

        saved = os.environ.get("LD_PRELOAD")
        if "LD_PRELOAD" in base:
            os.environ["LD_PRELOAD"] = base["LD_PRELOAD"]
        else:
            os.environ.pop("LD_PRELOAD", None)
        try:
            with configure_subprocess():
                env["LD_PRELOAD"] = os.environ["LD_PRELOAD"]
        finally:
            if saved is None:
                os.environ.pop("LD_PRELOAD", None)
            else:
                os.environ["LD_PRELOAD"] = saved
    return env


class Runner:
    """Starts worker processes one after another and collects their results."""

    def __init__(self, out: Path, timeout_s: float) -> None:
        self.logs = out / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.timeout_s = timeout_s

    def run(self, name: str, spec: WorkerSpec, env: Dict[str, str]) -> WorkerResult:
        spec_path = self.logs / f"{name}.spec.json"
        result_path = self.logs / f"{name}.result.json"
        log_path = self.logs / f"{name}.log"
        spec.name, spec.result_path = name, str(result_path)
        write_spec(spec, spec_path)
        if result_path.exists():
            result_path.unlink()
        print(f"-- {name} ...", flush=True)
        start = time.perf_counter()
        exit_code: object
        with open(log_path, "w", encoding="utf-8") as log:
            try:
                process = subprocess.run([sys.executable, "-c", WORKER_BOOT, str(spec_path)], stdout=log,
                                         stderr=subprocess.STDOUT, env=env, timeout=self.timeout_s)
                exit_code = process.returncode
            except subprocess.TimeoutExpired:
                exit_code = f"timeout after {self.timeout_s:.0f} s"
            except OSError as exc:
                exit_code = f"could not start: {exc}"
        wall = time.perf_counter() - start
        try:
            result = read_result(result_path)
        except (OSError, ValueError, TypeError):
            tail = ""
            try:
                tail = log_path.read_text(encoding="utf-8", errors="replace")[-1500:]
            except OSError:
                pass
            result = WorkerResult(kind=spec.kind, name=name,
                                  fatal=f"worker gave no result (exit {exit_code}); log {log_path}:\n{tail}")
        result.exit_code = exit_code
        result.wall_seconds = wall
        result.log = str(log_path)
        if exit_code != 0 and not result.fatal:
            result.fatal = f"worker exited with {exit_code} (log {log_path})"
        print(f"   {name}: {wall:.1f} s, {status_line(result)}", flush=True)
        return result


def status_line(result: WorkerResult) -> str:
    status = "ok"
    if result.skipped:
        status = "skipped: " + result.skipped
    if result.fatal:
        status = "FAILED: " + result.fatal.splitlines()[0]
    elif result.errors:
        status = f"{len(result.errors)} item(s) failed: " + ", ".join(result.errors)
    if result.mismatches:
        status += f"; {len(result.mismatches)} DATA MISMATCH(ES)"
    return status


def first_error(result: Optional[WorkerResult], *names: str) -> Optional[str]:
    """The first line of the error that explains a missing item of `result`."""
    if result is None:
        return "not run"
    if result.skipped:
        return "skipped: " + result.skipped
    if result.fatal:
        return "worker failed: " + result.fatal.splitlines()[0]
    for name in names:
        if name in result.errors:
            return result.errors[name].splitlines()[0]
    if result.errors:
        name = next(iter(result.errors))
        return f"{name}: " + result.errors[name].splitlines()[0]
    return None


def run_disk_part(runner: Runner, common: WorkerSpec, disk_dir: str, layouts: List[int], disk_bytes: int,
                  variants: List[DiskVariantSpec], repeats: int, base: Dict[str, str],
                  library: Dict[str, str]) -> Dict[str, WorkerResult]:
    """The disk floor worker, then one library worker per disk layout, in a private directory removed after."""
    workers: Dict[str, WorkerResult] = {}
    try:
        run_dir = tempfile.mkdtemp(prefix="tms-bench-disk-", dir=disk_dir)
    except OSError as exc:
        workers["disk_floor"] = WorkerResult(kind="disk_floor",
                                             fatal=f"cannot make a directory in --disk-dir {disk_dir}: "
                                                   f"{exc_text(exc)}")
        return workers

    def spec(kind: str, layout: Optional[int] = None) -> WorkerSpec:
        return WorkerSpec(kind=kind, device=common.device, total_bytes=common.total_bytes, repeats=common.repeats,
                          hook_mode=common.hook_mode, disk_dir=run_dir, disk_bytes=disk_bytes,
                          disk_variants=variants, disk_repeats=repeats, layout=layout)

    try:
        workers["disk_floor"] = runner.run("disk_floor", spec("disk_floor"), base)
        for count in layouts:
            name = f"disk_{count}"
            workers[name] = runner.run(name, spec("disk", count), library)
            stale = named_backup_files(run_dir)  # only a worker killed while creating a file leaves one
            if stale:
                workers[name].warnings.append(
                    f"{len(stale)} tms-backup file(s) left in {run_dir} after the worker exited; removed")
                for file_name in stale:
                    try:
                        os.unlink(os.path.join(run_dir, file_name))
                    except OSError:
                        pass
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    return workers


def engine_vmm_layouts(nobackup: Optional[WorkerResult], layouts: List[int]) -> List[VmmLayoutSpec]:
    """Raw VMM layouts with the engine's own handle count, where torch's segmentation changed it.

    torch's caching allocator packs tensors of 1-10 MiB into 20 MiB segments
    (and rounds others), so the engine may see fewer, bigger allocations than
    there are tensors; the matching floor is then m handles of bytes/m.
    """
    extra: List[VmmLayoutSpec] = []
    if nobackup is None:
        return extra
    for count in layouts:
        layout = nobackup.items.get(f"n{count}")
        allocations = layout.engine.allocations if layout else None
        active = layout.engine.active_bytes if layout else None
        if allocations and active and allocations != count:
            extra.append(VmmLayoutSpec(label=f"engine-{count}", count=int(allocations),
                                       size=int(active) // int(allocations), for_layout=count))
    return extra
