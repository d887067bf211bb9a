"""torch.distributed (NCCL) with region memory, one process per GPU; run under torchrun:

    python -m torch.distributed.run --standalone --nproc-per-node N nccl_worker.py \
        --scenario collectives|graph_register|detect --hook-mode torch|preload --result-dir DIR

Scenarios:

collectives (strict; the test asserts on it)
    Each rank keeps an MLP's parameters and a buffer in tag ``weights`` (CPU
    backup) and communication buffers in tag ``buffers`` (no backup).
    all-reduce, all-gather and broadcast on region tensors give exact results
    eagerly and inside a graph captured with ``torch_memory_saver.cuda_graph``
    (tag ``graph``), before a pause and after every resume (--cycles). After
    each pause and resume every rank checks ``stats()`` of its device against
    what it paused (per-rank observability) and logs it; rank 0 prints a table
    of all ranks.

graph_register (records what happens; the test asserts only on NCCL_GRAPH_REGISTER=0)
    The graph part under the NCCL_GRAPH_REGISTER value the test chose, with
    NCCL's REG debug log: whether NCCL registered the region/graph buffers,
    how much memory the pause really released, and whether replay after
    resume is right, wrong, fails or hangs (a hang is caught by polling an
    event with a deadline, recorded, and the process exits).

detect
    Whether torch_memory_saver.cuda_graph() warns or raises about
    NCCL_GRAPH_REGISTER when torch.distributed runs NCCL (the proposal in
    docs/distributed.md), for NCCL_GRAPH_REGISTER unset, "1" and "0".

Every rank writes DIR/rank<R>.json (updated as it goes) and prints "RANK <R> OK".
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import time
import traceback
import warnings
from datetime import timedelta
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
import torch.distributed as dist
from torch import nn

import torch_memory_saver as tms_package
from torch_memory_saver import torch_memory_saver as tms
from torch_memory_saver.hooks import HOOK_MODES
from worker_common import Checks, free_bytes, owned, require_no_multicast_env, tag_stats, write_json

ENGINE_TAGS = ("buffers", "weights", "graph")  # pause order (like SGLang's kv_cache, weights, cuda_graph)


class Worker:
    def __init__(self, args: argparse.Namespace) -> None:
        require_no_multicast_env()
        self.args = args
        self.rank = int(os.environ["RANK"])
        self.world = int(os.environ["WORLD_SIZE"])
        self.local = int(os.environ["LOCAL_RANK"])
        torch.cuda.set_device(self.local)
        self.device = torch.device("cuda", self.local)
        logging.basicConfig(
            level=logging.INFO,
            format=f"[rank{self.rank} cuda:{self.local}] %(asctime)s %(name)s %(levelname)s: %(message)s",
            stream=sys.stdout,
        )
        self.log = logging.getLogger(f"nccl_worker.rank{self.rank}")
        self.result_path = Path(args.result_dir) / f"rank{self.rank}.json"
        self.result: Dict[str, Any] = {
            "rank": self.rank,
            "world_size": self.world,
            "device": self.local,
            "hook_mode": args.hook_mode,
            "scenario": args.scenario,
            "env": {
                k: os.environ.get(k)
                for k in (
                    "NCCL_GRAPH_REGISTER",
                    "NCCL_NVLS_ENABLE",
                    "NCCL_CUMEM_ENABLE",
                    "NCCL_LOCAL_REGISTER",
                    "TORCH_SYMM_MEM_DISABLE_MULTICAST",
                    "NVSHMEM_DISABLE_NVLS",
                    "LD_PRELOAD",
                )
            },
            "stage": "start",
        }
        self.checks = Checks(strict=args.scenario == "collectives")
        self.result["checks"] = self.checks.items
        self.save()
        tms.hook_mode = args.hook_mode
        dist.init_process_group("nccl", device_id=self.device, timeout=timedelta(seconds=args.nccl_timeout))
        nccl_version = torch.cuda.nccl.version()
        self.result["versions"] = {
            "torch": torch.__version__,
            "nccl": ".".join(map(str, nccl_version))
            if isinstance(nccl_version, tuple)
            else str(nccl_version),
            "cuda": torch.version.cuda,
        }
        self.stage("initialised")

    # ---- bookkeeping ---------------------------------------------------------

    def close(self) -> None:
        """Drop the captured graphs before the process group goes (NCCL deregisters graph buffers then)."""
        for name in ("graph", "g_ar", "g_ag", "g_bc", "g_y"):
            if hasattr(self, name):
                delattr(self, name)
        import gc

        gc.collect()
        torch.cuda.synchronize()

    def save(self) -> None:
        write_json(self.result_path, self.result)

    def stage(self, name: str) -> None:
        self.result["stage"] = name
        self.save()
        self.log.info("stage %s", name)

    def check(self, name: str, ok: bool, detail: Any = None) -> bool:
        ok = self.checks.check(name, ok, detail)
        if not ok:
            self.log.warning("check failed: %s: %s", name, detail)
        self.save()
        return ok

    def wait_device(self, label: str, seconds: Optional[float] = None) -> None:
        """Wait for the device's queued work, but give up after a deadline: record 'hang' and exit."""
        seconds = self.args.hang_seconds if seconds is None else seconds
        event = torch.cuda.Event()
        event.record()
        deadline = time.monotonic() + seconds
        try:
            while not event.query():
                if time.monotonic() > deadline:
                    self.result["outcome"] = f"hang at {label} (no completion in {seconds:.0f} s)"
                    self.stage(f"hang:{label}")
                    self.log.error(
                        "%s did not complete in %.0f s: recorded as a hang, exiting", label, seconds
                    )
                    sys.stdout.flush()
                    os._exit(3)
                time.sleep(0.005)
        except RuntimeError as error:  # a CUDA error surfaces here (e.g. an illegal address)
            self.result["outcome"] = f"error at {label}: {error}"
            self.stage(f"error:{label}")
            self.log.error("CUDA error at %s: %s; exiting (the context is unusable)", label, error)
            sys.stdout.flush()
            os._exit(4)

    # ---- data ------------------------------------------------------------------

    def build(self) -> None:
        """Model and communication buffers in regions; rank-specific initial values."""
        args, hidden = self.args, self.args.hidden
        torch.manual_seed(1000 + self.rank)  # ranks start different; broadcast makes them equal
        with tms.region("weights", enable_cpu_backup=True):
            self.model = nn.Sequential(
                nn.Linear(hidden, 4 * hidden, device="cuda"),
                nn.GELU(),
                nn.Linear(4 * hidden, hidden, device="cuda"),
            )
            self.model.register_buffer("scale", torch.full((hidden,), 0.5 + self.rank, device="cuda"))
        n = args.numel
        with tms.region("buffers"):
            self.ar = torch.empty(n, device="cuda")
            self.ag_in = torch.empty(n, device="cuda")
            self.ag_out = torch.empty(self.world * n, device="cuda")
            self.bc = torch.empty(n, device="cuda")
            self.static_in = torch.empty(n, device="cuda")
            self.x_in = torch.empty(args.batch, hidden, device="cuda")
        self.tensors = {
            **{f"param:{name}": p for name, p in self.model.named_parameters()},
            **{f"buffer:{name}": b for name, b in self.model.named_buffers()},
            "ar": self.ar,
            "ag_in": self.ag_in,
            "ag_out": self.ag_out,
            "bc": self.bc,
            "static_in": self.static_in,
            "x_in": self.x_in,
        }
        self.check("every region tensor is engine memory", all(owned(t) for t in self.tensors.values()))
        self.pointers = {name: t.data_ptr() for name, t in self.tensors.items()}
        # integer-valued floats: sums of a few of them are exact in float32
        self.base = torch.remainder(torch.arange(n, device="cuda"), 1000).to(torch.float32)
        generator = torch.Generator(device="cuda").manual_seed(7)  # the same input on every rank
        # 'buffers' has no backup: keep the input outside the regions to refill it after resume.
        self.x_reference = torch.randn(args.batch, hidden, device="cuda", generator=generator)
        self.x_in.copy_(self.x_reference)
        self.stage("built")

    def sync_weights(self) -> None:
        """Eager broadcasts of the region parameters from rank 0, then a cross-rank bit-level comparison."""
        with torch.no_grad():
            for tensor in list(self.model.parameters()) + list(self.model.buffers()):
                dist.broadcast(tensor.data, src=0)
        sums = self.weight_sums()
        gathered = torch.empty(self.world, sums.numel(), dtype=sums.dtype, device="cuda")
        dist.all_gather_into_tensor(gathered, sums)
        self.check("eager broadcast made the weights identical on every rank", bool((gathered == sums).all()))
        self.saved = {
            name: t.detach().cpu().clone()
            for name, t in self.tensors.items()
            if name.startswith(("param:", "buffer:"))
        }

    def weight_sums(self) -> torch.Tensor:
        rows = []
        for tensor in list(self.model.parameters()) + list(self.model.buffers()):
            rows.append(tensor.detach().reshape(-1).view(torch.int32).to(torch.int64).sum())
        return torch.stack(rows)

    # ---- eager collectives -----------------------------------------------------

    def eager_round(self, label: str) -> torch.Tensor:
        world, rank, base = self.world, self.rank, self.base
        self.x_in.copy_(self.x_reference)
        self.ar.copy_(base + rank)
        self.ag_in.copy_(base * (rank + 1))
        self.bc.copy_(base + 100 * rank)
        dist.all_reduce(self.ar)
        dist.all_gather_into_tensor(self.ag_out, self.ag_in)
        dist.broadcast(self.bc, src=world - 1)
        with torch.no_grad():
            y = self.model(self.x_in) * self.model.scale
        ys = torch.empty(world, *y.shape, device="cuda")
        dist.all_gather_into_tensor(ys, y.contiguous())
        torch.cuda.synchronize()
        expected_ar = base * world + world * (world - 1) / 2
        self.check(f"{label}: eager all_reduce exact", torch.equal(self.ar, expected_ar))
        chunks = self.ag_out.view(world, -1)
        self.check(
            f"{label}: eager all_gather exact",
            all(torch.equal(chunks[r], base * (r + 1)) for r in range(world)),
        )
        self.check(f"{label}: eager broadcast exact", torch.equal(self.bc, base + 100 * (world - 1)))
        spread = float((ys - ys[0]).abs().max())
        scale = max(1.0, float(ys[0].abs().max()))
        self.check(f"{label}: model output identical on every rank", spread <= 1e-5 * scale, (spread, scale))
        return y

    # ---- graph -----------------------------------------------------------------

    def capture(self) -> None:
        """Collectives on region and graph-pool tensors, captured in tag 'graph'."""
        world = self.world
        self.static_in.copy_(self.base + self.rank)
        torch.cuda.synchronize()
        dist.barrier()
        self.graph = torch.cuda.CUDAGraph()
        with tms.cuda_graph(self.graph, tag="graph", capture_error_mode=self.args.capture_mode):
            t = self.static_in * 2 + 1  # graph pool
            self.g_ar = t.clone()
            dist.all_reduce(self.g_ar)  # in place
            self.g_ag = torch.empty(world * t.numel(), device="cuda")
            dist.all_gather_into_tensor(self.g_ag, t)  # out of place, graph-pool receive buffer
            dist.all_gather_into_tensor(self.ag_out, t)  # out of place, region ('buffers') receive buffer
            self.g_bc = t.clone()
            dist.broadcast(self.g_bc, src=0)
            with torch.no_grad():
                y = self.model(self.x_in) * self.model.scale
            dist.all_reduce(y)
            self.g_y = y
        self.check(
            "graph outputs are engine memory",
            all(owned(t) for t in (self.g_ar, self.g_ag, self.g_bc, self.g_y)),
        )
        self.stage("captured")

    def check_graph(self, label: str, y_reference: torch.Tensor) -> bool:
        world, base = self.world, self.base
        t_rank = [base * 2 + 2 * r + 1 for r in range(world)]
        ok_ar = torch.equal(self.g_ar, sum(t_rank))
        ok_ag = all(torch.equal(self.g_ag.view(world, -1)[r], t_rank[r]) for r in range(world))
        ok_ag_region = all(torch.equal(self.ag_out.view(world, -1)[r], t_rank[r]) for r in range(world))
        ok_bc = torch.equal(self.g_bc, t_rank[0])
        y_error = float((self.g_y - y_reference * world).abs().max())
        y_scale = float((y_reference * world).abs().max()) or 1.0
        ok_y = y_error <= 1e-4 * y_scale
        results = [
            self.check(f"{label}: graph all_reduce exact", ok_ar),
            self.check(f"{label}: graph all_gather (graph-pool buffer) exact", ok_ag),
            self.check(f"{label}: graph all_gather (region buffer) exact", ok_ag_region),
            self.check(f"{label}: graph broadcast exact", ok_bc),
            self.check(f"{label}: graph model all_reduce", ok_y, {"max_error": y_error, "scale": y_scale}),
        ]
        return all(results)

    def replay(self, label: str) -> None:
        self.static_in.copy_(self.base + self.rank)  # 'buffers' has no backup: refill after resume
        self.x_in.copy_(self.x_reference)
        self.ag_out.zero_()
        torch.cuda.synchronize()
        dist.barrier()
        self.graph.replay()
        self.wait_device(label)
        dist.barrier()

    # ---- pause / resume with observability --------------------------------------

    def pause_all(self, cycle: int) -> Dict[str, Any]:
        torch.cuda.synchronize()
        dist.barrier()  # no peer is still in a collective on these buffers
        before = tag_stats(ENGINE_TAGS)
        expected = sum(s["active_bytes"] for s in before.values() if s)
        free_before = free_bytes()
        seconds = {}
        wall_start = time.time()
        for tag in ENGINE_TAGS:
            start = time.perf_counter()
            tms.pause(tag)
            seconds[tag] = time.perf_counter() - start
        wall_end = time.time()
        freed = free_bytes() - free_before
        after = tag_stats(ENGINE_TAGS)
        info = {
            "cycle": cycle,
            "expected_bytes": expected,
            "freed_bytes": freed,
            "freed_ratio": freed / expected if expected else None,
            "pause_seconds": seconds,
            "stats_before": before,
            "stats_paused": after,
        }
        self.check(
            f"cycle {cycle}: pause released >= 90% of region bytes",
            freed >= 0.9 * expected,
            (freed, expected),
        )
        self.check_observability(cycle, "pause", before, after, seconds, wall_start, wall_end)
        return info

    def resume_all(self, cycle: int, paused: Dict[str, Any]) -> Dict[str, Any]:
        dist.barrier()
        free_before = free_bytes()
        seconds = {}
        wall_start = time.time()
        for tag in reversed(ENGINE_TAGS):
            start = time.perf_counter()
            tms.resume(tag)
            seconds[tag] = time.perf_counter() - start
        wall_end = time.time()
        taken = free_before - free_bytes()
        after = tag_stats(ENGINE_TAGS)
        self.check_observability(
            cycle, "resume", paused["stats_before"], after, seconds, wall_start, wall_end
        )
        self.check(
            f"cycle {cycle}: data_ptr unchanged",
            {name: t.data_ptr() for name, t in self.tensors.items()} == self.pointers,
        )
        exact = all(
            torch.equal(self.tensors[name].detach().cpu(), saved) for name, saved in self.saved.items()
        )
        self.check(f"cycle {cycle}: weights bit-exact after resume", exact)
        return {"cycle": cycle, "taken_bytes": taken, "resume_seconds": seconds, "stats_resumed": after}

    def check_observability(self, cycle, verb, before, after, seconds, wall_start, wall_end) -> None:
        """stats() on this rank's device says what was paused/resumed, with bytes, counts and times."""
        device = torch.cuda.current_device()
        weights_bytes = sum(
            t.numel() * t.element_size()
            for n, t in self.tensors.items()
            if n.startswith(("param:", "buffer:"))
        )
        for tag in ENGINE_TAGS:
            b, a = before.get(tag), after.get(tag)
            name = f"cycle {cycle} {verb}: stats[{tag}]"
            if not self.check(f"{name} present on device {device}", a is not None and b is not None, (b, a)):
                continue
            self.check(f"{name} device", a["device"] == device, a)
            self.check(f"{name} allocations unchanged", a["allocations"] == b["allocations"], (b, a))
            if verb == "pause":
                self.check(f"{name} nothing active", a["active_bytes"] == 0, a)
                self.check(f"{name} paused == active before", a["paused_bytes"] == b["active_bytes"], (b, a))
                self.check(f"{name} pause_count", a["pause_count"] == cycle, a)
                last = a["last_pause_seconds"]
                when = a["last_pause_unix"]
                if tag == "weights":
                    self.check(f"{name} backed up", a["backup_bytes"] >= weights_bytes, (a, weights_bytes))
                else:
                    self.check(f"{name} no backup", a["backup_bytes"] == 0, a)
            else:
                self.check(f"{name} nothing paused", a["paused_bytes"] == 0, a)
                self.check(f"{name} active == before pause", a["active_bytes"] == b["active_bytes"], (b, a))
                self.check(f"{name} resume_count", a["resume_count"] == cycle, a)
                if not tms.retain_cpu_backup:
                    self.check(f"{name} backup released", a["backup_bytes"] == 0, a)
                last = a["last_resume_seconds"]
                when = a["last_resume_unix"]
            self.check(f"{name} duration", 0 < last <= seconds[tag] + 0.05, (last, seconds[tag]))
            self.check(f"{name} time", wall_start - 1 <= when <= wall_end + 1, (when, wall_start, wall_end))
        line = " | ".join(
            f"{tag}: active {after[tag]['active_bytes'] / 2**20:.0f} MiB, "
            f"paused {after[tag]['paused_bytes'] / 2**20:.0f} MiB, "
            f"backup {after[tag]['backup_bytes'] / 2**20:.0f} MiB, last {verb} {seconds[tag] * 1e3:.1f} ms"
            for tag in ENGINE_TAGS
            if after.get(tag)
        )
        self.log.info("cycle %d after %s on cuda:%d: %s", cycle, verb, device, line)

    def print_table(self, title: str, rows: List[Dict[str, Any]]) -> None:
        """All ranks' stats rows gathered to rank 0 and printed as one table."""
        gathered: List[Any] = [None] * self.world
        dist.all_gather_object(gathered, rows)
        if self.rank != 0:
            return
        header = (
            f"{'rank':>4} {'dev':>3} {'tag':<8} {'allocs':>6} {'active MiB':>11} {'paused MiB':>11} "
            f"{'backup MiB':>11} {'pauses':>6} {'resumes':>7} {'last pause ms':>13} {'last resume ms':>14}"
        )
        print(f"\n{title}\n{header}", flush=True)
        for rank_rows in gathered:
            for r in rank_rows:
                print(
                    f"{r['rank']:>4} {r['device']:>3} {r['tag']:<8} {r['allocations']:>6} "
                    f"{r['active_bytes'] / 2**20:>11.1f} {r['paused_bytes'] / 2**20:>11.1f} "
                    f"{r['backup_bytes'] / 2**20:>11.1f} {r['pause_count']:>6} {r['resume_count']:>7} "
                    f"{r['last_pause_seconds'] * 1e3:>13.2f} {r['last_resume_seconds'] * 1e3:>14.2f}",
                    flush=True,
                )

    def stats_rows(self) -> List[Dict[str, Any]]:
        device = torch.cuda.current_device()
        return [
            {"rank": self.rank, **s.__dict__}
            for s in tms_package.stats()
            if s.device == device and s.tag in ENGINE_TAGS
        ]

    # ---- NCCL debug log (graph_register) -------------------------------------------

    def nccl_log_summary(self) -> Dict[str, Any]:
        pattern = os.environ.get("NCCL_DEBUG_FILE", "")
        if not pattern:
            return {"available": False}
        import glob

        # NCCL expands %h to the host name (up to its first dot) and %p to the pid.
        candidates = sorted(glob.glob(pattern.replace("%p", str(os.getpid())).replace("%h", "*")))
        if not candidates:
            return {"available": False, "pattern": pattern, "pid": os.getpid()}
        path = Path(candidates[0])
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError as error:
            return {"available": False, "error": str(error), "path": str(path)}
        kinds = {
            "ipc_registered": r"IPC register(ed)? buffer",
            "ipc_reused": r"IPC reuse buffer",
            "ipc_register_failed": r"failed to IPC register",
            "graph_register_other": r"(NVLS|CollNet|NET) (graph )?regist",
            "cuda_failure": r"Cuda failure",
            "warn": r"\bWARN\b",
        }
        all_lines = text.splitlines()
        summary: Dict[str, Any] = {"available": True, "path": str(path), "lines": len(all_lines)}
        for key, regex in kinds.items():
            lines = [line for line in all_lines if re.search(regex, line)]
            summary[key] = len(lines)
            if lines:
                summary[f"{key}_examples"] = lines[:3]
        return summary


