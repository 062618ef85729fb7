package localfacilitator_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/402claw/dispatcher/kv"
	"github.com/402claw/dispatcher/x402"
	"github.com/402claw/dispatcher/x402/localfacilitator"
	"github.com/402claw/dispatcher/x402/permit2"
	"github.com/402claw/dispatcher/x402/upto"
	"github.com/stretchr/testify/require"
)

// loadPermit2Fixtures reads the real client's exact-permit2 and upto
// payments from testdata/permit2.
func loadPermit2Fixtures(t testing.TB) (exact, up fixture) {
	t.Helper()
	read := func(name string) fixture {
		b, err := os.ReadFile(filepath.Join("testdata", "permit2", name))
		require.NoError(t, err)
		var f fixture
		require.NoError(t, json.Unmarshal(b, &f))
		f.Name = name
		return f
	}
	return read("client-exact-permit2.json"), read("client-upto.json")
}

// permit2Request decodes a fixture's header with the envelope parser and
// pairs it with the server's requirement.
func permit2Request(t testing.TB, f fixture) x402.FacilitatorRequest {
	t.Helper()
	p, err := localfacilitator.DecodePayment(f.ClientSent.HeaderValue)
	require.NoError(t, err)
	return x402.FacilitatorRequest{Payment: p, Requirement: f.requirement()}
}

// withPayload returns a copy of req whose scheme payload is edited by fn
// (on the decoded permit2Authorization) and optionally re-signed by s.
func withPayload(t testing.TB, req x402.FacilitatorRequest, fn func(a map[string]any)) x402.FacilitatorRequest {
	t.Helper()
	var m map[string]any
	require.NoError(t, json.Unmarshal(req.Payment.Payload, &m))
	fn(m["permit2Authorization"].(map[string]any))
	b, err := json.Marshal(m)
	require.NoError(t, err)
	p := *req.Payment
	p.Payload = b
	req.Payment = &p
	return req
}

func TestPermit2FixturesVerifyAndSettle(t *testing.T) {
	t.Parallel()
	exact, up := loadPermit2Fixtures(t)
	for _, f := range []fixture{exact, up} {
		t.Run(f.Name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			fac := newFacilitator(t, f.signedAt(), nil)
			req := permit2Request(t, f)
			require.Empty(t, req.Payment.Payer, "the envelope leaves Payer to the scheme")

			vr, err := fac.Verify(ctx, req)
			require.NoError(t, err)
			require.Equal(t, &x402.VerifyResponse{IsValid: true, Payer: f.Payer}, vr)

			sr, err := fac.Settle(ctx, req)
			require.NoError(t, err)
			require.True(t, sr.Success, sr.ErrorReason)
			require.Regexp(t, txHashRE, sr.Transaction)
			require.Equal(t, localfacilitator.TransactionHash(req), sr.Transaction)
			require.Equal(t, f.Payer, sr.Payer)
			require.Equal(t, "eip155:84532", sr.Network)

			vr, err = fac.Verify(ctx, req)
			require.NoError(t, err)
			require.Equal(t, x402.ReasonNonceUsed, vr.InvalidReason)
			sr, err = fac.Settle(ctx, req)
			require.NoError(t, err)
			require.False(t, sr.Success)
			require.Equal(t, x402.ReasonNonceUsed, sr.ErrorReason)

			// Verify recovered the signer; the settle and the replays
			// were answered from the cache.
			hits, misses := fac.RecoverStats()
			require.Equal(t, uint64(1), misses)
			require.Equal(t, uint64(3), hits)
		})
	}
}

