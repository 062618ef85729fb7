package ops

import (
	"context"
	"fmt"
	"os"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// TracerName is the instrumentation scope of every span ops makes.
const TracerName = "github.com/402claw/dispatcher/ops"

// DefaultServiceName is the service.name of the spans unless
// TracingConfig.ServiceName or OTEL_SERVICE_NAME says otherwise.
const DefaultServiceName = "dispatcher"

// Environment variables that switch OTLP export on: the standard
// OpenTelemetry ones, read by the OTLP/HTTP exporter together with the
// rest of the OTEL_EXPORTER_OTLP_* family (headers, timeout, TLS).
const (
	EnvOTLPEndpoint       = "OTEL_EXPORTER_OTLP_ENDPOINT"
	EnvOTLPTracesEndpoint = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
)

// TracingConfig configures NewTracing. The zero value exports over OTLP/HTTP
// when OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is
// set and traces nothing otherwise.
type TracingConfig struct {
	// ServiceName is the service.name resource attribute (default
	// DefaultServiceName); OTEL_SERVICE_NAME, when set, wins.
	ServiceName string
	// Exporter, when set, receives the spans whatever the environment
	// says (another exporter, or tracetest's in-memory one in tests).
	Exporter sdktrace.SpanExporter
	// Sampler chooses the spans kept (nil: the SDK's default, parent-based
	// always-on, or what OTEL_TRACES_SAMPLER says).
	Sampler sdktrace.Sampler
	// Getenv reads the environment (nil: os.Getenv). The OTLP exporter
	// itself reads the process environment for its other settings.
	Getenv func(string) string
}

// Tracing is the tracer provider of a dispatcher: an OpenTelemetry SDK
// provider that batches spans to an exporter, or a no-op provider when
// tracing is off. It is a trace.TracerProvider, so it is what TraceHandler,
// TraceStages, TraceFetcher and TraceFacilitator take. Call Shutdown when the
// server stops, after the HTTP server has drained, to flush the last spans.
type Tracing struct {
	trace.TracerProvider
	sdk *sdktrace.TracerProvider
}

// NewTracing returns the tracer provider cfg and the environment ask for.
// With no exporter configured and no OTLP endpoint in the environment, it
// returns a no-op provider (Enabled is false): the Trace* wrappers then
// return what they wrap unchanged, so tracing off costs nothing, and a
// client's W3C traceparent still reaches the worker with the request's
// other headers. It never sets the global OpenTelemetry provider.
func NewTracing(ctx context.Context, cfg TracingConfig) (*Tracing, error) {
	getenv := cfg.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	exp := cfg.Exporter
	if exp == nil {
		if getenv(EnvOTLPEndpoint) == "" && getenv(EnvOTLPTracesEndpoint) == "" {
			return &Tracing{TracerProvider: noop.NewTracerProvider()}, nil
		}
		var err error
		if exp, err = otlptracehttp.New(ctx); err != nil {
			return nil, fmt.Errorf("ops: OTLP trace exporter: %w", err)
		}
	}
	name := cfg.ServiceName
	if name == "" {
		name = DefaultServiceName
	}
	if v := getenv("OTEL_SERVICE_NAME"); v != "" {
		name = v
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(attribute.String("service.name", name)))
	if err != nil {
		return nil, fmt.Errorf("ops: tracing resource: %w", err)
	}
	opts := []sdktrace.TracerProviderOption{sdktrace.WithBatcher(exp), sdktrace.WithResource(res)}
	if cfg.Sampler != nil {
		opts = append(opts, sdktrace.WithSampler(cfg.Sampler))
	}
	sdk := sdktrace.NewTracerProvider(opts...)
	return &Tracing{TracerProvider: sdk, sdk: sdk}, nil
}

// Enabled reports whether spans are recorded and exported.
func (t *Tracing) Enabled() bool { return t.sdk != nil }

// ForceFlush exports the spans that ended so far.
func (t *Tracing) ForceFlush(ctx context.Context) error {
	if t.sdk == nil {
		return nil
	}
	return t.sdk.ForceFlush(ctx)
}

// Shutdown flushes the spans still queued and stops the exporter; ctx
// bounds the wait. It does nothing when tracing is off. Spans started
// after Shutdown are dropped.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if t.sdk == nil {
		return nil
	}
	if err := t.sdk.Shutdown(ctx); err != nil {
		return fmt.Errorf("ops: tracing shutdown: %w", err)
	}
	return nil
}
