// Package facilitatortest is the conformance suite of the x402.Facilitator
// port for the exact scheme over EIP-3009. Every facilitator runs it: the
// local facilitator in process and over HTTP behind
// x402.FacilitatorClient, and any other implementation of the port.
//
//	func TestConformance(t *testing.T) {
//		facilitatortest.Run(t, func(t *testing.T) facilitatortest.Target {
//			f, _ := localfacilitator.New(localfacilitator.Config{})
//			payer, _ := localfacilitator.GenerateSigner()
//			return facilitatortest.Target{Facilitator: f, Payer: payer,
//				Network: "eip155:84532", PayTo: "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"}
//		})
//	}
//
// Each case gets a fresh Target and signs its own payments with
// Target.Payer (in both protocol versions), so it starts with no nonce
// spent. The suite checks the port's contract: a well-formed answer comes
// with a nil error whatever it says; a valid payment verifies and settles
// once; a spent authorization is refused by Verify and Settle
// (invalid_exact_evm_payload_authorization_nonce_used), also under 50
// concurrent settles, of which exactly one succeeds; a payment to another
// recipient, of another amount, outside its validity window, with a bad
// signature or signed by someone else is isValid false with the reason the
// x402 specification names; a refused settlement spends nothing;
// Supported lists the network in both versions; and a facilitator that
// cannot answer says so with x402.ErrFacilitatorUnavailable.
package facilitatortest

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shopspring/decimal"
	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/x402"
	"github.com/402claw/dispatcher/x402/localfacilitator"
)

// Target is one facilitator under test and what the suite needs to pay it.
type Target struct {
	// Facilitator is the facilitator under test, with no nonce of Payer
	// spent yet.
	Facilitator x402.Facilitator
	// Payer signs the suite's payments.
	Payer *localfacilitator.Signer
	// Network is a network the facilitator accepts (a CAIP-2 id or a
	// version 1 name from the x402 network table); the suite pays that
	// network's USDC.
	Network string
	// PayTo is the recipient of the suite's requirements.
	PayTo string
	// Now is the facilitator's clock, which the suite signs against
	// (nil: time.Now).
	Now func() time.Time
	// Fail, when set, makes the facilitator unable to answer (its nonce
	// store failing, say) until the returned restore is called. The
	// Unavailable case then checks that Verify and Settle report
	// x402.ErrFacilitatorUnavailable, never a verdict, and spend nothing;
	// without Fail that case is skipped, saying so.
	Fail func() (restore func())
}

// NewTarget returns a fresh Target for one subtest.
type NewTarget func(t *testing.T) Target

// Versions are the protocol versions every case runs in.
var Versions = []int{x402.Version2, x402.Version1}

// Price is the price of the suite's requirements, in USD.
var Price = decimal.RequireFromString("0.01")

// Concurrency is how many goroutines settle one authorization at once.
const Concurrency = 50

var txHashRE = regexp.MustCompile(`^0x[0-9a-fA-F]{64}$`)

// Run runs the whole suite.
func Run(t *testing.T, newTarget NewTarget) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(t *testing.T, e *env)
	}{
		{"VerifyValid", testVerifyValid},
		{"VerifySpendsNothing", testVerifySpendsNothing},
		{"SettleOnce", testSettleOnce},
		{"SettleSameAuthorizationOtherEnvelope", testOtherEnvelope},
		{"VerifyUsedNonce", testVerifyUsedNonce},
		{"WrongRecipient", testWrongRecipient},
		{"WrongAmount", testWrongAmount},
		{"WrongAsset", testWrongAsset},
		{"Expired", testExpired},
		{"NotYetValid", testNotYetValid},
		{"BadSignature", testBadSignature},
		{"AnotherSigner", testAnotherSigner},
		{"RefusedSettleSpendsNothing", testRefusedSettleSpendsNothing},
		{"ManyNoncesSettleIndependently", testManyNonces},
		{"ConcurrentSettleOneWinner", testConcurrentSettle},
		{"Supported", testSupported},
		{"Unavailable", testUnavailable},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, v := range Versions {
				t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
					tg := newTarget(t)
					require.NotNil(t, tg.Facilitator, "Target.Facilitator")
					require.NotNil(t, tg.Payer, "Target.Payer")
					e := &env{Target: tg, version: v}
					if e.Now == nil {
						e.Now = time.Now
					}
					tc.fn(t, e)
				})
			}
		})
	}
}

// env is one case's target and protocol version.
type env struct {
	Target
	version int
}

