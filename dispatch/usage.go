package dispatch

import (
	"github.com/shopspring/decimal"

	"github.com/402claw/dispatcher/metrics"
)

// UsageSink turns the final lifecycle event of each tenant request (Success
// or Failure) into one metrics.UsageEvent and emits it to s. Put it in
// Config.Events (with MultiSink to keep other sinks).
func UsageSink(s metrics.Sink) EventSink {
	return EventSinkFunc(func(e Event) {
		if e.Type == EventStart || e.Exchange == nil {
			return
		}
		s.Emit(UsageEvent(e))
	})
}

// UsageEvent derives the usage event of a finished request from its final
// lifecycle event.
func UsageEvent(e Event) metrics.UsageEvent {
	x := e.Exchange
	price, _ := decimal.NewFromString(x.PriceUSD)
	billed, _ := decimal.NewFromString(x.BilledUSD)
	return metrics.UsageEvent{
		Time:      e.Time,
		RequestID: e.RequestID,
		APIID:     e.Tenant,
		Endpoint:  x.Payload.Path,
		Owner:     x.Tenant.OwnerUserID,
		Directory: x.Tenant.Directory,
		CallerID:  x.CallerID,
		Status:    e.Status,
		LatencyMs: e.Duration.Milliseconds(),
		PriceUSD:  price,
		BilledUSD: billed,
		Lifecycle: metrics.Lifecycle(x.Lifecycle),
	}
}
