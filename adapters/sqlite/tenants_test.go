package sqlite_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"sync"
	"testing"

	"github.com/shopspring/decimal"
	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/adapters/sqlite"
	"github.com/402claw/dispatcher/tenant"
)

const directoryJSON = `{"tenants": [
	{"slug": "acme", "workerName": "tenant-acme", "plan": "pro", "hosts": ["api.acme.test", "ACME.example:8443"],
	 "priceUsd": "0.010000", "x402Enabled": true, "usageLimit": {"dailyRequests": 100, "monthlyRequests": 2000},
	 "spendLimit": {"dailySpendUsd": "1.5", "monthlySpendUsd": 20}, "limits": {"cpuMs": 20, "subRequests": 5},
	 "rateLimit": {"perCaller": {"requests": 5, "windowSeconds": 1}, "global": {"requests": 100, "windowSeconds": 60}},
	 "ownerUserId": "user-1", "directory": "data", "payTo": "0x00000000000000000000000000000000000000aa"},
	{"slug": "free-one", "workerName": "w-free"},
	{"slug": "demo", "workerName": "w-demo", "priceUsd": 0.000001, "owner": "user-2"}
]}`

func TestTenantsRoundTrip(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "tenants.db")
	s, err := sqlite.New(openDB(t, path))
	require.NoError(t, err)

	got, err := s.LoadTenants(ctx)
	require.NoError(t, err)
	require.Empty(t, got)

	dir, err := tenant.ParseDirectory([]byte(directoryJSON))
	require.NoError(t, err)
	require.NoError(t, s.SaveTenants(ctx, dir.Tenants()))

	// Another handle (a restarted process) reads the same tenants back.
	s2, err := sqlite.New(openDB(t, path))
	require.NoError(t, err)
	got, err = s2.LoadTenants(ctx)
	require.NoError(t, err)
	requireSameTenants(t, dir.Tenants(), got)
	loaded, err := tenant.Load(ctx, s2)
	require.NoError(t, err)
	a, _ := dir.MarshalJSON()
	b, _ := loaded.MarshalJSON()
	require.JSONEq(t, string(a), string(b))
	acme, ok := loaded.Lookup("acme")
	require.True(t, ok)
	require.Equal(t, []string{"api.acme.test", "acme.example"}, acme.Hosts)
	require.Equal(t, "0.01", acme.PriceUSD.String())
	require.True(t, acme.Charges())

	// The stored doc is the tenant's JSON, readable by ParseDirectory too.
	var doc string
	require.NoError(t, s.DB().QueryRow(`SELECT doc FROM tenants WHERE slug = 'acme'`).Scan(&doc))
	fromDoc, err := tenant.ParseDirectory([]byte(`{"tenants":[` + doc + `]}`))
	require.NoError(t, err)
	requireSameTenants(t, []tenant.Tenant{*acme}, fromDoc.Tenants())
	var owner string
	require.NoError(t, s.DB().QueryRow(`SELECT owner_user_id FROM tenants WHERE slug = 'acme'`).Scan(&owner))
	require.Equal(t, "user-1", owner)
}

