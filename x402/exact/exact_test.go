package exact_test

import (
	"testing"
	"time"

	"github.com/shopspring/decimal"
	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/x402"
	"github.com/402claw/dispatcher/x402/exact"
	"github.com/402claw/dispatcher/x402/localfacilitator"
	"github.com/402claw/dispatcher/x402/schemetest"
)

func TestConformance(t *testing.T) {
	schemetest.Run(t, func(t *testing.T) schemetest.Target {
		signer, err := localfacilitator.GenerateSigner()
		require.NoError(t, err)
		return schemetest.Target{
			Scheme: exact.New(),
			Offer: x402.Offer{Network: "eip155:84532", Price: decimal.RequireFromString("0.01"),
				PayTo: "0x209693Bc6afc0C5328bA36FaF03C514EF312287C", Resource: x402.ResourceInfo{URL: "http://gw/t/a/x"}},
			Pay: func(t testing.TB, req x402.Requirement, at time.Time, validFor time.Duration) *x402.Payment {
				vb := at.Add(validFor)
				sp, err := signer.Sign(req, 2, localfacilitator.SignOptions{Now: at, ValidBefore: &vb})
				require.NoError(t, err)
				p, err := x402.DecodePaymentHeader(sp.Value)
				require.NoError(t, err)
				return p
			},
		}
	})
}

// Version 1 payments are exact over EIP-3009 and go through the same check.
func TestVersion1(t *testing.T) {
	signer, err := localfacilitator.GenerateSigner()
	require.NoError(t, err)
	req, err := exact.New().Requirement(x402.Offer{Network: "eip155:84532", Price: decimal.RequireFromString("0.01"),
		PayTo: "0x209693Bc6afc0C5328bA36FaF03C514EF312287C", Resource: x402.ResourceInfo{URL: "http://gw/t/a/x"}})
	require.NoError(t, err)
	sp, err := signer.Sign(req, 1, localfacilitator.SignOptions{})
	require.NoError(t, err)
	p, err := x402.DecodePaymentHeader(sp.Value)
	require.NoError(t, err)
	require.True(t, exact.New().Claims(p.Accepted))
	g, err := exact.New().Check(p, req, time.Now())
	require.NoError(t, err)
	require.Equal(t, x402.AuthorizationID(p), g.ID)
}
