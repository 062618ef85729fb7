package eip712_test

import (
	"crypto/rand"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/decred/dcrd/dcrec/secp256k1/v4"
	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/x402/eip712"
)

func randomDigest(t testing.TB) [32]byte {
	var d [32]byte
	_, err := rand.Read(d[:])
	require.NoError(t, err)
	return d
}

func sigBytes(t testing.TB, sig string) []byte {
	b, err := hex.DecodeString(strings.TrimPrefix(sig, "0x"))
	require.NoError(t, err)
	return b
}

// recoversTo is the reference: RecoverSigner names addr.
func recoversTo(digest [32]byte, sig []byte, addr string) bool {
	got, err := eip712.RecoverSigner(digest, "0x"+hex.EncodeToString(sig))
	return err == nil && got == addr
}

// KeyTable.Verify agrees with recovery on genuine signatures, another
// key's, another digest's, a flipped v, a high s, tampered r and s, and
// zero and out-of-range scalars.
func TestKeyTableAgreesWithRecovery(t *testing.T) {
	key, err := secp256k1.GeneratePrivateKey()
	require.NoError(t, err)
	other, err := secp256k1.GeneratePrivateKey()
	require.NoError(t, err)
	tab := eip712.NewKeyTable(key.PubKey())
	addr := eip712.PublicKeyAddress(key.PubKey())
	require.Equal(t, addr, tab.Address())
	n := secp256k1.S256().N
	var yes, no int
	check := func(name string, d [32]byte, sig []byte) {
		t.Helper()
		want := recoversTo(d, sig, addr)
		require.Equal(t, want, tab.Verify(d, sig), "%s: %x", name, sig)
		if want {
			yes++
		} else {
			no++
		}
	}
	for i := 0; i < 40; i++ {
		d := randomDigest(t)
		s, err := eip712.Sign(key, d)
		require.NoError(t, err)
		sig := sigBytes(t, s)
		check("genuine", d, sig)
		v01 := append([]byte(nil), sig...)
		v01[64] -= 27
		check("v as 0/1", d, v01)
		check("another digest", randomDigest(t), sig)
		so, err := eip712.Sign(other, d)
		require.NoError(t, err)
		check("another key", d, sigBytes(t, so))
		flip := append([]byte(nil), sig...)
		flip[64] ^= 1 // 27 <-> 28
		check("flipped v", d, flip)
		badV := append([]byte(nil), sig...)
		badV[64] = 29
		check("v 29", d, badV)
		// s -> n - s: the same signature with the other parity, refused
		// as a high s.
		var sv secp256k1.ModNScalar
		sv.SetByteSlice(sig[32:64])
		sv.Negate()
		high := append([]byte(nil), sig...)
		hb := sv.Bytes()
		copy(high[32:64], hb[:])
		check("high s", d, high)
		tr := append([]byte(nil), sig...)
		tr[5] ^= 0x40
		check("tampered r", d, tr)
		ts := append([]byte(nil), sig...)
		ts[40] ^= 0x01
		check("tampered s", d, ts)
	}
	d := randomDigest(t)
	s, err := eip712.Sign(key, d)
	require.NoError(t, err)
	sig := sigBytes(t, s)
	zeroR := append([]byte(nil), sig...)
	copy(zeroR[:32], make([]byte, 32))
	check("zero r", d, zeroR)
	zeroS := append([]byte(nil), sig...)
	copy(zeroS[32:64], make([]byte, 32))
	check("zero s", d, zeroS)
	bigR := append([]byte(nil), sig...)
	n.FillBytes(bigR[:32])
	check("r = n", d, bigR)
	require.False(t, tab.Verify(d, sig[:64]), "64 bytes")
	require.Greater(t, yes, 0)
	require.Greater(t, no, 0)
}

// BenchmarkKeyTable compares a recovery with a check against a key table
// and the table's construction.
//
//	go test -run '^$' -bench KeyTable -benchmem ./x402/eip712/
func BenchmarkKeyTable(b *testing.B) {
	key, err := secp256k1.GeneratePrivateKey()
	require.NoError(b, err)
	tab := eip712.NewKeyTable(key.PubKey())
	d := randomDigest(b)
	s, err := eip712.Sign(key, d)
	require.NoError(b, err)
	sig := sigBytes(b, s)
	b.Run("recover", func(b *testing.B) {
		cpu0 := processCPU()
		for b.Loop() {
			if _, err := eip712.RecoverSigner(d, s); err != nil {
				b.Fatal(err)
			}
		}
		reportCPU(b, cpu0)
	})
	b.Run("verify", func(b *testing.B) {
		cpu0 := processCPU()
		for b.Loop() {
			if !tab.Verify(d, sig) {
				b.Fatal("refused")
			}
		}
		reportCPU(b, cpu0)
	})
	b.Run("build", func(b *testing.B) {
		cpu0 := processCPU()
		for b.Loop() {
			eip712.NewKeyTable(key.PubKey())
		}
		reportCPU(b, cpu0)
	})
}

