package quota

import (
	"context"
	"net/http"

	"github.com/402claw/dispatcher/dispatch"
	"github.com/402claw/dispatcher/meter"
)

// Stage meters the requests that do not charge (pipeline steps 4 and 6 for
// them): the rate limits and one unit of the usage quotas, in one store
// round trip (Limiter.Admit), with every limit header on the answer. A
// refusal is 429 rate_limited or usage_quota_exceeded with Retry-After.
// When a later step refuses or answers the request before the worker ran
// (Exchange.WorkerCalled is false when next returns), the usage unit is
// given back; a request the worker answered stays counted, whatever its
// status.
//
// Requests that charge (Exchange.Price.Charges) are left to the payment
// stage, which meters them itself through the same port (rate limits before
// any facilitator call, the usage unit and the spend hold in the same round
// trip). The two stages meter disjoint requests, so their order does not
// matter.
type Stage struct{ m meter.Meter }

var (
	_ dispatch.Stage       = (*Stage)(nil)
	_ dispatch.HeaderOwner = (*Stage)(nil)
)

// Stage returns the metering stage of l.
func (l *Limiter) Stage() *Stage { return &Stage{m: l} }

// NewStage returns a metering stage over any meter.Meter.
func NewStage(m meter.Meter) *Stage { return &Stage{m: m} }

// OwnedHeaders implements dispatch.HeaderOwner: the limit headers, which a
// worker must not forge.
func (s *Stage) OwnedHeaders() []string {
	return []string{"X-Ratelimit-", "Ratelimit", "X-Usage-", "X-Spend-"}
}

// Handle implements dispatch.Stage.
func (s *Stage) Handle(ctx context.Context, x *dispatch.Exchange, next dispatch.Next) (*http.Response, error) {
	if x.Tenant == nil || x.Price.Charges {
		return next(ctx, x)
	}
	h, err := s.m.Admit(ctx, meter.Params{Tenant: x.Tenant, CallerID: x.CallerID, ClientIP: x.ClientIP, Rate: true, Usage: true})
	if h != nil {
		h.SetHeaders(x.Header)
	}
	if err != nil {
		return nil, err
	}
	resp, err := next(ctx, x)
	if !x.WorkerCalled {
		// Refused (or answered) before the worker ran: the request
		// consumed nothing.
		if rerr := h.Release(context.WithoutCancel(ctx)); rerr == nil {
			h.SetHeaders(x.Header)
		}
		return resp, err
	}
	_ = h.Commit(ctx, zero) // keeps the unit; nothing was held to give back
	return resp, err
}
