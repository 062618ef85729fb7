package replicas_test

import (
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	goredis "github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/ledger"
)

func redisAddr(t testing.TB) string {
	o, err := goredis.ParseURL(serviceURL(t, "TEST_REDIS_URL"))
	require.NoError(t, err)
	return o.Addr
}

func pgAddr(t testing.TB) string {
	cfg, err := pgxpool.ParseConfig(serviceURL(t, "TEST_DATABASE_URL"))
	require.NoError(t, err)
	return net.JoinHostPort(cfg.ConnConfig.Host, strconv.Itoa(int(cfg.ConnConfig.Port)))
}

// TestRedisOutageFailsClosedAndRecovers: with Redis gone (the proxy between
// both replicas and Redis stopped), free and paid requests fail with an
// error, none is served, none reaches the worker and nothing is settled;
// once Redis is back, requests are served again and the quota is still
// exact: the outage consumed none of it, and the payments refused during
// the outage settle when retried, once each.
func TestRedisOutageFailsClosedAndRecovers(t *testing.T) {
	t.Parallel()
	p := startProxy(t, redisAddr(t))
	c := newCluster(t, clusterConfig{redisAddr: p.addr, dailyRequests: 10})
	const paidPath = "/t/paid/rows"
	pays := c.signPayments(t, "paid", paidPath, 5)

	for i := range 3 {
		require.Equal(t, http.StatusOK, c.do(i, "/t/quota/rows", "").status)
	}
	require.Equal(t, http.StatusOK, c.do(0, paidPath, pays[0]).status)
	workerCalls, settles := c.workerCalls.Load(), c.settles.Load()

	p.Stop()
	codes := map[string]int{}
	for i := range 20 {
		r := c.do(i, "/t/quota/rows", "")
		require.GreaterOrEqual(t, r.status, 500, "a request must fail closed while Redis is away: %d %s", r.status, r.body)
		codes[fmt.Sprintf("%d %s", r.status, r.code)]++
		if i == 0 {
			t.Logf("first answer while Redis was away: %d %s", r.status, r.body)
		}
	}
	for i, pay := range pays[1:] {
		r := c.do(i, paidPath, pay)
		require.GreaterOrEqual(t, r.status, 500, "%d %s", r.status, r.body)
		require.Empty(t, r.header.Get("PAYMENT-RESPONSE"), "nothing was settled")
		codes[fmt.Sprintf("%d %s (paid)", r.status, r.code)]++
	}
	t.Logf("answers while Redis was away: %v", codes)
	require.Equal(t, workerCalls, c.workerCalls.Load(), "no request reached the worker unmetered")
	require.Equal(t, settles, c.settles.Load(), "nothing was settled")

	p.Start(t)
	served := 3
	require.Eventually(t, func() bool {
		r := c.do(0, "/t/quota/rows", "")
		if r.status == http.StatusOK {
			served++
		}
		return r.status == http.StatusOK
	}, 10*time.Second, 50*time.Millisecond, "requests are served again once Redis is back")
	rs := c.fire(40, func(int) (string, string) { return "/t/quota/rows", "" })
	got := count(rs)
	require.Equal(t, 10, served+got["200"], "the quota is exact across the outage: %v", got)
	require.Equal(t, 40-(10-served), got["429 usage_quota_exceeded"])

	// The payments refused during the outage were never consumed: each
	// settles now, once.
	for i, pay := range pays[1:] {
		r := c.do(i, paidPath, pay)
		require.Equal(t, http.StatusOK, r.status, r.body)
		require.False(t, r.deduped)
	}
	require.Equal(t, map[ledger.Status]int{ledger.StatusSettled: 5}, c.entries(t, "paid"))
	require.EqualValues(t, 5, c.settles.Load())
	c.verifyChain(t)
}

// TestPostgresOutageBeforeSettlement: with PostgreSQL unreachable, a paid
// request is refused with 503 store_unavailable before anything is
// consumed: no verify-and-settle, no worker call, no spend hold, no
// idempotency record. Once PostgreSQL is back the same payments settle, the
// spend cap is still exact, and nothing half-written remains.
func TestPostgresOutageBeforeSettlement(t *testing.T) {
	t.Parallel()
	p := startProxy(t, pgAddr(t))
	c := newCluster(t, clusterConfig{pgAddr: p.addr, dailySpendUSD: "0.05"})
	const path = "/t/capped/rows"
	pays := c.signPayments(t, "capped", path, 6)
	require.Equal(t, http.StatusOK, c.do(0, path, pays[0]).status)

	p.Stop()
	for i, pay := range pays[1:5] {
		r := c.do(i, path, pay)
		require.Equal(t, http.StatusServiceUnavailable, r.status, r.body)
		require.Equal(t, "store_unavailable", r.code)
		require.Empty(t, r.header.Get("PAYMENT-RESPONSE"))
	}
	require.EqualValues(t, 1, c.settles.Load(), "settle was not called while the ledger was unreachable")
	require.EqualValues(t, 1, c.workerCalls.Load())

	p.Start(t)
	// The same payments now settle, each once, and the cap (5 prices) is
	// exact: the outage held no spend.
	require.Eventually(t, func() bool { return c.do(0, path, pays[1]).status == http.StatusOK }, 10*time.Second, 50*time.Millisecond)
	for i, pay := range pays[2:5] {
		r := c.do(i, path, pay)
		require.Equal(t, http.StatusOK, r.status, r.body)
	}
	r := c.do(1, path, pays[5])
	require.Equal(t, http.StatusTooManyRequests, r.status, r.body)
	require.Equal(t, "spend_cap_exceeded", r.code)
	require.Equal(t, map[ledger.Status]int{ledger.StatusSettled: 5}, c.entries(t, "capped"))
	require.EqualValues(t, 5, c.settles.Load())
	c.verifyChain(t)
}

