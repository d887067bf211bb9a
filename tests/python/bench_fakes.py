"""A host-memory stand-in for the few torch calls the benchmark's workloads make, and a library over it.

Enough to run every worker kind on the CPU: tensors are Python lists of
int64 values (a bf16 tensor holds its bytes as int64 words, so that its
int64 view is itself), "device memory" is a counter, matmuls do nothing, and
FakeSaver pauses and resumes the tensors a region made (dropping contents
without backup, keeping them with one; `corrupt` changes one value on
resume, as a broken restore would). A non-blocking resume restores the
contents and gives the host backup back only at wait(), so a worker that
reads the tensors before waiting reads the wrong values; `host_bytes()` is
the host backup memory held, for a stand-in of the process's RSS.
"""

import contextlib
import itertools
import json
import os
import random
import time
import types

MIB = 1 << 20


class FakeTensor:
    _addresses = itertools.count(1 << 32, 1 << 24)

    def __init__(self, torch, values, itemsize=8, pinned=False):
        self.torch, self.values, self.itemsize, self.pinned = torch, values, itemsize, pinned
        self.address = next(self._addresses)
        self.device = "cuda:0"

    def numel(self):
        return len(self.values)

    def element_size(self):
        return self.itemsize

    def reshape(self, *shape):
        return self

    def view(self, dtype):
        assert dtype == "int64" and self.itemsize == 8, "the fake views only int64 words as int64"
        return self

    def data_ptr(self):
        return self.address

    def is_pinned(self):
        return self.pinned

    def fill_(self, value):
        self.values[:] = [value] * len(self.values)
        return self

    def add_(self, value):
        self.values[:] = [v + value for v in self.values]
        return self

    def normal_(self, mean=0.0, std=1.0, generator=None):
        draw = random.Random(generator.draw() if generator is not None else 0)
        self.values[:] = [draw.getrandbits(63) for _ in self.values]  # bf16 values as their int64 words
        return self

    def sum(self):
        return FakeTensor(self.torch, [sum(self.values)])

    def copy_(self, other, non_blocking=False):
        self.values[:] = other.values[: len(self.values)]
        return self

    def __getitem__(self, index):
        if isinstance(index, slice):
            view = FakeTensor(self.torch, self.values[index], self.itemsize)
            return view
        return self.values[index]

    def __ne__(self, other):
        return FakeTensor(self.torch, [a != b for a, b in zip(self.values, other.values)], 1)

    def nonzero(self):
        return FakeTensor(self.torch, [i for i, v in enumerate(self.values) if v], 8)

    def flatten(self):
        return self

    def __int__(self):
        return int(self.values[0])


class FakeEvent:
    """A CUDA event whose time is the host's when recorded (the fake's work is done when queued)."""

    def __init__(self, enable_timing=False):
        self.at = None

    def record(self, stream=None):
        self.at = time.perf_counter()

    def synchronize(self):
        pass

    def elapsed_time(self, end):
        return (end.at - self.at) * 1e3


class FakeGenerator:
    def __init__(self, device=None):
        self.seed = 0

    def manual_seed(self, seed):
        self.seed = seed
        return self

    def draw(self):
        self.seed += 1
        return self.seed


class FakeCuda:
    def __init__(self, torch, total=1 << 34):
        self.torch, self.total, self.used = torch, total, 0

    def is_available(self):
        return True

    def current_device(self):
        return 0

    def set_device(self, device):
        pass

    def get_device_properties(self, device):
        return types.SimpleNamespace(total_memory=self.total, major=9, minor=0)

    def get_device_name(self, device=None):
        return "Fake GPU"

    def synchronize(self):
        pass

    def empty_cache(self):
        pass

    def mem_get_info(self, device=None):
        return self.total - self.used, self.total

    def Stream(self, device=None):  # noqa: N802 - torch's name
        return types.SimpleNamespace(synchronize=lambda: None)

    @contextlib.contextmanager
    def stream(self, stream):
        yield

    def current_stream(self):
        return types.SimpleNamespace(synchronize=lambda: None)

    Event = FakeEvent

    def cudart(self):
        return types.SimpleNamespace(cudaHostRegister=lambda *args: 0, cudaHostUnregister=lambda *args: 0)


class FakeTorch:
    """The module-level torch functions the workloads call."""

    uint8, int64, bfloat16 = "uint8", "int64", "bfloat16"
    __version__ = "0.0-fake"

    def __init__(self):
        self.cuda = FakeCuda(self)
        self.version = types.SimpleNamespace(cuda="13.0")
        self._C = types.SimpleNamespace()
        self.region = None  # the FakeSaver region allocating now
        self.matmuls = 0
        self.Generator = FakeGenerator

    def empty(self, n, dtype="int64", device=None, pin_memory=False):
        if isinstance(n, (tuple, list)):  # a shape
            elements = 1
            for size in n:
                elements *= size
            n = elements
        if dtype == "bfloat16":  # as int64 words
            assert n % 4 == 0, "the fake keeps bf16 tensors of whole int64 words only"
            n, dtype = n // 4, "int64"
        tensor = FakeTensor(self, [0] * n, 8 if dtype == "int64" else 1, pin_memory)
        if device is not None:
            self.cuda.used += n * tensor.itemsize
            if self.region is not None:
                self.region.append(tensor)
        return tensor

    def zeros(self, n, device=None):
        return self.empty(n, device=device)

    def arange(self, start, end, out=None, dtype=None, device=None):
        values = list(range(start, end))
        if out is None:
            return FakeTensor(self, values)
        out.values[:] = values
        return out

    def matmul(self, a, b, out=None):
        self.matmuls += 1
        return out

    def equal(self, a, b):
        return a.values == b.values

    def frombuffer(self, buffer, dtype=None):
        return FakeTensor(self, [0] * min(len(buffer), 4096), 1)


