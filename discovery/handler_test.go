package discovery

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/metrics"
	"github.com/402claw/dispatcher/tenant"
	"github.com/402claw/dispatcher/x402"
)

func TestListsEveryPricedEndpointBeforeAnyPayment(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	l := list(t, f.h, "/discovery/resources")
	require.Equal(t, 2, l.X402Version)
	require.Equal(t, []string{
		// tenants by slug, routes in directory order, the tenant price last
		"https://api.example.com/t/flat/",
		"https://api.example.com/t/llm/llm/:rest",
		"https://api.example.com/t/weather/forecast/:city",
		"https://api.example.com/t/weather/search",
		"https://api.example.com/t/weather/",
	}, resources(l), "free routes and tenants without x402 are not listed")
	require.Equal(t, Pagination{Limit: 20, Offset: 0, Total: 5}, l.Pagination)
	require.Empty(t, l.UnappliedFilters)

	wx := l.Items[2]
	require.Equal(t, "http", wx.Type)
	require.Equal(t, 2, wx.X402Version)
	require.Equal(t, t0.Unix(), wx.LastUpdated)
	require.Equal(t, "7-day forecast", wx.Description)
	require.Equal(t, Metadata{APIID: "weather", Category: "data", Provider: "u-wx", Method: "GET",
		Path: "/forecast/:city", RouteTemplate: "/t/weather/forecast/:city", PriceUSD: "0.002", Schemes: []string{"exact"}}, wx.Metadata)
	require.Len(t, wx.Accepts, 1)
	require.Equal(t, x402.PaymentRequirements{Scheme: "exact", Network: "eip155:84532", Amount: "2000",
		Asset: "0x036CbD53842c5426634e7929541eC2318f3dCF7e", PayTo: payToA, MaxTimeoutSeconds: x402.DefaultMaxTimeoutSeconds,
		Extra: map[string]any{"name": "USDC", "version": "2"}}, wx.Accepts[0])
	require.Contains(t, wx.Extensions, "bazaar")
	var ext map[string]any
	require.NoError(t, json.Unmarshal(wx.Extensions["bazaar"], &ext))
	require.Equal(t, "/t/weather/forecast/:city", ext["routeTemplate"])

	llm := l.Items[1]
	require.Equal(t, []string{"upto", "batch-settlement"}, []string{llm.Accepts[0].Scheme, llm.Accepts[1].Scheme})
	require.Equal(t, "500000", llm.Accepts[0].Amount, "upto offers the maximum")
	require.Equal(t, "0.5", llm.Metadata.MaxPriceUSD)
	require.Equal(t, "eip155:8453", llm.Accepts[0].Network)
	require.Nil(t, llm.Extensions, "no discovery declared")

	fallback := l.Items[4]
	require.Equal(t, "/*", fallback.Metadata.Path)
	require.Equal(t, "0.01", fallback.Metadata.PriceUSD)
	require.Empty(t, fallback.Metadata.Method)
}

func TestWireShape(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	_, body, rec := get(t, f.h, "/discovery/resources?limit=1")
	require.Equal(t, "application/json", rec.Header().Get("Content-Type"))
	require.Equal(t, "*", rec.Header().Get("Access-Control-Allow-Origin"))
	require.NotEmpty(t, rec.Header().Get("X-Request-Id"))
	require.Equal(t, []string{"items", "pagination", "x402Version"}, keys(body))
	item := body["items"].([]any)[0].(map[string]any)
	require.Equal(t, []string{"accepts", "lastUpdated", "metadata", "quality", "resource", "type", "x402Version"}, keys(item))
	require.Equal(t, map[string]any{"l30DaysTotalCalls": 0.0, "l30DaysUniquePayers": 0.0}, item["quality"])
	require.Equal(t, map[string]any{"limit": 1.0, "offset": 0.0, "total": 5.0}, body["pagination"])
	require.IsType(t, 0.0, item["lastUpdated"], "a Unix timestamp, as section 8.2 of the v2 specification has it")
}

func keys(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sortStrings(out)
	return out
}

func sortStrings(s []string) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}

