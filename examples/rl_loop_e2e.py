#!/usr/bin/env python3
"""RL-style loop with a real transformers model: an inference engine and a trainer take turns on the same GPUs.

One process per GPU (run it plainly on one GPU, or under torchrun for 2 or 4):

    python examples/rl_loop_e2e.py
    python -m torch.distributed.run --standalone --nproc-per-node 4 examples/rl_loop_e2e.py
    python examples/rl_loop_e2e.py --steps 2 --layers 4 --hidden 1024 --kv-cache-gib 1   # quick

Each process builds a decoder-only transformer (``transformers.LlamaForCausalLM``
from a config, random weights, no download; by default ~1.1 B parameters in
bf16) twice:

- the *engine*: its weights in region tag ``weights`` (CPU backup), a KV
  cache tensor in tag ``kv_cache``, and a decode step captured with
  ``torch_memory_saver.cuda_graph`` in tag ``cuda_graph``. The decode step is
  a static-shape forward of a ``[batch, window]`` token window (no
  transformers cache objects); forward hooks on every layer's k/v projections
  write the window's keys and values into the KV cache tensor, so the graph
  really uses that region. Generation is greedy over a sliding window.
- the *trainer*: a copy of the model, under DistributedDataParallel when
  there are several processes, trained with AdamW on the engine's rollouts
  (a REINFORCE-style loss with random rewards).

A step: generate (engine) -> pause kv_cache, weights, cuda_graph (SGLang's
order) -> train -> resume weights and copy the trainer's parameters into them
(same data_ptr) -> resume kv_cache and cuda_graph -> check that the engine's
logits equal a forward of the trainer's model and differ from those before
the update. Before that, --baseline-steps run the same loop with the engine
kept resident ("without the library") so that the peak device memory of both
can be compared in one run. Prints a per-step time breakdown and the peaks;
rank 0 prints a table of all ranks and ``E2E OK`` when every check passed.

Hook mode: ``--hook-mode torch`` (default, no LD_PRELOAD) or ``preload`` (the
script restarts itself with the engine library in LD_PRELOAD if needed).

One file of ~700 lines on purpose: an example is copied and read as a whole,
so the model, the engine, the trainer and the checks stay together.
"""

from __future__ import annotations

import os

# The GPU hosts this runs on require NVLink multicast off; keep it off unless told otherwise.
for _name, _value in {
    "NCCL_NVLS_ENABLE": "0",
    "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
    "NVSHMEM_DISABLE_NVLS": "1",
    "HF_HUB_OFFLINE": "1",
}.items():
    os.environ.setdefault(_name, _value)

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from typing import Any, Callable, Dict, List, Optional, Tuple  # noqa: E402

GIB = 2**30
ENGINE_TAGS = ("kv_cache", "weights", "cuda_graph")  # SGLang's pause order


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=3, help="RL steps with pause/resume")
    p.add_argument(
        "--baseline-steps", type=int, default=1, help="steps with the engine kept resident (0: none)"
    )
    p.add_argument("--layers", type=int, default=22)
    p.add_argument("--hidden", type=int, default=2048)
    p.add_argument("--intermediate", type=int, default=None, help="default: 2.75 x hidden (5632 for 2048)")
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--kv-heads", type=int, default=4)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--batch", type=int, default=4, help="sequences generated per step and rank")
    p.add_argument("--window", type=int, default=128, help="tokens in the static decode window")
    p.add_argument("--gen-tokens", type=int, default=16, help="tokens generated per step")
    p.add_argument("--train-iters", type=int, default=2, help="optimizer steps per RL step")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--kv-cache-gib", type=float, default=8.0, help="size of the engine's KV cache tensor")
    p.add_argument("--hook-mode", choices=("torch", "preload"), default="torch")
    p.add_argument(
        "--offload-trainer",
        action="store_true",
        help="also keep the trainer's weights, gradients and optimizer states in tag 'trainer' (CPU backup) "
        "and pause it while the engine generates",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="rank 0 writes the summary of all ranks here")
    p.add_argument(
        "--allow-eager-fallback",
        action="store_true",
        help="if capturing the decode graph fails, go on with eager decoding and still exit 0",
    )
    args = p.parse_args(argv)
    if args.intermediate is None:
        args.intermediate = int(round(args.hidden * 2.75 / 256)) * 256 or 256
    return args


