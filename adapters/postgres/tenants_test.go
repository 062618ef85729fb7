package postgres_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"

	"github.com/shopspring/decimal"
	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/adapters/postgres"
	"github.com/402claw/dispatcher/limits"
	"github.com/402claw/dispatcher/tenant"
)

func sampleTenants(n int, tag string) []tenant.Tenant {
	out := make([]tenant.Tenant, n)
	for i := range out {
		out[i] = tenant.Tenant{
			Slug: fmt.Sprintf("%s-%03d", tag, i), WorkerName: "worker-" + tag, Plan: limits.Pro,
			Hosts:       []string{fmt.Sprintf("%s-%03d.api.example.com", tag, i)},
			PriceUSD:    decimal.RequireFromString("0.0125"),
			X402Enabled: true,
			UsageLimit:  tenant.UsageLimit{DailyRequests: 100, MonthlyRequests: 2000},
			SpendLimit:  tenant.SpendLimit{DailySpendUSD: decimal.RequireFromString("12.5"), MonthlySpendUSD: decimal.RequireFromString("100")},
			Limits:      limits.Overrides{CPUMs: 20, SubRequests: 10},
			RateLimit:   tenant.RateLimit{PerCaller: tenant.Rate{Requests: 5, WindowSeconds: 1}},
			OwnerUserID: "user-" + tag, Directory: "finance", PayTo: "0x209693Bc6afc0C5328bA36FaF03C514EF312287C",
		}
	}
	return out
}

func TestTenantsRoundTripAndReplace(t *testing.T) {
	t.Parallel()
	s, _, _ := newStore(t)
	ctx := context.Background()
	got, err := s.LoadTenants(ctx)
	require.NoError(t, err)
	require.Empty(t, got)

	first := sampleTenants(5, "a")
	first[4].X402Enabled, first[4].PriceUSD, first[4].SpendLimit = false, decimal.Zero, tenant.SpendLimit{}
	require.NoError(t, s.SaveTenants(ctx, first))
	got, err = s.LoadTenants(ctx)
	require.NoError(t, err)
	want, err := tenant.NewDirectory(first)
	require.NoError(t, err)
	wantJSON, err := json.Marshal(want.Tenants())
	require.NoError(t, err)
	gotJSON, err := json.Marshal(got)
	require.NoError(t, err)
	require.JSONEq(t, string(wantJSON), string(gotJSON), "tenants round-trip in order")
	require.Equal(t, want.Tenants()[0].PriceUSD.String(), got[0].PriceUSD.String())

	second := sampleTenants(3, "b")
	require.NoError(t, s.SaveTenants(ctx, second))
	got, err = s.LoadTenants(ctx)
	require.NoError(t, err)
	require.Len(t, got, 3, "SaveTenants replaces everything")
	require.Equal(t, "b-000", got[0].Slug)

	bad := sampleTenants(2, "c")
	bad[1].Slug = bad[0].Slug
	require.ErrorIs(t, s.SaveTenants(ctx, bad), tenant.ErrInvalidDirectory)
	got, err = s.LoadTenants(ctx)
	require.NoError(t, err)
	require.Len(t, got, 3, "a refused directory changes nothing")

	require.NoError(t, s.SaveTenants(ctx, nil))
	got, err = s.LoadTenants(ctx)
	require.NoError(t, err)
	require.Empty(t, got)
}

// TestTenantsConcurrentSaves: replicas saving different directories at once
// never leave a mix; the last save wins whole.
func TestTenantsConcurrentSaves(t *testing.T) {
	t.Parallel()
	stores := replicas(t, 3)
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 30)
	for i := range 30 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := stores[i%3]
			if err := s.SaveTenants(ctx, sampleTenants(4+i%3, fmt.Sprintf("r%d", i))); err != nil {
				errs <- err
				return
			}
			ts, err := s.LoadTenants(ctx)
			if err != nil {
				errs <- err
				return
			}
			checkOneDirectory(ts, errs)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
}

func checkOneDirectory(ts []tenant.Tenant, errs chan<- error) {
	if len(ts) == 0 {
		errs <- fmt.Errorf("empty directory")
		return
	}
	tag := ts[0].WorkerName
	for _, x := range ts {
		if x.WorkerName != tag {
			errs <- fmt.Errorf("a mix of two directories: %s and %s", tag, x.WorkerName)
			return
		}
	}
}

var _ tenant.Store = (*postgres.Store)(nil)
