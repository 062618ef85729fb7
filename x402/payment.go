package x402

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// maxUnixSeconds is the last second of year 9999: timestamps beyond it are
// refused so that they convert to time.Time without overflow.
const maxUnixSeconds = 253402300799

// Payment is a decoded payment header, whatever its protocol version.
type Payment struct {
	// Version is the protocol version of the payload (1 or 2).
	Version int
	// Header is the header the payment arrived in (HeaderPaymentSignature
	// or HeaderXPayment), or "" when parsed from a facilitator request.
	Header string
	// Accepted is the requirement the client chose, normalised: CAIP-2
	// network, canonical amount. A version 1 payload names only scheme and
	// network, so its Amount and PayTo are the authorization's value and
	// recipient, and its Asset is the network's USDC when the network is
	// known (the EIP-712 domain binds the signature to the asset, which the
	// facilitator checks against the server's requirement).
	Accepted Requirement
	// Authorization is the signed EIP-3009 authorization, as sent.
	Authorization Authorization
	// Signature is the 0x-prefixed signature over the authorization.
	Signature string
	// Payer is the paying address (the authorization's from), as sent.
	Payer string
	// Payload is the raw scheme payload ({"authorization", "signature"}).
	Payload json.RawMessage
	// Raw is the whole payment JSON as the client sent it, forwarded to the
	// facilitator as paymentPayload.
	Raw json.RawMessage
	// Extensions are the version 2 extensions the client sent.
	Extensions Extensions
	// PaymentID is the payment-identifier extension's info.id, or "".
	PaymentID string
}

// ResponseHeader is the name of the header that carries the settlement
// response for this payment: PAYMENT-RESPONSE for version 2,
// X-PAYMENT-RESPONSE for version 1.
func (p *Payment) ResponseHeader() string {
	if p.Version == Version1 {
		return HeaderXPaymentResponse
	}
	return HeaderPaymentResponse
}

// ValidAfter returns the authorization's validAfter as a time.
func (p *Payment) ValidAfter() time.Time {
	return unixString(p.Authorization.ValidAfter)
}

// ValidBefore returns the authorization's validBefore as a time: the
// authorization cannot settle from then on, so records about it (nonce,
// idempotency) need to live at least that long.
func (p *Payment) ValidBefore() time.Time {
	return unixString(p.Authorization.ValidBefore)
}

func unixString(s string) time.Time {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > maxUnixSeconds {
		return time.Time{}
	}
	return time.Unix(n, 0).UTC()
}

// PaymentFromHeader decodes the payment of a request: PAYMENT-SIGNATURE
// when present, otherwise X-PAYMENT. With neither it returns ErrNoPayment;
// an undecodable header, or the same header given twice, wraps
// ErrInvalidPayment.
func PaymentFromHeader(h http.Header) (*Payment, error) {
	for _, name := range [...]string{HeaderPaymentSignature, HeaderXPayment} {
		vals := h.Values(name)
		if len(vals) == 0 {
			continue
		}
		if len(vals) > 1 {
			return nil, fmt.Errorf("%w: %s header given %d times", ErrInvalidPayment, name, len(vals))
		}
		p, err := DecodePaymentHeader(vals[0])
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		p.Header = name
		return p, nil
	}
	return nil, ErrNoPayment
}

// DecodePaymentHeader decodes a PAYMENT-SIGNATURE or X-PAYMENT header value:
// base64 (standard or URL-safe, with or without padding) of a version 1 or
// version 2 payment JSON. The version is taken from the JSON's x402Version,
// so either header may carry either version. Errors wrap ErrInvalidPayment
// and say what is wrong; the function never panics.
func DecodePaymentHeader(value string) (*Payment, error) {
	raw, err := decodeBase64Header(value)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidPayment, err)
	}
	return ParsePaymentPayload(raw)
}

// ParsePaymentPayload parses a payment JSON (the decoded header, or the
// paymentPayload of a facilitator request) of either version. Errors wrap
// ErrInvalidPayment.
func ParsePaymentPayload(raw []byte) (*Payment, error) {
	if len(raw) > MaxHeaderBytes {
		return nil, fmt.Errorf("%w: payload is %d bytes, over the %d byte limit", ErrInvalidPayment, len(raw), MaxHeaderBytes)
	}
	var probe struct {
		X402Version int `json:"x402Version"`
	}
	if err := json.Unmarshal(raw, &probe); err != nil {
		return nil, invalidf("bad JSON: %v", err)
	}
	var (
		p   *Payment
		err error
	)
	switch probe.X402Version {
	case Version2:
		p, err = parseV2(raw)
	case Version1:
		p, err = parseV1(raw)
	default:
		return nil, invalidf("unsupported x402Version %d", probe.X402Version)
	}
	if err != nil {
		return nil, err
	}
	p.Raw = compactJSON(raw)
	return p, nil
}

