package demo_test

import (
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/402claw/dispatcher/adapters/memory"
	"github.com/402claw/dispatcher/examples/httpserver/demo"
)

// BenchmarkDatasetWorkerRows serves a filtered page of a 10,000-row data
// set from the cache (one metadata read, a scan, JSON of 20 rows).
func BenchmarkDatasetWorkerRows(b *testing.B) {
	var sb strings.Builder
	sb.WriteString("id,name,country,population\n")
	for i := 0; i < 10000; i++ {
		fmt.Fprintf(&sb, "%d,City %d,C%d,%d\n", i, i, i%50, i*37)
	}
	store := memory.NewDatasets()
	putDataset(&testing.T{}, store, "big", sb.String())
	h := demo.NewDatasetWorker(store).Handler("big")
	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/rows?country=c7&min_population=1000&limit=20", nil))
		if rec.Code != 200 {
			b.Fatal(rec.Code)
		}
	}
}
