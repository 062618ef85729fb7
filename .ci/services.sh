#!/usr/bin/env bash
# Makes sure the services the tests talk to are up: Redis on 127.0.0.1:6379
# and PostgreSQL on 127.0.0.1:5432. A service that already answers is left
# alone; one that does not is started, then waited for. Safe to run any
# number of times. It exports nothing: .ci/run sets TEST_REDIS_URL and
# TEST_DATABASE_URL. Exits non-zero, saying why, when a service cannot be
# brought up.
set -uo pipefail

WAIT_SECONDS="${SERVICES_WAIT_SECONDS:-30}"

say() { echo "services: $*" >&2; }
die() { say "ERROR: $*"; exit 1; }

redis_up() { [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = "PONG" ]; }
postgres_up() { pg_isready -q -h 127.0.0.1 -p 5432; }

# wait_for NAME CHECK: polls CHECK every 0.2s for up to WAIT_SECONDS.
wait_for() {
	local name=$1 check=$2 deadline=$((SECONDS + WAIT_SECONDS))
	until "$check"; do
		if [ "$SECONDS" -ge "$deadline" ]; then
			return 1
		fi
		sleep 0.2
	done
	say "$name is up"
}

ensure_redis() {
	command -v redis-cli >/dev/null || die "redis-cli not found; install the redis-server and redis-tools packages"
	if redis_up; then
		say "Redis already answers on 127.0.0.1:6379"
		return
	fi
	command -v redis-server >/dev/null || die "redis-server not found; install the redis-server package"
	say "Redis does not answer on 127.0.0.1:6379; starting it"
	mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
	local out
	if ! out=$(redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log 2>&1); then
		die "redis-server failed to start: ${out:-no output}; see /var/log/redis/ci.log"
	fi
	wait_for Redis redis_up ||
		die "Redis was started but does not answer on 127.0.0.1:6379 after ${WAIT_SECONDS}s; last log lines: $(tail -n 5 /var/log/redis/ci.log 2>/dev/null | tr '\n' ' ')"
}

ensure_postgres() {
	command -v pg_isready >/dev/null || die "pg_isready not found; install the postgresql-client package"
	if postgres_up; then
		say "PostgreSQL already answers on 127.0.0.1:5432"
		return
	fi
	command -v pg_ctlcluster >/dev/null || die "pg_ctlcluster not found; install the postgresql package"
	[ -n "$(ls /etc/postgresql 2>/dev/null)" ] || die "no PostgreSQL cluster configured under /etc/postgresql"
	say "PostgreSQL does not answer on 127.0.0.1:5432; starting it"
	local out status=0
	# "Already running" (exit 2) is not fatal by itself: the server may be
	# starting up or recovering; the wait below decides.
	out=$(pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start 2>&1) || status=$?
	if [ "$status" -ne 0 ]; then
		say "pg_ctlcluster exited with $status: ${out:-no output}"
	fi
	wait_for PostgreSQL postgres_up ||
		die "PostgreSQL does not answer on 127.0.0.1:5432 after ${WAIT_SECONDS}s (pg_ctlcluster: ${out:-no output})"
}

ensure_redis
ensure_postgres
