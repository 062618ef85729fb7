package discovery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/adapters/memory"
	"github.com/402claw/dispatcher/metrics"
	"github.com/402claw/dispatcher/tenant"
	"github.com/402claw/dispatcher/x402"
)

const (
	payToA = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"
	payToB = "0x1111111111111111111111111111111111111111"
)

// fakeOffers builds requirements with x402.NewRequirement, one per scheme:
// "exact" as it is, any other scheme name on the same amount and asset with
// the scheme renamed (the real schemes live in the payment stage). The
// network is per tenant (default Base Sepolia); payTo is the tenant's or
// payToA.
type fakeOffers struct {
	mu       sync.Mutex
	networks map[string]string
	fail     map[string]bool
	calls    int
}

func (f *fakeOffers) Accepts(t *tenant.Tenant, p tenant.Priced, resourceURL string) ([]x402.Requirement, error) {
	f.mu.Lock()
	f.calls++
	nw, fail := f.networks[t.Slug], f.fail[t.Slug]
	f.mu.Unlock()
	if fail {
		return nil, errors.New("no payment configuration")
	}
	payTo := t.PayTo
	if payTo == "" {
		payTo = payToA
	}
	var out []x402.Requirement
	for _, s := range p.Schemes {
		price := p.PriceUSD
		if s == "upto" || s == "batch-settlement" {
			price = p.MaxPriceUSD
		}
		r, err := x402.NewRequirement(x402.RequirementParams{
			Network: nw, Price: price, PayTo: payTo, Resource: resourceURL,
			Description: p.Description, MimeType: p.MimeType,
		})
		if err != nil {
			return nil, err
		}
		if s != "exact" {
			r.Scheme = s
		}
		out = append(out, r)
	}
	return out, nil
}

// testDirectory has: weather (charging, routes with discovery, a free
// route), llm (upto on a wildcard route, on Base mainnet, own payTo), free
// (x402 disabled) and flat (tenant price only).
const testDirectory = `{"tenants": [
 {"slug": "weather", "workerName": "w-weather", "x402Enabled": true, "priceUsd": "0.01",
  "directory": "data", "ownerUserId": "u-wx",
  "routes": [
   {"method": "GET", "path": "/forecast/:city", "priceUsd": "0.002", "description": "7-day forecast",
    "mimeType": "application/json", "schemes": ["exact"],
    "discovery": {"queryParams": {"units": {"type": "string", "enum": ["metric", "imperial"]}},
                  "output": {"example": {"city": "Tokyo", "days": []}}}},
   {"method": "POST", "path": "/search", "priceUsd": "0.005", "mimeType": "application/json",
    "discovery": {"body": {"q": "rain"}, "bodySchema": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}}},
   {"method": "GET", "path": "/health", "priceUsd": "0"}
  ]},
 {"slug": "llm", "workerName": "w-llm", "x402Enabled": true, "priceUsd": "0", "directory": "ai",
  "payTo": "0x1111111111111111111111111111111111111111",
  "routes": [{"path": "/llm/*", "schemes": ["upto", "batch-settlement"], "priceUsd": "0.01", "maxPriceUsd": "0.50"}]},
 {"slug": "free", "workerName": "w-free", "priceUsd": "0.01"},
 {"slug": "flat", "workerName": "w-flat", "x402Enabled": true, "priceUsd": "0.001"}
]}`

func mustDirectory(t testing.TB, js string) *tenant.Directory {
	t.Helper()
	d, err := tenant.ParseDirectory([]byte(js))
	require.NoError(t, err)
	return d
}

type fixture struct {
	reg    *tenant.Registry
	offers *fakeOffers
	events *memory.Events
	clock  *clock
	h      *Handler
}

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

func newFixture(t testing.TB) *fixture {
	t.Helper()
	f := &fixture{
		reg:    tenant.NewRegistry(mustDirectory(t, testDirectory)),
		offers: &fakeOffers{networks: map[string]string{"llm": x402.NetworkBase}},
		clock:  &clock{t: t0},
	}
	ev, err := memory.NewEvents(memory.EventsConfig{Now: f.clock.Now})
	require.NoError(t, err)
	f.events = ev
	f.h, err = NewHandler(Config{
		Registry: f.reg, Offers: f.offers, Events: ev, BaseURL: "https://api.example.com/",
		Name: "Example marketplace", Now: f.clock.Now, QualityTTL: 10 * time.Second,
	})
	require.NoError(t, err)
	return f
}

// traffic appends n calls to api from callers distinct callers, at time at.
func (f *fixture) traffic(t testing.TB, api string, n, callers int, at time.Time) {
	t.Helper()
	var evs []metrics.UsageEvent
	for i := 0; i < n; i++ {
		evs = append(evs, metrics.UsageEvent{
			Time: at, RequestID: fmt.Sprintf("%s-%d-%d", api, at.UnixNano(), i), APIID: api,
			CallerID: metrics.HashCaller(fmt.Sprintf("caller-%d", i%callers)), Status: 200,
			Lifecycle: metrics.LifecycleServed, LatencyMs: 20,
		})
	}
	require.NoError(t, f.events.Append(context.Background(), evs...))
}

// get serves one request and decodes the JSON answer.
func get(t testing.TB, h http.Handler, target string) (int, map[string]any, *httptest.ResponseRecorder) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, target, nil))
	var body map[string]any
	if rec.Body.Len() > 0 {
		require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &body), rec.Body.String())
	}
	return rec.Code, body, rec
}

func list(t testing.TB, h http.Handler, target string) ListResponse {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, target, nil))
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	var out ListResponse
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &out))
	return out
}

func resources(l ListResponse) []string {
	out := make([]string, len(l.Items))
	for i, it := range l.Items {
		out[i] = it.Resource
	}
	return out
}
