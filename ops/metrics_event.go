package ops

import (
	"context"

	"github.com/402claw/dispatcher/dispatch"
)

// This file holds the only places where ops reads a lifecycle event beyond
// its stable fields (Type, Time, RequestID, Tenant, Status, Code, Duration,
// Lifecycle): the lifecycle's fallback and the request's context both come
// from the Exchange. Should the Exchange change, repoint these functions
// and nothing else.

// eventLifecycle returns the analytics lifecycle of a finished request's
// event ("" when unknown).
func eventLifecycle(e dispatch.Event) string {
	if e.Lifecycle != "" {
		return string(e.Lifecycle)
	}
	if e.Exchange == nil {
		return ""
	}
	return string(e.Exchange.Lifecycle)
}

// eventContext returns the context of the request an event is about, which
// carries the request's span when the dispatcher runs under TraceHandler
// (nil when unknown).
func eventContext(e dispatch.Event) context.Context {
	if e.Exchange == nil || e.Exchange.Request == nil {
		return nil
	}
	return e.Exchange.Request.Context()
}

// finished reports whether e is the final event of a request (Success or
// Failure), the one the sinks act on.
func finished(e dispatch.Event) bool {
	return e.Type == dispatch.EventSuccess || e.Type == dispatch.EventFailure
}
