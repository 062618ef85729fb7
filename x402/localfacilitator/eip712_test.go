package localfacilitator_test

import (
	"encoding/hex"
	"strings"
	"testing"

	"github.com/402claw/dispatcher/x402"
	"github.com/402claw/dispatcher/x402/localfacilitator"
	"github.com/stretchr/testify/require"
)

func TestFixtureDigestAndSigner(t *testing.T) {
	t.Parallel()
	for _, f := range loadFixtures(t) {
		t.Run(f.Name, func(t *testing.T) {
			t.Parallel()
			p, err := x402.DecodePaymentHeader(f.ClientSent.HeaderValue)
			require.NoError(t, err)
			domain, err := localfacilitator.DomainFor(f.requirement())
			require.NoError(t, err)
			require.Equal(t, int64(84532), domain.ChainID)
			require.Equal(t, "USDC", domain.Name)
			require.Equal(t, "2", domain.Version)

			digest, err := localfacilitator.Digest(domain, p.Authorization)
			require.NoError(t, err)
			require.Equal(t, f.ClientSent.EIP712Digest, "0x"+hex.EncodeToString(digest[:]))

			signer, err := localfacilitator.RecoverSigner(digest, p.Signature)
			require.NoError(t, err)
			require.Equal(t, f.Payer, signer, "recovered address is EIP-55 checksummed")
			require.True(t, f.ClientSent.SignatureValid)
		})
	}
}

func TestSignerReproducesRealClientBytes(t *testing.T) {
	t.Parallel()
	// Same key, nonce and time as the recorded client: RFC 6979 signing is
	// deterministic, so the header must be byte-for-byte the client's.
	for _, f := range loadFixtures(t) {
		t.Run(f.Name, func(t *testing.T) {
			t.Parallel()
			s, err := localfacilitator.NewSigner(f.PrivateKey)
			require.NoError(t, err)
			require.Equal(t, f.Payer, s.Address())

			sent, err := x402.DecodePaymentHeader(f.ClientSent.HeaderValue)
			require.NoError(t, err)
			version := x402.Version2
			if f.ClientSent.Header == x402.HeaderXPayment {
				version = x402.Version1
			}
			sp, err := s.Sign(f.requirement(), version, localfacilitator.SignOptions{
				Now:   f.signedAt(),
				Nonce: sent.Authorization.Nonce,
			})
			require.NoError(t, err)
			require.Equal(t, f.ClientSent.Header, sp.Header)
			require.Equal(t, sent.Authorization, sp.Authorization)
			require.Equal(t, sent.Signature, sp.Signature)
			if f.Mode == "legacy-v1-on-dual" {
				// x402-fetch 1.2.0 orders the payload {signature, authorization};
				// same content, other key order.
				require.JSONEq(t, string(f.ClientSent.Decoded), string(sp.JSON))
				return
			}
			require.Equal(t, f.ClientSent.HeaderValue, sp.Value)
		})
	}
}

func TestRecoverSignerRefusesMalformed(t *testing.T) {
	t.Parallel()
	f := loadFixtures(t)[0]
	p, err := x402.DecodePaymentHeader(f.ClientSent.HeaderValue)
	require.NoError(t, err)
	domain, err := localfacilitator.DomainFor(f.requirement())
	require.NoError(t, err)
	digest, err := localfacilitator.Digest(domain, p.Authorization)
	require.NoError(t, err)

	sig := strings.TrimPrefix(p.Signature, "0x")
	raw, err := hex.DecodeString(sig)
	require.NoError(t, err)

	// v as 0/1 is accepted like 27/28.
	low := append([]byte(nil), raw...)
	low[64] -= 27
	got, err := localfacilitator.RecoverSigner(digest, "0x"+hex.EncodeToString(low))
	require.NoError(t, err)
	require.Equal(t, f.Payer, got)

	bad := map[string]string{
		"short":   "0x" + sig[:128],
		"not hex": "0x" + strings.Repeat("zz", 65),
		"bad v":   "0x" + sig[:128] + "1d",
		"empty":   "",
	}
	// High s: replace s with n - s (a malleable twin) and flip v.
	n, _ := hex.DecodeString("fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141")
	hs := subBytes(n, raw[32:64])
	twin := append(append(append([]byte(nil), raw[:32]...), hs...), 27+(1-(raw[64]-27)))
	bad["high s"] = "0x" + hex.EncodeToString(twin)
	for name, s := range bad {
		_, err := localfacilitator.RecoverSigner(digest, s)
		require.Error(t, err, name)
	}
}

// subBytes returns a - b for 32-byte big-endian a >= b.
func subBytes(a, b []byte) []byte {
	out := make([]byte, 32)
	borrow := 0
	for i := 31; i >= 0; i-- {
		d := int(a[i]) - int(b[i]) - borrow
		borrow = 0
		if d < 0 {
			d += 256
			borrow = 1
		}
		out[i] = byte(d)
	}
	return out
}

func TestChecksumAddress(t *testing.T) {
	t.Parallel()
	for _, a := range []string{
		"0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
		"0x036CbD53842c5426634e7929541eC2318f3dCF7e",
		"0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913",
		"0x209693Bc6afc0C5328bA36FaF03C514EF312287C",
	} {
		got, err := localfacilitator.ChecksumAddress(strings.ToLower(a))
		require.NoError(t, err)
		require.Equal(t, a, got)
	}
	_, err := localfacilitator.ChecksumAddress("0x1234")
	require.Error(t, err)
}
