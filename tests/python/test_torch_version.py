"""Regions refuse a torch too old to route one thread's allocations to a pool, naming the minimum."""

import sys
import types

import pytest
from torch_memory_saver import TorchMemorySaver
from torch_memory_saver._torch import MIN_TORCH
from torch_memory_saver.errors import TorchNotAvailableError


def _fake_torch(version, routing):
    """The parts of torch a region touches before routing, at `version`; with or without per-thread routing."""
    torch = types.ModuleType("torch")
    torch.__version__ = version
    torch._C = types.SimpleNamespace()
    if routing:
        torch._C._cuda_beginAllocateCurrentThreadToPool = lambda *args: None
    torch.cuda = types.SimpleNamespace(current_device=lambda: 0)
    torch.Tensor = type("Tensor", (), {})
    return torch


@pytest.mark.parametrize("version", ["2.6.0+cpu", "2.7.1"])
@pytest.mark.parametrize("entry", ["region", "disable"])
def test_an_older_torch_is_refused_at_the_first_region_with_the_minimum(monkeypatch, version, entry):
    monkeypatch.setitem(sys.modules, "torch", _fake_torch(version, routing=False))
    saver = TorchMemorySaver()
    saver.hook_mode = "torch"  # no LD_PRELOAD needed to get that far
    block = saver.region("old") if entry == "region" else saver.disable()
    with pytest.raises(TorchNotAvailableError) as raised:
        block.__enter__()
    message = str(raised.value)
    assert f"torch >= {MIN_TORCH}" in message and version in message


def test_the_check_passes_a_torch_that_routes_per_thread(monkeypatch):
    from torch_memory_saver._torch import require_routing_torch

    fake = _fake_torch("2.8.0", routing=True)
    monkeypatch.setitem(sys.modules, "torch", fake)
    assert require_routing_torch("region()") is fake
