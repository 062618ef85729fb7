package marketplace

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// BenchmarkHomeCached serves the home page from the page cache: what a
// flood of requests costs.
func BenchmarkHomeCached(b *testing.B) {
	f := newFixture(b, nil)
	traffic(b, f.events, "weather", 200, 50, t0, "0.002")
	req := httptest.NewRequest(http.MethodGet, "/?window=week", nil)
	f.h.ServeHTTP(httptest.NewRecorder(), req)
	b.ReportAllocs()
	for b.Loop() {
		f.h.ServeHTTP(httptest.NewRecorder(), req)
	}
}

// BenchmarkHomeRender renders the home page every time (the clock moves
// past the cache TTL between requests).
func BenchmarkHomeRender(b *testing.B) {
	f := newFixture(b, nil)
	for _, api := range []string{"weather", "cities", "chat", "old", "sneaky"} {
		traffic(b, f.events, api, 200, 50, t0.Add(-time.Hour), "0.002")
	}
	req := httptest.NewRequest(http.MethodGet, "/?window=week", nil)
	b.ReportAllocs()
	for b.Loop() {
		f.clock.Add(DefaultCacheTTL)
		f.h.ServeHTTP(httptest.NewRecorder(), req)
	}
}

// BenchmarkAPIPageRender renders an API page (rollups, chart) every time.
func BenchmarkAPIPageRender(b *testing.B) {
	f := newFixture(b, nil)
	for h := 0; h < 24; h++ {
		traffic(b, f.events, "weather", 20, 10, t0.Add(-time.Duration(h)*time.Hour), "0.002")
	}
	req := httptest.NewRequest(http.MethodGet, "/apis/weather", nil)
	b.ReportAllocs()
	for b.Loop() {
		f.clock.Add(DefaultCacheTTL)
		f.h.ServeHTTP(httptest.NewRecorder(), req)
	}
}
