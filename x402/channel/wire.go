package channel

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/big"
	"strings"

	"github.com/402claw/dispatcher/x402"
	"github.com/402claw/dispatcher/x402/eip712"
)

// Wire names and contract constants of the scheme.
const (
	// Name is the scheme's name in the tenant directory and on the wire.
	Name = "batch-settlement"
	// BatchSettlementAddress is the canonical x402BatchSettlement contract,
	// the verifying contract of the channel and voucher EIP-712 domain.
	BatchSettlementAddress = "0x4020074e9dF2ce1deE5A9C1b5c3f541D02a10003"
	// DepositCollectorAddress is the canonical ERC3009DepositCollector: the
	// "to" of a deposit's ReceiveWithAuthorization.
	DepositCollectorAddress = "0x4020806089470a89826cB9fB1f4059150b550004"
	// DomainName and DomainVersion name the channel's EIP-712 domain.
	DomainName    = "x402 Batch Settlement"
	DomainVersion = "1"

	// ExtraReceiverAuthorizer, ExtraWithdrawDelay, ExtraChannelState and
	// ExtraVoucherState are requirement (and settle response) extra keys.
	ExtraReceiverAuthorizer = "receiverAuthorizer"
	ExtraWithdrawDelay      = "withdrawDelay"
	ExtraChannelState       = "channelState"
	ExtraVoucherState       = "voucherState"
	ExtraChargedAmount      = "chargedAmount"

	// DefaultWithdrawDelay is the withdraw delay offered when none is
	// configured, in seconds (15 minutes).
	DefaultWithdrawDelay = 900
	// MinWithdrawDelay and MaxWithdrawDelay bound a channel's withdraw
	// delay in seconds (15 minutes to 30 days).
	MinWithdrawDelay = 900
	MaxWithdrawDelay = 30 * 24 * 3600

	// ChannelConfigType, VoucherType and ReceiveWithAuthorizationType are
	// the EIP-712 type strings that are hashed.
	ChannelConfigType            = "ChannelConfig(address payer,address payerAuthorizer,address receiver,address receiverAuthorizer,address token,uint40 withdrawDelay,bytes32 salt)"
	VoucherType                  = "Voucher(bytes32 channelId,uint128 maxClaimableAmount)"
	ReceiveWithAuthorizationType = "ReceiveWithAuthorization(address from,address to,uint256 value,uint256 validAfter,uint256 validBefore,bytes32 nonce)"
)

// Payload types (the "type" discriminator of a scheme payload).
const (
	TypeDeposit = "deposit"
	TypeVoucher = "voucher"
	TypeRefund  = "refund"
	TypeClaim   = "claim"
	TypeSettle  = "settle"
)

var (
	channelConfigTypeHash = eip712.Keccak256([]byte(ChannelConfigType))
	voucherTypeHash       = eip712.Keccak256([]byte(VoucherType))
	receiveTypeHash       = eip712.Keccak256([]byte(ReceiveWithAuthorizationType))
	zeroAddress           = "0x0000000000000000000000000000000000000000"
)

// ChannelConfig is a channel's immutable configuration (ChannelConfig); its
// EIP-712 hash is the channel id.
type ChannelConfig struct {
	Payer              string `json:"payer"`
	PayerAuthorizer    string `json:"payerAuthorizer"`
	Receiver           string `json:"receiver"`
	ReceiverAuthorizer string `json:"receiverAuthorizer"`
	Token              string `json:"token"`
	WithdrawDelay      uint64 `json:"withdrawDelay"`
	Salt               string `json:"salt"`
}

// Voucher is a client-signed cumulative ceiling on one channel.
type Voucher struct {
	ChannelID          string `json:"channelId"`
	MaxClaimableAmount string `json:"maxClaimableAmount"`
	Signature          string `json:"signature"`
}