func parseV2(raw []byte) (*Payment, error) {
	var pp PaymentPayload
	if err := json.Unmarshal(raw, &pp); err != nil {
		return nil, invalidf("bad JSON in version 2 payload: %v", err)
	}
	if err := validExactKeys(raw, "payment", "x402Version", "accepted", "payload", "resource", "extensions"); err != nil {
		return nil, err
	}
	if err := validExactKeys(member(raw, "accepted"), "accepted", "scheme", "network", "amount", "asset", "payTo", "maxTimeoutSeconds", "extra"); err != nil {
		return nil, err
	}
	a := pp.Accepted
	if err := checkSchemeNetwork(a.Scheme, a.Network, "accepted."); err != nil {
		return nil, err
	}
	amount, ok := canonicalUint(a.Amount)
	if !ok {
		return nil, invalidf("accepted.amount %q is not an unsigned integer", clip(a.Amount))
	}
	if !isHexAddress(a.Asset) {
		return nil, invalidf("accepted.asset %q is not an address", clip(a.Asset))
	}
	if !isHexAddress(a.PayTo) {
		return nil, invalidf("accepted.payTo %q is not an address", clip(a.PayTo))
	}
	if a.MaxTimeoutSeconds < 0 {
		return nil, invalidf("accepted.maxTimeoutSeconds %d is negative", a.MaxTimeoutSeconds)
	}
	var res ResourceInfo
	if pp.Resource != nil {
		res = *pp.Resource
	}
	acc := RequirementFromV2(a, res)
	acc.Amount = amount
	p := &Payment{
		Version:    Version2,
		Accepted:   acc,
		Payload:    compactJSON(pp.Payload),
		Extensions: pp.Extensions,
	}
	if !isJSONObject(pp.Payload) {
		return nil, invalidf("payload is missing or not an object")
	}
	if IsEIP3009Payload(a.Scheme, pp.Payload) {
		ev, err := parseExactEVM(pp.Payload)
		if err != nil {
			return nil, err
		}
		p.Authorization, p.Signature, p.Payer = ev.Authorization, ev.Signature, ev.Authorization.From
	}
	var err error
	if p.PaymentID, err = paymentIdentifier(pp.Extensions); err != nil {
		return nil, err
	}
	return p, nil
}

func parseV1(raw []byte) (*Payment, error) {
	var pp PaymentPayloadV1
	if err := json.Unmarshal(raw, &pp); err != nil {
		return nil, invalidf("bad JSON in version 1 payload: %v", err)
	}
	if err := validExactKeys(raw, "payment", "x402Version", "scheme", "network", "payload"); err != nil {
		return nil, err
	}
	if err := checkSchemeNetwork(pp.Scheme, pp.Network, ""); err != nil {
		return nil, err
	}
	if pp.Scheme != SchemeExact {
		// Version 1 expresses only exact over EIP-3009.
		return nil, invalidf("unsupported scheme %q in a version 1 payload", clip(pp.Scheme))
	}
	ev, err := parseExactEVM(pp.Payload)
	if err != nil {
		return nil, err
	}
	amount, _ := canonicalUint(ev.Authorization.Value)
	acc := Requirement{
		Scheme:  pp.Scheme,
		Network: NormalizeNetwork(pp.Network),
		Amount:  amount,
		PayTo:   ev.Authorization.To,
	}
	if nw, err := LookupNetwork(pp.Network); err == nil {
		acc.Asset = nw.USDC.Address
	}
	return &Payment{
		Version:       Version1,
		Accepted:      acc,
		Authorization: ev.Authorization,
		Signature:     ev.Signature,
		Payer:         ev.Authorization.From,
		Payload:       compactJSON(pp.Payload),
	}, nil
}

func checkSchemeNetwork(scheme, network, prefix string) error {
	if scheme == "" {
		return invalidf("%sscheme is missing", prefix)
	}
	if !validSchemeName(scheme) {
		return invalidf("unsupported %sscheme %q", prefix, clip(scheme))
	}
	if network == "" {
		return invalidf("%snetwork is missing", prefix)
	}
	if _, ok := EVMChainID(network); !ok {
		return invalidf("unsupported %snetwork %q", prefix, clip(network))
	}
	return nil
}

