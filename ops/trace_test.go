package ops_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/402claw/dispatcher/adapters/memory"
	"github.com/402claw/dispatcher/dispatch"
	"github.com/402claw/dispatcher/kv"
	"github.com/402claw/dispatcher/ops"
	"github.com/402claw/dispatcher/x402"
)

const (
	incomingTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
	incomingSpan  = "00f067aa0ba902b7"
	incomingTP    = "00-" + incomingTrace + "-" + incomingSpan + "-01"
)

// newTestTracing is a real SDK provider exporting to tracetest's in-memory
// exporter through NewTracing.
func newTestTracing(t testing.TB) (*ops.Tracing, *tracetest.InMemoryExporter) {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	tr, err := ops.NewTracing(context.Background(), ops.TracingConfig{Exporter: exp, ServiceName: "gw-test"})
	require.NoError(t, err)
	require.True(t, tr.Enabled())
	t.Cleanup(func() { _ = tr.Shutdown(context.Background()) })
	return tr, exp
}

// spans flushes tr and returns the spans exported so far.
func spans(t testing.TB, tr *ops.Tracing, exp *tracetest.InMemoryExporter) tracetest.SpanStubs {
	t.Helper()
	require.NoError(t, tr.ForceFlush(context.Background()))
	return exp.GetSpans()
}

func byName(t testing.TB, ss tracetest.SpanStubs, name string) tracetest.SpanStub {
	t.Helper()
	var found []tracetest.SpanStub
	for _, s := range ss {
		if s.Name == name {
			found = append(found, s)
		}
	}
	require.Len(t, found, 1, "spans named %q", name)
	return found[0]
}

func attrs(s tracetest.SpanStub) map[attribute.Key]attribute.Value {
	m := make(map[attribute.Key]attribute.Value, len(s.Attributes))
	for _, kv := range s.Attributes {
		m[kv.Key] = kv.Value
	}
	return m
}

// payStage verifies through f, calls the worker, then settles: the shape of
// a payment stage, without its bookkeeping.
func payStage(f x402.Facilitator) dispatch.Stage {
	return dispatch.StageFunc(func(ctx context.Context, x *dispatch.Exchange, next dispatch.Next) (*http.Response, error) {
		req := x402.FacilitatorRequest{Requirement: x402.Requirement{Scheme: "exact", Network: "eip155:84532"}}
		if _, err := f.Verify(ctx, req); err != nil {
			return nil, err
		}
		resp, err := next(ctx, x)
		if err != nil || resp.StatusCode >= 400 {
			return resp, err // not settled: the client is not charged
		}
		if _, err := f.Settle(ctx, req); err != nil {
			resp.Body.Close()
			return nil, fmt.Errorf("%w: %v", dispatch.ErrFacilitatorUnavailable, err)
		}
		x.Lifecycle = "payment_settled"
		return resp, nil
	})
}

// quotaStage counts each request in a KV store.
func quotaStage(s kv.Store) dispatch.Stage {
	return dispatch.StageFunc(func(ctx context.Context, x *dispatch.Exchange, next dispatch.Next) (*http.Response, error) {
		if _, _, err := s.Incr(ctx, "usage:"+x.Payload.TenantID, kv.Increment{Delta: 1, Max: kv.Unbounded}); err != nil {
			return nil, err
		}
		return next(ctx, x)
	})
}

// workerSeen is what a traced worker saw of its request.
type workerSeen struct {
	mu          sync.Mutex
	traceparent []string
	spanIDs     []trace.SpanID
}

func (s *workerSeen) handler(status int) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.traceparent = append(s.traceparent, r.Header.Get("Traceparent"))
		s.spanIDs = append(s.spanIDs, trace.SpanContextFromContext(r.Context()).SpanID())
		s.mu.Unlock()
		w.WriteHeader(status)
		_, _ = io.WriteString(w, "ok")
	})
}

// tracedGateway is a dispatcher on memory adapters with every tracing hook
// in place: handler, stages, fetcher, facilitator and sink.
func tracedGateway(t testing.TB, tp trace.TracerProvider, seen *workerSeen, fac x402.Facilitator) http.Handler {
	t.Helper()
	workers := obsWorkers()
	workers.Set("w-alpha", seen.handler(http.StatusOK))
	m := newMetrics(t, ops.MetricsConfig{})
	d := newObsDispatcher(t, dispatch.Config{
		Fetcher: ops.TraceFetcher(tp, workers),
		Stages: ops.TraceStages(tp,
			ops.NamedStage("ratelimit", refuseStage),
			ops.NamedStage("payment", payStage(ops.TraceFacilitator(tp, fac))),
			ops.NamedStage("quota", quotaStage(m.KVStore(memory.NewKV())))),
		Events: ops.TraceSink(),
	})
	return ops.TraceHandler(tp, d)
}