// requirement is the server's requirement: Price in the network's USDC
// to PayTo.
func (e *env) requirement(t testing.TB) x402.Requirement {
	t.Helper()
	r, err := x402.NewRequirement(x402.RequirementParams{
		Network:     e.Network,
		Price:       Price,
		PayTo:       e.PayTo,
		Resource:    "https://api.example/t/acme/rows",
		Description: "conformance",
		MimeType:    "application/json",
	})
	require.NoError(t, err)
	return r
}

// sign has Payer sign a payment for r at the facilitator's time.
func (e *env) sign(t testing.TB, r x402.Requirement, opts localfacilitator.SignOptions) *x402.Payment {
	t.Helper()
	if opts.Now.IsZero() {
		opts.Now = e.Now()
	}
	sp, err := e.Payer.Sign(r, e.version, opts)
	require.NoError(t, err)
	return e.decode(t, sp.JSON)
}

// decode parses payment JSON as a facilitator receives it.
func (e *env) decode(t testing.TB, raw []byte) *x402.Payment {
	t.Helper()
	p, err := x402.ParsePaymentPayload(raw)
	require.NoError(t, err)
	require.Equal(t, e.version, p.Version)
	return p
}

// envelope wraps an authorization and signature in the payment of e's
// version for r, as a client would send it: the suite's way to send
// payments the Signer would not make.
func (e *env) envelope(t testing.TB, r x402.Requirement, auth x402.Authorization, sig string) *x402.Payment {
	t.Helper()
	payload, err := json.Marshal(x402.ExactEVMPayload{Authorization: auth, Signature: sig})
	require.NoError(t, err)
	var raw []byte
	if e.version == x402.Version2 {
		res := r.Resource
		raw, err = json.Marshal(x402.PaymentPayload{X402Version: x402.Version2, Payload: payload, Resource: &res, Accepted: r.V2()})
	} else {
		raw, err = json.Marshal(x402.PaymentPayloadV1{X402Version: x402.Version1, Scheme: r.Scheme, Network: x402.V1NetworkName(r.Network), Payload: payload})
	}
	require.NoError(t, err)
	return e.decode(t, raw)
}

func (e *env) verify(t testing.TB, p *x402.Payment, r x402.Requirement) *x402.VerifyResponse {
	t.Helper()
	vr, err := e.Facilitator.Verify(context.Background(), x402.FacilitatorRequest{Payment: p, Requirement: r})
	require.NoError(t, err, "a verdict is an answer, not an error")
	require.NotNil(t, vr)
	requireRoundTrip(t, vr, x402.ParseVerifyResponse)
	return vr
}

func (e *env) settle(t testing.TB, p *x402.Payment, r x402.Requirement) *x402.SettleResponse {
	t.Helper()
	sr, err := e.Facilitator.Settle(context.Background(), x402.FacilitatorRequest{Payment: p, Requirement: r})
	require.NoError(t, err, "a settlement outcome is an answer, not an error")
	require.NotNil(t, sr)
	requireRoundTrip(t, sr, x402.ParseSettleResponse)
	return sr
}

// requireRoundTrip checks that an answer survives its own wire encoding:
// what a facilitator answers in process is what it would answer over HTTP.
func requireRoundTrip[T any](t testing.TB, v *T, parse func([]byte) (*T, error)) {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	back, err := parse(b)
	require.NoError(t, err, "answer %s", b)
	again, err := json.Marshal(back)
	require.NoError(t, err)
	require.JSONEq(t, string(b), string(again), "the answer reads back as itself")
}

// requireValid checks a positive verdict for p.
func (e *env) requireValid(t testing.TB, vr *x402.VerifyResponse, p *x402.Payment) {
	t.Helper()
	require.True(t, vr.IsValid, "invalid: %s", vr.InvalidReason)
	require.Empty(t, vr.InvalidReason)
	require.True(t, strings.EqualFold(e.Payer.Address(), vr.Payer), "payer %q, want %q", vr.Payer, e.Payer.Address())
}

// requireInvalid checks a negative verdict, with the reason when want is
// set (otherwise any reason).
func requireInvalid(t testing.TB, vr *x402.VerifyResponse, want string) {
	t.Helper()
	require.False(t, vr.IsValid)
	require.NotEmpty(t, vr.InvalidReason, "a refusal says why")
	if want != "" {
		require.Equal(t, want, vr.InvalidReason)
	}
}

