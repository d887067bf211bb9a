"""The benchmark's worker protocol and raw VMM floor on the CPU (simulated driver, no torch)."""

import os
import shutil
import subprocess

import pytest

from simhelpers import PACKAGE_ROOT, assert_no_crash, run_python
from torch_memory_saver.bench import vmm
from torch_memory_saver.bench.records import DiskFloor, DiskVariantSpec, WorkerSpec
from torch_memory_saver.bench.runner import Runner
from torch_memory_saver.bench.worker import read_result

MIB = 1 << 20


def _env():
    return dict(os.environ, PYTHONPATH=str(PACKAGE_ROOT))


def test_a_worker_process_writes_its_typed_result(tmp_path):
    disk_dir = tmp_path / "disk"
    disk_dir.mkdir()
    spec = WorkerSpec(kind="disk_floor", disk_dir=str(disk_dir), disk_bytes=2 * MIB,
                      disk_variants=[DiskVariantSpec(block_bytes=MIB, in_flight=2)])
    result = Runner(tmp_path / "out", timeout_s=60).run("disk_floor", spec, _env())
    assert result.fatal is None and result.errors == {} and result.exit_code == 0
    assert isinstance(result.items.disk, DiskFloor) and result.items.disk.bytes == 2 * MIB
    assert [v.in_flight for v in result.items.disk.variants] == [2]
    assert result.name == "disk_floor" and result.pid != os.getpid()
    logs = tmp_path / "out" / "logs"
    assert read_result(logs / "disk_floor.result.json").items.disk.read_gbps > 0
    assert "[disk_floor]" in (logs / "disk_floor.log").read_text()
    assert os.listdir(disk_dir) == []


def test_a_failed_item_is_reported_and_the_worker_exits_cleanly(tmp_path):
    spec = WorkerSpec(kind="disk_floor", disk_dir=str(tmp_path / "missing"), disk_bytes=MIB)
    result = Runner(tmp_path / "out", timeout_s=60).run("disk_floor", spec, _env())
    assert result.fatal is None and result.exit_code == 0
    assert list(result.errors) == ["disk_floor"] and "FileNotFoundError" in result.errors["disk_floor"]
    assert result.items.disk is None


def test_a_gpu_worker_without_torch_reports_why(tmp_path):
    spec = WorkerSpec(kind="floors")  # a GPU kind: without torch the worker reports why and exits 1
    env = _env()
    env["PYTHONPATH"] = str(tmp_path / "no-torch") + os.pathsep + env["PYTHONPATH"]
    (tmp_path / "no-torch").mkdir()
    (tmp_path / "no-torch" / "torch.py").write_text("raise ImportError('no torch in this test')\n")
    result = Runner(tmp_path / "out", timeout_s=60).run("floors", spec, env)
    assert result.exit_code == 1
    assert result.fatal is not None and "BenchUnavailable: PyTorch is not installed" in result.fatal


def test_vmm_floor_measures_on_the_simulated_driver():
    loop = vmm.measure(count=4, handle_bytes=3 * MIB, repeats=3, driver="sim")
    assert loop.driver == "sim" and loop.count == 4
    assert loop.handle_bytes == 4 * MIB and loop.granularity == 2 * MIB  # rounded up as the engine does
    assert loop.mapped_bytes == 16 * MIB and loop.rounds == 3
    assert loop.map_seconds == min(loop.map_all_seconds) > 0
    assert loop.unmap_seconds == min(loop.unmap_all_seconds) > 0
    assert loop.unmap_only_all_seconds == [] and loop.release_all_seconds == []


def test_vmm_floor_variants_time_the_engine_order_apart():
    options = vmm.BATCHED_MAP | vmm.BATCHED_UNMAP | vmm.TOUCH | vmm.SYNC_FIRST
    loop = vmm.measure(count=2, handle_bytes=2 * MIB, repeats=2, driver="sim", options=options)
    assert loop.rounds == 2
    assert len(loop.unmap_only_all_seconds) == len(loop.release_all_seconds) == 2
    for total, parts in zip(loop.unmap_all_seconds,
                            zip(loop.synchronize_all_seconds, loop.unmap_only_all_seconds, loop.release_all_seconds)):
        assert total >= sum(parts) * 0.999


def test_vmm_floor_stops_after_a_slow_round():
    loop = vmm.measure(count=2, handle_bytes=2 * MIB, repeats=5, driver="sim", slow_round_s=0.0)
    assert loop.rounds == 1


@pytest.mark.parametrize("count, size, driver, message", [
    (0, MIB, "sim", "must be positive"),
    (1, MIB, "hip", "unknown driver 'hip'"),
])
def test_vmm_floor_reports_bad_requests_as_errors(count, size, driver, message):
    with pytest.raises(RuntimeError, match=message):
        vmm.measure(count=count, handle_bytes=size, repeats=1, driver=driver)


def test_vmm_floor_reports_driver_failures():
    # More than the simulated host can create: the driver's error comes back as an exception, not a crash.
    with pytest.raises(RuntimeError, match="raw VMM floor"):
        vmm.measure(count=1 << 20, handle_bytes=1 << 40, repeats=1, driver="sim")


def test_vmm_floor_library_does_not_link_cuda():
    readelf = shutil.which("readelf")
    assert readelf, "readelf (binutils) is needed to check the library's dependencies"
    dynamic = subprocess.run([readelf, "-d", str(vmm.library_path())], capture_output=True, text=True, check=True)
    needed = [line for line in dynamic.stdout.splitlines() if "NEEDED" in line]
    assert needed and not [line for line in needed if "libcuda" in line], needed


@pytest.mark.parametrize("env, reason", [
    ({"TMS_DRIVER": None}, "PyTorch is not installed"),
    ({"TMS_DRIVER": "sim"}, "TMS_DRIVER=sim selects the simulated driver"),
])
def test_bench_says_in_one_line_why_it_cannot_run(tmp_path, env, reason):
    result = run_python(f"""
        import sys
        from torch_memory_saver.__main__ import main
        sys.exit(main(["bench", "--quick", "--out", {str(tmp_path / "out")!r}]))
        """, **env)
    assert_no_crash(result)
    assert result.returncode == 2, result.stderr
    assert reason in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()
