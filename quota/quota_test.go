package quota_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/shopspring/decimal"
	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/adapters/memory"
	"github.com/402claw/dispatcher/kv"
	"github.com/402claw/dispatcher/quota"
	"github.com/402claw/dispatcher/quota/quotatest"
	"github.com/402claw/dispatcher/tenant"
)

func TestConformanceMemory(t *testing.T) {
	t.Parallel()
	quotatest.Run(t, func(t *testing.T) kv.Store { return memory.NewKV() })
}

// plainKV hides the memory store's batch ability, so the suite also covers
// the one-by-one paths (kv.IncrAll's fallback and the rate limit's
// give-back).
type plainKV struct{ kv.Store }

func TestConformanceWithoutBatch(t *testing.T) {
	t.Parallel()
	quotatest.Run(t, func(t *testing.T) kv.Store { return plainKV{memory.NewKV()} })
}

// recordingKV records the keys each call touches.
type recordingKV struct {
	kv.Store
	mu      sync.Mutex
	batches [][]string
}

func (r *recordingKV) Incr(ctx context.Context, key string, in kv.Increment) (int64, bool, error) {
	r.mu.Lock()
	r.batches = append(r.batches, []string{key})
	r.mu.Unlock()
	return r.Store.Incr(ctx, key, in)
}

func (r *recordingKV) IncrAll(ctx context.Context, keys []string, ins []kv.Increment) ([]int64, int, error) {
	r.mu.Lock()
	r.batches = append(r.batches, append([]string(nil), keys...))
	r.mu.Unlock()
	return r.Store.(kv.BatchIncrementer).IncrAll(ctx, keys, ins)
}

func TestKeyLayout(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rec := &recordingKV{Store: memory.NewKV()}
	l, err := quota.New(rec, quota.Config{Now: quotatest.NewClock(noon).Now})
	require.NoError(t, err)
	ten := &tenant.Tenant{
		Slug: "acme", Plan: "pro", X402Enabled: true, PriceUSD: decimal.RequireFromString("0.01"),
		UsageLimit: tenant.UsageLimit{DailyRequests: 5, MonthlyRequests: 50},
		SpendLimit: tenant.SpendLimit{DailySpendUSD: decimal.RequireFromString("1"), MonthlySpendUSD: decimal.RequireFromString("10")},
	}
	_, err = l.Allow(ctx, ten, "c0ffee")
	require.NoError(t, err)
	_, err = l.ReserveUsage(ctx, ten)
	require.NoError(t, err)
	r, err := l.Reserve(ctx, ten, ten.PriceUSD)
	require.NoError(t, err)
	require.NoError(t, r.Release(ctx))
	require.Equal(t, [][]string{
		{"q:{acme}:rate:c:c0ffee", "q:{acme}:rate:t"},
		{"q:{acme}:use:m:2026-11", "q:{acme}:use:d:2026-11-24"},
		{"q:{acme}:spend:m:2026-11", "q:{acme}:spend:d:2026-11-24"},
		{"q:{acme}:spend:m:2026-11", "q:{acme}:spend:d:2026-11-24"},
	}, rec.batches, "one batch per check, all keys of a batch under the tenant's hash tag")

	l, err = quota.New(memory.NewKV(), quota.Config{Prefix: "gw1"})
	require.NoError(t, err)
	_, err = l.Allow(ctx, ten, "x")
	require.NoError(t, err)
}

func TestKeysExpire(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	clk := quotatest.NewClock(time.Date(2026, 11, 30, 23, 59, 59, 999_000_000, time.UTC))
	store := memory.NewKVWithClock(clk.Now)
	l, err := quota.New(store, quota.Config{Now: clk.Now, Slack: 10 * time.Minute})
	require.NoError(t, err)
	ten := &tenant.Tenant{
		Slug: "acme", Plan: "free",
		UsageLimit: tenant.UsageLimit{DailyRequests: 5, MonthlyRequests: 50},
		SpendLimit: tenant.SpendLimit{DailySpendUSD: decimal.RequireFromString("1")},
	}
	_, err = l.Allow(ctx, ten, "c")
	require.NoError(t, err)
	_, err = l.ReserveUsage(ctx, ten)
	require.NoError(t, err)
	r, err := l.Reserve(ctx, ten, decimal.RequireFromString("0.5"))
	require.NoError(t, err)
	require.Equal(t, 5, store.Len(), "rate caller, rate tenant, usage day and month, spend day")

	// A minute and a bit later the rate keys are gone (TTL window + 1s);
	// the old month's counters outlive their window by the slack, so a
	// late release still lands on them.
	clk.Add(62 * time.Second)
	require.Equal(t, 3, store.Len())
	require.NoError(t, r.Release(ctx))
	st := r.Status()
	require.Equal(t, int64(0), st.Day.Used)
	require.Equal(t, "2026-11-30", st.Day.Window.ID)
	clk.Add(10 * time.Minute)
	require.Equal(t, 0, store.Len(), "nothing outlives window end + slack")

	// A release after the slack does not re-create a key without expiry.
	r, err = l.Reserve(ctx, ten, decimal.RequireFromString("0.5"))
	require.NoError(t, err)
	clk.Add(25 * time.Hour)
	require.NoError(t, r.Release(ctx))
	require.Equal(t, 0, store.Len())
}
