package x402_test

import (
	"strings"
	"testing"

	"github.com/402claw/dispatcher/x402"
	"github.com/shopspring/decimal"
	"github.com/stretchr/testify/require"
)

func dec(s string) decimal.Decimal { return decimal.RequireFromString(s) }

func TestToAtomicUnits(t *testing.T) {
	t.Parallel()
	cases := []struct {
		price    string
		decimals int32
		want     string
		ok       bool
	}{
		{"0.01", 6, "10000", true},
		{"0.000001", 6, "1", true},
		{"1", 6, "1000000", true},
		{"1.5", 6, "1500000", true},
		{"0.100000", 6, "100000", true}, // trailing zeros do not count
		{"0.1000000", 6, "100000", true},
		{"123456789.123456", 6, "123456789123456", true},
		{"0.1", 0, "", false},
		{"7", 0, "7", true},
		{"0.0000001", 6, "", false},
		{"0.0000015", 6, "", false},
		{"0", 6, "", false},
		{"-0.01", 6, "", false},
		{"1" + strings.Repeat("0", 80), 6, "", false},
	}
	for _, tc := range cases {
		got, err := x402.ToAtomicUnits(dec(tc.price), tc.decimals)
		if !tc.ok {
			require.ErrorIs(t, err, x402.ErrInvalidPrice, tc.price)
			continue
		}
		require.NoError(t, err, tc.price)
		require.Equal(t, tc.want, got, tc.price)

		back, err := x402.FromAtomicUnits(got, tc.decimals)
		require.NoError(t, err)
		require.True(t, back.Equal(dec(tc.price)), tc.price)
	}
	_, err := x402.ToAtomicUnits(dec("1"), -1)
	require.ErrorIs(t, err, x402.ErrInvalidPrice)
	for _, bad := range []string{"", "-1", "1.0", "0x10", "1e3", strings.Repeat("9", 79)} {
		_, err := x402.FromAtomicUnits(bad, 6)
		require.ErrorIs(t, err, x402.ErrInvalidPrice, bad)
	}
}

func TestNetworks(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"eip155:84532", "base-sepolia", "BASE-SEPOLIA", " eip155:84532 "} {
		nw, err := x402.LookupNetwork(name)
		require.NoError(t, err, name)
		require.Equal(t, "eip155:84532", nw.ID)
		require.Equal(t, int64(84532), nw.ChainID)
		require.Equal(t, "0x036CbD53842c5426634e7929541eC2318f3dCF7e", nw.USDC.Address)
		require.Equal(t, map[string]any{"name": "USDC", "version": "2"}, nw.USDC.Extra())
		require.Equal(t, int32(6), nw.USDC.Decimals)
	}
	nw, err := x402.LookupNetwork("base")
	require.NoError(t, err)
	require.Equal(t, "eip155:8453", nw.ID)
	require.Equal(t, int64(8453), nw.ChainID)
	require.Equal(t, "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913", nw.USDC.Address)
	require.Equal(t, "USD Coin", nw.USDC.Name)

	_, err = x402.LookupNetwork("eip155:1")
	require.ErrorIs(t, err, x402.ErrUnknownNetwork)

	require.Equal(t, "eip155:8453", x402.NormalizeNetwork("base"))
	require.Equal(t, "eip155:1", x402.NormalizeNetwork("EIP155:1"))
	require.Equal(t, "base-sepolia", x402.V1NetworkName("eip155:84532"))
	require.Equal(t, "eip155:1", x402.V1NetworkName("eip155:1"))
	require.Equal(t, "base", x402.NetworkForVersion("eip155:8453", 1))
	require.Equal(t, "eip155:8453", x402.NetworkForVersion("base", 2))

	for name, want := range map[string]int64{"eip155:1": 1, "base": 8453, "eip155:84532": 84532} {
		got, ok := x402.EVMChainID(name)
		require.True(t, ok, name)
		require.Equal(t, want, got)
	}
	for _, bad := range []string{"solana:abc", "eip155:", "eip155:-1", "eip155:0", "eip155:1x", "eip155:99999999999999999999"} {
		_, ok := x402.EVMChainID(bad)
		require.False(t, ok, bad)
	}

	all := x402.Networks()
	all[0].ID = "mutated"
	require.Equal(t, "eip155:84532", x402.Networks()[0].ID)
}
