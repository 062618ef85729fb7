package discovery

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// benchDirectory has n charging tenants with three priced routes each
// (two declaring discovery) and a fallback price: 4n catalog items.
func benchDirectory(n int) string {
	var b strings.Builder
	b.WriteString(`{"tenants": [`)
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"slug": "api-%d", "workerName": "w", "x402Enabled": true, "priceUsd": "0.01", "directory": "d%d",
		 "routes": [{"method": "GET", "path": "/items/:id", "priceUsd": "0.002", "discovery": {"pathParams": {"id": "42"}, "output": {"example": {"id": 42}}}},
		            {"method": "POST", "path": "/search", "discovery": {"body": {"q": "x"}}},
		            {"path": "/bulk/*", "schemes": ["upto"], "maxPriceUsd": "0.1"}]}`, i, i%7)
	}
	b.WriteString(`]}`)
	return b.String()
}

// BenchmarkResources serves a filtered page of a 2,000-item catalog that is
// already built: the per-request cost.
func BenchmarkResources(b *testing.B) {
	f := newFixture(b)
	f.reg.Swap(mustDirectory(b, benchDirectory(500)))
	req := httptest.NewRequest(http.MethodGet, "/discovery/resources?limit=20&offset=100&scheme=exact&network=eip155:84532", nil)
	rec := httptest.NewRecorder()
	f.h.ServeHTTP(rec, req)
	if rec.Code != 200 {
		b.Fatal(rec.Body.String())
	}
	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		f.h.ServeHTTP(rec, req)
	}
}

// BenchmarkCatalogBuild rebuilds the 2,000-item catalog (a directory swap
// or a quality refresh): Offers, Bazaar declarations and fingerprints.
func BenchmarkCatalogBuild(b *testing.B) {
	f := newFixture(b)
	f.reg.Swap(mustDirectory(b, benchDirectory(500)))
	b.ReportAllocs()
	for b.Loop() {
		f.clock.Add(11 * time.Second) // past QualityTTL
		f.h.mu.Lock()
		f.h.cat = nil
		f.h.mu.Unlock()
		f.h.catalog(b.Context())
	}
}
