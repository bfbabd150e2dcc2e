#!/usr/bin/env bash
# The whole test suite: installs what it needs, then runs pytest (extra arguments go to pytest).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
COMMPATH_EXTRAS=test bash scripts/setup.sh
# the real-cluster lab's Kubernetes build (long when cold) runs beside the other tests; its test waits for it
if [ "$(id -u)" = 0 ] && command -v containerd >/dev/null; then
  setsid nice -n 15 .venv/bin/python -m commpath.lab.real._build > "${TMPDIR:-/tmp}/commpath-k8s-build.log" 2>&1 &
  build_pid=$!
  trap 'kill -- -"$build_pid" 2>/dev/null || true' EXIT   # its own process group: go build and compilers too
fi
set +e
.venv/bin/python -m pytest -q -ra "$@"
rc=$?
set -e
if [ $rc -eq 5 ]; then echo "test.sh: pytest collected no tests"; fi
exit $rc
