package sqlite_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/adapters/sqlite"
	"github.com/402claw/dispatcher/ledger"
	"github.com/402claw/dispatcher/ops"
	"github.com/402claw/dispatcher/ops/opstest"
	"github.com/402claw/dispatcher/tenant"
)

func TestOpsConformance(t *testing.T) {
	opstest.RunUsers(t, func(t *testing.T) ops.Users { return newStore(t) })
	opstest.RunDatasets(t, func(t *testing.T) ops.Datasets { return newStore(t) })
	opstest.RunKeyLookup(t, func(t *testing.T) ledger.Store { return newStore(t) })
}

// TestUpdateTenantsAcrossStores: several Stores on one database file (as
// several processes would be) update the directory at once; every change
// survives, and a refused update writes nothing.
func TestUpdateTenantsAcrossStores(t *testing.T) {
	path := filepath.Join(t.TempDir(), "shared.db")
	var stores []*sqlite.Store
	for i := 0; i < 3; i++ {
		s, err := sqlite.New(openDB(t, path))
		require.NoError(t, err)
		stores = append(stores, s)
	}
	ctx := context.Background()
	const per = 10
	var wg sync.WaitGroup
	for i, s := range stores {
		for j := 0; j < per; j++ {
			wg.Add(1)
			go func(s *sqlite.Store, slug string) {
				defer wg.Done()
				err := s.UpdateTenants(ctx, func(cur []tenant.Tenant) ([]tenant.Tenant, error) {
					return append(cur, tenant.Tenant{Slug: slug, WorkerName: "w"}), nil
				})
				if err != nil {
					t.Errorf("update %s: %v", slug, err)
				}
			}(s, fmt.Sprintf("s%d-t%d", i, j))
		}
	}
	wg.Wait()
	ts, err := stores[0].LoadTenants(ctx)
	require.NoError(t, err)
	require.Len(t, ts, len(stores)*per, "a concurrent update was lost")

	err = stores[1].UpdateTenants(ctx, func(cur []tenant.Tenant) ([]tenant.Tenant, error) {
		return append(cur[1:], tenant.Tenant{Slug: "s0-t1", WorkerName: "dup"}), nil // drops one, duplicates another
	})
	require.ErrorIs(t, err, tenant.ErrInvalidDirectory)
	ts, err = stores[2].LoadTenants(ctx)
	require.NoError(t, err)
	require.Len(t, ts, len(stores)*per, "a refused update wrote")

	err = stores[2].UpdateTenants(ctx, func(cur []tenant.Tenant) ([]tenant.Tenant, error) { return cur[:1], nil })
	require.NoError(t, err)
	ts, err = stores[0].LoadTenants(ctx)
	require.NoError(t, err)
	require.Len(t, ts, 1)
}
