#!/usr/bin/env bash
# The whole test suite: installs what it needs, then runs pytest (extra arguments go to pytest).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
COMMPATH_EXTRAS=test bash scripts/setup.sh
set +e
.venv/bin/python -m pytest -q -ra "$@"
rc=$?
set -e
if [ $rc -eq 5 ]; then echo "test.sh: pytest collected no tests"; fi
exit $rc