// One request through a real dispatcher gives the request span with
// stage, facilitator and worker spans beneath it, all in the trace the
// client started, and the worker receives a traceparent naming its span.
func TestTraceOneRequest(t *testing.T) {
	t.Parallel()
	tr, exp := newTestTracing(t)
	seen := &workerSeen{}
	h := tracedGateway(t, tr, seen, &fakeFacilitator{})

	w := serve(h, "GET", "http://gw/t/alpha/rows?q=1", "Traceparent", incomingTP)
	require.Equal(t, http.StatusOK, w.Code)

	ss := spans(t, tr, exp)
	require.Len(t, ss, 7)
	req := byName(t, ss, "GET")
	rl := byName(t, ss, "stage ratelimit")
	pay := byName(t, ss, "stage payment")
	quota := byName(t, ss, "stage quota")
	verify := byName(t, ss, "facilitator verify")
	settle := byName(t, ss, "facilitator settle")
	worker := byName(t, ss, "worker")
	for _, s := range ss {
		require.Equal(t, incomingTrace, s.SpanContext.TraceID().String(), s.Name)
		require.Equal(t, "gw-test", serviceName(s), s.Name)
	}
	// The request span continues the client's trace.
	require.Equal(t, incomingSpan, req.Parent.SpanID().String())
	require.True(t, req.Parent.IsRemote())
	require.Equal(t, trace.SpanKindServer, req.SpanKind)
	// Stages nest in pipeline order; facilitator calls and the worker call
	// are children of the stage that made them.
	require.Equal(t, req.SpanContext.SpanID(), rl.Parent.SpanID())
	require.Equal(t, rl.SpanContext.SpanID(), pay.Parent.SpanID())
	require.Equal(t, pay.SpanContext.SpanID(), verify.Parent.SpanID())
	require.Equal(t, pay.SpanContext.SpanID(), settle.Parent.SpanID())
	require.Equal(t, pay.SpanContext.SpanID(), quota.Parent.SpanID())
	require.Equal(t, quota.SpanContext.SpanID(), worker.Parent.SpanID())
	require.Equal(t, trace.SpanKindClient, worker.SpanKind)
	require.Equal(t, trace.SpanKindClient, verify.SpanKind)

	// The worker got the worker span's traceparent, and (in process) the
	// span in its context.
	require.Equal(t, []string{"00-" + incomingTrace + "-" + worker.SpanContext.SpanID().String() + "-01"}, seen.traceparent)
	require.Equal(t, []trace.SpanID{worker.SpanContext.SpanID()}, seen.spanIDs)

	a := attrs(req)
	require.Equal(t, "alpha", a[ops.AttrTenant].AsString())
	require.Equal(t, w.Header().Get("X-Request-Id"), a[ops.AttrRequestID].AsString())
	require.Equal(t, "payment_settled", a[ops.AttrLifecycle].AsString())
	require.Equal(t, int64(200), a[ops.AttrStatus].AsInt64())
	require.Equal(t, "GET", a[ops.AttrMethod].AsString())
	require.Equal(t, "/t/alpha/rows", a[ops.AttrPath].AsString())
	require.Equal(t, codes.Unset, req.Status.Code)

	a = attrs(pay)
	require.Equal(t, "payment", a[ops.AttrStage].AsString())
	require.Equal(t, "alpha", a[ops.AttrTenant].AsString())
	require.Equal(t, w.Header().Get("X-Request-Id"), a[ops.AttrRequestID].AsString())
	a = attrs(verify)
	require.Equal(t, "verify", a[ops.AttrFacilitatorOp].AsString())
	require.Equal(t, "exact", a[ops.AttrScheme].AsString())
	require.Equal(t, "eip155:84532", a[ops.AttrNetwork].AsString())
	require.True(t, a[ops.AttrPaymentValid].AsBool())
	a = attrs(settle)
	require.Equal(t, "settle", a[ops.AttrFacilitatorOp].AsString())
	require.True(t, a[ops.AttrPaymentSettled].AsBool())
	require.Equal(t, "0xtx", a[ops.AttrSettlementTxn].AsString())
	a = attrs(worker)
	require.Equal(t, "w-alpha", a[ops.AttrWorker].AsString())
	require.Equal(t, "alpha", a[ops.AttrTenant].AsString())
	require.Equal(t, int64(200), a[ops.AttrStatus].AsInt64())
}

