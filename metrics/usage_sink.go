package metrics

import (
	"github.com/shopspring/decimal"

	"github.com/402claw/dispatcher/dispatch"
)

// UsageSink turns the final lifecycle event of each tenant request (Success
// or Failure) into one UsageEvent and emits it to s. Put it in the
// dispatcher's Config.Events (with dispatch.MultiSink to keep other sinks).
func UsageSink(s Sink) dispatch.EventSink {
	return dispatch.EventSinkFunc(func(e dispatch.Event) {
		if e.Type == dispatch.EventStart || e.Exchange == nil {
			return
		}
		s.Emit(UsageEventOf(e))
	})
}

// UsageEventOf derives the usage event of a finished request from its final
// lifecycle event. The endpoint is the matched route's pattern, so that a
// tenant's routes rank by pattern rather than by raw path; a request that
// matched no route counts under its path. The client's network prefix and
// the verified payer (set by the payment stage once the facilitator
// accepted the payment) feed the caller-diversity figures.
func UsageEventOf(e dispatch.Event) UsageEvent {
	x := e.Exchange
	billed, _ := decimal.NewFromString(x.BilledUSD)
	endpoint := x.Price.Pattern
	if endpoint == "" {
		endpoint = x.Payload.Path
	}
	lc := e.Lifecycle
	if lc == "" {
		lc = x.Lifecycle
	}
	return UsageEvent{
		Time:      e.Time,
		RequestID: e.RequestID,
		APIID:     e.Tenant,
		Endpoint:  endpoint,
		Owner:     x.Tenant.OwnerUserID,
		Directory: x.Tenant.Directory,
		CallerID:  x.CallerID,
		ClientNet: HashClientNet(x.ClientIP), // an unknown address is one shared "unknown" network
		Payer:     HashPayer(x.Payer),
		Status:    e.Status,
		LatencyMs: e.Duration.Milliseconds(),
		PriceUSD:  x.Price.PriceUSD,
		BilledUSD: billed,
		Lifecycle: Lifecycle(lc),
	}
}
