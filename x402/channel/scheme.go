package channel

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/402claw/dispatcher/x402"
	"github.com/402claw/dispatcher/x402/eip712"
)

// Error reasons of the batch-settlement scheme, as the x402 specification
// names them.
const (
	ReasonChannelBusy              = "invalid_batch_settlement_evm_channel_busy"
	ReasonCumulativeAmountMismatch = "invalid_batch_settlement_evm_cumulative_amount_mismatch"
	ReasonCumulativeExceedsBalance = "invalid_batch_settlement_evm_cumulative_exceeds_balance"
	ReasonChannelIDMismatch        = "invalid_batch_settlement_evm_channel_id_mismatch"
	ReasonVoucherSignature         = "invalid_batch_settlement_evm_voucher_signature"
	ReasonReceiveSignature         = "invalid_batch_settlement_evm_receive_authorization_signature"
	ReasonReceiverMismatch         = "invalid_batch_settlement_evm_receiver_mismatch"
	ReasonReceiverAuthMismatch     = "invalid_batch_settlement_evm_receiver_authorizer_mismatch"
	ReasonTokenMismatch            = "invalid_batch_settlement_evm_token_mismatch"
	ReasonWithdrawDelayMismatch    = "invalid_batch_settlement_evm_withdraw_delay_mismatch"
	ReasonValidAfter               = "invalid_batch_settlement_evm_payload_authorization_valid_after"
	ReasonValidBefore              = "invalid_batch_settlement_evm_payload_authorization_valid_before"
	ReasonMissingChannel           = "invalid_batch_settlement_evm_missing_channel"
	ReasonChargeExceedsSigned      = "invalid_batch_settlement_evm_charge_exceeds_signed_cumulative"
	ReasonRefundAmountInvalid      = "invalid_batch_settlement_evm_refund_amount_invalid"
	ReasonRefundNoBalance          = "invalid_batch_settlement_evm_refund_no_balance"
	ReasonPayloadType              = "invalid_batch_settlement_evm_payload_type"
	ReasonNetworkMismatch          = "invalid_batch_settlement_evm_network_mismatch"
)

// Mismatch fields (x402.MismatchError.Field) specific to the scheme.
const (
	FieldReceiverAuthorizer = "channelConfig.receiverAuthorizer"
	FieldWithdrawDelay      = "channelConfig.withdrawDelay"
	FieldReceiver           = "channelConfig.receiver"
	FieldToken              = "channelConfig.token"
	FieldValidAfter         = "deposit.authorization.validAfter"
	FieldValidBefore        = "deposit.authorization.validBefore"
)

// SchemeConfig configures the scheme.
type SchemeConfig struct {
	// ReceiverAuthorizer is the address that authorizes claims and refunds
	// (extra.receiverAuthorizer): the facilitator's, from its /supported
	// answer (see ReceiverAuthorizer), unless the gateway has its own key.
	// Required.
	ReceiverAuthorizer string
	// WithdrawDelay is the channel withdraw delay offered, in seconds;
	// zero means DefaultWithdrawDelay.
	WithdrawDelay uint64
	// KeyTables is how many payer authorizer keys get a precomputed
	// eip712.KeyTable (about eip712.KeyTableBytes of memory each), which
	// checks their vouchers in about a third of a signature recovery's
	// time: a key earns one after eip712.DefaultKeyTableAfter vouchers
	// committed on funded channels, the least recently used is dropped
	// first. Zero means DefaultKeyTables, negative none.
	KeyTables int
}

// DefaultKeyTables is SchemeConfig.KeyTables's default.
const DefaultKeyTables = 16

// Scheme is batch-settlement (x402.Scheme and x402.LocalVerifier). It is
// immutable and safe for concurrent use.
type Scheme struct {
	receiverAuthorizer string
	withdrawDelay      uint64
	svc                *Service
	cache              *eip712.RecoverCache
	checked            *checkedRing
}

// checkedRing remembers the last voucher payments checked, by payment and
// requirement, so that the Service's Begin after the payment stage's
// Check (the same *x402.Payment) does not decode and verify it twice. A
// voucher's check does not depend on the time, so the answer stays right.
type checkedRing struct {
	mu    sync.Mutex
	next  int
	ring  [256]checkedEntry
	index map[*x402.Payment]int
	// ids remembers channel ids by config (a hash of the config: the same
	// config always has the same id).
	ids map[channelKey]string
}

