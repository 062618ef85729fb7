package metrics_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/metrics"
)

const token = "s3cret-admin-token"

func newPlatform(t *testing.T, store metrics.Store) *metrics.PlatformHandler {
	t.Helper()
	h, err := metrics.NewPlatformHandler(store, metrics.PlatformConfig{
		AdminToken:    token,
		Now:           func() time.Time { return now },
		PublishedAPIs: func() []metrics.APIInfo { return []metrics.APIInfo{{APIID: "idle", Directory: "tools"}} },
	})
	require.NoError(t, err)
	return h
}

type response struct {
	status int
	header http.Header
	body   map[string]any
}

func do(t *testing.T, h http.Handler, method, target string, hdr map[string]string) response {
	t.Helper()
	req := httptest.NewRequest(method, target, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	res := response{status: rec.Code, header: rec.Header()}
	require.Equal(t, "application/json", rec.Header().Get("Content-Type"))
	_, err := uuid.Parse(rec.Header().Get("X-Request-Id"))
	require.NoError(t, err, "X-Request-Id is a UUID")
	if method != http.MethodHead {
		require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &res.body), rec.Body.String())
	}
	return res
}

func requireError(t *testing.T, res response, status int, code string) {
	t.Helper()
	require.Equal(t, status, res.status)
	require.Equal(t, false, res.body["ok"])
	require.Equal(t, code, res.body["error"])
	require.NotEmpty(t, res.body["message"])
	require.Equal(t, res.header.Get("X-Request-Id"), res.body["requestId"])
}

func TestPlatformHealth(t *testing.T) {
	t.Parallel()
	h := newPlatform(t, newStore(t))
	res := do(t, h, http.MethodGet, "/__platform/health", nil)
	require.Equal(t, http.StatusOK, res.status)
	require.Equal(t, map[string]any{"ok": true}, res.body)

	// An incoming UUID request id is kept; anything else is replaced.
	id := uuid.NewString()
	res = do(t, h, http.MethodGet, "/__platform/health", map[string]string{"X-Request-Id": id})
	require.Equal(t, id, res.header.Get("X-Request-Id"))
	res = do(t, h, http.MethodGet, "/__platform/health", map[string]string{"X-Request-Id": "<script>"})
	require.NotEqual(t, "<script>", res.header.Get("X-Request-Id"))

	res = do(t, h, http.MethodHead, "/__platform/health", nil)
	require.Equal(t, http.StatusOK, res.status)
}

func TestPlatformEventsAuth(t *testing.T) {
	t.Parallel()
	h := newPlatform(t, newStore(t, traffic{api: "a", calls: 5, callers: 2, hours: 1}))
	tests := []struct {
		name string
		auth string
		want int
	}{
		{"missing", "", 401},
		{"wrong token", "Bearer nope", 401},
		{"token prefix", "Bearer " + token[:5], 401},
		{"token plus suffix", "Bearer " + token + "x", 401},
		{"wrong scheme", "Basic " + token, 401},
		{"no scheme", token, 401},
		{"right", "Bearer " + token, 200},
		{"scheme is case-insensitive", "bearer " + token, 200},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := do(t, h, http.MethodGet, "/__platform/events", map[string]string{"Authorization": tc.auth})
			if tc.want == 401 {
				requireError(t, res, 401, "unauthorized")
				require.NotEmpty(t, res.header.Get("WWW-Authenticate"))
				return
			}
			require.Equal(t, 200, res.status)
			require.Len(t, res.body["events"], 5)
		})
	}

	// No configured token: the route is closed, even to an empty bearer.
	closed, err := metrics.NewPlatformHandler(newStore(t), metrics.PlatformConfig{})
	require.NoError(t, err)
	requireError(t, do(t, closed, http.MethodGet, "/__platform/events", map[string]string{"Authorization": "Bearer "}), 401, "unauthorized")
}

