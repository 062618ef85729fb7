package localfacilitator_test

import (
	"context"
	"errors"
	"regexp"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/402claw/dispatcher/kv"
	"github.com/402claw/dispatcher/x402"
	"github.com/402claw/dispatcher/x402/localfacilitator"
	"github.com/stretchr/testify/require"
)

var txHashRE = regexp.MustCompile(`^0x[0-9a-f]{64}$`)

func fixedClock(t time.Time) func() time.Time { return func() time.Time { return t } }

func newFacilitator(t testing.TB, now time.Time, store kv.Store) *localfacilitator.Facilitator {
	t.Helper()
	f, err := localfacilitator.New(localfacilitator.Config{Now: fixedClock(now), Store: store})
	require.NoError(t, err)
	return f
}

// request decodes the fixture's header and pairs it with the server's
// requirement, as the payment step does after Match.
func request(t testing.TB, f fixture) x402.FacilitatorRequest {
	t.Helper()
	p, err := x402.DecodePaymentHeader(f.ClientSent.HeaderValue)
	require.NoError(t, err)
	req := f.requirement()
	require.NoError(t, x402.Match(req, p))
	return x402.FacilitatorRequest{Payment: p, Requirement: req}
}

func TestFixturesVerifyAndSettle(t *testing.T) {
	t.Parallel()
	for _, f := range loadFixtures(t) {
		t.Run(f.Name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			fac := newFacilitator(t, f.signedAt(), nil)
			req := request(t, f)

			vr, err := fac.Verify(ctx, req)
			require.NoError(t, err)
			require.Equal(t, &x402.VerifyResponse{IsValid: true, Payer: f.Payer}, vr)

			sr, err := fac.Settle(ctx, req)
			require.NoError(t, err)
			require.True(t, sr.Success, sr.ErrorReason)
			require.Equal(t, x402.SettleSucceeded, sr.Outcome())
			require.Regexp(t, txHashRE, sr.Transaction)
			require.Equal(t, f.Payer, sr.Payer)
			// The network is spelled as the payment's version spells it, as
			// the real client decoded it.
			require.Equal(t, f.ClientDecodedSettleResponse.Network, sr.Network)
			require.Equal(t, localfacilitator.TransactionHash(req), sr.Transaction)

			// The nonce is spent: verify and settle now refuse it.
			vr, err = fac.Verify(ctx, req)
			require.NoError(t, err)
			require.False(t, vr.IsValid)
			require.Equal(t, x402.ReasonNonceUsed, vr.InvalidReason)
			sr, err = fac.Settle(ctx, req)
			require.NoError(t, err)
			require.False(t, sr.Success)
			require.Equal(t, x402.ReasonNonceUsed, sr.ErrorReason)
			require.Empty(t, sr.Transaction)
		})
	}
}

