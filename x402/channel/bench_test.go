package channel_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/adapters/memory"
	"github.com/402claw/dispatcher/x402"
	"github.com/402claw/dispatcher/x402/channel"
	"github.com/402claw/dispatcher/x402/channel/channeltest"
	"github.com/402claw/dispatcher/x402/eip712"
)

// BenchmarkVoucherCommit measures one paid request on a channel, server
// side, on the memory KV: Begin (decode, voucher signature recovery, lease,
// state read, cumulative check) and Commit (state write, release). The
// vouchers are signed beforehand, outside the timer.
func BenchmarkVoucherCommit(b *testing.B) {
	ctx := context.Background()
	e := channeltest.NewEnv(b, memory.NewKV(), channel.Config{})
	charged := e.State(b).Charged
	payments := make([]*x402.Payment, b.N)
	for i := range payments {
		// Each request is charged 1, so the deposit lasts for any b.N.
		payments[i] = e.Voucher(b, charged+e.Amount)
		charged++
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		h, err := e.Service.Begin(ctx, payments[i], e.Req)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := h.Commit(ctx, "1"); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	require.Equal(b, charged, e.State(b).Charged)
}

// BenchmarkCheck measures the scheme's stateless check of a voucher
// payment (decode, channel id hash, voucher digest, signer check).
//
//   - again: the same payment checked again, as Begin does after the
//     payment stage's Check (remembered per payment);
//   - cached: 1,024 rotating payments, past the remembered checks but
//     within the signature cache (decode and hashes, no curve work);
//   - fresh: a new voucher each time by a payer whose key has a KeyTable
//     (vouchers signed before the timer starts).
func BenchmarkCheck(b *testing.B) {
	e := channeltest.NewEnv(b, memory.NewKV(), channel.Config{})
	sc := e.Service.Scheme()
	run := func(b *testing.B, payments []*x402.Payment) {
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if _, err := sc.Check(payments[i%len(payments)], e.Req, timeNow()); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("again", func(b *testing.B) { run(b, []*x402.Payment{e.Voucher(b, 2000)}) })
	b.Run("cached", func(b *testing.B) {
		payments := make([]*x402.Payment, 1024)
		for i := range payments {
			payments[i] = e.Voucher(b, uint64(2000+i))
		}
		for _, p := range payments { // fill the signature cache
			_, _ = sc.Check(p, e.Req, timeNow())
		}
		run(b, payments)
	})
	b.Run("fresh", func(b *testing.B) {
		payments := make([]*x402.Payment, b.N)
		for i := range payments {
			payments[i] = e.Voucher(b, uint64(1_000_000+i))
		}
		waitKeyTable(b, sc, e)
		run(b, payments)
	})
}

// waitKeyTable charges vouchers until the payer's KeyTable is built.
func waitKeyTable(b *testing.B, sc *channel.Scheme, e *channeltest.Env) {
	ctx := context.Background()
	charged := e.State(b).Charged
	for i := 0; i < 400 && !sc.HasKeyTable(e.Config.PayerAuthorizer); i++ {
		h, err := e.Service.Begin(ctx, e.Voucher(b, charged+e.Amount), e.Req)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := h.Commit(ctx, "1"); err != nil {
			b.Fatal(err)
		}
		charged++
		if i >= eip712.DefaultKeyTableAfter {
			time.Sleep(10 * time.Millisecond)
		}
	}
	if !sc.HasKeyTable(e.Config.PayerAuthorizer) {
		b.Fatal("no key table")
	}
}
