"""Units, defaults and exit statuses of the benchmark (one place for each)."""

from __future__ import annotations

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30

DEFAULT_LAYOUTS = (1, 16, 256, 4096)
QUICK_LAYOUTS = (1, 16)
HOST_KINDS = ("pinned", "mmap")
PARTS = ("floors", "nobackup", "backup", "alloc", "cycles", "disk", "overlap", "compress")
# "disk" writes and reads a few GiB in the backup directory: opt-in (--parts floors,nobackup,backup,alloc,disk).
# "overlap" and "compress" measure features a run need not ask about (non-blocking resume, compressed backups), each
# in a worker of its own: opt-in too.
DEFAULT_PARTS = ("floors", "nobackup", "backup", "alloc", "cycles")
# --quick is a smoke run: the cycles part (one worker per host kind and layout, the model's included) would
# about double it, so it runs there only when --parts names it.
QUICK_PARTS = ("floors", "nobackup", "backup", "alloc")
DEFAULT_DISK_LAYOUTS = (1, 16)
MAX_DISK_LAYOUTS = 4
DEFAULT_DISK_GIB_CAP = 4.0
DISK_IO_ALIGNMENT = 4096
# The disk floor's variants: direct I/O at each block size with each number of I/Os in flight, and one
# buffered pass (write + fsync, read after dropping the file's pages) at DISK_BUFFERED_BLOCK_BYTES.
DISK_DIRECT_BLOCKS = (1 * MiB, 16 * MiB, 64 * MiB)
DISK_IN_FLIGHT = (1, 4, 8)
DISK_BUFFERED_BLOCK_BYTES = 16 * MiB

# The cycles part: pause -> gap -> resume -> gap, the gap being GPU work (bf16 matmuls) of about this long.
DEFAULT_CYCLES = 8
QUICK_CYCLES = 3
DEFAULT_CYCLE_GAP_MS = 200.0
GAP_MATRIX = 8192  # n of the gap's n x n bf16 matmuls (about 1.6 ms each on an H200)
CYCLE_RSS_LATER_S = 1.0  # the second RssAnon reading, seconds after resume returned

# The overlap part: resume(non_blocking=True) behind a compute step of about this long (bf16 matmuls, as the gap).
DEFAULT_OVERLAP_COMPUTE_MS = 300.0
OVERLAP_TENSORS = 16
# The host backup counts as given back once RSS is this share of its bytes below RSS before the resume (not all of
# it: the process's other memory moves a little meanwhile); polled every OVERLAP_RSS_POLL_S, given up after
# OVERLAP_RSS_TIMEOUT_S (reported, and the time is then a lower bound).
OVERLAP_RSS_BACK_SHARE = 0.9
OVERLAP_RSS_POLL_S = 0.001
OVERLAP_RSS_TIMEOUT_S = 10.0

# The compress part: two tags of the same bf16 weight-like contents, compressed and plain.
DEFAULT_COMPRESS_GIB = 2.0
COMPRESS_TENSORS = 16

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
    "TMS_DISK_BACKUP_DIR", "TMS_DISK_BACKUP_CHUNK_MB", "TMS_CONF",
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