// ERC3009Authorization is the deposit's signed ReceiveWithAuthorization,
// without the fields the server derives (from = payer, to = the collector,
// value = the deposit amount, nonce from the channel id and salt).
type ERC3009Authorization struct {
	ValidAfter  string `json:"validAfter"`
	ValidBefore string `json:"validBefore"`
	Salt        string `json:"salt"`
	Signature   string `json:"signature"`
}

// DepositAuthorization holds the deposit's token authorization; only
// erc3009Authorization is supported here.
type DepositAuthorization struct {
	ERC3009Authorization *ERC3009Authorization `json:"erc3009Authorization"`
}

// Deposit is the funding part of a deposit payload.
type Deposit struct {
	Amount        string               `json:"amount"`
	Authorization DepositAuthorization `json:"authorization"`
}

// Payload is a client's batch-settlement scheme payload: a deposit (with
// the first or next voucher), a voucher, or a cooperative refund request
// (a zero-charge voucher and an optional amount).
type Payload struct {
	Type          string        `json:"type"`
	ChannelConfig ChannelConfig `json:"channelConfig"`
	Voucher       Voucher       `json:"voucher"`
	Deposit       *Deposit      `json:"deposit,omitempty"`
	// Amount is the refund asked for; empty means the whole remainder.
	Amount string `json:"amount,omitempty"`
}

// ChannelState is the channel snapshot carried in settle responses and
// corrective 402s (extra.channelState).
type ChannelState struct {
	ChannelID               string `json:"channelId"`
	Balance                 string `json:"balance"`
	TotalClaimed            string `json:"totalClaimed"`
	WithdrawRequestedAt     int64  `json:"withdrawRequestedAt"`
	RefundNonce             string `json:"refundNonce"`
	ChargedCumulativeAmount string `json:"chargedCumulativeAmount,omitempty"`
}

// VoucherState is the last voucher the server holds (extra.voucherState of
// a corrective 402), so a client can verify it before resynchronizing.
type VoucherState struct {
	SignedMaxClaimable string `json:"signedMaxClaimable"`
	Signature          string `json:"signature"`
}

// ClaimVoucher is the voucher of one claim row: the whole channel config
// and the signed ceiling.
type ClaimVoucher struct {
	Channel            ChannelConfig `json:"channel"`
	MaxClaimableAmount string        `json:"maxClaimableAmount"`
}

// Claim is one row of a claim batch: claim up to TotalClaimed on the
// channel, backed by the voucher and its signature.
type Claim struct {
	Voucher      ClaimVoucher `json:"voucher"`
	Signature    string       `json:"signature"`
	TotalClaimed string       `json:"totalClaimed"`
}

// ClaimPayload is the server-authored claim batch (many channels in one
// facilitator call).
type ClaimPayload struct {
	Type                     string  `json:"type"`
	Claims                   []Claim `json:"claims"`
	ClaimAuthorizerSignature string  `json:"claimAuthorizerSignature,omitempty"`
}

// SettlePayload is the server-authored sweep of claimed funds to the
// receiver.
type SettlePayload struct {
	Type     string `json:"type"`
	Receiver string `json:"receiver"`
	Token    string `json:"token"`
}

// RefundSettlePayload is a refund payload completed by the server before
// it goes to the facilitator's /settle: the refund nonce, the amount
// resolved, and the claim of the zero-charge voucher.
type RefundSettlePayload struct {
	Type          string        `json:"type"`
	ChannelConfig ChannelConfig `json:"channelConfig"`
	Voucher       Voucher       `json:"voucher"`
	Amount        string        `json:"amount"`
	RefundNonce   string        `json:"refundNonce"`
	Claims        []Claim       `json:"claims"`
}

// Domain returns the channel and voucher EIP-712 domain on chainID.
func Domain(chainID int64) eip712.Domain {
	return eip712.Domain{Name: DomainName, Version: DomainVersion, ChainID: chainID, VerifyingContract: BatchSettlementAddress}
}

