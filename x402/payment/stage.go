// Package payment is the paid path of the dispatcher: the pipeline stage
// that charges for a request with x402 (DESIGN section 7).
//
// For a tenant that charges (x402Enabled and a positive price) the stage:
//
//  1. answers a request without a payment with a 402 challenge that both
//     protocol generations read (the v2 PAYMENT-REQUIRED header and the v1
//     JSON body);
//  2. decodes PAYMENT-SIGNATURE (v2) or X-PAYMENT (v1): undecodable is
//     400 invalid_payment;
//  3. checks the client's chosen requirement against the server's own
//     (scheme, network, amount, asset, payTo): a mismatch is a 402 naming
//     the field;
//  4. takes the idempotency key (payment-identifier extension,
//     X-Payment-Idempotency-Key / Idempotency-Key, else derived from the
//     authorization) and a fingerprint of the request: same key and
//     fingerprint after success replays the stored answer with
//     X-Payment-Deduped: true; while in flight, 409 idempotency_key_in_use;
//     a different fingerprint (or the same authorization under another key),
//     422 idempotency_key_reused;
//  5. checks the ledger is reachable and holds no entry for the key (else
//     503 store_unavailable or 422 idempotency_key_reused, nothing called);
//  6. verifies with the facilitator (only the server's requirement is sent):
//     invalid is a 402 with the reason, no usable answer is
//     502 facilitator_unavailable, and the worker is not called;
//  7. reserves the price against the tenant's spend caps; through
//     SpendFromQuota on a store with a batch ability this is the paid
//     request's one counter round trip, which also makes the rate-limit
//     check RateLimitStage deferred and reserves the usage unit (see
//     quota.Limiter.ReserveExchange), so a refusal here may also be
//     429 rate_limited or usage_quota_exceeded;
//  8. calls the rest of the pipeline (usage quota, the worker) and buffers
//     the worker's answer, bounded by MaxResponseBytes;
//  9. when the worker answered below 400, settles (detached from the
//     client's context, bounded by SettleTimeout), writes the ledger entry
//     and its audit record in one step, commits the spend reservation,
//     stores the answer for replays, and releases the answer with
//     PAYMENT-RESPONSE (or X-PAYMENT-RESPONSE for version 1). A worker
//     answer of 400 or more is returned as it is, not settled, and the
//     reservation released.
//
// A failed settlement answers 402 with the failed settle response in the
// payment response header; the worker's body is dropped and the failure is
// written to the ledger (status failed, under a key of its own) and audit
// log. A pending settlement, or a settle call with no usable answer, is
// recorded in the ledger with status pending and kept in the idempotency
// record, so it is never settled twice. Once money has (or may have) moved
// the stage never answers with an error: the spend stays committed, the
// idempotency record is stored, and a ledger write that fails after retries
// is logged for reconciliation rather than turned into a 503 for a client
// who paid. Failures before settlement leave no idempotency record and
// release the spend hold, so the client may retry with the same payment.
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
	"github.com/402claw/dispatcher/tenant"
	"github.com/402claw/dispatcher/x402"
)

// Header names of the idempotency contract.
const (
	HeaderIdempotencyKey = x402.HeaderPaymentIdempotencyKey
	HeaderDeduped        = x402.HeaderPaymentDeduped
)

// Lifecycles the stage assigns (see metrics).
const (
	LifecycleChallenged       = "payment_challenged"
	LifecycleInvalid          = "payment_invalid"
	LifecycleSettled          = "payment_settled"
	LifecycleReplayed         = "payment_replayed"
	LifecycleSettlementFailed = "payment_settlement_failed"
	LifecycleSpendCapExceeded = "spend_cap_exceeded"
	LifecycleWorkerError      = "worker_error"
)

// SpendReserver reserves a paid request's price against a tenant's spend
// caps. A *quota.Limiter plugs in through SpendFromQuota.
type SpendReserver interface {
	// Reserve holds price for t, or returns an error wrapping
	// dispatch.ErrSpendCapExceeded (a dispatch.HeaderError with the
	// X-Spend-* headers).
	Reserve(ctx context.Context, t *tenant.Tenant, price decimal.Decimal) (Reservation, error)
}

