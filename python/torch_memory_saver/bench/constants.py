"""Units, defaults and exit statuses of the benchmark (one place for each)."""

from __future__ import annotations

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30

DEFAULT_LAYOUTS = (1, 16, 256, 4096)
QUICK_LAYOUTS = (1, 16)
HOST_KINDS = ("pinned", "mmap")
PARTS = ("floors", "nobackup", "backup", "alloc", "disk")
# "disk" writes and reads a few GiB in the backup directory: opt-in (--parts floors,nobackup,backup,alloc,disk).
DEFAULT_PARTS = ("floors", "nobackup", "backup", "alloc")
DEFAULT_DISK_LAYOUTS = (1, 16)
MAX_DISK_LAYOUTS = 4
DEFAULT_DISK_GIB_CAP = 4.0
DISK_BLOCK_BYTES = 64 * MiB
DISK_IO_ALIGNMENT = 4096

EXIT_OK = 0
EXIT_MEASUREMENT_FAILED = 1
EXIT_UNAVAILABLE = 2
EXIT_MISMATCH = 3

# Environment that would change what the library does behind the benchmark's back.
STRIPPED_ENV = (
    "TMS_DRIVER",
    "TMS_INIT_ENABLE",
    "TMS_INIT_ENABLE_CPU_BACKUP",
    "TMS_INIT_ENABLE_DISK_BACKUP",
    "TMS_INIT_CPU_BACKUP_BACKEND",
    "TMS_RETAIN_CPU_BACKUP",
)

# Settings that change what torch or the engine do underneath the numbers (recorded in results.json).
RECORDED_ENV = (
    "PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF", "CUDA_VISIBLE_DEVICES", "LD_PRELOAD",
    "TMS_DISK_BACKUP_DIR", "TMS_DISK_BACKUP_CHUNK_MB", "TMS_HOST_PREPARE_THREADS",
    "TMS_HOST_REGISTER_CHUNK_MB", "TMS_HOST_SMALL_REQUEST_MB", "TMS_COPY_CHUNK_MB", "TMS_COPY_STREAMS",
    *STRIPPED_ENV,
)


class BenchUnavailable(Exception):
    """The benchmark cannot run in this environment (no torch, no GPU, no engine library)."""


def gbps(nbytes: "float | None", seconds: "float | None") -> "float | None":
    """Decimal GB per second; None when either is unknown or the time is not positive."""
    if nbytes is None or seconds is None or seconds <= 0:
        return None
    return nbytes / seconds / 1e9


def exc_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
