"""Helpers for the worker processes of the multi-process GPU tests (imports torch).

The workers are scripts run by the tests in fresh processes (directly or
under torchrun); they import this module from their own directory.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional

import torch

MIB = 2**20
GIB = 2**30

NO_MULTICAST_ENV = {
    "NCCL_NVLS_ENABLE": "0",
    "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
    "NVSHMEM_DISABLE_NVLS": "1",
}


def require_no_multicast_env() -> None:
    """Refuse to run unless NVLink multicast is switched off in this process's environment."""
    wrong = {k: os.environ.get(k) for k, v in NO_MULTICAST_ENV.items() if os.environ.get(k) != v}
    if wrong:
        raise SystemExit(
            f"refusing to run: NVLink multicast must be off on these machines; expected "
            f"{NO_MULTICAST_ENV}, got {wrong}"
        )


def write_json(path: Path, payload: Any) -> None:
    """Write JSON atomically (readers never see half a file)."""
    path = Path(path)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str), encoding="utf-8")
    os.replace(tmp, path)


def wait_for_json(path: Path, timeout: float, poll: float = 0.05) -> Dict[str, Any]:
    """Wait until `path` exists and parses; raise TimeoutError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout:.0f} s for {path}")
        time.sleep(poll)


def free_bytes(device: Optional[int] = None) -> int:
    torch.cuda.synchronize(device)
    return int(torch.cuda.mem_get_info(device)[0])


def tag_stats(tags: Iterable[str], device: Optional[int] = None) -> Dict[str, Any]:
    """Engine statistics of `tags` on `device` (default: the current one), as dicts by tag."""
    import torch_memory_saver as tms_package  # here, so that plain-torch workers never import it

    device = torch.cuda.current_device() if device is None else device
    wanted = set(tags)
    found = {s.tag: s for s in tms_package.stats() if s.tag in wanted and s.device == device}
    return {tag: found[tag].__dict__.copy() if tag in found else None for tag in wanted}


def owned(tensor: torch.Tensor) -> bool:
    from torch_memory_saver import _library

    return bool(_library.library().tms_owns(tensor.data_ptr()))


class Checks:
    """Named checks: strict ones raise at the first failure, soft ones only record."""

    def __init__(self, strict: bool) -> None:
        self.strict = strict
        self.items: List[Dict[str, Any]] = []

    def check(self, name: str, ok: bool, detail: Any = None) -> bool:
        self.items.append({"name": name, "ok": bool(ok), "detail": detail})
        if not ok and self.strict:
            raise AssertionError(f"{name} failed: {detail}")
        return bool(ok)

    @property
    def failed(self) -> List[Dict[str, Any]]:
        return [item for item in self.items if not item["ok"]]


def timed(action: Callable[[], Any]) -> float:
    """Seconds `action` took (synchronising the device after it)."""
    start = time.perf_counter()
    action()
    torch.cuda.synchronize()
    return time.perf_counter() - start


def int_checksum(tensor: torch.Tensor, chunk_elements: int = 1 << 26) -> List[int]:
    """Two int64 checksums of `tensor`'s bits (plain and position-weighted), chunked to bound memory."""
    flat = tensor.detach().reshape(-1)
    if flat.element_size() == 4:
        words = flat.view(torch.int32)
    elif flat.element_size() == 2:
        words = flat.view(torch.int16)
    elif flat.element_size() == 1:
        words = flat.view(torch.uint8)
    else:
        words = flat.view(torch.int64)
    plain = torch.zeros((), dtype=torch.int64, device=flat.device)
    weighted = torch.zeros((), dtype=torch.int64, device=flat.device)
    for start in range(0, words.numel(), chunk_elements):
        part = words[start : start + chunk_elements].to(torch.int64)
        plain += part.sum()
        weights = torch.arange(start, start + part.numel(), device=flat.device, dtype=torch.int64)
        weights.remainder_(65521).add_(1)
        weighted += (part * weights).sum()
        del part, weights
    return [int(plain), int(weighted)]
