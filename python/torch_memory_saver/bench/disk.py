"""The disk floor: sequential write and read rates of the backup directory (no torch, no GPU)."""

from __future__ import annotations

import errno
import mmap
import os
import time
from typing import List, Optional, Tuple

from .constants import DISK_BLOCK_BYTES, DISK_IO_ALIGNMENT, GiB, MiB, exc_text, gbps
from .records import DiskFloor, Filesystem, best


def _round_up(value: int, multiple: int) -> int:
    return (value + multiple - 1) // multiple * multiple


def filesystem_info(path: str) -> Filesystem:
    """Mount point, filesystem type, device and options of `path` (from /proc/mounts) and its statvfs sizes."""
    info = Filesystem(path=os.path.realpath(path))
    try:
        st = os.statvfs(path)
        info.block_size, info.fragment_size = st.f_bsize, st.f_frsize
        info.total_bytes, info.free_bytes = st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize
    except OSError as exc:
        info.statvfs_error = exc_text(exc)
    best_mount: Optional[List[str]] = None
    try:
        with open("/proc/mounts", encoding="utf-8", errors="replace") as mounts:
            for line in mounts:
                fields = line.split()
                if len(fields) < 4:
                    continue
                # /proc/mounts escapes space, tab, newline and backslash as octal.
                mount_point = (fields[1].replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n")
                               .replace("\\134", "\\"))
                inside = info.path == mount_point or info.path.startswith(mount_point.rstrip("/") + "/")
                if inside and (best_mount is None or len(mount_point) >= len(best_mount[1])):  # later mounts win
                    best_mount = [fields[0], mount_point, fields[2], fields[3]]
    except OSError as exc:
        info.mounts_error = exc_text(exc)
    if best_mount is not None:
        info.device, info.mount_point, info.fs_type, info.mount_options = best_mount
    return info


def _open_maybe_direct(path: str, flags: int, direct: bool) -> Tuple[int, bool, Optional[str]]:
    """(fd, direct I/O in use, note); falls back to buffered I/O only when O_DIRECT is refused (EINVAL)."""
    o_direct = getattr(os, "O_DIRECT", 0)
    if direct and o_direct:
        try:
            return os.open(path, flags | o_direct, 0o600), True, None
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            note = f"O_DIRECT refused by the filesystem ({exc.strerror})"
    elif direct:
        note = "O_DIRECT not available on this platform"
    else:
        note = "O_DIRECT not asked for"
    return os.open(path, flags, 0o600), False, note


def _write_file(path: str, size: int, buffer: "mmap.mmap", block: int, direct: bool) -> Tuple[float, bool, Optional[str]]:
    """Write `size` bytes of `buffer`'s contents block by block to a new file; (seconds open..close, direct, note)."""
    view = memoryview(buffer)
    try:
        start = time.perf_counter()
        fd, used_direct, note = _open_maybe_direct(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(
            os, "O_CLOEXEC", 0), direct)
        try:
            done = 0
            while done < size:
                length = min(block, size - done)
                written = 0
                while written < length:
                    try:
                        count = os.write(fd, view[written:length])
                    except OSError as exc:
                        if exc.errno == errno.EINTR:
                            continue
                        if exc.errno == errno.EINVAL and used_direct and done == 0 and written == 0:
                            # open() took O_DIRECT but the first write is refused: start over, buffered.
                            os.close(fd)
                            fd = -1
                            seconds, _, _ = _write_file(path, size, buffer, block, False)
                            return seconds, False, f"O_DIRECT writes refused by the filesystem ({exc.strerror})"
                        raise
                    if count <= 0:
                        raise OSError(errno.ENOSPC, f"write returned {count} at byte {done + written}")
                    written += count
                done += length
        finally:
            if fd >= 0:
                os.close(fd)
        return time.perf_counter() - start, used_direct, note
    finally:
        view.release()


def _read_file(path: str, size: int, buffer: "mmap.mmap", block: int, direct: bool) -> Tuple[float, bool, Optional[str]]:
    """Read `size` bytes of `path` block by block into `buffer`; (seconds open..close, direct, note)."""
    view = memoryview(buffer)
    try:
        start = time.perf_counter()
        fd, used_direct, note = _open_maybe_direct(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0), direct)
        try:
            done = 0
            while done < size:
                length = min(block, size - done)
                got = 0
                while got < length:
                    try:
                        count = os.preadv(fd, [view[got:length]], done + got)
                    except OSError as exc:
                        if exc.errno == errno.EINTR:
                            continue
                        raise
                    if count <= 0:
                        raise OSError(errno.EIO, f"{path} ends at byte {done + got}, expected {size}")
                    got += count
                done += length
        finally:
            os.close(fd)
        return time.perf_counter() - start, used_direct, note
    finally:
        view.release()


