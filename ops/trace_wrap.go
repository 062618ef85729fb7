package ops

import (
	"context"
	"net/http"
	"reflect"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/402claw/dispatcher/dispatch"
	"github.com/402claw/dispatcher/x402"
)

// Span attribute keys. The HTTP ones follow the OpenTelemetry semantic
// conventions; the dispatcher's own are under "dispatcher.".
const (
	AttrTenant          = attribute.Key("dispatcher.tenant")
	AttrRequestID       = attribute.Key("dispatcher.request_id")
	AttrLifecycle       = attribute.Key("dispatcher.lifecycle")
	AttrErrorCode       = attribute.Key("dispatcher.error_code")
	AttrWorker          = attribute.Key("dispatcher.worker")
	AttrStage           = attribute.Key("dispatcher.stage")
	AttrFacilitatorOp   = attribute.Key("dispatcher.facilitator.op")
	AttrStatus          = attribute.Key("http.response.status_code")
	AttrMethod          = attribute.Key("http.request.method")
	AttrPath            = attribute.Key("url.path")
	AttrScheme          = attribute.Key("x402.scheme")
	AttrNetwork         = attribute.Key("x402.network")
	AttrPaymentValid    = attribute.Key("x402.valid")
	AttrPaymentSettled  = attribute.Key("x402.success")
	AttrPaymentReason   = attribute.Key("x402.reason")
	AttrSettlementTxn   = attribute.Key("x402.transaction")
	spanNameWorker      = "worker"
	spanPrefixStage     = "stage "
	spanPrefixFacilitor = "facilitator "
)

// propagator is W3C Trace Context: traceparent and tracestate.
var propagator = propagation.TraceContext{}

// tracingOff reports whether tp is a Tracing that NewTracing switched off.
// The Trace* wrappers then return what they were given, so tracing off
// costs nothing on the request path. A client's traceparent still reaches
// the worker: the dispatcher forwards the request's headers, and with
// tracing off there is no span of the gateway's own to name instead.
func tracingOff(tp trace.TracerProvider) bool {
	t, ok := tp.(*Tracing)
	return ok && t.sdk == nil
}

// TraceHandler wraps the dispatcher (or any handler) in one server span per
// request. The span continues the trace of an incoming W3C traceparent
// header, and it is in the request's context, so the spans of TraceStages,
// TraceFetcher and TraceFacilitator are its descendants. It records the
// method, path, answered status, and the X-Request-Id and X-Tenant-Id the
// dispatcher answered with; TraceSink adds the lifecycle. A 5xx answer
// marks the span as an error.
func TraceHandler(tp trace.TracerProvider, next http.Handler) http.Handler {
	if tracingOff(tp) {
		return next
	}
	tr := tp.Tracer(TracerName)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := propagator.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
		method := spanMethod(r.Method)
		ctx, span := tr.Start(ctx, method, trace.WithSpanKind(trace.SpanKindServer))
		if !span.IsRecording() {
			// Tracing is off: pass on only a trace that came in, and spare
			// the request copy when none did.
			if span.SpanContext().IsValid() {
				r = r.WithContext(ctx)
			}
			next.ServeHTTP(w, r)
			span.End()
			return
		}
		span.SetAttributes(AttrMethod.String(method), AttrPath.String(r.URL.Path))
		sw := &statusWriter{ResponseWriter: w}
		defer func() {
			status := sw.status
			if status == 0 {
				status = http.StatusOK
			}
			h := w.Header()
			span.SetAttributes(AttrStatus.Int(status))
			if v := h.Get(dispatch.HeaderRequestID); v != "" {
				span.SetAttributes(AttrRequestID.String(v))
			}
			if v := h.Get(dispatch.HeaderTenantID); v != "" {
				span.SetAttributes(AttrTenant.String(v))
			}
			if status >= 500 {
				span.SetStatus(codes.Error, http.StatusText(status))
			}
			span.End()
		}()
		next.ServeHTTP(sw, r.WithContext(ctx))
	})
}

// spanMethod bounds the method to the standard ones, as the semantic
// conventions ask: anything else is "_OTHER".
func spanMethod(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodConnect, http.MethodOptions, http.MethodTrace:
		return m
	}
	return "_OTHER"
}

