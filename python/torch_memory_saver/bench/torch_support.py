"""What the GPU workers share: torch and the library set up, timers, contents patterns, engine statistics."""

from __future__ import annotations

import gc
import os
import time
from typing import TYPE_CHECKING, Any, Callable, List, Optional, Tuple, TypeVar, cast

from .constants import BenchUnavailable, GiB, exc_text
from .records import DeviceEnv, EngineTagStats, GapWork, LibraryInfo, WorkerResult, WorkerSpec

if TYPE_CHECKING:
    from ..hooks import HookMode

T = TypeVar("T")


def import_torch_cuda() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise BenchUnavailable(f"PyTorch is not installed ({exc})") from exc
    if not torch.cuda.is_available():
        raise BenchUnavailable(f"torch {torch.__version__} sees no CUDA device")
    return torch


def torch_env(torch: Any, device: int) -> DeviceEnv:
    props = torch.cuda.get_device_properties(device)
    return DeviceEnv(device_index=device, device_name=torch.cuda.get_device_name(device),
                     device_total_memory=int(props.total_memory), capability=f"{props.major}.{props.minor}",
                     torch=torch.__version__, torch_cuda=torch.version.cuda,
                     cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"))


def driver_version(torch: Any) -> Optional[int]:
    """The CUDA driver API version (e.g. 13000), as torch reads it; None where torch cannot say."""
    getter = getattr(torch._C, "_cuda_getDriverVersion", None)
    try:
        return int(getter()) if getter is not None else None
    except Exception:  # noqa: BLE001 - informative only
        return None


def timed(torch: Any, action: Callable[[], None]) -> Tuple[float, float]:
    """(seconds until `action` returned, seconds until the device was idle after it); device idle at start."""
    returned, synced, _ = timed_sampled(torch, action, lambda: None)
    return returned, synced


def timed_sampled(torch: Any, action: Callable[[], None], sample: Callable[[], T]) -> Tuple[float, float, T]:
    """timed(), and `sample()` taken right when `action` returned (its own time is left out of both)."""
    torch.cuda.synchronize()
    start = time.perf_counter()
    action()
    returned = time.perf_counter()
    value = sample()
    sampled = time.perf_counter()
    torch.cuda.synchronize()
    return returned - start, time.perf_counter() - start - (sampled - returned), value


class GapWorkload:
    """GPU work of about `seconds` between the steps of a cycle: bf16 matmuls, counted once, timed each time.

    The count comes from timing a few matmuls before the cycles; run() says how
    long each gap really took. No work at all for `seconds` <= 0.
    """

    MAX_MATMULS = 100_000

    def __init__(self, torch: Any, device: int, seconds: float, matrix: int) -> None:
        self.torch = torch
        self.record = GapWork(asked_seconds=max(0.0, seconds), matrix=matrix)
        if seconds <= 0:
            return
        where = f"cuda:{device}"
        self.a = torch.empty((matrix, matrix), dtype=torch.bfloat16, device=where)
        self.b = torch.empty((matrix, matrix), dtype=torch.bfloat16, device=where)
        self.c = torch.empty((matrix, matrix), dtype=torch.bfloat16, device=where)
        self.a.fill_(0.001)
        self.b.fill_(0.001)
        self._matmuls(2)  # warm-up: cuBLAS handle and kernel selection
        probe = 5
        per = self._matmuls(probe) / probe
        self.record.matmul_seconds = per
        self.record.matmuls = max(1, min(self.MAX_MATMULS, round(seconds / per) if per > 0 else 1))

    def _matmuls(self, count: int) -> float:
        self.torch.cuda.synchronize()
        start = time.perf_counter()
        self._queue(count)
        self.torch.cuda.synchronize()
        return time.perf_counter() - start

    def _queue(self, count: int) -> None:
        for _ in range(count):
            self.torch.matmul(self.a, self.b, out=self.c)

    def run(self) -> float:
        """One gap; its seconds until the device was idle (0.0 for no gap)."""
        return self._matmuls(self.record.matmuls) if self.record.matmuls else 0.0

    def queue(self) -> None:
        """One gap's matmuls queued on the current stream, not waited for (so that other work can run beside)."""
        self._queue(self.record.matmuls)


def device_free(torch: Any, device: int) -> int:
    return int(torch.cuda.mem_get_info(device)[0])


def require_device_memory(torch: Any, device: int, needed: int, what: str) -> None:
    free, total = torch.cuda.mem_get_info(device)
    if free < needed:
        raise RuntimeError(f"{what} needs about {needed / GiB:.2f} GiB of free GPU memory, only "
                           f"{free / GiB:.2f} of {total / GiB:.2f} GiB are free; lower --total-gib")


def host_empty_cache(torch: Any) -> None:
    """Return torch's cached pinned host blocks to the driver (torch keeps them after tensors die)."""
    for name in ("_host_emptyCache", "_cuda_hostEmptyCache"):
        function = getattr(torch._C, name, None)
        if function is not None:
            try:
                function()
            except Exception:  # noqa: BLE001 - best effort
                pass
            return


def free_everything(torch: Any) -> None:
    gc.collect()
    torch.cuda.synchronize()
    torch.cuda.empty_cache()


def layout_elements(total_bytes: int, count: int) -> int:
    """int64 elements per tensor for `count` tensors of total/count bytes each."""
    return (total_bytes // count) // 8


def fill(torch: Any, tensors: List[Any], seed: int) -> None:
    """Non-periodic pattern: element k of the concatenation holds seed * 2**40 + k (int64)."""
    offset = seed << 40
    for tensor in tensors:
        n = tensor.numel()
        torch.arange(offset, offset + n, out=tensor)
        offset += n


def int64_view(torch: Any, tensor: Any) -> Any:
    """`tensor`'s bytes as a flat int64 tensor (for fill() and verify() of any dtype); its byte size must be a
    multiple of 8."""
    return tensor.reshape(-1).view(torch.int64)


def verify(torch: Any, tensors: List[Any], seed: int, chunk: int = 1 << 26) -> Optional[str]:
    """None when every element holds its fill() value, else a description of the first difference."""
    offset = seed << 40
    for index, tensor in enumerate(tensors):
        n = tensor.numel()
        for start in range(0, n, chunk):
            end = min(n, start + chunk)
            expected = torch.arange(offset + start, offset + end, dtype=torch.int64, device=tensor.device)
            got = tensor[start:end]
            if not torch.equal(got, expected):
                wrong = (got != expected).nonzero().flatten()
                first = int(wrong[0]) + start
                return (f"tensor {index} of {len(tensors)} ({n} int64 elements): {wrong.numel()} of "
                        f"{end - start} elements differ in [{start}, {end}); first at element {first}: got "
                        f"{int(tensor[first])}, expected {offset + first} (pattern seed {seed})")
        offset += n
    return None


def record_check(result: WorkerResult, problem: Optional[str], moved: bool, where: str) -> bool:
    """Counts one full comparison after a resume; a difference or a moved data_ptr() is a DATA MISMATCH of
    `where` (in the result and on the worker's output). True when the contents came back exactly."""
    if moved:
        problem = (problem + "; " if problem else "") + "data_ptr changed"
    result.verified += 1
    if problem is not None:
        result.mismatches.append(f"{where}: {problem}")
        print(f"DATA MISMATCH ({where}): {problem}", flush=True)
    return problem is None


def library_setup(spec: WorkerSpec, result: WorkerResult) -> Any:
    """The torch_memory_saver singleton, in the hook mode asked for, on the CUDA driver."""
    from .. import _library
    from ..entrypoint import torch_memory_saver

    torch_memory_saver.hook_mode = cast("HookMode", spec.hook_mode)  # the setter checks the value
    lib = _library.library()
    driver = lib.tms_driver_name()
    result.library = LibraryInfo(path=str(_library.loaded_path()), version=_library.decode(lib.tms_version()),
                                 hook_mode=spec.hook_mode, ld_preload=os.environ.get("LD_PRELOAD"),
                                 driver=_library.decode(driver) if driver else "")
    if result.library.driver != "cuda":
        raise RuntimeError(f"the engine runs on the {result.library.driver or 'unknown'!r} driver "
                           f"({_library.last_error()}); the benchmark needs the CUDA driver (unset TMS_DRIVER)")
    torch_memory_saver.retain_cpu_backup = False
    return torch_memory_saver


def tag_stats(tms: Any, tag: str) -> EngineTagStats:
    """The engine's statistics of `tag`, summed over devices (an error record when they cannot be read)."""
    try:
        entries = [s for s in tms.stats() if s.tag == tag]
    except Exception as exc:  # noqa: BLE001 - statistics are informative only
        return EngineTagStats(error=exc_text(exc))
    return EngineTagStats(
        allocations=sum(int(s.allocations) for s in entries),
        active_bytes=sum(int(s.active_bytes) for s in entries),
        paused_bytes=sum(int(s.paused_bytes) for s in entries),
        backup_bytes=sum(int(s.backup_bytes) for s in entries),
        last_pause_seconds=max((float(s.last_pause_seconds) for s in entries), default=None),
        last_resume_seconds=max((float(s.last_resume_seconds) for s in entries), default=None),
    )