def disk_floor(directory: str, total_bytes: int, block_bytes: int = DISK_BLOCK_BYTES, repeats: int = 1,
               direct: bool = True) -> DiskFloor:
    """Sequential write and read rate of `directory`'s filesystem, the floor of the disk backup.

    Each round writes a new file of `total_bytes` (rounded down to 4 KiB) in
    blocks of `block_bytes` from a page-aligned anonymous mmap buffer filled
    with random bytes (nothing for a compressing filesystem to gain), opened
    with O_DIRECT|O_WRONLY|O_CREAT, then reads it back with O_DIRECT into a
    second page-aligned buffer, checks the last block read, and removes it.
    O_DIRECT keeps the page cache out of both numbers; where the filesystem
    refuses it (EINVAL, e.g. tmpfs) the round goes through the page cache
    instead, without fsync, and `notes` says so: the rates are then memory
    rates, not the disk's. No fsync either way (the engine does none).
    Times are open..close. Best of `repeats` rounds. Needs no torch and no GPU.
    """
    block = _round_up(max(int(block_bytes), DISK_IO_ALIGNMENT), DISK_IO_ALIGNMENT)
    size = int(total_bytes) // DISK_IO_ALIGNMENT * DISK_IO_ALIGNMENT
    if size <= 0:
        raise ValueError(f"the disk floor needs at least {DISK_IO_ALIGNMENT} bytes, got {total_bytes}")
    fs = filesystem_info(directory)
    if fs.free_bytes is not None and fs.free_bytes < size + 64 * MiB:
        raise RuntimeError(f"the disk floor needs {size / GiB:.2f} GiB in {directory} ({fs.fs_type}), only "
                           f"{fs.free_bytes / GiB:.2f} GiB are free; lower --disk-gib or choose --disk-dir")
    block = min(block, _round_up(size, DISK_IO_ALIGNMENT))
    path = os.path.join(directory, f"tms-bench-floor-{os.getpid()}.bin")
    result = DiskFloor(directory=os.path.realpath(directory), bytes=size, block_bytes=block, filesystem=fs,
                       direct_asked=bool(direct))
    direct_write: List[bool] = []
    direct_read: List[bool] = []
    wbuf = mmap.mmap(-1, block)  # anonymous mmap: page-aligned, as O_DIRECT wants
    rbuf = mmap.mmap(-1, block)
    try:
        wbuf[:] = os.urandom(block)
        for _ in range(max(1, int(repeats))):
            try:
                seconds, used, note = _write_file(path, size, wbuf, block, direct)
                result.write_all_seconds.append(seconds)
                direct_write.append(used)
                if note and f"write: {note}" not in result.notes:
                    result.notes.append(f"write: {note}")
                seconds, used, note = _read_file(path, size, rbuf, block, direct)
                result.read_all_seconds.append(seconds)
                direct_read.append(used)
                if note and f"read: {note}" not in result.notes:
                    result.notes.append(f"read: {note}")
                last = size - (size - 1) // block * block  # bytes of the last block read
                if rbuf[:last] != wbuf[:last]:
                    raise RuntimeError(f"the disk floor read back other bytes than it wrote ({path})")
            finally:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
    finally:
        wbuf.close()
        rbuf.close()
    result.file_removed = not os.path.exists(path)
    if fs.fs_type in ("tmpfs", "ramfs"):
        result.notes.append(f"the directory is on {fs.fs_type} (memory): the rates are memory rates, "
                            f"not a disk's; choose --disk-dir on the disk meant for backups")
    result.direct_write = all(direct_write)
    result.direct_read = all(direct_read)
    if not (result.direct_write and result.direct_read):
        result.notes.append("buffered I/O without fsync: the rates are page-cache (memory) rates, "
                            "not the disk's")
    result.write_seconds = best(result.write_all_seconds)
    result.read_seconds = best(result.read_all_seconds)
    result.write_gbps = gbps(size, result.write_seconds)
    result.read_gbps = gbps(size, result.read_seconds)
    return result
