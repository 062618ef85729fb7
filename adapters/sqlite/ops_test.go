package sqlite_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

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

// TestAdminReplicas: two admin handlers (replicas) over two Stores on one
// file: concurrent changes on both are all kept, and each replica's
// watcher serves the other's changes within 2 seconds.
func TestAdminReplicas(t *testing.T) {
	path := filepath.Join(t.TempDir(), "replicas.db")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var hs []http.Handler
	var regs []*tenant.Registry
	for i := 0; i < 2; i++ {
		s, err := sqlite.New(openDB(t, path))
		require.NoError(t, err)
		led, err := ledger.New(s, ledger.Config{})
		require.NoError(t, err)
		reg := tenant.NewRegistry(nil)
		h, err := ops.NewAdminHandler(ops.AdminConfig{AdminToken: "tok", Registry: reg, Store: s, Ledger: led})
		require.NoError(t, err)
		go func() { _ = ops.Watch(ctx, s, reg, 50*time.Millisecond) }()
		hs, regs = append(hs, h), append(regs, reg)
	}
	const per = 12
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
		require.Eventually(t, func() bool { return reg.Load().Len() == 2*per }, 2*time.Second, 10*time.Millisecond, "a replica does not serve every change")
	}
}