class FakeSaver:
    """torch_memory_saver's singleton as the workloads use it, over FakeTorch."""

    def __init__(self, torch, corrupt=False):
        self.torch, self.corrupt = torch, corrupt
        self.retain_cpu_backup = False
        self.tags = {}  # tag -> {"tensors", "backup", "paused", "saved", "pending"}
        self.disk_dir = None
        self.calls = []  # (verb, tag, non_blocking or stream given)

    @contextlib.contextmanager
    def region(self, tag, enable_cpu_backup=False, enable_disk_backup=False, cpu_backup_backend=None,
               compress=False):
        entry = self.tags.setdefault(tag, {"tensors": [], "backup": enable_cpu_backup or enable_disk_backup,
                                           "disk": enable_disk_backup, "compress": compress, "paused": False,
                                           "saved": None, "pending": False})
        self.torch.region = entry["tensors"]
        try:
            yield
        finally:
            self.torch.region = None

    def set_disk_backup_dir(self, path):
        self.disk_dir = path

    def _bytes(self, entry):
        return sum(t.numel() * t.itemsize for t in entry["tensors"])

    def _backup_bytes(self, entry):
        """Host bytes of the backup while it is held: 7/10 of the tensors' compressed (bf16 weights), all plain."""
        held = entry["backup"] and not entry["disk"] and (entry["paused"] or entry["pending"])
        size = self._bytes(entry)
        return (size * 7 // 10 if entry["compress"] else size) if held else 0

    def host_bytes(self):
        return sum(self._backup_bytes(e) for e in self.tags.values())

    def pause(self, tag):
        self.calls.append(("pause", tag, False))
        entry = self.tags[tag]
        self._finish(entry)  # as the engine: a pause waits for the restore in flight
        if entry["paused"]:
            return
        if entry["backup"]:
            entry["saved"] = [list(t.values) for t in entry["tensors"]]
        if entry["disk"]:  # one unnamed file per allocation, held open while paused, as the engine does
            entry["files"] = [os.open(self.disk_dir, os.O_TMPFILE | os.O_RDWR, 0o600) for _ in entry["tensors"]]
            for fd in entry["files"]:
                os.write(fd, b"\0" * 4096)
        self.torch.cuda.used -= self._bytes(entry)
        entry["paused"] = True

    def resume(self, tag, non_blocking=False):
        self.calls.append(("resume", tag, non_blocking))
        entry = self.tags[tag]
        if not entry["paused"]:
            return
        self.torch.cuda.used += self._bytes(entry)
        if entry["disk"]:
            for fd in entry.pop("files"):
                os.close(fd)
        entry["paused"] = False
        entry["pending"] = True
        if not (non_blocking and entry["backup"]):
            self._finish(entry)

    def _finish(self, entry):
        """The restore copies: contents back, the host backup given back."""
        if not entry["pending"]:
            return
        for index, tensor in enumerate(entry["tensors"]):
            tensor.values[:] = entry["saved"][index] if entry["backup"] else [0] * tensor.numel()
        if self.corrupt and entry["tensors"]:
            entry["tensors"][-1].values[-1] += 1
        entry["pending"] = False

    def wait(self, tag=None, stream=None):
        self.calls.append(("wait", tag, stream is not None))
        for name, entry in self.tags.items():
            if tag in (None, "", name):
                self._finish(entry)

    def stats(self):
        return [types.SimpleNamespace(tag=tag, allocations=len(e["tensors"]),
                                      active_bytes=0 if e["paused"] else self._bytes(e),
                                      paused_bytes=self._bytes(e) if e["paused"] else 0,
                                      backup_bytes=self._backup_bytes(e),
                                      last_pause_seconds=0.001, last_resume_seconds=0.001)
                for tag, e in self.tags.items()]


def run_worker(workload, torch, spec):
    """`workload` run on `spec` in this process, its result as the parent reads it back (through JSON)."""
    from torch_memory_saver.bench.records import WorkerResult, to_json

    result = WorkerResult(kind=spec.kind, name=spec.name)
    workload(torch, spec, result)
    return WorkerResult.from_json_data(json.loads(json.dumps(to_json(result))))


class RecordingRunner:
    """Stands in for the benchmark's process runner: records (name, spec) and answers with the results given, or an
    empty result of the spec's kind."""

    def __init__(self, answers=None):
        self.answers, self.specs = answers or {}, []

    def run(self, name, spec, env):
        from torch_memory_saver.bench.records import WorkerResult

        self.specs.append((name, spec))
        return self.answers.get(name) or WorkerResult(kind=spec.kind, name=name)


def install_fakes(monkeypatch):
    """FakeTorch and a FakeSaver in place of the library for every workload; raw VMM loops on the simulated
    driver. Returns (torch, saver)."""
    from torch_memory_saver.bench import compress, cycles, overlap, vmm, workloads

    torch = FakeTorch()
    saver = FakeSaver(torch)
    for module in (workloads, cycles, overlap, compress):
        monkeypatch.setattr(module, "library_setup", lambda spec, result: saver)
    real = vmm.measure
    monkeypatch.setattr(vmm, "measure", lambda *args, **kwargs: real(*args, **dict(kwargs, driver="sim")))
    return torch, saver
