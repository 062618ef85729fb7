package channel

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/decred/dcrd/dcrec/secp256k1/v4"

	"github.com/402claw/dispatcher/x402"
	"github.com/402claw/dispatcher/x402/eip712"
)

// Client builds and signs batch-settlement payloads as a paying client
// does, with one key as both payer and payerAuthorizer. It is for tests,
// examples and the demo client; keys it holds are test keys.
type Client struct {
	key  *secp256k1.PrivateKey
	addr string
}

// NewClient returns a client signing with key.
func NewClient(key *secp256k1.PrivateKey) *Client {
	return &Client{key: key, addr: eip712.PublicKeyAddress(key.PubKey())}
}

// Address returns the client's address.
func (c *Client) Address() string { return c.addr }

// ChannelConfig returns the channel config a client derives from the
// server's requirement: receiver = payTo, token = asset, the requirement's
// receiverAuthorizer and withdrawDelay, and its own payer, payerAuthorizer
// and salt (32-byte hex).
func (c *Client) ChannelConfig(req x402.Requirement, salt string) (ChannelConfig, error) {
	delay, ok := extraUint(req.Extra[ExtraWithdrawDelay])
	if !ok {
		return ChannelConfig{}, fmt.Errorf("%w: requirement without extra.withdrawDelay", x402.ErrInvalidRequirement)
	}
	ra := req.ExtraString(ExtraReceiverAuthorizer)
	if ra == "" {
		return ChannelConfig{}, fmt.Errorf("%w: requirement without extra.receiverAuthorizer", x402.ErrInvalidRequirement)
	}
	return ChannelConfig{
		Payer: c.addr, PayerAuthorizer: c.addr, Receiver: req.PayTo, ReceiverAuthorizer: ra,
		Token: req.Asset, WithdrawDelay: delay, Salt: salt,
	}, nil
}

// Voucher signs a voucher for maxClaimable on the channel of cfg.
func (c *Client) Voucher(cfg ChannelConfig, chainID int64, maxClaimable uint64) (Voucher, error) {
	id, err := cfg.ID(chainID)
	if err != nil {
		return Voucher{}, err
	}
	v := Voucher{ChannelID: id, MaxClaimableAmount: strconv.FormatUint(maxClaimable, 10)}
	d, err := v.Digest(chainID)
	if err != nil {
		return Voucher{}, err
	}
	if v.Signature, err = eip712.Sign(c.key, d); err != nil {
		return Voucher{}, err
	}
	return v, nil
}

// VoucherPayload builds a voucher payload for maxClaimable.
func (c *Client) VoucherPayload(req x402.Requirement, cfg ChannelConfig, maxClaimable uint64) (*Payload, error) {
	chainID, ok := x402.EVMChainID(req.Network)
	if !ok {
		return nil, fmt.Errorf("%w: %q is not an EVM network", x402.ErrUnknownNetwork, req.Network)
	}
	v, err := c.Voucher(cfg, chainID, maxClaimable)
	if err != nil {
		return nil, err
	}
	return &Payload{Type: TypeVoucher, ChannelConfig: cfg, Voucher: v}, nil
}

// RefundPayload builds a refund payload: a zero-charge voucher at charged
// (the server's chargedCumulativeAmount) and an optional amount ("" for
// everything left).
func (c *Client) RefundPayload(req x402.Requirement, cfg ChannelConfig, charged uint64, amount string) (*Payload, error) {
	p, err := c.VoucherPayload(req, cfg, charged)
	if err != nil {
		return nil, err
	}
	p.Type, p.Amount = TypeRefund, amount
	return p, nil
}

// DepositPayload builds a deposit payload: deposit into the channel of cfg
// with an ERC-3009 ReceiveWithAuthorization valid from validAfter until
// validBefore, and a voucher for maxClaimable.
func (c *Client) DepositPayload(req x402.Requirement, cfg ChannelConfig, deposit, maxClaimable uint64, validAfter, validBefore time.Time) (*Payload, error) {
	p, err := c.VoucherPayload(req, cfg, maxClaimable)
	if err != nil {
		return nil, err
	}
	chainID, _ := x402.EVMChainID(req.Network)
	p.Type = TypeDeposit
	p.Deposit = &Deposit{
		Amount: strconv.FormatUint(deposit, 10),
		Authorization: DepositAuthorization{ERC3009Authorization: &ERC3009Authorization{
			ValidAfter: strconv.FormatInt(validAfter.Unix(), 10), ValidBefore: strconv.FormatInt(validBefore.Unix(), 10),
			Salt: RandomSalt(),
		}},
	}
	d, err := p.ReceiveDigest(TokenDomain(req, chainID))
	if err != nil {
		return nil, err
	}
	if p.Deposit.Authorization.ERC3009Authorization.Signature, err = eip712.Sign(c.key, d); err != nil {
		return nil, err
	}
	return p, nil
}

// RandomSalt returns 32 random bytes as 0x-prefixed hex.
func RandomSalt() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return "0x" + hex.EncodeToString(b[:])
}

// Envelope wraps a scheme payload in a version 2 payment for req, as the
// client sends it (PAYMENT-SIGNATURE is its standard base64), and decodes
// it with x402.ParsePaymentPayload.
func Envelope(req x402.Requirement, payload any) (*x402.Payment, error) {
	raw, err := json.Marshal(map[string]any{"x402Version": x402.Version2, "accepted": req.V2(), "payload": payload})
	if err != nil {
		return nil, err
	}
	return x402.ParsePaymentPayload(raw)
}