func TestPlatformEventsLimit(t *testing.T) {
	t.Parallel()
	h := newPlatform(t, newStore(t, traffic{api: "a", calls: 1200, callers: 3, hours: 10}))
	auth := map[string]string{"Authorization": "Bearer " + token}
	tests := []struct {
		query string
		want  int
	}{
		{"", 100},
		{"?limit=7", 7},
		{"?limit=1000", 1000},
		{"?limit=5000", 1000},
	}
	for _, tc := range tests {
		t.Run(tc.query, func(t *testing.T) {
			res := do(t, h, http.MethodGet, "/__platform/events"+tc.query, auth)
			require.Equal(t, 200, res.status)
			events := res.body["events"].([]any)
			require.Len(t, events, tc.want)
			prev := ""
			for _, e := range events {
				ts := e.(map[string]any)["time"].(string)
				if prev != "" {
					require.GreaterOrEqual(t, prev, ts, "newest first")
				}
				prev = ts
			}
		})
	}
	for _, q := range []string{"?limit=0", "?limit=-1", "?limit=abc", "?limit=1&limit=2"} {
		requireError(t, do(t, h, http.MethodGet, "/__platform/events"+q, auth), 400, "bad_request")
	}
	res := do(t, h, http.MethodGet, "/__platform/events?limit=1", auth)
	e := res.body["events"].([]any)[0].(map[string]any)
	for _, k := range []string{"time", "requestId", "apiId", "endpoint", "owner", "directory", "callerId", "status",
		"latencyMs", "priceUsd", "billedUsd", "lifecycle", "billable", "countable"} {
		require.Contains(t, e, k)
	}
	require.Equal(t, "no-store", res.header.Get("Cache-Control"))
}

func TestPlatformAnalytics(t *testing.T) {
	t.Parallel()
	h := newPlatform(t, newStore(t,
		traffic{api: "a", calls: 30, callers: 10, hours: 5, price: "0.01"},
		traffic{api: "b", calls: 20, callers: 10, hours: 5},
		traffic{api: "c", calls: 10, callers: 10, hours: 5},
	))
	res := do(t, h, http.MethodGet, "/__platform/analytics", nil)
	require.Equal(t, 200, res.status)
	require.Equal(t, "today", res.body["window"])
	require.Equal(t, "2025-03-10T23:30:00Z", res.body["generatedAt"])
	hero := res.body["hero"].(map[string]any)
	require.EqualValues(t, 4, hero["publishedApis"])
	require.EqualValues(t, 60, hero["calls"])
	require.Equal(t, "0.3", hero["revenueUsd"])
	require.Len(t, res.body["topApis"], 3)

	res = do(t, h, http.MethodGet, "/__platform/analytics?window=week&top=2", nil)
	require.Equal(t, 200, res.status)
	require.Equal(t, "week", res.body["window"])
	require.Len(t, res.body["topApis"], 2)

	res = do(t, h, http.MethodGet, "/__platform/analytics?window=", nil)
	require.Equal(t, "today", res.body["window"], "an empty window is the default")
	for _, q := range []string{"?window=month", "?window=WEEK", "?window=week&top=0", "?top=x", "?top=-3"} {
		requireError(t, do(t, h, http.MethodGet, "/__platform/analytics"+q, nil), 400, "bad_request")
	}
}

func TestPlatformRouting(t *testing.T) {
	t.Parallel()
	h := newPlatform(t, newStore(t))
	requireError(t, do(t, h, http.MethodGet, "/__platform/nope", nil), 404, "not_found")
	requireError(t, do(t, h, http.MethodGet, "/__platform/health/", nil), 404, "not_found")
	res := do(t, h, http.MethodPost, "/__platform/analytics", nil)
	requireError(t, res, 405, "method_not_allowed")
	require.Equal(t, "GET, HEAD", res.header.Get("Allow"))
}

func TestPlatformStoreFailure(t *testing.T) {
	t.Parallel()
	broken := &brokenStore{err: errors.New("db down")}
	h, err := metrics.NewPlatformHandler(broken, metrics.PlatformConfig{AdminToken: token})
	require.NoError(t, err)
	requireError(t, do(t, h, http.MethodGet, "/__platform/analytics", nil), 500, "internal_error")
	requireError(t, do(t, h, http.MethodGet, "/__platform/events", map[string]string{"Authorization": "Bearer " + token}), 500, "internal_error")
	_, err = metrics.NewPlatformHandler(nil, metrics.PlatformConfig{})
	require.Error(t, err)
}

type brokenStore struct{ err error }

func (b *brokenStore) Append(context.Context, ...metrics.UsageEvent) error { return b.err }
func (b *brokenStore) Recent(context.Context, int) ([]metrics.UsageEvent, error) {
	return nil, b.err
}
func (b *brokenStore) Rollups(context.Context, metrics.RollupQuery) ([]metrics.HourRollup, error) {
	return nil, b.err
}