// ExchangeSpendReserver is an optional ability of a SpendReserver: reserve
// for a request in the pipeline, so that the reservation can set the
// X-Spend-* headers on x.Header (and refresh them when released). The stage
// prefers it to Reserve when the configured SpendReserver has it.
type ExchangeSpendReserver interface {
	SpendReserver
	ReserveExchange(ctx context.Context, x *dispatch.Exchange, price decimal.Decimal) (Reservation, error)
}

// Reservation is a held amount: Commit keeps it counted (settled), Release
// gives it back. Each is idempotent and the first one wins.
type Reservation interface {
	Commit(ctx context.Context) error
	Release(ctx context.Context) error
}

// Config configures the stage. Facilitator, KV and Ledger are required.
type Config struct {
	// Facilitator verifies and settles.
	Facilitator x402.Facilitator
	// KV keeps idempotency records.
	KV kv.Store
	// Ledger records settlements and their audit records.
	Ledger *ledger.Ledger
	// Spend reserves prices against spend caps (nil: no caps).
	Spend SpendReserver
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
	// InFlightTTL bounds how long a key stays "in flight" if a gateway dies
	// mid-request (default 5 minutes).
	InFlightTTL time.Duration
	// RecordTTL is the least time an idempotency record lives (default and
	// minimum 48 hours; longer when the authorization is valid longer).
	RecordTTL time.Duration
	// Now is the clock (nil: time.Now).
	Now func() time.Time
	// Logger (nil: discarded).
	Logger *slog.Logger
}

// Stage is the payment stage; it implements dispatch.Stage.
type Stage struct {
	cfg Config
	log *slog.Logger
	rec recovery
}

var _ dispatch.Stage = (*Stage)(nil)

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
	if cfg.MaxResponseBytes <= 0 {
		cfg.MaxResponseBytes = 8 << 20
	}
	if cfg.SettleTimeout <= 0 {
		cfg.SettleTimeout = 30 * time.Second
	}
	if cfg.MaxTimeoutSeconds <= 0 {
		cfg.MaxTimeoutSeconds = 60
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
	return &Stage{cfg: cfg, log: log}, nil
}

// Requirement returns what the server asks of a request to t.
func (s *Stage) Requirement(t *tenant.Tenant, r *http.Request) (x402.Requirement, error) {
	payTo := t.PayTo
	if payTo == "" {
		payTo = s.cfg.PayTo
	}
	return x402.NewRequirement(x402.RequirementParams{
		Network:           s.cfg.Network,
		Price:             t.PriceUSD,
		PayTo:             payTo,
		Resource:          x402.RequestURL(r),
		Description:       describe(t),
		MimeType:          "application/json",
		MaxTimeoutSeconds: s.cfg.MaxTimeoutSeconds,
	})
}

func describe(t *tenant.Tenant) string {
	if t.Directory != "" {
		return fmt.Sprintf("%s API (%s), one request", t.Slug, t.Directory)
	}
	return t.Slug + " API, one request"
}

