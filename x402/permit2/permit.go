package permit2

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"

	"github.com/402claw/dispatcher/x402"
	"github.com/402claw/dispatcher/x402/eip712"
)

// Contract addresses (the same on every EVM chain: CREATE2 deployments).
const (
	// Address is the canonical Permit2 contract, the verifying contract of
	// every Permit2 signature.
	Address = "0x000000000022D473030F116dDEE9F6B43aC78BA3"
	// ExactProxy is the x402 exact Permit2 proxy, the spender of an
	// exact-permit2 authorization.
	ExactProxy = "0x402085c248EeA27D92E8b30b2C58ed07f9E20001"
	// UptoProxy is the x402 upto Permit2 proxy, the spender of an upto
	// authorization.
	UptoProxy = "0x4020A4f3b7b90ccA423B9fabCc0CE57C6C240002"
)

// Requirement extra keys and values.
const (
	// ExtraAssetTransferMethod is the extra key that selects the exact
	// scheme's transfer method.
	ExtraAssetTransferMethod = "assetTransferMethod"
	// TransferMethod is the value of ExtraAssetTransferMethod for Permit2.
	TransferMethod = "permit2"
)

// DeadlineBuffer is how long before its deadline an authorization stops
// being accepted: a settlement transaction needs a few blocks, so an
// authorization that expires within this margin would fail on chain. The
// reference facilitators use the same six seconds.
const DeadlineBuffer = 6 * time.Second

// Error reasons, as the reference x402 facilitators name them.
const (
	ReasonInvalidSpender     = "invalid_permit2_spender"
	ReasonRecipientMismatch  = "invalid_permit2_recipient_mismatch"
	ReasonDeadlineExpired    = "permit2_deadline_expired"
	ReasonNotYetValid        = "permit2_not_yet_valid"
	ReasonAmountMismatch     = "permit2_amount_mismatch"
	ReasonTokenMismatch      = "permit2_token_mismatch"
	ReasonInvalidSignature   = "invalid_permit2_signature"
	ReasonInvalidPayloadType = "unsupported_payload_type"
)

// maxUnixSeconds is the last second of year 9999; later times are clamped
// to it when converted.
const maxUnixSeconds = 253402300799

var (
	tokenPermissionsType     = "TokenPermissions(address token,uint256 amount)"
	tokenPermissionsTypeHash = eip712.Keccak256([]byte(tokenPermissionsType))
)

// Permit is the part of a Permit2 PermitWitnessTransferFrom that every
// x402 Permit2 scheme shares. All integers are canonical decimal strings
// once decoded.
type Permit struct {
	// From is the owner (payer).
	From string
	// Token is the ERC-20 contract (permitted.token).
	Token string
	// Amount is permitted.amount in atomic units.
	Amount string
	// Spender is the x402 proxy allowed to pull the funds.
	Spender string
	// Nonce is Permit2's unordered uint256 nonce, single-use per owner.
	Nonce string
	// Deadline is the Unix time after which Permit2 refuses the signature.
	Deadline string
	// To is witness.to, the recipient.
	To string
	// ValidAfter is witness.validAfter, the Unix time from which the proxy
	// accepts it.
	ValidAfter string
}

// Domain returns the Permit2 EIP-712 domain on a chain (Permit2's domain
// has no version).
func Domain(chainID int64) eip712.Domain {
	return eip712.Domain{Name: "Permit2", ChainID: chainID, VerifyingContract: Address}
}

// Digest returns the EIP-712 digest of a PermitWitnessTransferFrom over p in
// the Permit2 domain of chainID, with the witness struct described by
// witnessType (its EIP-712 type, such as "Witness(address to,uint256
// validAfter)") and hashed as witnessHash.
func (p Permit) Digest(chainID int64, witnessType string, witnessHash [32]byte) ([32]byte, error) {
	words, err := encode(
		field{"permitted.token", p.Token, eip712.Address},
		field{"permitted.amount", p.Amount, eip712.Uint256},
		field{"spender", p.Spender, eip712.Address},
		field{"nonce", p.Nonce, eip712.Uint256},
		field{"deadline", p.Deadline, eip712.Uint256},
	)
	if err != nil {
		return [32]byte{}, err
	}
	typeHash := eip712.Keccak256([]byte("PermitWitnessTransferFrom(TokenPermissions permitted,address spender,uint256 nonce,uint256 deadline,Witness witness)" +
		tokenPermissionsType + witnessType))
	permitted := eip712.Keccak256(tokenPermissionsTypeHash[:], words[0][:], words[1][:])
	structHash := eip712.Keccak256(typeHash[:], permitted[:], words[2][:], words[3][:], words[4][:], witnessHash[:])
	return eip712.Digest(Domain(chainID), structHash)
}

