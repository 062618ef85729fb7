package channel

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/402claw/dispatcher/kv"
	"github.com/402claw/dispatcher/x402"
)

// Journal statuses: what a channel Entry records.
const (
	StatusCharged   = "charged"
	StatusClaimed   = "claimed"
	StatusSettled   = "settled"
	StatusDeposited = "deposited"
	StatusRefunded  = "refunded"
)

// Entry is one money movement on channels, for the ledger: a charge
// (offchain), a deposit, a claim, a settle sweep or a refund.
type Entry struct {
	// Key is unique per movement, so that recording it twice (after a
	// crash and a retry) is recognisably the same entry.
	Key string
	// Status is one of the Status constants.
	Status string
	// ChannelID is the channel ("" for a settle sweep, which is per
	// receiver and token).
	ChannelID string
	// Network, Payer, Receiver and Token describe the channel.
	Network, Payer, Receiver, Token string
	// Amount is the movement in atomic units: the charge, the deposit, the
	// increase of the claimed total, the swept or refunded amount.
	Amount uint64
	// Cumulative is chargedCumulativeAmount after a charge, the claimed
	// total after a claim.
	Cumulative uint64
	// Transaction is the facilitator's transaction hash ("" for a charge).
	Transaction string
	// Time is when it happened.
	Time time.Time
	// Tenant is, for a charge, the tenant that served the request (a
	// channel pays whichever routes name its receiver and token, so one
	// channel may pay several tenants sharing a payTo); for other
	// movements the tenant the channel was opened for (Meta.Tenant of its
	// first deposit). RequestID and Resource are the request's, for a
	// charge, deposit or refund.
	Tenant, RequestID, Resource string
}

// Meta is what the gateway knows about a request beyond the payment: it
// is copied into the journal entries.
type Meta struct {
	// Tenant owns the channel; it is recorded when the channel is opened
	// and carried by every later entry of the channel, claims included.
	Tenant string
	// RequestID and Resource identify the request.
	RequestID, Resource string
}

// Journal records channel entries (the ledger port of this package). The
// gateway adapts it to its ledger; Record must treat a repeated Key as the
// same entry.
type Journal interface {
	Record(ctx context.Context, e Entry) error
}

// JournalFunc adapts a function to Journal.
type JournalFunc func(ctx context.Context, e Entry) error

// Record calls f.
func (f JournalFunc) Record(ctx context.Context, e Entry) error { return f(ctx, e) }

// Config configures a Service.
type Config struct {
	// Scheme checks payments. Required.
	Scheme *Scheme
	// Facilitator executes deposits and refunds (and answers for stale
	// vouchers). Required for deposits and refunds.
	Facilitator x402.Facilitator
	// Journal records every charge, deposit, claim, settle and refund;
	// nil records nothing.
	Journal Journal
	// Prefix prefixes every key; empty means "x402ch:".
	Prefix string
	// LeaseTTL bounds how long a request may hold a channel; zero means
	// 2 minutes. A holder past it may be fenced out (ErrFenced).
	LeaseTTL time.Duration
	// BusyWait is how long Begin and Refund wait for a channel another
	// request holds before answering with a *BusyError; zero answers at
	// once.
	BusyWait time.Duration
	// FreshFor is how long the mirrored onchain fields are trusted for a
	// local voucher check; zero means 5 minutes. Older state is confirmed
	// with the facilitator's /verify first.
	FreshFor time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger logs journal failures; nil discards.
	Logger *slog.Logger
}

// Service keeps channel state in a kv.Store and runs the per-request
// protocol (Begin, then Commit or Abort) and cooperative refunds. It is
// safe for concurrent use, and several replicas may share one store.
type Service struct {
	st       store
	scheme   *Scheme
	fac      x402.Facilitator
	journal  Journal
	leaseTTL time.Duration
	busyWait time.Duration
	freshFor time.Duration
	now      func() time.Time
	log      *slog.Logger
}