func TestTamperedPaymentsAreRefused(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	other, err := localfacilitator.NewSigner("0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba")
	require.NoError(t, err)
	const stranger = "0x1111111111111111111111111111111111111111"

	for _, f := range loadFixtures(t) {
		signedAt := f.signedAt()
		cases := []struct {
			name   string
			now    time.Time
			mutate func(t *testing.T, r *x402.FacilitatorRequest)
			reason string
		}{
			{
				name: "value raised in the authorization only",
				mutate: func(t *testing.T, r *x402.FacilitatorRequest) {
					r.Payment.Authorization.Value = "20000"
				},
				reason: x402.ReasonInvalidValue,
			},
			{
				name: "value raised everywhere (server asks 20000, client edits its signed 10000)",
				mutate: func(t *testing.T, r *x402.FacilitatorRequest) {
					r.Requirement.Amount = "20000"
					r.Payment.Accepted.Amount = "20000"
					r.Payment.Authorization.Value = "20000"
				},
				reason: x402.ReasonInvalidSignature,
			},
			{
				name: "recipient differs from payTo",
				mutate: func(t *testing.T, r *x402.FacilitatorRequest) {
					r.Payment.Authorization.To = stranger
				},
				reason: x402.ReasonRecipientMismatch,
			},
			{
				name: "recipient rewritten everywhere",
				mutate: func(t *testing.T, r *x402.FacilitatorRequest) {
					r.Requirement.PayTo = stranger
					r.Payment.Accepted.PayTo = stranger
					r.Payment.Authorization.To = stranger
				},
				reason: x402.ReasonInvalidSignature,
			},
			{
				name:   "window expired (now == validBefore)",
				now:    time.Unix(mustInt(t, request(t, f).Payment.Authorization.ValidBefore), 0),
				reason: x402.ReasonValidBefore,
			},
			{
				name:   "window expired long ago",
				now:    signedAt.Add(time.Hour),
				reason: x402.ReasonValidBefore,
			},
			{
				name:   "not yet valid (now == validAfter)",
				now:    time.Unix(mustInt(t, request(t, f).Payment.Authorization.ValidAfter), 0),
				reason: x402.ReasonValidAfter,
			},
			{
				name: "signed by another key",
				mutate: func(t *testing.T, r *x402.FacilitatorRequest) {
					sig, err := other.SignAuthorization(r.Requirement, r.Payment.Authorization)
					require.NoError(t, err)
					r.Payment.Signature = sig
				},
				reason: x402.ReasonInvalidSignature,
			},
			{
				name: "payer claims to be someone else",
				mutate: func(t *testing.T, r *x402.FacilitatorRequest) {
					r.Payment.Authorization.From = other.Address()
					r.Payment.Payer = other.Address()
				},
				reason: x402.ReasonInvalidSignature,
			},
			{
				name: "nonce changed",
				mutate: func(t *testing.T, r *x402.FacilitatorRequest) {
					r.Payment.Authorization.Nonce = "0x" + "00" + r.Payment.Authorization.Nonce[4:]
				},
				reason: x402.ReasonInvalidSignature,
			},
			{
				name: "token domain changed (other asset)",
				mutate: func(t *testing.T, r *x402.FacilitatorRequest) {
					r.Requirement.Extra = map[string]any{"name": "USD Coin", "version": "2"}
				},
				reason: x402.ReasonInvalidSignature,
			},
			{
				name: "network the facilitator does not serve",
				mutate: func(t *testing.T, r *x402.FacilitatorRequest) {
					r.Requirement.Network = "eip155:1"
				},
				reason: x402.ReasonInvalidNetwork,
			},
			{
				name: "another scheme",
				mutate: func(t *testing.T, r *x402.FacilitatorRequest) {
					r.Requirement.Scheme = "upto"
				},
				reason: x402.ReasonInvalidScheme,
			},
		}
		for _, tc := range cases {
			t.Run(f.Name+"/"+tc.name, func(t *testing.T) {
				t.Parallel()
				if tc.name == "not yet valid (now == validAfter)" && request(t, f).Payment.Authorization.ValidAfter == "0" {
					t.Skip("validAfter is 0 in this fixture; covered by the signer test")
				}
				now := signedAt
				if !tc.now.IsZero() {
					now = tc.now
				}
				fac := newFacilitator(t, now, nil)
				r := request(t, f)
				if tc.mutate != nil {
					tc.mutate(t, &r)
				}
				vr, err := fac.Verify(ctx, r)
				require.NoError(t, err)
				require.False(t, vr.IsValid)
				require.Equal(t, tc.reason, vr.InvalidReason)

				sr, err := fac.Settle(ctx, r)
				require.NoError(t, err)
				require.False(t, sr.Success)
				require.Equal(t, tc.reason, sr.ErrorReason)
				require.Empty(t, sr.Transaction)

				// The refused attempt did not burn the nonce: the genuine
				// payment still settles at signing time.
				genuine := newFacilitator(t, signedAt, nil)
				sr, err = genuine.Settle(ctx, request(t, f))
				require.NoError(t, err)
				require.True(t, sr.Success)
			})
		}
	}
}