func TestUptoSettlesTheCharge(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, f := loadPermit2Fixtures(t)
	for _, tc := range []struct {
		charge, reason string
		tx             bool
	}{
		{"1858", "", true},
		{"50000", "", true},
		{"0", "", false},
		{"50001", upto.ReasonSettlementExceedsAmount, false},
		{"-1", x402.ReasonInvalidRequirements, false},
	} {
		t.Run(tc.charge, func(t *testing.T) {
			t.Parallel()
			fac := newFacilitator(t, f.signedAt(), nil)
			req := permit2Request(t, f)
			vr, err := fac.Verify(ctx, req)
			require.NoError(t, err)
			require.True(t, vr.IsValid, vr.InvalidReason)

			req.Requirement.Amount = tc.charge
			sr, err := fac.Settle(ctx, req)
			require.NoError(t, err)
			require.Equal(t, tc.reason, sr.ErrorReason)
			require.Equal(t, tc.reason == "", sr.Success)
			require.Equal(t, tc.tx, sr.Transaction != "", sr.Transaction)
			if tc.reason == "" {
				require.Equal(t, tc.charge, sr.Amount, "the settle response carries the charge")
			} else {
				require.Empty(t, sr.Amount)
			}
			if tc.reason == "" {
				// Settled once, whatever the charge.
				sr, err = fac.Settle(ctx, req)
				require.NoError(t, err)
				require.Equal(t, x402.ReasonNonceUsed, sr.ErrorReason)
			}
		})
	}
	// At verify the amount is the maximum: a lower amount is refused.
	fac := newFacilitator(t, f.signedAt(), nil)
	req := permit2Request(t, f)
	req.Requirement.Amount = "1858"
	vr, err := fac.Verify(ctx, req)
	require.NoError(t, err)
	require.Equal(t, permit2.ReasonAmountMismatch, vr.InvalidReason)
}