def ensure_preload(args: argparse.Namespace) -> None:
    """Preload mode needs the engine library in LD_PRELOAD from process start: restart once with it."""
    if args.hook_mode != "preload" or os.environ.get("RL_LOOP_E2E_REEXEC") == "1":
        return
    from torch_memory_saver.utils import get_binary_path_from_package

    library = str(get_binary_path_from_package("torch_memory_saver_hook_mode_preload"))
    current = [e for e in os.environ.get("LD_PRELOAD", "").replace(" ", ":").split(":") if e]
    if library in current:
        return
    env = dict(os.environ, LD_PRELOAD=":".join([library, *current]), RL_LOOP_E2E_REEXEC="1")
    print(f"restarting with LD_PRELOAD={library}", flush=True)
    os.execve(sys.executable, [sys.executable, *sys.argv], env)  # same pid: fine under torchrun


# ---- measurement helpers ------------------------------------------------------------


class Clock:
    """Seconds of named phases, with the device synchronised at both ends."""

    def __init__(self, torch: Any) -> None:
        self.torch = torch
        self.seconds: Dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str):
        self.torch.cuda.synchronize()
        start = time.perf_counter()
        yield
        self.torch.cuda.synchronize()
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


class Peak:
    """Peak device memory in use (total - free, as the driver sees it) over the sample points."""

    def __init__(self, torch: Any) -> None:
        self.torch = torch
        self.used = 0
        self.where = ""
        torch.cuda.reset_peak_memory_stats()

    def sample(self, where: str) -> int:
        self.torch.cuda.synchronize()
        free, total = self.torch.cuda.mem_get_info()
        used = total - free
        if used > self.used:
            self.used, self.where = used, where
        return used

    @property
    def max_allocated(self) -> int:
        return int(self.torch.cuda.max_memory_allocated())


def gib(n: float) -> str:
    return f"{n / GIB:.2f} GiB"


# ---- the model ----------------------------------------------------------------------------


def build_model(torch: Any, config: Any, dtype: Any) -> Any:
    """LlamaForCausalLM with random weights, created directly on the current GPU in `dtype`."""
    from transformers import LlamaForCausalLM

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # what transformers does for from_config(dtype=...)
    try:
        with torch.device("cuda"):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    return model


def make_config(args: argparse.Namespace) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        max_position_embeddings=max(2048, args.window),
        tie_word_embeddings=False,
        use_cache=False,
    )


