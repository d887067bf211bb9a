"""The benchmark's disk floor (bench.disk.disk_floor) runs without torch or a GPU: every variant, and the judged one."""

import errno
import os

from torch_memory_saver import bench
from torch_memory_saver.bench import disk
from torch_memory_saver.bench.records import DiskVariant, DiskVariantSpec

MiB = 1 << 20


def _check_shape(result, directory, size):
    assert result.bytes == size
    assert result.file_removed is True
    assert os.listdir(directory) == []
    assert result.filesystem.path == os.path.realpath(directory)
    for variant in result.variants:
        assert variant.error is None, variant.label
        assert variant.write_seconds > 0 and variant.read_seconds > 0
        assert variant.write_gbps > 0 and variant.read_gbps > 0


def test_disk_floor_measures_every_variant_and_judges_by_the_best_direct_one(tmp_path):
    result = bench.disk_floor(str(tmp_path), 8 * MiB)
    _check_shape(result, tmp_path, 8 * MiB)
    # O_DIRECT at 1, 16 and 64 MiB blocks (capped at the payload) with 1, 4 and 8 files at once, then buffered.
    shapes = [(v.block_bytes, v.in_flight, v.direct_asked, v.fsync) for v in result.variants]
    assert shapes == [(1 * MiB, 1, True, False), (1 * MiB, 4, True, False), (1 * MiB, 8, True, False),
                      (8 * MiB, 1, True, False), (8 * MiB, 4, True, False), (8 * MiB, 8, True, False),
                      (8 * MiB, 1, True, False), (8 * MiB, 4, True, False), (8 * MiB, 8, True, False),
                      (8 * MiB, 1, False, True)]
    assert result.variants[-1].label == "buffered, write + fsync, read after dropping the pages, 8 MiB blocks, 1 file"
    assert result.variants[1].label == "O_DIRECT, 1 MiB blocks, 4 files at once"
    for key in ("write", "read"):
        direct = [v for v in result.variants if getattr(v, f"direct_{key}")]
        pool = direct or result.variants  # tmpfs on older kernels refuses O_DIRECT: then the best of all
        chosen = max(pool, key=lambda v: getattr(v, f"{key}_gbps"))
        assert getattr(result, f"{key}_variant") == chosen.label
        assert getattr(result, f"{key}_gbps") == getattr(chosen, f"{key}_gbps")
        assert getattr(result, f"direct_{key}") == bool(direct)
        if not direct:
            assert any("page-cache" in note for note in result.notes)


def test_disk_floor_variant_shapes_and_repeats(tmp_path):
    # Not a multiple of 4 KiB: rounded down; split over 3 files, the last taking the rest; best of 2.
    variants = [DiskVariantSpec(block_bytes=1 * MiB, in_flight=3, direct=False)]
    result = bench.disk_floor(str(tmp_path), 3 * MiB + 5000, variants=variants, repeats=2)
    _check_shape(result, tmp_path, 3 * MiB + 4096)
    (variant,) = result.variants
    assert variant.direct_write is False and variant.direct_read is False and variant.fsync is True
    assert len(variant.write_all_seconds) == len(variant.read_all_seconds) == 2
    assert variant.write_seconds == min(variant.write_all_seconds)
    # No variant used O_DIRECT: judged against the best buffered one, and said so.
    assert result.write_variant == variant.label and result.direct_write is False
    assert "no variant could write with O_DIRECT: the write floor is a page-cache rate" in result.notes


def test_a_failing_variant_is_recorded_and_the_others_go_on(tmp_path, monkeypatch):
    real = disk._write_file

    def refuse_small_blocks(path, size, buffer, block, direct, fsync=False):
        if block == 1 * MiB:
            raise OSError(errno.EIO, "injected")
        return real(path, size, buffer, block, direct, fsync)

    monkeypatch.setattr(disk, "_write_file", refuse_small_blocks)
    variants = [DiskVariantSpec(block_bytes=1 * MiB, in_flight=2), DiskVariantSpec(block_bytes=2 * MiB)]
    result = bench.disk_floor(str(tmp_path), 4 * MiB, variants=variants)
    failed, measured = result.variants
    assert failed.error == "OSError: [Errno 5] injected" and failed.write_gbps is None
    assert measured.error is None and measured.read_gbps > 0
    assert result.write_variant == result.read_variant == measured.label
    assert os.listdir(tmp_path) == []


def test_judged_variant_prefers_direct_io_even_when_buffered_is_faster():
    def variant(label, rate, direct):
        return DiskVariant(label=label, block_bytes=MiB, in_flight=1, direct_asked=direct, fsync=not direct,
                           direct_write=direct, direct_read=direct, write_gbps=rate, read_gbps=rate)

    variants = [variant("direct slow", 1.0, True), variant("direct fast", 1.8, True),
                variant("buffered", 5.0, False), variant("failed", None, True)]
    assert disk.judged_variant(variants, "write").label == "direct fast"
    assert disk.judged_variant(variants[2:], "read").label == "buffered"
    assert disk.judged_variant(variants[3:], "read") is None


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
    from torch_memory_saver.bench import cli

    parser = cli.build_parser()
    for argv in ([], ["--quick"]):
        assert "disk" not in cli._config(parser, parser.parse_args(argv), argv).parts
    argv = ["--parts", "floors,nobackup,backup,alloc,disk"]
    assert "disk" in cli._config(parser, parser.parse_args(argv), argv).parts
