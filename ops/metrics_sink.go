package ops

import "github.com/402claw/dispatcher/dispatch"

// Sink returns the event sink that feeds dispatcher_requests_total and
// dispatcher_request_duration_seconds: each request's final event (Success
// or Failure) counts once, under its tenant, lifecycle and HTTP status.
// Start events are ignored. Emit never blocks; put the sink in
// dispatch.Config.Events beside the others with dispatch.MultiSink.
//
// Requests the dispatcher answers before it knows the tenant (404
// tenant_not_found, platform routes) emit no event and are not counted.
func (m *Metrics) Sink() dispatch.EventSink {
	return dispatch.EventSinkFunc(func(e dispatch.Event) {
		if !finished(e) {
			return
		}
		m.request(e.Tenant, eventLifecycle(e), e.Status, e.Duration)
	})
}
