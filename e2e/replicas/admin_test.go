package replicas_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/adapters/postgres"
	"github.com/402claw/dispatcher/dispatch"
	"github.com/402claw/dispatcher/ledger"
	"github.com/402claw/dispatcher/ops"
	"github.com/402claw/dispatcher/tenant"
)

// A tenant published through the admin API of one replica is served by
// the other within two seconds (DESIGN section 17).
func TestAdminChangeReachesTheOtherReplica(t *testing.T) {
	dbURL := serviceURL(t, "TEST_DATABASE_URL")
	var b [6]byte
	_, _ = rand.Read(b[:])
	schema := "admin_" + hex.EncodeToString(b[:])
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	worker := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "hello from "+r.URL.Path) })
	start, err := tenant.ParseDirectory([]byte(`{"tenants":[{"slug":"first","workerName":"w"}]}`))
	require.NoError(t, err)

	type replica struct {
		admin *ops.AdminHandler
		srv   *httptest.Server
	}
	var rs []replica
	for i := 0; i < 2; i++ {
		pool := newPool(t, dbURL, "", 4)
		pg, err := postgres.New(ctx, pool, postgres.Config{Schema: schema})
		require.NoError(t, err)
		if i == 0 {
			require.NoError(t, pg.SaveTenants(ctx, start.Tenants()))
		}
		led, err := ledger.New(pg, ledger.Config{})
		require.NoError(t, err)
		reg := tenant.NewRegistry(start)
		admin, err := ops.NewAdminHandler(ops.AdminConfig{AdminToken: "secret", Registry: reg, Store: pg, Ledger: led})
		require.NoError(t, err)
		go func() { _ = admin.Watch(ctx, ops.WatchConfig{Interval: 200 * time.Millisecond}) }()
		d, err := dispatch.NewDispatcher(dispatch.Config{Tenants: reg, Fetcher: dispatch.NewHandlerFetcher(map[string]http.Handler{"w": worker}), Platform: admin})
		require.NoError(t, err)
		srv := httptest.NewServer(d)
		t.Cleanup(srv.Close)
		rs = append(rs, replica{admin: admin, srv: srv})
	}
	get := func(r replica, path string) int {
		resp, err := http.Get(r.srv.URL + path)
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	require.Equal(t, 404, get(rs[1], "/t/fresh/x"))
	req, err := http.NewRequest("PUT", rs[0].srv.URL+"/__platform/tenants/fresh", strings.NewReader(`{"slug":"fresh","workerName":"w"}`))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer secret")
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Contains(t, []int{200, 201}, resp.StatusCode)
	require.Equal(t, 200, get(rs[0], "/t/fresh/x"), "the replica that made the change serves it at once")
	changed := time.Now()
	require.Eventually(t, func() bool { return get(rs[1], "/t/fresh/x") == 200 }, 2*time.Second, 50*time.Millisecond,
		"the other replica serves the new tenant within two seconds")
	t.Logf("the other replica served the change after %s", time.Since(changed).Round(time.Millisecond))
}