// ID returns the channel id: the EIP-712 hash of the config on chainID, as
// 0x-prefixed lower-case hex.
func (c ChannelConfig) ID(chainID int64) (string, error) {
	d, err := c.digest(chainID)
	if err != nil {
		return "", err
	}
	return hex32(d), nil
}

func (c ChannelConfig) digest(chainID int64) ([32]byte, error) {
	var words [7][32]byte
	var err error
	for i, a := range []struct{ name, v string }{
		{"payer", c.Payer}, {"payerAuthorizer", c.PayerAuthorizer}, {"receiver", c.Receiver},
		{"receiverAuthorizer", c.ReceiverAuthorizer}, {"token", c.Token},
	} {
		if words[i], err = eip712.Address(a.v); err != nil {
			return [32]byte{}, fmt.Errorf("channelConfig.%s: %w", a.name, err)
		}
	}
	if c.WithdrawDelay >= 1<<40 {
		return [32]byte{}, fmt.Errorf("%w: channelConfig.withdrawDelay %d is not a uint40", eip712.ErrMalformed, c.WithdrawDelay)
	}
	new(big.Int).SetUint64(c.WithdrawDelay).FillBytes(words[5][:])
	if words[6], err = eip712.Bytes32(c.Salt); err != nil {
		return [32]byte{}, fmt.Errorf("channelConfig.salt: %w", err)
	}
	parts := [][]byte{channelConfigTypeHash[:]}
	for i := range words {
		parts = append(parts, words[i][:])
	}
	return eip712.Digest(Domain(chainID), eip712.Keccak256(parts...))
}

// Digest returns the EIP-712 digest of the voucher on chainID: the hash its
// payer authorizer signs.
func (v Voucher) Digest(chainID int64) ([32]byte, error) {
	id, err := eip712.Bytes32(v.ChannelID)
	if err != nil {
		return [32]byte{}, fmt.Errorf("voucher.channelId: %w", err)
	}
	max, err := parseUint128(v.MaxClaimableAmount)
	if err != nil {
		return [32]byte{}, fmt.Errorf("%w: voucher.maxClaimableAmount: %v", eip712.ErrMalformed, err)
	}
	var w [32]byte
	max.FillBytes(w[:])
	return eip712.Digest(Domain(chainID), eip712.Keccak256(voucherTypeHash[:], id[:], w[:]))
}

// Signer recovers the address that signed the voucher on chainID.
func (v Voucher) Signer(chainID int64) (string, error) {
	d, err := v.Digest(chainID)
	if err != nil {
		return "", err
	}
	return eip712.RecoverSigner(d, v.Signature)
}

// DepositNonce returns the ERC-3009 nonce of a deposit:
// keccak256(abi.encode(bytes32 channelId, uint256 salt)).
func DepositNonce(channelID, salt string) (string, error) {
	id, err := eip712.Bytes32(channelID)
	if err != nil {
		return "", fmt.Errorf("channelId: %w", err)
	}
	s, err := eip712.Bytes32(salt)
	if err != nil {
		return "", fmt.Errorf("salt: %w", err)
	}
	return hex32(eip712.Keccak256(id[:], s[:])), nil
}

// TokenDomain is the token's EIP-712 domain (the requirement's extra name
// and version, the asset as verifying contract).
func TokenDomain(req x402.Requirement, chainID int64) eip712.Domain {
	return eip712.Domain{Name: req.ExtraString("name"), Version: req.ExtraString("version"), ChainID: chainID, VerifyingContract: req.Asset}
}

