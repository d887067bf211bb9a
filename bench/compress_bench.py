#!/usr/bin/env python3
"""Compressed CPU backups on the GPU: ratio, pause/resume rates and host memory, against the link.

    python bench/compress_bench.py [--layers 22] [--trained-gib 1] [--cycles 5] [--out DIR]

One process, torch hook mode. Workloads (all bf16 unless named):
  llama      a ~1.1B Llama decoder (TinyLlama shape: hidden 2048, 22 layers,
             vocab 32000) built by transformers with its own random-normal
             init (std = initializer_range 0.02); no download
  llama_fp16 the same weights in fp16
  trained    a weight tensor with a trained-like distribution: Student-t(5)
             noise times per-row scales drawn log-normally around 0.02, with
             rare large outliers
  random     random bytes (what KV caches and non-float data look like to the codec)
For each: host bytes held while paused (the backups' bytes, and the process
RSS growth), and the median pause and resume rate in *uncompressed* bytes per
second over --cycles cycles, cold (fresh host memory each pause) and warm
(retain_cpu_backup: the host memory is pooled), next to pinned D2H/H2D of the
same bytes measured in the same run and the uncompressed backup of the same
tensors. Every resume is checked bit for bit against the source.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "python"))
if not os.environ.get("TMS_LIBRARY_PATH") and (REPO / "build" / "libtorch_memory_saver.so").is_file():
    os.environ["TMS_LIBRARY_PATH"] = str(REPO / "build" / "libtorch_memory_saver.so")

import torch  # noqa: E402
from torch_memory_saver import stats  # noqa: E402
from torch_memory_saver import torch_memory_saver as tms  # noqa: E402

GB = 1e9
MIB = 2**20


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def timed(action) -> float:
    torch.cuda.synchronize()
    start = time.perf_counter()
    action()
    torch.cuda.synchronize()
    return time.perf_counter() - start


def link_floors(nbytes: int, repeats: int = 3) -> dict:
    """Pinned D2H and H2D of `nbytes` in one copy each, best of `repeats`."""
    host = torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
    device = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
    d2h = min(timed(lambda: host.copy_(device, non_blocking=True)) for _ in range(repeats))
    h2d = min(timed(lambda: device.copy_(host, non_blocking=True)) for _ in range(repeats))
    del host, device
    torch.cuda.empty_cache()
    return {"d2h_GBps": nbytes / d2h / GB, "h2d_GBps": nbytes / h2d / GB}


def llama_weights(layers: int) -> dict:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        hidden_size=2048,
        intermediate_size=5632,
        num_hidden_layers=layers,
        num_attention_heads=32,
        num_key_value_heads=4,
        vocab_size=32000,
        max_position_embeddings=2048,
        initializer_range=0.02,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LlamaForCausalLM(config)
    weights = {name: p.detach().to(torch.bfloat16) for name, p in model.named_parameters()}
    del model
    torch.cuda.empty_cache()
    return weights


def trained_like(gib: float) -> dict:
    """Rows of Student-t(5) noise times log-normal row scales, 1e-4 of values 20x larger."""
    rows = 4096
    cols = int(gib * 2**30 / 2 / rows)
    generator = torch.Generator(device="cuda").manual_seed(1)
    scale = torch.exp(torch.randn(rows, 1, device="cuda", generator=generator) * 0.5) * 0.02
    noise = torch.distributions.StudentT(torch.tensor(5.0, device="cuda")).sample((rows, cols))
    weights = noise * scale
    outliers = torch.rand(rows, cols, device="cuda", generator=generator) < 1e-4
    weights = torch.where(outliers, weights * 20, weights)
    return {"trained": weights.to(torch.bfloat16)}


def bits(tensor: torch.Tensor) -> torch.Tensor:
    flat = tensor.reshape(-1)
    return flat.view(torch.int16) if flat.element_size() == 2 else flat.view(torch.uint8)


def run_workload(name: str, sources: dict, compress: bool, cycles: int) -> dict:
    """Pause/resume copies of `sources` in a region; cold cycles, then warm ones."""
    tag = f"{name}_{'z' if compress else 'plain'}"
    with tms.region(tag, enable_cpu_backup=True, compress=compress):
        tensors = {k: torch.empty_like(v) for k, v in sources.items()}
    for k, v in tensors.items():
        v.copy_(sources[k])
    nbytes = sum(t.numel() * t.element_size() for t in tensors.values())
    result = {"workload": name, "compress": compress, "bytes": nbytes}
    for mode, retain in (("cold", False), ("warm", True)):
        tms.retain_cpu_backup = retain
        pauses, resumes, held, rss_growth = [], [], [], []
        for cycle in range(cycles + (1 if retain else 0)):
            rss_before = rss_bytes()
            pause_s = timed(lambda: tms.pause(tag))
            held.append(sum(s.backup_bytes for s in stats() if s.tag == tag))
            rss_growth.append(rss_bytes() - rss_before)
            resume_s = timed(lambda: tms.resume(tag))
            for k, v in tensors.items():
                if not torch.equal(bits(v), bits(sources[k])):
                    raise SystemExit(f"{tag}: {k} differs after resume (cycle {cycle}, {mode})")
            if retain and cycle == 0:
                continue  # the warm-up cycle fills the pool
            pauses.append(pause_s)
            resumes.append(resume_s)
        result[mode] = {
            "pause_GBps": nbytes / statistics.median(pauses) / GB,
            "resume_GBps": nbytes / statistics.median(resumes) / GB,
            "pause_ms": [round(s * 1e3, 2) for s in pauses],
            "resume_ms": [round(s * 1e3, 2) for s in resumes],
        }
        result["host_bytes_paused"] = held[-1]
        result["host_ratio"] = held[-1] / nbytes
        if mode == "cold":
            result["rss_growth_paused_bytes"] = statistics.median(rss_growth)
    tms.retain_cpu_backup = False
    tms.pause(tag)  # give the pooled memory and the device memory back for the next workload
    del tensors
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, default=22)
    parser.add_argument("--trained-gib", type=float, default=1.0)
    parser.add_argument("--cycles", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    tms.hook_mode = "torch"
    llama = llama_weights(args.layers)
    workloads = {
        "llama": llama,
        "llama_fp16": {k: v.to(torch.float16) for k, v in llama.items()},
        "trained": trained_like(args.trained_gib),
        "random": {
            "random": torch.randint(0, 256, (int(args.trained_gib * 2**30),), dtype=torch.uint8, device="cuda")
        },
    }
    nbytes = sum(t.numel() * t.element_size() for t in llama.values())
    report = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "llama_parameters": sum(t.numel() for t in llama.values()),
        "floors": link_floors(nbytes),
        "results": [],
    }
    for name, sources in workloads.items():
        for compress in (True, False) if name == "llama" else (True,):
            report["results"].append(run_workload(name, sources, compress, args.cycles))
            print(json.dumps(report["results"][-1]), flush=True)

    floors = report["floors"]
    lines = [
        f"{report['device']}, torch {report['torch']}, Llama {report['llama_parameters'] / 1e9:.2f} B parameters; "
        f"pinned D2H {floors['d2h_GBps']:.1f} GB/s, H2D {floors['h2d_GBps']:.1f} GB/s (same run)",
        "",
        "| workload | compress | GiB | host bytes / size | cold pause | cold resume | warm pause | warm resume |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["results"]:
        cell = lambda mode, op, floor: f"{r[mode][op]:.1f} GB/s ({r[mode][op] / floors[floor]:.2f}x)"  # noqa: E731
        lines.append(
            f"| {r['workload']} | {'yes' if r['compress'] else 'no'} | {r['bytes'] / 2**30:.2f} | "
            f"{r['host_ratio']:.3f} | {cell('cold', 'pause_GBps', 'd2h_GBps')} | "
            f"{cell('cold', 'resume_GBps', 'h2d_GBps')} | {cell('warm', 'pause_GBps', 'd2h_GBps')} | "
            f"{cell('warm', 'resume_GBps', 'h2d_GBps')} |"
        )
    table = "\n".join(lines)
    print(table)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "compress_results.json").write_text(json.dumps(report, indent=2))
        (args.out / "compress_results.md").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
