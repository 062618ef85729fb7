package demo_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/shopspring/decimal"
	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/adapters/upstream"
	"github.com/402claw/dispatcher/dispatch"
	"github.com/402claw/dispatcher/examples/httpserver/demo"
	"github.com/402claw/dispatcher/tenant"
)

func TestDemoDirectory(t *testing.T) {
	t.Parallel()
	dir, err := tenant.ParseDirectory([]byte(demo.DemoDirectoryJSON))
	require.NoError(t, err)
	require.Equal(t, 3, dir.Len())

	free, ok := dir.Lookup("demo")
	require.True(t, ok)
	require.Equal(t, demo.FreeWorkerName, free.WorkerName, "a free tenant never shares the paid tenant's worker")
	require.Equal(t, "free", free.Plan)
	require.False(t, free.Charges())
	require.Empty(t, free.Hosts)

	paid, ok := dir.Lookup("demo-paid")
	require.True(t, ok)
	require.Equal(t, demo.WorkerName, paid.WorkerName)
	require.Equal(t, "pro", paid.Plan)
	require.True(t, paid.Charges())
	require.True(t, paid.PriceUSD.Equal(decimal.RequireFromString("0.01")))
	require.Positive(t, paid.UsageLimit.DailyRequests)
	require.Positive(t, paid.UsageLimit.MonthlyRequests)
	require.True(t, paid.SpendLimit.DailySpendUSD.IsPositive())
	require.True(t, paid.SpendLimit.MonthlySpendUSD.IsPositive())
	require.Equal(t, "data", paid.Directory)

	// Per-route prices: a free index, a cheap listing, a dearer detail
	// route, and the tenant's own price for everything else.
	for _, c := range []struct {
		path, pattern, price string
		charges              bool
	}{
		{"/", "/", "0", false},
		{"/rows", "/rows", "0.001", true},
		{"/rows/", "/rows", "0.001", true},
		{"/rows/42", "/rows/:id", "0.003", true},
		{"/premium/rows", "", "0.01", true},
		{"/premium/rows/42", "", "0.01", true},
		{"/climate", "", "0.01", true},
	} {
		p := paid.PriceFor("GET", c.path)
		require.Equal(t, c.pattern, p.Pattern, c.path)
		require.True(t, p.PriceUSD.Equal(decimal.RequireFromString(c.price)), "%s: %s", c.path, p.PriceUSD)
		require.Equal(t, c.charges, p.Charges, c.path)
		require.Equal(t, []string{"exact"}, p.Schemes, c.path)
	}
	prices := map[string]bool{paid.PriceUSD.String(): true}
	for _, r := range paid.Routes {
		if r.PriceUSD.IsPositive() {
			require.False(t, prices[r.PriceUSD.String()], "%s: each priced route costs something different", r.Path)
			prices[r.PriceUSD.String()] = true
		}
		var doc map[string]any
		if r.Discovery != nil {
			require.NoError(t, json.Unmarshal(r.Discovery, &doc), r.Path)
		}
	}
	require.Len(t, prices, 3, "the tenant's price and two route prices")
	require.Contains(t, dir.Tenants()[1].Routes[1].Description, "cities")

	weather, ok := dir.Lookup("weather")
	require.True(t, ok)
	require.Equal(t, demo.FreeWorkerName, weather.WorkerName)
	require.False(t, weather.Charges())
	require.NotEqual(t, paid.Directory, weather.Directory, "a second marketplace directory")

	workers := demo.Workers()
	require.Len(t, workers, 2)
	require.NotNil(t, workers[demo.WorkerName])
	require.NotNil(t, workers[demo.FreeWorkerName])
	// The free worker serves the free parts and none of the paid ones.
	for path, want := range map[string]int{"/rows?limit=1": 200, "/premium/rows": 404, "/PREMIUM/rows/1": 404, "/metered/rows": 404} {
		rec := httptest.NewRecorder()
		workers[demo.FreeWorkerName].ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		require.Equal(t, want, rec.Code, path)
	}
}

// gatewayFor serves the demo directory through a dispatcher over fetcher.
func gatewayFor(t *testing.T, fetcher dispatch.Fetcher) *httptest.Server {
	t.Helper()
	dir, err := tenant.ParseDirectory([]byte(demo.DemoDirectoryJSON))
	require.NoError(t, err)
	d, err := dispatch.NewDispatcher(dispatch.Config{Tenants: tenant.NewRegistry(dir), Fetcher: fetcher})
	require.NoError(t, err)
	gw := httptest.NewServer(d)
	t.Cleanup(gw.Close)
	return gw
}

