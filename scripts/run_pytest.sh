#!/usr/bin/env bash
# Runs pytest with the given Python and arguments; an exit status of 5
# (pytest collected no test: wrong path, or the package under test did not
# import) is a failure with a message, never a silent pass.
# Usage: scripts/run_pytest.sh PYTHON [pytest arguments...]
set -uo pipefail
python=$1
shift
if ! "$python" -m pytest --version >/dev/null 2>&1; then
  echo "pytest is not installed for $python: $python -m pip install pytest" >&2
  exit 1
fi
"$python" -m pytest "$@"
status=$?
if ((status == 5)); then
  echo "pytest collected no tests from: $*" >&2
  exit 1
fi
exit "$status"