func TestTamperedPermit2PaymentsAreRefused(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	exact, up := loadPermit2Fixtures(t)
	other, err := localfacilitator.NewSigner("0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba")
	require.NoError(t, err)
	const stranger = "0x1111111111111111111111111111111111111111"
	type tc struct {
		name   string
		now    time.Time
		edit   func(t *testing.T, r *x402.FacilitatorRequest)
		reason string
	}
	payload := func(fn func(a map[string]any)) func(t *testing.T, r *x402.FacilitatorRequest) {
		return func(t *testing.T, r *x402.FacilitatorRequest) { *r = withPayload(t, *r, fn) }
	}
	common := func(f fixture) []tc {
		return []tc{
			{name: "amount raised in the payload only", edit: payload(func(a map[string]any) {
				a["permitted"].(map[string]any)["amount"] = "20000000"
			}), reason: permit2.ReasonAmountMismatch},
			{name: "amount raised everywhere", edit: func(t *testing.T, r *x402.FacilitatorRequest) {
				r.Requirement.Amount = "20000000"
				*r = withPayload(t, *r, func(a map[string]any) { a["permitted"].(map[string]any)["amount"] = "20000000" })
			}, reason: permit2.ReasonInvalidSignature},
			{name: "spender is another contract", edit: payload(func(a map[string]any) { a["spender"] = stranger }), reason: permit2.ReasonInvalidSpender},
			{name: "witness.to differs from payTo", edit: payload(func(a map[string]any) {
				a["witness"].(map[string]any)["to"] = stranger
			}), reason: permit2.ReasonRecipientMismatch},
			{name: "witness.to rewritten everywhere", edit: func(t *testing.T, r *x402.FacilitatorRequest) {
				r.Requirement.PayTo = stranger
				*r = withPayload(t, *r, func(a map[string]any) { a["witness"].(map[string]any)["to"] = stranger })
			}, reason: permit2.ReasonInvalidSignature},
			{name: "deadline extended", edit: payload(func(a map[string]any) { a["deadline"] = "1796229999" }), reason: permit2.ReasonInvalidSignature},
			{name: "deadline passed", now: f.signedAt().Add(time.Minute), reason: permit2.ReasonDeadlineExpired},
			{name: "not yet valid", edit: payload(func(a map[string]any) {
				a["witness"].(map[string]any)["validAfter"] = "1796229700"
			}), reason: permit2.ReasonNotYetValid},
			{name: "token is another asset", edit: func(t *testing.T, r *x402.FacilitatorRequest) {
				r.Requirement.Asset = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
			}, reason: permit2.ReasonTokenMismatch},
			{name: "nonce changed", edit: payload(func(a map[string]any) { a["nonce"] = "1" }), reason: permit2.ReasonInvalidSignature},
			{name: "payer claims to be someone else", edit: payload(func(a map[string]any) { a["from"] = other.Address() }), reason: permit2.ReasonInvalidSignature},
			{name: "other chain", edit: func(t *testing.T, r *x402.FacilitatorRequest) {
				r.Requirement.Network = x402.NetworkBase
				r.Requirement.Asset = "0x036CbD53842c5426634e7929541eC2318f3dCF7e"
				r.Payment.Accepted.Network = x402.NetworkBase
			}, reason: permit2.ReasonInvalidSignature},
			{name: "network differs from the accepted one", edit: func(t *testing.T, r *x402.FacilitatorRequest) {
				r.Requirement.Network = x402.NetworkBase
			}, reason: x402.ReasonInvalidNetwork},
			{name: "malformed payload", edit: func(t *testing.T, r *x402.FacilitatorRequest) {
				p := *r.Payment
				p.Payload = json.RawMessage(`{"signature":"0x","permit2Authorization":{}}`)
				r.Payment = &p
			}, reason: x402.ReasonInvalidPayload},
		}
	}
	exactCases := append(common(exact),
		tc{name: "signed by another key", edit: func(t *testing.T, r *x402.FacilitatorRequest) {
			pl, err := permit2.DecodePayload(r.Payment.Payload)
			require.NoError(t, err)
			sig, err := other.SignPermit2Authorization(r.Requirement.Network, pl.Permit2Authorization)
			require.NoError(t, err)
			*r = withSignature(t, *r, sig)
		}, reason: permit2.ReasonInvalidSignature},
		tc{name: "upto proxy as spender", edit: payload(func(a map[string]any) { a["spender"] = permit2.UptoProxy }), reason: permit2.ReasonInvalidSpender},
	)
	uptoCases := append(common(up),
		tc{name: "signed by another key", edit: func(t *testing.T, r *x402.FacilitatorRequest) {
			pl, err := upto.DecodePayload(r.Payment.Payload)
			require.NoError(t, err)
			sig, err := other.SignUptoAuthorization(r.Requirement.Network, pl.Permit2Authorization)
			require.NoError(t, err)
			*r = withSignature(t, *r, sig)
		}, reason: permit2.ReasonInvalidSignature},
		tc{name: "exact proxy as spender", edit: payload(func(a map[string]any) { a["spender"] = permit2.ExactProxy }), reason: permit2.ReasonInvalidSpender},
		tc{name: "witness.facilitator is another facilitator", edit: payload(func(a map[string]any) {
			a["witness"].(map[string]any)["facilitator"] = stranger
		}), reason: upto.ReasonUnauthorizedFacilitator},
		tc{name: "requirement names another facilitator", edit: func(t *testing.T, r *x402.FacilitatorRequest) {
			r.Requirement.Extra = map[string]any{"name": "USDC", "version": "2", "facilitatorAddress": stranger}
		}, reason: upto.ReasonFacilitatorMismatch},
	)
	for _, set := range []struct {
		f     fixture
		cases []tc
	}{{exact, exactCases}, {up, uptoCases}} {
		for _, c := range set.cases {
			t.Run(set.f.Name+"/"+c.name, func(t *testing.T) {
				t.Parallel()
				now := set.f.signedAt()
				if !c.now.IsZero() {
					now = c.now
				}
				fac := newFacilitator(t, now, nil)
				r := permit2Request(t, set.f)
				if c.edit != nil {
					c.edit(t, &r)
				}
				vr, err := fac.Verify(ctx, r)
				require.NoError(t, err)
				require.False(t, vr.IsValid)
				require.Equal(t, c.reason, vr.InvalidReason)
				sr, err := fac.Settle(ctx, r)
				require.NoError(t, err)
				require.False(t, sr.Success)
				want := c.reason
				if set.f.Name == up.Name && c.name == "amount raised in the payload only" {
					// At settle the upto requirement's amount is the
					// charge, which may be below the signed maximum: the
					// raised maximum is caught by the signature.
					want = permit2.ReasonInvalidSignature
				}
				require.Equal(t, want, sr.ErrorReason)
				require.Empty(t, sr.Transaction)
				// Refused attempts burn nothing: the genuine payment
				// still settles on the same facilitator at signing time.
				if c.now.IsZero() {
					sr, err = fac.Settle(ctx, permit2Request(t, set.f))
					require.NoError(t, err)
					require.True(t, sr.Success, sr.ErrorReason)
				}
			})
		}
	}
}

func withSignature(t testing.TB, r x402.FacilitatorRequest, sig string) x402.FacilitatorRequest {
	t.Helper()
	var m map[string]any
	require.NoError(t, json.Unmarshal(r.Payment.Payload, &m))
	m["signature"] = sig
	b, err := json.Marshal(m)
	require.NoError(t, err)
	p := *r.Payment
	p.Payload = b
	r.Payment = &p
	return r
}