func TestPagination(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	all := resources(list(t, f.h, "/discovery/resources?limit=100"))
	var paged []string
	for off := 0; off < 7; off += 2 {
		l := list(t, f.h, fmt.Sprintf("/discovery/resources?limit=2&offset=%d", off))
		require.Equal(t, 5, l.Pagination.Total)
		require.Equal(t, off, l.Pagination.Offset)
		require.LessOrEqual(t, len(l.Items), 2)
		paged = append(paged, resources(l)...)
	}
	require.Equal(t, all, paged)
	l := list(t, f.h, "/discovery/resources?offset=5")
	require.Empty(t, l.Items)
	require.NotNil(t, l.Items, "an empty page is [] not null")
	require.Equal(t, 5, l.Pagination.Total)
}

func TestBadParametersAre400(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	for _, q := range []string{
		"limit=0", "limit=101", "limit=-1", "limit=abc", "limit=1.5", "limit=", "limit=+5", "limit=9999999999",
		"offset=-1", "offset=x", "offset=1000001",
		"limit=5&limit=6", "type=http&type=mcp",
		"network=!!!", "network=eip155", "network=EIP155:1", "network=eip155:" + strings.Repeat("1", 33),
		"type=HTTP", "type=", "scheme=ex%20act", "payTo=0x%3Cscript%3E", "payTo=", "extensions=a,,b", "extensions=%21",
	} {
		code, body, rec := get(t, f.h, "/discovery/resources?"+q)
		require.Equal(t, http.StatusBadRequest, code, q)
		require.Equal(t, false, body["ok"], q)
		require.Equal(t, "bad_request", body["error"], q)
		require.NotEmpty(t, body["message"], q)
		require.Equal(t, rec.Header().Get("X-Request-Id"), body["requestId"], q)
	}
}

func TestFilters(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	for _, tc := range []struct {
		query string
		want  []string
	}{
		{"type=http", []string{"/t/flat/", "/t/llm/llm/:rest", "/t/weather/forecast/:city", "/t/weather/search", "/t/weather/"}},
		{"type=mcp", nil},
		{"scheme=upto", []string{"/t/llm/llm/:rest"}},
		{"scheme=batch-settlement", []string{"/t/llm/llm/:rest"}},
		{"scheme=exact", []string{"/t/flat/", "/t/weather/forecast/:city", "/t/weather/search", "/t/weather/"}},
		{"network=eip155:8453", []string{"/t/llm/llm/:rest"}},
		{"network=base", []string{"/t/llm/llm/:rest"}},
		{"network=eip155:84532", []string{"/t/flat/", "/t/weather/forecast/:city", "/t/weather/search", "/t/weather/"}},
		{"payTo=" + strings.ToLower(payToB), []string{"/t/llm/llm/:rest"}},
		{"extensions=bazaar", []string{"/t/weather/forecast/:city", "/t/weather/search"}},
		{"extensions=bazaar,payment-identifier", nil},
		{"scheme=exact&network=eip155:8453", nil},
		{"scheme=exact&limit=1&offset=1", []string{"/t/weather/forecast/:city"}},
	} {
		l := list(t, f.h, "/discovery/resources?"+tc.query)
		var got []string
		for _, r := range resources(l) {
			got = append(got, strings.TrimPrefix(r, "https://api.example.com"))
		}
		require.Equal(t, tc.want, got, tc.query)
		if tc.want == nil {
			require.Equal(t, 0, l.Pagination.Total, tc.query)
		}
	}
}

