package channel

import (
	"context"
	"encoding/json"
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
	// Refused maps each channel whose claim the facilitator refused to
	// its reason; the channel stays queued and the other channels of its
	// batch are claimed without it.
	Refused map[string]string
}

type claimRow struct {
	id      string
	st      State
	version uint64
	token   string
	heldAt  int64
}

// RunOnce claims every queued channel that is due (its unclaimed amount
// reached Threshold, its oldest unclaimed charge is Interval old, or a
// withdrawal is pending), in batches of MaxBatch, then settles each receiver and
// token that was claimed. Another replica's run in progress makes it
// return an empty report.
func (c *Claimer) RunOnce(ctx context.Context) (ClaimReport, error) {
	s := c.svc
	rep := ClaimReport{Claimed: map[string]uint64{}, Refused: map[string]string{}}
	lt, err := s.st.lease(ctx, "claimer", c.cfg.LeaseTTL)
	if errors.Is(err, ErrBusy) {
		return rep, nil
	}
	if err != nil {
		return rep, err
	}
	defer func() { _ = s.st.release(context.WithoutCancel(ctx), "claimer", lt) }()
	if err := s.recordPendingSweeps(ctx); err != nil {
		// An owed sweep entry the journal refuses must not hold up the
		// claims: a withdrawal could otherwise complete with charges
		// unclaimed. It stays owed for the next run.
		s.log.Error("channel: recording owed sweep entries", "err", err)
	}

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
		heldAt := s.now().UnixMilli()
		st, version, err := s.st.load(ctx, id)
		if err != nil {
			_ = s.st.release(ctx, id, token)
			if errors.Is(err, ErrNotFound) {
				continue
			}
			return rep, err
		}
		// Record the channel's last charge and claim again before
		// anything replaces them: a crash or a journal failure may have
		// left them out. A journal that refuses defers the channel.
		if err := s.rerecord(ctx, &st); err != nil {
			_ = s.st.release(ctx, id, token)
			deferred = append(deferred, id)
			continue
		}
		st.Unjournaled = false
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
		rows = append(rows, claimRow{id: id, st: st, version: version, token: token, heldAt: heldAt})
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

// maxClaimBytes bounds the payload of one claim call: a facilitator
// parses it as it parses a payment header, within x402.MaxHeaderBytes, so
// a batch over it is claimed in halves.
const maxClaimBytes = x402.MaxHeaderBytes * 3 / 4

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
	if len(batch) > 1 && (err != nil || len(p.Raw) > maxClaimBytes) {
		return c.claimHalves(ctx, batch, rep)
	}
	if err != nil {
		return err
	}
	sr, err := c.cfg.Facilitator.Settle(ctx, x402.FacilitatorRequest{Payment: p, Requirement: req})
	if err != nil {
		return err
	}
	rep.Calls++
	if !sr.Success {
		if len(batch) > 1 {
			// One refused row refuses the whole call: claim the halves
			// apart, so every other channel is claimed and the refused
			// one is found.
			return c.claimHalves(ctx, batch, rep)
		}
		// The channel stays queued for the next run (its charges are
		// kept; a withdrawal cannot complete before the claimer's
		// Interval, so a refusal is worth an operator's look).
		r := batch[0]
		rep.Refused[r.id] = sr.ErrorReason
		s.log.Error("channel: claim refused by the facilitator", "channel", r.id, "reason", sr.ErrorReason,
			"charged", r.st.Charged, "balance", r.st.Balance)
		return s.st.enqueue(ctx, r.id)
	}
	now := s.now().UnixMilli()
	for _, r := range batch {
		if err := c.store(ctx, r, sr.Transaction, now, rep); err != nil {
			return err
		}
	}
	return nil
}

func (c *Claimer) claimHalves(ctx context.Context, batch []claimRow, rep *ClaimReport) error {
	h := len(batch) / 2
	if err := c.claim(ctx, batch[:h], rep); err != nil {
		return err
	}
	return c.claim(ctx, batch[h:], rep)
}