func serviceName(s tracetest.SpanStub) string {
	if s.Resource == nil {
		return ""
	}
	v, _ := s.Resource.Set().Value("service.name")
	return v.AsString()
}

// Without an incoming traceparent each request starts its own trace, and
// under many concurrent requests every worker gets its own request's.
func TestTraceConcurrentRequestsEachTheirOwnTrace(t *testing.T) {
	t.Parallel()
	tr, exp := newTestTracing(t)
	seen := &workerSeen{}
	h := tracedGateway(t, tr, seen, &fakeFacilitator{})
	const workers, perWorker = 16, 20
	var wg sync.WaitGroup
	for g := 0; g < workers; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < perWorker; i++ {
				require.Equal(t, 200, serve(h, "GET", "http://gw/t/alpha/").Code)
			}
		}()
	}
	wg.Wait()
	ss := spans(t, tr, exp)
	const n = workers * perWorker
	requests := map[trace.TraceID]bool{}
	workerSpans := map[string]bool{}
	for _, s := range ss {
		switch s.Name {
		case "GET":
			require.False(t, s.Parent.IsValid(), "a new trace has no parent")
			requests[s.SpanContext.TraceID()] = true
		case "worker":
			workerSpans["00-"+s.SpanContext.TraceID().String()+"-"+s.SpanContext.SpanID().String()+"-01"] = true
		}
	}
	require.Len(t, requests, n)
	require.Len(t, workerSpans, n)
	require.Len(t, seen.traceparent, n)
	for _, tp := range seen.traceparent {
		require.True(t, workerSpans[tp], "worker got %q, which names no worker span", tp)
	}
}

// Refusals are answers: their spans carry the error code but are not
// errors. Failures (5xx) are errors.
func TestTraceErrorsAndRefusals(t *testing.T) {
	t.Parallel()
	tr, exp := newTestTracing(t)
	h := tracedGateway(t, tr, &workerSeen{}, &fakeFacilitator{})

	require.Equal(t, 429, serve(h, "GET", "http://gw/t/alpha/", "X-Refuse", "1").Code)
	ss := spans(t, tr, exp)
	require.Len(t, ss, 2) // the request and the refusing stage
	rl := byName(t, ss, "stage ratelimit")
	require.Equal(t, "rate_limited", attrs(rl)[ops.AttrErrorCode].AsString())
	require.Equal(t, int64(429), attrs(rl)[ops.AttrStatus].AsInt64())
	require.Equal(t, codes.Unset, rl.Status.Code)
	req := byName(t, ss, "GET")
	require.Equal(t, "rate_limited", attrs(req)[ops.AttrLifecycle].AsString())
	require.Equal(t, "rate_limited", attrs(req)[ops.AttrErrorCode].AsString())
	require.Equal(t, codes.Unset, req.Status.Code)

	exp.Reset()
	require.Equal(t, 500, serve(h, "GET", "http://gw/t/beta/").Code)
	ss = spans(t, tr, exp)
	worker := byName(t, ss, "worker")
	require.Equal(t, codes.Error, worker.Status.Code)
	require.Equal(t, int64(500), attrs(worker)[ops.AttrStatus].AsInt64())
	req = byName(t, ss, "GET")
	require.Equal(t, codes.Error, req.Status.Code)
	require.Equal(t, "worker_error", attrs(req)[ops.AttrLifecycle].AsString())

	// A facilitator without a usable answer: its span and the stage's are
	// errors, with the error recorded.
	exp.Reset()
	down := &fakeFacilitator{VerifyFn: func(context.Context, x402.FacilitatorRequest) (*x402.VerifyResponse, error) {
		return nil, fmt.Errorf("%w: connection refused", dispatch.ErrFacilitatorUnavailable)
	}}
	h = tracedGateway(t, tr, &workerSeen{}, down)
	require.Equal(t, 502, serve(h, "GET", "http://gw/t/alpha/").Code)
	ss = spans(t, tr, exp)
	verify := byName(t, ss, "facilitator verify")
	require.Equal(t, codes.Error, verify.Status.Code)
	require.Len(t, verify.Events, 1)
	require.Equal(t, "exception", verify.Events[0].Name)
	pay := byName(t, ss, "stage payment")
	require.Equal(t, codes.Error, pay.Status.Code)
	require.Equal(t, "facilitator_unavailable", attrs(pay)[ops.AttrErrorCode].AsString())
	for _, s := range ss {
		require.NotEqual(t, "worker", s.Name, "the worker must not be called")
	}

	// A worker call that fails outright.
	exp.Reset()
	failing := ops.TraceFetcher(tr, dispatchFetcherFunc(func(ctx context.Context, req *http.Request, p *dispatch.Payload) (*http.Response, error) {
		return nil, fmt.Errorf("%w: dial tcp: refused", dispatch.ErrWorkerFailure)
	}))
	_, err := failing.Fetch(context.Background(), httptest.NewRequest("GET", "http://w/", nil), &dispatch.Payload{WorkerName: "w"})
	require.ErrorIs(t, err, dispatch.ErrWorkerFailure)
	worker = byName(t, spans(t, tr, exp), "worker")
	require.Equal(t, codes.Error, worker.Status.Code)
}