class Engine:
    """Weights, KV cache and a captured decode step, all in torch_memory_saver regions."""

    def __init__(self, torch: Any, tms: Any, config: Any, args: argparse.Namespace) -> None:
        self.torch, self.tms, self.args = torch, tms, args
        torch.manual_seed(args.seed)  # the same initial weights on every rank
        with tms.region("weights", enable_cpu_backup=True):
            self.model = build_model(torch, config, torch.bfloat16)
        self.model.eval().requires_grad_(False)
        self.params = dict(self.model.named_parameters())
        self.pointers = {name: p.data_ptr() for name, p in self.params.items()}
        self.n_params = sum(p.numel() for p in self.params.values())

        layers = list(self.model.model.layers)
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        kv_dim = config.num_key_value_heads * head_dim
        slot_bytes = len(layers) * 2 * kv_dim * 2
        slots = max(args.batch * args.window, int(args.kv_cache_gib * GIB) // slot_bytes)
        with tms.region("kv_cache"):
            self.kv_cache = torch.zeros(len(layers), 2, slots, kv_dim, dtype=torch.bfloat16, device="cuda")
        self.kv_pointer = self.kv_cache.data_ptr()
        self.hooks = []
        for index, layer in enumerate(layers):
            attention = layer.self_attn
            for which, projection in ((0, attention.k_proj), (1, attention.v_proj)):
                self.hooks.append(projection.register_forward_hook(self._kv_writer(index, which)))

        self.static_ids = torch.zeros(args.batch, args.window, dtype=torch.long, device="cuda")
        self.graph: Optional[Any] = None
        self.static_logits: Optional[Any] = None
        self.capture_error: Optional[str] = None

    def _kv_writer(self, layer: int, which: int) -> Callable:
        cache = self.kv_cache

        def hook(module: Any, inputs: Any, output: Any) -> None:
            flat = output.reshape(-1, output.shape[-1])
            cache[layer, which, : flat.shape[0]].copy_(flat)

        return hook

    def _forward_last(self) -> Any:
        return self.model(input_ids=self.static_ids, use_cache=False).logits[:, -1, :]

    def capture(self) -> None:
        torch = self.torch
        with torch.no_grad():
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # warm-up as torch.cuda.graph's docs ask
                for _ in range(2):
                    self._forward_last()
            torch.cuda.current_stream().wait_stream(side)
            torch.cuda.synchronize()
            graph = torch.cuda.CUDAGraph()
            try:
                # thread_local: only this thread captures; other threads (e.g. NCCL's watchdog) may query events.
                with self.tms.cuda_graph(graph, tag="cuda_graph", capture_error_mode="thread_local"):
                    self.static_logits = self._forward_last()
                self.graph = graph
            except Exception as error:  # reported; --allow-eager-fallback decides whether it fails the run
                self.capture_error = f"{type(error).__name__}: {error}"
                self.graph = None
                self.static_logits = None
                traceback.print_exc()
        torch.cuda.synchronize()

    def step_logits(self) -> Any:
        """Last-position logits of the current window (graph replay, or eager after a failed capture)."""
        if self.graph is not None:
            self.graph.replay()
            return self.static_logits
        with self.torch.no_grad():
            return self._forward_last()

    def generate(self, prompts: Any) -> Tuple[Any, Any]:
        """Greedy generation over the sliding window; returns (final windows, first-step logits)."""
        torch = self.torch
        self.static_ids.copy_(prompts)
        first = None
        for i in range(self.args.gen_tokens):
            logits = self.step_logits()
            if i == 0:
                first = logits.float().clone()
            next_ids = logits.argmax(dim=-1)
            self.static_ids.copy_(torch.cat([self.static_ids[:, 1:], next_ids[:, None]], dim=1))
        torch.cuda.synchronize()
        return self.static_ids.clone(), first

    def probe(self, prompts: Any) -> Any:
        """Logits of `prompts` (one decode step), as float."""
        self.static_ids.copy_(prompts)
        return self.step_logits().float().clone()

    def addresses_unchanged(self) -> bool:
        return (
            all(p.data_ptr() == self.pointers[name] for name, p in self.params.items())
            and self.kv_cache.data_ptr() == self.kv_pointer
        )


class Trainer:
    """The model under training. With --offload-trainer its parameters, DDP buckets (gradients) and
    optimizer states live in region tag ``trainer`` with CPU backup, paused while the engine generates
    (what slime/verl do with their trainers); activations stay in torch's default pool."""

    def __init__(
        self, torch: Any, tms: Any, config: Any, engine: Engine, args: argparse.Namespace, distributed: bool
    ) -> None:
        self.torch, self.tms, self.args = torch, tms, args
        self.offload = bool(args.offload_trainer)
        with self.region():
            self.model = build_model(torch, config, torch.bfloat16)
            self.model.load_state_dict(engine.model.state_dict())
            self.model.train()
            if distributed:
                from torch.nn.parallel import DistributedDataParallel

                self.module = DistributedDataParallel(
                    self.model, device_ids=[torch.cuda.current_device()], gradient_as_bucket_view=True
                )
            else:
                self.module = self.model
        self.params = dict(self.model.named_parameters())
        if set(self.params) != set(engine.params):
            raise RuntimeError("engine and trainer parameter names differ")
        # foreach=False keeps the step's temporaries per parameter (small blocks in the trainer's pool).
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=args.lr, weight_decay=0.0, foreach=False if self.offload else None
        )
        rank = int(os.environ.get("RANK", "0"))
        self.rewards = torch.Generator(device="cuda").manual_seed(10_000 + rank)

    def region(self) -> Any:
        """The trainer's region with --offload-trainer, else a no-op context."""
        if self.offload:
            return self.tms.region("trainer", enable_cpu_backup=True)
        from contextlib import nullcontext

        return nullcontext()

    def train(self, rollouts: Any) -> float:
        """REINFORCE-style steps on the rollouts with random rewards; returns the last loss."""
        torch = self.torch
        loss_value = 0.0
        for _ in range(self.args.train_iters):
            logits = self.module(input_ids=rollouts, use_cache=False).logits
            logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
            token_logp = logp.gather(-1, rollouts[:, 1:, None]).squeeze(-1)
            rewards = torch.randn(rollouts.shape[0], device="cuda", generator=self.rewards)
            advantages = rewards - rewards.mean()
            loss = -(advantages[:, None] * token_logp).mean()
            loss.backward()
            with self.region():  # optimizer states are created at the first step: in the trainer's region
                self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)  # no gradient outlives the step (nothing to back up)
            loss_value = float(loss)
            del logits, logp, token_logp, loss
        return loss_value

    def reference_logits(self, prompts: Any) -> Any:
        """Last-position logits of the trainer's current weights (plain forward, no DDP)."""
        torch = self.torch
        self.model.eval()
        with torch.no_grad():
            logits = self.model(input_ids=prompts, use_cache=False).logits[:, -1, :].float()
        self.model.train()
        return logits