// statusWriter remembers the status written through it.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Flush passes a flush on, so streaming answers still stream.
func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// TraceSink returns the event sink that completes a request's span
// (TraceHandler's) with what only the dispatcher knows: tenant, request
// id, status, lifecycle and error code. Put it in dispatch.Config.Events
// with dispatch.MultiSink. Events of requests without a recording span are
// ignored.
func TraceSink() dispatch.EventSink {
	return dispatch.EventSinkFunc(func(e dispatch.Event) {
		if !finished(e) {
			return
		}
		ctx := eventContext(e)
		if ctx == nil {
			return
		}
		span := trace.SpanFromContext(ctx)
		if !span.IsRecording() {
			return
		}
		span.SetAttributes(AttrTenant.String(e.Tenant), AttrRequestID.String(e.RequestID),
			AttrLifecycle.String(eventLifecycle(e)), AttrStatus.Int(e.Status))
		if e.Code != "" {
			span.SetAttributes(AttrErrorCode.String(e.Code))
		}
	})
}

// NamedStage gives a stage the name its span carries. Without it a stage
// is named by its Name() string method when it has one, and otherwise by
// its Go type ("payment.Stage").
func NamedStage(name string, s dispatch.Stage) dispatch.Stage {
	return namedStage{Stage: s, name: name}
}

type namedStage struct {
	dispatch.Stage
	name string
}

func (s namedStage) Name() string { return s.name }

// StageName returns the name TraceStages gives s.
func StageName(s dispatch.Stage) string {
	if n, ok := s.(interface{ Name() string }); ok {
		return n.Name()
	}
	t := reflect.TypeOf(s)
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil {
		return "stage"
	}
	if t.Name() == "" {
		return t.String()
	}
	pkg := t.PkgPath()
	return pkg[strings.LastIndexByte(pkg, '/')+1:] + "." + t.Name()
}

// TraceStages wraps each stage in a span named "stage <name>" (see
// StageName), with the tenant and request id. A stage calls the rest of
// the pipeline from inside its span, so the spans nest in pipeline order
// and the worker's span is the innermost: each stage's span covers the
// stage and everything after it. An error answer records its error code;
// one with a 5xx status marks the span as an error (a refusal such as a
// rate limit is an answer, not a failure). Nil stages are kept nil, for
// NewDispatcher to report.
func TraceStages(tp trace.TracerProvider, stages ...dispatch.Stage) []dispatch.Stage {
	out := make([]dispatch.Stage, len(stages))
	if tracingOff(tp) {
		copy(out, stages)
		return out
	}
	tr := tp.Tracer(TracerName)
	for i, s := range stages {
		if s == nil {
			continue
		}
		name := StageName(s)
		out[i] = &tracedStage{tr: tr, next: s, name: name, spanName: spanPrefixStage + name}
	}
	return out
}

type tracedStage struct {
	tr             trace.Tracer
	next           dispatch.Stage
	name, spanName string
}

// Name keeps the wrapped stage's name.
func (s *tracedStage) Name() string { return s.name }

func (s *tracedStage) Handle(ctx context.Context, x *dispatch.Exchange, next dispatch.Next) (*http.Response, error) {
	ctx, span := s.tr.Start(ctx, s.spanName)
	if !span.IsRecording() {
		resp, err := s.next.Handle(ctx, x, next)
		span.End()
		return resp, err
	}
	span.SetAttributes(AttrStage.String(s.name), AttrTenant.String(x.Payload.TenantID), AttrRequestID.String(x.Payload.RequestID))
	resp, err := s.next.Handle(ctx, x, next)
	switch {
	case err != nil:
		status, code := dispatch.StatusOf(err)
		span.SetAttributes(AttrErrorCode.String(code), AttrStatus.Int(status))
		if status >= 500 {
			span.RecordError(err)
			span.SetStatus(codes.Error, code)
		}
	case resp != nil:
		span.SetAttributes(AttrStatus.Int(resp.StatusCode))
	}
	span.End()
	return resp, err
}

// TraceFetcher wraps a fetcher in one client span per worker call, named
// "worker", with the worker, tenant and request id, and injects the span's
// W3C traceparent (and tracestate) into the outgoing request's headers, so
// a worker that traces continues the trace. The span ends when the worker's
// response headers are in. A failed call marks the span as an error, as
// does a 5xx answer.
func TraceFetcher(tp trace.TracerProvider, f dispatch.Fetcher) dispatch.Fetcher {
	if f == nil || tracingOff(tp) {
		return f
	}
	return &tracedFetcher{tr: tp.Tracer(TracerName), next: f}
}

