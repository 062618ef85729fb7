package x402_test

import (
	"errors"
	"math/big"
	"testing"

	"github.com/402claw/dispatcher/x402"
	"github.com/stretchr/testify/require"
)

func TestParseSettlementOverrides(t *testing.T) {
	t.Parallel()
	require.Equal(t, "Settlement-Overrides", x402.HeaderSettlementOverrides)
	for _, tc := range []struct {
		value, max, want string
	}{
		{`{"amount":"1858"}`, "20000", "1858"},
		{`{"amount":"0"}`, "20000", "0"},
		{`{"amount":"20000"}`, "20000", "20000"},
		{`{"amount":"000123"}`, "20000", "123"},
		{`{"amount":"50%"}`, "20000", "10000"},
		{`{"amount":"100%"}`, "20000", "20000"},
		{`{"amount":"0%"}`, "20000", "0"},
		{`{"amount":"12.5%"}`, "20000", "2500"},
		{`{"amount":"33.33%"}`, "100", "33"}, // floored
		{`{"amount":"0.01%"}`, "50000", "5"}, // two decimals allowed
		{`{"amount":"0.01%"}`, "99", "0"},    // floored to zero
		{`{"amount":"66.67%"}`, "3", "2"},    // 2.0001 floored
		{`{"amount":"$0.0123"}`, "50000", "12300"},
		{`{"amount":"$0.05"}`, "50000", "50000"},
		{`{"amount":"$0"}`, "50000", "0"},
		{`{"amount":"$0.000001"}`, "50000", "1"},
		{`{"amount":" 7 "}`, "50000", "7"},
		{`{"amount":"10","note":"ignored"}`, "50000", "10"},
	} {
		got, err := x402.ParseSettlementOverrides(tc.value, tc.max, 6)
		require.NoError(t, err, tc.value)
		require.Equal(t, tc.want, got, tc.value)
	}
}

func TestParseSettlementOverridesRefuses(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ value, max string }{
		{``, "100"},
		{`nope`, "100"},
		{`{}`, "100"},
		{`{"amount":null}`, "100"},
		{`{"amount":100}`, "1000"}, // a number, not a string
		{`{"amount":""}`, "100"},
		{`{"amount":"-1"}`, "100"},
		{`{"amount":"-1%"}`, "100"},
		{`{"amount":"$-0.01"}`, "100"},
		{`{"amount":"101"}`, "100"}, // over the maximum
		{`{"amount":"100.5%"}`, "100"},
		{`{"amount":"12.345%"}`, "100000"}, // three decimals
		{`{"amount":"$0.0000001"}`, "100000"},
		{`{"amount":"$1"}`, "100000"}, // 1000000 > max
		{`{"amount":"1e3"}`, "100000"},
		{`{"amount":"0x10"}`, "100000"},
		{`{"amount":"1.5"}`, "100000"}, // atomic units are whole
		{`{"amount":"%"}`, "100"},
		{`{"amount":".5%"}`, "100"},
		{`{"amount":"5.%"}`, "100"},
		{`{"amount":"$"}`, "100"},
		{`{"amount":"USD 1"}`, "100"},
		{`{"amount":"1"}`, "-1"}, // bad maximum
		{`{"amount":"1"}`, ""},
		{`["1"]`, "100"},
	} {
		_, err := x402.ParseSettlementOverrides(tc.value, tc.max, 6)
		require.ErrorIs(t, err, x402.ErrInvalidSettlementOverrides, tc.value)
	}
	_, err := x402.ParseSettlementOverrides(`{"amount":"1"}`, "10", -1)
	require.ErrorIs(t, err, x402.ErrInvalidSettlementOverrides)
	long := `{"amount":"` + string(make([]byte, 2000)) + `"}`
	_, err = x402.ParseSettlementOverrides(long, "10", 6)
	require.ErrorIs(t, err, x402.ErrInvalidSettlementOverrides)
	// Decimals set the dollar precision.
	got, err := x402.ParseSettlementOverrides(`{"amount":"$1.5"}`, "1000", 2)
	require.NoError(t, err)
	require.Equal(t, "150", got)
	_, err = x402.ParseSettlementOverrides(`{"amount":"$1.505"}`, "1000", 2)
	require.ErrorIs(t, err, x402.ErrInvalidSettlementOverrides)
}

func FuzzParseSettlementOverrides(f *testing.F) {
	for _, s := range []string{`{"amount":"1858"}`, `{"amount":"12.5%"}`, `{"amount":"$0.0123"}`, `{"amount":"-1"}`, `{}`, `{"amount":"99.99%"}`} {
		f.Add(s, "50000")
	}
	f.Fuzz(func(t *testing.T, value, max string) {
		got, err := x402.ParseSettlementOverrides(value, max, 6)
		if err != nil {
			if !errors.Is(err, x402.ErrInvalidSettlementOverrides) {
				t.Fatalf("error does not wrap the sentinel: %v", err)
			}
			return
		}
		c, ok1 := new(big.Int).SetString(got, 10)
		m, ok2 := new(big.Int).SetString(max, 10)
		if !ok1 || !ok2 || c.Sign() < 0 || c.Cmp(m) > 0 || c.String() != got {
			t.Fatalf("charge %q for max %q is out of range or not canonical", got, max)
		}
	})
}
