// Package meter is the port between the gateway's stages and its counters:
// what one request asks of the rate limits, usage quotas and spend caps,
// and the hold it gets back. It is a leaf so that the stages that meter
// (quota's stage for requests that do not charge, the payment stage for
// those that do) and the counters that implement it (quota.Limiter) need
// not import one another.
//
// A request is metered in one call, in one store round trip where the
// store allows: the rate limits, one unit of usage quota and the amount to
// hold against the spend caps, all or none. The hold is then settled once:
// Commit keeps the usage unit and the amount actually charged and gives the
// rest back; Release gives everything back (the request consumed nothing).
package meter

import (
	"context"
	"net/http"
	"net/netip"

	"github.com/shopspring/decimal"

	"github.com/402claw/dispatcher/tenant"
)

// Params is what one request asks of the counters.
type Params struct {
	// Tenant is the tenant the request is for.
	Tenant *tenant.Tenant
	// CallerID is the hashed caller identity the per-caller rate limit is
	// keyed by.
	CallerID string
	// ClientIP is the client's address: the per-client-address rate limit
	// applies beside an asserted caller identity. Invalid: none.
	ClientIP netip.Addr
	// Rate counts one request against the rate limits.
	Rate bool
	// Usage reserves one unit of the usage quotas (day and month).
	Usage bool
	// Spend is the amount, in USD, held against the spend caps: a fixed
	// price, or the most a usage-priced request may be charged. Zero holds
	// nothing.
	Spend decimal.Decimal
}

// Hold is what a request holds after it was admitted. SetHeaders may be
// called at any time; Commit or Release settles the hold, once: the first
// one wins, and later calls do nothing (or return an error saying the hold
// was settled the other way).
type Hold interface {
	// SetHeaders sets the limit headers of every counter the request
	// touched or read (X-RateLimit-*, X-Usage-*, X-Spend-*).
	SetHeaders(h http.Header)
	// Commit keeps the usage unit and charged (at most the held amount)
	// counted, and gives the rest of the held amount back.
	Commit(ctx context.Context, charged decimal.Decimal) error
	// Release gives the usage unit and the held amount back. The rate
	// limit unit stays counted: rate limits count attempts.
	Release(ctx context.Context) error
}

// Meter admits requests. A refusal is an error the dispatcher renders
// (429 with the refusing limit's headers); a store failure is 503.
type Meter interface {
	Admit(ctx context.Context, p Params) (Hold, error)
}