// HashStruct hashes an EIP-712 struct of type typeString whose fields are
// all addresses or uint256 decimals, given as (name, value, encoder)
// triples in declaration order. Schemes use it for their witness.
func HashStruct(typeString string, fields ...Field) ([32]byte, error) {
	fs := make([]field, len(fields))
	for i, f := range fields {
		enc := eip712.Uint256
		if f.Address {
			enc = eip712.Address
		}
		fs[i] = field{f.Name, f.Value, enc}
	}
	words, err := encode(fs...)
	if err != nil {
		return [32]byte{}, err
	}
	typeHash := eip712.Keccak256([]byte(typeString))
	parts := make([][]byte, 0, 1+len(words))
	parts = append(parts, typeHash[:])
	for i := range words {
		parts = append(parts, words[i][:])
	}
	return eip712.Keccak256(parts...), nil
}

// Field is one field of a struct hashed by HashStruct.
type Field struct {
	// Name names the field in errors.
	Name string
	// Value is the field's value: an address or a uint256 decimal.
	Value string
	// Address says the value is an address (otherwise a uint256).
	Address bool
}

type field struct {
	name, value string
	enc         func(string) ([32]byte, error)
}

func encode(fs ...field) ([][32]byte, error) {
	out := make([][32]byte, len(fs))
	for i, f := range fs {
		w, err := f.enc(f.value)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f.name, err)
		}
		out[i] = w
	}
	return out, nil
}

// Normalize checks the shape of every field (addresses are 0x and 40 hex
// digits; amount, deadline and validAfter unsigned decimals below 2^256;
// the nonce a decimal or 0x-hex uint256) and returns p with canonical
// decimal integers. Errors wrap x402.ErrInvalidPayment and name the field.
func (p Permit) Normalize() (Permit, error) {
	for _, a := range []struct{ name, v string }{
		{"from", p.From}, {"permitted.token", p.Token}, {"spender", p.Spender}, {"witness.to", p.To},
	} {
		if _, err := eip712.HexBytes(a.v, 20); err != nil {
			return p, invalid("permit2Authorization.%s %q is not an address", a.name, clip(a.v))
		}
	}
	var err error
	for _, u := range []struct {
		name string
		v    *string
	}{{"permitted.amount", &p.Amount}, {"deadline", &p.Deadline}, {"witness.validAfter", &p.ValidAfter}} {
		n, perr := eip712.ParseUint256(*u.v)
		if perr != nil {
			return p, invalid("permit2Authorization.%s %q is not an unsigned integer", u.name, clip(*u.v))
		}
		*u.v = n.String()
	}
	if p.Nonce, err = CanonicalNonce(p.Nonce); err != nil {
		return p, err
	}
	return p, nil
}

// CanonicalNonce returns a Permit2 nonce (a uint256 as a decimal or as
// 0x-prefixed hex, as JavaScript clients may send it) in canonical decimal
// form. Errors wrap x402.ErrInvalidPayment.
func CanonicalNonce(s string) (string, error) {
	if len(s) > 2 && (s[:2] == "0x" || s[:2] == "0X") {
		if len(s) > 66 {
			return "", invalid("permit2Authorization.nonce %q is longer than 32 bytes", clip(s))
		}
		n, ok := new(big.Int).SetString(s[2:], 16)
		if !ok || n.Sign() < 0 || strings.ContainsAny(s[2:], "+-_") {
			return "", invalid("permit2Authorization.nonce %q is not hex", clip(s))
		}
		return n.String(), nil
	}
	n, err := eip712.ParseUint256(s)
	if err != nil {
		return "", invalid("permit2Authorization.nonce %q is not an unsigned integer", clip(s))
	}
	return n.String(), nil
}

// Check checks a normalized permit against the server's requirement at
// time now: spender is the given proxy, token is the requirement's asset,
// the permitted amount is the requirement's amount, witness.to is its
// payTo, validAfter has passed and the deadline is more than
// DeadlineBuffer away. The first failure is an *x402.MismatchError
// (wrapping x402.ErrRequirementMismatch) whose Field names the payload
// field; Reason maps it to the facilitator reason.
func (p Permit) Check(req x402.Requirement, spender string, now time.Time) error {
	if !strings.EqualFold(p.Spender, spender) {
		return &x402.MismatchError{Field: FieldSpender, Want: spender, Got: p.Spender}
	}
	if !strings.EqualFold(p.Token, req.Asset) {
		return &x402.MismatchError{Field: FieldToken, Want: req.Asset, Got: p.Token}
	}
	if !sameUint(p.Amount, req.Amount) {
		return &x402.MismatchError{Field: FieldAmount, Want: req.Amount, Got: p.Amount}
	}
	if !strings.EqualFold(p.To, req.PayTo) {
		return &x402.MismatchError{Field: FieldTo, Want: req.PayTo, Got: p.To}
	}
	return p.CheckWindow(now)
}

// CheckWindow checks only the validity window at time now (see Check).
func (p Permit) CheckWindow(now time.Time) error {
	if after := UnixTime(p.ValidAfter); now.Before(after) {
		return &x402.MismatchError{Field: FieldValidAfter, Want: "at most " + fmt.Sprint(now.Unix()), Got: p.ValidAfter}
	}
	if deadline := UnixTime(p.Deadline); deadline.Before(now.Add(DeadlineBuffer)) {
		return &x402.MismatchError{Field: FieldDeadline, Want: "at least " + fmt.Sprint(now.Add(DeadlineBuffer).Unix()), Got: p.Deadline}
	}
	return nil
}

