package eip712_test

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"testing"

	"github.com/402claw/dispatcher/x402/eip712"
	"github.com/decred/dcrd/dcrec/secp256k1/v4"
	"github.com/stretchr/testify/require"
)

// v2Fixture is the real client's EIP-3009 payment from testdata.
type v2Fixture struct {
	Payer      string `json:"payer"`
	PrivateKey string `json:"privateKey"`
	ClientSent struct {
		Decoded struct {
			Payload struct {
				Signature     string            `json:"signature"`
				Authorization map[string]string `json:"authorization"`
			} `json:"payload"`
		} `json:"decoded"`
		EIP712Digest string `json:"eip712Digest"`
	} `json:"clientSent"`
}

func loadV2(t testing.TB) v2Fixture {
	t.Helper()
	b, err := os.ReadFile("testdata/client-v2.json")
	require.NoError(t, err)
	var f v2Fixture
	require.NoError(t, json.Unmarshal(b, &f))
	return f
}

// transferDigest hashes an EIP-3009 TransferWithAuthorization with the
// package's encoders, as a scheme does.
func transferDigest(t testing.TB, a map[string]string) [32]byte {
	t.Helper()
	word := func(w [32]byte, err error) []byte {
		require.NoError(t, err)
		return w[:]
	}
	th := eip712.Keccak256([]byte("TransferWithAuthorization(address from,address to,uint256 value,uint256 validAfter,uint256 validBefore,bytes32 nonce)"))
	sh := eip712.Keccak256(th[:], word(eip712.Address(a["from"])), word(eip712.Address(a["to"])),
		word(eip712.Uint256(a["value"])), word(eip712.Uint256(a["validAfter"])),
		word(eip712.Uint256(a["validBefore"])), word(eip712.Bytes32(a["nonce"])))
	d, err := eip712.Digest(eip712.Domain{Name: "USDC", Version: "2", ChainID: 84532,
		VerifyingContract: "0x036CbD53842c5426634e7929541eC2318f3dCF7e"}, sh)
	require.NoError(t, err)
	return d
}

func TestRealClientDigestAndSigner(t *testing.T) {
	t.Parallel()
	f := loadV2(t)
	d := transferDigest(t, f.ClientSent.Decoded.Payload.Authorization)
	require.Equal(t, f.ClientSent.EIP712Digest, "0x"+hex.EncodeToString(d[:]))
	addr, err := eip712.RecoverSigner(d, f.ClientSent.Decoded.Payload.Signature)
	require.NoError(t, err)
	require.Equal(t, f.Payer, addr)

	// Signing the same digest with the same key reproduces the client's
	// signature (RFC 6979 is deterministic).
	kb, err := hex.DecodeString(f.PrivateKey[2:])
	require.NoError(t, err)
	sig, err := eip712.Sign(secp256k1.PrivKeyFromBytes(kb), d)
	require.NoError(t, err)
	require.Equal(t, f.ClientSent.Decoded.Payload.Signature, sig)
}

func TestDomainWithoutVersion(t *testing.T) {
	t.Parallel()
	withV, err := eip712.Domain{Name: "Permit2", Version: "1", ChainID: 1, VerifyingContract: "0x000000000022D473030F116dDEE9F6B43aC78BA3"}.Separator()
	require.NoError(t, err)
	noV, err := eip712.Domain{Name: "Permit2", ChainID: 1, VerifyingContract: "0x000000000022D473030F116dDEE9F6B43aC78BA3"}.Separator()
	require.NoError(t, err)
	require.NotEqual(t, withV, noV)
	_, err = eip712.Domain{Name: "x", ChainID: 0, VerifyingContract: "0x000000000022D473030F116dDEE9F6B43aC78BA3"}.Separator()
	require.ErrorIs(t, err, eip712.ErrMalformed)
	_, err = eip712.Domain{Name: "x", ChainID: 1, VerifyingContract: "0x12"}.Separator()
	require.ErrorIs(t, err, eip712.ErrMalformed)
}

func TestEncodersRefuseMalformed(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"", "-1", "0x10", "1e3", " 1", "115792089237316195423570985008687907853269984665640564039457584007913129639936"} {
		_, err := eip712.Uint256(s)
		require.ErrorIs(t, err, eip712.ErrMalformed, s)
	}
	w, err := eip712.Uint256("115792089237316195423570985008687907853269984665640564039457584007913129639935")
	require.NoError(t, err)
	require.Equal(t, byte(0xff), w[0])
	for _, s := range []string{"", "0x", "0x12", "36CbD53842c5426634e7929541eC2318f3dCF7e00", "0xZZ6CbD53842c5426634e7929541eC2318f3dCF7e"} {
		_, err := eip712.Address(s)
		require.ErrorIs(t, err, eip712.ErrMalformed, s)
	}
	_, err = eip712.Bytes32("0x00")
	require.ErrorIs(t, err, eip712.ErrMalformed)
	cs, err := eip712.ChecksumAddress("0x70997970c51812dc3a010c7d01b50e0d17dc79c8")
	require.NoError(t, err)
	require.Equal(t, "0x70997970C51812dc3A010C7d01b50e0d17dc79C8", cs)
}

