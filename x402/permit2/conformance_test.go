package permit2_test

import (
	"testing"
	"time"

	"github.com/402claw/dispatcher/x402"
	"github.com/402claw/dispatcher/x402/localfacilitator"
	"github.com/402claw/dispatcher/x402/permit2"
	"github.com/402claw/dispatcher/x402/schemetest"
	"github.com/shopspring/decimal"
	"github.com/stretchr/testify/require"
)

func TestConformance(t *testing.T) {
	schemetest.Run(t, func(t *testing.T) schemetest.Target {
		signer, err := localfacilitator.GenerateSigner()
		require.NoError(t, err)
		return schemetest.Target{
			Scheme: permit2.New(),
			Offer: x402.Offer{Network: "eip155:84532", Price: decimal.RequireFromString("0.01"),
				PayTo: "0x209693Bc6afc0C5328bA36FaF03C514EF312287C", Resource: x402.ResourceInfo{URL: "http://gw/t/a/x"}},
			Pay: func(t testing.TB, req x402.Requirement, at time.Time, validFor time.Duration) *x402.Payment {
				deadline := at.Add(validFor)
				sp, err := signer.SignPermit2(req, localfacilitator.SignOptions{Now: at, ValidBefore: &deadline})
				require.NoError(t, err)
				p, err := x402.DecodePaymentHeader(sp.Value)
				require.NoError(t, err)
				return p
			},
		}
	})
}
