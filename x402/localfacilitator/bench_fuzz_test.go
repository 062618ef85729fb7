package localfacilitator_test

import (
	"context"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/402claw/dispatcher/x402"
	"github.com/402claw/dispatcher/x402/localfacilitator"
)

func BenchmarkVerify(b *testing.B) {
	f := loadFixtures(b)[3] // client-v2.json
	fac := newFacilitator(b, f.signedAt(), nil)
	req := request(b, f)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		vr, err := fac.Verify(ctx, req)
		if err != nil || !vr.IsValid {
			b.Fatal(err, vr)
		}
	}
}

func BenchmarkSettle(b *testing.B) {
	s, err := localfacilitator.GenerateSigner()
	if err != nil {
		b.Fatal(err)
	}
	req := mustRequirement(b)
	now := time.Unix(1795561873, 0)
	fac := newFacilitator(b, now, nil)
	ctx := context.Background()
	reqs := make([]x402.FacilitatorRequest, 0, 1024)
	for i := range cap(reqs) {
		v, err := s.PaymentSignature(req, localfacilitator.SignOptions{Now: now, Nonce: fmt.Sprintf("0x%064x", i)})
		if err != nil {
			b.Fatal(err)
		}
		p, err := x402.DecodePaymentHeader(v)
		if err != nil {
			b.Fatal(err)
		}
		reqs = append(reqs, x402.FacilitatorRequest{Payment: p, Requirement: req})
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if i == len(reqs) {
			b.StopTimer()
			fac = newFacilitator(b, now, nil)
			i = 0
			b.StartTimer()
		}
		sr, err := fac.Settle(ctx, reqs[i])
		if err != nil || !sr.Success {
			b.Fatal(err, sr)
		}
		i++
	}
}

func BenchmarkSign(b *testing.B) {
	s, err := localfacilitator.GenerateSigner()
	if err != nil {
		b.Fatal(err)
	}
	req := mustRequirement(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.PaymentSignature(req, localfacilitator.SignOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}

// FuzzRecoverSigner feeds arbitrary signatures and digests to the signer
// recovery: it must return an error or an address, never panic.
func FuzzRecoverSigner(f *testing.F) {
	for _, fx := range loadFixtures(f) {
		p, err := x402.DecodePaymentHeader(fx.ClientSent.HeaderValue)
		if err != nil {
			f.Fatal(err)
		}
		d, err := hex.DecodeString(strings.TrimPrefix(fx.ClientSent.EIP712Digest, "0x"))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(d, p.Signature)
	}
	f.Add([]byte{}, "0x")
	f.Fuzz(func(t *testing.T, d []byte, sig string) {
		var digest [32]byte
		copy(digest[:], d)
		addr, err := localfacilitator.RecoverSigner(digest, sig)
		if err == nil && len(addr) != 42 {
			t.Fatalf("bad address %q", addr)
		}
	})
}

// FuzzVerify runs arbitrary facilitator request bodies through parsing and
// verification: a refusal or a verdict, never a panic.
func FuzzVerify(f *testing.F) {
	fxs := loadFixtures(f)
	for _, fx := range fxs {
		body, err := request(f, fx).Body()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(body)
	}
	f.Add([]byte(`{"paymentPayload":{"x402Version":1},"paymentRequirements":{}}`))
	fac, err := localfacilitator.New(localfacilitator.Config{Now: fixedClock(fxs[0].signedAt())})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := x402.ParseFacilitatorRequest(body)
		if err != nil {
			return
		}
		if _, err := fac.Verify(context.Background(), req); err != nil {
			t.Fatal(err)
		}
	})
}
