// Package payment is the paid path of the dispatcher: the pipeline stage
// that charges for a request with x402 (DESIGN sections 7, 13 and 14).
//
// The stage owns the requests that charge (dispatch.Exchange.Price.Charges:
// the matched route's price, or the tenant's). Each goes through named
// steps, each owning its cleanup:
//
//   - offers: one accepts entry per scheme of the route (x402.Scheme,
//     chosen by the route's schemes, in order); a request without a payment
//     is metered for its rate limits and answered with a 402 challenge both
//     protocol generations read (the v2 PAYMENT-REQUIRED header, the v1 JSON
//     body, an HTML page for browsers when Config.Paywall is set);
//   - decode: PAYMENT-SIGNATURE (v2) or X-PAYMENT (v1); undecodable is
//     400 invalid_payment; the scheme that claims the client's chosen entry
//     checks the payload against the server's own entry (a mismatch, an
//     expired authorization or one valid implausibly long is a 402 naming
//     the field);
//   - admit: the rate limits, one unit of usage quota and the price (or the
//     maximum) held against the spend caps, in one store round trip through
//     the Meter, before any facilitator call;
//   - preflight: the idempotency key (payment-identifier extension,
//     X-Payment-Idempotency-Key / Idempotency-Key, else the authorization's
//     identity) with a fingerprint of the request: a replay of a success is
//     answered from the record with X-Payment-Deduped: true; in flight,
//     409 idempotency_key_in_use; another request, 422
//     idempotency_key_reused. Authorization records are global, so one
//     authorization cannot run two tenants' workers. Then the ledger must
//     be reachable and hold no entry for the key, and the facilitator
//     verifies (only the server's requirement is sent): invalid is a 402
//     with the reason, no usable answer 502 facilitator_unavailable;
//   - forward: the worker runs (it never sees the payment headers) and
//     its answer is buffered, bounded by MaxResponseBytes; an answer of 400
//     or more is returned unsettled, the spend hold given back;
//   - settle: the intent goes to the audit log, the facilitator settles
//     (detached from the client, bounded by SettleTimeout; a
//     settlement_pending answer is retried once with the same payload), the
//     outcome is kept with the idempotency record, the ledger entry and its
//     audit record are written, the hold is committed with the charge, and
//     the answer is released with PAYMENT-RESPONSE (X-PAYMENT-RESPONSE for
//     version 1).
//
// A failed settlement answers 402 with the failed settle response in the
// payment response header; the worker's body is dropped, the hold released
// (usage unit included) and the failure written to the ledger (status
// failed, under a key of its own). A pending settlement, or a settle call
// with no usable answer, is recorded pending and kept in the idempotency
// record, so it is never settled twice. Once money has (or may have) moved
// the stage never answers with an error. Failures before settlement leave
// no idempotency record and release the hold, so the client may retry.
//
// Every answer to a decodable payment carries X-Payment-Idempotency-Key.
package payment

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/shopspring/decimal"

	"github.com/402claw/dispatcher/dispatch"
	"github.com/402claw/dispatcher/kv"
	"github.com/402claw/dispatcher/ledger"
	"github.com/402claw/dispatcher/meter"
	"github.com/402claw/dispatcher/tenant"
	"github.com/402claw/dispatcher/x402"
	"github.com/402claw/dispatcher/x402/exact"
)

// Header names of the idempotency contract.
const (
	HeaderIdempotencyKey = x402.HeaderPaymentIdempotencyKey
	HeaderDeduped        = x402.HeaderPaymentDeduped
	// HeaderSettlementOverrides is the worker's report of what a
	// usage-priced request costs; the gateway removes it from the answer.
	HeaderSettlementOverrides = x402.HeaderSettlementOverrides
)

// Lifecycles the stage assigns.
const (
	LifecycleChallenged       = dispatch.LifecyclePaymentChallenged
	LifecycleInvalid          = dispatch.LifecyclePaymentInvalid
	LifecycleSettled          = dispatch.LifecyclePaymentSettled
	LifecycleReplayed         = dispatch.LifecyclePaymentReplayed
	LifecycleSettlementFailed = dispatch.LifecyclePaymentSettlementFailed
	LifecycleSpendCapExceeded = dispatch.LifecycleSpendCapExceeded
	LifecycleWorkerError      = dispatch.LifecycleWorkerError
)

// Meter is the stage's port to the counters: quota.Limiter implements it.
// The stage admits a paid request's rate limits, usage unit and spend hold
// in one call, before any facilitator call, and commits the hold with the
// charge or releases it.
type Meter interface {
	Admit(ctx context.Context, p meter.Params) (meter.Hold, error)
}

// Channels is the stage's port to payment channels (batch-settlement): the
// channel state, its per-channel serialization and its local voucher check
// live behind it.
type Channels interface {
	// IsRefund reports whether p asks for a cooperative refund, answered
	// without calling the worker.
	IsRefund(p *x402.Payment) bool
	// Refund executes a cooperative refund and returns the payment
	// response.
	Refund(ctx context.Context, p *x402.Payment, req x402.Requirement) (*x402.SettleResponse, error)
	// Begin admits a request paid on a channel (a deposit or a voucher)
	// and leases the channel to it until Commit or Abort. A refusal that
	// tells the client what to sign instead implements Corrective.
	Begin(ctx context.Context, p *x402.Payment, req x402.Requirement, m ChannelMeta) (ChannelHold, error)
}

// ChannelMeta is what the stage tells a channel about the request.
type ChannelMeta struct{ Tenant, RequestID, Resource string }

// ChannelHold is one admitted request on a channel.
type ChannelHold interface {
	// Commit charges the request (atomic units, at most the requirement's
	// amount) and returns the payment response (no transaction; the
	// channel's state in extra).
	Commit(ctx context.Context, charge string) (*x402.SettleResponse, error)
	// Abort releases the channel unchanged: the voucher stays usable.
	Abort(ctx context.Context) error
}

