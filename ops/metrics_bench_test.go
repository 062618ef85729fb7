package ops_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/402claw/dispatcher/adapters/memory"
	"github.com/402claw/dispatcher/dispatch"
	"github.com/402claw/dispatcher/kv"
	"github.com/402claw/dispatcher/ops"
)

// discardWriter is a ResponseWriter that keeps nothing, so the benchmark
// measures the gateway rather than a recorder.
type discardWriter struct{ h http.Header }

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *discardWriter) WriteHeader(int)             {}

// obsBenchCase is one set of hooks around the benchmark's dispatcher.
type obsBenchCase struct {
	name    string
	metrics bool
	tp      trace.TracerProvider // nil: no tracing wrappers
	log     bool
}

// obsBenchCases are bare, then the hooks added one by one: metrics
// (request sink and timed KV), tracing off (NewTracing without an
// endpoint), a raw no-op provider (wrappers in place), a warn-level log
// sink, and last a recording SDK tracer exporting nowhere.
func obsBenchCases(b *testing.B) []obsBenchCase {
	off, err := ops.NewTracing(context.Background(), ops.TracingConfig{Getenv: func(string) string { return "" }})
	if err != nil {
		b.Fatal(err)
	}
	sdk, err := ops.NewTracing(context.Background(), ops.TracingConfig{Exporter: tracetest.NewNoopExporter()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = sdk.Shutdown(context.Background()) })
	return []obsBenchCase{
		{"bare", false, nil, false},
		{"metrics", true, nil, false},
		{"metrics+tracing-off", true, off, false},
		{"metrics+noop-tracer", true, noop.NewTracerProvider(), false},
		{"metrics+noop-tracer+log", true, noop.NewTracerProvider(), true},
		{"metrics+sdk-tracer+log", true, sdk, true},
	}
}

// build returns the dispatcher of exampleGateway with c's hooks.
func (c obsBenchCase) build(b *testing.B) http.Handler {
	var sinks []dispatch.EventSink
	store := memory.NewKV()
	var kstore kv.Store = store
	if c.metrics {
		m, err := ops.NewMetrics(ops.MetricsConfig{})
		if err != nil {
			b.Fatal(err)
		}
		sinks = append(sinks, m.Sink())
		kstore = m.KVStore(store)
	}
	if c.tp != nil {
		sinks = append(sinks, ops.TraceSink())
	}
	if c.log {
		sinks = append(sinks, ops.LogSink(slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelWarn}))))
	}
	var events dispatch.EventSink
	if len(sinks) > 0 {
		events = dispatch.MultiSink(sinks...)
	}
	d := exampleGateway(kstore, events, func(f dispatch.Fetcher, s []dispatch.Stage) (dispatch.Fetcher, []dispatch.Stage) {
		if c.tp == nil {
			return f, s
		}
		return ops.TraceFetcher(c.tp, f), ops.TraceStages(c.tp, s...)
	})
	if c.tp == nil {
		return d
	}
	return ops.TraceHandler(c.tp, d)
}

// BenchmarkObservabilityOverhead measures one free request through a
// dispatcher on memory adapters (a KV-counting stage and an in-process
// worker) with each set of hooks of obsBenchCases.
func BenchmarkObservabilityOverhead(b *testing.B) {
	for _, c := range obsBenchCases(b) {
		b.Run(c.name, func(b *testing.B) {
			h := c.build(b)
			r := httptest.NewRequest("GET", "http://gateway.local/t/hello/", nil)
			w := &discardWriter{h: make(http.Header)}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				clear(w.h)
				h.ServeHTTP(w, r)
			}
		})
	}
}

// BenchmarkObservabilityOverheadPaired runs the bare dispatcher and an
// instrumented one in alternating batches of 64 requests, so that load
// from other processes on a shared machine falls on both alike, and
// reports the bare request's wall and CPU time and what the hooks add to
// each (overhead-ns/op, overhead-cpu-ns/op).
func BenchmarkObservabilityOverheadPaired(b *testing.B) {
	cases := obsBenchCases(b)
	bare := cases[0].build(b)
	for _, c := range cases[1:] {
		b.Run(c.name, func(b *testing.B) {
			h := c.build(b)
			r := httptest.NewRequest("GET", "http://gateway.local/t/hello/", nil)
			w := &discardWriter{h: make(http.Header)}
			const batch = 64
			var tBare, tInstr, cBare, cInstr time.Duration
			b.ResetTimer()
			for done := 0; done < b.N; done += batch {
				start, cStart := time.Now(), obsProcessCPU()
				for i := 0; i < batch; i++ {
					clear(w.h)
					bare.ServeHTTP(w, r)
				}
				mid, cMid := time.Now(), obsProcessCPU()
				for i := 0; i < batch; i++ {
					clear(w.h)
					h.ServeHTTP(w, r)
				}
				tInstr += time.Since(mid)
				cInstr += obsProcessCPU() - cMid
				tBare += mid.Sub(start)
				cBare += cMid - cStart
			}
			n := float64((b.N + batch - 1) / batch * batch)
			per := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / n }
			b.ReportMetric(per(tBare), "bare-ns/op")
			b.ReportMetric(per(tInstr-tBare), "overhead-ns/op")
			b.ReportMetric(per(cBare), "bare-cpu-ns/op")
			b.ReportMetric(per(cInstr-cBare), "overhead-cpu-ns/op")
		})
	}
}