type channelKey struct {
	cfg   ChannelConfig
	chain int64
}

// maxChannelIDs bounds checkedRing.ids; past it the map starts over.
const maxChannelIDs = 4096

// channelID returns cfg.ID(chainID), remembered.
func (r *checkedRing) channelID(cfg ChannelConfig, chainID int64) (string, error) {
	if r == nil {
		return cfg.ID(chainID)
	}
	k := channelKey{cfg, chainID}
	r.mu.Lock()
	id, ok := r.ids[k]
	r.mu.Unlock()
	if ok {
		return id, nil
	}
	id, err := cfg.ID(chainID)
	if err != nil {
		return "", err
	}
	r.mu.Lock()
	if len(r.ids) >= maxChannelIDs {
		clear(r.ids)
	}
	r.ids[k] = id
	r.mu.Unlock()
	return id, nil
}

type checkedEntry struct {
	p   *x402.Payment
	req checkedReq
	c   *Checked
}

// checkedReq is what of a requirement a check depends on.
type checkedReq struct{ network, amount, payTo, asset, auth, delay string }

func checkedReqOf(req x402.Requirement) checkedReq {
	return checkedReq{req.Network, req.Amount, req.PayTo, req.Asset, req.ExtraString(ExtraReceiverAuthorizer), fmt.Sprint(req.Extra[ExtraWithdrawDelay])}
}

func (r *checkedRing) get(p *x402.Payment, req checkedReq) *Checked {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	i, ok := r.index[p]
	if !ok || r.ring[i].req != req {
		return nil
	}
	return r.ring[i].c
}

func (r *checkedRing) has(p *x402.Payment) bool {
	if r == nil {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.index[p]
	return ok
}

func (r *checkedRing) add(p *x402.Payment, req checkedReq, c *Checked) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if old := r.ring[r.next].p; old != nil {
		delete(r.index, old)
	}
	r.ring[r.next] = checkedEntry{p: p, req: req, c: c}
	r.index[p] = r.next
	r.next = (r.next + 1) % len(r.ring)
}

var (
	_ x402.Scheme        = (*Scheme)(nil)
	_ x402.LocalVerifier = (*Scheme)(nil)
)

// NewScheme returns the batch-settlement scheme.
func NewScheme(cfg SchemeConfig) (*Scheme, error) {
	addr, err := eip712.ChecksumAddress(strings.TrimSpace(cfg.ReceiverAuthorizer))
	if err != nil || addr == zeroAddress {
		return nil, fmt.Errorf("%w: batch-settlement: ReceiverAuthorizer %q is not a non-zero address", x402.ErrInvalidRequirement, cfg.ReceiverAuthorizer)
	}
	delay := cfg.WithdrawDelay
	if delay == 0 {
		delay = DefaultWithdrawDelay
	}
	if delay < MinWithdrawDelay || delay > MaxWithdrawDelay {
		return nil, fmt.Errorf("%w: batch-settlement: WithdrawDelay %d is outside %d..%d seconds", x402.ErrInvalidRequirement, delay, MinWithdrawDelay, MaxWithdrawDelay)
	}
	tables := cfg.KeyTables
	if tables == 0 {
		tables = DefaultKeyTables
	}
	cache := eip712.NewCache(eip712.CacheConfig{Size: 4096, KeyTables: max(tables, 0)})
	return &Scheme{receiverAuthorizer: addr, withdrawDelay: delay, cache: cache, checked: &checkedRing{index: map[*x402.Payment]int{}, ids: map[channelKey]string{}}}, nil
}

// ReceiverAuthorizer returns the receiver authorizer a facilitator
// announces for batch-settlement on a network in its /supported answer,
// and whether there is one.
func ReceiverAuthorizer(s *x402.SupportedResponse, network string) (string, bool) {
	if s == nil {
		return "", false
	}
	want := x402.NormalizeNetwork(network)
	for _, k := range s.Kinds {
		if k.Scheme != Name || x402.NormalizeNetwork(k.Network) != want {
			continue
		}
		if a, ok := k.Extra[ExtraReceiverAuthorizer].(string); ok && a != "" {
			return a, true
		}
	}
	return "", false
}

