package facilitatortest

import (
	"context"
	"testing"
	"time"

	"github.com/402claw/dispatcher/x402"
	"github.com/402claw/dispatcher/x402/localfacilitator"
)

// Benchmark measures Verify of one valid payment and Settle of fresh
// payments (signed before the timer starts), in the version 2 envelope.
// Every answer is checked, so an implementation cannot win by refusing.
func Benchmark(b *testing.B, newTarget func(b *testing.B) Target) {
	setup := func(b *testing.B) (*env, x402.Requirement) {
		tg := newTarget(b)
		e := &env{Target: tg, version: x402.Version2}
		if e.Now == nil {
			e.Now = time.Now
		}
		return e, e.requirement(b)
	}
	b.Run("Verify", func(b *testing.B) {
		e, r := setup(b)
		req := x402.FacilitatorRequest{Payment: e.sign(b, r, localfacilitator.SignOptions{}), Requirement: r}
		ctx := context.Background()
		b.ReportAllocs()
		for b.Loop() {
			vr, err := e.Facilitator.Verify(ctx, req)
			if err != nil || !vr.IsValid {
				b.Fatalf("verify: %v %+v", err, vr)
			}
		}
	})
	b.Run("Settle", func(b *testing.B) {
		e, r := setup(b)
		reqs := make([]x402.FacilitatorRequest, b.N)
		for i := range reqs {
			reqs[i] = x402.FacilitatorRequest{Payment: e.sign(b, r, localfacilitator.SignOptions{}), Requirement: r}
		}
		ctx := context.Background()
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			sr, err := e.Facilitator.Settle(ctx, reqs[i])
			if err != nil || !sr.Success {
				b.Fatalf("settle: %v %+v", err, sr)
			}
		}
	})
}
