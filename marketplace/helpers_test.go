package marketplace

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shopspring/decimal"
	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/adapters/memory"
	"github.com/402claw/dispatcher/metrics"
	"github.com/402claw/dispatcher/tenant"
)

const testDirectory = `{"tenants": [
 {"slug": "weather", "workerName": "w-weather", "x402Enabled": true, "priceUsd": "0.01",
  "directory": "data", "ownerUserId": "u-wx", "schemes": ["exact", "exact-permit2"],
  "routes": [
   {"method": "GET", "path": "/forecast/:city", "priceUsd": "0.002", "description": "7-day forecast",
    "mimeType": "application/json",
    "discovery": {"pathParams": {"city": {"example": "Tokyo"}}, "output": {"example": {"city": "Tokyo"}}}},
   {"path": "/llm/*", "schemes": ["upto"], "priceUsd": "0.01", "maxPriceUsd": "0.50", "description": "pay for what you use"},
   {"method": "GET", "path": "/health", "priceUsd": "0"}
  ]},
 {"slug": "cities", "workerName": "w-cities", "x402Enabled": true, "priceUsd": "0.001", "directory": "data"},
 {"slug": "chat", "workerName": "w-chat", "x402Enabled": true, "priceUsd": "0.05", "directory": "ai"},
 {"slug": "old", "workerName": "w-old", "directory": "archive"},
 {"slug": "sneaky", "workerName": "w-sneaky", "x402Enabled": true, "priceUsd": "0.001",
  "directory": "<script>alert('dir')</script>", "ownerUserId": "<img src=x onerror=alert(1)>",
  "routes": [{"method": "GET", "path": "/x", "description": "<script>alert('route')</script>", "mimeType": "text/html\"><b>"}]}
]}`

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

var t0 = time.Date(2026, 3, 10, 15, 30, 0, 0, time.UTC)

// countingStore counts the rollup reads a render makes; it hides the
// memory store's RollupScanner so every read goes through Rollups.
type countingStore struct {
	metrics.Store
	reads atomic.Int64
}

func (s *countingStore) Rollups(ctx context.Context, q metrics.RollupQuery) ([]metrics.HourRollup, error) {
	s.reads.Add(1)
	return s.Store.Rollups(ctx, q)
}

type fixture struct {
	reg    *tenant.Registry
	events *memory.Events
	store  *countingStore
	clock  *clock
	h      *Handler
}

func newFixture(t testing.TB, mod func(*Config)) *fixture {
	t.Helper()
	d, err := tenant.ParseDirectory([]byte(testDirectory))
	require.NoError(t, err)
	f := &fixture{reg: tenant.NewRegistry(d), clock: &clock{t: t0}}
	f.events, err = memory.NewEvents(memory.EventsConfig{Now: f.clock.Now})
	require.NoError(t, err)
	f.store = &countingStore{Store: f.events}
	cfg := Config{Registry: f.reg, Events: f.store, Now: f.clock.Now, BaseURL: "https://api.example.com"}
	if mod != nil {
		mod(&cfg)
	}
	f.h, err = New(cfg)
	require.NoError(t, err)
	return f
}

var seq atomic.Int64

// traffic appends n served calls to api from callers distinct callers at
// time at; paid calls when price is not "".
func traffic(t testing.TB, ev metrics.Store, api string, n, callers int, at time.Time, price string) {
	t.Helper()
	var evs []metrics.UsageEvent
	for i := 0; i < n; i++ {
		e := metrics.UsageEvent{
			Time: at, RequestID: fmt.Sprintf("r-%d", seq.Add(1)), APIID: api, Endpoint: "/",
			CallerID: metrics.HashCaller(fmt.Sprintf("%s-caller-%d", api, i%callers)), Status: 200,
			Lifecycle: metrics.LifecycleServed, LatencyMs: 30,
		}
		if price != "" {
			e.Lifecycle = metrics.LifecyclePaymentSettled
			e.PriceUSD = mustDec(price)
			e.BilledUSD = mustDec(price)
		}
		evs = append(evs, e)
	}
	require.NoError(t, ev.Append(context.Background(), evs...))
}

func fetch(t testing.TB, h http.Handler, method, target string) (*http.Response, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(method, target, nil)
	req.Host = "market.example.com"
	h.ServeHTTP(rec, req)
	res := rec.Result()
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return res, string(b)
}

var rowRE = regexp.MustCompile(`<tr data-api="([^"]+)">`)

// leaderboard returns the API ids of the server-rendered leaderboard rows.
func leaderboard(body string) []string {
	var out []string
	for _, m := range rowRE.FindAllStringSubmatch(body, -1) {
		out = append(out, m[1])
	}
	return out
}

func mustDec(s string) decimal.Decimal { return decimal.RequireFromString(s) }
