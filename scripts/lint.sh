#!/usr/bin/env bash
# Lint and type checks of the Python package, python/torch_memory_saver:
#   ruff check (rules in pyproject.toml, [tool.ruff]) and mypy ([tool.mypy]).
# Neither needs torch (mypy types torch, transformers and matplotlib as Any).
# The tools are pinned, so that a new release cannot fail CI by itself, and
# installed from PyPI into a virtual environment (.venv-lint, or TMS_LINT_VENV).
# Usage: scripts/lint.sh
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${TMS_LINT_VENV:-$PWD/.venv-lint}
[[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check ruff==0.17.6 mypy==2.4.1

status=0
echo "== ruff check python/torch_memory_saver =="
"$venv/bin/ruff" check python/torch_memory_saver || status=1
echo "== mypy (python/torch_memory_saver) =="
"$venv/bin/mypy" || status=1
exit "$status"
