#!/usr/bin/env bash
# End-to-end test: the real x402 npm clients (@x402/fetch + @x402/evm for v2,
# the legacy x402-fetch for v1) pay examples/httpserver. Needs Go, Node >= 20
# and npm with the npm registry reachable; installs nothing globally.
# Usage (from anywhere): bash e2e/x402client/run.sh
set -euo pipefail
cd "$(dirname "$0")"

# Exact versions from package-lock.json. Install scripts are skipped: the
# only ones in the tree build optional native speed-ups (keccak, bufferutil,
# utf-8-validate) that have pure-JS fallbacks.
npm ci --no-audit --no-fund --ignore-scripts

out="$(mktemp)"
trap 'rm -f "$out"' EXIT
status=0
node --test --test-reporter=tap x402client.test.mjs 2>&1 | tee "$out" || status=$?

pass=$(sed -n 's/^# pass \([0-9][0-9]*\)$/\1/p' "$out" | tail -n1)
fail=$(sed -n 's/^# fail \([0-9][0-9]*\)$/\1/p' "$out" | tail -n1)
cancelled=$(sed -n 's/^# cancelled \([0-9][0-9]*\)$/\1/p' "$out" | tail -n1)
pass=${pass:-0}
fail=$(( ${fail:-0} + ${cancelled:-0} )) # tests cancelled by a failed setup count as failed
if [ "$status" -eq 0 ] && { [ "$fail" -ne 0 ] || [ "$pass" -eq 0 ]; }; then
  status=1
fi
if [ "$status" -ne 0 ] && [ "$fail" -eq 0 ]; then
  fail=1 # the runner itself failed (e.g. the server did not build)
fi
echo "x402client: $pass passed, $fail failed"
exit "$status"
