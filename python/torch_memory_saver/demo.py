"""`python -m torch_memory_saver demo`: pause and resume one region and show what the driver sees.

With torch and a GPU it uses a real tensor. Otherwise it runs the same steps
through the C ABI on the engine's simulated driver (host memory standing in
for device memory), so the flow can be tried on any Linux machine.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional, Tuple, cast

from . import _library, _settings
from ._library import check, encode
from ._policy import BackupPolicy
from .errors import ConfigError, InvalidStateError

if TYPE_CHECKING:
    from .hooks import HookMode

_TAG = "demo"
# Set in the child the preload demo starts, so that it never restarts itself again.
_RESTARTED_ENV = "TMS_DEMO_RESTARTED"
_MIB = 2**20
# Bytes of the test pattern repeat every 256 positions: value(i) = (7 * i + 3) mod 256.
_PATTERN_PERIOD = bytes((7 * i + 3) % 256 for i in range(256))


def _device_free(device: int) -> int:
    free, total = ctypes.c_uint64(), ctypes.c_uint64()
    check(_library.library().tms_device_memory(device, ctypes.byref(free), ctypes.byref(total)))
    return free.value


def _timed(action: Callable[[], None]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def _report(device: int, size: int, pause: Callable[[], None], resume: Callable[[], None]) -> Tuple[int, int]:
    """Pause and resume while printing device memory; returns (bytes released, bytes taken back)."""
    free_before = _device_free(device)
    print(f"device memory free before pause: {free_before / _MIB:10.1f} MiB")
    pause_s = _timed(pause)
    free_paused = _device_free(device)
    released = free_paused - free_before
    print(
        f"pause : {pause_s * 1e3:8.1f} ms, free {free_paused / _MIB:10.1f} MiB ({released / _MIB:+.1f} MiB)"
    )
    resume_s = _timed(resume)
    free_resumed = _device_free(device)
    taken = free_paused - free_resumed
    print(
        f"resume: {resume_s * 1e3:8.1f} ms, free {free_resumed / _MIB:10.1f} MiB ({-taken / _MIB:+.1f} MiB)"
    )
    return released, taken


def _verdict(name: str, ok: bool) -> bool:
    print(f"{name}: {'yes' if ok else 'NO'}")
    return ok


def cuda_available() -> bool:
    """Whether torch is installed and sees a CUDA device."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def run_simulated(size: int) -> bool:
    """The demo through the C ABI on the simulated driver; True when every check passed."""
    os.environ["TMS_DRIVER"] = "sim"  # read when the engine is created, on its first use
    lib = _library.library()
    driver = _library.decode(lib.tms_driver_name())
    if driver != "sim":  # the engine already ran on CUDA: host writes would hit device pointers
        raise InvalidStateError(
            f"the engine already runs on the {driver!r} driver; run the demo in a new process"
        )
    print("torch_memory_saver demo on the SIMULATED driver: no torch/GPU used,")
    print("device memory is host memory mapped at the same addresses.")
    print(f"region '{_TAG}' with CPU backup, {size / _MIB:.0f} MiB")
    address = ctypes.c_void_p()
    with _settings.changed(interesting=True, tag=_TAG, policy=BackupPolicy.from_region(enable_cpu_backup=True)):
        check(lib.tms_malloc(ctypes.byref(address), size, 0))
    pointer = address.value
    assert pointer is not None  # tms_malloc succeeded
    try:
        pattern = _PATTERN_PERIOD * (size // len(_PATTERN_PERIOD))
        ctypes.memmove(pointer, pattern, size)
        released, taken = _report(
            0, size, lambda: check(lib.tms_pause(encode(_TAG))), lambda: check(lib.tms_resume(encode(_TAG)))
        )
        ok = _verdict("memory released on pause and taken back on resume", released >= size and taken >= size)
        ok &= _verdict(
            f"address unchanged (0x{pointer:x}) and owned by the engine", bool(lib.tms_owns(pointer))
        )
        ok &= _verdict("contents exact after resume", ctypes.string_at(pointer, size) == pattern)
    finally:
        check(lib.tms_free(pointer))
    return ok


def run_gpu(size: int, hook_mode: str) -> bool:
    """The demo with a real CUDA tensor; True when every check passed."""
    import torch

    from .entrypoint import torch_memory_saver

    torch_memory_saver.hook_mode = cast("HookMode", hook_mode)  # the setter checks the value
    device = torch.cuda.current_device()
    print(
        f"torch_memory_saver demo on {torch.cuda.get_device_name(device)} "
        f"(driver {_library.decode(_library.library().tms_driver_name())}, hook mode {hook_mode})"
    )
    print(f"region '{_TAG}' with CPU backup, {size / _MIB:.0f} MiB")
    with torch_memory_saver.region(tag=_TAG, enable_cpu_backup=True):
        x = torch.empty(size, dtype=torch.uint8, device="cuda")
    period = torch.tensor(list(_PATTERN_PERIOD), dtype=torch.uint8, device="cuda")
    x.view(-1, len(_PATTERN_PERIOD)).copy_(period)  # size is a multiple of 256
    torch.cuda.synchronize()
    pointer = x.data_ptr()
    released, taken = _report(
        device, size, lambda: torch_memory_saver.pause(_TAG), lambda: torch_memory_saver.resume(_TAG)
    )
    # The driver hands memory out in 2 MiB granules and other work may run, so allow 10%.
    ok = _verdict(
        "memory released on pause and taken back on resume", released >= 0.9 * size and taken >= 0.9 * size
    )
    ok &= _verdict(f"address unchanged (0x{pointer:x})", x.data_ptr() == pointer)
    ok &= _verdict("contents exact after resume", bool((x.view(-1, len(_PATTERN_PERIOD)) == period).all()))
    return ok


def run_preloaded(size_mb: Optional[int]) -> bool:
    """The GPU demo in preload mode, in a child process started with the library in LD_PRELOAD."""
    from . import hooks
    from .utils import configure_subprocess

    if hooks.is_preloaded():
        return run_gpu((size_mb or 1024) * _MIB, "preload")
    if os.environ.get(_RESTARTED_ENV):
        raise ConfigError(
            "the demo restarted itself with the library in LD_PRELOAD, but the library is still not "
            f"preloaded (LD_PRELOAD={os.environ.get('LD_PRELOAD', '')!r})"
        )
    print("preload mode: starting the demo again with the library in LD_PRELOAD", flush=True)
    command = [sys.executable, "-m", "torch_memory_saver", "demo", "--hook-mode", "preload"]
    if size_mb is not None:
        command += ["--size-mb", str(size_mb)]
    # The child must import this very package, wherever it was imported from.
    package_parent = str(Path(__file__).resolve().parents[1])
    python_path = os.pathsep.join(p for p in (package_parent, os.environ.get("PYTHONPATH", "")) if p)
    with configure_subprocess():
        env = dict(os.environ, PYTHONPATH=python_path, **{_RESTARTED_ENV: "1"})
        child = subprocess.run(command, env=env, check=False)
    return child.returncode == 0


def run(size_mb: Optional[int], simulated: bool, hook_mode: Optional[str] = None) -> bool:
    """Run the demo on the GPU when possible, else on the simulated driver.

    `hook_mode` None means the default, "torch". "preload" restarts the demo
    in a child process with the library in LD_PRELOAD when this process was
    not started that way. The simulated driver has no hooks, so there the
    mode is ignored (and said so).
    """
    on_gpu = not simulated and os.environ.get("TMS_DRIVER") != "sim" and cuda_available()
    if on_gpu:
        if hook_mode == "preload":
            return run_preloaded(size_mb)
        return run_gpu((size_mb or 1024) * _MIB, hook_mode or "torch")
    if hook_mode is not None:
        print(f"note: --hook-mode {hook_mode} is ignored on the simulated driver (no GPU, no hooks)")
    return run_simulated((size_mb or 64) * _MIB)