// Handle implements dispatch.Stage.
func (s *Stage) Handle(ctx context.Context, x *dispatch.Exchange, next dispatch.Next) (*http.Response, error) {
	t := x.Tenant
	if !t.Charges() {
		return next(ctx, x)
	}
	r := x.Request
	req, err := s.Requirement(t, r)
	if err != nil {
		return nil, fmt.Errorf("%w: tenant %q cannot be paid: %v", dispatch.ErrInternal, t.Slug, err)
	}
	p, err := x402.PaymentFromHeader(r.Header)
	if errors.Is(err, x402.ErrNoPayment) {
		x.Lifecycle = LifecycleChallenged
		return s.challenge(req, "")
	}
	if err != nil {
		x.Lifecycle = LifecycleInvalid
		return nil, s.invalid(req, err)
	}
	// Every answer to a decodable payment names its idempotency key, the
	// refusals included.
	key := x402.IdempotencyKey(p, r.Header)
	x.Header.Set(HeaderIdempotencyKey, key)
	if err := x402.Match(req, p); err != nil {
		x.Lifecycle = LifecycleInvalid
		return s.challenge(req, "payment does not match the requirement: "+err.Error())
	}

	fp := x402.Fingerprint(r.Method, r.URL.RequestURI(), p)
	claim, replay, err := s.claim(ctx, t.Slug, key, x402.AuthorizationID(p), fp)
	if err != nil {
		return nil, err
	}
	if replay != nil {
		x.Lifecycle = LifecycleReplayed
		x.Payer = p.Payer
		return replay, nil
	}
	kept := false // the claim becomes a stored record
	defer func() {
		if !kept {
			claim.drop(context.WithoutCancel(ctx))
		}
	}()

	// The ledger must be reachable, and the key unsettled, before anything
	// is consumed: no verify, no spend hold, no worker call for a key the
	// ledger already holds (its idempotency record expired or was lost).
	if prev, err := s.cfg.Ledger.Entry(ctx, t.Slug, key); err == nil {
		return nil, fmt.Errorf("%w: this payment was already settled (ledger entry %s, %s)", dispatch.ErrIdempotencyKeyReused, prev.ID, prev.Status)
	} else if !errors.Is(err, ledger.ErrNotFound) {
		return nil, fmt.Errorf("%w: %v", dispatch.ErrStoreUnavailable, err)
	}

	fr := x402.FacilitatorRequest{Payment: p, Requirement: req}
	vr, err := s.cfg.Facilitator.Verify(ctx, fr)
	if err != nil {
		if errors.Is(err, x402.ErrInvalidPayment) {
			x.Lifecycle = LifecycleInvalid
			return nil, s.invalid(req, err)
		}
		return nil, fmt.Errorf("%w: verify: %v", dispatch.ErrFacilitatorUnavailable, err)
	}
	if vr == nil {
		return nil, fmt.Errorf("%w: verify: no answer", dispatch.ErrFacilitatorUnavailable)
	}
	if !vr.IsValid {
		x.Lifecycle = LifecycleInvalid
		reason := vr.InvalidReason
		if reason == "" {
			reason = "payment is not valid"
		}
		return s.challenge(req, reason)
	}
	x.Payer = p.Payer
	if vr.Payer != "" {
		x.Payer = vr.Payer
	}
	x.Caller = "payer:" + strings.ToLower(x.Payer)
	x.CallerID = dispatch.HashCaller(x.Caller)

	var hold Reservation = noReservation{}
	if s.cfg.Spend != nil {
		if xr, ok := s.cfg.Spend.(ExchangeSpendReserver); ok {
			hold, err = xr.ReserveExchange(ctx, x, t.PriceUSD)
		} else {
			hold, err = s.cfg.Spend.Reserve(ctx, t, t.PriceUSD)
		}
		if err != nil {
			if errors.Is(err, dispatch.ErrSpendCapExceeded) {
				x.Lifecycle = LifecycleSpendCapExceeded
			}
			return nil, err
		}
	}
	committed := false
	defer func() {
		if !committed {
			if err := hold.Release(context.WithoutCancel(ctx)); err != nil {
				s.log.Error("spend release failed", "tenant", t.Slug, "key", key, "err", err)
			}
		}
	}()

	// The worker never sees the signed authorization: it could otherwise
	// submit it first and make the gateway's settlement fail.
	if r.Header.Get(x402.HeaderPaymentSignature) != "" || r.Header.Get(x402.HeaderXPayment) != "" {
		fwd := r.Clone(r.Context())
		fwd.Header.Del(x402.HeaderPaymentSignature)
		fwd.Header.Del(x402.HeaderXPayment)
		x.Request = fwd
	}
	resp, err := next(ctx, x)
	if err != nil {
		return nil, err
	}
	body, err := readBounded(resp.Body, s.cfg.MaxResponseBytes)
	resp.Body.Close()
	if err != nil {
		x.Lifecycle = LifecycleWorkerError
		return nil, fmt.Errorf("%w: %v; the payment was not settled", dispatch.ErrWorkerFailure, err)
	}
	if resp.StatusCode >= 400 {
		// Not settled, not charged. The lifecycle follows the dispatcher's
		// rule for any worker answer: 5xx is worker_error, 4xx served.
		if resp.StatusCode >= 500 {
			x.Lifecycle = LifecycleWorkerError
		}
		resp.Body = io.NopCloser(bytes.NewReader(body))
		return resp, nil
	}

	// From here on money may move: the client going away must not cut the
	// settlement or its records short.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.SettleTimeout)
	defer cancel()
	entry := ledger.Entry{
		// The id is made here, before the intent, so Recover can match an
		// intent to its outcome by something no client chooses.
		ID:             uuid.New(),
		IdempotencyKey: key, Tenant: t.Slug, Owner: t.OwnerUserID, Payer: x.Payer,
		Amount: t.PriceUSD.String(), AmountAtomic: req.Amount, Asset: req.Asset, Network: req.Network,
		PayTo: req.PayTo, Status: ledger.StatusPending, RequestID: x.Payload.RequestID, Resource: req.Resource.URL,
	}
	// The intent goes to the audit log before money moves: if this process
	// dies between the settlement and its ledger entry, Recover finds the
	// intent without an outcome and records the payment as pending. When the
	// intent cannot be written, nothing is settled.
	if _, err := s.cfg.Ledger.Audit(sctx, KindSettlementIntent, t.Slug, key, entry); err != nil {
		return nil, fmt.Errorf("%w: recording the settlement intent: %v; the payment was not settled", dispatch.ErrStoreUnavailable, err)
	}
	sr, err := s.cfg.Facilitator.Settle(sctx, fr)
	if err == nil && sr == nil {
		err = errors.New("no answer")
	}
	if err != nil {
		// No usable answer: the transfer may or may not have happened.
		// Record it as pending so the key is never settled again.
		sr = &x402.SettleResponse{Success: false, ErrorReason: x402.ReasonSettlementPending, Payer: x.Payer, Network: req.Network}
		s.log.Error("settle: no usable answer; recorded as pending", "tenant", t.Slug, "key", key, "err", err)
	}
	entry.TxHash = sr.Transaction
	value, herr := settlementValue(p, sr)
	if herr != nil {
		// Cannot happen for a decoded payment and a non-nil answer; the
		// settlement is still recorded below.
		s.log.Error("encoding the settle response failed", "tenant", t.Slug, "key", key, "err", herr)
	}
	switch {
	case sr.Success, sr.Pending():
		// Money moved (or may have): whatever happens to the records, the
		// amount stays counted against the caps, the key is never settled
		// again, and the client gets what it paid for.
		kept, committed = true, true
		if err := hold.Commit(sctx); err != nil {
			s.log.Error("spend commit failed", "tenant", t.Slug, "key", key, "err", err)
		}
		var out *http.Response
		state := stateDone
		if sr.Success {
			entry.Status = ledger.StatusSettled
			x.Lifecycle = LifecycleSettled
			x.BilledUSD = t.PriceUSD.String()
			out = dispatch.NewResponse(resp.StatusCode, resp.Header.Clone(), body)
			out.Header.Set("Content-Length", strconv.Itoa(len(body)))
		} else {
			entry.Status = ledger.StatusPending
			state = statePending
			x.Lifecycle = LifecycleSettlementFailed
			out = s.mustChallenge(req, "settlement is pending; this payment will not be settled again")
			body = readAll(out)
		}
		s.record(sctx, entry)
		setSettlementHeaders(out.Header, p, value)
		out.Header.Set(HeaderIdempotencyKey, key)
		claim.store(sctx, state, out, body, x402.IdempotencyTTL(p, s.cfg.Now(), s.cfg.RecordTTL))
		return out, nil
	default:
		x.Lifecycle = LifecycleSettlementFailed
		x.Refund(sctx) // what stages within reserved (a usage unit) goes back
		// A failed settlement is recorded under its own key, so the
		// payment's key stays free for a retry once the payer can pay.
		entry.Status = ledger.StatusFailed
		entry.IdempotencyKey = key + "#failed:" + entry.ID.String()
		s.record(sctx, entry)
		reason := sr.ErrorReason
		if reason == "" {
			reason = "settlement failed"
		}
		out := s.mustChallenge(req, "settlement failed: "+reason)
		setSettlementHeaders(out.Header, p, value)
		return out, nil
	}
}

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

