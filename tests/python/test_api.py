"""The drop-in API that needs no GPU: hook modes, preload checks, stats, subprocess setup."""

import ctypes
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch_memory_saver
from simhelpers import MIB, run_python
from torch_memory_saver import (
    TagStats,
    TorchMemorySaver,
    _library,
    configure_subprocess,
    errors,
    hooks,
    stats,
)

PACKAGE_ROOT = Path(torch_memory_saver.__file__).resolve().parents[1]



def test_hook_mode_defaults_to_preload_and_keeps_an_unknown_name_until_first_use():
    saver = TorchMemorySaver()
    assert saver.hook_mode == "preload"
    saver.hook_mode = "torch"
    assert saver.hook_mode == "torch"
    for bad in ("", 5, None):
        with pytest.raises(errors.InvalidArgumentError, match="hook_mode"):
            saver.hook_mode = bad
    # A patched _ensure_initialized or a later register_hook_mode may handle it.
    saver.hook_mode = "magic"
    assert saver.hook_mode == "magic" and saver._impl_ctor_kwargs == {"hook_mode": "magic"}
    assert saver.enabled is False
    with pytest.raises(errors.ConfigError, match="register_hook_mode") as raised:
        saver._ensure_initialized()
    assert isinstance(raised.value, ValueError)
    assert saver._impl is None and saver._impl_ctor_kwargs == {"hook_mode": "magic"}, "a failed first use fixes nothing"


def test_hook_mode_is_fixed_after_first_use():
    saver = TorchMemorySaver()
    saver.hook_mode = "torch"
    saver._active_hooks()  # what the first region()/cuda_graph()/disable() does
    saver.hook_mode = "torch"  # setting the same mode again is fine
    with pytest.raises(errors.InvalidStateError, match="before the first"):
        saver.hook_mode = "preload"


def test_preload_mode_without_ld_preload_says_what_to_do(lib):
    saver = TorchMemorySaver()
    assert saver.enabled is False
    with pytest.raises(errors.ConfigError) as raised:
        saver._active_hooks()
    message = str(raised.value)
    assert "LD_PRELOAD=" in message and "configure_subprocess" in message
    saver.hook_mode = "torch"  # a failed first use does not fix the mode
    assert saver.enabled is True


def test_preload_mode_refuses_expandable_segments(monkeypatch):
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "max_split_size_mb:128,expandable_segments:True")
    with pytest.raises(errors.ConfigError, match="expandable_segments"):
        TorchMemorySaver()._active_hooks()


@pytest.mark.parametrize(
    "conf, expected",
    [
        ({"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"}, True),
        ({"PYTORCH_ALLOC_CONF": "garbage_collection_threshold:0.6, expandable_segments:true"}, True),
        ({"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:False"}, False),
        ({"PYTORCH_CUDA_ALLOC_CONF": "max_split_size_mb:128"}, False),
        ({}, False),
    ],
)
def test_expandable_segments_detection(conf, expected):
    assert hooks.expandable_segments_requested(conf) is expected


def test_region_without_torch_raises_a_clear_error():
    if importlib.util.find_spec("torch") is not None:
        pytest.skip("torch is installed")
    with pytest.raises(errors.TorchNotAvailableError, match="needs PyTorch") as raised:
        with TorchMemorySaver().region("weights"):
            pass
    assert isinstance(raised.value, ImportError)


def test_a_process_started_with_ld_preload_is_detected(lib):
    library = str(_library.loaded_path())
    probe = (
        "from torch_memory_saver import torch_memory_saver as t, hooks\n"
        "print(hooks.is_preloaded(), t.enabled)"
    )
    preloaded = run_python(probe, without_torch=False, LD_PRELOAD=library)
    assert preloaded.returncode == 0, preloaded.stderr
    assert preloaded.stdout.split() == ["True", "True"]
    plain = run_python(probe, without_torch=False, LD_PRELOAD=None)
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.split() == ["False", "False"]


