package localfacilitator_test

import (
	"context"
	"encoding/hex"
	"errors"
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
	exact, up := loadPermit2Fixtures(f)
	for _, fx := range []fixture{exact, up} {
		body, err := permit2Request(f, fx).Body()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(body)
	}
	f.Add([]byte(`{"paymentPayload":{"x402Version":1},"paymentRequirements":{}}`))
	fac, err := localfacilitator.New(localfacilitator.Config{Now: fixedClock(exact.signedAt())})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := localfacilitator.ParseRequest(body)
		if err != nil {
			if !errors.Is(err, x402.ErrInvalidPayment) && !errors.Is(err, x402.ErrInvalidRequirement) {
				t.Fatalf("unclassified error: %v", err)
			}
			return
		}
		if _, err := fac.Verify(context.Background(), req); err != nil {
			t.Fatal(err)
		}
		if _, err := fac.Settle(context.Background(), req); err != nil {
			t.Fatal(err)
		}
	})
}

// BenchmarkVerifySettle measures what a paid request costs the local
// facilitator, verify then settle of a fresh authorization, per transfer
// method, with the signer-recovery cache (one secp256k1 recovery per
// payment) and without it (two).
func BenchmarkVerifySettle(b *testing.B) {
	s, err := localfacilitator.GenerateSigner()
	if err != nil {
		b.Fatal(err)
	}
	exact, up := loadPermit2Fixtures(b)
	now := exact.signedAt()
	for _, m := range []struct {
		name string
		req  x402.Requirement
	}{{"eip3009", mustRequirement(b)}, {"permit2", exact.requirement()}, {"upto", up.requirement()}} {
		reqs := make([]x402.FacilitatorRequest, 0, 1024)
		for i := range cap(reqs) {
			sp, err := s.Sign(m.req, x402.Version2, localfacilitator.SignOptions{Now: now, Nonce: fmt.Sprintf("0x%064x", i+1)})
			if err != nil {
				b.Fatal(err)
			}
			p, err := localfacilitator.ParsePayment(sp.JSON)
			if err != nil {
				b.Fatal(err)
			}
			reqs = append(reqs, x402.FacilitatorRequest{Payment: p, Requirement: m.req})
		}
		for _, c := range []struct {
			name string
			size int
		}{{"cache", 0}, {"nocache", -1}} {
			b.Run(m.name+"/"+c.name, func(b *testing.B) {
				ctx := context.Background()
				newFac := func() *localfacilitator.Facilitator {
					f, err := localfacilitator.New(localfacilitator.Config{Now: fixedClock(now), RecoverCacheSize: c.size})
					if err != nil {
						b.Fatal(err)
					}
					return f
				}
				fac := newFac()
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					if i == len(reqs) {
						b.StopTimer()
						fac, i = newFac(), 0
						b.StartTimer()
					}
					vr, err := fac.Verify(ctx, reqs[i])
					if err != nil || !vr.IsValid {
						b.Fatal(err, vr)
					}
					sr, err := fac.Settle(ctx, reqs[i])
					if err != nil || !sr.Success {
						b.Fatal(err, sr)
					}
					i++
				}
			})
		}
	}
}
