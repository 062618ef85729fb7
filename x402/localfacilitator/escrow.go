package localfacilitator

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/402claw/dispatcher/x402"
	"github.com/402claw/dispatcher/x402/channel"
	"github.com/402claw/dispatcher/x402/eip712"
)

// Escrow emulates the x402BatchSettlement contract offline for the
// batch-settlement scheme: deposits (an ERC-3009 ReceiveWithAuthorization
// to the deposit collector, checked like the token would, its nonce
// single-use), channel balances, claims (absolute totals: claiming a total
// already reached does nothing), settle sweeps per receiver and token,
// cooperative refunds (with the refund nonce) and timed withdrawals. Its
// state lives in memory, private to one Facilitator. It is safe for
// concurrent use.
type Escrow struct {
	now        func() time.Time
	authorizer string
	scheme     *channel.Scheme

	mu        sync.Mutex
	channels  map[string]*EscrowChannel
	nonces    map[string]bool
	unsettled map[string]uint64 // receiver|token -> claimed, not swept
	settled   map[string]uint64 // receiver|token -> swept in total
	seq       uint64
}

// EscrowChannel is one emulated channel.
type EscrowChannel struct {
	Config              channel.ChannelConfig
	Balance             uint64
	TotalClaimed        uint64
	WithdrawRequestedAt int64
	WithdrawAmount      uint64
	RefundNonce         uint64
}

func newEscrow(now func() time.Time, authorizer string) *Escrow {
	sc, err := channel.NewScheme(channel.SchemeConfig{ReceiverAuthorizer: authorizer})
	if err != nil {
		panic(err) // authorizer is a checked, non-zero address
	}
	return &Escrow{
		now: now, authorizer: authorizer, scheme: sc,
		channels: map[string]*EscrowChannel{}, nonces: map[string]bool{},
		unsettled: map[string]uint64{}, settled: map[string]uint64{},
	}
}

// Escrow returns the facilitator's batch-settlement escrow.
func (f *Facilitator) Escrow() *Escrow { return f.escrow }

// Channel returns a copy of a channel's escrow state.
func (e *Escrow) Channel(id string) (EscrowChannel, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	ch, ok := e.channels[strings.ToLower(id)]
	if !ok {
		return EscrowChannel{}, false
	}
	return *ch, true
}

// Settled returns the amount swept to receiver in token so far.
func (e *Escrow) Settled(receiver, token string) uint64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.settled[pairKey(receiver, token)]
}

// InitiateWithdraw starts a timed withdrawal of amount (the payer's
// escape hatch); it must not exceed the unclaimed escrow.
func (e *Escrow) InitiateWithdraw(id string, amount uint64) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	ch, ok := e.channels[strings.ToLower(id)]
	if !ok {
		return fmt.Errorf("localfacilitator: no channel %s", id)
	}
	if amount == 0 || amount > ch.Balance-ch.TotalClaimed {
		return fmt.Errorf("localfacilitator: withdraw %d exceeds the unclaimed escrow %d", amount, ch.Balance-ch.TotalClaimed)
	}
	ch.WithdrawRequestedAt, ch.WithdrawAmount = e.now().Unix(), amount
	return nil
}

// FinalizeWithdraw completes a timed withdrawal once its delay has passed,
// returning the amount paid back (capped to what is still unclaimed).
func (e *Escrow) FinalizeWithdraw(id string) (uint64, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	ch, ok := e.channels[strings.ToLower(id)]
	if !ok || ch.WithdrawRequestedAt == 0 {
		return 0, fmt.Errorf("localfacilitator: no withdrawal pending on %s", id)
	}
	if e.now().Unix() < ch.WithdrawRequestedAt+int64(ch.Config.WithdrawDelay) {
		return 0, fmt.Errorf("localfacilitator: the withdraw delay of %s has not passed", id)
	}
	out := min(ch.WithdrawAmount, ch.Balance-ch.TotalClaimed)
	ch.Balance -= out
	ch.WithdrawRequestedAt, ch.WithdrawAmount = 0, 0
	return out, nil
}

