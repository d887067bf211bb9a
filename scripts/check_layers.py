#!/usr/bin/env python3
"""Checks that the engine's layers include only downwards.

Every directory of src/ is a layer, and LAYERS below is their order, bottom
first: a file may include headers of its own layer and of the layers under
it, never of one above. That keeps each layer testable and replaceable with
only what is under it (the drivers without backup, the parking lot without
disk transfers, the engine without its configuration).

Prints each upward include as `file:line: layer X includes layer Y (above
it)` and exits 1 on any, or on a directory of src/ that is not placed here
(a new folder must be given its place). Includes that name no directory of
src/ (the public torch_memory_saver/tms.h, system headers) are not checked.

Usage: scripts/check_layers.py [SRC_DIR]   (default: the src/ beside scripts/)
"""

import re
import sys
from pathlib import Path

# Bottom to top: the one place the order is written (docs/architecture.md
# describes it).
LAYERS = ["common", "codec", "driver", "io", "vmm", "backup", "core", "config", "capi", "hooks"]

# Directories outside the engine: they include no other layer, and no layer
# includes them.
STANDALONE = ["forwarder"]

SOURCE_SUFFIXES = {".h", ".hpp", ".c", ".cc", ".cpp"}
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"/]+)/')


def check(src: Path) -> list[str]:
    """Every problem in the tree at `src`, one message each."""
    rank = {name: index for index, name in enumerate(LAYERS)}
    shown = src.parent
    problems = []
    directories = sorted(path for path in src.iterdir() if path.is_dir())
    for directory in directories:
        if directory.name not in rank and directory.name not in STANDALONE:
            problems.append(
                f"{directory.relative_to(shown)}: directory is in no layer; place it in "
                f"LAYERS (or STANDALONE) of scripts/check_layers.py"
            )
    for path in sorted(src.iterdir()):
        if path.is_file() and path.suffix in SOURCE_SUFFIXES:
            problems.append(f"{path.relative_to(shown)}: file is in no layer; move it into one")

    directory_names = {directory.name for directory in directories}
    for directory in directories:
        layer = directory.name
        for path in sorted(directory.rglob("*")):
            if not path.is_file() or path.suffix not in SOURCE_SUFFIXES:
                continue
            text = path.read_text(encoding="utf-8", errors="replace")
            for number, line in enumerate(text.splitlines(), start=1):
                match = INCLUDE.match(line)
                if match is None or match.group(1) not in directory_names:
                    continue
                included = match.group(1)
                if included == layer:
                    continue
                where = f"{path.relative_to(shown)}:{number}"
                if layer in STANDALONE or included in STANDALONE:
                    problems.append(
                        f"{where}: layer {layer} includes {included}; standalone directories "
                        f"include and are included by no other"
                    )
                elif included in rank and layer in rank and rank[included] > rank[layer]:
                    problems.append(f"{where}: layer {layer} includes layer {included} (above it)")
    return problems


def main(argv: list[str]) -> int:
    if len(argv) > 2:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    src = Path(argv[1]) if len(argv) == 2 else Path(__file__).resolve().parents[1] / "src"
    if not src.is_dir():
        print(f"{src}: not a directory", file=sys.stderr)
        return 2
    problems = check(src)
    for problem in problems:
        print(problem)
    if problems:
        print(f"{len(problems)} layering problem(s); order, bottom first: {' < '.join(LAYERS)}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