func TestSignerReproducesRealPermit2ClientBytes(t *testing.T) {
	t.Parallel()
	exact, up := loadPermit2Fixtures(t)
	for _, f := range []fixture{exact, up} {
		t.Run(f.Name, func(t *testing.T) {
			t.Parallel()
			s, err := localfacilitator.NewSigner(f.PrivateKey)
			require.NoError(t, err)
			var sent struct {
				Payload struct {
					Permit2Authorization struct {
						Nonce string `json:"nonce"`
					} `json:"permit2Authorization"`
				} `json:"payload"`
			}
			require.NoError(t, json.Unmarshal(f.ClientSent.Decoded, &sent))
			opts := localfacilitator.SignOptions{Now: f.signedAt(), Nonce: sent.Payload.Permit2Authorization.Nonce}
			sp, err := s.Sign(f.requirement(), x402.Version2, opts)
			require.NoError(t, err)
			require.Equal(t, x402.HeaderPaymentSignature, sp.Header)
			// The scheme payload is byte for byte the client's (same
			// signature); the envelope differs only in the order of
			// accepted.extra's keys, which a Go map cannot keep.
			var sentEnvelope struct {
				Payload json.RawMessage `json:"payload"`
			}
			raw, err := base64.StdEncoding.DecodeString(f.ClientSent.HeaderValue)
			require.NoError(t, err)
			require.NoError(t, json.Unmarshal(raw, &sentEnvelope))
			require.Equal(t, string(sentEnvelope.Payload), string(sp.Payload))
			require.JSONEq(t, string(raw), string(sp.JSON))

			_, err = s.Sign(f.requirement(), x402.Version1, opts)
			require.Error(t, err, "Permit2 payments are version 2 only")
		})
	}
}

func TestPermit2AndUptoShareTheNonceSpace(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	exact, up := loadPermit2Fixtures(t)
	s, err := localfacilitator.GenerateSigner()
	require.NoError(t, err)
	now := exact.signedAt()
	fac := newFacilitator(t, now, nil)
	opts := localfacilitator.SignOptions{Now: now, Nonce: "42"}
	settle := func(f fixture) *x402.SettleResponse {
		sp, err := s.Sign(f.requirement(), x402.Version2, opts)
		require.NoError(t, err)
		p, err := localfacilitator.ParsePayment(sp.JSON)
		require.NoError(t, err)
		sr, err := fac.Settle(ctx, x402.FacilitatorRequest{Payment: p, Requirement: f.requirement()})
		require.NoError(t, err)
		return sr
	}
	require.True(t, settle(exact).Success)
	// Permit2 nonces are per owner: the same nonce under the upto proxy
	// is spent too.
	require.Equal(t, x402.ReasonNonceUsed, settle(up).ErrorReason)
}

func TestSettlePermit2ConcurrentlyExactlyOnce(t *testing.T) {
	t.Parallel()
	exact, up := loadPermit2Fixtures(t)
	for _, f := range []fixture{exact, up} {
		for _, store := range []struct {
			name string
			s    kv.Store
		}{{"memory map", nil}, {"kv store", newFakeKV()}} {
			t.Run(f.Name+"/"+store.name, func(t *testing.T) {
				t.Parallel()
				fac := newFacilitator(t, f.signedAt(), store.s)
				req := permit2Request(t, f)
				const n = 50
				var wins, nonceUsed atomic.Int64
				var wg sync.WaitGroup
				for range n {
					wg.Go(func() {
						sr, err := fac.Settle(context.Background(), req)
						if err != nil {
							t.Error(err)
							return
						}
						if sr.Success {
							wins.Add(1)
						} else if sr.ErrorReason == x402.ReasonNonceUsed {
							nonceUsed.Add(1)
						}
					})
				}
				wg.Wait()
				require.Equal(t, int64(1), wins.Load())
				require.Equal(t, int64(n-1), nonceUsed.Load())
			})
		}
	}
}

