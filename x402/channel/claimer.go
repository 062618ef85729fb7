package channel

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/402claw/dispatcher/kv"
	"github.com/402claw/dispatcher/x402"
)

// The claim queue: channels with unclaimed charges, appended by Commit
// (before the state write, so a crash never leaves a charged channel out)
// and consumed by the Claimer. Duplicates are harmless: a claim is
// idempotent by claimedUpTo.
func (s store) qTailKey() string        { return s.prefix + "q:tail" }
func (s store) qHeadKey() string        { return s.prefix + "q:head" }
func (s store) qItemKey(n int64) string { return s.prefix + "q:" + strconv.FormatInt(n, 10) }
func (s store) claimerLeaseKey() string { return s.prefix + "claimer:lease" }
func (s store) enqueue(ctx context.Context, id string) error {
	n, _, err := s.kv.Incr(ctx, s.qTailKey(), kv.Increment{Delta: 1, Max: kv.Unbounded})
	if err != nil {
		return fmt.Errorf("channel: claim queue: %w", err)
	}
	return s.kv.Set(ctx, s.qItemKey(n), []byte(id), 0)
}

func (s store) counter(ctx context.Context, key string) (int64, error) {
	raw, err := s.kv.Get(ctx, key)
	if errors.Is(err, kv.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseInt(string(raw), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: counter %s is %q", ErrCorrupt, key, raw)
	}
	return n, nil
}

// ClaimerConfig configures a Claimer.
type ClaimerConfig struct {
	// Facilitator executes claims and settles. Required.
	Facilitator x402.Facilitator
	// Interval is how long a charge may stay unclaimed; zero means 5
	// minutes. It must stay below MinWithdrawDelay: a payer's timed
	// withdrawal takes at least that long, so every charge is claimed
	// before one started after it can complete, even when the gateway
	// never hears of the withdrawal. Call RunOnce well within
	// MinWithdrawDelay - Interval (every minute, say).
	Interval time.Duration
	// Threshold claims a channel as soon as its unclaimed amount reaches
	// it (atomic units); zero means only Interval and withdrawals.
	Threshold uint64
	// MaxBatch bounds the channels per claim call; zero means 100.
	MaxBatch int
	// LeaseTTL bounds one run; zero means 2 minutes.
	LeaseTTL time.Duration
}

// Claimer turns stored vouchers into facilitator claims (/settle with
// type "claim", many channels per call) and then sweeps the claimed funds
// to each receiver (type "settle"). Exactly one replica runs at a time (a
// KV lease), and each channel is leased while it is claimed, so no request
// commits under a claim. Claims ask for the absolute charged total, so a
// run repeated after a crash claims nothing twice.
type Claimer struct {
	svc *Service
	cfg ClaimerConfig
}

// NewClaimer returns a claimer of svc's channels.
func NewClaimer(svc *Service, cfg ClaimerConfig) (*Claimer, error) {
	if svc == nil || cfg.Facilitator == nil {
		return nil, errors.New("channel: NewClaimer needs a Service and a Facilitator")
	}
	if cfg.Interval == 0 {
		cfg.Interval = 5 * time.Minute
	}
	if cfg.Interval < 0 || cfg.Interval >= MinWithdrawDelay*time.Second {
		return nil, fmt.Errorf("channel: claim Interval %s must be positive and below the minimum withdraw delay", cfg.Interval)
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 100
	}
	if cfg.LeaseTTL <= 0 {
		cfg.LeaseTTL = 2 * time.Minute
	}
	return &Claimer{svc: svc, cfg: cfg}, nil
}

// ClaimReport says what one run did.
type ClaimReport struct {
	// Claimed maps each claimed channel to its new claimed total.
	Claimed map[string]uint64
	// Calls is the number of facilitator claim calls.
	Calls int
	// Settled is the amount swept to receivers.
	Settled uint64
	// Deferred counts queued channels left for a later run (busy, or not
	// due yet).
	Deferred int
}

type claimRow struct {
	id      string
	st      State
	version uint64
	token   string
}

// RunOnce claims every queued channel that is due (its unclaimed amount
// reached Threshold, its oldest unclaimed charge is Interval old, or a
// withdrawal is pending), in batches of MaxBatch, then settles each receiver and
// token that was claimed. Another replica's run in progress makes it
// return an empty report.
func (c *Claimer) RunOnce(ctx context.Context) (ClaimReport, error) {
	s := c.svc
	rep := ClaimReport{Claimed: map[string]uint64{}}
	lt, err := s.st.lease(ctx, "claimer", c.cfg.LeaseTTL)
	if errors.Is(err, ErrBusy) {
		return rep, nil
	}
	if err != nil {
		return rep, err
	}
	defer func() { _ = s.st.release(context.WithoutCancel(ctx), "claimer", lt) }()

	head, err := s.st.counter(ctx, s.st.qHeadKey())
	if err != nil {
		return rep, err
	}
	tail, err := s.st.counter(ctx, s.st.qTailKey())
	if err != nil {
		return rep, err
	}
	now := s.now()
	seen := map[string]bool{}
	var rows []claimRow
	release := func() {
		for _, r := range rows {
			_ = s.st.release(context.WithoutCancel(ctx), r.id, r.token)
		}
	}
	defer func() { release() }()
	var deferred []string
	var sweepOnly []State
	for n := head + 1; n <= tail; n++ {
		raw, err := s.st.kv.Get(ctx, s.st.qItemKey(n))
		if errors.Is(err, kv.ErrNotFound) {
			continue
		}
		if err != nil {
			return rep, err
		}
		id := string(raw)
		if seen[id] {
			continue
		}
		seen[id] = true
		token, err := s.st.lease(ctx, id, c.cfg.LeaseTTL)
		if errors.Is(err, ErrBusy) {
			deferred = append(deferred, id)
			continue
		}
		if err != nil {
			return rep, err
		}
		st, version, err := s.st.load(ctx, id)
		if err != nil {
			_ = s.st.release(ctx, id, token)
			if errors.Is(err, ErrNotFound) {
				continue
			}
			return rep, err
		}
		if st.Unclaimed() == 0 {
			// Claimed elsewhere (a refund claims what was charged): its
			// receiver may still have claimed funds to sweep.
			sweepOnly = append(sweepOnly, st)
			if st.Queued {
				// Claimed already (a refund does): leave the queue, so
				// the next charge queues the channel again.
				st.Queued = false
				if err := s.st.put(ctx, st, version); err != nil && !errors.Is(err, ErrFenced) {
					_ = s.st.release(ctx, id, token)
					return rep, err
				}
			}
			_ = s.st.release(ctx, id, token)
			continue
		}
		due := st.WithdrawRequestedAt != 0 || (c.cfg.Threshold > 0 && st.Unclaimed() >= c.cfg.Threshold) ||
			now.Sub(time.UnixMilli(st.UnclaimedSince)) >= c.cfg.Interval
		if !due {
			_ = s.st.release(ctx, id, token)
			deferred = append(deferred, id)
			continue
		}
		rows = append(rows, claimRow{id: id, st: st, version: version, token: token})
	}
	// Deferred channels go back in the queue before the head moves past
	// them.
	for _, id := range deferred {
		if err := s.st.enqueue(ctx, id); err != nil {
			return rep, err
		}
	}
	rep.Deferred = len(deferred)

	type group struct{ network, receiver, token string }
	groups := map[group][]claimRow{}
	var order []group
	for _, r := range rows {
		g := group{r.st.Network, strings.ToLower(r.st.Config.Receiver), strings.ToLower(r.st.Config.Token)}
		if _, ok := groups[g]; !ok {
			order = append(order, g)
		}
		groups[g] = append(groups[g], r)
	}
	for _, g := range order {
		grp := groups[g]
		for start := 0; start < len(grp); start += c.cfg.MaxBatch {
			batch := grp[start:min(start+c.cfg.MaxBatch, len(grp))]
			if err := c.claim(ctx, batch, &rep); err != nil {
				return rep, err
			}
		}
		if err := c.settle(ctx, grp[0].st, &rep); err != nil {
			return rep, err
		}
	}
	for _, st := range sweepOnly {
		g := group{st.Network, strings.ToLower(st.Config.Receiver), strings.ToLower(st.Config.Token)}
		if _, ok := groups[g]; ok {
			continue
		}
		groups[g] = nil
		if err := c.settle(ctx, st, &rep); err != nil {
			return rep, err
		}
	}
	// Every queue item up to tail is handled (claimed or re-queued).
	if tail > head {
		if err := s.st.kv.Set(ctx, s.st.qHeadKey(), []byte(strconv.FormatInt(tail, 10)), 0); err != nil {
			return rep, err
		}
		for n := head + 1; n <= tail; n++ {
			_ = s.st.kv.Delete(ctx, s.st.qItemKey(n))
		}
	}
	return rep, nil
}

func requirementFor(st State) x402.Requirement {
	return x402.Requirement{
		Scheme: Name, Network: st.Network, Amount: "1", Asset: st.Config.Token, PayTo: st.Config.Receiver, MaxTimeoutSeconds: 60,
		Extra: map[string]any{ExtraReceiverAuthorizer: st.Config.ReceiverAuthorizer, ExtraWithdrawDelay: st.Config.WithdrawDelay},
	}
}

func (c *Claimer) claim(ctx context.Context, batch []claimRow, rep *ClaimReport) error {
	s := c.svc
	pl := ClaimPayload{Type: TypeClaim}
	for _, r := range batch {
		pl.Claims = append(pl.Claims, Claim{
			Voucher:   ClaimVoucher{Channel: r.st.Config, MaxClaimableAmount: strconv.FormatUint(r.st.SignedMax, 10)},
			Signature: r.st.Signature, TotalClaimed: strconv.FormatUint(r.st.Charged, 10),
		})
	}
	req := requirementFor(batch[0].st)
	p, err := Envelope(req, pl)
	if err != nil {
		return err
	}
	sr, err := c.cfg.Facilitator.Settle(ctx, x402.FacilitatorRequest{Payment: p, Requirement: req})
	if err != nil {
		return err
	}
	rep.Calls++
	if !sr.Success {
		return fmt.Errorf("channel: claim refused by the facilitator: %s", sr.ErrorReason)
	}
	now := s.now()
	for _, r := range batch {
		st := r.st
		prev := st.ClaimedUpTo
		st.ClaimedUpTo = st.Charged
		st.TotalClaimed = max(st.TotalClaimed, st.Charged)
		st.Queued, st.UnclaimedSince = false, 0
		switch err := s.st.put(ctx, st, r.version); {
		case errors.Is(err, ErrFenced):
			// A request committed after this claim's lease lapsed: queue
			// the channel again; the next claim repeats this one's total
			// (a no-op) and adds the new charge.
			if err := s.st.enqueue(ctx, r.id); err != nil {
				return err
			}
		case err != nil:
			return err
		}
		rep.Claimed[r.id] = st.ClaimedUpTo
		s.record(ctx, Entry{
			Key: "claim:" + r.id + ":" + strconv.FormatUint(st.ClaimedUpTo, 10), Status: StatusClaimed, ChannelID: r.id,
			Network: st.Network, Payer: st.Config.Payer, Receiver: st.Config.Receiver, Token: st.Config.Token,
			Amount: st.ClaimedUpTo - prev, Cumulative: st.ClaimedUpTo, Transaction: sr.Transaction, Time: now, Tenant: st.Tenant,
		})
	}
	return nil
}

func (c *Claimer) settle(ctx context.Context, st State, rep *ClaimReport) error {
	s := c.svc
	req := requirementFor(st)
	p, err := Envelope(req, SettlePayload{Type: TypeSettle, Receiver: st.Config.Receiver, Token: st.Config.Token})
	if err != nil {
		return err
	}
	sr, err := c.cfg.Facilitator.Settle(ctx, x402.FacilitatorRequest{Payment: p, Requirement: req})
	if err != nil {
		return err
	}
	if !sr.Success {
		return fmt.Errorf("channel: settle refused by the facilitator: %s", sr.ErrorReason)
	}
	n, _ := strconv.ParseUint(sr.Amount, 10, 64)
	if n == 0 {
		return nil
	}
	rep.Settled += n
	s.record(ctx, Entry{
		Key: "settle:" + strings.ToLower(st.Config.Receiver) + ":" + strings.ToLower(st.Config.Token) + ":" + sr.Transaction, Status: StatusSettled,
		Network: st.Network, Receiver: st.Config.Receiver, Token: st.Config.Token, Amount: n, Transaction: sr.Transaction, Time: s.now(),
		Tenant: st.Tenant,
	})
	return nil
}
