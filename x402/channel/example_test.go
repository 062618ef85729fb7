package channel_test

import (
	"context"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/decred/dcrd/dcrec/secp256k1/v4"
	"github.com/shopspring/decimal"

	"github.com/402claw/dispatcher/adapters/memory"
	"github.com/402claw/dispatcher/x402"
	"github.com/402claw/dispatcher/x402/channel"
	"github.com/402claw/dispatcher/x402/localfacilitator"
)

// A gateway serving paid requests on one channel: the client deposits
// once, then signs a cumulative voucher per request; the worker's charge
// is committed after it succeeded, and a claimer collects the charges.
func Example() {
	ctx := context.Background()
	fac, _ := localfacilitator.New(localfacilitator.Config{})
	sc, _ := channel.NewScheme(channel.SchemeConfig{ReceiverAuthorizer: fac.Address()})
	svc, _ := channel.New(memory.NewKV(), channel.Config{Scheme: sc, Facilitator: fac})
	req, _ := svc.Scheme().Requirement(x402.Offer{
		Network: "eip155:84532", Price: decimal.RequireFromString("0.001"),
		PayTo: "0x209693Bc6afc0C5328bA36FaF03C514EF312287C", Resource: x402.ResourceInfo{URL: "https://api.example/llm"},
	})
	fmt.Println(req.Scheme, req.Amount, req.Extra["withdrawDelay"])

	// The client: a public test key.
	key, _ := hex.DecodeString("59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d")
	cl := channel.NewClient(secp256k1.PrivKeyFromBytes(key))
	cfg, _ := cl.ChannelConfig(req, "0x0000000000000000000000000000000000000000000000000000000000000000")
	now := time.Now()
	deposit, _ := cl.DepositPayload(req, cfg, 100000, 1000, now.Add(-time.Second), now.Add(time.Minute))

	var charged uint64
	for i, charge := range []string{"700", "1000", "250"} {
		var p *x402.Payment
		if i == 0 {
			p, _ = channel.Envelope(req, deposit)
		} else {
			v, _ := cl.VoucherPayload(req, cfg, charged+1000)
			p, _ = channel.Envelope(req, v)
		}
		hold, err := svc.Begin(ctx, p, req)
		if err != nil {
			fmt.Println(err)
			return
		}
		// ... the worker runs and reports its charge ...
		resp, _ := hold.Commit(ctx, charge)
		cs := resp.Extra[channel.ExtraChannelState].(channel.ChannelState)
		fmt.Println("charged", resp.Extra[channel.ExtraChargedAmount], "cumulative", cs.ChargedCumulativeAmount)
		fmt.Sscan(cs.ChargedCumulativeAmount, &charged)
	}

	claimer, _ := channel.NewClaimer(svc, channel.ClaimerConfig{Facilitator: fac, Threshold: 1})
	rep, _ := claimer.RunOnce(ctx)
	fmt.Println("claimed in", rep.Calls, "call, settled", rep.Settled)
	// Output:
	// batch-settlement 1000 900
	// charged 700 cumulative 700
	// charged 1000 cumulative 1700
	// charged 250 cumulative 1950
	// claimed in 1 call, settled 1950
}