func TestSignerRoundTrip(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, err := localfacilitator.GenerateSigner()
	require.NoError(t, err)
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	for _, network := range []string{x402.NetworkBaseSepolia, x402.NetworkBase} {
		req, err := x402.NewRequirement(x402.RequirementParams{
			Network:  network,
			Price:    mustDecimal("0.25"),
			PayTo:    "0x209693Bc6afc0C5328bA36FaF03C514EF312287C",
			Resource: "https://api.example.com/t/demo/rows?limit=5&x=1",
		})
		require.NoError(t, err)
		for _, version := range []int{x402.Version1, x402.Version2} {
			sp, err := s.Sign(req, version, localfacilitator.SignOptions{Now: now, PaymentID: "pay_0123456789abcdef"})
			require.NoError(t, err)

			h := make(map[string][]string)
			h[canonical(sp.Header)] = []string{sp.Value}
			p, err := x402.PaymentFromHeader(h)
			require.NoError(t, err)
			require.Equal(t, version, p.Version)
			require.Equal(t, s.Address(), p.Payer)
			require.Equal(t, "250000", p.Authorization.Value)
			require.NoError(t, x402.Match(req, p))
			if version == x402.Version2 {
				require.Equal(t, "pay_0123456789abcdef", p.PaymentID)
				require.Equal(t, "https://api.example.com/t/demo/rows?limit=5&x=1", p.Accepted.Resource.URL)
			}

			fac := newFacilitator(t, now, nil)
			fr := x402.FacilitatorRequest{Payment: p, Requirement: req}
			vr, err := fac.Verify(ctx, fr)
			require.NoError(t, err)
			require.True(t, vr.IsValid, vr.InvalidReason)
			sr, err := fac.Settle(ctx, fr)
			require.NoError(t, err)
			require.True(t, sr.Success, sr.ErrorReason)
			require.Equal(t, x402.NetworkForVersion(network, version), sr.Network)

			// Not yet valid / expired at the window's edges.
			early := newFacilitator(t, p.ValidAfter(), nil)
			vr, err = early.Verify(ctx, fr)
			require.NoError(t, err)
			if version == x402.Version1 {
				require.Equal(t, x402.ReasonValidAfter, vr.InvalidReason)
			}
			late := newFacilitator(t, p.ValidBefore(), nil)
			vr, err = late.Verify(ctx, fr)
			require.NoError(t, err)
			require.Equal(t, x402.ReasonValidBefore, vr.InvalidReason)
		}
	}

	// A future validAfter on a version 2 payment is refused until it passes.
	req := mustRequirement(t)
	future := now.Add(time.Minute)
	sp, err := s.Sign(req, x402.Version2, localfacilitator.SignOptions{Now: now, ValidAfter: &future})
	require.NoError(t, err)
	p, err := x402.DecodePaymentHeader(sp.Value)
	require.NoError(t, err)
	vr, err := newFacilitator(t, now, nil).Verify(ctx, x402.FacilitatorRequest{Payment: p, Requirement: req})
	require.NoError(t, err)
	require.Equal(t, x402.ReasonValidAfter, vr.InvalidReason)
}

