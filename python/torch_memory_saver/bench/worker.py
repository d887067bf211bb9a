"""The worker protocol: one measurement group per fresh process.

The parent writes a :class:`WorkerSpec` to ``NAME.spec.json`` and starts
``python -c WORKER_BOOT NAME.spec.json``; the worker runs the workload of the
spec's kind, writes a :class:`WorkerResult` to ``NAME.result.json`` (through a
temporary file and a rename, so a half-written result is never read) and
leaves with ``os._exit`` (interpreter teardown, MemPool destructors included,
is not what is measured, and the driver reclaims everything anyway).

A failing item is recorded under ``errors[item]`` and the worker goes on
(:func:`item`); anything else that escapes is ``fatal``.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from .constants import exc_text
from .records import WorkerResult, WorkerSpec, from_json, to_json

WORKER_BOOT = "import sys; from torch_memory_saver.bench.worker import main; main(sys.argv[1])"


def exc_with_trace(exc: BaseException) -> str:
    return exc_text(exc) + "\n" + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))[-4000:]


@contextmanager
def item(result: WorkerResult, name: str) -> Iterator[None]:
    """Record a failure of one independent measurement under result.errors[name] and carry on."""
    print(f"[{result.kind}] {name} ...", flush=True)
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - reported, the run goes on
        result.errors[name] = exc_with_trace(exc)
        print(f"[{result.kind}] {name} FAILED: {exc_text(exc)}", flush=True)


class Steps:
    """Where a sequence of dependent steps is; a failure ends the sequence and is recorded under that step.

    ``with Steps(result, label) as step: step.now = "pause"; ...``: an exception
    inside is recorded under ``result.errors[step.now]`` and the worker goes on
    after the block.
    """

    def __init__(self, result: WorkerResult, label: str) -> None:
        self.result, self.label, self.now = result, label, "setup"

    def __enter__(self) -> "Steps":
        return self

    def __exit__(self, kind: Any, exc: Any, trace: Any) -> bool:
        if not isinstance(exc, Exception):
            return False
        self.result.errors[self.now] = exc_with_trace(exc)
        print(f"[{self.label}] FAILED at {self.now}: {exc_text(exc)}", flush=True)
        return True  # later steps depend on this one: stop here, the worker goes on


def write_spec(spec: WorkerSpec, path: Path) -> None:
    path.write_text(json.dumps(to_json(spec), indent=1), encoding="utf-8")


def read_spec(path: str) -> WorkerSpec:
    with open(path, encoding="utf-8") as handle:
        return from_json(WorkerSpec, json.load(handle))


def write_result(result: WorkerResult, path: str) -> None:
    temporary = path + ".tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(to_json(result), handle, indent=1)
    os.replace(temporary, path)


def read_result(path: Path) -> WorkerResult:
    return WorkerResult.from_json_data(json.loads(path.read_text(encoding="utf-8")))


def run(spec: WorkerSpec) -> WorkerResult:
    """Runs the workload of `spec.kind` in this process and returns what it measured (never raises)."""
    result = WorkerResult(kind=spec.kind, name=spec.name, pid=os.getpid(), started_unix=time.time())
    try:
        from . import workloads  # imports no torch: the workloads get it as an argument

        workload = workloads.BY_KIND[spec.kind]
        if spec.kind in workloads.CPU_KINDS:
            workload(None, spec, result)
        else:
            from .torch_support import import_torch_cuda, torch_env

            torch = import_torch_cuda()
            spec.device = int(torch.cuda.current_device() if spec.device is None else spec.device)
            torch.cuda.set_device(spec.device)
            result.env = torch_env(torch, spec.device)
            workload(torch, spec, result)
    except BaseException as exc:  # noqa: BLE001 - everything goes into the result
        result.fatal = exc_with_trace(exc)
        print(f"worker failed: {exc_text(exc)}", flush=True)
    result.finished_unix = time.time()
    return result


def main(spec_path: str) -> None:
    """Entry of a worker process: run one measurement group, write its result JSON, exit without teardown."""
    code = 0
    try:
        spec = read_spec(spec_path)
        result = run(spec)
        code = 1 if result.fatal else 0
        write_result(result, spec.result_path)
    except BaseException as exc:  # noqa: BLE001 - the parent reports a missing result with the log
        print(f"worker cannot read its spec or write its result: {exc_text(exc)}", file=sys.stderr, flush=True)
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