# ---- scenarios -------------------------------------------------------------------------


def scribble_over_released(freed_bytes: int) -> None:
    """Write over 80 % of the physical memory a pause released, so stale data cannot survive by luck."""
    size = int(max(freed_bytes, 0) * 0.8)
    if size > 0:
        scribble = torch.full((size,), 0xAB, dtype=torch.uint8, device="cuda")
        del scribble
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def scenario_collectives(w: Worker) -> None:
    w.build()
    w.sync_weights()
    y_reference = w.eager_round("before pause")
    w.capture()
    w.replay("first replay")
    w.check_graph("before pause", y_reference)
    w.result["cycles"] = []
    for cycle in range(1, w.args.cycles + 1):
        paused = w.pause_all(cycle)
        w.print_table(f"cycle {cycle}: after pause (stats() per rank and device)", w.stats_rows())
        # While paused, NCCL still works on resident memory.
        z = torch.ones(1024, device="cuda")
        dist.all_reduce(z)
        torch.cuda.synchronize()
        w.check(f"cycle {cycle}: collective on resident memory while paused", bool((z == w.world).all()))
        scribble_over_released(paused["freed_bytes"])
        resumed = w.resume_all(cycle, paused)
        w.print_table(f"cycle {cycle}: after resume", w.stats_rows())
        y = w.eager_round(f"cycle {cycle} after resume")
        error = float((y - y_reference).abs().max())
        w.check(
            f"cycle {cycle}: model output unchanged by pause/resume",
            error <= 1e-5 * max(1.0, float(y_reference.abs().max())),
            error,
        )
        w.replay(f"cycle {cycle} replay after resume")
        w.check_graph(f"cycle {cycle} after resume", y_reference)
        w.result["cycles"].append({**paused, **resumed})
        w.save()
    w.result["outcome"] = "correct" if not w.checks.failed else "wrong"