func parseExactEVM(raw json.RawMessage) (*ExactEVMPayload, error) {
	if len(raw) == 0 || bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		return nil, invalidf("payload is missing")
	}
	var ev ExactEVMPayload
	if err := json.Unmarshal(raw, &ev); err != nil {
		return nil, invalidf("bad JSON in exact payload: %v", err)
	}
	// Go matches JSON keys case-insensitively, but the signature covers
	// the exact names: a "Nonce" read as the nonce would let the checked
	// payment differ from the one a facilitator settles.
	if err := validExactKeys(raw, "payload", "authorization", "signature"); err != nil {
		return nil, err
	}
	if err := validExactKeys(member(raw, "authorization"), "authorization", "from", "to", "value", "validAfter", "validBefore", "nonce"); err != nil {
		return nil, err
	}
	a := ev.Authorization
	switch {
	case !isHexAddress(a.From):
		return nil, invalidf("authorization.from %q is not an address", clip(a.From))
	case !isHexAddress(a.To):
		return nil, invalidf("authorization.to %q is not an address", clip(a.To))
	case !isUint256(a.Value):
		return nil, invalidf("authorization.value %q is not an unsigned 256-bit integer", clip(a.Value))
	case !isTimestamp(a.ValidAfter):
		return nil, invalidf("authorization.validAfter %q is not a timestamp", clip(a.ValidAfter))
	case !isTimestamp(a.ValidBefore):
		return nil, invalidf("authorization.validBefore %q is not a timestamp", clip(a.ValidBefore))
	case !isHexString(a.Nonce, 64):
		return nil, invalidf("authorization.nonce %q is not 32 bytes of hex", clip(a.Nonce))
	}
	s := ev.Signature
	if len(s) < 4 || len(s)%2 != 0 || (s[:2] != "0x" && s[:2] != "0X") || !isHexDigits(s[2:]) {
		return nil, invalidf("signature %q is not 0x-prefixed hex", clip(s))
	}
	return &ev, nil
}

// paymentIdentifier extracts extensions["payment-identifier"].info.id and
// checks the format the extension prescribes: 16 to 128 characters of
// letters, digits, '-' and '_'.
func paymentIdentifier(ext Extensions) (string, error) {
	raw, ok := ext[ExtensionPaymentIdentifier]
	if !ok || len(raw) == 0 || bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		return "", nil
	}
	var e struct {
		Info *struct {
			ID *string `json:"id"`
		} `json:"info"`
	}
	if err := json.Unmarshal(raw, &e); err != nil {
		return "", invalidf("bad %s extension: %v", ExtensionPaymentIdentifier, err)
	}
	if e.Info == nil || e.Info.ID == nil {
		return "", nil
	}
	id := *e.Info.ID
	if !validPaymentID(id) {
		return "", invalidf("%s id %q must be 16 to 128 letters, digits, '-' or '_'", ExtensionPaymentIdentifier, clip(id))
	}
	return id, nil
}

