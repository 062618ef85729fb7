package postgres_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/ledger"
	"github.com/402claw/dispatcher/ops"
	"github.com/402claw/dispatcher/ops/opstest"
	"github.com/402claw/dispatcher/tenant"
)

func TestOpsConformance(t *testing.T) {
	opstest.RunUsers(t, func(t *testing.T) ops.Users { s, _, _ := newStore(t); return s })
	opstest.RunDatasets(t, func(t *testing.T) ops.Datasets { s, _, _ := newStore(t); return s })
	opstest.RunKeyLookup(t, func(t *testing.T) ledger.Store { s, _, _ := newStore(t); return s })
}

// TestUpdateTenantsAcrossReplicas: replicas update the directory at once;
// every change survives, and a refused update writes nothing.
func TestUpdateTenantsAcrossReplicas(t *testing.T) {
	stores := replicas(t, 3)
	ctx := context.Background()
	const per = 8
	var wg sync.WaitGroup
	for i, s := range stores {
		for j := 0; j < per; j++ {
			wg.Add(1)
			go func(s ops.TenantUpdater, slug string) {
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
		return append(cur[1:], tenant.Tenant{Slug: "s0-t1", WorkerName: "dup"}), nil
	})
	require.ErrorIs(t, err, tenant.ErrInvalidDirectory)
	ts, err = stores[2].LoadTenants(ctx)
	require.NoError(t, err)
	require.Len(t, ts, len(stores)*per, "a refused update wrote")
}
