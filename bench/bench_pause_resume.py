#!/usr/bin/env python3
"""Pause/resume benchmark of torch_memory_saver against the hardware floors.

The implementation is the package ``torch_memory_saver.bench``, so that
an installed copy can run it as ``python -m torch_memory_saver bench``; this
file runs the same thing from a source checkout:

    python bench/bench_pause_resume.py [--total-gib 8] [--layouts 1,16,256,4096] [--quick] [--parts ...] [--out DIR]

From a checkout without ``pip install .`` it imports the package from
``python/`` and, when ``TMS_LIBRARY_PATH`` is unset and the package directory
holds no engine library, uses ``build/libtorch_memory_saver.so``. See
bench/README.md for what each number means.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

_REPO = Path(__file__).resolve().parents[1]


def _use_checkout() -> None:
    try:
        package = importlib.import_module("torch_memory_saver")  # an installed package wins
    except ImportError:
        sys.path.insert(0, str(_REPO / "python"))
        package = importlib.import_module("torch_memory_saver")
    package_dir = Path(package.__file__).resolve().parent
    built = _REPO / "build" / "libtorch_memory_saver.so"
    if (not os.environ.get("TMS_LIBRARY_PATH") and not (package_dir / "libtorch_memory_saver.so").is_file()
            and built.is_file()):
        os.environ["TMS_LIBRARY_PATH"] = str(built)  # worker processes inherit it


def main() -> int:
    _use_checkout()
    from torch_memory_saver.bench import main as bench_main

    return bench_main(sys.argv[1:], prog=os.path.basename(sys.argv[0]))


if __name__ == "__main__":
    sys.exit(main())
