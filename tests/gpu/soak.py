"""Long GPU soak: the `soak` scenario of scenarios.py with many cycles, in each hook mode.

    python tests/gpu/soak.py --cycles 1000                 # both hook modes, one after the other
    python tests/gpu/soak.py --cycles 1000 --hook-mode torch

Each mode runs in a fresh process (preload mode with the engine library in
LD_PRELOAD), like the GPU suite, which runs the same scenario with 200
cycles. The scenario's output is echoed as it comes (a progress line every
100 cycles); at the end each mode prints its SOAK line (device free memory
after pause and after resume, min/max and drift; host RSS first/last;
pause/resume times) and the script exits non-zero if a mode failed.
"""

import argparse
import subprocess
import sys
import time

from gpu_env import HOOK_MODES, SCENARIOS, scenario_env


def run_mode(mode, cycles):
    """Run the soak scenario in `mode`, echoing its output; returns (passed, SOAK lines)."""
    process = subprocess.Popen(
        [sys.executable, str(SCENARIOS), "soak", mode],
        env=scenario_env(mode, SOAK_CYCLES=str(cycles)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    )
    summary, ok = [], False
    assert process.stdout is not None
    for line in process.stdout:
        print(f"[{mode}] {line}", end="", flush=True)
        if line.startswith("SOAK "):
            summary.append(line.rstrip())
        ok = ok or line.strip() == "SCENARIO OK"
    return process.wait() == 0 and ok, summary


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, default=1000, help="pause/resume cycles per hook mode (default 1000)")
    parser.add_argument("--hook-mode", choices=(*HOOK_MODES, "both"), default="both")
    args = parser.parse_args(argv)
    if args.cycles < 1:
        parser.error("--cycles must be at least 1")

    results = []
    for mode in HOOK_MODES if args.hook_mode == "both" else (args.hook_mode,):
        started = time.perf_counter()
        ok, summary = run_mode(mode, args.cycles)
        results.append((mode, ok, time.perf_counter() - started, summary))
    print()
    for mode, ok, seconds, summary in results:
        print(f"[{mode}] {'PASSED' if ok else 'FAILED'} in {seconds:.1f} s")
        for line in summary:
            print(f"[{mode}] {line}")
    return 0 if all(ok for _, ok, _, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
