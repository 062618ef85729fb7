package metrics

import (
	"context"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
)

// DefaultAnalyticsCacheTTL is how long PlatformHandler reuses an analytics
// answer when PlatformConfig.AnalyticsCacheTTL is zero.
const DefaultAnalyticsCacheTTL = 2 * time.Second

// analyticsComputeTimeout bounds one shared computation, which runs
// detached from the request that started it (others wait on it too).
const analyticsComputeTimeout = 30 * time.Second

// analyticsCache makes the public analytics route cheap to call: each
// window's answer is computed once, for MaxTop rows, and reused for every
// top until it is ttl old; concurrent misses on one window share one
// computation (singleflight), so a burst of requests costs one store scan.
// It holds at most one answer per window (three).
type analyticsCache struct {
	ttl     time.Duration
	now     func() time.Time
	compute func(ctx context.Context, w Window) (*MarketplaceAnalytics, error)

	group   singleflight.Group
	mu      sync.Mutex
	entries map[Window]cachedAnalytics
}

type cachedAnalytics struct {
	out     *MarketplaceAnalytics // never modified once cached
	expires time.Time
}

func newAnalyticsCache(ttl time.Duration, now func() time.Time, compute func(context.Context, Window) (*MarketplaceAnalytics, error)) *analyticsCache {
	return &analyticsCache{ttl: ttl, now: now, compute: compute, entries: map[Window]cachedAnalytics{}}
}

// get returns the window's analytics with at most top leaderboard rows.
func (c *analyticsCache) get(ctx context.Context, w Window, top int) (*MarketplaceAnalytics, error) {
	if c.ttl < 0 {
		out, err := c.compute(ctx, w)
		if err != nil {
			return nil, err
		}
		return out.withTop(top), nil
	}
	c.mu.Lock()
	e, ok := c.entries[w]
	c.mu.Unlock()
	if ok && c.now().Before(e.expires) {
		return e.out.withTop(top), nil
	}
	ch := c.group.DoChan(string(w), func() (any, error) {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), analyticsComputeTimeout)
		defer cancel()
		out, err := c.compute(cctx, w)
		if err != nil {
			return nil, err // failures are not cached
		}
		c.mu.Lock()
		c.entries[w] = cachedAnalytics{out: out, expires: c.now().Add(c.ttl)}
		c.mu.Unlock()
		return out, nil
	})
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case res := <-ch:
		if res.Err != nil {
			return nil, res.Err
		}
		return res.Val.(*MarketplaceAnalytics).withTop(top), nil
	}
}

// withTop returns a shallow copy of a with at most top leaderboard rows
// (0 means DefaultTop; clamped to MaxTop), sharing its slices.
func (a *MarketplaceAnalytics) withTop(top int) *MarketplaceAnalytics {
	if top <= 0 {
		top = DefaultTop
	}
	top = min(top, MaxTop)
	out := *a
	out.TopAPIs = a.TopAPIs[:min(top, len(a.TopAPIs)):min(top, len(a.TopAPIs))]
	return &out
}
