package ops

import (
	"net/http"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// TraceTransport returns a RoundTripper that adds the W3C trace context of
// each request's context (traceparent, tracestate) to the request it sends,
// and then sends it with rt (nil: http.DefaultTransport). It makes no span
// of its own: give it to the HTTP client of a remote facilitator
// (x402.FacilitatorConfig.HTTPClient), whose calls TraceFacilitator already
// spans, so the facilitator's own traces join the request's. A request
// whose context holds no valid span is sent as it is.
func TraceTransport(rt http.RoundTripper) http.RoundTripper {
	if rt == nil {
		rt = http.DefaultTransport
	}
	return traceTransport{next: rt}
}

type traceTransport struct{ next http.RoundTripper }

func (t traceTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if !trace.SpanContextFromContext(r.Context()).IsValid() {
		return t.next.RoundTrip(r)
	}
	// A RoundTripper must not change the request it is given.
	out := r.Clone(r.Context())
	propagator.Inject(r.Context(), propagation.HeaderCarrier(out.Header))
	return t.next.RoundTrip(out)
}