// TestBazaarDiscoveryConformanceVectors runs the filter vectors of
// specs/extensions/bazaar_discovery_conformance.md (x402) with the
// assertions of its runner.
func TestBazaarDiscoveryConformanceVectors(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	base := list(t, f.h, "/discovery/resources?limit=50")
	require.NotEmpty(t, base.Items, "V0 baseline")

	type vector struct {
		id, param, kind, value string
	}
	vectors := []vector{
		{"V1", "type", "well-formed", "mcp"},
		{"V2", "payTo", "well-formed", "0x0000000000000000000000000000000000000001"},
		{"V3", "scheme", "well-formed", "batch-settlement"},
		{"V4", "network", "well-formed", "eip155:999999999"},
		{"V5", "extensions", "well-formed", "payment-identifier"},
		{"V6", "network", "malformed", "!!!"},
	}
	// V7: the least common network present on some but not all V0 items.
	counts := map[string]int{}
	for _, it := range base.Items {
		seen := map[string]bool{}
		for _, a := range it.Accepts {
			if !seen[a.Network] {
				seen[a.Network] = true
				counts[a.Network]++
			}
		}
	}
	control, least := "", len(base.Items)
	for nw, n := range counts {
		if n < least || n == least && nw < control {
			control, least = nw, n
		}
	}
	require.NotEmpty(t, control, "the fixture must have a discriminating network")
	vectors = append(vectors, vector{"V7", "network", "positive", control})

	satisfies := func(raw map[string]any, param, value string) bool {
		accepts := raw["accepts"].([]any)
		for _, a := range accepts {
			a := a.(map[string]any)
			switch param {
			case "network", "scheme":
				if a[param] == value {
					return true
				}
			case "payTo":
				if strings.EqualFold(a["payTo"].(string), value) {
					return true
				}
			}
		}
		switch param {
		case "type":
			return raw["type"] == value
		case "extensions":
			ext, ok := raw["extensions"].(map[string]any)
			_, has := ext[value]
			return ok && has
		}
		return false
	}
	for _, v := range vectors {
		t.Run(v.id, func(t *testing.T) {
			code, body, _ := get(t, f.h, "/discovery/resources?limit=50&"+url.Values{v.param: {v.value}}.Encode())
			if code == http.StatusBadRequest {
				require.Equal(t, "malformed", v.kind, "400 is allowed only for malformed input")
				require.NotEmpty(t, strings.TrimSpace(body["error"].(string)))
				return
			}
			require.Equal(t, http.StatusOK, code)
			if u, ok := body["unappliedFilters"].([]any); ok {
				for _, p := range u {
					require.NotEqual(t, v.param, p, "this handler applies every filter of the vectors")
				}
			}
			items := body["items"].([]any)
			if v.kind == "positive" {
				require.NotEmpty(t, items)
				require.Less(t, len(items), len(base.Items), "the control must exclude known non-matches")
			}
			for _, it := range items {
				require.True(t, satisfies(it.(map[string]any), v.param, v.value), "%s: %v", v.id, it)
			}
			if len(items) == 0 {
				require.Equal(t, 0.0, body["pagination"].(map[string]any)["total"])
			}
		})
	}
}

func TestUnknownParametersAreListedUnapplied(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	l := list(t, f.h, "/discovery/resources?metadata%5Bprovider%5D=Coinbase&query=x&limit=3")
	require.Equal(t, []string{"metadata[provider]", "query"}, l.UnappliedFilters)
	require.Len(t, l.Items, 3)
}

func TestFollowsTheLiveDirectory(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	before := list(t, f.h, "/discovery/resources")
	f.clock.Add(time.Hour)
	// weather's search route gets a new price; a new tenant appears.
	js := strings.Replace(testDirectory, `"priceUsd": "0.005"`, `"priceUsd": "0.006"`, 1)
	js = strings.Replace(js, `{"slug": "flat"`, `{"slug": "new", "workerName": "w-new", "x402Enabled": true, "priceUsd": "1"},
 {"slug": "flat"`, 1)
	_, err := f.reg.Replace([]byte(js))
	require.NoError(t, err)
	after := list(t, f.h, "/discovery/resources")
	require.Equal(t, 6, after.Pagination.Total)
	byURL := map[string]Item{}
	for _, it := range after.Items {
		byURL[it.Resource] = it
	}
	require.Equal(t, t0.Add(time.Hour).Unix(), byURL["https://api.example.com/t/new/"].LastUpdated)
	require.Equal(t, t0.Add(time.Hour).Unix(), byURL["https://api.example.com/t/weather/search"].LastUpdated, "changed")
	require.Equal(t, "6000", byURL["https://api.example.com/t/weather/search"].Accepts[0].Amount)
	require.Equal(t, before.Items[2].LastUpdated, byURL["https://api.example.com/t/weather/forecast/:city"].LastUpdated, "unchanged items keep their time")
}