// Corrective is implemented by channel refusals that carry what the client
// should sign instead (a cumulative-amount mismatch): the stage answers a
// 402 whose accepts entry is the corrected requirement.
type Corrective interface {
	error
	Corrective(req x402.Requirement) x402.Requirement
}

// Coded is implemented by channel refusals that carry the scheme's error
// code: the 402 answering one names the code alone as its error, which is
// what clients match (the batch-settlement client recovers from a
// corrective 402 only when its error is
// invalid_batch_settlement_evm_cumulative_amount_mismatch).
type Coded interface {
	error
	Code() string
}

// ChargeFunc reads what a usage-priced request costs from the worker's
// answer: h is the worker's Settlement-Overrides header value ("" when
// absent), max the signed maximum in atomic units, decimals the asset's. It
// returns the charge in atomic units, or an error when the report is
// unreadable or above the maximum.
type ChargeFunc func(h, max string, decimals int32) (string, error)

// Config configures the stage. Facilitator, KV and Ledger are required.
type Config struct {
	// Facilitator verifies and settles.
	Facilitator x402.Facilitator
	// KV keeps idempotency records.
	KV kv.Store
	// Ledger records settlements and their audit records.
	Ledger *ledger.Ledger
	// Meter admits paid requests against the rate limits, usage quotas
	// and spend caps (nil: no limits on paid requests).
	Meter Meter
	// Schemes are the payment schemes the gateway takes, by directory
	// name; a route offers those of its schemes found here, in its order
	// (nil: exact over EIP-3009 alone).
	Schemes []x402.Scheme
	// Charge parses a usage-priced scheme's charge report (nil: the
	// maximum is always charged).
	Charge ChargeFunc
	// Network is the chain to be paid on (default x402.DefaultNetwork).
	Network string
	// PayTo is the platform's address; a tenant's payTo overrides it.
	PayTo string
	// MaxResponseBytes bounds the buffered worker answer of a paid request
	// (default 8 MiB). A larger answer fails the request unsettled.
	MaxResponseBytes int64
	// SettleTimeout bounds settling and recording a paid request once the
	// worker has answered (default 30 seconds). That step runs detached
	// from the request's context: a client that goes away must not cut a
	// settlement short and leave it pending.
	SettleTimeout time.Duration
	// MaxTimeoutSeconds is advertised in challenges (default 60).
	MaxTimeoutSeconds int
	// ValiditySlack is how much longer than MaxTimeoutSeconds from now an
	// authorization may stay valid (default 10 minutes). One valid longer
	// is refused with a 402: its records would have to live that long.
	ValiditySlack time.Duration
	// InFlightTTL bounds how long a key stays "in flight" if a gateway dies
	// mid-request (default 5 minutes).
	InFlightTTL time.Duration
	// RecordTTL is the least time an idempotency record lives (default and
	// minimum 48 hours; longer when the authorization is valid longer).
	RecordTTL time.Duration
	// Extensions returns extra version 2 challenge extensions for a
	// request (the Bazaar discovery declaration of its route); nil: none.
	Extensions func(x *dispatch.Exchange) x402.Extensions
	// Paywall renders a 402 for a person: when it returns ok, a challenge
	// to that request is answered with body and contentType instead of the
	// JSON body (same status, same PAYMENT-REQUIRED header). Nil: always
	// JSON.
	Paywall func(r *http.Request, pr x402.PaymentRequired) (contentType string, body []byte, ok bool)
	// Channels runs the payment-channel schemes (batch-settlement): a
	// request paid on a channel is checked and leased by it, with no
	// facilitator call per request, and charged through it after the
	// worker answered. Required when Schemes holds a PricingChannel
	// scheme; x402/channel's StageChannels provides it.
	Channels Channels
	// OnSettlement, when set, is told every settlement outcome: the
	// tenant, the scheme's directory name, the ledger status (settled,
	// pending, failed) and the amount charged (zero unless settled). It
	// must not block: metrics hook in here.
	OnSettlement func(tenant, scheme, status string, usd decimal.Decimal)
	// Now is the clock (nil: time.Now).
	Now func() time.Time
	// Logger (nil: discarded).
	Logger *slog.Logger
}

// Stage is the payment stage; it implements dispatch.Stage.
type Stage struct {
	cfg     Config
	log     *slog.Logger
	rec     recovery
	schemes map[string]x402.Scheme
}

var (
	_ dispatch.Stage          = (*Stage)(nil)
	_ dispatch.HeaderOwner    = (*Stage)(nil)
	_ dispatch.HeaderConsumer = (*Stage)(nil)
)

