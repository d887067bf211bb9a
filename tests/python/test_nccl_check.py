"""The NCCL graph-registration check of cuda_graph() (python/torch_memory_saver/_nccl.py)."""

import types
import warnings

import pytest

from torch_memory_saver import _nccl


def fake_torch(initialized=True, backend="nccl", world_size=2):
    dist = types.SimpleNamespace(
        is_available=lambda: True,
        is_initialized=lambda: initialized,
        get_backend=lambda: backend,
        get_world_size=lambda: world_size,
    )
    return types.SimpleNamespace(distributed=dist)


@pytest.mark.parametrize("value", [None, "1", "2"])
def test_warns_when_nccl_may_register(value):
    environ = {} if value is None else {"NCCL_GRAPH_REGISTER": value}
    message = _nccl.graph_register_hazard(fake_torch(), environ)
    assert message and "NCCL_GRAPH_REGISTER=0" in message


@pytest.mark.parametrize(
    "torch_like",
    [fake_torch(initialized=False), fake_torch(backend="gloo"), fake_torch(world_size=1), object()],
)
def test_silent_without_a_multi_rank_nccl_group(torch_like):
    assert _nccl.graph_register_hazard(torch_like, {}) is None


def test_silent_when_disabled():
    assert _nccl.graph_register_hazard(fake_torch(), {"NCCL_GRAPH_REGISTER": "0"}) is None


def test_warning_category(monkeypatch):
    monkeypatch.delenv("NCCL_GRAPH_REGISTER", raising=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _nccl.check_graph_register(fake_torch())
    assert [w.category for w in caught] == [_nccl.NcclGraphRegistrationWarning]