// climateServer is the enrichment target: the demo worker's own /climate.
func climateServer(t *testing.T) (*httptest.Server, func() int) {
	t.Helper()
	calls := make(chan struct{}, 1000)
	h := demo.NewCSVAPI()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls <- struct{}{}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, func() int { return len(calls) }
}

// TestEnrichmentCountsSubrequests runs enrich=1 in process and over HTTP:
// within the free plan's 10 subrequests the rows come back enriched; a page
// that needs more is 503 worker_limit_exceeded, having made exactly 10.
func TestEnrichmentCountsSubrequests(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"in process", "http upstream"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			climate, calls := climateServer(t)
			worker := demo.NewCSVAPI(demo.WithEnrichURL(climate.URL + "/climate"))
			var fetcher dispatch.Fetcher = dispatch.NewHandlerFetcher(map[string]http.Handler{demo.WorkerName: worker, demo.FreeWorkerName: worker})
			if mode == "http upstream" {
				ws := httptest.NewServer(worker)
				t.Cleanup(ws.Close)
				f, err := upstream.New(upstream.Config{Workers: map[string]string{demo.WorkerName: ws.URL, demo.FreeWorkerName: ws.URL}})
				require.NoError(t, err)
				t.Cleanup(f.CloseIdleConnections)
				fetcher = f
			}
			gw := gatewayFor(t, fetcher)

			resp, err := http.Get(gw.URL + "/t/demo/rows?country=FR&limit=3&enrich=1")
			require.NoError(t, err)
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
			var page struct {
				Rows []struct {
					Name       string `json:"name"`
					Enrichment struct {
						City string `json:"city"`
					} `json:"enrichment"`
				} `json:"rows"`
			}
			require.NoError(t, json.Unmarshal(body, &page))
			require.Len(t, page.Rows, 3)
			for _, r := range page.Rows {
				require.Equal(t, r.Name, r.Enrichment.City)
			}
			require.Equal(t, 3, calls())

			resp, err = http.Get(gw.URL + "/t/demo/rows?limit=20&enrich=1")
			require.NoError(t, err)
			body, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, string(body))
			require.Contains(t, string(body), `"error":"worker_limit_exceeded"`)
			require.Equal(t, 3+10, calls(), "exactly the free plan's 10 subrequests went out")
		})
	}
}

func TestThroughDispatcher(t *testing.T) {
	t.Parallel()
	gw := gatewayFor(t, dispatch.NewHandlerFetcher(demo.Workers()))
	for _, c := range []struct {
		path   string
		status int
	}{
		{"/t/demo/rows?country=JP&limit=2", http.StatusOK},
		{"/t/weather/climate?city=Oslo", http.StatusOK},
		{"/t/demo/rows/9999", http.StatusNotFound},
		{"/t/demo/rows?limit=0", http.StatusBadRequest},
	} {
		resp, err := http.Get(gw.URL + c.path)
		require.NoError(t, err)
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.Equal(t, c.status, resp.StatusCode, fmt.Sprintf("%s: %s", c.path, body))
		require.NotEmpty(t, resp.Header.Get("X-Request-Id"))
	}
}

// TestRoutedPathsAreServed: every route demo-paid prices is a path the demo
// worker answers 200 on, so the prices are for real endpoints.
func TestRoutedPathsAreServed(t *testing.T) {
	t.Parallel()
	dir, err := tenant.ParseDirectory([]byte(demo.DemoDirectoryJSON))
	require.NoError(t, err)
	paid, _ := dir.Lookup("demo-paid")
	require.Len(t, paid.Routes, 5)
	worker := demo.NewCSVAPI()
	for _, r := range paid.Routes {
		path := strings.ReplaceAll(r.Path, ":id", "1")
		if path == "/rows" {
			path += "?limit=2"
		}
		require.Equal(t, r.Path, paid.PriceFor(r.Method, path).Pattern)
		rec := httptest.NewRecorder()
		worker.ServeHTTP(rec, httptest.NewRequest(r.Method, path, nil))
		require.Equal(t, http.StatusOK, rec.Code, "%s %s: %s", r.Method, path, rec.Body)
	}
}

// The metered listing reports its charge by rows returned, as the upto
// route's worker contract asks.
func TestMeteredListingReportsItsCharge(t *testing.T) {
	t.Parallel()
	worker := demo.NewCSVAPI()
	for _, tc := range []struct {
		query string
		want  string
	}{{"?limit=3", `{"amount":"300"}`}, {"?limit=1", `{"amount":"100"}`}, {"?country=XX", `{"amount":"0"}`}} {
		rec := httptest.NewRecorder()
		worker.ServeHTTP(rec, httptest.NewRequest("GET", "/metered/rows"+tc.query, nil))
		require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
		require.Equal(t, tc.want, rec.Header().Get("Settlement-Overrides"), tc.query)
	}
}
