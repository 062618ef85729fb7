package ops_test

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"sort"
	"strings"

	"github.com/shopspring/decimal"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/402claw/dispatcher/adapters/memory"
	"github.com/402claw/dispatcher/dispatch"
	"github.com/402claw/dispatcher/kv"
	"github.com/402claw/dispatcher/ops"
	"github.com/402claw/dispatcher/tenant"
)

// exampleGateway is a dispatcher on memory adapters: one free tenant whose
// worker says hello, behind a stage that counts calls in a KV store.
func exampleGateway(store kv.Store, events dispatch.EventSink, wrap func(dispatch.Fetcher, []dispatch.Stage) (dispatch.Fetcher, []dispatch.Stage)) *dispatch.Dispatcher {
	dir, err := tenant.ParseDirectory([]byte(`{"tenants":[{"slug":"hello","workerName":"hello-worker"}]}`))
	if err != nil {
		panic(err)
	}
	var fetcher dispatch.Fetcher = dispatch.NewHandlerFetcher(map[string]http.Handler{
		"hello-worker": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "hello") }),
	})
	stages := []dispatch.Stage{ops.NamedStage("count", dispatch.StageFunc(func(ctx context.Context, x *dispatch.Exchange, next dispatch.Next) (*http.Response, error) {
		if _, _, err := store.Incr(ctx, "calls:"+x.Payload.TenantID, kv.Increment{Delta: 1, Max: kv.Unbounded}); err != nil {
			return nil, err
		}
		return next(ctx, x)
	}))}
	if wrap != nil {
		fetcher, stages = wrap(fetcher, stages)
	}
	d, err := dispatch.NewDispatcher(dispatch.Config{Tenants: tenant.NewRegistry(dir), Fetcher: fetcher, Stages: stages, Events: events})
	if err != nil {
		panic(err)
	}
	return d
}

// printSeries prints the scraped lines of the named metrics, sorted.
func printSeries(h http.Handler, token string, names ...string) {
	r := httptest.NewRequest("GET", "/metrics", nil)
	r.Header.Set("Authorization", "Bearer "+token)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	var lines []string
	sc := bufio.NewScanner(w.Body)
	for sc.Scan() {
		for _, n := range names {
			if strings.HasPrefix(sc.Text(), n+"{") || strings.HasPrefix(sc.Text(), n+" ") {
				lines = append(lines, sc.Text())
			}
		}
	}
	sort.Strings(lines)
	fmt.Println(strings.Join(lines, "\n"))
}

func ExampleNewMetrics() {
	m, err := ops.NewMetrics(ops.MetricsConfig{Token: "metrics-secret"})
	if err != nil {
		panic(err)
	}
	store := m.KVStore(memory.NewKV()) // timed into dispatcher_store_duration_seconds
	d := exampleGateway(store, m.Sink(), nil)
	for _, path := range []string{"/t/hello/a", "/t/hello/b", "/t/nobody/"} {
		d.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "http://gateway.local"+path, nil))
	}
	m.Settlement("hello", "exact", "settled", decimal.RequireFromString("0.25"))
	m.CountDropped(func() uint64 { return 0 })

	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	printSeries(mux, "metrics-secret", ops.MetricRequests, ops.MetricSettlements, ops.MetricSettledUSD,
		ops.MetricEventsDropped, ops.MetricRequestDuration+"_count", ops.MetricStoreDuration+"_count")
	// Output:
	// dispatcher_events_dropped_total 0
	// dispatcher_request_duration_seconds_count 2
	// dispatcher_requests_total{lifecycle="served",status="200",tenant="hello"} 2
	// dispatcher_settled_usd_total{tenant="hello"} 0.25
	// dispatcher_settlements_total{scheme="exact",status="settled",tenant="hello"} 1
	// dispatcher_store_duration_seconds_count{op="kv_delete"} 0
	// dispatcher_store_duration_seconds_count{op="kv_get"} 0
	// dispatcher_store_duration_seconds_count{op="kv_incr"} 2
	// dispatcher_store_duration_seconds_count{op="kv_incr_all"} 0
	// dispatcher_store_duration_seconds_count{op="kv_set"} 0
	// dispatcher_store_duration_seconds_count{op="kv_setnx"} 0
	// dispatcher_store_duration_seconds_count{op="ledger_append_audit"} 0
	// dispatcher_store_duration_seconds_count{op="ledger_append_settlement"} 0
	// dispatcher_store_duration_seconds_count{op="ledger_entries_by_key"} 0
	// dispatcher_store_duration_seconds_count{op="ledger_get_entry"} 0
	// dispatcher_store_duration_seconds_count{op="ledger_list_audit"} 0
	// dispatcher_store_duration_seconds_count{op="ledger_list_entries"} 0
}

func ExampleLogSink() {
	logger := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{
		Level: slog.LevelDebug,
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			switch a.Key {
			case slog.TimeKey, "requestId", "duration": // they vary from run to run
				return slog.Attr{}
			}
			return a
		},
	}))
	d := exampleGateway(memory.NewKV(), ops.LogSink(logger), nil)
	d.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "http://gateway.local/t/hello/", nil))
	// Output:
	// level=DEBUG msg=request tenant=hello lifecycle=served status=200 worker=hello-worker
}

func ExampleTraceHandler() {
	// In a server: tr, err := ops.NewTracing(ctx, ops.TracingConfig{}),
	// which exports over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set.
	exp := tracetest.NewInMemoryExporter()
	tr, err := ops.NewTracing(context.Background(), ops.TracingConfig{Exporter: exp})
	if err != nil {
		panic(err)
	}
	d := exampleGateway(memory.NewKV(), ops.TraceSink(), func(f dispatch.Fetcher, s []dispatch.Stage) (dispatch.Fetcher, []dispatch.Stage) {
		return ops.TraceFetcher(tr, f), ops.TraceStages(tr, s...)
	})
	h := ops.TraceHandler(tr, d)
	r := httptest.NewRequest("GET", "http://gateway.local/t/hello/", nil)
	r.Header.Set("Traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	h.ServeHTTP(httptest.NewRecorder(), r)
	if err := tr.ForceFlush(context.Background()); err != nil {
		panic(err)
	}
	spans := exp.GetSpans()
	for _, s := range spans {
		parent := "client"
		for _, p := range spans {
			if p.SpanContext.SpanID() == s.Parent.SpanID() {
				parent = p.Name
			}
		}
		lifecycle := ""
		for _, a := range s.Attributes {
			if a.Key == ops.AttrLifecycle {
				lifecycle = " lifecycle=" + a.Value.AsString()
			}
		}
		fmt.Printf("%s (in %s) trace %s%s\n", s.Name, parent, s.SpanContext.TraceID(), lifecycle)
	}
	_ = tr.Shutdown(context.Background())
	// Output:
	// worker (in stage count) trace 4bf92f3577b34da6a3ce929d0e0e4736
	// stage count (in GET) trace 4bf92f3577b34da6a3ce929d0e0e4736
	// GET (in client) trace 4bf92f3577b34da6a3ce929d0e0e4736 lifecycle=served
}