func TestSettleConcurrentlyExactlyOnce(t *testing.T) {
	t.Parallel()
	f := loadFixtures(t)[0]
	for _, store := range []struct {
		name string
		s    kv.Store
	}{{"memory map", nil}, {"kv store", newFakeKV()}} {
		t.Run(store.name, func(t *testing.T) {
			t.Parallel()
			fac := newFacilitator(t, f.signedAt(), store.s)
			req := request(t, f)
			const n = 64
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

func TestKVStoreSharedAcrossFacilitators(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := loadFixtures(t)[1]
	store := newFakeKV()
	a := newFacilitator(t, f.signedAt(), store)
	b := newFacilitator(t, f.signedAt(), store)
	sr, err := a.Settle(ctx, request(t, f))
	require.NoError(t, err)
	require.True(t, sr.Success)
	// A second replica sharing the store refuses the replay.
	sr, err = b.Settle(ctx, request(t, f))
	require.NoError(t, err)
	require.Equal(t, x402.ReasonNonceUsed, sr.ErrorReason)

	require.Len(t, store.ttls, 1)
	for key, ttl := range store.ttls {
		require.Contains(t, key, localfacilitator.DefaultKeyPrefix+"84532:0x036cbd53842c5426634e7929541ec2318f3dcf7e:0x70997970c51812dc3a010c7d01b50e0d17dc79c8:0x")
		require.Greater(t, ttl, localfacilitator.DefaultNonceRetention)
		require.LessOrEqual(t, ttl, localfacilitator.DefaultNonceRetention+time.Hour)
	}
}

func TestStoreFailureIsUnavailable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := loadFixtures(t)[0]
	store := newFakeKV()
	store.fail = errors.New("connection refused")
	fac := newFacilitator(t, f.signedAt(), store)
	_, err := fac.Verify(ctx, request(t, f))
	require.ErrorIs(t, err, x402.ErrFacilitatorUnavailable)
	_, err = fac.Settle(ctx, request(t, f))
	require.ErrorIs(t, err, x402.ErrFacilitatorUnavailable)
}

func TestNewRefusesBadConfig(t *testing.T) {
	t.Parallel()
	_, err := localfacilitator.New(localfacilitator.Config{Networks: []string{"solana"}})
	require.ErrorIs(t, err, x402.ErrUnknownNetwork)
	_, err = localfacilitator.New(localfacilitator.Config{NonceRetention: -time.Second})
	require.Error(t, err)

	only, err := localfacilitator.New(localfacilitator.Config{Networks: []string{"base"}})
	require.NoError(t, err)
	sup, err := only.Supported(context.Background())
	require.NoError(t, err)
	require.Equal(t, []x402.SupportedKind{
		{X402Version: 2, Scheme: "exact", Network: "eip155:8453"},
		{X402Version: 1, Scheme: "exact", Network: "base"},
		{X402Version: 2, Scheme: "upto", Network: "eip155:8453", Extra: map[string]any{"facilitatorAddress": localfacilitator.DefaultAddress}},
		{X402Version: 2, Scheme: "batch-settlement", Network: "eip155:8453", Extra: map[string]any{"receiverAuthorizer": localfacilitator.DefaultAddress}},
	}, sup.Kinds)
	require.Equal(t, map[string][]string{"eip155:*": {localfacilitator.DefaultAddress}}, sup.Signers)
}

func TestNilPayment(t *testing.T) {
	t.Parallel()
	fac := newFacilitator(t, time.Now(), nil)
	_, err := fac.Verify(context.Background(), x402.FacilitatorRequest{})
	require.ErrorIs(t, err, x402.ErrInvalidPayment)
	_, err = fac.Settle(context.Background(), x402.FacilitatorRequest{})
	require.ErrorIs(t, err, x402.ErrInvalidPayment)
}

// fakeKV is a minimal kv.Store for these tests (the real adapters live in
// other packages): Get and SetNX with a mutex, recording TTLs.
type fakeKV struct {
	mu   sync.Mutex
	m    map[string][]byte
	ttls map[string]time.Duration
	fail error
}

func newFakeKV() *fakeKV {
	return &fakeKV{m: map[string][]byte{}, ttls: map[string]time.Duration{}}
}

func (s *fakeKV) Get(_ context.Context, key string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return nil, s.fail
	}
	v, ok := s.m[key]
	if !ok {
		return nil, kv.ErrNotFound
	}
	return v, nil
}

func (s *fakeKV) Set(_ context.Context, key string, value []byte, ttl time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[key], s.ttls[key] = value, ttl
	return s.fail
}

func (s *fakeKV) SetNX(_ context.Context, key string, value []byte, ttl time.Duration) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return false, s.fail
	}
	if _, ok := s.m[key]; ok {
		return false, nil
	}
	s.m[key], s.ttls[key] = value, ttl
	return true, nil
}

func (s *fakeKV) Delete(_ context.Context, key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, key)
	return s.fail
}

func (s *fakeKV) Incr(context.Context, string, kv.Increment) (int64, bool, error) {
	return 0, false, errors.New("fakeKV: Incr not supported")
}
