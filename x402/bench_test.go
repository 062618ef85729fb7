package x402_test

import (
	"net/http"
	"testing"

	"github.com/402claw/dispatcher/x402"
)

func BenchmarkDecodePaymentHeader(b *testing.B) {
	for _, name := range []string{"client-v2.json", "client-v1.json"} {
		v := fixtureNamed(b, name).ClientSent.HeaderValue
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(v)))
			for b.Loop() {
				if _, err := x402.DecodePaymentHeader(v); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkNewChallenge(b *testing.B) {
	req := serverRequirement(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := x402.NewChallenge(req, x402.ChallengeOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMatchKeyFingerprint(b *testing.B) {
	req := serverRequirement(b)
	p, err := x402.DecodePaymentHeader(fixtureNamed(b, "client-v2.json").ClientSent.HeaderValue)
	if err != nil {
		b.Fatal(err)
	}
	h := http.Header{}
	b.ReportAllocs()
	for b.Loop() {
		if err := x402.Match(req, p); err != nil {
			b.Fatal(err)
		}
		_ = x402.IdempotencyKey(p, h)
		_ = x402.Fingerprint("GET", "/t/demo/rows?limit=5", p)
	}
}