type dispatchFetcherFunc func(ctx context.Context, req *http.Request, p *dispatch.Payload) (*http.Response, error)

func (f dispatchFetcherFunc) Fetch(ctx context.Context, req *http.Request, p *dispatch.Payload) (*http.Response, error) {
	return f(ctx, req, p)
}

// With no exporter and no OTLP endpoint, tracing is off: nothing is
// recorded, but a client's traceparent still reaches the worker unchanged.
func TestTraceOffPassesIncomingTraceparent(t *testing.T) {
	t.Parallel()
	tr, err := ops.NewTracing(context.Background(), ops.TracingConfig{Getenv: func(string) string { return "" }})
	require.NoError(t, err)
	require.False(t, tr.Enabled())
	seen := &workerSeen{}
	h := tracedGateway(t, tr, seen, &fakeFacilitator{})
	require.Equal(t, 200, serve(h, "GET", "http://gw/t/alpha/", "Traceparent", incomingTP).Code)
	require.Equal(t, 200, serve(h, "GET", "http://gw/t/alpha/").Code)
	require.Equal(t, []string{incomingTP, ""}, seen.traceparent)
	require.NoError(t, tr.ForceFlush(context.Background()))
	require.NoError(t, tr.Shutdown(context.Background()))
	// The wrappers are the identity: tracing off costs nothing.
	f := dispatch.NewHandlerFetcher(nil)
	require.Same(t, f, ops.TraceFetcher(tr, f).(*dispatch.HandlerFetcher))
	fac := &fakeFacilitator{}
	require.Same(t, fac, ops.TraceFacilitator(tr, fac).(*fakeFacilitator))
	st := &namedThing{}
	require.Same(t, st, ops.TraceStages(tr, st)[0].(*namedThing))
}

// A no-op provider passed directly (not through NewTracing) keeps the
// wrappers, which then pass an incoming trace context on.
func TestTraceNoopProviderPassesIncomingTraceparent(t *testing.T) {
	t.Parallel()
	seen := &workerSeen{}
	h := tracedGateway(t, noop.NewTracerProvider(), seen, &fakeFacilitator{})
	require.Equal(t, 200, serve(h, "GET", "http://gw/t/alpha/", "Traceparent", incomingTP).Code)
	require.Equal(t, 200, serve(h, "GET", "http://gw/t/alpha/").Code)
	require.Equal(t, []string{incomingTP, ""}, seen.traceparent)
}

// With OTEL_EXPORTER_OTLP_ENDPOINT set, spans are exported over OTLP/HTTP
// to <endpoint>/v1/traces; Shutdown flushes them.
func TestTraceExportsOverOTLPHTTP(t *testing.T) {
	var (
		mu     sync.Mutex
		names  []string
		svc    string
		ctypes []string
	)
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil || r.URL.Path != "/v1/traces" || r.Method != http.MethodPost {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		var req collectortrace.ExportTraceServiceRequest
		if err := proto.Unmarshal(body, &req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		ctypes = append(ctypes, r.Header.Get("Content-Type"))
		for _, rs := range req.GetResourceSpans() {
			for _, a := range rs.GetResource().GetAttributes() {
				if a.GetKey() == "service.name" {
					svc = a.GetValue().GetStringValue()
				}
			}
			for _, ss := range rs.GetScopeSpans() {
				for _, s := range ss.GetSpans() {
					names = append(names, s.GetName())
				}
			}
		}
		mu.Unlock()
		w.Header().Set("Content-Type", "application/x-protobuf")
		b, _ := proto.Marshal(&collectortrace.ExportTraceServiceResponse{})
		_, _ = w.Write(b)
	}))
	defer collector.Close()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.URL)
	t.Setenv("OTEL_SERVICE_NAME", "")

	tr, err := ops.NewTracing(context.Background(), ops.TracingConfig{ServiceName: "gw-otlp"})
	require.NoError(t, err)
	require.True(t, tr.Enabled())
	h := tracedGateway(t, tr, &workerSeen{}, &fakeFacilitator{})
	require.Equal(t, 200, serve(h, "POST", "http://gw/t/alpha/").Code)
	require.NoError(t, tr.Shutdown(context.Background()))

	mu.Lock()
	defer mu.Unlock()
	require.ElementsMatch(t, []string{"POST", "stage ratelimit", "stage payment", "stage quota", "facilitator verify", "facilitator settle", "worker"}, names)
	require.Equal(t, "gw-otlp", svc)
	for _, ct := range ctypes {
		require.Equal(t, "application/x-protobuf", ct)
	}
}

