package channel_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/adapters/memory"
	"github.com/402claw/dispatcher/x402"
	"github.com/402claw/dispatcher/x402/channel"
	"github.com/402claw/dispatcher/x402/channel/channeltest"
)

// The scheme remembers a checked voucher payment only for the same
// requirement: the same payment against another receiver, asset, amount
// or network is checked afresh and refused.
func TestCheckedPaymentIsPerRequirement(t *testing.T) {
	e := channeltest.NewEnv(t, memory.NewKV(), channel.Config{})
	sc := e.Service.Scheme()
	p := e.Voucher(t, 2000)
	_, err := sc.Check(p, e.Req, timeNow())
	require.NoError(t, err)
	_, err = sc.Check(p, e.Req, timeNow())
	require.NoError(t, err, "again, from memory")
	for name, mutate := range map[string]func(r *x402.Requirement){
		"payTo":   func(r *x402.Requirement) { r.PayTo = "0x1111111111111111111111111111111111111111" },
		"asset":   func(r *x402.Requirement) { r.Asset = "0x2222222222222222222222222222222222222222" },
		"amount":  func(r *x402.Requirement) { r.Amount = "999" },
		"network": func(r *x402.Requirement) { r.Network = "eip155:8453" },
	} {
		other := e.Req
		other.Extra = map[string]any{}
		for k, v := range e.Req.Extra {
			other.Extra[k] = v
		}
		mutate(&other)
		_, err := sc.Check(p, other, timeNow())
		require.Error(t, err, name)
	}
	// And Begin after Check serves it once.
	h, err := e.Service.Begin(context.Background(), p, e.Req)
	require.NoError(t, err)
	_, err = h.Commit(context.Background(), "1000")
	require.NoError(t, err)
	_, err = e.Service.Begin(context.Background(), p, e.Req)
	require.Equal(t, channel.ReasonCumulativeAmountMismatch, channel.Reason(err), "the voucher is spent")
}