type tracedFetcher struct {
	tr   trace.Tracer
	next dispatch.Fetcher
}

func (f *tracedFetcher) Fetch(ctx context.Context, req *http.Request, p *dispatch.Payload) (*http.Response, error) {
	ctx, span := f.tr.Start(ctx, spanNameWorker, trace.WithSpanKind(trace.SpanKindClient))
	// Inject even for a non-recording span: with tracing off it carries the
	// incoming traceparent on unchanged.
	propagator.Inject(ctx, propagation.HeaderCarrier(req.Header))
	if !span.IsRecording() {
		resp, err := f.next.Fetch(ctx, req, p)
		span.End()
		return resp, err
	}
	span.SetAttributes(AttrWorker.String(p.WorkerName), AttrTenant.String(p.TenantID), AttrRequestID.String(p.RequestID))
	// An in-process worker finds the span in its request's context.
	resp, err := f.next.Fetch(ctx, req.WithContext(ctx), p)
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, "worker call failed")
	} else if resp != nil {
		span.SetAttributes(AttrStatus.Int(resp.StatusCode))
		if resp.StatusCode >= 500 {
			span.SetStatus(codes.Error, http.StatusText(resp.StatusCode))
		}
	}
	span.End()
	return resp, err
}

// TraceFacilitator wraps a facilitator in one client span per call, named
// "facilitator verify", "facilitator settle" or "facilitator supported",
// with the operation, the payment's scheme and network, and the answer
// (valid, settled, the reason given). A call without a usable answer marks
// the span as an error; an invalid payment does not.
func TraceFacilitator(tp trace.TracerProvider, f x402.Facilitator) x402.Facilitator {
	if f == nil || tracingOff(tp) {
		return f
	}
	return &tracedFacilitator{tr: tp.Tracer(TracerName), next: f}
}

type tracedFacilitator struct {
	tr   trace.Tracer
	next x402.Facilitator
}

var _ x402.Facilitator = (*tracedFacilitator)(nil)

func (f *tracedFacilitator) start(ctx context.Context, op string, req *x402.FacilitatorRequest) (context.Context, trace.Span) {
	ctx, span := f.tr.Start(ctx, spanPrefixFacilitor+op, trace.WithSpanKind(trace.SpanKindClient))
	if span.IsRecording() {
		span.SetAttributes(AttrFacilitatorOp.String(op))
		if req != nil {
			span.SetAttributes(AttrScheme.String(req.Requirement.Scheme), AttrNetwork.String(req.Requirement.Network))
		}
	}
	return ctx, span
}

func endFacilitatorSpan(span trace.Span, err error, attrs ...attribute.KeyValue) {
	if span.IsRecording() {
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, "facilitator call failed")
		} else {
			span.SetAttributes(attrs...)
		}
	}
	span.End()
}

func (f *tracedFacilitator) Verify(ctx context.Context, req x402.FacilitatorRequest) (*x402.VerifyResponse, error) {
	ctx, span := f.start(ctx, FacilitatorVerify, &req)
	r, err := f.next.Verify(ctx, req)
	if err == nil && r != nil && span.IsRecording() {
		endFacilitatorSpan(span, nil, AttrPaymentValid.Bool(r.IsValid), AttrPaymentReason.String(r.InvalidReason))
		return r, err
	}
	endFacilitatorSpan(span, err)
	return r, err
}

func (f *tracedFacilitator) Settle(ctx context.Context, req x402.FacilitatorRequest) (*x402.SettleResponse, error) {
	ctx, span := f.start(ctx, FacilitatorSettle, &req)
	r, err := f.next.Settle(ctx, req)
	if err == nil && r != nil && span.IsRecording() {
		endFacilitatorSpan(span, nil, AttrPaymentSettled.Bool(r.Success), AttrPaymentReason.String(r.ErrorReason), AttrSettlementTxn.String(r.Transaction))
		return r, err
	}
	endFacilitatorSpan(span, err)
	return r, err
}

func (f *tracedFacilitator) Supported(ctx context.Context) (*x402.SupportedResponse, error) {
	ctx, span := f.start(ctx, FacilitatorSupported, nil)
	r, err := f.next.Supported(ctx)
	endFacilitatorSpan(span, err)
	return r, err
}

// Unwrap returns the wrapped facilitator.
func (f *tracedFacilitator) Unwrap() x402.Facilitator { return f.next }
