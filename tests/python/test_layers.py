"""scripts/check_layers.py: the engine's sources include only downwards, and
the check finds an include that goes up or a folder that has no layer."""

import subprocess
import sys

import pytest

from conftest import REPO

SCRIPT = REPO / "scripts" / "check_layers.py"

pytestmark = pytest.mark.skipif(
    not SCRIPT.is_file(), reason="scripts/check_layers.py is not beside these tests"
)


def check_layers(*args):
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60
    )


def write_tree(root, files):
    """Writes {relative path: text} under root/src and returns that src."""
    for name, text in files.items():
        path = root / "src" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "src"


def test_the_sources_include_only_downwards():
    result = check_layers(str(REPO / "src"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_a_downward_include_passes(tmp_path):
    src = write_tree(
        tmp_path,
        {
            "driver/driver.h": "#pragma once\n",
            "core/engine.h": '#pragma once\n#include "driver/driver.h"\n',
        },
    )
    result = check_layers(str(src))
    assert result.returncode == 0, result.stdout + result.stderr


def test_an_upward_include_fails_naming_the_line(tmp_path):
    src = write_tree(
        tmp_path,
        {
            "core/engine.h": "#pragma once\n",
            "driver/driver.cpp": '#include "driver/driver.h"\n#include "core/engine.h"\n',
            "driver/driver.h": "#pragma once\n",
        },
    )
    result = check_layers(str(src))
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "src/driver/driver.cpp:2: layer driver includes layer core (above it)"
    ]


def test_a_folder_without_a_layer_fails(tmp_path):
    src = write_tree(tmp_path, {"common/log.h": "#pragma once\n", "newthing/x.h": "#pragma once\n"})
    result = check_layers(str(src))
    assert result.returncode == 1
    assert result.stdout.startswith("src/newthing: directory is in no layer")


def test_the_standalone_forwarder_includes_no_layer(tmp_path):
    src = write_tree(
        tmp_path, {"common/log.h": "#pragma once\n", "forwarder/f.c": '#include "common/log.h"\n'}
    )
    result = check_layers(str(src))
    assert result.returncode == 1
    assert result.stdout.startswith("src/forwarder/f.c:1: layer forwarder includes common")