// ReceiveDigest returns the EIP-712 digest of the deposit's
// ReceiveWithAuthorization in the token's domain: from the payer to the
// deposit collector, value the deposit amount, nonce DepositNonce.
func (p *Payload) ReceiveDigest(token eip712.Domain) ([32]byte, error) {
	if p.Deposit == nil || p.Deposit.Authorization.ERC3009Authorization == nil {
		return [32]byte{}, fmt.Errorf("%w: not a deposit", eip712.ErrMalformed)
	}
	a := p.Deposit.Authorization.ERC3009Authorization
	nonce, err := DepositNonce(p.Voucher.ChannelID, a.Salt)
	if err != nil {
		return [32]byte{}, err
	}
	from, err := eip712.Address(p.ChannelConfig.Payer)
	if err != nil {
		return [32]byte{}, err
	}
	to, _ := eip712.Address(DepositCollectorAddress)
	value, err := eip712.Uint256(p.Deposit.Amount)
	if err != nil {
		return [32]byte{}, err
	}
	after, err := eip712.Uint256(a.ValidAfter)
	if err != nil {
		return [32]byte{}, err
	}
	before, err := eip712.Uint256(a.ValidBefore)
	if err != nil {
		return [32]byte{}, err
	}
	n, _ := eip712.Bytes32(nonce)
	return eip712.Digest(token, eip712.Keccak256(receiveTypeHash[:], from[:], to[:], value[:], after[:], before[:], n[:]))
}

// DepositSigner recovers the signer of the deposit's
// ReceiveWithAuthorization in the token's domain.
func (p *Payload) DepositSigner(token eip712.Domain) (string, error) {
	d, err := p.ReceiveDigest(token)
	if err != nil {
		return "", err
	}
	return eip712.RecoverSigner(d, p.Deposit.Authorization.ERC3009Authorization.Signature)
}

// DecodePayload decodes a client's batch-settlement scheme payload
// strictly: one JSON object, no unknown fields, every field of its type
// present and well formed (addresses, 32-byte words, 65-byte signatures,
// canonical unsigned decimals within uint128, a withdraw delay within
// bounds), and only the fields its type allows. Errors wrap
// x402.ErrInvalidPayment.
func DecodePayload(raw json.RawMessage) (*Payload, error) {
	var p Payload
	if err := decodeStrict(raw, &p); err != nil {
		return nil, err
	}
	switch p.Type {
	case TypeDeposit:
		if p.Deposit == nil {
			return nil, invalid("deposit payload without deposit")
		}
		if p.Amount != "" {
			return nil, invalid("deposit payload with an amount")
		}
		if err := checkDeposit(p.Deposit); err != nil {
			return nil, err
		}
	case TypeVoucher:
		if p.Deposit != nil || p.Amount != "" {
			return nil, invalid("voucher payload with deposit or amount")
		}
	case TypeRefund:
		if p.Deposit != nil {
			return nil, invalid("refund payload with a deposit")
		}
		if p.Amount != "" {
			n, err := parseUint128(p.Amount)
			if err != nil {
				return nil, invalid("refund amount: %v", err)
			}
			if n.Sign() == 0 {
				return nil, invalid("refund amount is zero")
			}
		}
	default:
		return nil, invalid("payload type %q is not deposit, voucher or refund", clip(p.Type))
	}
	if err := checkConfig(p.ChannelConfig); err != nil {
		return nil, err
	}
	if err := checkVoucher(p.Voucher); err != nil {
		return nil, err
	}
	return &p, nil
}

func checkConfig(c ChannelConfig) error {
	for _, a := range []struct{ name, v string }{
		{"payer", c.Payer}, {"payerAuthorizer", c.PayerAuthorizer}, {"receiver", c.Receiver},
		{"receiverAuthorizer", c.ReceiverAuthorizer}, {"token", c.Token},
	} {
		if _, err := eip712.HexBytes(a.v, 20); err != nil {
			return invalid("channelConfig.%s %q is not an address", a.name, clip(a.v))
		}
	}
	if strings.EqualFold(c.ReceiverAuthorizer, zeroAddress) {
		return invalid("channelConfig.receiverAuthorizer is the zero address")
	}
	if c.WithdrawDelay < MinWithdrawDelay || c.WithdrawDelay > MaxWithdrawDelay {
		return invalid("channelConfig.withdrawDelay %d is outside %d..%d seconds", c.WithdrawDelay, MinWithdrawDelay, MaxWithdrawDelay)
	}
	if _, err := eip712.HexBytes(c.Salt, 32); err != nil {
		return invalid("channelConfig.salt %q is not 32 bytes of hex", clip(c.Salt))
	}
	return nil
}

