"""Host<->device copy floors (torch): pinned copies, and copies with the engine's kind of host memory."""

from __future__ import annotations

import gc
import mmap
import time
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Tuple

from .records import RegisteredCopies, Timing
from .torch_support import free_everything, host_empty_cache


def copy_times(torch: Any, host: Any, dev: Any, stream: Any, repeats: int) -> Dict[str, List[float]]:
    """Seconds of each of `repeats` whole-buffer copies on `stream`, per direction ("d2h", "h2d")."""
    out: Dict[str, List[float]] = {}
    for direction in ("d2h", "h2d"):
        times = []
        for _ in range(repeats):
            torch.cuda.synchronize()
            start = time.perf_counter()
            with torch.cuda.stream(stream):
                if direction == "d2h":
                    host.copy_(dev, non_blocking=True)
                else:
                    dev.copy_(host, non_blocking=True)
            stream.synchronize()
            times.append(time.perf_counter() - start)
        out[direction] = times
    return out


def pinned_copy_floor(torch: Any, device: int, nbytes: int, repeats: int) -> Tuple[Timing, Timing]:
    """Best-of-`repeats` pinned D2H and H2D copies of `nbytes`, in a worker that measures the library next: its
    buffers are freed and torch's cached pinned blocks handed back before it returns, so neither device memory
    nor RSS carries them into what follows."""
    host = torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
    dev = torch.empty(nbytes, dtype=torch.uint8, device=f"cuda:{device}")
    dev.fill_(0x5A)
    times = copy_times(torch, host, dev, torch.cuda.Stream(device), repeats)
    del host, dev
    free_everything(torch)
    host_empty_cache(torch)
    return (Timing(seconds=min(times["d2h"]), all_seconds=times["d2h"], bytes=nbytes),
            Timing(seconds=min(times["h2d"]), all_seconds=times["h2d"], bytes=nbytes))


@contextmanager
def registered_host_buffer(torch: Any, nbytes: int, fill: int = 1) -> Iterator[Any]:
    """A uint8 CPU tensor of page-locked anonymous THP memory, the kind the engine backs up into.

    mmap + MADV_HUGEPAGE, faulted in (torch fills with several threads), then
    page-locked with cudaHostRegister, as the engine's host memory does with
    cuMemHostRegister. Unregistered and unmapped on exit.
    """
    buffer = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    cudart = torch.cuda.cudart()
    registered = False
    host = None
    try:
        if hasattr(buffer, "madvise") and hasattr(mmap, "MADV_HUGEPAGE"):
            buffer.madvise(mmap.MADV_HUGEPAGE)
        host = torch.frombuffer(buffer, dtype=torch.uint8)
        host.fill_(fill)
        code = cudart.cudaHostRegister(host.data_ptr(), nbytes, 0)
        if int(getattr(code, "value", code)) != 0:
            raise RuntimeError(f"cudaHostRegister failed: {code}")
        registered = True
        yield host
    finally:
        torch.cuda.synchronize()
        if registered and host is not None:
            cudart.cudaHostUnregister(host.data_ptr())
        del host
        gc.collect()
        try:
            buffer.close()
        except BufferError:  # a view is still alive somewhere: the OS reclaims it at exit
            pass


def registered_copy_floor(torch: Any, dev: Any, stream: Any, repeats: int) -> RegisteredCopies:
    """D2H/H2D rates with page-locked THP memory instead of cudaHostAlloc memory.

    The copy engine may not move data at the same rate to and from the two kinds.
    """
    total = dev.numel()
    with registered_host_buffer(torch, total) as host:
        out = RegisteredCopies(bytes=total, is_pinned=bool(host.is_pinned()))
        times = copy_times(torch, host, dev, stream, repeats)
        out.d2h_seconds, out.d2h_all_seconds = min(times["d2h"]), times["d2h"]
        out.h2d_seconds, out.h2d_all_seconds = min(times["h2d"]), times["h2d"]
        return out
