// Package replicas tests the dispatcher as several gateway replicas run it:
// two or more dispatchers (dispatch.NewDispatcher), each with its own Redis
// client and its own PostgreSQL pool, over one Redis (rate limits, quotas,
// spend caps, payment idempotency records, the local facilitator's nonces)
// and one PostgreSQL (ledger, audit chain, usage events), wired as
// examples/httpserver wires them.
//
// The tests check that limits stay exact across replicas, that one payment
// sent to several replicas at once settles once, that the audit chain
// verifies afterwards, and how the gateway fails when Redis or PostgreSQL
// goes away: closed, with a clear error, and recovering when the service is
// back. Services are cut with TCP proxies the tests start and stop, never by
// restarting the shared servers.
//
// The tests need TEST_REDIS_URL and TEST_DATABASE_URL; without them they
// skip, except under CI=true, where they fail. Each test uses a fresh Redis
// key prefix and a fresh PostgreSQL schema, dropped afterwards.
//
// The benchmarks measure a paid request end to end through one and two
// replicas and count its Redis round trips:
//
//	go test -run XXX -bench . -benchtime 2000x ./e2e/replicas/
package replicas
