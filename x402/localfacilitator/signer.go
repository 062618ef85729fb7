package localfacilitator

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/402claw/dispatcher/x402"
	"github.com/402claw/dispatcher/x402/eip712"
	"github.com/402claw/dispatcher/x402/permit2"
	"github.com/402claw/dispatcher/x402/upto"
	"github.com/decred/dcrd/dcrec/secp256k1/v4"
)

// v1ValidAfterSkew is how far in the past version 1 clients start an
// authorization's validity (the reference clients use ten minutes, to
// absorb clock skew); version 2 clients send validAfter 0.
const v1ValidAfterSkew = 600 * time.Second

// Signer signs x402 payments with one private key, as the reference x402
// clients do, so that Go tests, the demo and load generators can pay. It
// is for test keys: keep real funds away from it.
type Signer struct {
	key     *secp256k1.PrivateKey
	address string
}

// NewSigner returns a signer for a secp256k1 private key given as 64 hex
// digits, with or without 0x.
func NewSigner(privateKeyHex string) (*Signer, error) {
	s := strings.TrimPrefix(strings.TrimPrefix(strings.TrimSpace(privateKeyHex), "0x"), "0X")
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 32 {
		return nil, errors.New("localfacilitator: private key must be 32 bytes of hex")
	}
	var k secp256k1.ModNScalar
	if overflow := k.SetByteSlice(b); overflow || k.IsZero() {
		return nil, errors.New("localfacilitator: private key is out of range")
	}
	key := secp256k1.NewPrivateKey(&k)
	return &Signer{key: key, address: eip712.PublicKeyAddress(key.PubKey())}, nil
}

// GenerateSigner returns a signer for a fresh random key.
func GenerateSigner() (*Signer, error) {
	key, err := secp256k1.GeneratePrivateKey()
	if err != nil {
		return nil, fmt.Errorf("localfacilitator: generate key: %w", err)
	}
	return &Signer{key: key, address: eip712.PublicKeyAddress(key.PubKey())}, nil
}

// Address returns the signer's EIP-55 address.
func (s *Signer) Address() string { return s.address }

// SignOptions adjust one signature. The zero value signs like a reference
// client at the current time with a random nonce.
type SignOptions struct {
	// Now is the signing time; zero means time.Now().
	Now time.Time
	// Nonce is the 32-byte authorization nonce as 0x-prefixed hex; empty
	// means a random one.
	Nonce string
	// ValidAfter overrides the start of the validity window (the default
	// is 0 for version 2 and Now minus ten minutes for version 1).
	ValidAfter *time.Time
	// ValidBefore overrides the end of the validity window (the default is
	// Now plus the requirement's maxTimeoutSeconds).
	ValidBefore *time.Time
	// PaymentID, when set, adds the payment-identifier extension with this
	// info.id to a version 2 payment.
	PaymentID string
}

// SignedPayment is a signed payment, ready to send.
type SignedPayment struct {
	// Version is the protocol version.
	Version int
	// Header is the header to send it in: PAYMENT-SIGNATURE or X-PAYMENT.
	Header string
	// Value is the header value: standard base64 of JSON.
	Value string
	// JSON is the payment JSON before base64.
	JSON []byte
	// Authorization is the signed EIP-3009 authorization (empty for
	// Permit2 payments).
	Authorization x402.Authorization
	// Payload is the scheme payload as sent (the "payload" object).
	Payload json.RawMessage
	// Signature is the 65-byte signature, 0x-prefixed hex (r || s || v).
	Signature string
}