def push_weights(torch: Any, engine: Engine, trainer: Trainer) -> None:
    with torch.no_grad():
        for name, param in engine.params.items():
            param.copy_(trainer.params[name])


def compare(new: Any, reference: Any, previous: Optional[Any]) -> Dict[str, float]:
    scale = float(reference.abs().max()) or 1.0
    out = {
        "vs_reference": float((new - reference).abs().max()) / scale,
        "argmax_agreement": float((new.argmax(-1) == reference.argmax(-1)).float().mean()),
    }
    if previous is not None:
        out["vs_previous"] = float((new - previous).abs().max()) / scale
    return out


# ---- the loop ----------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    import torch
    import torch.distributed as dist

    import torch_memory_saver as tms_package
    from torch_memory_saver import torch_memory_saver as tms

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    distributed = world > 1
    torch.cuda.set_device(local)
    if distributed:
        from datetime import timedelta

        dist.init_process_group("nccl", device_id=torch.device("cuda", local), timeout=timedelta(seconds=600))

    def say(message: str) -> None:
        print(f"[rank {rank} cuda:{local}] {message}", flush=True)

    tms.hook_mode = args.hook_mode
    if not tms.enabled:
        say(
            f"torch_memory_saver hook_mode={args.hook_mode} cannot work in this process (see the library's error)"
        )
        with tms.region("probe"):  # raises the library's ConfigError, which says what to do
            pass
        return 2

    import transformers

    failures: List[str] = []

    def check(name: str, ok: bool, detail: Any = "") -> None:
        if not ok:
            failures.append(f"{name}: {detail}")
            say(f"CHECK FAILED {name}: {detail}")

    config = make_config(args)
    clock = Clock(torch)
    with clock("build"):
        engine = Engine(torch, tms, config, args)
    # Capture before the trainer exists: no DDP/NCCL work is in flight during the capture.
    with clock("capture"):
        engine.capture()
    with clock("build"):
        trainer = Trainer(torch, tms, config, engine, args, distributed)
    say(
        f"torch {torch.__version__}, transformers {transformers.__version__}, hook_mode={args.hook_mode}, "
        f"world_size={world}; model {engine.n_params / 1e9:.2f} B params "
        f"({args.layers} layers, hidden {args.hidden}, intermediate {args.intermediate}, vocab {args.vocab}), "
        f"KV cache {gib(engine.kv_cache.numel() * 2)}; built in {clock.seconds['build']:.1f} s"
    )
    if engine.capture_error:
        say(f"decode graph capture FAILED ({engine.capture_error}); decoding eagerly")
        if not args.allow_eager_fallback:
            check("decode graph captured", False, engine.capture_error)
    else:
        say(f"decode graph captured in {clock.seconds['capture']:.2f} s")

    prompt_gen = torch.Generator(device="cuda").manual_seed(args.seed * 1000 + rank)
    probe_prompts = torch.randint(
        0, args.vocab, (args.batch, args.window), device="cuda", generator=prompt_gen
    )

    # The engine and the trainer start with the same weights: the reference check itself must hold.
    initial = compare(engine.probe(probe_prompts), trainer.reference_logits(probe_prompts), None)
    say(f"engine vs trainer before training: {initial}")
    check("engine equals trainer before training", initial["vs_reference"] < 2e-2, initial)
    previous_probe = engine.probe(probe_prompts)

    def new_prompts() -> Any:
        return torch.randint(0, args.vocab, (args.batch, args.window), device="cuda", generator=prompt_gen)

    phases: Dict[str, Dict[str, Any]] = {}

    # ---- baseline: engine resident (what happens without the library) ----
    if args.baseline_steps > 0:
        peak = Peak(torch)
        steps = []
        for step in range(1, args.baseline_steps + 1):
            clock = Clock(torch)
            with clock("generate"):
                rollouts, _ = engine.generate(new_prompts())
            peak.sample("after generate")
            with clock("train"):
                loss = trainer.train(rollouts)
            peak.sample("after train (engine resident)")
            torch.cuda.empty_cache()
            with clock("update_copy"):
                push_weights(torch, engine, trainer)
            probe = engine.probe(probe_prompts)
            result = compare(probe, trainer.reference_logits(probe_prompts), previous_probe)
            previous_probe = probe
            check(f"baseline step {step}: engine uses the new weights", result["vs_reference"] < 2e-2, result)
            steps.append({"step": step, "seconds": clock.seconds, "loss": loss, "logits": result})
            say(f"baseline step {step}: " + ", ".join(f"{k} {v:.3f} s" for k, v in clock.seconds.items()))
        phases["without_library"] = {
            "peak_used_bytes": peak.used,
            "peak_at": peak.where,
            "max_allocated_bytes": peak.max_allocated,
            "steps": steps,
        }

    # ---- with the library: pause the engine while training ----
    peak = Peak(torch)
    steps = []
    for step in range(1, args.steps + 1):
        clock = Clock(torch)
        if trainer.offload:
            with clock("trainer_pause"):
                tms.pause("trainer")
        with clock("generate"):
            rollouts, _ = engine.generate(new_prompts())
        peak.sample("after generate")

        torch.cuda.synchronize()
        if distributed:
            dist.barrier()
        before = {s.tag: s for s in tms_package.stats() if s.tag in ENGINE_TAGS and s.device == local}
        region_bytes = sum(s.active_bytes for s in before.values())
        free_before = torch.cuda.mem_get_info()[0]
        for tag in ENGINE_TAGS:
            with clock(f"pause_{tag}"):
                tms.pause(tag)
        freed = torch.cuda.mem_get_info()[0] - free_before
        paused = {s.tag: s for s in tms_package.stats() if s.tag in ENGINE_TAGS and s.device == local}
        check(
            f"step {step}: pause released >= 90% of the engine",
            freed >= 0.9 * region_bytes,
            (freed, region_bytes),
        )
        check(
            f"step {step}: stats say every engine tag is paused",
            all(
                paused[t].active_bytes == 0 and paused[t].paused_bytes > 0 for t in ENGINE_TAGS if t in paused
            ),
            paused,
        )
        if step == 1:
            for tag in ENGINE_TAGS:
                s = paused.get(tag)
                if s is not None:
                    say(
                        f"stats after pause: tag={tag} device={s.device} allocations={s.allocations} "
                        f"paused={gib(s.paused_bytes)} backup={gib(s.backup_bytes)} "
                        f"last_pause={s.last_pause_seconds * 1e3:.1f} ms"
                    )
        peak.sample("after pause")
        if trainer.offload:
            with clock("trainer_resume"):
                tms.resume("trainer")

        with clock("train"):
            loss = trainer.train(rollouts)
        peak.sample("after train (engine paused)")
        torch.cuda.empty_cache()  # the trainer's cached activations go back before the engine returns

        with clock("update_resume_weights"):
            tms.resume("weights")
        with clock("update_copy"):
            push_weights(torch, engine, trainer)
        with clock("resume_kv_cache"):
            tms.resume("kv_cache")
        with clock("resume_cuda_graph"):
            tms.resume("cuda_graph")
        peak.sample("after resume")
        check(f"step {step}: engine addresses unchanged", engine.addresses_unchanged())
        exact = all(torch.equal(p, trainer.params[name]) for name, p in engine.params.items())
        check(f"step {step}: engine weights equal the trainer's", exact)

        with clock("check"):
            probe = engine.probe(probe_prompts)
            reference = trainer.reference_logits(probe_prompts)
        result = compare(probe, reference, previous_probe)
        previous_probe = probe
        check(
            f"step {step}: engine logits equal the trainer's forward", result["vs_reference"] < 2e-2, result
        )
        check(
            f"step {step}: engine logits changed with the update",
            result["vs_previous"] > max(1e-3, 10 * result["vs_reference"]),
            result,
        )
        seconds = clock.seconds
        pause_total = sum(v for k, v in seconds.items() if k.startswith("pause_"))
        resume_total = seconds["resume_kv_cache"] + seconds["resume_cuda_graph"]
        update_total = seconds["update_resume_weights"] + seconds["update_copy"]
        steps.append(
            {
                "step": step,
                "seconds": seconds,
                "pause_seconds": pause_total,
                "resume_seconds": resume_total,
                "weight_update_seconds": update_total,
                "trainer_pause_seconds": seconds.get("trainer_pause"),
                "trainer_resume_seconds": seconds.get("trainer_resume"),
                "freed_bytes": freed,
                "engine_region_bytes": region_bytes,
                "loss": loss,
                "logits": result,
            }
        )
        say(
            f"step {step}: generate {seconds['generate']:.3f} s | pause {pause_total * 1e3:.1f} ms "
            f"(kv_cache {seconds['pause_kv_cache'] * 1e3:.1f}, weights {seconds['pause_weights'] * 1e3:.1f}, "
            f"cuda_graph {seconds['pause_cuda_graph'] * 1e3:.1f}) freed {gib(freed)} | train {seconds['train']:.3f} s "
            f"(loss {loss:.4f}) | weight update {update_total * 1e3:.1f} ms (resume weights "
            f"{seconds['update_resume_weights'] * 1e3:.1f} + copy {seconds['update_copy'] * 1e3:.1f}) | resume "
            f"{resume_total * 1e3:.1f} ms (kv_cache {seconds['resume_kv_cache'] * 1e3:.1f}, cuda_graph "
            f"{seconds['resume_cuda_graph'] * 1e3:.1f}) | logits vs trainer {result['vs_reference']:.2e}, "
            f"vs before update {result['vs_previous']:.2e}"
            + (
                f" | trainer pause {seconds['trainer_pause'] * 1e3:.1f} ms, resume "
                f"{seconds['trainer_resume'] * 1e3:.1f} ms"
                if trainer.offload
                else ""
            )
        )
    phases["with_library"] = {
        "peak_used_bytes": peak.used,
        "peak_at": peak.where,
        "max_allocated_bytes": peak.max_allocated,
        "steps": steps,
    }

    if distributed:  # DDP kept the trainers identical
        sums = torch.stack([p.detach().float().sum() for p in trainer.params.values()])
        gathered = torch.empty(world, sums.numel(), device="cuda")
        dist.all_gather_into_tensor(gathered, sums)
        check("trainer weights identical on every rank", bool((gathered == sums).all()))

    summary = {
        "rank": rank,
        "device": local,
        "device_name": torch.cuda.get_device_name(local),
        "world_size": world,
        "hook_mode": args.hook_mode,
        "offload_trainer": trainer.offload,
        "params": engine.n_params,
        "graph_captured": engine.graph is not None,
        "capture_error": engine.capture_error,
        "phases": phases,
        "failures": failures,
    }
    summaries = [summary]
    if distributed:
        summaries = [None] * world
        dist.all_gather_object(summaries, summary)
    if rank == 0:
        print_summary(summaries)
        if args.json:
            with open(args.json, "w", encoding="utf-8") as out:
                json.dump({"args": vars(args), "ranks": summaries}, out, indent=2, default=str)
    all_failures = [f for s in summaries for f in s["failures"]]
    for hook in engine.hooks:
        hook.remove()
    engine.graph = None
    if distributed:
        dist.barrier()
        dist.destroy_process_group()
    if rank == 0:
        print("E2E OK" if not all_failures else f"E2E FAILED: {len(all_failures)} failed checks", flush=True)
    return 0 if not all_failures else 1