// TestPostgresCutWhileWorkerRuns: PostgreSQL goes away after the gateway's
// pre-settlement ledger check, while the worker runs. The payment stage
// writes a settlement intent to the audit log before it settles; that write
// fails, so the payment is not settled (the facilitator's Settle is never
// called) and the client gets 503 store_unavailable. Nothing is
// half-written, and once PostgreSQL is back the same payment settles, once.
func TestPostgresCutWhileWorkerRuns(t *testing.T) {
	t.Parallel()
	p := startProxy(t, pgAddr(t))
	c := newCluster(t, clusterConfig{pgAddr: p.addr})
	const path = "/t/paid/rows"
	pay := c.signPayments(t, "paid", path, 1)[0]
	gate := make(chan struct{})
	c.gate.Store(&gate)
	done := make(chan result, 1)
	go func() { done <- c.do(0, path, pay) }()
	require.Eventually(t, func() bool { return c.workerCalls.Load() == 1 }, 10*time.Second, 5*time.Millisecond)
	p.Stop()
	close(gate)
	r := <-done
	t.Logf("answer with PostgreSQL cut during the worker call: %d %s", r.status, r.body)
	require.Equal(t, http.StatusServiceUnavailable, r.status)
	require.Equal(t, "store_unavailable", r.code)
	require.Empty(t, r.header.Get("PAYMENT-RESPONSE"))
	require.Zero(t, c.settles.Load(), "the facilitator's Settle was not called")
	c.gate.Store(nil)

	p.Start(t)
	require.Empty(t, c.entries(t, "paid"), "nothing recorded")
	c.verifyChain(t) // nothing half-written
	var again result
	require.Eventually(t, func() bool {
		again = c.do(1, path, pay)
		return again.status == http.StatusOK
	}, 10*time.Second, 50*time.Millisecond, "the same payment settles once PostgreSQL is back")
	require.False(t, again.deduped)
	require.EqualValues(t, 1, c.settles.Load())
	require.Equal(t, map[ledger.Status]int{ledger.StatusSettled: 1}, c.entries(t, "paid"))
	c.verifyChain(t)
}

// TestRedisFlappingDuringPaidRun: Redis goes away and comes back every few
// tens of milliseconds while 120 distinct payments are sent by 8 clients to
// two replicas. Whatever each request saw, money and records agree: every
// settled answer has a settled ledger entry and vice versa, the facilitator
// settled each payment at most once, every Settle call is in the ledger,
// and the chain verifies. Afterwards every payment is sent again: none is
// ever settled a second time.
func TestRedisFlappingDuringPaidRun(t *testing.T) {
	t.Parallel()
	p := startProxy(t, redisAddr(t))
	c := newCluster(t, clusterConfig{redisAddr: p.addr})
	const path = "/t/paid/rows"
	pays := c.signPayments(t, "paid", path, 120)

	stop := make(chan struct{})
	flapped := make(chan int)
	go func() {
		n := 0
		defer func() { flapped <- n }()
		for {
			select {
			case <-stop:
				return
			case <-time.After(60 * time.Millisecond):
			}
			p.Stop()
			n++
			time.Sleep(20 * time.Millisecond)
			p.Start(t)
		}
	}()
	// Eight clients work through the payments, so the run spans many cuts.
	rs := make([]result, len(pays))
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < len(pays); i = int(next.Add(1) - 1) {
				rs[i] = c.do(i, path, pays[i])
			}
		}()
	}
	wg.Wait()
	close(stop)
	t.Logf("Redis cut %d times; answers: %v", <-flapped, count(rs))

	settledAnswers := 0
	for _, r := range rs {
		require.NotEqual(t, http.StatusOK, r.status == http.StatusOK && r.deduped, "no replay of a first request")
		if r.status == http.StatusOK {
			settledAnswers++
		} else {
			require.True(t, r.status >= 400, "%d", r.status)
		}
	}
	es := c.entries(t, "paid")
	require.Equal(t, settledAnswers, es[ledger.StatusSettled], "every settled answer has its ledger entry, and no other")
	require.EqualValues(t, es[ledger.StatusSettled], c.settleOK.Load(), "each successful settle is in the ledger")
	total := 0
	for _, n := range es {
		total += n
	}
	require.EqualValues(t, c.settles.Load(), total, "every Settle call (settled, pending or failed) is in the ledger")
	c.verifyChain(t)

	// Redis is back for good: send every payment again.
	settleOK := c.settleOK.Load()
	retried := c.fire(len(pays), func(i int) (string, string) { return path, pays[i] })
	newlySettled := 0
	for i, r := range retried {
		if r.status == http.StatusOK && !r.deduped {
			newlySettled++
			require.NotEqual(t, http.StatusOK, rs[i].status, "payment %d settled twice", i)
		}
	}
	t.Logf("sent again: %v", count(retried))
	require.EqualValues(t, settleOK+int64(newlySettled), c.settleOK.Load())
	require.LessOrEqual(t, c.settleOK.Load(), int64(len(pays)))
	es = c.entries(t, "paid")
	require.EqualValues(t, c.settleOK.Load(), es[ledger.StatusSettled])
	c.verifyChain(t)
}