func TestFarFutureAuthorizationsAreBounded(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	exact, up := loadPermit2Fixtures(t)
	s, err := localfacilitator.GenerateSigner()
	require.NoError(t, err)
	now := exact.signedAt()
	year9999 := time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC)
	eip3009 := mustRequirement(t)
	for _, req := range []x402.Requirement{eip3009, exact.requirement(), up.requirement()} {
		t.Run(req.Scheme+"/"+req.ExtraString("assetTransferMethod"), func(t *testing.T) {
			t.Parallel()
			sp, err := s.Sign(req, x402.Version2, localfacilitator.SignOptions{Now: now, ValidBefore: &year9999})
			require.NoError(t, err)
			p, err := localfacilitator.ParsePayment(sp.JSON)
			require.NoError(t, err)
			fr := x402.FacilitatorRequest{Payment: p, Requirement: req}

			// The default bound refuses it.
			vr, err := newFacilitator(t, now, nil).Verify(ctx, fr)
			require.NoError(t, err)
			require.Equal(t, localfacilitator.ReasonValidityTooLong, vr.InvalidReason)

			// Even with a 50-year bound its nonce record expires: within
			// MaxValidity + retention, never "no expiry".
			store := newFakeKV()
			fac, err := localfacilitator.New(localfacilitator.Config{Now: fixedClock(now), Store: store, MaxValidity: 50 * 365 * 24 * time.Hour})
			require.NoError(t, err)
			vr, err = fac.Verify(ctx, fr)
			require.NoError(t, err)
			require.Equal(t, localfacilitator.ReasonValidityTooLong, vr.InvalidReason, "year 9999 is more than 50 years away")

			in30 := now.Add(30 * 365 * 24 * time.Hour)
			sp, err = s.Sign(req, x402.Version2, localfacilitator.SignOptions{Now: now, ValidBefore: &in30})
			require.NoError(t, err)
			p, err = localfacilitator.ParsePayment(sp.JSON)
			require.NoError(t, err)
			sr, err := fac.Settle(ctx, x402.FacilitatorRequest{Payment: p, Requirement: req})
			require.NoError(t, err)
			require.True(t, sr.Success, sr.ErrorReason)
			require.Len(t, store.ttls, 1)
			for _, ttl := range store.ttls {
				require.Positive(t, ttl)
				require.LessOrEqual(t, ttl, 50*365*24*time.Hour+localfacilitator.DefaultNonceRetention)
			}
		})
	}
	_, err = localfacilitator.New(localfacilitator.Config{NonceRetention: localfacilitator.MaxNonceRetention + time.Hour})
	require.Error(t, err)
	_, err = localfacilitator.New(localfacilitator.Config{MaxValidity: -time.Second})
	require.Error(t, err)
	_, err = localfacilitator.New(localfacilitator.Config{Address: "0x12"})
	require.Error(t, err)
}

func TestPermit2OverHTTP(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	exact, up := loadPermit2Fixtures(t)
	for _, f := range []fixture{exact, up} {
		t.Run(f.Name, func(t *testing.T) {
			t.Parallel()
			fac := newFacilitator(t, f.signedAt(), nil)
			srv := httptest.NewServer(fac.Handler())
			defer srv.Close()
			client, err := x402.NewFacilitatorClient(srv.URL, x402.FacilitatorConfig{})
			require.NoError(t, err)
			req := permit2Request(t, f)
			vr, err := client.Verify(ctx, req)
			require.NoError(t, err)
			require.True(t, vr.IsValid, vr.InvalidReason)
			require.Equal(t, f.Payer, vr.Payer)

			if req.Requirement.Scheme == upto.Name {
				req.Requirement.Amount = "1858"
			}
			body, err := req.Body()
			require.NoError(t, err)
			resp, err := http.Post(srv.URL+"/settle", "application/json", bytes.NewReader(body))
			require.NoError(t, err)
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			require.NoError(t, err)
			require.Equal(t, http.StatusOK, resp.StatusCode, string(b))
			var answer x402.SettleResponse
			require.NoError(t, json.Unmarshal(b, &answer))
			require.True(t, answer.Success, answer.ErrorReason)
			if req.Requirement.Scheme == upto.Name {
				require.Equal(t, "1858", answer.Amount, "the upto settle answer carries the amount charged")
			} else {
				require.Empty(t, answer.Amount, "exact settles the signed amount")
			}

			sr, err := client.Settle(ctx, req)
			require.NoError(t, err)
			require.Equal(t, x402.ReasonNonceUsed, sr.ErrorReason)
		})
	}
}