def test_configure_subprocess_prepends_the_library_and_restores(monkeypatch, lib):
    library = str(_library.loaded_path())
    monkeypatch.setenv("LD_PRELOAD", "/opt/other.so")
    with configure_subprocess():
        assert os.environ["LD_PRELOAD"] == f"{library}:/opt/other.so"
        # The child inherits the variable (ld.so skips the missing /opt/other.so with a warning).
        child = run_python("from torch_memory_saver import hooks; print(hooks.is_preloaded())", without_torch=False)
        assert child.stdout.strip() == "True", child.stderr
    assert os.environ["LD_PRELOAD"] == "/opt/other.so"

    monkeypatch.delenv("LD_PRELOAD")
    with configure_subprocess():
        assert os.environ["LD_PRELOAD"] == library
        with configure_subprocess():  # nesting does not duplicate the entry
            assert os.environ["LD_PRELOAD"] == library
    assert "LD_PRELOAD" not in os.environ


def test_stats_report_each_tag_and_device(lib, allocate):
    allocate(4 * MIB, tag="stats-a", cpu_backup=True)
    allocate(2 * MIB, tag="stats-b")
    lib.tms_pause(b"stats-a")
    try:
        by_tag = {s.tag: s for s in stats() if s.tag.startswith("stats-")}
    finally:
        lib.tms_resume(b"stats-a")
    a, b = by_tag["stats-a"], by_tag["stats-b"]
    assert isinstance(a, TagStats)
    assert (a.device, a.allocations, a.active_bytes, a.paused_bytes, a.backup_bytes) == (
        0,
        1,
        0,
        4 * MIB,
        4 * MIB,
    )
    assert (a.pause_count, a.resume_count) == (1, 0)
    assert a.last_pause_seconds >= 0 and a.last_pause_unix > 1.6e9
    assert (b.allocations, b.active_bytes, b.paused_bytes, b.pause_count) == (1, 2 * MIB, 0, 0)
    assert TorchMemorySaver().stats() == stats()


def test_stats_grow_past_the_first_buffer(lib, allocate):
    tags = [f"stats-long-tag-name-{i:03d}" for i in range(80)]  # > 4 KiB of JSON
    for tag in tags:
        allocate(2 * MIB, tag=tag)
    assert {s.tag for s in stats()} >= set(tags)


def test_demo_runs_on_the_simulated_driver():
    result = subprocess.run(
        [sys.executable, "-m", "torch_memory_saver", "demo", "--simulated", "--size-mb", "8"],
        env=dict(os.environ, PYTHONPATH=str(PACKAGE_ROOT)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SIMULATED driver" in result.stdout
    assert "contents exact after resume: yes" in result.stdout
    assert "demo passed" in result.stdout


def test_cli_without_a_command_is_a_usage_error():
    result = subprocess.run(
        [sys.executable, "-m", "torch_memory_saver"],
        env=dict(os.environ, PYTHONPATH=str(PACKAGE_ROOT)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "demo" in result.stderr


def test_demo_fails_when_the_engine_misbehaves(monkeypatch, capsys):
    from torch_memory_saver import demo

    monkeypatch.setattr(demo, "_device_free", lambda device: 0)  # pause appears to release nothing
    assert demo.run_simulated(2 * MIB) is False
    assert "memory released on pause and taken back on resume: NO" in capsys.readouterr().out


def test_get_cpu_backup_rejects_non_cuda_tensors():
    torch = pytest.importorskip("torch")
    with pytest.raises(ValueError, match="CUDA tensor"):
        TorchMemorySaver().get_cpu_backup(torch.zeros(4))


def test_owns_covers_the_whole_allocation_and_nothing_past_it(lib, allocate):
    address = allocate(2 * MIB)
    assert lib.tms_owns(address)
    assert lib.tms_owns(ctypes.c_void_p(address + MIB))
    assert not lib.tms_owns(address + 2 * MIB)