func pairKey(receiver, token string) string {
	return strings.ToLower(receiver) + "|" + strings.ToLower(token)
}

func (ch *EscrowChannel) snapshot(id string) channel.ChannelState {
	return channel.ChannelState{
		ChannelID: id, Balance: strconv.FormatUint(ch.Balance, 10), TotalClaimed: strconv.FormatUint(ch.TotalClaimed, 10),
		WithdrawRequestedAt: ch.WithdrawRequestedAt, RefundNonce: strconv.FormatUint(ch.RefundNonce, 10),
	}
}

func payloadType(raw json.RawMessage) string {
	var probe struct {
		Type string `json:"type"`
	}
	_ = json.Unmarshal(raw, &probe)
	return probe.Type
}

// verify checks a deposit, voucher or refund payload against the escrow.
func (e *Escrow) verify(_ context.Context, req x402.FacilitatorRequest) (*x402.VerifyResponse, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	payer, reason := e.check(req)
	resp := &x402.VerifyResponse{IsValid: reason == "", InvalidReason: reason, Payer: payer}
	// The channel's onchain snapshot, as the specification's /verify
	// answers it (extra.balance, extra.totalClaimed, ...), so the server
	// can refresh its mirror.
	if pl, err := channel.DecodePayload(req.Payment.Payload); err == nil {
		id := strings.ToLower(pl.Voucher.ChannelID)
		if ch := e.channels[id]; ch != nil {
			snap := ch.snapshot(id)
			resp.Extra = map[string]any{
				"channelId": snap.ChannelID, "balance": snap.Balance, "totalClaimed": snap.TotalClaimed,
				"withdrawRequestedAt": snap.WithdrawRequestedAt, "refundNonce": snap.RefundNonce,
			}
		}
	}
	return resp, nil
}

// check verifies a client payload (deposit, voucher, refund) under e.mu.
func (e *Escrow) check(req x402.FacilitatorRequest) (payer, reason string) {
	c, err := e.scheme.CheckPayment(req.Payment, req.Requirement, e.now())
	if err != nil {
		if r := channel.Reason(err); r != "" {
			return "", r
		}
		return "", x402.ReasonInvalidPayload
	}
	pl := c.Payload
	payer = pl.ChannelConfig.Payer
	ch := e.channels[pl.Voucher.ChannelID]
	var balance, claimed uint64
	if ch != nil {
		balance, claimed = ch.Balance, ch.TotalClaimed
	}
	switch pl.Type {
	case channel.TypeDeposit:
		nonce, _ := channel.DepositNonce(pl.Voucher.ChannelID, pl.Deposit.Authorization.ERC3009Authorization.Salt)
		if e.nonces[nonce] {
			return payer, x402.ReasonNonceUsed
		}
		if c.Max > balance+c.DepositAmount {
			return payer, channel.ReasonCumulativeExceedsBalance
		}
		if c.Max < claimed {
			return payer, "invalid_batch_settlement_evm_cumulative_below_claimed"
		}
	case channel.TypeVoucher:
		if balance == 0 {
			return payer, "invalid_batch_settlement_evm_channel_not_found"
		}
		if c.Max > balance {
			return payer, channel.ReasonCumulativeExceedsBalance
		}
		if c.Max <= claimed {
			return payer, "invalid_batch_settlement_evm_cumulative_below_claimed"
		}
	case channel.TypeRefund:
		if balance == 0 {
			return payer, "invalid_batch_settlement_evm_channel_not_found"
		}
		if c.Max < claimed {
			return payer, "invalid_batch_settlement_evm_cumulative_below_claimed"
		}
	}
	return payer, ""
}

