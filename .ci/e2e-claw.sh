#!/usr/bin/env bash
# End-to-end check of the claw CLI against the example server: deploy a
# small CSV as a paid API, pay for a row, see it in the leaderboard, look
# the payment up, verify the audit chain, remove the API and see its URL
# answer 404. Skips (exit 0, with a message) while the example server does
# not serve the admin API (/__platform/tenants); CLAW_E2E_STRICT=1 makes
# that a failure.
set -euo pipefail
cd "$(dirname "$0")/.."

tmp=$(mktemp -d)
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

port="${CLAW_E2E_PORT:-18473}"
base="http://127.0.0.1:$port"
token="claw-e2e-$RANDOM$RANDOM"

go build -o "$tmp/httpserver" ./examples/httpserver
go build -o "$tmp/claw" ./cmd/claw

"$tmp/httpserver" -addr "127.0.0.1:$port" -store "sqlite:$tmp/dispatcher.db" -admin-token "$token" >"$tmp/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 100); do
  if curl -fsS "$base/__platform/health" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$server_pid" 2>/dev/null; then echo "example server exited:"; cat "$tmp/server.log"; exit 1; fi
  sleep 0.2
done
curl -fsS "$base/__platform/health" >/dev/null

status=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" "$base/__platform/tenants")
if [ "$status" != "200" ]; then
  if [ "${CLAW_E2E_STRICT:-0}" = "1" ]; then
    echo "FAIL: the example server answers GET /__platform/tenants with $status (the admin API is not wired)"; exit 1
  fi
  echo "SKIP: the example server answers GET /__platform/tenants with $status: the admin API (ops.AdminHandler) is not wired into examples/httpserver yet"
  exit 0
fi

export CLAW_URL="$base" CLAW_TOKEN="$token"
claw() { "$tmp/claw" "$@"; }
fail() { echo "FAIL: $*"; echo "--- server log"; tail -n 50 "$tmp/server.log"; exit 1; }

printf 'id,name,country,population\n1,Tokyo,JP,37400068\n2,Delhi,IN,28514000\n3,Osaka,JP,19281000\n' >"$tmp/cities.csv"
slug="e2e-cities"

echo "-- claw deploy"
claw deploy "$tmp/cities.csv" --slug "$slug" --price 0.001 --directory data | tee "$tmp/out" || fail "deploy"
grep -q "deployed $slug: 3 rows" "$tmp/out" || fail "deploy output"

echo "-- unpaid request: 402"
code=$(curl -s -o /dev/null -w '%{http_code}' "$base/t/$slug/rows?country=JP")
[ "$code" = "402" ] || fail "unpaid request answered $code, want 402"

echo "-- claw pay"
claw pay "$base/t/$slug/rows?country=JP&limit=1" --agent e2e-agent | tee "$tmp/out" || fail "pay"
grep -q '"name":"Tokyo"' "$tmp/out" || fail "paid answer has no Tokyo row"
key=$(sed -n 's/^payment key: \([^ ]*\).*/\1/p' "$tmp/out")
[ -n "$key" ] || fail "no payment key printed"

echo "-- claw payments"
claw payments "$key" | tee "$tmp/out" || fail "payments"
grep -Eq 'status +settled' "$tmp/out" || fail "payment not settled"

echo "-- claw top"
found=""
for _ in $(seq 1 50); do
  if claw top --window today >"$tmp/out" 2>&1 && grep -Eq " $slug +data " "$tmp/out"; then found=1; break; fi
  sleep 0.2
done
cat "$tmp/out"
[ -n "$found" ] || fail "$slug never showed in claw top"

echo "-- claw tenants, verify"
claw tenants >"$tmp/out" || fail "tenants"
grep -q "^$slug " "$tmp/out" || fail "tenants does not list $slug"
claw verify || fail "verify"

echo "-- claw rm"
claw rm "$slug" || fail "rm"
code=$(curl -s -o /dev/null -w '%{http_code}' "$base/t/$slug/rows")
[ "$code" = "404" ] || fail "removed API answered $code, want 404"

echo "-- an owner's key: deploys its own API, cannot touch another's"
for u in alice bob; do
  curl -fsS -X POST -H "Authorization: Bearer $token" -d "{\"id\":\"e2e-$u\",\"name\":\"$u\"}" "$base/__platform/users" >/dev/null \
    || fail "creating user $u"
done
alice=$(curl -fsS -X POST -H "Authorization: Bearer $token" "$base/__platform/users/e2e-alice/keys" | sed -n 's/.*"key":"\([^"]*\)".*/\1/p')
bob=$(curl -fsS -X POST -H "Authorization: Bearer $token" "$base/__platform/users/e2e-bob/keys" | sed -n 's/.*"key":"\([^"]*\)".*/\1/p')
[ -n "$alice" ] && [ -n "$bob" ] || fail "no owner keys"
CLAW_TOKEN="$alice" claw deploy "$tmp/cities.csv" --slug e2e-alice-cities >/dev/null || fail "owner deploy"
claw tenants >"$tmp/out"
grep -Eq "^e2e-alice-cities +csv:e2e-alice-cities +.* e2e-alice " "$tmp/out" || fail "owner's tenant not owned by alice"
set +e
CLAW_TOKEN="$bob" claw rm e2e-alice-cities 2>"$tmp/err"; rc=$?
set -e
[ $rc -eq 1 ] && grep -q "403 forbidden" "$tmp/err" || fail "bob removed alice's API (exit $rc)"
CLAW_TOKEN="$alice" claw rm e2e-alice-cities >/dev/null || fail "owner rm"

echo "-- bad usage exits 2, a refused change exits 1"
set +e
claw deploy >/dev/null 2>&1; [ $? -eq 2 ] || fail "usage error did not exit 2"
CLAW_TOKEN=wrong claw tenants >/dev/null 2>&1; [ $? -eq 1 ] || fail "refused token did not exit 1"
set -e
echo "e2e-claw: OK"
