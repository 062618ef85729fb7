package localfacilitator_test

import (
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

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
	f, err := localfacilitator.New(localfacilitator.Config{Now: now})
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
	return facilitatortest.Target{Facilitator: fac, Payer: payer, Network: x402.DefaultNetwork, PayTo: testPayTo, Now: now}
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
// clock, so the suite's time handling is not tied to a fixed clock.
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
