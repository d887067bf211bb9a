"""The disk floor: what the backup directory's disk gives, written and read several ways (no torch, no GPU).

Variants (:func:`default_variants`): O_DIRECT at 1, 16 and 64 MiB blocks with
1, 4 and 8 files in flight, and buffered I/O (write + fsync, read after the
file's pages were dropped). The library's disk backup is judged against the
best direct variant, per direction (:func:`judged_variant`).
"""

from __future__ import annotations

import errno
import functools
import mmap
import os
import threading
import time
from typing import Callable, List, Optional, Sequence, Tuple

from .constants import (
    DISK_BUFFERED_BLOCK_BYTES,
    DISK_DIRECT_BLOCKS,
    DISK_IN_FLIGHT,
    DISK_IO_ALIGNMENT,
    GiB,
    MiB,
    exc_text,
    gbps,
)
from .records import DiskFloor, DiskVariant, DiskVariantSpec, Filesystem, best


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
        note = None  # buffered on purpose: nothing to say
    return os.open(path, flags, 0o600), False, note


def _write_file(path: str, size: int, buffer: "mmap.mmap", block: int, direct: bool,
                fsync: bool = False) -> Tuple[bool, Optional[str]]:
    """Write `size` bytes of `buffer`'s contents block by block to a new file (then fsync if asked); (direct, note)."""
    view = memoryview(buffer)
    try:
        fd, used_direct, note = _open_maybe_direct(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(
            os, "O_CLOEXEC", 0), direct)
        try:
            done = 0
            while done < size:
                length = min(block, size - done)
                written = 0
                while written < length:
                    try:
                        count = os.pwrite(fd, view[written:length], done + written)
                    except OSError as exc:
                        if exc.errno == errno.EINTR:
                            continue
                        if exc.errno == errno.EINVAL and used_direct and done == 0 and written == 0:
                            # open() took O_DIRECT but the first write is refused: start over, buffered.
                            os.close(fd)
                            fd = -1
                            _write_file(path, size, buffer, block, False, fsync)
                            return False, f"O_DIRECT writes refused by the filesystem ({exc.strerror})"
                        raise
                    if count <= 0:
                        raise OSError(errno.ENOSPC, f"write returned {count} at byte {done + written}")
                    written += count
                done += length
            if fsync:
                os.fsync(fd)
        finally:
            if fd >= 0:
                os.close(fd)
        return used_direct, note
    finally:
        view.release()


def _read_file(path: str, size: int, buffer: "mmap.mmap", block: int, direct: bool) -> Tuple[bool, Optional[str]]:
    """Read `size` bytes of `path` block by block into `buffer`; (direct, note)."""
    view = memoryview(buffer)
    try:
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
        return used_direct, note
    finally:
        view.release()


def _drop_cached_pages(path: str) -> Optional[str]:
    """Ask the kernel to drop `path`'s clean pages from the page cache; a note where it cannot."""
    advise = getattr(os, "posix_fadvise", None)
    if advise is None:
        return "posix_fadvise is not available: the buffered read may come from the page cache"
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        advise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    return None


def _at_once(jobs: Sequence[Callable[[], Tuple[bool, Optional[str]]]]) -> Tuple[float, bool, List[str]]:
    """Run `jobs` on one thread each (the I/O calls release the GIL); (seconds for all, all direct, notes)."""
    outcomes: List[Optional[Tuple[bool, Optional[str]]]] = [None] * len(jobs)
    failures: List[BaseException] = []

    def run(index: int) -> None:
        try:
            outcomes[index] = jobs[index]()
        except BaseException as exc:  # noqa: BLE001 - raised again below, on the caller's thread
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(jobs))]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - start
    if failures:
        raise failures[0]
    notes = sorted({outcome[1] for outcome in outcomes if outcome is not None and outcome[1]})
    return seconds, all(outcome is not None and outcome[0] for outcome in outcomes), notes


def variant_label(spec: DiskVariantSpec) -> str:
    how = "O_DIRECT" if spec.direct else "buffered, write + fsync, read after dropping the pages"
    files = f"{spec.in_flight} files at once" if spec.in_flight > 1 else "1 file"
    return f"{how}, {spec.block_bytes / MiB:g} MiB blocks, {files}"