// IsSigner answers as recovery does; a key recovered and vouched for
// KeyTableAfter times earns a KeyTable (built in the background) that
// answers its next signatures, a key never vouched for none; tables beyond
// KeyTables drop the least recently used.
func TestCacheKeyTables(t *testing.T) {
	c := eip712.NewCache(eip712.CacheConfig{Size: 64, KeyTables: 1, KeyTableAfter: 3})
	keys := make([]*secp256k1.PrivateKey, 2)
	addrs := make([]string, 2)
	for i := range keys {
		k, err := secp256k1.GeneratePrivateKey()
		require.NoError(t, err)
		keys[i], addrs[i] = k, eip712.PublicKeyAddress(k.PubKey())
	}
	sign := func(i int) ([32]byte, string) {
		d := randomDigest(t)
		s, err := eip712.Sign(keys[i], d)
		require.NoError(t, err)
		return d, s
	}
	waitTable := func(addr string) {
		t.Helper()
		require.Eventually(t, func() bool {
			for _, a := range c.KeyTables() {
				if a == strings.ToLower(addr) {
					return true
				}
			}
			return false
		}, 20*time.Second, time.Millisecond)
	}
	for i := 0; i < 5; i++ {
		d, s := sign(0)
		ok, err := c.IsSigner(d, s, strings.ToLower(addrs[0]))
		require.NoError(t, err)
		require.True(t, ok)
		ok, err = c.IsSigner(d, s, addrs[1])
		require.NoError(t, err)
		require.False(t, ok, "another address")
	}
	c.Vouch(addrs[1]) // never recovered: nothing
	time.Sleep(50 * time.Millisecond)
	require.Empty(t, c.KeyTables(), "signing alone earns no table")
	for i := 0; i < 3; i++ {
		c.Vouch(addrs[0])
	}
	waitTable(addrs[0])
	d, s := sign(0)
	ok, err := c.IsSigner(d, s, addrs[0])
	require.NoError(t, err)
	require.True(t, ok)
	require.EqualValues(t, 1, c.Verified(), "answered by the table")
	// A signature by another key, and a flipped v, checked against the
	// table: refused.
	d1, s1 := sign(1)
	ok, err = c.IsSigner(d1, s1, addrs[0])
	require.NoError(t, err)
	require.False(t, ok)
	flip := sigBytes(t, s)
	flip[64] ^= 1
	d2, _ := sign(0)
	ok, _ = c.IsSigner(d2, "0x"+hex.EncodeToString(flip), addrs[0])
	require.False(t, ok)
	require.EqualValues(t, 3, c.Verified())
	// Cached answers stay right.
	ok, err = c.IsSigner(d, s, addrs[0])
	require.NoError(t, err)
	require.True(t, ok)
	_, err = c.IsSigner(d, "0x1234", addrs[0])
	require.Error(t, err, "a malformed signature")

	// The second key earns the only table slot.
	for i := 0; i < 3; i++ {
		d, s := sign(1)
		ok, err := c.IsSigner(d, s, addrs[1])
		require.NoError(t, err)
		require.True(t, ok)
		c.Vouch(addrs[1])
	}
	waitTable(addrs[1])
	require.Len(t, c.KeyTables(), 1)
}

// FuzzKeyTable: on any digest and 65 bytes, a KeyTable's check agrees with
// recovery (and never panics). Seeds are genuine and tampered signatures.
func FuzzKeyTable(f *testing.F) {
	key, err := secp256k1.GeneratePrivateKey()
	require.NoError(f, err)
	tab := eip712.NewKeyTable(key.PubKey())
	addr := tab.Address()
	for i := 0; i < 4; i++ {
		d := randomDigest(f)
		s, err := eip712.Sign(key, d)
		require.NoError(f, err)
		sig := sigBytes(f, s)
		f.Add(d[:], sig)
		bad := append([]byte(nil), sig...)
		bad[64] ^= 1
		f.Add(d[:], bad)
	}
	f.Fuzz(func(t *testing.T, digest, sig []byte) {
		var d [32]byte
		copy(d[:], digest)
		var s [65]byte
		copy(s[:], sig)
		require.Equal(t, recoversTo(d, s[:], addr), tab.Verify(d, s[:]))
		if len(sig) != 65 {
			require.False(t, tab.Verify(d, sig))
		}
	})
}