// store writes a claimed channel's new state: claimedUpTo raised to the
// charged total the claim asked for, the claim kept as LastClaim, and
// journals the claim. A request that committed after this claim's lease
// lapsed fences the write: the claim is then merged into the latest
// state (claimed totals only rise) and the channel queued again for its
// new charge. The claim is journaled only once the state holds it, so a
// claim the state missed is covered by the next one's amount, never
// counted twice.
func (c *Claimer) store(ctx context.Context, r claimRow, tx string, now int64, rep *ClaimReport) error {
	s := c.svc
	claimed := r.st.Charged
	st, version := r.st, r.version
	for attempt := 0; ; attempt++ {
		if claimed > st.ClaimedUpTo {
			st.LastClaim = &Movement{
				Key: ClaimKey(r.id, claimed), Amount: claimed - st.ClaimedUpTo, Cumulative: claimed, Transaction: tx, Time: now,
			}
			st.ClaimedUpTo = claimed
		}
		st.TotalClaimed = max(st.TotalClaimed, claimed)
		requeue := st.Charged > st.ClaimedUpTo
		if !requeue {
			st.Queued, st.UnclaimedSince = false, 0
		}
		st.HeldAt = r.heldAt
		err := s.st.put(ctx, st, version)
		if err == nil {
			if requeue {
				if err := s.st.enqueue(ctx, r.id); err != nil {
					return err
				}
			}
			break
		}
		if !errors.Is(err, ErrFenced) || attempt == 7 {
			// The queue item stays (the run stops before the head
			// moves): the next run claims this total again (a no-op on
			// chain) and journals it then.
			return err
		}
		if st, version, err = s.st.load(ctx, r.id); err != nil {
			return err
		}
		// The fencing writer's movements are journaled by it (or owed in
		// its state, which this write keeps).
	}
	rep.Claimed[r.id] = st.ClaimedUpTo
	if st.LastClaim == nil || st.LastClaim.Cumulative != claimed {
		return nil
	}
	if err := s.recordErr(ctx, st.entry(StatusClaimed, st.LastClaim)); err != nil {
		// Owed: queue the channel, so the next run records it again.
		return s.st.enqueue(ctx, r.id)
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
	e := Entry{
		Key: "settle:" + strings.ToLower(st.Config.Receiver) + ":" + strings.ToLower(st.Config.Token) + ":" + sr.Transaction, Status: StatusSettled,
		Network: st.Network, Receiver: st.Config.Receiver, Token: st.Config.Token, Amount: n, Transaction: sr.Transaction, Time: s.now().UTC().Truncate(time.Millisecond),
		Tenant: st.Tenant,
	}
	if err := s.recordErr(ctx, e); err != nil {
		// Owed: kept in the store and recorded again by the next run.
		return s.owePending(ctx, e)
	}
	return nil
}

// The sweeps whose journal entry failed, recorded again by the next run
// (under the claimer's lease, the only writer of this list).
func (s store) sweepsKey() string { return s.prefix + "sweeps:owed" }

func (s *Service) owePending(ctx context.Context, e Entry) error {
	owed, err := s.pendingSweeps(ctx)
	if err != nil {
		return err
	}
	raw, err := json.Marshal(append(owed, e))
	if err != nil {
		return err
	}
	return s.st.kv.Set(ctx, s.st.sweepsKey(), raw, 0)
}

func (s *Service) pendingSweeps(ctx context.Context) ([]Entry, error) {
	raw, err := s.st.kv.Get(ctx, s.st.sweepsKey())
	if errors.Is(err, kv.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var owed []Entry
	if err := json.Unmarshal(raw, &owed); err != nil {
		return nil, fmt.Errorf("%w: owed sweeps: %v", ErrCorrupt, err)
	}
	return owed, nil
}

// recordPendingSweeps records the owed sweeps; the caller holds the
// claimer's lease.
func (s *Service) recordPendingSweeps(ctx context.Context) error {
	owed, err := s.pendingSweeps(ctx)
	if err != nil || len(owed) == 0 {
		return err
	}
	for _, e := range owed {
		if err := s.recordErr(ctx, e); err != nil {
			return fmt.Errorf("channel: journal: %w", err)
		}
	}
	return s.st.kv.Delete(ctx, s.st.sweepsKey())
}

// Reconcile records again, with the same Keys, the journal entries a
// crash or a journal failure may have left out: the last charge and the
// last claim of every channel in the claim queue (which holds every
// channel charged since its last claim, and every channel whose claim is
// owed) and the owed settle sweeps (unless a claimer run holds its lease:
// that run records them). The journal takes a repeated Key as the same
// entry. It returns how many channels it looked at. Run it at start-up
// and whenever the journal recovers from an outage; the claimer does the
// same for each channel before claiming it.
func (s *Service) Reconcile(ctx context.Context) (int, error) {
	head, err := s.st.counter(ctx, s.st.qHeadKey())
	if err != nil {
		return 0, err
	}
	tail, err := s.st.counter(ctx, s.st.qTailKey())
	if err != nil {
		return 0, err
	}
	seen := map[string]bool{}
	for n := head + 1; n <= tail; n++ {
		raw, err := s.st.kv.Get(ctx, s.st.qItemKey(n))
		if errors.Is(err, kv.ErrNotFound) {
			continue
		}
		if err != nil {
			return len(seen), err
		}
		id := string(raw)
		if seen[id] {
			continue
		}
		seen[id] = true
		st, _, err := s.st.load(ctx, id)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return len(seen), err
		}
		if err := s.rerecord(ctx, &st); err != nil {
			return len(seen), fmt.Errorf("channel: journal: %w", err)
		}
	}
	lt, err := s.st.lease(ctx, "claimer", s.leaseTTL)
	if errors.Is(err, ErrBusy) {
		return len(seen), nil
	}
	if err != nil {
		return len(seen), err
	}
	defer func() { _ = s.st.release(context.WithoutCancel(ctx), "claimer", lt) }()
	return len(seen), s.recordPendingSweeps(ctx)
}