func TestRecoverSignerRefusesMalformed(t *testing.T) {
	t.Parallel()
	f := loadV2(t)
	d := transferDigest(t, f.ClientSent.Decoded.Payload.Authorization)
	sig := f.ClientSent.Decoded.Payload.Signature
	// v as 0/1 is accepted.
	v0 := sig[:130] + fmt.Sprintf("%02x", mustHex(t, sig[130:])[0]-27)
	addr, err := eip712.RecoverSigner(d, v0)
	require.NoError(t, err)
	require.Equal(t, f.Payer, addr)
	for name, bad := range map[string]string{
		"short":  sig[:128],
		"v=29":   sig[:130] + "1d",
		"high s": sig[:66] + "ff" + sig[68:],
		"no 0x":  "00" + sig[2:],
	} {
		_, err := eip712.RecoverSigner(d, bad)
		require.ErrorIs(t, err, eip712.ErrMalformed, name)
	}
	// Another digest recovers another address.
	d[0] ^= 1
	other, err := eip712.RecoverSigner(d, sig)
	if err == nil {
		require.NotEqual(t, f.Payer, other)
	}
}

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	require.NoError(t, err)
	return b
}

func TestRecoverCache(t *testing.T) {
	t.Parallel()
	f := loadV2(t)
	d := transferDigest(t, f.ClientSent.Decoded.Payload.Authorization)
	sig := f.ClientSent.Decoded.Payload.Signature
	c := eip712.NewRecoverCache(8)

	addr, err := c.Recover(d, sig)
	require.NoError(t, err)
	require.Equal(t, f.Payer, addr)
	addr, err = c.Recover(d, sig)
	require.NoError(t, err)
	require.Equal(t, f.Payer, addr)
	hits, misses := c.Stats()
	require.Equal(t, uint64(1), hits)
	require.Equal(t, uint64(1), misses)

	// The key covers the digest: the same signature over another digest
	// is recovered afresh and never answered with the cached payer.
	d2 := d
	d2[31] ^= 0xff
	other, err := c.Recover(d2, sig)
	if err == nil {
		require.NotEqual(t, f.Payer, other)
	}
	// Failures are not cached.
	_, err = c.Recover(d, sig[:20])
	require.ErrorIs(t, err, eip712.ErrMalformed)

	// Bounded: many distinct signatures never grow it past its size.
	key, err := secp256k1.GeneratePrivateKey()
	require.NoError(t, err)
	for i := range 100 {
		var di [32]byte
		di[0] = byte(i)
		s, err := eip712.Sign(key, di)
		require.NoError(t, err)
		a, err := c.Recover(di, s)
		require.NoError(t, err)
		require.Equal(t, eip712.PublicKeyAddress(key.PubKey()), a)
		require.LessOrEqual(t, c.Len(), 8)
	}
	// The most recent entry is still cached.
	var last [32]byte
	last[0] = 99
	s, err := eip712.Sign(key, last)
	require.NoError(t, err)
	h0, _ := c.Stats()
	_, err = c.Recover(last, s)
	require.NoError(t, err)
	h1, _ := c.Stats()
	require.Equal(t, h0+1, h1)

	var nilCache *eip712.RecoverCache
	addr, err = nilCache.Recover(d, sig)
	require.NoError(t, err)
	require.Equal(t, f.Payer, addr)
}

func TestRecoverCacheConcurrent(t *testing.T) {
	t.Parallel()
	key, err := secp256k1.GeneratePrivateKey()
	require.NoError(t, err)
	want := eip712.PublicKeyAddress(key.PubKey())
	// 24 signatures through a cache of 32 (two generations of 16): the
	// generations rotate while 50 goroutines read and write.
	const n, goroutines = 24, 50
	digests := make([][32]byte, n)
	sigs := make([]string, n)
	for i := range n {
		digests[i][1] = byte(i)
		sigs[i], err = eip712.Sign(key, digests[i])
		require.NoError(t, err)
	}
	c := eip712.NewRecoverCache(32)
	var wg sync.WaitGroup
	errs := make(chan error, goroutines*n)
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range n {
				j := (i + g) % n
				a, err := c.Recover(digests[j], sigs[j])
				if err != nil || a != want {
					errs <- fmt.Errorf("got %q, %v", a, err)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	hits, misses := c.Stats()
	require.Equal(t, uint64(goroutines*n), hits+misses)
	require.Positive(t, hits)
	require.LessOrEqual(t, c.Len(), 32)
}

func BenchmarkRecover(b *testing.B) {
	f := loadV2(b)
	d := transferDigest(b, f.ClientSent.Decoded.Payload.Authorization)
	sig := f.ClientSent.Decoded.Payload.Signature
	b.Run("uncached", func(b *testing.B) {
		for b.Loop() {
			if _, err := eip712.RecoverSigner(d, sig); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("cached", func(b *testing.B) {
		c := eip712.NewRecoverCache(0)
		for b.Loop() {
			if _, err := c.Recover(d, sig); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func FuzzRecoverSigner(f *testing.F) {
	fx := loadV2(f)
	f.Add(mustHex(f, fx.ClientSent.EIP712Digest[2:]), fx.ClientSent.Decoded.Payload.Signature)
	f.Add([]byte{}, "0x")
	c := eip712.NewRecoverCache(4)
	f.Fuzz(func(t *testing.T, d []byte, sig string) {
		var digest [32]byte
		copy(digest[:], d)
		a1, err1 := eip712.RecoverSigner(digest, sig)
		a2, err2 := c.Recover(digest, sig)
		if (err1 == nil) != (err2 == nil) || a1 != a2 {
			t.Fatalf("cache disagrees: %q %v / %q %v", a1, err1, a2, err2)
		}
		if err1 == nil && len(a1) != 42 {
			t.Fatalf("bad address %q", a1)
		}
	})
}

func FuzzUint256(f *testing.F) {
	for _, s := range []string{"0", "1", "10000", "115792089237316195423570985008687907853269984665640564039457584007913129639935", "-1", "0x1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		w, err := eip712.Uint256(s)
		if err != nil {
			return
		}
		n, err := eip712.ParseUint256(s)
		if err != nil {
			t.Fatal(err)
		}
		var again [32]byte
		n.FillBytes(again[:])
		if again != w {
			t.Fatal("encoders disagree")
		}
	})
}
