package ops

import (
	"context"
	"log/slog"

	"go.opentelemetry.io/otel/trace"

	"github.com/402claw/dispatcher/dispatch"
)

// LogSink returns an event sink that logs each finished tenant request to
// logger as one structured line: at debug level ("request") when it was
// served, at warn level ("request failed") when it failed, that is when
// the gateway answered a 5xx status or an error code (the event's Code:
// a rate limit, a quota, a worker failure, ...). A line carries requestId,
// tenant, lifecycle, status, duration, and worker, code and traceId when
// there are some. Start events are not logged. The request's context is
// passed to the handler, so a handler that reads spans from it can too.
// A nil logger logs nothing.
func LogSink(logger *slog.Logger) dispatch.EventSink {
	if logger == nil {
		return dispatch.EventSinkFunc(func(dispatch.Event) {})
	}
	return dispatch.EventSinkFunc(func(e dispatch.Event) {
		if !finished(e) {
			return
		}
		level, msg := slog.LevelDebug, "request"
		if e.Status >= 500 || e.Code != "" {
			level, msg = slog.LevelWarn, "request failed"
		}
		ctx := eventContext(e)
		if ctx == nil {
			ctx = context.Background()
		}
		if !logger.Enabled(ctx, level) {
			return
		}
		attrs := make([]slog.Attr, 0, 9)
		attrs = append(attrs,
			slog.String("requestId", e.RequestID),
			slog.String("tenant", e.Tenant),
			slog.String("lifecycle", eventLifecycle(e)),
			slog.Int("status", e.Status),
			slog.Duration("duration", e.Duration),
		)
		if e.Worker != "" {
			attrs = append(attrs, slog.String("worker", e.Worker))
		}
		if e.Code != "" {
			attrs = append(attrs, slog.String("code", e.Code))
		}
		if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
			attrs = append(attrs, slog.String("traceId", sc.TraceID().String()))
		}
		logger.LogAttrs(ctx, level, msg, attrs...)
	})
}