func TestQualityFromAnalyticsIsCachedBriefly(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.traffic(t, "weather", 30, 7, t0.Add(-2*time.Hour))
	f.traffic(t, "weather", 5, 2, t0.Add(-40*24*time.Hour)) // older than 30 days
	f.traffic(t, "llm", 4, 4, t0.Add(-29*24*time.Hour))
	q := func() map[string]Quality {
		out := map[string]Quality{}
		for _, it := range list(t, f.h, "/discovery/resources").Items {
			out[it.Metadata.APIID] = it.Quality
		}
		return out
	}
	got := q()
	require.Equal(t, Quality{L30DaysTotalCalls: 30, L30DaysUniquePayers: 7}, got["weather"])
	require.Equal(t, Quality{L30DaysTotalCalls: 4, L30DaysUniquePayers: 4}, got["llm"])
	require.Equal(t, Quality{}, got["flat"])

	f.traffic(t, "flat", 3, 3, t0)
	require.Equal(t, Quality{}, q()["flat"], "cached for QualityTTL")
	f.clock.Add(9 * time.Second)
	require.Equal(t, Quality{}, q()["flat"])
	f.clock.Add(time.Second)
	require.Equal(t, Quality{L30DaysTotalCalls: 3, L30DaysUniquePayers: 3}, q()["flat"], "refreshed after the TTL")
}

func TestEndpointsWithoutOffersAreLeftOut(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.offers.fail = map[string]bool{"weather": true}
	l := list(t, f.h, "/discovery/resources")
	require.Equal(t, []string{"https://api.example.com/t/flat/", "https://api.example.com/t/llm/llm/:rest"}, resources(l))
}

func TestTenantHosts(t *testing.T) {
	t.Parallel()
	reg := tenant.NewRegistry(mustDirectory(t, `{"tenants": [{"slug": "acme", "workerName": "w", "x402Enabled": true,
	  "priceUsd": "0.01", "hosts": ["acme.api.example.com"], "routes": [{"path": "/rows/:id", "priceUsd": "0.02"}]}]}`))
	h, err := NewHandler(Config{Registry: reg, Offers: &fakeOffers{}, BaseURL: "https://api.example.com", UseTenantHosts: true})
	require.NoError(t, err)
	l := list(t, h, "/discovery/resources")
	require.Equal(t, []string{"https://acme.api.example.com/rows/:id", "https://acme.api.example.com/"}, resources(l))
	require.Equal(t, "/rows/:id", l.Items[0].Metadata.RouteTemplate)
}

func TestWellKnownPointsToTheCatalog(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	code, body, rec := get(t, f.h, "/.well-known/x402")
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "*", rec.Header().Get("Access-Control-Allow-Origin"))
	require.Equal(t, 2.0, body["x402Version"])
	require.Equal(t, "resource-server", body["kind"])
	require.Equal(t, "Example marketplace", body["name"])
	require.Equal(t, map[string]any{"resources": "https://api.example.com/discovery/resources"}, body["discovery"])
	res := body["resources"].([]any)
	require.Len(t, res, 5)
	require.Equal(t, map[string]any{"url": "https://api.example.com/t/weather/forecast/:city", "method": "GET", "description": "7-day forecast"}, res[2])
	require.Equal(t, t0.Format(time.RFC3339), body["updated"])
}

func TestMethodsAndUnknownPaths(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	for _, m := range []string{http.MethodPost, http.MethodPut, http.MethodDelete} {
		rec := httptest.NewRecorder()
		f.h.ServeHTTP(rec, httptest.NewRequest(m, "/discovery/resources", nil))
		require.Equal(t, http.StatusMethodNotAllowed, rec.Code)
		require.Equal(t, "GET, HEAD", rec.Header().Get("Allow"))
	}
	rec := httptest.NewRecorder()
	f.h.ServeHTTP(rec, httptest.NewRequest(http.MethodHead, "/discovery/resources", nil))
	require.Equal(t, http.StatusOK, rec.Code)
	code, body, _ := get(t, f.h, "/discovery/other")
	require.Equal(t, http.StatusNotFound, code)
	require.Equal(t, "not_found", body["error"])
}

func TestNewHandlerValidatesConfig(t *testing.T) {
	t.Parallel()
	reg := tenant.NewRegistry(nil)
	for _, cfg := range []Config{
		{Offers: &fakeOffers{}, BaseURL: "https://x"},
		{Registry: reg, BaseURL: "https://x"},
		{Registry: reg, Offers: &fakeOffers{}},
		{Registry: reg, Offers: &fakeOffers{}, BaseURL: "ftp://x"},
		{Registry: reg, Offers: &fakeOffers{}, BaseURL: "/relative"},
	} {
		_, err := NewHandler(cfg)
		require.Error(t, err)
	}
}

