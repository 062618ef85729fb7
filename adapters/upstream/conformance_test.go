package upstream_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/402claw/dispatcher/adapters/upstream"
	"github.com/402claw/dispatcher/dispatch"
	"github.com/402claw/dispatcher/dispatch/fetchertest"
)

// upstreamHarness serves each of the suite's workers from its own HTTP
// server. net/http drops the connection of a panicking handler, which is
// how a crashed HTTP worker looks to the fetcher. A worker reports a limit
// breach itself, with 503 and X-Dispatch-Limit-Exceeded: 1.
var upstreamHarness = fetchertest.Harness{
	New: func(tb testing.TB, workers map[string]http.Handler) dispatch.Fetcher {
		table := make(map[string]string, len(workers))
		for name, h := range workers {
			srv := httptest.NewServer(h)
			tb.Cleanup(srv.Close)
			table[name] = srv.URL
		}
		f, err := upstream.New(upstream.Config{Workers: table})
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(f.CloseIdleConnections)
		return f
	},
	CanLimit: true,
	OverLimit: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(upstream.HeaderLimitExceeded, "1")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, "cpu budget of "+r.Header.Get(upstream.HeaderCPUMs)+" ms exceeded")
	}),
	Streams: true,
}

func TestFetcherConformance(t *testing.T) {
	t.Parallel()
	fetchertest.Run(t, upstreamHarness)
}

func BenchmarkFetcherConformance(b *testing.B) {
	fetchertest.Benchmark(b, upstreamHarness)
}
