"""What the compress worker measures: cold pauses of a compressed CPU backup next to a plain one.

One worker, in a fresh process: two tags of `spec.layout` bf16 tensors with the
same weight-like contents (normal, mean 0, std 0.02, as ``torch.randn(...) *
0.02`` of a freshly initialized layer; fixed seed), one in
``region(tag, enable_cpu_backup=True, compress=True)``, one without compress.
retain_cpu_backup stays off, so every pause is cold (fresh host memory). First
the pinned D2H and H2D floors of the same uncompressed bytes; then the first
pause of the process, of the compressed tag (what a job's first compressed
pause costs: the codec's first use), and its resume; then `spec.cycles` rounds
of pause plain, resume plain, pause compressed, resume compressed, each timed
from an idle device until it is idle again. While each tag is paused the
engine's statistics give the host bytes it holds. After every resume every
8-byte word and every data_ptr() is compared with a copy kept outside the
regions (a difference is a DATA MISMATCH).
"""

from __future__ import annotations

from typing import Any, List, Optional

from .constants import GiB
from .copies import pinned_copy_floor
from .records import CompressRound, LayoutInfo, WorkerResult, WorkerSpec
from .torch_support import (
    int64_view,
    layout_elements,
    library_setup,
    record_check,
    require_device_memory,
    tag_stats,
    timed,
)
from .worker import Steps

SEED = 20240


def differences(torch: Any, tensors: List[Any], references: List[Any]) -> Optional[str]:
    """None when every tensor holds its reference's bits, else a description of the first difference."""
    for index, (tensor, reference) in enumerate(zip(tensors, references)):
        got, want = int64_view(torch, tensor), int64_view(torch, reference)
        if not torch.equal(got, want):
            wrong = (got != want).nonzero().flatten()
            first = int(wrong[0])
            return (f"tensor {index} of {len(tensors)}: {wrong.numel()} of {got.numel()} 8-byte words differ; first "
                    f"at word {first}: got {int(got[first]):#x}, expected {int(want[first]):#x}")
    return None


def compress(torch: Any, spec: WorkerSpec, result: WorkerResult) -> None:
    device, count = int(spec.device or 0), int(spec.layout or 1)
    items = result.items
    what = "compress"
    tms = library_setup(spec, result)
    tags = {"z": "bench_compress_z", "plain": "bench_compress_plain"}
    # int64 words per tensor times 4: bf16 elements whose bytes the int64 view of the comparison covers exactly.
    elements = layout_elements(spec.total_bytes, count) * 4
    payload = elements * 2 * count
    items.layout = LayoutInfo(count=count, bytes=payload)
    where = f"cuda:{device}"
    with Steps(result, what) as step:
        step.now = "floors"
        require_device_memory(torch, device, payload + 1 * GiB, what)
        items.d2h, items.h2d = pinned_copy_floor(torch, device, payload, spec.repeats)
        step.now = "allocate"
        # Both tags and the reference copy, and the codec's room on the device.
        require_device_memory(torch, device, 3 * payload + 1 * GiB, what)
        tensors = {}
        for name, tag in tags.items():
            with tms.region(tag, enable_cpu_backup=True, compress=name == "z"):
                tensors[name] = [torch.empty(elements, dtype=torch.bfloat16, device=where) for _ in range(count)]
        generator = torch.Generator(device=where).manual_seed(SEED)
        references = [torch.empty(elements, dtype=torch.bfloat16, device=where) for _ in range(count)]
        for reference in references:
            reference.normal_(mean=0.0, std=0.02, generator=generator)
        for name in tags:
            for tensor, reference in zip(tensors[name], references):
                tensor.copy_(reference)
        pointers = {name: [t.data_ptr() for t in tensors[name]] for name in tags}
        result.engine_after_alloc = tag_stats(tms, tags["z"])
        tms.retain_cpu_backup = False
        torch.cuda.synchronize()

        def cycle(round_: CompressRound, name: str) -> None:
            """Pause (timed, host bytes read while paused), resume (timed), compare."""
            label = f"round {round_.index}" if round_.index else "first pause"
            step.now = f"{label}: pause {name}"
            _, pause_seconds = timed(torch, lambda: tms.pause(tags[name]))
            host_bytes = tag_stats(tms, tags[name]).backup_bytes
            step.now = f"{label}: resume {name}"
            _, resume_seconds = timed(torch, lambda: tms.resume(tags[name]))
            setattr(round_, f"{name}_pause_seconds", pause_seconds)
            setattr(round_, f"{name}_resume_seconds", resume_seconds)
            setattr(round_, f"{name}_host_bytes", host_bytes)
            step.now = f"{label}: check {name}"
            exact = record_check(result, differences(torch, tensors[name], references),
                                 [t.data_ptr() for t in tensors[name]] != pointers[name],
                                 f"compress, {name} tag, {label}, after resume")
            round_.contents_exact = exact and round_.contents_exact is not False
            ratio = f", host bytes {host_bytes / payload:.3f}x" if host_bytes is not None and payload else ""
            print(f"[{what}] {label}: {name} pause {pause_seconds * 1e3:.1f} ms, resume {resume_seconds * 1e3:.1f} ms"
                  f"{ratio}", flush=True)

        items.first = CompressRound(index=0)
        cycle(items.first, "z")
        for index in range(1, spec.cycles + 1):
            round_ = CompressRound(index=index)
            items.rounds.append(round_)
            cycle(round_, "plain")
            cycle(round_, "z")
        step.now = "done"