// TestConcurrentReadsDuringSwaps lists from many goroutines while the
// directory is swapped back and forth: every answer is one directory's
// whole catalog, never a mix.
func TestConcurrentReadsDuringSwaps(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	small := mustDirectory(t, `{"tenants": [{"slug": "flat", "workerName": "w", "x402Enabled": true, "priceUsd": "0.001"}]}`)
	big := f.reg.Load()
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if i%2 == 0 {
				f.reg.Swap(small)
			} else {
				f.reg.Swap(big)
			}
			f.clock.Add(time.Second)
		}
	}()
	const readers, reads = 16, 50
	var mu sync.Mutex
	totals := map[int]int{}
	var rw sync.WaitGroup
	for g := 0; g < readers; g++ {
		rw.Add(1)
		go func() {
			defer rw.Done()
			for i := 0; i < reads; i++ {
				rec := httptest.NewRecorder()
				f.h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/discovery/resources?limit=100", nil))
				var l ListResponse
				if err := json.Unmarshal(rec.Body.Bytes(), &l); err != nil || rec.Code != 200 || len(l.Items) != l.Pagination.Total {
					t.Errorf("bad answer %d %s", rec.Code, rec.Body.String())
					return
				}
				mu.Lock()
				totals[l.Pagination.Total]++
				mu.Unlock()
			}
		}()
	}
	rw.Wait()
	close(stop)
	wg.Wait()
	n := 0
	for total, c := range totals {
		require.Contains(t, []int{1, 5}, total)
		n += c
	}
	require.Equal(t, readers*reads, n)
}

// TestPreencodedListMatchesList: the handler's pre-encoded page is the JSON
// of List for the same query.
func TestPreencodedListMatchesList(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.traffic(t, "weather", 5, 2, t0)
	cat := f.h.catalog(t.Context())
	for _, raw := range []string{"", "limit=2&offset=1", "scheme=exact", "type=mcp", "offset=9", "x=1&extensions=bazaar"} {
		v, err := url.ParseQuery(raw)
		require.NoError(t, err)
		q, err := ParseQuery(v)
		require.NoError(t, err)
		want, err := json.Marshal(List(cat.items, q))
		require.NoError(t, err)
		require.JSONEq(t, string(want), string(cat.list(q)), raw)
	}
}

// countingStore counts the rollup queries quality figures make.
type countingStore struct {
	metrics.Store
	mu    sync.Mutex
	reads int
}

func (s *countingStore) Rollups(ctx context.Context, q metrics.RollupQuery) ([]metrics.HourRollup, error) {
	s.mu.Lock()
	s.reads++
	s.mu.Unlock()
	return s.Store.Rollups(ctx, q)
}

// TestQualityQueriedOncePerTTL: many concurrent requests share one 30-day
// query per QualityTTL, and one catalog build.
func TestQualityQueriedOncePerTTL(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	cs := &countingStore{Store: f.events}
	h, err := NewHandler(Config{Registry: f.reg, Offers: f.offers, Events: cs, BaseURL: "https://api.example.com",
		Now: f.clock.Now, QualityTTL: 10 * time.Second})
	require.NoError(t, err)
	burst := func() {
		var wg sync.WaitGroup
		for i := 0; i < 32; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/discovery/resources", nil))
				if rec.Code != http.StatusOK {
					t.Errorf("status %d", rec.Code)
				}
			}()
		}
		wg.Wait()
	}
	burst()
	require.Equal(t, 1, cs.reads)
	f.offers.mu.Lock()
	builds := f.offers.calls
	f.offers.mu.Unlock()
	require.Equal(t, 5, builds, "one Accepts call per listed endpoint, once")
	f.clock.Add(5 * time.Second)
	burst()
	require.Equal(t, 1, cs.reads)
	f.clock.Add(5 * time.Second)
	burst()
	require.Equal(t, 2, cs.reads)
	f.offers.mu.Lock()
	require.Equal(t, 5, f.offers.calls, "unchanged quality: the catalog is not rebuilt")
	f.offers.mu.Unlock()
}
