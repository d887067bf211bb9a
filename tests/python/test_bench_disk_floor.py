"""The benchmark's disk floor (bench.disk.disk_floor) runs without torch or a GPU."""

import os

from torch_memory_saver import bench

MiB = 1 << 20


def _check_shape(result, directory, size):
    assert result.bytes == size
    assert result.write_seconds > 0 and result.read_seconds > 0
    assert result.write_gbps > 0 and result.read_gbps > 0
    assert result.file_removed is True
    assert os.listdir(directory) == []
    assert result.filesystem.path == os.path.realpath(directory)


def test_disk_floor_small_file(tmp_path):
    result = bench.disk_floor(str(tmp_path), 8 * MiB, block_bytes=1 * MiB)
    _check_shape(result, tmp_path, 8 * MiB)
    assert result.block_bytes == 1 * MiB
    assert len(result.write_all_seconds) == 1
    # Either path may happen (tmpfs refuses O_DIRECT on older kernels); a fallback is always noted.
    if not (result.direct_write and result.direct_read):
        assert any("O_DIRECT" in note for note in result.notes)
        assert any("page-cache" in note for note in result.notes)


def test_disk_floor_buffered_is_noted(tmp_path):
    # Not a multiple of the block nor of 4 KiB: rounded down to 4 KiB, last block shorter.
    result = bench.disk_floor(str(tmp_path), 3 * MiB + 5000, block_bytes=1 * MiB, repeats=2, direct=False)
    _check_shape(result, tmp_path, 3 * MiB + 4096)
    assert result.direct_write is False and result.direct_read is False
    assert len(result.read_all_seconds) == 2
    assert any("O_DIRECT" in note for note in result.notes)


def test_disk_floor_refuses_what_does_not_fit(tmp_path):
    try:
        bench.disk_floor(str(tmp_path), 1 << 62)
    except RuntimeError as exc:
        assert "--disk-gib" in str(exc)
    else:
        raise AssertionError("a floor larger than the free space must fail before writing")
    assert os.listdir(tmp_path) == []


def test_open_backup_files_finds_unnamed_files_of_this_process_only_in_that_directory(tmp_path):
    from torch_memory_saver._disk_files import named_backup_files, open_backup_files

    inner = tmp_path / "inner"
    inner.mkdir()
    fd = os.open(tmp_path, os.O_TMPFILE | os.O_RDWR, 0o600)  # as the engine makes them
    nested = os.open(inner, os.O_TMPFILE | os.O_RDWR, 0o600)  # another directory: not counted
    named = open(tmp_path / "named-and-open", "wb")  # has a name: not a backup
    try:
        os.write(fd, b"x" * 4096)
        (found,) = open_backup_files(str(tmp_path))
        assert os.stat(found).st_size == 4096
        assert open_backup_files(str(tmp_path), pid=os.getpid()) == [found.replace("self", str(os.getpid()))]
    finally:
        os.close(fd)
        os.close(nested)
        named.close()
    assert open_backup_files(str(tmp_path)) == []
    (tmp_path / "tms-backup-12-1-0000000000000001.tmp").write_bytes(b"")
    assert named_backup_files(str(tmp_path)) == ["tms-backup-12-1-0000000000000001.tmp"]


def test_disk_part_is_opt_in():
    assert "disk" not in bench.build_parser().parse_args([]).parts
    assert "disk" in bench.build_parser().parse_args(["--parts", "floors,nobackup,backup,alloc,disk"]).parts