// settle executes a deposit, claim, settle or (server-completed) refund.
func (e *Escrow) settle(_ context.Context, req x402.FacilitatorRequest) (*x402.SettleResponse, error) {
	resp := &x402.SettleResponse{Network: x402.NormalizeNetwork(req.Requirement.Network)}
	e.mu.Lock()
	defer e.mu.Unlock()
	var reason string
	switch payloadType(req.Payment.Payload) {
	case channel.TypeDeposit:
		reason = e.deposit(req, resp)
	case channel.TypeClaim:
		reason = e.claim(req, resp)
	case channel.TypeSettle:
		reason = e.sweep(req, resp)
	case channel.TypeRefund:
		reason = e.refund(req, resp)
	default:
		reason = "invalid_batch_settlement_evm_unknown_settle_action"
	}
	if reason != "" {
		resp.Success, resp.ErrorReason, resp.Transaction, resp.Amount = false, reason, "", ""
		return resp, nil
	}
	resp.Success = true
	return resp, nil
}

func (e *Escrow) txHash(kind string) string {
	e.seq++
	h := eip712.Keccak256([]byte("localfacilitator-escrow:" + kind + ":" + strconv.FormatUint(e.seq, 10)))
	return "0x" + fmt.Sprintf("%x", h[:])
}

func (e *Escrow) deposit(req x402.FacilitatorRequest, resp *x402.SettleResponse) string {
	payer, reason := e.check(req)
	resp.Payer = payer
	if reason != "" {
		return reason
	}
	pl, _ := channel.DecodePayload(req.Payment.Payload) // checked
	id := strings.ToLower(pl.Voucher.ChannelID)
	nonce, _ := channel.DepositNonce(id, pl.Deposit.Authorization.ERC3009Authorization.Salt)
	e.nonces[nonce] = true
	amount, _ := strconv.ParseUint(pl.Deposit.Amount, 10, 64)
	ch := e.channels[id]
	if ch == nil {
		ch = &EscrowChannel{Config: pl.ChannelConfig}
		e.channels[id] = ch
	}
	ch.Balance += amount
	resp.Transaction, resp.Amount = e.txHash("deposit"), pl.Deposit.Amount
	resp.Extra = map[string]any{channel.ExtraChannelState: ch.snapshot(id)}
	return ""
}

// claimRows checks every claim row and returns the channels and totals, or
// a reason; nothing is applied.
func (e *Escrow) claimRows(chainID int64, claims []channel.Claim) ([]*EscrowChannel, []uint64, string) {
	chs := make([]*EscrowChannel, len(claims))
	totals := make([]uint64, len(claims))
	for i, c := range claims {
		id, err := c.Voucher.Channel.ID(chainID)
		if err != nil {
			return nil, nil, "invalid_batch_settlement_evm_claim_payload"
		}
		ch := e.channels[id]
		if ch == nil {
			return nil, nil, "invalid_batch_settlement_evm_channel_not_found"
		}
		if !strings.EqualFold(ch.Config.ReceiverAuthorizer, e.authorizer) {
			return nil, nil, "invalid_batch_settlement_evm_authorizer_address_mismatch"
		}
		v := channel.Voucher{ChannelID: id, MaxClaimableAmount: c.Voucher.MaxClaimableAmount, Signature: c.Signature}
		signer, err := v.Signer(chainID)
		if err != nil || !strings.EqualFold(signer, ch.Config.PayerAuthorizer) {
			return nil, nil, channel.ReasonVoucherSignature
		}
		max, err1 := strconv.ParseUint(c.Voucher.MaxClaimableAmount, 10, 64)
		total, err2 := strconv.ParseUint(c.TotalClaimed, 10, 64)
		if err1 != nil || err2 != nil || total > max {
			return nil, nil, "invalid_batch_settlement_evm_claim_payload"
		}
		if total > ch.Balance {
			return nil, nil, channel.ReasonCumulativeExceedsBalance
		}
		chs[i], totals[i] = ch, total
	}
	return chs, totals, ""
}

