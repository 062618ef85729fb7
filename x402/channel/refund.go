package channel

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/402claw/dispatcher/x402"
)

// Refund executes a cooperative refund payload (see IsRefund) without
// calling the worker: the voucher must be zero-charge (maxClaimableAmount
// equal to chargedCumulativeAmount, else a corrective *MismatchError); the
// amount asked, or the whole unclaimed remainder when none is, goes back
// to the payer through the facilitator's /settle, together with the claim
// of what was charged so that no charge is lost. It returns the
// PAYMENT-RESPONSE settle response (amount refunded, extra.channelState).
// The channel record is kept (with its balance mirrored), so a later
// deposit continues from the same charged amount.
func (s *Service) Refund(ctx context.Context, p *x402.Payment, req x402.Requirement) (*x402.SettleResponse, error) {
	c, err := s.scheme.CheckPayment(p, req, s.now())
	if err != nil {
		return nil, err
	}
	pl := c.Payload
	if pl.Type != TypeRefund {
		return nil, &Error{Reason: ReasonPayloadType, Err: x402.ErrInvalidPayment, Detail: "not a refund payload"}
	}
	if s.fac == nil {
		return nil, errors.New("channel: a refund needs Config.Facilitator")
	}
	id := pl.Voucher.ChannelID
	token, err := s.acquire(ctx, id)
	if err != nil {
		return nil, err
	}
	defer func() { _ = s.st.release(context.WithoutCancel(ctx), id, token) }()
	st, version, err := s.st.load(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return nil, &Error{Reason: ReasonMissingChannel, Err: x402.ErrRequirementMismatch, Detail: "no channel " + id + " on this server"}
	}
	if err != nil {
		return nil, err
	}
	if s.journalDue(&st) {
		// As in Begin: the last movements may be owed to the journal.
		if err := s.rerecord(ctx, &st); err != nil {
			return nil, fmt.Errorf("channel: journal: %w", err)
		}
		st.Unjournaled = false
	}
	st.HeldAt = s.now().UnixMilli()
	if c.Max != st.Charged {
		return nil, s.mismatch(&st, ReasonCumulativeAmountMismatch, st.Charged, c.Max)
	}
	spent := max(st.Charged, st.TotalClaimed)
	var remainder uint64
	if st.Balance > spent {
		remainder = st.Balance - spent
	}
	if remainder == 0 {
		return nil, &Error{Reason: ReasonRefundNoBalance, Err: x402.ErrRequirementMismatch, Detail: "nothing left to refund"}
	}
	amount := remainder
	if pl.Amount != "" {
		if amount, err = strconv.ParseUint(pl.Amount, 10, 64); err != nil || amount > remainder {
			return nil, &Error{Reason: ReasonRefundAmountInvalid, Err: x402.ErrRequirementMismatch, Detail: "refund amount " + pl.Amount + " exceeds the remainder " + strconv.FormatUint(remainder, 10)}
		}
	}
	completed := RefundSettlePayload{
		Type: TypeRefund, ChannelConfig: pl.ChannelConfig, Voucher: pl.Voucher,
		Amount: strconv.FormatUint(amount, 10), RefundNonce: strconv.FormatUint(st.RefundNonce, 10), Claims: []Claim{},
	}
	if st.Charged > st.ClaimedUpTo {
		completed.Claims = append(completed.Claims, Claim{
			Voucher:   ClaimVoucher{Channel: pl.ChannelConfig, MaxClaimableAmount: pl.Voucher.MaxClaimableAmount},
			Signature: pl.Voucher.Signature, TotalClaimed: strconv.FormatUint(st.Charged, 10),
		})
	}
	fp, err := Envelope(req, completed)
	if err != nil {
		return nil, err
	}
	// Until the facilitator's answer is in, the mirrored balance may be
	// too high by the refund: the state is marked unsynced first, so that
	// when the answer is lost (a timeout, a crash) the next voucher is
	// checked with the facilitator instead of against a balance the
	// escrow no longer holds.
	synced := st.SyncedAt
	st.SyncedAt = 0
	if err := s.st.put(ctx, st, version); err != nil {
		return nil, err
	}
	version++
	sr, err := s.fac.Settle(ctx, x402.FacilitatorRequest{Payment: fp, Requirement: req})
	if err != nil {
		return nil, err
	}
	if !sr.Success {
		// Refused: nothing moved, the mirror is as good as before.
		st.SyncedAt = synced
		_ = s.st.put(context.WithoutCancel(ctx), st, version)
		return nil, &Error{Reason: sr.ErrorReason, Err: x402.ErrInvalidPayment, Detail: "the facilitator refused the refund"}
	}
	prevClaimed := st.ClaimedUpTo
	if !mirror(&st, sr.Extra) {
		st.Balance -= amount
		st.TotalClaimed = max(st.TotalClaimed, st.Charged)
		st.RefundNonce++
	}
	st.ClaimedUpTo = max(st.ClaimedUpTo, st.Charged)
	st.UnclaimedSince = 0
	st.SignedMax, st.Signature = c.Max, pl.Voucher.Signature
	st.SyncedAt = s.now().UnixMilli()
	if st.ClaimedUpTo > prevClaimed {
		// Kept with the state, so a journal failure or a crash before the
		// record below is made good by the next holder or the claimer.
		st.LastClaim = &Movement{
			Key: ClaimKey(id, st.ClaimedUpTo), Amount: st.ClaimedUpTo - prevClaimed, Cumulative: st.ClaimedUpTo,
			Transaction: sr.Transaction, Time: st.SyncedAt,
		}
	}
	if err := s.st.put(ctx, st, version); err != nil {
		return nil, err
	}
	now := s.now()
	base := Entry{Tenant: st.Tenant, ChannelID: id, Network: st.Network, Payer: st.Config.Payer, Receiver: st.Config.Receiver, Token: st.Config.Token, Transaction: sr.Transaction, Time: now}
	if st.ClaimedUpTo > prevClaimed {
		s.record(ctx, st.entry(StatusClaimed, st.LastClaim))
	}
	refunded := amount
	if sr.Amount != "" {
		if n, err := strconv.ParseUint(sr.Amount, 10, 64); err == nil {
			refunded = n
		}
	}
	e := base
	e.Key, e.Status, e.Amount, e.Cumulative = "refund:"+id+":"+strconv.FormatUint(st.RefundNonce, 10), StatusRefunded, refunded, st.Balance
	s.record(ctx, e)
	return &x402.SettleResponse{
		Success: true, Transaction: sr.Transaction, Network: x402.NormalizeNetwork(req.Network), Payer: st.Config.Payer,
		Amount: strconv.FormatUint(refunded, 10), Extra: map[string]any{ExtraChannelState: st.Snapshot()},
	}, nil
}