// HasKeyTable reports whether vouchers signed by address are checked with
// a precomputed eip712.KeyTable (see SchemeConfig.KeyTables).
func (s *Scheme) HasKeyTable(address string) bool {
	for _, a := range s.cache.KeyTables() {
		if strings.EqualFold(a, address) {
			return true
		}
	}
	return false
}

// Name returns "batch-settlement".
func (*Scheme) Name() string { return Name }

// Pricing returns x402.PricingChannel.
func (*Scheme) Pricing() x402.Pricing { return x402.PricingChannel }

// Requirement builds the accepts entry: scheme "batch-settlement", the
// offer's MaxPrice (Price when zero) as the per-request maximum, extra
// {name, version, receiverAuthorizer, withdrawDelay}.
func (s *Scheme) Requirement(o x402.Offer) (x402.Requirement, error) {
	req, err := o.Requirement(Name, true)
	if err != nil {
		return x402.Requirement{}, err
	}
	req.Extra[ExtraReceiverAuthorizer] = s.receiverAuthorizer
	req.Extra[ExtraWithdrawDelay] = s.withdrawDelay
	return req, nil
}

// Claims reports whether a client's chosen requirement is batch-settlement.
func (*Scheme) Claims(accepted x402.Requirement) bool { return accepted.Scheme == Name }

// Checked is a payment decoded and checked by Scheme.Check.
type Checked struct {
	// Payload is the decoded scheme payload.
	Payload *Payload
	// ChainID is the requirement network's chain id.
	ChainID int64
	// Max is the voucher's maxClaimableAmount (math.MaxUint64 when it does
	// not fit, which no balance covers).
	Max uint64
	// Amount is the requirement's per-request maximum.
	Amount uint64
	// DepositAmount is the deposit's amount (0 unless a deposit).
	DepositAmount uint64
	// Grant is what x402.Scheme.Check returns.
	Grant x402.Grant
}

// Check decodes the payment's batch-settlement payload and checks it
// against req at now, without calling out: the network and per-request
// amount the client chose, the channel config against the requirement
// (receiver = payTo, token = asset, receiverAuthorizer, withdrawDelay), the
// channel id as the config's hash, the voucher signed by payerAuthorizer
// and, for a deposit, the ReceiveWithAuthorization signed by the payer
// within its validity window. The Grant's Amount is the per-request
// maximum ("0" for a refund).
func (s *Scheme) Check(p *x402.Payment, req x402.Requirement, now time.Time) (x402.Grant, error) {
	c, err := s.CheckPayment(p, req, now)
	if err != nil {
		return x402.Grant{}, err
	}
	return c.Grant, nil
}