def default_variants() -> List[DiskVariantSpec]:
    """Direct I/O at each block size with each number of I/Os in flight, then one buffered pass."""
    variants = [DiskVariantSpec(block_bytes=block, in_flight=n, direct=True)
                for block in DISK_DIRECT_BLOCKS for n in DISK_IN_FLIGHT]
    variants.append(DiskVariantSpec(block_bytes=DISK_BUFFERED_BLOCK_BYTES, in_flight=1, direct=False))
    return variants


def _split(size: int, parts: int) -> List[int]:
    """`size` (a multiple of the I/O alignment) in `parts` aligned pieces, the last one taking the rest."""
    piece = size // parts // DISK_IO_ALIGNMENT * DISK_IO_ALIGNMENT
    return [piece] * (parts - 1) + [size - piece * (parts - 1)]


def _measure_variant(size: int, spec: DiskVariantSpec, repeats: int, wbuf: "mmap.mmap",
                     paths: List[str]) -> DiskVariant:
    """Best-of-`repeats` rounds of one variant: the files written at once, then read back at once, then removed."""
    block = min(_round_up(max(int(spec.block_bytes), DISK_IO_ALIGNMENT), DISK_IO_ALIGNMENT), size)
    in_flight = max(1, min(int(spec.in_flight), size // DISK_IO_ALIGNMENT))
    fsync = not spec.direct
    variant = DiskVariant(label=variant_label(DiskVariantSpec(block, in_flight, spec.direct)), block_bytes=block,
                          in_flight=in_flight, direct_asked=spec.direct, fsync=fsync)
    sizes = _split(size, in_flight)
    files = paths[:in_flight]
    rbufs = [mmap.mmap(-1, block) for _ in files]  # anonymous mmap: page-aligned, as O_DIRECT wants
    direct_write: List[bool] = []
    direct_read: List[bool] = []
    notes: List[str] = []
    try:
        for _ in range(max(1, int(repeats))):
            try:
                seconds, used, said = _at_once([
                    functools.partial(_write_file, p, n, wbuf, block, spec.direct, fsync)
                    for p, n in zip(files, sizes)])
                variant.write_all_seconds.append(seconds)
                direct_write.append(used)
                notes += [f"write: {note}" for note in said]
                if not spec.direct:
                    notes += [note for note in (_drop_cached_pages(p) for p in files) if note]
                seconds, used, said = _at_once([
                    functools.partial(_read_file, p, n, b, block, spec.direct)
                    for p, n, b in zip(files, sizes, rbufs)])
                variant.read_all_seconds.append(seconds)
                direct_read.append(used)
                notes += [f"read: {note}" for note in said]
                for path, n, rbuf in zip(files, sizes, rbufs):
                    last = n - (n - 1) // block * block  # bytes of the last block read
                    if rbuf[:last] != wbuf[:last]:
                        raise RuntimeError(f"the disk floor read back other bytes than it wrote ({path})")
            finally:
                for path in files:
                    try:
                        os.unlink(path)
                    except FileNotFoundError:
                        pass
    finally:
        for rbuf in rbufs:
            rbuf.close()
    variant.notes = list(dict.fromkeys(notes))
    variant.direct_write = bool(direct_write) and all(direct_write)
    variant.direct_read = bool(direct_read) and all(direct_read)
    if spec.direct and not (variant.direct_write and variant.direct_read):
        variant.notes.append("buffered I/O without fsync: the rates are page-cache (memory) rates, not the disk's")
    variant.write_seconds, variant.read_seconds = best(variant.write_all_seconds), best(variant.read_all_seconds)
    variant.write_gbps, variant.read_gbps = gbps(size, variant.write_seconds), gbps(size, variant.read_seconds)
    return variant


def judged_variant(variants: List[DiskVariant], key: str) -> Optional[DiskVariant]:
    """The variant the library is judged against for `key` ("write" or "read"): the fastest that used O_DIRECT,
    else (no variant could) the fastest of all; None when none was measured."""
    measured = [v for v in variants if getattr(v, f"{key}_gbps")]
    direct = [v for v in measured if getattr(v, f"direct_{key}")]
    pool = direct or measured
    return max(pool, key=lambda v: getattr(v, f"{key}_gbps")) if pool else None


def disk_floor(directory: str, total_bytes: int, variants: Optional[List[DiskVariantSpec]] = None,
               repeats: int = 1) -> DiskFloor:
    """Write and read rates of `directory`'s filesystem, each variant, and the floor of the disk backup.

    Each round of a variant writes `total_bytes` (rounded down to 4 KiB) as
    `in_flight` new files of an equal share at once, one thread each (several
    files rather than one file at offsets: filesystems such as ext4 serialize
    direct writes that allocate blocks of one file), in blocks of
    `block_bytes` from a page-aligned anonymous mmap buffer of random bytes
    (nothing for a compressing filesystem to gain), then reads them back at
    once into page-aligned buffers, checks the last block of each, and
    removes them. Direct variants open with O_DIRECT and never fsync (the
    engine does neither); where the filesystem refuses O_DIRECT (EINVAL, e.g.
    tmpfs) the round goes through the page cache and the variant's notes say
    so. The buffered variant ends its writes with fsync and drops the files'
    pages (posix_fadvise DONTNEED) before reading. Times are from the first
    open to the last close. Best of `repeats` rounds per variant; a variant
    that fails is recorded with its error and the others go on. Needs no
    torch and no GPU.
    """
    size = int(total_bytes) // DISK_IO_ALIGNMENT * DISK_IO_ALIGNMENT
    if size <= 0:
        raise ValueError(f"the disk floor needs at least {DISK_IO_ALIGNMENT} bytes, got {total_bytes}")
    specs = list(variants) if variants else default_variants()
    fs = filesystem_info(directory)
    if fs.free_bytes is not None and fs.free_bytes < size + 64 * MiB:
        raise RuntimeError(f"the disk floor needs {size / GiB:.2f} GiB in {directory} ({fs.fs_type}), only "
                           f"{fs.free_bytes / GiB:.2f} GiB are free; lower --disk-gib or choose --disk-dir")
    if not os.path.isdir(directory):
        raise FileNotFoundError(errno.ENOENT, "no such directory", directory)
    result = DiskFloor(directory=os.path.realpath(directory), bytes=size, filesystem=fs)
    widest = max(1, max(int(s.in_flight) for s in specs))
    paths = [os.path.join(directory, f"tms-bench-floor-{os.getpid()}-{k}.bin") for k in range(widest)]
    largest = min(size, max(_round_up(max(int(s.block_bytes), DISK_IO_ALIGNMENT), DISK_IO_ALIGNMENT)
                            for s in specs))
    wbuf = mmap.mmap(-1, largest)  # shared by the writers (only read from)
    try:
        wbuf[:] = os.urandom(largest)
        for spec in specs:
            try:
                result.variants.append(_measure_variant(size, spec, repeats, wbuf, paths))
            except Exception as exc:  # noqa: BLE001 - one variant's failure is recorded, the others go on
                result.variants.append(DiskVariant(label=variant_label(spec), block_bytes=int(spec.block_bytes),
                                                   in_flight=int(spec.in_flight), direct_asked=spec.direct,
                                                   fsync=not spec.direct, error=exc_text(exc)))
    finally:
        wbuf.close()
    result.file_removed = not any(os.path.exists(p) for p in paths)
    failed = [v for v in result.variants if v.error]
    if len(failed) == len(result.variants):
        raise RuntimeError(f"every disk floor variant failed; the first: {failed[0].label}: {failed[0].error}")
    if fs.fs_type in ("tmpfs", "ramfs"):
        result.notes.append(f"the directory is on {fs.fs_type} (memory): the rates are memory rates, "
                            f"not a disk's; choose --disk-dir on the disk meant for backups")
    for key in ("write", "read"):
        chosen = judged_variant(result.variants, key)
        if chosen is None:
            continue
        setattr(result, f"{key}_variant", chosen.label)
        setattr(result, f"direct_{key}", getattr(chosen, f"direct_{key}"))
        setattr(result, f"{key}_seconds", getattr(chosen, f"{key}_seconds"))
        setattr(result, f"{key}_gbps", getattr(chosen, f"{key}_gbps"))
        if not getattr(chosen, f"direct_{key}"):
            result.notes.append(f"no variant could {key} with O_DIRECT: the {key} floor is a page-cache rate")
    return result