// requireSettled checks a successful settlement of p.
func (e *env) requireSettled(t testing.TB, sr *x402.SettleResponse, r x402.Requirement) {
	t.Helper()
	require.True(t, sr.Success, "settlement failed: %s", sr.ErrorReason)
	require.Equal(t, x402.SettleSucceeded, sr.Outcome())
	require.Empty(t, sr.ErrorReason)
	require.Regexp(t, txHashRE, sr.Transaction)
	require.True(t, strings.EqualFold(e.Payer.Address(), sr.Payer), "payer %q", sr.Payer)
	require.Equal(t, x402.NetworkForVersion(r.Network, e.version), sr.Network, "the network is spelled as the payment's version spells it")
}

// requireRefused checks a failed (not pending) settlement with the reason
// when want is set.
func requireRefused(t testing.TB, sr *x402.SettleResponse, want string) {
	t.Helper()
	require.False(t, sr.Success)
	require.Equal(t, x402.SettleFailed, sr.Outcome(), "a refusal is a failure, not pending")
	require.Empty(t, sr.Transaction, "a refused settlement has no transaction")
	require.NotEmpty(t, sr.ErrorReason, "a refusal says why")
	if want != "" {
		require.Equal(t, want, sr.ErrorReason)
	}
}

func testVerifyValid(t *testing.T, e *env) {
	r := e.requirement(t)
	p := e.sign(t, r, localfacilitator.SignOptions{})
	e.requireValid(t, e.verify(t, p, r), p)
}

func testVerifySpendsNothing(t *testing.T, e *env) {
	r := e.requirement(t)
	p := e.sign(t, r, localfacilitator.SignOptions{})
	for range 3 {
		e.requireValid(t, e.verify(t, p, r), p)
	}
	e.requireSettled(t, e.settle(t, p, r), r)
}

func testSettleOnce(t *testing.T, e *env) {
	r := e.requirement(t)
	p := e.sign(t, r, localfacilitator.SignOptions{})
	first := e.settle(t, p, r)
	e.requireSettled(t, first, r)
	for range 2 {
		requireRefused(t, e.settle(t, p, r), x402.ReasonNonceUsed)
	}
	// The same authorization, decoded afresh (a client resending it), is
	// the same spent nonce.
	requireRefused(t, e.settle(t, e.decode(t, p.Raw), r), x402.ReasonNonceUsed)
}

// testOtherEnvelope: one signed authorization sent in the other protocol
// version's envelope is the same authorization, already spent.
func testOtherEnvelope(t *testing.T, e *env) {
	r := e.requirement(t)
	now := e.Now()
	after, before := now.Add(-10*time.Minute), now.Add(5*time.Minute)
	opts := localfacilitator.SignOptions{Nonce: "0x" + strings.Repeat("5a", 32), ValidAfter: &after, ValidBefore: &before}
	p := e.sign(t, r, opts)
	e.requireSettled(t, e.settle(t, p, r), r)

	other := &env{Target: e.Target, version: x402.Version1}
	if e.version == x402.Version1 {
		other.version = x402.Version2
	}
	q := other.sign(t, r, opts)
	require.Equal(t, p.Authorization, q.Authorization, "the same authorization in both envelopes")
	require.Equal(t, p.Signature, q.Signature)
	requireInvalid(t, other.verify(t, q, r), x402.ReasonNonceUsed)
	requireRefused(t, other.settle(t, q, r), x402.ReasonNonceUsed)
}

func testVerifyUsedNonce(t *testing.T, e *env) {
	r := e.requirement(t)
	p := e.sign(t, r, localfacilitator.SignOptions{})
	e.requireSettled(t, e.settle(t, p, r), r)
	vr := e.verify(t, p, r)
	requireInvalid(t, vr, x402.ReasonNonceUsed)
}

// otherAddress is a recipient that is not PayTo.
const otherAddress = "0x000000000000000000000000000000000000dEaD"

func testWrongRecipient(t *testing.T, e *env) {
	server := e.requirement(t)
	paid := server
	paid.PayTo = otherAddress
	p := e.sign(t, paid, localfacilitator.SignOptions{})
	requireInvalid(t, e.verify(t, p, server), x402.ReasonRecipientMismatch)
	requireRefused(t, e.settle(t, p, server), x402.ReasonRecipientMismatch)
}

func testWrongAmount(t *testing.T, e *env) {
	server := e.requirement(t)
	for _, amount := range []string{"9999", "10001", "1"} {
		paid := server
		paid.Amount = amount
		p := e.sign(t, paid, localfacilitator.SignOptions{})
		requireInvalid(t, e.verify(t, p, server), x402.ReasonInvalidValue)
		requireRefused(t, e.settle(t, p, server), x402.ReasonInvalidValue)
	}
}