func validPaymentID(id string) bool {
	if len(id) < 16 || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

func isUint256(s string) bool {
	_, ok := parseUint256(s)
	return ok
}

func isTimestamp(s string) bool {
	if s == "" || len(s) > 12 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return err == nil && n <= maxUnixSeconds
}

// IsEIP3009Payload reports whether a payment's scheme payload is an
// EIP-3009 authorization (the exact scheme's default transfer method): the
// scheme is exact and the payload has an "authorization" object.
func IsEIP3009Payload(scheme string, payload json.RawMessage) bool {
	if scheme != SchemeExact {
		return false
	}
	if !json.Valid(payload) {
		return false
	}
	return member(payload, "authorization") != nil
}

// validSchemeName reports whether s can name a scheme: 1 to 32 lower-case
// letters, digits and '-'.
func validSchemeName(s string) bool {
	if len(s) == 0 || len(s) > 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

func isJSONObject(raw json.RawMessage) bool {
	b := bytes.TrimSpace(raw)
	return len(b) >= 2 && b[0] == '{' && json.Valid(b)
}

// exactKeys checks that the JSON object raw has its keys exactly as named
// (no key that differs from a wanted one only in case) and none twice.
// Keys not wanted at all are allowed. where names the object in errors.
//
// It walks the object's keys itself when raw is valid JSON (every payment
// header is decoded through it several times, and the json.Decoder walk
// was a fifth of a payment's decoding); anything else goes to
// exactKeysDecoder, which both give the same answer for (FuzzExactKeys).
func exactKeys(raw json.RawMessage, where string, want ...string) error {
	if !json.Valid(raw) {
		return exactKeysDecoder(raw, where, want...)
	}
	return validExactKeys(raw, where, want...)
}

// validExactKeys is exactKeys for raw known to be valid JSON: a document
// encoding/json has decoded, or a value inside one. The payment decoders
// call it on what json.Unmarshal has just accepted, so that each header is
// validated once, not once more per object checked.
func validExactKeys(raw json.RawMessage, where string, want ...string) error {
	var seenBuf [8]string
	seen := seenBuf[:0]
	err := members(raw, func(k string, _ []byte) error {
		folded := strings.ToLower(k)
		if slices.Contains(seen, folded) {
			return invalidf("%s has the key %q more than once (keys are compared without case)", where, clip(k))
		}
		seen = append(seen, folded)
		for _, w := range want {
			if strings.EqualFold(k, w) && k != w {
				return invalidf("%s key %q must be spelled %q", where, clip(k), w)
			}
		}
		return nil
	})
	if errors.Is(err, errKeyUnreadable) {
		return exactKeysDecoder(raw, where, want...)
	}
	return err
}

// errKeyUnreadable: members could not read a key (not valid JSON after all).
var errKeyUnreadable = errors.New("x402: unreadable JSON key")

// members calls f with each member of the JSON object raw, in order: its
// key as encoding/json reads it (escapes decoded) and its value's bytes.
// raw must be valid JSON; a value that is not an object has no members.
// An error from f stops the walk and is returned.
func members(raw []byte, f func(k string, v []byte) error) error {
	i := skipSpace(raw, 0)
	if i >= len(raw) || raw[i] != '{' {
		return nil
	}
	i = skipSpace(raw, i+1)
	for i < len(raw) && raw[i] == '"' {
		end := stringEnd(raw, i)
		k := string(raw[i+1 : end-1])
		if strings.ContainsFunc(k, func(r rune) bool { return r == '\\' || r >= utf8.RuneSelf }) {
			// Escapes or non-ASCII: the key as encoding/json reads it.
			if err := json.Unmarshal(raw[i:end], &k); err != nil {
				return errKeyUnreadable
			}
		}
		i = skipSpace(raw, end)
		i = skipSpace(raw, i+1) // the colon
		vEnd := valueEnd(raw, i)
		if err := f(k, raw[i:vEnd]); err != nil {
			return err
		}
		i = skipSpace(raw, vEnd)
		if i < len(raw) && raw[i] == ',' {
			i = skipSpace(raw, i+1)
		}
	}
	return nil
}

// member returns the value of the member of the valid JSON object raw whose
// key reads exactly as key (the last one, as encoding/json does), or nil.
func member(raw []byte, key string) json.RawMessage {
	var v json.RawMessage
	_ = members(raw, func(k string, val []byte) error {
		if k == key {
			v = val
		}
		return nil
	})
	return v
}

// skipSpace returns the index of the first byte at or after i in the
// valid JSON raw that is not insignificant whitespace.
func skipSpace(raw []byte, i int) int {
	for i < len(raw) && (raw[i] == ' ' || raw[i] == '\t' || raw[i] == '\n' || raw[i] == '\r') {
		i++
	}
	return i
}

// stringEnd returns the index just past the string that starts at i in
// the valid JSON raw.
func stringEnd(raw []byte, i int) int {
	for i++; i < len(raw); i++ {
		switch raw[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return i
}

// valueEnd returns the index just past the value that starts at i in the
// valid JSON raw.
func valueEnd(raw []byte, i int) int {
	if i >= len(raw) {
		return i
	}
	switch raw[i] {
	case '"':
		return stringEnd(raw, i)
	case '{', '[':
		depth := 0
		for ; i < len(raw); i++ {
			switch raw[i] {
			case '"':
				i = stringEnd(raw, i) - 1
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return i + 1
				}
			}
		}
		return i
	}
	// A number, true, false or null.
	for i < len(raw) && !strings.ContainsRune(" \t\n\r,]}", rune(raw[i])) {
		i++
	}
	return i
}

// exactKeysDecoder is exactKeys by way of a json.Decoder, for input that
// is not valid JSON (its errors say where it breaks).
func exactKeysDecoder(raw json.RawMessage, where string, want ...string) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	tok, err := dec.Token()
	if err != nil || tok != json.Delim('{') {
		return nil // not an object: the typed decoding reports it
	}
	seen := make(map[string]bool, len(want))
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return invalidf("bad JSON in %s: %v", where, err)
		}
		k, _ := tok.(string)
		folded := strings.ToLower(k)
		if seen[folded] {
			return invalidf("%s has the key %q more than once (keys are compared without case)", where, clip(k))
		}
		seen[folded] = true
		for _, w := range want {
			if strings.EqualFold(k, w) && k != w {
				return invalidf("%s key %q must be spelled %q", where, clip(k), w)
			}
		}
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return invalidf("bad JSON in %s: %v", where, err)
		}
	}
	return nil
}

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidPayment, fmt.Sprintf(format, args...))
}

// clip shortens untrusted text quoted in error messages.
func clip(s string) string {
	const n = 80
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// compactJSON returns raw without insignificant whitespace, or raw itself
// when it cannot be compacted.
func compactJSON(raw []byte) json.RawMessage {
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return append(json.RawMessage(nil), raw...)
	}
	return buf.Bytes()
}
