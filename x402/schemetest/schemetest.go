// Package schemetest is the conformance suite every x402.Scheme passes:
// exact over EIP-3009, exact over Permit2, upto, and whatever a gateway adds.
// A scheme is a new type plus a run of this suite:
//
//	func TestConformance(t *testing.T) {
//		schemetest.Run(t, func(t *testing.T) schemetest.Target {
//			return schemetest.Target{Scheme: myscheme.New(), Offer: offer, Pay: sign}
//		})
//	}
package schemetest

import (
	"encoding/json"
	"errors"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/shopspring/decimal"
	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/x402"
)

// Target is one scheme under test and what the suite needs to pay it.
type Target struct {
	// Scheme is the scheme under test.
	Scheme x402.Scheme
	// Offer is a valid offer on a test network; the suite varies its
	// payTo and prices.
	Offer x402.Offer
	// Pay signs a fresh payment (a new nonce each call) for req, valid from
	// signedAt for validFor, as a real client would, and returns it decoded
	// (x402.ParsePaymentPayload of the wire JSON).
	Pay func(t testing.TB, req x402.Requirement, signedAt time.Time, validFor time.Duration) *x402.Payment
}

var schemeName = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,31}$`)

// Run runs the suite; newTarget is called once per subtest.
func Run(t *testing.T, newTarget func(t *testing.T) Target) {
	t.Run("Name", func(t *testing.T) {
		tg := newTarget(t)
		require.Regexp(t, schemeName, tg.Scheme.Name())
	})
	t.Run("RequirementFromOffer", func(t *testing.T) { testRequirement(t, newTarget(t)) })
	t.Run("ClaimsItsOwnEntryOnly", func(t *testing.T) { testClaims(t, newTarget(t)) })
	t.Run("CheckValid", func(t *testing.T) { testValid(t, newTarget(t)) })
	t.Run("IdentityStableAcrossEncodings", func(t *testing.T) { testReencoding(t, newTarget(t)) })
	t.Run("DistinctPaymentsDistinctIdentities", func(t *testing.T) { testDistinct(t, newTarget(t)) })
	t.Run("MismatchedRequirement", func(t *testing.T) { testMismatch(t, newTarget(t)) })
	t.Run("Expired", func(t *testing.T) { testExpired(t, newTarget(t)) })
	t.Run("UndecodablePayload", func(t *testing.T) { testGarbage(t, newTarget(t)) })
	t.Run("ConcurrentChecks", func(t *testing.T) { testConcurrent(t, newTarget(t)) })
}

func requirement(t *testing.T, tg Target) x402.Requirement {
	t.Helper()
	req, err := tg.Scheme.Requirement(tg.Offer)
	require.NoError(t, err)
	return req
}

func testRequirement(t *testing.T, tg Target) {
	req := requirement(t, tg)
	require.NoError(t, req.Validate())
	nw, err := x402.LookupNetwork(tg.Offer.Network)
	require.NoError(t, err)
	price := tg.Offer.Price
	if tg.Scheme.Pricing() != x402.PricingFixed && tg.Offer.MaxPrice.IsPositive() {
		price = tg.Offer.MaxPrice
	}
	want, err := x402.ToAtomicUnits(price, nw.USDC.Decimals)
	require.NoError(t, err)
	require.Equal(t, want, req.Amount, "a fixed scheme asks the price, the others the maximum")
	require.Equal(t, nw.ID, x402.NormalizeNetwork(req.Network))
	require.Equal(t, tg.Offer.PayTo, req.PayTo)
	require.Equal(t, tg.Offer.Resource.URL, req.Resource.URL)
	require.Positive(t, req.MaxTimeoutSeconds)

	bad := tg.Offer
	bad.PayTo = "not-an-address"
	_, err = tg.Scheme.Requirement(bad)
	require.Error(t, err, "an offer with a bad payTo builds no requirement")
}

func testClaims(t *testing.T, tg Target) {
	req := requirement(t, tg)
	require.True(t, tg.Scheme.Claims(req))
	other := req
	other.Scheme = "not-" + req.Scheme
	require.False(t, tg.Scheme.Claims(other))
	p := tg.Pay(t, req, time.Now(), time.Minute)
	require.True(t, tg.Scheme.Claims(p.Accepted), "a real client's chosen entry is claimed")
}

func testValid(t *testing.T, tg Target) {
	req := requirement(t, tg)
	now := time.Now()
	p := tg.Pay(t, req, now, time.Minute)
	g, err := tg.Scheme.Check(p, req, now)
	require.NoError(t, err)
	require.NotEmpty(t, g.ID)
	require.NotEmpty(t, g.Payer)
	require.NotEmpty(t, g.Amount)
	require.NotEmpty(t, g.Signed)
	if !g.ValidBefore.IsZero() {
		require.True(t, g.ValidBefore.After(now))
	}
	require.NotEmpty(t, x402.IdempotencyKeyFor(p, nil, g.ID))
}

func testReencoding(t *testing.T, tg Target) {
	req := requirement(t, tg)
	now := time.Now()
	p := tg.Pay(t, req, now, time.Minute)
	g, err := tg.Scheme.Check(p, req, now)
	require.NoError(t, err)
	// Decoding into a map and encoding again sorts the keys: the same
	// payment, spelled differently.
	var m map[string]any
	require.NoError(t, json.Unmarshal(p.Raw, &m))
	raw, err := json.Marshal(m)
	require.NoError(t, err)
	again, err := x402.ParsePaymentPayload(raw)
	require.NoError(t, err)
	g2, err := tg.Scheme.Check(again, req, now)
	require.NoError(t, err)
	require.Equal(t, g.ID, g2.ID)
	require.Equal(t, x402.FingerprintGrant("GET", "/x", p, g), x402.FingerprintGrant("GET", "/x", again, g2))
}

func testDistinct(t *testing.T, tg Target) {
	req := requirement(t, tg)
	now := time.Now()
	seen := map[string]bool{}
	fps := map[string]bool{}
	for i := 0; i < 5; i++ {
		p := tg.Pay(t, req, now, time.Minute)
		g, err := tg.Scheme.Check(p, req, now)
		require.NoError(t, err)
		require.False(t, seen[g.ID], "two payments share an identity")
		seen[g.ID] = true
		fp := x402.FingerprintGrant("GET", "/x", p, g)
		require.False(t, fps[fp])
		fps[fp] = true
	}
}

func testMismatch(t *testing.T, tg Target) {
	req := requirement(t, tg)
	now := time.Now()
	p := tg.Pay(t, req, now, time.Minute)

	otherPayTo := tg.Offer
	otherPayTo.PayTo = "0x1111111111111111111111111111111111111111"
	dearer := tg.Offer
	dearer.Price = tg.Offer.Price.Mul(x402Ten)
	dearer.MaxPrice = tg.Offer.MaxPrice.Mul(x402Ten)
	for name, o := range map[string]x402.Offer{"payTo": otherPayTo, "amount": dearer} {
		server, err := tg.Scheme.Requirement(o)
		require.NoError(t, err)
		_, err = tg.Scheme.Check(p, server, now)
		require.ErrorIs(t, err, x402.ErrRequirementMismatch, name)
	}
}

func testExpired(t *testing.T, tg Target) {
	req := requirement(t, tg)
	now := time.Now()
	p := tg.Pay(t, req, now.Add(-2*time.Hour), time.Minute)
	_, err := tg.Scheme.Check(p, req, now)
	require.ErrorIs(t, err, x402.ErrRequirementMismatch, "an authorization past its validity is refused without a facilitator")
}

func testGarbage(t *testing.T, tg Target) {
	req := requirement(t, tg)
	p := tg.Pay(t, req, time.Now(), time.Minute)
	var m map[string]any
	require.NoError(t, json.Unmarshal(p.Raw, &m))
	for _, payload := range []any{map[string]any{"x": 1}, map[string]any{"signature": "0x12"}} {
		m["payload"] = payload
		raw, err := json.Marshal(m)
		require.NoError(t, err)
		bad, err := x402.ParsePaymentPayload(raw)
		if err != nil {
			require.ErrorIs(t, err, x402.ErrInvalidPayment)
			continue
		}
		_, err = tg.Scheme.Check(bad, req, time.Now())
		require.Error(t, err)
		require.True(t, errors.Is(err, x402.ErrInvalidPayment), "an undecodable payload is 400 invalid_payment: %v", err)
	}
}

func testConcurrent(t *testing.T, tg Target) {
	req := requirement(t, tg)
	now := time.Now()
	p := tg.Pay(t, req, now, time.Minute)
	want, err := tg.Scheme.Check(p, req, now)
	require.NoError(t, err)
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := 0; i < 64; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			g, err := tg.Scheme.Check(p, req, now)
			if err == nil && g.ID != want.ID {
				err = errors.New("a different identity under concurrency")
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
}

var x402Ten = decimal.NewFromInt(10)