func (e *Escrow) applyClaims(chs []*EscrowChannel, totals []uint64) {
	for i, ch := range chs {
		if totals[i] > ch.TotalClaimed {
			e.unsettled[pairKey(ch.Config.Receiver, ch.Config.Token)] += totals[i] - ch.TotalClaimed
			ch.TotalClaimed = totals[i]
		}
	}
}

func decodeServerPayload(raw json.RawMessage, v any) bool {
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.DisallowUnknownFields()
	return dec.Decode(v) == nil && !dec.More()
}

func (e *Escrow) claim(req x402.FacilitatorRequest, resp *x402.SettleResponse) string {
	var pl channel.ClaimPayload
	if !decodeServerPayload(req.Payment.Payload, &pl) || len(pl.Claims) == 0 {
		return "invalid_batch_settlement_evm_claim_payload"
	}
	chainID, ok := x402.EVMChainID(req.Requirement.Network)
	if !ok {
		return x402.ReasonInvalidNetwork
	}
	chs, totals, reason := e.claimRows(chainID, pl.Claims)
	if reason != "" {
		return reason
	}
	e.applyClaims(chs, totals)
	resp.Transaction = e.txHash("claim")
	return ""
}

func (e *Escrow) sweep(req x402.FacilitatorRequest, resp *x402.SettleResponse) string {
	var pl channel.SettlePayload
	if !decodeServerPayload(req.Payment.Payload, &pl) {
		return "invalid_batch_settlement_evm_settle_payload"
	}
	k := pairKey(pl.Receiver, pl.Token)
	n := e.unsettled[k]
	resp.Amount = strconv.FormatUint(n, 10)
	if n == 0 {
		return ""
	}
	delete(e.unsettled, k)
	e.settled[k] += n
	resp.Transaction = e.txHash("settle")
	return ""
}

func (e *Escrow) refund(req x402.FacilitatorRequest, resp *x402.SettleResponse) string {
	var pl channel.RefundSettlePayload
	if !decodeServerPayload(req.Payment.Payload, &pl) {
		return "invalid_batch_settlement_evm_refund_payload"
	}
	chainID, ok := x402.EVMChainID(req.Requirement.Network)
	if !ok {
		return x402.ReasonInvalidNetwork
	}
	id, err := pl.ChannelConfig.ID(chainID)
	if err != nil || !strings.EqualFold(id, pl.Voucher.ChannelID) {
		return channel.ReasonChannelIDMismatch
	}
	ch := e.channels[id]
	if ch == nil || ch.Balance == 0 {
		return "invalid_batch_settlement_evm_channel_not_found"
	}
	resp.Payer = ch.Config.Payer
	signer, err := pl.Voucher.Signer(chainID)
	if err != nil || !strings.EqualFold(signer, ch.Config.PayerAuthorizer) {
		return channel.ReasonVoucherSignature
	}
	nonce, err := strconv.ParseUint(pl.RefundNonce, 10, 64)
	if err != nil || nonce != ch.RefundNonce {
		return "invalid_batch_settlement_evm_refund_payload"
	}
	amount, err := strconv.ParseUint(pl.Amount, 10, 64)
	if err != nil || amount == 0 {
		return channel.ReasonRefundAmountInvalid
	}
	chs, totals, reason := e.claimRows(chainID, pl.Claims)
	if reason != "" {
		return reason
	}
	e.applyClaims(chs, totals)
	// The nonce advances before the cap, as the contract does.
	ch.RefundNonce++
	out := min(amount, ch.Balance-ch.TotalClaimed)
	ch.Balance -= out
	if ch.WithdrawRequestedAt != 0 {
		if out >= ch.WithdrawAmount {
			ch.WithdrawRequestedAt, ch.WithdrawAmount = 0, 0
		} else {
			ch.WithdrawAmount -= out
		}
	}
	resp.Amount = strconv.FormatUint(out, 10)
	resp.Transaction = e.txHash("refund")
	resp.Extra = map[string]any{channel.ExtraChannelState: ch.snapshot(id)}
	return ""
}