// Payload field names used in MismatchError.Field.
const (
	FieldSpender     = "permit2Authorization.spender"
	FieldToken       = "permit2Authorization.permitted.token"
	FieldAmount      = "permit2Authorization.permitted.amount"
	FieldTo          = "permit2Authorization.witness.to"
	FieldValidAfter  = "permit2Authorization.witness.validAfter"
	FieldDeadline    = "permit2Authorization.deadline"
	FieldFacilitator = "permit2Authorization.witness.facilitator"
)

// Reason maps an error of Check (or of a scheme's own field check) to the
// facilitator reason the reference x402 facilitators use; errors that are
// not field mismatches map to x402.ReasonInvalidPayload.
func Reason(err error) string {
	var me *x402.MismatchError
	if !errors.As(err, &me) {
		return x402.ReasonInvalidPayload
	}
	switch me.Field {
	case FieldSpender:
		return ReasonInvalidSpender
	case FieldToken:
		return ReasonTokenMismatch
	case FieldAmount:
		return ReasonAmountMismatch
	case FieldTo:
		return ReasonRecipientMismatch
	case FieldValidAfter:
		return ReasonNotYetValid
	case FieldDeadline:
		return ReasonDeadlineExpired
	default:
		return me.Reason()
	}
}

// GrantID is the authorization identity of a Permit2 nonce: Permit2 nonces
// are single-use per owner on a chain whatever the token, spender or
// witness, so exact-permit2 and upto payments share this space.
func GrantID(network, payer, nonce string) string {
	if n, err := CanonicalNonce(nonce); err == nil {
		nonce = n
	}
	return x402.NormalizeNetwork(network) + ":permit2:" + strings.ToLower(payer) + ":" + nonce
}

// UnixTime converts a decimal Unix time to a time.Time, clamping values
// past year 9999 (and unparseable ones) to the end of year 9999.
func UnixTime(s string) time.Time {
	n, ok := new(big.Int).SetString(s, 10)
	if !ok || n.Sign() < 0 || !n.IsInt64() || n.Int64() > maxUnixSeconds {
		return time.Unix(maxUnixSeconds, 0).UTC()
	}
	return time.Unix(n.Int64(), 0).UTC()
}

// DecodeJSON decodes a scheme payload strictly: one JSON object, unknown
// fields refused, nothing after it. Errors wrap x402.ErrInvalidPayment.
func DecodeJSON(raw json.RawMessage, v any) error {
	if len(raw) == 0 || string(raw) == "null" {
		return invalid("payload is missing")
	}
	if len(raw) > x402.MaxHeaderBytes {
		return invalid("payload is %d bytes, over the %d byte limit", len(raw), x402.MaxHeaderBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return invalid("bad Permit2 payload JSON: %v", err)
	}
	if dec.More() {
		return invalid("trailing data after the Permit2 payload")
	}
	return nil
}

// CheckSignature checks a signature's shape: 65 bytes of 0x-prefixed hex.
func CheckSignature(sig string) error {
	if _, err := eip712.HexBytes(sig, 65); err != nil {
		return invalid("signature %q is not 65 bytes of 0x-prefixed hex", clip(sig))
	}
	return nil
}

// Signed returns the canonical text of every signed field and the
// signature, for a Grant: lower-case hex, canonical decimals, in a fixed
// order, the witness's own fields given last.
func (p Permit) Signed(network, signature string, witness ...string) []string {
	out := []string{
		x402.NormalizeNetwork(network),
		strings.ToLower(p.From), strings.ToLower(p.Token), p.Amount,
		strings.ToLower(p.Spender), p.Nonce, p.Deadline, strings.ToLower(p.To), p.ValidAfter,
	}
	for _, w := range witness {
		out = append(out, strings.ToLower(w))
	}
	return append(out, canonicalSignature(signature))
}

// canonicalSignature lower-cases a signature and writes its v as 27 or 28
// (clients may send 0 or 1), so both spellings fingerprint the same.
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

// Grant builds the x402.Grant of a checked permit.
func (p Permit) Grant(network, signature string, witness ...string) x402.Grant {
	return x402.Grant{
		Payer:       p.From,
		ID:          GrantID(network, p.From, p.Nonce),
		Amount:      p.Amount,
		ValidAfter:  UnixTime(p.ValidAfter),
		ValidBefore: UnixTime(p.Deadline),
		Signed:      p.Signed(network, signature, witness...),
	}
}

func sameUint(a, b string) bool {
	x, err1 := eip712.ParseUint256(a)
	y, err2 := eip712.ParseUint256(b)
	return err1 == nil && err2 == nil && x.Cmp(y) == 0
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", x402.ErrInvalidPayment, fmt.Sprintf(format, args...))
}

func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}