def print_summary(summaries: List[Dict[str, Any]]) -> None:
    print("\n=== per-rank summary (averages over the steps with the library) ===")
    print(
        f"{'rank':>4} {'dev':>3} {'pause ms':>9} {'resume ms':>10} {'update ms':>10} {'train s':>8} "
        f"{'freed GiB':>10} {'peak w/o lib':>13} {'peak w/ lib':>12} {'saved':>10}"
    )
    for s in summaries:
        lib = s["phases"].get("with_library", {})
        steps = lib.get("steps", [])
        if not steps:
            continue

        def avg(key: str) -> float:
            return sum(step[key] for step in steps) / len(steps)

        train = sum(step["seconds"]["train"] for step in steps) / len(steps)
        base = s["phases"].get("without_library", {}).get("peak_used_bytes")
        peak = lib.get("peak_used_bytes", 0)
        print(
            f"{s['rank']:>4} {s['device']:>3} {avg('pause_seconds') * 1e3:>9.1f} {avg('resume_seconds') * 1e3:>10.1f} "
            f"{avg('weight_update_seconds') * 1e3:>10.1f} {train:>8.3f} {avg('freed_bytes') / GIB:>10.2f} "
            f"{(base or 0) / GIB:>13.2f} {peak / GIB:>12.2f} {((base or peak) - peak) / GIB:>10.2f}"
        )
    s0 = summaries[0]
    lib_allocated = s0["phases"].get("with_library", {}).get("max_allocated_bytes", 0)
    print(
        f"device {s0['device_name']}, {s0['params'] / 1e9:.2f} B params, hook_mode={s0['hook_mode']}, "
        f"decode graph captured: {s0['graph_captured']}. Peaks are device memory in use (total - free) at the "
        f"sample points; torch.cuda.max_memory_allocated counts paused region tensors as allocated, so it does "
        f"not show the saving (with: {lib_allocated / GIB:.2f} GiB)."
    )


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    ensure_preload(args)
    try:
        return run(args)
    except BaseException:
        traceback.print_exc()
        sys.stdout.flush()
        os._exit(1)  # peers may be stuck in a collective: do not wait for them


if __name__ == "__main__":
    sys.exit(main())
