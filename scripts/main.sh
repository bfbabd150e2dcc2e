#!/usr/bin/env bash
# The main job: installs what it needs, then analyses every bundled lab run in captures/ and writes
# its path-compliance reports to out/<run>/ (HTML, Markdown, JSON, JUnit, SARIF). Extra arguments: runs to do.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
COMMPATH_EXTRAS=test bash scripts/setup.sh
runs=("$@")
if [ ${#runs[@]} -eq 0 ]; then
  for d in captures/*/; do [ -f "$d/inventory.yaml" ] && runs+=("$(basename "$d")"); done
fi
status=0
for run in "${runs[@]}"; do
  dir="captures/$run"
  out="out/$run"
  mkdir -p "$out"
  args=("$dir" --inventory "$dir/inventory.yaml" --out "$out")
  [ -f "$dir/pki/ca.crt" ] && args+=(--ca "$dir/pki/ca.crt")
  [ -f "$dir/keylog.txt" ] && args+=(--keylog "$dir/keylog.txt")
  echo "== $run"
  set +e
  .venv/bin/commpath analyze "${args[@]}"
  rc=$?
  set -e
  if [ $rc -eq 2 ]; then status=2; continue; fi
  rargs=("$dir" --inventory "$dir/inventory.yaml" -o "$out/report" --format html --format md --format json --format junit
         --format sarif)
  [ -f "$dir/pki/ca.crt" ] && rargs+=(--ca "$dir/pki/ca.crt")
  [ -f "$dir/keylog.txt" ] && rargs+=(--keylog "$dir/keylog.txt")
  # 1: findings at or above --fail-on; 3: inconclusive (the evidence cannot support a pass)
  .venv/bin/commpath report "${rargs[@]}" || { rc=$?; [ $rc -eq 1 ] || [ $rc -eq 3 ]; }
done
exit $status
