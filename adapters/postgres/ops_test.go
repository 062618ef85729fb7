package postgres_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

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

// TestAdminReplicas: three admin handlers over three pools on one schema:
// concurrent changes on all are kept, and each replica's watcher serves
// the others' changes within 2 seconds.
func TestAdminReplicas(t *testing.T) {
	stores := replicas(t, 3)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var hs []http.Handler
	var regs []*tenant.Registry
	for _, s := range stores {
		led, err := ledger.New(s, ledger.Config{})
		require.NoError(t, err)
		reg := tenant.NewRegistry(nil)
		h, err := ops.NewAdminHandler(ops.AdminConfig{AdminToken: "tok", Registry: reg, Store: s, Ledger: led})
		require.NoError(t, err)
		go func() { _ = ops.Watch(ctx, s, reg, 50*time.Millisecond) }()
		hs, regs = append(hs, h), append(regs, reg)
	}
	const per = 8
	var wg sync.WaitGroup
	for r, h := range hs {
		for i := 0; i < per; i++ {
			wg.Add(1)
			go func(h http.Handler, slug string) {
				defer wg.Done()
				req := httptest.NewRequest("PUT", "/__platform/tenants/"+slug, strings.NewReader(`{"workerName":"w"}`))
				req.Header.Set("Authorization", "Bearer tok")
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				if rec.Code != 201 {
					t.Errorf("put %s: %d %s", slug, rec.Code, rec.Body)
				}
			}(h, fmt.Sprintf("r%d-t%d", r, i))
		}
	}
	wg.Wait()
	for _, reg := range regs {
		require.Eventually(t, func() bool { return reg.Load().Len() == len(stores)*per }, 2*time.Second, 10*time.Millisecond, "a replica does not serve every change")
	}
	n, err := ledger.New(stores[0], ledger.Config{})
	require.NoError(t, err)
	recs, err := n.Verify(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(len(stores)*per), recs, "one audit record per change")
}