def scenario_graph_register(w: Worker) -> None:
    w.build()
    w.sync_weights()
    y_reference = w.eager_round("before pause")
    w.capture()
    w.result["nccl_log_after_capture"] = w.nccl_log_summary()
    w.replay("first replay")
    w.result["correct_before_pause"] = w.check_graph("before pause", y_reference)
    w.result["cycles"] = []
    all_correct = True
    for cycle in range(1, w.args.cycles + 1):
        paused = w.pause_all(cycle)
        scribble_over_released(paused["freed_bytes"])
        resumed = w.resume_all(cycle, paused)
        w.stage(f"cycle {cycle}: replay after resume")
        w.replay(f"cycle {cycle} replay after resume")
        correct = w.check_graph(f"cycle {cycle} after resume", y_reference)
        all_correct = all_correct and correct
        w.result["cycles"].append(
            {
                "cycle": cycle,
                "expected_bytes": paused["expected_bytes"],
                "freed_bytes": paused["freed_bytes"],
                "freed_ratio": paused["freed_ratio"],
                "taken_bytes": resumed["taken_bytes"],
                "pause_seconds": paused["pause_seconds"],
                "resume_seconds": resumed["resume_seconds"],
                "replay_correct": correct,
            }
        )
        w.save()
    w.result["nccl_log_end"] = w.nccl_log_summary()
    w.result["outcome"] = "correct" if all_correct else "wrong"


