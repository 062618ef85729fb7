package ops_test

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/ledger"
	"github.com/402claw/dispatcher/ops"
)

func TestParsePaymentKey(t *testing.T) {
	for _, ok := range []string{"k", "auth:0xabc", strings.Repeat("k", ledger.MaxKeyLen), "ключ"} {
		got, err := ops.ParsePaymentKey(ok)
		require.NoError(t, err, ok)
		require.Equal(t, ok, got)
	}
	for _, bad := range []string{"", strings.Repeat("k", ledger.MaxKeyLen+1), "a\x00b", "a\nb"} {
		_, err := ops.ParsePaymentKey(bad)
		require.Error(t, err, "%q", bad)
	}
}

// FuzzParsePaymentKey: accepted keys are bounded and printable.
func FuzzParsePaymentKey(f *testing.F) {
	for _, s := range []string{"k", "auth:0x00", "", "\x00", strings.Repeat("x", 600)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, key string) {
		got, err := ops.ParsePaymentKey(key)
		if err != nil {
			return
		}
		if got == "" || len(got) > ledger.MaxKeyLen {
			t.Fatalf("accepted %d bytes", len(got))
		}
		for _, r := range got {
			if r < 0x20 || r == 0x7f {
				t.Fatalf("accepted a control character in %q", got)
			}
		}
		_ = utf8.ValidString(got)
	})
}

func TestPaymentKeyCandidates(t *testing.T) {
	require.Equal(t, []string{"auth:abc"}, ops.PaymentKeyCandidates("auth:abc"))
	require.Equal(t, []string{"pid:x"}, ops.PaymentKeyCandidates("pid:x"))
	require.Equal(t, []string{"abc", "pid:abc", "hdr:abc", "auth:abc"}, ops.PaymentKeyCandidates("abc"))
	long := strings.Repeat("k", 200)
	c := ops.PaymentKeyCandidates(long)
	require.Len(t, c, 4)
	require.True(t, strings.HasPrefix(c[2], "hdrsha256:"), c[2])
}