// NewStage validates cfg and returns the stage.
func NewStage(cfg Config) (*Stage, error) {
	switch {
	case cfg.Facilitator == nil:
		return nil, errors.New("payment: Config.Facilitator is required")
	case cfg.KV == nil:
		return nil, errors.New("payment: Config.KV is required")
	case cfg.Ledger == nil:
		return nil, errors.New("payment: Config.Ledger is required")
	}
	if cfg.Network == "" {
		cfg.Network = x402.DefaultNetwork
	}
	if _, err := x402.LookupNetwork(cfg.Network); err != nil {
		return nil, fmt.Errorf("payment: %w", err)
	}
	if cfg.PayTo != "" {
		if _, err := x402.NewRequirement(x402.RequirementParams{Network: cfg.Network, Price: decimal.New(1, -2), PayTo: cfg.PayTo, Resource: "http://check.invalid/"}); err != nil {
			return nil, fmt.Errorf("payment: Config.PayTo: %w", err)
		}
	}
	if cfg.Schemes == nil {
		cfg.Schemes = []x402.Scheme{exact.New()}
	}
	schemes := make(map[string]x402.Scheme, len(cfg.Schemes))
	for i, sc := range cfg.Schemes {
		if sc == nil {
			return nil, fmt.Errorf("payment: Config.Schemes[%d] is nil", i)
		}
		if _, dup := schemes[sc.Name()]; dup {
			return nil, fmt.Errorf("payment: scheme %q given twice", sc.Name())
		}
		schemes[sc.Name()] = sc
		if sc.Pricing() == x402.PricingChannel && cfg.Channels == nil {
			return nil, fmt.Errorf("payment: scheme %q is a payment channel: Config.Channels is required", sc.Name())
		}
	}
	if cfg.MaxResponseBytes <= 0 {
		cfg.MaxResponseBytes = 8 << 20
	}
	if cfg.SettleTimeout <= 0 {
		cfg.SettleTimeout = 30 * time.Second
	}
	if cfg.MaxTimeoutSeconds <= 0 {
		cfg.MaxTimeoutSeconds = 60
	}
	if cfg.ValiditySlack <= 0 {
		cfg.ValiditySlack = 10 * time.Minute
	}
	if cfg.InFlightTTL <= 0 {
		cfg.InFlightTTL = 5 * time.Minute
	}
	if cfg.RecordTTL < x402.MinIdempotencyTTL {
		cfg.RecordTTL = x402.MinIdempotencyTTL
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Stage{cfg: cfg, log: log, schemes: schemes}, nil
}

// OwnedHeaders implements dispatch.HeaderOwner: the payment headers, which
// a worker must not forge. (Settlement-Overrides is the worker's own report
// to the stage: the stage reads it and removes it from every answer.)
func (s *Stage) OwnedHeaders() []string {
	return []string{"X-Payment-", "Payment-Response", "Payment-Required"}
}

// ConsumedHeaders implements dispatch.HeaderConsumer: no worker, of any
// tenant, ever sees a client's signed payment.
func (s *Stage) ConsumedHeaders() []string {
	return []string{x402.HeaderPaymentSignature, x402.HeaderXPayment}
}

// CheckDirectory reports a tenant or route of d that names a scheme the
// stage was not given, so a directory offering what the gateway cannot take
// is refused when it is loaded rather than when it is paid.
func (s *Stage) CheckDirectory(d *tenant.Directory) error {
	for _, t := range d.Tenants() {
		check := func(where string, names []string) error {
			for _, n := range names {
				if _, ok := s.schemes[n]; !ok {
					return fmt.Errorf("payment: tenant %q %s: scheme %q is not configured (have %s)", t.Slug, where, n, strings.Join(s.names(), ", "))
				}
			}
			return nil
		}
		if err := check("schemes", t.Schemes); err != nil {
			return err
		}
		for i, r := range t.Routes {
			if err := check(fmt.Sprintf("routes[%d].schemes", i), r.Schemes); err != nil {
				return err
			}
		}
	}
	return nil
}

func (s *Stage) names() []string {
	out := make([]string, 0, len(s.cfg.Schemes))
	for _, sc := range s.cfg.Schemes {
		out = append(out, sc.Name())
	}
	return out
}

// offer is one accepts entry: a scheme and the server's requirement for it.
type offer struct {
	scheme x402.Scheme
	req    x402.Requirement
}

// Accepts returns the server's accepts entries for a request to t priced p
// at resourceURL: one per scheme of p that the stage takes, in order. A
// fixed-price scheme on a route whose price is zero is left out. Discovery
// lists the same entries.
func (s *Stage) Accepts(t *tenant.Tenant, p tenant.Priced, resourceURL string) ([]x402.Requirement, error) {
	offers, err := s.offers(t, p, resourceURL)
	if err != nil {
		return nil, err
	}
	out := make([]x402.Requirement, len(offers))
	for i, o := range offers {
		out[i] = o.req
	}
	return out, nil
}

func (s *Stage) offers(t *tenant.Tenant, p tenant.Priced, resourceURL string) ([]offer, error) {
	payTo := t.PayTo
	if payTo == "" {
		payTo = s.cfg.PayTo
	}
	desc := p.Description
	if desc == "" {
		desc = describe(t)
	}
	mime := p.MimeType
	if mime == "" {
		mime = "application/json"
	}
	o := x402.Offer{
		Network:           s.cfg.Network,
		Price:             p.PriceUSD,
		MaxPrice:          p.MaxPriceUSD,
		PayTo:             payTo,
		Resource:          x402.ResourceInfo{URL: resourceURL, Description: desc, MimeType: mime},
		MaxTimeoutSeconds: s.cfg.MaxTimeoutSeconds,
	}
	out := make([]offer, 0, len(p.Schemes))
	for _, name := range p.Schemes {
		sc, ok := s.schemes[name]
		if !ok {
			continue
		}
		if sc.Pricing() == x402.PricingFixed && !p.PriceUSD.IsPositive() {
			continue
		}
		req, err := sc.Requirement(o)
		if err != nil {
			return nil, fmt.Errorf("scheme %s: %w", name, err)
		}
		out = append(out, offer{scheme: sc, req: req})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("none of the schemes %v can take this price (have %s)", p.Schemes, strings.Join(s.names(), ", "))
	}
	return out, nil
}

// Requirement returns the first of what the server asks of r, a request to
// t (found by host, or by a /t/<slug>/ path).
func (s *Stage) Requirement(t *tenant.Tenant, r *http.Request) (x402.Requirement, error) {
	path := r.URL.EscapedPath()
	if rest, ok := strings.CutPrefix(path, "/t/"+t.Slug); ok && (rest == "" || rest[0] == '/') {
		path = rest
	}
	offers, err := s.offers(t, t.PriceFor(r.Method, path), x402.RequestURL(r))
	if err != nil {
		return x402.Requirement{}, err
	}
	return offers[0].req, nil
}

func describe(t *tenant.Tenant) string {
	if t.Directory != "" {
		return fmt.Sprintf("%s API (%s), one request", t.Slug, t.Directory)
	}
	return t.Slug + " API, one request"
}

// exchange is one paid request inside the stage.
type exchange struct {
	s       *Stage
	x       *dispatch.Exchange
	offers  []offer
	p       *x402.Payment
	chosen  offer
	grant   x402.Grant
	key, fp string
	hold    meter.Hold
}

// Handle implements dispatch.Stage.
func (s *Stage) Handle(ctx context.Context, x *dispatch.Exchange, next dispatch.Next) (*http.Response, error) {
	if !x.Price.Charges {
		// A free answer carries no charge report either.
		resp, err := next(ctx, x)
		if resp != nil {
			resp.Header.Del(HeaderSettlementOverrides)
		}
		return resp, err
	}
	offers, err := s.offers(x.Tenant, x.Price, x402.RequestURL(x.Request))
	if err != nil {
		return nil, dispatch.ErrInternal.With("", fmt.Errorf("tenant %q cannot be paid: %w", x.Tenant.Slug, err))
	}
	ex := &exchange{s: s, x: x, offers: offers}
	if resp, err := ex.decode(ctx); resp != nil || err != nil {
		return resp, err
	}
	if ex.chosen.scheme.Pricing() == x402.PricingChannel {
		return ex.channel(ctx, next)
	}
	if err := ex.admit(ctx); err != nil {
		return nil, err
	}
	settled := false
	defer func() {
		if !settled {
			if err := ex.hold.Release(context.WithoutCancel(ctx)); err != nil {
				s.log.Error("releasing a hold failed", "tenant", x.Tenant.Slug, "key", ex.key, "err", err)
			}
			ex.hold.SetHeaders(x.Header)
		}
	}()
	c, replay, err := ex.preflight(ctx)
	if err != nil || replay != nil {
		return replay, err
	}
	kept := false // the claim becomes a stored record
	defer func() {
		if !kept {
			c.drop(context.WithoutCancel(ctx))
		}
	}()
	resp, body, err := ex.forward(ctx, next)
	if err != nil || resp.StatusCode >= 400 {
		if resp != nil {
			// Not settled, not charged; the worker ran, so the usage unit
			// stays counted. The lifecycle follows the dispatcher's rule
			// for any worker answer: 5xx is worker_error, 4xx served.
			settled = true
			if cerr := ex.hold.Commit(context.WithoutCancel(ctx), decimal.Zero); cerr != nil {
				s.log.Error("giving back a hold failed", "tenant", x.Tenant.Slug, "key", ex.key, "err", cerr)
			}
			ex.hold.SetHeaders(x.Header)
		}
		return resp, err
	}
	out, charged := ex.settle(ctx, c, resp, body)
	if charged {
		settled, kept = true, true
	}
	return out, nil
}

// decode reads the payment and checks it against the offer its scheme
// claims. It answers (a challenge, a refusal) when the request cannot go
// on, after metering its rate limits: every request to a paid route counts
// against them, refused or not.
func (ex *exchange) decode(ctx context.Context) (*http.Response, error) {
	x, s := ex.x, ex.s
	p, err := x402.PaymentFromHeader(x.Request.Header)
	if errors.Is(err, x402.ErrNoPayment) {
		if err := ex.meterRate(ctx); err != nil {
			return nil, err
		}
		x.Lifecycle = LifecycleChallenged
		return ex.challenge("")
	}
	if err != nil {
		if err := ex.meterRate(ctx); err != nil {
			return nil, err
		}
		return nil, ex.invalid(err)
	}
	ex.p = p
	found := false
	for _, o := range ex.offers {
		if o.scheme.Claims(p.Accepted) {
			ex.chosen, found = o, true
			break
		}
	}
	var gerr error
	if found {
		ex.grant, gerr = ex.chosen.scheme.Check(p, ex.chosen.req, s.cfg.Now())
	}
	// Every answer to a decodable payment names its idempotency key, the
	// refusals included.
	ex.key = x402.IdempotencyKeyFor(p, x.Request.Header, ex.grant.ID)
	if ex.key != "" {
		x.Header.Set(HeaderIdempotencyKey, ex.key)
	}
	var reason string
	switch {
	case !found:
		reason = fmt.Sprintf("payment does not match the requirement: no offered way to pay is scheme %q", clip(p.Accepted.Scheme))
	case errors.Is(gerr, x402.ErrInvalidPayment):
		if err := ex.meterRate(ctx); err != nil {
			return nil, err
		}
		return nil, ex.invalid(gerr)
	case gerr != nil:
		reason = "payment does not match the requirement: " + gerr.Error()
	case ex.grant.ID == "":
		return nil, dispatch.ErrInternal.With("", fmt.Errorf("scheme %s gave no authorization identity", ex.chosen.scheme.Name()))
	default:
		limit := s.cfg.Now().Add(time.Duration(s.cfg.MaxTimeoutSeconds)*time.Second + s.cfg.ValiditySlack)
		if vb := ex.grant.ValidBefore; !vb.IsZero() && vb.After(limit) {
			reason = fmt.Sprintf("payment does not match the requirement: the authorization is valid until %s, more than %ds and %s from now", vb.UTC().Format(time.RFC3339), s.cfg.MaxTimeoutSeconds, s.cfg.ValiditySlack)
		}
	}
	if reason != "" {
		if err := ex.meterRate(ctx); err != nil {
			return nil, err
		}
		x.Lifecycle = LifecycleInvalid
		return ex.challenge(reason)
	}
	ex.fp = x402.FingerprintGrant(x.Request.Method, x.Request.URL.RequestURI(), p, ex.grant)
	return nil, nil
}

// meterRate counts a request that goes no further than the stage against
// the rate limits, and sets every limit header.
func (ex *exchange) meterRate(ctx context.Context) error {
	if ex.s.cfg.Meter == nil {
		return nil
	}
	x := ex.x
	h, err := ex.s.cfg.Meter.Admit(ctx, meter.Params{Tenant: x.Tenant, CallerID: x.CallerID, ClientIP: x.ClientIP, Rate: true})
	if h != nil {
		h.SetHeaders(x.Header)
	}
	return err
}

// admit meters the request: its rate limits, its usage unit and its price
// (or maximum) against the spend caps, in one call before the facilitator
// is asked anything.
func (ex *exchange) admit(ctx context.Context) error {
	x := ex.x
	if ex.s.cfg.Meter == nil {
		ex.hold = noHold{}
		return nil
	}
	h, err := ex.s.cfg.Meter.Admit(ctx, meter.Params{Tenant: x.Tenant, CallerID: x.CallerID, ClientIP: x.ClientIP, Rate: true, Usage: true, Spend: ex.holdAmount()})
	if h != nil {
		h.SetHeaders(x.Header)
	}
	if err != nil {
		return err
	}
	ex.hold = h
	return nil
}

// holdAmount is what the spend caps hold for the request: the price, or the
// most a usage-priced scheme may charge.
func (ex *exchange) holdAmount() decimal.Decimal {
	if ex.chosen.scheme.Pricing() != x402.PricingFixed {
		return ex.x.Price.MaxPriceUSD
	}
	return ex.x.Price.PriceUSD
}

// preflight claims the idempotency key, checks the ledger and verifies the
// payment. It returns a replayed answer, or an error, when the request must
// not reach the worker.
func (ex *exchange) preflight(ctx context.Context) (*claim, *http.Response, error) {
	x, s := ex.x, ex.s
	t := x.Tenant
	c, replay, err := s.claim(ctx, t.Slug, ex.key, ex.grant.ID, ex.fp)
	if err != nil {
		return nil, nil, err
	}
	if replay != nil {
		x.Lifecycle = LifecycleReplayed
		x.Payer = ex.grant.Payer
		return nil, replay, nil
	}
	ok := false
	defer func() {
		if !ok {
			c.drop(context.WithoutCancel(ctx))
		}
	}()
	// The ledger must be reachable, and the key unsettled, before anything
	// more is consumed: no verify, no worker call for a key the ledger
	// already holds (its idempotency record expired or was lost).
	if prev, err := s.cfg.Ledger.Entry(ctx, t.Slug, ex.key); err == nil {
		return nil, nil, dispatch.ErrIdempotencyKeyReused.With(fmt.Sprintf("this payment was already settled (ledger entry %s, %s)", prev.ID, prev.Status), nil)
	} else if !errors.Is(err, ledger.ErrNotFound) {
		return nil, nil, dispatch.ErrStoreUnavailable.With("", err)
	}
	fr := x402.FacilitatorRequest{Payment: ex.p, Requirement: ex.chosen.req}
	vr, err := s.cfg.Facilitator.Verify(ctx, fr)
	if err != nil {
		if errors.Is(err, x402.ErrInvalidPayment) {
			return nil, nil, ex.invalid(err)
		}
		return nil, nil, dispatch.ErrFacilitatorUnavailable.With("", fmt.Errorf("verify: %w", err))
	}
	if vr == nil {
		return nil, nil, dispatch.ErrFacilitatorUnavailable.With("", errors.New("verify: no answer"))
	}
	if !vr.IsValid {
		x.Lifecycle = LifecycleInvalid
		reason := vr.InvalidReason
		if reason == "" {
			reason = "payment is not valid"
		}
		resp, err := ex.challenge(reason)
		return nil, resp, err
	}
	x.Payer = ex.grant.Payer
	if vr.Payer != "" {
		x.Payer = vr.Payer
	}
	x.Scheme = ex.chosen.scheme.Name()
	x.Caller = "payer:" + strings.ToLower(x.Payer)
	x.CallerID = dispatch.HashCaller(x.Caller)
	ok = true
	return c, nil, nil
}

// forward calls the worker and buffers its answer. An error, or an answer
// of 400 or more (returned as it is), means nothing is settled.
func (ex *exchange) forward(ctx context.Context, next dispatch.Next) (*http.Response, []byte, error) {
	x := ex.x
	resp, err := next(ctx, x)
	if err != nil {
		return nil, nil, err
	}
	body, err := readBounded(resp.Body, ex.s.cfg.MaxResponseBytes)
	resp.Body.Close()
	if err != nil {
		x.Lifecycle = LifecycleWorkerError
		return nil, nil, dispatch.ErrWorkerFailure.With("", fmt.Errorf("%v; the payment was not settled", err))
	}
	if resp.StatusCode >= 400 {
		if resp.StatusCode >= 500 {
			x.Lifecycle = LifecycleWorkerError
		}
		resp.Header.Del(HeaderSettlementOverrides)
		resp.Body = io.NopCloser(bytes.NewReader(body))
		resp.ContentLength = int64(len(body))
	}
	return resp, body, nil
}

// charge is what the request costs in atomic units, from the worker's
// report for a usage-priced scheme.
func (ex *exchange) charge(resp *http.Response) (string, error) {
	report := resp.Header.Get(HeaderSettlementOverrides)
	resp.Header.Del(HeaderSettlementOverrides)
	max := ex.chosen.req.Amount
	if ex.chosen.scheme.Pricing() == x402.PricingFixed || report == "" || ex.s.cfg.Charge == nil {
		return max, nil
	}
	decimals := int32(6)
	if nw, err := x402.LookupNetwork(ex.chosen.req.Network); err == nil {
		decimals = nw.USDC.Decimals
	}
	return ex.s.cfg.Charge(report, max, decimals)
}

// settle settles the payment for the worker's answer and records it. It
// never fails the request: once money may have moved, the client gets what
// it paid for. charged reports whether the payment was (or may have been)
// taken, in which case the claim is kept and the hold committed.
func (ex *exchange) settle(ctx context.Context, c *claim, resp *http.Response, body []byte) (*http.Response, bool) {
	x, s, p := ex.x, ex.s, ex.p
	t := x.Tenant
	atomic, err := ex.charge(resp)
	if err != nil {
		x.Lifecycle = LifecycleWorkerError
		s.log.Warn("the worker's charge report is unusable; nothing settled", "tenant", t.Slug, "key", ex.key, "err", err)
		return dispatch.ErrorResponse(dispatch.ErrWorkerFailure.With("", fmt.Errorf("the worker's %s header: %v; the payment was not settled", HeaderSettlementOverrides, err)), x.Payload.RequestID), false
	}
	req := ex.chosen.req
	req.Amount = atomic
	chargedUSD, _ := x402.FromAtomicUnits(atomic, usdcDecimals(req.Network))

	// From here on money may move: the client going away must not cut the
	// settlement or its records short.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.SettleTimeout)
	defer cancel()
	entry := ledger.Entry{
		// The id is made here, before the intent, so Recover can match an
		// intent to its outcome by something no client chooses. Version 7
		// (time first) keeps a store's index of ids growing at one end.
		ID:             uuid.Must(uuid.NewV7()),
		IdempotencyKey: ex.key, Tenant: t.Slug, Owner: t.OwnerUserID, Payer: x.Payer,
		Amount: chargedUSD.String(), AmountAtomic: atomic, Asset: req.Asset, Network: req.Network,
		PayTo: req.PayTo, Status: ledger.StatusPending, RequestID: x.Payload.RequestID, Resource: req.Resource.URL,
	}
	var sr *x402.SettleResponse
	if isZero(atomic) {
		// Nothing to take: nothing is settled, nothing recorded on chain.
		sr = &x402.SettleResponse{Success: true, Payer: x.Payer, Network: req.Network, Amount: "0"}
	} else {
		// The intent goes to the audit log before money moves: if this
		// process dies between the settlement and its ledger entry, Recover
		// finds the intent without an outcome. When the intent cannot be
		// written, nothing is settled.
		if _, err := s.cfg.Ledger.Audit(sctx, KindSettlementIntent, t.Slug, ex.key, entry); err != nil {
			return dispatch.ErrorResponse(dispatch.ErrStoreUnavailable.With("", fmt.Errorf("recording the settlement intent: %v; the payment was not settled", err)), x.Payload.RequestID), false
		}
		sr = s.callSettle(sctx, x402.FacilitatorRequest{Payment: p, Requirement: req}, t.Slug, ex.key)
		if sr.Payer == "" {
			sr.Payer = x.Payer
		}
	}
	entry.TxHash = sr.Transaction
	value, herr := settlementValue(p, sr)
	if herr != nil {
		s.log.Error("encoding the settle response failed", "tenant", t.Slug, "key", ex.key, "err", herr)
	}
	switch {
	case sr.Success, sr.Pending():
		// Money moved (or may have): whatever happens to the records, the
		// amount stays counted against the caps, the key is never settled
		// again, and the client gets what it paid for.
		if err := ex.hold.Commit(sctx, chargedUSD); err != nil {
			s.log.Error("spend commit failed", "tenant", t.Slug, "key", ex.key, "err", err)
		}
		ex.hold.SetHeaders(x.Header)
		var out *http.Response
		state := stateDone
		if sr.Success {
			entry.Status = ledger.StatusSettled
			x.Lifecycle = LifecycleSettled
			x.BilledUSD = chargedUSD.String()
			out = dispatch.NewResponse(resp.StatusCode, resp.Header.Clone(), body)
			out.Header.Set("Content-Length", strconv.Itoa(len(body)))
		} else {
			entry.Status = ledger.StatusPending
			state = statePending
			x.Lifecycle = LifecycleSettlementFailed
			out = ex.mustChallenge("settlement is pending; this payment will not be settled again")
			body = readAll(out)
		}
		setSettlementHeaders(out.Header, p, value)
		out.Header.Set(HeaderIdempotencyKey, ex.key)
		c.store(sctx, state, out, body, x402.TTLUntil(ex.grant.ValidBefore, s.cfg.Now(), s.cfg.RecordTTL), &outcome{EntryID: entry.ID, Status: entry.Status, TxHash: entry.TxHash})
		if !isZero(atomic) {
			s.record(sctx, entry)
		}
		s.settled(t.Slug, ex, entry.Status, chargedUSD)
		return out, true
	default:
		x.Lifecycle = LifecycleSettlementFailed
		// A failed settlement is recorded under its own key, so the
		// payment's key stays free for a retry once the payer can pay;
		// the outcome is kept first so that Recover, should the ledger
		// write be lost, books the failure and not a pending payment.
		entry.Status = ledger.StatusFailed
		s.keepOutcome(sctx, entry)
		entry.IdempotencyKey = ex.key + "#failed:" + entry.ID.String()
		s.record(sctx, entry)
		reason := sr.ErrorReason
		if reason == "" {
			reason = "settlement failed"
		}
		out := ex.mustChallenge("settlement failed: " + reason)
		setSettlementHeaders(out.Header, p, value)
		s.settled(t.Slug, ex, entry.Status, decimal.Zero)
		return out, false
	}
}

// settled tells Config.OnSettlement of an outcome.
func (s *Stage) settled(slug string, ex *exchange, status ledger.Status, usd decimal.Decimal) {
	if s.cfg.OnSettlement == nil {
		return
	}
	if status != ledger.StatusSettled {
		usd = decimal.Zero
	}
	s.cfg.OnSettlement(slug, ex.chosen.scheme.Name(), string(status), usd)
}

// channel runs a request paid on a payment channel: a refund is answered
// without the worker; otherwise the request is metered, the channel leased
// and the voucher checked (locally, no facilitator round trip), the worker
// called, and the charge committed to the channel. Nothing is settled per
// request: a claimer moves the charges on chain in batches.
func (ex *exchange) channel(ctx context.Context, next dispatch.Next) (*http.Response, error) {
	x, s, p := ex.x, ex.s, ex.p
	t := x.Tenant
	if s.cfg.Channels.IsRefund(p) {
		if err := ex.meterRate(ctx); err != nil {
			return nil, err
		}
		sr, err := s.cfg.Channels.Refund(context.WithoutCancel(ctx), p, ex.chosen.req)
		if err != nil {
			return ex.channelRefusal(err)
		}
		body := []byte(`{"refunded":true}`)
		out := dispatch.NewResponse(http.StatusOK, http.Header{"Content-Type": {"application/json"}}, body)
		if value, err := settlementValue(p, sr); err == nil {
			setSettlementHeaders(out.Header, p, value)
		}
		return out, nil
	}
	if err := ex.admit(ctx); err != nil {
		return nil, err
	}
	settled := false
	defer func() {
		if !settled {
			if err := ex.hold.Release(context.WithoutCancel(ctx)); err != nil {
				s.log.Error("releasing a hold failed", "tenant", t.Slug, "err", err)
			}
			ex.hold.SetHeaders(x.Header)
		}
	}()
	ch, err := s.cfg.Channels.Begin(ctx, p, ex.chosen.req, ChannelMeta{Tenant: t.Slug, RequestID: x.Payload.RequestID, Resource: ex.chosen.req.Resource.URL})
	if err != nil {
		return ex.channelRefusal(err)
	}
	committed := false
	defer func() {
		if !committed {
			if err := ch.Abort(context.WithoutCancel(ctx)); err != nil {
				s.log.Warn("releasing a channel failed; its lease expires by itself", "tenant", t.Slug, "err", err)
			}
		}
	}()
	x.Payer, x.Scheme = ex.grant.Payer, ex.chosen.scheme.Name()
	x.Caller = "payer:" + strings.ToLower(x.Payer)
	x.CallerID = dispatch.HashCaller(x.Caller)
	resp, body, err := ex.forward(ctx, next)
	if err != nil || resp.StatusCode >= 400 {
		if resp != nil {
			settled = true
			if cerr := ex.hold.Commit(context.WithoutCancel(ctx), decimal.Zero); cerr != nil {
				s.log.Error("giving back a hold failed", "tenant", t.Slug, "err", cerr)
			}
			ex.hold.SetHeaders(x.Header)
		}
		return resp, err
	}
	atomic, err := ex.charge(resp)
	if err != nil {
		x.Lifecycle = LifecycleWorkerError
		return nil, dispatch.ErrWorkerFailure.With("", fmt.Errorf("the worker's %s header: %v; nothing was charged", HeaderSettlementOverrides, err))
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.SettleTimeout)
	defer cancel()
	sr, err := ch.Commit(sctx, atomic)
	if err != nil {
		x.Lifecycle = LifecycleWorkerError
		return nil, dispatch.ErrWorkerFailure.With("", fmt.Errorf("charging the channel: %w; nothing was charged", err))
	}
	committed, settled = true, true
	chargedUSD, _ := x402.FromAtomicUnits(atomic, usdcDecimals(ex.chosen.req.Network))
	if err := ex.hold.Commit(sctx, chargedUSD); err != nil {
		s.log.Error("spend commit failed", "tenant", t.Slug, "err", err)
	}
	ex.hold.SetHeaders(x.Header)
	x.Lifecycle = LifecycleSettled
	x.BilledUSD = chargedUSD.String()
	out := dispatch.NewResponse(resp.StatusCode, resp.Header.Clone(), body)
	out.Header.Set("Content-Length", strconv.Itoa(len(body)))
	if value, err := settlementValue(p, sr); err == nil {
		setSettlementHeaders(out.Header, p, value)
	}
	if s.cfg.OnSettlement != nil {
		s.cfg.OnSettlement(t.Slug, ex.chosen.scheme.Name(), "charged", chargedUSD)
	}
	return out, nil
}

// channelRefusal answers a channel's refusal: a corrective 402 carrying
// what to sign instead, a 402 naming a mismatch, a 400 for an undecodable
// payload, the gateway's error as it is, else 503 (nothing charged).
func (ex *exchange) channelRefusal(err error) (*http.Response, error) {
	var corr Corrective
	var derr *dispatch.Error
	var coded Coded
	reason := "payment does not match the channel: " + err.Error()
	if errors.As(err, &coded) && coded.Code() != "" {
		reason = coded.Code()
	}
	switch {
	case errors.As(err, &corr):
		ex.x.Lifecycle = LifecycleInvalid
		fixed := make([]offer, len(ex.offers))
		copy(fixed, ex.offers)
		for i := range fixed {
			if fixed[i].scheme == ex.chosen.scheme {
				fixed[i].req = corr.Corrective(fixed[i].req)
			}
		}
		ex.offers = fixed
		return ex.challenge(reason)
	case errors.Is(err, x402.ErrInvalidPayment):
		return nil, ex.invalid(err)
	case errors.Is(err, x402.ErrRequirementMismatch):
		ex.x.Lifecycle = LifecycleInvalid
		return ex.challenge(reason)
	case errors.As(err, &derr):
		return nil, err
	case errors.Is(err, x402.ErrFacilitatorUnavailable):
		return nil, dispatch.ErrFacilitatorUnavailable.With("", err)
	}
	return nil, dispatch.ErrStoreUnavailable.With("", fmt.Errorf("payment channel: %w", err))
}

// callSettle asks the facilitator to settle, once more with the same
// payload when the first answer is settlement_pending. No usable answer
// counts as pending: the transfer may or may not have happened, and the key
// is never settled again.
func (s *Stage) callSettle(ctx context.Context, fr x402.FacilitatorRequest, slug, key string) *x402.SettleResponse {
	var sr *x402.SettleResponse
	var err error
	for attempt := 0; attempt < 2; attempt++ {
		sr, err = s.cfg.Facilitator.Settle(ctx, fr)
		if err == nil && sr == nil {
			err = errors.New("no answer")
		}
		if err != nil || !sr.Pending() || ctx.Err() != nil {
			break
		}
	}
	if err != nil {
		s.log.Error("settle: no usable answer; recorded as pending", "tenant", slug, "key", key, "err", err)
		return &x402.SettleResponse{Success: false, ErrorReason: x402.ReasonSettlementPending, Network: fr.Requirement.Network}
	}
	return sr
}

func usdcDecimals(network string) int32 {
	if nw, err := x402.LookupNetwork(network); err == nil {
		return nw.USDC.Decimals
	}
	return 6
}

func isZero(atomic string) bool { return strings.TrimLeft(atomic, "0") == "" }

// settlementValue encodes the settle response for the client who sent p.
func settlementValue(p *x402.Payment, sr *x402.SettleResponse) (string, error) {
	_, value, err := x402.SettlementHeader(p, sr)
	return value, err
}

// setSettlementHeaders sets the payment response header for p: the one its
// protocol version names (PAYMENT-RESPONSE for version 2, X-PAYMENT-RESPONSE
// for version 1) and, when the payment came in the other generation's
// header (a version 1 payload in PAYMENT-SIGNATURE, or version 2 in
// X-PAYMENT), also the response header matching that request header, so
// the client finds its answer whichever way it reads it.
func setSettlementHeaders(h http.Header, p *x402.Payment, value string) {
	if value == "" {
		return
	}
	h.Set(p.ResponseHeader(), value)
	switch p.Header {
	case x402.HeaderPaymentSignature:
		h.Set(x402.HeaderPaymentResponse, value)
	case x402.HeaderXPayment:
		h.Set(x402.HeaderXPaymentResponse, value)
	}
}

// record writes the settlement, retrying a few times (honouring ctx): once
// money has moved the record must not be lost to a blip. It does not fail
// the request: the client has paid, so it gets its answer, and a write that
// still fails is logged for reconciliation by hand (Recover also finds the
// intent and the outcome kept with the idempotency record). A duplicate
// that is not this request's own entry (a second settlement under one key,
// possible only when an in-flight claim outlived InFlightTTL) is recorded
// under a derived key, so every settlement is in the ledger.
func (s *Stage) record(ctx context.Context, e ledger.Entry) bool {
	var err error
	derived := false
	for attempt := 0; attempt < 3; attempt++ {
		if attempt > 0 {
			select {
			case <-time.After(time.Duration(attempt) * 50 * time.Millisecond):
			case <-ctx.Done():
				attempt = 3
				continue
			}
		}
		var prev ledger.Entry
		prev, _, err = s.cfg.Ledger.RecordSettlement(ctx, e)
		if err == nil {
			return true
		}
		if !errors.Is(err, ledger.ErrDuplicate) {
			continue
		}
		if derived || prev.ID == e.ID {
			return true // this request's own entry, written by an earlier attempt
		}
		s.log.Error("a second settlement under one idempotency key; recording it under a derived key",
			"tenant", e.Tenant, "key", e.IdempotencyKey, "first", prev.ID, "requestId", e.RequestID)
		e.IdempotencyKey += "#dup:" + e.ID.String()
		derived = true
		attempt = -1 // a fresh round of attempts for the derived key
	}
	body, _ := json.Marshal(e)
	s.log.Error("SETTLED BUT NOT RECORDED: reconcile this entry by hand", "entry", string(body), "err", err)
	return false
}

// challengeOptions are the options of every challenge the stage sends: the
// reason, the payment-identifier extension offered (not required), and the
// configured extensions (the route's Bazaar declaration).
func (ex *exchange) challengeOptions(reason string) x402.ChallengeOptions {
	ext := x402.Extensions{x402.ExtensionPaymentIdentifier: x402.PaymentIdentifierExtension(false)}
	if f := ex.s.cfg.Extensions; f != nil {
		for k, v := range f(ex.x) {
			ext[k] = v
		}
	}
	return x402.ChallengeOptions{Error: reason, Extensions: ext}
}

func (ex *exchange) requirements() []x402.Requirement {
	out := make([]x402.Requirement, len(ex.offers))
	for i, o := range ex.offers {
		out[i] = o.req
	}
	return out
}

func (ex *exchange) challenge(reason string) (*http.Response, error) {
	c, err := x402.NewChallengeAll(ex.requirements(), ex.challengeOptions(reason))
	if err != nil {
		return nil, dispatch.ErrInternal.With("", fmt.Errorf("building the challenge: %w", err))
	}
	h := make(http.Header)
	h.Set(x402.HeaderPaymentRequired, c.Header)
	body, ct := c.Body, "application/json"
	if f := ex.s.cfg.Paywall; f != nil {
		if pct, page, ok := f(ex.x.Request, c.PaymentRequired); ok {
			body, ct = page, pct
		}
	}
	h.Set("Content-Type", ct)
	h.Set("Content-Length", strconv.Itoa(len(body)))
	return dispatch.NewResponse(http.StatusPaymentRequired, h, body), nil
}

// mustChallenge is challenge for the answers after settlement, which must
// not fail: should the challenge not build, a bare 402 still carries the
// payment response header.
func (ex *exchange) mustChallenge(reason string) *http.Response {
	out, err := ex.challenge(reason)
	if err != nil {
		ex.s.log.Error("building a challenge failed", "err", err)
		body, _ := json.Marshal(map[string]any{"x402Version": 1, "error": reason, "accepts": []any{}})
		h := make(http.Header)
		h.Set("Content-Type", "application/json")
		h.Set("Content-Length", strconv.Itoa(len(body)))
		return dispatch.NewResponse(http.StatusPaymentRequired, h, body)
	}
	return out
}

// invalid is the 400 answer to an undecodable payment: the gateway's error
// fields and the x402 version 1 challenge fields in one body, and the
// version 2 challenge header.
func (ex *exchange) invalid(cause error) error {
	ex.x.Lifecycle = LifecycleInvalid
	e := dispatch.ErrInvalidPayment.With("", cause)
	if c, err := x402.NewChallengeAll(ex.requirements(), ex.challengeOptions("invalid payment: "+cause.Error())); err == nil {
		e.Header = http.Header{http.CanonicalHeaderKey(x402.HeaderPaymentRequired): {c.Header}}
		e.Details = map[string]any{"x402Version": c.PaymentRequiredV1.X402Version, "accepts": c.PaymentRequiredV1.Accepts}
	}
	return e
}

func readBounded(r io.Reader, limit int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, fmt.Errorf("reading the worker's answer: %v", err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("the worker's answer is larger than %d bytes", limit)
	}
	return b, nil
}

func readAll(resp *http.Response) []byte {
	b, _ := io.ReadAll(resp.Body)
	resp.Body = io.NopCloser(bytes.NewReader(b))
	return b
}

// clip shortens untrusted text quoted in messages.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

// noHold is the hold of a stage without a Meter.
type noHold struct{}

func (noHold) SetHeaders(http.Header)                        {}
func (noHold) Commit(context.Context, decimal.Decimal) error { return nil }
func (noHold) Release(context.Context) error                 { return nil }

// Ledger returns the ledger the stage records settlements in.
func (s *Stage) Ledger() *ledger.Ledger { return s.cfg.Ledger }