def scenario_detect(w: Worker) -> None:
    """Does cuda_graph() warn or raise about NCCL_GRAPH_REGISTER? (NCCL itself read its env at init.)"""
    with tms.region("buffers"):
        x = torch.ones(1 << 20, device="cuda")
    dist.all_reduce(x)  # the communicator is warm before any capture
    torch.cuda.synchronize()
    original = os.environ.get("NCCL_GRAPH_REGISTER")
    records: List[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Collect(level=logging.WARNING)
    logging.getLogger("torch_memory_saver").addHandler(handler)
    variants = {}
    try:
        for value in (None, "1", "0"):
            if value is None:
                os.environ.pop("NCCL_GRAPH_REGISTER", None)
            else:
                os.environ["NCCL_GRAPH_REGISTER"] = value
            records.clear()
            dist.barrier()
            graph = torch.cuda.CUDAGraph()
            raised = None
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    with tms.cuda_graph(graph, tag=f"detect_{value}"):
                        y = x * 2
                        dist.all_reduce(y)
                except Exception as error:  # the detection may refuse
                    raised = f"{type(error).__name__}: {error}"
            messages = [str(c.message) for c in caught] + [r.getMessage() for r in records]
            mentions = [m for m in messages if "NCCL_GRAPH_REGISTER" in m]
            if raised is not None and "NCCL_GRAPH_REGISTER" in raised:
                kind = "error"
            elif any("NCCL_GRAPH_REGISTER" in str(c.message) for c in caught):
                kind = "warning"
            elif any("NCCL_GRAPH_REGISTER" in r.getMessage() for r in records):
                kind = "log"
            else:
                kind = None
            replay_ok = None
            if raised is None:
                graph.replay()
                w.wait_device(f"detect replay {value}")
                # x was all-reduced to `world` before the capture: y = sum over ranks of 2 * world.
                replay_ok = bool((y == 2 * w.world * w.world).all())
            variants[str(value)] = {
                "detected": kind is not None,
                "kind": kind,
                "raised": raised,
                "messages": mentions[:3],
                "replay_ok": replay_ok,
            }
            w.log.info("NCCL_GRAPH_REGISTER=%s: %s", value, variants[str(value)])
            dist.barrier()
    finally:
        logging.getLogger("torch_memory_saver").removeHandler(handler)
        if original is None:
            os.environ.pop("NCCL_GRAPH_REGISTER", None)
        else:
            os.environ["NCCL_GRAPH_REGISTER"] = original
    w.result["detect"] = variants
    w.result["outcome"] = "recorded"


SCENARIOS = {
    "collectives": scenario_collectives,
    "graph_register": scenario_graph_register,
    "detect": scenario_detect,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), required=True)
    parser.add_argument("--hook-mode", choices=HOOK_MODES, default="torch")
    parser.add_argument("--result-dir", required=True)
    parser.add_argument("--hidden", type=int, default=4096, help="MLP width (params: 8*hidden^2 floats)")
    parser.add_argument("--numel", type=int, default=8 << 20, help="floats per communication buffer")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--cycles", type=int, default=2)
    parser.add_argument("--capture-mode", default="global", choices=("global", "thread_local", "relaxed"))
    parser.add_argument("--nccl-timeout", type=float, default=180.0)
    parser.add_argument("--hang-seconds", type=float, default=45.0)
    args = parser.parse_args()
    Path(args.result_dir).mkdir(parents=True, exist_ok=True)
    worker = None
    try:
        worker = Worker(args)
        SCENARIOS[args.scenario](worker)
        worker.stage("done")
        worker.close()
        dist.barrier()
        dist.destroy_process_group()
        failed = worker.checks.failed
        if failed and args.scenario == "collectives":
            return 1
        print(f"RANK {worker.rank} OK", flush=True)
        return 0
    except BaseException as error:
        traceback.print_exc()
        if worker is not None:
            worker.result["outcome"] = (
                worker.result.get("outcome") or f"error: {type(error).__name__}: {error}"
            )
            worker.result["traceback"] = traceback.format_exc()[-4000:]
            worker.save()
        sys.stdout.flush()
        # After a failure peers may be stuck in a collective: do not wait for them at exit.
        os._exit(1)


if __name__ == "__main__":
    sys.exit(main())