// testWrongAsset: an authorization signed for another token contract
// does not pay in the server's asset.
func testWrongAsset(t *testing.T, e *env) {
	server := e.requirement(t)
	paid := server
	paid.Asset = "0x1111111111111111111111111111111111111111"
	p := e.sign(t, paid, localfacilitator.SignOptions{})
	requireInvalid(t, e.verify(t, p, server), "")
	requireRefused(t, e.settle(t, p, server), "")
}

func testExpired(t *testing.T, e *env) {
	r := e.requirement(t)
	now := e.Now()
	for _, before := range []time.Time{now.Add(-time.Minute), now.Truncate(time.Second)} {
		after := now.Add(-time.Hour)
		p := e.sign(t, r, localfacilitator.SignOptions{ValidAfter: &after, ValidBefore: &before})
		requireInvalid(t, e.verify(t, p, r), x402.ReasonValidBefore)
		requireRefused(t, e.settle(t, p, r), x402.ReasonValidBefore)
	}
}

func testNotYetValid(t *testing.T, e *env) {
	r := e.requirement(t)
	now := e.Now()
	after, before := now.Add(time.Hour), now.Add(2*time.Hour)
	p := e.sign(t, r, localfacilitator.SignOptions{ValidAfter: &after, ValidBefore: &before})
	requireInvalid(t, e.verify(t, p, r), x402.ReasonValidAfter)
	requireRefused(t, e.settle(t, p, r), x402.ReasonValidAfter)
}

// testBadSignature: a signature that does not recover to the payer, from
// corrupted bytes or from signing other values than those sent.
func testBadSignature(t *testing.T, e *env) {
	r := e.requirement(t)
	good := e.sign(t, r, localfacilitator.SignOptions{})
	sig := []byte(good.Signature)
	// Flip one hex digit of r (bytes 0-31 of the signature).
	if sig[10] == 'a' {
		sig[10] = 'b'
	} else {
		sig[10] = 'a'
	}
	corrupted := e.envelope(t, r, good.Authorization, string(sig))

	// A valid signature over a different validBefore than the one sent.
	auth := good.Authorization
	auth.ValidBefore = fmt.Sprint(e.Now().Add(3 * time.Minute).Unix())
	other, err := e.Payer.SignAuthorization(r, auth)
	require.NoError(t, err)
	swapped := e.envelope(t, r, good.Authorization, other)

	// A signature made in another chain's domain.
	elsewhere := r
	elsewhere.Network = "eip155:8453"
	if x402.NormalizeNetwork(r.Network) == "eip155:8453" {
		elsewhere.Network = "eip155:84532"
	}
	foreign, err := e.Payer.SignAuthorization(elsewhere, good.Authorization)
	require.NoError(t, err)
	crossChain := e.envelope(t, r, good.Authorization, foreign)

	for name, p := range map[string]*x402.Payment{"corrupted": corrupted, "other values": swapped, "other chain": crossChain} {
		t.Run(name, func(t *testing.T) {
			requireInvalid(t, e.verify(t, p, r), x402.ReasonInvalidSignature)
			requireRefused(t, e.settle(t, p, r), x402.ReasonInvalidSignature)
		})
	}
	// None of this spent the payer's authorization.
	e.requireSettled(t, e.settle(t, good, r), r)
}

// testAnotherSigner: someone else signs an authorization naming the payer
// as from.
func testAnotherSigner(t *testing.T, e *env) {
	r := e.requirement(t)
	good := e.sign(t, r, localfacilitator.SignOptions{})
	thief, err := localfacilitator.GenerateSigner()
	require.NoError(t, err)
	sig, err := thief.SignAuthorization(r, good.Authorization)
	require.NoError(t, err)
	p := e.envelope(t, r, good.Authorization, sig)
	requireInvalid(t, e.verify(t, p, r), x402.ReasonInvalidSignature)
	requireRefused(t, e.settle(t, p, r), x402.ReasonInvalidSignature)
	e.requireSettled(t, e.settle(t, good, r), r)
}

