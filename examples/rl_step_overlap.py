#!/usr/bin/env python3
"""How much of a trainer's restore a non-blocking resume hides behind its forward and backward.

An RL step on a shared GPU: the inference engine has the GPU while the
trainer is paused, then the trainer comes back and trains. The trainer's
state is in two tags with CPU backups: ``params`` (what the forward needs)
and ``opt`` (AdamW's two moments, needed only at ``optimizer.step()``).

- blocking:      resume("params"); resume("opt"); forward; backward; step
- non-blocking:  resume("params"); resume("opt", non_blocking=True);
                 forward; backward; wait("opt", stream=current); step

Both run the same steps from the same initial state, so their parameters
must end equal bit for bit. Prints the median step time of each, the
blocking restore of ``opt`` alone, and the share of it that was hidden:
(blocking step - non-blocking step) / restore of opt.

    python examples/rl_step_overlap.py                 # ~1 GiB params, ~2 GiB opt
    python examples/rl_step_overlap.py --hidden 4096 --layers 4 --steps 3   # quick
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from torch_memory_saver import torch_memory_saver as tms

GIB = 2**30


def build(tag: str, hidden: int, layers: int, seed: int):
    """A stack of linear layers and its AdamW, params in tag_params and the moments in tag_opt."""
    torch.manual_seed(seed)
    with tms.region(f"{tag}_params", enable_cpu_backup=True):
        model = torch.nn.Sequential(*[torch.nn.Linear(hidden, hidden, bias=False) for _ in range(layers)]).cuda()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=False)
    # AdamW makes its moments at the first step: make them inside the region.
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    with tms.region(f"{tag}_opt", enable_cpu_backup=True):
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return model, optimizer


def step(tag, model, optimizer, batch, non_blocking: bool, busy: torch.Tensor) -> float:
    """One trainer turn after the engine's; returns its seconds (resume to the end of the step)."""
    tms.pause(f"{tag}_params")
    tms.pause(f"{tag}_opt")
    for _ in range(4):  # the inference engine's turn
        busy.mul_(1.0001)
    torch.cuda.synchronize()
    start = time.perf_counter()
    tms.resume(f"{tag}_params")
    tms.resume(f"{tag}_opt", non_blocking=non_blocking)
    loss = model(batch).float().pow(2).mean()
    loss.backward()
    if non_blocking:
        tms.wait(f"{tag}_opt", stream=torch.cuda.current_stream())
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    return time.perf_counter() - start


def restore_seconds(tag: str) -> float:
    tms.pause(f"{tag}_opt")
    torch.cuda.synchronize()
    start = time.perf_counter()
    tms.resume(f"{tag}_opt")
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hidden", type=int, default=8192)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=16384, help="rows of the batch")
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args()
    tms.hook_mode = "torch"  # no LD_PRELOAD needed

    models = {name: build(name, args.hidden, args.layers, seed=1) for name in ("blocking", "overlap")}
    params_bytes = sum(p.numel() * p.element_size() for p in models["blocking"][0].parameters())
    batch = torch.randn(args.tokens, args.hidden, device="cuda", generator=torch.Generator("cuda").manual_seed(2))
    busy = torch.ones(256 * 2**20 // 4, device="cuda")
    times = {name: [] for name in models}
    for _ in range(args.steps):
        for name, (model, optimizer) in models.items():  # alternating, so both see the same machine
            times[name].append(step(name, model, optimizer, batch, name == "overlap", busy))
    restore = statistics.median(restore_seconds("blocking") for _ in range(3))

    equal = all(
        torch.equal(a, b) for a, b in zip(models["blocking"][0].parameters(), models["overlap"][0].parameters())
    )
    blocking = statistics.median(times["blocking"][1:] or times["blocking"])
    overlap = statistics.median(times["overlap"][1:] or times["overlap"])
    hidden = (blocking - overlap) / restore if restore > 0 else float("nan")
    print(f"params {params_bytes / GIB:.2f} GiB, optimizer state {2 * params_bytes / GIB:.2f} GiB, "
          f"{args.steps} steps (median of steps 2..)")
    print(f"step, blocking resumes:      {blocking * 1e3:8.1f} ms  (first {times['blocking'][0] * 1e3:.1f})")
    print(f"step, opt non-blocking:      {overlap * 1e3:8.1f} ms  (first {times['overlap'][0] * 1e3:.1f})")
    print(f"restore of opt alone:        {restore * 1e3:8.1f} ms")
    print(f"hidden share of that restore: {hidden:.0%}")
    print(f"parameters equal bit for bit: {'yes' if equal else 'NO'}")
    tms.wait()
    return 0 if equal else 1


if __name__ == "__main__":
    raise SystemExit(main())