// record writes the settlement, retrying a few times: once money has moved
// the record must not be lost to a blip. It does not fail the request: the
// client has paid, so it gets its answer, and a write that still fails is
// logged for reconciliation by hand. A duplicate that is not this request's
// own entry (a second settlement under one key, possible only when an
// in-flight claim outlived InFlightTTL) is recorded under a derived key, so
// every settlement is in the ledger.
func (s *Stage) record(ctx context.Context, e ledger.Entry) bool {
	var err error
	derived := false
	for attempt := 0; attempt < 3; attempt++ {
		if attempt > 0 {
			time.Sleep(time.Duration(attempt) * 50 * time.Millisecond)
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
// reason, and the payment-identifier extension offered (not required).
func challengeOptions(reason string) x402.ChallengeOptions {
	return x402.ChallengeOptions{Error: reason, Extensions: x402.Extensions{
		x402.ExtensionPaymentIdentifier: x402.PaymentIdentifierExtension(false),
	}}
}

func (s *Stage) challenge(req x402.Requirement, reason string) (*http.Response, error) {
	c, err := x402.NewChallenge(req, challengeOptions(reason))
	if err != nil {
		return nil, fmt.Errorf("%w: building the challenge: %v", dispatch.ErrInternal, err)
	}
	h := make(http.Header)
	h.Set(x402.HeaderPaymentRequired, c.Header)
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(c.Body)))
	return dispatch.NewResponse(http.StatusPaymentRequired, h, c.Body), nil
}

// mustChallenge is challenge for the answers after settlement, which must
// not fail: should the challenge not build, a bare 402 still carries the
// payment response header.
func (s *Stage) mustChallenge(req x402.Requirement, reason string) *http.Response {
	out, err := s.challenge(req, reason)
	if err != nil {
		s.log.Error("building a challenge failed", "err", err)
		body, _ := json.Marshal(map[string]any{"x402Version": 1, "error": reason, "accepts": []any{}})
		h := make(http.Header)
		h.Set("Content-Type", "application/json")
		h.Set("Content-Length", strconv.Itoa(len(body)))
		return dispatch.NewResponse(http.StatusPaymentRequired, h, body)
	}
	return out
}

// invalidPayment is the 400 answer to an undecodable payment: the gateway's
// error fields and the x402 v1 challenge fields in one body, and the v2
// challenge header.
type invalidPayment struct {
	err       error
	challenge *x402.Challenge
}

func (s *Stage) invalid(req x402.Requirement, cause error) error {
	c, _ := x402.NewChallenge(req, challengeOptions("invalid payment: "+cause.Error()))
	return &invalidPayment{err: fmt.Errorf("%w: %v", dispatch.ErrInvalidPayment, cause), challenge: c}
}

func (e *invalidPayment) Error() string { return e.err.Error() }
func (e *invalidPayment) Unwrap() error { return e.err }

func (e *invalidPayment) ResponseHeader() http.Header {
	h := make(http.Header)
	if e.challenge != nil {
		h.Set(x402.HeaderPaymentRequired, e.challenge.Header)
	}
	return h
}

func (e *invalidPayment) ResponseBody(requestID string) (string, []byte) {
	body := map[string]any{"ok": false, "error": dispatch.ErrInvalidPayment.Code, "message": e.err.Error(), "requestId": requestID}
	if e.challenge != nil {
		body["x402Version"] = e.challenge.PaymentRequiredV1.X402Version
		body["accepts"] = e.challenge.PaymentRequiredV1.Accepts
	}
	b, _ := json.Marshal(body)
	return "application/json", b
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

type noReservation struct{}

func (noReservation) Commit(context.Context) error  { return nil }
func (noReservation) Release(context.Context) error { return nil }
