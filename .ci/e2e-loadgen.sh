#!/usr/bin/env bash
# End-to-end load, fault and soak check of the example server with the
# money invariants (examples/loadgen): 45 s on the SQLite default with
# worker and facilitator faults and one SIGKILL restart, 20 s of the
# hostile mix, 25 s of payment-channel payers with two SIGKILL restarts
# (plus a 7 s claim wait), then, when TEST_REDIS_URL is set, 20 s with the
# counters on Redis. About three minutes in all. Exits non-zero on any
# invariant breach.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
go build -o "$bin/httpserver" ./examples/httpserver
go build -o "$bin/loadgen" ./examples/loadgen

echo "-- loadgen: SQLite, faults, SIGKILL restart at 25s"
"$bin/loadgen" -server "$bin/httpserver" -duration 45s -concurrency 24 -kill-every 25s -strict-crash

echo "-- loadgen: hostile mix (rotating callers, trickled bodies, worker 402s, forged headers, far-future authorizations)"
"$bin/loadgen" -server "$bin/httpserver" -duration 20s -concurrency 16 -mix hostile -quiet

echo "-- loadgen: payment channels (deposits, concurrent vouchers, corrective 402s, refunds), SIGKILL restarts at 10s and 20s"
"$bin/loadgen" -server "$bin/httpserver" -duration 25s -concurrency 8 -mix channels -kill-every 10s -quiet

if [ -n "${TEST_REDIS_URL:-}" ]; then
  echo "-- loadgen: counters on Redis ($TEST_REDIS_URL)"
  "$bin/loadgen" -server "$bin/httpserver" -duration 20s -concurrency 24 -kv "$TEST_REDIS_URL"
fi