// CheckPayment is Check returning the decoded payload too.
func (s *Scheme) CheckPayment(p *x402.Payment, req x402.Requirement, now time.Time) (*Checked, error) {
	if p == nil {
		return nil, fmt.Errorf("%w: no payment", x402.ErrInvalidPayment)
	}
	rk := checkedReqOf(req)
	if c := s.checked.get(p, rk); c != nil {
		return c, nil
	}
	pl, err := DecodePayload(p.Payload)
	if err != nil {
		return nil, err
	}
	if p.Accepted.Network != "" && x402.NormalizeNetwork(p.Accepted.Network) != x402.NormalizeNetwork(req.Network) {
		return nil, &x402.MismatchError{Field: "network", Want: req.Network, Got: p.Accepted.Network}
	}
	chainID, ok := x402.EVMChainID(req.Network)
	if !ok {
		return nil, &x402.MismatchError{Field: "network", Want: "an EVM network", Got: req.Network}
	}
	if p.Accepted.Scheme != "" && p.Accepted.Scheme != Name {
		return nil, &x402.MismatchError{Field: "scheme", Want: Name, Got: p.Accepted.Scheme}
	}
	if p.Accepted.Amount != "" && p.Accepted.Amount != req.Amount {
		return nil, &x402.MismatchError{Field: "amount", Want: req.Amount, Got: p.Accepted.Amount}
	}
	amount, err := strconv.ParseUint(req.Amount, 10, 64)
	if err != nil {
		return nil, fmt.Errorf("%w: batch-settlement: amount %q is not a uint64", x402.ErrInvalidRequirement, req.Amount)
	}
	cfg := pl.ChannelConfig
	if !strings.EqualFold(cfg.Receiver, req.PayTo) {
		return nil, &x402.MismatchError{Field: FieldReceiver, Want: req.PayTo, Got: cfg.Receiver}
	}
	if !strings.EqualFold(cfg.Token, req.Asset) {
		return nil, &x402.MismatchError{Field: FieldToken, Want: req.Asset, Got: cfg.Token}
	}
	wantAuth := s.receiverAuthorizer
	if r := req.ExtraString(ExtraReceiverAuthorizer); r != "" {
		wantAuth = r
	}
	if !strings.EqualFold(cfg.ReceiverAuthorizer, wantAuth) {
		return nil, &x402.MismatchError{Field: FieldReceiverAuthorizer, Want: wantAuth, Got: cfg.ReceiverAuthorizer}
	}
	wantDelay := s.withdrawDelay
	if d, ok := extraUint(req.Extra[ExtraWithdrawDelay]); ok {
		wantDelay = d
	}
	if cfg.WithdrawDelay != wantDelay {
		return nil, &x402.MismatchError{Field: FieldWithdrawDelay, Want: strconv.FormatUint(wantDelay, 10), Got: strconv.FormatUint(cfg.WithdrawDelay, 10)}
	}
	id, err := s.checked.channelID(cfg, chainID)
	if err != nil {
		return nil, invalid("channelConfig: %v", err)
	}
	if !strings.EqualFold(id, pl.Voucher.ChannelID) {
		return nil, &Error{Reason: ReasonChannelIDMismatch, Err: x402.ErrInvalidPayment, Detail: "voucher.channelId " + pl.Voucher.ChannelID + " is not the config's hash " + id}
	}
	pl.Voucher.ChannelID = id
	// The voucher is signed by payerAuthorizer, or, when that is the zero
	// address, by the payer itself. (The specification lets a zero
	// payerAuthorizer mean an EIP-1271 check against a contract payer;
	// that needs the chain, so such a voucher, which recovers to no one,
	// is refused here: never served on an unchecked signature.)
	signer, who := cfg.PayerAuthorizer, "payerAuthorizer"
	if strings.EqualFold(signer, zeroAddress) {
		signer, who = cfg.Payer, "the payer (payerAuthorizer is zero)"
	}
	d, err := pl.Voucher.Digest(chainID)
	if err != nil {
		return nil, invalid("voucher: %v", err)
	}
	if ok, err := s.cache.IsSigner(d, pl.Voucher.Signature, signer); err != nil || !ok {
		return nil, &Error{Reason: ReasonVoucherSignature, Err: x402.ErrInvalidPayment, Detail: "the voucher is not signed by " + who}
	}
	// Kept and claimed with v as 27 or 28, which every onchain ECDSA
	// check accepts (some refuse the 0 or 1 a client may send).
	pl.Voucher.Signature = canonicalSignature(pl.Voucher.Signature)
	c := &Checked{Payload: pl, ChainID: chainID, Amount: amount, Max: parseU64(pl.Voucher.MaxClaimableAmount)}
	g := x402.Grant{
		Payer:  cfg.Payer,
		Amount: req.Amount,
		Signed: []string{x402.NormalizeNetwork(req.Network), pl.Type, id, pl.Voucher.MaxClaimableAmount, canonicalSignature(pl.Voucher.Signature)},
	}
	idParts := []string{Name, x402.NormalizeNetwork(req.Network), id, pl.Type, pl.Voucher.MaxClaimableAmount}
	switch pl.Type {
	case TypeDeposit:
		a := pl.Deposit.Authorization.ERC3009Authorization
		after, before := unixTime(a.ValidAfter), unixTime(a.ValidBefore)
		if now.Before(after) {
			return nil, &x402.MismatchError{Field: FieldValidAfter, Want: "at most " + strconv.FormatInt(now.Unix(), 10), Got: a.ValidAfter}
		}
		if !now.Before(before) {
			return nil, &x402.MismatchError{Field: FieldValidBefore, Want: "after " + strconv.FormatInt(now.Unix(), 10), Got: a.ValidBefore}
		}
		d, err := pl.ReceiveDigest(TokenDomain(req, chainID))
		if err != nil {
			return nil, invalid("deposit: %v", err)
		}
		ok, err := s.cache.IsSigner(d, a.Signature, cfg.Payer)
		if err != nil || !ok {
			return nil, &Error{Reason: ReasonReceiveSignature, Err: x402.ErrInvalidPayment, Detail: "the deposit authorization is not signed by the payer"}
		}
		c.DepositAmount = parseU64(pl.Deposit.Amount)
		g.ValidAfter, g.ValidBefore = after, before
		g.Signed = append(g.Signed, pl.Deposit.Amount, a.ValidAfter, a.ValidBefore, strings.ToLower(a.Salt), canonicalSignature(a.Signature))
		idParts = append(idParts, strings.ToLower(a.Salt))
	case TypeRefund:
		g.Amount = "0"
		g.Signed = append(g.Signed, pl.Amount)
		idParts = append(idParts, pl.Amount)
	}
	g.ID = strings.Join(idParts, ":")
	c.Grant = g
	if pl.Type == TypeVoucher {
		s.checked.add(p, rk, c)
	}
	return c, nil
}

