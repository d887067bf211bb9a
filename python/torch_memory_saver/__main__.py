"""Command line: ``python -m torch_memory_saver ...``, or the ``torch-memory-saver ...`` console script.

``demo [--size-mb N] [--simulated] [--hook-mode MODE]``
``bench [--total-gib N] [--quick] [--parts ...] ...`` (see bench/README.md)
``clean-backups DIR`` (backup files of processes that no longer run)
``--version``

Both forms run :func:`main`; usage and help lines name the one the user typed.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import List, Optional

from . import demo
from ._version import __version__
from .errors import TorchMemorySaverError

# What a shell reports for a program that a closed pipe stopped (128 + SIGPIPE).
_EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE


def program_name(argv0: str) -> str:
    """How the user started the command line: ``torch-memory-saver`` or ``python -m torch_memory_saver``."""
    name = os.path.basename(argv0)
    return "python -m torch_memory_saver" if name in ("__main__.py", "-m", "") else name


def main(argv: Optional[List[str]] = None) -> int:
    """Run the command line; returns the exit status.

    A closed output pipe (``... demo | head -2``) ends it quietly with status
    141, as it would a C program killed by SIGPIPE, instead of a traceback.
    """
    try:
        return _run(sys.argv[1:] if argv is None else list(argv))
    except BrokenPipeError:
        # Python flushes stdout again at exit; point it at /dev/null so that
        # flush cannot fail and print "Exception ignored ..." either.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return _EXIT_BROKEN_PIPE


def _run(args_list: List[str]) -> int:
    if args_list[:1] == ["bench"]:
        # The benchmark has its own argument parser; hand it the rest.
        from .bench import main as bench_main

        return bench_main(args_list[1:], prog=f"{program_name(sys.argv[0])} bench")
    parser = argparse.ArgumentParser(prog=program_name(sys.argv[0]))
    parser.add_argument("--version", action="version", version=f"torch_memory_saver {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    demo_parser = commands.add_parser(
        "demo", help="pause and resume one region, printing device memory, timings and checks"
    )
    commands.add_parser("bench", help="pause/resume benchmark against the hardware floors (see bench/README.md)")
    clean_parser = commands.add_parser(
        "clean-backups", help="remove disk backup files that processes no longer running left in DIR"
    )
    clean_parser.add_argument("directory", help="the disk backup directory")
    demo_parser.add_argument(
        "--size-mb", type=int, default=None, help="region size in MiB (default 1024 on a GPU, 64 simulated)"
    )
    demo_parser.add_argument(
        "--simulated", action="store_true", help="use the simulated driver even when a GPU is available"
    )
    demo_parser.add_argument(
        "--hook-mode",
        choices=("torch", "preload"),
        default=None,
        help="hook mode on a GPU (default torch); preload restarts the demo with the library in LD_PRELOAD",
    )
    args = parser.parse_args(args_list)

    if args.command == "clean-backups":
        from .entrypoint import torch_memory_saver

        try:
            removed = torch_memory_saver.remove_orphaned_backups(args.directory)
        except TorchMemorySaverError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"removed {removed} orphaned backup file(s) from {args.directory}")
        return 0
    if args.size_mb is not None and args.size_mb <= 0:
        parser.error("--size-mb must be positive")
    try:
        ok = demo.run(args.size_mb, args.simulated, args.hook_mode)
    except TorchMemorySaverError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("demo passed" if ok else "demo FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