// New returns a Service over s.
func New(s kv.Store, cfg Config) (*Service, error) {
	if s == nil || cfg.Scheme == nil {
		return nil, errors.New("channel: New needs a kv.Store and a Scheme")
	}
	svc := &Service{
		st: store{kv: s, prefix: cfg.Prefix, decoded: &decodedStates{m: map[string]decodedState{}}}, scheme: cfg.Scheme, fac: cfg.Facilitator, journal: cfg.Journal,
		leaseTTL: cfg.LeaseTTL, busyWait: cfg.BusyWait, freshFor: cfg.FreshFor, now: cfg.Now, log: cfg.Logger,
	}
	// The service's own copy of the scheme verifies locally against it.
	bound := *cfg.Scheme
	bound.svc = svc
	svc.scheme = &bound
	if svc.st.prefix == "" {
		svc.st.prefix = "x402ch:"
	}
	if svc.leaseTTL <= 0 {
		svc.leaseTTL = 2 * time.Minute
	}
	if svc.freshFor <= 0 {
		svc.freshFor = 5 * time.Minute
	}
	if svc.now == nil {
		svc.now = time.Now
	}
	if svc.log == nil {
		svc.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return svc, nil
}

// Scheme returns the service's scheme: the configured one, bound to this
// service so that its VerifyLocal checks vouchers against the channel
// state. Hand this one to the payment stage.
func (s *Service) Scheme() *Scheme { return s.scheme }

// MismatchError is a corrective refusal: the voucher's maxClaimableAmount
// is not the charged cumulative amount plus the requirement's amount, or
// exceeds the balance. The 402 carries Channel and Voucher in its accepts
// entry's extra (see Corrective). It wraps x402.ErrRequirementMismatch.
type MismatchError struct {
	// Reason is ReasonCumulativeAmountMismatch or
	// ReasonCumulativeExceedsBalance.
	Reason string
	// Want is the maxClaimableAmount the server expects.
	Want string
	// Got is the voucher's.
	Got string
	// Channel and Voucher are the server's state.
	Channel ChannelState
	Voucher VoucherState
}

// Error describes the refusal.
func (e *MismatchError) Error() string {
	return fmt.Sprintf("%v: %s: voucher maxClaimableAmount is %s, the server expects %s", x402.ErrRequirementMismatch, e.Reason, e.Got, e.Want)
}

// Unwrap returns x402.ErrRequirementMismatch.
func (e *MismatchError) Unwrap() error { return x402.ErrRequirementMismatch }

// Corrective returns req with extra.channelState and extra.voucherState
// set, the accepts entry of a corrective 402.
func (e *MismatchError) Corrective(req x402.Requirement) x402.Requirement {
	out := req
	out.Extra = make(map[string]any, len(req.Extra)+2)
	for k, v := range req.Extra {
		out.Extra[k] = v
	}
	out.Extra[ExtraChannelState] = e.Channel
	out.Extra[ExtraVoucherState] = e.Voucher
	return out
}

// IsRefund reports whether p carries a batch-settlement refund payload,
// which goes to Service.Refund instead of Begin (no worker call).
func IsRefund(p *x402.Payment) bool {
	if p == nil || p.Accepted.Scheme != Name {
		return false
	}
	var probe struct {
		Type string `json:"type"`
	}
	return json.Unmarshal(p.Payload, &probe) == nil && probe.Type == TypeRefund
}

// Hold is one admitted request on a channel: the channel is leased to it
// until Commit or Abort.
type Hold struct {
	svc     *Service
	meta    Meta
	state   State
	version uint64
	token   string
	voucher Voucher
	max     uint64
	amount  uint64
	payer   string
	network string
	deposit *x402.SettleResponse
	heldAt  time.Time // when the lease was taken
	done    bool
}

// release drops the hold's lease. Within half a LeaseTTL of taking it,
// no one else can hold it yet, so it is deleted without reading it first
// (one store round trip instead of two).
func (h *Hold) release(ctx context.Context) error {
	s := h.svc
	ctx = context.WithoutCancel(ctx)
	if d := s.now().Sub(h.heldAt); d >= 0 && d < s.leaseTTL/2 {
		return s.st.kv.Delete(ctx, s.st.leaseKey(h.state.ChannelID))
	}
	return s.st.release(ctx, h.state.ChannelID, h.token)
}

// State returns the channel state the request was admitted on.
func (h *Hold) State() State { return h.state }

// Begin admits a paid request (a deposit or voucher payload): it checks
// the payment (Scheme.CheckPayment), leases the channel (a *BusyError when
// another request holds it), and checks the voucher against the channel
// state: maxClaimableAmount must be chargedCumulativeAmount plus req's
// amount and at most the balance, else a *MismatchError (corrective 402).
// A deposit is executed through the facilitator first and recorded
// whatever happens to the request. Begin never changes the charged amount:
// only Commit does.
func (s *Service) Begin(ctx context.Context, p *x402.Payment, req x402.Requirement) (*Hold, error) {
	return s.BeginMeta(ctx, p, req, Meta{})
}

// BeginMeta is Begin with the request's Meta for the journal.
func (s *Service) BeginMeta(ctx context.Context, p *x402.Payment, req x402.Requirement, meta Meta) (*Hold, error) {
	c, err := s.scheme.CheckPayment(p, req, s.now())
	if err != nil {
		return nil, err
	}
	pl := c.Payload
	if pl.Type == TypeRefund {
		return nil, &Error{Reason: ReasonPayloadType, Err: x402.ErrInvalidPayment, Detail: "a refund goes to Service.Refund"}
	}
	id := pl.Voucher.ChannelID
	token, err := s.acquire(ctx, id)
	if err != nil {
		return nil, err
	}
	h := &Hold{svc: s, meta: meta, token: token, voucher: pl.Voucher, max: c.Max, amount: c.Amount, payer: pl.ChannelConfig.Payer, network: x402.NormalizeNetwork(req.Network), heldAt: s.now()}
	fail := func(err error) (*Hold, error) {
		_ = s.st.release(context.WithoutCancel(ctx), id, token)
		return nil, err
	}
	st, version, err := s.st.load(ctx, id)
	switch {
	case errors.Is(err, ErrNotFound):
		if pl.Type != TypeDeposit {
			return fail(&Error{Reason: ReasonMissingChannel, Err: x402.ErrRequirementMismatch, Detail: "no channel " + id + " on this server: deposit first"})
		}
		st = State{ChannelID: id, Network: h.network, Config: pl.ChannelConfig, Tenant: meta.Tenant}
	case err != nil:
		return fail(err)
	default:
		if s.journalDue(&st) {
			// The last writer may have crashed before journaling (its
			// lease lapsed), or its journal failed: record its movements
			// again before anything can replace them. Nothing is charged
			// while the journal refuses.
			if err := s.rerecord(ctx, &st); err != nil {
				return fail(fmt.Errorf("channel: journal: %w", err))
			}
			st.Unjournaled = false
		}
	}
	if err := s.checkVoucher(&st, c); err != nil {
		return fail(err)
	}
	st.HeldAt = h.heldAt.UnixMilli()
	if pl.Type == TypeDeposit {
		if st, version, h.deposit, err = s.deposit(ctx, p, req, st, version, c, meta); err != nil {
			return fail(err)
		}
		if c.Max > st.Balance {
			return fail(s.mismatch(&st, ReasonCumulativeExceedsBalance, st.Charged+c.Amount, c.Max))
		}
	} else if s.now().Sub(time.UnixMilli(st.SyncedAt)) > s.freshFor && s.fac != nil {
		vr, err := s.fac.Verify(ctx, x402.FacilitatorRequest{Payment: p, Requirement: req})
		if err != nil {
			return fail(err)
		}
		if !vr.IsValid {
			return fail(&Error{Reason: vr.InvalidReason, Err: x402.ErrInvalidPayment, Detail: "the facilitator refused the voucher"})
		}
		// The answer's onchain snapshot refreshes the mirror, so the
		// next vouchers are checked locally again (stored with the
		// charge at Commit).
		if mirrorSnapshot(&st, vr.Extra) {
			st.SyncedAt = s.now().UnixMilli()
		}
	}
	h.state, h.version = st, version
	return h, nil
}

// checkVoucher applies the cumulative rule to a deposit or voucher.
func (s *Service) checkVoucher(st *State, c *Checked) error {
	want := st.Charged + c.Amount
	if c.Max != want {
		return s.mismatch(st, ReasonCumulativeAmountMismatch, want, c.Max)
	}
	if c.Max > st.Balance+c.DepositAmount {
		return s.mismatch(st, ReasonCumulativeExceedsBalance, want, c.Max)
	}
	return nil
}

func (s *Service) mismatch(st *State, reason string, want, got uint64) error {
	return &MismatchError{
		Reason: reason, Want: strconv.FormatUint(want, 10), Got: strconv.FormatUint(got, 10),
		Channel: st.Snapshot(), Voucher: st.VoucherState(),
	}
}

// deposit executes a deposit payload through the facilitator and records
// the new balance as the next state version.
func (s *Service) deposit(ctx context.Context, p *x402.Payment, req x402.Requirement, st State, version uint64, c *Checked, meta Meta) (State, uint64, *x402.SettleResponse, error) {
	if s.fac == nil {
		return st, version, nil, errors.New("channel: a deposit needs Config.Facilitator")
	}
	sr, err := s.fac.Settle(ctx, x402.FacilitatorRequest{Payment: p, Requirement: req})
	if err != nil {
		return st, version, nil, err
	}
	if !sr.Success {
		return st, version, nil, &Error{Reason: sr.ErrorReason, Err: x402.ErrInvalidPayment, Detail: "the facilitator refused the deposit"}
	}
	if !mirror(&st, sr.Extra) {
		st.Balance += c.DepositAmount
	}
	st.SyncedAt = s.now().UnixMilli()
	if err := s.st.put(ctx, st, version); err != nil {
		return st, version, nil, err
	}
	s.record(ctx, Entry{
		Key: "deposit:" + st.ChannelID + ":" + sr.Transaction, Status: StatusDeposited, ChannelID: st.ChannelID,
		Network: st.Network, Payer: st.Config.Payer, Receiver: st.Config.Receiver, Token: st.Config.Token,
		Amount: c.DepositAmount, Cumulative: st.Balance, Transaction: sr.Transaction, Time: s.now(),
		Tenant: st.Tenant, RequestID: meta.RequestID, Resource: meta.Resource,
	})
	return st, version + 1, sr, nil
}

// mirror copies a facilitator's extra.channelState into st and reports
// whether there was one.
func mirror(st *State, extra map[string]any) bool {
	cs, ok := extra[ExtraChannelState]
	if !ok {
		return false
	}
	return mirrorFrom(st, cs)
}

// mirrorSnapshot copies a /verify answer's extra (the channel's snapshot
// itself, per the specification) into st, when it names st's channel, and
// reports whether it did.
func mirrorSnapshot(st *State, extra map[string]any) bool {
	if id, _ := extra["channelId"].(string); !strings.EqualFold(id, st.ChannelID) {
		return false
	}
	return mirrorFrom(st, extra)
}

func mirrorFrom(st *State, cs any) bool {
	raw, err := json.Marshal(cs)
	if err != nil {
		return false
	}
	var w ChannelState
	if json.Unmarshal(raw, &w) != nil {
		return false
	}
	bal, err1 := strconv.ParseUint(w.Balance, 10, 64)
	claimed, err2 := strconv.ParseUint(w.TotalClaimed, 10, 64)
	if err1 != nil || err2 != nil {
		return false
	}
	st.Balance, st.TotalClaimed, st.WithdrawRequestedAt = bal, claimed, w.WithdrawRequestedAt
	if n, err := strconv.ParseUint(w.RefundNonce, 10, 64); err == nil {
		st.RefundNonce = n
	}
	return true
}

// Commit charges the request (charge in atomic units, at most the
// requirement's amount) and stores the voucher, in one atomic step, then
// releases the channel. It returns the PAYMENT-RESPONSE settle response:
// transaction "" (or the deposit's), extra.chargedAmount and
// extra.channelState. A charge above the maximum is refused with
// ReasonChargeExceedsSigned and nothing changes (the hold stays open for
// Abort); ErrFenced means the lease had lapsed and another request wrote
// the channel: nothing was charged.
func (h *Hold) Commit(ctx context.Context, charge string) (*x402.SettleResponse, error) {
	if h.done {
		return nil, errors.New("channel: hold already committed or aborted")
	}
	n, err := strconv.ParseUint(strings.TrimSpace(charge), 10, 64)
	if err != nil || n > h.amount {
		return nil, &Error{Reason: ReasonChargeExceedsSigned, Err: x402.ErrRequirementMismatch, Detail: fmt.Sprintf("charge %q is not an amount within the per-request maximum %d", charge, h.amount)}
	}
	s := h.svc
	h.done = true
	// The lease is released explicitly, not deferred: a process that dies
	// between the state write and the journal leaves it held, and the next
	// holder, taking over once it lapsed, records the charge again.
	release := func() { _ = h.release(ctx) }
	st := h.state
	now := s.now().UnixMilli()
	if n > 0 && st.Unclaimed() == 0 {
		st.UnclaimedSince = now
	}
	st.Charged += n
	st.SignedMax, st.Signature = h.max, h.voucher.Signature
	st.LastRequest = now
	st.HeldAt, st.Unjournaled = h.heldAt.UnixMilli(), false
	if n > 0 {
		st.LastCharge = &Movement{
			Key: ChargeKey(st.ChannelID, st.Charged), Amount: n, Cumulative: st.Charged, Time: now,
			RequestID: h.meta.RequestID, Resource: h.meta.Resource, Tenant: h.meta.Tenant,
		}
	}
	if n > 0 && !st.Queued {
		// Queue the channel for the claimer before the charge is stored,
		// so a crash in between leaves at worst a spurious queue entry.
		if err := s.st.enqueue(ctx, st.ChannelID); err != nil {
			release()
			return nil, err
		}
		st.Queued = true
	}
	if err := s.st.put(ctx, st, h.version); err != nil {
		if !errors.Is(err, ErrFenced) {
			// The write may have been applied with its answer lost (a
			// timeout): keep the lease, so the next holder takes over
			// only once it lapsed, and then records the last charge
			// again. A fenced write changed nothing.
			return nil, err
		}
		release()
		return nil, err
	}
	h.state, h.version = st, h.version+1
	// A voucher served on a funded channel: its payer authorizer may earn
	// a KeyTable (see SchemeConfig.KeyTables).
	s.scheme.cache.Vouch(st.Config.PayerAuthorizer)
	if n > 0 {
		if err := s.recordErr(ctx, st.entry(StatusCharged, st.LastCharge)); err != nil {
			// The charge is stored; its entry is owed. Say so in the
			// state, so the next request records it again; when even that
			// write fails, keep the lease: the next holder takes over once
			// it lapses and records it then.
			owed := st
			owed.Unjournaled = true
			if perr := s.st.put(context.WithoutCancel(ctx), owed, h.version); perr != nil {
				s.log.Error("channel: the charge's journal entry is owed; the lease is kept until it lapses", "channel", st.ChannelID, "err", perr)
				return h.response(st, n), nil
			}
			h.state, h.version = owed, h.version+1
		}
	}
	release()
	return h.response(st, n), nil
}

// response is the PAYMENT-RESPONSE of a committed charge n.
func (h *Hold) response(st State, n uint64) *x402.SettleResponse {
	resp := &x402.SettleResponse{
		Success: true, Network: h.network, Payer: h.payer,
		Extra: map[string]any{ExtraChargedAmount: strconv.FormatUint(n, 10), ExtraChannelState: st.Snapshot()},
	}
	if h.deposit != nil {
		resp.Transaction, resp.Amount = h.deposit.Transaction, h.deposit.Amount
	}
	return resp
}

// Abort releases the channel without charging: the state is unchanged and
// the same voucher may be sent again. Aborting a finished hold does
// nothing.
func (h *Hold) Abort(ctx context.Context) error {
	if h.done {
		return nil
	}
	h.done = true
	return h.release(ctx)
}

// Verify checks a voucher payment against the mirrored state without
// leasing the channel or calling out (the LocalVerifier answer). A stale
// mirror, a deposit or a refund is answered invalid: those go to the
// facilitator.
func (s *Service) Verify(ctx context.Context, p *x402.Payment, req x402.Requirement) (*x402.VerifyResponse, error) {
	c, err := s.scheme.CheckPayment(p, req, s.now())
	if err != nil {
		return &x402.VerifyResponse{IsValid: false, InvalidReason: reasonOr(err, x402.ReasonInvalidPayload)}, nil
	}
	if c.Payload.Type != TypeVoucher {
		return &x402.VerifyResponse{IsValid: false, InvalidReason: ReasonPayloadType, Payer: c.Grant.Payer}, nil
	}
	st, _, err := s.st.load(ctx, c.Payload.Voucher.ChannelID)
	if errors.Is(err, ErrNotFound) {
		return &x402.VerifyResponse{IsValid: false, InvalidReason: ReasonMissingChannel, Payer: c.Grant.Payer}, nil
	}
	if err != nil {
		return nil, err
	}
	if s.now().Sub(time.UnixMilli(st.SyncedAt)) > s.freshFor {
		return &x402.VerifyResponse{IsValid: false, InvalidReason: "channel_state_stale", Payer: c.Grant.Payer}, nil
	}
	if err := s.checkVoucher(&st, c); err != nil {
		return &x402.VerifyResponse{IsValid: false, InvalidReason: Reason(err), Payer: c.Grant.Payer}, nil
	}
	return &x402.VerifyResponse{IsValid: true, Payer: c.Grant.Payer}, nil
}

// Load returns a channel's state (ErrNotFound when there is none).
func (s *Service) Load(ctx context.Context, channelID string) (State, error) {
	st, _, err := s.st.load(ctx, strings.ToLower(channelID))
	return st, err
}

func reasonOr(err error, fallback string) string {
	if r := Reason(err); r != "" {
		return r
	}
	return fallback
}

func (s *Service) record(ctx context.Context, e Entry) {
	_ = s.recordErr(ctx, e)
}

// recordErr records e in the journal and logs a failure.
func (s *Service) recordErr(ctx context.Context, e Entry) error {
	if s.journal == nil {
		return nil
	}
	if err := s.journal.Record(context.WithoutCancel(ctx), e); err != nil {
		s.log.Error("channel: journal", "key", e.Key, "status", e.Status, "err", err)
		return err
	}
	return nil
}

// journalDue reports whether st's last movements may be missing from the
// journal: its writer said so (Unjournaled), or took the lease at least
// half a LeaseTTL ago, so that this holder may have taken over from a
// writer that died before journaling. (Half, not all: the writer's clock
// may run ahead of this replica's by up to that much.) A channel in
// steady use is never due; the first request after a pause records its
// last movements once more, which the journal takes as the same entries.
func (s *Service) journalDue(st *State) bool {
	if st.LastCharge == nil && st.LastClaim == nil {
		return false
	}
	return st.Unjournaled || s.now().UnixMilli()-st.HeldAt >= s.leaseTTL.Milliseconds()/2
}

// rerecord records st's last charge and last claim again (same Keys).
func (s *Service) rerecord(ctx context.Context, st *State) error {
	if st.LastCharge != nil {
		if err := s.recordErr(ctx, st.entry(StatusCharged, st.LastCharge)); err != nil {
			return err
		}
	}
	if st.LastClaim != nil {
		if err := s.recordErr(ctx, st.entry(StatusClaimed, st.LastClaim)); err != nil {
			return err
		}
	}
	return nil
}

// Prefix returns the key prefix of the service's records.
func (s *Service) Prefix() string { return s.st.prefix }

// acquire leases a channel, polling for up to BusyWait while another
// request holds it.
func (s *Service) acquire(ctx context.Context, id string) (string, error) {
	token, err := s.st.lease(ctx, id, s.leaseTTL)
	if s.busyWait <= 0 || !errors.Is(err, ErrBusy) {
		return token, err
	}
	deadline := time.NewTimer(s.busyWait)
	defer deadline.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-deadline.C:
			return "", err
		case <-tick.C:
		}
		if token, err = s.st.lease(ctx, id, s.leaseTTL); !errors.Is(err, ErrBusy) {
			return token, err
		}
	}
}
