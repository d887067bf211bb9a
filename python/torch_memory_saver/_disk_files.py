"""Finding disk backup files: they have no name in the backup directory, only a descriptor in their process."""

from __future__ import annotations

import os
from typing import List, Optional

NAME_PREFIX = "tms-backup-"


def open_backup_files(directory: str, pid: Optional[int] = None) -> List[str]:
    """Backup files in `directory` that process `pid` (None: this one) holds open, as /proc/<pid>/fd/<n> paths.

    They are unnamed or unlinked files, which /proc shows as "<directory>/<name> (deleted)";
    os.stat() works on the returned paths.
    """
    fd_dir = f"/proc/{'self' if pid is None else pid}/fd"
    directory = os.path.realpath(directory)
    found = []
    try:
        entries = os.listdir(fd_dir)
    except OSError:
        return []
    for fd in entries:
        path = os.path.join(fd_dir, fd)
        try:
            target = os.readlink(path)
        except OSError:  # closed meanwhile
            continue
        if target.endswith(" (deleted)") and os.path.dirname(target) == directory:
            found.append(path)
    return sorted(found)


def named_backup_files(directory: str) -> List[str]:
    """Names of backup files in `directory`: only a process killed while creating one leaves them."""
    try:
        return sorted(n for n in os.listdir(directory) if n.startswith(NAME_PREFIX))
    except OSError:
        return []
