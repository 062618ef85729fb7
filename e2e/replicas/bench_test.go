package replicas_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	goredis "github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// rttCounter is a go-redis hook that counts round trips (one per command
// or pipeline sent) and, when recording, names them.
type rttCounter struct {
	n      atomic.Int64
	prefix string
	mu     sync.Mutex
	rec    bool
	names  []string
}

func (h *rttCounter) DialHook(next goredis.DialHook) goredis.DialHook { return next }

func (h *rttCounter) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook {
	return func(ctx context.Context, cmd goredis.Cmder) error {
		h.n.Add(1)
		h.record(describe(cmd, h.prefix))
		return next(ctx, cmd)
	}
}

func (h *rttCounter) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []goredis.Cmder) error {
		h.n.Add(1)
		var parts []string
		for _, c := range cmds {
			parts = append(parts, describe(c, h.prefix))
		}
		h.record("pipeline[" + strings.Join(parts, "; ") + "]")
		return next(ctx, cmds)
	}
}

func (h *rttCounter) record(s string) {
	h.mu.Lock()
	if h.rec {
		h.names = append(h.names, s)
	}
	h.mu.Unlock()
}

// describe names a command by its name and keys, without the test prefix.
func describe(cmd goredis.Cmder, prefix string) string {
	args := cmd.Args()
	name := strings.ToUpper(fmt.Sprint(args[0]))
	var keys []string
	switch name {
	case "EVALSHA", "EVAL":
		if len(args) > 2 {
			var n int
			fmt.Sscan(fmt.Sprint(args[2]), &n)
			for i := 0; i < n && 3+i < len(args); i++ {
				keys = append(keys, strings.TrimPrefix(fmt.Sprint(args[3+i]), prefix))
			}
		}
	default:
		if len(args) > 1 {
			keys = append(keys, strings.TrimPrefix(fmt.Sprint(args[1]), prefix))
		}
	}
	return name + " " + strings.Join(keys, ",")
}

// TestRedisRoundTripsPerPaidRequest counts the Redis round trips of one
// settled paid request (and of a free request with a usage quota) through
// the whole pipeline and names them. The counter checks of a paid request
// (both rate limits, the day and month usage quota, the day and month spend
// reservation) are ONE script call (issue 8); the other round trips are the
// idempotency records and the local facilitator's nonce.
func TestRedisRoundTripsPerPaidRequest(t *testing.T) {
	h := &rttCounter{}
	c := newCluster(t, clusterConfig{replicas: 1, redisHook: h})
	h.prefix = c.prefix
	pays := map[string][]string{}
	for _, slug := range []string{"capped", "full"} {
		pays[slug] = c.signPayments(t, slug, "/t/"+slug+"/rows", 3)
	}
	// Warm up: scripts loaded, connections open.
	require.Equal(t, http.StatusOK, c.do(0, "/t/capped/rows", pays["capped"][0]).status)
	require.Equal(t, http.StatusOK, c.do(0, "/t/full/rows", pays["full"][0]).status)
	require.Equal(t, http.StatusOK, c.do(0, "/t/quota/rows", "").status)

	measure := func(path, pay string) (int64, []string) {
		h.mu.Lock()
		h.rec, h.names = true, nil
		h.mu.Unlock()
		before := h.n.Load()
		r := c.do(0, path, pay)
		require.Equal(t, http.StatusOK, r.status, r.body)
		h.mu.Lock()
		defer h.mu.Unlock()
		h.rec = false
		return h.n.Load() - before, h.names
	}
	// counterTrips are the quota scripts: every quota key starts with "q:{".
	counterTrips := func(names []string) int {
		n := 0
		for _, s := range names {
			if strings.HasPrefix(s, "EVALSHA q:{") || strings.HasPrefix(s, "EVAL q:{") {
				n++
			}
		}
		return n
	}
	n, names := measure("/t/capped/rows", pays["capped"][1])
	t.Logf("paid request (rate limits, spend cap, no usage quota): %d Redis round trips, %d for counters:\n  %s", n, counterTrips(names), strings.Join(names, "\n  "))
	require.Equal(t, 1, counterTrips(names), "one counter round trip per paid request")
	n, names = measure("/t/full/rows", pays["full"][1])
	t.Logf("paid request (rate limits, usage quota, spend cap): %d Redis round trips, %d for counters:\n  %s", n, counterTrips(names), strings.Join(names, "\n  "))
	require.Equal(t, 1, counterTrips(names), "one counter round trip per paid request")
	for _, s := range names {
		if strings.HasPrefix(s, "EVALSHA q:{") {
			require.Len(t, strings.Split(strings.TrimPrefix(s, "EVALSHA "), ","), 7,
				"the one script holds the three rate limits (caller, client address, tenant), both usage windows and both spend windows")
		}
	}
	n, names = measure("/t/quota/rows", "")
	t.Logf("free request with a daily quota: %d Redis round trips:\n  %s", n, strings.Join(names, "\n  "))
}

// BenchmarkPaidRequest sends settled paid requests (distinct payments,
// signed before the timer starts) through one and through two replicas over
// Redis and PostgreSQL, from 16 concurrent clients per CPU, and reports
// requests/s and Redis round trips per request. facilitator=local verifies
// and settles with the local facilitator (a signer recovered per payment);
// facilitator=instant with a double that answers at once, so that what is
// measured is the gateways and the stores (DESIGN section 18).
func BenchmarkPaidRequest(b *testing.B) {
	for _, fac := range []string{"local", "instant"} {
		for _, n := range []int{1, 2} {
			b.Run(fmt.Sprintf("facilitator=%s/replicas=%d", fac, n), func(b *testing.B) {
				h := &rttCounter{}
				c := newCluster(b, clusterConfig{replicas: n, redisHook: h, instant: fac == "instant"})
				const path = "/t/paid/rows"
				pays := c.signPayments(b, "paid", path, b.N)
				var next atomic.Int64
				var failed atomic.Int64
				rtt0 := h.n.Load()
				b.SetParallelism(16)
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						i := next.Add(1) - 1
						if r := c.do(int(i), path, pays[i]); r.status != http.StatusOK {
							failed.Add(1)
						}
					}
				})
				b.StopTimer()
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
				b.ReportMetric(float64(h.n.Load()-rtt0)/float64(b.N), "redis-rtt/req")
				if f := failed.Load(); f > 0 {
					b.Fatalf("%d of %d paid requests failed", f, b.N)
				}
				es := c.entries(b, "paid")
				if es["settled"] != b.N {
					b.Fatalf("ledger has %v, want %d settled", es, b.N)
				}
			})
		}
	}
}

// BenchmarkFreeRequest is the same for free requests with a daily quota
// (rate limits and usage counters only, no PostgreSQL on the path).
func BenchmarkFreeRequest(b *testing.B) {
	for _, n := range []int{1, 2} {
		b.Run(fmt.Sprintf("replicas=%d", n), func(b *testing.B) {
			h := &rttCounter{}
			c := newCluster(b, clusterConfig{replicas: n, redisHook: h, dailyRequests: 1 << 30})
			var next atomic.Int64
			rtt0 := h.n.Load()
			b.SetParallelism(16)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					i := next.Add(1) - 1
					if r := c.do(int(i), "/t/quota/rows", ""); r.status != http.StatusOK {
						b.Errorf("status %d: %s", r.status, r.body)
						return
					}
				}
			})
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
			b.ReportMetric(float64(h.n.Load()-rtt0)/float64(b.N), "redis-rtt/req")
		})
	}
}
