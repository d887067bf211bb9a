"""The backup policy: what happens to a region's tensors while they are paused, as one value.

It is what the engine gets (``tms_backup_policy``, one call), what the pools
are keyed by, and the one place where ``region()``'s switches become a policy
or are refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from . import _library
from ._library import CBackupPolicy, as_bool
from .errors import InvalidArgumentError

# In the order of tms.h's tms_backup_kind and tms_host_memory (None: DEFAULT).
KINDS = ("none", "host", "host_compressed", "disk")
HOST_MEMORY = (None, "pinned", "mmap")


@dataclass(frozen=True)
class BackupPolicy:
    """One backup kind, and for the host kinds the host memory it lives in.

    ``kind``: ``"none"`` (contents discarded), ``"host"`` (copied to host
    memory), ``"host_compressed"`` (compressed on the GPU first) or
    ``"disk"`` (a file in the disk backup directory). ``host_memory``:
    ``"pinned"`` or ``"mmap"`` for the host kinds, None for the others (and
    for "the process default", ``TMS_INIT_CPU_BACKUP_BACKEND``).
    """

    kind: str = "none"
    host_memory: Optional[str] = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InvalidArgumentError(f"backup kind must be one of {KINDS}, got {self.kind!r}")
        if self.host_memory not in HOST_MEMORY:
            raise InvalidArgumentError(f"host memory must be 'pinned' or 'mmap', got {self.host_memory!r}")
        if self.host_memory is not None and not self.keeps_host_copy:
            raise InvalidArgumentError(
                f"host memory {self.host_memory!r} means nothing for backup kind {self.kind!r}, "
                "which keeps no host copy"
            )

    @property
    def keeps_host_copy(self) -> bool:
        return self.kind in ("host", "host_compressed")

    @classmethod
    def from_region(
        cls,
        *,
        enable_cpu_backup: object = False,
        enable_disk_backup: object = False,
        cpu_backup_backend: Optional[str] = None,
        compress: object = False,
        inherited: Optional["BackupPolicy"] = None,
    ) -> "BackupPolicy":
        """The policy of ``region()``'s arguments; a backend of None keeps `inherited`'s host memory.

        Raises:
            InvalidArgumentError: a switch that is not True/False, an unknown
                backend, or a combination that means nothing (CPU and disk
                backup together, compress or a backend without CPU backup).
        """
        cpu = as_bool(enable_cpu_backup, "enable_cpu_backup")
        disk = as_bool(enable_disk_backup, "enable_disk_backup")
        packed = as_bool(compress, "compress")
        if cpu and disk:
            raise InvalidArgumentError(
                "enable_cpu_backup and enable_disk_backup together are refused: a paused tensor keeps one backup"
            )
        if packed and not cpu:
            raise InvalidArgumentError("compress=True compresses the CPU backup: pass enable_cpu_backup=True")
        if cpu_backup_backend is not None and not cpu:
            raise InvalidArgumentError(
                f"cpu_backup_backend={cpu_backup_backend!r} needs enable_cpu_backup=True "
                "(it is where the CPU backup lives)"
            )
        if disk:
            return cls("disk")
        if not cpu:
            return cls()
        if cpu_backup_backend is None:
            memory = inherited.host_memory if inherited is not None else None
        elif isinstance(cpu_backup_backend, str) and cpu_backup_backend.lower() in ("pinned", "mmap"):
            memory = cpu_backup_backend.lower()
        else:
            raise InvalidArgumentError(f"unknown CPU backup backend {cpu_backup_backend!r}; accepted: pinned, mmap")
        return cls("host_compressed" if packed else "host", memory)

    def to_c(self) -> CBackupPolicy:
        return CBackupPolicy(KINDS.index(self.kind), HOST_MEMORY.index(self.host_memory))

    @classmethod
    def from_c(cls, raw: CBackupPolicy) -> "BackupPolicy":
        return cls(KINDS[raw.kind], HOST_MEMORY[raw.host_memory])


def current() -> BackupPolicy:
    """The calling thread's policy in the engine."""
    raw = CBackupPolicy()
    _library.check(_library.library().tms_get_backup_policy(raw))
    return BackupPolicy.from_c(raw)


def apply(policy: BackupPolicy) -> None:
    """Make `policy` the calling thread's (the engine checks it again)."""
    _library.check(_library.library().tms_set_backup_policy(policy.to_c()))