// testRefusedSettleSpendsNothing: a settlement refused for any reason
// leaves the nonce unspent, so the payer's valid authorization with that
// nonce still settles.
func testRefusedSettleSpendsNothing(t *testing.T, e *env) {
	r := e.requirement(t)
	nonce := "0x" + strings.Repeat("c3", 32)
	now := e.Now()
	past := now.Add(-time.Minute)
	early, late := now.Add(-time.Hour), now.Add(5*time.Minute)
	expired := e.sign(t, r, localfacilitator.SignOptions{Nonce: nonce, ValidAfter: &early, ValidBefore: &past})
	requireRefused(t, e.settle(t, expired, r), x402.ReasonValidBefore)
	wrong := r
	wrong.Amount = "1"
	cheap := e.sign(t, wrong, localfacilitator.SignOptions{Nonce: nonce})
	requireRefused(t, e.settle(t, cheap, r), x402.ReasonInvalidValue)

	p := e.sign(t, r, localfacilitator.SignOptions{Nonce: nonce, ValidAfter: &early, ValidBefore: &late})
	e.requireValid(t, e.verify(t, p, r), p)
	e.requireSettled(t, e.settle(t, p, r), r)
}

func testManyNonces(t *testing.T, e *env) {
	r := e.requirement(t)
	seen := make(map[string]bool)
	for range 10 {
		p := e.sign(t, r, localfacilitator.SignOptions{})
		sr := e.settle(t, p, r)
		e.requireSettled(t, sr, r)
		require.False(t, seen[sr.Transaction], "each settlement has its own transaction")
		seen[sr.Transaction] = true
	}
}

// testConcurrentSettle: Concurrency goroutines settle one authorization at
// once; exactly one succeeds and every other is refused as spent.
func testConcurrentSettle(t *testing.T, e *env) {
	r := e.requirement(t)
	p := e.sign(t, r, localfacilitator.SignOptions{})
	req := x402.FacilitatorRequest{Payment: p, Requirement: r}
	results := make([]*x402.SettleResponse, Concurrency)
	errs := make([]error, Concurrency)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range Concurrency {
		wg.Go(func() {
			<-start
			results[i], errs[i] = e.Facilitator.Settle(context.Background(), req)
		})
	}
	close(start)
	wg.Wait()
	wins := 0
	for i := range Concurrency {
		require.NoError(t, errs[i])
		require.NotNil(t, results[i])
		if results[i].Success {
			wins++
			e.requireSettled(t, results[i], r)
			continue
		}
		requireRefused(t, results[i], x402.ReasonNonceUsed)
	}
	require.Equal(t, 1, wins, "exactly one of %d concurrent settlements succeeds", Concurrency)
	requireInvalid(t, e.verify(t, p, r), x402.ReasonNonceUsed)
}

func testSupported(t *testing.T, e *env) {
	sr, err := e.Facilitator.Supported(context.Background())
	require.NoError(t, err)
	require.NotNil(t, sr)
	requireRoundTrip(t, sr, x402.ParseSupportedResponse)
	want := x402.SupportedKind{X402Version: e.version, Scheme: x402.SchemeExact, Network: x402.NetworkForVersion(x402.NormalizeNetwork(e.Network), e.version)}
	found := false
	for _, k := range sr.Kinds {
		require.Contains(t, []int{x402.Version1, x402.Version2}, k.X402Version, "kind %+v", k)
		require.NotEmpty(t, k.Scheme, "kind %+v", k)
		require.NotEmpty(t, k.Network, "kind %+v", k)
		if k.X402Version == x402.Version2 {
			require.Contains(t, k.Network, ":", "a version 2 network is a CAIP-2 id: %+v", k)
		}
		if k.X402Version == want.X402Version && k.Scheme == want.Scheme && k.Network == want.Network {
			found = true
		}
	}
	require.True(t, found, "Supported lists %+v; got %+v", want, sr.Kinds)
}

// testUnavailable: a facilitator that cannot answer returns an error
// wrapping x402.ErrFacilitatorUnavailable and no verdict, and spends
// nothing: once it recovers, the same payment settles.
func testUnavailable(t *testing.T, e *env) {
	if e.Fail == nil {
		t.Skip("the target declares no Fail: it cannot be made unable to answer")
	}
	r := e.requirement(t)
	p := e.sign(t, r, localfacilitator.SignOptions{})
	req := x402.FacilitatorRequest{Payment: p, Requirement: r}
	restore := e.Fail()
	vr, err := e.Facilitator.Verify(context.Background(), req)
	require.ErrorIs(t, err, x402.ErrFacilitatorUnavailable)
	require.Nil(t, vr, "no verdict comes with an error")
	sr, err := e.Facilitator.Settle(context.Background(), req)
	require.ErrorIs(t, err, x402.ErrFacilitatorUnavailable)
	require.Nil(t, sr, "no settlement outcome comes with an error")
	restore()
	e.requireValid(t, e.verify(t, p, r), p)
	e.requireSettled(t, e.settle(t, p, r), r)
}