func TestDecodePayment(t *testing.T) {
	t.Parallel()
	exact, _ := loadPermit2Fixtures(t)
	p, err := localfacilitator.DecodePayment(exact.ClientSent.HeaderValue)
	require.NoError(t, err)
	require.Equal(t, x402.Version2, p.Version)
	require.Equal(t, "permit2", p.Accepted.ExtraString("assetTransferMethod"))
	require.True(t, permit2.HasPermit2Authorization(p.Payload))
	require.NotEmpty(t, p.Raw)
	// URL-safe base64 without padding decodes too.
	raw, err := base64.StdEncoding.DecodeString(exact.ClientSent.HeaderValue)
	require.NoError(t, err)
	_, err = localfacilitator.DecodePayment(base64.RawURLEncoding.EncodeToString(raw))
	require.NoError(t, err)
	for _, bad := range []string{"", "!!!", base64.StdEncoding.EncodeToString([]byte(`{"x402Version":2,"payload":{"permit2Authorization":{}},"accepted":{"scheme":"exact","network":"solana"}}`))} {
		_, err := localfacilitator.DecodePayment(bad)
		require.ErrorIs(t, err, x402.ErrInvalidPayment, bad)
	}
	_, err = localfacilitator.ParsePayment([]byte(strings.Replace(string(raw), `"x402Version":2`, `"x402Version":1`, 1)))
	require.ErrorIs(t, err, x402.ErrInvalidPayment)
}

func TestParseRequestPermit2Envelope(t *testing.T) {
	t.Parallel()
	_, up := loadPermit2Fixtures(t)
	req := permit2Request(t, up)
	body, err := req.Body()
	require.NoError(t, err)
	got, err := localfacilitator.ParseRequest(body)
	require.NoError(t, err)
	require.Equal(t, "upto", got.Requirement.Scheme)
	require.Equal(t, "50000", got.Requirement.Amount)
	require.Equal(t, req.Payment.Payload, got.Payment.Payload)
	require.Equal(t, up.requirement().Resource, got.Requirement.Resource)

	s := string(body)
	for name, tc := range map[string]struct {
		body string
		want error
	}{
		"no requirements":   {strings.Replace(s, `"paymentRequirements":{`, `"paymentRequirements":null,"x":{`, 1), x402.ErrInvalidRequirement},
		"bad requirements":  {strings.Replace(s, `"paymentRequirements":{"scheme":"upto"`, `"paymentRequirements":{"scheme":7`, 1), x402.ErrInvalidRequirement},
		"unknown network":   {strings.Replace(s, `"paymentRequirements":{"scheme":"upto","network":"eip155:84532"`, `"paymentRequirements":{"scheme":"upto","network":"solana"`, 1), x402.ErrInvalidRequirement},
		"version disagrees": {strings.Replace(s, `{"x402Version":2,"paymentPayload"`, `{"x402Version":1,"paymentPayload"`, 1), x402.ErrInvalidPayment},
	} {
		require.NotEqual(t, s, tc.body, name)
		_, err := localfacilitator.ParseRequest([]byte(tc.body))
		require.ErrorIs(t, err, tc.want, name)
	}
	// An upto payment without a permit2Authorization parses as an
	// envelope (x402 leaves scheme payloads to the scheme) and is refused
	// by verification.
	notPermit2, err := localfacilitator.ParseRequest([]byte(strings.Replace(s, `"permit2Authorization"`, `"authorization"`, 1)))
	if err == nil {
		vr, err := newFacilitator(t, up.signedAt(), nil).Verify(context.Background(), notPermit2)
		require.NoError(t, err)
		require.Equal(t, x402.ReasonInvalidPayload, vr.InvalidReason)
	} else {
		require.ErrorIs(t, err, x402.ErrInvalidPayment)
	}
}

// TestEnvelopeCarriesTheSchemePayload pins what the facilitator relies on
// from x402's envelope parser for Permit2 payments: the scheme payload as
// sent, the client's chosen requirement, and no EIP-3009 fields.
func TestEnvelopeCarriesTheSchemePayload(t *testing.T) {
	t.Parallel()
	exact, up := loadPermit2Fixtures(t)
	for _, f := range []fixture{exact, up} {
		p, err := localfacilitator.DecodePayment(f.ClientSent.HeaderValue)
		require.NoError(t, err, f.Name)
		require.Equal(t, x402.Version2, p.Version)
		require.Empty(t, p.Payer)
		require.Empty(t, p.Authorization)
		var sent struct {
			Payload json.RawMessage `json:"payload"`
		}
		require.NoError(t, json.Unmarshal(f.ClientSent.Decoded, &sent))
		require.JSONEq(t, string(sent.Payload), string(p.Payload), f.Name)
		req := f.requirement()
		require.Equal(t, req.Scheme, p.Accepted.Scheme)
		require.Equal(t, req.Extra, p.Accepted.Extra)
		require.True(t, permit2.HasPermit2Authorization(p.Payload))
	}
}
