package localfacilitator_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/kv"
	"github.com/402claw/dispatcher/x402"
	"github.com/402claw/dispatcher/x402/facilitatortest"
	"github.com/402claw/dispatcher/x402/localfacilitator"
)

// conformancePayer is a fixed test key (never funded), so that failures
// reproduce; the suite also signs with fresh keys where it needs a second
// signer.
const conformancePayer = "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"

// conformanceClock is a fixed time for the facilitator and the suite's
// signatures.
var conformanceClock = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

func conformanceTarget(t *testing.T, overHTTP bool) facilitatortest.Target {
	return conformanceTargetTB(t, overHTTP)
}

func conformanceTargetTB(t testing.TB, overHTTP bool) facilitatortest.Target {
	t.Helper()
	now := func() time.Time { return conformanceClock }
	store := newSharedStore()
	f, err := localfacilitator.New(localfacilitator.Config{Now: now, Store: store})
	require.NoError(t, err)
	payer, err := localfacilitator.NewSigner(conformancePayer)
	require.NoError(t, err)
	var fac x402.Facilitator = f
	if overHTTP {
		srv := httptest.NewServer(f.Handler())
		t.Cleanup(srv.Close)
		c, err := x402.NewFacilitatorClient(srv.URL, x402.FacilitatorConfig{})
		require.NoError(t, err)
		fac = c
	}
	return facilitatortest.Target{Facilitator: fac, Payer: payer, Network: x402.DefaultNetwork, PayTo: testPayTo, Now: now, Fail: store.fail}
}

// TestConformanceInProcess runs the facilitator suite on the local
// facilitator called directly.
func TestConformanceInProcess(t *testing.T) {
	t.Parallel()
	facilitatortest.Run(t, func(t *testing.T) facilitatortest.Target { return conformanceTarget(t, false) })
}

// TestConformanceOverHTTP runs it through x402.FacilitatorClient against
// the facilitator's own Handler: the wire form of every answer included.
func TestConformanceOverHTTP(t *testing.T) {
	t.Parallel()
	facilitatortest.Run(t, func(t *testing.T) facilitatortest.Target { return conformanceTarget(t, true) })
}

// TestConformanceMainnetRealClock runs it on Base mainnet with the real
// clock and the facilitator's default in-memory nonce record (no Store),
// so neither the suite's time handling nor the other runs' store stand in
// for the defaults.
func TestConformanceMainnetRealClock(t *testing.T) {
	t.Parallel()
	facilitatortest.Run(t, func(t *testing.T) facilitatortest.Target {
		f, err := localfacilitator.New(localfacilitator.Config{Networks: []string{"base"}})
		require.NoError(t, err)
		payer, err := localfacilitator.GenerateSigner()
		require.NoError(t, err)
		return facilitatortest.Target{Facilitator: f, Payer: payer, Network: "eip155:8453", PayTo: testPayTo}
	})
}

func BenchmarkConformance(b *testing.B) {
	for _, overHTTP := range []bool{false, true} {
		name := "InProcess"
		if overHTTP {
			name = "OverHTTP"
		}
		b.Run(name, func(b *testing.B) {
			facilitatortest.Benchmark(b, func(b *testing.B) facilitatortest.Target {
				return conformanceTargetTB(b, overHTTP)
			})
		})
	}
}

// replicas spreads calls over several facilitators in turn, as a load
// balancer over gateway replicas would.
type replicas struct {
	fs   []x402.Facilitator
	next atomic.Uint64
}

func (r *replicas) pick() x402.Facilitator { return r.fs[(r.next.Add(1)-1)%uint64(len(r.fs))] }

func (r *replicas) Verify(ctx context.Context, req x402.FacilitatorRequest) (*x402.VerifyResponse, error) {
	return r.pick().Verify(ctx, req)
}

func (r *replicas) Settle(ctx context.Context, req x402.FacilitatorRequest) (*x402.SettleResponse, error) {
	return r.pick().Settle(ctx, req)
}

func (r *replicas) Supported(ctx context.Context) (*x402.SupportedResponse, error) {
	return r.pick().Supported(ctx)
}

// sharedStore is a minimal concurrency-safe kv.Store with the methods the
// facilitator uses (Get, SetNX; expiry ignored), so that this package's
// tests build on the kv port alone rather than on an adapter and its
// dependencies.
type sharedStore struct {
	mu     sync.Mutex
	m      map[string][]byte
	broken bool
}

func newSharedStore() *sharedStore { return &sharedStore{m: make(map[string][]byte)} }

// errStoreDown is what a broken sharedStore answers.
var errStoreDown = errors.New("sharedStore: down")

// fail breaks the store until the returned restore is called.
func (s *sharedStore) fail() (restore func()) {
	s.mu.Lock()
	s.broken = true
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		s.broken = false
		s.mu.Unlock()
	}
}

func (s *sharedStore) Get(_ context.Context, key string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.broken {
		return nil, errStoreDown
	}
	v, ok := s.m[key]
	if !ok {
		return nil, kv.ErrNotFound
	}
	return v, nil
}

func (s *sharedStore) Set(_ context.Context, key string, value []byte, _ time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[key] = value
	return nil
}

func (s *sharedStore) SetNX(_ context.Context, key string, value []byte, _ time.Duration) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.broken {
		return false, errStoreDown
	}
	if _, ok := s.m[key]; ok {
		return false, nil
	}
	s.m[key] = value
	return true, nil
}

func (s *sharedStore) Delete(_ context.Context, key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, key)
	return nil
}

func (s *sharedStore) Incr(context.Context, string, kv.Increment) (int64, bool, error) {
	return 0, false, errors.New("sharedStore: Incr is not used by the facilitator")
}

// TestConformanceReplicasSharedStore runs the suite on three local
// facilitators sharing one kv.Store, called in turn:
// a nonce settled through one is spent for all, and of 50 concurrent
// settlements spread over them exactly one succeeds.
func TestConformanceReplicasSharedStore(t *testing.T) {
	t.Parallel()
	facilitatortest.Run(t, func(t *testing.T) facilitatortest.Target {
		now := func() time.Time { return conformanceClock }
		store := newSharedStore()
		r := &replicas{}
		for range 3 {
			f, err := localfacilitator.New(localfacilitator.Config{Now: now, Store: store})
			require.NoError(t, err)
			r.fs = append(r.fs, f)
		}
		payer, err := localfacilitator.NewSigner(conformancePayer)
		require.NoError(t, err)
		return facilitatortest.Target{Facilitator: r, Payer: payer, Network: x402.DefaultNetwork, PayTo: testPayTo, Now: now, Fail: store.fail}
	})
}
