package x402

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"hash"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// MinIdempotencyTTL is the shortest time an idempotency record lives
// (section 7 of the design: at least 48 hours, and at least until the
// authorization's validBefore).
const MinIdempotencyTTL = 48 * time.Hour

// Idempotency key prefixes. Each source has its own namespace, so a key a
// client chooses can never equal a key derived from someone else's
// authorization.
const (
	// KeyPrefixPaymentID marks a key from the payment-identifier extension.
	KeyPrefixPaymentID = "pid:"
	// KeyPrefixHeader marks a key from X-Payment-Idempotency-Key or
	// Idempotency-Key.
	KeyPrefixHeader = "hdr:"
	// KeyPrefixHeaderHash marks a hashed header key (one too long or with
	// characters outside printable ASCII).
	KeyPrefixHeaderHash = "hdrsha256:"
	// KeyPrefixAuthorization marks a key derived from the authorization.
	KeyPrefixAuthorization = "auth:"
)

// maxHeaderKeyLen bounds a client idempotency key used verbatim.
const maxHeaderKeyLen = 128

// IdempotencyKey returns the idempotency key of a paid request, the first
// present of:
//
//  1. the version 2 payment-identifier extension's info.id ("pid:" + id);
//  2. the X-Payment-Idempotency-Key header, then Idempotency-Key
//     ("hdr:" + value; a value over 128 bytes or with characters outside
//     printable ASCII is hashed instead, "hdrsha256:" + hex);
//  3. a key derived from the authorization: "auth:" + hex SHA-256 of
//     network, asset, payer and nonce (lower-cased, length-prefixed).
//
// The derived key makes the same signed authorization map to the same key
// whatever the envelope (version 1 or 2), so one authorization cannot buy
// two different requests. The key is scoped by the caller (per tenant). A
// nil payment with no header yields "".
func IdempotencyKey(p *Payment, header http.Header) string {
	id := ""
	if p != nil && p.Authorization.Nonce != "" {
		id = AuthorizationID(p)
	}
	return IdempotencyKeyFor(p, header, id)
}

// IdempotencyKeyFor is IdempotencyKey for any scheme: authID is the
// authorization identity the payment's scheme gives (Grant.ID), used for
// the derived key; "" derives none.
func IdempotencyKeyFor(p *Payment, header http.Header, authID string) string {
	if p != nil && p.PaymentID != "" {
		return KeyPrefixPaymentID + p.PaymentID
	}
	for _, name := range [...]string{HeaderPaymentIdempotencyKey, HeaderIdempotencyKey} {
		if v := strings.TrimSpace(header.Get(name)); v != "" {
			if len(v) <= maxHeaderKeyLen && printableASCII(v) {
				return KeyPrefixHeader + v
			}
			sum := sha256.Sum256([]byte(v))
			return KeyPrefixHeaderHash + hex.EncodeToString(sum[:])
		}
	}
	if p == nil || authID == "" {
		return ""
	}
	return KeyPrefixAuthorization + authID
}

// AuthorizationID identifies the signed authorization of a payment: hex
// SHA-256 over its network (CAIP-2), asset, payer and nonce, lower-cased.
// EIP-3009 nonces are unique per token and payer, so this is unique per
// authorization.
func AuthorizationID(p *Payment) string {
	h := sha256.New()
	writeField(h, "x402-authorization-v1")
	writeField(h, NormalizeNetwork(p.Accepted.Network))
	writeField(h, strings.ToLower(p.Accepted.Asset))
	writeField(h, strings.ToLower(p.Payer))
	writeField(h, strings.ToLower(p.Authorization.Nonce))
	return hex.EncodeToString(h.Sum(nil))
}

// Fingerprint returns the hex SHA-256 fingerprint of a request, stored with
// its idempotency key: a request retried with the same key must have the
// same fingerprint. It covers the method (upper-cased), the path and query
// as given, and the payment: version, scheme, network, asset, the
// authorization's fields and the signature (addresses and hex lower-cased,
// numbers canonical). A re-encoding of the same payment (other JSON key
// order, other base64 alphabet) has the same fingerprint; a different
// authorization does not. A nil payment contributes a fixed marker.
func Fingerprint(method, pathAndQuery string, p *Payment) string {
	h := sha256.New()
	writeField(h, "x402-fingerprint-v1")
	writeField(h, strings.ToUpper(method))
	writeField(h, pathAndQuery)
	if p == nil {
		writeField(h, "no-payment")
		return hex.EncodeToString(h.Sum(nil))
	}
	a := p.Authorization
	writeField(h, "payment")
	writeField(h, strconv.Itoa(p.Version))
	writeField(h, p.Accepted.Scheme)
	writeField(h, NormalizeNetwork(p.Accepted.Network))
	writeField(h, strings.ToLower(p.Accepted.Asset))
	writeField(h, strings.ToLower(a.From))
	writeField(h, strings.ToLower(a.To))
	writeField(h, canonicalOrRaw(a.Value))
	writeField(h, canonicalOrRaw(a.ValidAfter))
	writeField(h, canonicalOrRaw(a.ValidBefore))
	writeField(h, strings.ToLower(a.Nonce))
	writeField(h, strings.ToLower(p.Signature))
	return hex.EncodeToString(h.Sum(nil))
}

// MaxIdempotencyTTL bounds every record lifetime: no authorization, however
// far in the future its validity ends, makes a record that never expires.
// (The payment stage refuses authorizations valid much longer than the
// challenge's maxTimeoutSeconds anyway.)
const MaxIdempotencyTTL = 30 * 24 * time.Hour

// IdempotencyTTL returns how long an idempotency record for p must live
// from now: at least minimum, and at least until the authorization's
// validBefore (plus a minute of clock skew), at most MaxIdempotencyTTL
// (or minimum, when that is longer).
func IdempotencyTTL(p *Payment, now time.Time, minimum time.Duration) time.Duration {
	var vb time.Time
	if p != nil {
		vb = p.ValidBefore()
	}
	return TTLUntil(vb, now, minimum)
}

// TTLUntil is IdempotencyTTL for a validity end of any scheme (zero: none).
func TTLUntil(validBefore, now time.Time, minimum time.Duration) time.Duration {
	ttl := minimum
	if !validBefore.IsZero() && validBefore.After(now) {
		if validBefore.After(now.Add(MaxIdempotencyTTL)) {
			return max(MaxIdempotencyTTL, minimum)
		}
		if d := validBefore.Sub(now) + time.Minute; d > ttl {
			ttl = d
		}
	}
	return ttl
}

// writeField writes a length-prefixed field, so that no two field lists
// encode the same bytes.
// FingerprintGrant is Fingerprint for a payment of any scheme: it covers
// the method, the path and query, the payment's version, scheme, network
// and asset, and the signed fields the scheme lists in g.Signed.
func FingerprintGrant(method, pathAndQuery string, p *Payment, g Grant) string {
	h := sha256.New()
	writeField(h, "x402-fingerprint-v2")
	writeField(h, strings.ToUpper(method))
	writeField(h, pathAndQuery)
	writeField(h, strconv.Itoa(p.Version))
	writeField(h, p.Accepted.Scheme)
	writeField(h, NormalizeNetwork(p.Accepted.Network))
	writeField(h, strings.ToLower(p.Accepted.Asset))
	for _, f := range g.Signed {
		writeField(h, f)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func writeField(h hash.Hash, s string) {
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(s)))
	h.Write(n[:])
	h.Write([]byte(s))
}

func canonicalOrRaw(s string) string {
	if c, ok := canonicalUint(s); ok {
		return c
	}
	return s
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}