// VerifyLocal verifies a voucher payment against the mirrored channel
// state without a facilitator round trip (x402.LocalVerifier). Only the
// scheme a Service returns (Service.Scheme) has that state; deposits and refunds are answered invalid with
// ReasonPayloadType, as they go to the facilitator.
func (s *Scheme) VerifyLocal(ctx context.Context, p *x402.Payment, req x402.Requirement) (*x402.VerifyResponse, error) {
	if s.svc == nil {
		return nil, errors.New("batch-settlement: VerifyLocal needs the scheme of a channel.Service (Service.Scheme)")
	}
	return s.svc.Verify(ctx, p, req)
}

// Error is a batch-settlement refusal carrying the specification's reason.
// It wraps x402.ErrInvalidPayment or x402.ErrRequirementMismatch (Err).
type Error struct {
	// Reason is the specification's error code.
	Reason string
	// Err is the sentinel the error wraps.
	Err error
	// Detail says what was wrong.
	Detail string
}

// Error describes the refusal.
func (e *Error) Error() string { return fmt.Sprintf("%v: %s: %s", e.Err, e.Reason, e.Detail) }

// Unwrap returns the sentinel.
func (e *Error) Unwrap() error { return e.Err }

// Reason maps an error of the scheme or the Service to the
// specification's reason ("" when it has none).
func Reason(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	var b *BusyError
	if errors.As(err, &b) {
		return ReasonChannelBusy
	}
	var m *MismatchError
	if errors.As(err, &m) {
		return m.Reason
	}
	var me *x402.MismatchError
	if errors.As(err, &me) {
		switch me.Field {
		case FieldReceiver, "payTo":
			return ReasonReceiverMismatch
		case FieldToken, "asset":
			return ReasonTokenMismatch
		case FieldReceiverAuthorizer:
			return ReasonReceiverAuthMismatch
		case FieldWithdrawDelay:
			return ReasonWithdrawDelayMismatch
		case FieldValidAfter:
			return ReasonValidAfter
		case FieldValidBefore:
			return ReasonValidBefore
		case "network":
			return ReasonNetworkMismatch
		}
		return me.Reason()
	}
	return ""
}

func extraUint(v any) (uint64, bool) {
	switch n := v.(type) {
	case uint64:
		return n, true
	case int:
		return uint64(n), n >= 0
	case int64:
		return uint64(n), n >= 0
	case float64:
		if n >= 0 && n <= math.MaxUint32 && n == math.Trunc(n) {
			return uint64(n), true
		}
	case string:
		u, err := strconv.ParseUint(n, 10, 64)
		return u, err == nil
	}
	return 0, false
}

// parseU64 parses a canonical decimal already checked by DecodePayload,
// saturating at math.MaxUint64 (no channel balance reaches it).
func parseU64(s string) uint64 {
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return math.MaxUint64
	}
	return n
}

func unixTime(s string) time.Time {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n > 253402300799 {
		return time.Unix(253402300799, 0).UTC()
	}
	return time.Unix(n, 0).UTC()
}

func canonicalSignature(sig string) string {
	b, err := eip712.HexBytes(sig, 65)
	if err != nil {
		return strings.ToLower(sig)
	}
	if b[64] < 27 {
		b[64] += 27
	}
	return "0x" + hex.EncodeToString(b)
}
