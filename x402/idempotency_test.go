package x402_test

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/402claw/dispatcher/x402"
	"github.com/stretchr/testify/require"
)

var hex64 = regexp.MustCompile(`^[0-9a-f]{64}$`)

func TestIdempotencyKeyPrecedence(t *testing.T) {
	t.Parallel()
	v2 := fixtureNamed(t, "client-v2.json").ClientSent.HeaderValue
	plain, err := x402.DecodePaymentHeader(v2)
	require.NoError(t, err)
	withID, err := x402.DecodePaymentHeader(editPayment(t, v2, func(m map[string]any) {
		m["extensions"] = map[string]any{"payment-identifier": map[string]any{"info": map[string]any{"id": "pay_7d5d747be160e280504c099d984bcfe0"}}}
	}))
	require.NoError(t, err)

	both := http.Header{}
	both.Set(x402.HeaderPaymentIdempotencyKey, "client-key-1")
	both.Set(x402.HeaderIdempotencyKey, "generic-key")
	generic := http.Header{}
	generic.Set("idempotency-key", "  generic-key ")

	require.Equal(t, "pid:pay_7d5d747be160e280504c099d984bcfe0", x402.IdempotencyKey(withID, both))
	require.Equal(t, "hdr:client-key-1", x402.IdempotencyKey(plain, both))
	require.Equal(t, "hdr:generic-key", x402.IdempotencyKey(plain, generic))

	derived := x402.IdempotencyKey(plain, http.Header{})
	require.True(t, strings.HasPrefix(derived, "auth:"))
	require.Regexp(t, hex64, strings.TrimPrefix(derived, "auth:"))
	require.Equal(t, "auth:"+x402.AuthorizationID(plain), derived)
	require.Equal(t, derived, x402.IdempotencyKey(plain, nil))

	// Long or unprintable client keys are hashed, never stored raw.
	long := http.Header{}
	long.Set(x402.HeaderPaymentIdempotencyKey, strings.Repeat("k", 129))
	require.Regexp(t, `^hdrsha256:[0-9a-f]{64}$`, x402.IdempotencyKey(plain, long))
	spaced := http.Header{}
	spaced.Set(x402.HeaderPaymentIdempotencyKey, "a b")
	require.Regexp(t, `^hdrsha256:`, x402.IdempotencyKey(plain, spaced))

	// A client cannot pick a header key equal to someone's derived key.
	spoof := http.Header{}
	spoof.Set(x402.HeaderPaymentIdempotencyKey, derived)
	require.NotEqual(t, derived, x402.IdempotencyKey(nil, spoof))

	require.Empty(t, x402.IdempotencyKey(nil, http.Header{}))
}

func TestDerivedKeyIsPerAuthorization(t *testing.T) {
	t.Parallel()
	v2 := fixtureNamed(t, "client-v2.json").ClientSent.HeaderValue
	p, err := x402.DecodePaymentHeader(v2)
	require.NoError(t, err)

	// The same authorization re-wrapped as version 1 has the same key.
	var decoded struct {
		Payload json.RawMessage `json:"payload"`
	}
	raw, _ := base64.StdEncoding.DecodeString(v2)
	require.NoError(t, json.Unmarshal(raw, &decoded))
	v1JSON := `{"x402Version":1,"scheme":"exact","network":"base-sepolia","payload":` + string(decoded.Payload) + `}`
	asV1, err := x402.DecodePaymentHeader(base64.RawURLEncoding.EncodeToString([]byte(v1JSON)))
	require.NoError(t, err)
	require.Equal(t, x402.IdempotencyKey(p, nil), x402.IdempotencyKey(asV1, nil))

	// Case of hex does not matter.
	lower, err := x402.DecodePaymentHeader(editPayment(t, v2, func(m map[string]any) {
		a := authOf(m)
		a["from"] = strings.ToLower(a["from"].(string))
		a["nonce"] = strings.ToUpper(a["nonce"].(string)[2:])
		a["nonce"] = "0x" + a["nonce"].(string)
	}))
	require.NoError(t, err)
	require.Equal(t, x402.IdempotencyKey(p, nil), x402.IdempotencyKey(lower, nil))

	// Another nonce or payer is another key.
	other, err := x402.DecodePaymentHeader(fixtureNamed(t, "client-dual.json").ClientSent.HeaderValue)
	require.NoError(t, err)
	require.NotEqual(t, x402.IdempotencyKey(p, nil), x402.IdempotencyKey(other, nil))
	payer, err := x402.DecodePaymentHeader(editPayment(t, v2, func(m map[string]any) {
		authOf(m)["from"] = "0x1111111111111111111111111111111111111111"
	}))
	require.NoError(t, err)
	require.NotEqual(t, x402.IdempotencyKey(p, nil), x402.IdempotencyKey(payer, nil))
}