func TestTenantsReplaceAtomically(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	first, err := tenant.ParseDirectory([]byte(directoryJSON))
	require.NoError(t, err)
	require.NoError(t, s.SaveTenants(ctx, first.Tenants()))
	var created int64
	require.NoError(t, s.DB().QueryRow(`SELECT created_us FROM tenants WHERE slug = 'demo'`).Scan(&created))

	// Replace: one tenant changes, one goes, one comes.
	second, err := tenant.ParseDirectory([]byte(`{"tenants": [
		{"slug": "demo", "workerName": "w-demo-2"},
		{"slug": "zeta", "workerName": "w-zeta"}]}`))
	require.NoError(t, err)
	require.NoError(t, s.SaveTenants(ctx, second.Tenants()))
	got, err := s.LoadTenants(ctx)
	require.NoError(t, err)
	requireSameTenants(t, second.Tenants(), got)
	var created2 int64
	require.NoError(t, s.DB().QueryRow(`SELECT created_us FROM tenants WHERE slug = 'demo'`).Scan(&created2))
	require.Equal(t, created, created2, "a kept tenant keeps its creation time")

	// An invalid set (duplicate host) is refused whole: nothing changes.
	bad := append(first.Tenants(), tenant.Tenant{Slug: "other", WorkerName: "w", Hosts: []string{"api.acme.test"}})
	err = s.SaveTenants(ctx, bad)
	require.ErrorIs(t, err, tenant.ErrInvalidDirectory)
	got, err = s.LoadTenants(ctx)
	require.NoError(t, err)
	requireSameTenants(t, second.Tenants(), got)

	// A failure inside the transaction rolls everything back: a tenant an
	// api key still references cannot go, so the whole save fails.
	_, err = s.DB().Exec(`INSERT INTO users (id, created_us) VALUES ('u', 0)`)
	require.NoError(t, err)
	_, err = s.DB().Exec(`INSERT INTO api_keys (id, user_id, tenant_slug, key_hash, created_us) VALUES ('k', 'u', 'zeta', 'h', 0)`)
	require.NoError(t, err)
	err = s.SaveTenants(ctx, first.Tenants()) // adds acme, free-one; changes demo; removes zeta
	require.Error(t, err)
	got, err = s.LoadTenants(ctx)
	require.NoError(t, err)
	requireSameTenants(t, second.Tenants(), got, "nothing of the failed save is visible")

	// Empty replaces all.
	_, err = s.DB().Exec(`DELETE FROM api_keys`)
	require.NoError(t, err)
	require.NoError(t, s.SaveTenants(ctx, nil))
	got, err = s.LoadTenants(ctx)
	require.NoError(t, err)
	require.Empty(t, got)
}

// Readers racing with savers only ever see one whole directory.
func TestTenantsConcurrentReplace(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	dirs := make([][]tenant.Tenant, 2)
	for i := range dirs {
		var ts []tenant.Tenant
		for j := range 20 {
			ts = append(ts, tenant.Tenant{Slug: "t" + string(rune('a'+j)) + string(rune('a'+i)), WorkerName: "w"})
		}
		dirs[i] = ts
	}
	want := map[string]bool{}
	for _, ts := range dirs {
		b, _ := json.Marshal(ts)
		want[string(b)] = true
	}
	require.NoError(t, s.SaveTenants(ctx, dirs[0]))
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for w := range 2 {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for i := range 15 {
				if err := s.SaveTenants(ctx, dirs[(i+w)%2]); err != nil {
					errs <- err
				}
			}
		}()
		go func() {
			defer wg.Done()
			for range 30 {
				got, err := s.LoadTenants(ctx)
				if err != nil {
					errs <- err
					return
				}
				b, _ := json.Marshal(got)
				if !want[string(b)] {
					errs <- &mixedError{string(b)}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
}

// requireSameTenants compares tenants by value: decimals equal in value
// ("0.010000" and "0.01") may differ in representation after a round trip.
func requireSameTenants(t *testing.T, want, got []tenant.Tenant, msg ...any) {
	t.Helper()
	require.Len(t, got, len(want), msg...)
	for i := range want {
		w, g := want[i], got[i]
		for _, p := range [][2]*decimal.Decimal{{&w.PriceUSD, &g.PriceUSD},
			{&w.SpendLimit.DailySpendUSD, &g.SpendLimit.DailySpendUSD},
			{&w.SpendLimit.MonthlySpendUSD, &g.SpendLimit.MonthlySpendUSD}} {
			require.True(t, p[0].Equal(*p[1]), "tenant %s: %s != %s", w.Slug, p[0], p[1])
			*p[0], *p[1] = decimal.Zero, decimal.Zero
		}
		require.Equal(t, w, g, msg...)
	}
}

type mixedError struct{ got string }

func (e *mixedError) Error() string { return "a load saw a mix of two directories: " + e.got }
