package metrics_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/metrics"
)

// countingStore counts rollup reads and, while gate is open, blocks each
// one until release is closed; fail makes reads fail.
type countingStore struct {
	metrics.Store
	reads   atomic.Int64
	gate    chan struct{} // nil: do not block
	release chan struct{}
	fail    atomic.Bool
}

func (c *countingStore) Rollups(ctx context.Context, q metrics.RollupQuery) ([]metrics.HourRollup, error) {
	c.reads.Add(1)
	if c.gate != nil {
		<-c.release
	}
	if c.fail.Load() {
		return nil, errors.New("db down")
	}
	return c.Store.Rollups(ctx, q)
}

func getAnalytics(t *testing.T, h http.Handler, target string) (int, metrics.MarketplaceAnalytics) {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, target, nil))
	var out metrics.MarketplaceAnalytics
	if rec.Code == http.StatusOK {
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
			t.Error(err)
		}
	}
	return rec.Code, out
}

// TestAnalyticsConcurrentMissesComputeOnce is the security finding: the
// public analytics route recomputed the whole window on every request. Now
// 64 concurrent requests for one window (with different tops) read the
// store once, and later ones within the TTL not at all.
func TestAnalyticsConcurrentMissesComputeOnce(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		store := &countingStore{
			Store: newStore(t, traffic{api: "a", calls: 30, callers: 10, hours: 3, latencyMs: 20},
				traffic{api: "b", calls: 20, callers: 5, hours: 2, latencyMs: 20}),
			gate: make(chan struct{}), release: make(chan struct{}),
		}
		h, err := metrics.NewPlatformHandler(store, metrics.PlatformConfig{Now: func() time.Time { return now }})
		require.NoError(t, err)

		const n = 64
		var wg sync.WaitGroup
		tops := make([]int, n)
		for i := range n {
			wg.Go(func() {
				top := 1 + i%2
				code, out := getAnalytics(t, h, "/__platform/analytics?window=today&top="+[]string{"1", "2"}[top-1])
				if code != http.StatusOK {
					t.Errorf("status %d", code)
				}
				tops[i] = len(out.TopAPIs)
			})
		}
		synctest.Wait() // every request is blocked: one in the store, the rest waiting for it
		require.EqualValues(t, 1, store.reads.Load())
		close(store.release)
		wg.Wait()
		for i, got := range tops {
			require.Equal(t, 1+i%2, got, "each request gets its own top")
		}
		require.EqualValues(t, 1, store.reads.Load())

		// Within the TTL: from the cache. Another window: its own read.
		getAnalytics(t, h, "/__platform/analytics?window=today&top=100")
		require.EqualValues(t, 1, store.reads.Load())
		getAnalytics(t, h, "/__platform/analytics?window=week")
		require.EqualValues(t, 2, store.reads.Load())
	})
}

func TestAnalyticsCacheExpiresAndSkipsFailures(t *testing.T) {
	t.Parallel()
	var clock atomic.Int64
	clock.Store(now.UnixNano())
	store := &countingStore{Store: newStore(t, traffic{api: "a", calls: 10, callers: 5, hours: 2, latencyMs: 20})}
	h, err := metrics.NewPlatformHandler(store, metrics.PlatformConfig{
		Now:               func() time.Time { return time.Unix(0, clock.Load()) },
		AnalyticsCacheTTL: 5 * time.Second,
	})
	require.NoError(t, err)

	code, first := getAnalytics(t, h, "/__platform/analytics")
	require.Equal(t, 200, code)
	require.EqualValues(t, 1, store.reads.Load())
	clock.Add(int64(4 * time.Second))
	_, again := getAnalytics(t, h, "/__platform/analytics")
	require.EqualValues(t, 1, store.reads.Load(), "within the TTL")
	require.Equal(t, first.GeneratedAt, again.GeneratedAt)
	clock.Add(int64(time.Second))
	_, fresh := getAnalytics(t, h, "/__platform/analytics")
	require.EqualValues(t, 2, store.reads.Load(), "expired after the TTL")
	require.True(t, fresh.GeneratedAt.After(first.GeneratedAt))

	// A failure is not cached: the next request tries again.
	clock.Add(int64(time.Minute))
	store.fail.Store(true)
	code, _ = getAnalytics(t, h, "/__platform/analytics")
	require.Equal(t, 500, code)
	store.fail.Store(false)
	code, _ = getAnalytics(t, h, "/__platform/analytics")
	require.Equal(t, 200, code)
	require.EqualValues(t, 4, store.reads.Load())
}

func TestAnalyticsCacheDisabled(t *testing.T) {
	t.Parallel()
	store := &countingStore{Store: newStore(t, traffic{api: "a", calls: 10, callers: 5, hours: 2, latencyMs: 20})}
	h, err := metrics.NewPlatformHandler(store, metrics.PlatformConfig{Now: func() time.Time { return now }, AnalyticsCacheTTL: -1})
	require.NoError(t, err)
	for range 3 {
		code, _ := getAnalytics(t, h, "/__platform/analytics?top=1000000")
		require.Equal(t, 200, code)
	}
	require.EqualValues(t, 3, store.reads.Load())
}