// Sign authorizes a transfer of exactly req.Amount to req.PayTo and wraps
// it in the given protocol version's payment, with the same field order
// and values a reference client produces (so, with the same nonce and
// time, the same bytes). An upto requirement is signed with SignUpto, an
// exact one whose extra.assetTransferMethod is "permit2" with SignPermit2
// (both version 2 only); otherwise it signs an EIP-3009 authorization.
func (s *Signer) Sign(req x402.Requirement, version int, opts SignOptions) (*SignedPayment, error) {
	switch {
	case req.Scheme == upto.Name:
		return s.signPermit2Version(req, version, opts, s.SignUpto)
	case req.Scheme == x402.SchemeExact && req.ExtraString(permit2.ExtraAssetTransferMethod) == permit2.TransferMethod:
		return s.signPermit2Version(req, version, opts, s.SignPermit2)
	}
	if version != x402.Version1 && version != x402.Version2 {
		return nil, fmt.Errorf("localfacilitator: unsupported x402Version %d", version)
	}
	if err := req.Validate(); err != nil {
		return nil, err
	}
	now := opts.Now
	if now.IsZero() {
		now = time.Now()
	}
	nonce := opts.Nonce
	if nonce == "" {
		var b [32]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, fmt.Errorf("localfacilitator: nonce: %w", err)
		}
		nonce = "0x" + hex.EncodeToString(b[:])
	}
	validAfter := int64(0)
	if version == x402.Version1 {
		validAfter = now.Add(-v1ValidAfterSkew).Unix()
	}
	if opts.ValidAfter != nil {
		validAfter = opts.ValidAfter.Unix()
	}
	validBefore := now.Unix() + int64(req.MaxTimeoutSeconds)
	if opts.ValidBefore != nil {
		validBefore = opts.ValidBefore.Unix()
	}
	auth := x402.Authorization{
		From:        s.address,
		To:          req.PayTo,
		Value:       req.Amount,
		ValidAfter:  strconv.FormatInt(validAfter, 10),
		ValidBefore: strconv.FormatInt(validBefore, 10),
		Nonce:       nonce,
	}
	sig, err := s.SignAuthorization(req, auth)
	if err != nil {
		return nil, err
	}
	payload, err := marshalJSON(x402.ExactEVMPayload{Authorization: auth, Signature: sig})
	if err != nil {
		return nil, err
	}
	out := &SignedPayment{Version: version, Authorization: auth, Signature: sig, Payload: payload}
	if version == x402.Version2 {
		pp := x402.PaymentPayload{
			X402Version: x402.Version2,
			Payload:     payload,
			Accepted:    req.V2(),
		}
		if req.Resource.URL != "" {
			res := req.Resource
			pp.Resource = &res
		}
		if opts.PaymentID != "" {
			id, err := json.Marshal(opts.PaymentID)
			if err != nil {
				return nil, err
			}
			pp.Extensions = x402.Extensions{
				x402.ExtensionPaymentIdentifier: json.RawMessage(`{"info":{"id":` + string(id) + `}}`),
			}
		}
		out.Header = x402.HeaderPaymentSignature
		out.JSON, err = marshalJSON(pp)
	} else {
		out.Header = x402.HeaderXPayment
		out.JSON, err = marshalJSON(x402.PaymentPayloadV1{
			X402Version: x402.Version1,
			Scheme:      req.Scheme,
			Network:     x402.V1NetworkName(req.Network),
			Payload:     payload,
		})
	}
	if err != nil {
		return nil, err
	}
	out.Value = base64.StdEncoding.EncodeToString(out.JSON)
	return out, nil
}

// PaymentSignature signs a version 2 payment and returns the
// PAYMENT-SIGNATURE header value.
func (s *Signer) PaymentSignature(req x402.Requirement, opts SignOptions) (string, error) {
	sp, err := s.Sign(req, x402.Version2, opts)
	if err != nil {
		return "", err
	}
	return sp.Value, nil
}

// XPayment signs a version 1 payment and returns the X-PAYMENT header
// value.
func (s *Signer) XPayment(req x402.Requirement, opts SignOptions) (string, error) {
	sp, err := s.Sign(req, x402.Version1, opts)
	if err != nil {
		return "", err
	}
	return sp.Value, nil
}

// SignAuthorization signs an authorization in the EIP-712 domain of req and
// returns the 65-byte Ethereum signature (r || s || v, v 27 or 28) as
// 0x-prefixed hex. It signs whatever it is given, so tests can make
// signatures over tampered authorizations.
func (s *Signer) SignAuthorization(req x402.Requirement, auth x402.Authorization) (string, error) {
	domain, err := DomainFor(req)
	if err != nil {
		return "", err
	}
	digest, err := Digest(domain, auth)
	if err != nil {
		return "", fmt.Errorf("localfacilitator: %w", err)
	}
	sig, err := eip712.Sign(s.key, digest)
	if err != nil {
		return "", fmt.Errorf("localfacilitator: %w", err)
	}
	return sig, nil
}

// marshalJSON encodes like a JavaScript client: no HTML escaping, no
// trailing newline.
func marshalJSON(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}