func TestFingerprint(t *testing.T) {
	t.Parallel()
	v2 := fixtureNamed(t, "client-v2.json").ClientSent.HeaderValue
	p, err := x402.DecodePaymentHeader(v2)
	require.NoError(t, err)
	fp := x402.Fingerprint("GET", "/t/demo/rows?limit=5", p)
	require.Regexp(t, hex64, fp)
	require.Equal(t, fp, x402.Fingerprint("get", "/t/demo/rows?limit=5", p))

	// Same payment, other encoding (URL-safe base64, reordered JSON).
	raw, _ := base64.StdEncoding.DecodeString(v2)
	var m map[string]any
	require.NoError(t, json.Unmarshal(raw, &m))
	re, _ := json.Marshal(m) // keys sorted: a different byte order
	p2, err := x402.DecodePaymentHeader(base64.RawURLEncoding.EncodeToString(re))
	require.NoError(t, err)
	require.Equal(t, fp, x402.Fingerprint("GET", "/t/demo/rows?limit=5", p2))

	other, err := x402.DecodePaymentHeader(fixtureNamed(t, "client-dual.json").ClientSent.HeaderValue)
	require.NoError(t, err)
	distinct := map[string]bool{
		fp: true,
		x402.Fingerprint("POST", "/t/demo/rows?limit=5", p):    true,
		x402.Fingerprint("GET", "/t/demo/rows?limit=6", p):     true,
		x402.Fingerprint("GET", "/t/demo/rows", p):             true,
		x402.Fingerprint("GET", "/t/demo/rows?limit=5", other): true,
		x402.Fingerprint("GET", "/t/demo/rows?limit=5", nil):   true,
	}
	require.Len(t, distinct, 6)
}

func TestIdempotencyTTL(t *testing.T) {
	t.Parallel()
	p, err := x402.DecodePaymentHeader(fixtureNamed(t, "client-v2.json").ClientSent.HeaderValue)
	require.NoError(t, err)
	signedAt := time.Unix(fixtureNamed(t, "client-v2.json").SignedAtUnix, 0)
	require.Equal(t, x402.MinIdempotencyTTL, x402.IdempotencyTTL(p, signedAt, x402.MinIdempotencyTTL))

	// An authorization valid for a week outlives the 48 h minimum.
	long := *p
	long.Authorization.ValidBefore = "1796166673" // signedAt + 7 days
	got := x402.IdempotencyTTL(&long, signedAt, x402.MinIdempotencyTTL)
	require.Equal(t, 7*24*time.Hour+time.Minute, got)
	require.Equal(t, time.Unix(1796166673, 0).UTC(), long.ValidBefore())
	require.Equal(t, x402.MinIdempotencyTTL, x402.IdempotencyTTL(nil, signedAt, x402.MinIdempotencyTTL))
}

func TestIdempotencyTTLFarFutureNeverOverflows(t *testing.T) {
	now := time.Unix(1_795_561_873, 0)
	for _, vb := range []int64{10_000_000_000, 253_402_300_799} {
		p := &x402.Payment{Authorization: x402.Authorization{ValidBefore: strconv.FormatInt(vb, 10)}}
		require.Equal(t, x402.MaxIdempotencyTTL, x402.IdempotencyTTL(p, now, x402.MinIdempotencyTTL), "however far away: clamped, never kept for good")
	}
	p := &x402.Payment{Authorization: x402.Authorization{ValidBefore: strconv.FormatInt(now.Add(72*time.Hour).Unix(), 10)}}
	require.Equal(t, 72*time.Hour+time.Minute, x402.IdempotencyTTL(p, now, x402.MinIdempotencyTTL))
}