func checkVoucher(v Voucher) error {
	if _, err := eip712.HexBytes(v.ChannelID, 32); err != nil {
		return invalid("voucher.channelId %q is not 32 bytes of hex", clip(v.ChannelID))
	}
	if _, err := parseUint128(v.MaxClaimableAmount); err != nil {
		return invalid("voucher.maxClaimableAmount: %v", err)
	}
	if _, err := eip712.HexBytes(v.Signature, 65); err != nil {
		return invalid("voucher.signature %q is not 65 bytes of hex", clip(v.Signature))
	}
	return nil
}

func checkDeposit(d *Deposit) error {
	n, err := parseUint128(d.Amount)
	if err != nil {
		return invalid("deposit.amount: %v", err)
	}
	if n.Sign() == 0 {
		return invalid("deposit.amount is zero")
	}
	a := d.Authorization.ERC3009Authorization
	if a == nil {
		return invalid("deposit.authorization.erc3009Authorization is required (permit2 deposits are not supported)")
	}
	for _, f := range []struct{ name, v string }{{"validAfter", a.ValidAfter}, {"validBefore", a.ValidBefore}} {
		if _, err := parseUint(f.v, 64); err != nil {
			return invalid("deposit.authorization.erc3009Authorization.%s: %v", f.name, err)
		}
	}
	if _, err := eip712.HexBytes(a.Salt, 32); err != nil {
		return invalid("deposit.authorization.erc3009Authorization.salt %q is not 32 bytes of hex", clip(a.Salt))
	}
	if _, err := eip712.HexBytes(a.Signature, 65); err != nil {
		return invalid("deposit.authorization.erc3009Authorization.signature %q is not 65 bytes of hex", clip(a.Signature))
	}
	return nil
}

// decodeStrict decodes one JSON object with no unknown fields and nothing
// after it. Errors wrap x402.ErrInvalidPayment.
func decodeStrict(raw json.RawMessage, v any) error {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '{' {
		return invalid("payload is missing or not an object")
	}
	if len(raw) > x402.MaxHeaderBytes {
		return invalid("payload is %d bytes, over the %d byte limit", len(raw), x402.MaxHeaderBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return invalid("bad batch-settlement payload JSON: %v", err)
	}
	if dec.More() {
		return invalid("trailing data after the payload")
	}
	return nil
}

// parseUint128 parses a canonical unsigned decimal (no sign, no leading
// zeros) below 2^128.
func parseUint128(s string) (*big.Int, error) {
	n, err := parseUint(s, 128)
	if err != nil {
		return nil, err
	}
	return n, nil
}

func parseUint(s string, bits int) (*big.Int, error) {
	if s == "" || len(s) > 40 || strings.TrimLeft(s, "0123456789") != "" || (len(s) > 1 && s[0] == '0') {
		return nil, fmt.Errorf("%q is not a canonical unsigned integer", clip(s))
	}
	n, _ := new(big.Int).SetString(s, 10)
	if n.BitLen() > bits {
		return nil, fmt.Errorf("%q exceeds uint%d", clip(s), bits)
	}
	return n, nil
}

func hex32(w [32]byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 2+64)
	out[0], out[1] = '0', 'x'
	for i, b := range w {
		out[2+2*i] = digits[b>>4]
		out[3+2*i] = digits[b&0x0f]
	}
	return string(out)
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: batch-settlement: %s", x402.ErrInvalidPayment, fmt.Sprintf(format, args...))
}

func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}
