"""Warn when collectives captured in a pausable CUDA graph may be registered by NCCL."""

from __future__ import annotations

import os
import warnings
from typing import Any, Mapping, Optional

GRAPH_REGISTER_ENV = "NCCL_GRAPH_REGISTER"


class NcclGraphRegistrationWarning(UserWarning):
    """cuda_graph() runs where NCCL may keep registrations of buffers that pause() replaces."""


def graph_register_hazard(torch: Any, environ: Mapping[str, str] = os.environ) -> Optional[str]:
    """The warning text when collectives captured now may be registered by NCCL, else None.

    NCCL registers the buffers of collectives captured in a CUDA graph
    (NCCL_GRAPH_REGISTER, default 1) and keeps the registration while the
    graph lives. pause()/resume() keep the addresses but change the physical
    memory under them, so such a registration goes stale.
    """
    value = environ.get(GRAPH_REGISTER_ENV, "").strip()
    if value == "0":
        return None
    dist = getattr(torch, "distributed", None)
    try:
        if dist is None or not dist.is_available() or not dist.is_initialized():
            return None
        if "nccl" not in str(dist.get_backend()).lower() or dist.get_world_size() < 2:
            return None
    except Exception:  # noqa: BLE001 - a half-initialised or unusual backend: say nothing
        return None
    shown = repr(value) if value else "unset (NCCL's default is 1)"
    return (
        f"torch_memory_saver.cuda_graph(): torch.distributed uses NCCL and {GRAPH_REGISTER_ENV} is {shown}. "
        "NCCL may register the buffers of collectives captured in this graph and keep the registration "
        "while the graph lives; pause()/resume() give those buffers new physical memory at the same "
        "addresses, so a replay after resume can hang, compute wrong results, or keep released memory "
        f"allocated. Set {GRAPH_REGISTER_ENV}=0 in the environment of every rank before the process group "
        "is created, or destroy such graphs before pause() and capture them again after resume()."
    )


def check_graph_register(torch: Any) -> None:
    """Warn (NcclGraphRegistrationWarning) if graph_register_hazard() finds a hazard."""
    message = graph_register_hazard(torch)
    if message is not None:
        # 1: here, 2: cuda_graph's body, 3: contextlib's __enter__, 4: the caller's `with`
        warnings.warn(message, NcclGraphRegistrationWarning, stacklevel=4)