func TestTraceStagesNamesAndNils(t *testing.T) {
	t.Parallel()
	tr, _ := newTestTracing(t)
	out := ops.TraceStages(tr, refuseStage, nil, ops.NamedStage("quota", refuseStage))
	require.Len(t, out, 3)
	require.Nil(t, out[1])
	require.Equal(t, "dispatch.StageFunc", ops.StageName(out[0]))
	require.Equal(t, "quota", ops.StageName(out[2]))
	require.Equal(t, "ops_test.namedThing", ops.StageName(&namedThing{}))
	require.Nil(t, ops.TraceFetcher(tr, nil))
	require.Nil(t, ops.TraceFacilitator(tr, nil))
	_, err := dispatch.NewDispatcher(dispatch.Config{Tenants: nil})
	require.Error(t, err)
	require.True(t, strings.HasPrefix(ops.TracerName, "github.com/402claw/dispatcher"))
}

type namedThing struct{}

func (*namedThing) Handle(ctx context.Context, x *dispatch.Exchange, next dispatch.Next) (*http.Response, error) {
	return next(ctx, x)
}

// The sampler is honoured: a never-sample provider records nothing, yet
// the worker still gets a (not sampled) traceparent of the request's trace.
func TestTraceSamplerHonoured(t *testing.T) {
	t.Parallel()
	exp := tracetest.NewInMemoryExporter()
	tr, err := ops.NewTracing(context.Background(), ops.TracingConfig{Exporter: exp, Sampler: sdktrace.NeverSample()})
	require.NoError(t, err)
	seen := &workerSeen{}
	h := tracedGateway(t, tr, seen, &fakeFacilitator{})
	require.Equal(t, 200, serve(h, "GET", "http://gw/t/alpha/").Code)
	require.NoError(t, tr.ForceFlush(context.Background()))
	require.Empty(t, exp.GetSpans())
	require.Len(t, seen.traceparent, 1)
	require.True(t, strings.HasSuffix(seen.traceparent[0], "-00"), seen.traceparent[0])
	require.NoError(t, tr.Shutdown(context.Background()))
}

// A remote facilitator reached through TraceTransport receives the
// traceparent of the facilitator span TraceFacilitator made.
func TestTraceTransportToRemoteFacilitator(t *testing.T) {
	t.Parallel()
	tr, exp := newTestTracing(t)
	var got []string
	var mu sync.Mutex
	remote := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, r.Header.Get("Traceparent"))
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"kinds":[]}`)
	}))
	defer remote.Close()
	client, err := x402.NewFacilitatorClient(remote.URL, x402.FacilitatorConfig{HTTPClient: &http.Client{Transport: ops.TraceTransport(nil)}})
	require.NoError(t, err)
	fac := ops.TraceFacilitator(tr, client)

	ctx, parent := tr.Tracer("test").Start(context.Background(), "parent")
	_, err = fac.Supported(ctx)
	require.NoError(t, err)
	parent.End()
	_, err = fac.Supported(context.Background()) // a new trace of its own
	require.NoError(t, err)
	// Without any span the request goes out as it is.
	req, err := http.NewRequest("GET", remote.URL, nil)
	require.NoError(t, err)
	resp, err := ops.TraceTransport(nil).RoundTrip(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Empty(t, req.Header.Get("Traceparent"), "the caller's request is not changed")

	ss := spans(t, tr, exp)
	var sup []tracetest.SpanStub
	for _, s := range ss {
		if s.Name == "facilitator supported" {
			sup = append(sup, s)
		}
	}
	require.Len(t, sup, 2)
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, got, 3)
	for i, s := range sup {
		require.Equal(t, "00-"+s.SpanContext.TraceID().String()+"-"+s.SpanContext.SpanID().String()+"-01", got[i])
	}
	require.Equal(t, parent.SpanContext().SpanID(), sup[0].Parent.SpanID())
	require.Empty(t, got[2])
}
